import Testing
@testable import KVM

@Suite struct CPUIDTableTests {
    @Test func setReplacesAndLookupHonoursSignificantIndex() {
        var t = CPUIDTable()
        t.set(CPUIDEntry(function: 1, eax: 0x10))
        t.set(CPUIDEntry(function: 7, index: 0, flags: .significantIndex, ebx: 1))
        t.set(CPUIDEntry(function: 7, index: 1, flags: .significantIndex, ebx: 2))
        t.set(CPUIDEntry(function: 1, eax: 0x20))
        #expect(t.count == 3)
        #expect(t.lookup(function: 1)?.eax == 0x20)
        #expect(t.lookup(function: 1, index: 5)?.eax == 0x20)  // index ignored without the flag
        #expect(t.lookup(function: 7, index: 1)?.ebx == 2)
        #expect(t.lookup(function: 7, index: 2) == nil)
        #expect(t.lookup(function: 0x4000_0000) == nil)
    }

    @Test func modifyAndRemove() {
        var t = CPUIDTable([
            CPUIDEntry(function: 0xd, index: 0, flags: .significantIndex, eax: 1),
            CPUIDEntry(function: 0xd, index: 1, flags: .significantIndex, eax: 2),
            CPUIDEntry(function: 0x8000_0001, ecx: 0xff),
        ])
        t.modify(function: 0x8000_0001) { $0.ecx &= ~1 }
        #expect(t.lookup(function: 0x8000_0001)?.ecx == 0xfe)
        t.remove(function: 0xd, index: 1)
        #expect(t.lookup(function: 0xd, index: 0) != nil)
        #expect(t.lookup(function: 0xd, index: 1) == nil)
        t.remove(function: 0xd)
        #expect(t.count == 1)
    }

    @Test func bufferRoundTrip() {
        let t = CPUIDTable([CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0005, ebx: 0x566e6558, ecx: 0x65584d4d, edx: 0x4d4d566e)])
        #expect(CPUIDBuffer(t).table() == t)
    }
}

@Suite struct DebugRegisterTests {
    @Test func dr7EnablesLocalExecuteBreakpoints() {
        #expect(DebugRegisters.dr7(executeBreakpoints: 0) == 0)
        #expect(DebugRegisters.dr7(executeBreakpoints: 1) == 0x401)
        #expect(DebugRegisters.dr7(executeBreakpoints: 2) == 0x405)
        #expect(DebugRegisters.dr7(executeBreakpoints: 4) == 0x455)
        // R/W and LEN fields (bits 16-31) stay 00: execute, 1 byte.
        #expect(DebugRegisters.dr7(executeBreakpoints: 4) & 0xFFFF_0000 == 0)
    }
}

@Suite struct CPUModeTests {
    @Test func modes() {
        var s = X86SpecialRegisters()
        #expect(s.cpuMode == .real)
        s.cr0 = 0x11
        #expect(s.cpuMode == .protected32)
        s.cr0 |= X86SpecialRegisters.cr0PG
        s.efer = X86SpecialRegisters.eferLME | X86SpecialRegisters.eferLMA
        #expect(s.cpuMode == .compatibility)
        s.cs.l = true
        #expect(s.cpuMode == .long64)
        #expect(s.cpuMode.is64Bit)
    }

    @Test func pvhEntryStateIsFlat32BitProtectedMode() {
        let s = PVHEntryState.specialRegisters(keeping: X86SpecialRegisters())
        #expect(s.cpuMode == .protected32)
        #expect(s.cr0 == 0x11 && s.cr4 == 0 && s.efer == 0)
        #expect(s.cs.type == 0xb && s.cs.db && s.cs.g && s.cs.s && s.cs.limit == 0xFFFF_FFFF && s.cs.base == 0)
        #expect(s.ss.type == 0x3 && s.ds == s.ss && s.es == s.ss && s.fs == s.ss && s.gs == s.ss)
        #expect(s.tr.type == 0xb && !s.tr.s && s.tr.limit == 0x67)
        let r = PVHEntryState.registers(entry: 0x100000, startInfo: 0x6000)
        #expect(r.rip == 0x100000 && r.rbx == 0x6000 && r.rflags == 2 && r.rax == 0)
    }
}

