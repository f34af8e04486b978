import CXen
import DeviceRuntime
import EventChannels
import GuestMemory
import Synchronization
import Testing
import TestSupport
import XenABI
import XenRing
import XenStore

/// The ring transport over mock memory: a fake xenbus frontend writes
/// requests into the `xenstore_domain_interface` page and reads replies.
@Suite("XenStore ring connection")
struct RingConnectionTests {

    final class Setup {
        let memory = MockGuestMemory(size: 1 << 20)
        let table: EventChannelTable
        let server = XenStoreServer()
        let frontend: FakeByteRingFrontend
        let connection: XenStoreRingConnection
        let reports = Box<[String]>([])
        let runtime = DeviceRuntime()
        static let domain = DomainID(rawValue: 1)
        static let base = GuestPhysicalAddress(0x20000)

        init() throws {
            table = EventChannelTable(configuration: .init(domainID: Self.domain, vcpuCount: 1), memory: memory,
                                      locator: FixedSharedInfo(), notifier: CountingUpcalls())
            frontend = try FakeByteRingFrontend(memory: memory, base: Self.base, layout: .xenStore)
            let reports = self.reports
            connection = try XenStoreRingConnection(memory: memory, frame: GuestFrameNumber(0x20), events: table,
                                                    domain: Self.domain, server: server, runtime: runtime,
                                                    report: { r in reports.withLock { $0.append(r) } })
            try server.mkdir("/local/domain/1")
            try server.setPermissions("/local/domain/1", XenStorePermissions(owner: Self.domain))
        }

        deinit { runtime.stopAll() }

        /// The guest's EVTCHNOP_send on the XenStore port, then the wait for
        /// the pump it scheduled on the connection's context.
        func send() throws {
            try table.send(connection.guestPort)
            try #require(connection.sync(timeout: .seconds(30)), "the XenStore ring's pump did not finish")
        }

        func word(_ offset: some BinaryInteger) throws -> UInt32 {
            try memory.load(UInt32.self, at: GuestPhysicalAddress(Self.base.rawValue + UInt64(offset)))
        }
        func setWord(_ offset: some BinaryInteger, _ v: UInt32) throws {
            try memory.store(v, at: GuestPhysicalAddress(Self.base.rawValue + UInt64(offset)))
        }

        /// Sends `m` as Linux's xb_write does (as much as fits, notify, repeat) and
        /// collects what comes back until `count` messages have arrived.
        func exchange(_ bytes: [UInt8], expecting count: Int) throws -> [XenStoreMessage] {
            var rest = bytes
            var received: [UInt8] = []
            var got: [XenStoreMessage] = []
            for _ in 0..<1000 {
                let n = try frontend.write(rest)
                rest.removeFirst(n)
                try send()
                received += try frontend.read()
                got = try messages(received)
                if rest.isEmpty && got.count >= count { break }
            }
            return got
        }
    }

