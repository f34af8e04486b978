/// Traps raised by guest CPL3 code that a software backend leaves undone or
/// wrong, and their architectural outcome (SDM Vol. 2 "INT n/INTO/INT3/INT1";
/// Vol. 3 §6.12.1 and §6.14, interrupt delivery in IA-32e mode). On kvm_pvm
/// (CPL3 native, CPL0 emulated), measured with the test guest's
/// `usermode_*` scenarios:
///
/// - `int n` at CPL3 reaches the guest as #UD at the instruction, whatever
///   the gate (hardware: vector n through a gate of DPL 3, else #GP with
///   error code (n << 3) | 2). `int3` and single steps are delivered right.
/// - `int1` (ICEBP) reaches the guest's #DB handler with RIP still on the
///   instruction, so returning re-executes it forever (hardware: a trap,
///   RIP after it).
/// - `int3` (CC) reaches the guest's #BP handler whatever the gate's DPL,
///   RIP after it (hardware: #GP((3 << 3) | 2) at the CC through a gate of
///   DPL < 3; the DPL check applies to INT3 as to INT n, not to INT1).
///
/// pvh sees them at the guest's handler (a breakpoint on its #UD, #DB and
/// #BP gates, as for `FastSystemCall`) and computes what the CPU would have
/// done; the VMM writes the frame and the VCPU takes the registers. Pure,
/// and deliberately narrow: only these three instructions, only from CPL3 in
/// long mode, only into handlers whose code segment is the one the backend
/// itself just delivered through. Not a CPU emulator.
public enum UserModeTrap {
    /// RFLAGS bits interrupt delivery touches (SDM Vol. 1 §3.4.3).
    public static let trapFlag: UInt64 = 1 << 8
    public static let interruptFlag: UInt64 = 1 << 9
    public static let nestedTaskFlag: UInt64 = 1 << 14
    public static let resumeFlag: UInt64 = 1 << 16
    public static let virtual8086Flag: UInt64 = 1 << 17

    /// #DB, #BP, #NP, #GP.
    public static let debugVector: UInt8 = 1
    public static let breakpointVector: UInt8 = 3
    public static let segmentNotPresentVector: UInt8 = 11
    public static let generalProtectionVector: UInt8 = 13

    /// DR6 bits that say which debug condition raised a #DB (SDM Vol. 3
    /// §17.2.3): B0-B3, BD, BS, BT. INT1 sets none of them.
    public static let dr6ConditionBits: UInt64 = 0xE00F

    /// What pvh does at the guest's trap handler.
    public enum Outcome: Equatable, Sendable {
        /// Deliver this instead of what the backend delivered.
        case deliver(TrapDelivery)
        /// Not a case pvh finishes (the guest gets what the backend gave it).
        case unhandled(reason: String)
    }

    /// `int n` (CD ib) at the start of `bytes`, after operand- and
    /// address-size prefixes, which do not change it: the vector and the
    /// instruction's length. Any other prefix (LOCK: a real #UD) or opcode is nil.
    public static func softwareInterrupt(in bytes: [UInt8]) -> (vector: UInt8, length: Int)? {
        let i = prefixLength(bytes)
        guard i + 1 < bytes.count, bytes[i] == 0xCD else { return nil }
        return (bytes[i + 1], i + 2)
    }

