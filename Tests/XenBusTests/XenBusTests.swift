import Dispatch
import Locking
import Synchronization
import Testing
import VMM
import XenABI
import XenBus
import XenStore

/// A guest's wire connection to the store (what its ring carries), to act
/// as the unprivileged frontend domain.
final class GuestWire: Sendable {
    let server: XenStoreServer
    let id: XenStoreConnectionID
    private final class Inbox: Sendable { let bytes = Lock<[UInt8]>([]) }
    private let received = Inbox()
    private let framer = Lock(XenStoreFramer())
    private let nextID = Atomic<UInt32>(1)
    /// Runs after each write: waits for a remote backend's watch handlers.
    private let settle: @Sendable () -> Void

    init(_ server: XenStoreServer, domain: UInt16, settle: @escaping @Sendable () -> Void = {}) {
        self.server = server
        self.settle = settle
        let box = received
        id = server.connect(domain: DomainID(rawValue: domain), privileged: false) { bytes in box.bytes.withLock { $0 += bytes } }
    }

    /// Sends one request; returns the reply's payload, or the error's name.
    func request(_ type: XenStoreMessageType, _ payload: [UInt8]) -> Result<[UInt8], XenStoreError> {
        let rid = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        _ = server.receive(XenStoreMessage(type: type, requestID: rid, payload: payload).bytes, from: id)
        let bytes = received.bytes.withLock { b in defer { b = [] }; return b }
        let frames = (try? framer.withLock { try $0.feed(bytes) }) ?? []
        for case .message(let m) in frames where m.requestID == rid && m.type != .watchEvent {
            if m.type == .error { return .failure(XenStoreError(wireName: XenStoreWire.oneArgument(m.payload) ?? "") ?? .eio) }
            return .success(m.payload)
        }
        return .failure(.eio)
    }

    func write(_ path: String, _ value: String) -> XenStoreError? {
        defer { settle() }
        if case .failure(let e) = request(.write, XenStoreWire.nulTerminated([path]) + Array(value.utf8)) { return e }
        return nil
    }

    func read(_ path: String) -> Result<String, XenStoreError> {
        request(.read, XenStoreWire.nulTerminated([path])).map { String(decoding: $0, as: UTF8.self) }
    }
}

@Suite("xenbus state values")
struct XenbusStateTests {
    @Test("store values parse only as xenbus.h's decimal states")
    func parsing() {
        #expect(XenbusState(storeValue: "4") == .connected)
        #expect(XenbusState(storeValue: "1") == .initialising)
        #expect(XenbusState(storeValue: "8") == .reconfigured)
        for bad in ["", "9", "-1", " 4", "4 ", "0x4", "44444444444", "connected"] {
            #expect(XenbusState(storeValue: bad) == nil, "\(bad)")
        }
        for s in XenbusState.allCases { #expect(XenbusState(storeValue: s.storeValue) == s) }
    }

    @Test("the backend's handshake: InitWait → connect on Initialised/Connected, Closing/Closed tear down, restart after Closed")
    func handshake() {
        typealias H = XenbusHandshake
        #expect(H.onFrontendChange(backend: .initWait, frontend: .initialising) == .none)
        #expect(H.onFrontendChange(backend: .initWait, frontend: .initialised) == .connect)
        #expect(H.onFrontendChange(backend: .initWait, frontend: .connected) == .connect)
        #expect(H.onFrontendChange(backend: .connected, frontend: .connected) == .none)
        #expect(H.onFrontendChange(backend: .connected, frontend: .closing) == .disconnect(then: .closing))
        #expect(H.onFrontendChange(backend: .closing, frontend: .closed) == .disconnect(then: .closed))
        #expect(H.onFrontendChange(backend: .closed, frontend: .closed) == .none)
        #expect(H.onFrontendChange(backend: .closed, frontend: .initialising) == .switchTo(.initWait))
        #expect(H.onFrontendChange(backend: .connected, frontend: nil) == .disconnect(then: .closed))
        #expect(H.onFrontendChange(backend: .initWait, frontend: .initWait) == .none)
    }
}

/// A driver that records what the handshake asked of it.
final class RecordingDriver: XenbusBackendDriver {
    struct Log: Sendable { var connects: [[String: String]] = []; var disconnects = 0 }
    let log = Lock(Log())
    let refuse: Bool
    init(refuse: Bool = false) { self.refuse = refuse }
    func backendNodes() -> [(String, String)] { [("feature-test", "1")] }
    func connect(frontend: [String: String]) throws -> [(String, String)] {
        log.withLock { $0.connects.append(frontend) }
        guard !refuse, frontend["ring-ref"].flatMap({ UInt32($0) }) != nil else { throw XenStoreError.einval }
        return [("connected-to", frontend["ring-ref"] ?? "")]
    }
    func disconnect() { log.withLock { $0.disconnects += 1 } }
}

/// Where a test's backend reaches the store: the server itself, or the same
/// server over the wire (`XenStoreRemote` through a socketpair, as a guest
/// process reaches the daemon's store).
enum BackendStore: String, CaseIterable, Sendable {
    case inProcess, remote
}

/// A server and the backend's access to it; the remote one is closed at the end.
final class StoreUnderTest: Sendable {
    let server = XenStoreServer()
    let backend: any XenStoreService
    private let remote: XenStoreRemote?

