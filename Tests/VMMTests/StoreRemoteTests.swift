import CXen
import DeviceRuntime
import Dispatch
import EventChannels
import GuestMemory
import Locking
import Testing
import TestSupport
import VMM
import XenABI
import XenStore

/// The store reached over the wire, as a guest process of the toolstack
/// reaches the daemon's: `XenStoreRemote` (the privileged access) and
/// `XenStoreRelay` (the guest's ring) against a `XenStoreServer` serving
/// the far ends of socketpairs (`XenStoreStreamConnection`). Every wait is
/// bounded; none is a sleep.
@Suite("XenStore over a stream: remote client and ring relay")
struct StoreRemoteTests {
    @Test("the remote client: writes, reads, directories, permissions and the store's errors, as the server gives them")
    func remoteBasics() throws {
        let server = XenStoreServer()
        let remote = try XenStoreRemote.loopback(to: server)
        defer { remote.close() }
        try remote.write("/local/domain/3/name", "web")
        #expect(try server.read("/local/domain/3/name") == "web")
        #expect(try remote.read("/local/domain/3/name") == "web")
        try remote.mkdir("/local/domain/3/device")
        #expect(try remote.directory("/local/domain/3") == ["name", "device"])
        try remote.setPermissions("/local/domain/3", XenStorePermissions(owner: DomainID(rawValue: 3)))
        #expect(try remote.permissions("/local/domain/3").strings == ["n3"])
        try remote.introduceDomain(DomainID(rawValue: 3), ring: GuestFrameNumber(0xfeffe), port: EventChannelPort(rawValue: 2))
        #expect(server.isIntroduced(DomainID(rawValue: 3)))
        #expect(throws: XenStoreError.enoent) { try remote.read("/nowhere") }
        try remote.remove("/local/domain/3")
        #expect(throws: XenStoreError.enoent) { try server.read("/local/domain/3/name") }
        try remote.releaseDomain(DomainID(rawValue: 3))
        #expect(!server.isIntroduced(DomainID(rawValue: 3)))
    }

    @Test("watch events arrive in order on the delivery queue; a handler may call back into the store; unwatch stops them")
    func remoteWatches() throws {
        let server = XenStoreServer()
        let remote = try XenStoreRemote.loopback(to: server)
        defer { remote.close() }
        let seen = Lock<[String]>([])
        let id = try remote.watch("/w", token: "tok:1") { path, token in
            // Back into the store from the handler: the reader is not this thread.
            let value = path == "/w" ? "" : (try? remote.read(path)) ?? "-"
            seen.withLock { $0.append("\(path)=\(value) \(token)") }
        }
        for i in 0..<20 { try server.write("/w/k\(i)", "\(i)") }
        remote.settle()
        let got = seen.withLock { $0 }
        #expect(got.first == "/w= tok:1", "the initial event first, with the caller's token")
        #expect(Array(got.dropFirst()) == (0..<20).map { "/w/k\($0)=\($0) tok:1" })
        remote.unwatch(id)
        try server.write("/w/after", "x")
        remote.settle()
        #expect(seen.withLock { $0.count } == 21)
    }

