#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
import Locking

/// Where a console's bytes go: the PV console's output, and the hypervisor
/// console's outputs (`HypervisorConsoleOutputs`). Bytes are passed on as
/// they arrive, never dropped or reordered.
public protocol ConsoleSink: AnyObject, Sendable {
    func emit(_ bytes: [UInt8])
}

/// Writes console bytes to a file descriptor (stdout for `pvh run`),
/// retrying short writes and EINTR so nothing is lost.
public final class FileDescriptorConsoleSink: ConsoleSink {
    private let fd: Int32
    private let lock = Lock(())
    public init(fd: Int32 = 1) { self.fd = fd }

    public func emit(_ bytes: [UInt8]) {
        _ = write(bytes)  // stdout closed: the guest goes on without a console
    }

    /// Writes all of `bytes`; false when the descriptor refuses them
    /// (closed, or its reader gone: EPIPE), in which case some of them
    /// may have been written.
    public func write(_ bytes: [UInt8]) -> Bool {
        lock.withLock { _ in
            var offset = 0
            while offset < bytes.count {
                // SAFETY: write(2) reads at most `count` bytes from the
                // buffer, which is valid for the closure's duration.
                let n = unsafe bytes[offset...].withUnsafeBytes { unsafe Glibc.write(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR || errno == EAGAIN { continue }
                    return false
                }
                offset += n
            }
            return true
        }
    }
}

/// Console output to a descriptor whose reader may stop reading: a pipe
/// nobody reads, a terminal stopped with Ctrl-S, the daemon's relay held
/// by a client that takes nothing (ConsoleRelay/DomainConsole.swift). `emit` never
/// blocks: the bytes wait in a buffer of at most `capacity` bytes that a
/// thread of its own (`pvh-stdout`) writes out with blocking writes, so
/// neither the console's device thread nor the hypervisor console's queue
/// ever waits for the reader, and the guest goes on printing. Below the
/// bound nothing is lost and the order is kept; past it the oldest waiting
/// bytes are dropped and counted (`dropped`), as xenconsoled's buffer
/// limit drops a domain's output rather than hold the domain. Once the
/// descriptor fails (EPIPE, EBADF: the reader is gone for good) every byte
/// is dropped and counted.
public final class BufferedConsoleSink: ConsoleSink {
    /// The bound `pvh run` uses for its stdout: 1 MiB.
    public static let defaultCapacity = 1 << 20
    public let capacity: Int
    private let fd: Int32

    private struct State {
        /// Waiting bytes, oldest first; `head` bytes of the first are gone.
        var chunks: [[UInt8]] = []
        var head = 0
        var count = 0
        /// Bytes of the chunk the writer holds and has not finished writing.
        var writing = 0
        var writerAsleep = false
        var drainWaiters = 0
        var dropped: UInt64 = 0
        var broken = false
        /// Once broken: the bytes not written, oldest first (the failed
        /// write's rest, what waited, what came since), at most `capacity`.
        var failed: [UInt8] = []

        mutating func keepFailed<C: Collection<UInt8>>(_ bytes: C, capacity: Int) {
            failed.append(contentsOf: bytes)
            if failed.count > capacity {
                let excess = failed.count - capacity
                failed.removeFirst(excess)
                dropped += UInt64(excess)
            }
        }
    }
    private let state = Lock(State())
    private let wakeWriter = DispatchSemaphore(value: 0)
    private let progress = DispatchSemaphore(value: 0)

    public init(fd: Int32 = 1, capacity: Int = BufferedConsoleSink.defaultCapacity) {
        self.fd = fd
        self.capacity = max(capacity, 1)
        let thread = Thread { [self] in writeLoop() }
        thread.name = "pvh-stdout"
        thread.start()
    }

    public func emit(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        let wake = state.withLock { s -> Bool in
            if s.broken {
                s.keepFailed(bytes, capacity: capacity)
                return false
            }
            s.chunks.append(bytes)
            s.count += bytes.count
            // The oldest waiting bytes make room (never those being written).
            while s.count > capacity {
                let excess = s.count - capacity, first = s.chunks[0].count - s.head
                if first <= excess {
                    s.chunks.removeFirst()
                    s.head = 0
                    s.count -= first
                    s.dropped += UInt64(first)
                } else {
                    s.head += excess
                    s.count -= excess
                    s.dropped += UInt64(excess)
                }
            }
            guard s.writerAsleep else { return false }
            s.writerAsleep = false
            return true
        }
        if wake { wakeWriter.signal() }
    }

