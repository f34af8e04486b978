import Foundation
import GuestMemory
import HostIO
import Testing

let canCreateTAP = getuid() == 0 && tunAvailable && ipPath != nil

/// A TAP for one test, `pvhtest<N>`, with the host side at 10.213.<n>.1/24
/// and the "guest" (the link) at 10.213.<n>.2 with a fixed MAC. The
/// interface goes away when the link stops.
final class TapFixture {
    static let guestMAC: [UInt8] = [0x02, 0x16, 0x3e, 0x00, 0x00, 0x02]
    let link: TapLink
    let subnet: UInt8
    var hostIP: [UInt8] { [10, 213, subnet, 1] }
    var guestIP: [UInt8] { [10, 213, subnet, 2] }
    var hostIPString: String { hostIP.map(String.init).joined(separator: ".") }
    var guestIPString: String { guestIP.map(String.init).joined(separator: ".") }
    /// The TAP's own (host side) MAC.
    let hostMAC: [UInt8]

    init(subnet: UInt8, mtu: Int = 1500) throws {
        self.subnet = subnet
        let name = "pvhtest\(getpid() % 1000)\(subnet)"
        link = try TapLink(name: name, mtu: mtu)
        let ip = try #require(ipPath)
        let a = run(ip, ["addr", "add", "10.213.\(subnet).1/24", "dev", name])
        try #require(a.status == 0, "ip addr add failed")
        let mac = Self.guestMAC.map { String(format: "%02x", $0) }.joined(separator: ":")
        let n = run(ip, ["neigh", "replace", "10.213.\(subnet).2", "lladdr", mac, "dev", name, "nud", "permanent"])
        try #require(n.status == 0, "ip neigh replace failed")
        let text = try String(contentsOfFile: "/sys/class/net/\(name)/address", encoding: .utf8)
        hostMAC = text.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ":").compactMap { UInt8($0, radix: 16) }
        try #require(hostMAC.count == 6)
    }

    deinit { link.stop() }
}

/// A host UDP socket bound to `address:port`, with a receive timeout.
final class HostUDPSocket {
    let fd: Int32

    init(address: String, port: UInt16) throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        try #require(fd >= 0)
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var sin = Self.socketAddress(address, port)
        let r = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        try #require(r == 0, "bind \(address):\(port): errno \(errno)")
    }

    deinit { close(fd) }

    static func socketAddress(_ address: String, _ port: UInt16) -> sockaddr_in {
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        inet_pton(AF_INET, address, &sin.sin_addr)
        return sin
    }

    /// One datagram, or nil after the timeout.
    func receive() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n < 0 ? nil : Array(buffer[..<n])
    }

    func send(_ bytes: [UInt8], to address: String, port: UInt16) -> Int {
        var sin = Self.socketAddress(address, port)
        return withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { to in
                bytes.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, 0, to, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
    }
}

@Suite("TapLink on a real TAP", .serialized,
       .enabled(if: canCreateTAP, "skipped: needs root (CAP_NET_ADMIN), /dev/net/tun and iproute2's ip"))
struct TapLinkTests {
    @Test("the interface exists, is up, has the MTU, and is gone after stop")
    func createAndStop() throws {
        let tap = try TapFixture(subnet: 1, mtu: 1400)
        let name = tap.link.name
        #expect(name.hasPrefix("pvhtest"))
        #expect(tap.link.description == "tap \(name)")
        #expect(tap.link.capabilities == [.partialChecksum, .tcpv4Segmentation, .tcpv6Segmentation])
        let mtu = try String(contentsOfFile: "/sys/class/net/\(name)/mtu", encoding: .utf8)
        #expect(mtu.trimmingCharacters(in: .whitespacesAndNewlines) == "1400")
        let flags = try String(contentsOfFile: "/sys/class/net/\(name)/flags", encoding: .utf8)
        #expect((UInt32(flags.trimmingCharacters(in: .whitespacesAndNewlines).dropFirst(2), radix: 16) ?? 0) & 1 == 1)  // IFF_UP
        let inbox = LinkInbox()
        try tap.link.start(receive: inbox.receive, carrier: inbox.carrier)
        let started = ContinuousClock.now
        tap.link.stop()
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(name)"))
        #expect(throws: NetworkTransmitDrop.linkDown) { try tap.link.transmit(FrameMemory().ranges([1, 2, 3]), offload: .none).get() }
    }

