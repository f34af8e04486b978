#if canImport(Glibc)
import Glibc
#endif
import CHostIO
import Dispatch
import Foundation
import Locking

/// Why io_uring cannot be used; the caller falls back to the thread pool.
public enum IOUringUnavailable: Error, Hashable, Sendable, CustomStringConvertible {
    /// io_uring_setup(2) says ENOSYS: a kernel without CONFIG_IO_URING, or a
    /// seccomp filter that answers ENOSYS.
    case notImplemented
    /// io_uring_setup(2) says EPERM: `kernel.io_uring_disabled` (its value,
    /// when /proc says it: 2 for everyone, 1 for those outside
    /// `kernel.io_uring_group`), or a seccomp filter or LSM.
    case notPermitted(ioUringDisabled: Int?)
    /// The kernel lacks an operation the engine uses (IORING_OP_FALLOCATE
    /// and the opcode probe came in Linux 5.6).
    case missingOperations
    /// io_uring_setup(2) failed otherwise (ENOMEM: before Linux 5.12 rings
    /// count against RLIMIT_MEMLOCK).
    case setupFailed(errno: Int32)

    public var description: String {
        switch self {
        case .notImplemented: "io_uring is not available (io_uring_setup: ENOSYS)"
        case .notPermitted(let v?): "io_uring is not permitted (io_uring_setup: EPERM; kernel.io_uring_disabled = \(v))"
        case .notPermitted(nil): "io_uring is not permitted (io_uring_setup: EPERM, a seccomp filter or security module)"
        case .missingOperations: "io_uring lacks readv/writev/fsync/fallocate (Linux 5.6 or later needed)"
        case .setupFailed(let e): "io_uring_setup failed: errno \(e)"
        }
    }
}

/// How an `IOUringEngine` hands the SQEs it prepares to the kernel.
public enum IOUringSubmission: Hashable, Sendable {
    /// All prepared at once in one io_uring_enter(2): a single system call,
    /// under one block plug when there are more than two (io_uring/io_uring.c,
    /// `io_submit_state_start`), so the device is told once for the lot.
    case batch
    /// `groups(of: n, below: bytes)`: at most n per io_uring_enter while
    /// every SQE waiting is small (a transfer of fewer than `bytes` bytes
    /// still to move, a flush, a discard): two or
    /// fewer are submitted without a plug, each dispatched to the device as
    /// it comes. Once a larger transfer is prepared, it and what follows
    /// wait for the batch's one io_uring_enter (plugged, so adjacent
    /// sequential requests can merge).
    case groups(of: Int, below: Int)

    /// Small requests two per io_uring_enter, unplugged; 64 KiB and larger
    /// transfers batched: what the VMM's disks use. blkfront hands requests
    /// over one at a time, as fio submits by default
    /// (iodepth_batch_submit=1); a whole batch of 4 KiB random reads at
    /// depth 32 under one plug made this machine's virtio disk serve each
    /// about 50% slower (`pvh-bench block --submission`; README, Benchmarks,
    /// Block I/O), while 1 MiB sequential requests did no worse batched
    /// (the 64 KiB line between them is not measured). An SQPOLL kernel
    /// thread (tried, not kept) submits what it finds under a plug too,
    /// and measured as slow as `.batch`.
    public static let unplugged = IOUringSubmission.groups(of: 2, below: 64 << 10)
}

/// How the completions of O_DIRECT I/O reach the ring. The kernel posts
/// them as task_work queued on the task that submitted the request (the
/// device interrupt does not fill the CQ itself); these modes choose when
/// that task runs it (io_uring_setup(2): IORING_SETUP_COOP_TASKRUN,
/// IORING_SETUP_TASKRUN_FLAG, IORING_SETUP_DEFER_TASKRUN).
///
/// Only a caller-reaped engine (`makeCallerReaped`) takes `.cooperative`
/// or `.deferred`: there the thread that submits is the one that reaps,
/// so the work it leaves waiting is its own. A reaper thread would wait on
/// a ring whose work another thread must run, so an engine with one, and a
/// `.deferred` engine whose side pool would submit (block-device
/// discards), use `.signal`.
public enum IOUringTaskRun: Hashable, Sendable {
    /// The kernel interrupts the submitter (an IPI when it is running) to
    /// run the work at once: io_uring's default, and pvh's.
    case signal
    /// No interruption: the work runs at the submitter's next system call;
    /// the ring's IORING_SQ_TASKRUN flag tells a polling owner to make one
    /// (`reap` does, through io_uring_get_events).
    case cooperative
    /// IORING_SETUP_DEFER_TASKRUN with SINGLE_ISSUER: the work waits until
    /// the one submitting thread (the first to submit; the ring is created
    /// disabled and enabled there) asks for completions, which each
    /// submission does in the same io_uring_enter
    /// (io_uring_submit_and_get_events) and `reap` does when the flag is
    /// up. Every submit and every reap must then come from that thread,
    /// and a shutdown with requests still in flight too (another thread
    /// may not reap: io_uring_enter says EEXIST). Not used by the VMM (its
    /// stop shuts the engine down off the queue's thread); the bench's
    /// `--taskrun deferred` measures it.
    case deferred

