import Foundation
import GuestMemory
import HostIO
import Synchronization
import Testing

/// The io_uring engine with its completions reaped by the caller (the block
/// backend's queue context), not by a reaper thread.
@Suite("Caller-reaped io_uring")
struct CallerReapedEngineTests {
    /// A caller-reaped io_uring engine on `backing`, or the test cancelled
    /// saying why io_uring is unavailable.
    static func make(_ backing: ScratchBacking, depth: Int, log: CompletionLog,
                     taskRun: IOUringTaskRun = .signal) throws -> any CallerReapedBlockIOEngine {
        let engine: any BlockIOEngine
        do {
            engine = try backing.file.makeEngine(.ioUring, depth: depth, reaping: .caller, taskRun: taskRun, onComplete: log.add)
        } catch {
            try Test.cancel("io_uring unavailable on this host: \(error)")
        }
        return try #require(engine as? any CallerReapedBlockIOEngine, "makeEngine(reaping: .caller) made no caller-reaped engine")
    }

    /// A scratch backing of `files` pages, `pages` guest pages, and a
    /// caller-reaped engine of `depth` on the backing, logging to `log`.
    struct Fixture {
        let backing: ScratchBacking
        let guest: GuestPages
        let log = CompletionLog()
        let engine: any CallerReapedBlockIOEngine
        init(filePages: Int, guestPages: Int, depth: Int, taskRun: IOUringTaskRun = .signal) throws {
            backing = try ScratchBacking(size: filePages * 4096)
            guest = try GuestPages(pages: guestPages)
            engine = try CallerReapedEngineTests.make(backing, depth: depth, log: log, taskRun: taskRun)
        }
    }

    /// Waits and reaps on this thread until `count` completions came (or
    /// 30 s passed: a failure, not a hang); the completions in reap order.
    static func reapAll(_ engine: any CallerReapedBlockIOEngine, count: Int) -> [BlockIOCompletion] {
        var done: [BlockIOCompletion] = []
        let deadline = ContinuousClock.now + .seconds(30)
        let watchdog = Atomic<Bool>(false)
        // The wait has no timeout of its own: a watchdog wakes it at the deadline.
        let timer = DispatchSource.makeTimerSource()
        timer.schedule(deadline: .now() + 30)
        timer.setEventHandler {
            watchdog.store(true, ordering: .relaxed)
            engine.wake()
        }
        timer.resume()
        defer { timer.cancel() }
        while done.count < count, ContinuousClock.now < deadline, !watchdog.load(ordering: .relaxed) {
            done += engine.reap()
            if done.count < count { _ = engine.waitForCompletions() }
        }
        return done
    }

    /// Every task_work mode; the test's thread submits and reaps, as a
    /// deferred ring requires.
    static let taskRuns: [IOUringTaskRun] = [.signal, .cooperative, .deferred]

    @Test("writes then reads at a depth of 8 with 64 submitted: every completion comes from reap on the caller's thread, once each; the handler hears nothing; the data round-trips",
          arguments: taskRuns)
    func reapedOnCaller(taskRun: IOUringTaskRun) throws {
        let f = try Fixture(filePages: 64, guestPages: 128, depth: 8, taskRun: taskRun)
        let (backing, guest, log, engine) = (f.backing, f.guest, f.log, f.engine)
        defer { engine.shutdown() }
        var rng = SplitMix64(seed: 0xca11_e4)
        let data = rng.bytes(64 * 4096)
        try guest.memory.write(data, at: guest.address(0))
        engine.submit(try (0..<64).map { i in
            BlockIORequest(tag: UInt64(i), operation: .write(offset: UInt64(i * 4096), from: [try guest.range(i)]))
        })
        let writes = Self.reapAll(engine, count: 64)
        #expect(writes.count == 64)
        #expect(Set(writes.map(\.tag)) == Set(0..<64))
        #expect(writes.allSatisfy { $0.result == .success(4096) })
        engine.submit(try (0..<64).map { i in
            BlockIORequest(tag: UInt64(100 + i), operation: .read(offset: UInt64(i * 4096), into: [try guest.range(64 + i)]))
        })
        let reads = Self.reapAll(engine, count: 64)
        #expect(Set(reads.map(\.tag)) == Set(100..<164))
        #expect(reads.allSatisfy { $0.result == .success(4096) })
        #expect(try guest.memory.read(at: guest.address(64), count: 64 * 4096) == data)
        #expect(try backing.bytes() == data)
        #expect(log.all.isEmpty, "a caller-reaped engine handed completions to its handler")
    }

