import Foundation
import Locking
import Testing
import VMM
import XenABI

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
        // The guest's 64-bit code chose the page before any vmcall: its sites' breakpoints went off.
        #expect(run.domain.bootInfo.hypercallSites.intel != nil)
        #expect(run.domain.hypercallSitesRetired)
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
        // Only the 32-bit probe used the page: the sites stay armed.
        #expect(run.domain.metrics.hypercallPageInstalls.load(ordering: .relaxed) >= 1)
        #expect(!run.domain.hypercallSitesRetired)
    }

    @Test("ACPI S5: the guest finds SLEEP_CONTROL_REG and \\_S5 in its tables, writes SLP_EN, and the domain powers off")
    func acpiPowerOff() throws {
        let run = try bootTestGuest("pvh.scenarios=acpi_s5 pvh.exit=acpi")
        #expect(run.results()["acpi_s5"] == "PASS", "\(run.console.text)")
        #expect(run.lines.contains("PVHINFO acpi_s5 sleep_control=0x600 slp_typ=5"))
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.domain.metrics.acpiPowerOffs.load(ordering: .relaxed) == 1)
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

    @Test("ELF32 container: the loader's 32-bit path, both transports", arguments: ["page", "vmcall"])
    func elf32(_ transport: String) throws {
        let elf = try Env.testGuest32.get()
        let run = try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: "pvh.transport=\(transport)", memoryMiB: 64), limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.lines.contains("PVHTEST SUMMARY \(Self.scenarios.count) passed, 0 failed"), "\(run.console.text)")
        if transport == "vmcall" { #expect(run.domain.metrics.breakpointHypercalls.load(ordering: .relaxed) > 20) }
    }

    @Test("the initrd arrives as start_info module 0, byte for byte")
    func initrdModule() throws {
        let elf = try Env.testGuest.get()
        var bytes = Array("PVH-TEST-INITRD\n".utf8)
        bytes += (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-initrd-\(UUID().uuidString)").path
        #expect(FileManager.default.createFile(atPath: path, contents: Data(bytes)))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let run = try GuestRun.boot(
            GuestConfiguration(kernelPath: elf, initrdPath: path, commandLine: "pvh.scenarios=module,startinfo", memoryMiB: 64),
            limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["module"] == "PASS", "\(run.console.text)")
        let sum = bytes.reduce(UInt32(0)) { $0 &+ UInt32($1) }
        #expect(run.lines.contains("PVHINFO module size=\(bytes.count) sum=\(sum)"), "\(run.console.text)")
    }

    @Test("with --vcpus 4 the secondary vCPUs wait in KVM (no SIPI yet) and the domain still ends cleanly")
    func secondaryVCPUsWait() throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=startinfo,version", memoryMiB: 64, vcpus: 4),
                                    limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.lines.contains("PVHTEST SUMMARY 2 passed, 0 failed"))
    }

    @Test("event channels: a loopback channel, masking, status, close, errors; upcalls through the LAPIC",
          arguments: ["", "pvh.upcall=callback"])
    func eventChannels(_ upcall: String) throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=evtchn \(upcall)", memoryMiB: 64),
                                    limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["evtchn"] == "PASS", "\(run.console.text)")
        // The per-vCPU vector goes through the LAPIC; the callback vector is
        // injected as ExtINT (CallbackVectorDelivery).
        let metrics = run.domain.metrics
        let delivered = upcall.isEmpty
            ? metrics.upcallsInjected.load(ordering: .relaxed) : metrics.callbackVectorsQueued.load(ordering: .relaxed)
        #expect(delivered >= 2)
        #expect(run.domain.metrics.upcallsRefused.load(ordering: .relaxed) == 0)
    }

    @Test("a bare callback vector with the LAPIC left disabled: events, XenStore and a halted vCPU's wake-up all arrive, the vector is a level")
    func bareCallbackVector() throws {
        let elf = try Env.testGuest.get()
        // No LAPIC watchdog in this mode: a lost event halts the guest for
        // good, and the time limit fails the test.
        let run = try GuestRun.boot(
            GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=upcall_bare,evtchn,timer,xenstore pvh.upcall=callback pvh.lapic=off",
                               memoryMiB: 64),
            limit: .seconds(180))
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.lines.contains("PVHINFO LAPIC left software-disabled (pvh.lapic=off): no EOI, no watchdog"))
        for scenario in ["upcall_bare", "evtchn", "timer", "xenstore"] {
            #expect(run.results()[scenario]?.hasPrefix("PASS") == true, "\(scenario): \(run.console.text)")
        }
        #expect(run.domain.metrics.callbackVectorsQueued.load(ordering: .relaxed) >= 4)
        #expect(run.domain.metrics.upcallsInjected.load(ordering: .relaxed) == 0)
        #expect(run.domain.metrics.upcallsRefused.load(ordering: .relaxed) == 0)
    }

    @Test("an upcall vector refused by a software-disabled LAPIC is owed: once the guest enables its LAPIC the upcall arrives (Xen's vlapic keeps it in IRR; Linux sets its vector before enabling the LAPIC)")
    func owedUpcallVector() throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(
            GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=upcall_owed,evtchn pvh.lapic=off", memoryMiB: 64),
            limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["upcall_owed"] == "PASS", "\(run.console.text)")
        #expect(run.results()["evtchn"] == "PASS", "\(run.console.text)")
        let metrics = run.domain.metrics
        #expect(metrics.upcallsRefused.load(ordering: .relaxed) >= 1)
        #expect(metrics.upcallsOwedDelivered.load(ordering: .relaxed) >= 1)
    }

    @Test("PV console ring both ways: guest output reaches the host, host input is echoed back")
    func consoleRing() throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(
            GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=console_ring pvh.console_input=1", memoryMiB: 64),
            limit: .seconds(120), before: { $0.consoleBackend.input(Array("ping from the host\n".utf8)) })
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["console_ring"] == "PASS", "\(run.console.text)")
        #expect(run.lines.contains("PVHTEST-CONSOLE-RING hello"))
        #expect(run.lines.contains("PVHTEST-CONSOLE-ECHO ping from the host"))
    }

    /// The device runtime end to end: the PV console ring (both ways) and
    /// the XenStore ring each pumped on their own thread; a guest
    /// notification only scheduled that work, none of it ran on a vCPU
    /// thread, and the device threads are gone once run() returns.
    @Test("device runtime: console and XenStore rings served on their own threads, never on a vCPU's", arguments: [1, 2])
    func deviceRuntime(_ vcpus: Int) throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(
            GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=console_ring,xenstore pvh.console_input=1",
                               memoryMiB: 64, vcpus: vcpus),
            limit: .seconds(120), before: { $0.consoleBackend.input(Array("ping from the host\n".utf8)) })
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.results()["console_ring"] == "PASS", "\(run.console.text)")
        #expect(run.lines.contains("PVHTEST-CONSOLE-ECHO ping from the host"))
        #expect(run.results()["xenstore"]?.hasPrefix("PASS") == true, "\(run.console.text)")
        let console = run.domain.consoleBackend.device.metrics, store = run.domain.storeRing.device.metrics
        #expect(console.guestNotifications.load(ordering: .relaxed) > 0)
        #expect(console.pumps.load(ordering: .relaxed) > 0)
        #expect(store.guestNotifications.load(ordering: .relaxed) > 0)
        #expect(store.pumps.load(ordering: .relaxed) > 0)
        #expect(run.domain.backendPumpsOnVCPUThreads == 0)
        #expect(run.domain.devices.devices.map(\.name) == ["console", "xenstore"])
        #expect(run.domain.devices.devices.allSatisfy { !$0.isDisabled })
        #expect(run.domain.devices.threadCount == 0, "device threads left running after the domain ended")
    }

    @Test("PV clock and Xen timers: vcpu_time_info and wallclock published; single-shot, set_timer_op and periodic timers raise VIRQ_TIMER on time")
    func timeAndTimers() throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=pvclock,timer", memoryMiB: 64),
                                    limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["pvclock"] == "PASS", "\(run.console.text)")
        #expect(run.results()["timer"] == "PASS", "\(run.console.text)")
    }

    @Test("SMP the Xen way: VCPUOP_initialise + VCPUOP_up start vCPU 1, which makes hypercalls and IPIs vCPU 0")
    func smp() throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=smp", memoryMiB: 64, vcpus: 2),
                                    limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["smp"] == "PASS", "\(run.console.text)")
    }

    /// Xen's `hvm_hlt` (xen/arch/x86/hvm/hvm.c): a vCPU that halts with
    /// RFLAGS.IF clear and no event pending goes down (`hvm_vcpu_down`), and
    /// when none is left the domain shuts down with SHUTDOWN_poweroff. KVM
    /// keeps such a HLT to itself; `HaltProbe` finds it within a second.
    /// One vCPU, and two (vCPU 1 halts first, while vCPU 0 still runs).
    @Test("every vCPU halts with interrupts off: the domain powers off, as Xen's hvm_hlt does", arguments: [1, 2])
    func haltWithInterruptsOff(vcpus: Int) throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=halt_cli", memoryMiB: 64, vcpus: vcpus),
                                    limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.exit.exitStatus == 0)
        let halting = vcpus == 2 ? "PVHINFO halt_cli: vCPU 1 halted, vCPU 0 halting" : "PVHINFO halt_cli: one vCPU, vCPU 0 halting"
        #expect(run.lines.contains { $0.hasPrefix(halting) }, "\(run.console.text)")
        // The scenario never returns: no PASS or FAIL line, nothing after it.
        #expect(run.results()["halt_cli"] == nil, "\(run.console.text)")
    }

    /// Linux starts a PVH guest's secondary vCPUs natively, not with
    /// VCPUOP_initialise: INIT, SIPI, SIPI through the in-kernel LAPIC, the
    /// AP then runs a real-mode trampoline below 1 MiB. KVM_RUN of the AP
    /// returns EAGAIN when it takes the INIT (VCPU.run: run again). Also
    /// passes on the software backend (kvm_pvm): its emulator runs the
    /// real-mode trampoline, the lgdtl / CR0.PE / far jump to 32-bit code
    /// and the long-mode switch (about 11 ms from INIT, 10 of them the
    /// guest's INIT-SIPI delay). `pvh.sipi=real` stops at the real-mode flag.
    @Test("SMP the native way: INIT, SIPI, SIPI start vCPU 1 in real mode at 0x8000; it reaches long mode, makes a hypercall, and is up for Xen",
          arguments: ["", "pvh.sipi=real", "pvh.transport=vmcall"])
    func smpSIPI(_ options: String) throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=smp_sipi \(options)", memoryMiB: 64, vcpus: 2),
                                    limit: .seconds(120))
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.results()["smp_sipi"]?.hasPrefix("PASS") == true, "\(run.console.text)")
        #expect(run.lines.contains { $0.hasPrefix("PVHINFO smp_sipi: after ") && $0.contains("flag 0x49504953 CS 0x800") },
                "\(run.console.text)")
        if options != "pvh.sipi=real" {
            #expect(run.lines.contains { $0.hasPrefix("PVHTEST smp_sipi PASS real mode (CS 0x800) -> long mode, vcpu id 1") },
                    "\(run.console.text)")
        }
    }

    /// User mode and SYSCALL/SYSRET, as every Linux process uses them. On
    /// the software backend (kvm_pvm) a SYSCALL from CPL3 stays at CPL3 and
    /// faults fetching LSTAR; pvh breaks on the guest's #PF handler,
    /// recognises that frame and finishes the SYSCALL (FastSystemCall).
    /// SYSCALLs from user code with interrupts on while an interrupt fires
    /// every 20 us: SFMASK clears IF, so none may be taken between SYSCALL
    /// and SYSRET, where RSP is still the user's (Linux's entry_SYSCALL_64
    /// runs there before it switches stacks). On the software backend every
    /// one of them goes through pvh's SYSCALL fix-up. The interrupt is the
    /// LAPIC's own timer, or VIRQ_TIMER's upcall by each route pvh raises
    /// it: the per-vCPU vector in the LAPIC (what Linux uses) and the
    /// HVM_PARAM_CALLBACK_IRQ vector queued before an entry.
    @Test("SYSCALL with interrupts firing: none inside the SYSCALL entry (IF clear, user stack)",
          arguments: ["", "pvh.usys_irq=upcall", "pvh.usys_irq=upcall pvh.upcall=callback"])
    func userModeSyscallWithInterrupts(_ source: String) throws {
        let run = try bootTestGuest("pvh.scenarios=usermode_syscall_irq,version pvh.usys_n=3000 \(source)")
        let result = run.results()["usermode_syscall_irq"] ?? ""
        // The callback vector (an ExtINT pvh queues before an entry) still
        // lands inside the entry in some runs on the software backend,
        // although pvh holds it back there: 43, 1,892 and 2,635 of 3,001
        // SYSCALLs in three runs of 2026-12-04, none in others; in one CI
        // run of 2026-12-05 the guest printed nothing after its upcall set-up
        // and ran to the time limit (an interrupt on the user's stack can
        // leave it anywhere). Linux takes the per-vCPU vector, which never
        // did. Cause not found yet (README: the issue 9 regression). Every
        // other source must pass all of these.
        withKnownIssue("the callback vector is sometimes delivered inside the SYSCALL entry on the software backend",
                       isIntermittent: true) {
            #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
            #expect(result.hasPrefix("PASS 3001 syscalls"), "\(run.console.text)")
            #expect(result.contains(source.isEmpty ? "20 us timer" : "20 us upcall timer"), "\(result)")
            #expect(result.hasPrefix("PASS") || result.contains("interrupts delivered inside the SYSCALL entry"), "\(result)")
        } when: {
            run.domain.backend.isSoftware && source.contains("callback")
        }
        if source.contains("callback") {
            #expect(run.lines.contains("PVHINFO upcall vector 0xf3 via callback_irq"))
        } else if !source.isEmpty {
            #expect(run.domain.metrics.upcallsInjected.load(ordering: .relaxed) > 1000)
        }
    }

    @Test("user mode: SYSCALL enters the kernel at STAR's CS with RCX/RSP right; SYSRET or IRETQ returns to CPL3",
          arguments: ["", "pvh.user=iret", "pvh.transport=vmcall"])
    func userModeSyscall(_ options: String) throws {
        let run = try bootTestGuest("pvh.scenarios=usermode_syscall,usermode_syscall,hostile,version \(options)")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.results()["usermode_syscall"]?.hasPrefix("PASS entered kernel at CS 0x8 via SYSCALL") == true, "\(run.console.text)")
        #expect(run.results()["SUMMARY"] == "4 passed, 0 failed", "\(run.console.text)")
        if run.domain.backend.isSoftware {
            // Two scenario runs, two SYSCALLs each, all finished by pvh.
            #expect(run.domain.metrics.syscallsCompleted.load(ordering: .relaxed) == 4)
        }
    }

    /// Traps raised at CPL3 reach the guest's IDT as on hardware: the test
    /// guest checks the vector, error code, RIP, CS/SS/RSP of the frame, the
    /// stack it is on (RSP0 or #DB's IST1) and, after iretq, that user mode
    /// runs on. On the software backend `int n` arrived as #UD and `int1`
    /// with RIP on the instruction until pvh's fix-ups at the guest's #UD and
    /// #DB handlers (`UserModeTrap`); `int3` and single steps were right.
    static let userTrapScenarios: [(String, String)] = [
        ("usermode_int80", "PASS int 0x80 rip=0x8000000802 cs=0x2b"),
        ("usermode_int3", "PASS #BP rip=0x8000000804 cs=0x2b"),
        ("usermode_int1", "PASS #DB rip=0x8000000806 cs=0x2b"),
        ("usermode_step", "PASS #DB rip=0x8000000812 cs=0x2b rflags=0x40502 on IST1"),
        ("usermode_intgp", "PASS #GP error 0x40a rip=0x8000000814 cs=0x2b"),
        // INTO is invalid in 64-bit mode: #UD at it, never vector 4 (SDM Vol. 2 "INTO").
        ("usermode_into", "PASS #UD error 0x0 rip=0x8000000817 cs=0x2b"),
    ]

    @Test("user mode: int $0x80, int3, int1, a single step, int n through a DPL0 gate and into trap as on hardware",
          arguments: ["pvh.transport=page", "pvh.transport=vmcall"])
    func userModeTraps(_ options: String) throws {
        let names = Self.userTrapScenarios.map(\.0)
        // Twice, and a SYSCALL round trip after: the fix-ups leave the guest's IDT and user mode working.
        let run = try bootTestGuest("pvh.scenarios=\((names + names).joined(separator: ",")),usermode_syscall,version \(options)")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        let results = run.results()
        for (name, want) in Self.userTrapScenarios {
            #expect(results[name]?.hasPrefix(want) == true, "\(name): \(results[name] ?? "missing")\n\(run.console.text)")
        }
        #expect(results["usermode_syscall"]?.hasPrefix("PASS") == true, "\(run.console.text)")
        #expect(results["SUMMARY"] == "14 passed, 0 failed", "\(run.console.text)")
        if run.domain.backend.isSoftware {
            // Per run pvh puts right what the backend gets wrong: int $0x80,
            // int1 and int $0x81 with the kvm_pvm of 2026-12-03; the host
            // kernel of 2026-12-04 (6.18.44) gets two of those six right
            // itself. int3 and the step needed nothing. The results above
            // are what must hold.
            let completed = run.domain.metrics.userTrapsCompleted.load(ordering: .relaxed)
            #expect(completed <= 6 && completed % 2 == 0, "\(completed) user traps completed")
            #expect(run.domain.metrics.syscallsCompleted.load(ordering: .relaxed) == 2)
        }
    }

    /// INT3 is a software interrupt: through a DPL0 gate it is #GP((3 << 3) | 2)
    /// at the CC (SDM Vol. 2 "INT n/INTO/INT3/INT1"). kvm_pvm skips the DPL
    /// check and delivers #BP with RIP after the CC; pvh breaks on a DPL0
    /// #BP gate's handler and delivers the #GP instead (`UserModeTrap.deliverBreakpoint`),
    /// but only with a debug register to spare: while the guest uses its
    /// vmcall sites (`pvh.transport=vmcall`) one register stays theirs and
    /// #BP is the handler left out, so there the backend's #BP remains.
    /// Twice, between an int3 through a DPL3 gate (#BP, RIP after the CC,
    /// left alone) and a SYSCALL round trip.
    @Test("user mode: int3 through a DPL0 #BP gate is #GP(0x1a) at the int3; through a DPL3 gate #BP after it",
          arguments: ["pvh.transport=page", "pvh.transport=vmcall"])
    func userModeInt3ThroughKernelGate(_ options: String) throws {
        let names = ["usermode_int3_dpl0", "usermode_int3", "usermode_int3_dpl0", "usermode_syscall"]
        let run = try bootTestGuest("pvh.scenarios=\(names.joined(separator: ",")),version \(options)")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        let results = run.results()
        #expect(results["usermode_int3"]?.hasPrefix("PASS #BP rip=0x8000000804 cs=0x2b") == true, "\(run.console.text)")
        #expect(results["usermode_syscall"]?.hasPrefix("PASS") == true, "\(run.console.text)")
        let result = results["usermode_int3_dpl0"]
        let sitesKeepARegister = run.domain.backend.isSoftware && options == "pvh.transport=vmcall"
        withKnownIssue("the vmcall sites keep the debug register #BP's handler would need") {
            #expect(result == "PASS #GP error 0x1a rip=0x8000000803 cs=0x2b", "\(run.console.text)")
        } when: {
            sitesKeepARegister
        }
        if sitesKeepARegister {
            #expect(result?.hasPrefix("FAIL vector 0x3 through a DPL0 gate reached vector 3 (rip=0x8000000804)") == true,
                    "\(run.console.text)")
        } else if run.domain.backend.isSoftware {
            // Both int3_dpl0 runs put right by pvh; the DPL3 int3 needed nothing.
            #expect(run.domain.metrics.userTrapsCompleted.load(ordering: .relaxed) == UInt64(2))
            #expect(results["SUMMARY"] == "5 passed, 0 failed", "\(run.console.text)")  // and version
        }
    }

    @Test("smp_sipi needs a second vCPU: a clear guest-side FAIL with one")
    func smpSIPIOneVCPU() throws {
        let run = try bootTestGuest("pvh.scenarios=smp_sipi")
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["smp_sipi"] == "FAIL no vCPU 1 (boot with --vcpus 2)", "\(run.console.text)")
    }

    @Test("an unknown scenario is reported by the guest, not a VMM failure")
    func unknownScenario() throws {
        let run = try bootTestGuest("pvh.scenarios=nosuch")
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.results()["nosuch"]?.hasPrefix("FAIL") == true)
    }
}

