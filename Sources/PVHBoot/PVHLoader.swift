import GuestMemory
import XenABI

/// What to boot besides the kernel.
public struct BootConfiguration: Sendable, Hashable {
    /// The kernel command line (`hvm_start_info.cmdline_paddr`).
    public var commandLine: String
    /// The initrd, passed as the first (only) module.
    public var initrd: [UInt8]?
    /// Number of vCPUs; the MADT lists APIC IDs 0..<vcpuCount.
    public var vcpuCount: Int
    /// Whether to build ACPI tables (`rsdp_paddr` is 0 without them).
    public var acpi: Bool
    /// Ranges the VMM keeps for itself (e.g. in-RAM special pages). The
    /// loader places nothing there and lists them in the memory map with
    /// their types, carved out of RAM.
    public var reservedRanges: [MemoryMapEntry]

    public init(commandLine: String = "", initrd: [UInt8]? = nil, vcpuCount: Int = 1, acpi: Bool = true,
                reservedRanges: [MemoryMapEntry] = []) {
        self.commandLine = commandLine
        self.initrd = initrd
        self.vcpuCount = vcpuCount
        self.acpi = acpi
        self.reservedRanges = reservedRanges
    }
}

/// Where everything went: what the VMM needs to start vCPU 0 (EIP = `entry`,
/// EBX = `startInfo`, 32-bit flat protected mode, paging off; Xen
/// docs/misc/pvh.pandoc) and to serve XENMEM_memory_map and hypercall traps.
public struct BootInfo: Sendable, Hashable {
    /// The PVH entry point (after relocation).
    public var entry: GuestPhysicalAddress
    /// `hvm_start_info`, for EBX.
    public var startInfo: GuestPhysicalAddress
    /// The memory map given to the guest (also the answer to XENMEM_memory_map).
    public var memoryMap: [MemoryMapEntry]
    /// Hypercall instruction sites, physical addresses relocated.
    public var hypercallSites: HypercallSites
    /// Where the kernel image lies.
    public var kernelRange: GuestPhysicalRange
    /// Physical shift applied to the image (0 unless relocated).
    public var relocationDelta: Int64
    /// The command line (NUL-terminated).
    public var commandLine: GuestPhysicalAddress
    /// The memory-map table (`hvm_memmap_table_entry[]`).
    public var memoryMapTable: GuestPhysicalAddress
    /// The module list, when there is an initrd.
    public var moduleList: GuestPhysicalAddress?
    /// The initrd, when given.
    public var initrd: GuestPhysicalRange?
    /// The ACPI RSDP, when ACPI tables were built.
    public var rsdp: GuestPhysicalAddress?
    /// The ACPI tables' span (listed in the memory map as ACPI).
    public var acpiRange: GuestPhysicalRange?
    /// The span holding start_info, module list, memory map and command line.
    public var bootDataRange: GuestPhysicalRange
}

/// Places and writes a PVH kernel and its boot data into guest memory.
///
/// Policy (Xen docs/misc/pvh.pandoc leaves placement to the builder):
/// - the image goes at its `p_paddr`s when that range is free RAM; otherwise,
///   if it has XEN_ELFNOTE_PHYS32_RELOC, at the lowest aligned free address in
///   [minimum, maximum]; every segment, the entry and the hypercall sites'
///   physical addresses shift by the same delta;
/// - ACPI tables at 0xE0000 (the legacy BIOS area) when free, else the lowest
///   free RAM above the first page;
/// - start_info, module list, memory map and command line together in the
///   lowest free RAM above the first page (above the image when the image
///   starts at 0);
/// - the initrd page-aligned in the highest free RAM below 4 GiB.
/// Everything the guest reads in 32-bit mode lies below 4 GiB.
public enum PVHLoader {
    /// MADT entries beyond this would not be useful to any PVH guest.
    public static let maximumVCPUs = 1024
    static let pageSize: UInt64 = 4096
    static let preferredACPIBase = GuestPhysicalAddress(0xE0000)
    static let legacyAreaEnd: UInt64 = 0x10_0000

