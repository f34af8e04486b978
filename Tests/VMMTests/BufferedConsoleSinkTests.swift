import Dispatch
import Foundation
import Locking
import Testing
import VMM

#if canImport(Glibc)
import Glibc
#endif

/// `pvh run`'s stdout when nobody reads it (issue 13 item 5: the console
/// reader vanishing): emit never blocks, the newest output up to the bound
/// waits for a reader that comes back, the oldest beyond it is dropped and
/// counted, and what is written keeps its order.
/// Reads a pipe on a thread of its own until end of file.
final class PipeReader: Sendable {
    private let bytes = Lock<[UInt8]>([])
    private let done = DispatchSemaphore(value: 0)

    init(fd: Int32) {
        Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                bytes.withLock { $0 += buffer[0..<n] }
            }
            done.signal()
        }.start()
    }

    /// Everything read, once the writer closed its end (nil after 10 s).
    func all() -> [UInt8]? {
        done.wait(timeout: .now() + 10) == .success ? bytes.withLock { $0 } : nil
    }
}

@Suite("buffered console sink")
struct BufferedConsoleSinkTests {
    /// Chunk `i`: 1 KiB holding `i` as 4 big-endian bytes, 256 times.
    static func chunk(_ i: Int) -> [UInt8] {
        (0..<256).flatMap { _ in [UInt8(i >> 24 & 0xff), UInt8(i >> 16 & 0xff), UInt8(i >> 8 & 0xff), UInt8(i & 0xff)] }
    }

    @Test("400 KiB into a pipe nobody reads, bound 64 KiB: every emit returns; the reader that comes back gets the first chunks the pipe took, then the newest 64 KiB or more, in order; exactly the rest is counted dropped")
    func unreadPipe() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        let (readEnd, writeEnd) = (fds[0], fds[1])
        defer { close(readEnd) }
        let sink = BufferedConsoleSink(fd: writeEnd, capacity: 64 << 10)
        let total = 400
        // The first 32 KiB fit the pipe (64 KiB): written before the flood.
        for i in 0..<32 { sink.emit(Self.chunk(i)) }
        #expect(sink.flush(idle: .seconds(10)) == 0)
        let start = ContinuousClock.now
        for i in 32..<total { sink.emit(Self.chunk(i)) }
        // No reader yet: the emits did not wait for one (a blocked write would never return).
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(sink.waiting <= 64 << 10)

        // The reader comes back.
        let reader = PipeReader(fd: readEnd)
        #expect(sink.flush(idle: .seconds(10)) == 0, "a reader is there: everything waiting is written")
        close(writeEnd)
        let bytes = try #require(reader.all())
        #expect(bytes.count % 1024 == 0)
        let indices = stride(from: 0, to: bytes.count, by: 1024).map { o -> Int in
            Int(bytes[o]) << 24 | Int(bytes[o + 1]) << 16 | Int(bytes[o + 2]) << 8 | Int(bytes[o + 3])
        }
        for (k, o) in stride(from: 0, to: bytes.count, by: 1024).enumerated() {
            #expect(Array(bytes[o..<(o + 1024)]) == Self.chunk(indices[k]), "chunk \(k) whole")
        }
        // 0, 1, ..., k (what the pipe and the writer took), then j, ..., 399.
        #expect(indices.first == 0 && indices.last == total - 1)
        let gap = indices.indices.dropLast().first { indices[$0 + 1] != indices[$0] + 1 }
        let gapAt = try #require(gap, "some output must have been dropped: 400 KiB against a 64 KiB pipe and a 64 KiB bound")
        #expect(Array(indices[(gapAt + 1)...]) == Array(indices[gapAt + 1]..<total), "after the gap: the newest, in order")
        #expect(Array(indices[...gapAt]) == Array(0...gapAt), "before it: the oldest, in order")
        #expect((total - indices[gapAt + 1]) * 1024 >= 64 << 10, "no output lost below the bound")
        #expect(sink.dropped == UInt64((total - indices.count) * 1024), "every byte not delivered is counted")
    }

    @Test("a reader that keeps up loses nothing")
    func readerKeepsUp() throws {
        var fds: [Int32] = [0, 0]
        try #require(pipe(&fds) == 0)
        let (readEnd, writeEnd) = (fds[0], fds[1])
        defer { close(readEnd) }
        let sink = BufferedConsoleSink(fd: writeEnd, capacity: 4096)
        let reader = PipeReader(fd: readEnd)
        for i in 0..<64 {
            sink.emit(Self.chunk(i))
            // Below the bound at every moment: each emit waits for the last.
            #expect(sink.flush(idle: .seconds(10)) == 0)
        }
        close(writeEnd)
        #expect(try #require(reader.all()) == (0..<64).flatMap(Self.chunk))
        #expect(sink.dropped == 0)
    }
}
