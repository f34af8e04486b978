import BlockFrontend
import CHostIO
import Foundation
import GuestMemory
import HostIO
import NetBackend
import NetFrontend
import Locking
import Synchronization
import XenBus

// `pvh-bench net`: the net backend driven in-process by a netif frontend
// over real mmap'd guest memory (NetFrontend in BlockFrontend's guest; no
// KVM), beside a plain program doing the same with the same kind of host
// link. One guest, backend and TAP serve every TAP case and round (a
// long-lived queue, as a guest's is); the `user` case has its own.
//
// TAP cases. Both TAPs (IFF_VNET_HDR, the same offloads) are moved into a
// fresh network namespace (`ip netns add`), brought up there with
// addresses in 10.211.0.0/24. The namespace is deleted and the TAPs closed
// at the end.
//   tx-64    64-byte-payload UDP/IPv4 frames, checksums complete; packets/s.
//   tx-bulk  64 KiB TCP/IPv4 TSO frames: the frontend sends a GSO TCPv4
//            extra and NETTXF_csum_blank (the TCP field holds the
//            pseudo-header sum), the host writer the same as a virtio
//            header (GSO_TCPV4, NEEDS_CSUM); Gbit/s of frame bytes.
//            TX frames go to a foreign MAC: the namespace's stack drops
//            them on receive (PACKET_OTHERHOST) on both sides alike.
//            pvh: the frontend keeps the TX ring full (refills as soon as
//            responses come, waits on its TX port, never sleeps), sending
//            a packet staged once in granted pages, as netfront grants an
//            skb's pages; host: TapLink's batch transmit in a tight loop,
//            32 frames per io_uring_enter as the backend hands them over
//            (`--host-tx each`: one writev per frame instead). Waiting,
//            the frontend asks for an event at the next response, as
//            Linux's netfront does since 4.x (`--tx-event next`), or once
//            half its outstanding requests are answered, as it did before
//            (`--tx-event half`).
//   rx-64, rx-bulk  the same frames the other way: a generator thread in
//            the namespace writes them to the TAP through an AF_PACKET
//            socket (PACKET_VNET_HDR for bulk: GSO TCPv4 with a partial
//            checksum, which the TAP passes on as it is), keeping at most
//            a window of frames ahead of what the consumer counted
//            (FrameGenerator); the kernel queues them for the TAP's reader. pvh: TapLink's
//            reader → NetBackend RX → the frontend's posted buffers,
//            counted as whole frames by the frontend (which reposts at
//            once); host: a TapLink whose reader just counts the frames,
//            the same reader pvh's TapLink runs. Rate: frames (or their
//            bytes) that reached the consumer.
//
// `user` case (passt, no root needed for it, but run with the rest):
//   user-udp  UDP/IPv4 datagrams of 65000 bytes (a 65042-byte frame, under
//            passt's MTU of 65520) to passt's gateway, which passt maps to
//            the host's loopback, where one UDP socket counts what
//            arrives; Gbit/s of UDP payload received. pvh: frontend →
//            NetBackend → PasstLink → passt; host: PasstLink.transmit of
//            the same frame in a tight loop to a passt of its own. Both
//            are the same framing (PasstFrameCodec) over the same kind of
//            socketpair to the same passt, so the difference is netback
//            and the ring; UDP (not TCP) because the frontend has no TCP
//            stack, and datagrams either side sends faster than passt and
//            the socket take are dropped alike (not counted).
//
// Rounds interleave pvh and host (the order reversed every other round);
// medians are printed, then each round's value, the drops, and per pvh
// packet the backend's pump runs and events each way (the batching).

enum NetBench {
    struct Options {
        var seconds = 3
        var rounds = 3
        var cases: [String] = []
        /// The frontend's TX event hold-off (`--tx-event`).
        var txHoldOff = NetfrontQueue.TxEventHoldOff.next
        /// Who reads pvh's TAP (`--rx-read`): the queue, into the posted
        /// buffers where it can (the VMM's way), or the link's thread,
        /// handing the backend a copy (the design before it).
        var rxRead = RxRead.queue
        /// How the host side writes its TX frames (`--host-tx`): in
        /// batches as pvh's backend does, one io_uring_enter per batch of
        /// the TAP's limit (the physical limit's best here), or one writev
        /// each (the reference before pvh batched).
        var hostTx = HostTx.batch
        /// How long the frontend looks at its ring before blocking on its
        /// port (`--frontend-wait poll|block`): none by default, as a vCPU
        /// that halts (and as this bench ran before the option), or 200 µs
        /// as a guest whose idle loop polls (Linux's haltpoll cpuidle; the
        /// block bench's default). Not the default here: on 2 cores the
        /// polling frontend takes the CPU the RX path's other threads need
        /// (rx-64 0.43 to 0.24, rx-bulk 0.53 to 0.36, tx-bulk 0.30 to 0.37
        /// in one pair of runs, December 4 2026; README, Networking).
        var frontendPolling: Duration = .zero
    }

