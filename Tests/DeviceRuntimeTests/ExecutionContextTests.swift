import Dispatch
import DeviceRuntime
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Locking
import Synchronization
import Testing

/// The execution context on its own: coalescing, no lost wake-up, stop.
/// Waits are semaphores with generous bounds (a hang fails, it does not
/// stall the suite); nothing sleeps.
@Suite("Execution context")
struct ExecutionContextTests {
    /// Waits on `s` with a bound; false means the test must fail.
    static func wait(_ s: DispatchSemaphore) -> Bool { s.wait(timeout: .now() + 30) == .success }

    @Test("N schedules while the item runs give at most one more run")
    func coalescing() throws {
        let context = ExecutionContext(name: "pvh-test")
        defer { context.stop() }
        let started = DispatchSemaphore(value: 0), gate = DispatchSemaphore(value: 0)
        let runs = Atomic<Int>(0)
        let work = context.makeWork {
            if runs.wrappingAdd(1, ordering: .relaxed).newValue == 1 {
                started.signal()
                gate.wait()
            }
        }
        work.schedule()
        #expect(Self.wait(started))
        for _ in 0..<100 { work.schedule() }
        gate.signal()
        #expect(context.sync(timeout: .seconds(30)))
        #expect(runs.load(ordering: .relaxed) == 2)
        #expect(context.coalescedCount == 99)
    }

    @Test("a notify storm from four threads: the last run sees every write made before a schedule")
    func noLostWakeUp() throws {
        let context = ExecutionContext(name: "pvh-storm")
        defer { context.stop() }
        let produced = Atomic<Int>(0)
        let seen = Atomic<Int>(0)
        let runs = Atomic<Int>(0)
        let work = context.makeWork {
            runs.wrappingAdd(1, ordering: .relaxed)
            seen.store(produced.load(ordering: .acquiring), ordering: .relaxed)
        }
        let perThread = 20_000, threads = 4
        DispatchQueue.concurrentPerform(iterations: threads) { _ in
            for _ in 0..<perThread {
                produced.wrappingAdd(1, ordering: .releasing)
                work.schedule()
            }
        }
        #expect(context.sync(timeout: .seconds(30)))
        #expect(seen.load(ordering: .relaxed) == perThread * threads)
        let r = runs.load(ordering: .relaxed)
        #expect(r >= 1 && r <= perThread * threads)
    }

    @Test("the work runs on the context's own named thread, not the scheduler's")
    func ownThread() throws {
        let context = ExecutionContext(name: "pvh-named")
        defer { context.stop() }
        let name = Lock<String?>(nil), onContext = Atomic<Bool>(false)
        let work = context.makeWork {
            name.withLock { $0 = Thread.current.name }
            onContext.store(context.isCurrent, ordering: .relaxed)
        }
        work.schedule()
        #expect(context.sync(timeout: .seconds(30)))
        #expect(name.withLock { $0 } == "pvh-named")
        #expect(onContext.load(ordering: .relaxed) == true)
        #expect(!context.isCurrent)
    }

    @Test("stop while busy waits for the running item, then nothing more runs")
    func stopWhileBusy() throws {
        let context = ExecutionContext(name: "pvh-busy")
        let started = DispatchSemaphore(value: 0), gate = DispatchSemaphore(value: 0), stopped = DispatchSemaphore(value: 0)
        let runs = Atomic<Int>(0), finished = Atomic<Bool>(false), stopReturned = Atomic<Bool>(false)
        let work = context.makeWork {
            runs.wrappingAdd(1, ordering: .relaxed)
            started.signal()
            gate.wait()
            finished.store(true, ordering: .releasing)
        }
        work.schedule()
        #expect(Self.wait(started))
        work.schedule()  // queued behind the running one: must never run
        let stopper = Thread {
            context.stop()
            // stop() returned: the running item must have finished.
            stopReturned.store(finished.load(ordering: .acquiring), ordering: .releasing)
            stopped.signal()
        }
        stopper.start()
        // stop() marks the context stopped before it waits; spin (bounded) until then.
        let deadline = ContinuousClock.now + .seconds(30)
        while !context.isStopped && ContinuousClock.now < deadline { _ = sched_yield() }
        #expect(context.isStopped)
        work.schedule()  // ignored
        gate.signal()
        #expect(Self.wait(stopped))
        #expect(stopReturned.load(ordering: .acquiring) == true, "stop() returned before the running item finished")
        #expect(runs.load(ordering: .relaxed) == 1)
        context.stop()  // idempotent, returns at once
    }