    /// The backend's #UD at CPL3 on an `int n`, turned into what INT n does
    /// in IA-32e mode (SDM Vol. 2 "INT n/INTO/INT3/INT1", Operation,
    /// IA-32e mode): a gate past the IDT limit, not a 64-bit interrupt or
    /// trap gate, or of DPL < 3 is #GP((n << 3) | 2) at the instruction; a
    /// gate not present is #NP((n << 3) | 2); else vector n with RIP after
    /// the instruction. `user` is the #UD's frame (the state at the
    /// instruction); `gate` reads an IDT entry (nil past the limit),
    /// `stack` the TSS's RSP0 (IST 0) or IST n; `kernelCS` is the code
    /// segment the backend delivered the #UD through.
    public static func deliverSoftwareInterrupt(vector: UInt8, length: Int, user: InterruptFrame, kernelCS: UInt16,
                                                gate: (UInt8) -> InterruptGate?, stack: (UInt8) -> UInt64?) -> Outcome {
        guard user.cs & 3 == 3 else { return .unhandled(reason: "not from CPL3") }
        let errorCode = UInt64(vector) << 3 | 2  // IDT bit set, EXT clear (SDM Vol. 3 §6.13)
        let target = gate(vector)
        guard let target, target.isInterruptOrTrapGate, target.dpl == 3 else {
            return deliverFault(generalProtectionVector, errorCode: errorCode, user: user, kernelCS: kernelCS,
                                gate: gate, stack: stack)
        }
        guard target.present else {
            return deliverFault(segmentNotPresentVector, errorCode: errorCode, user: user, kernelCS: kernelCS,
                                gate: gate, stack: stack)
        }
        var frame = user
        frame.errorCode = nil
        frame.rip = user.rip &+ UInt64(length)
        // A software interrupt is not a fault: RF is not set in its image.
        frame.rflags = user.rflags & ~resumeFlag
        return deliver(vector, through: target, frame: frame, kernelCS: kernelCS, stack: stack)
    }

    /// The backend's #BP at CPL3, turned into what INT3 (CC) does in
    /// IA-32e mode: the same as INT n with vector 3 and a one-byte
    /// instruction (SDM Vol. 2 "INT n/INTO/INT3/INT1", Operation: the gate
    /// DPL check is skipped for INT1 only), so `deliverSoftwareInterrupt`
    /// decides. `frame` is the #BP's frame (a trap: RIP after the CC) and
    /// `previousByte` the byte at its RIP - 1. Through a present DPL3 gate
    /// the backend's #BP already is that outcome (unhandled: nothing to
    /// do); through a DPL0 gate it becomes #GP(0x1a) at the CC. Only a CC
    /// before RIP: a prefixed CC cannot be told apart backwards from the
    /// end of another instruction, and `int $3` (CD 03) arrives as #UD.
    public static func deliverBreakpoint(frame: InterruptFrame, previousByte: UInt8, kernelCS: UInt16,
                                         gate: (UInt8) -> InterruptGate?, stack: (UInt8) -> UInt64?) -> Outcome {
        guard frame.errorCode == nil, frame.cs & 3 == 3 else { return .unhandled(reason: "not a #BP from CPL3") }
        guard previousByte == 0xCC else { return .unhandled(reason: "no int3 before the #BP's RIP") }
        var user = frame
        user.rip = frame.rip &- 1
        let outcome = deliverSoftwareInterrupt(vector: breakpointVector, length: 1, user: user, kernelCS: kernelCS,
                                               gate: gate, stack: stack)
        if case .deliver(let d) = outcome, d.vector == breakpointVector {
            return .unhandled(reason: "the gate lets CPL3 in: the backend's #BP is right")
        }
        return outcome
    }

    /// A fault raised by INT n itself: the vector's gate (no DPL check: not
    /// a software interrupt), the frame at the instruction with the error
    /// code, RF set in the image (SDM Vol. 3 §17.3.1.1).
    static func deliverFault(_ vector: UInt8, errorCode: UInt64, user: InterruptFrame, kernelCS: UInt16,
                             gate: (UInt8) -> InterruptGate?, stack: (UInt8) -> UInt64?) -> Outcome {
        guard let target = gate(vector), target.isInterruptOrTrapGate, target.present else {
            return .unhandled(reason: "vector \(vector)'s gate is unusable (a double fault)")
        }
        var frame = user
        frame.errorCode = errorCode
        frame.rflags = user.rflags | resumeFlag
        return deliver(vector, through: target, frame: frame, kernelCS: kernelCS, stack: stack)
    }

