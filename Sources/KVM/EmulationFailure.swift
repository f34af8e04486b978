/// What to do when KVM's emulator fails on a software backend (kvm_pvm runs
/// guest CPL0 code in the emulator, which cannot run `int3`, `int n` or
/// `icebp`). Where the failed instruction has an architecturally defined
/// outcome, pvh delivers that outcome through the guest's IDT instead of
/// stopping the guest. Deliberately tiny: this is not a CPU emulator.
public enum EmulationFailure {
    public enum Resolution: Equatable, Sendable {
        /// Deliver exception `vector` as a trap: RIP advances past the
        /// instruction (`length` bytes) and the exception is injected
        /// (SDM Vol. 3 §6.5: #BP from INT3 and #DB from INT1 are traps).
        case exception(vector: UInt8, length: Int)
        /// Deliver software interrupt `vector` (`int imm8`): RIP advances
        /// `length` bytes, then the interrupt is delivered through the IDT.
        case softwareInterrupt(vector: UInt8, length: Int)
        /// The instruction has no effect here: RIP advances `length` bytes.
        case skip(length: Int)
        /// A fault: exception `vector` is delivered with RIP left on the
        /// instruction (SDM Vol. 3 §6.5).
        case fault(vector: UInt8)
        /// 64-bit SYSRET (REX.W 0F 07) at CPL0 in long mode: return to user
        /// mode as the instruction defines it (`FastSystemCall.returnToUser`;
        /// the backend runs CPL3 natively but cannot switch to it here).
        case systemReturn
        /// No defined outcome pvh can provide: stop the guest with `reason`.
        case unhandled(reason: String)
    }

    /// Prefixes skipped in front of the instruction: operand size (0x66) and
    /// address size (0x67) do not change INT3/INT n/INT1 (SDM Vol. 2 "INT n/INTO/INT3/INT1").
    static let ignorablePrefixes: Set<UInt8> = [0x66, 0x67]

    /// Decides the outcome for the failed instruction `bytes` (from
    /// KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) in the given state.
    /// Pure.
    /// `fpuStatus` is the x87 status word (KVM_GET_FPU), read only for FWAIT.
    public static func resolve(bytes: [UInt8], regs: X86Registers, sregs: X86SpecialRegisters,
                               fpuStatus: UInt16? = nil) -> Resolution {
        guard !bytes.isEmpty else { return .unhandled(reason: "no instruction bytes (KVM_CAP_EXIT_ON_EMULATION_FAILURE off?)") }
        // Only CPL0 protected/long mode: that is where the software backend
        // emulates. Elsewhere a DPL check against the gate (and #GP) could apply.
        guard sregs.cpuMode != .real else { return .unhandled(reason: "emulation failure in real mode") }
        guard regs.rflags & (1 << 17) == 0 else { return .unhandled(reason: "emulation failure in virtual-8086 mode") }
        guard sregs.cpl == 0 else { return .unhandled(reason: "emulation failure at CPL\(sregs.cpl)") }
        var i = 0
        while i < bytes.count, i < 4, ignorablePrefixes.contains(bytes[i]) { i += 1 }
        guard i < bytes.count else { return .unhandled(reason: "only prefixes") }
        // REX.W SYSRET: 48 0F 07 (any REX with W set).
        if bytes[i] & 0xF8 == 0x48, i + 2 < bytes.count, bytes[i + 1] == 0x0F, bytes[i + 2] == 0x07 {
            guard sregs.cpuMode == .long64 else { return .unhandled(reason: "SYSRET outside 64-bit mode") }
            return .systemReturn
        }
        switch bytes[i] {
        case 0xCC:
            return .exception(vector: 3, length: i + 1)
        case 0xF1:
            return .exception(vector: 1, length: i + 1)
        case 0xCD:
            guard i + 1 < bytes.count else { return .unhandled(reason: "truncated int imm8") }
            return .softwareInterrupt(vector: bytes[i + 1], length: i + 2)
        case 0x9B:
            // FWAIT (SDM Vol. 2 "WAIT/FWAIT"): #NM if CR0.MP and CR0.TS, #MF
            // if an unmasked x87 exception is pending (FSW.ES), else nothing.
            let mp: UInt64 = 1 << 1, ts: UInt64 = 1 << 3
            if sregs.cr0 & mp != 0 && sregs.cr0 & ts != 0 { return .fault(vector: 7) }
            guard let fpuStatus else { return .unhandled(reason: "FWAIT without the x87 status word") }
            if fpuStatus & (1 << 7) != 0 { return .fault(vector: 16) }
            return .skip(length: i + 1)
        default:
            return .unhandled(reason: "instruction cannot be emulated")
        }
    }

    /// RIP after skipping `length` bytes, wrapped to the code size (EIP wraps
    /// at 4 GiB outside 64-bit mode).
    public static func advance(rip: UInt64, by length: Int, mode: CPUMode) -> UInt64 {
        let next = rip &+ UInt64(length)
        return mode == .long64 ? next : next & 0xFFFF_FFFF
    }
}

/// DR7 encoding for KVM_SET_GUEST_DEBUG hardware breakpoints (SDM Vol. 3 §17.2.4).
public enum DebugRegisters {
    /// At most four address breakpoints (DR0–DR3).
    public static let maxBreakpoints = 4

    /// DR7 for `count` execute breakpoints in DR0..DR(count-1): local enable
    /// L0..L3 (bits 0, 2, 4, 6), R/W = 00 (instruction execution) and LEN = 00
    /// (bits 16–31 zero), plus bit 10, which reads as 1.
    public static func dr7(executeBreakpoints count: Int) -> UInt64 {
        guard count > 0 else { return 0 }
        var dr7: UInt64 = 1 << 10
        for i in 0..<min(count, maxBreakpoints) { dr7 |= 1 << (2 * UInt64(i)) }
        return dr7
    }
}

extension EmulationFailure {
    /// Whether `int n` is injected as a software interrupt
    /// (kvm_vcpu_events.interrupt.soft = 1) or as an external-type interrupt
    /// after RIP has been advanced. At CPL0 both are architecturally the same
    /// (the gate DPL check cannot fail); see the KVMTests for the chosen one.
    static let injectIntAsSoft = false
}
