import CKVM

/// General-purpose registers (`struct kvm_regs`).
public struct X86Registers: Equatable, Sendable {
    public var rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0
    public var rsi: UInt64 = 0, rdi: UInt64 = 0, rsp: UInt64 = 0, rbp: UInt64 = 0
    public var r8: UInt64 = 0, r9: UInt64 = 0, r10: UInt64 = 0, r11: UInt64 = 0
    public var r12: UInt64 = 0, r13: UInt64 = 0, r14: UInt64 = 0, r15: UInt64 = 0
    public var rip: UInt64 = 0
    /// RFLAGS; bit 1 is reserved and always set.
    public var rflags: UInt64 = 0x2

    public init() {}

    init(_ r: kvm_regs) {
        rax = r.rax; rbx = r.rbx; rcx = r.rcx; rdx = r.rdx
        rsi = r.rsi; rdi = r.rdi; rsp = r.rsp; rbp = r.rbp
        r8 = r.r8; r9 = r.r9; r10 = r.r10; r11 = r.r11
        r12 = r.r12; r13 = r.r13; r14 = r.r14; r15 = r.r15
        rip = r.rip; rflags = r.rflags
    }

    var kvm: kvm_regs {
        var r = kvm_regs()
        r.rax = rax; r.rbx = rbx; r.rcx = rcx; r.rdx = rdx
        r.rsi = rsi; r.rdi = rdi; r.rsp = rsp; r.rbp = rbp
        r.r8 = r8; r.r9 = r9; r.r10 = r10; r.r11 = r11
        r.r12 = r12; r.r13 = r13; r.r14 = r14; r.r15 = r15
        r.rip = rip; r.rflags = rflags
        return r
    }
}

/// A segment register's hidden part (`struct kvm_segment`).
public struct SegmentRegister: Equatable, Sendable {
    public var base: UInt64 = 0
    public var limit: UInt32 = 0
    public var selector: UInt16 = 0
    /// Descriptor type field (SDM Vol. 3 §3.4.5.1), e.g. 0xb execute/read accessed.
    public var type: UInt8 = 0
    public var present = false
    public var dpl: UInt8 = 0
    /// D/B: 32-bit default operand size (code) / big (stack).
    public var db = false
    /// S: code/data (true) or system (false) segment.
    public var s = false
    /// L: 64-bit code segment.
    public var l = false
    /// G: limit in 4 KiB units.
    public var g = false
    public var avl = false
    /// KVM's "unusable" (null selector loaded / VMX segment unusable bit).
    public var unusable = false

    public init(base: UInt64 = 0, limit: UInt32 = 0, selector: UInt16 = 0, type: UInt8 = 0, present: Bool = false,
                dpl: UInt8 = 0, db: Bool = false, s: Bool = false, l: Bool = false, g: Bool = false,
                avl: Bool = false, unusable: Bool = false) {
        self.base = base; self.limit = limit; self.selector = selector; self.type = type
        self.present = present; self.dpl = dpl; self.db = db; self.s = s; self.l = l; self.g = g
        self.avl = avl; self.unusable = unusable
    }

    init(_ k: kvm_segment) {
        base = k.base; limit = k.limit; selector = k.selector; type = k.type
        present = k.present != 0; dpl = k.dpl; db = k.db != 0; s = k.s != 0; l = k.l != 0
        g = k.g != 0; avl = k.avl != 0; unusable = k.unusable != 0
    }

    var kvm: kvm_segment {
        var k = kvm_segment()
        k.base = base; k.limit = limit; k.selector = selector; k.type = type
        k.present = present ? 1 : 0; k.dpl = dpl; k.db = db ? 1 : 0; k.s = s ? 1 : 0
        k.l = l ? 1 : 0; k.g = g ? 1 : 0; k.avl = avl ? 1 : 0; k.unusable = unusable ? 1 : 0
        return k
    }
}

/// GDTR / IDTR (`struct kvm_dtable`).
public struct DescriptorTable: Equatable, Sendable {
    public var base: UInt64 = 0
    public var limit: UInt16 = 0
    public init(base: UInt64 = 0, limit: UInt16 = 0) { self.base = base; self.limit = limit }
    init(_ k: kvm_dtable) { base = k.base; limit = k.limit }
    var kvm: kvm_dtable {
        var k = kvm_dtable()
        k.base = base; k.limit = limit
        return k
    }
}

