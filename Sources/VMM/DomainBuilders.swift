import ConsoleBackend
import DeviceRuntime
import DeviceSpecs
import EventChannels
import Foundation
import GrantTables
import GuestMemory
import HostIO
import Hypercalls
import KVM
import Logging
import PVHBoot
import PVTime
import XenABI
import XenBus
import XenStore

// The steps that build a `Domain`, in the order `Domain.init` runs them.
// Each owns one concern and hands the next what it made; everything that can
// fail on bad input (files, options, the kernel) fails before anything is
// created.

extension GuestConfiguration {
    /// `vcpuAffinity` against `host` (`resolveAffinity`).
    func resolvedAffinity(on host: HostCPUs) throws(DomainError) -> [Int: [Int]] {
        try Self.resolveAffinity(vcpuAffinity, vcpus: vcpus, on: host)
    }

    /// Each pinned vCPU's online CPUs on `host` (nil: not pinned), from
    /// `lists` by vCPU number. A list that leaves a vCPU no online CPU is
    /// the user's error, as libxl's refusal of an empty cpumap is: exit 2
    /// before anything is created (and the daemon's 400 before a guest
    /// process is started).
    public static func resolveAffinity(_ lists: [CPUList], vcpus: Int, on host: HostCPUs) throws(DomainError) -> [Int: [Int]] {
        var pins: [Int: [Int]] = [:]
        for (vcpu, list) in lists.prefix(vcpus).enumerated() {
            let option = "cpus '\(list)'"
            let cpus: Set<Int>
            do {
                cpus = try list.resolve(cpuCount: host.count, nodeCPUs: { host.nodes[$0] })
            } catch {
                throw .badConfiguration(option: option, reason: error.reason)
            }
            let usable = cpus.intersection(host.online).sorted()
            guard !usable.isEmpty else {
                let online = host.online.sorted().map(String.init).joined(separator: ",")
                throw .badConfiguration(option: option, reason: "vCPU \(vcpu) would have no online CPU (this host's: \(online))")
            }
            pins[vcpu] = usable
        }
        return pins
    }

    /// The options' ranges and the disks' virtual devices, checked before
    /// anything is read or created.
    func validate() throws(DomainError) {
        guard (16...Self.maximumMemoryMiB).contains(memoryMiB) else {
            throw .badConfiguration(option: "--memory \(memoryMiB)", reason: "must be 16 to \(Self.maximumMemoryMiB) MiB")
        }
        guard (1...Self.maximumVCPUs).contains(vcpus) else {
            throw .badConfiguration(option: "--vcpus \(vcpus)", reason: "must be 1 to \(Self.maximumVCPUs)")
        }
        guard (1...Self.maximumGrantFrames).contains(maxGrantFrames) else {
            throw .badConfiguration(option: "--max-grant-frames \(maxGrantFrames)",
                                    reason: "must be 1 to \(Self.maximumGrantFrames)")
        }
        guard domainID != .controlDomain, domainID.rawValue < DomainID.firstReserved else {
            throw .badConfiguration(option: "domain id \(domainID.rawValue)",
                                    reason: "must be 1 to \(DomainID.firstReserved - 1) (0 is the control domain)")
        }
        do {
            try DiskSpecification.validate(disks)
        } catch {
            throw .badConfiguration(option: error.option, reason: error.reason)
        }
        do {
            try NetworkInterfaceSpecification.validate(networks)
        } catch {
            throw .badConfiguration(option: error.option, reason: error.reason)
        }
    }
}

/// The kernel and initrd, read and parsed: the user's files, checked first.
struct GuestImage {
    let kernel: KernelImage
    let initrd: [UInt8]?

    init(_ configuration: GuestConfiguration) throws(DomainError) {
        let bytes = try readFile(configuration.kernelPath)
        do {
            kernel = try KernelImage.parse(bytes)
        } catch {
            throw .badKernel(path: configuration.kernelPath, reason: error.description)
        }
        initrd = try configuration.initrdPath.map { path throws(DomainError) in try readFile(path) }
    }

