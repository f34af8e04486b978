import BlockBackend
import ConsoleBackend
import DeviceRuntime
import Foundation
import NetBackend
import PVHMetrics
import Locking
import Testing
import VMM
import XenABI

/// A domain's counter objects, made by hand: what `DomainMetricSource(domain:)`
/// takes from a running `Domain`.
struct Fixture {
    let domain = DomainMetrics()
    let console = ConsoleMetrics()
    let runtime = DeviceRuntime()
    let disk = BlockMetrics()
    let queues = [NetMetrics(), NetMetrics()]
    let vbd: RuntimeDevice

    init() { vbd = runtime.makeDevice("vbd-51712") }

    var source: DomainMetricSource {
        DomainMetricSource(name: "web", domainID: DomainID(rawValue: 7), vcpus: 2, memoryBytes: 128 << 20,
                           domain: domain, console: console, runtime: runtime,
                           disks: [.init(device: "vbd-51712", metrics: disk)],
                           networks: [.init(device: "vif-0", queues: queues)])
    }
}

/// The value of the series `name{labels}` in a text exposition, nil if absent.
func value(_ text: String, _ name: String, _ labels: [(String, String)]) -> Double? {
    let want = labels.map { "\($0.0)=\"\($0.1)\"" }
    for line in text.split(separator: "\n") where line.hasPrefix(name + "{") || line.hasPrefix(name + " ") {
        guard let space = line.lastIndex(of: " ") else { continue }
        let series = line[..<space]
        let inBraces = series.drop(while: { $0 != "{" }).dropFirst().dropLast()
        let have = Set(inBraces.split(separator: ",").map(String.init))
        if String(series.prefix(while: { $0 != "{" })) == name, have == Set(want) {
            return Double(line[line.index(after: space)...])
        }
    }
    return nil
}

@Suite("PVHMetrics: the exposition")
struct ExpositionTests {
    let base = [("domain", "web"), ("domid", "7")]

    func scrape(_ registry: PVHMetricsRegistry) -> String { String(decoding: registry.exposition(), as: UTF8.self) }

    @Test("a device hot-plugged after boot appears at the next scrape with its counters; detached, its series go; the domain's stay")
    func hotPluggedDevicesComeAndGo() {
        let f = Fixture()
        let registry = PVHMetricsRegistry()
        let disks = Lock<[DomainMetricSource.Disk]>([])
        let nics = Lock<[DomainMetricSource.NetworkInterface]>([])
        registry.add(DomainMetricSource(name: "web", domainID: DomainID(rawValue: 7), vcpus: 2, memoryBytes: 128 << 20,
                                        domain: f.domain, disks: { disks.withLock { $0 } }, networks: { nics.withLock { $0 } }))
        f.domain.exits.wrappingAdd(2, ordering: .relaxed)
        var text = scrape(registry)
        #expect(value(text, "pvh_block_requests_total", base + [("device", "vbd-51712"), ("op", "read")]) == nil)
        #expect(value(text, "pvh_exits_total", base) == 2)

        // Hot-plugged: a disk and an interface, with traffic before the scrape.
        disks.withLock { $0.append(.init(device: "vbd-51712", metrics: f.disk)) }
        nics.withLock { $0.append(.init(device: "vif-1", queues: f.queues)) }
        f.disk.readRequests.wrappingAdd(3, ordering: .relaxed)
        f.queues[1].rxPackets.wrappingAdd(9, ordering: .relaxed)
        f.disk.requestsInFlight.wrappingAdd(1, ordering: .relaxed)
        text = scrape(registry)
        #expect(value(text, "pvh_block_requests_total", base + [("device", "vbd-51712"), ("op", "read")]) == 3, "\(text)")
        #expect(value(text, "pvh_block_requests_in_flight", base + [("device", "vbd-51712")]) == 1, "\(text)")
        #expect(value(text, "pvh_net_packets_total", base + [("device", "vif-1"), ("queue", "1"), ("direction", "rx")]) == 9, "\(text)")

        // The disk detached: its series go, the interface's and the domain's stay.
        disks.withLock { $0.removeAll() }
        f.domain.exits.wrappingAdd(1, ordering: .relaxed)
        text = scrape(registry)
        #expect(!text.contains("vbd-51712"), "\(text)")
        #expect(value(text, "pvh_net_packets_total", base + [("device", "vif-1"), ("queue", "1"), ("direction", "rx")]) == 9, "\(text)")
        #expect(value(text, "pvh_exits_total", base) == 3)

        // Attached again (new counters from zero): the series comes back from them.
        let again = BlockMetrics()
        again.readRequests.wrappingAdd(1, ordering: .relaxed)
        disks.withLock { $0.append(.init(device: "vbd-51712", metrics: again)) }
        text = scrape(registry)
        #expect(value(text, "pvh_block_requests_total", base + [("device", "vbd-51712"), ("op", "read")]) == 1, "\(text)")
    }