    init(_ kind: BackendStore) throws {
        remote = kind == .remote ? try XenStoreRemote.loopback(to: server) : nil
        backend = remote ?? server
    }

    deinit { remote?.close() }

    /// After a guest's write: the backend's watch handlers have run.
    var settle: @Sendable () -> Void { { [remote] in remote?.settle() } }

    func guest(_ domain: UInt16) -> GuestWire { GuestWire(server, domain: domain, settle: settle) }
}

@Suite("xenbus backend device over a real store")
struct XenbusBackendDeviceTests {
    let address = XenbusDeviceAddress(type: "vtest", frontend: DomainID(rawValue: 1), index: 0)

    @Test("both ends are created with libxl's permissions and the backend waits in InitWait", arguments: BackendStore.allCases)
    func creation(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let driver = RecordingDriver()
        let device = try XenbusBackendDevice(store: s.backend, address: address, driver: driver, frontendNodes: [("virtual-device", "51712")])
        #expect(device.backendState == .initWait)
        #expect(try store.read("\(address.backendPath)/state") == "2")
        #expect(try store.read("\(address.backendPath)/feature-test") == "1")
        #expect(try store.read("\(address.backendPath)/frontend") == address.frontendPath)
        #expect(try store.read("\(address.frontendPath)/backend") == address.backendPath)
        #expect(try store.read("\(address.frontendPath)/virtual-device") == "51712")
        #expect(try store.permissions(address.backendPath).strings == ["n0", "r1"])
        #expect(try store.permissions(address.frontendPath).strings == ["n1", "r0"])
        // The frontend domain reads the backend but cannot change it.
        let guest = s.guest(1)
        #expect(try guest.read("\(address.backendPath)/state").get() == "2")
        #expect(guest.write("\(address.backendPath)/state", "4") == .eacces)
        // Another domain sees neither end.
        let other = s.guest(2)
        if case .success = other.read("\(address.frontendPath)/state") { Issue.record("domain 2 read domain 1's frontend") }
    }

    @Test("frontend Initialised → driver connects with its values → Connected; Closing/Closed → disconnect; back to InitWait on restart", arguments: BackendStore.allCases)
    func lifecycle(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let driver = RecordingDriver()
        let device = try XenbusBackendDevice(store: s.backend, address: address, driver: driver)
        let guest = s.guest(1)
        #expect(guest.write("\(address.frontendPath)/ring-ref", "8") == nil)
        #expect(guest.write("\(address.frontendPath)/event-channel", "5") == nil)
        #expect(guest.write("\(address.frontendPath)/state", "3") == nil)
        #expect(device.backendState == .connected)
        #expect(device.isConnected)
        #expect(try store.read("\(address.backendPath)/state") == "4")
        #expect(try store.read("\(address.backendPath)/connected-to") == "8")
        let connects = driver.log.withLock { $0.connects }
        #expect(connects.count == 1)
        #expect(connects.first?["event-channel"] == "5")

        #expect(guest.write("\(address.frontendPath)/state", "5") == nil)
        #expect(device.backendState == .closing)
        #expect(guest.write("\(address.frontendPath)/state", "6") == nil)
        #expect(device.backendState == .closed)
        #expect(driver.log.withLock { $0.disconnects } == 1)
        #expect(guest.write("\(address.frontendPath)/state", "1") == nil)
        #expect(device.backendState == .initWait)
        #expect(guest.write("\(address.frontendPath)/state", "4") == nil)
        #expect(device.backendState == .connected)

        device.destroy()
        #expect(driver.log.withLock { $0.disconnects } == 2)
        #expect(throws: XenStoreError.enoent) { try store.read(address.backendPath) }
        #expect(throws: XenStoreError.enoent) { try store.read(address.frontendPath) }
    }

