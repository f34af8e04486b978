import CXen
import GuestMemory

/// The kernel's physical relocation constraints, from
/// `XEN_ELFNOTE_PHYS32_RELOC` (Xen public/elfnote.h): "the kernel supports
/// relocating itself"; up to three 32-bit values, in order: the required
/// start alignment (default 2 MiB), the minimum start address (default 0), and
/// the maximum address of the image's last byte (default 0xffffffff).
public struct PhysicalRelocation: Sendable, Hashable {
    /// Required alignment of the image start (a power of two).
    public var alignment: UInt64
    /// Lowest allowed image start.
    public var minimum: GuestPhysicalAddress
    /// Highest allowed address of the image's last byte (inclusive).
    public var maximum: GuestPhysicalAddress

    public init(alignment: UInt64 = 0x20_0000, minimum: GuestPhysicalAddress = GuestPhysicalAddress(0),
                maximum: GuestPhysicalAddress = GuestPhysicalAddress(0xffff_ffff)) {
        self.alignment = alignment
        self.minimum = minimum
        self.maximum = maximum
    }
}

/// The Xen ELF notes the PVH loader acts on (Xen public/elfnote.h; Linux
/// emits them from arch/x86/platform/pvh/head.S and arch/x86/xen/xen-head.S).
struct XenNotes: Sendable {
    /// `XEN_ELFNOTE_PHYS32_ENTRY` (18): the 32-bit physical PVH entry point.
    static let phys32Entry = UInt32(XEN_ELFNOTE_PHYS32_ENTRY)
    /// `XEN_ELFNOTE_PHYS32_RELOC` (19). Newer than Debian 12's libxen-dev
    /// headers, so spelled here (Xen 4.20 public/elfnote.h).
    static let phys32Reloc: UInt32 = 19

    var entry: UInt32?
    var relocation: PhysicalRelocation?

    /// Collects the Xen notes from PT_NOTE segments, then SHT_NOTE sections
    /// (the first occurrence of each note type wins).
    init(_ elf: ELFFile) throws(KernelImageError) {
        var regions: [ArraySlice<UInt8>] = []
        for (i, ph) in elf.programHeaders.enumerated() where ph.type == ELFFile.PT_NOTE {
            guard let bytes = elf.view.slice(ph.offset, ph.fileSize) else { throw .truncated(.segment(index: i)) }
            regions.append(bytes)
        }
        for (i, s) in elf.sections.enumerated() where s.type == ELFFile.SHT_NOTE {
            guard let bytes = elf.view.slice(s.offset, s.size) else { throw .truncated(.section(index: i)) }
            regions.append(bytes)
        }
        for region in regions {
            for note in try Self.notes(in: region) where note.name.elementsEqual("Xen".utf8) {
                try apply(note)
            }
        }
    }

    private mutating func apply(_ note: (name: ArraySlice<UInt8>, type: UInt32, desc: ArraySlice<UInt8>)) throws(KernelImageError) {
        let bad = KernelImageError.badXenNote(type: note.type, descriptorSize: UInt32(note.desc.count))
        let d = ByteView(Array(note.desc))
        switch note.type {
        case Self.phys32Entry where entry == nil:
            // Linux emits `.long` or `_ASM_PTR` (8 bytes on x86-64); the value
            // is a 32-bit physical address either way.
            let value: UInt64?
            switch d.count {
            case 4: value = d.u32(0).map(UInt64.init)
            case 8: value = d.u64(0)
            default: throw bad
            }
            guard let value, let v32 = UInt32(exactly: value) else { throw bad }
            entry = v32
        case Self.phys32Reloc where relocation == nil:
            guard d.count % 4 == 0 else { throw bad }
            var r = PhysicalRelocation()
            if let align = d.u32(0) {
                // A zero or non-power-of-two alignment cannot be honoured.
                guard align != 0, align & (align - 1) == 0 else { throw bad }
                r.alignment = UInt64(align)
            }
            if let minimum = d.u32(4) { r.minimum = GuestPhysicalAddress(UInt64(minimum)) }
            if let maximum = d.u32(8) { r.maximum = GuestPhysicalAddress(UInt64(maximum)) }
            guard r.minimum <= r.maximum else { throw bad }
            relocation = r
        default:
            break
        }
    }

    /// Splits a note region into (name, type, descriptor), with name and
    /// descriptor each padded to 4 bytes (gABI "Note Section"; x86 ELF64
    /// kernels use 4-byte note alignment too).
    static func notes(in region: ArraySlice<UInt8>) throws(KernelImageError) -> [(name: ArraySlice<UInt8>, type: UInt32, desc: ArraySlice<UInt8>)] {
        let v = ByteView(Array(region))
        var result: [(name: ArraySlice<UInt8>, type: UInt32, desc: ArraySlice<UInt8>)] = []
        var offset: UInt64 = 0
        while offset < UInt64(v.count) {
            guard let namesz = v.u32(offset), let descsz = v.u32(offset + 4), let type = v.u32(offset + 8) else {
                // Trailing zero padding is not a note.
                if v.bytes[Int(offset)...].allSatisfy({ $0 == 0 }) { break }
                throw .truncated(.note)
            }
            let nameStart = offset + 12
            guard let namePadded = UInt64(namesz).alignedUp(4), let descPadded = UInt64(descsz).alignedUp(4),
                  let nameBytes = v.slice(nameStart, UInt64(namesz)),
                  v.range(nameStart, namePadded) != nil,
                  let desc = v.slice(nameStart + namePadded, UInt64(descsz))
            else { throw .truncated(.note) }
            // The name is NUL-terminated; compare without the terminator.
            let name = nameBytes.last == 0 ? nameBytes.dropLast() : nameBytes
            result.append((name: name, type: type, desc: desc))
            let next = nameStart + namePadded + descPadded
            offset = min(next, UInt64(v.count))
        }
        return result
    }
}