    var shimValue: Int32 {
        switch self {
        case .signal: Int32(PVH_URING_TASKRUN_SIGNAL)
        case .cooperative: Int32(PVH_URING_TASKRUN_COOPERATIVE)
        case .deferred: Int32(PVH_URING_TASKRUN_DEFERRED)
        }
    }
}

/// Runs block I/O through one io_uring (io_uring(7)), via Debian's liburing.
///
/// Why io_uring: a batch of requests (all a guest put on its ring before
/// one notification) enters the kernel in a few io_uring_enter calls
/// (`IOUringSubmission`), and completions come back in batches to one
/// thread, so there is no thread hop and no system call per request, which
/// the thread pool pays. Why our
/// own wrapper: no maintained Swift io_uring package is in the allowed set
/// (the package depends on swift-argument-parser only), and liburing's
/// helpers are static inline functions, so a few C wrappers in CHostIO
/// (`pvh_uring_*`) are all it takes. Swift never sees an SQE or a CQE.
///
/// How it works:
/// - The ring has room for `depth` requests in the kernel; each has a slot
///   (its index is the SQE's user data) holding its iovecs until the CQE
///   comes. Requests beyond that wait in a FIFO inside the engine and start
///   as completions free slots: nothing is dropped, and `submit` never waits
///   for a slot or the device (the kernel does at once what needs no waiting,
///   a page-cache copy, and hands the rest to its io-wq workers). `submit`
///   may be called from any thread; it prepares what fits and submits it as
///   `submission` says, under the engine's lock. The
///   completion queue (twice the submission queue, liburing's default) can
///   never overflow: at most `depth` + 1 requests (a wake-up) are out.
/// - Completions, made with `.engineThread`: one thread (`pvh-uring`) waits
///   for them (io_uring_wait_cqe), takes all that are ready, starts what the
///   freed slots allow, and calls the handler with the batch, never
///   concurrently and never on a submitter's thread (save the `.shutDown`
///   answers below).
/// - Made with `.caller` (`CallerReapedBlockIOEngine`), there is no such
///   thread: an eventfd is registered with the ring (io_uring_register(2),
///   IORING_REGISTER_EVENTFD), so the kernel signals it for every
///   completion it posts; the owner's thread sleeps on it
///   (`waitForCompletions`, which `wake` also ends) and takes completions
///   with `reap`, which does what the reaper thread does, minus the
///   handler. A completion then costs one thread wake-up, the owner's, not
///   two. The owner's thread is usually the one that submits, so the
///   task_work io_uring runs to post an O_DIRECT completion (which the
///   kernel queues to the submitting task) runs on the thread that waits
///   for it anyway.
/// - Short transfers are continued, not reported: a read or write that
///   moved fewer bytes than asked is resubmitted for the rest (as
///   preadv/pwritev are retried in `HostFileIO.transfer`), so `.short` means
///   end of file (a read or write that moved nothing), as in the other
///   engines. So are requests of more than IOV_MAX buffers (in IOV_MAX
///   pieces) and any request that says EINTR.
/// - Discard is IORING_OP_FALLOCATE (punch hole, keep size) on regular
///   files. io_uring has no BLKDISCARD (an ioctl), so on block devices a
///   discard runs on a one-thread pool beside the ring, created on the first
///   one, whose result comes back through the ring (a NOP on that slot) and
///   is delivered with the others: a slow discard (a whole-disk fstrim)
///   never holds up reads and writes, and the handler still runs on one
///   thread only.
/// - `shutdown()` stops taking requests (later ones complete with
///   `.shutDown` on the submitting thread), waits until everything accepted
///   has completed and been delivered, then the thread ends and the ring is
///   torn down. From the completion handler it only starts that and
///   returns. A caller-reaped engine's `shutdown()` reaps what is still in
///   the kernel itself (to the handler) before tearing the ring down; its
///   owner has stopped reaping by then (a `reap` meanwhile is safe, it
///   shares the lock, and finds nothing once the ring is gone).
///
/// The engine keeps its `BlockBackingFile` (so the descriptor) alive until
/// `shutdown()` has returned, and its thread keeps the engine alive until
/// then: it must be shut down.
@safe public final class IOUringEngine: BlockIOEngine, @unchecked Sendable {
    // SAFETY (Sendable): the `let`s are immutable. The ring's submission
    // side (prep, submit) is used only with `state` locked; its completion
    // side (reap) only by the reaper thread, or, caller-reaped, only with
    // `state` locked (peek, cq_ready) or by the one thread shutting down
    // (its timed wait reads the completion queue's indices and takes
    // nothing). liburing's wait_cqe and
    // submit touch disjoint halves of the ring (io_uring_wait_cqe enters the
    // kernel with to_submit = 0 and never reads the SQ tail), so the two may
    // run at once. The ring is destroyed by the reaper once it has left its
    // loop, which it does only when the engine is closing and no slot is
    // used, after which no submitter touches the ring. Each `unsafe` use of
    // `ring` below relies on this ("the ring is alive").

