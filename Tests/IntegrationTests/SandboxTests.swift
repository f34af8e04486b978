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
        let daemon = try startCalmAndVictim(selfTest: "forbidden-syscall:victim")
        defer { daemon.stop() }

        // Bounded: the victim dies as soon as it is confined.
        #expect(try until(60, daemon: daemon) { try state("victim") == "crashed" })
        let long = try pvh(["list", "-l", "victim"])
        #expect(long.status == 0 && long.stdout.contains("\"crashed\""), "\(long)")
        #expect(long.stdout.contains("\"last_end\" : \"killed by the sandbox (seccomp): signal 31, SIGSYS"), "\(long)")
        // calm is confined too, and answers.
        #expect(until(30, daemon: daemon) { guestLog("calm").contains("sandbox: seccomp filter loaded") }, "\(guestLog("calm"))")
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

    /// A daemon whose guests see `PVH_SANDBOX_SELFTEST=selfTest`, with two
    /// guests created: calm (`calmVCPUs`) and victim (on_crash preserve).
    func startCalmAndVictim(selfTest: String, calmVCPUs: Int = 1) throws -> ChildProcess {
        let daemon = try ChildProcess(Env.pvhBinary, ["daemon", "--foreground", "--api-socket", api, "--xenstore-socket", store,
                                                      "--destroy-on-exit"],
                                      environment: environment.merging(["PVH_SANDBOX_SELFTEST": selfTest]) { $1 })
        do {
            #expect(daemon.waitForLine(startingWith: "pvh daemon: ready", timeout: .seconds(60)) != nil, "\(daemon.errors)")
            #expect(try pvh(["create", try config("calm", "vcpus = \(calmVCPUs)")]).status == 0)
            #expect(try pvh(["create", try config("victim", "on_crash = \"preserve\"")]).status == 0)
        } catch {
            daemon.stop()
            throw error
        }
        return daemon
    }

    /// The state `pvh list` gives guest `name`.
    func state(_ name: String) throws -> String? {
        try domains().first { $0["name"] as? String == name }?["state"] as? String
    }

    /// Each thread of process `pid`: its name (comm) and proc(5)'s
    /// `Seccomp_filters` (how many filters it runs).
    static func threadFilters(_ pid: Int) -> [(name: String, filters: Int)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { tid in
            let base = "/proc/\(pid)/task/\(tid)"
            guard let comm = try? String(contentsOfFile: base + "/comm", encoding: .utf8),
                  let status = try? String(contentsOfFile: base + "/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Seccomp_filters:") }),
                  let count = Int(line.dropFirst("Seccomp_filters:".count).trimmingCharacters(in: .whitespaces)) else { return nil }
            return (comm.trimmingCharacters(in: .whitespacesAndNewlines), count)
        }
    }

    @Test("each vCPU thread runs one seccomp filter more than the guest process's other threads; a vCPU thread's call only device threads may make (socket) kills the process, and the daemon reports the sandbox's kill")
    func vcpuSandboxKill() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // The test-only trigger (GuestSandboxSetting.vcpuSelfTest), for victim only.
        let daemon = try startCalmAndVictim(selfTest: "vcpu-forbidden-syscall:victim", calmVCPUs: 2)
        defer { daemon.stop() }
        #expect(try until(60, daemon: daemon) { try state("victim") == "crashed" })
        let long = try pvh(["list", "-l", "victim"])
        #expect(long.stdout.contains("\"last_end\" : \"killed by the sandbox (seccomp): signal 31, SIGSYS"), "\(long)")
        #expect(guestLog("victim").contains("vCPU 0 making a call only device threads may"), "\(guestLog("victim"))")
        #expect(!guestLog("victim").contains("the vCPU's forbidden call returned"), "\(guestLog("victim"))")

        // calm's threads once its guest runs: both vCPU threads one filter
        // more than the process's others (main, device, Dispatch, NIO).
        // KVM's own kernel worker (kvm-nx-lpage-recovery, started by the
        // first KVM_RUN, so copying that vCPU's filters) makes no system
        // call and is not counted.
        #expect(until(60, daemon: daemon) { guestLog("calm").contains("PVHTEST control WAITING") }, "\(guestLog("calm"))")
        let listed = try JSONSerialization.jsonObject(with: Data(try pvh(["list", "-l", "calm"]).stdout.utf8)) as? [[String: Any]]
        let pid = try #require(listed?.first?["pid"] as? Int)
        let threads = Self.threadFilters(pid)
        let vcpus = threads.filter { $0.name.hasPrefix("pvh-vcpu") }
        let others = threads.filter { !$0.name.hasPrefix("pvh-vcpu") && !$0.name.hasPrefix("kvm-") }
        #expect(vcpus.count == 2, "\(threads)")
        #expect(others.count >= 2 && others.allSatisfy { $0.filters == 1 }, "\(threads)")
        #expect(vcpus.allSatisfy { $0.filters == 2 }, "\(threads)")
        #expect(try state("calm") == "running")
        let read = try pvh(["xenstore", "read", "calm", "name"])
        #expect(read.status == 0 && read.stdout == "calm\n", "\(read)")
        let shutdown = try pvh(["shutdown", "-w", "--timeout", "60", "calm"])
        #expect(shutdown.status == 0, "\(shutdown)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0, "\(daemon.errors)")
        #expect(daemon.errors.contains("event: crashed victim (domain 2): killed by the sandbox (seccomp): signal 31, SIGSYS"),
                "\(daemon.errors)")
    }
}
