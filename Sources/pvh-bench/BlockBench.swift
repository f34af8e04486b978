import BlockBackend
import BlockFrontend
import DeviceRuntime
import Foundation
import GuestMemory
import HostIO
import XenABI
import XenBus

// `pvh-bench block`: the block backend driven in-process by a blkif
// frontend over real mmap'd guest memory (BlockFrontend; no KVM), beside
// fio on the same file with the same flags, block size, queue depth,
// offsets and duration, in one run.
//
// Both sides use O_DIRECT (pvh: `BlockBackingFile.open(direct: true)`,
// fio: `--direct=1`), so the host page cache serves neither. fio runs
// `--ioengine=io_uring`; pvh runs its io_uring engine and, on a second
// line, its thread pool. Rounds interleave pvh, fio and pvh-threads (the
// order reversed every other round, so pvh's io_uring run and fio's are
// always back to back) and the medians are printed, then each round's
// pvh/fio ratio and their median: a virtual disk shared with other
// machines drifts between runs, and a round's two runs see the same.
//
// The frontend does what Linux's xen-blkfront does: one ring of the
// smallest `ring-page-order` that holds the queue depth; a 1 MiB request
// is one BLKIF_OP_INDIRECT of 256 one-page segments listed in one indirect
// page (the backend offers feature-max-indirect-segments = 256, as
// blkfront uses it); a 4 KiB request is one direct segment. Each in-flight
// slot keeps its own pages and grants (granted once, as blkfront's
// persistent-grant-less path grants the same kind of pages every time).
// It keeps the queue depth full: each response is answered with the next
// request at once, each request published on its own as blkfront does
// (`send`), and it waits on its event channel, never sleeps.
//
// How the frontend waits for a response is printed (`--frontend-wait`).
// `poll` (the default) models a guest vCPU that stays running for a while:
// it looks at the ring's `rsp_prod` for up to 200 µs before it blocks on
// its port, what Linux's haltpoll cpuidle driver does in an idle KVM guest
// and KVM's own halt polling does for any guest (`guest_halt_poll_ns` and
// `halt_poll_ns`, both 200 µs by default;
// Documentation/virt/guest-halt-polling.rst). `block` blocks at once, a
// vCPU that halts and is woken by the event; `--frontend-poll-us N` polls
// N µs instead. fio, the reference, sleeps in io_uring_enter and is woken
// on the CPU that took the disk's interrupt, where its completion's
// task_work ran: no second thread and no cross-CPU wake-up. Whatever the
// wait, the same requests go out and every response's id and status are
// checked. Per round the bench prints the frontend's view (`roundTrips`):
// on this machine's virtual disk a queue of 4 KiB reads goes round in
// lock-step (the disk completes a whole ring's worth at once), so past
// 200 µs of device latency each round costs one cross-CPU wake-up of the
// frontend (README, Benchmarks, Block I/O). `--poll-us` is the backend's
// device-runtime polling maximum (`ExecutionContextPolling`; 0: off),
// `--pending-poll-us` the one while a queue's host I/O is in flight.
//
// "rand-write-4K+flush" is, on both sides, each 4 KiB random write
// followed by a flush once it completed, one at a time (queue depth 1):
// fio `--fdatasync=1`, pvh an empty BLKIF_OP_FLUSH_DISKCACHE, which the
// backend turns into fdatasync, what a file system's fsync sends through
// blkfront. Its IOPS count writes.

