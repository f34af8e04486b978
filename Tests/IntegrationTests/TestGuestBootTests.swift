import Foundation
import Testing
import VMM

/// The project's own PVH test guest (testguest/), booted for real under KVM:
/// every scenario it runs asserts one Xen interface from inside the guest.
@Suite("Test guest under KVM", .serialized, .enabled(if: Env.hasKVM, "needs /dev/kvm (read-write)"))
struct TestGuestBootTests {
    static let scenarios = ["startinfo", "version", "console", "memmap", "reservation", "sharedinfo",
                            "sharedinfo_hole", "vcpuinfo", "hvmparam", "hostile", "int3", "intn", "hc32"]

    func bootTestGuest(_ cmdline: String) throws -> GuestRun {
        let elf = try Env.testGuest.get()
        return try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: cmdline, memoryMiB: 64), limit: .seconds(120))
    }

    @Test("hypercall-page transport: every scenario passes, then poweroff")
    func hypercallPage() throws {
        let run = try bootTestGuest("pvh.transport=page")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        let results = run.results()
        for s in Self.scenarios {
            #expect(results[s] == "PASS", "scenario \(s): \(results[s] ?? "missing")")
        }
        #expect(run.lines.contains("PVHTEST SUMMARY \(Self.scenarios.count) passed, 0 failed"))
        #expect(run.domain.metrics.pageHypercalls.load(ordering: .relaxed) > 20)
        #expect(run.domain.metrics.breakpointHypercalls.load(ordering: .relaxed) == 0)
        #expect(run.domain.metrics.hypercallPageInstalls.load(ordering: .relaxed) >= 1)
    }

    @Test("vmcall transport: sites found from the ELF's __ksymtab, trapped by hardware breakpoints")
    func breakpointTransport() throws {
        let run = try bootTestGuest("pvh.transport=vmcall")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        let results = run.results()
        for s in Self.scenarios {
            #expect(results[s] == "PASS", "scenario \(s): \(results[s] ?? "missing")")
        }
        #expect(run.lines.contains("PVHTEST BOOT transport=vmcall"))
        #expect(run.domain.bootInfo.hypercallSites.amd != nil && run.domain.bootInfo.hypercallSites.intel != nil)
        // All but the 32-bit scenario (which uses the page) go through the sites.
        #expect(run.domain.metrics.breakpointHypercalls.load(ordering: .relaxed) > 20)
    }

    @Test("console output: one 1580-byte console_io write arrives whole and in order; port 0xE9 too")
    func consoleOutput() throws {
        let run = try bootTestGuest("pvh.scenarios=console")
        #expect(run.exit == .shutdown(.poweroff))
        let consoleLines = run.lines.filter { $0.hasPrefix("PVHCONSOLE ") }
        #expect(consoleLines.count == 20)
        for (i, line) in consoleLines.enumerated() {
            let n = i < 10 ? "0\(i)" : "\(i)"
            #expect(line == "PVHCONSOLE \(n) 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_")
        }
        // The first line goes byte by byte through port 0xE9, then through console_io.
        #expect(run.lines.filter { $0 == "PVHTEST BOOT transport=page" }.count == 2)
    }

    @Test("shutdown reasons reach the VMM", arguments: [("reboot", DomainExit.shutdown(.reboot)), ("crash", .shutdown(.crash))])
    func shutdownReasons(_ reason: String, _ expected: DomainExit) throws {
        let run = try bootTestGuest("pvh.scenarios=version pvh.exit=\(reason)")
        #expect(run.exit == expected)
        #expect(expected.exitStatus != 0)
    }

    @Test("an unknown scenario is reported by the guest, not a VMM failure")
    func unknownScenario() throws {
        let run = try bootTestGuest("pvh.scenarios=nosuch")
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["nosuch"]?.hasPrefix("FAIL") == true)
    }
}
