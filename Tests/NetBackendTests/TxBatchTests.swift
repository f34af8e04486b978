import BlockFrontend
import GuestMemory
import HostIO
import Locking
import NetBackend
import NetFrontend
import Testing
import XenABI
import XenRing

// TX packets gathered into batches for a link that takes several frames in
// one call (`BatchTransmitNetworkLink`, a TAP's io_uring): the frames go
// in ring order, every page of the batch held while the link reads it and
// released before the responses; a refused frame, a bad grant or a bad
// packet costs only its own packet.

@Suite("net backend TX batches")
struct TxBatchTests {
    /// One-slot packets, each a different frame, queued and published at once.
    static func queueSmall(_ q: NetfrontQueue, count: Int) throws -> [[UInt8]] {
        var frames: [[UInt8]] = []
        for k in 0..<count {
            let frame = Frames.ipv4(Frames.payload(60, seed: UInt8(k + 1)), tcp: false, sourcePort: UInt16(1000 + k))
            #expect(try q.enqueue(q.stage(frame)))
            frames.append(frame)
        }
        try q.pushTx()
        return frames
    }

    @Test("20 one-slot packets: batches of several frames, sent in ring order, answered in order, pages held only while sent")
    func order() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let ringHolds = guest.grants.holdCount
        // While the link has a batch, its pages are held (the frame is not
        // the guest's again until the host took it).
        let heldDuring = Lock<[Int]>([])
        let grants = guest.grants
        vif.link.onBatch.set { _ in heldDuring.withLock { $0.append(grants.holdCount) } }
        let frames = try Self.queueSmall(vif.q, count: 20)
        let rsp = try vif.q.waitForTxResponses(20)
        #expect(rsp.map(\.status) == Array(repeating: .okay, count: 20))
        #expect(rsp.map(\.id) == (0..<20).map { UInt16($0) })
        #expect(vif.link.sent.map(\.bytes) == frames)
        let batches = vif.link.batches.withLock { $0 }
        #expect(batches.reduce(0, +) == 20)
        #expect(batches.contains { $0 > 1 })
        #expect(batches.allSatisfy { $0 <= vif.link.batchLimit })
        for (size, held) in zip(batches, heldDuring.withLock { $0 }) { #expect(held == ringHolds + size) }
        #expect(guest.grants.holdCount == ringHolds)
        #expect(vif.metrics.txPackets.load(ordering: .relaxed) == 20)
    }

    @Test("a link without batches (limit 1) gets one frame per call, the same frames and responses")
    func unbatched() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, link: MockLink(batchLimit: 1))
        let frames = try Self.queueSmall(vif.q, count: 10)
        #expect(try vif.q.waitForTxResponses(10).map(\.status) == Array(repeating: .okay, count: 10))
        #expect(vif.link.sent.map(\.bytes) == frames)
        #expect(vif.link.batches.withLock { $0 }.isEmpty)
    }

    @Test("frames the link refuses in a batch: dropped and counted, answered OKAY (the host's refusal), the rest sent")
    func partialFailure() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let ringHolds = guest.grants.holdCount
        vif.link.refuse.withLock { $0 = [2, 5] }
        let frames = try Self.queueSmall(vif.q, count: 8)
        let rsp = try vif.q.waitForTxResponses(8)
        #expect(rsp.map(\.status) == Array(repeating: .okay, count: 8))
        #expect(rsp.map(\.id) == (0..<8).map { UInt16($0) })
        #expect(vif.link.sent.map(\.bytes) == frames.enumerated().filter { ![2, 5].contains($0.offset) }.map(\.element))
        #expect(vif.metrics.dropped(.txLinkBusy) == 2)
        #expect(vif.metrics.txPackets.load(ordering: .relaxed) == 6)
        #expect(guest.grants.holdCount == ringHolds)
    }

    @Test("a bad grant in the middle slot of a three-slot packet amid good ones: only that packet is dropped (ERROR on its slots)")
    func badGrantInBatch() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let q = vif.q
        let ringHolds = guest.grants.holdCount
        let before = Frames.ipv4(Frames.payload(60, seed: 3), tcp: false)
        let after = Frames.ipv4(Frames.payload(60, seed: 4), tcp: false)
        #expect(try q.enqueue(q.stage(before)))
        // 9000 bytes in three slots; the second names a grant that does not exist.
        var bad = try q.packetSlots(Frames.ipv4(Frames.payload(9000)))
        #expect(bad.count == 3)
        let middle = bad[1].request
        bad[1] = NetifTxSlot(NetifTxRequest(grant: GrantReference(rawValue: 5000), offset: middle.offset, flags: middle.flags,
                                            id: middle.id, size: middle.size))
        for slot in bad { #expect(try q.tx.enqueue(slot)) }
        #expect(try q.enqueue(q.stage(after)))
        try q.pushTx()
        let rsp = try q.waitForTxResponses(5)
        #expect(rsp.map(\.status) == [.okay, .error, .error, .error, .okay])
        #expect(vif.link.sent.map(\.bytes) == [before, after])
        #expect(vif.metrics.dropped(.txBadGrant) == 1)
        #expect(guest.grants.holdCount == ringHolds)
    }

    @Test("the guest rewrites every TX slot while its batch is with the link: the frames and responses are the ones read")
    func slotsRewrittenAfterRead() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let q = vif.q
        let memory = guest.memory
        let ring = q.txRingAddress
        let geometry = q.tx.geometry
        let rewritten = Lock(false)
        vif.link.onBatch.set { _ in
            guard rewritten.withLock({ done in defer { done = true }; return !done }) else { return }
            // Every slot: grant 0xffffffff, offset 0xffff, all flags, id 0xffff, size 0xffff.
            let garbage = [UInt8](repeating: 0xff, count: Int(geometry.entries) * geometry.slotSize)
            try? memory.write(garbage, at: GuestPhysicalAddress(ring.rawValue + UInt64(SharedRingGeometry.entriesOffset)))
        }
        let frames = try Self.queueSmall(q, count: 12)
        let rsp = try q.waitForTxResponses(12)
        #expect(rewritten.withLock { $0 })
        #expect(rsp.map(\.status) == Array(repeating: .okay, count: 12))
        #expect(rsp.map(\.id) == (0..<12).map { UInt16($0) })
        #expect(vif.link.sent.map(\.bytes) == frames)
        #expect(vif.metrics.totalDrops == 0)
    }
}
