import XenABI

/// A timer expiry: the VMM raises VIRQ_TIMER on the timer's vCPU for each
/// (or once for several at the same moment; Xen's `send_timer_event` just
/// sends the VIRQ, so coalescing is invisible to the guest).
public enum TimerEvent: Hashable, Sendable {
    /// The single-shot timer (VCPUOP_set_singleshot_timer or set_timer_op) expired.
    case singleshot(deadline: SystemTime)
    /// The periodic timer (VCPUOP_set_periodic_timer) ticked.
    case periodic(deadline: SystemTime)

    public var deadline: SystemTime {
        switch self {
        case .singleshot(let d), .periodic(let d): d
        }
    }
}

/// How VCPUOP_set_singleshot_timer treats `VCPU_SSHOTTMR_future`.
public enum SingleshotFuturePolicy: Hashable, Sendable {
    /// Xen ≤ 4.17 (common/domain.c): a timeout already in the past with the
    /// flag set fails with -ETIME and leaves the timer as it was. Our default:
    /// we report Xen 4.17 to the guest.
    case honour
    /// Xen ≥ 4.18 (commit 19c6cbd909 "xen/vcpu: ignore VCPU_SSHOTTMR_future"):
    /// the flag is ignored; a past timeout fires at once.
    case ignore
}

/// One vCPU's Xen timers: the single-shot timer and the periodic timer
/// (xen/common/sched/core.c, xen/common/domain.c), as a state machine over
/// system time. The VMM's timer thread sleeps until `nextDeadline`, then calls
/// `fire(now:)` and raises VIRQ_TIMER for what it returns. Setting a timer in
/// the past makes `nextDeadline` due at once, as Xen's `set_timer` does.
///
/// Checks that need the caller's context stay with the caller: the single-shot
/// operations are only allowed on the calling vCPU (-EINVAL otherwise), and
/// the argument structures are copied in by the hypercall layer (-EFAULT).
public struct VCPUTimers: Hashable, Sendable {
    /// `VCPU_SSHOTTMR_future` (vcpu.h).
    public static let futureFlag = UInt32(1) << 0
    /// The shortest period VCPUOP_set_periodic_timer accepts: `MILLISECS(1)`.
    public static let minimumPeriod: UInt64 = 1_000_000
    /// The longest: `STIME_DELTA_MAX` (xen/include/xen/time.h), 2^62 - 1.
    public static let maximumPeriod: UInt64 = UInt64.max >> 2
    /// set_timer_op's answer to absurd timeouts: fire in 100 ms (sched/core.c
    /// `do_set_timer_op`, a workaround for Linux jiffy wrap).
    public static let hugeTimeoutFallback: Int64 = 100_000_000

    public let policy: SingleshotFuturePolicy
    /// The armed single-shot deadline.
    public private(set) var singleshotDeadline: SystemTime?
    /// The periodic timer's period in ns, 0 when stopped.
    public private(set) var period: UInt64 = 0
    /// `periodic_last_event`: when the periodic timer last sent an event.
    /// Starts at 0 with the vCPU and survives stop/start, as in Xen.
    public private(set) var lastPeriodicEvent = SystemTime.zero

    public init(policy: SingleshotFuturePolicy = .honour) { self.policy = policy }

    /// VCPUOP_set_singleshot_timer with `timeout_abs_ns` and `flags`.
    /// Throws `.etime` when the policy honours `VCPU_SSHOTTMR_future`, the flag
    /// is set, and the timeout has passed (compared as Xen does, unsigned
    /// `timeout_abs_ns < NOW()`); the timer is then unchanged. Unknown flag
    /// bits are ignored, as Xen ignores them. A timeout of 2^63 or more is a
    /// negative `s_time_t` to Xen's `set_timer`, i.e. already due; so here.
    public mutating func setSingleshot(timeoutAbsoluteNanoseconds timeout: UInt64, flags: UInt32,
                                       now: SystemTime) throws(XenErrno) {
        if policy == .honour, flags & Self.futureFlag != 0, timeout < UInt64(max(now.rawValue, 0)) {
            throw .etime
        }
        singleshotDeadline = SystemTime(rawValue: Int64(bitPattern: timeout))
    }

    /// VCPUOP_stop_singleshot_timer.
    public mutating func stopSingleshot() { singleshotDeadline = nil }

    /// The legacy `set_timer_op(timeout)` hypercall (sched/core.c
    /// `do_set_timer_op`), which drives the same single-shot timer: 0 stops
    /// it; a negative timeout, or one more than 2^50 ns (~13 days) ahead,
    /// arms it 100 ms from now; anything else arms it at `timeout`. Never fails.
    public mutating func setTimerOp(timeout raw: UInt64, now: SystemTime) {
        let timeout = Int64(bitPattern: raw)
        if timeout == 0 {
            singleshotDeadline = nil
            return
        }
        let offset = timeout &- now.rawValue
        if timeout < 0 || (offset > 0 && UInt32(truncatingIfNeeded: offset >> 50) != 0) {
            singleshotDeadline = now.advanced(by: Self.hugeTimeoutFallback)
        } else {
            singleshotDeadline = SystemTime(rawValue: timeout)
        }
    }

    /// VCPUOP_set_periodic_timer with `period_ns`: -EINVAL below 1 ms or
    /// above `STIME_DELTA_MAX`. Otherwise Xen's `vcpu_set_periodic_timer`:
    /// the period replaces the old one, and if a whole period has passed
    /// since the last periodic event (always so the first time, since that
    /// is 0) an event is sent at once; the returned events are for the VMM
    /// to deliver now.
    public mutating func setPeriodic(periodNanoseconds: UInt64, now: SystemTime) throws(XenErrno) -> [TimerEvent] {
        guard periodNanoseconds >= Self.minimumPeriod, periodNanoseconds <= Self.maximumPeriod else { throw .einval }
        period = periodNanoseconds
        return periodicWork(now: now)
    }

    /// VCPUOP_stop_periodic_timer (`vcpu_set_periodic_timer(v, 0)`).
    public mutating func stopPeriodic() { period = 0 }

    /// The earliest armed deadline, if any timer is armed.
    public var nextDeadline: SystemTime? {
        [singleshotDeadline, nextPeriodicDeadline].compactMap { $0 }.min()
    }

    /// When the periodic timer next fires: `periodic_last_event + period`.
    public var nextPeriodicDeadline: SystemTime? {
        period == 0 ? nil : lastPeriodicEvent.advanced(by: Int64(period))
    }

    /// Expires every timer due at `now`, earliest first. The single-shot
    /// timer disarms. The periodic timer sends one event however many periods
    /// were missed and restarts from `now` (Xen's
    /// `vcpu_periodic_timer_work_locked`: `periodic_last_event = now`, next
    /// at `now + period`): a late timer thread delays ticks, it never bursts.
    public mutating func fire(now: SystemTime) -> [TimerEvent] {
        var events: [TimerEvent] = []
        if let d = singleshotDeadline, d <= now {
            singleshotDeadline = nil
            events.append(.singleshot(deadline: d))
        }
        events += periodicWork(now: now)
        return events.sorted { $0.deadline < $1.deadline }
    }

    private mutating func periodicWork(now: SystemTime) -> [TimerEvent] {
        guard let next = nextPeriodicDeadline, now >= next else { return [] }
        lastPeriodicEvent = now
        return [.periodic(deadline: next)]
    }
}