    @Test("close (hot-unplug): a frontend no driver took (Initialising) closes the backend at once; a connected one keeps it Closing until the frontend closes", arguments: BackendStore.allCases)
    func closeOnRequest(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let idle = RecordingDriver()
        let unprobed = try XenbusBackendDevice(store: s.backend, address: address, driver: idle)
        #expect(try store.read("\(address.frontendPath)/state") == "1")
        s.settle()  // the watch's first event (the frontend's Initialising) is handled
        unprobed.close()
        #expect(unprobed.backendState == .closed)
        #expect(try store.read("\(address.backendPath)/state") == "6")
        #expect(idle.log.withLock { $0.connects }.isEmpty)
        unprobed.destroy()

        let other = XenbusDeviceAddress(type: "vtest", frontend: DomainID(rawValue: 1), index: 1)
        let driver = RecordingDriver()
        let device = try XenbusBackendDevice(store: s.backend, address: other, driver: driver)
        let guest = s.guest(1)
        #expect(guest.write("\(other.frontendPath)/ring-ref", "8") == nil)
        #expect(guest.write("\(other.frontendPath)/event-channel", "5") == nil)
        #expect(guest.write("\(other.frontendPath)/state", "4") == nil)
        #expect(device.backendState == .connected)
        device.close()
        #expect(device.backendState == .closing)
        #expect(driver.log.withLock { $0.disconnects } == 0)
        #expect(guest.write("\(other.frontendPath)/state", "6") == nil)
        #expect(device.backendState == .closed)
        #expect(driver.log.withLock { $0.disconnects } == 1)
        device.destroy()
    }

    @Test("a hostile frontend: junk states are ignored, a refused connect leaves InitWait and an error node", arguments: BackendStore.allCases)
    func hostileFrontend(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let driver = RecordingDriver()
        let device = try XenbusBackendDevice(store: s.backend, address: address, driver: driver)
        let guest = s.guest(1)
        for junk in ["", "x", "99", "-3", String(repeating: "9", count: 100)] {
            _ = guest.write("\(address.frontendPath)/state", junk)
        }
        #expect(device.backendState == .closed || device.backendState == .initWait)
        #expect(driver.log.withLock { $0.connects }.isEmpty)
        // No ring-ref: the driver refuses; the backend stays put and says why.
        _ = guest.write("\(address.frontendPath)/state", "1")
        _ = guest.write("\(address.frontendPath)/state", "3")
        #expect(device.backendState == .initWait)
        #expect(!device.isConnected)
        #expect((try? store.read("\(address.backendPath)/error"))?.contains("connect failed") == true)
    }