    /// Computes the layout without touching memory.
    public static func plan(
        _ kernel: KernelImage, configuration: BootConfiguration, ram: [GuestPhysicalRange]
    ) throws(BootError) -> BootInfo {
        guard (1...maximumVCPUs).contains(configuration.vcpuCount) else {
            throw .badVCPUCount(configuration.vcpuCount)
        }
        guard !configuration.commandLine.utf8.contains(0) else { throw .commandLineContainsNUL }
        var layout = GuestLayout(ram: ram)
        for r in configuration.reservedRanges { layout.take(r.range) }

        // 1. The kernel image.
        let image = kernel.physicalRange
        let delta = try placeImage(kernel, layout: layout)
        let kernelRange = GuestPhysicalRange(
            start: GuestPhysicalAddress(image.start.rawValue &+ UInt64(bitPattern: delta)), length: image.length)
        layout.take(kernelRange)

        // 2. ACPI tables.
        var acpi: ACPITables?
        var acpiReserved: GuestPhysicalRange?
        if configuration.acpi {
            let size = UInt64(ACPITables.size(vcpuCount: configuration.vcpuCount))
            let pages = size.alignedUp(pageSize) ?? size
            let preferred = GuestPhysicalRange(start: preferredACPIBase, length: pages)
            let base: GuestPhysicalAddress
            if preferred.end <= legacyAreaEnd, layout.isFree(preferred) {
                base = preferredACPIBase
            } else if let b = layout.lowest(size: pages, alignment: pageSize, from: pageSize) {
                base = b
            } else {
                throw .acpiTablesDoNotFit(size: size)
            }
            let tables = ACPITables(base: base, vcpuCount: configuration.vcpuCount)
            acpiReserved = GuestPhysicalRange(start: base, length: pages)
            layout.take(GuestPhysicalRange(start: base, length: pages))
            acpi = tables
        }

        // 3. The initrd, high (before boot data, so the low area stays compact).
        var initrdRange: GuestPhysicalRange?
        if let initrd = configuration.initrd, !initrd.isEmpty {
            let size = UInt64(initrd.count)
            guard let base = layout.highest(size: size.alignedUp(pageSize) ?? size, alignment: pageSize) else {
                throw .initrdDoesNotFit(size: size)
            }
            initrdRange = GuestPhysicalRange(start: base, length: size)
            layout.take(GuestPhysicalRange(start: base, length: size.alignedUp(pageSize) ?? size))
        }

        // 4. The memory map (final: nothing placed later changes it).
        var special = configuration.reservedRanges
        if let r = acpiReserved { special.append(MemoryMapEntry(range: r, type: .acpiReclaimable)) }
        let memoryMap = MemoryMapBuilder.build(ram: layout.ram, special: special)

        // 5. Boot data: start_info | module list | memory map | command line.
        func align8(_ n: Int) -> Int { (n + 7) & ~7 }
        let moduleCount = initrdRange == nil ? 0 : 1
        let modOff = align8(HVMStartInfo.size)
        let mapOff = align8(modOff + moduleCount * HVMModule.size)
        let cmdOff = align8(mapOff + memoryMap.count * MemoryMapEntry.startInfoEntrySize)
        let bootSize = UInt64(cmdOff + configuration.commandLine.utf8.count + 1)
        guard let bootBase = layout.lowest(size: bootSize, alignment: 64, from: pageSize) else {
            throw .bootDataDoesNotFit(size: bootSize)
        }
        let at = { (offset: Int) in GuestPhysicalAddress(bootBase.rawValue + UInt64(offset)) }

        return BootInfo(
            entry: GuestPhysicalAddress(kernel.entry.rawValue &+ UInt64(bitPattern: delta)),
            startInfo: bootBase, memoryMap: memoryMap,
            hypercallSites: kernel.hypercallSites.relocated(by: delta), kernelRange: kernelRange,
            relocationDelta: delta, commandLine: at(cmdOff), memoryMapTable: at(mapOff),
            moduleList: moduleCount > 0 ? at(modOff) : nil, initrd: initrdRange, rsdp: acpi?.rsdp,
            acpiRange: acpi?.range, bootDataRange: GuestPhysicalRange(start: bootBase, length: bootSize))
    }

