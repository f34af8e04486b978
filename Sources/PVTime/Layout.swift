import CXen
import XenABI

/// Byte layouts of the time fields in `struct vcpu_time_info`, `struct
/// vcpu_info` and `struct shared_info` (xen.h). 64-bit offsets come from
/// Xen's headers; the 32-bit ("compat") shared_info layout, which Xen
/// generates at build time and does not publish, is derived from the x86-32
/// C ABI (`xen_ulong_t` and `unsigned long` are 4 bytes) and pinned by tests.
public enum PVTimeLayout {
    private static func field<Root, Value>(_ path: KeyPath<Root, Value>, _: Root.Type) -> WireField {
        WireField(offset: MemoryLayout<Root>.offset(of: path) ?? 0, size: MemoryLayout<Value>.size)
    }

    /// `struct vcpu_time_info`: 32 bytes, the same in both ABIs (all fields
    /// are naturally aligned fixed-width integers).
    public enum TimeInfo {
        public static let size = XenWire.VCPUTimeInfo.size
        public static let version = field(\vcpu_time_info.version, vcpu_time_info.self)
        public static let tscTimestamp = field(\vcpu_time_info.tsc_timestamp, vcpu_time_info.self)
        public static let systemTime = field(\vcpu_time_info.system_time, vcpu_time_info.self)
        public static let tscToSystemMultiplier = field(\vcpu_time_info.tsc_to_system_mul, vcpu_time_info.self)
        public static let tscShift = field(\vcpu_time_info.tsc_shift, vcpu_time_info.self)
        public static let flags = field(\vcpu_time_info.flags, vcpu_time_info.self)
    }

    /// Offset of `time` in `struct vcpu_info`: 32 in both ABIs (the compat
    /// `arch_vcpu_info` is padded so that vcpu_info stays 64 bytes).
    public static let vcpuInfoTimeOffset = MemoryLayout<vcpu_info>.offset(of: \vcpu_info.time) ?? 32

    /// The wallclock fields of `struct shared_info` for one ABI.
    public struct Wallclock: Hashable, Sendable {
        public let version: WireField
        public let seconds: WireField
        public let nanoseconds: WireField
        /// High 32 bits of the seconds: `wc_sec_hi` after `wc_nsec` on
        /// x86_64, `arch.wc_sec_hi` at the end of `arch_shared_info` on x86_32.
        public let secondsHigh: WireField

        /// x86_64 (`shared_info` as the headers define it).
        public static let native = Wallclock(
            version: field(\shared_info.wc_version, shared_info.self),
            seconds: field(\shared_info.wc_sec, shared_info.self),
            nanoseconds: field(\shared_info.wc_nsec, shared_info.self),
            secondsHigh: field(\shared_info.wc_sec_hi, shared_info.self))

        /// x86_32: vcpu_info[32] (2048), evtchn_pending[32] and evtchn_mask[32]
        /// of 4-byte words (256), wc_version, wc_sec, wc_nsec, then
        /// arch_shared_info (max_pfn, pfn_to_mfn_frame_list_list, nmi_reason,
        /// p2m_cr3, p2m_vaddr, p2m_generation: six 4-byte words) and wc_sec_hi.
        public static let compat: Wallclock = {
            let base = XenWire.SharedInfo.legacyMaxVCPUs * XenWire.VCPUInfo.size + 2 * 32 * 4
            return Wallclock(version: WireField(offset: base, size: 4),
                             seconds: WireField(offset: base + 4, size: 4),
                             nanoseconds: WireField(offset: base + 8, size: 4),
                             secondsHigh: WireField(offset: base + 12 + 6 * 4, size: 4))
        }()

        public static func forSharedInfo(is32Bit: Bool) -> Wallclock { is32Bit ? compat : native }
    }

    /// `XEN_PVCLOCK_TSC_STABLE_BIT`.
    public static let tscStableFlag = UInt8(XEN_PVCLOCK_TSC_STABLE_BIT)
}
