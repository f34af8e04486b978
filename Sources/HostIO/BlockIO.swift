import GuestMemory

/// Why a host I/O failed: the errno the host reported, or an operation the
/// backing cannot do. Closed; the block backend answers every one of them
/// with BLKIF_RSP_ERROR (or EOPNOTSUPP for `.unsupported`).
public enum HostIOError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The system call failed with this errno.
    case system(errno: Int32)
    /// A read or write moved fewer bytes than asked (end of file, or a
    /// device that stopped short).
    case short(transferred: Int, expected: Int)
    /// The backing cannot do this operation (e.g. discard on a file system
    /// without hole punching).
    case unsupported
    /// The engine was shut down before the request could be started.
    case shutDown

    public var description: String {
        switch self {
        case .system(let e): "errno \(e)"
        case .short(let t, let e): "short transfer: \(t) of \(e) bytes"
        case .unsupported: "operation not supported by the backing"
        case .shutDown: "engine shut down"
        }
    }
}

/// One operation on a backing file. Buffers are guest pages (host memory
/// behind granted frames): data moves straight between them and the file.
public enum BlockIOOperation: Sendable {
    /// preadv at `offset` into `buffers`, in order.
    case read(offset: UInt64, into: [HostMemoryRange])
    /// pwritev at `offset` from `buffers`, in order.
    case write(offset: UInt64, from: [HostMemoryRange])
    /// fdatasync: everything completed before it is on stable storage.
    case flush
    /// Deallocates `[offset, offset + length)`: a punched hole in a file,
    /// BLKDISCARD on a block device.
    case discard(offset: UInt64, length: UInt64)

    /// Bytes a read or write moves; 0 for the others.
    public var byteCount: Int {
        switch self {
        case .read(_, let b), .write(_, let b): b.reduce(0) { $0 + $1.count }
        case .flush, .discard: 0
        }
    }
}

/// A request to an engine; `tag` is the submitter's and comes back in its
/// completion.
public struct BlockIORequest: Sendable {
    public var tag: UInt64
    public var operation: BlockIOOperation
    public init(tag: UInt64, operation: BlockIOOperation) {
        self.tag = tag
        self.operation = operation
    }
}

/// The end of one request: bytes moved (0 for flush and discard) or why not.
/// A read or write that moved fewer bytes than asked is `.short`, never a
/// success.
public struct BlockIOCompletion: Hashable, Sendable {
    public var tag: UInt64
    public var result: Result<Int, HostIOError>
    public init(tag: UInt64, result: Result<Int, HostIOError>) {
        self.tag = tag
        self.result = result
    }
}

/// Runs block I/O against one open backing file. Each submitted request
/// completes exactly once, through the completion handler the engine was
/// made with, in any order; the handler must not block (the block backend
/// hands completions to its queue's execution context). Engines are
/// thread-safe; a queue usually owns one.
public protocol BlockIOEngine: AnyObject, Sendable {
    /// Starts `requests` (as one batch where the engine can: one
    /// io_uring_submit). Requests beyond the engine's depth wait inside it.
    func submit(_ requests: [BlockIORequest])
    /// Completes every request submitted so far (in-flight ones finish;
    /// none is dropped), then frees the engine's threads and rings. Requests
    /// submitted afterwards complete with `.shutDown`.
    func shutdown()
}

/// Who hands an engine's completions to its owner.
public enum BlockIOCompletionReaping: Hashable, Sendable {
    /// A thread of the engine's calls the completion handler (the io_uring
    /// reaper, the pool's workers).
    case engineThread
    /// The owner collects them on its own thread (`CallerReapedBlockIOEngine`),
    /// where io_uring can do that; the thread engines deliver on their
    /// threads whatever is asked.
    case caller
}

/// An engine whose completions its owner reaps on its own thread instead of
/// being handed them by a thread of the engine's.
///
/// Why: a completion that goes through an engine thread costs two thread
/// wake-ups before the owner sees it (the engine thread's, then the
/// owner's). Here the owner's thread sleeps in `waitForCompletions`, which
/// the kernel wakes itself when a completion is posted (io_uring's
/// registered eventfd), and `reap` takes what is ready without waiting. The
/// block backend's queue context sleeps this way (its doorbell), so a
/// finished read wakes exactly the thread that answers the guest.
///
/// `reap` and `waitForCompletions` are called from one thread at a time
/// (the owner's); `wake` and `submit` from any. The completion handler the
/// engine was made with still gets what `shutdown` reaps, and the
/// `.shutDown` answers to requests submitted after it.
public protocol CallerReapedBlockIOEngine: BlockIOEngine {
    /// The completions ready now (in the order the kernel posted them),
    /// without waiting. Continues short transfers and starts requests
    /// waiting for a slot, as an engine thread would.
    func reap() -> [BlockIOCompletion]
    /// Blocks until a completion is ready to reap or `wake()` was called
    /// since the last return (a wake before the wait is not lost). True when
    /// completions are ready; false for a wake alone, or after shutdown.
    func waitForCompletions() -> Bool
    /// Makes the current or next `waitForCompletions` return.
    func wake()
    /// Whether a completion is ready to reap, without waiting or reaping
    /// (what a polling owner looks at before it sleeps). False after shutdown.
    func hasCompletions() -> Bool
    /// Whether `operation`'s completion comes from the device alone, with
    /// no host thread working for it meanwhile (an O_DIRECT read or write
    /// that io_uring issues inline), so the owner may poll for it
    /// (`hasCompletions`) without taking the CPU that would produce it.
    /// False for what may run on a kernel or engine thread (io_uring's
    /// io-wq, the thread pool): on a host with few CPUs a poller delays
    /// that thread (measured: 4 KiB write + flush fell from 0.72-0.83 of
    /// fio's IOPS to 0.46-0.68 while the queue polled through its writes
    /// and flushes).
    func completesWithoutHostThread(_ operation: BlockIOOperation) -> Bool
    /// Runs `operation` on the calling thread and returns its result
    /// (`.shutDown` once the engine is shutting down), instead of
    /// `submit`ting it. For an owner with nothing else in flight and an
    /// operation that would wait for a host thread anyway (not
    /// `completesWithoutHostThread`): the owner's thread sleeps in the
    /// system call and the disk's interrupt wakes that same thread, where
    /// through the engine io-wq's worker would be woken to issue it and the
    /// owner woken again by its completion, two cross-CPU wake-ups of
    /// 25-55 µs each on the 2-CPU hosts pvh is measured on. Firecracker's
    /// default block engine runs every request this way.
    func performInline(_ operation: BlockIOOperation) -> Result<Int, HostIOError>
}
