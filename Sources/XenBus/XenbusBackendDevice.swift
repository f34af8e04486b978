import Locking
import XenABI
import XenStore

/// Where one PV device lives in XenStore (xen/io/xenbus.h, docs/misc/
/// xenstore-paths.pandoc): the frontend's directory in the guest's home and
/// the backend's in the backend domain's.
public struct XenbusDeviceAddress: Hashable, Sendable {
    /// The device class: "vbd", "vif", "console", ...
    public var type: String
    public var frontend: DomainID
    public var backend: DomainID
    /// The device's index under its class.
    public var index: Int

    public init(type: String, frontend: DomainID, backend: DomainID = .controlDomain, index: Int) {
        self.type = type
        self.frontend = frontend
        self.backend = backend
        self.index = index
    }

    /// `/local/domain/<fe>/device/<type>/<index>`.
    public var frontendPath: String { "/local/domain/\(frontend.rawValue)/device/\(type)/\(index)" }
    /// `/local/domain/<be>/backend/<type>/<fe>/<index>`.
    public var backendPath: String { "/local/domain/\(backend.rawValue)/\(backendNodeName)" }
    /// The backend's `nodename` as Linux's xenbus names it, relative to the
    /// backend domain's home: `backend/<type>/<fe>/<index>`.
    public var backendNodeName: String { "backend/\(type)/\(frontend.rawValue)/\(index)" }
    /// Where `XenbusBackendDevice.fatal` reports: `error/<nodename>/error`
    /// relative to the backend domain's home (Linux xenbus_client.c
    /// `error_path` and `xenbus_va_dev_error`), i.e.
    /// `/local/domain/<be>/error/backend/<type>/<fe>/<index>/error`.
    public var errorPath: String { "/local/domain/\(backend.rawValue)/error/\(backendNodeName)/error" }
}

/// What a device backend (console, block, network) plugs into the xenbus
/// handshake. Called from the store's ordered callback queue, one at a time.
public protocol XenbusBackendDriver: AnyObject, Sendable {
    /// Nodes written in the backend directory before InitWait (the features
    /// the frontend reads: "feature-flush-cache", "sectors", ...).
    func backendNodes() -> [(String, String)]
    /// The frontend said Initialised/Connected. `frontend` holds the values
    /// of its directory's nodes, and of the nodes one level below (a
    /// multi-queue vbd's "queue-0/ring-ref" is the key for
    /// `<frontend>/queue-0/ring-ref`); guest-written: hostile, validate each.
    /// Returns nodes to publish before the backend switches to Connected.
    /// Throwing `XenbusFatalError` fails the device (`fatal`, as Linux's
    /// backends call `xenbus_dev_fatal` on a frontend's bad details);
    /// throwing anything else leaves the backend in InitWait with `error`
    /// written.
    func connect(frontend: [String: String]) throws -> [(String, String)]
    /// Stop using the frontend's ring (unmap, unbind).
    func disconnect()
}

/// A driver's reason to fail the device for good (`XenbusBackendDevice.fatal`):
/// the errno and message Linux's `xenbus_dev_fatal` would report.
public struct XenbusFatalError: Error, Hashable, Sendable, CustomStringConvertible {
    public var error: XenErrno
    public var reason: String
    public init(_ error: XenErrno, _ reason: String) {
        self.error = error
        self.reason = reason
    }
    public var description: String { "\(error.rawValue) \(reason)" }
}

/// One device's backend end of xenbus: creates both directories with the
/// permissions libxl gives them (each end owned by its domain, readable by
/// the other), publishes the backend's features, switches to InitWait and
/// then follows the frontend's `state` node through `XenbusHandshake`.
public final class XenbusBackendDevice: Sendable {
    public let address: XenbusDeviceAddress
    private let store: any XenStoreService
    private let driver: any XenbusBackendDriver
    /// What changes the backend's state: the frontend's state node changed
    /// (the watch, with the value read when it fired), or the device failed
    /// (`fatal`, from any thread).
    private enum Transition: Equatable {
        case frontend(XenbusState?)
        case fatal(XenbusFatalError)
        /// The toolstack asked the device to go (`close()`).
        case close
    }