    @Test("fatal: the error node as xenbus_dev_fatal writes it (readable by the frontend), Closing, the driver disconnected, Closed when the frontend closes; a frontend restart gets InitWait", arguments: BackendStore.allCases)
    func fatal(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let driver = RecordingDriver()
        let device = try XenbusBackendDevice(store: s.backend, address: address, driver: driver)
        let guest = s.guest(1)
        #expect(guest.write("\(address.frontendPath)/ring-ref", "8") == nil)
        #expect(guest.write("\(address.frontendPath)/state", "3") == nil)
        #expect(device.backendState == .connected)
        let states = Lock<[String]>([])
        _ = try store.watch("\(address.backendPath)/state", token: "fe") { path, _ in
            if let v = try? store.read(path) { states.withLock { $0.append(v) } }
        }

        device.fatal("ring 8: producer index overrun")
        // xenbus_va_dev_error: "%i " of -err, then the message, at error/<nodename>/error in the backend's home.
        #expect(address.errorPath == "/local/domain/0/error/backend/vtest/1/0/error")
        #expect(try store.read(address.errorPath) == "5 ring 8: producer index overrun")
        #expect(try guest.read(address.errorPath).get() == "5 ring 8: producer index overrun")
        #expect(device.backendState == .closing)
        #expect(!device.isConnected)
        #expect(driver.log.withLock { $0.disconnects } == 1)
        #expect(states.withLock { $0 } == ["4", "5"], "initial event, Closing")
        // A frontend that ignores the Closing gets nothing back.
        #expect(guest.write("\(address.frontendPath)/state", "4") == nil)
        #expect(device.backendState == .closing)
        #expect(driver.log.withLock { $0.connects.count } == 1)

        // The frontend tears down and starts again: the handshake offers the device anew.
        #expect(guest.write("\(address.frontendPath)/state", "5") == nil)
        #expect(device.backendState == .closing)
        #expect(guest.write("\(address.frontendPath)/state", "6") == nil)
        #expect(device.backendState == .closed)
        #expect(states.withLock { $0 } == ["4", "5", "6"], "initial event, Closing, Closed")
        #expect(driver.log.withLock { $0.disconnects } == 1, "the driver was disconnected once")
        #expect(guest.write("\(address.frontendPath)/state", "1") == nil)
        #expect(device.backendState == .initWait)
        device.fatal("again", error: .einval)
        #expect(try store.read(address.errorPath) == "22 again")
        #expect(device.backendState == .closing)
    }
}

@Suite("the domain's XenStore tree (libxl layout)")
struct DomainStoreLayoutTests {
    @Test("home readable by the guest, its own nodes writable, the toolstack's not")
    func layout() throws {
        let store = XenStoreServer()
        let layout = DomainStoreLayout(
            domain: DomainID(rawValue: 1), name: "g", uuid: "00000000-0000-0000-0000-000000000001",
            maximumMemoryKiB: 65536, targetMemoryKiB: 65536, vcpus: 2,
            storeFrame: 0x3ffe, storePort: 2, consoleFrame: 0x3fff, consolePort: 1)
        try layout.write(to: store)
        #expect(try store.read("/local/domain/1/name") == "g")
        #expect(try store.read("/local/domain/1/domid") == "1")
        #expect(try store.read("/local/domain/1/vm") == "/vm/00000000-0000-0000-0000-000000000001")
        #expect(try store.read("/local/domain/1/memory/target") == "65536")
        #expect(try store.directory("/local/domain/1/cpu") == ["0", "1"])
        #expect(try store.read("/local/domain/1/store/ring-ref") == String(0x3ffe))
        #expect(try store.read("/local/domain/0/name") == "Domain-0")
        #expect(try store.permissions("/local/domain/1").strings == ["n0", "r1"])
        #expect(try store.permissions("/local/domain/1/data").strings == ["n1"])
        #expect(try store.permissions("/local/domain/1/control/shutdown").strings == ["n1"])

        let guest = GuestWire(store, domain: 1)
        #expect(guest.write("data/x", "1") == nil)
        #expect(guest.write("control/feature-poweroff", "1") == nil)
        #expect(guest.write("control/shutdown", "") == nil)
        #expect(guest.write("name", "evil") == .eacces)
        #expect(guest.write("memory/target", "1") == .eacces)
        #expect(guest.write("/local/domain/0/name", "evil") == .eacces)
        #expect(try guest.read("memory/target").get() == "65536")

        // Writing the tree again (a restart) starts from a clean home.
        try layout.write(to: store)
        #expect(throws: XenStoreError.enoent) { try store.read("/local/domain/1/data/x") }
        layout.remove(from: store)
        #expect(throws: XenStoreError.enoent) { try store.read("/local/domain/1") }
        #expect(throws: XenStoreError.enoent) { try store.read("/vm/00000000-0000-0000-0000-000000000001") }
    }
}

/// A driver that fails the device when the frontend's "bad" node is set.
final class FatalDriver: XenbusBackendDriver {
    let seen = Lock<[[String: String]]>([])
    func backendNodes() -> [(String, String)] { [] }
    func connect(frontend: [String: String]) throws -> [(String, String)] {
        seen.withLock { $0.append(frontend) }
        if let bad = frontend["bad"] { throw XenbusFatalError(.einval, "bad value \(bad)") }
        return []
    }
    func disconnect() {}
}

@Suite("xenbus backend device: nested nodes, fatal connects, a separate start")
struct XenbusBackendDeviceExtensionTests {
    let store = XenStoreServer()
    let address = XenbusDeviceAddress(type: "vbd", frontend: DomainID(rawValue: 1), index: 51712)

