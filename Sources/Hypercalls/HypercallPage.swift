/// The hypercall page the VMM writes into the frame the guest names through
/// MSR 0x40000000 (CPUID 0x40000002 EBX).
///
/// Hypercall `i` is the 32-byte stub at offset `i * 32`, as on Xen:
///
///     b8 ii ii ii ii   mov eax, i
///     e7 pp            out pp, eax      ; traps to the VMM (port I/O exit)
///     c3               ret
///
/// then int3 (0xcc) padding. The bytes decode identically in 32- and 64-bit
/// mode (in 64-bit mode `mov eax` zero-extends into RAX), and the stub
/// clobbers nothing but RAX, which carries the result back.
public enum HypercallPage {
    public static let size = 4096
    public static let stubSize = 32
    /// The default hypercall I/O port (0xE9 is the debug console).
    public static let defaultPort: UInt8 = 0xEA

    public static func make(port: UInt8 = defaultPort) -> [UInt8] {
        var page = [UInt8](repeating: 0xCC, count: size)
        for i in 0..<(size / stubSize) {
            let n = UInt32(i)
            let stub: [UInt8] = [
                0xB8, UInt8(truncatingIfNeeded: n), UInt8(truncatingIfNeeded: n >> 8),
                UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 24),
                0xE7, port,
                0xC3,
            ]
            page.replaceSubrange(i * stubSize..<i * stubSize + stub.count, with: stub)
        }
        return page
    }
}
