import ConsoleBackend
import DeviceRuntime
import Dispatch
import EventChannels
import GrantTables
import PVTime
import Foundation
import Synchronization
import GuestMemory
import Hypercalls
import KVM
import PVHBoot
import XenABI
import XenBus
import XenStore

/// Why a domain could not be built. Usage errors (a bad file or option) are
/// told apart so the CLI can exit 2 with one line naming the culprit.
public enum DomainError: Error, CustomStringConvertible, Sendable {
    case unreadableFile(path: String, reason: String)
    case badKernel(path: String, reason: String)
    case badInitrd(path: String, reason: String)
    case badConfiguration(option: String, reason: String)
    case kvm(String)
    case memory(String)

    public var isUsageError: Bool {
        switch self {
        case .unreadableFile, .badKernel, .badInitrd, .badConfiguration: true
        case .kvm, .memory: false
        }
    }

    public var description: String {
        switch self {
        case .unreadableFile(let p, let r): "\(p): \(r)"
        case .badKernel(let p, let r): "\(p): \(r)"
        case .badInitrd(let p, let r): "\(p): \(r)"
        case .badConfiguration(let o, let r): "\(o): \(r)"
        case .kvm(let r): "KVM: \(r)"
        case .memory(let r): "guest memory: \(r)"
        }
    }
}

/// Reads a whole file, or says why not in words a user can act on.
func readFile(_ path: String) throws(DomainError) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        if !FileManager.default.fileExists(atPath: path) {
            throw .unreadableFile(path: path, reason: "no such file")
        }
        let type = (try? FileManager.default.attributesOfItem(atPath: path))?[.type] as? FileAttributeType
        throw .unreadableFile(path: path, reason: type == .typeDirectory ? "is a directory" : "cannot be read (permission denied?)")
    }
    return [UInt8](data)
}

/// One running guest: its VM, RAM, vCPUs and the services hypercalls reach.
/// Building it does everything that can fail on bad input (reading and
/// loading the kernel) before any vCPU runs; `run()` then only runs.
public final class Domain: Sendable {
    public let configuration: GuestConfiguration
    public let lifecycle = DomainLifecycle()
    /// Where everything was put in the guest (entry, start_info, map, sites).
    public let bootInfo: BootInfo
    /// The host's KVM backend (hardware or the software emulator).
    public let backend: HostBackend
    /// The Xen-visible state hypercalls changed (shared_info, vcpu_info, params).
    public let state: DomainState
    /// Counters: hypercalls per transport, exits.
    public let metrics = DomainMetrics()
    /// How hypercalls may arrive; see `HypercallTransports.retireSites`.
    let transports: HypercallTransports
    /// The guest installed the hypercall page before using a vmcall site, so
    /// the sites' hardware breakpoints are off.
    public var hypercallSitesRetired: Bool { transports.sitesRetired.load(ordering: .relaxed) }
    /// The domain's event channels (guest ports and the backends' ports).
    public let events: EventChannelTable
    /// Xen time: the PV clock and every vCPU's timers.
    public let timers: DomainTimers
    let timerThread: TimerThread
    /// The PV console backend (HVM_PARAM_CONSOLE_PFN / _EVTCHN).
    public let consoleBackend: ConsoleBackend
    /// The guest's grant table; backends map the guest's grants through it
    /// (the backend domain, d0, is the grantee).
    public let grants: GrantTable
    /// The device runtime the PV backends (console, XenStore ring) run on:
    /// one thread each, stopped when the domain ends.
    public let devices: DeviceRuntime
    /// Which guest frames hold memory (the balloon gives them back).
    public let reservation: MemoryReservation
    /// The store this domain's tree lives in (shared with the toolstack's
    /// socket) and the guest's ring connection to it.
    public let store: XenStoreServer
    public let storeRing: XenStoreRingConnection
    /// The tree written for this domain (removed when it ends).
    public let storeLayout: DomainStoreLayout
    let vm: VirtualMachine
    let memory: MappedGuestMemory
    let runners: [VCPURunner]
    let dumps = VCPUStateDump()

    /// The domain ID the guest sees (Xen: a domU's is never 0 here).
    public static let domainID = DomainID(rawValue: 1)