    /// Lays the guest out in its memory (PVH entry state, start_info, memory
    /// map, ACPI). The grant area and the special pages are reserved in the map.
    func load(into memory: MappedGuestMemory, _ configuration: GuestConfiguration) throws(DomainError) -> BootInfo {
        do {
            return try PVHLoader.load(
                kernel,
                configuration: BootConfiguration(
                    commandLine: configuration.commandLine, initrd: initrd, vcpuCount: configuration.vcpus,
                    reservedRanges: [MemoryMapEntry(range: configuration.grantArea, type: .reserved),
                                     MemoryMapEntry(range: configuration.specialPages, type: .reserved)]),
                into: memory)
        } catch {
            switch error {
            case .initrdDoesNotFit:
                throw .badInitrd(path: configuration.initrdPath ?? "initrd", reason: error.description)
            default:
                throw .badKernel(path: configuration.kernelPath, reason: error.description)
            }
        }
    }
}

/// The KVM side: the VM with its interrupt model and traps, guest memory
/// registered as memory slots, the vCPU objects and the guest TSC.
struct Machine {
    let system: KVMSystem
    let vm: VirtualMachine
    let memory: MappedGuestMemory
    let vcpus: [VCPU]
    /// The offset KVM applies to the host TSC, and the guest TSC's rate (the PV clock's inputs).
    let tscOffset: UInt64
    let tscKHz: UInt32
    /// KVM's supported CPUID (KVM_GET_SUPPORTED_CPUID), read once: the host
    /// vendor for the hypercall sites and every vCPU's table come from it.
    let supportedCPUID: CPUIDTable

    init(_ configuration: GuestConfiguration, system: KVMSystem?) throws(DomainError) {
        let system = try kvm { () throws(KVMError) -> KVMSystem in
            if let system { return system }
            return try KVMSystem()
        }
        self.system = system
        let vm = try kvm { () throws(KVMError) in try system.createVM() }
        self.vm = vm
        try kvm { () throws(KVMError) in
            // Split irqchip: the LAPIC in the kernel, no PIC/IOAPIC/PIT (PVH has
            // no legacy devices, and a PIT's ticks starve an emulated guest).
            try vm.enableSplitIRQChip()
            if vm.capabilities.exitOnEmulationFailure { try vm.enableEmulationFailureExits() }
            try vm.trapMSRWrites([HypercallTransports.msr])
            // kvm_pvm leaves a user SYSCALL at CPL3, and user int n / int1 wrong:
            // the LSTAR write arms those fix-ups (GuestTrapBreakpoints).
            if system.backend.isSoftware { try vm.trapMSRWrites([FastSystemCall.lstar]) }
        }

        let memory: MappedGuestMemory
        do {
            memory = try MappedGuestMemory(ranges: configuration.ramRanges)
        } catch {
            throw .memory("cannot map \(configuration.memoryMiB) MiB: \(error)")
        }
        // The grant area (GuestConfiguration.grantArea): guest-physical
        // memory outside RAM, registered with KVM like RAM.
        do {
            _ = try memory.addRegion(configuration.grantArea)
        } catch {
            throw .memory("cannot map the grant area \(configuration.grantArea): \(error)")
        }
        for mapping in memory.mappingList {
            _ = try kvm { () throws(KVMError) in try vm.addMemory(mapping) }
        }
        self.memory = memory

        // The vCPU objects before the PV clock: it needs the guest TSC's offset.
        var vcpus: [VCPU] = []
        for index in 0..<configuration.vcpus {
            vcpus.append(try kvm { () throws(KVMError) in try vm.createVCPU(id: KVMVCPUID(UInt32(index))) })
        }
        self.vcpus = vcpus
        (tscOffset, tscKHz) = try kvm { () throws(KVMError) in (try vcpus[0].guestTSCOffset(), try vcpus[0].tscKHz) }
        supportedCPUID = try kvm { () throws(KVMError) in try system.supportedCPUID() }
    }
}

/// What Xen itself would hold for the domain: its hypercall-visible state,
/// event channels and upcall delivery, time, vCPU bring-up, grant table and
/// the dispatcher that serves them.
struct XenPlatform {
    let state = DomainState()
    let wakeups: VCPUWakeups
    let upcalls: UpcallInjector
    let events: EventChannelTable
    let timers: DomainTimers
    let smp: SMPControl
    let grants: GrantTable