/// Control, segment and descriptor-table registers (`struct kvm_sregs`,
/// without `interrupt_bitmap`, which `VCPU` preserves on write-back).
public struct X86SpecialRegisters: Equatable, Sendable {
    public var cs = SegmentRegister(), ds = SegmentRegister(), es = SegmentRegister()
    public var fs = SegmentRegister(), gs = SegmentRegister(), ss = SegmentRegister()
    public var tr = SegmentRegister(), ldt = SegmentRegister()
    public var gdt = DescriptorTable(), idt = DescriptorTable()
    public var cr0: UInt64 = 0, cr2: UInt64 = 0, cr3: UInt64 = 0, cr4: UInt64 = 0, cr8: UInt64 = 0
    public var efer: UInt64 = 0
    public var apicBase: UInt64 = 0

    public init() {}

    init(_ k: kvm_sregs) {
        cs = .init(k.cs); ds = .init(k.ds); es = .init(k.es); fs = .init(k.fs)
        gs = .init(k.gs); ss = .init(k.ss); tr = .init(k.tr); ldt = .init(k.ldt)
        gdt = .init(k.gdt); idt = .init(k.idt)
        cr0 = k.cr0; cr2 = k.cr2; cr3 = k.cr3; cr4 = k.cr4; cr8 = k.cr8
        efer = k.efer; apicBase = k.apic_base
    }

    /// Writes these fields over `k`, keeping its interrupt_bitmap.
    func apply(to k: inout kvm_sregs) {
        k.cs = cs.kvm; k.ds = ds.kvm; k.es = es.kvm; k.fs = fs.kvm
        k.gs = gs.kvm; k.ss = ss.kvm; k.tr = tr.kvm; k.ldt = ldt.kvm
        k.gdt = gdt.kvm; k.idt = idt.kvm
        k.cr0 = cr0; k.cr2 = cr2; k.cr3 = cr3; k.cr4 = cr4; k.cr8 = cr8
        k.efer = efer; k.apic_base = apicBase
    }

    /// CR0.PE (bit 0), CR0.ET (bit 4), CR0.PG (bit 31) — SDM Vol. 3 §2.5.
    public static let cr0PE: UInt64 = 1 << 0
    public static let cr0ET: UInt64 = 1 << 4
    public static let cr0PG: UInt64 = 1 << 31
    /// EFER.LME (bit 8), EFER.LMA (bit 10).
    public static let eferLME: UInt64 = 1 << 8
    public static let eferLMA: UInt64 = 1 << 10

    /// The processor mode, which selects the hypercall register ABI.
    public var cpuMode: CPUMode {
        if cr0 & Self.cr0PE == 0 { return .real }
        if efer & Self.eferLMA != 0 { return cs.l ? .long64 : .compatibility }
        return .protected32
    }

    /// Current privilege level: CS.DPL outside real mode (SDM Vol. 3 §5.5;
    /// KVM reports CPL as SS.DPL, which equals CS.DPL except in transitions).
    public var cpl: UInt8 { cpuMode == .real ? 0 : ss.dpl }
}

/// x86 operating mode as far as pvh cares (SDM Vol. 3 §2.2).
public enum CPUMode: Equatable, Sendable, CustomStringConvertible {
    /// CR0.PE = 0.
    case real
    /// CR0.PE = 1, EFER.LMA = 0 (legacy protected mode, paging on or off).
    case protected32
    /// EFER.LMA = 1, CS.L = 1: 64-bit mode (hypercall args in RDI, RSI, ...).
    case long64
    /// EFER.LMA = 1, CS.L = 0: compatibility mode (32-bit hypercall ABI).
    case compatibility

    /// True when hypercalls use the 64-bit register ABI.
    public var is64Bit: Bool { self == .long64 }

    public var description: String {
        switch self {
        case .real: return "real mode"
        case .protected32: return "32-bit protected mode"
        case .long64: return "64-bit long mode"
        case .compatibility: return "compatibility mode"
        }
    }
}
