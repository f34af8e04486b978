import Foundation
import Testing
import VMM

/// `pvh run --metrics`: the counters of a running guest over HTTP, and the
/// one-line errors for a bad address.
@Suite("pvh run --metrics", .enabled(if: Env.hasPVHBinary, "needs .build/debug/pvh: run `swift build` first (scripts/test.sh does)"))
struct MetricsTests {
    /// The value of `name{labels…}` (all of `labels` among the series' own).
    func value(_ text: String, _ name: String, _ labels: [String]) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + "{") {
            guard labels.allSatisfy({ line.contains($0) }), let space = line.lastIndex(of: " ") else { continue }
            return Double(line[line.index(after: space)...])
        }
        return nil
    }

    func scrape(_ path: String) throws -> String {
        let socket = try UnixSocket.connect(to: path)
        defer { socket.close() }
        #expect(socket.writeAll(Array("GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8)))
        // Bounded: a server that never answers fails the test in 20 s.
        let deadline = ContinuousClock.now + .seconds(20)
        var bytes: [UInt8] = []
        while ContinuousClock.now < deadline {
            guard socket.waitReadable(timeout: 1) else { continue }
            guard let chunk = socket.read(), !chunk.isEmpty else { break }
            bytes += chunk
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test("a running test guest's counters at GET /metrics on a Unix socket; the socket goes with the guest",
          .enabled(if: Env.hasKVM, "needs /dev/kvm"))
    func scrapeRunningGuest() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-metrics-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("metrics.sock").path
        // Running once its console's first line came; the server was bound before the domain was built.
        let guest = try RunningGuest(cmdline: "pvh.scenarios=bench_exit pvh.bench=100000000",
                                     runtimeDirectory: dir.path, arguments: ["--metrics", path])
        defer { guest.child.stop() }

        let first = try scrape(path)
        #expect(first.hasPrefix("HTTP/1.1 200"), "\(first.prefix(300))")
        #expect(first.lowercased().contains("content-type: text/plain; version=0.0.4"))
        let domain = "domain=\"\(guest.name)\""
        #expect(value(first, "pvh_domain_vcpus", [domain, "domid=\"1\""]) == 1)
        let exits = value(first, "pvh_exits_total", [domain]) ?? 0
        #expect(exits > 0)
        #expect((value(first, "pvh_device_pumps_total", [domain, "device=\"console\""]) ?? 0) > 0, "\(first)")
        #expect(value(first, "pvh_hypercalls_total", [domain, "transport=\"page\""]) != nil)
        #expect(value(first, "pvh_vcpu_seconds_total", [domain, "vcpu=\"0\"", "mode=\"user\""]) != nil)
        // The guest goes on exiting (its bench loop): a later scrape sees more.
        var later = exits
        let until = ContinuousClock.now + .seconds(30)
        while later <= exits && ContinuousClock.now < until {
            later = value(try scrape(path), "pvh_exits_total", [domain]) ?? 0
        }
        #expect(later > exits)

        guest.child.process.terminate()
        #expect(guest.child.waitForExit(timeout: .seconds(30)) == 130)
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(guest.child.errors == "pvh: guest stopped by the host\n")
    }

    @Test("a bad --metrics address: one line, exit 2", arguments: [
        ("9100", "pvh: --metrics '9100': expected HOST:PORT, or a Unix socket path (one with a '/')\n"),
        ("localhost:0", "pvh: --metrics 'localhost:0': the port must be a number from 1 to 65535\n"),
    ])
    func badAddress(_ address: String, _ message: String) throws {
        let r = try runCommand(Env.pvhBinary, ["run", "--kernel", "/nonexistent", "--metrics", address])
        #expect(r.status == 2)
        #expect(r.stderr == message)
        // pvh create takes the same option, checked before the config is read.
        let c = try runCommand(Env.pvhBinary, ["create", "--metrics", address, "/nonexistent.cfg"])
        #expect(c.status == 2)
        #expect(c.stderr == message)
    }

    @Test("an address that cannot be bound: one line naming it, exit 2")
    func unbindable() throws {
        // A named guest keeps a log: in a directory of its own here.
        let logs = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-logs-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: logs) }
        let r = try runCommand(Env.pvhBinary, ["run", "--kernel", "/nonexistent", "--name", "metrics-bind-\(getpid())",
                         "--metrics", "/nonexistent-dir/metrics.sock"], environment: ["PVH_LOG_DIR": logs])
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("pvh: --metrics '/nonexistent-dir/metrics.sock': "), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }
}