    init(_ configuration: GuestConfiguration, machine: Machine, metrics: DomainMetrics, guestLog: GuestTriggeredLog) {
        let domain = configuration.domainID
        wakeups = VCPUWakeups(vcpuCount: configuration.vcpus)
        upcalls = UpcallInjector(
            vm: machine.vm, state: state, metrics: metrics, wakeups: wakeups,
            report: { guestLog.log(.upcalls, .warning, $0) })
        upcalls.setVCPUs(machine.vcpus)
        events = EventChannelTable(
            configuration: .init(domainID: domain, vcpuCount: configuration.vcpus, maximumPort: configuration.maximumEventChannelPort),
            memory: machine.memory, locator: state, notifier: upcalls)
        // Xen time: the PV clock from the guest TSC, every vCPU's timers.
        let clockSource = HostPVClockSource(tscOffset: machine.tscOffset)
        timers = DomainTimers(
            vcpuCount: configuration.vcpus, clock: PVClock(tscKHz: machine.tscKHz, start: clockSource.read()),
            source: clockSource, memory: machine.memory, placement: state)
        smp = SMPControl(vcpuCount: configuration.vcpus, wakeups: wakeups)
        smp.setKicks(machine.vcpus.map { vcpu in { vcpu.kick() } })
        // Grant frames start in the reserved grant area (GuestConfiguration.grantArea).
        grants = GrantTable(
            configuration: .init(domainID: domain, maximumFrames: configuration.maxGrantFrames,
                                 defaultArea: configuration.grantArea.start.frameNumber),
            memory: machine.memory)
    }

    /// The hypercall dispatcher over these services.
    func dispatcher(_ configuration: GuestConfiguration, machine: Machine, boot: BootInfo,
                    console: HypervisorConsole) -> HypercallDispatcher {
        // The domain's pages are its RAM (the grant area is not).
        let pages = configuration.ramRanges.reduce(0) { $0 + $1.length } / GuestFrameNumber.pageSize
        // Hole pages the guest may have backed: shared_info, and every grant frame (shared and status).
        let holeLimit = 1 + GrantTable.defaultAreaFrameCount(maximumFrames: configuration.maxGrantFrames)
        return HypercallDispatcher(
            configuration: DomainConfiguration(
                domainID: configuration.domainID, vcpuCount: configuration.vcpus, memoryMap: boot.memoryMap,
                totalPages: pages, maxPages: pages, guestCommandLine: configuration.commandLine,
                features: XenFeatures.pvhDefault.union(.hvmSafePVClock)),
            memory: machine.memory, console: ConsoleAdapter(console: console),
            physmap: PhysmapBacking(vm: machine.vm, memory: machine.memory, holeLimit: holeLimit), state: state,
            eventChannels: events, time: timers, lifecycle: smp, reservationService: GuestRAMRelease(memory: machine.memory),
            grantTables: grants)
    }
}

/// What the toolstack sets up around the domain (xl, xenconsoled,
/// xenstored): the device runtime, the PV console and the XenStore ring
/// with their pages and ports in HVM params, the domain's XenStore tree and
/// the reserved grants for both rings. `tearDown` undoes it as xl's domain
/// destruction does.
struct ToolstackDevices {
    let runtime: DeviceRuntime
    let console: ConsoleBackend
    let store: any XenStoreService
    let storeRing: XenStoreRingConnection
    let storeLayout: DomainStoreLayout
    let domain: DomainID
    let disks: DiskBackends
    let networks: NetworkBackends
    let hotplug: HotplugWatcher

