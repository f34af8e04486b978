import BlockFrontend
import HostIO
import NetBackend
import NetFrontend
import Testing
import TestSupport
import XenABI
import XenRing

@Suite("net backend TX")
struct TxTests {
    @Test("a single-slot packet goes to the link straight from the granted page, answered OKAY")
    func singleSlot() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let packet = Frames.ipv4(Frames.payload(500))
        try vif.q.send(packet)
        let rsp = try vif.q.waitForTxResponses(1)
        #expect(rsp.map(\.status) == [.okay])
        #expect(rsp[0].id == 0)
        #expect(vif.link.sent.count == 1)
        #expect(vif.link.sent[0].bytes == packet)
        #expect(vif.link.sent[0].parts == 1)
        #expect(vif.link.sent[0].offload == .none)
        #expect(vif.metrics.txPackets.load(ordering: .relaxed) == 1)
        #expect(vif.metrics.txBytes.load(ordering: .relaxed) == UInt64(packet.count))
        // Data pages are released once answered: only the two ring pages stay held.
        #expect(guest.grants.holdCount == 2)
    }

    @Test("a multi-slot packet (more_data chain) is gathered in order, one response per slot")
    func multiSlot() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let packet = Frames.ipv4(Frames.payload(9000))
        try vif.q.send(packet)
        let rsp = try vif.q.waitForTxResponses(3)
        #expect(rsp.count == 3 && rsp.allSatisfy { $0.status == .okay })
        #expect(rsp.map(\.id) == [0, 1, 2])
        #expect(vif.link.sent.map(\.bytes) == [packet])
        #expect(vif.link.sent[0].parts == 3)
        // Small pieces at an offset: 17 slots.
        let small = Frames.ipv4(Frames.payload(1000))
        let slots = try vif.q.packetSlots(small, slotBytes: 64, offset: 100)
        #expect(slots.count == 17)
        try vif.q.sendSlots(slots)
        #expect(try vif.q.waitForTxResponses(17).allSatisfy { $0.status == .okay })
        #expect(vif.link.sent.last?.bytes == small)
    }

    @Test("a GSO extra: the link gets the segmentation; the extra slot is answered NETIF_RSP_NULL")
    func gsoExtra() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let packet = Frames.ipv4(Frames.payload(20000))
        try vif.q.send(packet, gso: .gso(size: 1448, type: NetifExtraInfo.gsoTCPv4), checksumBlank: true)
        let rsp = try vif.q.waitForTxResponses(6)
        // First data slot, the extra, then four more data slots.
        #expect(rsp.map(\.status) == [.okay, .null, .okay, .okay, .okay, .okay])
        let sent = try #require(vif.link.sent.first)
        #expect(sent.bytes == packet)
        #expect(sent.offload.segmentation == .tcpv4(segmentSize: 1448))
        #expect(sent.offload.partialChecksum == NetworkOffload.PartialChecksum(start: 34, offset: 16))
        #expect(vif.metrics.txGSOPackets.load(ordering: .relaxed) == 1)
        // TCPv6.
        let v6 = Frames.ipv6(Frames.payload(5000), tcp: true)
        try vif.q.send(v6, gso: .gso(size: 1428, type: NetifExtraInfo.gsoTCPv6), checksumBlank: true)
        #expect(try vif.q.waitForTxResponses(3).map(\.status) == [.okay, .null, .okay])
        #expect(vif.link.sent.last?.offload.segmentation == .tcpv6(segmentSize: 1428))
        #expect(vif.link.sent.last?.offload.partialChecksum == NetworkOffload.PartialChecksum(start: 54, offset: 16))
    }

    @Test("a GSO packet for a link without segmentation: the backend sends MSS-sized frames with complete checksums")
    func gsoSegmentedInBackend() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, link: MockLink(capabilities: []))
        let payload = Frames.payload(20000)
        try vif.q.send(Frames.ipv4(payload), gso: .gso(size: 1448, type: NetifExtraInfo.gsoTCPv4), checksumBlank: true)
        #expect(try vif.q.waitForTxResponses(6).map(\.status) == [.okay, .null, .okay, .okay, .okay, .okay])
        let sent = vif.link.sent
        #expect(sent.count == 14)
        #expect(sent.allSatisfy { $0.offload == .none && $0.bytes.count <= 14 + 40 + 1448 && Frames.l4ChecksumIsValid($0.bytes) })
        #expect(sent.flatMap { $0.bytes[54...] } == payload)
        #expect(vif.metrics.txSegmentedPackets.load(ordering: .relaxed) == 1)
        #expect(vif.metrics.txPackets.load(ordering: .relaxed) == 1)
    }

    @Test("a GSO extra of an unknown GSO type or size 0: the packet's slots are answered ERROR, the extra NULL")
    func badGSO() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        try vif.q.send(Frames.ipv4(Frames.payload(100)), gso: .gso(size: 0, type: NetifExtraInfo.gsoTCPv4))
        #expect(try vif.q.waitForTxResponses(2).map(\.status) == [.error, .null])
        try vif.q.send(Frames.ipv4(Frames.payload(100)), gso: .gso(size: 1000, type: 9))
        #expect(try vif.q.waitForTxResponses(2).map(\.status) == [.error, .null])
        #expect(vif.metrics.dropped(.txBadGSO) == 2)
        #expect(vif.link.sent.isEmpty)
    }

    @Test("csum_blank with a link that lacks partialChecksum: the backend completes a correct checksum (IPv4 TCP, IPv6 UDP, multi-slot)")
    func checksumCompleted() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, link: MockLink(capabilities: []))
        var packet = Frames.ipv4(Frames.payload(1001))
        // Whatever the guest left in the field (Linux leaves the pseudo-header sum) is replaced.
        packet[50] = 0x12
        packet[51] = 0x34
        try vif.q.send(packet, checksumBlank: true, slotBytes: 300)
        #expect(try vif.q.waitForTxResponses(4).allSatisfy { $0.status == .okay })
        let v4 = try #require(vif.link.sent.first)
        #expect(v4.parts == 1, "sent from the backend's contiguous copy")
        #expect(v4.offload.partialChecksum == nil)
        #expect(Frames.l4ChecksumIsValid(v4.bytes))
        #expect(Array(v4.bytes[..<50]) == Array(packet[..<50]) && Array(v4.bytes[52...]) == Array(packet[52...]))

        let udp = Frames.ipv6(Frames.payload(333))
        try vif.q.send(udp, checksumBlank: true)
        #expect(try vif.q.waitForTxResponses(1).map(\.status) == [.okay])
        let v6 = try #require(vif.link.sent.last)
        #expect(Frames.l4ChecksumIsValid(v6.bytes))
        #expect(vif.metrics.txChecksumsCompleted.load(ordering: .relaxed) == 2)
    }

    @Test("csum_blank on a frame whose headers are not IP/TCP/UDP is answered ERROR")
    func checksumBadHeaders() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, link: MockLink(capabilities: []))
        var arp = Frames.mac + [0x08, 0x06]
        arp += [UInt8](repeating: 1, count: 28)
        try vif.q.send(arp, checksumBlank: true)
        #expect(try vif.q.waitForTxResponses(1).map(\.status) == [.error])
        #expect(vif.metrics.dropped(.txBadChecksumHeaders) == 1)
    }

    @Test("carrier down: TX is dropped (counted as linkDown) but answered OKAY; carrier up: sent again")
    func carrierDown() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        vif.link.setCarrier(false)
        try vif.q.send(Frames.ipv4(Frames.payload(10)))
        #expect(try vif.q.waitForTxResponses(1).map(\.status) == [.okay])
        #expect(vif.link.sent.isEmpty)
        #expect(vif.metrics.dropped(.txLinkDown) == 1)
        vif.link.setCarrier(true)
        try vif.q.send(Frames.ipv4(Frames.payload(10)))
        #expect(try vif.q.waitForTxResponses(1).map(\.status) == [.okay])
        #expect(vif.link.sent.count == 1)
    }

    @Test("many packets: the indices wrap the ring; each response comes once, the backend asks for the next request")
    func wrap() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let entries = Int(vif.q.tx.geometry.entries)
        var sent: [[UInt8]] = []
        for i in 0..<(entries + 40) {
            let p = Frames.ipv4(Frames.payload(5000 + i % 300, seed: UInt8(i % 251)))
            try vif.q.send(p)
            sent.append(p)
            #expect(try vif.q.waitForTxResponses(2).allSatisfy { $0.status == .okay })
        }
        #expect(vif.link.sent.map(\.bytes) == sent)
        #expect(vif.q.tx.requestProducerPrivate.rawValue == UInt32(2 * sent.count))
        // Idle: req_event = req_cons + 1 (RING_FINAL_CHECK_FOR_REQUESTS).
        #expect(try vif.q.tx.raw(.requestEvent) == RingIndex(UInt32(2 * sent.count + 1)))
        #expect(vif.metrics.txPackets.load(ordering: .relaxed) == UInt64(sent.count))
    }

    @Test("a burst larger than a pump's batch: every packet sent in order, every slot answered once")
    func burst() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        var slots: [NetifTxSlot] = []
        var packets: [[UInt8]] = []
        for i in 0..<200 {
            let p = Frames.ipv4(Frames.payload(60 + i))
            packets.append(p)
            // Each packet's slots are filled where they will go on the ring.
            let s = try vif.q.packetSlots(p)
            try vif.q.sendSlots(s, kick: i == 199)
            slots += s
        }
        let rsp = try vif.q.waitForTxResponses(200)
        #expect(rsp.count == 200 && rsp.allSatisfy { $0.status == .okay })
        #expect(rsp.map(\.id) == slots.map(\.request.id))
        #expect(vif.link.sent.map(\.bytes) == packets)
    }

    @Test("notify hold-off: no event while the frontend's rsp_event is ahead, one when a response reaches it")
    func holdOff() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        try vif.q.tx.setRaw(.responseEvent, RingIndex(3))
        guest.notifications.clearPending(vif.q.txPort)
        for n in 1...3 {
            try vif.q.send(Frames.ipv4(Frames.payload(n)))
            try vif.sync()
            let pending = guest.notifications.clearPending(vif.q.txPort)
            #expect(pending == (n == 3), "after response \(n)")
        }
        #expect(try vif.q.txResponses().count == 3)
    }
}
