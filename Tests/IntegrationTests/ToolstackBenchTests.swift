import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `pvh-bench toolstack` with tiny parameters, so the benchmark's path
/// (daemon, `pvh create`, `pvh run`, the dmesg signal, smaps) cannot rot:
/// every case line comes out with a figure that could only be there if the
/// guests really started, and nothing is left behind.
@Suite("pvh-bench toolstack", .enabled(if: Env.hasKVM && Env.hasPVHBinary && Env.hasBenchBinary, "needs /dev/kvm, .build/debug/pvh and pvh-bench"))
struct ToolstackBenchTests {
    @Test("one round, bursts of 2: every case line, plausible figures, no process or directory left")
    func tinyRun() throws {
        let elf = try Env.testGuest.get()
        let bench = try ChildProcess(Env.benchBinary, ["toolstack", "--rounds", "1", "--guests", "2", "--timeout", "60",
                                                      "--pvh", Env.pvhBinary, "--kernel", elf])
        defer { bench.stop() }
        let status = bench.waitForExit(timeout: .seconds(240))
        #expect(status == 0, "\(bench.output)\n\(bench.errors)")
        let lines = bench.outputLines
        func figures(_ name: String) -> [Double] {
            guard let line = lines.first(where: { $0.hasPrefix("toolstack \(name) ") }) else { return [] }
            let words = line.split(separator: " ")
            // "pvh V UNIT" and, where there is one, "host V UNIT".
            return ["pvh", "host"].compactMap { key in words.firstIndex(of: Substring(key)).flatMap { Double(words[$0 + 1]) } }
        }
        let create = figures("create-first-insn")
        #expect(create.count == 2 && create.allSatisfy { $0 > 0 && $0 < 60_000 }, "\(lines)")
        let burst = figures("burst-starts")
        #expect(burst.count == 2 && burst.allSatisfy { $0 > 0 }, "\(lines)")
        let empty = figures("daemon-rss-0"), full = figures("daemon-rss-2")
        #expect(empty.count == 1 && full.count == 1 && empty[0] > 1, "\(lines)")
        // Beyond guest RAM: more than nothing (a Swift process), less than the guest.
        let beyond = figures("guest-rss-beyond-ram")
        #expect(beyond.count == 2 && beyond.allSatisfy { $0 > 1 && $0 < 128 }, "\(lines)")
        let touched = figures("guest-ram-touched")
        #expect(touched.count == 2 && touched.allSatisfy { $0 > 0 }, "\(lines)")
        // Its temporary directory (sockets, dmesg files, configs) is gone,
        // and no process it started (all inherit its PVH_RUNTIME_DIR: the
        // daemon, its guests, the pvh runs) is left.
        let directory = NSTemporaryDirectory() + "pvh-bench-toolstack-\(bench.pid)"
        #expect(!FileManager.default.fileExists(atPath: directory))
        #expect(Self.processes(withEnvironment: "PVH_RUNTIME_DIR=\(directory)/run").isEmpty)
    }

    /// Pids whose environment has `entry` (ours only: /proc/PID/environ is readable by its owner).
    static func processes(withEnvironment entry: String) -> [Int32] {
        let ids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return ids.compactMap(Int32.init).filter { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
            return data.split(separator: 0).contains { String(decoding: $0, as: UTF8.self) == entry }
        }
    }
}

extension Env {
    static let benchBinary = repo.appendingPathComponent(".build/debug/pvh-bench").path
    static let hasBenchBinary = FileManager.default.isExecutableFile(atPath: benchBinary)
}
