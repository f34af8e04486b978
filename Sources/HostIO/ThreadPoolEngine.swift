#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Runs requests on worker threads with the same system calls as the
/// synchronous engine (preadv/pwritev straight into guest pages, fdatasync,
/// hole punching or BLKDISCARD).
///
/// Why it exists: io_uring can be missing or refused (a kernel before 5.6,
/// `kernel.io_uring_disabled`, a container's seccomp profile), and the block
/// backend must still never do file I/O on its queue's thread, so this is
/// the fallback `BlockBackingFile.makeEngine(.automatic)` picks. Each
/// request costs a thread hop and a system call of its own, which is what
/// io_uring saves.
///
/// Workers are started as the queue needs them, up to `threadCount`: one
/// at first, and another whenever a request is queued while every started
/// worker is busy. With O_DIRECT a worker holds one request in the device
/// for its whole latency, so a guest queueing 32 random reads needs about
/// as many workers to keep 32 in the device (QEMU's thread pool grows to
/// 64 for the same reason); a queue that only ever has one request out
/// keeps one thread. Started workers stay until shutdown.
///
/// Guarantees (those of `BlockIOEngine`):
/// - Every accepted request completes exactly once. Completions are handed
///   to the handler in batches from the worker threads (whatever has
///   finished while the previous batch was being handled), never
///   concurrently: one worker at a time delivers, the others keep doing I/O.
/// - The queue is bounded (`queueDepth`): a submitter finding it full waits
///   until a worker takes a request, which is at most one I/O's time, not
///   the whole queue's. Nothing is dropped. The pool's own threads (a
///   completion handler that submits) never wait: they could be the ones
///   that would have to make room.
/// - `shutdown()` lets the workers finish the queue and deliver every
///   completion, then the threads end. Called from the completion handler it
///   only starts that (a thread cannot wait for itself to finish). Requests
///   submitted once shutdown has begun complete with `.shutDown` on the
///   submitting thread, before `submit` returns.
///
/// The engine keeps its `BlockBackingFile` (so the descriptor) alive until
/// `shutdown()` has returned, and its workers keep the engine alive until
/// then: it must be shut down.
public final class ThreadPoolEngine: BlockIOEngine, @unchecked Sendable {
    // SAFETY (Sendable): the `let`s are immutable; every `var` below
    // `condition` is read and written only with `condition` locked.

    /// The most worker threads when the caller does not say: what a
    /// single-page blkif ring holds (BLK_RING_SIZE 32), so a full ring's
    /// requests are all in the kernel at once, as with io_uring.
    public static let defaultThreadCount = 32

    /// The queue bound when the caller does not say: what a multi-page blkif
    /// ring holds, as `IOUringEngine.defaultDepth`.
    public static let defaultQueueDepth = 128

    /// The most worker threads (started as needed).
    public let threadCount: Int
    /// The most requests waiting for a worker.
    public let queueDepth: Int

    let fd: Int32
    let discard: DiscardMethod
    let onComplete: @Sendable ([BlockIOCompletion]) -> Void

    private let condition = NSCondition()
    private var queue = FIFO<BlockIORequest>()
    /// Accepted requests whose completion the handler has not yet returned from.
    private var outstanding = 0
    /// Completions waiting for the delivering worker.
    private var finished: [BlockIOCompletion] = []
    private var delivering = false
    private var closing = false
    /// Submitters waiting for room in the queue.
    private var waitingSubmitters = 0
    /// Workers not yet ended, those waiting for a request, and the ones
    /// that have started (by thread).
    private var alive = 0
    private var idle = 0
    private var workers: [pthread_t] = []
    private let name: String
    /// What keeps `fd` open (a `BlockBackingFile`), until the last worker ends.
    private var owner: (AnyObject & Sendable)?

