import PVTime
import Testing
import XenABI

private func t(_ ms: Int64) -> SystemTime { SystemTime(nanoseconds: ms * 1_000_000) }

@Test func singleshotFiresOnceAtItsDeadline() throws {
    var timers = VCPUTimers()
    #expect(timers.nextDeadline == nil)
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 50_000_000, flags: 0, now: t(10))
    #expect(timers.nextDeadline == t(50))
    #expect(timers.fire(now: t(49)).isEmpty)
    #expect(timers.fire(now: t(50)) == [.singleshot(deadline: t(50))])
    #expect(timers.fire(now: t(60)).isEmpty)
    #expect(timers.nextDeadline == nil)
}

@Test func rearmingReplacesTheDeadline() throws {
    var timers = VCPUTimers()
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 50_000_000, flags: 0, now: t(0))
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 30_000_000, flags: 0, now: t(1))
    #expect(timers.nextDeadline == t(30))
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 80_000_000, flags: 0, now: t(2))
    #expect(timers.fire(now: t(50)).isEmpty)
    #expect(timers.fire(now: t(80)) == [.singleshot(deadline: t(80))])
}

@Test func futureFlag() throws {
    var timers = VCPUTimers()
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 90_000_000, flags: 0, now: t(0))
    // Xen 4.17: a past timeout with VCPU_SSHOTTMR_future is -ETIME and changes nothing.
    #expect(throws: XenErrno.etime) {
        try timers.setSingleshot(timeoutAbsoluteNanoseconds: 5_000_000, flags: VCPUTimers.futureFlag, now: t(10))
    }
    #expect(timers.nextDeadline == t(90))
    // Exactly now is not in the past (timeout < NOW() is false).
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 10_000_000, flags: VCPUTimers.futureFlag, now: t(10))
    #expect(timers.nextDeadline == t(10))
    // Without the flag a past timeout is simply due at once.
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 5_000_000, flags: 0, now: t(10))
    #expect(timers.fire(now: t(10)) == [.singleshot(deadline: t(5))])
    // Unknown flag bits are ignored.
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 20_000_000, flags: 0xffff_fffe, now: t(10))
    #expect(timers.nextDeadline == t(20))
    // Xen >= 4.18 ignores the flag.
    var newer = VCPUTimers(policy: .ignore)
    try newer.setSingleshot(timeoutAbsoluteNanoseconds: 5_000_000, flags: VCPUTimers.futureFlag, now: t(10))
    #expect(newer.fire(now: t(10)) == [.singleshot(deadline: t(5))])
    // A timeout of 2^63 or more is a negative s_time_t: due at once, not in 292 years.
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 1 << 63, flags: VCPUTimers.futureFlag, now: t(10))
    #expect(timers.fire(now: t(10)).count == 1)
}

@Test func stopDisarms() throws {
    var timers = VCPUTimers()
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 50_000_000, flags: 0, now: t(0))
    _ = try timers.setPeriodic(periodNanoseconds: 10_000_000, now: t(0))
    timers.stopSingleshot()
    timers.stopPeriodic()
    #expect(timers.nextDeadline == nil)
    #expect(timers.fire(now: t(1000)).isEmpty)
}

@Test func setTimerOp() {
    var timers = VCPUTimers()
    let now = t(1000)
    timers.setTimerOp(timeout: 2_000_000_000, now: now)
    #expect(timers.nextDeadline == t(2000))
    // 0 stops.
    timers.setTimerOp(timeout: 0, now: now)
    #expect(timers.nextDeadline == nil)
    // Negative (wrapped) and more than 2^50 ns ahead: 100 ms from now instead.
    timers.setTimerOp(timeout: UInt64(bitPattern: -5), now: now)
    #expect(timers.nextDeadline == t(1100))
    timers.setTimerOp(timeout: UInt64(now.rawValue) + (1 << 50) + (1 << 50), now: now)
    #expect(timers.nextDeadline == t(1100))
    // Just under 2^50 ahead is taken as is; the past is due at once.
    timers.setTimerOp(timeout: UInt64(now.rawValue) + (1 << 50) - 1, now: now)
    #expect(timers.nextDeadline == now.advanced(by: (1 << 50) - 1))
    timers.setTimerOp(timeout: 1, now: now)
    #expect(timers.fire(now: now) == [.singleshot(deadline: SystemTime(nanoseconds: 1))])
}

