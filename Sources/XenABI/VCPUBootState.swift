/// The state a secondary vCPU starts in, from the `struct vcpu_hvm_context`
/// an HVM/PVH guest passes to VCPUOP_initialise (hvm/hvm_vcpu.h), decoded and
/// validated the way Xen 4.17's `arch_set_info_hvm_guest`
/// (xen/arch/x86/hvm/domain.c) does. Every failed check is -EINVAL.
///
/// The VMM loads it into the vCPU (registers, control registers, EFER,
/// segments; TR busy) when the guest brings the vCPU up with VCPUOP_up.
/// Xen also copies vCPU 0's TSC offset to the new vCPU ("Sync AP's TSC with
/// BSP's"); so should the VMM.
public struct VCPUBootState: Hashable, Sendable {
    /// `VCPU_HVM_MODE_32B` / `VCPU_HVM_MODE_64B`.
    public enum Mode: Hashable, Sendable {
        /// The 32-bit fields: registers, CR0/3/4, EFER and five segments as given.
        case bits32
        /// The 64-bit fields: long mode with flat segments Xen fixes.
        case bits64
    }

    /// One segment register's hidden state.
    public struct Segment: Hashable, Sendable {
        public var base: UInt64
        /// The limit as the guest gave it (Xen loads it as is).
        public var limit: UInt32
        /// The `_ar` layout of hvm_vcpu.h: type (bits 0-3), S (4), DPL (5-6),
        /// P (7), AVL (8), L (9), D/B (10), G (11); bits 12-15 zero.
        public var attributes: UInt16

        public init(base: UInt64, limit: UInt32, attributes: UInt16) {
            self.base = base
            self.limit = limit
            self.attributes = attributes
        }

        public var type: UInt8 { UInt8(attributes & 0xf) }
        /// S: a code or data segment (not a system segment).
        public var isCodeOrData: Bool { attributes & (1 << 4) != 0 }
        public var dpl: UInt8 { UInt8((attributes >> 5) & 3) }
        public var isPresent: Bool { attributes & (1 << 7) != 0 }
        public var isAvailable: Bool { attributes & (1 << 8) != 0 }
        /// L: 64-bit code.
        public var isLong: Bool { attributes & (1 << 9) != 0 }
        /// D/B: 32-bit default operand size / big stack.
        public var isDefaultBig: Bool { attributes & (1 << 10) != 0 }
        /// G: the limit counts 4 KiB pages.
        public var isPageGranular: Bool { attributes & (1 << 11) != 0 }
        /// Null (unusable): all attributes zero.
        public var isNull: Bool { attributes == 0 }
        /// The limit in bytes (G scales it by 4 KiB, low 12 bits set), as
        /// Xen's EIP check computes it.
        public var byteLimit: UInt32 { isPageGranular ? (limit << 12) | 0xfff : limit }
    }

    /// The CR4 and EFER bits a guest may set. Xen derives them from the
    /// domain's CPUID policy (hvm.c `hvm_cr4_guest_valid_bits`,
    /// `hvm_efer_valid`); the VMM can narrow the defaults to what its CPUID
    /// table offers.
    public struct Limits: Hashable, Sendable {
        public var cr4: UInt64
        public var efer: UInt64
        public init(cr4: UInt64, efer: UInt64) {
            self.cr4 = cr4
            self.efer = efer
        }
        /// Every bit `hvm_cr4_guest_valid_bits` can allow except VMXE (no
        /// nested virtualisation): VME, PVI, TSD, DE, PSE, PAE, MCE, PGE, PCE,
        /// OSFXSR, OSXMMEXCPT, UMIP, FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP,
        /// PKE, CET. (Xen 4.17 never allows LA57 or SMXE to HVM guests.)
        /// EFER: SCE, LME, LMA, NXE, FFXSE (`EFER_KNOWN_MASK` less SVME,
        /// which needs nested virtualisation).
        public static let architectural = Limits(
            cr4: 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
                | 0x1_0000 | 0x2_0000 | 0x4_0000 | 0x10_0000 | 0x20_0000 | 0x40_0000 | 0x80_0000,
            efer: VCPUBootState.eferSCE | VCPUBootState.eferLME | VCPUBootState.eferLMA
                | VCPUBootState.eferNXE | VCPUBootState.eferFFXSE)
    }

    public var mode: Mode
    public var rax: UInt64, rbx: UInt64, rcx: UInt64, rdx: UInt64
    public var rsi: UInt64, rdi: UInt64, rsp: UInt64, rbp: UInt64
    public var rip: UInt64, rflags: UInt64
    public var cr0: UInt64, cr3: UInt64, cr4: UInt64
    /// EFER with LMA set whenever LME is (as Xen sets it).
    public var efer: UInt64
    public var cs: Segment, ds: Segment, ss: Segment, es: Segment
    /// The task register: a busy 32-bit TSS.
    public var tr: Segment

    static let eferSCE: UInt64 = 1 << 0
    static let eferLME: UInt64 = 1 << 8
    static let eferLMA: UInt64 = 1 << 10
    static let eferNXE: UInt64 = 1 << 11
    static let eferSVME: UInt64 = 1 << 12
    static let eferFFXSE: UInt64 = 1 << 14
    /// `EFER_KNOWN_MASK` (xen/arch/x86/include/asm/msr-index.h).
    static let eferKnown: UInt64 = eferSCE | eferLME | eferLMA | eferNXE | eferSVME | eferFFXSE
    static let cr0PG: UInt64 = 1 << 31
    static let cr4PAE: UInt64 = 1 << 5

