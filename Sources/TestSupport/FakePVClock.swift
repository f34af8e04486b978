import PVTime
import Locking

/// A PV clock source that moves only when a test says so: the guest TSC
/// ticks at `tscKHz`, the monotonic and real-time clocks advance with it.
public final class FakePVClock: PVClockSource, @unchecked Sendable {
    public let tscKHz: UInt32
    private let state: Lock<PVClockReading>

    public init(tscKHz: UInt32, tsc: UInt64 = 1_000_000, monotonicNanoseconds: UInt64 = 5_000_000_000,
                realtime: WallclockTime = WallclockTime(seconds: 1_700_000_000, nanoseconds: 250_000_000)) {
        self.tscKHz = tscKHz
        state = Lock(PVClockReading(tsc: tsc, monotonicNanoseconds: monotonicNanoseconds, realtime: realtime))
    }

    public func read() -> PVClockReading { state.withLock { $0 } }

    /// Advances every clock by `nanoseconds` (the TSC by the matching ticks, rounded down).
    public func advance(nanoseconds: UInt64) {
        state.withLock { r in
            r.tsc &+= UInt64(1_000_000).dividingFullWidth(nanoseconds.multipliedFullWidth(by: UInt64(tscKHz))).quotient
            r.monotonicNanoseconds &+= nanoseconds
            let ns = UInt64(r.realtime.nanoseconds) + nanoseconds
            r.realtime = WallclockTime(seconds: r.realtime.seconds + ns / 1_000_000_000, nanoseconds: UInt32(ns % 1_000_000_000))
        }
    }

    /// Sets the TSC alone (to test readings that disagree).
    public func setTSC(_ tsc: UInt64) { state.withLock { $0.tsc = tsc } }
}
