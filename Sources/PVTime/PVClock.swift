import GuestMemory
import Synchronization
import XenABI

/// The fields of one `struct vcpu_time_info` update (xen.h), less the version.
public struct VCPUTimeInfo: Hashable, Sendable {
    /// `tsc_timestamp`: the guest TSC at which `systemTime` was taken.
    public var tscTimestamp: UInt64
    /// `system_time`: nanoseconds since the domain started, at `tscTimestamp`.
    public var systemTime: UInt64
    /// `tsc_to_system_mul` and `tsc_shift`: ns = ((Δtsc << shift) * mul) >> 32
    /// (a negative shift shifts right).
    public var tscToSystemMultiplier: UInt32
    public var tscShift: Int8
    /// `flags`: `XEN_PVCLOCK_TSC_STABLE_BIT` and friends.
    public var flags: UInt8

    public init(tscTimestamp: UInt64, systemTime: UInt64, tscToSystemMultiplier: UInt32, tscShift: Int8, flags: UInt8) {
        self.tscTimestamp = tscTimestamp
        self.systemTime = systemTime
        self.tscToSystemMultiplier = tscToSystemMultiplier
        self.tscShift = tscShift
        self.flags = flags
    }

    /// The 32 bytes of the structure with `version`.
    public func bytes(version: UInt32) -> [UInt8] {
        typealias L = PVTimeLayout.TimeInfo
        var b = [UInt8](repeating: 0, count: L.size)
        b.setWireValue(version, in: L.version)
        b.setWireValue(tscTimestamp, in: L.tscTimestamp)
        b.setWireValue(systemTime, in: L.systemTime)
        b.setWireValue(tscToSystemMultiplier, in: L.tscToSystemMultiplier)
        b.setWireValue(UInt8(bitPattern: tscShift), in: L.tscShift)
        b.setWireValue(flags, in: L.flags)
        return b
    }

    /// Decodes the structure (for readers and tests): its version and fields.
    public static func decode(_ b: [UInt8]) -> (version: UInt32, info: VCPUTimeInfo) {
        typealias L = PVTimeLayout.TimeInfo
        return (b.wireValue(L.version),
                VCPUTimeInfo(tscTimestamp: b.wireValue(L.tscTimestamp), systemTime: b.wireValue(L.systemTime),
                             tscToSystemMultiplier: b.wireValue(L.tscToSystemMultiplier),
                             tscShift: Int8(bitPattern: b.wireValue(L.tscShift)), flags: b.wireValue(L.flags)))
    }

    /// System time at guest TSC `tsc`, computed the way a guest does
    /// (xen.h's formula, Linux's `pvclock_scale_delta`).
    public func systemTime(atTSC tsc: UInt64) -> UInt64 {
        systemTime &+ PVClock.scaleDelta(tsc &- tscTimestamp, multiplier: tscToSystemMultiplier, shift: tscShift)
    }
}

/// The domain's PV clock: turns clock readings into `vcpu_time_info` values
/// and the shared_info wallclock.
///
/// Two models of system time, after xen/arch/x86/time.c:
/// - `.tscStable` (default): system time is the guest TSC since domain start
///   scaled by the same mul/shift the guest uses, and `XEN_PVCLOCK_TSC_STABLE_BIT`
///   is set. This is what Xen does when its clocksource is the TSC (the only
///   case in which `__update_vcpu_system_time` sets the bit): every stamp
///   agrees with the guest's own extrapolation from an earlier one (to the
///   1 ns rounding of the fixed-point scale), across vCPUs too, so updates
///   never make guest time jump and Linux may skip its cross-vCPU
///   monotonicity fix-up.
/// - `.monotonic`: system time is the host monotonic clock since domain start
///   and the stable bit is clear (for hosts whose TSC is not invariant, where
///   the guest must guard monotonicity itself).
public struct PVClock: Sendable {
    public enum Model: Hashable, Sendable { case tscStable, monotonic }

    public let model: Model
    /// The guest TSC frequency (Xen CPUID leaf 3 reports the same value).
    public let tscKHz: UInt32
    /// `tsc_to_system_mul`, `tsc_shift`: from `XenCPUIDTime.scale`, the same
    /// computation CPUID leaf 0x40000003 uses (Xen's `set_time_scale`).
    public let multiplier: UInt32
    public let shift: Int8
    /// The reading taken when the domain started: system time 0.
    public let start: PVClockReading