enum BlockBench {
    struct Options {
        var seconds = 5
        var file = "/var/tmp/pvh-bench-block.img"
        var rounds = 3
        /// Cases to run (all when empty).
        var cases: [String] = []
        /// Every case's queue depth instead of its own.
        var depth: Int?
        /// The scratch file's size (created once, filled).
        var bytes: UInt64 = 1 << 30
        /// Who reaps pvh's io_uring completions: the queue's context (what
        /// the VMM runs), or a reaper thread (the older design, to compare).
        var reaping: BlockIOCompletionReaping = .caller
        /// The fake frontend polls its response ring this long before
        /// blocking (zero: blocks at once).
        var frontendPolling: Duration = .microseconds(200)
        /// The backend's device-runtime polling.
        var backendPolling: ExecutionContextPolling = .standard
        /// How pvh's io_uring hands its SQEs to the kernel.
        var submission: IOUringSubmission = .unplugged
        /// The frontend publishes each request on its own (blkfront's
        /// `blkif_queue_rq`), or all a round of responses called for at once.
        var pushEachRequest = true
        /// When pvh's io_uring posts O_DIRECT completions (caller reaping only).
        var taskRun: IOUringTaskRun = .signal
        /// The backend's `requestsPerRound` (nil: all there are).
        var requestsPerRound: Int?
        /// The backend's `runsLoneOperationsInline`.
        var inline = true
    }

    typealias UsageError = BenchUsageError

    static let usage = "usage: pvh-bench block [--seconds N] [--file PATH] [--rounds N] [--case NAME]... [--depth N] [--reaping caller|thread] [--frontend-wait poll|block] [--frontend-poll-us N] [--poll-us N] [--pending-poll-us N] [--submission unplugged|batch|group:N[:KIB]] [--frontend-push each|batch] [--taskrun signal|cooperative|deferred] [--per-round N] [--inline on|off]"

    static func parse(_ arguments: [String]) throws(UsageError) -> Options {
        var options = Options()
        var words = BenchArguments(arguments, usage: usage)
        while let argument = words.next() {
            switch argument {
            case "--seconds": options.seconds = try words.positive(argument)
            case "--rounds": options.rounds = try words.positive(argument)
            case "--depth":
                let depth = try words.positive(argument)
                guard BlkfrontRing<BlkifX86_64>.order(forDepth: depth) != nil else {
                    throw UsageError(description: "--depth: \(depth) is more than the largest ring holds")
                }
                options.depth = depth
            case "--case": options.cases.append(try words.caseName(argument, from: cases.map(\.name)))
            case "--reaping":
                switch try words.value(argument) {
                case "caller": options.reaping = .caller
                case "thread": options.reaping = .engineThread
                case let v: throw UsageError(description: "--reaping: expected caller or thread, got '\(v)'")
                }
            case "--frontend-wait":
                switch try words.value(argument) {
                case "poll": options.frontendPolling = .microseconds(200)
                case "block": options.frontendPolling = .zero
                case let v: throw UsageError(description: "--frontend-wait: expected poll or block, got '\(v)'")
                }
            case "--frontend-poll-us":
                guard let us = Int(try words.value(argument)), us >= 0, us <= 1_000_000 else {
                    throw UsageError(description: "--frontend-poll-us: expected a number of microseconds up to 1000000 (0: block at once)")
                }
                options.frontendPolling = .microseconds(us)
            case "--poll-us":
                guard let us = UInt64(try words.value(argument)) else {
                    throw UsageError(description: "--poll-us: expected a number of microseconds (0: no polling)")
                }
                options.backendPolling.maximumNanoseconds = us.multipliedReportingOverflow(by: 1000).partialValue
            case "--pending-poll-us":
                guard let us = UInt64(try words.value(argument)) else {
                    throw UsageError(description: "--pending-poll-us: expected a number of microseconds (0: no polling while host I/O is in flight)")
                }
                options.backendPolling.pendingMaximumNanoseconds = us.multipliedReportingOverflow(by: 1000).partialValue
            case "--frontend-push":
                switch try words.value(argument) {
                case "each": options.pushEachRequest = true
                case "batch": options.pushEachRequest = false
                case let v: throw UsageError(description: "--frontend-push: expected each or batch, got '\(v)'")
                }
            case "--per-round": options.requestsPerRound = try words.positive(argument)
            case "--inline":
                switch try words.value(argument) {
                case "on": options.inline = true
                case "off": options.inline = false
                case let v: throw UsageError(description: "--inline: expected on or off, got '\(v)'")
                }
            case "--taskrun":
                switch try words.value(argument) {
                case "signal": options.taskRun = .signal
                case "cooperative": options.taskRun = .cooperative
                case "deferred": options.taskRun = .deferred
                case let v: throw UsageError(description: "--taskrun: expected signal, cooperative or deferred, got '\(v)'")
                }
            case "--submission":
                let v = try words.value(argument)
                let parts = v.split(separator: ":").map(String.init)
                let numbers = parts.dropFirst().map { Int($0) ?? 0 }
                switch (parts.first, numbers.count) {
                case ("batch", 0): options.submission = .batch
                case ("unplugged", 0): options.submission = .unplugged
                case ("group", 1) where numbers[0] > 0: options.submission = .groups(of: numbers[0], below: .max)
                case ("group", 2) where numbers[0] > 0 && numbers[1] > 0: options.submission = .groups(of: numbers[0], below: numbers[1] << 10)
                default:
                    throw UsageError(description: "--submission: expected unplugged, batch or group:N[:KIB], got '\(v)'")
                }
            case "--file":
                options.file = try words.value(argument)
                guard !options.file.isEmpty else { throw UsageError(description: "--file: empty path") }
            default: throw words.unknown(argument)
            }
        }
        return options
    }