    /// Transitions queued behind a running one, at most: a guest flipping
    /// its state node during a fatal's disconnect loses its oldest changes
    /// beyond this, never the latest.
    static let maximumQueuedTransitions = 64
    private struct State {
        var backend: XenbusState = .initialising
        var watch: XenStoreWatchID?
        var started = false
        var connected = false
        var destroyed = false
        /// A transition is running, on the thread that started it; others
        /// queue behind it in `queued` and that thread runs them in order
        /// before it lets go. Transitions therefore never interleave (the
        /// in-memory state and the store's `state` node change together),
        /// and nobody waits for anybody: a `fatal` from a queue's pump may
        /// come while the store's thread disconnects that very queue, which
        /// waits for the pump.
        ///
        /// Each frontend change is queued with its value, so a Closed
        /// followed at once by Initialising is still a close (then the
        /// restart), not an Initialising the closing backend would ignore.
        var busy = false
        var queued: [Transition] = []

        /// One `fatal` queued is enough (the first reason is the one reported).
        mutating func enqueue(_ t: Transition) {
            if case .fatal = t, queued.contains(where: { if case .fatal = $0 { true } else { false } }) { return }
            if queued.count >= XenbusBackendDevice.maximumQueuedTransitions,
               let oldest = queued.firstIndex(where: { if case .frontend = $0 { true } else { false } }) {
                queued.remove(at: oldest)
            }
            queued.append(t)
        }
    }
    private let state = Lock(State())

    /// The most frontend nodes read at connect (a guest could create many;
    /// a vbd with 4 queues of 16 ring pages has about 80).
    public static let maximumFrontendNodes = 256

    /// Creates the device's nodes and, unless `startHandshake` is false,
    /// starts the handshake (`startHandshake()`). `frontendNodes` are
    /// written in the frontend directory first (e.g. a vif's "mac", a vbd's
    /// "virtual-device"). A device the toolstack hot-plugged has both
    /// directories already (`adoptingExisting`): they are kept as they are
    /// (the frontend may be watching them) and only the nodes are written
    /// again; otherwise any old ones are removed first.
    public init(store: any XenStoreService, address: XenbusDeviceAddress, driver: any XenbusBackendDriver,
                frontendNodes: [(String, String)] = [], startHandshake: Bool = true,
                adoptingExisting: Bool = false) throws(XenStoreError) {
        self.address = address
        self.store = store
        self.driver = driver
        let be = address.backendPath, fe = address.frontendPath
        let backendPerms = XenStorePermissions(owner: address.backend, defaultAccess: .none, entries: [(address.frontend, .read)])
        let frontendPerms = XenStorePermissions(owner: address.frontend, defaultAccess: .none, entries: [(address.backend, .read)])
        if !adoptingExisting {
            try? store.remove(be)
            try? store.remove(fe)
        }
        try store.mkdir(be)
        try store.setPermissions(be, backendPerms)
        try store.mkdir(fe)
        try store.setPermissions(fe, frontendPerms)
        try store.write("\(be)/frontend", fe)
        try store.write("\(be)/frontend-id", String(address.frontend.rawValue))
        try store.write("\(be)/online", "1")
        try store.write("\(be)/state", XenbusState.initialising.storeValue)
        try store.write("\(fe)/backend", be)
        try store.write("\(fe)/backend-id", String(address.backend.rawValue))
        for (key, value) in frontendNodes { try store.write("\(fe)/\(key)", value) }
        try store.write("\(fe)/state", XenbusState.initialising.storeValue)
        if startHandshake { try self.startHandshake() }
    }