    enum RxRead: String, CaseIterable {
        case queue, thread
    }

    enum HostTx: String, CaseIterable {
        case batch, each
    }

    typealias UsageError = BenchUsageError

    static let usage = "usage: pvh-bench net [--seconds N] [--rounds N] [--case NAME]... [--tx-event next|half] [--rx-read queue|thread] [--host-tx batch|each] [--frontend-wait poll|block]  (cases: \(caseNames.joined(separator: ", ")); needs root)"

    static let caseNames = ["tx-64", "tx-bulk", "rx-64", "rx-bulk", "user-udp"]

    static func parse(_ arguments: [String]) throws(UsageError) -> Options {
        var options = Options()
        var words = BenchArguments(arguments, usage: usage)
        while let argument = words.next() {
            switch argument {
            case "--seconds": options.seconds = try words.positive(argument)
            case "--rounds": options.rounds = try words.positive(argument)
            case "--case": options.cases.append(try words.caseName(argument, from: caseNames))
            case "--tx-event":
                let names = NetfrontQueue.TxEventHoldOff.allCases.map(\.rawValue)
                options.txHoldOff = NetfrontQueue.TxEventHoldOff(rawValue: try words.caseName(argument, from: names)) ?? .next
            case "--rx-read":
                let names = RxRead.allCases.map(\.rawValue)
                options.rxRead = RxRead(rawValue: try words.caseName(argument, from: names)) ?? .queue
            case "--host-tx":
                let names = HostTx.allCases.map(\.rawValue)
                options.hostTx = HostTx(rawValue: try words.caseName(argument, from: names)) ?? .batch
            case "--frontend-wait":
                switch try words.value(argument) {
                case "poll": options.frontendPolling = .microseconds(200)
                case "block": options.frontendPolling = .zero
                case let v: throw UsageError(description: "--frontend-wait: expected poll or block, got '\(v)'")
                }
            default: throw words.unknown(argument)
            }
        }
        return options
    }

    static func main(_ arguments: [String]) -> Int32 {
        if arguments.contains("--help") || arguments.contains("-h") {
            print(usage)
            return 0
        }
        do {
            let options = try parse(arguments)
            guard geteuid() == 0 else {
                print("pvh-bench net: needs root (it creates TAP devices and a network namespace); not run")
                return 2
            }
            try run(options)
            return 0
        } catch {
            FileHandle.standardError.write(Data("pvh-bench net: \(error)\n".utf8))
            return 2
        }
    }

    // MARK: frames

    static let destinationMAC: [UInt8] = [0x02, 0, 0, 0, 0, 0x99]  // nobody's: dropped as PACKET_OTHERHOST
    static let sourceMAC: [UInt8] = [0x00, 0x16, 0x3e, 0, 0, 1]
    static let sourceIP: [UInt8] = [10, 211, 0, 2]
    static let destinationIP: [UInt8] = [10, 211, 0, 99]
    /// The frontend's MAC (PVHSide's vif): RX frames are addressed to it.
    static let frontendMAC: [UInt8] = [0x00, 0x16, 0x3e, 0, 0, 1]

