// TCP segmentation in the backend, for a link that does not take a
// frontend's GSO packets (`NetworkLinkCapabilities.tcpv4Segmentation` /
// `.tcpv6Segmentation` missing): what Linux's stack does with a netback
// skb for a device without TSO (`skb_segment`, `tcp_gso_segment`,
// `inet_gso_segment`, `ipv6_gso_segment`). Pure, over a copy.

/// Cuts one TCP packet into MSS-sized ones, each a complete frame with
/// correct IP and TCP checksums.
public enum NetTCPSegmenter {
    /// The segments of `frame` (Ethernet, IPv4 or IPv6 without extension
    /// headers, TCP) with at most `segmentSize` payload bytes each: IPv4
    /// total length, id (+1 per segment) and header checksum, or IPv6
    /// payload length; TCP sequence numbers; FIN and PSH on the last
    /// segment only, CWR on the first only; every TCP checksum complete.
    /// Nil if the headers are not that, or `segmentSize` is 0.
    public static func segment(_ frame: [UInt8], segmentSize: Int) -> [[UInt8]]? {
        let eth = NetifLimits.ethernetHeader
        guard segmentSize > 0, frame.count >= eth + 20 else { return nil }
        let type = UInt16(frame[12]) << 8 | UInt16(frame[13])
        let ipv4: Bool
        let ipLength: Int
        switch type {
        case NetChecksumLocation.ipv4:
            guard frame[eth] >> 4 == 4, frame[eth + 9] == NetChecksumLocation.tcp else { return nil }
            ipv4 = true
            ipLength = Int(frame[eth] & 0x0f) * 4
            guard ipLength >= 20 else { return nil }
        case NetChecksumLocation.ipv6:
            guard frame.count >= eth + 40, frame[eth] >> 4 == 6, frame[eth + 6] == NetChecksumLocation.tcp else { return nil }
            ipv4 = false
            ipLength = 40
        default:
            return nil
        }
        let tcp = eth + ipLength
        guard frame.count >= tcp + 20 else { return nil }
        let tcpLength = Int(frame[tcp + 12] >> 4) * 4
        let headers = tcp + tcpLength
        guard tcpLength >= 20, frame.count >= headers else { return nil }
        let payload = frame[headers...]
        let count = max(1, (payload.count + segmentSize - 1) / segmentSize)
        let sequence = UInt32(frame[tcp + 4]) << 24 | UInt32(frame[tcp + 5]) << 16 | UInt32(frame[tcp + 6]) << 8
            | UInt32(frame[tcp + 7])
        let id = UInt16(frame[eth + 4]) << 8 | UInt16(frame[eth + 5])
        var out: [[UInt8]] = []
        out.reserveCapacity(count)
        for i in 0..<count {
            let start = payload.startIndex + i * segmentSize
            let chunk = payload[start..<min(payload.endIndex, start + segmentSize)]
            var s = Array(frame[..<headers]) + chunk
            func put16(_ v: UInt16, at o: Int) {
                s[o] = UInt8(v >> 8)
                s[o + 1] = UInt8(v & 0xff)
            }
            if ipv4 {
                put16(UInt16(truncatingIfNeeded: ipLength + tcpLength + chunk.count), at: eth + 2)
                put16(id &+ UInt16(truncatingIfNeeded: i), at: eth + 4)
                put16(0, at: eth + 10)
                put16(InternetChecksum.checksum(s[eth..<(eth + ipLength)]), at: eth + 10)
            } else {
                put16(UInt16(truncatingIfNeeded: tcpLength + chunk.count), at: eth + 4)
            }
            let seq = sequence &+ UInt32(truncatingIfNeeded: i * segmentSize)
            s[tcp + 4] = UInt8(seq >> 24)
            s[tcp + 5] = UInt8((seq >> 16) & 0xff)
            s[tcp + 6] = UInt8((seq >> 8) & 0xff)
            s[tcp + 7] = UInt8(seq & 0xff)
            // tcp_gso_segment: FIN and PSH belong to the last segment, CWR to the first.
            if i < count - 1 { s[tcp + 13] &= ~UInt8(0x09) }
            if i > 0 { s[tcp + 13] &= ~UInt8(0x80) }
            guard let location = NetChecksumLocation(headers: s, frameLength: s.count) else { return nil }
            location.complete(&s)
            out.append(s)
        }
        return out
    }
}
