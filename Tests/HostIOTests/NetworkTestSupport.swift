import Foundation
import GuestMemory
import HostIO

/// Frames as a guest would hand them to a link: bytes in guest memory,
/// given as host ranges (split into several parts to exercise the gather).
final class FrameMemory {
    static let size = 1 << 20
    let memory: MappedGuestMemory

    init() throws {
        memory = try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(Self.size))])
    }

    /// `bytes` at offset 0, as `parts` host ranges of about equal length.
    func ranges(_ bytes: [UInt8], parts: Int = 3) throws -> [HostMemoryRange] {
        try memory.write(bytes, at: GuestPhysicalAddress(0))
        let step = max(1, (bytes.count + parts - 1) / parts)
        return try stride(from: 0, to: bytes.count, by: step).map { start in
            try memory.hostRange(GuestPhysicalRange(start: GuestPhysicalAddress(UInt64(start)), length: UInt64(min(step, bytes.count - start))))
        }
    }
}

/// What a link delivered, for a test to wait on with a deadline.
final class LinkInbox: @unchecked Sendable {
    private let condition = NSCondition()
    private var frames: [NetworkFrame] = []
    private var carrierEvents: [Bool] = []

    func receive(_ frame: NetworkFrame) {
        condition.lock()
        frames.append(frame)
        condition.broadcast()
        condition.unlock()
    }

    func carrier(_ up: Bool) {
        condition.lock()
        carrierEvents.append(up)
        condition.broadcast()
        condition.unlock()
    }

    var carrierHistory: [Bool] {
        condition.lock()
        defer { condition.unlock() }
        return carrierEvents
    }

    /// The first frame received so far or within `seconds` that satisfies `match`.
    func waitForFrame(seconds: Double = 10, where match: (NetworkFrame) -> Bool) -> NetworkFrame? {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let frame = frames.first(where: match) { return frame }
            if !condition.wait(until: deadline) { return frames.first(where: match) }
        }
    }

    /// Waits until the carrier history satisfies `condition` or `seconds` pass.
    func waitForCarrier(seconds: Double = 10, _ done: ([Bool]) -> Bool) -> Bool {
        let deadline = Date(timeIntervalSinceNow: seconds)
        condition.lock()
        defer { condition.unlock() }
        while !done(carrierEvents) {
            if !condition.wait(until: deadline) { return done(carrierEvents) }
        }
        return true
    }
}

/// Ethernet, IPv4 and UDP, as bytes.
enum Packet {
    static func ethernet(destination: [UInt8], source: [UInt8], type: UInt16, _ payload: [UInt8]) -> [UInt8] {
        destination + source + be16(type) + payload
    }

    static func be16(_ v: UInt16) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xff)] }
    static func be32(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)] }
    static func readBE16(_ b: [UInt8], _ at: Int) -> UInt16 { UInt16(b[at]) << 8 | UInt16(b[at + 1]) }

    /// The one's-complement sum of 16-bit words (RFC 1071), not inverted.
    static func sum(_ bytes: [UInt8], initial: UInt32 = 0) -> UInt16 {
        var s = initial
        var i = 0
        while i + 1 < bytes.count {
            s += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { s += UInt32(bytes[i]) << 8 }
        while s > 0xffff { s = (s & 0xffff) + (s >> 16) }
        return UInt16(s)
    }

    /// An IPv4 header (no options) with its checksum, then `payload`.
    static func ipv4(source: [UInt8], destination: [UInt8], protocol proto: UInt8, _ payload: [UInt8]) -> [UInt8] {
        var header: [UInt8] = [0x45, 0] + be16(UInt16(20 + payload.count)) + [0, 1, 0x40, 0, 64, proto, 0, 0] + source + destination
        let checksum = ~sum(header)
        header[10] = UInt8(checksum >> 8)
        header[11] = UInt8(checksum & 0xff)
        return header + payload
    }

    /// A UDP datagram; checksum 0 (none, allowed over IPv4) unless
    /// `pseudoHeaderOnly`, which leaves the pseudo-header sum in the field
    /// for the receiver to complete (a partial checksum).
    static func udp(sourcePort: UInt16, destinationPort: UInt16, _ payload: [UInt8],
                    pseudoHeaderOnly: (source: [UInt8], destination: [UInt8])? = nil) -> [UInt8] {
        let length = UInt16(8 + payload.count)
        var datagram = be16(sourcePort) + be16(destinationPort) + be16(length) + [0, 0] + payload
        if let p = pseudoHeaderOnly {
            let pseudo = sum(p.source + p.destination + [0, 17] + be16(length))
            datagram[6] = UInt8(pseudo >> 8)
            datagram[7] = UInt8(pseudo & 0xff)
        }
        return datagram
    }

    /// A DHCPDISCOVER (RFC 2131) from `mac` with transaction id `xid`,
    /// broadcast from 0.0.0.0:68 to 255.255.255.255:67.
    static func dhcpDiscover(mac: [UInt8], xid: UInt32) -> [UInt8] {
        var bootp: [UInt8] = [1, 1, 6, 0] + be32(xid) + [0, 0, 0x80, 0]  // op, htype, hlen, hops, xid, secs, flags (broadcast)
        bootp += [UInt8](repeating: 0, count: 16)  // ciaddr, yiaddr, siaddr, giaddr
        bootp += mac + [UInt8](repeating: 0, count: 10)  // chaddr
        bootp += [UInt8](repeating: 0, count: 192)  // sname, file
        bootp += [0x63, 0x82, 0x53, 0x63]  // magic cookie
        bootp += [53, 1, 1]  // DHCP message type: DISCOVER
        bootp += [55, 3, 1, 3, 6]  // parameter request list: subnet, router, DNS
        bootp += [255]
        let udp = udp(sourcePort: 68, destinationPort: 67, bootp)
        let ip = ipv4(source: [0, 0, 0, 0], destination: [255, 255, 255, 255], protocol: 17, udp)
        return ethernet(destination: [UInt8](repeating: 0xff, count: 6), source: mac, type: 0x0800, ip)
    }

    /// The UDP payload of an IPv4 frame to `port`, or nil.
    static func udpPayload(_ frame: [UInt8], destinationPort port: UInt16) -> [UInt8]? {
        guard frame.count >= 14 + 20 + 8, readBE16(frame, 12) == 0x0800, frame[14] >> 4 == 4, frame[14 + 9] == 17 else { return nil }
        let ihl = Int(frame[14] & 0x0f) * 4
        let udp = 14 + ihl
        guard frame.count >= udp + 8, readBE16(frame, udp + 2) == port else { return nil }
        let length = Int(readBE16(frame, udp + 4))
        guard length >= 8, udp + length <= frame.count else { return nil }
        return Array(frame[(udp + 8) ..< (udp + length)])
    }
}