    @Test("a UDP frame from the link reaches a host socket, complete and with a partial checksum")
    func linkToHost() throws {
        let tap = try TapFixture(subnet: 2)
        let host = try HostUDPSocket(address: tap.hostIPString, port: 40_002)
        let frames = try FrameMemory()
        let payload = Array("hello from the guest".utf8)
        let udp = Packet.udp(sourcePort: 5555, destinationPort: 40_002, payload)
        let frame = Packet.ethernet(destination: tap.hostMAC, source: TapFixture.guestMAC, type: 0x0800,
                                    Packet.ipv4(source: tap.guestIP, destination: tap.hostIP, protocol: 17, udp))
        try tap.link.transmit(frames.ranges(frame, parts: 5), offload: .none).get()
        #expect(host.receive() == payload)

        // The checksum left partial: the pseudo-header sum in the field, the
        // kernel told where to complete it (csum_start 34, csum_offset 6).
        let payload2 = Array("partial checksum".utf8)
        let udp2 = Packet.udp(sourcePort: 5555, destinationPort: 40_002, payload2, pseudoHeaderOnly: (tap.guestIP, tap.hostIP))
        let frame2 = Packet.ethernet(destination: tap.hostMAC, source: TapFixture.guestMAC, type: 0x0800,
                                     Packet.ipv4(source: tap.guestIP, destination: tap.hostIP, protocol: 17, udp2))
        try tap.link.transmit(frames.ranges(frame2, parts: 2), offload: NetworkOffload(partialChecksum: .init(start: 34, offset: 6))).get()
        #expect(host.receive() == payload2)

        // The link reuses its gather list and header: a third frame, in one
        // part and complete, goes as itself after the two before it.
        let payload3 = Array("third, whole".utf8)
        let frame3 = Packet.ethernet(destination: tap.hostMAC, source: TapFixture.guestMAC, type: 0x0800,
                                     Packet.ipv4(source: tap.guestIP, destination: tap.hostIP, protocol: 17,
                                                 Packet.udp(sourcePort: 5555, destinationPort: 40_002, payload3)))
        try tap.link.transmit(frames.ranges(frame3, parts: 1), offload: .none).get()
        #expect(host.receive() == payload3)

        #expect(throws: NetworkTransmitDrop.tooLarge) {
            try tap.link.transmit(frames.ranges([UInt8](repeating: 0, count: 1500 + 19)), offload: .none).get()
        }
    }

    @Test("a batch of frames (one io_uring_enter) reaches the host in order; a frame too large is refused alone; after stop, link down")
    func batchToHost() throws {
        let tap = try TapFixture(subnet: 9)
        let host = try HostUDPSocket(address: tap.hostIPString, port: 40_009)
        // Each frame in memory of its own (`ranges` writes at offset 0).
        let memories = try (0..<40).map { _ in try FrameMemory() }
        var batch = NetworkTransmitBatch()
        var payloads: [[UInt8]] = []
        for k in 0..<40 {
            let frames = memories[k]
            if k == 3 {
                batch.append(try frames.ranges([UInt8](repeating: 0, count: 1500 + 19)), offload: .none)
                continue
            }
            let payload = Array("frame \(k)".utf8)
            payloads.append(payload)
            let frame = Packet.ethernet(destination: tap.hostMAC, source: TapFixture.guestMAC, type: 0x0800,
                                        Packet.ipv4(source: tap.guestIP, destination: tap.hostIP, protocol: 17,
                                                    Packet.udp(sourcePort: 5555, destinationPort: 40_009, payload)))
            batch.append(try frames.ranges(frame, parts: 1 + k % 3), offload: .none)
        }
        // More frames than one io_uring_enter takes: two submissions, in order.
        #expect(batch.count > tap.link.transmitBatchLimit)
        tap.link.transmit(&batch)
        #expect(batch.results.count == 40)
        for (k, result) in batch.results.enumerated() {
            if k == 3 {
                #expect(throws: NetworkTransmitDrop.tooLarge) { try result.get() }
            } else {
                #expect(throws: Never.self) { try result.get() }
            }
        }
        for payload in payloads { #expect(host.receive() == payload) }
        tap.link.stop()
        tap.link.transmit(&batch)
        #expect(batch.results.count == 40)
        #expect(batch.results.allSatisfy { (try? $0.get()) == nil })
        withExtendedLifetime(memories) {}
    }

    @Test("a UDP datagram the host sends to the guest's address arrives through the link, byte for byte")
    func hostToLink() throws {
        let tap = try TapFixture(subnet: 3)
        let inbox = LinkInbox()
        try tap.link.start(receive: inbox.receive, carrier: inbox.carrier)
        let host = try HostUDPSocket(address: tap.hostIPString, port: 40_003)
        let payload = (0 ..< 1000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        #expect(host.send(payload, to: tap.guestIPString, port: 40_013) == payload.count)
        let frame = try #require(inbox.waitForFrame { Packet.udpPayload($0.bytes, destinationPort: 40_013) != nil },
                                 "no frame to port 40013 from the TAP")
        #expect(Packet.udpPayload(frame.bytes, destinationPort: 40_013) == payload)
        #expect(Array(frame.bytes[0 ..< 6]) == TapFixture.guestMAC)
        #expect(Array(frame.bytes[6 ..< 12]) == tap.hostMAC)
        #expect(Array(frame.bytes[26 ..< 30]) == tap.hostIP)
        #expect(Array(frame.bytes[30 ..< 34]) == tap.guestIP)
        // The host stack offloads the UDP checksum to the TAP (TUN_F_CSUM):
        // it comes partial, at the UDP checksum field.
        if let partial = frame.offload.partialChecksum {
            #expect(partial.start == 34)
            #expect(partial.offset == 6)
        }
        tap.link.stop()
        #expect(inbox.carrierHistory.isEmpty)
    }

    @Test("a TCP segmentation frame with a partial checksum is taken whole: the host answers its 300 bytes with one reset")
    func segmentationTransmit() throws {
        let tap = try TapFixture(subnet: 4)
        let inbox = LinkInbox()
        try tap.link.start(receive: inbox.receive, carrier: inbox.carrier)
        // PSH without ACK to a closed port: Linux resets with ack = seq + length
        // (tcp_v4_send_reset), which tells how much of the frame it took as one.
        let payload = [UInt8](repeating: 0x61, count: 300)
        var tcp = Packet.be16(5555) + Packet.be16(40_099) + Packet.be32(1000) + Packet.be32(0) + [0x50, 0x08] + Packet.be16(65535) + [0, 0, 0, 0]
        let pseudo = Packet.sum(tap.guestIP + tap.hostIP + [0, 6] + Packet.be16(UInt16(tcp.count + payload.count)))
        tcp[16] = UInt8(pseudo >> 8)
        tcp[17] = UInt8(pseudo & 0xff)
        let frame = Packet.ethernet(destination: tap.hostMAC, source: TapFixture.guestMAC, type: 0x0800,
                                    Packet.ipv4(source: tap.guestIP, destination: tap.hostIP, protocol: 6, tcp + payload))
        let offload = NetworkOffload(segmentation: .tcpv4(segmentSize: 100), partialChecksum: .init(start: 34, offset: 16))
        try tap.link.transmit(FrameMemory().ranges(frame, parts: 3), offload: offload).get()
        let reset = inbox.waitForFrame { f in
            let b = f.bytes
            return b.count >= 54 && Packet.readBE16(b, 12) == 0x0800 && b[23] == 6 && Packet.readBE16(b, 36) == 5555 && b[47] & 0x04 != 0
        }
        let rst = try #require(reset, "no TCP reset from the host")
        #expect(Array(rst.bytes[42 ..< 46]) == Packet.be32(1300))  // ack = 1000 + 300
    }

    @Test("a host TCP stream to the guest arrives as TCPv4 segmentation frames with partial checksums (TSO through the TAP)")
    func segmentationReceive() throws {
        let tap = try TapFixture(subnet: 5)
        let inbox = LinkInbox()
        try tap.link.start(receive: inbox.receive, carrier: inbox.carrier)
        // The host connects to the "guest"; the test plays the guest's TCP
        // for the handshake only (SYN-ACK with MSS 1460, a 64 KiB window).
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var sin = HostUDPSocket.socketAddress(tap.guestIPString, 40_020)
        let r = withUnsafePointer(to: &sin) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        try #require(r < 0 && errno == EINPROGRESS)
        let syn = try #require(inbox.waitForFrame { f in
            let b = f.bytes
            return b.count >= 54 && Packet.readBE16(b, 12) == 0x0800 && b[23] == 6 && Packet.readBE16(b, 36) == 40_020 && b[47] == 0x02
        }, "no SYN from the host")
        let hostPort = Packet.readBE16(syn.bytes, 34)
        let hostSeq = syn.bytes[38 ..< 42].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        var tcp = Packet.be16(40_020) + Packet.be16(hostPort) + Packet.be32(5000) + Packet.be32(hostSeq &+ 1)
        tcp += [0x60, 0x12] + Packet.be16(65535) + [0, 0, 0, 0] + [2, 4] + Packet.be16(1460)
        let pseudo = Packet.sum(tap.guestIP + tap.hostIP + [0, 6] + Packet.be16(UInt16(tcp.count)))
        tcp[16] = UInt8(pseudo >> 8)
        tcp[17] = UInt8(pseudo & 0xff)
        let synAck = Packet.ethernet(destination: tap.hostMAC, source: TapFixture.guestMAC, type: 0x0800,
                                     Packet.ipv4(source: tap.guestIP, destination: tap.hostIP, protocol: 6, tcp))
        try tap.link.transmit(FrameMemory().ranges(synAck), offload: NetworkOffload(partialChecksum: .init(start: 34, offset: 16))).get()
        var out = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
        try #require(poll(&out, 1, 10_000) == 1, "the host's connect did not complete")
        let data = [UInt8](repeating: 0x42, count: 32_768)
        let written = data.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        try #require(written > 2 * 1460)
        let big = try #require(inbox.waitForFrame { f in
            if case .tcpv4 = f.offload.segmentation { return true }
            return false
        }, "no segmentation frame from the host")
        #expect(big.offload.segmentation == .tcpv4(segmentSize: 1460))
        #expect(big.offload.partialChecksum == NetworkOffload.PartialChecksum(start: 34, offset: 16))
        #expect(big.bytes.count > 1514)
        #expect(big.bytes.suffix(100).allSatisfy { $0 == 0x42 })
    }

    @Test("a missing bridge is an error naming it; the TAP is not left behind")
    func missingBridge() throws {
        let name = "pvhtest\(getpid() % 1000)9"
        #expect {
            _ = try TapLink(name: name, bridge: "pvhnobr0")
        } throws: { error in
            guard let e = error as? NetworkLinkError, case .bridgeNotFound(let bridge, _) = e else { return false }
            return bridge == "pvhnobr0" && e.description.contains("pvhnobr0")
        }
        #expect(!FileManager.default.fileExists(atPath: "/sys/class/net/\(name)"))
    }

    @Test("added to an existing Linux bridge")
    func bridge() throws {
        let ip = try #require(ipPath)
        let bridge = "pvhbr\(getpid() % 10000)"
        try #require(run(ip, ["link", "add", bridge, "type", "bridge"]).status == 0, "ip link add type bridge failed")
        defer { run(ip, ["link", "del", bridge]) }
        let link = try TapLink(name: "pvhtest\(getpid() % 1000)8", bridge: bridge)
        defer { link.stop() }
        #expect(link.description == "tap \(link.name) (bridge \(bridge))")
        let master = try FileManager.default.destinationOfSymbolicLink(atPath: "/sys/class/net/\(link.name)/master")
        #expect(master.hasSuffix("/\(bridge)"))
    }
}

