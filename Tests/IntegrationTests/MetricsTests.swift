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
        let elf = try Env.testGuest.get()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-metrics-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("metrics.sock").path
        let name = "metrics-\(getpid())"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Env.pvhBinary)
        p.arguments = ["run", "--kernel", elf, "--memory", "32", "--name", name, "--metrics", path,
                       "--cmdline", "pvh.scenarios=bench_exit pvh.bench=100000000"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // A bound, not synchronisation: a guest or server that hangs is killed.
        let pid = p.processIdentifier
        let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + 120, execute: watchdog)
        defer { watchdog.cancel() }
        // The guest's first console bytes: it runs, and the server (started
        // before the domain) is bound.
        #expect(!out.fileHandleForReading.availableData.isEmpty)

        let first = try scrape(path)
        #expect(first.hasPrefix("HTTP/1.1 200"), "\(first.prefix(300))")
        #expect(first.lowercased().contains("content-type: text/plain; version=0.0.4"))
        let domain = "domain=\"\(name)\""
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

        p.terminate()
        withExtendedLifetime(out) { p.waitUntilExit() }
        #expect(p.terminationStatus == 130)
        #expect(!FileManager.default.fileExists(atPath: path))
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(e == "pvh: guest stopped by the host\n")
    }

    func pvh(_ args: [String]) throws -> (status: Int32, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Env.pvhBinary)
        p.arguments = args
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: e, as: UTF8.self))
    }

    @Test("a bad --metrics address: one line, exit 2", arguments: [
        ("9100", "pvh: --metrics '9100': expected HOST:PORT, or a Unix socket path (one with a '/')\n"),
        ("localhost:0", "pvh: --metrics 'localhost:0': the port must be a number from 1 to 65535\n"),
    ])
    func badAddress(_ address: String, _ message: String) throws {
        let r = try pvh(["run", "--kernel", "/nonexistent", "--metrics", address])
        #expect(r.status == 2)
        #expect(r.stderr == message)
    }

    @Test("an address that cannot be bound: one line naming it, exit 2")
    func unbindable() throws {
        let r = try pvh(["run", "--kernel", "/nonexistent", "--name", "metrics-bind-\(getpid())",
                         "--metrics", "/nonexistent-dir/metrics.sock"])
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("pvh: --metrics '/nonexistent-dir/metrics.sock': "), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }
}