    @Test("the driver sees the frontend's nodes one level deep (a multi-queue vbd's queue-N/…)")
    func nestedNodes() throws {
        let driver = FatalDriver()
        let device = try XenbusBackendDevice(store: store, address: address, driver: driver)
        defer { device.destroy() }
        let guest = GuestWire(store, domain: 1)
        #expect(guest.write("\(address.frontendPath)/queue-0/ring-ref", "8") == nil)
        #expect(guest.write("\(address.frontendPath)/queue-1/event-channel", "9") == nil)
        #expect(guest.write("\(address.frontendPath)/state", "3") == nil)
        let nodes = try #require(driver.seen.withLock { $0.first })
        #expect(nodes["queue-0/ring-ref"] == "8" && nodes["queue-1/event-channel"] == "9")
        #expect(nodes["queue-0"] == "" && nodes["state"] == "3")
    }

    @Test("a driver's XenbusFatalError is xenbus_dev_fatal: the error node, Closing, Closed when the frontend closes; the frontend may start over")
    func fatalConnect() throws {
        let device = try XenbusBackendDevice(store: store, address: address, driver: FatalDriver())
        let guest = GuestWire(store, domain: 1)
        #expect(guest.write("\(address.frontendPath)/bad", "x") == nil)
        #expect(guest.write("\(address.frontendPath)/state", "3") == nil)
        #expect(device.backendState == .closing)
        #expect(!device.isConnected)
        #expect(try store.read(address.errorPath) == "22 bad value x")
        #expect(guest.write("\(address.frontendPath)/state", "1") == nil)
        #expect(device.backendState == .closing, "Initialising without a close first restarts nothing")
        #expect(guest.write("\(address.frontendPath)/state", "6") == nil)
        #expect(device.backendState == .closed)
        #expect(guest.write("\(address.frontendPath)/state", "1") == nil)
        #expect(device.backendState == .initWait)
    }

    @Test("startHandshake: false keeps the backend Initialising; a frontend Initialised meanwhile connects once it starts")
    func deferredStart() throws {
        let driver = FatalDriver()
        let device = try XenbusBackendDevice(store: store, address: address, driver: driver, startHandshake: false)
        let guest = GuestWire(store, domain: 1)
        #expect(guest.write("\(address.frontendPath)/state", "3") == nil)
        #expect(device.backendState == .initialising)
        #expect(driver.seen.withLock { $0.isEmpty })
        try device.startHandshake()
        try device.startHandshake()  // idempotent
        #expect(device.backendState == .connected)
        #expect(driver.seen.withLock { $0.count } == 1)
    }
}

/// A driver whose `connect` or `disconnect` can be held at a gate, to
/// order a `fatal` against a transition under way.
final class GatedDriver: XenbusBackendDriver {
    /// Signalled when a held call has started.
    let entered = DispatchSemaphore(value: 0)
    /// Signalled by the test to let a held call go on.
    let release = DispatchSemaphore(value: 0)
    let holdConnect = Atomic<Bool>(false)
    let holdDisconnect = Atomic<Bool>(false)
    let connects = Atomic<Int>(0)
    let disconnects = Atomic<Int>(0)
    /// The backend's store `state` when each disconnect finished.
    let stateAtDisconnectEnd = Lock<[String]>([])
    let store: XenStoreServer
    let backendPath: String
    init(store: XenStoreServer, backendPath: String) {
        self.store = store
        self.backendPath = backendPath
    }
    func backendNodes() -> [(String, String)] { [] }
    func connect(frontend: [String: String]) throws -> [(String, String)] {
        connects.add(1, ordering: .relaxed)
        if holdConnect.exchange(false, ordering: .relaxed) {
            entered.signal()
            _ = release.wait(timeout: .now() + .seconds(30))
        }
        return []
    }
    func disconnect() {
        if holdDisconnect.exchange(false, ordering: .relaxed) {
            entered.signal()
            _ = release.wait(timeout: .now() + .seconds(30))
        }
        disconnects.add(1, ordering: .relaxed)
        let state = (try? store.read("\(backendPath)/state")) ?? "?"
        stateAtDisconnectEnd.withLock { $0.append(state) }
    }
}

/// Runs `body` on a thread of its own; the semaphore is signalled when it returns.
func onThread(_ body: @escaping @Sendable () -> Void) -> DispatchSemaphore {
    let done = DispatchSemaphore(value: 0)
    DispatchQueue.global().async {
        body()
        done.signal()
    }
    return done
}

@Suite("xenbus backend device: fatal against the frontend's transitions")
struct XenbusFatalOrderingTests {
    let address = XenbusDeviceAddress(type: "vbd", frontend: DomainID(rawValue: 1), index: 51728)