    /// Plans the layout for `memory`'s regions and writes the image, ACPI
    /// tables, initrd and boot data.
    @discardableResult
    public static func load(
        _ kernel: KernelImage, configuration: BootConfiguration, into memory: some GuestMemory
    ) throws(BootError) -> BootInfo {
        let info = try plan(kernel, configuration: configuration, ram: memory.regions)
        do {
            for segment in kernel.segments {
                let start = GuestPhysicalAddress(segment.physicalAddress.rawValue &+ UInt64(bitPattern: info.relocationDelta))
                try memory.write(segment.fileBytes, at: start)
                let zeros = segment.memorySize - UInt64(segment.fileBytes.count)
                if zeros > 0, let bss = start.advanced(by: UInt64(segment.fileBytes.count)) {
                    try memory.fill(at: bss, count: Int(zeros), with: 0)
                }
            }
            if let rsdp = info.rsdp {
                try memory.write(ACPITables(base: rsdp, vcpuCount: configuration.vcpuCount).bytes, at: rsdp)
            }
            var modules: [HVMModule] = []
            if let initrd = configuration.initrd, let range = info.initrd {
                try memory.write(initrd, at: range.start)
                modules.append(HVMModule(address: range.start, length: range.length))
            }
            let startInfo = HVMStartInfo(
                moduleCount: UInt32(modules.count),
                moduleListAddress: info.moduleList ?? GuestPhysicalAddress(0),
                commandLineAddress: info.commandLine, rsdpAddress: info.rsdp ?? GuestPhysicalAddress(0),
                memoryMapAddress: info.memoryMapTable, memoryMapEntryCount: UInt32(info.memoryMap.count))
            try memory.fill(at: info.bootDataRange.start, count: Int(info.bootDataRange.length), with: 0)
            try memory.write(startInfo.encoded(), at: info.startInfo)
            if let list = info.moduleList { try memory.write(modules.flatMap { $0.encoded() }, at: list) }
            try memory.write(MemoryMapEntry.encodeStartInfoTable(info.memoryMap), at: info.memoryMapTable)
            try memory.write(Array(configuration.commandLine.utf8) + [0], at: info.commandLine)
        } catch {
            throw .guestMemory(error)
        }
        return info
    }

    /// The physical shift for the image: 0 when its own range is free RAM,
    /// else a relocation permitted by its PHYS32_RELOC note.
    static func placeImage(_ kernel: KernelImage, layout: GuestLayout) throws(BootError) -> Int64 {
        let image = kernel.physicalRange
        if layout.isFree(image) { return 0 }
        guard let reloc = kernel.relocation else {
            let memory = layout.ram.reduce(0) { $0 + $1.length }
            if image.length > memory { throw .imageLargerThanMemory(imageSize: image.length, memorySize: memory) }
            throw .imageDoesNotFit(image)
        }
        // The entry is a 32-bit address: keep the whole image below 4 GiB too.
        let lastByte = min(reloc.maximum.rawValue, 0xffff_ffff)
        guard let start = layout.lowest(size: image.length, alignment: reloc.alignment,
                                        from: reloc.minimum.rawValue, lastByte: lastByte)
        else { throw .relocationImpossible(imageSize: image.length, reloc) }
        // Two's-complement difference: applied with wrapping addition it moves
        // every address by the same amount whatever the preferred address was.
        return Int64(bitPattern: start.rawValue &- image.start.rawValue)
    }
}
