import Foundation
import Locking
import GuestMemory
import HostIO
import Testing

/// A backing file in the temporary directory, opened through
/// `BlockBackingFile`; the file goes away with the value.
final class ScratchBacking {
    let scratch: ScratchFile
    let file: BlockBackingFile
    init(size: Int, writable: Bool = true, direct: Bool = false) throws {
        scratch = try ScratchFile(size: size)
        file = try BlockBackingFile.open(path: scratch.url.path, writable: writable, direct: direct)
    }
    func bytes() throws -> [UInt8] { try scratch.bytes() }
}

/// One write: file offset, the guest buffers (page, offset in page, length).
struct PlannedTransfer {
    var offset: Int
    var pieces: [(page: Int, offset: Int, count: Int)]
    var count: Int { pieces.reduce(0) { $0 + $1.count } }
}

@Suite("Block I/O engines")
struct EngineTests {
    /// `n` non-overlapping transfers over a file of `fileSize` bytes, each in
    /// its own stretch at a random 512-byte offset, of 1 to 4 buffers of 512
    /// to 4096 bytes in distinct guest pages from `firstPage` on.
    static func plan(_ n: Int, fileSize: Int, firstPage: Int, using rng: inout SplitMix64) -> [PlannedTransfer] {
        let stretch = fileSize / n
        return (0..<n).map { i in
            let pieces = (0..<Int.random(in: 1...4, using: &rng)).map { k in
                let count = 512 * Int.random(in: 1...8, using: &rng)
                return (page: firstPage + i * 4 + k, offset: 512 * Int.random(in: 0...(8 - count / 512), using: &rng), count: count)
            }
            let total = pieces.reduce(0) { $0 + $1.count }
            return PlannedTransfer(offset: i * stretch + 512 * Int.random(in: 0...((stretch - total) / 512), using: &rng), pieces: pieces)
        }
    }