@Suite struct EmulationFailureTests {
    @Test func fwaitIsANoOpUnlessTSOrAPendingException() {
        let (r, s) = Self.cpl0
        // No pending x87 exception, CR0.TS clear: nothing happens but RIP moving on.
        #expect(EmulationFailure.resolve(bytes: [0x9B, 0x65], regs: r, sregs: s, fpuStatus: 0) == .skip(length: 1))
        // FSW.ES: #MF (vector 16), a fault at the FWAIT.
        #expect(EmulationFailure.resolve(bytes: [0x9B], regs: r, sregs: s, fpuStatus: 1 << 7) == .fault(vector: 16))
        // CR0.MP and CR0.TS: #NM (vector 7).
        var ts = s
        ts.cr0 |= (1 << 1) | (1 << 3)
        #expect(EmulationFailure.resolve(bytes: [0x9B], regs: r, sregs: ts, fpuStatus: 0) == .fault(vector: 7))
        // Without the status word pvh cannot tell: stop rather than guess.
        guard case .unhandled = EmulationFailure.resolve(bytes: [0x9B], regs: r, sregs: s) else {
            Issue.record("FWAIT without FSW must be unhandled")
            return
        }
    }

    static let cpl0: (X86Registers, X86SpecialRegisters) = (PVHEntryState.registers(entry: 0x1000, startInfo: 0),
                                                            PVHEntryState.specialRegisters(keeping: X86SpecialRegisters()))

    func resolve(_ bytes: [UInt8]) -> EmulationFailure.Resolution {
        EmulationFailure.resolve(bytes: bytes, regs: Self.cpl0.0, sregs: Self.cpl0.1)
    }

    @Test func sysretqInLongModeIsSystemReturnOnlyThere() {
        var s = Self.cpl0.1
        // 32-bit protected mode (the PVH entry state): not a SYSRET pvh completes.
        if case .systemReturn = EmulationFailure.resolve(bytes: [0x48, 0x0F, 0x07], regs: Self.cpl0.0, sregs: s) {
            Issue.record("SYSRET outside long mode")
        }
        s.cr0 |= X86SpecialRegisters.cr0PG
        s.efer = 0x500  // LME | LMA
        s.cs.l = true
        s.cs.db = false
        #expect(EmulationFailure.resolve(bytes: [0x48, 0x0F, 0x07], regs: Self.cpl0.0, sregs: s) == .systemReturn)
        #expect(EmulationFailure.resolve(bytes: [0x4C, 0x0F, 0x07], regs: Self.cpl0.0, sregs: s) == .systemReturn)
        // 32-bit SYSRET (no REX.W) and SYSCALL itself are not handled.
        if case .systemReturn = EmulationFailure.resolve(bytes: [0x0F, 0x07], regs: Self.cpl0.0, sregs: s) { Issue.record("0F 07") }
        if case .systemReturn = EmulationFailure.resolve(bytes: [0x0F, 0x05], regs: Self.cpl0.0, sregs: s) { Issue.record("0F 05") }
    }

    @Test func int3IsBreakpointTrap() {
        #expect(resolve([0xCC, 0x90, 0x90]) == .exception(vector: 3, length: 1))
    }

    @Test func intImm8IsSoftwareInterrupt() {
        #expect(resolve([0xCD, 0x80]) == .softwareInterrupt(vector: 0x80, length: 2))
        #expect(resolve([0x66, 0xCD, 0x21]) == .softwareInterrupt(vector: 0x21, length: 3))
    }

    @Test func icebpIsDebugTrap() {
        #expect(resolve([0xF1]) == .exception(vector: 1, length: 1))
        #expect(resolve([0x67, 0xF1]) == .exception(vector: 1, length: 2))
    }

    @Test func everythingElseIsUnhandled() {
        for bytes: [UInt8] in [[], [0xCD], [0x66, 0x66], [0xDB, 0xE3] /* fninit */, [0x0F, 0xC7, 0x0E] /* cmpxchg8b/16b */, [0xCF] /* iret */] {
            guard case .unhandled = resolve(bytes) else {
                Issue.record("expected unhandled for \(bytes)")
                continue
            }
        }
    }

    @Test func notAtCPL3OrRealMode() {
        var s = Self.cpl0.1
        s.ss.dpl = 3
        s.cs.dpl = 3
        guard case .unhandled = EmulationFailure.resolve(bytes: [0xCC], regs: Self.cpl0.0, sregs: s) else {
            Issue.record("CPL3 must be unhandled"); return
        }
        guard case .unhandled = EmulationFailure.resolve(bytes: [0xCC], regs: Self.cpl0.0, sregs: X86SpecialRegisters()) else {
            Issue.record("real mode must be unhandled"); return
        }
    }

    @Test func ripWrapsOutside64BitMode() {
        #expect(EmulationFailure.advance(rip: 0xFFFF_FFFF, by: 1, mode: .protected32) == 0)
        #expect(EmulationFailure.advance(rip: 0xFFFF_FFFF, by: 1, mode: .long64) == 0x1_0000_0000)
    }
}