    /// Builds the domain. `store` is the toolstack's XenStore (a fresh one
    /// if nil): the domain's tree is written there and the guest's ring
    /// connected to it.
    public init(configuration: GuestConfiguration, console: any ConsoleSink, system: KVMSystem? = nil,
                store: XenStoreServer? = nil) throws(DomainError) {
        self.configuration = configuration
        guard (16...GuestConfiguration.maximumMemoryMiB).contains(configuration.memoryMiB) else {
            throw .badConfiguration(option: "--memory \(configuration.memoryMiB)", reason: "must be 16 to \(GuestConfiguration.maximumMemoryMiB) MiB")
        }
        guard (1...GuestConfiguration.maximumVCPUs).contains(configuration.vcpus) else {
            throw .badConfiguration(option: "--vcpus \(configuration.vcpus)", reason: "must be 1 to \(GuestConfiguration.maximumVCPUs)")
        }
        guard (1...GuestConfiguration.maximumGrantFrames).contains(configuration.maxGrantFrames) else {
            throw .badConfiguration(option: "--max-grant-frames \(configuration.maxGrantFrames)",
                                    reason: "must be 1 to \(GuestConfiguration.maximumGrantFrames)")
        }

        // Bad input first: nothing is created for a kernel that cannot boot.
        let kernelBytes = try readFile(configuration.kernelPath)
        let kernel: KernelImage
        do {
            kernel = try KernelImage.parse(kernelBytes)
        } catch {
            throw .badKernel(path: configuration.kernelPath, reason: error.description)
        }
        let initrd = try configuration.initrdPath.map { path throws(DomainError) in try readFile(path) }

        let system = try Self.kvm { () throws(KVMError) -> KVMSystem in
            if let system { return system }
            return try KVMSystem()
        }
        backend = system.backend
        let vm = try Self.kvm { () throws(KVMError) in try system.createVM() }
        self.vm = vm
        try Self.kvm { () throws(KVMError) in
            // Split irqchip: the LAPIC in the kernel, no PIC/IOAPIC/PIT (PVH has
            // no legacy devices, and a PIT's ticks starve an emulated guest).
            try vm.enableSplitIRQChip()
            if vm.capabilities.exitOnEmulationFailure { try vm.enableEmulationFailureExits() }
            try vm.trapMSRWrites([HypercallTransports.msr])
            // kvm_pvm leaves a user SYSCALL at CPL3: arm the fix-up (FastSystemCall).
            if system.backend.isSoftware { try vm.trapMSRWrites([FastSystemCall.lstar]) }
        }

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
            _ = try Self.kvm { () throws(KVMError) in try vm.addMemory(mapping) }
        }

        // The vCPU objects first: the PV clock needs the guest TSC's offset.
        var vcpus: [VCPU] = []
        for index in 0..<configuration.vcpus {
            vcpus.append(try Self.kvm { () throws(KVMError) in try vm.createVCPU(id: KVMVCPUID(UInt32(index))) })
        }
        let (tscOffset, tscKHz) = try Self.kvm { () throws(KVMError) in (try vcpus[0].guestTSCOffset(), try vcpus[0].tscKHz) }