@Test func periodicLimits() throws {
    var timers = VCPUTimers()
    #expect(throws: XenErrno.einval) { _ = try timers.setPeriodic(periodNanoseconds: 999_999, now: t(0)) }
    #expect(throws: XenErrno.einval) { _ = try timers.setPeriodic(periodNanoseconds: 0, now: t(0)) }
    #expect(throws: XenErrno.einval) { _ = try timers.setPeriodic(periodNanoseconds: (1 << 62), now: t(0)) }
    #expect(timers.nextDeadline == nil)
    _ = try timers.setPeriodic(periodNanoseconds: (1 << 62) - 1, now: t(0))
    _ = try timers.setPeriodic(periodNanoseconds: 1_000_000, now: t(0))
}

/// Xen's periodic timer: an event at once if a period has passed since the
/// last one (the first time: since 0), then every period; missed periods
/// collapse into one event and the phase restarts from the late firing.
@Test func periodicTicksAndCatchUp() throws {
    var timers = VCPUTimers()
    // Set at 5 ms with a 10 ms period: last event 0, next 10 ms; not due.
    #expect(try timers.setPeriodic(periodNanoseconds: 10_000_000, now: t(5)).isEmpty)
    #expect(timers.nextDeadline == t(10))
    #expect(timers.fire(now: t(10)) == [.periodic(deadline: t(10))])
    #expect(timers.nextDeadline == t(20))
    #expect(timers.fire(now: t(21)) == [.periodic(deadline: t(20))])
    #expect(timers.nextDeadline == t(31))  // re-based on the late firing
    // The timer thread stalls for 100 ms: one event, not ten.
    #expect(timers.fire(now: t(131)) == [.periodic(deadline: t(31))])
    #expect(timers.nextDeadline == t(141))
    // Stop and restart later: a period has passed since the last event, so one now.
    timers.stopPeriodic()
    #expect(try timers.setPeriodic(periodNanoseconds: 50_000_000, now: t(500)) == [.periodic(deadline: t(181))])
    #expect(timers.nextDeadline == t(550))
    // Changing the period keeps the phase of the last event.
    #expect(try timers.setPeriodic(periodNanoseconds: 20_000_000, now: t(510)).isEmpty)
    #expect(timers.nextDeadline == t(520))
    // The first set on a fresh vCPU late in its life fires at once.
    var fresh = VCPUTimers()
    #expect(try fresh.setPeriodic(periodNanoseconds: 10_000_000, now: t(5000)) == [.periodic(deadline: t(10))])
    #expect(fresh.nextDeadline == t(5010))
}

@Test func bothTimersFireInDeadlineOrder() throws {
    var timers = VCPUTimers()
    _ = try timers.setPeriodic(periodNanoseconds: 10_000_000, now: t(1))
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 7_000_000, flags: 0, now: t(1))
    #expect(timers.nextDeadline == t(7))
    #expect(timers.fire(now: t(12)) == [.singleshot(deadline: t(7)), .periodic(deadline: t(10))])
    try timers.setSingleshot(timeoutAbsoluteNanoseconds: 30_000_000, flags: 0, now: t(12))
    #expect(timers.nextDeadline == t(22))
    #expect(timers.fire(now: t(22)) == [.periodic(deadline: t(22))])
    #expect(timers.fire(now: t(40)) == [.periodic(deadline: t(32)), .singleshot(deadline: t(30))].sorted { $0.deadline < $1.deadline })
}
