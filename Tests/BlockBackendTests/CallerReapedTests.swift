import BlockBackend
import BlockFrontend
import DeviceRuntime
import Foundation
import GuestMemory
import HostIO
import Testing
import XenABI

/// The queue with a caller-reaped io_uring engine (what the VMM runs): the
/// queue's context sleeps on the ring's completion eventfd and reaps in its
/// pump, with no reaper thread. The waits are the frontend's, on its port,
/// each bounded; nothing sleeps.
@Suite("Block I/O, io_uring reaped by the queue")
struct CallerReapedTests {
    /// A factory making caller-reaped io_uring engines on the scratch file.
    static func engine(_ file: ScratchDisk) -> BlockEngineFactory { engine(modes[0])(file) }

    /// The same, handing the kernel its SQEs as `mode` says.
    static func engine(_ mode: Mode) -> (ScratchDisk) -> BlockEngineFactory {
        { file in
            let path = file.url.path
            return { _, done in
                let backing = try BlockBackingFile.open(path: path, writable: true, direct: false)
                return try backing.makeEngine(.ioUring, reaping: .caller, submission: mode.submission, taskRun: mode.taskRun, onComplete: done)
            }
        }
    }

    /// How the engine hands its SQEs to the kernel and when the queue's
    /// thread runs the task_work that posts completions.
    struct Mode: Sendable, CustomTestStringConvertible {
        var submission: IOUringSubmission
        var taskRun: IOUringTaskRun
        /// `BlockDeviceConfiguration.requestsPerRound`.
        var requestsPerRound: Int?
        var testDescription: String { "\(submission), task_work \(taskRun), per round \(requestsPerRound.map(String.init) ?? "all")" }
    }

    /// The modes the tests run under: the engine's default, the VMM's (two
    /// SQEs per io_uring_enter), and that with cooperative and with deferred
    /// task_work (the bench's `--taskrun`; the queue's one thread both
    /// submits and reaps, as a deferred ring requires), and the VMM's with
    /// pump rounds of at most 2 requests (`--per-round 2`: 48 or 25
    /// requests on the ring take many rounds).
    static let modes: [Mode] = [Mode(submission: .batch, taskRun: .signal), Mode(submission: .unplugged, taskRun: .signal),
                                Mode(submission: .unplugged, taskRun: .cooperative), Mode(submission: .unplugged, taskRun: .deferred),
                                Mode(submission: .unplugged, taskRun: .signal, requestsPerRound: 2)]

    /// Cancels the test where io_uring cannot be set up (a kernel or a
    /// seccomp profile without it).
    static func requireIOUring() throws {
        let file = try ScratchDisk(bytes: 4096)
        let backing = try BlockBackingFile.open(path: file.url.path, writable: false, direct: false)
        do {
            try backing.makeEngine(.ioUring, reaping: .caller) { _ in }.shutdown()
        } catch {
            try Test.cancel("io_uring unavailable on this host: \(error)")
        }
    }

    /// Responses until `count` came (each wait bounded by 30 s).
    static func responses(_ front: BlkfrontRing<BlkifX86_64>, count: Int) throws -> [BlkifWireResponse] {
        var got: [BlkifWireResponse] = []
        while got.count < count { got += try front.waitForResponses(timeout: .seconds(30)) }
        return got
    }

    /// Reads pages 0..<count (8 sectors each, ids 100...) in one go: every
    /// response okay, and page i holds the pattern of `seed + i`.
    static func readBack(_ guest: Guest, _ disk: Disk<BlkifX86_64>, count: Int, seed: UInt64) throws {
        var reads: [BlkifWireRequest] = []
        var frames: [GuestFrameNumber] = []
        for i in 0..<count {
            let (r, f) = try IOTests().pageRead(guest, id: UInt64(100 + i), sector: UInt64(i) * 8)
            reads.append(r)
            frames.append(f)
        }
        #expect(try disk.front.submit(reads))
        let r = try responses(disk.front, count: count)
        #expect(r.count == count && Set(r.map(\.id)) == Set((0..<count).map { UInt64(100 + $0) }) && r.allSatisfy { $0.status == .okay })
        for (i, f) in frames.enumerated() { #expect(try guest.page(f) == Pattern.bytes(seed + UInt64(i))) }
    }

    @Test("48 writes in one go, then 48 reads: every request answered once, the data round-trips, one thread for the queue",
          arguments: modes)
    func roundTrip(mode: Mode) throws {
        try Self.requireIOUring()
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, sectors: 1024, order: 1, engine: Self.engine(mode), requestsPerRound: mode.requestsPerRound)
        #expect(disk.backend.runtimeDevice?.threadCount == 1)
        var writes: [BlkifWireRequest] = []
        for i in 0..<48 { writes.append(try IOTests().pageWrite(guest, id: UInt64(i), sector: UInt64(i) * 8, seed: UInt64(500 + i))) }
        #expect(try disk.front.submit(writes))
        let w = try Self.responses(disk.front, count: 48)
        #expect(w.count == 48 && Set(w.map(\.id)) == Set(0..<48) && w.allSatisfy { $0.status == .okay })
        try Self.readBack(guest, disk, count: 48, seed: 500)
        #expect(disk.backend.metrics.requestsInFlight.load(ordering: .relaxed) == 0)
        #expect(guest.grants.holdCount == disk.front.refs.count, "only the ring pages stay mapped")
    }

