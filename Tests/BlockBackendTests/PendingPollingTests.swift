import BlockBackend
import BlockFrontend
import DeviceRuntime
import Dispatch
import HostIO
import Locking
import Testing
import XenABI

/// A block queue's context polls on the longer budget
/// (`ExecutionContextPolling.pendingMaximumNanoseconds`) only while a read
/// is in the disk: the engine here completes nothing until the test says
/// so, and tells when the context goes to sleep on it, so what the context
/// did in between is exact. Every wait is bounded; nothing sleeps.
@Suite("Block queue polling while a read is in the disk")
struct PendingPollingTests {
    /// A caller-reaped engine that holds every request until `release`,
    /// then runs it on a synchronous engine (real data) and posts its
    /// completion as io_uring would: ready to `reap`, ending the wait.
    /// Reads complete from the device alone; writes, flushes and discards
    /// do not (`completesWithoutHostThread`), as with the io_uring engine.
    final class HeldCallerReaped: CallerReapedBlockIOEngine {
        private struct State {
            var held: [BlockIORequest] = []
            var ready: [BlockIOCompletion] = []
            var rung = false
            /// Set by the test: the next `hasCompletions` signals `looked`.
            var armed = false
        }
        private let state = Lock(State())
        private let event = DispatchSemaphore(value: 0)
        private let inner: SynchronousEngine
        private let onComplete: @Sendable ([BlockIOCompletion]) -> Void
        /// One signal per `waitForCompletions` call: the held count then.
        let sleeps = Lock<[Int]>([])
        let slept = DispatchSemaphore(value: 0)
        let looked = DispatchSemaphore(value: 0)

        /// What the synchronous engine completed inside `submit`.
        final class Done: Sendable {
            let completions = Lock<[BlockIOCompletion]>([])
        }
        private let done = Done()

        init(fd: Int32, onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) {
            self.onComplete = onComplete
            let done = done
            inner = SynchronousEngine(fileDescriptor: fd) { completions in done.completions.withLock { $0 += completions } }
        }

        func submit(_ requests: [BlockIORequest]) { state.withLock { $0.held += requests } }

        /// Performs every held request and posts the completions.
        func release() {
            let now = state.withLock { s in
                defer { s.held = [] }
                return s.held
            }
            inner.submit(now)
            let completed = done.completions.withLock { r in
                defer { r = [] }
                return r
            }
            state.withLock { $0.ready += completed }
            event.signal()
        }

        var heldCount: Int { state.withLock { $0.held.count } }
        func arm() { state.withLock { $0.armed = true } }

        func shutdown() {
            release()
            onComplete(reap())
            inner.shutdown()
        }
        func reap() -> [BlockIOCompletion] {
            state.withLock { s in
                defer { s.ready = [] }
                return s.ready
            }
        }
        func waitForCompletions() -> Bool {
            let held = heldCount
            sleeps.withLock { $0.append(held) }
            slept.signal()
            while true {
                let (ready, rung) = state.withLock { s in
                    defer { s.rung = false }
                    return (!s.ready.isEmpty, s.rung)
                }
                if ready { return true }
                if rung { return false }
                event.wait()
            }
        }
        func wake() {
            state.withLock { $0.rung = true }
            event.signal()
        }
        func hasCompletions() -> Bool {
            let (ready, armed) = state.withLock { s in
                defer { s.armed = false }
                return (!s.ready.isEmpty, s.armed)
            }
            if armed { looked.signal() }
            return ready
        }
        func completesWithoutHostThread(_ operation: BlockIOOperation) -> Bool {
            if case .read = operation { true } else { false }
        }
        /// What `performInline` ran, in order ("write", "flush", ...).
        let inlined = Lock<[String]>([])
        func performInline(_ operation: BlockIOOperation) -> Result<Int, HostIOError> {
            let name = switch operation {
            case .read: "read"
            case .write: "write"
            case .flush: "flush"
            case .discard: "discard"
            }
            inlined.withLock { $0.append(name) }
            inner.submit([BlockIORequest(tag: 0, operation: operation)])
            let result = done.completions.withLock { r in
                defer { r = [] }
                return r
            }
            return result.first?.result ?? .failure(.shutDown)
        }
    }