    static func sum(_ bytes: [UInt8], _ initial: UInt32 = 0) -> UInt32 {
        var s = initial
        var i = 0
        while i + 1 < bytes.count {
            s += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1])
            i += 2
        }
        if i < bytes.count { s += UInt32(bytes[i]) << 8 }
        return s
    }

    static func fold(_ s: UInt32) -> UInt16 {
        var s = s
        while s >> 16 != 0 { s = (s & 0xffff) + (s >> 16) }
        return UInt16(s)
    }

    static func put(_ v: UInt16, _ f: inout [UInt8], at i: Int) {
        f[i] = UInt8(v >> 8)
        f[i + 1] = UInt8(v & 0xff)
    }

    /// Ethernet + IPv4 (checksum valid) + UDP or TCP + `payloadBytes`.
    /// UDP: checksum complete. TCP: the field holds the folded
    /// pseudo-header sum (CHECKSUM_PARTIAL, as Linux leaves it).
    static func frame(payloadBytes: Int, tcp: Bool, to: [UInt8] = destinationMAC, from: [UInt8] = sourceMAC,
                      source: [UInt8] = sourceIP, destination: [UInt8] = destinationIP, port: UInt16 = 5000) -> [UInt8] {
        let l4Header = tcp ? 20 : 8
        let l4Length = l4Header + payloadBytes
        let total = 20 + l4Length
        precondition(total <= 65535)
        var f = to + from + [0x08, 0x00]
        var ip: [UInt8] = [0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, tcp ? 6 : 17, 0, 0] + source + destination
        put(UInt16(total), &ip, at: 2)
        put(~fold(sum(ip)), &ip, at: 10)
        f += ip
        var l4: [UInt8]
        if tcp {
            l4 = [0x30, 0x39, UInt8(port >> 8), UInt8(port & 0xff), 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]
        } else {
            l4 = [0x30, 0x39, UInt8(port >> 8), UInt8(port & 0xff), 0, 0, 0, 0]
            put(UInt16(l4Length), &l4, at: 4)
        }
        l4 += (0..<payloadBytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        let pseudo = sum(source + destination + [0, tcp ? 6 : 17, UInt8(l4Length >> 8), UInt8(l4Length & 0xff)])
        if tcp {
            put(fold(pseudo), &l4, at: 16)
        } else {
            let c = ~fold(sum(l4, pseudo))
            put(c == 0 ? 0xffff : c, &l4, at: 6)
        }
        return f + l4
    }

    enum Direction { case tx, rx, user }

    struct Case {
        var name: String
        var direction: Direction
        var frame: [UInt8]
        var gso: NetifExtraInfo?
        var offload: NetworkOffload
        var bulk: Bool
        /// Bulk rates count these bytes per frame: the frame's, or (user-udp) the UDP payload's.
        var countedBytes: Int

        var description: String {
            switch (direction, bulk) {
            case (.user, _): "\(frame.count)-byte UDP/IPv4 frames (\(countedBytes)-byte payload) to passt's gateway"
            case (_, true): "\(frame.count)-byte TCP/IPv4 TSO frames (MSS 1448, partial checksum)"
            case (_, false): "\(frame.count)-byte UDP/IPv4 frames (64-byte payload, checksums complete)"
            }
        }
    }

    /// The address passt hands the guest and its gateway (which passt maps
    /// to the host's loopback), fixed with `--address`/`--gateway` so the
    /// frames need not depend on the host's own addresses.
    static let userGuestIP: [UInt8] = [10, 0, 2, 15]
    static let userGatewayIP: [UInt8] = [10, 0, 2, 2]
    static let userPayload = 65000
    static let userSinkPort: UInt16 = 5011

    static func makeCase(_ name: String) -> Case {
        let rx = name.hasPrefix("rx-")
        let direction: Direction = rx ? .rx : .tx
        let to = rx ? frontendMAC : destinationMAC
        switch name {
        case "tx-bulk", "rx-bulk":
            // 65535-byte IP packet minus a little: 16 slots of 4 KiB.
            let f = frame(payloadBytes: 65000, tcp: true, to: to)
            return Case(name: name, direction: direction, frame: f, gso: .gso(size: 1448, type: NetifExtraInfo.gsoTCPv4),
                        offload: NetworkOffload(segmentation: .tcpv4(segmentSize: 1448),
                                                partialChecksum: .init(start: 34, offset: 16)),
                        bulk: true, countedBytes: f.count)
        case "user-udp":
            let f = frame(payloadBytes: userPayload, tcp: false, to: destinationMAC, from: frontendMAC,
                          source: userGuestIP, destination: userGatewayIP, port: userSinkPort)
            return Case(name: name, direction: .user, frame: f, gso: nil, offload: .none, bulk: true, countedBytes: userPayload)
        default:
            let f = frame(payloadBytes: 64, tcp: false, to: to)
            return Case(name: name, direction: direction, frame: f, gso: nil, offload: .none, bulk: false, countedBytes: f.count)
        }
    }

    // MARK: the namespace

    static let namespace = "pvhbench-net-\(getpid())"

    @discardableResult
    static func ip(_ arguments: [String], check: Bool = true) throws -> Int32 {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/sbin/ip")
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        if check, p.terminationStatus != 0 {
            throw UsageError(description: "ip \(arguments.joined(separator: " ")) failed (status \(p.terminationStatus))")
        }
        return p.terminationStatus
    }

    /// Moves `tap` into the namespace, gives it `address`, brings it up.
    static func place(_ tap: TapLink, address: String) throws {
        try ip(["link", "set", tap.name, "netns", namespace])
        try ip(["-n", namespace, "addr", "add", address, "dev", tap.name])
        try ip(["-n", namespace, "link", "set", tap.name, "up"])
    }

    static func makeTap(_ name: String, address: String) throws -> TapLink {
        let tap: TapLink
        do { tap = try TapLink(name: name) } catch { throw UsageError(description: "TAP: \(error)") }
        do { try place(tap, address: address) } catch {
            tap.stop()
            throw error
        }
        return tap
    }

    // MARK: the run

    struct Measured {
        var rate: Double
        /// What the side could not pass on (backend or writer drops, TAP drops on RX).
        var drops: UInt64 = 0
        /// pvh only: per packet, the backend's pump runs and the events each way.
        var perPacket: (pumps: Double, fromGuest: Double, toGuest: Double)?
        /// pvh only: per packet, the frontend's waits ended by polling, and
        /// its blocks on a port.
        var frontendWaits: (pollHits: Double, portWaits: Double)?
    }

    static func run(_ options: Options) throws {
        let selected = caseNames.filter { options.cases.isEmpty || options.cases.contains($0) }.map(makeCase)
        let tapCases = selected.contains { $0.direction != .user }
        let userCases = selected.contains { $0.direction == .user }
        try ip(["netns", "add", namespace])
        defer { _ = try? ip(["netns", "del", namespace], check: false) }

        var hostTap: TapLink?
        var tapSide: PVHSide?
        let hostReceived = FrameCounter()
        defer {
            tapSide?.backend.destroy()  // stops (closes) its link
            hostTap?.stop()
        }
        let pvhTapName = "pvhbn\(getpid() % 100000)a"
        if tapCases {
            let h = try makeTap("pvhbn\(getpid() % 100000)b", address: "10.211.0.3/24")
            hostTap = h
            do {
                try h.start(receive: { hostReceived.add($0.bytes.count) }, carrier: { _ in })
            } catch { throw UsageError(description: "TAP reader: \(error)") }
            let tap = try makeTap(pvhTapName, address: "10.211.0.1/24")
            tapSide = try PVHSide(link: options.rxRead == .queue ? tap : ThreadReadLink(tap), txHoldOff: options.txHoldOff,
                              polling: options.frontendPolling)
        }

        var userSide: PVHSide?
        var hostPasst: PasstLink?
        var sink: UDPSink?
        defer {
            userSide?.backend.destroy()
            hostPasst?.stop()
            sink?.stop()
        }
        if userCases {
            let s = try UDPSink(port: userSinkPort)
            sink = s
            func passt() throws -> PasstLink {
                do {
                    return try PasstLink(addresses: [dotted(userGuestIP)],
                                         extraArguments: ["--netmask", "24", "--gateway", dotted(userGatewayIP)])
                } catch { throw UsageError(description: "passt: \(error)") }
            }
            let h = try passt()
            hostPasst = h
            do { try h.start(receive: { _ in }, carrier: { _ in }) } catch { throw UsageError(description: "passt: \(error)") }
            userSide = try PVHSide(link: try passt(), txHoldOff: options.txHoldOff, polling: options.frontendPolling)
        }

        print("pvh-bench net: \(options.seconds) s per run, medians of \(options.rounds) interleaved rounds; "
              + "the frontend's TX event: \(options.txHoldOff.rawValue), "
              + "\(options.frontendPolling > .zero ? "polling 200 µs before it blocks" : "blocking at once"); the TAP read by the \(options.rxRead.rawValue); "
              + "host TX: \(options.hostTx == .batch ? "batches of the TAP's limit per io_uring_enter" : "one writev per frame")")
        if tapCases, let hostTap {
            print("  TAP cases: pvh: netfront ⇄ NetBackend ⇄ tap \(pvhTapName), host: TapLink ⇄ \(hostTap.description); "
                  + "both in netns \(namespace)")
        }
        if userCases, let hostPasst, let userSide {
            print("  user cases: pvh: netfront → NetBackend → \(userSide.link.description), host: PasstLink.transmit loop → "
                  + "\(hostPasst.description); sink udp 127.0.0.1:\(userSinkPort)")
        }
        for c in selected { print("  \(c.name): \(c.description)") }
        for c in selected {
            var pvh: [Measured] = [], host: [Measured] = []
            for round in 0..<options.rounds {
                var steps: [() throws -> Void] = []
                switch c.direction {
                case .tx:
                    guard let tapSide, let hostTap else { continue }
                    steps = [{ pvh.append(try tapSide.transmit(c, seconds: options.seconds)) },
                             { host.append(hostTransmit(hostTap, c, seconds: options.seconds, batches: options.hostTx == .batch)) }]
                case .rx:
                    guard let tapSide, let hostTap else { continue }
                    steps = [{ pvh.append(try tapSide.receive(c, from: pvhTapName, seconds: options.seconds)) },
                             { host.append(try hostReceive(hostTap.name, hostReceived, c, seconds: options.seconds)) }]
                case .user:
                    guard let userSide, let hostPasst, let sink else { continue }
                    steps = [{ pvh.append(try userSide.transmitCounted(c, sink: sink, seconds: options.seconds)) },
                             { host.append(hostTransmit(hostPasst, c, seconds: options.seconds, sink: sink)) }]
                }
                if round % 2 == 1 { steps.reverse() }
                for step in steps { try step() }
            }
            let p = median(pvh.map(\.rate)), h = median(host.map(\.rate))
            let unit = c.bulk ? "Gbit/s" : "packets/s"
            let fmt = c.bulk ? "%.2f" : "%.0f"
            print(String(format: "net %@ pvh \(fmt) %@ host \(fmt) %@ ratio %.2f", c.name, p, unit, h, unit, h > 0 ? p / h : .nan))
            let list = { (a: [Measured]) in a.map { String(format: fmt, $0.rate) }.joined(separator: " ") }
            let drops = { (a: [Measured]) in a.reduce(UInt64(0)) { $0 + $1.drops } }
            var line = "  rounds: pvh \(list(pvh)) | host \(list(host)); drops: pvh \(drops(pvh)), host \(drops(host))"
            if let w = pvh.last?.perPacket {
                line += String(format: "; per pvh packet (last round): %.3f pumps, %.3f events from the guest, %.3f to it",
                               w.pumps, w.fromGuest, w.toGuest)
            }
            if let f = pvh.last?.frontendWaits {
                line += String(format: ", the frontend's poll hits %.3f and port waits %.3f", f.pollHits, f.portWaits)
            }
            if c.direction == .tx, let tapSide {
                let m = tapSide.backend.metrics[0]
                line += "; pvh backend GSO packets so far \(m.txGSOPackets.load(ordering: .relaxed)), "
                    + "segmented in software \(m.txSegmentedPackets.load(ordering: .relaxed))"
            }
            print(line)
        }
    }

    static func dotted(_ a: [UInt8]) -> String { a.map(String.init).joined(separator: ".") }

    static func median(_ values: [Double]) -> Double { benchMedian(values) }

    /// Packets/s, or Gbit/s of `bytes`.
    static func rate(_ c: Case, packets: Int, bytes: Int? = nil, seconds: Double) -> Double {
        c.bulk ? Double(bytes ?? packets * c.countedBytes) * 8 / seconds / 1e9 : Double(packets) / seconds
    }

    // MARK: host: the plain writer and reader

    /// `link.transmit` of the same frame (and virtio header) in a tight
    /// loop for `seconds`; with `batches` and a link that takes them, as
    /// batches of its limit (what pvh's backend hands a TAP). Without a
    /// sink, frames it took are counted; with one, the payload bytes the
    /// sink received meanwhile.
    static func hostTransmit(_ link: any NetworkLink, _ c: Case, seconds: Int, sink: UDPSink? = nil,
                             batches: Bool = false) -> Measured {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: c.frame.count, alignment: 64)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: c.frame)
        let owner = NSObject()
        let range = HostMemoryRange(owner: owner, address: UInt(bitPattern: buffer.baseAddress), count: c.frame.count)
        let parts = [range]
        let sunk = sink?.counter.snapshot
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(seconds)
        var sent = 0, drops: UInt64 = 0
        let batchLink = batches ? (link as? any BatchTransmitNetworkLink).flatMap { $0.transmitBatchLimit > 1 ? $0 : nil } : nil
        if let batchLink {
            var batch = NetworkTransmitBatch()
            for _ in 0..<batchLink.transmitBatchLimit { batch.append(parts, offload: c.offload) }
            let frames = batch.count
            while clock.now < deadline {
                batchLink.transmit(&batch)
                for result in batch.results {
                    if case .success = result { sent += 1 } else { drops += 1 }
                }
                drops += UInt64(max(0, frames - batch.results.count))
            }
        } else {
            while clock.now < deadline {
                for _ in 0..<16 {
                    switch link.transmit(parts, offload: c.offload) {
                    case .success: sent += 1
                    case .failure: drops += 1
                    }
                }
            }
        }
        let elapsed = (clock.now - start) / .seconds(1)
        withExtendedLifetime(owner) {}
        if let sink, let sunk {
            let got = sink.counter.snapshot
            return Measured(rate: rate(c, packets: got.frames - sunk.frames, bytes: got.bytes - sunk.bytes, seconds: elapsed),
                            drops: UInt64(max(0, sent - (got.frames - sunk.frames))) + drops)
        }
        return Measured(rate: rate(c, packets: sent, seconds: elapsed), drops: drops)
    }

    /// The generator writes `c`'s frame to TAP `tap` for `seconds`; the
    /// TapLink's own reader counts (`counter`) what reaches it.
    static func hostReceive(_ tap: String, _ counter: FrameCounter, _ c: Case, seconds: Int) throws -> Measured {
        let generator = try FrameGenerator(namespace: namespace, interface: tap, c) { counter.count }
        defer { generator.stop() }
        let before = counter.snapshot
        let clock = ContinuousClock()
        let start = clock.now
        while clock.now < start + .seconds(seconds) {
            _ = generator.finished.wait(timeout: .now() + .milliseconds(100))
        }
        let after = counter.snapshot
        let elapsed = (clock.now - start) / .seconds(1)
        return Measured(rate: rate(c, packets: after.frames - before.frames, bytes: after.bytes - before.bytes, seconds: elapsed),
                        drops: 0)
    }
}