    @Test("counters appear with their names, labels and values, and follow the atomics between scrapes")
    func countersFollowAtomics() {
        let f = Fixture()
        let registry = PVHMetricsRegistry()
        registry.add(f.source)
        f.domain.pageHypercalls.wrappingAdd(5, ordering: .relaxed)
        f.domain.exits.wrappingAdd(40, ordering: .relaxed)
        f.disk.readRequests.wrappingAdd(3, ordering: .relaxed)
        f.disk.bytesWritten.wrappingAdd(4096, ordering: .relaxed)
        f.disk.requestsInFlight.wrappingAdd(2, ordering: .relaxed)
        f.disk.inlineOperations.wrappingAdd(6, ordering: .relaxed)
        f.queues[1].txPackets.wrappingAdd(9, ordering: .relaxed)
        f.vbd.metrics.pumps.wrappingAdd(11, ordering: .relaxed)
        f.console.outputWritten.wrappingAdd(100, ordering: .relaxed)

        var text = scrape(registry)
        #expect(text.contains("# TYPE pvh_hypercalls_total counter"))
        #expect(text.contains("# TYPE pvh_block_requests_in_flight gauge"))
        #expect(value(text, "pvh_hypercalls_total", base + [("transport", "page")]) == 5)
        #expect(value(text, "pvh_hypercalls_total", base + [("transport", "breakpoint")]) == 0)
        #expect(value(text, "pvh_exits_total", base) == 40)
        #expect(value(text, "pvh_domain_vcpus", base) == 2)
        #expect(value(text, "pvh_domain_memory_bytes", base) == 134_217_728, "\(text.split(separator: "\n").filter { $0.contains("memory") })")
        #expect(value(text, "pvh_block_requests_total", base + [("device", "vbd-51712"), ("op", "read")]) == 3)
        #expect(value(text, "pvh_block_bytes_total", base + [("device", "vbd-51712"), ("direction", "write")]) == 4096)
        #expect(value(text, "pvh_block_requests_in_flight", base + [("device", "vbd-51712")]) == 2)
        #expect(value(text, "pvh_block_inline_operations_total", base + [("device", "vbd-51712")]) == 6)
        #expect(value(text, "pvh_net_packets_total",
                      base + [("device", "vif-0"), ("queue", "1"), ("direction", "tx")]) == 9)
        #expect(value(text, "pvh_net_packets_total",
                      base + [("device", "vif-0"), ("queue", "0"), ("direction", "tx")]) == 0)
        #expect(value(text, "pvh_net_drops_total",
                      base + [("device", "vif-0"), ("queue", "0"), ("reason", "rx_backlog_full")]) == 0)
        #expect(value(text, "pvh_device_pumps_total", base + [("device", "vbd-51712")]) == 11)
        #expect(value(text, "pvh_console_bytes_total", base + [("direction", "output")]) == 100)
        #expect(value(text, "pvh_metrics_scrapes_total", []) == 1)

        // The atomics move on; the next scrape follows, counters and gauges.
        f.domain.pageHypercalls.wrappingAdd(2, ordering: .relaxed)
        f.disk.requestsInFlight.wrappingAdd(-2, ordering: .relaxed)
        f.queues[1].txPackets.wrappingAdd(1, ordering: .relaxed)
        text = scrape(registry)
        #expect(value(text, "pvh_hypercalls_total", base + [("transport", "page")]) == 7)
        #expect(value(text, "pvh_block_requests_in_flight", base + [("device", "vbd-51712")]) == 0)
        #expect(value(text, "pvh_net_packets_total",
                      base + [("device", "vif-0"), ("queue", "1"), ("direction", "tx")]) == 10)
        #expect(value(text, "pvh_metrics_scrapes_total", []) == 2)
    }

    @Test("a runtime device made anew (a block reconnection) adds to its series, never resets it")
    func replacedDeviceAccumulates() {
        let f = Fixture()
        let registry = PVHMetricsRegistry()
        registry.add(f.source)
        f.vbd.metrics.pumps.wrappingAdd(4, ordering: .relaxed)
        _ = scrape(registry)
        f.runtime.remove(f.vbd)
        let again = f.runtime.makeDevice("vbd-51712")
        again.metrics.pumps.wrappingAdd(3, ordering: .relaxed)
        let text = scrape(registry)
        #expect(value(text, "pvh_device_pumps_total", base + [("device", "vbd-51712")]) == 7)
    }

    @Test("a domain replaced under its name (restarted) goes on; a removed one's series go")
    func replaceAndRemove() {
        let registry = PVHMetricsRegistry()
        let first = Fixture()
        registry.add(first.source)
        first.domain.exits.wrappingAdd(10, ordering: .relaxed)
        _ = scrape(registry)
        let second = Fixture()
        registry.add(second.source)
        second.domain.exits.wrappingAdd(4, ordering: .relaxed)
        var text = scrape(registry)
        #expect(value(text, "pvh_exits_total", base) == 14)
        registry.remove(domain: "web")
        text = scrape(registry)
        #expect(value(text, "pvh_exits_total", base) == nil)
        #expect(!text.contains("domain=\"web\""))
    }

    @Test("vCPU time is read from the vCPU thread's /proc stat")
    func vcpuTime() throws {
        let f = Fixture()
        // This thread stands in for a vCPU: burn a little CPU so its time is non-zero.
        let link = try #require(try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self"))
        let tid = try #require(link.split(separator: "/").last.flatMap { Int32($0) })
        f.domain.vcpuThreadIDs.withLock { $0[0] = tid }
        let start = ContinuousClock.now
        var x: UInt64 = 1
        while ContinuousClock.now - start < .milliseconds(100) { x = x &* 6364136223846793005 &+ 1 }
        #expect(x != 0)
        let registry = PVHMetricsRegistry()
        registry.add(f.source)
        let text = scrape(registry)
        let user = value(text, "pvh_vcpu_seconds_total", base + [("vcpu", "0"), ("mode", "user")]) ?? -1
        let system = value(text, "pvh_vcpu_seconds_total", base + [("vcpu", "0"), ("mode", "system")]) ?? -1
        #expect(user >= 0 && system >= 0)
        #expect(user + system > 0)
    }

    @Test("every metric name is documented in README's Metrics table")
    func readmeTable() throws {
        let readme = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("README.md")
        let text = try String(contentsOf: readme, encoding: .utf8)
        for metric in PVHMetric.allCases {
            #expect(text.contains("| `\(metric.rawValue)` |"), "\(metric.rawValue) missing from README")
        }
    }
}