    /// The requests in the kernel at once when the caller does not say: as
    /// many as a multi-page blkif ring (BLK_RING_SIZE for 4 pages) holds.
    public static let defaultDepth = 128

    /// Requests the engine has in the kernel at once (more wait inside it).
    public let depth: Int

    /// How prepared SQEs reach the kernel.
    public let submission: IOUringSubmission

    /// When the submitter runs the task_work that posts completions (what
    /// was asked, less what this engine cannot use: see `IOUringTaskRun`).
    public let taskRun: IOUringTaskRun

    private let ring: OpaquePointer
    private let fd: Int32
    private let discard: DiscardMethod
    private let onComplete: @Sendable ([BlockIOCompletion]) -> Void
    /// Caller-reaped: the eventfd the kernel signals per completion (and
    /// `wake` writes); nil with a reaper thread. Closed in deinit, not at
    /// shutdown: the owner's thread may still be sleeping on it.
    private let completionEvent: Int32?
    /// Caller-reaped: room for one peek's completions.
    private let completionCapacity: Int
    private let state: Lock<State>
    /// Signalled once when the reaper has torn the ring down; each waiter
    /// passes the signal on, so any number of `shutdown()` callers return.
    private let ended = DispatchSemaphore(value: 0)

    /// The user data of the wake-up NOP (slots are 0..<depth).
    private static let wakeUserData = UInt64.max

    /// Makes an engine for `file` with room for `depth` requests in the
    /// kernel (clamped to 1...16384), or says why io_uring cannot be used.
    public static func make(file: BlockBackingFile, depth: Int = defaultDepth, submission: IOUringSubmission = .batch,
                            onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) throws(IOUringUnavailable) -> IOUringEngine {
        try IOUringEngine(fileDescriptor: file.fileDescriptor, discard: file.discardMethod, owner: file, depth: depth,
                          submission: submission, onComplete: onComplete)
    }

    /// As `make`, with no reaper thread: the caller reaps (see
    /// `CallerReapedBlockIOEngine`); `onComplete` gets only what `shutdown`
    /// reaps and the `.shutDown` answers.
    public static func makeCallerReaped(file: BlockBackingFile, depth: Int = defaultDepth, submission: IOUringSubmission = .batch,
                                        taskRun: IOUringTaskRun = .signal,
                                        onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) throws(IOUringUnavailable) -> CallerReapedIOUring {
        CallerReapedIOUring(try IOUringEngine(fileDescriptor: file.fileDescriptor, discard: file.discardMethod, owner: file, depth: depth,
                                              submission: submission, reaping: .caller, taskRun: taskRun, onComplete: onComplete))
    }

