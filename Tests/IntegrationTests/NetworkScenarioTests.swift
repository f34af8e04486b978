#if canImport(Glibc)
import Glibc
#endif
import DeviceSpecs
import Foundation
import Locking
import Synchronization
import Testing
import VMM

/// Issue 11 under KVM: the test guest's netfront (testguest/netfront.c)
/// against pvh's netback, over each host side.
@Suite("Network devices under KVM", .serialized, .enabled(if: Env.hasKVM, "needs /dev/kvm (read-write)"))
struct NetworkScenarioTests {
    static let passtInstalled = ["/usr/bin/passt", "/usr/sbin/passt"].contains { FileManager.default.isExecutableFile(atPath: $0) }
    static let canMakeTAP = getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/net/tun")
        && (FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/usr/bin/ip"))

    @Test("user networking (passt): the guest gets its address by DHCP and echoes 64 KiB through a TCP server on the host's loopback side",
          .enabled(if: passtInstalled, "needs passt (apt-get install passt)"))
    func userNetworking() throws {
        let elf = try Env.testGuest.get()
        let server = try TCPEchoServer()
        defer { server.stop() }
        var config = GuestConfiguration(
            kernelPath: elf, commandLine: "pvh.scenarios=net_info,net_dhcp,net_tcp pvh.netport=\(server.port) pvh.netkib=64",
            memoryMiB: 64)
        config.networks = [try NetworkInterfaceSpecification(parsing: "")]
        // When the TCP exchange starts and ends (console lines, seen on the
        // run's line queue): its wall time tells a slow exchange from a stall.
        let exchange = Lock<(start: ContinuousClock.Instant?, end: ContinuousClock.Instant?)>((nil, nil))
        let run = try GuestRun.boot(config, onLine: { line, _ in
            let now = ContinuousClock.now
            if line.hasPrefix("PVHINFO net tcp: ") { exchange.withLock { $0.start = now } }
            if line.hasPrefix("PVHTEST net_tcp ") { exchange.withLock { $0.end = now } }
        }, limit: .seconds(180))
        #expect(run.exit == .shutdown(.poweroff))
        let results = run.results()
        let took = exchange.withLock { e in e.start.flatMap { s in e.end.map { "\($0 - s)" } } ?? "-" }
        let counters = "exchange \(took) \(run.networkCounters)"
        for scenario in ["net_info", "net_dhcp", "net_tcp"] {
            #expect(results[scenario]?.hasPrefix("PASS") == true, "\(scenario): \(counters) \(run.console.text)")
        }
        #expect(results["net_tcp"]?.contains("sent=65536 received=65536 crc32=0x4e070902") == true)
        #expect(server.bytesEchoed == 65536)
        let metrics = try #require(run.domain.networkMetrics.first?.first)
        #expect(metrics.txPackets.load(ordering: .relaxed) >= 40)
        #expect(metrics.rxPackets.load(ordering: .relaxed) >= 40, "\(run.networkCounters) \(run.console.text)")
    }

    @Test("type=none: the interface connects and the guest's frames are dropped on the host side, counted")
    func noLink() throws {
        let elf = try Env.testGuest.get()
        var config = GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=net_info pvh.nettimeout=300", memoryMiB: 64)
        config.networks = [try NetworkInterfaceSpecification(parsing: "type=none,mac=00:16:3e:0a:0b:0c")]
        let run = try GuestRun.boot(config, limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.lines.contains { $0.hasPrefix("PVHINFO net mac 00:16:3e:0a:0b:0c queues 1") }, "\(run.console.text)")
        // net_info's ARP probe goes nowhere: the scenario fails with a reason, the device stays up.
        #expect(run.results()["net_info"] != nil)
        let metrics = try #require(run.domain.networkMetrics.first?.first)
        #expect(metrics.txPackets.load(ordering: .relaxed) + metrics.totalDrops >= 1)
    }

    @Test("TAP in a network namespace the test creates: the host pings the guest and round-trips UDP datagrams",
          .enabled(if: canMakeTAP, "needs root, /dev/net/tun and ip(8)"))
    func tapInNamespace() throws {
        let elf = try Env.testGuest.get()
        let namespace = "pvhtest\(getpid() % 100000)"
        let tap = "pvht\(getpid() % 100000)"
        _ = try? runCommand(Self.ip, ["netns", "del", namespace])
        let made = try runCommand(Self.ip, ["netns", "add", namespace])
        try #require(made.status == 0, "ip netns add: \(made.stderr)")
        defer { _ = try? runCommand(Self.ip, ["netns", "del", namespace]) }
        var config = GuestConfiguration(
            kernelPath: elf,
            commandLine: "pvh.scenarios=net_echo pvh.netip=10.77.0.2/24 pvh.netechocount=5 pvh.netechoms=60000",
            memoryMiB: 64)
        config.networks = [try NetworkInterfaceSpecification(parsing: "type=tap,vifname=\(tap)")]
        let outcome = TAPOutcome()
        let run = try GuestRun.boot(config, onLine: { line, _ in
            guard line.hasPrefix("PVHTEST net_echo WAITING") else { return }
            // The TAP moves into the namespace; its file descriptor stays pvh's.
            for args in [["link", "set", tap, "netns", namespace],
                         ["-n", namespace, "addr", "add", "10.77.0.1/24", "dev", tap],
                         ["-n", namespace, "link", "set", tap, "up"]] {
                if let r = try? runCommand(Self.ip, args), r.status != 0 {
                    outcome.note(problem: "ip \(args.joined(separator: " ")): \(r.stderr)")
                }
            }
            var ping = ""
            do {
                // busybox ping times itself with SIGALRM; a child inherits
                // the spawning thread's signal mask, and Dispatch's threads
                // block it, so the ping is spawned from a thread that does not.
                let r = try withSignalsUnblocked { () throws in try runCommand(Self.ip, ["netns", "exec", namespace, "/usr/bin/busybox", "ping", "-c", "3", "-W", "5", "10.77.0.2"],
                                                                                 timeout: .seconds(30)) }
                ping = r.stdout + r.stderr
            } catch {
                outcome.note(problem: "ping: \(error)")
            }
            let echoed = (try? Self.udpRoundTrips(namespace: namespace, to: "10.77.0.2", port: 7, count: 5)) ?? 0
            outcome.finish(ping: ping, echoed: echoed)
        }, limit: .seconds(180))
        let seen = outcome.snapshot
        #expect(seen.problems.isEmpty, "\(seen.problems)")
        #expect(seen.ping.contains("3 packets received"), "\(seen.ping)")
        #expect(seen.echoed == 5)
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["net_echo"]?.hasPrefix("PASS") == true, "\(run.console.text)")
    }

