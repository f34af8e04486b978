import Dispatch
import Foundation
import Locking
import Testing

@Suite("CallbackSlot")
struct CallbackSlotTests {
    @Test("empty until set; calls the callback set last with its argument; removed, calls nothing")
    func setReplaceRemove() {
        let slot = CallbackSlot<Int>()
        let seen = Lock<[String]>([])
        #expect(!slot.isSet)
        #expect(!slot(1), "nothing to call")
        slot.set { n in seen.withLock { $0.append("first \(n)") } }
        #expect(slot.isSet)
        #expect(slot(2))
        slot.set { n in seen.withLock { $0.append("second \(n)") } }
        #expect(slot(3))
        slot.set(nil)
        #expect(!slot(4))
        #expect(seen.withLock { $0 } == ["first 2", "second 3"])

        let void = CallbackSlot<Void> { seen.withLock { $0.append("void") } }
        #expect(void())
        #expect(seen.withLock { $0.last } == "void")
    }

    /// The reason the type exists: a closure read from a `Lock` of the
    /// closure came back two thunks deeper each time (docs/ARCHITECTURE.md,
    /// Sanitizers). Through the slot, the stack under the callback is as
    /// deep on the 20,000th call as on the first.
    @Test("the stack under the callback does not grow with the number of calls or sets")
    func flatOverManyCalls() {
        let depths = Lock<[Int]>([])
        let slot = CallbackSlot<Void>()
        let record: @Sendable () -> Void = { depths.withLock { $0.append(Thread.callStackReturnAddresses.count) } }
        slot.set(record)
        for round in 0..<20_000 {
            slot()
            if round % 1000 == 999 { slot.set(record) }
        }
        let all = depths.withLock { $0 }
        #expect(all.count == 20_000)
        #expect(Set(all).count == 1, "depths seen: \(Set(all).sorted())")
    }

    @Test("set and called from several threads at once: every call runs a complete callback")
    func concurrent() {
        let slot = CallbackSlot<Int>()
        let calls = Lock(0)
        slot.set { _ in calls.withLock { $0 += 1 } }
        DispatchQueue.concurrentPerform(iterations: 4) { thread in
            for i in 0..<5_000 {
                if thread == 0, i % 10 == 0 { slot.set { _ in calls.withLock { $0 += 1 } } }
                #expect(slot(i))
            }
        }
        #expect(calls.withLock { $0 } == 20_000)
    }
}