    /// A pool of `threads` workers (at least 1) for `file`, with room for
    /// `queueDepth` (at least 1) waiting requests.
    public convenience init(file: BlockBackingFile, threads: Int = defaultThreadCount, queueDepth: Int = defaultQueueDepth,
                            onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) {
        self.init(fileDescriptor: file.fileDescriptor, discard: file.discardMethod, owner: file, threads: threads, queueDepth: queueDepth,
                  name: "pvh-blk-pool", onComplete: onComplete)
    }

    init(fileDescriptor: Int32, discard: DiscardMethod, owner: (AnyObject & Sendable)?, threads: Int, queueDepth: Int, name: String,
         onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) {
        fd = fileDescriptor
        self.discard = discard
        self.owner = owner
        self.onComplete = onComplete
        threadCount = max(1, threads)
        self.queueDepth = max(1, queueDepth)
        self.name = name
        condition.lock()
        startWorker()
        condition.unlock()
    }

    /// The number of workers started so far (at most `threadCount`).
    public var startedWorkers: Int {
        condition.lock()
        defer { condition.unlock() }
        return alive
    }

    /// With `condition` locked: one more worker (it counts as idle until it
    /// has looked at the queue, so that one queued request starts one).
    private func startWorker() {
        alive += 1
        idle += 1
        EngineThread.start(name: name) { [self] in work() }
    }

    public func submit(_ requests: [BlockIORequest]) {
        guard !requests.isEmpty else { return }
        var refused: ArraySlice<BlockIORequest> = []
        condition.lock()
        let mayWait = !workers.contains(EngineThread.current)
        for (i, r) in requests.enumerated() {
            while !closing, mayWait, queue.count >= queueDepth {
                condition.broadcast()  // the workers take what is queued
                waitingSubmitters += 1
                condition.wait()
                waitingSubmitters -= 1
            }
            if closing {
                refused = requests[i...]
                break
            }
            queue.append(r)
            outstanding += 1
            if !closing, queue.count > idle, alive < threadCount { startWorker() }
        }
        condition.broadcast()
        condition.unlock()
        if !refused.isEmpty { onComplete(refused.map { BlockIOCompletion(tag: $0.tag, result: .failure(.shutDown)) }) }
    }

    public func shutdown() {
        condition.lock()
        closing = true
        condition.broadcast()
        if !workers.contains(EngineThread.current) {
            while alive > 0 { condition.wait() }
        }
        condition.unlock()
    }

    /// A worker: takes requests until the engine is closing and everything
    /// accepted has been delivered.
    private func work() {
        condition.lock()
        workers.append(EngineThread.current)
        while true {
            while queue.isEmpty, !(closing && outstanding == 0) { condition.wait() }
            guard let request = queue.popFirst() else { break }
            idle -= 1
            if waitingSubmitters > 0 { condition.broadcast() }
            condition.unlock()
            let result = HostFileIO.perform(request.operation, fd: fd, discard: discard)
            condition.lock()
            finished.append(BlockIOCompletion(tag: request.tag, result: result))
            // Idle from here: a request the handler (or anyone) submits
            // meanwhile is this worker's next, not a reason for another.
            idle += 1
            deliver()
        }
        idle -= 1
        alive -= 1
        // The last worker lets the file go (closing it, if this was the last
        // reference), so that happens before shutdown() returns; the workers
        // hold the engine a moment longer.
        if alive == 0 { owner = nil }
        condition.broadcast()
        condition.unlock()
    }

    /// With `condition` locked: unless another worker is delivering, hands
    /// the finished completions to the handler, in batches, until none is
    /// left. The handler runs unlocked (it may submit).
    private func deliver() {
        guard !delivering else { return }
        delivering = true
        while !finished.isEmpty {
            let batch = finished
            finished = []
            condition.unlock()
            onComplete(batch)
            condition.lock()
            outstanding -= batch.count
        }
        delivering = false
        // The last delivery of a closing engine lets idle workers end.
        if closing, outstanding == 0 { condition.broadcast() }
    }
}