        let boot: BootInfo
        do {
            boot = try PVHLoader.load(
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
        bootInfo = boot

        let state = DomainState()
        self.state = state
        // The domain's pages are its RAM (the grant area is not).
        let totalPages = configuration.ramRanges.reduce(0) { $0 + $1.length } / GuestFrameNumber.pageSize
        let wakeups = VCPUWakeups(vcpuCount: configuration.vcpus)
        let upcalls = UpcallInjector(
            vm: vm, state: state, metrics: metrics, wakeups: wakeups,
            report: { FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \($0)\n".utf8)) })
        let events = EventChannelTable(
            configuration: .init(domainID: Self.domainID, vcpuCount: configuration.vcpus),
            memory: memory, locator: state, notifier: upcalls)
        self.events = events
        // Xen time: the PV clock from the guest TSC, every vCPU's timers.
        let clockSource = HostPVClockSource(tscOffset: tscOffset)
        let timers = DomainTimers(
            vcpuCount: configuration.vcpus, clock: PVClock(tscKHz: tscKHz, start: clockSource.read()),
            source: clockSource, memory: memory, placement: state)
        self.timers = timers
        let smp = SMPControl(vcpuCount: configuration.vcpus, wakeups: wakeups)
        // Device work runs on the devices' own threads, never on a vCPU's:
        // the runtime counts any pump that finds itself on one.
        let devices = DeviceRuntime(
            isForbiddenThread: Self.isVCPUThread,
            log: { line in FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(line)\n".utf8)) })
        self.devices = devices
        // The PV console (what xl's console backend sets up): a ring page the
        // memory map reserves, an unbound port for the backend domain, both
        // handed to the guest in HVM params.
        let consoleFrame = configuration.consolePage.start.frameNumber
        do {
            consoleBackend = try ConsoleBackend(
                memory: memory, frame: consoleFrame, events: events, domain: Self.domainID, runtime: devices,
                output: { console.emit($0) })
        } catch {
            throw .memory("console ring at \(consoleFrame): \(error)")
        }
        state.setParameter(.consolePFN, to: consoleFrame.rawValue)
        state.setParameter(.consoleEvtchn, to: UInt64(consoleBackend.guestPort.rawValue))

        // XenStore (what xl and xenstored do at domain creation): the ring
        // page and an unbound port in HVM params, the domain's tree written,
        // the domain introduced (@introduceDomain).
        let store = store ?? XenStoreServer()
        self.store = store
        let storeFrame = configuration.storePage.start.frameNumber
        do {
            storeRing = try XenStoreRingConnection(
                memory: memory, frame: storeFrame, events: events, domain: Self.domainID, server: store,
                runtime: devices)
        } catch {
            throw .memory("XenStore ring at \(storeFrame): \(error)")
        }
        state.setParameter(.storePFN, to: storeFrame.rawValue)
        state.setParameter(.storeEvtchn, to: UInt64(storeRing.guestPort.rawValue))
        let kib = configuration.memoryMiB * 1024
        storeLayout = DomainStoreLayout(
            domain: Self.domainID, name: configuration.name, uuid: UUID().uuidString.lowercased(),
            maximumMemoryKiB: kib, targetMemoryKiB: kib, vcpus: configuration.vcpus,
            storeFrame: storeFrame.rawValue, storePort: storeRing.guestPort.rawValue,
            consoleFrame: consoleFrame.rawValue, consolePort: consoleBackend.guestPort.rawValue)
        do {
            try storeLayout.write(to: store)
        } catch {
            throw .memory("XenStore tree for d\(Self.domainID.rawValue): \(error)")
        }
        store.introduceDomain(Self.domainID)
        // Grant tables: frames start in the reserved grant area (GuestConfiguration.grantArea).
        let grants = GrantTable(
            configuration: .init(domainID: Self.domainID, maximumFrames: configuration.maxGrantFrames,
                                 defaultArea: configuration.grantArea.start.frameNumber),
            memory: memory)
        self.grants = grants
        // The toolstack's reserved grants (xc_dom_gnttab_seed): the console
        // and XenStore rings, granted to their backend domain (d0).
        try? grants.seed(GrantTableConstants.consoleReference, to: grants.backendDomain, frame: consoleFrame)
        try? grants.seed(GrantTableConstants.xenstoreReference, to: grants.backendDomain, frame: storeFrame)
        let holeLimit = 1 + GrantTable.defaultAreaFrameCount(maximumFrames: configuration.maxGrantFrames)
        let dispatcher = HypercallDispatcher(
            configuration: DomainConfiguration(
                domainID: Self.domainID, vcpuCount: configuration.vcpus, memoryMap: boot.memoryMap,
                totalPages: totalPages, maxPages: totalPages, guestCommandLine: configuration.commandLine,
                features: XenFeatures.pvhDefault.union(.hvmSafePVClock)),
            memory: memory, console: ConsoleAdapter(sink: console),
            physmap: SharedInfoBacking(vm: vm, memory: memory, holeLimit: holeLimit), state: state, eventChannels: events,
            time: timers, lifecycle: smp, reservationService: GuestRAMRelease(memory: memory), grantTables: grants)
        self.reservation = dispatcher.reservation

        // KVM_XEN_HVM_CONFIG hosts trap vmcall/vmmcall themselves; elsewhere
        // hardware breakpoints on the sites found in the kernel's ELF do.
        let kvmIntercepts = vm.capabilities.xenHypercallIntercept
        if kvmIntercepts {
            try Self.kvm { () throws(KVMError) in try vm.configureXenHVM(hypercallMSR: HypercallTransports.msr) }
        }
        let cpuid = try Self.kvm { () throws(KVMError) in try system.supportedCPUID() }
        let hostVendorIsAMD = cpuid.lookup(function: 0)?.ebx == 0x6874_7541  // "Auth"
        let sites = HypercallTransports.breakpointAddresses(
            for: boot.hypercallSites, preferAMD: hostVendorIsAMD, kvmIntercepts: kvmIntercepts)
        let transports = HypercallTransports(breakpointSites: Set(sites))
        self.transports = transports
        let services = DomainServices(
            memory: memory, dispatcher: dispatcher, console: console, lifecycle: self.lifecycle,
            transports: transports,
            metrics: metrics, events: events, timers: timers, wakeups: wakeups, smp: smp, dumps: dumps,
            state: state, upcalls: upcalls)
        smp.setKicks(vcpus.map { vcpu in { vcpu.kick() } })
        upcalls.setVCPUs(vcpus)
        lifecycle.onStop { wakeups.wakeAll() }
        timerThread = TimerThread(timers: timers, events: events, lifecycle: lifecycle)

        let software = backend.isSoftware
        var runners: [VCPURunner] = []
        for index in 0..<configuration.vcpus {
            let id = VCPUID(UInt32(index))
            let vcpu = vcpus[index]
            try Self.kvm { () throws(KVMError) in
                let table = Self.guestCPUID(base: cpuid, vcpu: id, tscKHz: try vcpu.tscKHz, software: software)
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
        self.runners = runners
    }

    /// Runs the guest until it shuts down or is stopped. vCPU 0 starts at the
    /// PVH entry; the others wait in KVM_RUN (in-kernel LAPIC: KVM holds them
    /// until an INIT/SIPI; VCPUOP_initialise/up arrive with SMP, issue 3).
    public func run() -> DomainExit {
        guard !runners.isEmpty else { return .failed("no vCPUs") }
        let exited = DispatchSemaphore(value: 0)
        for (index, runner) in runners.enumerated() {
            // swift-corelibs-foundation applies a thread's name only after
            // start() (a name set before is dropped on Linux): name it then,
            // and let it run only once named, since the device runtime tells
            // vCPU threads by this name (`isVCPUThread`).
            let named = DispatchSemaphore(value: 0)
            let thread = Thread {
                named.wait()
                runner.run()
                exited.signal()
            }
            thread.stackSize = 1 << 20
            thread.start()
            thread.name = "pvh-vcpu\(index)"
            named.signal()
        }
        timerThread.start(exited: exited)
        let end = lifecycle.wait()
        // Every vCPU has been kicked; wait until each has left KVM_RUN and its
        // exit handler (and the timer thread has stopped), so nothing runs on
        // the guest after run() returns.
        for _ in 0...runners.count { exited.wait() }
        // The device threads stop before the tree goes: the console writes
        // what the guest left in its ring first, the XenStore ring leaves
        // the store, and no pump runs once run() has returned.
        consoleBackend.shutdown()
        storeRing.shutdown()
        devices.stopAll()
        // Domain destruction as xl does it: the tree goes, @releaseDomain fires.
        storeLayout.remove(from: store)
        store.releaseDomain(Self.domainID)
        return end
    }

    /// Prints every vCPU's registers and stack top on stderr (SIGUSR1 to
    /// `pvh run`): where a guest that seems stuck is.
    public func dumpVCPUState() {
        dumps.request(runners.map(\.id))
        runners.forEach { $0.vcpu.kick() }
    }

    /// Stops a running guest from another thread.
    public func stop() { lifecycle.finish(.stopped) }

    /// Backend pumps that ran on a vCPU thread (or off their device's own
    /// thread): 0 unless device work leaked back onto the guest's vCPUs.
    public var backendPumpsOnVCPUThreads: UInt64 { devices.pumpsOnForbiddenThreads }

    /// Whether the caller is one of `run()`'s vCPU threads, told by the
    /// name it gives them ("pvh-vcpu<n>"): the thread is made there and its
    /// body belongs to VCPURunner, so the name is the one mark it carries.
    static func isVCPUThread() -> Bool {
        Thread.current.name?.hasPrefix("pvh-vcpu") == true
    }

    /// KVM's supported CPUID with its own signature leaves replaced by Xen's
    /// (arch-x86/cpuid.h), per vCPU (leaf 4 EBX is the vCPU id).
    static func guestCPUID(base: CPUIDTable, vcpu: VCPUID, tscKHz: UInt32, software: Bool) -> CPUIDTable {
        var table = base
        for function in 0x4000_0000...0x4000_00ff as ClosedRange<UInt32> {
            table.remove(function: function)
        }
        for leaf in XenCPUIDLeaves.make(vcpu: vcpu, domain: domainID, time: XenCPUIDTime(tscKHz: tscKHz)) {
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

    static func kvm<T>(_ body: () throws(KVMError) -> T) throws(DomainError) -> T {
        do { return try body() } catch { throw .kvm("\(error)") }
    }
}

/// Routes console_io to the sink.
struct ConsoleAdapter: ConsoleService {
    let sink: any ConsoleSink
    func write(_ bytes: [UInt8], from: VCPUID) { sink.emit(bytes) }
    func read(max: Int) -> [UInt8] { [] }  // console input arrives with the PV console ring (next issue)
}

/// Guest-physical pages the VMM backs on the guest's request while vCPUs
/// run. XENMEM_add_to_physmap(XENMAPSPACE_shared_info): Xen moves its
/// shared_info page to the frame the guest names; where that frame is RAM the
/// guest's page becomes shared_info (zeroed), where it is a hole a fresh page
/// is mapped there and registered with KVM. XENMAPSPACE_grant_table in a hole
/// (`backFrame`) gets a fresh page the same way. A guest cannot make us map
/// unbounded memory: at most `holeLimit` hole pages per domain (one for
/// shared_info plus one per grant frame, shared and status); naming a backed
/// hole again is fine, a new one past the limit is -ENOMEM.
final class SharedInfoBacking: PhysmapService, @unchecked Sendable {
    // SAFETY (Sendable): VirtualMachine and MappedGuestMemory are thread-safe.
    let vm: VirtualMachine
    let memory: MappedGuestMemory
    let holeLimit: Int
    private let holes = Mutex<Set<GuestFrameNumber>>([])
    init(vm: VirtualMachine, memory: MappedGuestMemory, holeLimit: Int = 1) {
        self.vm = vm
        self.memory = memory
        self.holeLimit = holeLimit
    }

    func mapSharedInfo(at frame: GuestFrameNumber) throws(XenErrno) {
        guard let address = frame.address else { throw .einval }
        if !memory.contains(address, count: GuestFrameNumber.pageSize) { try backFrame(at: frame) }
        do { try memory.fill(at: address, count: Int(GuestFrameNumber.pageSize), with: 0) } catch { throw .efault }
    }

    func backFrame(at frame: GuestFrameNumber) throws(XenErrno) {
        guard let address = frame.address, address.rawValue < (1 << 46) else { throw .einval }
        try holes.withLock { (backed: inout Set<GuestFrameNumber>) throws(XenErrno) in
            if backed.contains(frame) || memory.contains(address, count: GuestFrameNumber.pageSize) { return }
            guard backed.count < holeLimit else { throw .enomem }
            do {
                let mapping = try memory.addRegion(GuestPhysicalRange(start: address, length: GuestFrameNumber.pageSize))
                _ = try vm.addMemory(mapping)
            } catch {
                throw .enomem
            }
            backed.insert(frame)
        }
    }
}

/// XENMEM_decrease_reservation's host side: a page the guest gives back is
/// returned to the host (madvise MADV_DONTNEED), so `pvh mem-set` really
/// shrinks the VMM's resident memory.
struct GuestRAMRelease: ReservationService {
    let memory: MappedGuestMemory
    func discard(_ range: GuestPhysicalRange) throws(GuestMemoryError) { try memory.discard(range) }
}
