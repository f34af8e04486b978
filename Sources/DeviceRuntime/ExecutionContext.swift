import Dispatch
import Foundation
import Locking
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
/// - Adaptive polling (`ExecutionContextPolling`, after QEMU's iothreads):
///   an idle context first polls for a while (its queue, and the doorbell's
///   own event through `ExecutionContextDoorbell.poll`) before it sleeps,
///   so work that arrives within that time costs no wake-up. The time grows
///   while idle periods are short and shrinks to nothing while they are
///   long: an idle device does not spin. A context whose device says work
///   is owed to it (`expectsWork`: its host I/O is in flight) polls on a
///   second, longer budget with the same policy, the way Linux's blk-mq
///   polls a device for completions it is waiting for.
/// - `stop()` waits for the running item to finish and runs nothing more;
///   called from the context's own thread it only marks the context stopped
///   (the running item returns, then the thread exits), so it never
///   deadlocks.
///
/// A context made with `ExecutionContextMode.caller` has no thread: what is
/// scheduled waits until someone calls `sync()`, which runs it on the
/// caller's thread (that thread is then the context's, for `isCurrent`),
/// everything the runs schedule included, until nothing is queued. The
/// same guarantees hold; only the thread differs. It is for the fuzzers and
/// for tests that need one input to take one path (no thread start-up, no
/// wake-ups, nothing running while the harness looks at the device).
public final class ExecutionContext: Sendable {
    /// The stack each context thread gets. Pumps are shallow, but the
    /// XenStore server's request handling runs on the XenStore ring's
    /// context; the vCPU threads get the same bound (Domain.run).
    public static let defaultStackSize = 1 << 20

    /// The thread's name (`pvh-<device>`), cut to the 15 bytes Linux keeps
    /// (pthread_setname_np fails with ERANGE on a longer one).
    public let name: String
    /// Where its work runs.
    public let mode: ExecutionContextMode
    let core: Core

    /// Starts the context's thread, named `name` (see `name`), with a stack
    /// of `stackSize` bytes.
    /// `polling`: how long an idle context may poll before it sleeps (see
    /// `ExecutionContextPolling`); off unless given.
    /// `expectsWork`: asked on the context's thread each time it goes idle,
    /// whether something it started will bring it work without anyone
    /// scheduling from outside (a block queue's host I/O in flight, whose
    /// completion ends the doorbell's wait or schedules its pump). While
    /// true, the idle context polls on the budget of
    /// `ExecutionContextPolling.pendingMaximumNanoseconds`. Must be cheap
    /// and must not schedule.
    /// `mode`: `.caller` starts no thread (see the type's documentation).
    public init(name: String, stackSize: Int = ExecutionContext.defaultStackSize, doorbell: (any ExecutionContextDoorbell)? = nil,
                polling: ExecutionContextPolling = .disabled, expectsWork: (@Sendable () -> Bool)? = nil, mode: ExecutionContextMode = .thread) {
        let name = String(decoding: name.utf8.prefix(15), as: UTF8.self)
        self.name = name
        self.mode = mode
        let core = Core(doorbell: doorbell ?? SemaphoreDoorbell(), polling: polling, expectsWork: expectsWork, callerDriven: mode == .caller)
        self.core = core
        if mode == .caller { return }
        // swift-corelibs-foundation names a Linux thread (pthread_setname_np)
        // only once start() has recorded its pthread: a name set before
        // start() is never applied, and one set by the new thread itself is
        // lost if it runs before start() returns. So the creator names it
        // after start() and the thread waits for that before its first run,
        // then names itself again: on a loaded host the new thread's own
        // start-up can run after the creator's assignment and leave
        // `Thread.current.name` without it (a CI run saw a pump on an
        // unnamed context thread). Every pump runs on a thread called `name`.
        let named = DispatchSemaphore(value: 0)
        let thread = Thread {
            named.wait()
            Thread.current.name = name
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
        // No thread of its own to leave the loop: the caller does (it finds
        // `stopping` at once and releases the waiters), unless another
        // caller's drain is under way, which then does.
        if core.callerDriven { core.drain() }
        core.waitUntilExited()
    }

    /// Marks the context stopped without waiting: the running item (if any)
    /// finishes, nothing more runs, the thread exits.
    public func requestStop() { core.requestStop() }

    /// Waits until every work item scheduled before this call has run (on a
    /// stopped context: until its thread has left, the running item done).
    /// False if `timeout` passed first. From the
    /// context's own thread it returns true at once (it cannot wait for itself).
    /// A `.caller` context runs them here, on the caller's thread.
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

    /// What the idle context's polling did so far.
    public var pollingStatistics: ExecutionContextPolling.Statistics { core.state.withLock { $0.pollStatistics } }

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
            var pollStatistics = ExecutionContextPolling.Statistics()
        }