    @Test("many buffers at many offsets, 64 in flight: the file then holds what the guest wrote, and reads bring it back",
          arguments: EngineUnderTest.allCases)
    func roundTrip(engine kind: EngineUnderTest) throws {
        let backing = try ScratchBacking(size: 8 << 20)
        let guest = try GuestPages(pages: 1024)
        let log = CompletionLog()
        let engine = try kind.make(backing.file, depth: 64, log: log)
        defer { engine.shutdown() }
        var rng = SplitMix64(seed: 0x5eed_0001)
        var model = [UInt8](repeating: 0, count: 8 << 20)
        var tag: UInt64 = 0
        for wave in 0..<4 {
            // 64 writes from pages 0..<256, then 64 reads of them into pages 256..<512.
            let writes = Self.plan(64, fileSize: 2 << 20, firstPage: 0, using: &rng).map {
                PlannedTransfer(offset: $0.offset + wave * (2 << 20), pieces: $0.pieces)
            }
            var requests: [BlockIORequest] = []
            for w in writes {
                var at = w.offset
                for p in w.pieces {
                    let data = rng.bytes(p.count)
                    try guest.memory.write(data, at: guest.address(p.page, p.offset))
                    model.replaceSubrange(at..<at + p.count, with: data)
                    at += p.count
                }
                tag += 1
                requests.append(BlockIORequest(tag: tag, operation: .write(offset: UInt64(w.offset), from: try w.pieces.map { try guest.range($0.page, offset: $0.offset, count: $0.count) })))
            }
            let before = log.all.count
            engine.submit(requests)
            #expect(log.wait(for: before + 64))
            for (r, w) in zip(requests, writes) { #expect(log.result(r.tag) == .success(w.count)) }

            try guest.memory.fill(at: guest.address(256), count: 256 * GuestPages.pageSize, with: 0)
            let reads = try writes.map { w in
                tag += 1
                return BlockIORequest(tag: tag, operation: .read(offset: UInt64(w.offset), into: try w.pieces.map { try guest.range($0.page + 256, offset: $0.offset, count: $0.count) }))
            }
            engine.submit(reads)
            #expect(log.wait(for: before + 128))
            for (r, w) in zip(reads, writes) {
                #expect(log.result(r.tag) == .success(w.count))
                var at = w.offset
                for p in w.pieces {
                    #expect(try guest.memory.read(at: guest.address(p.page + 256, p.offset), count: p.count) == Array(model[at..<at + p.count]))
                    at += p.count
                }
            }
        }
        #expect(try backing.bytes() == model)
        #expect(log.byTag().values.allSatisfy { $0.count == 1 })
    }

    @Test("flush succeeds after writes; discard punches a hole that reads as zeros and keeps the size", arguments: EngineUnderTest.allCases)
    func flushAndDiscard(engine kind: EngineUnderTest) throws {
        let backing = try ScratchBacking(size: 0x10000)
        try backing.scratch.handle.seek(toOffset: 0)  // truncate left it at the end
        try backing.scratch.handle.write(contentsOf: Data(repeating: 0xab, count: 0x10000))
        let guest = try GuestPages(pages: 4)
        let log = CompletionLog()
        let engine = try kind.make(backing.file, log: log)
        defer { engine.shutdown() }
        try guest.memory.fill(at: guest.address(0), count: 4096, with: 0xcd)
        engine.submit([BlockIORequest(tag: 1, operation: .write(offset: 0x8000, from: [try guest.range(0)]))])
        #expect(log.wait(for: 1))
        engine.submit([BlockIORequest(tag: 2, operation: .flush), BlockIORequest(tag: 3, operation: .discard(offset: 0x2000, length: 0x3000))])
        #expect(log.wait(for: 3))
        #expect(log.result(1) == .success(4096))
        #expect(log.result(2) == .success(0))
        if log.result(3) == .failure(.unsupported) { try Test.cancel("the temporary directory's file system cannot punch holes") }
        #expect(log.result(3) == .success(0))
        let bytes = try backing.bytes()
        #expect(bytes.count == 0x10000)
        #expect(bytes[0x2000..<0x5000].allSatisfy { $0 == 0 })
        #expect(bytes[0x1fff] == 0xab && bytes[0x5000] == 0xab)
        #expect(bytes[0x8000..<0x9000].allSatisfy { $0 == 0xcd })
    }

    @Test("a read across the end of the file is short by what is missing; one past it moved nothing", arguments: EngineUnderTest.allCases)
    func shortReadAtEndOfFile(engine kind: EngineUnderTest) throws {
        let backing = try ScratchBacking(size: 4096)
        let guest = try GuestPages(pages: 4)
        let log = CompletionLog()
        let engine = try kind.make(backing.file, log: log)
        defer { engine.shutdown() }
        engine.submit([BlockIORequest(tag: 1, operation: .read(offset: 2048, into: [try guest.range(0)])),
                       BlockIORequest(tag: 2, operation: .read(offset: 8192, into: [try guest.range(1, count: 512), try guest.range(2, count: 512)]))])
        #expect(log.wait(for: 2))
        #expect(log.result(1) == .failure(.short(transferred: 2048, expected: 4096)))
        #expect(log.result(2) == .failure(.short(transferred: 0, expected: 1024)))
    }

    @Test("errors come back as the errno: a write to a read-only backing is EBADF, an offset past off_t EINVAL; no bytes is success",
          arguments: EngineUnderTest.allCases)
    func errors(engine kind: EngineUnderTest) throws {
        let scratch = try ScratchFile(size: 0x4000)
        let file = try BlockBackingFile.open(path: scratch.url.path, writable: false)
        let guest = try GuestPages(pages: 2)
        let log = CompletionLog()
        let engine = try kind.make(file, log: log)
        defer { engine.shutdown() }
        engine.submit([BlockIORequest(tag: 1, operation: .write(offset: 0, from: [try guest.range(0)])),
                       BlockIORequest(tag: 2, operation: .read(offset: UInt64(Int64.max) - 100, into: [try guest.range(0)])),
                       BlockIORequest(tag: 3, operation: .discard(offset: UInt64.max - 10, length: 4096)),
                       BlockIORequest(tag: 4, operation: .read(offset: 0, into: [])),
                       BlockIORequest(tag: 5, operation: .read(offset: 0, into: [try guest.range(1)]))])
        #expect(log.wait(for: 5))
        #expect(log.result(1) == .failure(.system(errno: EBADF)))
        #expect(log.result(2) == .failure(.system(errno: EINVAL)))
        #expect(log.result(3) == .failure(.system(errno: EINVAL)))
        #expect(log.result(4) == .success(0))
        #expect(log.result(5) == .success(4096))
    }

    @Test("a request of more buffers than one preadv/pwritev takes (IOV_MAX) moves them all", arguments: EngineUnderTest.allCases)
    func moreBuffersThanIOVMax(engine kind: EngineUnderTest) throws {
        let pieces = 1100  // IOV_MAX is 1024 on Linux
        let backing = try ScratchBacking(size: pieces * 512)
        let guest = try GuestPages(pages: 2 * pieces / 8 + 2)
        let log = CompletionLog()
        let engine = try kind.make(backing.file, log: log)
        defer { engine.shutdown() }
        var rng = SplitMix64(seed: 0x10f)
        let data = rng.bytes(pieces * 512)
        try guest.memory.write(data, at: guest.address(0))
        let half = pieces / 8 + 1  // pages holding the written bytes
        engine.submit([BlockIORequest(tag: 1, operation: .write(offset: 0, from: try (0..<pieces).map { try guest.range($0 / 8, offset: ($0 % 8) * 512, count: 512) }))])
        #expect(log.wait(for: 1))
        engine.submit([BlockIORequest(tag: 2, operation: .read(offset: 0, into: try (0..<pieces).map { try guest.range(half + $0 / 8, offset: ($0 % 8) * 512, count: 512) }))])
        #expect(log.wait(for: 2))
        #expect(log.result(1) == .success(pieces * 512))
        #expect(log.result(2) == .success(pieces * 512))
        #expect(try backing.bytes() == data)
        #expect(try guest.memory.read(at: guest.address(half), count: pieces * 512) == data)
    }

    @Test("shutdown waits for every request in flight: 256 submitted to a depth of 16, 256 completed when it returns; later ones are shutDown",
          arguments: [EngineUnderTest.ioUring, .ioUringGrouped, .threadPool])
    func shutdownDrains(engine kind: EngineUnderTest) throws {
        let backing = try ScratchBacking(size: 256 * 4096)
        let guest = try GuestPages(pages: 256)
        let log = CompletionLog()
        let engine = try kind.make(backing.file, depth: 16, log: log)
        try guest.memory.fill(at: guest.address(0), count: 256 * 4096, with: 0x5a)
        engine.submit(try (0..<256).map { i in
            BlockIORequest(tag: UInt64(i), operation: i % 2 == 0 ? .write(offset: UInt64(i * 4096), from: [try guest.range(i)])
                                                                   : .read(offset: UInt64(i * 4096), into: [try guest.range(i)]))
        })
        engine.shutdown()
        let atShutdown = log.all
        #expect(atShutdown.count == 256)
        #expect(Set(atShutdown.map(\.tag)) == Set(0..<256))
        #expect(atShutdown.allSatisfy { $0.result == .success(4096) })
        engine.submit([BlockIORequest(tag: 1000, operation: .flush)])
        #expect(log.result(1000) == .failure(.shutDown))
        engine.shutdown()  // a second shutdown returns at once
        #expect(log.all.count == 257)
    }

    @Test("submits from 8 threads at once: every request completes exactly once, the file holds every write; the handler runs on the engine's threads",
          arguments: EngineUnderTest.allCases)
    func concurrentSubmitters(engine kind: EngineUnderTest) throws {
        let threads = 8, perThread = 64
        let backing = try ScratchBacking(size: threads * perThread * 4096)
        let guest = try GuestPages(pages: threads * perThread)
        let log = CompletionLog()
        let engine = try kind.make(backing.file, depth: 32, log: log)
        defer { engine.shutdown() }
        var expected = [UInt8](repeating: 0, count: threads * perThread * 4096)
        for page in 0..<threads * perThread {
            let byte = UInt8(truncatingIfNeeded: page &* 31 &+ 7)
            try guest.memory.fill(at: guest.address(page), count: 4096, with: byte)
            expected.replaceSubrange(page * 4096..<(page + 1) * 4096, with: repeatElement(byte, count: 4096))
        }
        let submitters = Lock<[pthread_t]>([])
        let failures = Lock<[String]>([])
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            submitters.withLock { $0.append(pthread_self()) }
            do {
                // In batches of 8, so the threads' submissions interleave.
                for batch in stride(from: 0, to: perThread, by: 8) {
                    engine.submit(try (batch..<batch + 8).map { i in
                        let page = t * perThread + i
                        return BlockIORequest(tag: UInt64(page), operation: .write(offset: UInt64(page * 4096), from: [try guest.range(page)]))
                    })
                }
            } catch { failures.withLock { $0.append("\(error)") } }
        }
        #expect(failures.withLock { $0 } == [])
        #expect(log.wait(for: threads * perThread))
        let byTag = log.byTag()
        #expect(byTag.count == threads * perThread)
        #expect(byTag.values.allSatisfy { $0 == [.success(4096)] })
        #expect(try backing.bytes() == expected)
        if kind.deliversOnOwnThreads {
            let submitting = Set(submitters.withLock { $0 }.map { UInt($0) })
            #expect(log.deliveringThreads.allSatisfy { !submitting.contains(UInt($0)) })
        }
    }