@Suite("PVHMetrics: --metrics addresses")
struct AddressTests {
    @Test("good addresses", arguments: [
        ("127.0.0.1:9100", MetricsAddress.tcp(host: "127.0.0.1", port: 9100)),
        ("localhost:1", .tcp(host: "localhost", port: 1)),
        ("[::1]:9100", .tcp(host: "::1", port: 9100)),
        ("/run/pvh/web.metrics", .unix(path: "/run/pvh/web.metrics")),
        ("./m.sock", .unix(path: "./m.sock")),
    ])
    func good(_ text: String, _ address: MetricsAddress) throws {
        #expect(try MetricsAddress(parsing: text) == address)
    }

    @Test("bad addresses say why", arguments: [
        ("9100", "expected HOST:PORT"),
        (":9100", "no host"),
        ("localhost:0", "1 to 65535"),
        ("localhost:70000", "1 to 65535"),
        ("localhost:http", "1 to 65535"),
        ("/" + String(repeating: "x", count: 120), "107 bytes"),
    ])
    func bad(_ text: String, _ reason: String) {
        #expect(throws: MetricsServerError.self) { try MetricsAddress(parsing: text) }
        do {
            _ = try MetricsAddress(parsing: text)
        } catch {
            #expect(error.description.contains(reason), "\(error)")
        }
    }
}