    init(fileDescriptor: Int32, discard: DiscardMethod, owner: (AnyObject & Sendable)?, depth: Int,
         submission: IOUringSubmission = .batch, reaping: BlockIOCompletionReaping = .engineThread,
         taskRun requested: IOUringTaskRun = .signal,
         onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) throws(IOUringUnavailable) {
        // IORING_MAX_ENTRIES is 32768; one entry more than the slots for the wake-up.
        let depth = min(max(depth, 1), 16384)
        let taskRun: IOUringTaskRun = switch (requested, reaping) {
        case (_, .engineThread): .signal
        case (.deferred, .caller) where discard == .blockDiscard: .signal
        case (let t, .caller): t
        }
        var error: Int32 = 0
        // SAFETY: `error` is a valid Int32 for the call.
        guard let ring = unsafe pvh_uring_create_taskrun(UInt32(depth + 1), taskRun.shimValue, &error) else {
            switch error {
            case ENOSYS: throw .notImplemented
            case EPERM: throw .notPermitted(ioUringDisabled: Self.ioUringDisabledSysctl())
            default: throw .setupFailed(errno: error)
            }
        }
        // SAFETY: the ring was just made and is not shared yet.
        guard unsafe pvh_uring_supports_block_ops(ring) != 0 else {
            unsafe pvh_uring_destroy(ring)
            throw .missingOperations
        }
        var event: Int32?
        if reaping == .caller {
            let fd = pvh_blocking_eventfd()
            // SAFETY: as above.
            let registered = fd < 0 ? fd : unsafe pvh_uring_register_eventfd(ring, fd)
            guard registered >= 0 else {
                if fd >= 0 { close(fd) }
                unsafe pvh_uring_destroy(ring)
                throw .setupFailed(errno: -registered)
            }
            event = fd
        }
        completionEvent = event
        unsafe self.ring = ring
        self.depth = depth
        self.submission = submission
        self.taskRun = taskRun
        fd = fileDescriptor
        self.discard = discard
        self.onComplete = onComplete
        state = Lock(State(depth: depth, owner: owner))
        // SAFETY: as above.
        let completionCapacity = Int(unsafe pvh_uring_cq_entries(ring))
        self.completionCapacity = completionCapacity
        if event == nil {
            EngineThread.start(name: "pvh-uring") { [self] in reap(capacity: completionCapacity) }
        }
    }

    deinit {
        if let completionEvent { close(completionEvent) }
    }

    /// `CallerReapedBlockIOEngine.performInline`: the operation's system
    /// calls on this thread (as the thread engines make them), with the file
    /// kept open meanwhile; `.shutDown` once the engine is closing.
    func performInline(_ operation: BlockIOOperation) -> Result<Int, HostIOError> {
        // nil: closing. The owner (when there is one) holds the descriptor
        // open until the call has returned, even if a shutdown meanwhile
        // tears the ring down and lets go of its own reference.
        let keep: (AnyObject & Sendable)?? = state.withLock { s in s.closing ? nil : .some(s.owner) }
        guard let keep else { return .failure(.shutDown) }
        return withExtendedLifetime(keep) { HostFileIO.perform(operation, fd: fd, discard: discard) }
    }

