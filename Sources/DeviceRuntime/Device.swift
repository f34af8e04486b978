import Locking

/// The device runtime of one domain: every PV backend (console, XenStore
/// ring, and block and net next) is a `RuntimeDevice` made here, runs its
/// pumps on its own `ExecutionContext`s and fails through one fault path.
/// The domain stops them all when it ends (`stopAll()`).
public final class DeviceRuntime: Sendable {
    let stackSize: Int
    /// How the devices' idle contexts poll before sleeping.
    public let polling: ExecutionContextPolling
    /// Where the devices' work runs (`ExecutionContextMode`).
    public let mode: ExecutionContextMode
    let isForbiddenThread: @Sendable () -> Bool
    let log: @Sendable (String) -> Void
    private let registry = Lock<[RuntimeDevice]>([])

    /// `log` gets one line per disabled device. `isForbiddenThread` tells
    /// whether the calling thread must never run device work (the VMM: a
    /// vCPU thread); pumps that find it true are counted in
    /// `DeviceMetrics.pumpsOnForbiddenThreads`. `polling`: how long an idle
    /// context polls for work before it sleeps (`ExecutionContextPolling`;
    /// `.disabled` never polls). `mode`: `.caller` makes every context
    /// threadless, its work run by whoever syncs it (`sync()` on a
    /// device or its backend): for fuzzers and deterministic tests.
    public init(stackSize: Int = ExecutionContext.defaultStackSize,
                polling: ExecutionContextPolling = .standard,
                mode: ExecutionContextMode = .thread,
                isForbiddenThread: @escaping @Sendable () -> Bool = { false },
                log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.stackSize = stackSize
        self.polling = polling
        self.mode = mode
        self.isForbiddenThread = isForbiddenThread
        self.log = log
    }

    deinit {
        // Devices hold their contexts and the contexts' work items hold the
        // devices: requesting the stops breaks those cycles and lets the
        // threads exit. `stopAll()` is the waiting form.
        for device in registry.withLock({ $0 }) { device.requestStop() }
    }

    /// A new device called `name` (its threads are `pvh-<name>…`).
    /// `onFault` is the device's guest-visible reaction to a fault (the
    /// XenStore ring's `error` word, a xenbus device's Closing); it runs once,
    /// on the thread that hit the fault, after the device stopped pumping.
    public func makeDevice(_ name: String, onFault: @escaping @Sendable (DeviceFault) -> Void = { _ in }) -> RuntimeDevice {
        let device = RuntimeDevice(name: name, stackSize: stackSize, polling: polling, mode: mode, isForbiddenThread: isForbiddenThread, log: log,
                                   onFault: onFault)
        registry.withLock { $0.append(device) }
        return device
    }

    /// Every device made so far.
    public var devices: [RuntimeDevice] { registry.withLock { $0 } }

    /// Context threads still running, over all devices.
    public var threadCount: Int { devices.reduce(0) { $0 + $1.threadCount } }

    /// Pumps that ran where device work must not run (see `init`), over all devices.
    public var pumpsOnForbiddenThreads: UInt64 {
        devices.reduce(0) { $0 + $1.metrics.pumpsOnForbiddenThreads.load(ordering: .relaxed) }
    }

    /// Stops `device`'s contexts (waiting for running pumps, except the
    /// caller's own) and forgets it, with its counters: for a device whose
    /// life ended before the domain's (a block device's connection, torn
    /// down when the frontend closes and made anew when it reconnects), so
    /// a guest that reconnects over and over does not grow the registry.
    public func remove(_ device: RuntimeDevice) {
        device.stop()
        registry.withLock { $0.removeAll { $0 === device } }
    }

    /// Stops every device's contexts, waiting for running pumps to finish.
    public func stopAll() {
        for device in devices { device.stop() }
    }
}

/// One backend device in the runtime: its contexts (a thread per queue,
/// or one for the device), its channels, its metrics, and its fault state.
public final class RuntimeDevice: Sendable {
    /// The device's name ("console", "xenstore", "vbd-51712").
    public let name: String
    /// The device's counters.
    public let metrics = DeviceMetrics()
    let stackSize: Int
    let polling: ExecutionContextPolling
    let mode: ExecutionContextMode
    let isForbiddenThread: @Sendable () -> Bool
    let log: @Sendable (String) -> Void
    let onFault: @Sendable (DeviceFault) -> Void