    func connected(_ s: StoreUnderTest) throws -> (XenbusBackendDevice, GatedDriver, GuestWire) {
        let driver = GatedDriver(store: s.server, backendPath: address.backendPath)
        let device = try XenbusBackendDevice(store: s.backend, address: address, driver: driver)
        let guest = s.guest(1)
        #expect(guest.write("\(address.frontendPath)/state", "3") == nil)
        #expect(device.backendState == .connected)
        return (device, driver, guest)
    }

    @Test("a fatal during a connect does not wait for it and runs after it: never left Connected", arguments: BackendStore.allCases)
    func fatalDuringConnect(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let driver = GatedDriver(store: store, backendPath: address.backendPath)
        let device = try XenbusBackendDevice(store: s.backend, address: address, driver: driver)
        let guest = s.guest(1)
        driver.holdConnect.store(true, ordering: .relaxed)
        let written = onThread { _ = guest.write("\(address.frontendPath)/state", "3") }
        try #require(driver.entered.wait(timeout: .now() + .seconds(10)) == .success, "connect started")
        let fatalReturned = onThread { device.fatal("ring overrun") }
        #expect(fatalReturned.wait(timeout: .now() + .seconds(10)) == .success, "fatal returns at once")
        #expect(device.backendState == .initWait, "the connect is still under way")
        driver.release.signal()
        try #require(written.wait(timeout: .now() + .seconds(10)) == .success)
        #expect(device.backendState == .closing)
        #expect(try store.read("\(address.backendPath)/state") == "5")
        #expect(try store.read(address.errorPath) == "5 ring overrun")
        #expect(driver.disconnects.load(ordering: .relaxed) == 1)
    }

    @Test("a frontend Closed while a fatal disconnects: Closed only after the driver let go of the ring, and not stuck in Closing", arguments: BackendStore.allCases)
    func closedDuringFatal(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let (device, driver, guest) = try connected(s)
        driver.holdDisconnect.store(true, ordering: .relaxed)
        let fatalDone = onThread { device.fatal("ring overrun") }
        try #require(driver.entered.wait(timeout: .now() + .seconds(10)) == .success, "the fatal's disconnect started")
        // The frontend closes meanwhile; its watch handler must not wait for the fatal.
        let closeDone = onThread {
            _ = guest.write("\(address.frontendPath)/state", "5")
            _ = guest.write("\(address.frontendPath)/state", "6")
        }
        #expect(closeDone.wait(timeout: .now() + .seconds(10)) == .success, "the frontend's writes return")
        #expect(try store.read("\(address.backendPath)/state") == "5", "not Closed while the ring is still held")
        driver.release.signal()
        try #require(fatalDone.wait(timeout: .now() + .seconds(10)) == .success)
        #expect(driver.stateAtDisconnectEnd.withLock { $0 } == ["5"])
        #expect(device.backendState == .closed)
        #expect(try store.read("\(address.backendPath)/state") == "6")
        #expect(driver.disconnects.load(ordering: .relaxed) == 1)
        #expect(try store.read(address.errorPath) == "5 ring overrun")
    }

