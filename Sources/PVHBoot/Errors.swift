import GuestMemory
import XenABI

/// A structure inside a kernel file that was cut short or points outside it.
public enum ImageStructure: Sendable, Hashable, CustomStringConvertible {
    /// The x86 boot protocol setup header (Documentation/arch/x86/boot.rst).
    case setupHeader
    /// The bzImage's compressed payload (`payload_offset`/`payload_length`).
    case payload
    /// The ELF file header.
    case elfHeader
    /// The program header table (`e_phoff`, `e_phnum`, `e_phentsize`).
    case programHeaderTable
    /// The file bytes of program header `index` (`p_offset`, `p_filesz`).
    case segment(index: Int)
    /// The section header table (`e_shoff`, `e_shnum`, `e_shentsize`).
    case sectionHeaderTable
    /// The file bytes of section `index` (`sh_offset`, `sh_size`).
    case section(index: Int)
    /// An ELF note header, name or descriptor.
    case note

    public var description: String {
        switch self {
        case .setupHeader: "bzImage setup header"
        case .payload: "bzImage payload"
        case .elfHeader: "ELF header"
        case .programHeaderTable: "ELF program header table"
        case .segment(let i): "ELF segment \(i)"
        case .sectionHeaderTable: "ELF section header table"
        case .section(let i): "ELF section \(i)"
        case .note: "ELF note"
        }
    }
}

/// Why a kernel file could not be parsed. Every offset and size read from the
/// file is checked, so corrupt input ends here, never in a crash.
public enum KernelImageError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Neither an ELF file, a bzImage (boot-protocol magic "HdrS" at 0x202),
    /// nor a compressed file whose contents are one of those.
    case notAKernel
    /// A structure runs past the end of the file.
    case truncated(ImageStructure)
    /// The bzImage's boot protocol predates 2.08, which added the payload fields.
    case bootProtocolTooOld(version: UInt16)
    /// The bzImage payload is not a compressed ELF file.
    case unknownPayloadFormat
    /// The compressed payload could not be decompressed.
    case decompressionFailed(CompressionFormat, DecompressionFailure)
    /// Not a little-endian ELF32/ELF64 file for x86 (EI_CLASS, EI_DATA, e_machine).
    case unsupportedELF(class: UInt8, data: UInt8, machine: UInt16)
    /// A program/section header entry size that does not match the ELF class.
    case badHeaderEntrySize(ImageStructure, size: UInt16)
    /// A PT_LOAD segment whose `p_filesz` exceeds `p_memsz`, or whose address
    /// range wraps around.
    case badSegment(index: Int)
    /// No PT_LOAD segment with a non-zero size.
    case noLoadableSegments
    /// A Xen note (`type`) whose descriptor has a size or value the ABI does not allow.
    case badXenNote(type: UInt32, descriptorSize: UInt32)
    /// No XEN_ELFNOTE_PHYS32_ENTRY note.
    case noPVHEntry
    /// The PVH entry point lies outside every PT_LOAD segment's physical range.
    case entryOutsideImage(GuestPhysicalAddress)

    public var description: String {
        switch self {
        case .notAKernel:
            "not a kernel: no ELF, bzImage or compressed-kernel magic"
        case .truncated(let what):
            "truncated: \(what) runs past the end of the file"
        case .bootProtocolTooOld(let v):
            "bzImage boot protocol \(v >> 8).\(String(format: v & 0xff)) is older than 2.08 (no payload fields)"
        case .unknownPayloadFormat:
            "bzImage payload is neither ELF nor a known compressed format"
        case .decompressionFailed(let format, let why):
            "corrupt or unsupported \(format) payload: \(why)"
        case .unsupportedELF(let c, let d, let m):
            "unsupported ELF: class \(c), data encoding \(d), machine \(m) (want little-endian x86 ELF32/ELF64)"
        case .badHeaderEntrySize(let what, let size):
            "corrupt ELF: \(what) entry size \(size)"
        case .badSegment(let i):
            "corrupt ELF: segment \(i) has p_filesz > p_memsz or an address range that wraps"
        case .noLoadableSegments:
            "corrupt ELF: no loadable (PT_LOAD) segments"
        case .badXenNote(let type, let size):
            "corrupt Xen ELF note type \(type): descriptor size \(size) or value not allowed"
        case .noPVHEntry:
            "no XEN_ELFNOTE_PHYS32_ENTRY: not a PVH-capable kernel"
        case .entryOutsideImage(let a):
            "PVH entry point \(a) is outside the loadable segments"
        }
    }
}

/// Why a parsed kernel could not be laid out in, or written to, guest memory.
public enum BootError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The image needs more bytes than the guest has RAM.
    case imageLargerThanMemory(imageSize: UInt64, memorySize: UInt64)
    /// The image's physical range is not wholly inside one RAM region (or hits
    /// a reserved range) and it has no XEN_ELFNOTE_PHYS32_RELOC note.
    case imageDoesNotFit(GuestPhysicalRange)
    /// The image is relocatable but no address in [minimum, maximum] at the
    /// required alignment is free RAM.
    case relocationImpossible(imageSize: UInt64, PhysicalRelocation)
    /// No free RAM below 4 GiB for the initrd.
    case initrdDoesNotFit(size: UInt64)
    /// No free RAM below 4 GiB for start_info, the module list, the memory map
    /// and the command line.
    case bootDataDoesNotFit(size: UInt64)
    /// No free RAM below 4 GiB for the ACPI tables.
    case acpiTablesDoNotFit(size: UInt64)
    /// The command line contains a NUL byte.
    case commandLineContainsNUL
    /// The vCPU count is outside 1...`PVHLoader.maximumVCPUs`.
    case badVCPUCount(Int)
    /// Writing guest memory failed (a planned range is not RAM).
    case guestMemory(GuestMemoryError)

    public var description: String {
        switch self {
        case .imageLargerThanMemory(let size, let mem):
            "image needs \(size) bytes but the guest has \(mem) bytes of RAM"
        case .imageDoesNotFit(let r):
            "image range \(r.start)-0x\(String(r.end, radix: 16)) is not free guest RAM and the kernel is not relocatable"
        case .relocationImpossible(let size, let reloc):
            "cannot relocate a \(size)-byte image within \(reloc.minimum)-\(reloc.maximum) at alignment 0x\(String(reloc.alignment, radix: 16))"
        case .initrdDoesNotFit(let size):
            "initrd (\(size) bytes) does not fit in free guest RAM below 4 GiB"
        case .bootDataDoesNotFit(let size):
            "boot data (\(size) bytes) does not fit in free guest RAM below 4 GiB"
        case .acpiTablesDoNotFit(let size):
            "ACPI tables (\(size) bytes) do not fit in free guest RAM below 4 GiB"
        case .commandLineContainsNUL:
            "command line contains a NUL byte"
        case .badVCPUCount(let n):
            "vCPU count \(n) is outside 1...\(PVHLoader.maximumVCPUs)"
        case .guestMemory(let e):
            "guest memory: \(e)"
        }
    }
}

extension String {
    /// Two-digit decimal formatting without Foundation.
    fileprivate init(format value: UInt16) {
        self = value < 10 ? "0\(value)" : "\(value)"
    }
}
