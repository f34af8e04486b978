import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `pvh daemon` with two test guests from xl.cfg files: the registry, the
/// CLI as the API's client, the host store for Debian's xenstore-ls, and a
/// guest process SIGKILLed (crashed, `on_crash="destroy"`) while the other
/// goes on. Every wait is bounded.
@Suite("pvh daemon", .enabled(if: Env.hasKVM && Env.hasPVHBinary, "needs /dev/kvm and .build/debug/pvh"))
struct DaemonTests {
    let directory: String
    /// The guests' logs (xl-NAME.log's) go under the test's directory too.
    var environment: [String: String] { ["PVH_RUNTIME_DIR": directory, "PVH_LOG_DIR": directory] }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-daemon-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func pvh(_ arguments: [String]) throws -> CommandResult {
        try runCommand(Env.pvhBinary, arguments, environment: environment, timeout: .seconds(60))
    }

    /// A test guest config: the control scenario keeps it running (up to
    /// 60 s of guest time) until control/shutdown.
    func config(_ name: String, _ extra: String = "") throws -> String {
        let path = "\(directory)/\(name).cfg"
        let text = """
            type = "pvh"
            name = "\(name)"
            kernel = "\(try Env.testGuest.get())"
            memory = 32
            extra = "pvh.scenarios=control"
            on_crash = "destroy"
            \(extra)
            """
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    var api: String { "\(directory)/api.sock" }
    var store: String { "\(directory)/xenstored.sock" }

    /// `pvh daemon --foreground` on this test's sockets, once it said it is
    /// ready; `destroyOnExit`: its SIGTERM destroys the guests (these tests'
    /// ends), rather than leave them for the next daemon (DaemonRestartTests).
    func startDaemon(destroyOnExit: Bool = true) throws -> ChildProcess {
        let daemon = try ChildProcess(Env.pvhBinary, ["daemon", "--foreground", "--api-socket", api, "--xenstore-socket", store]
                                          + (destroyOnExit ? ["--destroy-on-exit"] : []),
                                      environment: environment)
        #expect(daemon.waitForLine(startingWith: "pvh daemon: ready", timeout: .seconds(60)) != nil, "\(daemon.errors)")
        return daemon
    }

    /// `pvh list --json`, parsed.
    func domains() throws -> [[String: Any]] {
        let r = try pvh(["list", "--json"])
        #expect(r.status == 0, "\(r)")
        return try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]], "\(r.stdout)")
    }

    @Test("two guests from xl.cfg files: listed, in xenstore-ls; one SIGKILLed is crashed and destroyed, the other answers, then destroyed")
    func twoGuests() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        // The API socket is its owner's only.
        let mode = try FileManager.default.attributesOfItem(atPath: api)[.posixPermissions] as? Int
        #expect(mode == 0o600)

        for name in ["alpha", "beta"] {
            let r = try pvh(["create", try config(name)])
            #expect(r.status == 0, "\(r)")
            #expect(r.stdout.contains("(\(name)) created"), "\(r)")
        }
        // The name twice: one line, exit 1, as xl.
        let twice = try pvh(["create", "\(directory)/alpha.cfg"])
        #expect(twice.status == 1 && twice.stderr.hasSuffix("a domain named alpha already exists\n"), "\(twice)")

        let table = try pvh(["list"])
        #expect(table.status == 0)
        let rows = table.stdout.split(separator: "\n")
        #expect(rows.first?.hasPrefix("Name") == true && rows.first?.hasSuffix("State   Time(s)") == true, "\(table.stdout)")
        #expect(rows.dropFirst().map { String($0.prefix { $0 != " " }) } == ["alpha", "beta"], "\(table.stdout)")
        #expect(rows.dropFirst().allSatisfy { $0.contains("r-----") }, "\(table.stdout)")

        let long = try pvh(["list", "-l"])
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(long.stdout.utf8)) as? [[String: Any]])
        #expect(listed.compactMap { $0["name"] as? String } == ["alpha", "beta"])
        #expect(listed.compactMap { $0["domid"] as? Int } == [1, 2])
        #expect(listed.allSatisfy { $0["state"] as? String == "running" && ($0["pid"] as? Int ?? 0) > 0 })
        #expect(listed.allSatisfy { ($0["config"] as? [String: Any])?["on_crash"] as? String == "destroy" })

        // Debian's xenstore-ls against the daemon's store lists both domains.
        let ls = try runCommand("/usr/bin/xenstore-ls", ["-f", "/local/domain"], environment: ["XENSTORED_PATH": store])
        #expect(ls.status == 0, "\(ls)")
        #expect(ls.stdout.contains("/local/domain/1/name = \"alpha\"") && ls.stdout.contains("/local/domain/2/name = \"beta\""), "\(ls)")
        #expect(ls.stdout.contains("/local/domain/2/vm = \"/vm/"), "\(ls)")

        // SIGKILL alpha's process: crashed, on_crash="destroy" applies.
        let alphaPID = try #require(listed.first?["pid"] as? Int)
        #expect(kill(pid_t(alphaPID), SIGKILL) == 0)
        // Each try is a whole CLI round trip through the API; bounded.
        let deadline = Date().addingTimeInterval(30)
        var names = ["alpha", "beta"]
        while names.contains("alpha") && Date() < deadline { names = try domains().compactMap { $0["name"] as? String } }
        #expect(names == ["beta"])
        let unknown = try pvh(["list", "alpha"])
        #expect(unknown.status == 1 && unknown.stderr == "pvh: alpha is an invalid domain identifier\n", "\(unknown)")
        #expect(try domains().first?["state"] as? String == "running")
        // beta still answers (pvh xenstore finds it in the daemon's store).
        let read = try pvh(["xenstore", "read", "beta", "name"])
        #expect(read.status == 0 && read.stdout == "beta\n", "\(read)")
        let after = try runCommand("/usr/bin/xenstore-ls", ["-f", "/local/domain"], environment: ["XENSTORED_PATH": store])
        #expect(!after.stdout.contains("\"alpha\"") && after.stdout.contains("/local/domain/2/name = \"beta\""), "\(after)")

        // beta destroyed; an unknown guest is one line and status 1.
        let destroyed = try pvh(["destroy", "beta"])
        #expect(destroyed.status == 0, "\(destroyed)")
        #expect(try domains().isEmpty)
        let again = try pvh(["destroy", "beta"])
        #expect(again.status == 1 && again.stderr == "pvh: beta is an invalid domain identifier\n", "\(again)")

        // SIGTERM ends the daemon cleanly; its sockets go with it.
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0, "\(daemon.errors)")
        #expect(!FileManager.default.fileExists(atPath: api) && !FileManager.default.fileExists(atPath: store))
        // Its log (stderr, whole once it exited) has the crash as the daemon saw it.
        #expect(daemon.errors.contains("event: crashed alpha (domain 1): killed by signal 9"), "\(daemon.errors)")
        #expect(daemon.errors.contains("event: destroyed beta (domain 2)"), "\(daemon.errors)")
    }

    /// `xenstore-ls -f PATH` (Debian's) on the daemon's store.
    func storeListing(_ path: String = "/local/domain") throws -> String {
        let ls = try runCommand("/usr/bin/xenstore-ls", ["-f", path], environment: ["XENSTORED_PATH": store])
        return ls.status == 0 ? ls.stdout : ""
    }

    /// Waits (up to `seconds`, checking every 200 ms while the daemon runs)
    /// until `condition` holds; whether it did.
    func until(_ seconds: Double, daemon: ChildProcess, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            if daemon.waitForExit(timeout: .milliseconds(200)) != nil { return false }
        }
        return try condition()
    }

    /// A guest's log (the guest's hypervisor console is there: PVHTEST lines
    /// as `(dN) PVHTEST ...`, N pvh's domain id).
    func guestLog(_ name: String) -> String {
        (try? String(contentsOfFile: "\(directory)/\(name).log", encoding: .utf8)) ?? ""
    }

    @Test("two guests on the daemon's store: the xenstore scenario passes over it under the registry's ids; xenstore-ls shows the tree and the vbd; SIGKILL removes one tree while the other answers; shutdown -w")
    func guestsOnTheDaemonStore() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        let disk = "\(directory)/disk.img"
        #expect(FileManager.default.createFile(atPath: disk, contents: nil))
        try FileHandle(forWritingTo: URL(fileURLWithPath: disk)).truncate(atOffset: 16 << 20)
        // The xenstore scenario, then control: each waits for its
        // control/shutdown once its checks are done ("control WAITING").
        let scenarios = "extra = \"pvh.scenarios=xenstore,control\"\n"
        #expect(try pvh(["create", try config("alpha", scenarios + "disk = [ '\(disk),raw,xvda,rw' ]\n")]).status == 0)
        #expect(try pvh(["create", try config("beta", scenarios)]).status == 0)
        let listed = try domains()
        let ids = Dictionary(uniqueKeysWithValues: listed.compactMap { d in (d["name"] as? String).map { ($0, d["domid"] as? Int ?? 0) } })
        #expect(ids == ["alpha": 1, "beta": 2])

        // Both guests' trees, written by their processes into the daemon's store.
        let complete = try until(120, daemon: daemon) {
            let ls = try storeListing()
            return ls.contains("/local/domain/1/store/ring-ref") && ls.contains("/local/domain/2/store/ring-ref")
                && ls.contains("/local/domain/1/device/vbd/51712/state")
        }
        let ls = try storeListing()
        #expect(complete, "\(ls)")
        for id in [1, 2] {
            for node in ["name", "domid = \"\(id)\"", "vm = \"/vm/", "memory/target", "cpu/0/availability", "console/type", "control/shutdown"] {
                #expect(ls.contains("/local/domain/\(id)/\(node)"), "\(node) of domain \(id) in \(ls)")
            }
        }
        #expect(ls.contains("/local/domain/1/device/vbd/51712/backend = \"/local/domain/0/backend/vbd/1/51712\""), "\(ls)")
        let backends = try storeListing("/local/domain/0/backend")
        // No blkfront in these scenarios: the backend waits for one (InitWait).
        #expect(backends.contains("/local/domain/0/backend/vbd/1/51712/state = \"2\""), "the vbd backend's state: \(backends)")
        // The API reads the same store: a guest's whole tree.
        let node = try runCommand("/usr/bin/curl", ["-s", "--unix-socket", api, "http://localhost/v1/xenstore/local/domain/1/device/vbd/51712"])
        #expect(node.stdout.contains("\"backend\""), "\(node)")

        // Each guest's xenstore checks over the daemon's store, under the
        // registry's id: pvh's (dN) is the id, and xenstore.domid compares
        // the guest's CPUID domain id with the store's domid node.
        let waiting = until(240, daemon: daemon) {
            guestLog("alpha").contains("PVHTEST control WAITING") && guestLog("beta").contains("PVHTEST control WAITING")
        }
        #expect(waiting, "\(guestLog("alpha"))\n\(guestLog("beta"))")
        for (name, id) in [("alpha", 1), ("beta", 2)] {
            let lines = guestLog(name).split(separator: "\n").filter { $0.contains("PVHTEST xenstore.") }
            #expect(lines.count >= 30, "\(guestLog(name))")
            #expect(lines.allSatisfy { $0.contains("(d\(id)) PVHTEST xenstore.") && $0.contains(" PASS") }, "\(lines)")
            #expect(lines.contains { $0.contains("(d\(id)) PVHTEST xenstore.domid PASS") }, "\(name): domain \(id) inside the guest")
        }

        // SIGKILL alpha's process: its tree and its backend go, @releaseDomain fires; beta answers.
        // xenstore-watch exits after two events: the initial one, then the release.
        let watch = try ChildProcess("/usr/bin/xenstore-watch", ["-n", "2", "@releaseDomain"], environment: ["XENSTORED_PATH": store])
        defer { watch.stop() }
        #expect(watch.waitForLine(startingWith: "@releaseDomain", timeout: .seconds(10)) != nil, "the initial event")
        let alphaPID = try #require(listed.first { $0["name"] as? String == "alpha" }?["pid"] as? Int)
        #expect(kill(pid_t(alphaPID), SIGKILL) == 0)
        let gone = try until(30, daemon: daemon) { try !domains().contains { $0["name"] as? String == "alpha" } }
        #expect(gone)
        #expect(watch.waitForExit(timeout: .seconds(10)) == 0, "@releaseDomain fired: \(watch.output)")
        let after = try storeListing("/")
        #expect(!after.contains("/local/domain/1/") && !after.contains("/local/domain/0/backend/vbd/1"), "\(after)")
        #expect(after.contains("/local/domain/2/store/ring-ref"), "\(after)")
        let read = try pvh(["xenstore", "read", "beta", "domid"])
        #expect(read.status == 0 && read.stdout == "2\n", "\(read)")

        // shutdown -w through the daemon's store: control/shutdown reaches beta's watch.
        let shutdown = try pvh(["shutdown", "-w", "--timeout", "60", "beta"])
        #expect(shutdown.status == 0, "\(shutdown)")
        #expect(try domains().isEmpty)
        #expect(guestLog("beta").contains("(d2) PVHTEST control PASS"), "\(guestLog("beta"))")
        let end = try storeListing("/")
        #expect(!end.contains("/local/domain/2") && !end.contains("/vm/"), "\(end)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0)
        #expect(daemon.errors.contains("event: crashed alpha (domain 1): killed by signal 9"), "\(daemon.errors)")
    }

    @Test("reboot -w: the daemon restarts the guest under its name and UUID with a new domain id, as xl does (on_reboot's default); its store tree moves; shutdown -w: gone")
    func rebootAndShutdown() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        #expect(try pvh(["create", try config("gamma")]).status == 0)
        let before = try #require(try domains().first)
        // Asked at once: the daemon retries until the new guest process's store answers.
        let reboot = try pvh(["reboot", "-w", "--timeout", "45", "gamma"])
        #expect(reboot.status == 0, "\(reboot)")
        let after = try #require(try domains().first)
        #expect(before["domid"] as? Int == 1)
        #expect(after["name"] as? String == "gamma" && after["domid"] as? Int == 2 && after["uuid"] as? String == before["uuid"] as? String,
                "\(after)")
        #expect(after["restarts"] as? Int == 1 && after["state"] as? String == "running")
        #expect(after["pid"] as? Int != before["pid"] as? Int)
        #expect((after["console"] as? String)?.hasSuffix("/2.console") == true, "\(after)")
        // The store: the new id's home (complete once the new process
        // introduced it), none of the old; /vm/<uuid> kept.
        let uuid = try #require(before["uuid"] as? String)
        #expect(try until(30, daemon: daemon) { try storeListing("/").contains("/local/domain/2/domid = \"2\"") })
        let tree = try storeListing("/")
        #expect(tree.contains("/local/domain/2/name = \"gamma\"") && tree.contains("/local/domain/2/vm = \"/vm/\(uuid)\""), "\(tree)")
        #expect(tree.contains("/vm/\(uuid)/name = \"gamma\""), "\(tree)")
        #expect(!tree.contains("/local/domain/1/") && !tree.contains("/backend/console/1") && !tree.contains("/backend/vbd/1"), "\(tree)")
        let shutdown = try pvh(["shutdown", "-w", "--timeout", "45", "gamma"])
        #expect(shutdown.status == 0, "\(shutdown)")
        #expect(try domains().isEmpty)
        let unknown = try pvh(["shutdown", "gamma"])
        #expect(unknown.status == 1 && unknown.stderr == "pvh: gamma is an invalid domain identifier\n", "\(unknown)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0)
        #expect(daemon.errors.contains("event: destroyed gamma (domain 1): reboot"), "\(daemon.errors)")
        #expect(daemon.errors.contains("event: rebooted gamma (domain 2)"), "\(daemon.errors)")
        #expect(daemon.errors.contains("event: shutdown gamma (domain 2): poweroff"), "\(daemon.errors)")
    }

    @Test("reboot -w asked while a poweroff (on_poweroff = restart) is under way: answered once the domain is back under its UUID, not at the timeout; destroy right after ends the new process with SIGTERM")
    func rebootDuringPoweroffRestart() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        #expect(try pvh(["create", try config("zeta", "on_poweroff = \"restart\"")]).status == 0)
        let before = try #require(try domains().first)
        // Not waited for: the reboot below finds the poweroff under way, or
        // (on a slow start of the CLI) the domain already restarted.
        #expect(try pvh(["shutdown", "zeta"]).status == 0)
        let reboot = try pvh(["reboot", "-w", "--timeout", "30", "zeta"])
        #expect(reboot.status == 0, "\(reboot)")
        let after = try #require(try domains().first)
        #expect(after["uuid"] as? String == before["uuid"] as? String && after["state"] as? String == "running", "\(after)")
        #expect((after["restarts"] as? Int ?? 0) >= 1, "\(after)")
        // Destroyed at once, its process perhaps still starting: the
        // SIGTERM ends it, not the SIGKILL after the grace period (a
        // SIGTERM that came before the process's signal sources existed
        // was discarded when they were made: PVH.swift, signalSources).
        #expect(try pvh(["destroy", "zeta"]).status == 0)
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0)
        #expect(!daemon.errors.contains("after SIGTERM: SIGKILL"), "\(daemon.errors)")
        // Whichever the guest read first: the poweroff, restarted by
        // on_poweroff (the case this test is for), or the reboot that
        // replaced it in control/shutdown.
        let afterPoweroff = daemon.errors.contains("event: shutdown zeta (domain 1): poweroff")
            && daemon.errors.contains("event: created zeta (domain 2)")
        #expect(afterPoweroff || daemon.errors.contains("event: rebooted zeta (domain 2)"), "\(daemon.errors)")
    }

    @Test("create -p: the guest is built but paused, no instruction of it run, until unpause; then it runs and shuts down; -p with -F refused")
    func createPaused() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        let refused = try pvh(["create", "-p", "-F", try config("delta")])
        #expect(refused.status == 2 && refused.stderr.contains("-p: only through the daemon"), "\(refused)")
        let created = try pvh(["create", "-p", try config("delta")])
        #expect(created.status == 0, "\(created)")
        // Answered once the process had stopped itself: paused, and the
        // test guest (which prints at its first instructions) silent.
        let paused = try #require(try domains().first)
        #expect(paused["state"] as? String == "paused" && (paused["flags"] as? String)?.contains("p") == true, "\(paused)")
        #expect(!guestLog("delta").contains("PVHTEST"), "\(guestLog("delta"))")
        #expect(try pvh(["unpause", "delta"]).status == 0)
        let running = until(30, daemon: daemon) { guestLog("delta").contains("PVHTEST control WAITING") }
        #expect(running, "\(guestLog("delta"))")
        #expect(try domains().first?["state"] as? String == "running")
        let shutdown = try pvh(["shutdown", "-w", "--timeout", "45", "delta"])
        #expect(shutdown.status == 0, "\(shutdown)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0)
        #expect(daemon.errors.contains("event: paused delta (domain 1)"), "\(daemon.errors)")
    }

    @Test("shutdown -a -w: every guest asked at once and waited for; NAME with -a refused")
    func shutdownAll() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        #expect(try pvh(["create", try config("alpha")]).status == 0)
        #expect(try pvh(["create", try config("beta")]).status == 0)
        #expect(try domains().count == 2)
        let both = try pvh(["shutdown", "-a", "alpha"])
        #expect(both.status != 0 && both.stderr.contains("one or the other"), "\(both)")
        #expect(try domains().count == 2)
        let all = try pvh(["shutdown", "-a", "-w", "--timeout", "45"])
        #expect(all.status == 0, "\(all)")
        #expect(try domains().isEmpty)
        // Nothing left: -a asks nobody and succeeds, as xl's does.
        #expect(try pvh(["shutdown", "-a", "-w"]).status == 0)
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0)
        #expect(daemon.errors.contains("event: shutdown alpha (domain 1): poweroff"), "\(daemon.errors)")
        #expect(daemon.errors.contains("event: shutdown beta (domain 2): poweroff"), "\(daemon.errors)")
    }

    @Test("shutdown -w of a guest whose process is ending (being destroyed) waits for its end rather than refuse it")
    func shutdownWhileEnding() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        #expect(try pvh(["create", try config("omega")]).status == 0)
        let pid = try #require(try domains().first?["pid"] as? Int)
        // Stopped from outside (not `pvh pause`: the daemon does not know),
        // the process keeps destroy's SIGTERM pending: the domain stays
        // dying for destroy's 10 s grace, then its group is SIGKILLed.
        #expect(kill(pid_t(pid), SIGSTOP) == 0)
        let destroy = try ChildProcess(Env.pvhBinary, ["destroy", "omega"], environment: environment)
        defer { destroy.stop() }
        #expect(try until(20, daemon: daemon) { try domains().first?["state"] as? String == "dying" }, "\((try? domains()) ?? [])")
        let started = Date()
        let shutdown = try pvh(["shutdown", "-w", "--timeout", "45", "omega"])
        #expect(shutdown.status == 0, "\(shutdown)")
        #expect(try domains().isEmpty)
        #expect(Date().timeIntervalSince(started) < 40)
        #expect(destroy.waitForExit(timeout: .seconds(30)) == 0, "\(destroy.errors)")
        // Not running and not ending: refused at once, as before.
        #expect(try pvh(["create", try config("omega", "on_poweroff = \"preserve\"\n")]).status == 0)
        #expect(try pvh(["shutdown", "-w", "--timeout", "45", "omega"]).status == 0)
        let again = try pvh(["shutdown", "-w", "--timeout", "45", "omega"])
        #expect(again.status == 1 && again.stderr == "pvh: omega is shutdown, cannot shutdown\n", "\(again)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0)
        #expect(daemon.errors.contains("event: destroyed omega (domain 1): destroyed"), "\(daemon.errors)")
    }

    @Test("a guest that crashes at once with on_crash=\"restart\" is restarted 4 times, then destroyed")
    func crashLoopStops() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        // config() sets on_crash="destroy"; the last setting of a key wins.
        let cfg = try config("delta", "extra = \"pvh.scenarios=version pvh.exit=crash\"\non_crash = \"restart\"\n")
        #expect(try pvh(["create", cfg]).status == 0)
        // Each try is a whole CLI round trip through the API; bounded.
        let deadline = Date().addingTimeInterval(120)
        while try !domains().isEmpty && Date() < deadline {}
        #expect(try domains().isEmpty)
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0)
        // Each restart is a new domain id (xl's): 1 to 5, one crash each.
        #expect(daemon.errors.components(separatedBy: "event: crashed delta (domain ").count == 6, "\(daemon.errors)")
        for id in 1...5 { #expect(daemon.errors.contains("event: crashed delta (domain \(id)): crash"), "\(daemon.errors)") }
        #expect(daemon.errors.contains("ended 5 times in a row within 10 s of its start: not restarted, destroyed"), "\(daemon.errors)")
    }

    @Test("pvh console: earlier output replayed, input echoed, Ctrl-] detaches and the guest runs on; a second client refused; kept across a reboot; create -c")
    func console() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try startDaemon()
        defer { daemon.stop() }
        // console_ring writes its hello line, then waits for a typed line
        // and echoes it; control keeps the guest running afterwards.
        let cfg = try config("eps", "extra = \"pvh.scenarios=console_ring,control pvh.console_input=1 pvh.console_timeout=120000\"\n")
        #expect(try pvh(["create", cfg]).status == 0)
        let hello = "PVHTEST-CONSOLE-RING hello"

        // The first client sees the hello line (replayed or live) and detaches.
        let first = try ChildProcess(Env.pvhBinary, ["console", "eps"], environment: environment, input: true)
        defer { first.stop() }
        #expect(first.waitForLine(startingWith: hello, timeout: .seconds(120)) != nil, "\(first.output) \(first.errors)")
        first.send([0x1d])
        #expect(first.waitForExit(timeout: .seconds(30)) == 0, "\(first.errors)")
        #expect(first.errors.contains("pvh: detached from eps's console"), "\(first.errors)")

        // The hello line was written once, before this client: it can only come from the daemon's buffer.
        let second = try ChildProcess(Env.pvhBinary, ["console", "eps"], environment: environment, input: true)
        defer { second.stop() }
        #expect(second.waitForLine(startingWith: hello, timeout: .seconds(30)) != nil, "\(second.output) \(second.errors)")
        // One client at a time, as xl console.
        let busy = try pvh(["console", "eps"])
        #expect(busy.status == 1 && busy.stderr == "pvh: eps: the console is in use by another client\n", "\(busy)")
        second.send(Array("ping through the daemon\r".utf8))
        #expect(second.waitForLine(startingWith: "PVHTEST-CONSOLE-ECHO ping through the daemon", timeout: .seconds(60)) != nil,
                "\(second.output) \(second.errors)")
        second.send([0x1d])
        #expect(second.waitForExit(timeout: .seconds(30)) == 0, "\(second.errors)")

        // The guest runs on; its console socket is its owner's only.
        let listed = try domains()
        #expect(listed.count == 1 && listed.first?["name"] as? String == "eps" && listed.first?["state"] as? String == "running")
        let socket = try #require(listed.first?["console"] as? String)
        #expect(try FileManager.default.attributesOfItem(atPath: socket)[.posixPermissions] as? Int == 0o600)
        let unknown = try pvh(["console", "nosuch"])
        #expect(unknown.status == 1 && unknown.stderr == "pvh: nosuch is an invalid domain identifier\n", "\(unknown)")

        // The guest going away ends an attached session with one line.
        let third = try ChildProcess(Env.pvhBinary, ["console", "eps"], environment: environment, input: true)
        defer { third.stop() }
        #expect(third.waitForLine(startingWith: hello, timeout: .seconds(30)) != nil, "\(third.errors)")
        // A reboot (on_reboot's default: restart) keeps the session: the
        // new guest process's hello reaches the same client.
        let reboot = try pvh(["reboot", "-w", "--timeout", "45", "eps"])
        #expect(reboot.status == 0, "\(reboot)")
        var hellos = 0
        let again = third.waitForLine(timeout: .seconds(60)) { line in
            if line.hasPrefix(hello) { hellos += 1 }
            return hellos == 2
        }
        #expect(again != nil, "\(third.output) \(third.errors)")
        #expect(try pvh(["destroy", "eps"]).status == 0)
        #expect(third.waitForExit(timeout: .seconds(30)) == 0, "\(third.errors)")
        #expect(third.errors.hasSuffix("pvh: eps: the guest has gone (its console closed)\n"), "\(third.errors)")
        #expect(!FileManager.default.fileExists(atPath: socket))

        // create -c attaches at once.
        let zeta = try config("zeta", "extra = \"pvh.scenarios=console_ring,control\"\n")
        let created = try ChildProcess(Env.pvhBinary, ["create", "-c", zeta], environment: environment, input: true)
        defer { created.stop() }
        #expect(created.waitForLine(timeout: .seconds(60)) { $0.contains("(zeta) created") } != nil, "\(created.errors)")
        #expect(created.waitForLine(startingWith: hello, timeout: .seconds(120)) != nil, "\(created.output) \(created.errors)")
        created.send([0x1d])
        #expect(created.waitForExit(timeout: .seconds(30)) == 0, "\(created.errors)")
        #expect(try domains().compactMap { $0["name"] as? String } == ["zeta"])

        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0, "\(daemon.errors)")
    }
}