    init(_ configuration: GuestConfiguration, memory: MappedGuestMemory, xen: XenPlatform, store domainStore: DomainStore,
         output: any ConsoleSink, disks images: DiskImages, networks links: NetworkLinks, passedImages: PassedImages,
         logger: Logger, guestLog: GuestTriggeredLog) throws(DomainError) {
        let domain = configuration.domainID
        self.domain = domain
        let store = domainStore.access
        self.store = store
        // Device work runs on the devices' own threads, never on a vCPU's:
        // the runtime counts any pump that finds itself on one.
        runtime = DeviceRuntime(
            isForbiddenThread: Domain.isVCPUThread,
            log: { line in guestLog.log(.devices, .error, line) })
        // The PV console: a ring page the memory map reserves, an unbound
        // port for the backend domain, both handed to the guest in HVM params.
        let consoleFrame = configuration.consolePage.start.frameNumber
        do {
            console = try ConsoleBackend(
                memory: memory, frame: consoleFrame, events: xen.events, domain: domain, runtime: runtime,
                output: { output.emit($0) })
        } catch {
            throw .memory("console ring at \(consoleFrame): \(error)")
        }
        xen.state.setParameter(.consolePFN, to: consoleFrame.rawValue)
        xen.state.setParameter(.consoleEvtchn, to: UInt64(console.guestPort.rawValue))

        // XenStore: the ring page and an unbound port in HVM params, the
        // domain's tree written, the domain introduced (@introduceDomain).
        let storeFrame = configuration.storePage.start.frameNumber
        do {
            storeRing = try XenStoreRingConnection(
                memory: memory, frame: storeFrame, events: xen.events, domain: domain, peer: domainStore.ringPeer(),
                runtime: runtime)
        } catch {
            throw .memory("XenStore ring at \(storeFrame): \(error)")
        }
        xen.state.setParameter(.storePFN, to: storeFrame.rawValue)
        xen.state.setParameter(.storeEvtchn, to: UInt64(storeRing.guestPort.rawValue))
        let kib = configuration.memoryMiB * 1024
        storeLayout = DomainStoreLayout(
            domain: domain, name: configuration.name, uuid: UUID().uuidString.lowercased(),
            maximumMemoryKiB: kib, targetMemoryKiB: kib, vcpus: configuration.vcpus,
            storeFrame: storeFrame.rawValue, storePort: storeRing.guestPort.rawValue,
            consoleFrame: consoleFrame.rawValue, consolePort: console.guestPort.rawValue,
            writesToolstackNodes: domainStore.writesToolstackNodes)
        do {
            try storeLayout.write(to: store)
        } catch {
            throw .memory("XenStore tree for \(domain): \(error)")
        }
        do {
            try store.introduceDomain(domain, ring: storeFrame, port: storeRing.guestPort)
        } catch {
            storeLayout.remove(from: store)
            throw .memory("XenStore: introducing \(domain): \(error)")
        }
        // The toolstack's reserved grants (xc_dom_gnttab_seed): the console
        // and XenStore rings, granted to their backend domain (d0).
        try? xen.grants.seed(GrantTableConstants.consoleReference, to: xen.grants.backendDomain, frame: consoleFrame)
        try? xen.grants.seed(GrantTableConstants.xenstoreReference, to: xen.grants.backendDomain, frame: storeFrame)
        let context = BackendContext(domain: domain, vcpus: configuration.vcpus, memory: memory, grants: xen.grants,
                                     events: xen.events, runtime: runtime, passedImages: passedImages, store: store,
                                     logger: logger, guestLog: guestLog)
        // The disks: their vbd devices under the domain's tree.
        disks = try DiskBackends(images, context: context)
        // The network interfaces: their vif devices under the domain's tree.
        do {
            networks = try NetworkBackends(links, context: context)
        } catch {
            disks.tearDown()
            throw error
        }
        // Devices the toolstack hot-plugs from now on (VMM/Hotplug.swift).
        hotplug = HotplugWatcher(domain: domain, store: store, disks: disks, networks: networks, logger: logger)
        hotplug.start()
    }

    /// After the vCPUs have stopped: the device threads stop before the tree
    /// goes (the console writes what the guest left in its ring first, the
    /// XenStore ring leaves the store, and no pump runs afterwards); then
    /// the tree is removed and @releaseDomain fires, as xl destroys a domain.
    func tearDown() {
        hotplug.stop()
        networks.tearDown()
        disks.tearDown()
        console.shutdown()
        storeRing.shutdown()
        runtime.stopAll()
        storeLayout.remove(from: store)
        try? store.releaseDomain(domain)
    }
}

/// Each vCPU made ready to run: its CPUID, LAPIC, debug registers and (vCPU
/// 0) the PVH entry state, and the thread body that runs it.
enum VCPUSetup {
    static func runners(_ configuration: GuestConfiguration, machine: Machine, boot: BootInfo,
                        breakpoints sites: [GuestLinearAddress], services: DomainServices) throws(DomainError) -> [VCPURunner] {
        let cpuid = machine.supportedCPUID
        let software = machine.system.backend.isSoftware
        var runners: [VCPURunner] = []
        for (index, vcpu) in machine.vcpus.enumerated() {
            let id = VCPUID(UInt32(index))
            try kvm { () throws(KVMError) in
                let table = GuestCPUID.make(base: cpuid, vcpu: id, domain: configuration.domainID,
                                            tscKHz: try vcpu.tscKHz, software: software)
                try vcpu.setCPUID(table)
                // LINT0 in virtual-wire mode, as firmware leaves it: the
                // HVM_PARAM_CALLBACK_IRQ vector is injected as ExtINT
                // (CallbackVectorDelivery), which a guest that never enables
                // its LAPIC takes only this way.
                try vcpu.setLocalAPICVirtualWire()
                if !sites.isEmpty {
                    try vcpu.setGuestDebug(hardwareBreakpoints: sites)
                }
                if index == 0 {
                    // pvh.pandoc: 32-bit flat protected mode, paging off, EBX = start_info.
                    try vcpu.setPVHEntryState(
                        entry: UInt32(truncatingIfNeeded: boot.entry.rawValue),
                        startInfo: UInt32(truncatingIfNeeded: boot.startInfo.rawValue))
                }
            }
            runners.append(VCPURunner(vcpu: vcpu, id: id, services: services))
        }
        return runners
    }

