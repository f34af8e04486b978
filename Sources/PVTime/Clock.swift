import XenABI
/// Wall-clock time since the Unix epoch, as shared_info's wallclock carries it.
public struct WallclockTime: Hashable, Sendable {
    public var seconds: UInt64
    /// Below 1e9.
    public var nanoseconds: UInt32
    public init(seconds: UInt64, nanoseconds: UInt32) {
        self.seconds = seconds + UInt64(nanoseconds / 1_000_000_000)
        self.nanoseconds = nanoseconds % 1_000_000_000
    }
}

/// One coherent sample of the clocks the PV clock is built from. The three
/// values are read together (as close in time as the host allows): a TSC
/// value and a nanosecond value read at different moments would put that gap
/// into every system time the guest computes.
public struct PVClockReading: Hashable, Sendable {
    /// The guest's TSC (host TSC scaled and offset as KVM presents it).
    public var tsc: UInt64
    /// A host monotonic clock in nanoseconds (CLOCK_MONOTONIC).
    public var monotonicNanoseconds: UInt64
    /// The host's real-time clock (CLOCK_REALTIME).
    public var realtime: WallclockTime
    public init(tsc: UInt64, monotonicNanoseconds: UInt64, realtime: WallclockTime) {
        self.tsc = tsc
        self.monotonicNanoseconds = monotonicNanoseconds
        self.realtime = realtime
    }
}

/// Where the PV clock gets the time: the VMM reads the guest TSC and the host
/// clocks; tests use a fake that only moves when told.
public protocol PVClockSource: Sendable {
    func read() -> PVClockReading
}