    /// /proc/sys/kernel/io_uring_disabled (Linux 6.6), to say why EPERM.
    private static func ioUringDisabledSysctl() -> Int? {
        (try? String(contentsOfFile: "/proc/sys/kernel/io_uring_disabled", encoding: .utf8))
            .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    public func submit(_ requests: [BlockIORequest]) {
        guard !requests.isEmpty else { return }
        var sideRequests: [BlockIORequest] = []
        let accepted = state.withLock { s -> Bool in
            guard !s.closing else { return false }
            if taskRun == .deferred, !s.enabled {
                // The submitting thread becomes the ring's only issuer.
                // SAFETY: the ring is alive (before `closing`).
                let r = unsafe pvh_uring_enable(ring)
                precondition(r == 0, "io_uring_enable_rings: errno \(-r)")
                s.enabled = true
            }
            s.pending.append(contentsOf: requests)
            startPending(&s, side: &sideRequests)
            submitPrepared(&s)
            return true
        }
        guard accepted else {
            onComplete(requests.map { BlockIOCompletion(tag: $0.tag, result: .failure(.shutDown)) })
            return
        }
        submitSide(sideRequests)
    }

    public func shutdown() {
        if completionEvent != nil {
            shutdownCallerReaped()
            return
        }
        let onReaper = state.withLock { s -> Bool in
            if !s.closing, s.used == 0 {
                // Nothing is out to complete: wake the reaper so it sees `closing`.
                // (Once closing, the reaper may have torn the ring down: only the
                // first call may touch it.)
                wake(&s)
            }
            s.closing = true
            return s.reaper == EngineThread.current
        }
        // The reaper cannot wait for itself: it ends after the handler returns.
        if onReaper { return }
        ended.wait()
        ended.signal()
    }

    // MARK: - State (all of it under `state`'s lock)

    /// What one slot's request is doing.
    private enum Work {
        /// A read or write; `offset` is where it started, `vectors` knows how
        /// far it has got.
        case transfer(write: Bool, offset: UInt64, vectors: IOVectorList)
        case flush
        /// Hole punching (IORING_OP_FALLOCATE).
        case punchHole(offset: UInt64, length: UInt64)
        /// BLKDISCARD on the side pool; its result comes back as `answered`.
        case sideDiscard
        /// A result known without the kernel doing the work (a range past
        /// off_t, nothing to move, the side pool's answer), delivered by the
        /// reaper through a NOP like every other completion.
        case answered(Result<Int, HostIOError>)

        var isAnswered: Bool {
            if case .answered = self { true } else { false }
        }
    }

    private struct Slot {
        var tag: UInt64
        var work: Work
    }

    private struct State {
        /// A request per used slot; the index is the SQE's user data.
        var slots: [Slot?]
        /// Unused slots (the lowest first).
        var free: [Int]
        /// Requests waiting for a slot, oldest first.
        var pending = FIFO<BlockIORequest>()
        /// SQEs prepared whose CQE has not been reaped.
        var awaited = 0
        var closing = false
        var wakeQueued = false
        var reaper: pthread_t?
        /// The block-device discard pool, made on the first one.
        var side: ThreadPoolEngine?
        /// What keeps `fd` open, until the ring is torn down.
        var owner: (AnyObject & Sendable)?
        /// Caller-reaped: the ring has been torn down (by `shutdown`).
        var destroyed = false
        /// `.groups`: a large transfer is prepared, so what is prepared now
        /// waits for the next `submitPrepared` (which clears this).
        var batching = false
        /// `.deferred`: the ring was enabled by its issuer (the first submit).
        var enabled = false

        init(depth: Int, owner: (AnyObject & Sendable)?) {
            slots = Array(repeating: nil, count: depth)
            free = Array((0..<depth).reversed())
            self.owner = owner
        }

        var used: Int { slots.count - free.count }
    }

    /// Gives waiting requests the free slots, in order. Block-device
    /// discards it starts are added to `side`, for the side pool once the
    /// lock is released.
    private func startPending(_ s: inout State, side: inout [BlockIORequest]) {
        while !s.free.isEmpty, let request = s.pending.popFirst() {
            let i = s.free.removeLast()
            let work: Work
            switch request.operation {
            case .read(let offset, let buffers), .write(let offset, let buffers):
                let vectors = IOVectorList(buffers)
                if !HostFileIO.isValidRange(offset: offset, length: UInt64(vectors.expected)) {
                    work = .answered(.failure(.system(errno: EINVAL)))
                } else if vectors.isComplete {
                    work = .answered(.success(0))
                } else {
                    let write = if case .write = request.operation { true } else { false }
                    work = .transfer(write: write, offset: offset, vectors: vectors)
                }
            case .flush:
                work = .flush
            case .discard(let offset, let length):
                if !HostFileIO.isValidRange(offset: offset, length: length) {
                    work = .answered(.failure(.system(errno: EINVAL)))
                } else if discard == .blockDiscard {
                    work = .sideDiscard
                    if s.side == nil {
                        // No owner of its own: this engine keeps the file open until
                        // the pool has been shut down.
                        s.side = ThreadPoolEngine(fileDescriptor: fd, discard: .blockDiscard, owner: nil, threads: 1, queueDepth: depth,
                                                  name: "pvh-uring-disc") { [self] in sideFinished($0) }
                    }
                    side.append(BlockIORequest(tag: UInt64(i), operation: request.operation))
                } else {
                    work = .punchHole(offset: offset, length: length)
                }
            }
            s.slots[i] = Slot(tag: request.tag, work: work)
            if case .sideDiscard = work { continue }
            prepare(i, &s)
        }
    }

    /// Prepares the SQE for slot `i`'s work (the rest of it, for a transfer
    /// under way). The SQ always has room: it has an entry per slot and one
    /// for the wake-up, and each has at most one SQE out.
    private func prepare(_ i: Int, _ s: inout State) {
        guard let slot = s.slots[i] else { preconditionFailure("io_uring engine: preparing an unused slot") }
        let userData = UInt64(i)
        let r: Int32
        switch slot.work {
        case .transfer(let write, let offset, let vectors):
            // SAFETY: the vectors live in `vectors`, which the slot holds
            // until this request's completion has been reaped, and do not
            // change until then (advance runs after the CQE). They name guest
            // memory the list's buffers keep mapped. The ring is alive (a
            // slot is in use).
            let (iov, count) = unsafe vectors.remaining
            let at = offset + UInt64(vectors.transferred)
            r = unsafe write ? pvh_uring_prep_writev(ring, fd, iov, UInt32(count), at, userData)
                : pvh_uring_prep_readv(ring, fd, iov, UInt32(count), at, userData)
        case .flush:
            // SAFETY (the three below): the ring is alive (a slot is in use).
            r = unsafe pvh_uring_prep_fdatasync(ring, fd, userData)
        case .punchHole(let offset, let length):
            r = unsafe pvh_uring_prep_punch_hole(ring, fd, offset, length, userData)
        case .answered:
            r = unsafe pvh_uring_prep_nop(ring, userData)
        case .sideDiscard:
            preconditionFailure("io_uring engine: a side discard has no SQE")
        }
        precondition(r == 0, "io_uring engine: no SQE free for a slot")
        s.awaited += 1
        switch submission {
        case .batch: break
        case .groups(let n, let below):
            if case .transfer(_, _, let vectors) = slot.work, vectors.expected - vectors.transferred >= below { s.batching = true }
            // SAFETY: the ring is alive (a slot is in use).
            if !s.batching, unsafe pvh_uring_sq_unconsumed(ring) >= n { submitPrepared(&s) }
        }
    }

    /// Queues the wake-up NOP (one at a time).
    private func wake(_ s: inout State) {
        guard !s.wakeQueued else { return }
        // SAFETY: the ring is alive (called only before `closing` is set).
        precondition(unsafe pvh_uring_prep_nop(ring, Self.wakeUserData) == 0, "io_uring engine: no SQE free for the wake-up")
        s.wakeQueued = true
        s.awaited += 1
        submitPrepared(&s)
    }

    /// Hands every prepared SQE to the kernel (io_uring_submit, as many
    /// times as it takes). io_uring_enter(2) may take fewer than offered or
    /// say EAGAIN/EBUSY when short of resources; the rest then stays in the
    /// SQ and goes with the next submit, which the reaper makes after each
    /// batch of completions. Only when no completion is coming does this
    /// retry at once. Any other error means the ring itself is broken.
    private func submitPrepared(_ s: inout State) {
        s.batching = false
        // SAFETY (the calls below): the ring is alive (callers hold the lock
        // with a slot in use or before `closing`).
        while unsafe pvh_uring_sq_unconsumed(ring) > 0 {
            // Deferred task_work runs only when asked for: each submission
            // also posts what has completed meanwhile, in the same system call.
            let r = unsafe taskRun == .deferred ? pvh_uring_submit_and_get_events(ring) : pvh_uring_submit(ring)
            if r > 0 || r == -EINTR { continue }
            precondition(r == 0 || r == -EAGAIN || r == -EBUSY, "io_uring_submit: errno \(-r)")
            if s.awaited > Int(unsafe pvh_uring_sq_unconsumed(ring)) { return }
            sched_yield()
        }
    }

    /// Turns one CQE into the end of its request (appended to `done`), or
    /// into the next SQE of a transfer under way or an interrupted request.
    private func complete(userData: UInt64, result res: Int32, _ s: inout State, into done: inout [BlockIOCompletion]) {
        s.awaited -= 1
        if userData == Self.wakeUserData {
            s.wakeQueued = false
            return
        }
        guard userData < UInt64(s.slots.count), let slot = s.slots[Int(userData)] else {
            preconditionFailure("io_uring engine: a completion for an unused slot")
        }
        let i = Int(userData)
        if res == -EINTR, !slot.work.isAnswered {
            prepare(i, &s)
            return
        }
        let result: Result<Int, HostIOError>
        switch slot.work {
        case .transfer(_, _, let vectors):
            if res < 0 {
                result = .failure(.system(errno: -res))
            } else if res == 0 {
                result = .failure(.short(transferred: vectors.transferred, expected: vectors.expected))
            } else {
                vectors.advance(by: Int(res))
                guard vectors.isComplete else {
                    prepare(i, &s)
                    return
                }
                result = .success(vectors.expected)
            }
        case .flush:
            result = res < 0 ? .failure(.system(errno: -res)) : .success(0)
        case .punchHole:
            result = HostFileIO.discardResult(res)
        case .answered(let r):
            result = r
        case .sideDiscard:
            preconditionFailure("io_uring engine: a side discard completes as answered")
        }
        s.slots[i] = nil
        s.free.append(i)
        done.append(BlockIOCompletion(tag: slot.tag, result: result))
    }

    /// The side pool's results: each goes back through the ring, so the
    /// reaper delivers it.
    private func sideFinished(_ completions: [BlockIOCompletion]) {
        state.withLock { s in
            for c in completions {
                let i = Int(c.tag)
                s.slots[i]?.work = .answered(c.result)
                prepare(i, &s)
            }
            submitPrepared(&s)
        }
    }

    private func submitSide(_ requests: [BlockIORequest]) {
        guard !requests.isEmpty else { return }
        // The pool exists: startPending made it before adding to `requests`,
        // and only the reaper, once no slot is used, takes it away.
        state.withLock { $0.side }?.submit(requests)
    }

    /// The completion thread: reaps CQEs in batches and delivers them until
    /// the engine is closing and no request is left, then tears down.
    private func reap(capacity: Int) {
        state.withLock { $0.reaper = EngineThread.current }
        var userData = [UInt64](repeating: 0, count: capacity)
        var results = [Int32](repeating: 0, count: capacity)
        while !state.withLock({ $0.closing && $0.used == 0 }) {
            // SAFETY: both buffers hold `capacity` elements, the most the
            // call writes, and outlive it.
            let n = unsafe userData.withUnsafeMutableBufferPointer { u in
                unsafe results.withUnsafeMutableBufferPointer { r in
                    unsafe pvh_uring_reap(ring, u.baseAddress, r.baseAddress, UInt32(capacity))
                }
            }
            if n == -EINTR { continue }
            precondition(n >= 0, "io_uring_wait_cqe: errno \(-n)")
            var done: [BlockIOCompletion] = []
            var sideRequests: [BlockIORequest] = []
            state.withLock { s in
                for k in 0..<Int(n) { complete(userData: userData[k], result: results[k], &s, into: &done) }
                startPending(&s, side: &sideRequests)
                submitPrepared(&s)
            }
            submitSide(sideRequests)
            if !done.isEmpty { onComplete(done) }
        }
        let side = state.withLock { s in
            defer { s.side = nil }
            return s.side
        }
        side?.shutdown()
        // SAFETY: closing with no slot in use: nothing touches the ring any
        // more (submit refuses, shutdown's wake-up only precedes `closing`).
        unsafe pvh_uring_destroy(ring)
        // The file may close now (here, if this was the last reference),
        // before shutdown() returns: this thread holds the engine until it
        // has ended, the file it must not.
        state.withLock { $0.owner = nil }
        ended.signal()
    }
}

// MARK: - Caller-reaped completions

extension IOUringEngine {
    /// With the lock held: takes every completion ready now into `done` (as
    /// the reaper thread does, without waiting), then starts what the freed
    /// slots allow. Nothing once the ring is torn down.
    private func takeReady(_ s: inout State, into done: inout [BlockIOCompletion], side: inout [BlockIORequest]) {
        guard !s.destroyed else { return }
        let capacity = completionCapacity
        while true {
            // SAFETY: both buffers hold `capacity` elements, the most the
            // peek writes, and live until the closure returns; the ring is
            // alive (not destroyed, and destroyed only with the lock held).
            let n = unsafe withUnsafeTemporaryAllocation(of: UInt64.self, capacity: capacity) { u in
                unsafe withUnsafeTemporaryAllocation(of: Int32.self, capacity: capacity) { r in
                    let n = Int(unsafe pvh_uring_peek(ring, u.baseAddress, r.baseAddress, UInt32(capacity)))
                    for k in 0..<n { complete(userData: unsafe u[k], result: unsafe r[k], &s, into: &done) }
                    return n
                }
            }
            if n < capacity { break }
        }
        startPending(&s, side: &side)
        submitPrepared(&s)
    }

