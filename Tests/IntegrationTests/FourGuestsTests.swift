import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 12's "Done when" under KVM: the daemon starts 4 test guests from
/// xl.cfg files at once; `pvh list` and `list -l` show them; Debian's
/// `xenstore-ls` with no environment variable (the daemon on xenstored's
/// standard socket) lists all four; `pvh console` reads one guest's output
/// and sends it input; one guest's process SIGKILLed is marked crashed
/// (`on_crash="preserve"` applied) while the others keep answering: one
/// rebooted under its name (`on_reboot="restart"`), one shut down with
/// `-w`, one destroyed. Every wait is bounded; DaemonTests' helpers.
@Suite("pvh daemon: four guests", .enabled(if: Env.hasKVM && Env.hasPVHBinary, "needs /dev/kvm and .build/debug/pvh"))
struct FourGuestsTests {
    /// xenstored's standard socket (libxenstore's default without XENSTORED_PATH).
    static let standardStore = "/var/run/xenstored/socket"

    @Test("4 guests from xl.cfg files at once: list, list -l, xenstore-ls, console, SIGKILL (crashed, preserved), reboot, shutdown -w, destroy")
    func fourGuestsAtOnce() throws {
        let base = try DaemonTests()
        defer { try? FileManager.default.removeItem(atPath: base.directory) }
        // The standard socket when it is free (CI: a fresh machine, root);
        // when something has it (a xenstored, another daemon) this test's own
        // socket and XENSTORED_PATH, so a host's store is never taken over.
        let standardDirectory = (Self.standardStore as NSString).deletingLastPathComponent
        let useStandard = getuid() == 0 && !FileManager.default.fileExists(atPath: Self.standardStore)
        let madeDirectory = useStandard && !FileManager.default.fileExists(atPath: standardDirectory)
        defer { if madeDirectory { try? FileManager.default.removeItem(atPath: standardDirectory) } }
        let store = useStandard ? Self.standardStore : base.store
        let storeEnvironment = useStandard ? [] : ["XENSTORED_PATH=\(store)"]
        if !useStandard { print("FourGuestsTests: \(Self.standardStore) is taken (or not root): xenstore-ls uses XENSTORED_PATH=\(store)") }

        let daemon = try ChildProcess(Env.pvhBinary, ["daemon", "--foreground", "--api-socket", base.api, "--xenstore-socket", store],
                                      environment: base.environment)
        defer { daemon.stop() }
        try #require(daemon.waitForLine(startingWith: "pvh daemon: ready", timeout: .seconds(60)) != nil, "\(daemon.errors)")

        // alpha: the console (hello line, then an echoed input line), then control.
        // beta: control. gamma: control, on_reboot="restart". delta: control, on_crash="preserve".
        let configs = [
            try base.config("alpha", "extra = \"pvh.scenarios=console_ring,control pvh.console_input=1 pvh.console_timeout=120000\"\n"),
            try base.config("beta"),
            try base.config("gamma", "on_reboot = \"restart\"\n"),
            try base.config("delta", "on_crash = \"preserve\"\n"),
        ]
        // Four `pvh create` at once, each a client of the one daemon.
        let creates = try configs.map { try ChildProcess(Env.pvhBinary, ["create", $0], environment: base.environment) }
        for (create, name) in zip(creates, ["alpha", "beta", "gamma", "delta"]) {
            defer { create.stop() }
            #expect(create.waitForExit(timeout: .seconds(60)) == 0, "\(name): \(create.output) \(create.errors)")
            #expect(create.output.contains("(\(name)) created"), "\(create.output)")
        }

        // pvh list: xl's columns, the four by id (ids are handed out in the
        // order the daemon took the requests), all running.
        let table = try base.pvh(["list"])
        #expect(table.status == 0, "\(table)")
        let rows = table.stdout.split(separator: "\n").dropFirst().map { $0.split(separator: " ", omittingEmptySubsequences: true) }
        #expect(Set(rows.compactMap { $0.first.map(String.init) }) == ["alpha", "beta", "gamma", "delta"], "\(table.stdout)")
        #expect(rows.allSatisfy { $0.count == 6 && $0[2] == "32" && $0[3] == "1" && $0[4] == "r-----" }, "\(table.stdout)")
        #expect(rows.compactMap { Int($0[1]) }.sorted() == [1, 2, 3, 4], "\(table.stdout)")

        // pvh list -l: the JSON, parsed and checked.
        let long = try base.pvh(["list", "-l"])
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(long.stdout.utf8)) as? [[String: Any]], "\(long)")
        #expect(listed.compactMap { $0["domid"] as? Int } == [1, 2, 3, 4])
        var ids: [String: Int] = [:]
        var pids: [String: Int] = [:]
        for domain in listed {
            let name = try #require(domain["name"] as? String)
            ids[name] = domain["domid"] as? Int
            pids[name] = domain["pid"] as? Int
            #expect(domain["memory_mib"] as? Int == 32 && domain["vcpus"] as? Int == 1, "\(domain)")
            #expect(domain["state"] as? String == "running" && (domain["pid"] as? Int ?? 0) > 0, "\(domain)")
            let config = try #require(domain["config"] as? [String: Any])
            #expect(config["name"] as? String == name && config["memory"] as? Int == 32, "\(config)")
        }
        #expect(Set(ids.keys) == ["alpha", "beta", "gamma", "delta"])
        #expect((listed.first { $0["name"] as? String == "delta" }?["config"] as? [String: Any])?["on_crash"] as? String == "preserve")
        #expect((listed.first { $0["name"] as? String == "gamma" }?["config"] as? [String: Any])?["on_reboot"] as? String == "restart")

        // Debian's xenstore-ls with no XENSTORED_PATH (env -u: none inherited either).
        func xenstoreLs(_ path: String) throws -> CommandResult {
            try runCommand("/usr/bin/env", ["-u", "XENSTORED_PATH"] + storeEnvironment + ["/usr/bin/xenstore-ls", "-f", path])
        }
        let ls = try xenstoreLs("/local/domain")
        #expect(ls.status == 0, "\(ls)")
        for (name, id) in ids { #expect(ls.stdout.contains("/local/domain/\(id)/name = \"\(name)\""), "\(name) in \(ls.stdout)") }

        // pvh console alpha: its hello line (replayed or live), then a typed line echoed.
        let hello = "PVHTEST-CONSOLE-RING hello"
        let console = try ChildProcess(Env.pvhBinary, ["console", "alpha"], environment: base.environment, input: true)
        defer { console.stop() }
        #expect(console.waitForLine(startingWith: hello, timeout: .seconds(120)) != nil, "\(console.output) \(console.errors)")
        console.send(Array("four at once\r".utf8))
        #expect(console.waitForLine(startingWith: "PVHTEST-CONSOLE-ECHO four at once", timeout: .seconds(60)) != nil,
                "\(console.output) \(console.errors)")
        console.send([0x1d])
        #expect(console.waitForExit(timeout: .seconds(30)) == 0, "\(console.errors)")

        // SIGKILL delta's process: crashed, kept (on_crash="preserve").
        let deltaPID = try #require(pids["delta"])
        #expect(kill(pid_t(deltaPID), SIGKILL) == 0)
        func state(_ name: String) throws -> [String: Any]? { try base.domains().first { $0["name"] as? String == name } }
        let crashed = try base.until(30, daemon: daemon) { try state("delta")?["state"] as? String == "crashed" }
        let listedAfterKill = try base.domains()
        #expect(crashed, "\(listedAfterKill)")
        #expect(try state("delta")?["flags"] as? String == "---sc-")
        #expect(try state("delta")?["pid"] == nil)
        // The other three keep running, their processes the same.
        for name in ["alpha", "beta", "gamma"] {
            let d = try state(name)
            #expect(d?["state"] as? String == "running" && d?["pid"] as? Int == pids[name], "\(name): \(String(describing: d))")
        }

        // gamma rebooted (the guest answers control/shutdown): its name
        // kept, a new domain id (as xl's restart), a new process.
        let reboot = try base.pvh(["reboot", "-w", "--timeout", "60", "gamma"])
        #expect(reboot.status == 0, "\(reboot)")
        let gamma = try state("gamma")
        let gammaID = gamma?["domid"] as? Int
        #expect(gammaID != nil && gammaID != ids["gamma"] && !ids.values.contains(gammaID ?? 0), "\(String(describing: gamma))")
        #expect(gamma?["restarts"] as? Int == 1 && gamma?["state"] as? String == "running", "\(String(describing: gamma))")
        #expect(gamma?["pid"] as? Int != pids["gamma"])

        // alpha shut down with -w (its guest answers too): gone.
        let shutdown = try base.pvh(["shutdown", "-w", "--timeout", "60", "alpha"])
        #expect(shutdown.status == 0, "\(shutdown)")
        #expect(try state("alpha") == nil)
        #expect(base.guestLog("alpha").contains("PVHTEST control PASS"), "\(base.guestLog("alpha"))")

        // beta destroyed; delta (preserved) destroyed.
        #expect(try base.pvh(["destroy", "beta"]).status == 0)
        #expect(try base.pvh(["destroy", "delta"]).status == 0)
        let left = try base.domains()
        #expect(left.compactMap { $0["name"] as? String } == ["gamma"], "\(left)")
        let after = try xenstoreLs("/local/domain")
        #expect(after.stdout.contains("/local/domain/\(gammaID ?? 0)/name = \"gamma\""), "\(after)")
        #expect(!after.stdout.contains("/local/domain/\(ids["gamma"] ?? 0)/"), "\(after)")
        for name in ["alpha", "beta", "delta"] { #expect(!after.stdout.contains("\"\(name)\""), "\(name) in \(after.stdout)") }

        // SIGTERM: the daemon destroys gamma and ends; its sockets go.
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0, "\(daemon.errors)")
        #expect(!FileManager.default.fileExists(atPath: store) && !FileManager.default.fileExists(atPath: base.api))
        for line in ["event: crashed delta (domain \(ids["delta"] ?? 0)): killed by signal 9", "event: rebooted gamma",
                     "event: shutdown alpha", "event: destroyed beta", "event: destroyed delta"] {
            #expect(daemon.errors.contains(line), "\(line) in \(daemon.errors)")
        }
    }
}