    @Test("a failing request among succeeding ones: each gets its own result (EINVAL past off_t, short at the end of the file, the rest whole)",
          arguments: taskRuns)
    func failureAmongSuccesses(taskRun: IOUringTaskRun) throws {
        let f = try Fixture(filePages: 16, guestPages: 32, depth: 16, taskRun: taskRun)
        let (guest, engine) = (f.guest, f.engine)
        defer { engine.shutdown() }
        var requests = try (0..<8).map { i in
            BlockIORequest(tag: UInt64(i), operation: .read(offset: UInt64(i * 4096), into: [try guest.range(i)]))
        }
        requests.insert(BlockIORequest(tag: 100, operation: .read(offset: UInt64(Int64.max) - 100, into: [try guest.range(20)])), at: 3)
        requests.insert(BlockIORequest(tag: 101, operation: .read(offset: 16 * 4096, into: [try guest.range(21)])), at: 6)
        engine.submit(requests)
        let done = Self.reapAll(engine, count: 10)
        let byTag = Dictionary(grouping: done, by: \.tag).mapValues { $0.map(\.result) }
        #expect(done.count == 10)
        #expect(byTag[100] == [.failure(.system(errno: EINVAL))])
        #expect(byTag[101] == [.failure(.short(transferred: 0, expected: 4096))])
        for i in 0..<8 { #expect(byTag[UInt64(i)] == [.success(4096)]) }
    }

    @Test("wake ends a wait with nothing in flight (false: no completion); a completion ends one by itself (true)", arguments: taskRuns)
    func waitAndWake(taskRun: IOUringTaskRun) throws {
        let f = try Fixture(filePages: 1, guestPages: 1, depth: 4, taskRun: taskRun)
        let (guest, engine) = (f.guest, f.engine)
        defer { engine.shutdown() }
        engine.wake()
        #expect(engine.waitForCompletions() == false)
        engine.submit([BlockIORequest(tag: 7, operation: .read(offset: 0, into: [try guest.range(0)]))])
        let done = Self.reapAll(engine, count: 1)
        #expect(done.map(\.tag) == [7])
        #expect(engine.reap().isEmpty)
    }

    @Test("shutdown with 128 requests in flight at a depth of 8, none reaped: it reaps them all to the handler, later submits are shutDown, a wait afterwards ends on wake (a deferred ring's shutdown on its issuer's thread)",
          arguments: taskRuns)
    func shutdownInFlight(taskRun: IOUringTaskRun) throws {
        let f = try Fixture(filePages: 128, guestPages: 128, depth: 8, taskRun: taskRun)
        let (guest, log, engine) = (f.guest, f.log, f.engine)
        try guest.memory.fill(at: guest.address(0), count: 128 * 4096, with: 0xa5)
        engine.submit(try (0..<128).map { i in
            BlockIORequest(tag: UInt64(i), operation: i % 3 == 0 ? .flush : .write(offset: UInt64(i * 4096), from: [try guest.range(i)]))
        })
        engine.shutdown()
        let atShutdown = log.all
        #expect(atShutdown.count == 128)
        #expect(Set(atShutdown.map(\.tag)) == Set(0..<128))
        #expect(atShutdown.allSatisfy { (try? $0.result.get()) != nil })
        engine.submit([BlockIORequest(tag: 1000, operation: .flush)])
        #expect(log.result(1000) == .failure(.shutDown))
        #expect(engine.reap().isEmpty)
        engine.wake()
        #expect(engine.waitForCompletions() == false)
        engine.shutdown()  // a second shutdown returns at once
        #expect(log.all.count == 129)
    }

    @Test("performInline runs a write, a flush and a read on the caller's thread with their results (a short read at the end of the file included), hands nothing to the handler or reap, and is shutDown after shutdown")
    func performInline() throws {
        let f = try Fixture(filePages: 4, guestPages: 8, depth: 4)
        let (backing, guest, log, engine) = (f.backing, f.guest, f.log, f.engine)
        var rng = SplitMix64(seed: 0x1_11e)
        let data = rng.bytes(2 * 4096)
        try guest.memory.write(data, at: guest.address(0))
        #expect(engine.performInline(.write(offset: 4096, from: [try guest.range(0), try guest.range(1)])) == .success(2 * 4096))
        #expect(engine.performInline(.flush) == .success(0))
        #expect(engine.performInline(.read(offset: 4096, into: [try guest.range(4), try guest.range(5)])) == .success(2 * 4096))
        #expect(try guest.memory.read(at: guest.address(4), count: 2 * 4096) == data)
        #expect(engine.performInline(.read(offset: 4 * 4096, into: [try guest.range(6)])) == .failure(.short(transferred: 0, expected: 4096)))
        #expect(Array(try backing.bytes()[4096..<3 * 4096]) == data)
        #expect(engine.reap().isEmpty)
        #expect(!engine.hasCompletions())
        engine.shutdown()
        #expect(engine.performInline(.flush) == .failure(.shutDown))
        #expect(log.all.isEmpty, "inline operations went to the handler")
    }
}

@Suite("io_uring task_work modes")
struct IOUringTaskRunTests {
    @Test("cooperative and deferred task_work are kept by a caller-reaped engine; an engine with a reaper thread uses signal (its reaper is not the submitter)")
    func modeKeptOnlyWhenCallerReaped() throws {
        let backing = try ScratchBacking(size: 4096)
        for taskRun in [IOUringTaskRun.signal, .cooperative, .deferred] {
            let reaped: any BlockIOEngine, threaded: any BlockIOEngine
            do {
                reaped = try backing.file.makeEngine(.ioUring, reaping: .caller, taskRun: taskRun) { _ in }
                threaded = try backing.file.makeEngine(.ioUring, reaping: .engineThread, taskRun: taskRun) { _ in }
            } catch {
                try Test.cancel("io_uring unavailable on this host: \(error)")
            }
            defer {
                reaped.shutdown()
                threaded.shutdown()
            }
            #expect((reaped as? CallerReapedIOUring)?.engine.taskRun == taskRun)
            #expect((threaded as? IOUringEngine)?.taskRun == .signal)
        }
    }
}