    /// `CallerReapedBlockIOEngine.reap`.
    func reapReady() -> [BlockIOCompletion] {
        var done: [BlockIOCompletion] = []
        var side: [BlockIORequest] = []
        state.withLock { s in takeReady(&s, into: &done, side: &side) }
        submitSide(side)
        return done
    }

    /// Whether a completion waits to be reaped, posted or (cooperative,
    /// deferred) still task_work that `reap` will run (false once torn down).
    var completionsReady: Bool {
        // SAFETY: the ring is alive while the lock is held and it is not destroyed.
        state.withLock { s in unsafe !s.destroyed && (pvh_uring_cq_ready(ring) > 0 || pvh_uring_work_pending(ring) != 0) }
    }

    /// `CallerReapedBlockIOEngine.waitForCompletions`. The eventfd's count
    /// is reset by the wait, so a completion posted after the last look
    /// (which added to it) ends the next wait at once: none is slept over.
    func waitForCompletionEvent() -> Bool {
        guard let completionEvent else { return false }
        if completionsReady { return true }
        _ = pvh_eventfd_wait(completionEvent)
        return completionsReady
    }

    /// `CallerReapedBlockIOEngine.wake`.
    func signalCompletionEvent() {
        if let completionEvent { _ = pvh_eventfd_signal(completionEvent) }
    }

