import Dispatch
import Locking
import Testing

/// `Lock` under contention. In the normal build these check the lock's
/// exclusion; under `scripts/sanitize.sh thread` they are the regression
/// test for its ThreadSanitizer annotations: with a bare
/// Synchronization.Mutex, TSan reports the guarded plain field below as a
/// race once a hand-over goes through the futex (docs/ARCHITECTURE.md,
/// Sanitizers), and the run fails.
@Suite("Lock")
struct LockTests {
    /// State guarded by convention: only touched inside `lock.withLock`.
    final class Guarded: @unchecked Sendable {
        var count = 0
        var order: [Int] = []
    }

    static let threads = 4
    static let rounds = 20_000

    @Test("increments from several threads under the lock are all kept")
    func contendedCounter() {
        let lock = Lock(0)
        DispatchQueue.concurrentPerform(iterations: Self.threads) { _ in
            for _ in 0..<Self.rounds { lock.withLock { $0 += 1 } }
        }
        #expect(lock.withLock { $0 } == Self.threads * Self.rounds)
    }

    @Test("state outside the lock's value, touched only under it, is ordered by it")
    func guardedOutsideState() {
        let lock = Lock(())
        let guarded = Guarded()
        DispatchQueue.concurrentPerform(iterations: Self.threads) { thread in
            for _ in 0..<Self.rounds {
                lock.withLock { _ in
                    guarded.count += 1
                    if guarded.order.last != thread { guarded.order.append(thread) }
                }
            }
        }
        lock.withLock { _ in
            #expect(guarded.count == Self.threads * Self.rounds)
            // Every thread ran its rounds (each appears at least once).
            #expect(Set(guarded.order) == Set(0..<Self.threads))
        }
    }

    struct Failure: Error {}

    @Test("a body that throws releases the lock; another thread takes it")
    func throwingBodyReleases() {
        let lock = Lock(1)
        #expect(throws: Failure.self) {
            try lock.withLock { (value: inout Int) throws(Failure) in
                value = 2
                throw Failure()
            }
        }
        let taken = DispatchSemaphore(value: 0)
        let seen = Lock(0)
        DispatchQueue.global().async {
            lock.withLock { value in seen.withLock { $0 = value } }
            taken.signal()
        }
        #expect(taken.wait(timeout: .now() + 30) == .success)
        #expect(seen.withLock { $0 } == 2)
    }
}
