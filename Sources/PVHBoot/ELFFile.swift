/// A little-endian x86 ELF32 or ELF64 file, parsed with every offset checked
/// (System V gABI, "ELF Header", "Program Header", "Sections").
///
/// Only what the PVH loader needs is decoded: the program headers (placement
/// and PT_NOTE), the section headers with their names (SHT_NOTE, symbol
/// tables, `__ksymtab*`), and byte access by file offset or virtual address.
struct ELFFile: Sendable {
    enum Class: Sendable { case elf32, elf64 }

    struct ProgramHeader: Sendable {
        var type: UInt32
        var offset: UInt64
        var virtualAddress: UInt64
        var physicalAddress: UInt64
        var fileSize: UInt64
        var memorySize: UInt64
        var alignment: UInt64
    }

    struct SectionHeader: Sendable {
        var name: [UInt8]
        var type: UInt32
        var address: UInt64
        var offset: UInt64
        var size: UInt64
        var link: UInt32
        var entrySize: UInt64
    }

    static let PT_LOAD: UInt32 = 1
    static let PT_NOTE: UInt32 = 4
    static let SHT_SYMTAB: UInt32 = 2
    static let SHT_NOTE: UInt32 = 7
    static let SHT_NOBITS: UInt32 = 8
    static let EM_386: UInt16 = 3
    static let EM_X86_64: UInt16 = 62

    let view: ByteView
    let elfClass: Class
    let entry: UInt64
    let programHeaders: [ProgramHeader]
    let sections: [SectionHeader]

    /// True when `bytes` starts with the ELF magic `7f 'E' 'L' 'F'`.
    static func hasMagic(_ bytes: some Collection<UInt8>) -> Bool {
        bytes.starts(with: [0x7f, 0x45, 0x4c, 0x46])
    }

    init(_ bytes: [UInt8]) throws(KernelImageError) {
        let v = ByteView(bytes)
        guard Self.hasMagic(bytes) else { throw .notAKernel }
        // e_ident[EI_CLASS] at 4, e_ident[EI_DATA] at 5; e_machine at 18.
        guard let cls = v.u8(4), let data = v.u8(5), let machine = v.u16(18) else {
            throw .truncated(.elfHeader)
        }
        let is64: Bool
        switch (cls, data, machine) {
        case (2, 1, Self.EM_X86_64), (2, 1, Self.EM_386): is64 = true
        case (1, 1, Self.EM_386), (1, 1, Self.EM_X86_64): is64 = false
        default: throw .unsupportedELF(class: cls, data: data, machine: machine)
        }
        // ELF64 header is 64 bytes, ELF32 52.
        let header: (entry: UInt64, phoff: UInt64, shoff: UInt64, phentsize: UInt16, phnum: UInt16,
                     shentsize: UInt16, shnum: UInt16, shstrndx: UInt16)?
        if is64 {
            header = Self.zip8(v.u64(0x18), v.u64(0x20), v.u64(0x28), v.u16(0x36), v.u16(0x38),
                               v.u16(0x3a), v.u16(0x3c), v.u16(0x3e))
        } else {
            header = Self.zip8(v.u32(0x18).map(UInt64.init), v.u32(0x1c).map(UInt64.init),
                               v.u32(0x20).map(UInt64.init), v.u16(0x2a), v.u16(0x2c),
                               v.u16(0x2e), v.u16(0x30), v.u16(0x32))
        }
        guard let h = header else { throw .truncated(.elfHeader) }
        self.view = v
        self.elfClass = is64 ? .elf64 : .elf32
        self.entry = h.entry
        self.programHeaders = try Self.parseProgramHeaders(v, is64: is64, offset: h.phoff,
                                                           entrySize: h.phentsize, count: h.phnum)
        self.sections = try Self.parseSections(v, is64: is64, offset: h.shoff, entrySize: h.shentsize,
                                               count: h.shnum, nameIndex: h.shstrndx)
    }

    private static func zip8<A, B, C, D, E, F, G, H>(
        _ a: A?, _ b: B?, _ c: C?, _ d: D?, _ e: E?, _ f: F?, _ g: G?, _ h: H?
    ) -> (A, B, C, D, E, F, G, H)? {
        guard let a, let b, let c, let d, let e, let f, let g, let h else { return nil }
        return (a, b, c, d, e, f, g, h)
    }

    private static func parseProgramHeaders(
        _ v: ByteView, is64: Bool, offset: UInt64, entrySize: UInt16, count: UInt16
    ) throws(KernelImageError) -> [ProgramHeader] {
        guard count > 0 else { return [] }
        let expected: UInt16 = is64 ? 56 : 32
        guard entrySize == expected else { throw .badHeaderEntrySize(.programHeaderTable, size: entrySize) }
        guard v.range(offset, UInt64(count) * UInt64(entrySize)) != nil else { throw .truncated(.programHeaderTable) }
        var result: [ProgramHeader] = []
        for i in 0..<UInt64(count) {
            let o = offset + i * UInt64(entrySize)
            let ph: ProgramHeader?
            if is64 {
                ph = zip8(v.u32(o), v.u64(o + 8), v.u64(o + 16), v.u64(o + 24), v.u64(o + 32),
                          v.u64(o + 40), v.u64(o + 48), ()).map {
                    ProgramHeader(type: $0.0, offset: $0.1, virtualAddress: $0.2, physicalAddress: $0.3,
                                  fileSize: $0.4, memorySize: $0.5, alignment: $0.6)
                }
            } else {
                ph = zip8(v.u32(o), v.u32(o + 4), v.u32(o + 8), v.u32(o + 12), v.u32(o + 16),
                          v.u32(o + 20), v.u32(o + 28), ()).map {
                    ProgramHeader(type: $0.0, offset: UInt64($0.1), virtualAddress: UInt64($0.2),
                                  physicalAddress: UInt64($0.3), fileSize: UInt64($0.4),
                                  memorySize: UInt64($0.5), alignment: UInt64($0.6))
                }
            }
            guard let ph else { throw .truncated(.programHeaderTable) }
            result.append(ph)
        }
        return result
    }

