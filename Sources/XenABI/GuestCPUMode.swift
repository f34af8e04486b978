/// The ABI a hypercall is made with, from the vCPU's mode at the time of the
/// call (Xen: `hvm_guest_x86_mode() == 8` or not, xen/arch/x86/hvm/hypercall.c).
///
/// - `long64`: 64-bit mode (CS.L = 1 with EFER.LMA): native structures.
/// - `protected32`: everything else (32-bit protected, compat mode under a
///   64-bit kernel, 16-bit, real mode): the 32-bit "compat" structures and
///   register convention, arguments truncated to 32 bits.
public enum GuestCPUMode: Hashable, Sendable {
    case long64
    case protected32
}