    /// Xen's fixed 64-bit segments: CS 0xa9b (64-bit code), DS/SS/ES 0xc93,
    /// TR 0x8b with limit 0x67 (busy TSS), bases 0.
    static let flat64Code = Segment(base: 0, limit: ~0, attributes: 0xa9b)
    static let flat64Data = Segment(base: 0, limit: ~0, attributes: 0xc93)
    static let tss64 = Segment(base: 0, limit: 0x67, attributes: 0x8b)

    private enum SegmentKind { case cs, ds, ss, es, tr }

    /// Decodes `bytes` (a copied-in `struct vcpu_hvm_context`, at least
    /// `XenWire.VCPUHVMContext.size` bytes; missing bytes read as zero).
    public init(decoding bytes: [UInt8], limits: Limits = .architectural) throws(XenErrno) {
        typealias C = XenWire.VCPUHVMContext
        guard bytes.wireValue(C.pad, as: UInt32.self) == 0 else { throw .einval }
        switch bytes.wireValue(C.mode, as: UInt32.self) {
        case C.mode32:
            typealias R = C.X86_32
            func r(_ f: WireField) -> UInt64 { bytes.wireValue(f, as: UInt64.self) }
            guard r(R.pad1) == 0, r(R.pad2) == 0 else { throw .einval }
            // Present segments get their accessed bit (TR: busy) before the checks.
            func segment(_ base: WireField, _ limit: WireField, _ ar: WireField, _ kind: SegmentKind) throws(XenErrno) -> Segment {
                var s = Segment(base: r(base), limit: bytes.wireValue(limit), attributes: bytes.wireValue(ar))
                if s.isPresent { s.attributes |= kind == .tr ? 2 : 1 }
                try Self.check(s, kind)
                return s
            }
            // Xen ORs the five results together; the first failure decides here, same -EINVAL.
            cs = try segment(R.csBase, R.csLimit, R.csAR, .cs)
            ds = try segment(R.dsBase, R.dsLimit, R.dsAR, .ds)
            ss = try segment(R.ssBase, R.ssLimit, R.ssAR, .ss)
            es = try segment(R.esBase, R.esLimit, R.esAR, .es)
            tr = try segment(R.trBase, R.trLimit, R.trAR, .tr)
            rip = r(R.eip)
            guard rip <= UInt64(cs.byteLimit) else { throw .einval }
            guard ss.dpl == cs.dpl else { throw .einval }
            guard !ds.isPresent || ds.dpl <= cs.dpl, !es.isPresent || es.dpl <= cs.dpl else { throw .einval }
            efer = r(R.efer)
            guard efer & Self.eferLMA == 0 || efer & Self.eferLME != 0 else { throw .einval }
            mode = .bits32
            rax = r(R.eax); rcx = r(R.ecx); rdx = r(R.edx); rbx = r(R.ebx)
            rsp = r(R.esp); rbp = r(R.ebp); rsi = r(R.esi); rdi = r(R.edi)
            rflags = r(R.eflags)
            cr0 = r(R.cr0); cr3 = r(R.cr3); cr4 = r(R.cr4)
        case C.mode64:
            typealias R = C.X86_64
            func r(_ f: WireField) -> UInt64 { bytes.wireValue(f, as: UInt64.self) }
            rip = r(R.rip)
            // is_canonical_address: bits 63..47 all equal (48-bit linear addresses).
            let top = Int64(bitPattern: rip) >> 47
            guard top == 0 || top == -1 else { throw .einval }
            cr0 = r(R.cr0); cr3 = r(R.cr3); cr4 = r(R.cr4); efer = r(R.efer)
            guard cr0 & Self.cr0PG != 0, cr4 & Self.cr4PAE != 0, efer & Self.eferLME != 0 else { throw .einval }
            mode = .bits64
            rax = r(R.rax); rcx = r(R.rcx); rdx = r(R.rdx); rbx = r(R.rbx)
            rsp = r(R.rsp); rbp = r(R.rbp); rsi = r(R.rsi); rdi = r(R.rdi)
            rflags = r(R.rflags)
            cs = Self.flat64Code
            ds = Self.flat64Data
            ss = Self.flat64Data
            es = Self.flat64Data
            tr = Self.tss64
        default:
            throw .einval
        }
        if efer & Self.eferLME != 0 { efer |= Self.eferLMA }
        guard cr4 & ~limits.cr4 == 0 else { throw .einval }
        // hvm_efer_valid(v, efer, -1): unknown bits, bits without the feature,
        // and LMA without LME (CR0.PG is not consulted: cr0_pg = -1).
        guard efer & ~Self.eferKnown == 0, efer & ~limits.efer == 0 else { throw .einval }
        guard efer & Self.eferLMA == 0 || efer & Self.eferLME != 0 else { throw .einval }
    }

    /// `check_segment` (xen/arch/x86/hvm/domain.c).
    private static func check(_ s: Segment, _ kind: SegmentKind) throws(XenErrno) {
        guard s.attributes & 0xf000 == 0 else { throw .einval }
        if s.isNull {
            // Only DS and ES may be null.
            guard kind == .ds || kind == .es else { throw .einval }
            return
        }
        if kind == .tr {
            // A system segment, and a busy 32-bit TSS (SYS_DESC_tss_busy = 11).
            guard !s.isCodeOrData, s.type == 0xb else { throw .einval }
        } else {
            guard s.isCodeOrData else { throw .einval }
        }
        guard s.isPresent else { throw .einval }
        switch kind {
        case .cs: guard s.type & 0x8 != 0 else { throw .einval }
        case .ss: guard s.type & 0x8 == 0, s.type & 0x2 != 0 else { throw .einval }
        case .ds, .es: guard s.type & 0x8 == 0 || s.type & 0x2 != 0 else { throw .einval }
        case .tr: break
        }
    }
}
