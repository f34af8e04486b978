import BlockFrontend
import Foundation
import GuestMemory
import HostIO
import NetBackend
import NetFrontend
import XenBus

// `pvh-bench net`: the net backend driven in-process by a netif frontend
// over real mmap'd guest memory (NetFrontend in BlockFrontend's guest; no
// KVM) transmitting to a TapLink, beside a plain program writing the same
// frames to a second TAP opened the same way (IFF_VNET_HDR, the same
// offloads): TapLink.transmit called in a tight loop from one thread.
//
// Both TAPs are moved into a fresh network namespace (`ip netns add`),
// brought up there with addresses in 10.211.0.0/24; the frames are
// addressed to a foreign MAC, so the namespace's stack drops them on
// receive (PACKET_OTHERHOST) on both sides alike. The namespace is
// deleted and the TAPs closed at the end.
//
// Cases:
//   tx-64    64-byte-payload UDP/IPv4 frames, checksums complete; packets/s.
//   tx-bulk  64 KiB TCP/IPv4 TSO frames: the frontend sends a GSO TCPv4
//            extra and NETTXF_csum_blank (the TCP field holds the
//            pseudo-header sum), the host writer the same as a virtio
//            header (GSO_TCPV4, NEEDS_CSUM); Gbit/s of frame bytes.
// The frontend keeps the TX ring full: it refills as soon as responses
// come and waits on its TX port, never sleeps. It writes each packet's
// bytes into its granted slot pages on every send (netfront grants the
// skb's pages instead), which the pvh side pays for.
// Rounds interleave pvh and host (the order reversed every other round);
// medians are printed. Not measured yet: rx-64, rx-bulk.

enum NetBench {
    struct Options {
        var seconds = 3
        var rounds = 3
        var cases: [String] = []
    }

    struct UsageError: Error, CustomStringConvertible {
        var description: String
    }

    static let usage = "usage: pvh-bench net [--seconds N] [--rounds N] [--case NAME]...  (cases: tx-64, tx-bulk; needs root)"

    static let caseNames = ["tx-64", "tx-bulk"]