        let state = Lock(State())
        /// `ExecutionContextMode.caller`: no thread; `drain()` runs the queue.
        let callerDriven: Bool
        /// One signal per wake-up: only the caller that cleared `sleeping`
        /// signals, and the thread sets `sleeping` right before it waits.
        let doorbell: any ExecutionContextDoorbell
        let polling: ExecutionContextPolling
        /// The device's "work is on its way" (see `ExecutionContext.init`).
        let expectsWork: (@Sendable () -> Bool)?
        /// Bumped (under the lock) by everything that gives an idle thread
        /// something to do (a schedule, a sync, a stop): what a polling
        /// thread watches without taking the lock.
        let activity = Atomic<UInt64>(0)

        init(doorbell: any ExecutionContextDoorbell, polling: ExecutionContextPolling, expectsWork: (@Sendable () -> Bool)?, callerDriven: Bool) {
            self.doorbell = doorbell
            self.polling = polling
            self.expectsWork = expectsWork
            self.callerDriven = callerDriven
        }
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
                return wake(&s)
            }
            if ring { doorbell.ring() }
        }

        /// With the lock held, after giving the thread something to do:
        /// tells a polling thread, and clears `sleeping`; true if the caller
        /// must ring the doorbell.
        private func wake(_ s: inout State) -> Bool {
            activity.wrappingAdd(1, ordering: .releasing)
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
                return wake(&s)
            }
            if ring { doorbell.ring() }
        }

        func waitUntilExited() {
            exited.wait()
            exited.signal()
        }

        func sync(timeout: Duration) -> Bool {
            if isCurrent { return true }
            // The queue runs here; a drain under way on another thread
            // runs the barrier below too (it leaves only with nothing queued).
            if callerDriven && drain() { return true }
            let done = DispatchSemaphore(value: 0)
            let ring = state.withLock { s -> Bool? in
                if s.exited { return nil }
                s.queue.append(.barrier(done))
                return wake(&s)
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
            /// Nothing queued: poll, then sleep. `activity` as it was then.
            case idle(UInt64)
            case exit([DispatchSemaphore])
        }

        /// What the loop does next (lock held).
        private func next(_ s: inout State) -> Next {
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
            return .idle(activity.load(ordering: .acquiring))
        }

        /// A `.caller` context's loop, on the calling thread: runs what is
        /// queued (and what that schedules, and the doorbell's own event's
        /// item when `poll()` says it came) until nothing is, then gives the
        /// context back. One drain at a time: a caller that finds another
        /// under way returns at once. After a stop it releases the waiters
        /// and marks the context exited, as the thread's loop does. True if
        /// this call drained (false: another was under way, or the context
        /// had exited).
        @discardableResult
        func drain() -> Bool {
            let me = ObjectIdentifier(Thread.current)
            let claimed = state.withLock { s -> Bool in
                guard s.thread == nil, !s.exited else { return false }
                s.thread = me
                return true
            }
            guard claimed else { return false }
            while true {
                let step: Next = state.withLock { s in
                    var n = next(&s)
                    if case .idle = n, doorbell.poll() {
                        queueDoorbellWork(&s)
                        n = next(&s)
                    }
                    // Given back under the same lock that found the queue
                    // empty: a sync that could not claim the context queued
                    // its barrier before this, so it was run.
                    switch n {
                    case .idle, .exit: s.thread = nil
                    case .run, .barrier: break
                    }
                    return n
                }
                switch step {
                case .run(let body):
                    body()
                case .barrier(let b):
                    b.signal()
                case .idle:
                    return true
                case .exit(let waiters):
                    for w in waiters { w.signal() }
                    exited.signal()
                    return true
                }
            }
        }

        /// The context thread's loop.
        func run() {
            let me = ObjectIdentifier(Thread.current)
            state.withLock { $0.thread = me }
            // One budget for plain idleness, one for waits on work already
            // on its way: their lengths differ (a quiet guest against a
            // disk's latency), and one would spoil the other's history.
            var adaptive = AdaptivePolling(maximum: polling.maximumNanoseconds)
            var pending = AdaptivePolling(maximum: polling.pendingMaximumNanoseconds)
            while true {
                let next: Next = state.withLock { s in self.next(&s) }
                switch next {
                case .run(let body):
                    body()
                case .barrier(let b):
                    b.signal()
                case .idle(let seen):
                    if expectsWork?() == true {
                        idle(seen, adaptive: &pending, pending: true)
                    } else {
                        idle(seen, adaptive: &adaptive, pending: false)
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

extension ExecutionContext.Core {
    /// The thread has nothing queued (as of `activity` == `seen`): polls for
    /// the adaptive budget, then sleeps on the doorbell unless something
    /// came. The idle time (polling and sleeping) feeds the budget.
    /// `pending`: the device said work is on its way (`expectsWork`), and
    /// `adaptive` is that case's budget.
    fileprivate func idle(_ seen: UInt64, adaptive: inout AdaptivePolling, pending: Bool) {
        let started = AdaptivePolling.now()
        let budget = adaptive.budget
        if pending { state.withLock { $0.pollStatistics.pendingIdles &+= 1 } }
        if budget > 0 {
            var polls: UInt64 = 0
            var found = false
            var event = false
            let deadline = started &+ budget
            // At least one look, however short the budget: what a test of
            // "polling finds work" relies on, and cheap.
            repeat {
                polls &+= 1
                if activity.load(ordering: .acquiring) != seen {
                    found = true
                } else if doorbell.poll() {
                    found = true
                    event = true
                }
            } while !found && AdaptivePolling.now() < deadline
            state.withLock { s in
                s.pollStatistics.polls &+= polls
                if found {
                    s.pollStatistics.hits &+= 1
                } else {
                    s.pollStatistics.misses &+= 1
                }
                if event { queueDoorbellWork(&s) }
            }
            if found {
                adaptive.record(idle: AdaptivePolling.now() &- started, sleptAfterPolling: false)
                return
            }
        }
        let sleep = state.withLock { s -> Bool in
            // Anything that came while polling: no sleep (no lost wake-up:
            // from here on a schedule finds `sleeping` and rings).
            if s.stopping || !s.queue.isEmpty { return false }
            s.sleeping = true
            s.pollStatistics.sleeps &+= 1
            return true
        }
        guard sleep else { return }
        if doorbell.wait() {
            // Woken by the doorbell's own event, not a ring: no one cleared
            // `sleeping` (a ring meanwhile did, and its extra wake-up only
            // finds nothing to do).
            state.withLock { s in
                s.sleeping = false
                queueDoorbellWork(&s)
            }
        }
        adaptive.record(idle: AdaptivePolling.now() &- started, sleptAfterPolling: true)
    }

    /// Queues the item the doorbell's own event runs (lock held).
    fileprivate func queueDoorbellWork(_ s: inout State) {
        if let id = s.doorbellWork, !s.stopping, s.handlers[id] != nil, s.queued.insert(id).inserted {
            s.queue.append(.work(id))
        }
    }
}

/// Where an execution context's work runs.
public enum ExecutionContextMode: Hashable, Sendable {
    /// On a thread of its own (every device of a running domain).
    case thread
    /// On whichever thread calls `sync()` (or `stop()`), nowhere else: no
    /// thread, no wake-ups, one order for one sequence of calls. For the
    /// fuzzers and deterministic tests (`DeviceRuntime(mode:)`).
    case caller
}

/// How long an idle execution context polls for work before it sleeps,
/// the device runtime's setting (`DeviceRuntime(polling:)`).
///
/// Waking a sleeping thread costs tens of microseconds on a loaded or
/// virtualised host (a futex or eventfd wake, a context switch, often an
/// IPI), more than a 4 KiB request takes on a fast disk. QEMU's iothreads
/// poll their event sources for a while before blocking (`aio_poll` with
/// the iothread's `poll-max-ns`, `poll-grow`, `poll-shrink`; iothread.c,
/// util/event-loop-base.c and util/aio-posix.c): the polling
/// time grows when a wait that had to block was shorter than the maximum
/// (polling longer would have caught it) and shrinks when it was longer
/// (the device is quiet; polling only burns CPU). The same policy here,
/// in our own code: the budget starts at 0, grows by doubling from
/// `maximum`/16 up to `maximum`, is halved (and dropped to 0 below
/// `maximum`/16) after an idle time longer than `maximum`, and is kept
/// when polling found work. An idle device's context thus polls at most a
/// few times `maximum` in all before it only sleeps.
///
/// A second budget, with its own maximum and the same policy, serves the
/// idle periods that begin while the context's device waits for work it
/// started itself (its host I/O in flight: `ExecutionContext.init`'s
/// `expectsWork`). Such a wait ends by itself within the host device's
/// latency, which can be far longer than a guest's think time (about
/// 300 µs for a 4 KiB read at queue depth 32 on the disk of the machine
/// pvh is developed on) while a sleep there adds a wake-up's latency to
/// every request. Linux's blk-mq polls for a completion it waits for in
/// the same way (`io_poll`, io_uring's IOPOLL). The policy keeps it from
/// spinning on a device slower than the maximum: a rotating disk's
/// milliseconds halve the budget to 0. The cost: while a disk has I/O in
/// flight within the maximum, its queue's thread keeps a host CPU busy.
public struct ExecutionContextPolling: Hashable, Sendable {
    /// The longest an idle context polls before it sleeps, in nanoseconds;
    /// 0: never poll.
    public var maximumNanoseconds: UInt64
    /// The same while the context's device says work is on its way
    /// (`expectsWork`); 0: never poll then.
    public var pendingMaximumNanoseconds: UInt64

    /// Polls for at most `maximum`, and at most `whilePending` while work
    /// is on its way (0 disables either).
    public init(maximum: Duration, whilePending: Duration = .zero) {
        maximumNanoseconds = Self.nanoseconds(maximum)
        pendingMaximumNanoseconds = Self.nanoseconds(whilePending)
    }

    private static func nanoseconds(_ d: Duration) -> UInt64 {
        let (seconds, attoseconds) = d.components
        return seconds < 0 || attoseconds < 0 ? 0
            : UInt64(clamping: seconds).multipliedReportingOverflow(by: 1_000_000_000).partialValue &+ UInt64(attoseconds / 1_000_000_000)
    }

    /// No polling: an idle context sleeps at once.
    public static let disabled = ExecutionContextPolling(maximum: .zero)

    /// The default: 50 µs idle (QEMU's iothread default is 32768 ns, from
    /// 2016 NVMe measurements; a wake-up on the machine pvh is developed on
    /// costs about 50 µs, see docs/ARCHITECTURE.md, Device runtime); 1 ms
    /// while work is on its way, above the disk latencies measured there
    /// and below a rotating disk's.
    public static let standard = ExecutionContextPolling(maximum: .microseconds(50), whilePending: .milliseconds(1))

    /// What an idle context's polling did (`ExecutionContext.pollingStatistics`).
    public struct Statistics: Hashable, Sendable {
        /// Looks at the sources while polling.
        public var polls: UInt64 = 0
        /// Idle periods that polling ended (work came without a wake-up).
        public var hits: UInt64 = 0
        /// Idle periods that polled for the whole budget, then slept.
        public var misses: UInt64 = 0
        /// Times the thread slept on its doorbell (after polling or not).
        public var sleeps: UInt64 = 0
        /// Idle periods that began with work on its way (`expectsWork`),
        /// polled on the second budget.
        public var pendingIdles: UInt64 = 0
        public init() {}
    }
}

/// The adaptive budget of one context's thread (see `ExecutionContextPolling`).
struct AdaptivePolling {
    let maximum: UInt64
    /// How long the next idle period polls, nanoseconds.
    private(set) var budget: UInt64 = 0

    /// The budget for plain idleness under `polling`.
    init(_ polling: ExecutionContextPolling) { self.init(maximum: polling.maximumNanoseconds) }

    /// A budget of at most `maximum` nanoseconds (0: never polls).
    init(maximum: UInt64) { self.maximum = maximum }

    /// The first budget after 0, and the smallest kept when shrinking.
    var step: UInt64 { max(maximum / 16, 1) }

    /// One idle period of `idle` nanoseconds ended; `sleptAfterPolling`:
    /// polling (if any) found nothing and the thread slept.
    mutating func record(idle: UInt64, sleptAfterPolling: Bool) {
        guard maximum > 0, sleptAfterPolling else { return }
        if idle > maximum {
            budget /= 2
            if budget < step { budget = 0 }
        } else if budget < maximum {
            budget = budget == 0 ? step : min(budget * 2, maximum)
        }
    }

    /// CLOCK_MONOTONIC in nanoseconds (vDSO, no system call).
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
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
    /// Whether the doorbell's own event has come (a `wait()` now would
    /// return true at once), without waiting: what a polling context looks
    /// at (`ExecutionContextPolling`). Must be cheap. The default: false.
    func poll() -> Bool
}

extension ExecutionContextDoorbell {
    public func poll() -> Bool { false }
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
