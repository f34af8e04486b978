import GuestMemory

/// Builds small little-endian x86 ELF32/ELF64 files for loader tests: chosen
/// segments, notes (well-formed or deliberately broken) and sections. Fixtures
/// are generated here from code, never checked in as blobs (System V gABI
/// layouts: ELF header, program headers, section headers, notes).
public struct ELFBuilder: Sendable {
    public enum Class: Sendable { case elf32, elf64 }

    public static let PT_LOAD: UInt32 = 1
    public static let PT_NOTE: UInt32 = 4
    public static let SHT_PROGBITS: UInt32 = 1
    public static let SHT_SYMTAB: UInt32 = 2
    public static let SHT_STRTAB: UInt32 = 3
    public static let SHT_NOTE: UInt32 = 7

    /// A program header and the file bytes behind it.
    public struct Segment: Sendable {
        public var type: UInt32
        public var virtualAddress: UInt64
        public var physicalAddress: UInt64
        public var data: [UInt8]
        /// `p_memsz`; nil means `data.count`.
        public var memorySize: UInt64?
        public var alignment: UInt64
        /// Overrides for corrupt-header tests.
        public var fileSizeOverride: UInt64?
        public var offsetOverride: UInt64?

        public init(type: UInt32 = ELFBuilder.PT_LOAD, virtualAddress: UInt64, physicalAddress: UInt64,
                    data: [UInt8], memorySize: UInt64? = nil, alignment: UInt64 = 0x1000) {
            self.type = type
            self.virtualAddress = virtualAddress
            self.physicalAddress = physicalAddress
            self.data = data
            self.memorySize = memorySize
            self.alignment = alignment
        }
    }

    /// A section: its own bytes, or a window onto a segment's bytes (then
    /// `sh_addr`/`sh_offset` follow the segment).
    public struct Section: Sendable {
        public var name: String
        public var type: UInt32
        public var address: UInt64
        public var data: [UInt8]
        /// Index (into `sections`, plus 1 for the null section) of the linked section.
        public var link: UInt32
        public var entrySize: UInt64
        /// `(segment index, offset, size)`: the section lies inside that segment.
        public var inSegment: (index: Int, offset: Int, size: Int)?

        public init(name: String, type: UInt32 = ELFBuilder.SHT_PROGBITS, address: UInt64 = 0, data: [UInt8] = [],
                    link: UInt32 = 0, entrySize: UInt64 = 0, inSegment: (index: Int, offset: Int, size: Int)? = nil) {
            self.name = name
            self.type = type
            self.address = address
            self.data = data
            self.link = link
            self.entrySize = entrySize
            self.inSegment = inSegment
        }
    }

    public var elfClass: Class
    public var machine: UInt16
    public var entry: UInt64
    public var segments: [Segment]
    /// Note bytes emitted as one PT_NOTE segment (nil: no PT_NOTE).
    public var noteSegment: [UInt8]?
    public var sections: [Section]
    /// Overrides `e_phentsize` (corrupt-header tests).
    public var programHeaderEntrySizeOverride: UInt16?

    public init(elfClass: Class = .elf64, machine: UInt16? = nil, entry: UInt64 = 0, segments: [Segment] = [],
                noteSegment: [UInt8]? = nil, sections: [Section] = []) {
        self.elfClass = elfClass
        self.machine = machine ?? (elfClass == .elf64 ? 62 : 3)
        self.entry = entry
        self.segments = segments
        self.noteSegment = noteSegment
        self.sections = sections
    }

    // MARK: Notes

    /// One ELF note: namesz, descsz, type, name (NUL-terminated, padded to
    /// 4), descriptor (padded to 4).
    public static func note(name: String, type: UInt32, descriptor: [UInt8]) -> [UInt8] {
        let n = Array(name.utf8) + [0]
        return le(UInt32(n.count)) + le(UInt32(descriptor.count)) + le(type) + pad4(n) + pad4(descriptor)
    }

    /// `XEN_ELFNOTE_PHYS32_ENTRY` with a 4-byte (`.long`) or 8-byte (`_ASM_PTR`) descriptor.
    public static func pvhEntryNote(_ entry: UInt64, width: Int = 4) -> [UInt8] {
        note(name: "Xen", type: 18, descriptor: width == 8 ? le(entry) : le(UInt32(truncatingIfNeeded: entry)))
    }

    /// `XEN_ELFNOTE_PHYS32_RELOC` with the given leading values (align, min, max).
    public static func relocationNote(_ values: [UInt32]) -> [UInt8] {
        note(name: "Xen", type: 19, descriptor: values.flatMap { le($0) })
    }

    // MARK: Output

