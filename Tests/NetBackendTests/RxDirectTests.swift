import BlockFrontend
import GuestMemory
import HostIO
import NetBackend
import NetFrontend
import Synchronization
import Testing
import TestSupport
import XenABI
import XenRing

// RX from a link the backend reads itself (`DirectReceiveNetworkLink`, a
// TAP's kind): queue 0's pump reads each frame straight into the posted
// buffers, copied requests and all, and falls back to its own buffer and
// the backlog where the buffers cannot take the frame as it lands.

@Suite("net backend RX read into posted buffers")
struct RxDirectTests {
    static func vif(_ guest: Guest, link: MockDirectLink = MockDirectLink(), features: [(String, String)] = Netfront.features,
                    queues: Int = 1, post: Bool = true) throws -> Vif {
        try Vif(guest: guest, queues: queues, features: features, post: post, hostLink: link)
    }

    static func direct(_ vif: Vif) -> UInt64 { vif.metrics.rxDirectPackets.load(ordering: .relaxed) }

    @Test("frames of every size land in the posted buffers; a large one after a large one with no copy by the backend",
          arguments: [14, 60, 1514, 4096, 4097, 9000 - 1, 8192, 65550])
    func sizes(payload: Int) throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Self.vif(guest, link: link)
        // A frame of `payload` bytes (filler), with TCPv4 GSO when over a
        // page, as a TAP hands TSO frames over; twice.
        let bytes = Frames.payload(payload, seed: 3)
        let large = payload > 4096
        let offload = large ? NetworkOffload(segmentation: .tcpv4(segmentSize: 1448)) : .none
        link.inject(NetworkFrame(bytes: bytes, offload: offload), NetworkFrame(bytes: bytes, offload: offload))
        let got = try vif.q.waitForFrames(2)
        #expect(got.map(\.bytes) == [bytes, bytes])
        #expect(got.allSatisfy { !$0.failed })
        let data = (payload + 4095) / 4096
        #expect(got.allSatisfy { $0.slots == data + (large ? 1 : 0) })
        #expect(got.allSatisfy { $0.gso == (large ? NetifExtraInfo.gso(size: 1448, type: NetifExtraInfo.gsoTCPv4) : nil) })
        #expect(vif.metrics.rxBytes.load(ordering: .relaxed) == UInt64(2 * payload))
        try vif.sync()
        #expect(!link.isLent, "the pump read the link empty and handed it back")
        // The first read: one posted page and the backend's buffer for a
        // longer frame's rest (copied into the buffers then); after a large
        // frame, the largest frame's pages (17, the GSO extra's slot skipped).
        #expect(link.partsSeen.prefix(2) == (large ? [2, 17] : [2, 2]))
        #expect(Self.direct(vif) == (large ? 1 : 2))
    }

    @Test("GSO metadata and checksum flags travel with a frame read in place; several frames keep their order")
    func gsoMetadata() throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Self.vif(guest, link: link)
        let big = Frames.ipv4(Frames.payload(60000))
        let small = Frames.ipv4(Frames.payload(100))
        let v6 = Frames.ipv6(Frames.payload(3000), tcp: true)
        link.inject(NetworkFrame(bytes: big, offload: NetworkOffload(segmentation: .tcpv4(segmentSize: 1448),
                                                                      partialChecksum: .init(start: 34, offset: 16))),
                    NetworkFrame(bytes: small, offload: NetworkOffload(checksumValidated: true)),
                    NetworkFrame(bytes: v6, offload: NetworkOffload(segmentation: .tcpv6(segmentSize: 1428),
                                                                    partialChecksum: .init(start: 54, offset: 16))))
        let got = try vif.q.waitForFrames(3)
        #expect(got.map(\.bytes) == [big, small, v6])
        #expect(got[0].gso == NetifExtraInfo.gso(size: 1448, type: NetifExtraInfo.gsoTCPv4))
        #expect(got[0].flags == [.extraInfo, .moreData, .checksumBlank, .dataValidated])
        #expect(got[0].slots == 15 + 1)
        #expect(got[1].flags == [.dataValidated] && got[1].gso == nil && got[1].slots == 1)
        #expect(got[2].gso == NetifExtraInfo.gso(size: 1428, type: NetifExtraInfo.gsoTCPv6))
        #expect(got[2].flags.contains(.checksumBlank))
        // The first, read on a small guess, was finished by a copy.
        #expect(Self.direct(vif) == 2)
        #expect(vif.metrics.rxGSOPackets.load(ordering: .relaxed) == 2)
    }

    @Test("a frame of several pages without GSO, on a GSO frontend, is moved to the buffers it belongs in (the extra's slot is data)")
    func multiPageWithoutGSO() throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Self.vif(guest, link: link)
        let jumbo = Frames.ipv4(Frames.payload(8900), tcp: false)
        link.inject(NetworkFrame(bytes: jumbo))
        let got = try #require(try vif.q.waitForFrames(1).first)
        #expect(got.bytes == jumbo)
        #expect(got.slots == 3 && got.gso == nil)
        #expect(Self.direct(vif) == 0, "copied by the backend")
        #expect(vif.metrics.rxPackets.load(ordering: .relaxed) == 1)
        // The next frame goes in place again.
        link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(5))))
        #expect(try vif.q.waitForFrames(1).map(\.bytes) == [Frames.ipv4(Frames.payload(5))])
        #expect(Self.direct(vif) == 1)
    }

    @Test("an IPv6 partial checksum for a frontend without feature-ipv6-csum-offload is completed on the way")
    func checksumCompleted() throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Self.vif(guest, link: link, features: Netfront.features.filter { $0.0 != "feature-ipv6-csum-offload" })
        // UDP over IPv6: its checksum field (bytes 60 and 61) is 0 here.
        let frame = Frames.ipv6(Frames.payload(300))
        link.inject(NetworkFrame(bytes: frame, offload: NetworkOffload(partialChecksum: .init(start: 54, offset: 6))))
        let got = try #require(try vif.q.waitForFrames(1).first)
        #expect(got.flags == [.dataValidated])
        #expect(got.bytes.count == frame.count)
        #expect(got.bytes[..<60] == frame[..<60] && got.bytes[62...] == frame[62...])
        #expect(got.bytes[60..<62] != [0, 0], "the checksum was written")
        #expect(vif.metrics.rxChecksumsCompleted.load(ordering: .relaxed) == 1)
    }

    @Test("too few posted buffers: frames stay in the link (the ring-full event counted once), then come in order once buffers are posted")
    func fewBuffers() throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Self.vif(guest, link: link, post: false)
        try vif.q.postReceiveBuffers(5)
        let frames = (0..<4).map { Frames.ipv4(Frames.payload(10 + $0)) }
        link.inject(frames.map { NetworkFrame(bytes: $0) }[0])
        link.inject(frames.map { NetworkFrame(bytes: $0) }[1])
        try vif.sync()
        #expect(link.queuedCount == 2, "nothing read without room for the largest frame")
        #expect(link.isLent)
        #expect(vif.metrics.rxRingFull.load(ordering: .relaxed) == 1)
        #expect(try vif.q.receive().isEmpty)
        link.inject(NetworkFrame(bytes: frames[2]), NetworkFrame(bytes: frames[3]))
        try vif.q.postReceiveBuffers()
        let got = try vif.q.waitForFrames(4)
        #expect(got.map(\.bytes) == frames)
        try vif.sync()
        #expect(link.queuedCount == 0 && !link.isLent)
    }

    @Test("a frontend without feature-sg gets one buffer per read: a longer frame is dropped as too large, the next delivered")
    func noScatterGather() throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Self.vif(guest, link: link, features: Netfront.features.filter { $0.0 != "feature-sg" })
        link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(5000))), NetworkFrame(bytes: Frames.ipv4(Frames.payload(500))))
        let got = try vif.q.waitForFrames(1)
        #expect(got.map(\.bytes) == [Frames.ipv4(Frames.payload(500))])
        #expect(vif.metrics.dropped(.rxTooLarge) == 1)
        #expect(link.partsSeen.allSatisfy { $0 == 1 })
    }

    @Test("a posted buffer with a bad grant: the frame goes through the backend's buffer, that response an error, the next frame in place")
    func badGrant() throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Self.vif(guest, link: link, post: false)
        let holds = guest.grants.holdCount
        _ = try vif.q.rx.enqueue(NetifRxRequest(id: 0, grant: GrantReference(rawValue: 4000)))
        try vif.q.postReceiveBuffers()
        link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(1))))
        let bad = try vif.q.waitForFrames(1)
        #expect(bad.first?.failed == true)
        #expect(vif.metrics.dropped(.rxBadGrant) == 1)
        link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(2))))
        #expect(try vif.q.waitForFrames(1).map(\.bytes) == [Frames.ipv4(Frames.payload(2))])
        #expect(Self.direct(vif) == 1)
        try vif.sync()
        #expect(guest.grants.holdCount == holds, "no buffer left held")
    }

    @Test("the guest rewrites its posted requests during the read: the backend answers the requests as it copied them")
    func requestsRewrittenDuringRead() throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Self.vif(guest, link: link)
        let ring = vif.q.rxRingAddress
        let memory = guest.memory
        let entries = Int(vif.q.rx.geometry.entries)
        let frame = Frames.ipv4(Frames.payload(9000))
        let gso = NetworkOffload(segmentation: .tcpv4(segmentSize: 1448))
        // A first large frame: the next read takes every page a frame may
        // need, its requests copied before the read.
        link.inject(NetworkFrame(bytes: frame, offload: gso))
        #expect(try vif.q.waitForFrames(1).map(\.bytes) == [frame])
        // Every request slot now says id 200 + k and a grant that does not exist.
        link.duringRead.set {
            for k in 0..<entries {
                let id = UInt16(200 + k)
                let bytes: [UInt8] = [UInt8(id & 0xff), UInt8(id >> 8), 0, 0, 0xa0, 0x0f, 0, 0]
                try? memory.write(bytes, at: GuestPhysicalAddress(ring.rawValue + 64 + UInt64(k * 8)))
            }
        }
        link.inject(NetworkFrame(bytes: frame, offload: gso))
        let got = try #require(try vif.q.waitForFrames(1).first)
        // The frontend finds each buffer by the response's id: the ids are
        // the ones posted, not the rewritten ones.
        #expect(got.bytes == frame)
        #expect(!got.failed)
        #expect(Self.direct(vif) == 1)
    }

    @Test("with several queues the link is read into the backend's buffer and each frame steered by its flow")
    func multiQueue() throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Self.vif(guest, link: link, queues: 2)
        let frames = (0..<8).map { Frames.ipv4(Frames.payload(20), sourcePort: UInt16(1000 + $0)) }
        for f in frames { link.inject(NetworkFrame(bytes: f)) }
        var got: [[UInt8]] = []
        try vif.sync()
        for q in vif.queues { got += try q.receive().map(\.bytes) }
        // Whatever was not there yet at the sync (a pump scheduled by another).
        while got.count < frames.count {
            try vif.sync()
            var more = 0
            for q in vif.queues {
                let r = try q.receive()
                more += r.count
                got += r.map(\.bytes)
            }
            if more == 0 { break }
        }
        #expect(Set(got) == Set(frames))
        #expect(got.count == frames.count)
        #expect(vif.backend.metrics.reduce(0) { $0 + $1.rxDirectPackets.load(ordering: .relaxed) } == 0)
        #expect(vif.backend.metrics.filter { $0.rxPackets.load(ordering: .relaxed) > 0 }.count == 2, "both queues got frames")
    }

    @Test("frames while no frontend is connected are read by the link and dropped; a frontend connecting later gets the next")
    func notConnected() throws {
        let guest = try Guest()
        let link = MockDirectLink()
        let vif = try Vif(guest: guest, connect: false, hostLink: link)
        link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(1))))
        #expect(vif.backend.droppedWhileDisconnected == 1)
        #expect(!link.isLent)
        try Netfront.connect(vif.queues, device: vif.address, features: Netfront.features, state: .connected)
        try vif.q.postReceiveBuffers()
        link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(2))))
        #expect(try vif.q.waitForFrames(1).map(\.bytes) == [Frames.ipv4(Frames.payload(2))])
    }
}