    /// Bytes dropped so far: past the bound, or after the descriptor failed.
    public var dropped: UInt64 { state.withLock { $0.dropped } }
    /// Whether a write failed for good (the reader went: EPIPE); from then
    /// on what is emitted is kept unwritten (`takeUnwritten`), up to
    /// `capacity` bytes, the oldest dropped beyond.
    public var isBroken: Bool { state.withLock { $0.broken } }
    /// Once broken: the bytes not written, in order, handed over (and
    /// forgotten here), so a caller can keep them for a later reader.
    public func takeUnwritten() -> [UInt8] {
        state.withLock { s in
            defer { s.failed = [] }
            return s.failed
        }
    }
    /// Writes again after a failure: the descriptor now names a new reader
    /// (dup2'd over it). Bytes still unwritten are written first.
    public func resume() {
        let wake = state.withLock { s -> Bool in
            guard s.broken else { return false }
            s.broken = false
            if !s.failed.isEmpty {
                s.chunks = [s.failed]
                s.head = 0
                s.count = s.failed.count
                s.failed = []
            }
            guard s.writerAsleep, s.count > 0 else { return false }
            s.writerAsleep = false
            return true
        }
        if wake { wakeWriter.signal() }
    }
    /// Bytes waiting (not counting a chunk being written).
    public var waiting: Int { state.withLock { $0.count } }

    /// Waits until everything emitted so far is written, or until no byte
    /// could be written for `idle` (the reader is not reading: pvh's end
    /// must not wait for it). Returns the bytes still unwritten.
    @discardableResult
    public func flush(idle: Duration) -> Int {
        let (seconds, attoseconds) = idle.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        while true {
            let left = state.withLock { s -> Int? in
                if s.broken { return s.failed.count }
                if s.count == 0 && s.writing == 0 { return 0 }
                s.drainWaiters += 1
                return nil
            }
            if let left { return left }
            let result = progress.wait(timeout: .now() + .nanoseconds(nanoseconds))
            let stuck = state.withLock { s -> Int? in
                s.drainWaiters -= 1
                guard result == .timedOut else { return nil }
                return s.count + s.writing
            }
            if let stuck { return stuck }
        }
    }

    private func writeLoop() {
        while true {
            let chunk = state.withLock { s -> ArraySlice<UInt8>? in
                guard !s.chunks.isEmpty else {
                    s.writerAsleep = true
                    return nil
                }
                let c = s.chunks.removeFirst()[s.head...]
                s.head = 0
                s.count -= c.count
                s.writing = c.count
                return c
            }
            guard let chunk else {
                wakeWriter.wait()
                continue
            }
            let unwritten = writeAll(chunk)
            let signal = state.withLock { s -> Bool in
                s.writing = 0
                if unwritten > 0 {
                    s.broken = true
                    s.keepFailed(chunk.suffix(unwritten), capacity: capacity)
                    for (i, c) in s.chunks.enumerated() { s.keepFailed(i == 0 ? c[s.head...] : c[...], capacity: capacity) }
                    s.chunks = []
                    s.head = 0
                    s.count = 0
                }
                return s.drainWaiters > 0
            }
            if signal { progress.signal() }
        }
    }

    /// Blocking writes until `bytes` are written: 0, or once the
    /// descriptor fails for good, how many were not.
    private func writeAll(_ bytes: ArraySlice<UInt8>) -> Int {
        var offset = bytes.startIndex
        while offset < bytes.endIndex {
            // SAFETY: write(2) reads at most `count` bytes from the buffer,
            // which is valid for the closure's duration.
            let n = unsafe bytes[offset...].withUnsafeBytes { unsafe Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN {
                    // A descriptor someone made non-blocking: wait for room.
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    // SAFETY: poll(2) reads and writes the one pollfd, valid for the call.
                    _ = unsafe poll(&p, 1, -1)
                    continue
                }
                return bytes.endIndex - offset
            }
            offset += n
        }
        return 0
    }
}

/// Collects console output and tells a waiter, line by line, what arrived.
/// Used by integration tests and by `pvh` to stop on a marker.
public final class CapturingConsoleSink: ConsoleSink {
    private struct State {
        var bytes: [UInt8] = []
        var pendingLine: [UInt8] = []
    }
    private let state = Lock(State())
    private let onLine: @Sendable (String) -> Void
    private let forward: (any ConsoleSink)?

    /// `onLine` runs for every complete line on the emitting thread: the
    /// console's device thread (`pvh-console`) for the PV console ring, the
    /// hypervisor console's queue for console_io and port 0xE9.
    public init(forwardTo forward: (any ConsoleSink)? = nil, onLine: @escaping @Sendable (String) -> Void = { _ in }) {
        self.forward = forward
        self.onLine = onLine
    }

    public func emit(_ bytes: [UInt8]) {
        forward?.emit(bytes)
        let lines: [String] = state.withLock { s in
            s.bytes += bytes
            var out: [String] = []
            for b in bytes {
                if b == UInt8(ascii: "\n") {
                    out.append(String(decoding: s.pendingLine, as: UTF8.self).trimmingSuffix("\r"))
                    s.pendingLine.removeAll(keepingCapacity: true)
                } else {
                    s.pendingLine.append(b)
                }
            }
            return out
        }
        for l in lines { onLine(l) }
    }

    /// Everything emitted so far.
    public var text: String { state.withLock { String(decoding: $0.bytes, as: UTF8.self) } }
    /// The output split into lines. A Linux tty writes "\r\n", which Swift
    /// reads as one Character (a grapheme cluster), so both separate lines.
    public var lines: [String] {
        text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).map(String.init)
    }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}
