import Dispatch
@testable import DeviceRuntime
import Synchronization
import Testing

/// Adaptive polling of an idle execution context: the budget's policy on
/// its own (idle times given, no clock), and a context that polls, checked
/// by counters. Every wait is bounded; nothing sleeps.
@Suite("Execution context polling")
struct PollingTests {
    static func wait(_ s: DispatchSemaphore) -> Bool { s.wait(timeout: .now() + 30) == .success }

    static let microsecond: UInt64 = 1000

    @Test("the budget starts at 0, grows by doubling while blocking waits are short, stops at the maximum")
    func grows() {
        var a = AdaptivePolling(ExecutionContextPolling(maximum: .microseconds(64)))
        #expect(a.budget == 0)
        a.record(idle: 10 * Self.microsecond, sleptAfterPolling: true)
        #expect(a.budget == 4 * Self.microsecond)
        for expected: UInt64 in [8, 16, 32, 64, 64] {
            a.record(idle: 60 * Self.microsecond, sleptAfterPolling: true)
            #expect(a.budget == expected * Self.microsecond)
        }
    }

    @Test("polling that found work keeps the budget; long idle periods halve it down to 0 (an idle device stops spinning)")
    func shrinks() {
        var a = AdaptivePolling(ExecutionContextPolling(maximum: .microseconds(64)))
        for _ in 0..<6 { a.record(idle: 1, sleptAfterPolling: true) }
        #expect(a.budget == 64 * Self.microsecond)
        a.record(idle: 1, sleptAfterPolling: false)
        #expect(a.budget == 64 * Self.microsecond)
        var budgets: [UInt64] = []
        for _ in 0..<6 {
            a.record(idle: 1_000_000 * Self.microsecond, sleptAfterPolling: true)
            budgets.append(a.budget / Self.microsecond)
        }
        #expect(budgets == [32, 16, 8, 4, 0, 0])
    }

    @Test("a maximum of 0 never polls")
    func disabled() {
        var a = AdaptivePolling(.disabled)
        for idle: UInt64 in [1, 1000, 1_000_000_000] { a.record(idle: idle, sleptAfterPolling: true) }
        #expect(a.budget == 0)
        #expect(ExecutionContextPolling(maximum: .microseconds(-5)).maximumNanoseconds == 0)
        #expect(ExecutionContextPolling.standard.maximumNanoseconds == 50 * Self.microsecond)
        #expect(ExecutionContextPolling.standard.pendingMaximumNanoseconds == 1000 * Self.microsecond)
        #expect(ExecutionContextPolling(maximum: .microseconds(5)).pendingMaximumNanoseconds == 0)
        #expect(ExecutionContextPolling(maximum: .zero, whilePending: .microseconds(-1)).pendingMaximumNanoseconds == 0)
        var pending = AdaptivePolling(maximum: 0)
        pending.record(idle: 1, sleptAfterPolling: true)
        #expect(pending.budget == 0)
    }

    /// A doorbell whose event is a flag (as an io_uring CQ with a
    /// completion in it): `poll()` reads it, `wait()` returns when it is set
    /// or on a ring; the pump clears it. Counts waits and polls.
    final class FlagDoorbell: ExecutionContextDoorbell {
        let ready = Atomic<Bool>(false)
        let polls = Atomic<Int>(0)
        let waits = Atomic<Int>(0)
        /// Signalled each time the thread enters `wait()`.
        let sleeping = DispatchSemaphore(value: 0)
        /// Set by the test: the next `poll()` signals `polled`.
        let armed = Atomic<Bool>(false)
        let polled = DispatchSemaphore(value: 0)
        private let semaphore = DispatchSemaphore(value: 0)
        private let rung = Atomic<Bool>(false)

        func wait() -> Bool {
            waits.wrappingAdd(1, ordering: .relaxed)
            sleeping.signal()
            while true {
                if ready.load(ordering: .acquiring) { return true }
                if rung.exchange(false, ordering: .acquiringAndReleasing) { return false }
                semaphore.wait()
            }
        }
        func ring() {
            rung.store(true, ordering: .releasing)
            semaphore.signal()
        }
        func poll() -> Bool {
            polls.wrappingAdd(1, ordering: .relaxed)
            if armed.exchange(false, ordering: .acquiringAndReleasing) { polled.signal() }
            return ready.load(ordering: .acquiring)
        }
        func fire() {
            ready.store(true, ordering: .releasing)
            semaphore.signal()
        }
    }

    @Test("a fresh idle context sleeps without polling; with polling off the doorbell is never polled")
    func idleDoesNotSpin() throws {
        for polling in [ExecutionContextPolling(maximum: .seconds(60)), .disabled] {
            let doorbell = FlagDoorbell()
            let context = ExecutionContext(name: "pvh-poll-idle", doorbell: doorbell, polling: polling)
            #expect(Self.wait(doorbell.sleeping))
            #expect(doorbell.polls.load(ordering: .relaxed) == 0)
            #expect(context.pollingStatistics.polls == 0)
            #expect(context.pollingStatistics.sleeps == 1)
            context.stop()
        }
    }

    @Test("after a short wait the context polls, and the doorbell's event found by polling runs the pump without a sleep")
    func pollingFindsEvent() throws {
        let doorbell = FlagDoorbell()
        // A maximum far above any idle time here: every blocking wait is
        // "short", so the budget (60 s / 16) outlasts the test's steps.
        let context = ExecutionContext(name: "pvh-poll", doorbell: doorbell, polling: ExecutionContextPolling(maximum: .seconds(60)))
        let pumped = DispatchSemaphore(value: 0), ran = DispatchSemaphore(value: 0)
        let pump = context.makeWork {
            doorbell.ready.store(false, ordering: .releasing)
            pumped.signal()
        }
        let work = context.makeWork { ran.signal() }
        context.runOnDoorbellEvent(pump)
        // First idle period: no budget yet, so it sleeps; the schedule ends it.
        #expect(Self.wait(doorbell.sleeping))
        work.schedule()
        #expect(Self.wait(ran))
        // Now it polls; the event is seen by `poll()`, not by a wait.
        doorbell.armed.store(true, ordering: .releasing)
        #expect(Self.wait(doorbell.polled))
        doorbell.fire()
        #expect(Self.wait(pumped))
        // A schedule while it polls is found the same way (no ring needed).
        doorbell.armed.store(true, ordering: .releasing)
        #expect(Self.wait(doorbell.polled))
        work.schedule()
        #expect(Self.wait(ran))
        context.stop()
        let stats = context.pollingStatistics
        #expect(doorbell.waits.load(ordering: .relaxed) == 1)
        #expect(stats.sleeps == 1)
        #expect(stats.hits >= 2)
        #expect(stats.misses == 0)
        #expect(doorbell.polls.load(ordering: .relaxed) >= 1)
    }

    @Test("the runtime's setting reaches its devices' contexts")
    func runtimeSetting() throws {
        let runtime = DeviceRuntime(polling: .disabled)
        defer { runtime.stopAll() }
        #expect(runtime.polling == .disabled)
        #expect(DeviceRuntime().polling == .standard)
        let doorbell = FlagDoorbell()
        let context = runtime.makeDevice("vbd-51712").makeContext(queue: "0", doorbell: doorbell)
        let ran = DispatchSemaphore(value: 0)
        let work = context.makeWork { ran.signal() }
        for _ in 0..<3 {
            #expect(Self.wait(doorbell.sleeping))
            work.schedule()
            #expect(Self.wait(ran))
        }
        #expect(doorbell.polls.load(ordering: .relaxed) == 0)
        #expect(context.pollingStatistics.polls == 0)
    }
}
