import GuestMemory
import Locking
import XenABI

/// One timer expiry for the VMM to deliver: raise VIRQ_TIMER on `vcpu`.
public struct TimerExpiry: Hashable, Sendable {
    public var vcpu: VCPUID
    public var event: TimerEvent
    public init(vcpu: VCPUID, event: TimerEvent) {
        self.vcpu = vcpu
        self.event = event
    }
}

/// A domain's Xen time: the PV clock, every vCPU's timers, and publication
/// of `vcpu_time_info` and the wallclock into guest memory. Pure and
/// thread-safe; the hypercall layer drives the operations (it is the
/// dispatcher's `TimeService`), and the VMM drives expiry with one thread:
///
///     timers.setChangeHandler { wake the thread }
///     loop:
///         sleep until timers.nanosecondsUntilNextDeadline() (forever if nil),
///               or until woken
///         for e in timers.fireDue() { eventChannels.raise(.timer, on: e.vcpu) }
///
/// The change handler runs (outside the lock) whenever a timer is armed,
/// re-armed or stopped, or an event became due at once, so the thread can
/// recompute its sleep. Time information is published at the moments Xen
/// publishes it: when a vCPU registers its vcpu_info or secondary time area
/// (`force_update_vcpu_system_time`), and the wallclock when shared_info is
/// mapped or its layout latched (`update_domain_wallclock_time`). With the
/// `.tscStable` clock model these stamps never need refreshing; with
/// `.monotonic` the VMM should call `publishTimeForAll()` about once a
/// second, as Xen's time calibration does.
public final class DomainTimers: Sendable {
    public let clock: PVClock
    public let source: any PVClockSource
    public let vcpuCount: Int
    let memory: any GuestMemory
    let placement: any SharedInfoLocator

    struct State {
        var timers: [VCPUTimers]
        /// VCPUOP_register_vcpu_time_memory_area, translated.
        var timeAreas: [GuestPhysicalAddress?]
        /// Events to deliver at once (a periodic timer started after a whole
        /// period: Xen sends it from inside the hypercall).
        var immediate: [TimerExpiry] = []
    }
    let state: Lock<State>
    /// A `CallbackSlot`: a closure kept directly in a `Mutex<(() -> Void)?>`
    /// was re-wrapped in reabstraction thunks on every access and, after
    /// ~10^5 timer re-arms, overflowed the vCPU's stack.
    let changeHandler: CallbackSlot<Void>

    public init(vcpuCount: Int, clock: PVClock, source: any PVClockSource, memory: any GuestMemory,
                placement: any SharedInfoLocator, policy: SingleshotFuturePolicy = .honour,
                onChange: (@Sendable () -> Void)? = nil) {
        self.clock = clock
        self.source = source
        self.vcpuCount = max(vcpuCount, 0)
        self.memory = memory
        self.placement = placement
        state = Lock(State(timers: Array(repeating: VCPUTimers(policy: policy), count: max(vcpuCount, 0)),
                            timeAreas: Array(repeating: nil, count: max(vcpuCount, 0))))
        changeHandler = CallbackSlot(onChange)
    }

    /// Replaces the change handler (e.g. once the VMM's timer thread exists).
    public func setChangeHandler(_ handler: (@Sendable () -> Void)?) { changeHandler.set(handler) }

    private func changed() { changeHandler() }

    private func index(_ vcpu: VCPUID) -> Int? {
        Int(vcpu.rawValue) < vcpuCount ? Int(vcpu.rawValue) : nil
    }

    /// Runs `body` on `vcpu`'s timers, then notifies the change handler.
    /// Unknown vCPUs are ignored (the hypercall layer has refused them).
    private func update<R, E: Error>(_ vcpu: VCPUID, default d: R, _ body: (inout VCPUTimers, inout State) throws(E) -> R) throws(E) -> R {
        guard let i = index(vcpu) else { return d }
        let r = try state.withLock { (s: inout State) throws(E) -> R in
            var t = s.timers[i]
            let r = try body(&t, &s)
            s.timers[i] = t
            return r
        }
        changed()
        return r
    }

    // MARK: the clock

    /// `NOW()`: the domain's current system time.
    public func systemTime() -> SystemTime { clock.systemTime(at: source.read()) }

    // MARK: timer operations (the dispatcher's TimeService)

    /// VCPUOP_set_singleshot_timer (`VCPUTimers.setSingleshot`).
    public func setSingleshot(vcpu: VCPUID, deadline: UInt64, flags: UInt32) throws(XenErrno) {
        let now = systemTime()
        try update(vcpu, default: ()) { (t, _) throws(XenErrno) in
            try t.setSingleshot(timeoutAbsoluteNanoseconds: deadline, flags: flags, now: now)
        }
    }

    /// VCPUOP_stop_singleshot_timer.
    public func stopSingleshot(vcpu: VCPUID) {
        update(vcpu, default: ()) { (t, _) throws(Never) in t.stopSingleshot() }
    }

    /// The `set_timer_op` hypercall (`VCPUTimers.setTimerOp`): 0 stops.
    public func setTimerOp(vcpu: VCPUID, deadline: UInt64) {
        let now = systemTime()
        update(vcpu, default: ()) { (t, _) throws(Never) in t.setTimerOp(timeout: deadline, now: now) }
    }

