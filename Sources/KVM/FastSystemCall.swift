/// The architectural effect of 64-bit SYSCALL and SYSRET (SDM Vol. 2
/// "SYSCALL", "SYSRET"), for a software backend that runs guest CPL3 code
/// natively and leaves a SYSCALL half done: on kvm_pvm an unmodified Linux
/// guest's `syscall` loads RIP = LSTAR, RCX and R11, but the CPU stays at
/// CPL3 (CS 0x33) and then faults on the kernel page. pvh finishes the
/// privilege change; nothing else of the instruction is redone. Pure: the
/// VCPU applies the result. Deliberately tiny: not a CPU emulator.
public enum FastSystemCall {
    /// IA32_STAR, IA32_LSTAR, IA32_FMASK (SDM Vol. 4 Table 2-2).
    public static let star = MSRIndex(0xC000_0081)
    public static let lstar = MSRIndex(0xC000_0082)
    public static let fmask = MSRIndex(0xC000_0084)

    /// RFLAGS.RF (bit 16): the resumed instruction's breakpoint is not taken again.
    public static let resumeFlag: UInt64 = 1 << 16

    /// SYSCALL's privilege change, given the state the backend left (RIP =
    /// LSTAR, RCX/R11 already saved): CS.Selector = STAR[47:32] & 0xFFFC,
    /// a flat 64-bit code segment at DPL 0; SS.Selector = STAR[47:32] + 8,
    /// a flat writable data segment at DPL 0; RFLAGS &= ~FMASK (and RF
    /// cleared, as SYSCALL does). RSP is not changed (the kernel switches
    /// stacks itself).
    public static func enterKernel(regs: X86Registers, sregs: X86SpecialRegisters, star: UInt64, fmask: UInt64)
        -> (X86Registers, X86SpecialRegisters) {
        var r = regs, s = sregs
        let selector = UInt16(truncatingIfNeeded: star >> 32) & 0xfffc
        s.cs = SegmentRegister(base: 0, limit: 0xffff_ffff, selector: selector, type: 0xb, present: true,
                               dpl: 0, db: false, s: true, l: true, g: true)
        s.ss = SegmentRegister(base: 0, limit: 0xffff_ffff, selector: selector &+ 8, type: 0x3, present: true,
                               dpl: 0, db: true, s: true, l: false, g: true)
        r.rflags = (r.rflags & ~fmask & ~resumeFlag) | 0x2
        return (r, s)
    }

    /// 64-bit SYSRET (REX.W): RIP = RCX; RFLAGS = (R11 & 0x3C7FD7) | 2;
    /// CS.Selector = STAR[63:48] + 16 | 3, a flat 64-bit code segment at
    /// DPL 3; SS.Selector = STAR[63:48] + 8 | 3, flat data at DPL 3. Nil when
    /// RCX is not canonical: SYSRET raises #GP(0) then (at CPL0).
    public static func returnToUser(regs: X86Registers, sregs: X86SpecialRegisters, star: UInt64)
        -> (X86Registers, X86SpecialRegisters)? {
        let top = regs.rcx >> 47
        guard top == 0 || top == 0x1_ffff else { return nil }
        var r = regs, s = sregs
        let base = UInt16(truncatingIfNeeded: star >> 48)
        s.cs = SegmentRegister(base: 0, limit: 0xffff_ffff, selector: (base &+ 16) | 3, type: 0xb, present: true,
                               dpl: 3, db: false, s: true, l: true, g: true)
        s.ss = SegmentRegister(base: 0, limit: 0xffff_ffff, selector: (base &+ 8) | 3, type: 0x3, present: true,
                               dpl: 3, db: true, s: true, l: false, g: true)
        r.rip = regs.rcx
        r.rflags = (regs.r11 & 0x3C_7FD7) | 0x2
        return (r, s)
    }

    // MARK: Catching the half-done SYSCALL

    /// Whether a page fault's frame is the backend's half-done SYSCALL: the
    /// fault hit at CPL3 on the first byte of the SYSCALL entry (LSTAR).
    public static func isHalfDoneSyscall(_ frame: InterruptFrame, lstar: UInt64) -> Bool {
        frame.rip == lstar && frame.cs & 3 == 3
    }

    /// The state SYSCALL should have produced, rebuilt from the page fault
    /// it caused instead: the fault's frame is dropped (RSP back to the user
    /// stack pointer it saved, which SYSCALL does not change), RIP = LSTAR,
    /// RFLAGS = the user's flags masked by FMASK (RCX and R11 are already
    /// right), CS/SS from STAR at CPL0.
    public static func enterKernel(fromFault frame: InterruptFrame, regs: X86Registers, sregs: X86SpecialRegisters,
                                   star: UInt64, fmask: UInt64) -> (X86Registers, X86SpecialRegisters) {
        var r = regs
        r.rsp = frame.rsp
        r.rip = frame.rip
        r.rflags = frame.rflags
        return enterKernel(regs: r, sregs: sregs, star: star, fmask: fmask)
    }
}
