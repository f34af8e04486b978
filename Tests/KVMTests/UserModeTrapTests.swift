import Testing
@testable import KVM

/// The software backend's user-mode trap fix-ups (`UserModeTrap`), against
/// the SDM's INT n, INT3 and INT1 and IA-32e interrupt delivery. Optional
/// results are compared with typed values (`UInt64(...)`): an untyped
/// literal there made ASan report a stack-buffer-overflow in #expect's
/// AnyHashable boxing.
@Suite("user-mode int n / int3 / int1 (software backend)")
struct UserModeTrapTests {
    static let kernelCS: UInt16 = 0x10
    static let rsp0: UInt64 = 0xffff_c900_0000_4ff8  // not 16-byte aligned: delivery aligns it down
    static let ist2: UInt64 = 0xffff_fe00_0000_8000

    /// The #UD frame kvm_pvm pushes for `int $0x80` at CPL3: RIP on the instruction, RF set.
    let user = InterruptFrame(rip: 0x40_1000, cs: 0x33, rflags: 0x1_0246 | 0x100, rsp: 0x7fff_ffff_e000, ss: 0x2b)

    /// Linux's IDT: 0x80 and #BP DPL3 interrupt gates; #GP a DPL0 interrupt
    /// gate, here on IST2 to see the stack choice; vector 0x81 DPL0; 0x82
    /// DPL3 not present; 0x83 a DPL3 trap gate; 0x84 a call gate (type 0xC);
    /// 0x85 DPL3 with another code segment. The IDT ends at 0x8f.
    static func gate(_ vector: UInt8) -> InterruptGate? {
        switch vector {
        case 0x80: InterruptGate(offset: 0xffff_ffff_81e0_1000, selector: kernelCS, dpl: 3)
        case 3: InterruptGate(offset: 0xffff_ffff_81e0_0300, selector: kernelCS, dpl: 3)
        case 13: InterruptGate(offset: 0xffff_ffff_81e0_1300, selector: kernelCS, ist: 2)
        case 11: InterruptGate(offset: 0xffff_ffff_81e0_1100, selector: kernelCS)
        case 0x81: InterruptGate(offset: 0xffff_ffff_81e0_8100, selector: kernelCS)
        case 0x82: InterruptGate(offset: 0xffff_ffff_81e0_8200, selector: kernelCS, dpl: 3, present: false)
        case 0x83: InterruptGate(offset: 0xffff_ffff_81e0_8300, selector: kernelCS, type: InterruptGate.trapGateType, dpl: 3)
        case 0x84: InterruptGate(offset: 0xffff_ffff_81e0_8400, selector: kernelCS, type: 0xC, dpl: 3)
        case 0x85: InterruptGate(offset: 0xffff_ffff_81e0_8500, selector: 0x08, dpl: 3)
        case 0x86...0x8f: InterruptGate(offset: 0, selector: 0, type: 0, present: false)
        default: nil  // past the IDT limit
        }
    }

    static func stack(_ ist: UInt8) -> UInt64? { ist == 0 ? rsp0 : ist == 2 ? ist2 : nil }

    func deliver(_ vector: UInt8, length: Int = 2, from frame: InterruptFrame? = nil,
                 gate: (UInt8) -> InterruptGate? = gate, stack: (UInt8) -> UInt64? = stack) -> UserModeTrap.Outcome {
        UserModeTrap.deliverSoftwareInterrupt(vector: vector, length: length, user: frame ?? user, kernelCS: Self.kernelCS,
                                              gate: gate, stack: stack)
    }

    @Test("int n is CD ib; operand/address-size prefixes count in its length, LOCK or another opcode is no int n")
    func decode() {
        #expect(UserModeTrap.softwareInterrupt(in: [0xCD, 0x80, 0x90]).map { $0 == (0x80, 2) } == true)
        #expect(UserModeTrap.softwareInterrupt(in: [0x66, 0x67, 0xCD, 0x03]).map { $0 == (3, 4) } == true)
        #expect(UserModeTrap.softwareInterrupt(in: [0xF0, 0xCD, 0x80]) == nil)  // LOCK: #UD on hardware too
        #expect(UserModeTrap.softwareInterrupt(in: [0xCC]) == nil)
        #expect(UserModeTrap.softwareInterrupt(in: [0xCE]) == nil)  // INTO: #UD in 64-bit mode
        #expect(UserModeTrap.softwareInterrupt(in: [0xCD]) == nil)
        #expect(UserModeTrap.softwareInterrupt(in: []) == nil)
    }

