import Dispatch
import Foundation
import Synchronization

/// A device's execution context: one named thread that runs the device's
/// work items (its pumps) one at a time, in the order they were scheduled.
///
/// Scheduling only enqueues: whoever schedules (a guest vCPU in
/// EVTCHNOP_send, the host's console reader, the XenStore server's callback
/// queue) returns at once. This is the model of Firecracker's event manager
/// (one epoll thread per device set, handlers never run on the vCPU thread)
/// and of Linux's per-ring backend threads (xen-blkback's `xen_blkif_schedule`
/// kthread woken by the ring's interrupt; xen-netback's per-queue
/// `xenvif_kthread_guest_rx`).
///
/// Guarantees:
/// - Coalescing: a work item scheduled N times while it waits or runs runs at
///   most once more (a pending flag per item, cleared when the run starts).
/// - No lost wake-up: the flag is cleared under the context's lock before the
///   run starts, so a run sees everything written before any `schedule()`
///   that found the flag clear; a `schedule()` that found it set is covered
///   by the run that has not started yet.
/// - An idle context sleeps on its doorbell: a semaphore, or one the caller
///   gives (`ExecutionContextDoorbell`) that some other event can also end,
///   such as the kernel posting an io_uring completion; that event then
///   runs the item named with `runOnDoorbellEvent`, with no thread between
///   the event and the context.
/// - `stop()` waits for the running item to finish and runs nothing more;
///   called from the context's own thread it only marks the context stopped
///   (the running item returns, then the thread exits), so it never
///   deadlocks.
public final class ExecutionContext: Sendable {
    /// The stack each context thread gets. Pumps are shallow, but the
    /// XenStore server's request handling runs on the XenStore ring's
    /// context; the vCPU threads get the same bound (Domain.run).
    public static let defaultStackSize = 1 << 20

    /// The thread's name (`pvh-<device>`), cut to the 15 bytes Linux keeps
    /// (pthread_setname_np fails with ERANGE on a longer one).
    public let name: String
    let core: Core

    /// Starts the context's thread, named `name` (see `name`), with a stack
    /// of `stackSize` bytes.
    public init(name: String, stackSize: Int = ExecutionContext.defaultStackSize, doorbell: (any ExecutionContextDoorbell)? = nil) {
        let name = String(decoding: name.utf8.prefix(15), as: UTF8.self)
        self.name = name
        let core = Core(doorbell: doorbell ?? SemaphoreDoorbell())
        self.core = core
        // swift-corelibs-foundation names a Linux thread (pthread_setname_np)
        // only once start() has recorded its pthread: a name set before
        // start() is never applied, and one set by the new thread itself is
        // lost if it runs before start() returns. So the creator names it
        // after start() and the thread waits for that before its first run:
        // every pump runs on a thread called `name`.
        let named = DispatchSemaphore(value: 0)
        let thread = Thread {
            named.wait()
            core.run()
        }
        thread.stackSize = stackSize
        thread.start()
        thread.name = name
        named.signal()
    }

    deinit {
        // Nothing can schedule on a context nobody holds; let its thread go.
        // Not a waiting stop: the last reference may be dropped by a work item.
        core.requestStop()
    }

    /// A work item that runs `body` on this context each time it is
    /// scheduled (coalesced, see the type's documentation).
    public func makeWork(_ body: @escaping @Sendable () -> Void) -> Work {
        Work(core: core, id: core.register(body))
    }

    /// Makes `work` (an item of this context) the one that runs when the
    /// doorbell's own event ends the context's sleep (`wait()` returning
    /// true). Nothing runs for such an event before this is called.
    public func runOnDoorbellEvent(_ work: Work) {
        precondition(work.core === core, "runOnDoorbellEvent: a work item of another context")
        core.state.withLock { $0.doorbellWork = work.id }
    }

    /// Stops the context: waits for the running work item to finish (unless
    /// called from the context's own thread) and runs no more. Later
    /// `schedule()` calls are ignored. Idempotent.
    public func stop() {
        core.requestStop()
        if core.isCurrent { return }
        core.waitUntilExited()
    }

