import Synchronization
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
    private let store: XenStoreServer
    private let driver: any XenbusBackendDriver
    private struct State {
        var backend: XenbusState = .initialising
        var watch: XenStoreWatchID?
        var started = false
        var connected = false
        /// A connect is under way (the driver's `connect`, its nodes, the
        /// switch to Connected): a `fatal` meanwhile waits in `pendingFatal`
        /// and runs when it is done, so the device never ends up Connected
        /// after failing.
        var connecting = false
        var pendingFatal: XenbusFatalError?
    }
    private let state = Mutex(State())

    /// The most frontend nodes read at connect (a guest could create many;
    /// a vbd with 4 queues of 16 ring pages has about 80).
    public static let maximumFrontendNodes = 256

    /// Creates the device's nodes and, unless `startHandshake` is false,
    /// starts the handshake (`startHandshake()`). `frontendNodes` are
    /// written in the frontend directory first (e.g. a vif's "mac", a vbd's
    /// "virtual-device").
    public init(store: XenStoreServer, address: XenbusDeviceAddress, driver: any XenbusBackendDriver,
                frontendNodes: [(String, String)] = [], startHandshake: Bool = true) throws(XenStoreError) {
        self.address = address
        self.store = store
        self.driver = driver
        let be = address.backendPath, fe = address.frontendPath
        let backendPerms = XenStorePermissions(owner: address.backend, defaultAccess: .none, entries: [(address.frontend, .read)])
        let frontendPerms = XenStorePermissions(owner: address.frontend, defaultAccess: .none, entries: [(address.backend, .read)])
        try? store.remove(be)
        try? store.remove(fe)
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
            self?.frontendChanged()
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
    /// at `address.errorPath`, then the backend switches to Closing. The
    /// driver is then disconnected (it stops using the ring, as
    /// xen-blkback's `xen_blkif_disconnect` does) and the backend goes on to
    /// Closed without waiting for the frontend, which is the guest's and may
    /// never answer. A frontend that starts again from Initialising gets
    /// InitWait (the handshake's restart), as with Linux's backends.
    ///
    /// Safe from any thread (a device's fault path runs it on the device's
    /// context); during a connect it waits for the connect to finish.
    public func fatal(_ reason: String, error: XenErrno = .eio) {
        let deferred = state.withLock { s in
            guard s.connecting else { return false }
            if s.pendingFatal == nil { s.pendingFatal = XenbusFatalError(error, reason) }
            return true
        }
        if deferred { return }
        try? store.write(address.errorPath, "\(error.rawValue) \(reason)")
        try? switchTo(.closing)
        let was = state.withLock { s in
            defer { s.connected = false }
            return s.connected
        }
        if was { driver.disconnect() }
        try? switchTo(.closed)
    }

    private func frontendChanged() {
        let raw = try? store.read("\(address.frontendPath)/state")
        let frontend = raw.flatMap { XenbusState(storeValue: $0) }
        let backend = backendState
        switch XenbusHandshake.onFrontendChange(backend: backend, frontend: frontend) {
        case .none:
            return
        case .switchTo(let next):
            try? switchTo(next)
        case .disconnect(let next):
            let was = state.withLock { s in
                defer { s.connected = false }
                return s.connected
            }
            if was { driver.disconnect() }
            try? switchTo(next)
        case .connect:
            state.withLock { $0.connecting = true }
            var failure: XenbusFatalError?
            do {
                let nodes = try driver.connect(frontend: readFrontend())
                for (key, value) in nodes { try store.write("\(address.backendPath)/\(key)", value) }
                state.withLock { $0.connected = true }
                try switchTo(.connected)
            } catch let error as XenbusFatalError {
                failure = error
            } catch {
                try? store.write("\(address.backendPath)/error", "connect failed: \(error)")
            }
            let pending = state.withLock { s in
                defer {
                    s.connecting = false
                    s.pendingFatal = nil
                }
                return s.pendingFatal
            }
            if let failure = failure ?? pending { fatal(failure.reason, error: failure.error) }
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

    private func switchTo(_ next: XenbusState) throws(XenStoreError) {
        state.withLock { $0.backend = next }
        try store.write("\(address.backendPath)/state", next.storeValue)
    }
}
