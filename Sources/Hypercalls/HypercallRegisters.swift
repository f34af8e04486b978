import XenABI

/// The general-purpose registers a hypercall is made with, and the vCPU mode
/// that decides how to read them (xen/arch/x86/hvm/hypercall.c hvm_hypercall):
///
/// - 64-bit mode: RAX = number; arguments RDI, RSI, RDX, R10, R8, R9.
/// - 32-bit (and compat, 16-bit, real) mode: EAX = number; arguments EBX,
///   ECX, EDX, ESI, EDI, EBP, each truncated to 32 bits.
public struct HypercallRegisters: Hashable, Sendable {
    public var mode: GuestCPUMode
    public var rax: UInt64
    public var rbx: UInt64
    public var rcx: UInt64
    public var rdx: UInt64
    public var rsi: UInt64
    public var rdi: UInt64
    public var r8: UInt64
    public var r10: UInt64
    public var r9: UInt64
    public var rbp: UInt64
    /// Current privilege level (CS.RPL / SS.DPL). Xen refuses hypercalls from
    /// CPL > 0 with -EPERM; the VMM passes it where the transport can be
    /// reached from user mode (vmcall). Defaults to 0.
    public var cpl: UInt8

    public init(mode: GuestCPUMode, rax: UInt64 = 0, rbx: UInt64 = 0, rcx: UInt64 = 0, rdx: UInt64 = 0,
                rsi: UInt64 = 0, rdi: UInt64 = 0, r8: UInt64 = 0, r10: UInt64 = 0, r9: UInt64 = 0,
                rbp: UInt64 = 0, cpl: UInt8 = 0) {
        self.mode = mode
        self.rax = rax
        self.rbx = rbx
        self.rcx = rcx
        self.rdx = rdx
        self.rsi = rsi
        self.rdi = rdi
        self.r8 = r8
        self.r10 = r10
        self.r9 = r9
        self.rbp = rbp
        self.cpl = cpl
    }

    /// The hypercall number: all of RAX in 64-bit mode (so a value with high
    /// bits set is no hypercall), EAX otherwise.
    public var number: UInt64 {
        mode == .long64 ? rax : rax & 0xffff_ffff
    }

    /// The six argument registers in ABI order.
    public var arguments: [UInt64] {
        switch mode {
        case .long64: [rdi, rsi, rdx, r10, r8, r9]
        case .protected32: [rbx, rcx, rdx, rsi, rdi, rbp].map { $0 & 0xffff_ffff }
        }
    }
}