@Suite struct MSRFilterPlanTests {
    @Test func nearbyMSRsShareARangeWithDenyBits() {
        let r = MSRFilterPlan.ranges(reads: [], writes: [MSRIndex(0x4000_0000), MSRIndex(0x4000_0003), MSRIndex(0xC000_0080)])
        #expect(r.count == 2)
        #expect(r[0] == .init(write: true, base: 0x4000_0000, count: 4, bitmap: [0b1111_0110]))
        #expect(r[1] == .init(write: true, base: 0xC000_0080, count: 1, bitmap: [0b1111_1110]))
    }
}

@Suite struct HostBackendTests {
    @Test func detection() {
        let vmx = "processor : 0\nflags\t\t: fpu vme vmx sse\n"
        let plain = "processor : 0\nflags\t\t: fpu vme sse\n"
        #expect(HostBackend.detect(cpuinfo: vmx, loadedModules: ["kvm_intel"]) == .intelVMX)
        #expect(HostBackend.detect(cpuinfo: "flags : svm", loadedModules: ["kvm_amd"]) == .amdSVM)
        #expect(HostBackend.detect(cpuinfo: plain, loadedModules: ["kvm_pvm"]) == .software(module: "kvm_pvm"))
        #expect(HostBackend.detect(cpuinfo: plain, loadedModules: []) == .unknown)
    }

    @Test func reportExplainsHypercallTransport() {
        let report = KVMSystem.hostReport(backend: .software(module: "kvm_pvm"), capabilities: KVMCapabilities(syncRegs: 7))
        #expect(report.contains("kvm_pvm"))
        #expect(report.contains("Xen hypercalls: trapped in userspace (no KVM_CAP_XEN_HVM)"))
    }
}

@Suite("SYSCALL/SYSRET completion (software backend)")
struct FastSystemCallTests {
    /// Linux's layout: STAR[47:32] = __KERNEL_CS 0x10, STAR[63:48] = __USER32_CS 0x23,
    /// so user CS 0x33, user SS 0x2b; FMASK = TF|DF|IF|IOPL|AC|NT.
    let star: UInt64 = 0x0023_0010_0000_0000
    let fmask: UInt64 = 0x47700

    func userState() -> (X86Registers, X86SpecialRegisters) {
        var r = X86Registers(), s = X86SpecialRegisters()
        r.rip = 0xffff_ffff_81e0_0080  // LSTAR: where the backend left it
        r.rcx = 0x49641b               // return address, saved by the backend
        r.r11 = 0x246
        r.rflags = 0x10246 | 0x100     // RF and TF set
        r.rsp = 0x7fff_cd37_8290
        s.cs = SegmentRegister(limit: 0xffff_ffff, selector: 0x33, type: 0xb, present: true, dpl: 3, s: true, l: true, g: true)
        s.ss = SegmentRegister(limit: 0xffff_ffff, selector: 0x2b, type: 0x3, present: true, dpl: 3, db: true, s: true, g: true)
        s.efer = 0xd01
        s.cr0 = 0x8005_0033
        return (r, s)
    }

    @Test("SYSCALL: kernel CS/SS from STAR at CPL0, RFLAGS masked, RIP/RCX/R11/RSP untouched")
    func entry() {
        let (r0, s0) = userState()
        let (r, s) = FastSystemCall.enterKernel(regs: r0, sregs: s0, star: star, fmask: fmask)
        #expect(s.cs.selector == 0x10 && s.cs.dpl == 0 && s.cs.l && s.cs.present)
        #expect(s.ss.selector == 0x18 && s.ss.dpl == 0 && s.ss.present)
        #expect(s.cpl == 0)
        #expect(s.cpuMode == .long64)
        #expect(r.rflags & 0x100 == 0 && r.rflags & 0x200 == 0 && r.rflags & (1 << 16) == 0)  // TF, IF, RF clear
        #expect(r.rip == r0.rip && r.rcx == r0.rcx && r.r11 == r0.r11 && r.rsp == r0.rsp)
    }

    @Test("SYSRET: RIP from RCX, RFLAGS from R11, user CS 0x33 / SS 0x2b at CPL3; a non-canonical RCX is refused")
    func sysret() throws {
        var (r0, s0) = userState()
        (r0, s0) = FastSystemCall.enterKernel(regs: r0, sregs: s0, star: star, fmask: fmask)
        r0.rip = 0xffff_ffff_81e0_0120
        let back = try #require(FastSystemCall.returnToUser(regs: r0, sregs: s0, star: star))
        #expect(back.0.rip == 0x49641b)
        #expect(back.0.rflags == 0x246)
        #expect(back.1.cs.selector == 0x33 && back.1.cs.dpl == 3 && back.1.cs.l)
        #expect(back.1.ss.selector == 0x2b && back.1.ss.dpl == 3)
        #expect(back.1.cpl == 3)
        r0.rcx = 0x0000_8000_0000_0000
        #expect(FastSystemCall.returnToUser(regs: r0, sregs: s0, star: star) == nil)
    }
}