    public init(tscKHz: UInt32, start: PVClockReading, model: Model = .tscStable) {
        let scale = XenCPUIDTime(tscKHz: tscKHz).scale
        self.model = model
        self.tscKHz = tscKHz
        self.multiplier = scale.mul
        self.shift = scale.shift
        self.start = start
    }

    /// `((delta << shift) * multiplier) >> 32` with a 96-bit intermediate, as
    /// xen.h specifies and Linux's `pvclock_scale_delta` computes.
    public static func scaleDelta(_ delta: UInt64, multiplier: UInt32, shift: Int8) -> UInt64 {
        var d = delta
        if shift < 0 { d >>= UInt64(-Int(shift)) } else { d <<= UInt64(shift) }
        let product = d.multipliedFullWidth(by: UInt64(multiplier))
        return (product.high << 32) | (product.low >> 32)
    }

    /// The system time at `reading` (never negative: a reading from before
    /// the start counts as time 0).
    public func systemTime(at reading: PVClockReading) -> SystemTime {
        let ns: UInt64
        switch model {
        case .tscStable:
            ns = reading.tsc >= start.tsc
                ? Self.scaleDelta(reading.tsc - start.tsc, multiplier: multiplier, shift: shift) : 0
        case .monotonic:
            ns = reading.monotonicNanoseconds >= start.monotonicNanoseconds
                ? reading.monotonicNanoseconds - start.monotonicNanoseconds : 0
        }
        return SystemTime(rawValue: Int64(clamping: ns))
    }

    /// The vcpu_time_info a vCPU should see after `reading`.
    public func timeInfo(at reading: PVClockReading) -> VCPUTimeInfo {
        VCPUTimeInfo(tscTimestamp: reading.tsc, systemTime: UInt64(systemTime(at: reading).rawValue),
                     tscToSystemMultiplier: multiplier, tscShift: shift,
                     flags: model == .tscStable ? PVTimeLayout.tscStableFlag : 0)
    }

    /// The wallclock base: real time at system time 0 (xen/common/time.c
    /// `do_settime`: `wc = now - system_time`; a guest computes the time of
    /// day as wc + its current system time).
    public func wallclock(at reading: PVClockReading) -> WallclockTime {
        let real = reading.realtime.seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let realNs = real.overflow ? UInt64.max : real.partialValue &+ UInt64(reading.realtime.nanoseconds)
        let system = UInt64(systemTime(at: reading).rawValue)
        let base = realNs >= system ? realNs - system : 0
        return WallclockTime(seconds: base / 1_000_000_000, nanoseconds: UInt32(base % 1_000_000_000))
    }
}

/// Where one vCPU's time information goes.
public struct VCPUTimeTargets: Hashable, Sendable {
    /// The vcpu_info the vCPU registered (VCPUOP_register_vcpu_info), if any.
    public var registeredVCPUInfo: GuestPhysicalAddress?
    /// The shared_info frame (XENMAPSPACE_shared_info), if mapped: vCPUs
    /// below `XEN_LEGACY_MAX_VCPUS` that registered nothing use their slot in it.
    public var sharedInfo: GuestFrameNumber?
    /// The secondary copy (VCPUOP_register_vcpu_time_memory_area), already
    /// translated to a guest-physical address. Must not cross a page.
    public var timeMemoryArea: GuestPhysicalAddress?

    public init(registeredVCPUInfo: GuestPhysicalAddress? = nil, sharedInfo: GuestFrameNumber? = nil,
                timeMemoryArea: GuestPhysicalAddress? = nil) {
        self.registeredVCPUInfo = registeredVCPUInfo
        self.sharedInfo = sharedInfo
        self.timeMemoryArea = timeMemoryArea
    }

    /// The address of `vcpu_info.time` for `vcpu`: the registered vcpu_info,
    /// else the legacy `shared_info.vcpu_info[vcpu]`, else none (Xen skips the
    /// update while a vCPU has no vcpu_info, time.c `__update_vcpu_system_time`).
    public func vcpuInfoTime(for vcpu: VCPUID) -> GuestPhysicalAddress? {
        VCPUInfoPlacement.address(of: vcpu, registered: registeredVCPUInfo, sharedInfo: sharedInfo?.address)?
            .advanced(by: UInt64(PVTimeLayout.vcpuInfoTimeOffset))
    }
}