    /// Runs the benchmark; the process's exit status.
    static func main(_ arguments: [String]) -> Int32 {
        benchSubcommand("block", usage: usage, arguments, failure: 2) { try run(try parse(arguments)) }
    }

    // MARK: cases

    enum Unit: String {
        case megabytesPerSecond = "MB/s"
        case iops = "IOPS"
    }

    struct Case {
        var name: String
        var write: Bool
        var random: Bool
        var blockSize: Int
        var depth: Int
        /// Each write is followed by a flush once it completed (depth 1,
        /// which `--depth` does not change).
        var flushEachWrite = false
        var unit: Unit

        var description: String {
            let size = blockSize >= 1 << 20 ? "\(blockSize >> 20) MiB" : "\(blockSize >> 10) KiB"
            let what = "\(random ? "random" : "sequential") \(size) \(write ? "writes" : "reads")\(flushEachWrite ? ", each followed by a flush" : "")"
            return "\(what), queue depth \(depth)"
        }

        /// fio's flags for the same workload (the file and duration added by the caller).
        var fioArguments: [String] {
            var a = ["--rw=\(random ? (write ? "randwrite" : "randread") : (write ? "write" : "read"))",
                     "--bs=\(blockSize)", "--iodepth=\(depth)"]
            // Uniform offsets with repeats, as pvh draws them (fio's default
            // random map would visit each block once per pass).
            if random { a += ["--norandommap", "--randrepeat=0"] }
            if flushEachWrite { a.append("--fdatasync=1") }
            return a
        }
    }

    static let cases: [Case] = [
        Case(name: "seq-read-1M", write: false, random: false, blockSize: 1 << 20, depth: 8, unit: .megabytesPerSecond),
        Case(name: "seq-write-1M", write: true, random: false, blockSize: 1 << 20, depth: 8, unit: .megabytesPerSecond),
        Case(name: "rand-read-4K", write: false, random: true, blockSize: 4096, depth: 32, unit: .iops),
        Case(name: "rand-write-4K+flush", write: true, random: true, blockSize: 4096, depth: 1, flushEachWrite: true, unit: .iops),
    ]

    // MARK: the run