@Suite("virtio_net_hdr as a TAP reads it")
struct VirtioHeaderTests {
    @Test("golden bytes for each offload, and back")
    func golden() {
        // flags, gso_type, hdr_len (LE16), gso_size (LE16), csum_start (LE16), csum_offset (LE16).
        let cases: [(NetworkOffload, [UInt8])] = [
            (.none, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            // NEEDS_CSUM (1); hdr_len = csum_start + csum_offset + 2 = 42.
            (NetworkOffload(partialChecksum: .init(start: 34, offset: 6)), [1, 0, 42, 0, 0, 0, 34, 0, 6, 0]),
            // GSO_TCPV4 (1), gso_size 1448 (0x05a8), TCP checksum at 34 + 16.
            (NetworkOffload(segmentation: .tcpv4(segmentSize: 1448), partialChecksum: .init(start: 34, offset: 16)),
             [1, 1, 52, 0, 0xa8, 0x05, 34, 0, 16, 0]),
            // GSO_TCPV6 (4), IPv6 header: TCP at 54.
            (NetworkOffload(segmentation: .tcpv6(segmentSize: 1428), partialChecksum: .init(start: 54, offset: 16)),
             [1, 4, 72, 0, 0x94, 0x05, 54, 0, 16, 0]),
            // DATA_VALID (2).
            (NetworkOffload(checksumValidated: true), [2, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ]
        for (offload, bytes) in cases {
            #expect(TapLink.virtioHeader(for: offload) == bytes)
            #expect(TapLink.offload(virtioHeader: bytes) == offload)
        }
    }

    @Test("ECN is taken with TCP segmentation; UDP segmentation is not said")
    func otherTypes() {
        // GSO_TCPV4 | GSO_ECN (0x80).
        #expect(TapLink.offload(virtioHeader: [1, 0x81, 0, 0, 0xa8, 0x05, 34, 0, 16, 0])?.segmentation == .tcpv4(segmentSize: 1448))
        // GSO_UDP (3), GSO_UDP_L4 (5).
        #expect(TapLink.offload(virtioHeader: [1, 3, 0, 0, 0, 0, 34, 0, 6, 0]) == nil)
        #expect(TapLink.offload(virtioHeader: [1, 5, 0, 0, 0, 0, 34, 0, 6, 0]) == nil)
        #expect(TapLink.offload(virtioHeader: [0, 0]) == nil)
    }
}