    static func parse(_ arguments: [String]) throws(UsageError) -> Options {
        var options = Options()
        var rest = arguments[...]
        func value(_ flag: String) throws(UsageError) -> String {
            guard let v = rest.popFirst() else { throw UsageError(description: "\(flag) needs a value (\(usage))") }
            return v
        }
        func positive(_ flag: String) throws(UsageError) -> Int {
            let v = try value(flag)
            guard let n = Int(v), n > 0 else { throw UsageError(description: "\(flag): expected a positive integer, got '\(v)'") }
            return n
        }
        while let argument = rest.popFirst() {
            switch argument {
            case "--seconds": options.seconds = try positive(argument)
            case "--rounds": options.rounds = try positive(argument)
            case "--case":
                let name = try value(argument)
                guard caseNames.contains(name) else {
                    throw UsageError(description: "--case: no case '\(name)' (\(caseNames.joined(separator: ", ")))")
                }
                options.cases.append(name)
            default: throw UsageError(description: "unknown argument '\(argument)' (\(usage))")
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
    static func frame(payloadBytes: Int, tcp: Bool) -> [UInt8] {
        let l4Header = tcp ? 20 : 8
        let l4Length = l4Header + payloadBytes
        let total = 20 + l4Length
        precondition(total <= 65535)
        var f = destinationMAC + sourceMAC + [0x08, 0x00]
        var ip: [UInt8] = [0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, tcp ? 6 : 17, 0, 0] + sourceIP + destinationIP
        put(UInt16(total), &ip, at: 2)
        put(~fold(sum(ip)), &ip, at: 10)
        f += ip
        var l4: [UInt8]
        if tcp {
            l4 = [0x30, 0x39, 0x13, 0x88, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]
        } else {
            l4 = [0x30, 0x39, 0x13, 0x88, 0, 0, 0, 0]
            put(UInt16(l4Length), &l4, at: 4)
        }
        l4 += (0..<payloadBytes).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        let pseudo = sum(sourceIP + destinationIP + [0, tcp ? 6 : 17, UInt8(l4Length >> 8), UInt8(l4Length & 0xff)])
        if tcp {
            put(fold(pseudo), &l4, at: 16)
        } else {
            let c = ~fold(sum(l4, pseudo))
            put(c == 0 ? 0xffff : c, &l4, at: 6)
        }
        return f + l4
    }

    struct Case {
        var name: String
        var frame: [UInt8]
        var gso: NetifExtraInfo?
        var offload: NetworkOffload
        var bulk: Bool

        var description: String {
            bulk ? "\(frame.count)-byte TCP/IPv4 TSO frames (MSS 1448, partial checksum)"
                 : "\(frame.count)-byte UDP/IPv4 frames (64-byte payload, checksums complete)"
        }
    }

    static func makeCase(_ name: String) -> Case {
        if name == "tx-bulk" {
            // 65535-byte IP packet minus a little: 16 slots of 4 KiB.
            let f = frame(payloadBytes: 65000, tcp: true)
            return Case(name: name, frame: f, gso: .gso(size: 1448, type: NetifExtraInfo.gsoTCPv4),
                        offload: NetworkOffload(segmentation: .tcpv4(segmentSize: 1448),
                                                partialChecksum: .init(start: 34, offset: 16)),
                        bulk: true)
        }
        return Case(name: name, frame: frame(payloadBytes: 64, tcp: false), gso: nil, offload: .none, bulk: false)
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

    // MARK: the run

    static func run(_ options: Options) throws {
        let selected = caseNames.filter { options.cases.isEmpty || options.cases.contains($0) }.map(makeCase)
        try ip(["netns", "add", namespace])
        defer { _ = try? ip(["netns", "del", namespace], check: false) }
        let hostTap: TapLink
        do {
            hostTap = try TapLink(name: "pvhbn\(getpid() % 100000)b")
        } catch {
            throw UsageError(description: "TAP: \(error)")
        }
        defer { hostTap.stop() }
        try place(hostTap, address: "10.211.0.3/24")
        let pvhTapName = "pvhbn\(getpid() % 100000)a"
        // A fresh guest, backend and TAP for every pvh run. A queue kept
        // busy overflows the backend's pump stack: each batch-limit yield
        // (NetQueueCore's `again.withLock { $0.tx }?()`) seems to leave the
        // stored closure wrapped in one more reabstraction thunk pair, so
        // after some seconds of tx-64 the call is ~65,000 frames deep
        // (SIGSEGV on pvh-vif-0-0; release build). A fresh queue per run
        // keeps 3-second runs clear of it; `--seconds 10 --case tx-64`
        // still crashes. NetBackend.destroy stops (closes) its link.
        func pvhRun(_ c: Case) throws -> (rate: Double, drops: UInt64, gso: UInt64, segmented: UInt64) {
            let tap: TapLink
            do { tap = try TapLink(name: pvhTapName) } catch { throw UsageError(description: "TAP: \(error)") }
            do { try place(tap, address: "10.211.0.1/24") } catch {
                tap.stop()
                throw error
            }
            let side: PVHSide
            do { side = try PVHSide(link: tap) } catch {
                tap.stop()
                throw error
            }
            defer { side.backend.destroy() }
            let r = try side.transmit(c, seconds: options.seconds)
            let m = side.backend.metrics[0]
            return (r.rate, r.drops, m.txGSOPackets.load(ordering: .relaxed), m.txSegmentedPackets.load(ordering: .relaxed))
        }

        print("pvh-bench net: \(options.seconds) s per run, medians of \(options.rounds) interleaved rounds; "
              + "pvh: netfront → NetBackend → tap \(pvhTapName) (fresh each run), host: TapLink.transmit loop → \(hostTap.description); "
              + "both in netns \(namespace)")
        for c in selected { print("  \(c.name): \(c.description)") }
        for c in selected {
            var pvh: [Double] = [], host: [Double] = []
            var dropped: UInt64 = 0, hostDropped = 0
            var gso: UInt64 = 0, segmented: UInt64 = 0
            for round in 0..<options.rounds {
                var steps: [() throws -> Void] = [
                    {
                        let r = try pvhRun(c)
                        pvh.append(r.rate)
                        dropped += r.drops
                        gso += r.gso
                        segmented += r.segmented
                    },
                    {
                        let r = hostTransmit(hostTap, c, seconds: options.seconds)
                        host.append(r.rate)
                        hostDropped += r.drops
                    },
                ]
                if round % 2 == 1 { steps.reverse() }
                for step in steps { try step() }
            }
            let p = median(pvh), h = median(host)
            let unit = c.bulk ? "Gbit/s" : "packets/s"
            let fmt = c.bulk ? "%.2f" : "%.0f"
            print(String(format: "net %@ pvh \(fmt) %@ host \(fmt) %@ ratio %.2f", c.name, p, unit, h, unit, h > 0 ? p / h : .nan))
            let list = { (a: [Double]) in a.map { String(format: fmt, $0) }.joined(separator: " ") }
            print("  rounds: pvh \(list(pvh)) | host \(list(host)); drops: pvh backend \(dropped), host writer \(hostDropped); "
                  + "pvh backend GSO packets \(gso), segmented in software \(segmented)")
        }
    }

    static func median(_ values: [Double]) -> Double {
        let s = values.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    static func rate(_ c: Case, packets: Int, seconds: Double) -> Double {
        c.bulk ? Double(packets) * Double(c.frame.count) * 8 / seconds / 1e9 : Double(packets) / seconds
    }

    // MARK: host: the plain writer

    /// TapLink.transmit of the same frame (and virtio header) in a tight
    /// loop for `seconds`; frames it refused (EAGAIN, ...) are not counted.
    static func hostTransmit(_ tap: TapLink, _ c: Case, seconds: Int) -> (rate: Double, drops: Int) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: c.frame.count, alignment: 64)
        defer { buffer.deallocate() }
        buffer.copyBytes(from: c.frame)
        let owner = NSObject()
        let range = HostMemoryRange(owner: owner, address: UInt(bitPattern: buffer.baseAddress), count: c.frame.count)
        let parts = [range]
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(seconds)
        var sent = 0, drops = 0
        while clock.now < deadline {
            for _ in 0..<16 {
                switch tap.transmit(parts, offload: c.offload) {
                case .success: sent += 1
                case .failure: drops += 1
                }
            }
        }
        let elapsed = (clock.now - start) / .seconds(1)
        withExtendedLifetime(owner) {}
        return (rate(c, packets: sent, seconds: elapsed), drops)
    }
}

// MARK: pvh: the frontend and backend

/// One guest, one vif on `link`, one queue (split channels), RX buffers
/// posted, connected.
final class PVHSide {
    let guest: FrontendGuest
    let backend: NetBackend
    let queue: NetfrontQueue

    init(link: TapLink) throws {
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

    /// Sends `c`'s frame as fast as the ring turns for `seconds`, then
    /// waits for every response; the rate counts packets the backend
    /// transmitted (its txPackets), over the time to the last response.
    func transmit(_ c: NetBench.Case, seconds: Int) throws -> (rate: Double, drops: UInt64) {
        let metrics = backend.metrics[0]
        let packetsBefore = metrics.txPackets.load(ordering: .relaxed)
        let dropsBefore = metrics.totalDrops
        let slotsPerPacket = (c.frame.count + 4095) / 4096 + (c.gso == nil ? 0 : 1)
        let entries = Int(queue.tx.geometry.entries)
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = start + .seconds(seconds)
        while clock.now < deadline {
            // Fill what the ring holds (checked first: send writes the slot
            // pages before it looks at the ring), then wait for responses.
            while Int(queue.tx.freeRequests) >= slotsPerPacket {
                try queue.send(c.frame, gso: c.gso, checksumBlank: c.gso != nil)
            }
            _ = try queue.waitForTxResponses(1)
        }
        while Int(queue.tx.freeRequests) < entries { _ = try queue.waitForTxResponses(1) }
        let elapsed = (clock.now - start) / .seconds(1)
        let packets = Int(metrics.txPackets.load(ordering: .relaxed) - packetsBefore)
        return (NetBench.rate(c, packets: packets, seconds: elapsed), metrics.totalDrops - dropsBefore)
    }
}
