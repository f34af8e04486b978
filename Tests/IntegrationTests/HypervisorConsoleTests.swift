import Foundation
import Testing

/// The hypervisor console (console_io, port 0xE9) kept apart from the PV
/// console: in `pvh dmesg` and the guest's log, `(dN)`-prefixed, not on the
/// guest's terminal.
@Suite("Hypervisor console apart from the PV console (pvh dmesg)")
struct HypervisorConsoleSeparationTests {
    /// A fresh runtime directory and a unique name for one guest.
    func place() throws -> (directory: String, name: String) {
        let unique = String(UUID().uuidString.prefix(8)).lowercased()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-hvc-\(unique)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return (dir, "hvc-\(unique)")
    }

    @Test("a console_io line shows once in pvh dmesg and the log, never on the PV console's stdout",
          .enabled(if: Env.hasKVM, "needs /dev/kvm"), .enabled(if: Env.hasPVHBinary, "needs .build/debug/pvh"))
    func apart() throws {
        let elf = try Env.testGuest.get()
        let (dir, name) = try place()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = dir + "/guest.log"
        let environment = ["PVH_RUNTIME_DIR": dir]
        // version: its result line goes out with console_io; console_ring
        // writes a line into the PV console's ring, then its result with console_io.
        let run = try runCommand(Env.pvhBinary, ["run", "--name", name, "--kernel", elf, "--memory", "32", "--log-file", log,
                                                 "--cmdline", "pvh.scenarios=version,console_ring"],
                                 environment: environment, timeout: .seconds(120))
        #expect(run.status == 0, "\(run)")
        // The PV console (stdout) has the ring's line and nothing of the hypervisor console's.
        #expect(run.stdout.contains("PVHTEST-CONSOLE-RING hello"), "\(run)")
        #expect(!run.stdout.contains("PVHTEST version") && !run.stdout.contains("PVHTEST BOOT"), "\(run)")
        #expect(!run.stderr.contains("PVHTEST"), "\(run)")

        let dmesg = try runCommand(Env.pvhBinary, ["dmesg", name], environment: environment)
        #expect(dmesg.status == 0, "\(dmesg)")
        let lines = dmesg.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
        #expect(lines.filter { $0.hasPrefix("(d1) PVHTEST version PASS") }.count == 1, "\(dmesg.stdout)")
        #expect(lines.contains("(d1) PVHTEST console_ring PASS"), "\(dmesg.stdout)")
        #expect(lines.contains("(d1) PVHTEST SUMMARY 2 passed, 0 failed"), "\(dmesg.stdout)")
        #expect(lines.allSatisfy { $0.hasPrefix("(d1) ") }, "\(dmesg.stdout)")
        #expect(!dmesg.stdout.contains("CONSOLE-RING"), "the PV console is not the hypervisor's: \(dmesg.stdout)")

        // The log has each line once, as a record of the guest's label.
        let logText = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logText.components(separatedBy: " info pvh[1/\(name)]: (d1) PVHTEST version PASS").count - 1 == 1, "\(logText)")
        #expect(logText.contains(" notice pvh[1/\(name)]: domain 1 ended: "), "\(logText)")

        // Without a name: every guest's console; an unknown name: one line, exit 1.
        let all = try runCommand(Env.pvhBinary, ["dmesg"], environment: environment)
        #expect(all.status == 0 && all.stdout == dmesg.stdout, "\(all)")
        let unknown = try runCommand(Env.pvhBinary, ["dmesg", "nosuch"], environment: environment)
        #expect(unknown.status == 1 && unknown.stderr.hasPrefix("pvh: nosuch: no such guest") && unknown.stdout.isEmpty, "\(unknown)")
    }

    @Test("--hypervisor-console stderr shows the (dN) lines live on stderr, still not on stdout",
          .enabled(if: Env.hasKVM, "needs /dev/kvm"), .enabled(if: Env.hasPVHBinary, "needs .build/debug/pvh"))
    func liveOnStandardError() throws {
        let elf = try Env.testGuest.get()
        let (dir, name) = try place()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = try runCommand(Env.pvhBinary, ["run", "--name", name, "--kernel", elf, "--memory", "32",
                                                 "--hypervisor-console", "stderr", "--cmdline", "pvh.scenarios=version"],
                                 environment: ["PVH_RUNTIME_DIR": dir, "PVH_LOG_DIR": dir], timeout: .seconds(120))
        #expect(run.status == 0, "\(run)")
        #expect(run.stderr.split(separator: "\n").filter { $0.hasPrefix("(d1) PVHTEST version PASS") }.count == 1, "\(run)")
        #expect(!run.stdout.contains("PVHTEST"), "\(run)")
        // The default log file, under PVH_LOG_DIR and the guest's name.
        #expect(FileManager.default.fileExists(atPath: "\(dir)/\(name).log"))
    }
}
