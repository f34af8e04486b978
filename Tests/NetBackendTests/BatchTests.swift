import Locking
import BlockFrontend
import HostIO
import NetBackend
import NetFrontend
import Synchronization
import Testing
import XenABI
import XenRing

// The pumps' batching: many packets (frames) per pass, responses published
// every few slots, one event for the guest per pass, and none when the
// guest did not ask for one (rsp_event).

@Suite("net backend batching")
struct BatchTests {
    /// Events the backend sent the guest so far (both rings).
    static func notifications(_ vif: Vif) -> UInt64 {
        vif.backend.runtimeDevice?.metrics.notificationsToGuest.load(ordering: .relaxed) ?? 0
    }

    @Test("many TX packets published at once: one response per slot, in slot order, ids echoed, one event")
    func txBatchOrder() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let q = vif.q
        // 3 + 2 + 1 + an invalid one + 3 (with a GSO extra) slots, twice:
        // more than NetQueueCore.publishEvery, fewer than a pump's batch.
        let big = try q.stage(Frames.ipv4(Frames.payload(9000)))
        let two = try q.stage(Frames.ipv4(Frames.payload(5000)))
        let one = try q.stage(Frames.ipv4(Frames.payload(100)))
        let gso = try q.stage(Frames.ipv4(Frames.payload(6000)), gso: .gso(size: 1448, type: NetifExtraInfo.gsoTCPv4),
                              checksumBlank: true)
        var expected: [NetifStatus] = []
        let before = Self.notifications(vif)
        for _ in 0..<2 {
            #expect(try q.enqueue(big))
            #expect(try q.enqueue(two))
            #expect(try q.enqueue(one))
            // A first slot of 10 bytes, shorter than an Ethernet header: NETIF_RSP_ERROR.
            let bad = NetifTxRequest(grant: one.pieces[0].grant, offset: 0, flags: [], id: 0, size: 10)
            #expect(try q.tx.enqueue(NetifTxSlot(bad)))
            #expect(try q.enqueue(gso))
            expected += [.okay, .okay, .okay] + [.okay, .okay] + [.okay] + [.error] + [.okay, .null, .okay]
        }
        try q.pushTx()
        // Not taken (nor rsp_event moved) until the pump is done: events
        // only for the publishes that cross the fresh ring's rsp_event (1).
        try vif.sync()
        let rsp = try q.txResponses()
        #expect(rsp.map(\.status) == expected)
        // Each data slot's response carries its request's id (the slot
        // index enqueue gave it; the hand-made bad one has id 0); the
        // extras' ids are not read by netfront.
        let ids = rsp.enumerated().filter { $0.element.status != .null }.map(\.element.id)
        let slotIDs = (0..<expected.count).filter { expected[$0] != .null }.map { expected[$0] == .error ? UInt16(0) : UInt16($0) }
        #expect(ids == slotIDs)
        #expect(vif.link.sent.count == 8)
        #expect(vif.metrics.dropped(.txBadSize) == 2)
        #expect(Self.notifications(vif) - before == 1)
        #expect(guest.grants.holdCount == 2)
    }

    @Test("more TX packets than one pump's batch: all answered in order, the pump yields and comes back")
    func txBeyondBatch() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let q = vif.q
        let packet = try q.stage(Frames.ipv4(Frames.payload(60)))
        var queued = 0
        while try q.enqueue(packet) { queued += 1 }
        #expect(queued == Int(q.tx.geometry.entries))
        try q.pushTx()
        let rsp = try q.waitForTxResponses(queued)
        #expect(rsp.count == queued)
        #expect(rsp.map(\.id) == (0..<queued).map { UInt16($0) })
        #expect(rsp.allSatisfy { $0.status == .okay })
        #expect(vif.link.sent.count == queued)
    }

    @Test("TX: no event when the frontend did not ask for one (rsp_event behind), one when it did")
    func txNotifySuppressed() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let q = vif.q
        let packet = try q.stage(Frames.ipv4(Frames.payload(60)))
        // A fresh ring asks for an event on the first response (rsp_event 1).
        let before = Self.notifications(vif)
        for _ in 0..<20 { #expect(try q.enqueue(packet)) }
        try q.pushTx()
        try vif.sync()
        #expect(Self.notifications(vif) == before + 1)
        // Take responses without re-arming (no RING_FINAL_CHECK_FOR_RESPONSES):
        // rsp_event stays behind every later publish.
        #expect(try q.txResponses().count == 20)
        for _ in 0..<20 { #expect(try q.enqueue(packet)) }
        try q.pushTx()
        try vif.sync()
        #expect(try q.txResponses().count == 20)
        #expect(Self.notifications(vif) == before + 1)
        // Armed again (rsp_event = rsp_cons + 1): the next publish notifies.
        #expect(try !q.tx.finalCheckForResponses())
        #expect(try q.enqueue(packet))
        try q.pushTx()
        #expect(try q.waitForTxResponses(1).count == 1)
        try vif.sync()
        #expect(Self.notifications(vif) == before + 2)
    }

    @Test("TX: a publish in mid-pump that crosses rsp_event notifies at once; one whose rsp_event is never crossed, never",
          arguments: [21, 100])
    func txNotifyInMidPump(eventAfter: Int) throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let q = vif.q
        let packet = try q.stage(Frames.ipv4(Frames.payload(60)))
        let before = Self.notifications(vif)
        // What the guest had heard when each packet reached the link.
        let heard = Lock<[UInt64]>([])
        vif.link.onTransmit.set { [backend = vif.backend] in
            let n = backend.runtimeDevice?.metrics.notificationsToGuest.load(ordering: .relaxed) ?? 0
            heard.withLock { $0.append(n) }
        }
        // Netfront's hold-off: an event only once `eventAfter` responses came.
        #expect(try !q.tx.finalCheckForResponses(eventAfter: UInt32(eventAfter)))
        for _ in 0..<40 { #expect(try q.enqueue(packet)) }
        try q.pushTx()
        try vif.sync()
        let seen = heard.withLock { $0 }.map { $0 - before }
        #expect(seen.count == 40)
        if eventAfter == 21 {
            // Published after 16 (behind rsp_event 21), 32 (crossing it:
            // the event goes before the 33rd packet is sent) and 40 slots.
            #expect(seen == Array(repeating: 0, count: 32) + Array(repeating: 1, count: 8))
            #expect(Self.notifications(vif) - before == 1)
        } else {
            #expect(seen.allSatisfy { $0 == 0 })
            #expect(Self.notifications(vif) == before)
        }
        #expect(try q.txResponses().count == 40)
    }

    @Test("RX frames waiting in the backlog go in one pass: in order, one response per buffer, one event")
    func rxBatchOrder() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, post: false)
        // Frames of 1, 3 and 2 pages and a GSO one, queued while no buffer
        // is posted (the pump stalls), then delivered when buffers come.
        let gsoFrame = Frames.ipv4(Frames.payload(6000))
        var frames: [NetworkFrame] = []
        for k in 0..<5 {
            frames.append(NetworkFrame(bytes: Frames.ipv4(Frames.payload(100 + k, seed: UInt8(k)))))
            frames.append(NetworkFrame(bytes: Frames.ipv4(Frames.payload(9000 + k, seed: UInt8(k)))))
            frames.append(NetworkFrame(bytes: Frames.ipv4(Frames.payload(5000 + k, seed: UInt8(k)))))
            frames.append(NetworkFrame(bytes: gsoFrame, offload: NetworkOffload(segmentation: .tcpv4(segmentSize: 1448),
                                                                                 partialChecksum: .init(start: 34, offset: 16))))
        }
        for f in frames { vif.link.inject(f) }
        try vif.sync()
        #expect(vif.metrics.rxPackets.load(ordering: .relaxed) == 0)
        let before = Self.notifications(vif)
        try vif.q.postReceiveBuffers()
        // Taken once the pump is done, rsp_event (1) left as it was: one
        // event, at the first publish that crossed it.
        try vif.sync()
        let got = try vif.q.receive()
        #expect(got.map(\.bytes) == frames.map(\.bytes))
        // 1, 3, 2 data buffers; the GSO frame 2 data + its extra.
        #expect(got.map(\.slots) == Array(repeating: [1, 3, 2, 3], count: 5).flatMap { $0 })
        #expect(got.allSatisfy { !$0.failed })
        #expect(got.filter { $0.gso != nil }.count == 5)
        #expect(Self.notifications(vif) - before == 1)
        #expect(vif.metrics.rxPackets.load(ordering: .relaxed) == UInt64(frames.count))
    }

    @Test("RX: frames beyond the posted buffers wait, in order, and go when buffers are posted")
    func rxStallKeepsOrder() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, post: false)
        // 3-page frames: 40 need 120 buffers; 32 are posted at first.
        let frames = (0..<40).map { NetworkFrame(bytes: Frames.ipv4(Frames.payload(9000, seed: UInt8($0)))) }
        for f in frames { vif.link.inject(f) }
        try vif.sync()
        #expect(vif.metrics.rxRingFull.load(ordering: .relaxed) == 1)  // counted once per stall
        try vif.q.postReceiveBuffers(32)
        var got = try vif.q.waitForFrames(10)
        while got.count < frames.count {
            try vif.q.postReceiveBuffers()
            got += try vif.q.waitForFrames(1)
        }
        #expect(got.map(\.bytes) == frames.map(\.bytes))
    }
}
