import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The guest process's sandbox (docs/ARCHITECTURE.md: Sandbox) on a real
/// daemon: a guest process that makes a forbidden system call dies of
/// SIGSYS, the daemon reports it as the sandbox's kill and applies
/// on_crash, and another guest, confined too, runs on.
extension DaemonTests {
    @Test("a forbidden system call kills the guest process (SIGSYS); the daemon reports the sandbox's kill, applies on_crash=preserve; another guest runs on")
    func sandboxKill() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // The test-only trigger (GuestSandboxSetting.selfTest), for victim only.
        let daemon = try ChildProcess(Env.pvhBinary, ["daemon", "--foreground", "--api-socket", api, "--xenstore-socket", store,
                                                      "--destroy-on-exit"],
                                      environment: environment.merging(["PVH_SANDBOX_SELFTEST": "forbidden-syscall:victim"]) { $1 })
        defer { daemon.stop() }
        #expect(daemon.waitForLine(startingWith: "pvh daemon: ready", timeout: .seconds(60)) != nil, "\(daemon.errors)")
        #expect(try pvh(["create", try config("calm")]).status == 0)
        #expect(try pvh(["create", try config("victim", "on_crash = \"preserve\"")]).status == 0)

        // Bounded: the victim dies as soon as it is confined.
        func state(_ name: String) throws -> String? {
            try domains().first { $0["name"] as? String == name }?["state"] as? String
        }
        #expect(try until(60, daemon: daemon) { try state("victim") == "crashed" })
        let long = try pvh(["list", "-l", "victim"])
        #expect(long.status == 0 && long.stdout.contains("\"crashed\""), "\(long)")
        #expect(long.stdout.contains("\"last_end\" : \"killed by the sandbox (seccomp): signal 31, SIGSYS"), "\(long)")
        // calm is confined too, and answers.
        #expect(try until(30, daemon: daemon) { guestLog("calm").contains("sandbox: seccomp filter loaded") }, "\(guestLog("calm"))")
        #expect(try state("calm") == "running")
        let read = try pvh(["xenstore", "read", "calm", "name"])
        #expect(read.status == 0 && read.stdout == "calm\n", "\(read)")
        #expect(guestLog("victim").contains("making a forbidden system call"), "\(guestLog("victim"))")
        #expect(!guestLog("victim").contains("the forbidden system call returned"), "\(guestLog("victim"))")

        // calm shuts down cleanly under its filter (the control scenario's
        // xenbus answer, the store's removal, the exit record).
        let shutdown = try pvh(["shutdown", "-w", "--timeout", "60", "calm"])
        #expect(shutdown.status == 0, "\(shutdown)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0, "\(daemon.errors)")
        #expect(daemon.errors.contains("event: crashed victim (domain 2): killed by the sandbox (seccomp): signal 31, SIGSYS"),
                "\(daemon.errors)")
        #expect(daemon.errors.contains("event: shutdown calm (domain 1): poweroff"), "\(daemon.errors)")
    }
}
