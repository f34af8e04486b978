import NetBackend
import Testing

@Suite("one's-complement checksum and header parsing")
struct ChecksumTests {
    @Test("RFC 1071's example and an IPv4 header with its checksum")
    func internetChecksum() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to 2ddf0, folded ddf2.
        let bytes: [UInt8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
        #expect(InternetChecksum.fold(InternetChecksum.sum(bytes)) == 0xddf2)
        #expect(InternetChecksum.checksum(bytes) == 0x220d)
        // An IPv4 header (checksum b861 in place) sums to ffff: its checksum is 0.
        let header: [UInt8] = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
                               0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7]
        #expect(InternetChecksum.checksum(header) == 0)
        var zeroed = header
        zeroed[10] = 0
        zeroed[11] = 0
        #expect(InternetChecksum.checksum(zeroed) == 0xb861)
        // An odd length pads with a zero byte.
        #expect(InternetChecksum.sum([0x12]) == 0x1200)
        // Carries past 32 bits fold in.
        #expect(InternetChecksum.fold(InternetChecksum.sum([UInt8](repeating: 0xff, count: 200_000))) == 0xffff)
    }

    @Test("the checksum's place: IPv4 TCP and UDP, IPv6 with an extension header; nil for fragments and others")
    func location() throws {
        let tcp = Frames.ipv4(Frames.payload(10))
        let l = try #require(NetChecksumLocation(headers: tcp, frameLength: tcp.count))
        #expect(l.start == 34 && l.offset == 16 && !l.isUDP)
        let udp = Frames.ipv4(Frames.payload(10), tcp: false)
        let u = try #require(NetChecksumLocation(headers: udp, frameLength: udp.count))
        #expect(u.start == 34 && u.offset == 6 && u.isUDP)
        let v6 = Frames.ipv6(Frames.payload(10))
        #expect(NetChecksumLocation(headers: v6, frameLength: v6.count)?.start == 54)
        // A hop-by-hop options header (8 bytes) before UDP.
        var hop = Array(v6[..<54]) + [17, 0, 1, 4, 0, 0, 0, 0] + Array(v6[54...])
        hop[20] = 0
        let h = try #require(NetChecksumLocation(headers: hop, frameLength: hop.count))
        #expect(h.start == 62 && h.isUDP)
        var fragment = tcp
        fragment[20] = 0x20  // more fragments
        #expect(NetChecksumLocation(headers: fragment, frameLength: fragment.count) == nil)
        #expect(NetChecksumLocation(headers: Array(tcp[..<40]), frameLength: tcp.count) == nil, "truncated TCP header")
        var icmp = tcp
        icmp[23] = 1
        #expect(NetChecksumLocation(headers: icmp, frameLength: icmp.count) == nil)
    }

    @Test("completing: TCP and UDP over both IPs verify; a UDP checksum of 0 is sent as ffff")
    func complete() throws {
        for var f in [Frames.ipv4(Frames.payload(99)), Frames.ipv4(Frames.payload(100), tcp: false),
                      Frames.ipv6(Frames.payload(7)), Frames.ipv6(Frames.payload(1234), tcp: true)] {
            let l = try #require(NetChecksumLocation(headers: f, frameLength: f.count))
            l.complete(&f)
            #expect(Frames.l4ChecksumIsValid(f))
        }
    }

    @Test("TCP segmentation: IPv4 lengths, ids and header checksums, IPv6 payload lengths, sequence numbers, flags, checksums")
    func segmentation() throws {
        let payload = Frames.payload(3500)
        var v4 = Frames.ipv4(payload)
        v4[18] = 0x12  // IPv4 id 0x1234
        v4[19] = 0x34
        v4[47] = 0x19  // TCP flags PSH | ACK | FIN
        let segments = try #require(NetTCPSegmenter.segment(v4, segmentSize: 1000))
        #expect(segments.count == 4)
        var joined: [UInt8] = []
        for (i, s) in segments.enumerated() {
            let length = 40 + min(1000, 3500 - i * 1000)
            #expect(Int(s[16]) << 8 | Int(s[17]) == length)
            #expect(s.count == 14 + length)
            #expect(Int(s[18]) << 8 | Int(s[19]) == 0x1234 + i)
            #expect(InternetChecksum.checksum(s[14..<34]) == 0, "IPv4 header checksum of segment \(i)")
            #expect(Frames.l4ChecksumIsValid(s), "TCP checksum of segment \(i)")
            let seq = UInt32(s[38]) << 24 | UInt32(s[39]) << 16 | UInt32(s[40]) << 8 | UInt32(s[41])
            #expect(seq == 1 + UInt32(i * 1000))
            #expect(s[47] == (i == 3 ? 0x19 : 0x10))
            joined += s[54...]
        }
        #expect(joined == payload)

        let v6 = Frames.ipv6(Frames.payload(2000), tcp: true)
        let six = try #require(NetTCPSegmenter.segment(v6, segmentSize: 1428))
        #expect(six.count == 2)
        #expect(six.map { Int($0[18]) << 8 | Int($0[19]) } == [20 + 1428, 20 + 572])
        #expect(six.allSatisfy(Frames.l4ChecksumIsValid))
        // Not TCP: nothing to segment.
        #expect(NetTCPSegmenter.segment(Frames.ipv4(payload, tcp: false), segmentSize: 1000) == nil)
        #expect(NetTCPSegmenter.segment(v4, segmentSize: 0) == nil)
    }

    @Test("TX validation: sizes, pages, slot counts, GSO")
    func validator() throws {
        let g = GrantReference(rawValue: 9)
        func r(_ size: UInt16, offset: UInt16 = 0, flags: NetifTxFlags = []) -> NetifTxRequest {
            NetifTxRequest(grant: g, offset: offset, flags: flags, id: 0, size: size)
        }
        let ok = NetTxValidator.validate(NetTxSlots(first: r(5000, flags: .moreData), chain: [r(1000)]))
        #expect(try ok.get().segments.map(\.length) == [4000, 1000])
        #expect(NetTxValidator.validate(NetTxSlots(first: r(13))) == .failure(.txBadSize))
        #expect(NetTxValidator.validate(NetTxSlots(first: r(200, offset: 3900))) == .failure(.txCrossesPage))
        #expect(NetTxValidator.validate(NetTxSlots(first: r(100), chain: [r(200)])) == .failure(.txSizeMismatch))
        #expect(NetTxValidator.validate(NetTxSlots(first: r(5000), chain: Array(repeating: r(10), count: 18)))
            == .failure(.txTooManySlots))
        let gso = NetTxValidator.validate(NetTxSlots(first: r(3000), extras: [.gso(size: 1400, type: NetifExtraInfo.gsoTCPv6)]))
        #expect(try gso.get().segmentation == .tcpv6(segmentSize: 1400))
        #expect(NetTxSlots(first: r(3000), extras: [.gso(size: 1, type: 1)], chain: [r(1)]).responses(.okay).map(\.status)
            == [.okay, .null, .okay])
    }
}

import XenABI