/// A domain's id comes from its configuration (the toolstack hands them out),
/// not from a constant: the guest sees it in CPUID, its event channels and
/// its XenStore home.
@Suite("Domain ids", .enabled(if: Env.hasKVM, "needs /dev/kvm"))
struct DomainIDTests {
    @Test("a guest built as domain 7 sees 7 everywhere; its tree is /local/domain/7")
    func domainSeven() throws {
        let elf = try Env.testGuest.get()
        var config = GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=evtchn,xenstore", memoryMiB: 32)
        config.domainID = DomainID(rawValue: 7)
        let home = Lock<String?>(nil)
        let run = try GuestRun.boot(config, limit: .seconds(120), before: { domain in
            home.withLock { $0 = try? domain.store.read("/local/domain/7/domid") }
        })
        #expect(run.exit == .shutdown(.poweroff))
        #expect(run.lines.contains { $0.hasPrefix("PVHINFO evtchn loopback") && $0.hasSuffix("(domid 7)") },
                "\(run.console.text)")
        #expect(run.results()["xenstore"]?.hasPrefix("PASS") == true, "\(run.console.text)")
        #expect(home.withLock { $0 } == "7")
    }

    @Test("domain ids 0 (the control domain) and DOMID_FIRST_RESERVED up are refused as usage errors", arguments: [UInt16(0), 0x7ff0, 0xffff])
    func reservedIDs(_ id: UInt16) throws {
        let elf = try Env.testGuest.get()
        var config = GuestConfiguration(kernelPath: elf, memoryMiB: 32)
        config.domainID = DomainID(rawValue: id)
        #expect {
            _ = try Domain(configuration: config, console: CapturingConsoleSink())
        } throws: { error in
            (error as? DomainError)?.isUsageError == true && "\(error)".hasPrefix("domain id \(id):")
        }
    }
}