    /// An engine the completion handler can reach (made after the handler).
    final class EngineSlot: Sendable {
        let engine = Lock<(any BlockIOEngine)?>(nil)
        func get() -> (any BlockIOEngine)? { engine.withLock { $0 } }
    }

    @Test("a completion handler may submit, even to a full queue, and may call shutdown: neither deadlocks, each request completes once",
          arguments: [EngineUnderTest.ioUring, .ioUringGrouped, .threadPool])
    func reentrantHandler(engine kind: EngineUnderTest) throws {
        let backing = try ScratchBacking(size: 64 * 4096)
        let guest = try GuestPages(pages: 64)
        let log = CompletionLog()
        let slot = EngineSlot()
        // Each original (tags 0..<64) submits a follow-up read (tag + 1000)
        // from the handler; the follow-up 1000's completion shuts the engine
        // down from the handler. Requests submitted after that are shutDown.
        let handler: @Sendable ([BlockIOCompletion]) -> Void = { batch in
            log.add(batch)
            guard let engine = slot.get() else { return }
            for c in batch {
                if c.tag < 1000, let range = try? guest.range(Int(c.tag)) {
                    engine.submit([BlockIORequest(tag: c.tag + 1000, operation: .read(offset: c.tag * 4096, into: [range]))])
                } else if c.tag == 1000 {
                    engine.shutdown()
                }
            }
        }
        // Room for 2 and, for the pool, one worker: a handler that waited
        // for room would wait for itself.
        let engine: any BlockIOEngine = switch kind {
        case .threadPool: ThreadPoolEngine(file: backing.file, threads: 1, queueDepth: 2, onComplete: handler)
        default: try kind.make(backing.file, depth: 2, onComplete: handler)
        }
        slot.engine.withLock { $0 = engine }
        engine.submit(try (0..<64).map { BlockIORequest(tag: UInt64($0), operation: .write(offset: UInt64($0 * 4096), from: [try guest.range($0)])) })
        #expect(log.wait(for: 128))
        engine.shutdown()
        let byTag = log.byTag()
        #expect(Set(byTag.keys) == Set((0..<64).map { UInt64($0) } + (1000..<1064).map { UInt64($0) }))
        #expect(byTag.values.allSatisfy { $0.count == 1 && ($0[0] == .success(4096) || $0[0] == .failure(.shutDown)) })
        #expect(byTag[0] == [.success(4096)] && byTag[1000] == [.success(4096)])
        engine.submit([BlockIORequest(tag: 5000, operation: .flush)])
        #expect(log.result(5000) == .failure(.shutDown))
        slot.engine.withLock { $0 = nil }
    }

