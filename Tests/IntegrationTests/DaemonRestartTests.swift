import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A daemon stopped (SIGTERM) or killed (SIGKILL) while guests run: the
/// guest processes run on, and a new daemon on the same state directory
/// finds them again (issue 12, issue 13 item 5; docs/ARCHITECTURE.md: a
/// daemon restart). Every wait is bounded.
@Suite("pvh daemon restart", .enabled(if: Env.hasKVM && Env.hasPVHBinary, "needs /dev/kvm and .build/debug/pvh"))
struct DaemonRestartTests {
    /// Whether process `pid` runs (signal 0 reaches it).
    func alive(_ pid: Int) -> Bool { kill(pid_t(pid), 0) == 0 }

    /// `xenstore-ls -f /local/domain` on the daemon's store ("" if it fails).
    func listing(_ t: DaemonTests) -> String { (try? t.storeListing()) ?? "" }

    /// Whether `condition` holds within `seconds`, checked every 100 ms
    /// (no daemon runs to wait on: a bounded poll of other processes' state).
    func polled(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !condition() {
            guard Date() < deadline else { return false }
            usleep(100_000)
        }
        return true
    }

    /// The guests' pids by name.
    func pids(_ t: DaemonTests) throws -> [String: Int] {
        Dictionary(uniqueKeysWithValues: try t.domains().compactMap { d in (d["name"] as? String).map { ($0, d["pid"] as? Int ?? 0) } })
    }

    /// A daemon that leaves its guests running, with a guest created from
    /// each (name, extra config lines) and `ready` holding (bounded); the
    /// daemon and the guests' pids by name.
    func daemonWithGuests(_ t: DaemonTests, _ configs: [(String, String)],
                          ready: @escaping () -> Bool) throws -> (ChildProcess, [String: Int]) {
        let daemon = try t.startDaemon(destroyOnExit: false)
        for (name, extra) in configs { #expect(try t.pvh(["create", try t.config(name, extra)]).status == 0) }
        let pids = try pids(t)
        #expect(pids.count == configs.count && pids.values.allSatisfy { $0 > 0 }, "\(pids)")
        #expect(t.until(240, daemon: daemon, ready), "\(configs.map { t.guestLog($0.0) })")
        return (daemon, pids)
    }

    @Test("SIGTERM leaves two guests running; a new daemon lists them under the same ids, serves their trees and console; shutdown -w (exit record) and SIGKILL (on_crash=preserve) apply")
    func stopAndRestart() throws {
        let t = try DaemonTests()
        defer { try? FileManager.default.removeItem(atPath: t.directory) }
        var guests: [Int] = []
        // Whatever happens, no guest process outlives the test.
        defer { guests.forEach { kill(pid_t($0), SIGKILL) } }
        let echo = "extra = \"pvh.scenarios=console_ring,control pvh.console_input=1 pvh.console_timeout=300000\"\n"
        // beta's control watch is in place before the restart: the new
        // daemon's control/shutdown reaches it only if it is registered again.
        let (first, before) = try daemonWithGuests(t, [("alpha", echo + "on_crash = \"preserve\"\n"), ("beta", "")]) {
            t.guestLog("beta").contains("(d2) PVHTEST control WAITING") && self.listing(t).contains("/local/domain/1/store/ring-ref")
        }
        defer { first.stop() }
        guests = Array(before.values)

        kill(first.pid, SIGTERM)
        #expect(first.waitForExit(timeout: .seconds(60)) == 0, "\(first.errors)")
        #expect(first.errors.contains("2 guest(s) left running for the next daemon"), "\(first.errors)")
        #expect(before.values.allSatisfy(alive), "the guest processes outlived their daemon")

        let second = try t.startDaemon(destroyOnExit: false)
        defer { second.stop() }
        let listed = try t.domains()
        #expect(listed.compactMap { $0["name"] as? String } == ["alpha", "beta"])
        #expect(listed.compactMap { $0["domid"] as? Int } == [1, 2])
        #expect(try pids(t) == before)
        #expect(listed.allSatisfy { $0["state"] as? String == "running" }, "\(listed)")
        // Debian's xenstore-ls sees both trees in the new daemon's store.
        let ls = listing(t)
        for (id, name) in [(1, "alpha"), (2, "beta")] {
            #expect(ls.contains("/local/domain/\(id)/name = \"\(name)\""), "\(ls)")
            #expect(ls.contains("/local/domain/\(id)/store/ring-ref"), "\(ls)")
        }

        // alpha's console through the new daemon: typed input reaches the
        // guest process and its echo comes back.
        let console = try ChildProcess(Env.pvhBinary, ["console", "alpha"], environment: t.environment, input: true)
        defer { console.stop() }
        console.send(Array("ping after restart\r".utf8))
        #expect(console.waitForLine(startingWith: "PVHTEST-CONSOLE-ECHO ping after restart", timeout: .seconds(120)) != nil,
                "\(console.output) \(console.errors)")
        console.send([0x1d])
        #expect(console.waitForExit(timeout: .seconds(30)) == 0, "\(console.errors)")

        // beta: shutdown -w through the re-registered watch; the exit record tells the new daemon it powered off.
        let shutdown = try t.pvh(["shutdown", "-w", "--timeout", "60", "beta"])
        #expect(shutdown.status == 0, "\(shutdown)")
        #expect(t.guestLog("beta").contains("(d2) PVHTEST control PASS"), "\(t.guestLog("beta"))")
        #expect(try t.domains().compactMap { $0["name"] as? String } == ["alpha"])

        // alpha's process SIGKILLed: no exit record, a crash; on_crash="preserve" keeps it, crashed.
        #expect(kill(pid_t(before["alpha"] ?? 0), SIGKILL) == 0)
        let crashed = try t.until(30, daemon: second) { try t.domains().first?["state"] as? String == "crashed" }
        #expect(crashed, "\((try? t.domains()) ?? [])")
        #expect(try t.pvh(["destroy", "alpha"]).status == 0)
        #expect(try t.domains().isEmpty)
        kill(second.pid, SIGTERM)
        #expect(second.waitForExit(timeout: .seconds(60)) == 0, "\(second.errors)")
        #expect(second.errors.contains("alpha (domain 1): guest process \(before["alpha"] ?? 0) adopted"), "\(second.errors)")
        #expect(second.errors.contains("beta (domain 2): guest process \(before["beta"] ?? 0) adopted"), "\(second.errors)")
        #expect(second.errors.contains("event: shutdown beta (domain 2): poweroff"), "\(second.errors)")
        #expect(second.errors.contains("event: crashed alpha (domain 1): killed by signal 9"), "\(second.errors)")
    }

