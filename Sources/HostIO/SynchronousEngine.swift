#if canImport(Glibc)
import Glibc
#endif
import CHostIO
import GuestMemory
import Synchronization

/// Runs each request on the submitting thread, one at a time, with
/// preadv/pwritev/fdatasync/fallocate: the reference the other engines are
/// checked against, and the engine for tests that want completions before
/// `submit` returns. The file descriptor stays the caller's.
public final class SynchronousEngine: BlockIOEngine, @unchecked Sendable {
    // SAFETY (Sendable): `fd` and `onComplete` are immutable; `closed` is atomic.
    let fd: Int32
    let onComplete: @Sendable ([BlockIOCompletion]) -> Void
    private let closed = Atomic<Bool>(false)

    public init(fileDescriptor: Int32, onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) {
        self.fd = fileDescriptor
        self.onComplete = onComplete
    }

    public func submit(_ requests: [BlockIORequest]) {
        let done = requests.map { r in
            BlockIOCompletion(tag: r.tag, result: closed.load(ordering: .acquiring) ? .failure(.shutDown) : HostFileIO.perform(r.operation, fd: fd))
        }
        if !done.isEmpty { onComplete(done) }
    }

    public func shutdown() { closed.store(true, ordering: .releasing) }
}

/// The system calls behind each operation, shared by the engines that run
/// them on a thread (this one and the thread pool).
enum HostFileIO {
    static func perform(_ op: BlockIOOperation, fd: Int32) -> Result<Int, HostIOError> {
        switch op {
        case .read(let offset, let buffers):
            return transfer(buffers, offset: offset) { iov, n, off in unsafe preadv(fd, iov, n, off) }
        case .write(let offset, let buffers):
            return transfer(buffers, offset: offset) { iov, n, off in unsafe pwritev(fd, iov, n, off) }
        case .flush:
            while fdatasync(fd) != 0 {
                if errno != EINTR { return .failure(.system(errno: errno)) }
            }
            return .success(0)
        case .discard(let offset, let length):
            return discard(fd: fd, offset: offset, length: length)
        }
    }

    /// Hole punching keeps the file's size (FALLOC_FL_KEEP_SIZE); file
    /// systems without it say EOPNOTSUPP, which is `.unsupported`.
    static func discard(fd: Int32, offset: UInt64, length: UInt64) -> Result<Int, HostIOError> {
        guard offset <= UInt64(Int64.max), length <= UInt64(Int64.max) - offset else { return .failure(.system(errno: EINVAL)) }
        let r = pvh_punch_hole(fd, Int64(offset), Int64(length))
        if r == 0 { return .success(0) }
        return .failure(-r == EOPNOTSUPP ? .unsupported : .system(errno: -r))
    }

    /// Moves every byte of `buffers` at `offset`, continuing after partial
    /// transfers; stops short only at end of file (`.short`) or on an error.
    static func transfer(_ buffers: [HostMemoryRange], offset: UInt64,
                         _ call: (UnsafePointer<iovec>, Int32, off_t) -> Int) -> Result<Int, HostIOError> {
        let expected = buffers.reduce(0) { $0 + $1.count }
        guard offset <= UInt64(Int64.max), UInt64(expected) <= UInt64(Int64.max) - offset else {
            return .failure(.system(errno: EINVAL))
        }
        // SAFETY: each HostMemoryRange names host memory its owner keeps
        // mapped while `buffers` lives (GuestMemory's contract), and the
        // iovecs do not outlive this call.
        var iovecs = unsafe buffers.map { unsafe iovec(iov_base: UnsafeMutableRawPointer(bitPattern: $0.address), iov_len: $0.count) }
        var done = 0
        var first = 0
        while first < iovecs.count {
            let count = Int32(min(iovecs.count - first, Int(pvh_iov_max())))
            let n = unsafe iovecs.withUnsafeBufferPointer { p in
                unsafe call(p.baseAddress! + first, count, off_t(offset) + off_t(done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(.system(errno: errno))
            }
            if n == 0 { return .failure(.short(transferred: done, expected: expected)) }
            done += n
            // Skip the iovecs the call finished; trim a partly done one.
            var left = n
            while first < iovecs.count, left >= iovecs[first].iov_len {
                left -= iovecs[first].iov_len
                first += 1
            }
            if left > 0 {
                iovecs[first].iov_base = unsafe iovecs[first].iov_base.map { unsafe $0 + left }
                iovecs[first].iov_len -= left
            }
        }
        return .success(done)
    }
}