    public func build() -> [UInt8] {
        let is64 = elfClass == .elf64
        let ehsize = is64 ? 64 : 52
        let phentsize = is64 ? 56 : 32
        let shentsize = is64 ? 64 : 40
        var allSegments = segments
        if let notes = noteSegment {
            allSegments.append(Segment(type: Self.PT_NOTE, virtualAddress: 0, physicalAddress: 0, data: notes, alignment: 4))
        }
        var out = [UInt8](repeating: 0, count: ehsize + phentsize * allSegments.count)
        // Segment data, 16-byte aligned.
        var segmentOffsets: [Int] = []
        for s in allSegments {
            out = pad(out, 16)
            segmentOffsets.append(out.count)
            out += s.data
        }
        // Section data and names.
        var shstrtab: [UInt8] = [0]
        var nameOffsets: [Int] = []
        var sectionOffsets: [Int] = []
        var sectionAddresses: [UInt64] = []
        var sectionSizes: [Int] = []
        for s in sections {
            nameOffsets.append(shstrtab.count)
            shstrtab += Array(s.name.utf8) + [0]
            if let w = s.inSegment {
                sectionOffsets.append(segmentOffsets[w.index] + w.offset)
                sectionAddresses.append(allSegments[w.index].virtualAddress + UInt64(w.offset))
                sectionSizes.append(w.size)
            } else {
                out = pad(out, 8)
                sectionOffsets.append(out.count)
                sectionAddresses.append(s.address)
                sectionSizes.append(s.data.count)
                out += s.data
            }
        }
        var shoff = 0
        var shnum = 0
        var shstrndx = 0
        if !sections.isEmpty {
            let shstrName = shstrtab.count
            shstrtab += Array(".shstrtab".utf8) + [0]
            let shstrOffset = out.count
            out += shstrtab
            out = pad(out, 8)
            shoff = out.count
            shnum = sections.count + 2 // null + sections + .shstrtab
            shstrndx = shnum - 1
            out += [UInt8](repeating: 0, count: shentsize) // SHN_UNDEF
            for (i, s) in sections.enumerated() {
                out += sectionHeader(is64, name: nameOffsets[i], type: s.type, address: sectionAddresses[i],
                                     offset: sectionOffsets[i], size: sectionSizes[i], link: s.link, entrySize: s.entrySize)
            }
            out += sectionHeader(is64, name: shstrName, type: Self.SHT_STRTAB, address: 0, offset: shstrOffset,
                                 size: shstrtab.count, link: 0, entrySize: 0)
        }
        // ELF header.
        var h: [UInt8] = [0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, 1, 1, 0] + [UInt8](repeating: 0, count: 8)
        h += le(UInt16(2)) + le(machine) + le(UInt32(1)) // ET_EXEC, e_machine, EV_CURRENT
        if is64 {
            h += le(entry) + le(UInt64(ehsize)) + le(UInt64(shoff))
        } else {
            h += le(UInt32(truncatingIfNeeded: entry)) + le(UInt32(ehsize)) + le(UInt32(shoff))
        }
        h += le(UInt32(0)) + le(UInt16(ehsize)) + le(programHeaderEntrySizeOverride ?? UInt16(phentsize))
        h += le(UInt16(allSegments.count)) + le(UInt16(shentsize)) + le(UInt16(shnum)) + le(UInt16(shstrndx))
        out.replaceSubrange(0..<h.count, with: h)
        // Program headers.
        for (i, s) in allSegments.enumerated() {
            let fileSize = s.fileSizeOverride ?? UInt64(s.data.count)
            let memSize = s.memorySize ?? UInt64(s.data.count)
            let offset = s.offsetOverride ?? UInt64(segmentOffsets[i])
            let ph: [UInt8]
            if is64 {
                ph = le(s.type) + le(UInt32(7)) + le(offset) + le(s.virtualAddress) + le(s.physicalAddress)
                    + le(fileSize) + le(memSize) + le(s.alignment)
            } else {
                ph = le(s.type) + le(UInt32(truncatingIfNeeded: offset)) + le(UInt32(truncatingIfNeeded: s.virtualAddress))
                    + le(UInt32(truncatingIfNeeded: s.physicalAddress)) + le(UInt32(truncatingIfNeeded: fileSize))
                    + le(UInt32(truncatingIfNeeded: memSize)) + le(UInt32(7)) + le(UInt32(truncatingIfNeeded: s.alignment))
            }
            let at = ehsize + i * phentsize
            out.replaceSubrange(at..<at + ph.count, with: ph)
        }
        return out
    }

    private func sectionHeader(_ is64: Bool, name: Int, type: UInt32, address: UInt64, offset: Int, size: Int,
                               link: UInt32, entrySize: UInt64) -> [UInt8] {
        if is64 {
            return le(UInt32(name)) + le(type) + le(UInt64(0)) + le(address) + le(UInt64(offset)) + le(UInt64(size))
                + le(link) + le(UInt32(0)) + le(UInt64(1)) + le(entrySize)
        }
        return le(UInt32(name)) + le(type) + le(UInt32(0)) + le(UInt32(truncatingIfNeeded: address)) + le(UInt32(offset))
            + le(UInt32(size)) + le(link) + le(UInt32(0)) + le(UInt32(1)) + le(UInt32(truncatingIfNeeded: entrySize))
    }

    // MARK: Byte helpers

    public static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { LittleEndianBytes.encode(v) }
    private func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { LittleEndianBytes.encode(v) }
    static func pad4(_ b: [UInt8]) -> [UInt8] { b + [UInt8](repeating: 0, count: (4 - b.count % 4) % 4) }
    private func pad(_ b: [UInt8], _ a: Int) -> [UInt8] { b + [UInt8](repeating: 0, count: (a - b.count % a) % a) }
}