// MARK: counting, generating, sinking

/// Frames and bytes seen by some thread, read by the measuring one.
final class FrameCounter: Sendable {
    private let frames = Atomic<Int>(0)
    private let bytes = Atomic<Int>(0)
    func add(_ bytes: Int) {
        self.bytes.wrappingAdd(bytes, ordering: .relaxed)
        frames.wrappingAdd(1, ordering: .relaxed)
    }
    var count: Int { frames.load(ordering: .relaxed) }
    var snapshot: (frames: Int, bytes: Int) { (frames.load(ordering: .relaxed), bytes.load(ordering: .relaxed)) }
}

/// A thread that enters the namespace and writes one frame to an interface
/// through an AF_PACKET socket (packet(7)): what the host stack sends out
/// of a TAP is what its reader gets. PACKET_QDISC_BYPASS: straight to the
/// TAP's queue (full: the TAP drops it); PACKET_VNET_HDR for frames with
/// offloads (the same virtio header a TAP reads).
///
/// It keeps at most `window` frames ahead of what the consumer reports
/// (`delivered`), yielding the CPU while it is that far ahead, as a sender
/// with flow control does. Flat out, a TAP never pushes back (tun drops
/// what its queue cannot hold) and the generator burnt a whole core on
/// frames dropped, which on this 2-core machine starved whichever consumer
/// has more threads to wake. A frame lost on the way (none should be: the
/// window is smaller than the TAP's queue, the backlog and the ring) is
/// forgotten after 100 ms without progress.
final class FrameGenerator: @unchecked Sendable {
    // SAFETY (Sendable): `stopping` is atomic; the rest is set before the thread starts.
    private let stopping = Atomic<Bool>(false)
    /// Signalled when the thread has finished (or failed).
    let finished = DispatchSemaphore(value: 0)
    private let ready = DispatchSemaphore(value: 0)
    private let failure = Lock<String?>(nil)

