import Locking
import Testing
import XenABI
import XenStore

final class Box<T>: @unchecked Sendable {
    private let lock = Lock(())
    private var value: T
    init(_ v: T) { value = v }
    func withLock<R>(_ body: (inout T) -> R) -> R { lock.withLock { _ in body(&value) } }
    var get: T { withLock { $0 } }
}

/// Parses a byte stream from the server into messages.
func messages(_ bytes: [UInt8]) throws -> [XenStoreMessage] {
    var f = XenStoreFramer()
    return try f.feed(bytes).compactMap { frame in
        if case .message(let m) = frame { return m }
        return nil
    }
}

@Suite("XenStore server")
struct ServerTests {
    @Test("toolstack calls act as dom0; errors are typed")
    func toolstack() throws {
        let s = XenStoreServer()
        try s.write("/local/domain/1/name", "guest")
        #expect(try s.read("/local/domain/1/name") == "guest")
        try s.mkdir("/local/domain/1/device")
        #expect(try s.directory("/local/domain/1") == ["name", "device"])
        try s.setPermissions("/local/domain/1", XenStorePermissions(owner: DomainID(rawValue: 1)))
        #expect(try s.permissions("/local/domain/1").strings == ["n1"])
        try s.remove("/local/domain/1/device")
        #expect(throws: XenStoreError.enoent) { try s.read("/local/domain/1/device") }
        #expect(throws: XenStoreError.einval) { try s.read("/bad//path") }
        #expect(s.withCore { $0.invariantViolations() }.isEmpty)
    }

    @Test("toolstack watches: initial event, ordered delivery outside the lock, unwatch")
    func toolstackWatch() throws {
        let s = XenStoreServer()
        let seen = Box<[String]>([])
        let id = try s.watch("/backend", token: "be") { path, token in
            // Runs outside the server lock: calling back in must not deadlock.
            let value = (try? s.read(path)) ?? "-"
            seen.withLock { $0.append("\(path) \(token) \(value)") }
        }
        try s.write("/backend/vbd/1", "a")
        try s.write("/backend/vbd/2", "b")
        #expect(seen.get == ["/backend be -", "/backend/vbd/1 be a", "/backend/vbd/2 be b"])
        s.unwatch(id)
        try s.write("/backend/vbd/3", "c")
        #expect(seen.get.count == 3)
        #expect(throws: XenStoreError.einval) { _ = try s.watch("bad//", token: "t") { _, _ in } }
    }

    @Test("@introduceDomain / @releaseDomain reach toolstack watches")
    func specialEvents() throws {
        let s = XenStoreServer()
        let seen = Box<[String]>([])
        _ = try s.watch("@introduceDomain", token: "i") { p, t in seen.withLock { $0.append("\(p) \(t)") } }
        _ = try s.watch("@releaseDomain", token: "r") { p, t in seen.withLock { $0.append("\(p) \(t)") } }
        s.introduceDomain(DomainID(rawValue: 3))
        #expect(s.isIntroduced(DomainID(rawValue: 3)))
        s.releaseDomain(DomainID(rawValue: 3))
        s.releaseDomain(DomainID(rawValue: 3))  // not introduced any more: no event
        #expect(seen.get == ["@introduceDomain i", "@releaseDomain r", "@introduceDomain i", "@releaseDomain r"])
    }

    @Test("wire clients: replies in order, split input, ENOSYS for unknown types, close on oversize")
    func wire() throws {
        let s = XenStoreServer()
        let out = Box<[UInt8]>([])
        let c = s.connect(domain: DomainID(rawValue: 0), privileged: true) { b in out.withLock { $0 += b } }
        let w = XenStoreMessage(type: .write, requestID: 1, payload: XenStoreWire.nulTerminated(["/x"]) + Array("1".utf8))
        let r = XenStoreMessage(type: .read, requestID: 2, strings: ["/x"])
        var unknown = XenStoreMessage(type: .read, requestID: 3, transactionID: 0, strings: ["/x"]).bytes
        unknown[0] = 200
        let stream = w.bytes + r.bytes + unknown
        #expect(s.receive(Array(stream.prefix(5)), from: c) == .ok)
        #expect(s.receive(Array(stream.dropFirst(5)), from: c) == .ok)
        let replies = try messages(out.get)
        #expect(replies.map(\.requestID) == [1, 2, 3])
        #expect(replies[1].payload == Array("1".utf8))
        #expect(replies[2].type == .error && XenStoreWire.strings(replies[2].payload) == ["ENOSYS"])
        var big = XenStoreMessage(type: .read, requestID: 4).bytes
        big[13] = 0x20  // len 8192
        guard case .close = s.receive(big, from: c) else { Issue.record("oversize not closed"); return }
        s.disconnect(c)
        #expect(s.receive([0], from: c) != .ok)
    }