@Suite("PVHMetrics: the server")
struct ServerTests {
    @Test("GET /metrics on a Unix socket: mode 0600, exposition 0.0.4; stop removes the socket")
    func unixSocket() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-metrics-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("m.sock").path
        let f = Fixture()
        let registry = PVHMetricsRegistry()
        registry.add(f.source)
        f.domain.exits.wrappingAdd(3, ordering: .relaxed)
        // A generous bound: in the whole suite the KVM tests, which block
        // while a guest runs (the hostile guest's for over a minute), can
        // hold both of the concurrency pool's threads (one per core) for
        // minutes; the server starts once one is free (CI saw 139 s).
        let server = try await MetricsServer.startServing(.unix(path: path), registry: registry, timeout: .seconds(600))
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let response = try await HTTPGet.onThread(path: path, target: "/metrics")
        #expect(response.hasPrefix("HTTP/1.1 200"), "\(response)")
        #expect(response.lowercased().contains("content-type: text/plain; version=0.0.4"))
        #expect(value(response, "pvh_exits_total", [("domain", "web"), ("domid", "7")]) == 3)
        let missing = try await HTTPGet.onThread(path: path, target: "/nothing")
        #expect(missing.hasPrefix("HTTP/1.1 404"), "\(missing)")
        await server.stopServing()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("a socket in a missing directory: a bind error, not a time-out")
    func bindFailure() async {
        do {
            let server = try await MetricsServer.startServing(.unix(path: "/nonexistent-\(UUID().uuidString)/m.sock"),
                                                              registry: PVHMetricsRegistry(), timeout: .seconds(600))
            Issue.record("bound \(server.address)")
            await server.stopServing()
        } catch {
            guard case .bind = error else {
                Issue.record("\(error)")
                return
            }
        }
    }
}

/// A plain HTTP/1.1 GET over a Unix socket (VMM's `UnixSocket`), every wait bounded.
enum HTTPGet {
    struct Timeout: Error {}

    /// `unix` on a thread of its own: it blocks in poll(2), which must not
    /// hold one of the concurrency pool's threads the server answers on.
    static func onThread(path: String, target: String) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread { continuation.resume(with: Result { try unix(path: path, target: target) }) }.start()
        }
    }

    /// The bound is the server-start bound's, for the same reason: the
    /// server answers on the concurrency pool, which the whole suite's
    /// blocking KVM tests can hold for minutes (CI saw a 10 s bound run out).
    static func unix(path: String, target: String, timeout: Double = 600) throws -> String {
        let socket = try UnixSocket.connect(to: path)
        defer { socket.close() }
        guard socket.writeAll(Array("GET \(target) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)) else {
            throw Timeout()
        }
        let deadline = ContinuousClock.now + .seconds(timeout)
        var bytes: [UInt8] = []
        while ContinuousClock.now < deadline {
            guard socket.waitReadable(timeout: 1) else { continue }
            guard let chunk = socket.read(), !chunk.isEmpty else { return String(decoding: bytes, as: UTF8.self) }
            bytes += chunk
        }
        throw Timeout()
    }
}
