#if canImport(Glibc)
import Glibc
#endif
import Synchronization

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
    private let lock = Mutex(())
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

/// Collects console output and tells a waiter, line by line, what arrived.
/// Used by integration tests and by `pvh` to stop on a marker.
public final class CapturingConsoleSink: ConsoleSink {
    private struct State {
        var bytes: [UInt8] = []
        var pendingLine: [UInt8] = []
    }
    private let state = Mutex(State())
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