    /// `shutdown()` of a caller-reaped engine: the first caller reaps until
    /// nothing accepted is left (to the handler), shuts the side pool down
    /// and tears the ring down; later callers wait for that.
    func shutdownCallerReaped() {
        let first = state.withLock { s -> Bool in
            defer { s.closing = true }
            return !s.closing
        }
        guard first else {
            ended.wait()
            ended.signal()
            return
        }
        while true {
            var done: [BlockIOCompletion] = []
            var side: [BlockIORequest] = []
            let busy = state.withLock { s -> Bool in
                takeReady(&s, into: &done, side: &side)
                return s.used > 0
            }
            submitSide(side)
            if !done.isEmpty { onComplete(done) }
            guard busy else { break }
            // A slot in use has its CQE coming (or its side discard's NOP);
            // the timeout only bounds the wait should an owner's `reap` take
            // that completion first. SAFETY: the ring is alive: only this
            // call destroys it, below.
            if unsafe pvh_uring_wait_timeout(ring, 100) == -EEXIST {
                // `.deferred`, off the issuer's thread: only the issuer may
                // run the work that posts these completions (or the kernel's
                // fallback, once that thread has exited); look again soon.
                usleep(1000)
            }
        }
        let side = state.withLock { s in
            defer { s.side = nil }
            return s.side
        }
        side?.shutdown()
        state.withLock { s in
            s.destroyed = true
            // SAFETY: no slot is in use and the engine is closing: nothing
            // submits or reaps any more, and every later look checks
            // `destroyed` under this lock first.
            unsafe pvh_uring_destroy(ring)
            // The file may close now (see the reaper's end).
            s.owner = nil
        }
        ended.signal()
    }
}

/// An `IOUringEngine` made with `.caller` reaping, as the
/// `CallerReapedBlockIOEngine` its owner drives (see both).
public final class CallerReapedIOUring: CallerReapedBlockIOEngine {
    /// The engine (submission, slots, shutdown).
    public let engine: IOUringEngine

    init(_ engine: IOUringEngine) { self.engine = engine }

    public func submit(_ requests: [BlockIORequest]) { engine.submit(requests) }
    public func shutdown() { engine.shutdown() }
    public func reap() -> [BlockIOCompletion] { engine.reapReady() }
    public func waitForCompletions() -> Bool { engine.waitForCompletionEvent() }
    public func wake() { engine.signalCompletionEvent() }
    public func hasCompletions() -> Bool { engine.completionsReady }
    public func performInline(_ operation: BlockIOOperation) -> Result<Int, HostIOError> {
        engine.performInline(operation)
    }
    public func completesWithoutHostThread(_ operation: BlockIOOperation) -> Bool {
        switch operation {
        case .read: true
        // A write must update the file's mtime, which a non-blocking issue
        // may not do (kiocb_modified's -EAGAIN under IOCB_NOWAIT), so
        // io_uring punts many writes to io-wq; IORING_OP_FSYNC always goes
        // there; discard goes to the side pool.
        case .write, .flush, .discard: false
        }
    }
}