    /// VCPUOP_set_periodic_timer: -EINVAL outside [1 ms, 2^62). An event due
    /// at once is queued for the next `fireDue`.
    public func setPeriodic(vcpu: VCPUID, period: UInt64) throws(XenErrno) {
        let now = systemTime()
        try update(vcpu, default: ()) { (t, s) throws(XenErrno) in
            let events = try t.setPeriodic(periodNanoseconds: period, now: now)
            s.immediate += events.map { TimerExpiry(vcpu: vcpu, event: $0) }
        }
    }

    /// VCPUOP_stop_periodic_timer.
    public func stopPeriodic(vcpu: VCPUID) {
        update(vcpu, default: ()) { (t, _) throws(Never) in t.stopPeriodic() }
    }

    /// A copy of `vcpu`'s timers (for tests and diagnostics).
    public func timers(for vcpu: VCPUID) -> VCPUTimers? {
        guard let i = index(vcpu) else { return nil }
        return state.withLock { $0.timers[i] }
    }

    // MARK: expiry (the VMM's timer thread)

    /// The earliest moment something is due, across vCPUs.
    public var nextDeadline: SystemTime? {
        state.withLock { s in
            (s.timers.compactMap(\.nextDeadline) + s.immediate.map(\.event.deadline)).min()
        }
    }

    /// Nanoseconds from now until `nextDeadline` (0 or less: due already),
    /// nil when nothing is armed.
    public func nanosecondsUntilNextDeadline() -> Int64? {
        guard let d = nextDeadline else { return nil }
        let (diff, overflow) = d.rawValue.subtractingReportingOverflow(systemTime().rawValue)
        return overflow ? (d.rawValue < 0 ? Int64.min : Int64.max) : diff
    }

    /// Expires everything due at `now` (default: the clock's now), earliest
    /// first: the queued immediate events, then each vCPU's timers.
    public func fireDue(now: SystemTime? = nil) -> [TimerExpiry] {
        let now = now ?? systemTime()
        return state.withLock { s in
            var out = s.immediate
            s.immediate = []
            for i in s.timers.indices {
                out += s.timers[i].fire(now: now).map { TimerExpiry(vcpu: VCPUID(UInt32(i)), event: $0) }
            }
            return out.sorted { ($0.event.deadline, $0.vcpu) < ($1.event.deadline, $1.vcpu) }
        }
    }

    // MARK: publication

    /// VCPUOP_register_vcpu_time_memory_area, already translated to a guest
    /// physical address (nil: the guest's address did not translate; Xen
    /// keeps such a handle and its updates fail, so nothing is written).
    /// Publishes the vCPU's time at once, as Xen does.
    public func registerTimeMemoryArea(vcpu: VCPUID, address: GuestPhysicalAddress?) {
        guard let i = index(vcpu) else { return }
        state.withLock { $0.timeAreas[i] = address }
        publishTime(vcpu: vcpu)
    }

    /// The guest registered `vcpu`'s vcpu_info: publish its time there.
    public func vcpuInfoRegistered(vcpu: VCPUID) { publishTime(vcpu: vcpu) }

    /// shared_info was mapped (or its 32/64-bit layout latched): write the
    /// wallclock, and the time of the vCPUs that use their legacy slot in it.
    public func sharedInfoMapped() {
        publishWallclock()
        publishTimeForAll()
    }

    /// Where `vcpu`'s time information goes now.
    public func timeTargets(for vcpu: VCPUID) -> VCPUTimeTargets {
        let area = index(vcpu).flatMap { i in state.withLock { $0.timeAreas[i] } }
        return VCPUTimeTargets(registeredVCPUInfo: placement.registeredVCPUInfo(for: vcpu),
                               sharedInfo: placement.sharedInfoFrame, timeMemoryArea: area)
    }

    /// Writes `vcpu`'s current `vcpu_time_info` to every place it goes;
    /// returns how many copies were written. Guest-memory failures are
    /// ignored (Xen ignores failed copies of time information).
    @discardableResult
    public func publishTime(vcpu: VCPUID) -> Int {
        guard index(vcpu) != nil else { return 0 }
        let targets = timeTargets(for: vcpu)
        let info = clock.timeInfo(at: source.read())
        // One writer at a time per domain, so two version sequences never interleave.
        return state.withLock { _ in
            var written = 0
            if let primary = targets.vcpuInfoTime(for: vcpu),
               (try? PVTimeWriter.write(info, to: memory, at: primary)) != nil { written += 1 }
            if let secondary = targets.timeMemoryArea,
               (try? PVTimeWriter.write(info, to: memory, at: secondary)) != nil { written += 1 }
            return written
        }
    }

    /// `publishTime` for every vCPU; returns the copies written.
    @discardableResult
    public func publishTimeForAll() -> Int {
        (0..<vcpuCount).reduce(0) { $0 + publishTime(vcpu: VCPUID(UInt32($1))) }
    }

    /// Writes the wallclock into shared_info if it is mapped; true if written.
    @discardableResult
    public func publishWallclock() -> Bool {
        guard let frame = placement.sharedInfoFrame else { return false }
        let wallclock = clock.wallclock(at: source.read())
        let is32Bit = placement.sharedInfoIs32Bit
        return state.withLock { _ in
            (try? PVTimeWriter.writeWallclock(wallclock, to: memory, sharedInfo: frame, is32Bit: is32Bit)) != nil
        }
    }
}