    @Test("Closed then Initialising at once while a fatal runs: the close is not lost, the restart gets InitWait, the error stays", arguments: BackendStore.allCases)
    func closedThenInitialisingDuringFatal(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let (device, driver, guest) = try connected(s)
        driver.holdDisconnect.store(true, ordering: .relaxed)
        let fatalDone = onThread { device.fatal("ring overrun") }
        try #require(driver.entered.wait(timeout: .now() + .seconds(10)) == .success)
        #expect(guest.write("\(address.frontendPath)/state", "6") == nil)
        #expect(guest.write("\(address.frontendPath)/state", "1") == nil)
        driver.release.signal()
        try #require(fatalDone.wait(timeout: .now() + .seconds(10)) == .success)
        #expect(device.backendState == .initWait)
        #expect(try store.read("\(address.backendPath)/state") == "2")
        #expect(try store.read(address.errorPath) == "5 ring overrun")
        #expect(driver.connects.load(ordering: .relaxed) == 1, "no connect without the frontend's Initialised")
        #expect(guest.write("\(address.frontendPath)/state", "3") == nil)
        #expect(device.backendState == .connected)
    }

    @Test("a fatal after the frontend closed: the error is recorded, the device stays Closed and may restart", arguments: BackendStore.allCases)
    func fatalAfterClose(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let (device, driver, guest) = try connected(s)
        #expect(guest.write("\(address.frontendPath)/state", "6") == nil)
        #expect(device.backendState == .closed)
        device.fatal("late")
        #expect(try store.read(address.errorPath) == "5 late")
        #expect(device.backendState == .closed)
        #expect(driver.disconnects.load(ordering: .relaxed) == 1)
        #expect(guest.write("\(address.frontendPath)/state", "1") == nil)
        #expect(device.backendState == .initWait)
    }

    @Test("destroy while a fatal disconnects: the fatal finishes without bringing the nodes back", arguments: BackendStore.allCases)
    func destroyDuringFatal(_ kind: BackendStore) throws {
        let s = try StoreUnderTest(kind), store = s.server
        let (device, driver, _) = try connected(s)
        driver.holdDisconnect.store(true, ordering: .relaxed)
        let fatalDone = onThread { device.fatal("ring overrun") }
        try #require(driver.entered.wait(timeout: .now() + .seconds(10)) == .success)
        device.destroy()
        driver.release.signal()
        try #require(fatalDone.wait(timeout: .now() + .seconds(10)) == .success)
        #expect(throws: XenStoreError.enoent) { try store.read(address.backendPath) }
        #expect(driver.disconnects.load(ordering: .relaxed) == 1)
        device.fatal("after destroy")
        #expect(try store.read(address.errorPath) == "5 ring overrun")
    }

    @Test("fatal racing a frontend's close and restart, many times: the store's state always agrees with the device's, never Connected, never stuck")
    func raceStress() throws {
        for round in 0..<200 {
            let store = XenStoreServer()
            let driver = GatedDriver(store: store, backendPath: address.backendPath)
            let device = try XenbusBackendDevice(store: store, address: address, driver: driver)
            let guest = GuestWire(store, domain: 1)
            #expect(guest.write("\(address.frontendPath)/state", "3") == nil)
            let fatalDone = onThread { device.fatal("round \(round)") }
            let frontendDone = onThread {
                _ = guest.write("\(address.frontendPath)/state", "6")
                _ = guest.write("\(address.frontendPath)/state", "1")
            }
            try #require(fatalDone.wait(timeout: .now() + .seconds(10)) == .success)
            try #require(frontendDone.wait(timeout: .now() + .seconds(10)) == .success)
            // Every transition has run once both threads are back and the store's queue is idle.
            _ = try store.read("\(address.backendPath)/state")
            let state = device.backendState
            #expect(try store.read("\(address.backendPath)/state") == state.storeValue, "round \(round)")
            // InitWait when the fatal came first (the frontend's close and
            // restart follow it); Closing when it came after the restart.
            #expect(state == .initWait || state == .closing, "round \(round): \(state)")
            #expect(try store.read(address.errorPath) == "5 round \(round)")
            #expect(driver.disconnects.load(ordering: .relaxed) == 1, "round \(round)")
            // Never stuck: a frontend that closes and restarts gets InitWait.
            #expect(guest.write("\(address.frontendPath)/state", "6") == nil)
            #expect(device.backendState == .closed, "round \(round)")
            #expect(guest.write("\(address.frontendPath)/state", "1") == nil)
            #expect(device.backendState == .initWait, "round \(round)")
            #expect(try store.read("\(address.backendPath)/state") == "2", "round \(round)")
            device.destroy()
        }
    }
}