    @Test("bad --net specifications and links that cannot be made: one line naming the spec, before any guest memory")
    func badSpecifications() throws {
        let elf = try Env.testGuest.get()
        #expect(throws: NetworkInterfaceSpecificationError.self) { try NetworkInterfaceSpecification(parsing: "mtu=9") }
        var config = GuestConfiguration(kernelPath: elf, memoryMiB: 64)
        config.networks = [try NetworkInterfaceSpecification(parsing: "bridge=pvhnosuchbr0,vifname=pvhnobr0")]
        let error = #expect(throws: DomainError.self) { _ = try Domain(configuration: config, console: CapturingConsoleSink()) }
        let text = error.map { "\($0)" } ?? ""
        #expect(text.contains("--net 'bridge=pvhnosuchbr0,vifname=pvhnobr0'"), "\(text)")
        #expect(!text.contains("\n"))
    }

    static let ip = FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") ? "/usr/sbin/ip" : "/usr/bin/ip"

    /// Sends `count` datagrams from a UDP socket made inside `namespace`
    /// (setns on a thread of its own) and counts those that come back
    /// unchanged, each awaited for at most 5 s.
    static func udpRoundTrips(namespace: String, to address: String, port: UInt16, count: Int) throws -> Int {
        let result = TAPOutcome()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { done.signal() }
            // Glibc's setns(2) is not in Swift's Glibc module (_GNU_SOURCE);
            // 0x40000000 is CLONE_NEWNET (linux/sched.h).
            typealias SetNS = @convention(c) (Int32, Int32) -> Int32
            guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "setns") else { return }
            let setns = unsafeBitCast(symbol, to: SetNS.self)
            let nsfd = open("/run/netns/\(namespace)", O_RDONLY)
            guard nsfd >= 0, setns(nsfd, 0x4000_0000) == 0 else { return }
            close(nsfd)
            let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard fd >= 0 else { return }
            defer { close(fd) }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var to = sockaddr_in()
            to.sin_family = sa_family_t(AF_INET)
            to.sin_port = port.bigEndian
            inet_pton(AF_INET, address, &to.sin_addr)
            var good = 0
            for i in 0..<count {
                let payload = Array("pvh udp echo \(i) ".utf8) + [UInt8](repeating: UInt8(i), count: 200)
                let sent = withUnsafePointer(to: &to) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
                guard sent == payload.count else { continue }
                var buffer = [UInt8](repeating: 0, count: 2048)
                let got = recv(fd, &buffer, buffer.count, 0)
                if got == payload.count, Array(buffer[0..<got]) == payload { good += 1 }
            }
            result.finish(ping: "", echoed: good)
        }
        thread.start()
        done.wait()
        return result.snapshot.echoed
    }
}