    /// Interrupt delivery through a 64-bit gate from CPL3 (SDM Vol. 3
    /// §6.14.2-§6.14.5): the stack from IST n or RSP0, aligned down to 16
    /// bytes, the frame pushed below it; CS from the gate (which must be the
    /// backend's kernel CS, so the segment itself needs no checks); TF, NT,
    /// RF, VM cleared, and IF too through an interrupt gate.
    static func deliver(_ vector: UInt8, through target: InterruptGate, frame: InterruptFrame, kernelCS: UInt16,
                        stack: (UInt8) -> UInt64?) -> Outcome {
        guard target.selector & 0xfffc == kernelCS & 0xfffc else {
            return .unhandled(reason: "vector \(vector)'s gate selector 0x\(String(target.selector, radix: 16)) is not the kernel CS 0x\(String(kernelCS, radix: 16))")
        }
        guard let top = stack(target.ist) else { return .unhandled(reason: "no stack in the TSS for IST \(target.ist)") }
        guard isCanonical(top), isCanonical(target.offset) else { return .unhandled(reason: "non-canonical stack or handler") }
        let rsp = (top & ~0xf) &- UInt64(frame.size)
        var rflags = frame.rflags & ~(trapFlag | nestedTaskFlag | resumeFlag | virtual8086Flag)
        if target.type == InterruptGate.interruptGateType { rflags &= ~interruptFlag }
        return .deliver(TrapDelivery(vector: vector, frame: frame, rsp: rsp, rip: target.offset, rflags: rflags | 0x2))
    }

    /// The #DB the backend delivered for `int1` at CPL3 with RIP still on
    /// the instruction: the frame as the CPU pushes it for this trap, RIP
    /// after the instruction (SDM Vol. 2 "INT1"; Vol. 3 §6.5: a trap). Only
    /// when no debug condition in DR6 explains the #DB (a single step or a
    /// breakpoint landing on an F1 byte sets one; INT1 sets none), the frame
    /// is from CPL3 and the byte at its RIP is F1. Nil otherwise.
    public static func completeICEBP(frame: InterruptFrame, instruction bytes: [UInt8], dr6: UInt64) -> InterruptFrame? {
        guard frame.errorCode == nil, frame.cs & 3 == 3, dr6 & dr6ConditionBits == 0 else { return nil }
        let i = prefixLength(bytes)
        guard i < bytes.count, bytes[i] == 0xF1 else { return nil }
        var f = frame
        f.rip = frame.rip &+ UInt64(i + 1)
        return f
    }

    static func prefixLength(_ bytes: [UInt8]) -> Int {
        var i = 0
        while i < bytes.count, i < 4, EmulationFailure.ignorablePrefixes.contains(bytes[i]) { i += 1 }
        return i
    }

    static func isCanonical(_ address: UInt64) -> Bool {
        let top = address >> 47
        return top == 0 || top == 0x1_ffff
    }
}

/// An interrupt delivered by pvh: write `frame` at `rsp` in the guest,
/// then run the handler with RIP, RSP and RFLAGS from here (CS and SS stay
/// as the backend's own delivery to CPL0 left them).
public struct TrapDelivery: Equatable, Sendable {
    public var vector: UInt8
    public var frame: InterruptFrame
    /// The handler's RSP: where the frame starts.
    public var rsp: UInt64
    public var rip: UInt64
    public var rflags: UInt64
}

/// A 64-bit IDT gate descriptor, 16 bytes (SDM Vol. 3 §6.14.1, Figure 6-8).
public struct InterruptGate: Equatable, Sendable {
    public var offset: UInt64
    public var selector: UInt16
    /// Interrupt Stack Table index, 0 (none) to 7.
    public var ist: UInt8
    /// Descriptor type: 0xE interrupt gate, 0xF trap gate.
    public var type: UInt8
    public var dpl: UInt8
    public var present: Bool

    public static let size = 16
    public static let interruptGateType: UInt8 = 0xE
    public static let trapGateType: UInt8 = 0xF

    public init(offset: UInt64, selector: UInt16, ist: UInt8 = 0, type: UInt8 = interruptGateType, dpl: UInt8 = 0,
                present: Bool = true) {
        self.offset = offset; self.selector = selector; self.ist = ist & 7; self.type = type & 0xf
        self.dpl = dpl & 3; self.present = present
    }

