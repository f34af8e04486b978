import Dispatch
import EventChannels
import Foundation
import KVM
import PVTime
import XenABI

/// The PV clock's source on the host: the guest's TSC (host TSC + KVM's
/// offset, measured once) read together with the host's monotonic and real
/// time clocks.
struct HostPVClockSource: PVClockSource {
    let tscOffset: UInt64

    func read() -> PVClockReading {
        let tsc = hostTSC() &+ tscOffset
        let monotonic = DispatchTime.now().uptimeNanoseconds
        let now = Date().timeIntervalSince1970
        let seconds = now.rounded(.down)
        return PVClockReading(
            tsc: tsc, monotonicNanoseconds: monotonic,
            realtime: WallclockTime(seconds: UInt64(max(seconds, 0)), nanoseconds: UInt32(max(0, min(999_999_999, (now - seconds) * 1e9)))))
    }
}

/// The domain's timer thread: sleeps until the earliest Xen timer of any vCPU
/// (single-shot, periodic, set_timer_op) and raises VIRQ_TIMER on that vCPU
/// (Xen: the timer softirq's `vcpu_singleshot_timer_fn` /
/// `vcpu_periodic_timer_fn` → `send_timer_event`). Re-arming a timer wakes it.
final class TimerThread: Sendable {
    private let timers: DomainTimers
    private let events: EventChannelTable
    private let lifecycle: DomainLifecycle
    private let wake = DispatchSemaphore(value: 0)

    init(timers: DomainTimers, events: EventChannelTable, lifecycle: DomainLifecycle) {
        self.timers = timers
        self.events = events
        self.lifecycle = lifecycle
        let wake = self.wake
        timers.setChangeHandler { wake.signal() }
        lifecycle.onStop { wake.signal() }
    }

    /// Runs on its own thread until the domain ends; `exited` is signalled last.
    func start(exited: DispatchSemaphore) {
        let thread = Thread { [self] in
            while lifecycle.exit == nil {
                for expiry in timers.fireDue() {
                    _ = events.raise(.timer, on: expiry.vcpu)
                }
                if let ns = timers.nanosecondsUntilNextDeadline() {
                    if ns > 0 { _ = wake.wait(timeout: .now() + .nanoseconds(Int(min(ns, Int64(Int.max))))) }
                } else {
                    wake.wait()
                }
            }
            exited.signal()
        }
        thread.name = "pvh-timers"
        thread.start()
    }
}