/// Writes time information into the guest with Xen's version protocol
/// (xen/include/xen/time.h `version_update_begin`/`_end`, time.c
/// `__update_vcpu_system_time`, common/time.c `update_domain_wallclock_time`):
/// 1. version = (old + 1) | 1, odd: "update in progress";
/// 2. the fields;
/// 3. version + 1, even again.
/// Each step is a separate guest-memory access, ordered by release fences.
/// A reader that sees the same even version before and after reading the
/// fields (Linux's seqlock-style loop) has a consistent copy.
public enum PVTimeWriter {
    /// Updates the `vcpu_time_info` at `address`; returns the final (even) version.
    @discardableResult
    public static func write(_ info: VCPUTimeInfo, to memory: any GuestMemory,
                             at address: GuestPhysicalAddress) throws(GuestMemoryError) -> UInt32 {
        let versionField = PVTimeLayout.TimeInfo.version
        guard let versionAddress = address.advanced(by: UInt64(versionField.offset)),
              memory.contains(address, count: UInt64(PVTimeLayout.TimeInfo.size)) else {
            throw .outOfBounds(address, count: UInt64(PVTimeLayout.TimeInfo.size))
        }
        let begin = (try memory.load(UInt32.self, at: versionAddress) &+ 1) | 1
        try memory.store(begin, at: versionAddress)
        atomicMemoryFence(ordering: .releasing)
        // Every field but the version, in one access (version is the first
        // field in xen.h; anything before it would be written too).
        let bytes = info.bytes(version: begin)
        let afterVersion = versionField.offset + versionField.size
        if versionField.offset > 0 { try memory.write(Array(bytes[..<versionField.offset]), at: address) }
        try memory.write(Array(bytes[afterVersion...]), at: GuestPhysicalAddress(address.rawValue + UInt64(afterVersion)))
        atomicMemoryFence(ordering: .releasing)
        try memory.store(begin &+ 1, at: versionAddress)
        return begin &+ 1
    }

    /// Publishes `info` for one vCPU: its vcpu_info (registered or legacy
    /// slot) and the secondary time area, each with its own version
    /// sequence. Returns how many copies were written (0 before the guest
    /// set up anything). Stops at the first copy that is not in RAM.
    @discardableResult
    public static func publish(_ info: VCPUTimeInfo, for vcpu: VCPUID, targets: VCPUTimeTargets,
                               to memory: any GuestMemory) throws(GuestMemoryError) -> Int {
        var written = 0
        if let primary = targets.vcpuInfoTime(for: vcpu) {
            try write(info, to: memory, at: primary)
            written += 1
        }
        if let secondary = targets.timeMemoryArea {
            try write(info, to: memory, at: secondary)
            written += 1
        }
        return written
    }

    /// Updates shared_info's wallclock (`wc_version`, `wc_sec`, `wc_nsec`,
    /// `wc_sec_hi`) in the layout of the shared_info ABI in use.
    @discardableResult
    public static func writeWallclock(_ time: WallclockTime, to memory: any GuestMemory,
                                      sharedInfo frame: GuestFrameNumber, is32Bit: Bool) throws(GuestMemoryError) -> UInt32 {
        let l = PVTimeLayout.Wallclock.forSharedInfo(is32Bit: is32Bit)
        guard let base = frame.address, memory.contains(base, count: GuestFrameNumber.pageSize) else {
            throw .outOfBounds(frame.address ?? GuestPhysicalAddress(UInt64.max), count: GuestFrameNumber.pageSize)
        }
        func at(_ f: WireField) -> GuestPhysicalAddress { GuestPhysicalAddress(base.rawValue + UInt64(f.offset)) }
        let begin = (try memory.load(UInt32.self, at: at(l.version)) &+ 1) | 1
        try memory.store(begin, at: at(l.version))
        atomicMemoryFence(ordering: .releasing)
        try memory.store(UInt32(truncatingIfNeeded: time.seconds), at: at(l.seconds))
        try memory.store(time.nanoseconds, at: at(l.nanoseconds))
        try memory.store(UInt32(truncatingIfNeeded: time.seconds >> 32), at: at(l.secondsHigh))
        atomicMemoryFence(ordering: .releasing)
        try memory.store(begin &+ 1, at: at(l.version))
        return begin &+ 1
    }
}