    @Test("set-up: features, connected, the guest port bound to the backend")
    func setup() throws {
        let s = try Setup()
        #expect(try s.word(PVH_XENSTORE_SERVER_FEATURES_OFFSET) ==
            UInt32(XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR))
        #expect(try s.word(PVH_XENSTORE_CONNECTION_OFFSET) == UInt32(XENSTORE_CONNECTED))
        #expect(try s.word(PVH_XENSTORE_ERROR_OFFSET) == UInt32(XENSTORE_ERROR_NONE))
        #expect("\(try s.table.status(domain: Setup.domain, port: s.connection.guestPort))".contains("interdomain"))
    }

    @Test("requests and replies cross the ring, relative paths resolve to the guest's home")
    func roundTrip() throws {
        let s = try Setup()
        let w = XenStoreMessage(type: .write, requestID: 1, payload: XenStoreWire.nulTerminated(["name"]) + Array("vm".utf8))
        let r = XenStoreMessage(type: .read, requestID: 2, strings: ["/local/domain/1/name"])
        let replies = try s.exchange(w.bytes + r.bytes, expecting: 2)
        #expect(replies.map(\.requestID) == [1, 2])
        #expect(replies[1].payload == Array("vm".utf8))
        #expect(try s.server.read("/local/domain/1/name") == "vm")
        #expect(s.table.isPending(s.connection.guestPort))
    }

    @Test("output larger than the rsp ring waits host-side and arrives whole")
    func bigReply() throws {
        let s = try Setup()
        let value = String(repeating: "v", count: 3000)
        try s.server.write("/local/domain/1/big", value)
        let replies = try s.exchange(XenStoreMessage(type: .read, requestID: 9, strings: ["big"]).bytes, expecting: 1)
        #expect(replies.count == 1)
        #expect(replies.first?.payload.count == 3000)
        #expect(s.connection.pendingOutputCount == 0)
    }

    @Test("watch events caused by the toolstack are pushed to the guest")
    func events() throws {
        let s = try Setup()
        let replies = try s.exchange(XenStoreMessage(type: .watch, requestID: 1, strings: ["device", "tok"]).bytes, expecting: 2)
        #expect(replies.map(\.type) == [.watch, .watchEvent])
        try s.server.write("/local/domain/1/device/vif/0", "x")
        // The server's wake scheduled the push on the connection's context.
        try #require(s.connection.sync(timeout: .seconds(30)))
        let event = try messages(try s.frontend.read())
        #expect(event.map { XenStoreWire.strings($0.payload) } == [["device/vif/0", "tok"]])
    }

    @Test("reconnect: watches dropped, indices zeroed, CONNECTED again")
    func reconnect() throws {
        let s = try Setup()
        _ = try s.exchange(XenStoreMessage(type: .watch, requestID: 1, strings: ["device", "tok"]).bytes, expecting: 2)
        try s.setWord(PVH_XENSTORE_CONNECTION_OFFSET, UInt32(XENSTORE_RECONNECT))
        try s.send()
        #expect(try s.word(PVH_XENSTORE_CONNECTION_OFFSET) == UInt32(XENSTORE_CONNECTED))
        for offset in [PVH_XENSTORE_REQ_CONS_OFFSET, PVH_XENSTORE_REQ_PROD_OFFSET, PVH_XENSTORE_RSP_CONS_OFFSET,
                       PVH_XENSTORE_RSP_PROD_OFFSET] {
            #expect(try s.word(offset) == 0)
        }
        try s.server.write("/local/domain/1/device/x", "1")
        try #require(s.connection.sync(timeout: .seconds(30)))
        #expect(try s.frontend.read().isEmpty)
        // Still usable.
        let r = try s.exchange(XenStoreMessage(type: .read, requestID: 5, strings: ["device/x"]).bytes, expecting: 1)
        #expect(r.first?.payload == Array("1".utf8))
    }

    @Test("a hostile index sets XENSTORE_ERROR_RINGIDX and stops serving; the VMM goes on")
    func hostileIndex() throws {
        let s = try Setup()
        try s.frontend.store(RingIndex(0x7fff_0000), ByteRingLayout.xenStore.fromGuest.producerOffset)
        try s.send()
        #expect(try s.word(PVH_XENSTORE_ERROR_OFFSET) == UInt32(XENSTORE_ERROR_RINGIDX))
        #expect(s.connection.isDead)
        #expect(s.reports.get.count == 1)
        try s.send()
        #expect(s.reports.get.count == 1)
        try s.server.write("/local/domain/1/x", "still fine")
    }

    @Test("bounded fuzz: a guest scribbling on the page never crashes the backend")
    func scribble() throws {
        var rng = SplitMix64(seed: 0xdead_beef)
        for round in 0..<20 {
            let s = try Setup()
            for _ in 0..<200 {
                switch rng.next() % 4 {
                case 0:  // a plausible request
                    let m = XenStoreMessage(type: .write, requestID: UInt32(round),
                                            payload: XenStoreWire.nulTerminated(["k\(rng.next() % 8)"]) + [1, 2])
                    _ = try s.frontend.write(m.bytes)
                case 1:  // random bytes through the ring
                    _ = try s.frontend.write((0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
                case 2:  // a random index or control word, sometimes a near-valid one
                    let offsets = [PVH_XENSTORE_REQ_CONS_OFFSET, PVH_XENSTORE_REQ_PROD_OFFSET, PVH_XENSTORE_RSP_CONS_OFFSET,
                                   PVH_XENSTORE_RSP_PROD_OFFSET, PVH_XENSTORE_CONNECTION_OFFSET]
                    let offset = offsets[Int(rng.next() % UInt64(offsets.count))]
                    let old = try s.word(offset)
                    try s.setWord(offset, rng.next() % 2 == 0 ? old &+ UInt32(rng.next() % 16) : UInt32(truncatingIfNeeded: rng.next()))
                default:
                    // The fake frontend traps on indices it scribbled itself: read only sane ones.
                    let prod = try s.word(PVH_XENSTORE_RSP_PROD_OFFSET), cons = try s.word(PVH_XENSTORE_RSP_CONS_OFFSET)
                    if prod &- cons <= UInt32(PVH_XENSTORE_RSP_SIZE) { _ = try s.frontend.read() }
                }
                try s.send()
            }
            if s.connection.isDead { #expect(try s.word(PVH_XENSTORE_ERROR_OFFSET) != 0) }
            #expect(s.server.withCore { $0.invariantViolations() }.isEmpty)
            try s.server.write("/local/domain/1/after", "ok")  // the server is still fine
        }
    }

    @Test("an oversized request sets XENSTORE_ERROR_PROTO")
    func oversized() throws {
        let s = try Setup()
        var big = XenStoreMessage(type: .read, requestID: 1).bytes
        big[13] = 0x20
        _ = try s.frontend.write(big)
        try s.send()
        #expect(try s.word(PVH_XENSTORE_ERROR_OFFSET) == UInt32(XENSTORE_ERROR_PROTO))
        #expect(s.connection.isDead)
    }
}