    /// Marks the context stopped without waiting: the running item (if any)
    /// finishes, nothing more runs, the thread exits.
    public func requestStop() { core.requestStop() }

    /// Waits until every work item scheduled before this call has run (on a
    /// stopped context: until its thread has left, the running item done).
    /// False if `timeout` passed first. From the
    /// context's own thread it returns true at once (it cannot wait for itself).
    public func sync(timeout: Duration = .seconds(60)) -> Bool {
        core.sync(timeout: timeout)
    }

    /// Whether the caller is running on this context's thread.
    public var isCurrent: Bool { core.isCurrent }

    /// Whether the context was stopped.
    public var isStopped: Bool { core.state.withLock { $0.stopping } }

    /// Work items run so far.
    public var runCount: UInt64 { core.state.withLock { $0.runs } }

    /// `schedule()` calls that found their item already pending (coalesced).
    public var coalescedCount: UInt64 { core.state.withLock { $0.coalesced } }

    /// One unit of work on a context: a device's pump.
    public final class Work: Sendable {
        let core: Core
        let id: Int

        init(core: Core, id: Int) {
            self.core = core
            self.id = id
        }

        /// Asks for one more run of the item on its context and returns at
        /// once. Safe from any thread, the context's own included.
        public func schedule() { core.schedule(id) }

        /// Removes the item: it is not run again (a run in progress finishes).
        public func cancel() { core.unregister(id) }
    }
}

extension ExecutionContext {
    final class Core: Sendable {
        enum Item {
            case work(Int)
            /// A `sync()` waiter: signalled when the queue reaches it.
            case barrier(DispatchSemaphore)
        }

        struct State {
            var handlers: [Int: @Sendable () -> Void] = [:]
            var nextID = 0
            /// FIFO of what to run; each work item is in it at most once.
            var queue: [Item] = []
            var queued: Set<Int> = []
            /// The thread waits on `doorbell`; whoever clears this rings it.
            var sleeping = false
            /// The item a doorbell event of its own runs.
            var doorbellWork: Int?
            var stopping = false
            var exited = false
            var thread: ObjectIdentifier?
            var runs: UInt64 = 0
            var coalesced: UInt64 = 0
        }

        let state = Mutex(State())
        /// One signal per wake-up: only the caller that cleared `sleeping`
        /// signals, and the thread sets `sleeping` right before it waits.
        let doorbell: any ExecutionContextDoorbell

        init(doorbell: any ExecutionContextDoorbell) { self.doorbell = doorbell }
        /// Signalled once when the thread leaves its loop; each waiter passes
        /// the signal on so that any number of `stop()` callers return.
        let exited = DispatchSemaphore(value: 0)

        var isCurrent: Bool {
            let me = ObjectIdentifier(Thread.current)
            return state.withLock { $0.thread == me }
        }

        func register(_ body: @escaping @Sendable () -> Void) -> Int {
            state.withLock { s in
                let id = s.nextID
                s.nextID += 1
                if !s.stopping { s.handlers[id] = body }
                return id
            }
        }

        func unregister(_ id: Int) {
            _ = state.withLock { s in s.handlers.removeValue(forKey: id) }
        }

        func schedule(_ id: Int) {
            let ring = state.withLock { s -> Bool in
                guard !s.stopping, s.handlers[id] != nil else { return false }
                if s.queued.insert(id).inserted {
                    s.queue.append(.work(id))
                } else {
                    s.coalesced &+= 1
                }
                return Self.wake(&s)
            }
            if ring { doorbell.ring() }
        }

        /// Clears `sleeping`; true if the caller must ring the doorbell.
        private static func wake(_ s: inout State) -> Bool {
            guard s.sleeping else { return false }
            s.sleeping = false
            return true
        }