    /// A 1024-sector disk on a `HeldCallerReaped` engine.
    static func heldDisk(_ guest: Guest, inline: Bool) throws -> (Disk<BlkifX86_64>, HeldCallerReaped) {
        let engine = Lock<HeldCallerReaped?>(nil)
        let disk = try Disk<BlkifX86_64>(guest: guest, sectors: 1024, engine: { file in
            let fd = file.fd
            return { _, done in
                let e = HeldCallerReaped(fd: fd, onComplete: done)
                engine.withLock { $0 = e }
                return e
            }
        }, inline: inline)
        return (disk, try #require(engine.withLock { $0 }))
    }

    static func wait(_ s: DispatchSemaphore) -> Bool { s.wait(timeout: .now() + 30) == .success }

    /// Waits until the queue's context goes to sleep with `held` requests in
    /// the engine, in a sleep after the first `after` (those before the
    /// request was sent).
    static func waitForSleep(_ engine: HeldCallerReaped, after: Int, held: Int) -> Bool {
        while wait(engine.slept) {
            if engine.sleeps.withLock({ $0.dropFirst(after).contains(held) }) { return true }
        }
        return false
    }

    static func sleepCount(_ engine: HeldCallerReaped) -> Int { engine.sleeps.withLock { $0.count } }

    @Test("reads: the first idle period with the read in the disk is counted pending and sleeps (no budget yet); the next one polls and finds the completion with no sleep; writes and flushes never count, and with no plain budget they sleep at once")
    func pendingOnlyForReads() throws {
        // No plain polling at all; a pending maximum far above any wait here,
        // so that what polling finds does not depend on the host's speed.
        let guest = try Guest(polling: ExecutionContextPolling(maximum: .zero, whilePending: .seconds(60)))
        // Nothing runs inline: a lone write or flush would not be submitted.
        let (disk, held) = try Self.heldDisk(guest, inline: false)
        let device = try #require(disk.backend.runtimeDevice)
        let start = device.pollingStatistics
        #expect(start.pendingIdles == 0)

        // A write: not pending; no plain budget, so the context sleeps at once.
        var before = Self.sleepCount(held)
        #expect(try disk.front.submit([try IOTests().pageWrite(guest, id: 1, sector: 0, seed: 77)]))
        #expect(Self.waitForSleep(held, after: before, held: 1))
        #expect(device.pollingStatistics.pendingIdles == 0)
        #expect(device.pollingStatistics.polls == start.polls)
        held.release()
        #expect(try disk.front.waitForResponses(timeout: .seconds(30)).map(\.status) == [.okay])

        // A flush: the same.
        before = Self.sleepCount(held)
        #expect(try disk.front.submit([Blkfront.flush(id: 2)]))
        #expect(Self.waitForSleep(held, after: before, held: 1))
        #expect(device.pollingStatistics.pendingIdles == 0)
        held.release()
        #expect(try disk.front.waitForResponses(timeout: .seconds(30)).map(\.status) == [.okay])

        // The first read: pending, but the pending budget starts at 0: it sleeps.
        let (read, frame) = try IOTests().pageRead(guest, id: 3, sector: 0)
        before = Self.sleepCount(held)
        #expect(try disk.front.submit([read]))
        #expect(Self.waitForSleep(held, after: before, held: 1))
        #expect(device.pollingStatistics.pendingIdles == 1)
        held.release()
        #expect(try disk.front.waitForResponses(timeout: .seconds(30)).map(\.status) == [.okay])
        #expect(try guest.page(frame) == Pattern.bytes(77))
        let afterFirst = device.pollingStatistics

        // The second read: the short sleep grew the pending budget (60 s / 16),
        // so the context polls; the completion is found without a sleep.
        held.arm()
        let (second, secondFrame) = try IOTests().pageRead(guest, id: 4, sector: 0)
        #expect(try disk.front.submit([second]))
        #expect(Self.wait(held.looked))
        held.release()
        #expect(try disk.front.waitForResponses(timeout: .seconds(30)).map(\.status) == [.okay])
        #expect(try guest.page(secondFrame) == Pattern.bytes(77))
        // The response was sent from the pump that polling started; the
        // context's next idle period (nothing in the disk) is a plain one,
        // which does not poll.
        #expect(try disk.backend.sync(timeout: .seconds(30)))
        let afterSecond = device.pollingStatistics
        #expect(afterSecond.pendingIdles == 2)
        #expect(afterSecond.hits == afterFirst.hits + 1)
        #expect(afterSecond.misses == afterFirst.misses)
    }
}