    /// The hypercall transports: KVM_XEN_HVM_CONFIG hosts trap
    /// vmcall/vmmcall themselves; elsewhere hardware breakpoints on the sites
    /// found in the kernel's ELF do.
    static func transports(machine: Machine, boot: BootInfo) throws(DomainError) -> HypercallTransports {
        let kvmIntercepts = machine.vm.capabilities.xenHypercallIntercept
        if kvmIntercepts {
            try kvm { () throws(KVMError) in try machine.vm.configureXenHVM(hypercallMSR: HypercallTransports.msr) }
        }
        let hostVendorIsAMD = machine.supportedCPUID.lookup(function: 0)?.ebx == 0x6874_7541  // "Auth"
        let sites = HypercallTransports.breakpointAddresses(
            for: boot.hypercallSites, preferAMD: hostVendorIsAMD, kvmIntercepts: kvmIntercepts)
        return HypercallTransports(breakpointSites: sites)
    }
}

/// The CPUID a vCPU sees.
enum GuestCPUID {
    /// KVM's supported CPUID with its own signature leaves replaced by Xen's
    /// (arch-x86/cpuid.h), per vCPU (leaf 4 EBX is the vCPU id, ECX the domain id).
    static func make(base: CPUIDTable, vcpu: VCPUID, domain: DomainID, tscKHz: UInt32, software: Bool) -> CPUIDTable {
        var table = base
        for function in 0x4000_0000...0x4000_00ff as ClosedRange<UInt32> {
            table.remove(function: function)
        }
        for leaf in XenCPUIDLeaves.make(vcpu: vcpu, domain: domain, time: XenCPUIDTime(tscKHz: tscKHz)) {
            table.set(CPUIDEntry(
                function: leaf.function, index: leaf.index,
                flags: leaf.significantIndex ? .significantIndex : [],
                eax: leaf.eax, ebx: leaf.ebx, ecx: leaf.ecx, edx: leaf.edx))
        }
        // The vCPU's own APIC ID where CPUID reports it (leaf 1 EBX[31:24],
        // leaf 0xB/0x1F EDX), as the LAPIC has it (KVM numbers them by vCPU
        // id): Linux checks the two agree when it starts each AP.
        table.modify(function: 1) { $0.ebx = ($0.ebx & 0x00ff_ffff) | (vcpu.rawValue & 0xff) << 24 }
        for leaf in [UInt32(0xb), 0x1f] {
            for index in 0..<UInt32(4) { table.modify(function: leaf, index: index) { $0.edx = vcpu.rawValue } }
        }
        if software {
            // The software backend's emulator cannot run XSAVE/AVX state or
            // CMPXCHG16B: hide them where KVM lets us (on kvm_pvm leaves 1, 7
            // and 0xd show through anyway, so guests also get `noxsave
            // clearcpuid=xsave,cx16`). Leaf 1 ECX: 13 CX16, 26 XSAVE, 27
            // OSXSAVE, 28 AVX; leaf 7 EBX: 5 AVX2; leaf 0xd: XSAVE state.
            table.modify(function: 1) { $0.ecx &= ~(UInt32(1) << 13 | UInt32(1) << 26 | UInt32(1) << 27 | UInt32(1) << 28) }
            table.modify(function: 7) { $0.ebx &= ~(UInt32(1) << 5) }
            table.remove(function: 0xd)
        }
        return table
    }
}

/// A KVM call whose failure ends the build.
func kvm<T>(_ body: () throws(KVMError) -> T) throws(DomainError) -> T {
    do { return try body() } catch { throw .kvm("\(error)") }
}
