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
    // SAFETY (Sendable): `fd`, `discard`, `owner` and `onComplete` are
    // immutable; `closed` is atomic.
    let fd: Int32
    let discard: DiscardMethod
    /// What keeps `fd` open (a `BlockBackingFile`), or nil when the caller
    /// owns the descriptor.
    let owner: (AnyObject & Sendable)?
    let onComplete: @Sendable ([BlockIOCompletion]) -> Void
    private let closed = Atomic<Bool>(false)

    public convenience init(fileDescriptor: Int32, onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) {
        self.init(fileDescriptor: fileDescriptor, discard: .punchHole, owner: nil, onComplete: onComplete)
    }

    init(fileDescriptor: Int32, discard: DiscardMethod, owner: (AnyObject & Sendable)?, onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) {
        self.fd = fileDescriptor
        self.discard = discard
        self.owner = owner
        self.onComplete = onComplete
    }

    public func submit(_ requests: [BlockIORequest]) {
        let done = requests.map { r in
            BlockIOCompletion(tag: r.tag, result: closed.load(ordering: .acquiring) ? .failure(.shutDown) : HostFileIO.perform(r.operation, fd: fd, discard: discard))
        }
        if !done.isEmpty { onComplete(done) }
    }

    public func shutdown() { closed.store(true, ordering: .releasing) }
}

/// How a backing deallocates a range for `BlockIOOperation.discard`.
enum DiscardMethod: Sendable {
    /// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): regular files
    /// (fallocate(2), "Deallocating file space").
    case punchHole
    /// ioctl(BLKDISCARD): block devices (linux/fs.h). Not fallocate: on a
    /// block device PUNCH_HOLE means "write zeroes, unmapping if the device
    /// can" (block/fops.c blkdev_fallocate), a different command that many
    /// devices with discard do not have.
    case blockDiscard
}

/// The system calls behind each operation, shared by the engines that run
/// them on a thread (this one and the thread pool).
enum HostFileIO {
    static func perform(_ op: BlockIOOperation, fd: Int32, discard method: DiscardMethod) -> Result<Int, HostIOError> {
        switch op {
        case .read(let offset, let buffers):
            return transfer(buffers, offset: offset, fd: fd, write: false)
        case .write(let offset, let buffers):
            return transfer(buffers, offset: offset, fd: fd, write: true)
        case .flush:
            while fdatasync(fd) != 0 {
                if errno != EINTR { return .failure(.system(errno: errno)) }
            }
            return .success(0)
        case .discard(let offset, let length):
            return discard(fd: fd, offset: offset, length: length, method: method)
        }
    }

    /// Whether `[offset, offset + length)` is a range of file offsets
    /// (off_t is signed: past Int64.max the kernel says EINVAL).
    static func isValidRange(offset: UInt64, length: UInt64) -> Bool {
        offset <= UInt64(Int64.max) && length <= UInt64(Int64.max) - offset
    }

    /// Hole punching keeps the file's size (FALLOC_FL_KEEP_SIZE); file
    /// systems and devices without it say EOPNOTSUPP, which is `.unsupported`.
    static func discard(fd: Int32, offset: UInt64, length: UInt64, method: DiscardMethod) -> Result<Int, HostIOError> {
        guard isValidRange(offset: offset, length: length) else { return .failure(.system(errno: EINVAL)) }
        let r: Int32
        switch method {
        case .punchHole: r = pvh_punch_hole(fd, Int64(offset), Int64(length))
        case .blockDiscard: r = pvh_block_discard(fd, offset, length)
        }
        return discardResult(r)
    }

    /// A discard's 0 or -errno as a result (shared with io_uring's CQE).
    static func discardResult(_ r: Int32) -> Result<Int, HostIOError> {
        if r >= 0 { return .success(0) }
        return .failure(-r == EOPNOTSUPP ? .unsupported : .system(errno: -r))
    }

    /// Moves every byte of `buffers` at `offset` (pwritev, or preadv),
    /// continuing after partial transfers; stops short only at end of file
    /// (`.short`) or on an error.
    static func transfer(_ buffers: [HostMemoryRange], offset: UInt64, fd: Int32, write: Bool) -> Result<Int, HostIOError> {
        let list = IOVectorList(buffers)
        guard isValidRange(offset: offset, length: UInt64(list.expected)) else { return .failure(.system(errno: EINVAL)) }
        while !list.isComplete {
            // SAFETY: the vectors stay valid and unchanged while `list` lives
            // and until the next advance, which comes after the call; they
            // name guest memory the list's buffers keep mapped.
            let (iov, count) = unsafe list.remaining
            let at = off_t(offset) + off_t(list.transferred)
            let n = unsafe write ? pwritev(fd, iov, count, at) : preadv(fd, iov, count, at)
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(.system(errno: errno))
            }
            if n == 0 { return .failure(.short(transferred: list.transferred, expected: list.expected)) }
            list.advance(by: n)
        }
        return .success(list.expected)
    }
}