    @Test("wire requests are counted per domain, by type, and error replies by errno; toolstack calls are not; forgotten on request")
    func requestCounts() throws {
        let s = XenStoreServer()
        // Domain 3's home, its own (its children take its permissions).
        try s.mkdir("/local/domain/3")
        try s.setPermissions("/local/domain/3", XenStorePermissions(owner: DomainID(rawValue: 3), defaultAccess: .none, entries: []))
        try s.write("/local/domain/3/name", "web")
        let guest = s.connect(domain: DomainID(rawValue: 3), privileged: false) { _ in }
        let dom0 = s.connect(domain: DomainID(rawValue: 0), privileged: true) { _ in }
        #expect(s.receive(XenStoreMessage(type: .read, requestID: 1, strings: ["/local/domain/3/name"]).bytes, from: guest) == .ok)
        #expect(s.receive(XenStoreMessage(type: .read, requestID: 2, strings: ["/local/domain/3/none"]).bytes, from: guest) == .ok)
        // Another domain's node: dom0's, not readable by domain 3.
        #expect(s.receive(XenStoreMessage(type: .write, requestID: 3, strings: ["/local/domain/0/x", "1"]).bytes, from: guest) == .ok)
        // A type xs_wire.h does not define (type 999, no payload).
        var unknown = XenStoreMessage(type: .read, requestID: 4, strings: []).bytes
        unknown.replaceSubrange(0..<4, with: [0xe7, 0x03, 0, 0])
        #expect(s.receive(unknown, from: guest) == .ok)
        #expect(s.receive(XenStoreMessage(type: .directory, requestID: 5, strings: ["/local"]).bytes, from: dom0) == .ok)
        _ = try s.read("/local/domain/3/name")
        let counts = s.requestCounts()
        let web = try #require(counts[DomainID(rawValue: 3)])
        #expect(web.requests == [.known(.read): 2, .known(.write): 1, .unknown: 1], "\(web)")
        #expect(web.errors == [.enoent: 1, .eacces: 1, .enosys: 1], "\(web)")
        #expect(counts[DomainID(rawValue: 0)]?.requests == [.known(.directory): 1])
        #expect(XenStoreRequestType.known(.transactionStart).label == "transaction_start")
        #expect(counts.count == 2, "the toolstack's own calls are not wire requests")
        s.forgetRequestCounts(of: DomainID(rawValue: 3))
        #expect(s.requestCounts()[DomainID(rawValue: 3)] == nil)
    }

    @Test("flow control: unacknowledged output stops input and drops events, never replies")
    func flowControl() throws {
        var q = XenStoreQuota.default
        q.pendingOutputBytes = 200
        let s = XenStoreServer(quota: q)
        let out = Box<[UInt8]>([])
        let wakes = Box(0)
        let c = s.connect(domain: DomainID(rawValue: 0), privileged: true, output: { b in out.withLock { $0 += b } },
                          wake: { wakes.withLock { $0 += 1 } })
        #expect(s.receive(XenStoreMessage(type: .watch, requestID: 1, strings: ["/e", "t"]).bytes, from: c) == .ok)
        for i in 0..<20 { try s.write("/e/\(i)", "x") }
        #expect(s.droppedEventCount > 0)
        #expect(!s.acceptsInput(c))
        #expect(wakes.get > 0)
        let before = out.get.count
        #expect(s.receive(XenStoreMessage(type: .read, requestID: 2, strings: ["/e/1"]).bytes, from: c) == .ok)
        #expect(out.get.count > before)  // the reply still went out
        s.outputSent(out.get.count, for: c)
        #expect(s.acceptsInput(c))
        #expect(try messages(out.get).count > 2)
    }

