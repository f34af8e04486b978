import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's per-domain metrics, `pvh top`, `mem-set`/`mem-max`/
/// `vcpu-set` and the event stream, with test guests (the control scenario
/// keeps each running until control/shutdown). Every wait is bounded.
@Suite("pvh daemon: guest control", .enabled(if: Env.hasKVM && Env.hasPVHBinary, "needs /dev/kvm and .build/debug/pvh"))
struct GuestControlTests {
    let directory: String
    var environment: [String: String] { ["PVH_RUNTIME_DIR": directory, "PVH_LOG_DIR": directory] }
    var api: String { "\(directory)/api.sock" }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-control-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func pvh(_ arguments: [String]) throws -> CommandResult {
        try runCommand(Env.pvhBinary, arguments, environment: environment, timeout: .seconds(60))
    }

    func config(_ name: String, vcpus: Int = 1, extra: String = "") throws -> String {
        let path = "\(directory)/\(name).cfg"
        let text = """
            type = "pvh"
            name = "\(name)"
            kernel = "\(try Env.testGuest.get())"
            memory = 32
            vcpus = \(vcpus)
            extra = "pvh.scenarios=control"
            \(extra)
            """
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    func startDaemon() throws -> ChildProcess {
        let daemon = try ChildProcess(Env.pvhBinary, ["daemon", "--foreground", "--api-socket", api,
                                                      "--xenstore-socket", "\(directory)/xenstored.sock"], environment: environment)
        #expect(daemon.waitForLine(startingWith: "pvh daemon: ready", timeout: .seconds(60)) != nil, "\(daemon.errors)")
        return daemon
    }

    /// `GET path` on the daemon's socket.
    func get(_ path: String) throws -> String {
        let r = try runCommand("/usr/bin/curl", ["-s", "--max-time", "20", "--unix-socket", api, "http://localhost\(path)"], timeout: .seconds(30))
        #expect(r.status == 0, "\(r)")
        return r.stdout
    }

    /// A node's value through the API's XenStore route.
    func storeValue(_ path: String) throws -> String? {
        let node = try JSONSerialization.jsonObject(with: Data(try get("/v1/xenstore\(path)").utf8)) as? [String: Any]
        return node?["value"] as? String
    }

    /// Until every named guest's process laid out its tree (memory_target_kib
    /// listed), at most 60 s of CLI round trips.
    func waitForTrees(_ names: Set<String>) throws -> Bool {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let r = try pvh(["list", "--json"])
            let listed = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [[String: Any]] ?? []
            let ready = Set(listed.filter { $0["memory_target_kib"] != nil }.compactMap { $0["name"] as? String })
            if names.isSubset(of: ready) { return true }
        }
        return false
    }

    @Test("two guests: /metrics labels each guest's series, one TYPE per family; top -b -i 1 lists both; mem-set, mem-max, vcpu-set write the store")
    func metricsTopAndControls() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        for (name, vcpus) in [("alpha", 2), ("beta", 1)] {
            let r = try pvh(["create", try config(name, vcpus: vcpus)])
            #expect(r.status == 0, "\(r)")
        }
        #expect(try waitForTrees(["alpha", "beta"]))