    @Test("the thread pool starts workers as requests queue up, up to its maximum; one request at a time keeps one")
    func poolGrowsOnDemand() throws {
        let backing = try ScratchBacking(size: 1 << 20)
        let guest = try GuestPages(pages: 64)
        let log = CompletionLog()
        let pool = ThreadPoolEngine(file: backing.file, threads: 8, queueDepth: 128) { log.add($0) }
        defer { pool.shutdown() }
        // One at a time, each waited for: the one worker is idle again before
        // its completion is delivered, so no second starts.
        for i in 0..<16 {
            pool.submit([BlockIORequest(tag: UInt64(i), operation: .read(offset: UInt64(i * 4096), into: [try guest.range(i)]))])
            #expect(log.wait(for: i + 1))
        }
        #expect(pool.startedWorkers == 1)
        // 64 at once, queued under one lock: every queued request beyond the
        // idle workers starts one, up to the maximum.
        pool.submit(try (0..<64).map { BlockIORequest(tag: UInt64(100 + $0), operation: .read(offset: UInt64($0 * 4096), into: [try guest.range($0)])) })
        #expect(log.wait(for: 16 + 64))
        #expect(pool.startedWorkers == 8)
        #expect(log.byTag().values.allSatisfy { $0 == [.success(4096)] })
    }