    @Test("the store's end closing fails the waiting call with connectionLost, later calls at once, and is reported once")
    func remoteConnectionLoss() throws {
        let (near, far) = try UnixSocket.pair()
        let lost = Lock<[String]>([])
        let reported = DispatchSemaphore(value: 0)
        let remote = XenStoreRemote(stream: near) { why in
            lost.withLock { $0.append(why) }
            reported.signal()
        }
        let result = Lock<Result<[UInt8], XenStoreRemoteError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            let r = Result { () throws(XenStoreRemoteError) in try remote.request(.read, XenStoreWire.nulTerminated(["/x"])) }
            result.withLock { $0 = r }
            done.signal()
        }
        // The request reached the "daemon"; it hangs up instead of answering.
        #expect(far.read(max: 4096).map { $0.count > 0 } == true)
        far.shutdownAndClose()
        try #require(done.wait(timeout: .now() + .seconds(10)) == .success, "the waiting call returned")
        if case .failure(.connectionLost) = result.withLock({ $0 }) {} else {
            Issue.record("expected connectionLost, got \(String(describing: result.withLock { $0 }))")
        }
        #expect(throws: XenStoreError.eio) { try remote.read("/x") }
        try #require(reported.wait(timeout: .now() + .seconds(10)) == .success)
        #expect(lost.withLock { $0 } == ["the store closed the connection"])
        #expect(remote.lostReason == "the store closed the connection")
    }

    /// A guest's XenStore ring in mock memory, relayed to `server` whose far
    /// end serves it as `domain`, unprivileged.
    final class RelayedRing {
        let memory = MockGuestMemory(size: 1 << 20)
        let events: EventChannelTable
        let server: XenStoreServer
        let relay: XenStoreRelay
        let connection: XenStoreRingConnection
        let frontend: FakeByteRingFrontend
        let daemonEnd: XenStoreStreamConnection
        let runtime = DeviceRuntime()
        let notifier = PortWaiter()
        final class Lines: Sendable {
            let lines = Lock<[String]>([])
            func append(_ line: String) { lines.withLock { $0.append(line) } }
            var get: [String] { lines.withLock { $0 } }
        }
        let reports = Lines()
        /// Signalled when the ring connection reports the fault that stopped it.
        let ringFault = DispatchSemaphore(value: 0)
        static let base = GuestPhysicalAddress(0x20000)

        final class PortWaiter: EventChannelNotifier {
            let pending = DispatchSemaphore(value: 0)
            func upcall(vcpu: VCPUID) {}
            func portBecamePending(_ port: EventChannelPort) { pending.signal() }
        }

        init(server: XenStoreServer, domain: DomainID) throws {
            self.server = server
            events = EventChannelTable(configuration: .init(domainID: domain, vcpuCount: 1), memory: memory,
                                       locator: FixedSharedInfo(), notifier: notifier)
            frontend = try FakeByteRingFrontend(memory: memory, base: Self.base, layout: .xenStore)
            let (near, far) = try UnixSocket.pair()
            daemonEnd = try #require(XenStoreStreamConnection.start(socket: far, server: server, domain: domain,
                                                                    privileged: false, flowControl: true))
            let reports = reports, ringFault = ringFault
            relay = XenStoreRelay(stream: near) { r in reports.append("relay: \(r)") }
            connection = try XenStoreRingConnection(memory: memory, frame: GuestFrameNumber(0x20), events: events, domain: domain,
                                                    peer: relay, runtime: runtime,
                                                    report: { r in
                                                        reports.append(r)
                                                        ringFault.signal()
                                                    })
        }

        /// Domain 5's ring, relayed to a fresh store where its home exists and is its own.
        static func guestWithHome() throws -> RelayedRing {
            let server = XenStoreServer()
            try server.mkdir("/local/domain/5")
            try server.setPermissions("/local/domain/5", XenStorePermissions(owner: DomainID(rawValue: 5)))
            return try RelayedRing(server: server, domain: DomainID(rawValue: 5))
        }

        deinit {
            runtime.stopAll()
            relay.close()
        }

        func word(_ offset: some BinaryInteger) throws -> UInt32 {
            try memory.load(UInt32.self, at: GuestPhysicalAddress(Self.base.rawValue + UInt64(offset)))
        }

        /// `test_and_clear_bit` on the port's pending bit in shared_info (FixedSharedInfo, 64-bit layout).
        func clearPending() throws {
            let field = XenWire.SharedInfo.eventPending(sharedInfo32Bit: false)
            let port = Int(connection.guestPort.rawValue)
            let word = GuestPhysicalAddress(FixedSharedInfo().sharedInfoFrame!.rawValue << 12 + UInt64(field.offset) + UInt64(port / 64 * 8))
            _ = try memory.testAndClearBit(port % 64, of: UInt64.self, at: word)
        }

        /// Writes `bytes` into req and notifies, then reads rsp until
        /// `count` messages came, waiting for the backend's events (10 s each).
        func exchange(_ bytes: [UInt8], expecting count: Int) throws -> [XenStoreMessage] {
            var rest = bytes
            var framer = XenStoreFramer()
            var got: [XenStoreMessage] = []
            for _ in 0..<1000 {
                try clearPending()
                let n = try frontend.write(rest)
                rest.removeFirst(n)
                // Read, then notify: the backend then finds the room made.
                for case .message(let m) in try framer.feed(try frontend.read()) { got.append(m) }
                try events.send(connection.guestPort)
                if rest.isEmpty && got.count >= count { break }
                if n == 0 || rest.isEmpty {
                    guard notifier.pending.wait(timeout: .now() + .seconds(10)) == .success else { break }
                }
            }
            return got
        }

        /// Waits for the next event from the backend and returns what rsp holds then.
        func nextOutput() throws -> [XenStoreMessage] {
            var framer = XenStoreFramer()
            var got: [XenStoreMessage] = []
            for _ in 0..<100 where got.isEmpty {
                try clearPending()
                for case .message(let m) in try framer.feed(try frontend.read()) { got.append(m) }
                if got.isEmpty { guard notifier.pending.wait(timeout: .now() + .seconds(10)) == .success else { break } }
            }
            return got
        }
    }

    @Test("a guest's ring through the relay gets the store's replies: relative paths in its home, a 3000-byte value whole")
    func relayRoundTrip() throws {
        let ring = try RelayedRing.guestWithHome()
        let server = ring.server
        let w = XenStoreMessage(type: .write, requestID: 1, payload: XenStoreWire.nulTerminated(["name"]) + Array("vm".utf8))
        let r = XenStoreMessage(type: .read, requestID: 2, strings: ["/local/domain/5/name"])
        let replies = try ring.exchange(w.bytes + r.bytes, expecting: 2)
        #expect(replies.map(\.requestID) == [1, 2])
        #expect(replies.last?.payload == Array("vm".utf8))
        #expect(try server.read("/local/domain/5/name") == "vm")
        try server.write("/local/domain/5/big", String(repeating: "v", count: 3000))
        let big = try ring.exchange(XenStoreMessage(type: .read, requestID: 3, strings: ["big"]).bytes, expecting: 1)
        #expect(big.first?.payload.count == 3000)
    }

    @Test("as domain N, unprivileged: another domain's private node is EACCES, its own home is writable")
    func relayPermissions() throws {
        let server = XenStoreServer()
        for d in [5, 6] as [UInt16] {
            try server.write("/local/domain/\(d)/secret", "s\(d)")
            try server.setPermissions("/local/domain/\(d)", XenStorePermissions(owner: DomainID(rawValue: d)))
            try server.setPermissions("/local/domain/\(d)/secret", XenStorePermissions(owner: DomainID(rawValue: d)))
        }
        let ring = try RelayedRing(server: server, domain: DomainID(rawValue: 5))
        let replies = try ring.exchange(XenStoreMessage(type: .read, requestID: 1, strings: ["/local/domain/6/secret"]).bytes
                                        + XenStoreMessage(type: .read, requestID: 2, strings: ["/local/domain/5/secret"]).bytes,
                                        expecting: 2)
        #expect(replies.first?.type == .error)
        #expect(replies.first.map { XenStoreWire.strings($0.payload) } == ["EACCES"])
        #expect(replies.last?.payload == Array("s5".utf8))
    }

    @Test("a watch event caused in the daemon's store crosses the relay to the guest; a reconnect drops the watch")
    func relayWatch() throws {
        let ring = try RelayedRing.guestWithHome()
        let server = ring.server
        let replies = try ring.exchange(XenStoreMessage(type: .watch, requestID: 1, strings: ["device", "tok"]).bytes, expecting: 2)
        #expect(Set(replies.map(\.type)) == [.watch, .watchEvent])
        try server.write("/local/domain/5/device/vif/0", "x")
        let event = try ring.nextOutput()
        #expect(event.map { XenStoreWire.strings($0.payload) } == [["device/vif/0", "tok"]])
        // xenstore-ring.txt reconnection: the watch is gone in the daemon's store.
        try ring.memory.store(UInt32(XENSTORE_RECONNECT),
                              at: GuestPhysicalAddress(RelayedRing.base.rawValue + UInt64(PVH_XENSTORE_CONNECTION_OFFSET)))
        try ring.events.send(ring.connection.guestPort)
        try #require(ring.connection.sync(timeout: .seconds(10)), "the reset was handled")
        let again = try ring.exchange(XenStoreMessage(type: .read, requestID: 9, strings: ["device/vif/0"]).bytes, expecting: 1)
        #expect(try ring.word(PVH_XENSTORE_CONNECTION_OFFSET) == UInt32(XENSTORE_CONNECTED))
        #expect(again.map(\.requestID) == [9], "only the reply after the reset: \(again)")
        try server.write("/local/domain/5/device/vif/1", "y")
        let after = try ring.exchange(XenStoreMessage(type: .read, requestID: 10, strings: ["device/vif/1"]).bytes, expecting: 1)
        #expect(after.map(\.type) == [.read], "no event for a watch the reset dropped")
    }

    @Test("the daemon's end closing: the ring gets error = COMM, the fault is reported, the server and this process go on")
    func relayDaemonGone() throws {
        let server = XenStoreServer()
        let ring = try RelayedRing(server: server, domain: DomainID(rawValue: 5))
        ring.daemonEnd.hangUp()
        // The relay's reader sees the end, wakes the ring, whose pump fails the device.
        try #require(ring.ringFault.wait(timeout: .now() + .seconds(10)) == .success, "the ring reported its fault")
        #expect(ring.connection.isDead)
        #expect(try ring.word(PVH_XENSTORE_ERROR_OFFSET) == UInt32(XENSTORE_ERROR_COMM))
        #expect(ring.reports.get.contains { $0.contains("the store closed the connection") }, "\(ring.reports.get)")
        try server.write("/still", "fine")
        #expect(try server.read("/still") == "fine")
    }
}