    @Test("a host I/O that fails among ones that succeed (reads past a backing file cut short): BLKIF_RSP_ERROR for those, okay for the rest; a flush after them is okay",
          arguments: modes)
    func failureAmongSuccesses(mode: Mode) throws {
        try Self.requireIOUring()
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, sectors: 256, engine: Self.engine(mode), requestsPerRound: mode.requestsPerRound)
        // The disk still says 256 sectors; the file now ends at 64 KiB.
        try disk.file.handle.truncate(atOffset: 64 << 10)
        var batch: [BlkifWireRequest] = []
        for i in 0..<24 { batch.append(try IOTests().pageRead(guest, id: UInt64(i), sector: UInt64(i) * 8).0) }
        #expect(try disk.front.submit(batch))
        let got = try Self.responses(disk.front, count: 24)
        #expect(got.count == 24 && Set(got.map(\.id)) == Set(0..<24))
        for r in got { #expect(r.status == (r.id < 16 ? .okay : .error), "request \(r.id)") }
        #expect(disk.backend.metrics.hostErrors.load(ordering: .relaxed) == 8)
        #expect(try disk.front.submit([Blkfront.flush(id: 99)]))
        #expect(try Self.responses(disk.front, count: 1) == [BlkifWireResponse(id: 99, operation: 3, status: .okay)])
    }

    @Test("24 writes and a flush behind them in one go, twice: the flush is answered after every write before it, then the data reads back",
          arguments: modes)
    func flushAfterWrites(mode: Mode) throws {
        try Self.requireIOUring()
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, sectors: 1024, order: 1, engine: Self.engine(mode), requestsPerRound: mode.requestsPerRound)
        for wave in 0..<2 {
            let base = UInt64(wave * 24)
            var batch: [BlkifWireRequest] = []
            for i in base..<base + 24 { batch.append(try IOTests().pageWrite(guest, id: i, sector: i * 8, seed: 700 + i)) }
            batch.append(Blkfront.flush(id: 1000 + base))
            #expect(try disk.front.submit(batch))
            let got = try Self.responses(disk.front, count: 25)
            #expect(got.allSatisfy { $0.status == .okay })
            // The ring's order is the order of answering: the flush last.
            #expect(got.map(\.id).last == 1000 + base, "wave \(wave): \(got.map(\.id))")
            #expect(Set(got.map(\.id)) == Set(Array(base..<base + 24) + [1000 + base]))
        }
        try Self.readBack(guest, disk, count: 48, seed: 700)
        #expect(disk.backend.metrics.flushRequests.load(ordering: .relaxed) == 2)
    }

    @Test("destroying the backend with 32 reads in flight returns, answers or abandons each, and leaves no page held and no thread running")
    func destroyInFlight() throws {
        try Self.requireIOUring()
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, sectors: 1024, order: 1, engine: Self.engine)
        var batch: [BlkifWireRequest] = []
        for i in 0..<32 { batch.append(try IOTests().pageRead(guest, id: UInt64(i), sector: UInt64(i) * 8).0) }
        #expect(try disk.front.submit(batch))
        disk.backend.destroy()
        #expect(guest.grants.holdCount == 0)
        #expect(guest.runtime.threadCount == 0)
        let answered = try disk.front.responses()
        #expect(Set(answered.map(\.id)).count == answered.count, "none answered twice")
        #expect(answered.allSatisfy { $0.status == .okay })
    }

    @Test("polling on both sides: 20 writes each followed by a flush, one at a time: all okay, the data reads back; the frontend never waits on its port, the queue's context sleeps at most once")
    func pollingBothSides() throws {
        try Self.requireIOUring()
        // Budgets far above any wait here, so that what polling finds does
        // not depend on the host's speed: the counters are exact.
        let guest = try Guest(polling: ExecutionContextPolling(maximum: .seconds(60)))
        let disk = try Disk<BlkifX86_64>(guest: guest, sectors: 1024, engine: Self.engine)
        let device = try #require(disk.backend.runtimeDevice)
        let before = device.pollingStatistics
        let waitsBefore = disk.front.portWaits
        for i in 0..<20 {
            #expect(try disk.front.submit([try IOTests().pageWrite(guest, id: UInt64(i), sector: UInt64(i) * 8, seed: UInt64(900 + i))]))
            let w = try disk.front.waitForResponses(timeout: .seconds(30), polling: .seconds(30))
            #expect(w.map(\.id) == [UInt64(i)] && w.allSatisfy { $0.status == .okay })
            #expect(try disk.front.submit([Blkfront.flush(id: 1000 + UInt64(i))]))
            let f = try disk.front.waitForResponses(timeout: .seconds(30), polling: .seconds(30))
            #expect(f.map(\.id) == [1000 + UInt64(i)] && f.allSatisfy { $0.status == .okay })
        }
        let after = device.pollingStatistics
        #expect(disk.front.portWaits == waitsBefore)
        #expect(disk.front.pollHits >= 1)
        #expect(after.sleeps - before.sleeps <= 1)
        #expect(after.hits > before.hits)
        try Self.readBack(guest, disk, count: 20, seed: 900)
    }
}