    @Test("the same random workload (writes, discards, flushes) leaves the same file bytes on every engine, and those of a model")
    func enginesAgree() throws {
        let fileSize = 4 << 20
        var files: [EngineUnderTest: [UInt8]] = [:]
        var model = [UInt8](repeating: 0, count: fileSize)
        var discardUnsupported = false
        for kind in EngineUnderTest.allCases {
            let backing = try ScratchBacking(size: fileSize)
            let guest = try GuestPages(pages: 512)
            let log = CompletionLog()
            let engine = try kind.make(backing.file, depth: 32, log: log)
            defer { engine.shutdown() }
            var rng = SplitMix64(seed: 0xa9ee)
            var expected = [UInt8](repeating: 0, count: fileSize)
            var submitted = 0
            for _ in 0..<6 {
                // A wave: non-overlapping writes and discards, then a flush on its own.
                var requests: [BlockIORequest] = []
                for (i, t) in Self.plan(48, fileSize: fileSize, firstPage: 0, using: &rng).enumerated() {
                    if i % 6 == 5 {
                        let length = 4096 * Int.random(in: 1...4, using: &rng)
                        let offset = t.offset / 4096 * 4096
                        if offset + length <= fileSize {
                            requests.append(BlockIORequest(tag: UInt64(submitted + requests.count), operation: .discard(offset: UInt64(offset), length: UInt64(length))))
                            expected.replaceSubrange(offset..<offset + length, with: repeatElement(0, count: length))
                            continue
                        }
                    }
                    var at = t.offset
                    for p in t.pieces {
                        let data = rng.bytes(p.count)
                        try guest.memory.write(data, at: guest.address(p.page, p.offset))
                        expected.replaceSubrange(at..<at + p.count, with: data)
                        at += p.count
                    }
                    requests.append(BlockIORequest(tag: UInt64(submitted + requests.count),
                                                   operation: .write(offset: UInt64(t.offset), from: try t.pieces.map { try guest.range($0.page, offset: $0.offset, count: $0.count) })))
                }
                engine.submit(requests)
                submitted += requests.count
                #expect(log.wait(for: submitted))
                engine.submit([BlockIORequest(tag: UInt64(submitted), operation: .flush)])
                submitted += 1
                #expect(log.wait(for: submitted))
            }
            let results = log.all.map(\.result)
            discardUnsupported = discardUnsupported || results.contains(.failure(.unsupported))
            #expect(results.allSatisfy { if case .success = $0 { true } else { $0 == .failure(.unsupported) } })
            files[kind] = try backing.bytes()
            model = expected
        }
        if discardUnsupported { try Test.cancel("the temporary directory's file system cannot punch holes") }
        #expect(files[.ioUring] == model)
        #expect(files[.ioUringGrouped] == model)
        #expect(files[.threadPool] == model)
        #expect(files[.synchronous] == model)
    }

    @Test("a file system that fills up says ENOSPC (a 64 KiB tmpfs, mounted for the test)",
          .enabled(if: isRoot, "mounting a tmpfs needs root"), arguments: EngineUnderTest.allCases)
    func noSpace(engine kind: EngineUnderTest) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-hostio-tmpfs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: dir) }
        guard run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "pvh-hostio-test", dir.path]).status == 0 else {
            try Test.cancel("mount -t tmpfs failed (no CAP_SYS_ADMIN in this namespace?)")
        }
        defer { run("/bin/umount", [dir.path]) }
        let path = dir.appendingPathComponent("disk.img").path
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        #expect(truncate(path, 1 << 20) == 0)  // sparse: bigger than the file system
        let guest = try GuestPages(pages: 32)
        let log = CompletionLog()
        do {
            let file = try BlockBackingFile.open(path: path, writable: true)
            let engine = try kind.make(file, log: log)
            defer { engine.shutdown() }
            engine.submit([BlockIORequest(tag: 1, operation: .write(offset: 0, from: try (0..<32).map { try guest.range($0) }))])
            #expect(log.wait(for: 1))
        }
        #expect(log.result(1) == .failure(.system(errno: ENOSPC)))
    }
}