    /// The backend is ready (Linux's backend `probe`): publishes the
    /// driver's nodes, switches to InitWait and follows the frontend's
    /// state from then on. The watch fires once at once, so a frontend that
    /// already wrote Initialised (before the backend reached InitWait) is
    /// connected now. Idempotent.
    public func startHandshake() throws(XenStoreError) {
        let first = state.withLock { s in
            defer { s.started = true }
            return !s.started
        }
        guard first else { return }
        let be = address.backendPath, fe = address.frontendPath
        for (key, value) in driver.backendNodes() { try store.write("\(be)/\(key)", value) }
        try switchTo(.initWait)
        let id = try store.watch("\(fe)/state", token: "xenbus:\(address.type)/\(address.index)") { [weak self] _, _ in
            guard let self else { return }
            self.perform(.frontend(self.frontendState()))
        }
        state.withLock { $0.watch = id }
    }

    /// The backend's current state.
    public var backendState: XenbusState { state.withLock { $0.backend } }

    /// Whether the driver is connected to the frontend now.
    public var isConnected: Bool { state.withLock { $0.connected } }

    /// Removes the device (hot-unplug or domain destruction): disconnects,
    /// stops watching and deletes both directories.
    public func destroy() {
        let (watch, wasConnected) = state.withLock { s in
            defer {
                s.watch = nil
                s.connected = false
                s.destroyed = true
                s.queued = []
            }
            return (s.watch, s.connected)
        }
        if let watch { store.unwatch(watch) }
        if wasConnected { driver.disconnect() }
        try? store.remove(address.backendPath)
        try? store.remove(address.frontendPath)
    }

    /// The device failed for good (its ring is corrupt, say), as Linux's
    /// `xenbus_dev_fatal` reports it (drivers/xen/xenbus/xenbus_client.c):
    /// `xenbus_va_dev_error` writes "<errno> <reason>" (the positive errno,
    /// as its `sprintf("%i ", -err)` prints the negative one callers pass)
    /// at `address.errorPath` (readable by the frontend here, so that it can
    /// say why), then the backend switches to Closing. The driver is
    /// disconnected at once (it stops using the ring and unmaps it, as
    /// xen-blkback's `xen_blkif_disconnect` does); the backend goes on to
    /// Closed when the frontend closes (Closed, or its node gone), as
    /// Linux's `frontend_changed` does, and at once if it already has. A
    /// frontend that then starts again from Initialising gets InitWait (the
    /// handshake's restart, as with Linux's backends); one that ignores the
    /// Closing and says Initialised or Connected gets nothing.
    ///
    /// Safe from any thread (a device's fault path runs it on the device's
    /// context) and never waits: a fatal that comes during another
    /// transition (a connect, a disconnect) runs right after it, so the
    /// device never ends up Connected after failing, and a frontend's
    /// Closed meanwhile still takes it to Closed.
    public func fatal(_ reason: String, error: XenErrno = .eio) {
        perform(.fatal(XenbusFatalError(error, reason)))
    }

    /// The toolstack asked for the device to go (hot-unplug: libxl's
    /// libxl__initiate_device_generic_remove writes `online` 0 and `state`
    /// Closing in the backend directory): the backend is Closing, so the
    /// frontend closes (Linux's blkfront/netfront on a backend's Closing),
    /// and its Closed takes the backend to Closed through the handshake, as
    /// Linux's `frontend_changed` does; a frontend closed already (or
    /// gone), or one still Initialising (no driver has taken the device),
    /// closes the backend at once. Queued like any transition.
    public func close() {
        perform(.close)
    }

    /// Runs `first` now, or queues it behind the transition under way (see
    /// `State.busy`); the thread that runs a transition runs the queue too.
    private func perform(_ first: Transition) {
        let run = state.withLock { s in
            guard !s.destroyed else { return false }
            guard !s.busy else {
                s.enqueue(first)
                return false
            }
            s.busy = true
            return true
        }
        guard run else { return }
        var next: Transition? = first
        while let transition = next {
            switch transition {
            case .frontend(let frontend): follow(frontend)
            case .fatal(let failure): fail(failure)
            case .close: closeOnRequest()
            }
            next = state.withLock { s in
                guard !s.destroyed, !s.queued.isEmpty else {
                    s.busy = false
                    s.queued = []
                    return nil
                }
                return s.queued.removeFirst()
            }
        }
    }