    @Test("bounded fuzz: random and mutated frames never crash, replies stay well-formed, invariants hold")
    func fuzz() throws {
        let iterations = 20_000
        var rng = SplitMix64(seed: 0x5eed_0f_3e57)
        let s = XenStoreServer()
        try s.mkdir("/local/domain/1")
        try s.setPermissions("/local/domain/1", XenStorePermissions(owner: DomainID(rawValue: 1)))
        let out = Box<[UInt8]>([])
        var clients: [(XenStoreConnectionID, Bool)] = []
        func connectClient(_ privileged: Bool) -> XenStoreConnectionID {
            s.connect(domain: DomainID(rawValue: privileged ? 0 : 1), privileged: privileged) { b in
                out.withLock { $0 += b }
            }
        }
        clients = [(connectClient(false), false), (connectClient(true), true)]
        let names = ["a", "b", "device", "vif", "0", "state", "@releaseDomain", "@introduceDomain", "/", "/local/domain/1",
                     "/local/domain/1/x", "x/y/z", "", "//", "a/", "/local", "0123456789"]
        func randomPath() -> String {
            var p = rng.next() % 3 == 0 ? "/local/domain/1" : ""
            for _ in 0..<Int(rng.next() % 4) { p += (p.isEmpty ? "" : "/") + names[Int(rng.next() % UInt64(names.count))] }
            return p.isEmpty ? names[Int(rng.next() % UInt64(names.count))] : p
        }
        var openTransactions: [UInt32] = [0]
        var frames = 0
        var closes = 0
        for _ in 0..<iterations {
            let type = XenStoreMessageType.allCases[Int(rng.next() % UInt64(XenStoreMessageType.allCases.count))]
            var payload: [UInt8]
            switch rng.next() % 4 {
            case 0: payload = XenStoreWire.nulTerminated([randomPath()])
            case 1: payload = XenStoreWire.nulTerminated([randomPath(), ["T", "F", "0", "tok", "r1", "b0", "n1"][Int(rng.next() % 7)]])
            case 2: payload = XenStoreWire.nulTerminated([randomPath()]) + (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            default: payload = (0..<Int(rng.next() % 32)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            let tx = openTransactions[Int(rng.next() % UInt64(openTransactions.count))]
            var bytes = XenStoreMessage(type: type, requestID: UInt32(truncatingIfNeeded: rng.next()),
                                        transactionID: rng.next() % 8 == 0 ? UInt32(truncatingIfNeeded: rng.next()) : tx,
                                        payload: payload).bytes
            // Mutations that keep the frame length valid.
            if rng.next() % 5 == 0 { bytes[Int(rng.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1) }
            bytes[12] = UInt8(truncatingIfNeeded: payload.count); bytes[13] = UInt8(truncatingIfNeeded: payload.count >> 8)
            bytes[14] = 0; bytes[15] = 0
            if rng.next() % 7 == 0 { bytes[0] = UInt8(truncatingIfNeeded: rng.next()) }
            let which = Int(rng.next() % UInt64(clients.count))
            let (client, _) = clients[which]
            let before = out.withLock { b -> Int in let n = b.count; return n }
            // Random chunking.
            var rest = bytes[...]
            while !rest.isEmpty {
                let n = min(rest.count, 1 + Int(rng.next() % 40))
                #expect(s.receive(Array(rest.prefix(n)), from: client) == .ok)
                rest = rest.dropFirst(n)
            }
            frames += 1
            let produced = try messages(Array(out.get[before...]))
            // Exactly one reply to the requester (events may follow), all well-formed.
            let replies = produced.filter { $0.type != .watchEvent }
            #expect(replies.count == 1)
            for m in produced {
                #expect(m.payload.count <= XenStoreLimits.payloadMax)
                if m.type == .error {
                    #expect(XenStoreError(wireName: XenStoreWire.strings(m.payload).first ?? "") != nil)
                }
                if m.type == .transactionStart, let id = UInt32(XenStoreWire.strings(m.payload).first ?? "") {
                    openTransactions.append(id)
                }
            }
            // Now and then an oversized frame: the connection must be closed, then reconnected.
            if rng.next() % 500 == 0 {
                var big = XenStoreMessage(type: .read).bytes
                big[13] = 0xff
                if case .close = s.receive(big, from: client) { closes += 1 } else { Issue.record("not closed") }
                s.disconnect(client)
                clients[which] = (connectClient(clients[which].1), clients[which].1)
            }
        }
        #expect(frames == iterations)
        #expect(closes > 0)
        #expect(s.withCore { $0.invariantViolations() } == [])
        #expect(s.withCore { $0.invariantViolations().isEmpty && $0.nodeCount > 1 })
    }
}

/// A small deterministic generator (SplitMix64) so the fuzz test is reproducible.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