        // The guests' counters through the daemon, each with its labels;
        // scraped again (at most 30 s) until both guests have bound an
        // event channel, which the test guest does early in its boot.
        // Its control scenario's XenStore watch on control/shutdown, on
        // the daemon's store, is waited for the same way.
        let bound = ["alpha", "beta"].enumerated().flatMap { i, name in
            ["pvh_hypercalls_by_number_total{domain=\"\(name)\",domid=\"\(i + 1)\",hypercall=\"event_channel_op\"} ",
             "pvh_xenstore_requests_total{domain=\"\(name)\",domid=\"\(i + 1)\",type=\"watch\"} 1\n"]
        }
        var text = try get("/metrics")
        let deadline = Date().addingTimeInterval(30)
        while !bound.allSatisfy(text.contains), Date() < deadline { text = try get("/metrics") }
        for (name, id) in [("alpha", 1), ("beta", 2)] {
            #expect(text.contains("pvh_exits_total{domain=\"\(name)\",domid=\"\(id)\"} "), "\(text.prefix(2000))")
            #expect(text.contains("pvh_domain_vcpus{domain=\"\(name)\",domid=\"\(id)\"} "))
            #expect(text.contains("pvh_hypercalls_by_number_total{domain=\"\(name)\",domid=\"\(id)\",hypercall=\"event_channel_op\"} "))
        }
        let lines = text.split(separator: "\n")
        for family in ["pvh_exits_total", "pvh_domain_vcpus", "pvh_metrics_scrapes_total", "pvh_vcpu_seconds_total"] {
            #expect(lines.filter { $0.hasPrefix("# TYPE \(family) ") }.count == 1, "\(family)")
        }
        #expect(text.contains("pvh_daemon_guest_scrape_failures_total 0"), "\(text.prefix(600))")
        // Each guest's XenStore requests on the daemon's store (its ring's),
        // by type and labelled as its other series: one watch each.
        for (name, id) in [("alpha", 1), ("beta", 2)] {
            #expect(text.contains("pvh_xenstore_requests_total{domain=\"\(name)\",domid=\"\(id)\",type=\"watch\"} 1\n"),
                    "\(text.split(separator: "\n").filter { $0.contains("xenstore") })")
        }
        #expect(lines.filter { $0.hasPrefix("# TYPE pvh_xenstore_requests_total counter") }.count == 1)

        let top = try pvh(["top", "-b", "-i", "1"])
        #expect(top.status == 0, "\(top)")
        let rows = top.stdout.split(separator: "\n")
        #expect(rows.first?.hasPrefix("      NAME  STATE   CPU(sec)") == true, "\(top.stdout)")
        #expect(rows.dropFirst().map { $0.split(separator: " ").first.map(String.init) ?? "" } == ["alpha", "beta"], "\(top.stdout)")
        #expect(rows.dropFirst().allSatisfy { $0.contains("-----r") && $0.contains("32768") }, "\(top.stdout)")

        // mem-set: memory/target in KiB, read back through the API.
        var r = try pvh(["mem-set", "alpha", "24m"])
        #expect(r.status == 0, "\(r)")
        #expect(try storeValue("/local/domain/1/memory/target") == "24576")
        // Below the target: refused as libxl does, nothing written.
        r = try pvh(["mem-max", "alpha", "16m"])
        #expect(r.status == 1 && r.stderr.contains("must be at least the memory target"), "\(r)")
        r = try pvh(["mem-max", "alpha", "40960k"])
        #expect(r.status == 0, "\(r)")
        #expect(try storeValue("/local/domain/1/memory/static-max") == "40960")
        r = try pvh(["mem-set", "alpha", "1x"])
        #expect(r.status == 2, "\(r)")
        // The guest process applied the cap (its log says so; the watch runs on its own).
        let applied = until(30) { (try? String(contentsOfFile: "\(directory)/alpha.log", encoding: .utf8))?.contains("memory limit: 10240 pages") == true }
        #expect(applied, "\((try? String(contentsOfFile: "\(directory)/alpha.log", encoding: .utf8)) ?? "")")

        r = try pvh(["vcpu-set", "alpha", "1"])
        #expect(r.status == 0, "\(r)")
        #expect(try storeValue("/local/domain/1/cpu/0/availability") == "online")
        #expect(try storeValue("/local/domain/1/cpu/1/availability") == "offline")
        r = try pvh(["vcpu-set", "alpha", "3"])
        #expect(r.status == 1 && r.stderr.contains("must be 1 to 2"), "\(r)")
        r = try pvh(["vcpu-set", "nope", "1"])
        #expect(r.status == 1 && r.stderr == "pvh: nope is an invalid domain identifier\n", "\(r)")
        let list = try pvh(["list", "alpha"])
        #expect(list.stdout.split(separator: "\n").last?.contains("    24     1     r-----") == true, "\(list.stdout)")

        let uptime = try pvh(["uptime", "beta"])
        #expect(uptime.status == 0 && uptime.stdout.hasPrefix("Name                                ID Uptime\nbeta                                 2  0:0"), "\(uptime)")
    }

    @Test("the event stream while a guest is created, paused, unpaused and shut down")
    func eventSequence() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        let events = try ChildProcess(Env.pvhBinary, ["events", "--json", "-n", "5", "--timeout", "120"], environment: environment)
        defer { events.stop() }
        #expect(events.waitForErrors(containing: "pvh: events: watching", timeout: .seconds(30)), "\(events.errors)")
        var r = try pvh(["create", try config("gamma")])
        #expect(r.status == 0, "\(r)")
        #expect(try waitForTrees(["gamma"]))
        r = try pvh(["pause", "gamma"])
        #expect(r.status == 0, "\(r)")
        r = try pvh(["unpause", "gamma"])
        #expect(r.status == 0, "\(r)")
        r = try pvh(["shutdown", "-w", "gamma"])
        #expect(r.status == 0, "\(r)")
        #expect(events.waitForExit(timeout: .seconds(60)) == 0, "\(events.output) \(events.errors)")
        let parsed = events.outputLines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(parsed.compactMap { $0["type"] as? String } == ["created", "paused", "unpaused", "shutdown", "destroyed"], "\(events.output)")
        #expect(parsed.allSatisfy { $0["name"] as? String == "gamma" && $0["domid"] as? Int == 1 })
        #expect(parsed.dropFirst(3).first?["reason"] as? String == "poweroff")
    }

    @Test("cpus=: each vCPU's thread is bound to its item of xl's list form (Cpus_allowed_list), the other threads are not; vcpu-list shows it, vcpu-pin changes it while the guest runs")
    func vcpuPinning() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let online = try String(contentsOfFile: "/sys/devices/system/cpu/online", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let last = ProcessInfo.processInfo.activeProcessorCount - 1
        let daemon = try startDaemon()
        defer { daemon.stop() }
        // A list that leaves a vCPU no CPU of this host: the daemon's refusal, no guest started.
        let refused = try pvh(["create", try config("nowhere", vcpus: 2, extra: "cpus = [ \"0\", \"\(last + 64)\" ]")])
        #expect(refused.status == 1 && refused.stderr.contains("nowhere.cfg: cpus '\(last + 64)': vCPU 1 would have no online CPU"),
                "\(refused)")
        let r = try pvh(["create", try config("pinned", vcpus: 2, extra: "cpus = [ \"0\", \"\(last)\" ]")])
        #expect(r.status == 0, "\(r)")
        #expect(try waitForTrees(["pinned"]))
        let listed = try JSONSerialization.jsonObject(with: Data(try pvh(["list", "-l", "pinned"]).stdout.utf8)) as? [[String: Any]]
        let pid = try #require(listed?.first?["pid"] as? Int)
        // Each thread's name and proc(5)'s Cpus_allowed_list, once both vCPU threads run.
        func threads() -> [String: String] {
            var found: [String: String] = [:]
            for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
                let base = "/proc/\(pid)/task/\(tid)"
                guard let comm = try? String(contentsOfFile: base + "/comm", encoding: .utf8),
                      let status = try? String(contentsOfFile: base + "/status", encoding: .utf8),
                      let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { continue }
                found["\(comm.trimmingCharacters(in: .whitespacesAndNewlines))/\(tid)"] =
                    line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)
            }
            return found
        }
        var seen: [String: String] = [:]
        #expect(until(60) {
            seen = threads()
            return seen.keys.filter { $0.hasPrefix("pvh-vcpu") }.count == 2
        }, "\(seen); daemon: \(daemon.errors); guest log: \((try? String(contentsOfFile: "\(directory)/pinned.log", encoding: .utf8)) ?? "none")")
        #expect(seen.first { $0.key.hasPrefix("pvh-vcpu0/") }?.value == "0", "\(seen)")
        #expect(seen.first { $0.key.hasPrefix("pvh-vcpu1/") }?.value == String(last), "\(seen)")
        let others = seen.filter { !$0.key.hasPrefix("pvh-vcpu") && !$0.key.hasPrefix("kvm-") }
        #expect(!others.isEmpty && others.values.allSatisfy { $0 == online }, "\(seen)")

        // vcpu-list shows it as xl does; vcpu-pin changes it while the guest runs.
        func affinities() throws -> [String] {
            let r = try pvh(["vcpu-list", "pinned"])
            #expect(r.status == 0, "\(r)")
            let rows = r.stdout.split(separator: "\n").dropFirst()
            #expect(rows.count == 2 && rows.allSatisfy { $0.hasPrefix("pinned ") }, "\(r.stdout)")
            return rows.map { String($0.split(separator: "  ").last ?? "") }
        }
        let list = try pvh(["vcpu-list"])
        #expect(list.stdout.hasPrefix("Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)\n"), "\(list)")
        let hostWide = last == 0 ? "all" : "0-\(last)"
        #expect(try affinities() == (last == 0 ? ["all / all", "all / all"] : ["0 / all", "\(last) / all"]))
        var pin = try pvh(["vcpu-pin", "pinned", "1", "0"])
        #expect(pin.status == 0, "\(pin)")
        #expect(threads().first { $0.key.hasPrefix("pvh-vcpu1/") }?.value == "0")
        pin = try pvh(["vcpu-pin", "pinned", "all", "all", "-"])
        #expect(pin.status == 0, "\(pin)")
        #expect(try affinities() == ["all / all", "all / all"], "\(hostWide)")
        pin = try pvh(["vcpu-pin", "pinned", "2", "0"])
        #expect(pin.status == 2 && pin.stderr == "pvh: vcpu-pin: vCPU '2': pinned has vCPUs 0 to 1 (or give all)\n", "\(pin)")
        pin = try pvh(["vcpu-pin", "pinned", "0", "0", "1"])
        #expect(pin.status == 2 && pin.stderr.contains("soft affinity '1'"), "\(pin)")
        pin = try pvh(["vcpu-pin", "nosuch", "0", "0"])
        #expect(pin.status == 1 && pin.stderr == "pvh: nosuch is an invalid domain identifier\n", "\(pin)")
        let shutdown = try pvh(["shutdown", "-w", "--timeout", "60", "pinned"])
        #expect(shutdown.status == 0, "\(shutdown)")
    }

    /// True once `condition` holds, false after `seconds`; each check waits
    /// 100 ms on a condition nobody signals (a bounded poll of a file).
    func until(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        let idle = NSCondition()
        while Date() < deadline {
            if condition() { return true }
            idle.lock()
            _ = idle.wait(until: Date().addingTimeInterval(0.1))
            idle.unlock()
        }
        return condition()
    }
}