    init(namespace: String, interface: String, _ c: NetBench.Case, delivered: @escaping @Sendable () -> Int) throws {
        let withHeader = c.bulk
        // Fewer than the TAP's queue (500), the frontend's ring (256
        // buffers) or netback's backlog (256 frames) holds, so frames are
        // not lost on the way; enough to keep every stage busy.
        let window = c.bulk ? 32 : 200
        let payload = (withHeader ? Array(TapLink.virtioHeader(for: c.offload).prefix(10)) : []) + c.frame
        let thread = Thread { [self] in
            defer { finished.signal() }
            let fail = { (what: String) in
                self.failure.withLock { $0 = "\(what): \(String(cString: strerror(errno)))" }
                self.ready.signal()
            }
            // This thread only: setns moves the calling thread (setns(2)).
            let s = pvh_packet_socket_in_namespace("/run/netns/\(namespace)", interface, withHeader ? 1 : 0)
            guard s >= 0 else {
                errno = -s
                return fail("packet socket on \(interface) in netns \(namespace)")
            }
            defer { close(s) }
            ready.signal()
            payload.withUnsafeBytes { bytes in
                let clock = ContinuousClock()
                var sent = delivered()
                var last = (count: sent, at: clock.now)
                while !stopping.load(ordering: .relaxed) {
                    let done = delivered()
                    if done != last.count { last = (done, clock.now) }
                    if sent - done >= window {
                        if clock.now - last.at < .milliseconds(100) {
                            sched_yield()
                            continue
                        }
                        sent = done  // the rest were dropped on the way
                        last.at = clock.now
                    }
                    for _ in 0..<16 where send(s, bytes.baseAddress, bytes.count, 0) >= 0 { sent += 1 }
                }
            }
        }
        thread.start()
        guard ready.wait(timeout: .now() + .seconds(10)) == .success else {
            stop()
            throw NetBench.UsageError(description: "frame generator: not ready within 10 s")
        }
        if let f = failure.withLock({ $0 }) { throw NetBench.UsageError(description: "frame generator: \(f)") }
    }