    private struct State {
        var fault: DeviceFault?
        var contexts: [ExecutionContext] = []
    }
    private let state = Lock(State())

    init(name: String, stackSize: Int, polling: ExecutionContextPolling, mode: ExecutionContextMode, isForbiddenThread: @escaping @Sendable () -> Bool,
         log: @escaping @Sendable (String) -> Void, onFault: @escaping @Sendable (DeviceFault) -> Void) {
        self.name = name
        self.stackSize = stackSize
        self.polling = polling
        self.mode = mode
        self.isForbiddenThread = isForbiddenThread
        self.log = log
        self.onFault = onFault
    }

    /// A new execution context for this device: thread `pvh-<name>`, or
    /// `pvh-<name>-<queue>` for one of several queues (a block device's
    /// rings each get one, as xen-blkback gives each ring its kthread).
    /// `doorbell`: how its thread sleeps, when not on a semaphore (see
    /// `ExecutionContextDoorbell`). It polls as the runtime says;
    /// `expectsWork` tells it when work is on its way (see `ExecutionContext.init`).
    public func makeContext(queue: String? = nil, doorbell: (any ExecutionContextDoorbell)? = nil,
                            expectsWork: (@Sendable () -> Bool)? = nil) -> ExecutionContext {
        let context = ExecutionContext(name: queue.map { "pvh-\(name)-\($0)" } ?? "pvh-\(name)", stackSize: stackSize, doorbell: doorbell,
                                       polling: polling, expectsWork: expectsWork, mode: mode)
        let failed = state.withLock { s in
            s.contexts.append(context)
            return s.fault != nil
        }
        if failed { context.requestStop() }
        return context
    }

    /// The fault that disabled the device, if any.
    public var fault: DeviceFault? { state.withLock { $0.fault } }

    /// Whether the device was disabled by a fault.
    public var isDisabled: Bool { fault != nil }

    /// What its contexts' polling did so far, summed (`ExecutionContext.pollingStatistics`).
    public var pollingStatistics: ExecutionContextPolling.Statistics {
        state.withLock { $0.contexts }.reduce(into: ExecutionContextPolling.Statistics()) { sum, context in
            let c = context.pollingStatistics
            sum.polls &+= c.polls
            sum.hits &+= c.hits
            sum.misses &+= c.misses
            sum.sleeps &+= c.sleeps
            sum.pendingIdles &+= c.pendingIdles
        }
    }

    /// Context threads of this device still running.
    public var threadCount: Int { state.withLock { $0.contexts.filter { !$0.isStopped }.count } }

    /// The runtime's one fault path. The first fault wins: the device's
    /// contexts stop (the running pump finishes, nothing more runs, no
    /// waiting, so a pump may call this), the fault is counted, the device's
    /// `onFault` makes it visible to the guest, and one line is logged.
    /// Other devices and the VMM are untouched.
    public func fail(_ fault: DeviceFault) {
        let contexts: [ExecutionContext]? = state.withLock { s in
            guard s.fault == nil else { return nil }
            s.fault = fault
            return s.contexts
        }
        guard let contexts else { return }
        for context in contexts { context.requestStop() }
        DeviceMetrics.bump(metrics.faults)
        if fault.kind == .hostileGuest { DeviceMetrics.bump(metrics.hostileGuestFaults) }
        onFault(fault)
        log("\(name): disabled: \(fault)")
    }

    /// Waits until the work scheduled on every context of the device before
    /// this call has run. False on timeout.
    public func sync(timeout: Duration = .seconds(60)) -> Bool {
        state.withLock { $0.contexts }.allSatisfy { $0.sync(timeout: timeout) }
    }

    /// Stops every context of the device, waiting for running pumps (except
    /// the caller's own context, see `ExecutionContext.stop()`).
    public func stop() {
        for context in state.withLock({ $0.contexts }) { context.stop() }
    }

    func requestStop() {
        for context in state.withLock({ $0.contexts }) { context.requestStop() }
    }
}

/// A connected PV device: the runtime device of one connection and its
/// queues (a block device's rings, a network device's TX/RX pairs), made
/// at xenbus connect and dropped at disconnect.
public final class RuntimeConnection<Queue: Sendable>: Sendable {
    public let device: RuntimeDevice
    public let queues: [Queue]
    public init(device: RuntimeDevice, queues: [Queue]) {
        self.device = device
        self.queues = queues
    }
}