    static func run(_ options: Options) throws {
        let fio = try fioPath()
        try prepareScratchFile(options.file, bytes: options.bytes)
        let file: BlockBackingFile
        do { file = try BlockBackingFile.open(path: options.file, writable: true, direct: true) } catch {
            throw UsageError(description: "\(error)")
        }
        let version = (try? capture(fio, ["--version"]))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "fio"
        print("pvh-bench block: \(options.file) (\(file.sizeInBytes >> 20) MiB, O_DIRECT), \(options.seconds) s per run, "
              + "medians of \(options.rounds) interleaved rounds; io_uring completions reaped by "
              + "\(options.reaping == .caller ? "the queue's context" : "a reaper thread"), "
              + "submission \(options.submission), task_work \(options.taskRun), "
              + "requests per pump round \(options.requestsPerRound.map(String.init) ?? "all"), "
              + "lone writes and flushes \(options.inline ? "on the queue's thread" : "submitted"); "
              + "host: \(version) --ioengine=io_uring --direct=1")
        let backendPolls = options.backendPolling.maximumNanoseconds
        let pendingPolls = options.backendPolling.pendingMaximumNanoseconds
        let frontendMicroseconds = options.frontendPolling.components.seconds * 1_000_000 + options.frontendPolling.components.attoseconds / 1_000_000_000_000
        print("  frontend: publishes \(options.pushEachRequest ? "each request on its own, as blkfront's blkif_queue_rq" : "a round's requests at once")"
              + " (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY)")
        print("  waits: frontend \(frontendMicroseconds > 0 ? "polls its ring up to \(frontendMicroseconds) µs, then blocks on its port" : "blocks on its port")"
              + "; backend contexts \(backendPolls > 0 ? "poll up to \(backendPolls / 1000) µs (adaptive) before sleeping" : "sleep at once")"
              + ", \(pendingPolls > 0 ? "up to \(pendingPolls / 1000) µs (adaptive) while their host I/O is in flight" : "and do not poll while their host I/O is in flight")")
        let selected = cases.filter { options.cases.isEmpty || options.cases.contains($0.name) }.map { c in
            var c = c
            if let depth = options.depth, !c.flushEachWrite { c.depth = depth }
            return c
        }
        for c in selected {
            print("  \(c.name): \(c.description) (fio \(c.fioArguments.joined(separator: " ")))")
        }
        for c in selected {
            var pvh: [Double] = [], threads: [Double] = [], host: [Double] = []
            var waits: [String] = []
            var trips: [String] = []
            var device: [String: [String]] = [:]
            let disk = DiskStatistics(holding: options.file)
            /// `body` with the disk's view of it (requests it held on
            /// average, their mean latency) noted under `side`.
            func watched(_ side: String, _ body: () throws -> Void) rethrows {
                let before = disk?.sample()
                try body()
                if let before, let after = disk?.sample() { device[side, default: []].append(DiskStatistics.describe(before, after)) }
            }
            for round in 0..<options.rounds {
                // pvh's io_uring run and fio's are next to each other in
                // every round, whichever way round it goes, so each round's
                // ratio compares the two under the same disk (a shared
                // virtual disk's speed drifts from one run to the next).
                var steps: [() throws -> Void] = [
                    { try watched("pvh") {
                        let run = try PVHRun(file: file, case: c, engine: .ioUring, options)
                        pvh.append(try run.measure(seconds: options.seconds))
                        waits.append(run.wakeUps)
                        trips.append(run.roundTrips)
                      } },
                    { try watched("host") { host.append(try fioRun(fio, file: options.file, bytes: file.sizeInBytes, case: c, seconds: options.seconds)) } },
                    { try watched("pvh-threads") { threads.append(try PVHRun(file: file, case: c, engine: .threadPool, options).measure(seconds: options.seconds)) } },
                ]
                if round % 2 == 1 { steps.reverse() }
                for step in steps { try step() }
            }
            let p = median(pvh), t = median(threads), h = median(host)
            row(c, "pvh", p, h)
            row(c, "pvh-threads", t, h)
            let list = { (a: [Double]) in a.map { String(format: "%.0f", $0) }.joined(separator: " ") }
            print("  rounds: pvh \(list(pvh)) | pvh-threads \(list(threads)) | host \(list(host))")
            let paired = zip(pvh, host).map { $1 > 0 ? $0 / $1 : .nan }
            print("  each round's pvh/host (run back to back): \(paired.map { String(format: "%.2f", $0) }.joined(separator: " ")), median "
                  + String(format: "%.2f", median(paired)))
            print("  pvh io_uring, per response, each round: \(waits.joined(separator: " | "))")
            print("  pvh io_uring, the frontend's view, each round: \(trips.joined(separator: " | "))")
            if let disk {
                let sides = ["pvh", "pvh-threads", "host"].map { "\($0) \((device[$0] ?? []).joined(separator: ", "))" }
                print("  \(disk.name), requests in flight on average and their mean latency, each round: \(sides.joined(separator: " | "))")
            }
        }
    }

