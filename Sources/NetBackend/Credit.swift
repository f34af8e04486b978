import Locking

/// A vif's transmit rate limit as netback's `rate` node holds it ("bytes,usecs",
/// written by the toolstack from xl's `rate=`): the guest may send
/// `bytesPerInterval` bytes every `interval`.
public struct NetTransmitRate: Hashable, Sendable, CustomStringConvertible {
    public let bytesPerInterval: UInt64
    public let interval: Duration

    public init(bytesPerInterval: UInt64, interval: Duration) {
        self.bytesPerInterval = bytesPerInterval
        self.interval = interval
    }

    /// "bytes,usecs": the backend's `rate` node (libxl_nic.c writes it,
    /// xen-netback's `xen_net_read_rate` parses it).
    public var description: String {
        let (seconds, attoseconds) = interval.components
        return "\(bytesPerInterval),\(seconds * 1_000_000 + attoseconds / 1_000_000_000_000)"
    }
}

/// The transmit credit of one vif: xen-netback's credit scheduler
/// (`tx_credit_exceeded`, `tx_add_credit` in drivers/net/xen-netback/
/// netback.c). Each interval adds `bytesPerInterval` of credit, up to a
/// burst of max(128 KiB, bytesPerInterval) so that the largest GSO packet
/// always fits eventually; a packet larger than the credit left waits
/// until the next interval begins.
///
/// One credit for the whole vif, shared by its queues (Linux's netback gives
/// each queue the full rate, so a 4-queue guest could send 4× what xl's
/// `rate=` says; pvh keeps to what the user asked for). A lock: queues run
/// on their own contexts, and each takes credit once per packet.
public final class NetTransmitCredit: Sendable {
    /// netback's minimum burst: a 64 KiB GSO packet plus headers fits.
    public static let minimumBurst: UInt64 = 128 * 1024

    public enum Decision: Equatable, Sendable {
        /// Send it: its bytes were taken from the credit.
        case send
        /// Over the credit: ask again once `delay` has passed.
        case wait(Duration)
    }

    public let rate: NetTransmitRate
    private let burst: UInt64
    private let clock: @Sendable () -> Duration
    private struct State {
        var remaining: UInt64
        var windowStart: Duration
    }
    private let state: Lock<State>

    /// `clock` gives the time since some fixed origin (monotonic); tests
    /// pass their own.
    public init(_ rate: NetTransmitRate, clock: @escaping @Sendable () -> Duration = NetTransmitCredit.monotonic) {
        self.rate = rate
        self.clock = clock
        burst = max(Self.minimumBurst, rate.bytesPerInterval)
        // A fresh vif starts with one interval's credit (netback: credit_bytes).
        state = Lock(State(remaining: rate.bytesPerInterval, windowStart: clock()))
    }

    private static let origin = ContinuousClock.now
    @Sendable public static func monotonic() -> Duration { ContinuousClock.now - origin }

    /// The credit's clock now.
    public func now() -> Duration { clock() }

    /// Takes `bytes` of credit for one packet, or says how long to wait.
    public func take(_ bytes: Int) -> Decision {
        let size = UInt64(max(bytes, 0))
        let now = clock()
        return state.withLock { s in
            let next = s.windowStart + rate.interval
            if now >= next {
                // tx_add_credit: a new window, one more interval's credit,
                // capped at the burst (never wrapping).
                s.windowStart = now
                let (sum, overflow) = s.remaining.addingReportingOverflow(rate.bytesPerInterval)
                s.remaining = min(overflow ? UInt64.max : sum, burst)
            }
            guard size <= s.remaining else {
                return .wait(s.windowStart + rate.interval - now)
            }
            s.remaining -= size
            return .send
        }
    }
}
