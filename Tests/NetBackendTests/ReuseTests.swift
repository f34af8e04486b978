import BlockFrontend
import GuestMemory
import HostIO
import NetBackend
import NetFrontend
import Testing
import XenABI
import XenRing

/// The TX and RX paths keep their per-packet arrays (slots, segments,
/// grants, gather lists, ring slot copies) from one packet to the next:
/// nothing of an earlier packet may show in a later one, and a hostile
/// slot after good ones still gets its Xen error.
@Suite("net backend reused buffers")
struct ReuseTests {
    @Test("a GSO packet of five slots, then a one-slot packet: the second goes alone, as itself, without the first's offload")
    func txAfterLargerPacket() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let big = Frames.ipv4(Frames.payload(16000))  // 16054 bytes: four data slots and the extra
        try vif.q.send(big, gso: .gso(size: 1448, type: NetifExtraInfo.gsoTCPv4), checksumBlank: true)
        #expect(try vif.q.waitForTxResponses(5).map(\.status) == [.okay, .null, .okay, .okay, .okay])
        let small = Frames.ipv4(Frames.payload(60, seed: 9), tcp: false)
        try vif.q.send(small)
        #expect(try vif.q.waitForTxResponses(1).map(\.status) == [.okay])
        let sent = vif.link.sent
        #expect(sent.count == 2)
        #expect(sent.last?.bytes == small)
        #expect(sent.last?.parts == 1)
        #expect(sent.last?.offload == NetworkOffload.none)
        // Then a bad grant after good packets: still ERROR, nothing sent,
        // and a good packet after it goes out whole.
        try vif.q.sendSlots([NetifTxSlot(NetifTxRequest(grant: GrantReference(rawValue: 5000), offset: 0, flags: [], id: 3, size: 100))])
        #expect(try vif.q.waitForTxResponses(1) == [NetifTxResponse(id: 3, status: .error)])
        #expect(vif.metrics.dropped(.txBadGrant) == 1)
        try vif.q.send(big)
        #expect(try vif.q.waitForTxResponses(4).allSatisfy { $0.status == .okay })
        #expect(vif.link.sent.count == 3)
        #expect(vif.link.sent.last?.bytes == big)
        #expect(vif.link.sent.last?.offload == NetworkOffload.none)
        #expect(guest.grants.holdCount == 2)
    }

    @Test("the frontend ring's kept slot array: an extra written after a request leaves none of its bytes in the slot's tail")
    func frontRingExtraAfterRequest() throws {
        let guest = try Guest()
        let q = try NetfrontQueue(guest: guest)
        let request = NetifTxRequest(grant: GrantReference(rawValue: 0xaabb_ccdd), offset: 0x1122, flags: [.moreData],
                                     id: 0x3344, size: 0x5566)
        let extra = NetifExtraInfo.gso(size: 1448, type: NetifExtraInfo.gsoTCPv4)
        #expect(try q.tx.enqueue(NetifTxSlot(request)))
        #expect(try q.tx.enqueue(NetifTxSlot(extra)))
        func slot(_ i: UInt32) throws -> [UInt8] {
            try guest.memory.read(at: GuestPhysicalAddress(q.tx.base.rawValue + UInt64(q.tx.geometry.slotOffset(RingIndex(i)))),
                                  count: NetifTxRequest.size)
        }
        #expect(try slot(0) == request.ringBytes)
        #expect(try slot(1) == extra.ringBytes + [UInt8](repeating: 0, count: NetifTxRequest.size - extra.ringBytes.count))
    }

    @Test("two GSO extras of the same type on one packet: fatal, as netback's xenvif_get_extras")
    func repeatedExtraType() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let device = try #require(vif.backend.runtimeDevice)
        try vif.q.sendSlots([NetifTxSlot(NetifTxRequest(grant: vif.q.txRef, offset: 0, flags: .extraInfo, id: 1, size: 100)),
                             NetifTxSlot(NetifExtraInfo.gso(size: 1448, type: NetifExtraInfo.gsoTCPv4, more: true)),
                             NetifTxSlot(NetifExtraInfo.gso(size: 1448, type: NetifExtraInfo.gsoTCPv4))])
        #expect(device.sync(timeout: .seconds(30)))
        #expect(device.fault?.kind == .hostileGuest)
        #expect(try guest.store.read(vif.address.errorPath).contains("invalid extra type"))
    }

    @Test("a three-buffer frame, then a small one: each arrives as itself, in its own buffers")
    func rxAfterLargerFrame() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let big = Frames.ipv4(Frames.payload(9000))
        let small = Frames.ipv4(Frames.payload(10, seed: 5))
        vif.link.inject(NetworkFrame(bytes: big))
        vif.link.inject(NetworkFrame(bytes: small))
        let frames = try vif.q.waitForFrames(2)
        #expect(frames.map(\.bytes) == [big, small])
        #expect(frames.map(\.slots) == [3, 1])
        #expect(frames.allSatisfy { !$0.failed })
        #expect(guest.grants.holdCount == 2)
    }

    @Test("a frame whose second buffer has a bad grant: that response alone is an error, the others hold their bytes")
    func rxBadGrantAmongGood() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, post: false)
        let pages = (0..<3).map { _ in guest.allocatePages() }
        let refs = [try guest.grant(pages[0]), GrantReference(rawValue: 4000), try guest.grant(pages[2])]
        for (id, ref) in refs.enumerated() { _ = try vif.q.rx.enqueue(NetifRxRequest(id: UInt16(id), grant: ref)) }
        _ = try vif.q.rx.pushRequests()
        let frame = Frames.ipv4(Frames.payload(9000))
        vif.link.inject(NetworkFrame(bytes: frame))
        try vif.sync()
        let responses = try vif.q.rx.takeResponses().map(\.response)
        #expect(responses.map(\.id) == [0, 1, 2])
        #expect(responses.map(\.status) == [4096, NetifStatus.error.rawValue, Int16(frame.count - 8192)])
        #expect(try guest.memory.read(at: guest.address(pages[0]), count: 4096) == Array(frame[0..<4096]))
        #expect(try guest.memory.read(at: guest.address(pages[2]), count: frame.count - 8192) == Array(frame[8192...]))
        #expect(vif.metrics.dropped(.rxBadGrant) == 1)
        #expect(vif.metrics.rxPackets.load(ordering: .relaxed) == 0)
        #expect(guest.grants.holdCount == 2)
    }
}