    @Test("console output the guest writes while no daemon runs is held by its process and shown by pvh console after the restart")
    func consoleWhileAway() throws {
        let t = try DaemonTests()
        defer { try? FileManager.default.removeItem(atPath: t.directory) }
        var guests: [Int] = []
        defer { guests.forEach { kill(pid_t($0), SIGKILL) } }
        // The later line comes 20 s (guest TSC) after the hello: the
        // daemon is stopped first.
        let extra = "extra = \"pvh.scenarios=console_ring,control pvh.console_later=20000\"\n"
        let (first, before) = try daemonWithGuests(t, [("kappa", extra)]) { t.guestLog("kappa").contains("PVHINFO console ring pfn") }
        defer { first.stop() }
        guests = Array(before.values)
        kill(first.pid, SIGTERM)
        #expect(first.waitForExit(timeout: .seconds(60)) == 0, "\(first.errors)")
        let written = "PVHINFO console_ring later line written"
        #expect(!t.guestLog("kappa").contains(written), "written before the daemon stopped: \(t.guestLog("kappa"))")
        #expect(polled(120) { t.guestLog("kappa").contains(written) }, "\(t.guestLog("kappa"))")
        #expect(before.values.allSatisfy(alive))

        let second = try t.startDaemon(destroyOnExit: false)
        defer { second.stop() }
        #expect(try pids(t) == before)
        // Only the process can have kept it: the new daemon's buffer began empty.
        let console = try ChildProcess(Env.pvhBinary, ["console", "kappa"], environment: t.environment, input: true)
        defer { console.stop() }
        #expect(console.waitForLine(startingWith: "PVHTEST-CONSOLE-RING later", timeout: .seconds(60)) != nil,
                "\(console.output) \(console.errors)")
        console.send([0x1d])
        #expect(console.waitForExit(timeout: .seconds(30)) == 0, "\(console.errors)")
        #expect(t.guestLog("kappa").contains("written while no daemon ran handed to the new one (0 older dropped)"), "\(t.guestLog("kappa"))")
        #expect(try t.pvh(["destroy", "kappa"]).status == 0)
        kill(second.pid, SIGTERM)
        #expect(second.waitForExit(timeout: .seconds(60)) == 0, "\(second.errors)")
    }

    @Test("a daemon SIGKILLed: its guest runs on, the next daemon adopts it from the last saved state, shutdown -w works")
    func killedDaemon() throws {
        let t = try DaemonTests()
        defer { try? FileManager.default.removeItem(atPath: t.directory) }
        var guests: [Int] = []
        defer { guests.forEach { kill(pid_t($0), SIGKILL) } }
        let (first, before) = try daemonWithGuests(t, [("gamma", "")]) { t.guestLog("gamma").contains("(d1) PVHTEST control WAITING") }
        defer { first.stop() }
        guests = Array(before.values)
        kill(first.pid, SIGKILL)
        _ = first.waitForExit(timeout: .seconds(30))
        #expect(before.values.allSatisfy(alive))

        let second = try t.startDaemon(destroyOnExit: false)
        defer { second.stop() }
        #expect(try pids(t) == before)
        #expect(listing(t).contains("/local/domain/1/name = \"gamma\""))
        let shutdown = try t.pvh(["shutdown", "-w", "--timeout", "60", "gamma"])
        #expect(shutdown.status == 0, "\(shutdown)")
        #expect(try t.domains().isEmpty)
        kill(second.pid, SIGTERM)
        #expect(second.waitForExit(timeout: .seconds(60)) == 0, "\(second.errors)")
        #expect(second.errors.contains("event: shutdown gamma (domain 1): poweroff"), "\(second.errors)")
    }

    @Test("guest processes that end while no daemon runs: the next daemon reads the exit record (SIGTERM: 130, destroyed) or its absence (SIGKILL: crashed, on_crash=preserve)")
    func endedWhileAway() throws {
        let t = try DaemonTests()
        defer { try? FileManager.default.removeItem(atPath: t.directory) }
        var guests: [Int] = []
        defer { guests.forEach { kill(pid_t($0), SIGKILL) } }
        let (first, before) = try daemonWithGuests(t, [("stopped", ""), ("killed", "on_crash = \"preserve\"\n")]) {
            t.guestLog("stopped").contains("PVHTEST control WAITING") && t.guestLog("killed").contains("PVHTEST control WAITING")
        }
        defer { first.stop() }
        guests = Array(before.values)
        kill(first.pid, SIGTERM)
        #expect(first.waitForExit(timeout: .seconds(60)) == 0, "\(first.errors)")
        // With no daemon: one stopped from outside (it records 130), one killed (no record).
        let stopped = before["stopped"] ?? 0, killed = before["killed"] ?? 0
        #expect(kill(pid_t(stopped), SIGTERM) == 0 && kill(pid_t(killed), SIGKILL) == 0)
        let record = "\(t.directory)/.daemon/1.exit"
        let gone = polled(30) { !alive(stopped) && !alive(killed) && FileManager.default.fileExists(atPath: record) }
        #expect(gone)
        #expect((try? String(contentsOfFile: record, encoding: .utf8)) == "130\n")

        let second = try t.startDaemon(destroyOnExit: false)
        defer { second.stop() }
        let listed = try t.domains()
        #expect(listed.compactMap { $0["name"] as? String } == ["killed"], "\(listed)")
        #expect(listed.first?["state"] as? String == "crashed" && listed.first?["domid"] as? Int == 2, "\(listed)")
        #expect(!FileManager.default.fileExists(atPath: record))
        #expect(try t.pvh(["destroy", "killed"]).status == 0)
        kill(second.pid, SIGTERM)
        #expect(second.waitForExit(timeout: .seconds(60)) == 0, "\(second.errors)")
        #expect(second.errors.contains("stopped (domain 1): its guest process \(stopped) ended while no daemon ran"), "\(second.errors)")
        #expect(second.errors.contains("event: destroyed stopped (domain 1): destroyed"), "\(second.errors)")
        #expect(second.errors.contains("event: crashed killed (domain 2): killed by signal 9"), "\(second.errors)")
    }
}
