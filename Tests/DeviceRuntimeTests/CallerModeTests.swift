import Locking
import Dispatch
import DeviceRuntime
import Foundation
import Synchronization
import Testing

/// `ExecutionContextMode.caller`: a context without a thread, whose work
/// runs in `sync()` on the caller's thread (what the fuzzers drive the
/// backends with). Nothing here waits on another thread.
@Suite("Execution context, caller mode")
struct CallerModeTests {
    /// What ran, in order, and on which thread.
    final class Log: Sendable {
        let entries = Lock<[String]>([])
        let offThread = Atomic<Int>(0)
        func add(_ s: String, _ context: ExecutionContext, caller: ObjectIdentifier) {
            entries.withLock { $0.append(s) }
            if !context.isCurrent || ObjectIdentifier(Thread.current) != caller { offThread.wrappingAdd(1, ordering: .relaxed) }
        }
        var all: [String] { entries.withLock { $0 } }
    }

    @Test("nothing runs until sync; sync runs everything queued, what the runs schedule included, in order, coalesced, on the caller's thread")
    func runsInSync() throws {
        let context = ExecutionContext(name: "pvh-caller", mode: .caller)
        defer { context.stop() }
        let me = ObjectIdentifier(Thread.current)
        let log = Log()
        let b = context.makeWork { log.add("b", context, caller: me) }
        let a = context.makeWork {
            log.add("a", context, caller: me)
            if log.all.count == 1 { b.schedule() }  // b is queued already: coalesced
        }
        let c = context.makeWork { log.add("c", context, caller: me) }
        a.schedule()
        b.schedule()
        a.schedule()  // pending: coalesced
        #expect(log.all.isEmpty)
        #expect(!context.isCurrent)
        #expect(context.sync(timeout: .seconds(1)))
        #expect(log.all == ["a", "b"])
        #expect(context.coalescedCount == 2)
        // A run that schedules another item (and itself again) runs them in the same sync.
        let d = context.makeWork {
            log.add("d", context, caller: me)
            c.schedule()
            if log.all.filter({ $0 == "d" }).count == 1 { a.schedule() }
        }
        d.schedule()
        #expect(context.sync(timeout: .seconds(1)))
        #expect(log.all == ["a", "b", "d", "c", "a"])
        #expect(log.offThread.load(ordering: .relaxed) == 0)
        #expect(context.runCount == 5)
        #expect(!context.isCurrent)
    }

    @Test("a stop inside a run ends the sync after that run; later schedules are ignored; stop and sync from outside return at once")
    func stopInside() throws {
        let context = ExecutionContext(name: "pvh-caller-stop", mode: .caller)
        let runs = Atomic<Int>(0)
        let other = context.makeWork { runs.wrappingAdd(100, ordering: .relaxed) }
        let work = context.makeWork {
            runs.wrappingAdd(1, ordering: .relaxed)
            other.schedule()
            context.stop()  // its own "thread": only marks it stopped
            #expect(context.sync(timeout: .seconds(1)))
        }
        work.schedule()
        #expect(context.sync(timeout: .seconds(1)))
        #expect(runs.load(ordering: .relaxed) == 1)
        #expect(context.isStopped)
        work.schedule()
        #expect(context.sync(timeout: .seconds(1)))
        context.stop()
        #expect(runs.load(ordering: .relaxed) == 1)
    }

    @Test("stop from outside, with work queued, runs none of it")
    func stopOutside() throws {
        let context = ExecutionContext(name: "pvh-caller-out", mode: .caller)
        let runs = Atomic<Int>(0)
        let work = context.makeWork { runs.wrappingAdd(1, ordering: .relaxed) }
        work.schedule()
        context.stop()
        context.stop()  // idempotent
        #expect(context.sync(timeout: .seconds(1)))
        #expect(runs.load(ordering: .relaxed) == 0)
    }

    /// A doorbell whose own event is a flag `poll()` reports.
    final class FlagDoorbell: ExecutionContextDoorbell {
        let event = Atomic<Bool>(false)
        func wait() -> Bool { event.exchange(false, ordering: .acquiringAndReleasing) }
        func ring() {}
        func poll() -> Bool { event.exchange(false, ordering: .acquiringAndReleasing) }
    }

    @Test("a doorbell event that poll() reports runs the item named for it in the sync")
    func doorbellEvent() throws {
        let doorbell = FlagDoorbell()
        let context = ExecutionContext(name: "pvh-caller-bell", doorbell: doorbell, mode: .caller)
        defer { context.stop() }
        let runs = Atomic<Int>(0)
        let pump = context.makeWork { runs.wrappingAdd(1, ordering: .relaxed) }
        doorbell.event.store(true, ordering: .releasing)
        #expect(context.sync(timeout: .seconds(1)))
        #expect(runs.load(ordering: .relaxed) == 0, "no item named yet")
        context.runOnDoorbellEvent(pump)
        doorbell.event.store(true, ordering: .releasing)
        #expect(context.sync(timeout: .seconds(1)))
        #expect(runs.load(ordering: .relaxed) == 1)
        #expect(context.sync(timeout: .seconds(1)))
        #expect(runs.load(ordering: .relaxed) == 1)
    }

    @Test("a caller-mode runtime's devices: a fault in a pump stops the device inside the sync; its other context runs nothing more")
    func runtimeFault() throws {
        let runtime = DeviceRuntime(mode: .caller)
        defer { runtime.stopAll() }
        let faults = Atomic<Int>(0)
        let device = runtime.makeDevice("caller") { _ in faults.wrappingAdd(1, ordering: .relaxed) }
        let first = device.makeContext(queue: "0"), second = device.makeContext(queue: "1")
        #expect(first.mode == .caller && second.mode == .caller)
        let secondRuns = Atomic<Int>(0)
        let later = second.makeWork { secondRuns.wrappingAdd(1, ordering: .relaxed) }
        let failing = first.makeWork {
            later.schedule()
            device.fail(DeviceFault(kind: .hostileGuest, reason: "test"))
        }
        failing.schedule()
        #expect(device.sync(timeout: .seconds(1)))
        #expect(device.isDisabled)
        #expect(faults.load(ordering: .relaxed) == 1)
        #expect(secondRuns.load(ordering: .relaxed) == 0)
        #expect(device.threadCount == 0)
    }
}