    /// Stops the thread and waits (bounded) for it.
    func stop() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        _ = finished.wait(timeout: .now() + .seconds(10))
    }
}

/// A UDP socket on 127.0.0.1:`port` and a thread counting what arrives.
final class UDPSink: @unchecked Sendable {
    // SAFETY (Sendable): `fd` is set once; the thread ends before it is closed.
    let counter = FrameCounter()
    private let fd: Int32
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    init(port: UInt16) throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        self.fd = fd
        guard fd >= 0 else { throw NetBench.UsageError(description: "sink socket: \(String(cString: strerror(errno)))") }
        var size: Int32 = 8 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, 4)
        // A bounded wait per receive, so `stop` is seen.
        var timeout = timeval(tv_sec: 0, tv_usec: 100_000)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            close(fd)
            throw NetBench.UsageError(description: "sink bind 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        let counter = self.counter
        let thread = Thread { [self] in
            defer { finished.signal() }
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            let capacity = buffer.count
            while !stopping.load(ordering: .relaxed) {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, capacity, 0) }
                if n >= 0 { counter.add(n) }
            }
        }
        thread.start()
    }

    func stop() {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        _ = finished.wait(timeout: .now() + .seconds(10))
        close(fd)
    }
}

// MARK: pvh: the frontend and backend