        func requestStop() {
            let ring = state.withLock { s -> Bool in
                s.stopping = true
                // Dropping the handlers breaks the cycles a device makes by
                // holding the context its own pump closure is registered on.
                // `sync()` waiters stay queued: the thread releases them when
                // it leaves, after the running item (a fault path, say) is done.
                s.handlers = [:]
                s.queued = []
                s.queue.removeAll { if case .work = $0 { true } else { false } }
                return Self.wake(&s)
            }
            if ring { doorbell.ring() }
        }

        func waitUntilExited() {
            exited.wait()
            exited.signal()
        }

        func sync(timeout: Duration) -> Bool {
            if isCurrent { return true }
            let done = DispatchSemaphore(value: 0)
            let ring = state.withLock { s -> Bool? in
                if s.exited { return nil }
                s.queue.append(.barrier(done))
                return Self.wake(&s)
            }
            guard let ring else { return true }
            if ring { doorbell.ring() }
            let (seconds, attoseconds) = timeout.components
            let nanoseconds = Int(clamping: seconds) &* 1_000_000_000 &+ Int(attoseconds / 1_000_000_000)
            return done.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .success
        }

        private enum Next {
            case run(@Sendable () -> Void)
            case barrier(DispatchSemaphore)
            case sleep
            case exit([DispatchSemaphore])
        }

        /// The context thread's loop.
        func run() {
            let me = ObjectIdentifier(Thread.current)
            state.withLock { $0.thread = me }
            while true {
                let next: Next = state.withLock { s in
                    if s.stopping {
                        s.exited = true
                        var waiters: [DispatchSemaphore] = []
                        for case .barrier(let b) in s.queue { waiters.append(b) }
                        s.queue = []
                        return .exit(waiters)
                    }
                    while !s.queue.isEmpty {
                        switch s.queue.removeFirst() {
                        case .barrier(let b):
                            return .barrier(b)
                        case .work(let id):
                            // Cleared before the run: a schedule() from now on
                            // queues one more run, which will see its data.
                            s.queued.remove(id)
                            if let body = s.handlers[id] {
                                s.runs &+= 1
                                return .run(body)
                            }
                        }
                    }
                    s.sleeping = true
                    return .sleep
                }
                switch next {
                case .run(let body):
                    body()
                case .barrier(let b):
                    b.signal()
                case .sleep:
                    if doorbell.wait() {
                        // Woken by the doorbell's own event, not a ring: no
                        // one cleared `sleeping` (a ring meanwhile did, and
                        // its extra wake-up only finds nothing to do).
                        state.withLock { s in
                            s.sleeping = false
                            if let id = s.doorbellWork, !s.stopping, s.handlers[id] != nil, s.queued.insert(id).inserted {
                                s.queue.append(.work(id))
                            }
                        }
                    }
                case .exit(let waiters):
                    for w in waiters { w.signal() }
                    exited.signal()
                    return
                }
            }
        }
    }
}

/// How an idle execution context's thread sleeps and is woken.
///
/// The default is a semaphore. A device whose own work arrives through the
/// kernel can let its context sleep where that work shows up instead (the
/// block backend's queue sleeps on its io_uring's completion eventfd), so
/// the work wakes the context itself rather than a thread that would only
/// pass it on: one wake-up per event instead of two.
public protocol ExecutionContextDoorbell: AnyObject, Sendable {
    /// Blocks the context's thread until `ring()` was called since the last
    /// return (a ring before the wait is not lost) or the doorbell's own
    /// event came. True for the latter (the context then runs the item
    /// named with `ExecutionContext.runOnDoorbellEvent`); a spurious return
    /// is allowed either way.
    func wait() -> Bool
    /// Ends the current or next `wait()`. Any thread.
    func ring()
}

/// The default doorbell: a semaphore, with no event of its own.
final class SemaphoreDoorbell: ExecutionContextDoorbell {
    private let semaphore = DispatchSemaphore(value: 0)
    func wait() -> Bool {
        semaphore.wait()
        return false
    }
    func ring() { semaphore.signal() }
}