    @Test("stop from inside a pump returns (no deadlock) and no further run happens")
    func stopFromInside() throws {
        let context = ExecutionContext(name: "pvh-self")
        let done = DispatchSemaphore(value: 0)
        let runs = Atomic<Int>(0)
        let work = context.makeWork {
            runs.wrappingAdd(1, ordering: .relaxed)
            context.stop()
            #expect(context.sync(timeout: .seconds(1)))  // from its own thread: returns at once
            done.signal()
        }
        work.schedule()
        #expect(Self.wait(done))
        work.schedule()
        context.stop()  // from outside: waits until the thread has left
        #expect(runs.load(ordering: .relaxed) == 1)
        #expect(context.sync(timeout: .seconds(1)))
    }

    @Test("a sync waiting behind a stop is released, not left hanging")
    func syncReleasedByStop() throws {
        let context = ExecutionContext(name: "pvh-sync")
        let started = DispatchSemaphore(value: 0), gate = DispatchSemaphore(value: 0), synced = DispatchSemaphore(value: 0)
        let work = context.makeWork {
            started.signal()
            gate.wait()
        }
        work.schedule()
        #expect(Self.wait(started))
        let result = Atomic<Bool>(false)
        let waiter = Thread {
            result.store(context.sync(timeout: .seconds(30)), ordering: .releasing)
            synced.signal()
        }
        waiter.start()
        context.requestStop()
        gate.signal()
        #expect(Self.wait(synced))
        #expect(result.load(ordering: .acquiring) == true)
        context.stop()
    }

    /// A doorbell with an event of its own (as an io_uring completion
    /// eventfd is): `fire()` ends the wait with true, `ring()` with false.
    final class EventDoorbell: ExecutionContextDoorbell {
        private let state = Lock<(rung: Bool, fired: Bool)>((false, false))
        private let semaphore = DispatchSemaphore(value: 0)
        let waits = Atomic<Int>(0)
        func wait() -> Bool {
            waits.wrappingAdd(1, ordering: .relaxed)
            while true {
                let r = state.withLock { s -> Bool? in
                    defer { s = (false, false) }
                    return s.fired ? true : (s.rung ? false : nil)
                }
                if let r { return r }
                semaphore.wait()
            }
        }
        func ring() {
            state.withLock { $0.rung = true }
            semaphore.signal()
        }
        func fire() {
            state.withLock { $0.fired = true }
            semaphore.signal()
        }
    }

    @Test("a doorbell's own event runs the item named for it on the context's thread, and only that one; schedules still ring it; stop ends its wait")
    func doorbellEvent() throws {
        let doorbell = EventDoorbell()
        let context = ExecutionContext(name: "pvh-bell", doorbell: doorbell)
        let pumped = DispatchSemaphore(value: 0), other = DispatchSemaphore(value: 0)
        let pumpRuns = Atomic<Int>(0), otherRuns = Atomic<Int>(0), offThread = Atomic<Int>(0)
        let pump = context.makeWork {
            if !context.isCurrent { offThread.wrappingAdd(1, ordering: .relaxed) }
            pumpRuns.wrappingAdd(1, ordering: .relaxed)
            pumped.signal()
        }
        let work = context.makeWork {
            otherRuns.wrappingAdd(1, ordering: .relaxed)
            other.signal()
        }
        // Before an item is named, an event runs nothing.
        doorbell.fire()
        #expect(context.sync(timeout: .seconds(30)))
        #expect(pumpRuns.load(ordering: .relaxed) == 0 && otherRuns.load(ordering: .relaxed) == 0)
        context.runOnDoorbellEvent(pump)
        for round in 1...3 {
            doorbell.fire()
            #expect(Self.wait(pumped))
            #expect(pumpRuns.load(ordering: .relaxed) == round)
        }
        #expect(otherRuns.load(ordering: .relaxed) == 0)
        work.schedule()
        #expect(Self.wait(other))
        #expect(pumpRuns.load(ordering: .relaxed) == 3)
        #expect(offThread.load(ordering: .relaxed) == 0)
        // stop() returned, so the thread left its wait on the doorbell; it
        // waited there at least once (how often depends on how the host
        // scheduled the rounds: a fire may land before the thread sleeps).
        context.stop()
        #expect(doorbell.waits.load(ordering: .relaxed) >= 1)
    }
}

@Suite("Device runtime registry")
struct DeviceRuntimeRegistryTests {
    @Test("remove stops a device's contexts and forgets it; the others stay")
    func remove() throws {
        let runtime = DeviceRuntime()
        defer { runtime.stopAll() }
        let gone = runtime.makeDevice("vbd-51712")
        let kept = runtime.makeDevice("console")
        _ = gone.makeContext(queue: "0")
        _ = gone.makeContext(queue: "1")
        _ = kept.makeContext()
        #expect(runtime.threadCount == 3)
        runtime.remove(gone)
        #expect(gone.threadCount == 0)
        #expect(runtime.devices.map(\.name) == ["console"])
        #expect(runtime.threadCount == 1)
    }
}