/// A TCP echo server on all of the host's addresses (passt maps the
/// guest's gateway address to the host), on a port the kernel picks. With
/// `closeAfter`, a connection is closed once that many bytes were echoed
/// (a client such as busybox nc that never half-closes then sees the end).
final class TCPEchoServer: @unchecked Sendable {
    let port: UInt16
    private let lock = NSLock()
    private var echoed = 0
    /// Bytes echoed so far, over all connections.
    var bytesEchoed: Int { lock.withLock { echoed } }
    private let listener: Int32

    init(closeAfter: Int? = nil) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 4) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else {
            close(fd)
            throw POSIXError(.EADDRINUSE)
        }
        listener = fd
        port = UInt16(bigEndian: address.sin_port)
        Thread { [self] in
            while true {
                let connection = accept(fd, nil, nil)
                guard connection >= 0 else { return }
                Thread {
                    var buffer = [UInt8](repeating: 0, count: 65536)
                    var total = 0
                    while closeAfter.map({ total < $0 }) ?? true {
                        let n = recv(connection, &buffer, buffer.count, 0)
                        guard n > 0 else { break }
                        var off = 0
                        while off < n {
                            let w = buffer[off..<n].withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                            guard w > 0 else { break }
                            off += w
                        }
                        self.lock.withLock { self.echoed += n }
                        total += n
                    }
                    close(connection)
                }.start()
            }
        }.start()
    }

    func stop() {
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }
}

/// What the TAP test's host side saw, written from the console-line queue.
final class TAPOutcome: @unchecked Sendable {
    // SAFETY (Sendable): every field is read and written under `lock`.
    private let lock = NSLock()
    private var ping = ""
    private var echoed = 0
    private var problems: [String] = []

    func note(problem: String) { lock.withLock { problems.append(problem) } }
    func finish(ping: String, echoed: Int) {
        lock.withLock {
            self.ping = ping
            self.echoed = echoed
        }
    }
    var snapshot: (ping: String, echoed: Int, problems: [String]) { lock.withLock { (ping, echoed, problems) } }
}

/// Runs `body` on a thread of its own with no signal blocked, and waits for it.
func withSignalsUnblocked<T: Sendable>(_ body: @escaping @Sendable () throws -> T) throws -> T {
    let box = TAPResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    let thread = Thread {
        var none = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, nil)
        box.set(Result { try body() })
        done.signal()
    }
    thread.start()
    done.wait()
    return try box.get()
}

final class TAPResultBox<T: Sendable>: @unchecked Sendable {
    // SAFETY (Sendable): `value` is read and written under `lock`.
    private let lock = NSLock()
    private var value: Result<T, any Error>?
    func set(_ r: Result<T, any Error>) { lock.withLock { value = r } }
    func get() throws -> T {
        guard let v = lock.withLock({ value }) else { throw POSIXError(.EINTR) }
        return try v.get()
    }
}
