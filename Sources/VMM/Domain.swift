import BlockBackend
import ConsoleBackend
import DeviceRuntime
import Dispatch
import EventChannels
import GrantTables
import PVTime
import Foundation
import Synchronization
import GuestMemory
import HostIO
import Hypercalls
import KVM
import Logging
import NetBackend
import PVHLogging
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
/// A composition root: `init` runs the builders (`DomainBuilders.swift`) in
/// order, and everything that can fail on bad input (reading and loading the
/// kernel, the options) fails before any vCPU runs; `run()` then only runs.
/// Nothing here assumes it is the only domain: its id comes from the
/// configuration, its store may be shared with others.
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
    let haltProbe: HaltProbe
    /// The guest's grant table; backends map the guest's grants through it
    /// (the backend domain, d0, is the grantee).
    public let grants: GrantTable
    /// Which guest frames hold memory (the balloon gives them back).
    public let reservation: MemoryReservation
    /// The console, the XenStore ring and the tree the toolstack set up.
    let toolstack: ToolstackDevices
    /// The PV console backend (HVM_PARAM_CONSOLE_PFN / _EVTCHN).
    public var consoleBackend: ConsoleBackend { toolstack.console }
    /// The device runtime the PV backends (console, XenStore ring) run on:
    /// one thread each, stopped when the domain ends.
    public var devices: DeviceRuntime { toolstack.runtime }
    /// The store this domain's tree lives in (shared with the toolstack's
    /// socket, or the host daemon's) and the guest's ring connection to it.
    public var store: any XenStoreService { toolstack.store }
    public var storeRing: XenStoreRingConnection { toolstack.storeRing }
    /// The tree written for this domain (removed when it ends).
    public var storeLayout: DomainStoreLayout { toolstack.storeLayout }
    /// The domain id the guest sees.
    public var domainID: DomainID { configuration.domainID }
    /// Xen's console for this domain (console_io and port 0xE9; `xl dmesg`).
    public let hypervisorConsole: HypervisorConsole
    /// Where the VMM's diagnostics about this domain go.
    public let logger: Logger
    /// The lines the guest can provoke, rate-limited (`GuestTriggeredLog`).
    public let guestLog: GuestTriggeredLog
    let vm: VirtualMachine
    let memory: MappedGuestMemory
    let runners: [VCPURunner]
    let dumps = VCPUStateDump()
    /// The host CPUs each pinned vCPU's thread is bound to (`cpus=`).
    public let vcpuPins: [Int: [Int]]

    /// Builds the domain. `console` takes the PV console's output. `store`
    /// is the toolstack's XenStore in this process (a fresh one if nil): the
    /// domain's tree is written there and the guest's ring connected to it.
    /// `hypervisorConsole` says where the hypervisor console goes besides
    /// its ring; nil sends its bytes, as written, to `console` too (the two
    /// consoles on one stream, as the integration tests read them).
    /// `logger` takes the VMM's diagnostics (nil: warnings and worse on
    /// stderr as `pvh: ...`).
    public convenience init(configuration: GuestConfiguration, console: any ConsoleSink, system: KVMSystem? = nil,
                            store: XenStoreServer? = nil, hypervisorConsole: HypervisorConsoleOutputs? = nil,
                            logger: Logger? = nil) throws(DomainError) {
        try self.init(configuration: configuration, console: console, system: system,
                      domainStore: .embedded(store ?? XenStoreServer()), hypervisorConsole: hypervisorConsole,
                      logger: logger)
    }

    /// Builds the domain against `domainStore`: the store in this process,
    /// or the host daemon's reached over the streams it handed this process.
    /// `passedImages`: hot-plugged disks' images the daemon passes this
    /// process, used instead of opening their paths.
    public init(configuration: GuestConfiguration, console: any ConsoleSink, system: KVMSystem? = nil,
                domainStore: DomainStore, hypervisorConsole: HypervisorConsoleOutputs? = nil,
                passedImages: PassedImages = PassedImages(), logger: Logger? = nil) throws(DomainError) {
        self.configuration = configuration
        let logger = logger ?? GuestLog.standardErrorOnly()
        self.logger = logger
        let guestLog = GuestTriggeredLog(logger: logger)
        self.guestLog = guestLog
        let hypervisorConsole = HypervisorConsole(domain: configuration.domainID,
                                                  outputs: hypervisorConsole ?? HypervisorConsoleOutputs(raw: console))
        self.hypervisorConsole = hypervisorConsole
        try configuration.validate()
        vcpuPins = try configuration.resolvedAffinity(on: HostCPUs.atStart)
        // Bad input first: nothing is created for a kernel that cannot boot.
        let image = try GuestImage(configuration)
        let disks = try DiskImages(configuration)
        let networks = try NetworkLinks(configuration, logger: logger)
        // A domain that fails to build ends its links' host sides (passt
        // processes, TAP devices) too.
        var built = false
        defer { if !built { networks.release() } }
        let machine = try Machine(configuration, system: system)
        vm = machine.vm
        memory = machine.memory
        backend = machine.system.backend
        let boot = try image.load(into: machine.memory, configuration)
        bootInfo = boot

        let xen = XenPlatform(configuration, machine: machine, metrics: metrics, guestLog: guestLog)
        state = xen.state
        events = xen.events
        timers = xen.timers
        grants = xen.grants
        toolstack = try ToolstackDevices(configuration, memory: machine.memory, xen: xen,
                                         store: domainStore, output: console, disks: disks,
                                         networks: networks, passedImages: passedImages, logger: logger,
                                         guestLog: guestLog)
        let dispatcher = xen.dispatcher(configuration, machine: machine, boot: boot, console: hypervisorConsole)
        reservation = dispatcher.reservation

        let transports = try VCPUSetup.transports(machine: machine, boot: boot)
        self.transports = transports
        let services = DomainServices(
            memory: machine.memory, dispatcher: dispatcher, console: hypervisorConsole, lifecycle: lifecycle,
            transports: transports, metrics: metrics, events: xen.events, timers: xen.timers, wakeups: xen.wakeups,
            smp: xen.smp, dumps: dumps, state: xen.state, upcalls: xen.upcalls)
        let wakeups = xen.wakeups
        lifecycle.onStop { wakeups.wakeAll() }
        let upcalls = xen.upcalls
        lifecycle.onStop { upcalls.stopRetrying() }
        timerThread = TimerThread(timers: xen.timers, events: xen.events, lifecycle: lifecycle)
        haltProbe = HaltProbe(smp: xen.smp, lifecycle: lifecycle)
        runners = try VCPUSetup.runners(configuration, machine: machine, boot: boot,
                                        breakpoints: transports.breakpointSites, services: services)
        built = true
    }

    /// The network backends (`--net`), in the order given, while the
    /// domain lives: their connection state and host sides.
    public var networkBackends: [NetBackend] { toolstack.networks.all }

    /// Each network interface's per-queue counters (`--net` order, then
    /// those hot-plugged), also after the domain ended.
    public var networkMetrics: [[NetMetrics]] { toolstack.networks.metrics.map(\.queues) }

    /// Each network interface's device name (`vif-0`) and per-queue
    /// counters, read together (a hot-plug may come between two reads).
    public var networkInterfaceMetrics: [(device: String, queues: [NetMetrics])] { toolstack.networks.metrics }

    /// Each disk's device name (`vbd-51712`) and counters (`--disk` order,
    /// then those hot-plugged; a detached one's gone), also after the
    /// domain ended.
    public var diskMetrics: [(device: String, metrics: BlockMetrics)] { toolstack.disks.metrics }

    /// Runs the guest until it shuts down or is stopped. vCPU 0 starts at the
    /// PVH entry; the others wait in KVM_RUN (in-kernel LAPIC: KVM holds them
    /// until an INIT/SIPI, or VCPUOP_initialise/up).
    /// `confineThread`: run by each vCPU thread once, before its first
    /// KVM_RUN (the sandbox's vCPU filter: docs/ARCHITECTURE.md, Sandbox);
    /// a failure it returns ends the domain before that vCPU runs.
    public func run(confineThread: (@Sendable (_ index: Int) -> String?)? = nil) -> DomainExit {
        guard !runners.isEmpty else { return .failed("no vCPUs") }
        let exited = DispatchSemaphore(value: 0)
        let metrics = metrics
        let lifecycle = lifecycle
        let pins = vcpuPins
        for (index, runner) in runners.enumerated() {
            let thread = Thread {
                // The mark the device runtime tells vCPU threads by (`isVCPUThread`).
                Thread.current.threadDictionary[Self.vcpuThreadKey] = true
                // Before the filter: reading /proc/thread-self is a path.
                if let tid = Self.currentThreadID() { metrics.vcpuThreadIDs.withLock { $0[index] = tid } }
                // Pinned before the guest runs a single instruction on it
                // (xl's cpus=: Xen applies hard affinity when the vCPU is made).
                if let cpus = pins[index], let errno = HostCPUs.pinCurrentThread(to: cpus) {
                    lifecycle.finish(.failed("vCPU \(index): binding to CPUs \(cpus): \(unsafe String(cString: strerror(errno)))"))
                    exited.signal()
                    return
                }
                if let failure = confineThread?(index) {
                    lifecycle.finish(.failed("vCPU \(index): \(failure)"))
                    exited.signal()
                    return
                }
                runner.run()
                exited.signal()
            }
            thread.stackSize = 1 << 20
            thread.start()
            // swift-corelibs-foundation applies a name only after start() on
            // Linux; the name is for people (ps, gdb, dumps).
            thread.name = "pvh-vcpu\(index)"
        }
        timerThread.start(exited: exited)
        haltProbe.start(exited: exited)
        let end = lifecycle.wait()
        // Every vCPU has been kicked; wait until each has left KVM_RUN and its
        // exit handler (and the timer thread and halt probe have stopped), so
        // nothing runs on the guest after run() returns.
        for _ in 0...runners.count + 1 { exited.wait() }
        toolstack.tearDown()
        // What the guest wrote to Xen's console before it stopped reaches
        // the terminal, log and file before pvh reports the end.
        hypervisorConsole.flush()
        guestLog.reportSuppressed()
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

    static let vcpuThreadKey = "pvh.vcpu-thread"

    /// The calling thread's Linux thread id, from the `/proc/thread-self`
    /// link (`PID/task/TID`, proc(5)): Glibc's module does not export
    /// gettid(2), and syscall(2) is variadic.
    static func currentThreadID() -> Int32? {
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self") else { return nil }
        return target.split(separator: "/").last.flatMap { Int32($0) }
    }

    /// Whether the caller is one of `run()`'s vCPU threads (each marks
    /// itself in its thread dictionary before it runs the guest).
    static func isVCPUThread() -> Bool {
        Thread.current.threadDictionary[vcpuThreadKey] as? Bool == true
    }
}