    /// The frontend's state, nil when its node is missing or not a state.
    private func frontendState() -> XenbusState? {
        (try? store.read("\(address.frontendPath)/state")).flatMap { XenbusState(storeValue: $0) }
    }

    /// Disconnects the driver if it is connected (once, whoever asks).
    private func disconnectDriver() {
        let was = state.withLock { s in
            defer { s.connected = false }
            return s.connected
        }
        if was { driver.disconnect() }
    }

    /// `fatal`'s transition.
    private func fail(_ failure: XenbusFatalError) {
        guard !state.withLock({ $0.destroyed }) else { return }
        let path = address.errorPath
        try? store.write(path, "\(failure.error.rawValue) \(failure.reason)")
        try? store.setPermissions(path, XenStorePermissions(owner: address.backend, defaultAccess: .none,
                                                            entries: [(address.frontend, .read)]))
        let backend = backendState
        if backend != .closing && backend != .closed { try? switchTo(.closing) }
        disconnectDriver()
        // A frontend that closed already (its Closed handled before the
        // fault, or while the fault waited) sends no more changes.
        if backendState == .closing {
            switch frontendState() {
            case .closed, .unknown, nil: try? switchTo(.closed)
            default: break
            }
        }
    }

    /// `close`'s transition.
    private func closeOnRequest() {
        let backend = backendState
        guard backend != .closed else { return }
        if backend != .closing { try? switchTo(.closing) }
        switch frontendState() {
        // Initialising: no frontend driver has taken the device (the guest
        // has none, or has not probed it yet), so none will answer the
        // Closing; the ring was never connected. libxl would wait
        // LIBXL_DESTROY_TIMEOUT and then force the removal; closing at once
        // ends the same way without the wait.
        case .closed, .unknown, .initialising, nil:
            disconnectDriver()
            try? switchTo(.closed)
        default: break
        }
    }

    /// The watch's transition: what `XenbusHandshake` says for the
    /// frontend's state when the watch fired.
    private func follow(_ frontend: XenbusState?) {
        let backend = backendState
        switch XenbusHandshake.onFrontendChange(backend: backend, frontend: frontend) {
        case .none:
            return
        case .switchTo(let next):
            try? switchTo(next)
        case .disconnect(let next):
            disconnectDriver()
            try? switchTo(next)
        case .connect:
            do {
                let nodes = try driver.connect(frontend: readFrontend())
                state.withLock { $0.connected = true }
                for (key, value) in nodes { try store.write("\(address.backendPath)/\(key)", value) }
                try switchTo(.connected)
            } catch let error as XenbusFatalError {
                fail(error)
            } catch {
                try? store.write("\(address.backendPath)/error", "connect failed: \(error)")
            }
        }
    }

    /// The frontend directory's nodes and, for each that has children, its
    /// children ("queue-0/ring-ref"), at most `maximumFrontendNodes` in all.
    private func readFrontend() throws(XenStoreError) -> [String: String] {
        var values: [String: String] = [:]
        let fe = address.frontendPath
        var budget = Self.maximumFrontendNodes
        for key in try store.directory(fe) {
            guard budget > 0 else { break }
            budget -= 1
            values[key] = try? store.read("\(fe)/\(key)")
            let children = (try? store.directory("\(fe)/\(key)")) ?? []
            for child in children {
                guard budget > 0 else { break }
                budget -= 1
                values["\(key)/\(child)"] = try? store.read("\(fe)/\(key)/\(child)")
            }
        }
        return values
    }

    /// Sets the backend's state and its node; nothing once `destroy()` ran
    /// (a transition still finishing must not bring the node back).
    private func switchTo(_ next: XenbusState) throws(XenStoreError) {
        let alive = state.withLock { s in
            guard !s.destroyed else { return false }
            s.backend = next
            return true
        }
        guard alive else { return }
        try store.write("\(address.backendPath)/state", next.storeValue)
    }
}