/// One guest, one vif on `link`, one queue (split channels), RX buffers
/// posted, connected.
final class PVHSide {
    let guest: FrontendGuest
    let backend: NetBackend
    let queue: NetfrontQueue
    let link: any NetworkLink
    /// Packets staged once per case (`NetfrontQueue.stage`).
    private var staged: [String: NetfrontQueue.StagedPacket] = [:]
    /// When the frontend asks to hear of TX responses.
    let txHoldOff: NetfrontQueue.TxEventHoldOff
    /// How long the frontend polls its ring before blocking.
    let polling: Duration

    init(link: any NetworkLink, txHoldOff: NetfrontQueue.TxEventHoldOff, polling: Duration) throws {
        self.link = link
        self.txHoldOff = txHoldOff
        self.polling = polling
        guest = try FrontendGuest()
        backend = try NetBackend(store: guest.store,
                                 address: XenbusDeviceAddress(type: "vif", frontend: FrontendGuest.domain, index: 0),
                                 configuration: NetDeviceConfiguration(link: link, mac: "00:16:3e:00:00:01", maximumQueues: 1),
                                 memory: guest.memory, grants: guest.grants, events: guest.events, runtime: guest.runtime)
        queue = try NetfrontQueue(guest: guest)
        try Netfront.connect([queue], device: backend.address)
        try queue.postReceiveBuffers()
        guard backend.isConnected else { throw NetBench.UsageError(description: "the net backend did not connect") }
    }

    /// The backend's pump runs and events so far.
    private var wakeups: (pumps: UInt64, fromGuest: UInt64, toGuest: UInt64) {
        guard let m = backend.runtimeDevice?.metrics else { return (0, 0, 0) }
        return (m.pumps.load(ordering: .relaxed), m.guestNotifications.load(ordering: .relaxed),
                m.notificationsToGuest.load(ordering: .relaxed))
    }

    /// The frontend's poll hits and port waits so far.
    private var frontendWaits: (pollHits: Int, portWaits: Int) { (queue.pollHits, queue.portWaits) }

    private func frontendWaits(since f: (pollHits: Int, portWaits: Int), packets: Int) -> (pollHits: Double, portWaits: Double) {
        let now = frontendWaits, n = Double(max(packets, 1))
        return (Double(now.pollHits - f.pollHits) / n, Double(now.portWaits - f.portWaits) / n)
    }

    private func perPacket(since w: (pumps: UInt64, fromGuest: UInt64, toGuest: UInt64), packets: Int)
        -> (pumps: Double, fromGuest: Double, toGuest: Double) {
        let now = wakeups, n = Double(max(packets, 1))
        return (Double(now.pumps - w.pumps) / n, Double(now.fromGuest - w.fromGuest) / n, Double(now.toGuest - w.toGuest) / n)
    }

    private func packet(_ c: NetBench.Case) throws -> NetfrontQueue.StagedPacket {
        if let p = staged[c.name] { return p }
        let p = try queue.stage(c.frame, gso: c.gso, checksumBlank: c.gso != nil)
        staged[c.name] = p
        return p
    }

    /// Keeps the TX ring full of `c`'s packet for `seconds`, then waits for
    /// every response. Returns how many packets were sent and the time.
    private func fill(_ c: NetBench.Case, seconds: Int) throws -> (sent: Int, elapsed: Double) {
        let p = try packet(c)
        let entries = Int(queue.tx.geometry.entries)
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(seconds)
        var sent = 0
        while clock.now < deadline {
            // Fill what the ring holds, publish once, then wait for responses.
            while try queue.enqueue(p) { sent += 1 }
            try queue.pushTx()
            _ = try queue.collectTxResponses(holdOff: txHoldOff, polling: polling)
        }
        while Int(queue.tx.freeRequests) < entries { _ = try queue.waitForTxResponses(1) }
        return (sent, (clock.now - start) / .seconds(1))
    }

