import BlockFrontend
import HostIO
import NetBackend
import NetFrontend
import Testing
import TestSupport
import XenABI
import XenRing

@Suite("net backend RX")
struct RxTests {
    @Test("a frame from the link is copied into a posted buffer; the response echoes the request's id")
    func singleSlot() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let frame = Frames.ipv4(Frames.payload(1400))
        vif.link.inject(NetworkFrame(bytes: frame))
        let got = try vif.q.waitForFrames(1)
        #expect(got.count == 1)
        #expect(got[0].bytes == frame)
        #expect(got[0].slots == 1 && !got[0].failed)
        #expect(got[0].flags == [])
        #expect(vif.metrics.rxPackets.load(ordering: .relaxed) == 1)
        #expect(vif.metrics.rxBytes.load(ordering: .relaxed) == UInt64(frame.count))
        // The next frames take the next buffers (ids 1, 2).
        vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(10))))
        vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(20))))
        let more = try vif.q.waitForFrames(2)
        #expect(more.map(\.bytes) == [Frames.ipv4(Frames.payload(10)), Frames.ipv4(Frames.payload(20))])
    }

    @Test("a frame larger than a page takes several buffers with NETRXF_more_data (feature-sg)")
    func multiSlot() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let frame = Frames.ipv4(Frames.payload(10000))
        vif.link.inject(NetworkFrame(bytes: frame))
        let got = try vif.q.waitForFrames(1)
        #expect(got.first?.bytes == frame)
        #expect(got.first?.slots == 3)
    }

    @Test("without feature-sg a frame larger than a page is dropped and counted; smaller ones pass")
    func noScatterGather() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, features: Netfront.features.filter { $0.0 != "feature-sg" })
        vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(5000))))
        vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(500))))
        let got = try vif.q.waitForFrames(1)
        #expect(got.map(\.bytes) == [Frames.ipv4(Frames.payload(500))])
        #expect(vif.metrics.dropped(.rxTooLarge) == 1)
        // The link heard that this frontend has no scatter-gather (passt lowers its MTU).
        #expect(vif.link.connections.withLock { $0 } == [false])
        let sg = try Vif(guest: guest, index: 1)
        #expect(sg.link.connections.withLock { $0 } == [true])
    }

    @Test("a segmentation frame carries a GSO extra (NETRXF_extra_info) and the checksum flags")
    func gsoExtra() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let frame = Frames.ipv4(Frames.payload(6000))
        let offload = NetworkOffload(segmentation: .tcpv4(segmentSize: 1448),
                                     partialChecksum: .init(start: 34, offset: 16))
        vif.link.inject(NetworkFrame(bytes: frame, offload: offload))
        let got = try #require(try vif.q.waitForFrames(1).first)
        #expect(got.bytes == frame)
        #expect(got.slots == 3, "two data buffers and the extra")
        #expect(got.flags.contains(.extraInfo) && got.flags.contains(.moreData))
        #expect(got.flags.contains(.checksumBlank) && got.flags.contains(.dataValidated))
        #expect(got.gso == NetifExtraInfo.gso(size: 1448, type: NetifExtraInfo.gsoTCPv4))
        #expect(vif.metrics.rxGSOPackets.load(ordering: .relaxed) == 1)
        // A validated frame: data_validated only.
        vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(5)), offload: NetworkOffload(checksumValidated: true)))
        let v = try #require(try vif.q.waitForFrames(1).first)
        #expect(v.flags == [.dataValidated])
    }

    @Test("a partial checksum for a frontend without the offload (IPv6 without feature-ipv6-csum-offload) is completed")
    func checksumCompletedForFrontend() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, features: Netfront.features.filter { $0.0 != "feature-ipv6-csum-offload" })
        let partial = NetworkOffload(partialChecksum: .init(start: 54, offset: 6))
        let v6 = Frames.ipv6(Frames.payload(77))
        vif.link.inject(NetworkFrame(bytes: v6, offload: partial))
        let got = try #require(try vif.q.waitForFrames(1).first)
        #expect(got.flags == [.dataValidated])
        #expect(Frames.l4ChecksumIsValid(got.bytes))
        #expect(vif.metrics.rxChecksumsCompleted.load(ordering: .relaxed) == 1)
        // IPv4 goes as it is, csum_blank.
        let v4 = Frames.ipv4(Frames.payload(77))
        vif.link.inject(NetworkFrame(bytes: v4, offload: NetworkOffload(partialChecksum: .init(start: 34, offset: 16))))
        let got4 = try #require(try vif.q.waitForFrames(1).first)
        #expect(got4.bytes == v4)
        #expect(got4.flags == [.checksumBlank, .dataValidated])
    }

    @Test("a segmentation frame for a frontend without GSO is dropped and counted")
    func gsoNotNegotiated() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, features: Netfront.features.filter { !$0.0.hasPrefix("feature-gso") })
        vif.link.inject(NetworkFrame(bytes: Frames.ipv6(Frames.payload(3000), tcp: true),
                                     offload: NetworkOffload(segmentation: .tcpv6(segmentSize: 1400))))
        vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(7))))
        #expect(try vif.q.waitForFrames(1).map(\.bytes) == [Frames.ipv4(Frames.payload(7))])
        #expect(vif.metrics.dropped(.rxUnsupportedOffload) == 1)
    }

    @Test("too few buffers: the frame waits (ring full counted) until the frontend posts more, then arrives in order")
    func ringFull() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, post: false)
        try vif.q.postReceiveBuffers(1)
        let frames = (0..<3).map { Frames.ipv4(Frames.payload(100 + $0)) }
        for f in frames { vif.link.inject(NetworkFrame(bytes: f)) }
        try vif.sync()
        #expect(vif.backend.rxBacklog == [2])
        #expect(vif.metrics.rxRingFull.load(ordering: .relaxed) == 1)
        // feature-rx-notify: the backend asked for an event on the next posted buffer (req_event = req_prod + 1).
        #expect(try vif.q.rx.raw(.requestEvent) == RingIndex(2))
        // `receive` posts buffers again (all free slots): the rest follow.
        var got = try vif.q.receive()
        #expect(got.map(\.bytes) == [frames[0]])
        got = try vif.q.waitForFrames(2)
        let rest = got
        #expect(rest.map(\.bytes) == [frames[1], frames[2]])
    }

    @Test("a burst larger than a pump's batch arrives whole and in order")
    func burst() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let frames = (0..<200).map { Frames.ipv4(Frames.payload($0)) }
        for f in frames { vif.link.inject(NetworkFrame(bytes: f)) }
        #expect(try vif.q.waitForFrames(200).map(\.bytes) == frames)
        #expect(vif.metrics.rxPackets.load(ordering: .relaxed) == 200)
    }

    @Test("a frame needing three buffers while the frontend posts one at a time: woken by each until it fits")
    func postedOneAtATime() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, post: false)
        try vif.q.postReceiveBuffers(1)
        let frame = Frames.ipv4(Frames.payload(10000))
        vif.link.inject(NetworkFrame(bytes: frame))
        try vif.sync()
        #expect(try vif.q.rx.raw(.requestEvent) == RingIndex(2))
        try vif.q.postReceiveBuffers(1)
        try vif.sync()
        #expect(try vif.q.receive().isEmpty)
        #expect(try vif.q.rx.raw(.requestEvent) == RingIndex(3))
        try vif.q.postReceiveBuffers(1)
        #expect(try vif.q.waitForFrames(1).map(\.bytes) == [frame])
    }

    @Test("a full backlog drops (counted) instead of growing")
    func backlogFull() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, post: false)
        for i in 0..<300 { vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(i % 50)))) }
        try vif.sync()
        #expect(vif.backend.rxBacklog == [256])
        #expect(vif.metrics.dropped(.rxBacklogFull) == 44)
    }

    @Test("a posted buffer with a bad grant: that response is an error, the frame counted as dropped, the next one fine")
    func badRxGrant() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, post: false)
        _ = try vif.q.rx.enqueue(NetifRxRequest(id: 0, grant: GrantReference(rawValue: 4000)))
        _ = try vif.q.rx.pushRequests()
        vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(1))))
        let bad = try vif.q.waitForFrames(1)
        #expect(bad.first?.failed == true)
        #expect(vif.metrics.dropped(.rxBadGrant) == 1)
        try vif.q.postReceiveBuffers()
        vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(2))))
        #expect(try vif.q.waitForFrames(1).map(\.bytes) == [Frames.ipv4(Frames.payload(2))])
    }

    @Test("a bad grant in the middle of a three-buffer frame: its response an error, the others written, the frame dropped, no hold left")
    func badGrantMidFrame() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, post: false)
        let holds = guest.grants.holdCount  // the rings'
        try vif.q.postReceiveBuffers(1)  // id 0
        _ = try vif.q.rx.enqueue(NetifRxRequest(id: 1, grant: GrantReference(rawValue: 4000)))
        try vif.q.postReceiveBuffers(1)  // id 2
        let frame = Frames.ipv4(Frames.payload(10000))
        vif.link.inject(NetworkFrame(bytes: frame))
        let got = try vif.q.waitForFrames(1)
        try #require(got.count == 1)
        #expect(got[0].failed)
        #expect(got[0].slots == 3)
        // The good buffers hold their pages of the frame (the first and the third).
        #expect(got[0].bytes == Array(frame[0..<4096]) + Array(frame[8192...]))
        #expect(vif.metrics.dropped(.rxBadGrant) == 1)
        #expect(vif.metrics.rxPackets.load(ordering: .relaxed) == 0)
        try vif.sync()
        #expect(guest.grants.holdCount == holds)
        // The device goes on.
        try vif.q.postReceiveBuffers()
        vif.link.inject(NetworkFrame(bytes: frame))
        #expect(try vif.q.waitForFrames(1).map(\.bytes) == [frame])
    }

    @Test("frames while no frontend is connected are dropped")
    func notConnected() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, connect: false)
        vif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(1))))
        #expect(!vif.backend.isConnected)
        #expect(vif.backend.rxBacklog == nil)
        #expect(vif.backend.droppedWhileDisconnected == 1)
    }
}