    /// Decodes the first 16 bytes; nil if there are fewer.
    public init?(_ bytes: [UInt8]) {
        guard bytes.count >= Self.size else { return nil }
        let low = UInt64(bytes[0]) | UInt64(bytes[1]) << 8
        let mid = UInt64(bytes[6]) | UInt64(bytes[7]) << 8
        var high: UInt64 = 0
        for i in 0..<4 { high |= UInt64(bytes[8 + i]) << (8 * i) }
        self.init(offset: low | mid << 16 | high << 32, selector: UInt16(bytes[2]) | UInt16(bytes[3]) << 8,
                  ist: bytes[4] & 7, type: bytes[5] & 0xf, dpl: (bytes[5] >> 5) & 3, present: bytes[5] & 0x80 != 0)
    }

    /// The 16 bytes of this gate (reserved fields zero).
    public var bytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: Self.size)
        b[0] = UInt8(truncatingIfNeeded: offset); b[1] = UInt8(truncatingIfNeeded: offset >> 8)
        b[2] = UInt8(truncatingIfNeeded: selector); b[3] = UInt8(truncatingIfNeeded: selector >> 8)
        b[4] = ist & 7
        b[5] = (present ? 0x80 : 0) | (dpl & 3) << 5 | (type & 0xf)
        b[6] = UInt8(truncatingIfNeeded: offset >> 16); b[7] = UInt8(truncatingIfNeeded: offset >> 24)
        for i in 0..<4 { b[8 + i] = UInt8(truncatingIfNeeded: offset >> (32 + 8 * UInt64(i))) }
        return b
    }

    /// A 64-bit interrupt or trap gate: the only gate types an IA-32e IDT may hold.
    public var isInterruptOrTrapGate: Bool { type == Self.interruptGateType || type == Self.trapGateType }
}

/// The frame interrupt delivery pushes in IA-32e mode, lowest address
/// first: [error code], RIP, CS, RFLAGS, RSP, SS (SDM Vol. 3 §6.14.2, Figure 6-9).
public struct InterruptFrame: Equatable, Sendable {
    public var errorCode: UInt64?
    public var rip, cs, rflags, rsp, ss: UInt64

    public init(errorCode: UInt64? = nil, rip: UInt64, cs: UInt64, rflags: UInt64, rsp: UInt64, ss: UInt64) {
        self.errorCode = errorCode; self.rip = rip; self.cs = cs; self.rflags = rflags; self.rsp = rsp; self.ss = ss
    }

    /// Decodes a frame from the handler's stack (`size` bytes are needed).
    public init?(_ bytes: [UInt8], hasErrorCode: Bool) {
        let words = InterruptFrame.words(bytes)
        let first = hasErrorCode ? 1 : 0
        guard words.count >= first + 5 else { return nil }
        self.init(errorCode: hasErrorCode ? words[0] : nil, rip: words[first], cs: words[first + 1],
                  rflags: words[first + 2], rsp: words[first + 3], ss: words[first + 4])
    }

    /// 40 bytes, 48 with an error code.
    public var size: Int { errorCode == nil ? 40 : 48 }

    /// The bytes as the CPU stores them (little-endian quadwords).
    public var bytes: [UInt8] {
        let words = (errorCode.map { [$0] } ?? []) + [rip, cs, rflags, rsp, ss]
        var bytes: [UInt8] = []
        for w in words {
            for b in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: w >> (8 * UInt64(b)))) }
        }
        return bytes
    }

    static func words(_ bytes: [UInt8]) -> [UInt64] {
        var words: [UInt64] = []
        var i = 0
        while i + 8 <= bytes.count {
            var w: UInt64 = 0
            for b in 0..<8 { w |= UInt64(bytes[i + b]) << (8 * UInt64(b)) }
            words.append(w)
            i += 8
        }
        return words
    }
}

/// The 64-bit TSS's stack pointers (SDM Vol. 3 §8.7, Figure 8-11).
public enum TaskStateSegment64 {
    /// The byte offset of RSP0 (`ist` 0) or IST1-IST7.
    public static func stackPointerOffset(ist: UInt8) -> Int {
        ist == 0 ? 4 : 36 + 8 * (Int(ist & 7) - 1)
    }
}
