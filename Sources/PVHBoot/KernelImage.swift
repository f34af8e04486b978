import GuestMemory
import XenABI

/// How the kernel file wrapped its ELF image.
public enum KernelContainer: Sendable, Hashable {
    /// A plain ELF file (vmlinux).
    case elf
    /// An x86 bzImage whose payload is the ELF, compressed with the format
    /// (nil: uncompressed, `CONFIG_KERNEL_UNCOMPRESSED`).
    case bzImage(CompressionFormat?)
    /// A compressed ELF file (e.g. vmlinux.gz).
    case compressed(CompressionFormat)
}

/// One PT_LOAD segment: `fileBytes` go at `physicalAddress`, followed by
/// zeros up to `memorySize` (System V gABI "Program Loading").
public struct LoadSegment: Sendable, Hashable {
    /// `p_paddr`: where the segment goes before any relocation.
    public var physicalAddress: GuestPhysicalAddress
    /// `p_vaddr`.
    public var virtualAddress: GuestVirtualAddress
    /// The `p_filesz` bytes from the file.
    public var fileBytes: ArraySlice<UInt8>
    /// `p_memsz` (>= `fileBytes.count`).
    public var memorySize: UInt64
}

/// A PVH-capable kernel, parsed and ready to place: its loadable segments,
/// its PVH entry point and relocation note, and its hypercall sites.
///
/// Xen docs/misc/pvh.pandoc: the kernel is an ELF image carrying
/// `XEN_ELFNOTE_PHYS32_ENTRY`, entered in 32-bit protected mode, paging off.
public struct KernelImage: Sendable {
    /// What the file was.
    public var container: KernelContainer
    /// ELF class of the image.
    public var is64Bit: Bool
    /// The PT_LOAD segments, in file order.
    public var segments: [LoadSegment]
    /// The physical range the segments cover at their preferred addresses
    /// (lowest `p_paddr` to highest `p_paddr + p_memsz`).
    public var physicalRange: GuestPhysicalRange
    /// `XEN_ELFNOTE_PHYS32_ENTRY`: the 32-bit physical entry point.
    public var entry: GuestPhysicalAddress
    /// `XEN_ELFNOTE_PHYS32_RELOC`, if the kernel can run elsewhere.
    public var relocation: PhysicalRelocation?
    /// Largest PT_LOAD `p_align` (Xen's default relocation alignment when the
    /// note gives none).
    public var maximumSegmentAlignment: UInt64
    /// `xen_hypercall_amd`/`xen_hypercall_intel`, at the preferred addresses.
    public var hypercallSites: HypercallSites

    /// Default cap on a decompressed payload.
    public static let defaultDecompressionLimit = 512 << 20

    /// Parses a kernel file: bzImage, ELF32/ELF64, or a compressed ELF.
    public static func parse(
        _ bytes: [UInt8], decompressionLimit: Int = defaultDecompressionLimit
    ) throws(KernelImageError) -> KernelImage {
        if BzImage.hasMagic(bytes) {
            let payload = try BzImage.payload(of: bytes)
            if ELFFile.hasMagic(payload) { return try fromELF(Array(payload), container: .bzImage(nil)) }
            guard let format = CompressionFormat.detect(payload) else { throw .unknownPayloadFormat }
            let elf = try decompress(Array(payload), format, decompressionLimit)
            guard ELFFile.hasMagic(elf) else { throw .unknownPayloadFormat }
            return try fromELF(elf, container: .bzImage(format))
        }
        if ELFFile.hasMagic(bytes) { return try fromELF(bytes, container: .elf) }
        if let format = CompressionFormat.detect(bytes) {
            let elf = try decompress(bytes, format, decompressionLimit)
            guard ELFFile.hasMagic(elf) else { throw .notAKernel }
            return try fromELF(elf, container: .compressed(format))
        }
        throw .notAKernel
    }

    private static func decompress(_ bytes: [UInt8], _ format: CompressionFormat, _ limit: Int) throws(KernelImageError) -> [UInt8] {
        switch Decompressor.decompress(bytes, format: format, limit: limit) {
        case .success(let out): return out
        case .failure(let why): throw .decompressionFailed(format, why)
        }
    }

    static func fromELF(_ bytes: [UInt8], container: KernelContainer) throws(KernelImageError) -> KernelImage {
        let elf = try ELFFile(bytes)
        var segments: [LoadSegment] = []
        var low = UInt64.max, high: UInt64 = 0, maxAlign: UInt64 = 0
        for (index, ph) in elf.loadSegments {
            guard ph.fileSize <= ph.memorySize else { throw .badSegment(index: index) }
            let (end, overflow) = ph.physicalAddress.addingReportingOverflow(ph.memorySize)
            guard !overflow else { throw .badSegment(index: index) }
            guard let data = elf.view.slice(ph.offset, ph.fileSize) else { throw .truncated(.segment(index: index)) }
            segments.append(LoadSegment(physicalAddress: GuestPhysicalAddress(ph.physicalAddress),
                                        virtualAddress: GuestVirtualAddress(ph.virtualAddress),
                                        fileBytes: data, memorySize: ph.memorySize))
            low = min(low, ph.physicalAddress)
            high = max(high, end)
            if ph.alignment & (ph.alignment &- 1) == 0 { maxAlign = max(maxAlign, ph.alignment) }
        }
        guard !segments.isEmpty else { throw .noLoadableSegments }
        let notes = try XenNotes(elf)
        guard let entry = notes.entry else { throw .noPVHEntry }
        let entryAddress = GuestPhysicalAddress(UInt64(entry))
        guard segments.contains(where: {
            GuestPhysicalRange(start: $0.physicalAddress, length: $0.memorySize).contains(entryAddress)
        }) else { throw .entryOutsideImage(entryAddress) }
        return KernelImage(
            container: container, is64Bit: elf.elfClass == .elf64, segments: segments,
            physicalRange: GuestPhysicalRange(start: GuestPhysicalAddress(low), length: high - low),
            entry: entryAddress, relocation: notes.relocation, maximumSegmentAlignment: maxAlign,
            hypercallSites: HypercallSiteFinder.find(in: elf))
    }
}

/// The x86 boot protocol header of a bzImage (Linux
/// Documentation/arch/x86/boot.rst, "The Real-Mode Kernel Header").
enum BzImage {
    /// "HdrS" at 0x202.
    static func hasMagic(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 0x206 && bytes[0x202..<0x206].elementsEqual([0x48, 0x64, 0x72, 0x53])
    }

    /// The protected-mode payload (`payload_offset`/`payload_length`, boot
    /// protocol 2.08+), relative to the protected-mode code at
    /// `(setup_sects + 1) * 512` (`setup_sects` 0 means 4).
    static func payload(of bytes: [UInt8]) throws(KernelImageError) -> ArraySlice<UInt8> {
        let v = ByteView(bytes)
        guard let setupSectors = v.u8(0x1f1), let version = v.u16(0x206) else { throw .truncated(.setupHeader) }
        guard version >= 0x0208 else { throw .bootProtocolTooOld(version: version) }
        guard let payloadOffset = v.u32(0x248), let payloadLength = v.u32(0x24c) else { throw .truncated(.setupHeader) }
        let protectedMode = (UInt64(setupSectors == 0 ? 4 : setupSectors) + 1) * 512
        guard let payload = v.slice(protectedMode + UInt64(payloadOffset), UInt64(payloadLength)) else {
            throw .truncated(.payload)
        }
        return payload
    }
}