    @Test("int $0x80 through a DPL3 interrupt gate: vector 0x80, RIP after it, on RSP0 aligned down, IF/TF/RF off in the handler")
    func throughUserGate() throws {
        guard case .deliver(let d) = deliver(0x80) else { Issue.record("not delivered"); return }
        #expect(d.vector == 0x80)
        #expect(d.rip == 0xffff_ffff_81e0_1000)
        #expect(d.rsp == UInt64(0xffff_c900_0000_4ff0) - 40)
        #expect(d.frame == InterruptFrame(rip: 0x40_1002, cs: 0x33, rflags: 0x0246 | 0x100, rsp: 0x7fff_ffff_e000, ss: 0x2b))
        #expect(d.frame.bytes.count == 40)
        #expect(d.rflags == 0x0046)  // IF, TF and RF cleared; bit 1 set
    }

    @Test("a trap gate leaves IF as it was")
    func trapGate() {
        guard case .deliver(let d) = deliver(0x83) else { Issue.record("not delivered"); return }
        #expect(d.rflags & UserModeTrap.interruptFlag != 0)
        #expect(d.rflags & UserModeTrap.trapFlag == 0)
    }

    @Test("int n through a DPL0 gate, past the IDT limit, or through a non-interrupt gate: #GP((n << 3) | 2) at the instruction, on #GP's IST")
    func generalProtection() {
        for vector: UInt8 in [0x81, 0x90, 0x84] {
            guard case .deliver(let d) = deliver(vector) else { Issue.record("\(vector) not delivered"); continue }
            #expect(d.vector == 13)
            #expect(d.rip == 0xffff_ffff_81e0_1300)
            #expect(d.frame.errorCode == UInt64(vector) << 3 | 2)
            #expect(d.frame.rip == user.rip)  // a fault: RIP on the INT
            #expect(d.frame.rflags & UserModeTrap.resumeFlag != 0)
            #expect(d.frame.bytes.count == 48)
            #expect(d.rsp == Self.ist2 - 48)
        }
        // 0x40a, as the test guest's usermode_intgp expects for int $0x81.
        if case .deliver(let d) = deliver(0x81) { #expect(d.frame.errorCode == UInt64(0x40a)) }
    }

    @Test("a DPL3 gate not present: #NP((n << 3) | 2)")
    func notPresent() {
        guard case .deliver(let d) = deliver(0x82) else { Issue.record("not delivered"); return }
        #expect(d.vector == 11)
        #expect(d.frame.errorCode == UInt64(0x82) << 3 | 2)
        #expect(d.rsp == UInt64(0xffff_c900_0000_4ff0) - 48)
    }

    @Test("left to the guest: not from CPL3, another code segment, no or a non-canonical stack, #GP's gate unusable")
    func unhandled() {
        var kernel = user
        kernel.cs = 0x10
        #expect(!delivered(deliver(0x80, from: kernel)))
        #expect(!delivered(deliver(0x85)))
        #expect(!delivered(deliver(0x80, stack: { _ in nil })))
        #expect(!delivered(deliver(0x80, stack: { _ in 0x0000_8000_0000_0000 })))
        #expect(!delivered(deliver(0x81, gate: { $0 == 13 ? nil : Self.gate($0) })))
        #expect(!delivered(deliver(0x81, gate: { $0 == 13 ? InterruptGate(offset: 1, selector: Self.kernelCS, present: false) : Self.gate($0) })))
    }

    func delivered(_ outcome: UserModeTrap.Outcome) -> Bool {
        if case .deliver = outcome { return true }
        return false
    }

    @Test("int1 at CPL3 with no DR6 condition: RIP moves past F1 (and its prefixes); a step or breakpoint landing on F1 is left alone")
    func icebp() {
        let db = InterruptFrame(rip: 0x40_2000, cs: 0x33, rflags: 0x40246, rsp: 0x7fff_ffff_e000, ss: 0x2b)
        #expect(UserModeTrap.completeICEBP(frame: db, instruction: [0xF1, 0xF4], dr6: 0xffff_0ff0)?.rip == UInt64(0x40_2001))
        #expect(UserModeTrap.completeICEBP(frame: db, instruction: [0x67, 0xF1], dr6: 0xffff_0ff0)?.rip == UInt64(0x40_2002))
        #expect(UserModeTrap.completeICEBP(frame: db, instruction: [0xF1], dr6: 0xffff_4ff0) == nil)  // BS
        #expect(UserModeTrap.completeICEBP(frame: db, instruction: [0xF1], dr6: 0xffff_0ff1) == nil)  // B0
        #expect(UserModeTrap.completeICEBP(frame: db, instruction: [0xCC], dr6: 0xffff_0ff0) == nil)
        var kernel = db
        kernel.cs = 0x10
        #expect(UserModeTrap.completeICEBP(frame: kernel, instruction: [0xF1], dr6: 0xffff_0ff0) == nil)
        // Only RIP changes.
        var want = db
        want.rip += 1
        #expect(UserModeTrap.completeICEBP(frame: db, instruction: [0xF1], dr6: 0xffff_0ff0) == want)
    }

    /// The #BP frame kvm_pvm pushes for `int3` at CPL3 at 0x40_3000: a trap, RIP after the CC.
    let breakpoint = InterruptFrame(rip: 0x40_3001, cs: 0x33, rflags: 0x0246, rsp: 0x7fff_ffff_e000, ss: 0x2b)

    static func kernelBreakpointGate(_ vector: UInt8) -> InterruptGate? {
        vector == 3 ? InterruptGate(offset: 0xffff_ffff_81e0_0300, selector: kernelCS) : gate(vector)
    }

    func deliverBreakpoint(_ frame: InterruptFrame? = nil, previousByte: UInt8 = 0xCC,
                           gate: (UInt8) -> InterruptGate? = kernelBreakpointGate) -> UserModeTrap.Outcome {
        UserModeTrap.deliverBreakpoint(frame: frame ?? breakpoint, previousByte: previousByte, kernelCS: Self.kernelCS,
                                       gate: gate, stack: Self.stack)
    }

    @Test("int3 at CPL3 through a DPL0 #BP gate: #GP(0x1a) at the CC with RF in the image, on #GP's IST")
    func int3ThroughKernelGate() {
        guard case .deliver(let d) = deliverBreakpoint() else { Issue.record("not delivered"); return }
        #expect(d.vector == UserModeTrap.generalProtectionVector)
        #expect(d.rip == UInt64(0xffff_ffff_81e0_1300))
        #expect(d.frame == InterruptFrame(errorCode: 0x1a, rip: 0x40_3000, cs: 0x33, rflags: 0x1_0246, rsp: 0x7fff_ffff_e000, ss: 0x2b))
        #expect(d.rsp == Self.ist2 - 48)
        #expect(d.rflags == UInt64(0x0046))  // IF off through #GP's interrupt gate, RF off in the handler
        // A DPL3 #BP gate not present: #NP(0x1a), as INT n through one.
        let absent = deliverBreakpoint(gate: { $0 == 3 ? InterruptGate(offset: 1, selector: Self.kernelCS, dpl: 3, present: false) : Self.gate($0) })
        guard case .deliver(let np) = absent else { Issue.record("not delivered"); return }
        #expect(np.vector == UserModeTrap.segmentNotPresentVector)
        #expect(np.frame.errorCode == UInt64(0x1a))
        #expect(np.frame.rip == UInt64(0x40_3000))
    }

    @Test("int3 left as the backend delivered it: a DPL3 gate (#BP, RIP after the CC, is right), no CC before RIP, not from CPL3")
    func int3LeftAlone() {
        #expect(deliverBreakpoint(gate: Self.gate) == .unhandled(reason: "the gate lets CPL3 in: the backend's #BP is right"))
        #expect(!delivered(deliverBreakpoint(previousByte: 0x03)))  // int $3 (CD 03) arrives as #UD, not here
        var kernel = breakpoint
        kernel.cs = 0x10
        #expect(!delivered(deliverBreakpoint(kernel)))
        var withError = breakpoint
        withError.errorCode = 0
        #expect(!delivered(deliverBreakpoint(withError)))
        // #GP's gate unusable: the guest keeps its #BP rather than a double fault.
        #expect(!delivered(deliverBreakpoint(gate: { $0 == 13 ? nil : Self.kernelBreakpointGate($0) })))
    }

    @Test("IDT gates and frames round-trip through their bytes; the TSS's stack pointers are at 4 and 36 + 8 (n - 1)")
    func layouts() {
        let g = InterruptGate(offset: 0xffff_ffff_81e0_1234, selector: 0x10, ist: 3, type: 0xF, dpl: 3)
        #expect(InterruptGate(g.bytes) == g)
        #expect(g.bytes[5] == 0xEF && g.bytes[4] == 3)
        var absent = g
        absent.present = false
        #expect(InterruptGate(absent.bytes)?.present == false)
        #expect(InterruptGate(Array(g.bytes.prefix(15))) == nil)
        let f = InterruptFrame(errorCode: 0x40a, rip: 1, cs: 0x33, rflags: 0x202, rsp: 0x7000, ss: 0x2b)
        #expect(InterruptFrame(f.bytes, hasErrorCode: true) == f)
        #expect(InterruptFrame(Array(f.bytes.dropFirst(8)), hasErrorCode: false)?.rip == UInt64(1))
        #expect(InterruptFrame(Array(f.bytes.prefix(40)), hasErrorCode: true) == nil)
        #expect(TaskStateSegment64.stackPointerOffset(ist: 0) == 4)
        #expect(TaskStateSegment64.stackPointerOffset(ist: 1) == 36)
        #expect(TaskStateSegment64.stackPointerOffset(ist: 7) == 84)
    }
}