    static func row(_ c: Case, _ side: String, _ value: Double, _ host: Double) {
        let u = c.unit.rawValue
        print(String(format: "block %@ %@ %.1f %@ host %.1f %@ ratio %.2f", c.name, side, value, u, host, u, host > 0 ? value / host : .nan))
    }

    static func median(_ values: [Double]) -> Double { benchMedian(values) }

    // MARK: the scratch file

    /// Creates `path` with `bytes` of non-zero data (a file system would
    /// otherwise serve reads of holes without touching the disk), unless a
    /// regular file of that size is there already (an earlier run's: the
    /// write cases write into it). Anything else at `path` is refused, not
    /// overwritten.
    static func prepareScratchFile(_ path: String, bytes: UInt64) throws {
        var st = stat()
        if stat(path, &st) == 0 {
            guard st.st_mode & S_IFMT == S_IFREG, UInt64(st.st_size) == bytes else {
                throw UsageError(description: "\(path) exists and is not a \(bytes >> 20) MiB scratch file (the benchmark writes into it): remove it or give another --file")
            }
            return
        }
        guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]),
              let handle = FileHandle(forWritingAtPath: path) else {
            throw UsageError(description: "\(path): cannot create the scratch file")
        }
        defer { try? handle.close() }
        print("pvh-bench block: filling \(path) (\(bytes >> 20) MiB), once")
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        var x: UInt64 = 0x9e37_79b9_7f4a_7c15
        for i in chunk.indices {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            chunk[i] = UInt8(truncatingIfNeeded: x)
        }
        let data = Data(chunk)
        do {
            for _ in 0..<(bytes >> 20) { try handle.write(contentsOf: data) }
            try handle.synchronize()
        } catch {
            throw UsageError(description: "\(path): filling the scratch file: \(error)")
        }
    }

    // MARK: fio

    static func fioPath() throws -> String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let p = "\(dir)/fio"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw UsageError(description: "fio not found in PATH (Debian package fio; scripts/deps.txt)")
    }

    static func capture(_ tool: String, _ arguments: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = arguments
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let bytes = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            let message = String(decoding: errors, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? ""
            throw UsageError(description: "\(tool) exited \(p.terminationStatus): \(message)")
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// One fio run of `c` on `file`: MB/s (10^6 bytes) or IOPS, from its JSON.
    static func fioRun(_ fio: String, file: String, bytes: UInt64, case c: Case, seconds: Int) throws -> Double {
        let arguments = ["--name=pvh-bench", "--filename=\(file)", "--size=\(bytes)", "--direct=1", "--ioengine=io_uring",
                         "--time_based", "--runtime=\(seconds)", "--output-format=json"] + c.fioArguments
        let json = try capture(fio, arguments)
        guard let start = json.firstIndex(of: "{"),
              let top = try JSONSerialization.jsonObject(with: Data(json[start...].utf8)) as? [String: Any],
              let job = (top["jobs"] as? [[String: Any]])?.first,
              let side = job[c.write ? "write" : "read"] as? [String: Any],
              let bw = (side["bw_bytes"] as? NSNumber)?.doubleValue,
              let iops = (side["iops"] as? NSNumber)?.doubleValue else {
            throw UsageError(description: "fio: unexpected JSON output")
        }
        return c.unit == .megabytesPerSecond ? bw / 1e6 : iops
    }
}

/// One pvh run: a fresh guest, a block backend on `file` with `engine`,
/// connected through the xenbus handshake, and the frontend keeping the
/// case's queue depth in flight for the given time.
final class PVHRun {
    typealias Layout = BlkifX86_64
    let guest: FrontendGuest
    let backend: BlockBackend
    let ring: BlkfrontRing<Layout>
    let c: BlockBench.Case
    let fileBytes: UInt64
    let frontendPolling: Duration
    let pushEachRequest: Bool
    /// Per slot: the request to send for a sector (indirect or direct).
    private var slots: [(UInt64) -> BlkifWireRequest] = []

    init(file: BlockBackingFile, case c: BlockBench.Case, engine: BlockBackingFile.EngineKind, _ options: BlockBench.Options) throws {
        self.c = c
        frontendPolling = options.frontendPolling
        pushEachRequest = options.pushEachRequest
        let reaping = options.reaping, submission = options.submission, taskRun = options.taskRun
        fileBytes = file.sizeInBytes / UInt64(c.blockSize) * UInt64(c.blockSize)
        let pagesPerRequest = c.blockSize / 4096
        let indirect = pagesPerRequest > BlockBackendLimits.maximumDirectSegments
        let grantsNeeded = c.depth * (pagesPerRequest + (indirect ? 1 : 0)) + 16 + 8
        guest = try FrontendGuest(memoryBytes: 256 << 20, grantFrames: (grantsNeeded + 511) / 512, polling: options.backendPolling)
        let sectorSize = UInt32(file.logicalSectorSize)
        var configuration = BlockDeviceConfiguration(
            sectors: file.sizeInBytes / UInt64(sectorSize), sectorSize: sectorSize,
            physicalSectorSize: UInt32(file.physicalSectorSize), maximumQueues: 1,
            makeEngine: { _, done in try file.makeEngine(engine, reaping: reaping, submission: submission, taskRun: taskRun, onComplete: done) })
        configuration.requestsPerRound = options.requestsPerRound
        configuration.runsLoneOperationsInline = options.inline
        let address = XenbusDeviceAddress(type: "vbd", frontend: FrontendGuest.domain, index: 51712)
        backend = try BlockBackend(store: guest.store, address: address, configuration: configuration, memory: guest.memory,
                                   grants: guest.grants, events: guest.events, runtime: guest.runtime)
        guard let order = BlkfrontRing<Layout>.order(forDepth: c.depth) else {
            throw BlockBench.UsageError(description: "queue depth \(c.depth): no ring that large")
        }
        ring = try BlkfrontRing<Layout>(guest: guest, order: order)
        try Blkfront.connect([ring], device: address)
        guard backend.isConnected else { throw BlockBench.UsageError(description: "the block backend did not connect") }

        // Each slot's pages, granted once: read-only for writes (the
        // backend only reads them), writable for reads.
        let operation: BlkifOperation = c.write ? .write : .read
        for slot in 0..<c.depth {
            let first = guest.allocatePages(pagesPerRequest)
            if c.write { try guest.fill(first, [UInt8](repeating: UInt8(truncatingIfNeeded: slot &+ 0x5a), count: c.blockSize)) }
            var segments: [BlkifSegment] = []
            for k in 0..<pagesPerRequest {
                segments.append(Blkfront.page(try guest.grant(GuestFrameNumber(first.rawValue + UInt64(k)), readOnly: c.write)))
            }
            let id = UInt64(slot)
            if indirect {
                let page = guest.allocatePages()
                try guest.fill(page, BlkifSegment.indirectPage(segments))
                let ref = try guest.grant(page, readOnly: true)
                let count = segments.count
                slots.append { sector in Blkfront.indirect(operation, id: id, sector: sector, segments: count, pages: [ref]) }
            } else {
                slots.append { sector in Blkfront.rw(operation, id: id, sector: sector, segments) }
            }
        }
    }

    deinit { backend.destroy() }

    /// xorshift64: offsets for random cases (no system call per draw).
    private var random: UInt64 = 0x2545_f491_4f6c_dd1d
    private var cursor: UInt64 = 0

    /// The next offset (bytes): sequential from 0, wrapping at the end of
    /// the file, or uniform over the file's blocks.
    private func nextOffset() -> UInt64 {
        let bs = UInt64(c.blockSize)
        if c.random {
            random ^= random << 13; random ^= random >> 7; random ^= random << 17
            return random % (fileBytes / bs) * bs
        }
        let o = cursor
        cursor = cursor + bs >= fileBytes ? 0 : cursor + bs
        return o
    }

    /// Responses taken by `measure` (all of them, counted or not).
    private var responsesTaken = 0

    /// What `measure` saw from the frontend while counting: the time from
    /// an operation's request to its last response (the write's flush in
    /// write+flush), summed; the operations; the takes of responses
    /// (`waitForResponses` calls); and the responses of the takes that had
    /// blocked on the port.
    private var trip = (total: Duration.zero, operations: 0, takes: 0, blockedResponses: 0)

    /// The frontend's side of the queue, printed per round: its mean round
    /// trip (the device's latency is on the disk's line; the rest is the
    /// path through the backend and the two wake-ups), the responses it
    /// took at a time, and the share of them it found only after blocking
    /// on its port (past its polling, `--frontend-poll-us`). A queue that
    /// goes round in lock-step (each take a whole ring's worth, each after
    /// blocking) pays one wake-up of the frontend per round.
    var roundTrips: String {
        let t = trip
        guard t.operations > 0, t.takes > 0 else { return "no operation counted" }
        let mean = t.total / t.operations
        let us = Double(mean.components.seconds) * 1e6 + Double(mean.components.attoseconds) / 1e12
        return String(format: "round trip %.0f µs, %.1f responses per take, %.0f%% of them after blocking on its port",
                      us, Double(responsesTaken) / Double(t.takes), 100 * Double(t.blockedResponses) / Double(max(responsesTaken, 1)))
    }

    /// Per response: how often each side waited to be woken (the
    /// backend's context on its doorbell, the frontend on its port; a wait
    /// that returns at once for an event already counted is included), how
    /// often polling found the work instead, and how many host operations
    /// the queue ran on its own thread (`BlockMetrics.inlineOperations`).
    var wakeUps: String {
        let n = Double(max(responsesTaken, 1))
        let b = guest.runtime.devices.reduce(into: (sleeps: UInt64(0), hits: UInt64(0))) {
            let p = $1.pollingStatistics
            $0.sleeps &+= p.sleeps
            $0.hits &+= p.hits
        }
        let inline = Double(backend.metrics.inlineOperations.load(ordering: .relaxed))
        return String(format: "backend waits %.2f poll hits %.2f inline %.2f, frontend waits %.2f poll hits %.2f",
                      Double(b.sleeps) / n, Double(b.hits) / n, inline / n, Double(ring.portWaits) / n, Double(ring.pollHits) / n)
    }

    /// Puts `requests` on the ring. Linux's blkfront is handed requests one
    /// by one by blk-mq (`blkif_queue_rq`, no `commit_rqs`) and publishes
    /// each with RING_PUSH_REQUESTS_AND_CHECK_NOTIFY (`flush_requests`), so
    /// a backend that is awake sees them as they come; `--frontend-push
    /// batch` publishes them together instead (what this bench did before
    /// December 3 2026).
    private func send(_ requests: [BlkifWireRequest]) throws {
        guard pushEachRequest else {
            try ring.submit(requests)
            return
        }
        for r in requests { try ring.submit([r]) }
    }

    /// Runs for `seconds`: MB/s (10^6 bytes) or IOPS of what completed
    /// before the deadline, over the time it took. In-flight requests are
    /// answered afterwards, not counted.
    func measure(seconds: Int) throws -> Double {
        let flushID = UInt64(1) << 32  // a slot's flush: its id with this bit
        var inFlight = 0
        var batch: [BlkifWireRequest] = []
        for slot in slots { batch.append(slot(nextOffset() / 512)) }
        let start = ContinuousClock.now
        let deadline = start + .seconds(seconds)
        // When each slot's operation was requested (`roundTrips`).
        var requestedAt = [ContinuousClock.Instant](repeating: start, count: slots.count)
        try send(batch)
        inFlight = batch.count
        var done = 0
        var elapsed: Duration = .zero
        var stopping = false
        while inFlight > 0 {
            let portWaits = ring.portWaits
            let responses = try ring.waitForResponses(polling: frontendPolling)
            let now = ContinuousClock.now
            trip.takes += 1
            if ring.portWaits != portWaits { trip.blockedResponses += responses.count }
            // What arrived by `now` counts; from the deadline on nothing new starts.
            let counting = !stopping
            if !stopping, now >= deadline {
                stopping = true
                elapsed = now - start
            }
            batch.removeAll(keepingCapacity: true)
            responsesTaken += responses.count
            for r in responses {
                guard r.status == .okay else {
                    throw BlockBench.UsageError(description: "request \(r.id) (operation \(r.operation)) answered \(r.rawStatus)")
                }
                inFlight -= 1
                let slot = Int(r.id & 0xffff_ffff)
                if c.flushEachWrite, r.id & flushID == 0 {
                    // The write is done: its flush (not counted as an operation).
                    batch.append(Blkfront.flush(id: r.id | flushID))
                    inFlight += 1
                    continue
                }
                if counting {
                    done += 1
                    trip.total += now - requestedAt[slot]
                    trip.operations += 1
                }
                if !stopping {
                    requestedAt[slot] = now
                    batch.append(slots[slot](nextOffset() / 512))
                    inFlight += 1
                }
            }
            if !batch.isEmpty { try send(batch) }
        }
        let secondsTaken = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let perSecond = Double(done) / secondsTaken
        return c.unit == .megabytesPerSecond ? perSecond * Double(c.blockSize) / 1e6 : perSecond
    }
}

/// The block device holding the benchmark's file, seen through its
/// statistics (/sys/dev/block/MAJ:MIN/stat, Documentation/block/stat.rst):
/// how many requests pvh and fio keep in the device and how long each takes
/// there tell the device's share of a difference from the rest of the path.
struct DiskStatistics {
    let path: String
    let name: String

    /// Nil when the file is not on a block device /sys describes (tmpfs, overlay).
    init?(holding file: String) {
        var st = stat()
        guard stat(file, &st) == 0 else { return nil }
        // glibc's gnu_dev_major/minor encoding of dev_t.
        let dev = UInt64(st.st_dev)
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & ~UInt64(0xfff))
        let minor = (dev & 0xff) | ((dev >> 12) & ~UInt64(0xff))
        path = "/sys/dev/block/\(major):\(minor)/stat"
        guard FileManager.default.isReadableFile(atPath: path) else { return nil }
        name = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/sys/dev/block/\(major):\(minor)"))
            .map { ($0 as NSString).lastPathComponent } ?? "\(major):\(minor)"
    }

    struct Sample {
        var at: ContinuousClock.Instant
        /// Requests completed, milliseconds they spent in the device (reads
        /// and writes), and the time-weighted milliseconds in the queue.
        var requests: UInt64, ticks: UInt64, weighted: UInt64
    }

    func sample() -> Sample? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let f = text.split(separator: " ").compactMap { UInt64($0) }
        guard f.count >= 11 else { return nil }
        return Sample(at: .now, requests: f[0] + f[4], ticks: f[3] + f[7], weighted: f[10])
    }

    static func describe(_ a: Sample, _ b: Sample) -> String {
        let wall = (b.at - a.at) / .milliseconds(1)
        let n = b.requests &- a.requests
        let inFlight = wall > 0 ? Double(b.weighted &- a.weighted) / wall : 0
        let latency = n > 0 ? Double(b.ticks &- a.ticks) * 1000 / Double(n) : 0
        return String(format: "%.1f %.0f µs", inFlight, latency)
    }
}