    /// TX to the TAP: the rate counts packets the backend transmitted (its
    /// txPackets), over the time to the last response.
    func transmit(_ c: NetBench.Case, seconds: Int) throws -> NetBench.Measured {
        let metrics = backend.metrics[0]
        let packetsBefore = metrics.txPackets.load(ordering: .relaxed)
        let dropsBefore = metrics.totalDrops
        let w = wakeups, f = frontendWaits
        let (_, elapsed) = try fill(c, seconds: seconds)
        let packets = Int(metrics.txPackets.load(ordering: .relaxed) - packetsBefore)
        return NetBench.Measured(rate: NetBench.rate(c, packets: packets, seconds: elapsed), drops: metrics.totalDrops - dropsBefore,
                                 perPacket: perPacket(since: w, packets: packets), frontendWaits: frontendWaits(since: f, packets: packets))
    }

    /// TX through passt: the rate counts the payload the sink received.
    func transmitCounted(_ c: NetBench.Case, sink: UDPSink, seconds: Int) throws -> NetBench.Measured {
        let before = sink.counter.snapshot
        let w = wakeups, f = frontendWaits
        let (sent, elapsed) = try fill(c, seconds: seconds)
        let after = sink.counter.snapshot
        let got = after.frames - before.frames
        return NetBench.Measured(rate: NetBench.rate(c, packets: got, bytes: after.bytes - before.bytes, seconds: elapsed),
                                 drops: UInt64(max(0, sent - got)), perPacket: perPacket(since: w, packets: sent),
                                 frontendWaits: frontendWaits(since: f, packets: sent))
    }

    /// RX: the generator writes `c`'s frame to TAP `tap` for `seconds`; the
    /// frontend counts whole frames as they come (waiting on its RX port,
    /// bounded) and posts their buffers again at once.
    func receive(_ c: NetBench.Case, from tap: String, seconds: Int) throws -> NetBench.Measured {
        _ = try queue.consume()  // what came in meanwhile
        let metrics = backend.metrics[0]
        let dropsBefore = metrics.totalDrops
        let w = wakeups, f = frontendWaits
        let consumed = Atomic<Int>(0)
        let generator = try FrameGenerator(namespace: NetBench.namespace, interface: tap, c) { consumed.load(ordering: .relaxed) }
        defer { generator.stop() }
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(seconds)
        var total = NetfrontQueue.Consumed()
        while clock.now < deadline {
            _ = queue.guest.notifications.clearPending(queue.rxPort)
            let got = try queue.consume()
            total.frames += got.frames
            total.bytes += got.bytes
            consumed.store(total.frames, ordering: .relaxed)
            // RING_FINAL_CHECK_FOR_RESPONSES (rsp_event moved on) before
            // sleeping, or the backend would not notify.
            if got.frames == 0 { _ = try queue.waitForRxResponses(timeout: .milliseconds(100), polling: polling) }
        }
        let elapsed = (clock.now - start) / .seconds(1)
        return NetBench.Measured(rate: NetBench.rate(c, packets: total.frames, bytes: total.bytes, seconds: elapsed),
                                 drops: metrics.totalDrops - dropsBefore, perPacket: perPacket(since: w, packets: total.frames),
                                 frontendWaits: frontendWaits(since: f, packets: total.frames))
    }
}

/// A TAP seen only as a plain `NetworkLink` (not a
/// `DirectReceiveNetworkLink`): its thread reads every frame and hands the
/// backend a copy, for `--rx-read thread`. Its transmits are the TAP's,
/// batches included.
final class ThreadReadLink: BatchTransmitNetworkLink, Sendable {
    let tap: TapLink
    init(_ tap: TapLink) { self.tap = tap }
    var description: String { tap.description }
    var mtu: Int { tap.mtu }
    var capabilities: NetworkLinkCapabilities { tap.capabilities }
    func transmit(_ parts: [HostMemoryRange], offload: NetworkOffload) -> Result<Void, NetworkTransmitDrop> {
        tap.transmit(parts, offload: offload)
    }
    var transmitBatchLimit: Int { tap.transmitBatchLimit }
    func transmit(_ batch: inout NetworkTransmitBatch) { tap.transmit(&batch) }
    func start(receive: @escaping @Sendable (NetworkFrame) -> Void, carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {
        try tap.start(receive: receive, carrier: carrier)
    }
    func stop() { tap.stop() }
}