    private static func parseSections(
        _ v: ByteView, is64: Bool, offset: UInt64, entrySize: UInt16, count: UInt16, nameIndex: UInt16
    ) throws(KernelImageError) -> [SectionHeader] {
        // e_shnum == 0 means no sections (extended numbering is not used by kernels).
        guard count > 0, offset != 0 else { return [] }
        let expected: UInt16 = is64 ? 64 : 40
        guard entrySize == expected else { throw .badHeaderEntrySize(.sectionHeaderTable, size: entrySize) }
        guard v.range(offset, UInt64(count) * UInt64(entrySize)) != nil else { throw .truncated(.sectionHeaderTable) }
        var raw: [(name: UInt32, header: SectionHeader)] = []
        for i in 0..<UInt64(count) {
            let o = offset + i * UInt64(entrySize)
            let s: (UInt32, SectionHeader)?
            if is64 {
                s = zip8(v.u32(o), v.u32(o + 4), v.u64(o + 16), v.u64(o + 24), v.u64(o + 32),
                         v.u32(o + 40), v.u64(o + 56), ()).map {
                    ($0.0, SectionHeader(name: [], type: $0.1, address: $0.2, offset: $0.3, size: $0.4,
                                         link: $0.5, entrySize: $0.6))
                }
            } else {
                s = zip8(v.u32(o), v.u32(o + 4), v.u32(o + 12), v.u32(o + 16), v.u32(o + 20),
                         v.u32(o + 24), v.u32(o + 36), ()).map {
                    ($0.0, SectionHeader(name: [], type: $0.1, address: UInt64($0.2), offset: UInt64($0.3),
                                         size: UInt64($0.4), link: $0.5, entrySize: UInt64($0.6)))
                }
            }
            guard let s else { throw .truncated(.sectionHeaderTable) }
            raw.append((name: s.0, header: s.1))
        }
        // Names come from the section-name string table (e_shstrndx); a bad
        // index or offset leaves the name empty rather than failing the load:
        // names only serve the optional hypercall-site search.
        var names: ByteView?
        if Int(nameIndex) < raw.count {
            let t = raw[Int(nameIndex)].header
            if t.type != SHT_NOBITS, let bytes = v.slice(t.offset, t.size) { names = ByteView(Array(bytes)) }
        }
        return raw.map { entry in
            var h = entry.header
            h.name = names?.cString(at: UInt64(entry.name)) ?? []
            return h
        }
    }

    /// PT_LOAD segments with a non-zero memory size.
    var loadSegments: [(index: Int, header: ProgramHeader)] {
        programHeaders.enumerated().filter { $0.element.type == Self.PT_LOAD && $0.element.memorySize > 0 }
            .map { (index: $0.offset, header: $0.element) }
    }

    /// The section named `name`.
    func section(named name: String) -> SectionHeader? {
        let n = Array(name.utf8)
        return sections.first { $0.name == n }
    }

    /// The file bytes of a section (nil for SHT_NOBITS or out-of-file ranges).
    func contents(of s: SectionHeader) -> ArraySlice<UInt8>? {
        s.type == Self.SHT_NOBITS ? nil : view.slice(s.offset, s.size)
    }

    /// `count` file bytes backing virtual address `address`, through the
    /// PT_LOAD segment that maps it (nil if not wholly file-backed).
    func bytes(atVirtual address: UInt64, count: UInt64) -> ArraySlice<UInt8>? {
        for (_, ph) in loadSegments where address >= ph.virtualAddress {
            let delta = address - ph.virtualAddress
            guard delta < ph.fileSize, count <= ph.fileSize - delta else { continue }
            return view.slice(ph.offset + delta, count)
        }
        return nil
    }

    /// The NUL-terminated string at virtual address `address`.
    func cString(atVirtual address: UInt64, limit: UInt64 = 128) -> [UInt8]? {
        for (_, ph) in loadSegments where address >= ph.virtualAddress {
            let delta = address - ph.virtualAddress
            guard delta < ph.fileSize else { continue }
            let n = min(limit, ph.fileSize - delta)
            guard let bytes = view.slice(ph.offset + delta, n), let nul = bytes.firstIndex(of: 0) else { continue }
            return Array(bytes[bytes.startIndex..<nul])
        }
        return nil
    }

    /// The physical address at which virtual address `address` is loaded
    /// (PT_LOAD `p_paddr + (address - p_vaddr)`), before any relocation.
    func physicalAddress(ofVirtual address: UInt64) -> UInt64? {
        for (_, ph) in loadSegments where address >= ph.virtualAddress {
            let delta = address - ph.virtualAddress
            guard delta < ph.memorySize else { continue }
            let (p, o) = ph.physicalAddress.addingReportingOverflow(delta)
            return o ? nil : p
        }
        return nil
    }
}
