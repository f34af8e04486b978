import Dispatch
import DeviceRuntime
import GrantTables
import GuestMemory
import HostIO
import Locking
import XenABI
import XenRing

// One blkif ring and what serves it: xen-blkback's `xen_blkif_ring` and its
// `xen_blkif_schedule` kthread, on the device runtime. The pump runs on the
// queue's own context only; the ring is never touched anywhere else.

/// Completions, handed from the engine's thread to the queue's context:
/// the engine only appends and asks for a pump.
final class CompletionInbox: Sendable {
    private struct State {
        var completions: [BlockIOCompletion] = []
        var wake: (@Sendable () -> Void)?
    }
    private let state = Lock(State())

    /// The engine's `onComplete`: must not block, and does not.
    func deliver(_ completions: [BlockIOCompletion]) {
        let wake = state.withLock { s in
            s.completions += completions
            return s.wake
        }
        wake?()
    }

    func take() -> [BlockIOCompletion] {
        state.withLock { s in
            defer { s.completions = [] }
            return s.completions
        }
    }

    var isEmpty: Bool { state.withLock { $0.completions.isEmpty } }

    /// What a delivery does to get the pump run (nil: nothing, after stop).
    func setWake(_ wake: (@Sendable () -> Void)?) { state.withLock { $0.wake = wake } }
}

/// A queue context's doorbell when its engine is caller-reaped: the context
/// sleeps on the engine's completion event (io_uring's registered eventfd),
/// so a finished I/O wakes the queue's thread itself, which reaps it in its
/// pump; a guest notification rings the same event. A polling context
/// (`ExecutionContextPolling`) looks at the completion queue before it
/// sleeps, so an I/O that finishes meanwhile costs no wake-up.
final class EngineDoorbell: ExecutionContextDoorbell {
    let engine: any CallerReapedBlockIOEngine
    init(_ engine: any CallerReapedBlockIOEngine) { self.engine = engine }
    func wait() -> Bool { engine.waitForCompletions() }
    func ring() { engine.wake() }
    func poll() -> Bool { engine.hasCompletions() }
}

/// What every queue of a device shares.
struct QueueEnvironment: Sendable {
    let memory: any HostAddressableMemory
    let grants: GrantTable
    let validator: BlockRequestValidator
    let metrics: BlockMetrics
    /// `BlockDeviceConfiguration.requestsPerRound` (at least 1).
    let requestsPerRound: Int
    /// `BlockDeviceConfiguration.runsLoneOperationsInline`.
    let runsLoneOperationsInline: Bool
}

/// One ring's state and pump. The state is only touched by the pump on the
/// queue's context (and by `stop` once the pump is done); the mutex makes
/// that checkable, it is never contended in normal running.
final class QueueCore: Sendable {
    /// A request being served: its holds and the host operations still to run
    /// after the one in flight.
    struct InFlight {
        var request: BlockRequest
        var holds: [GrantHold]
        var remaining: [BlockIOOperation]
        /// Its current operation completes from the device alone
        /// (`CallerReapedBlockIOEngine.completesWithoutHostThread`).
        var awaitsDevice: Bool
    }

    struct State {
        var ring: BlkifRing
        /// Engine tag → the request whose current operation it is.
        var inFlight: [UInt64: InFlight] = [:]
        var nextTag: UInt64 = 1
        /// Requests in `inFlight` that change the disk.
        var writesInFlight = 0
        /// Requests in `inFlight` whose operation `awaitsDevice`.
        var awaitingDevice = 0
        /// A flush or barrier taken off the ring, waiting for the writes
        /// before it to complete; nothing after it is taken meanwhile
        /// (Linux's `xen_blk_drain_io` holds its kthread the same way).
        var draining: BlockRequest?
        /// A barrier in flight: nothing after it starts until it is done.
        var barrierInFlight = false
        /// A request whose pages could not all be mapped because the grant
        /// table's hold limit was reached while other requests held pages:
        /// it goes first once they complete.
        var stalled: BlockRequest?
        /// Responses written but not yet published.
        var unpublished = false
        /// Set by `stop`: no more requests are taken; what was taken finishes.
        var stopping = false
        var drainSignalled = false

        var isIdle: Bool { inFlight.isEmpty && draining == nil && stalled == nil }
    }

    let index: Int
    let environment: QueueEnvironment
    let engine: any BlockIOEngine
    /// The engine, when the pump reaps its completions itself.
    let reaped: (any CallerReapedBlockIOEngine)?
    /// Completions an engine thread handed over (and, caller-reaped, those
    /// of the engine's shutdown and its `.shutDown` answers).
    let inbox: CompletionInbox
    let state: Lock<State>
    /// Signalled once when a stopping queue has nothing left in flight.
    let drained = DispatchSemaphore(value: 0)
    /// The ring as attached at connect (both private indices at 0): what
    /// `rewind` puts back.
    private let attached: BlkifRing
    /// Sends the guest its event at once (the channel's `notifyGuest`), set
    /// once the channel exists; until then a publish's event waits for the
    /// pump's end (`.notifyGuest`). A `CallbackSlot`, not a lock of the
    /// closure: kept in a `Lock<(@Sendable () -> Void)?>` it grew two
    /// thunks per event (88 µs a call after some 12,000 responses in
    /// `pvh-bench block`, and in time a stack overflow).
    private let guestNotifier = CallbackSlot<Void>()

    init(index: Int, ring: BlkifRing, environment: QueueEnvironment, engine: any BlockIOEngine, inbox: CompletionInbox) {
        self.index = index
        self.environment = environment
        self.engine = engine
        reaped = engine as? any CallerReapedBlockIOEngine
        self.inbox = inbox
        self.state = Lock(State(ring: ring))
        attached = ring
    }

    /// Puts the queue back as it was at connect (the ring's private indices
    /// at 0, nothing taken), when nothing is in flight, blocked or waiting
    /// in the inbox; false otherwise. `BlockBackend.rewind`'s, for the
    /// fuzzer; never with a real guest, whose ring would go out of step.
    func rewind() -> Bool {
        guard inbox.isEmpty, reaped?.hasCompletions() != true else { return false }
        return state.withLock { s in
            guard s.isIdle, !s.stopping, !s.barrierInFlight, s.writesInFlight == 0, !s.unpublished else { return false }
            s = State(ring: attached)
            return true
        }
    }

    private var metrics: BlockMetrics { environment.metrics }

    /// Whether a request's host operation is in the device, its completion
    /// on its way with no host thread working for it: the context's
    /// `expectsWork`, for which it polls (`ExecutionContextPolling`). Asked
    /// by the context's own thread when it goes idle, so the lock is free.
    var awaitsDevice: Bool { state.withLock { $0.awaitingDevice > 0 } }

    private func awaitsDevice(_ operation: BlockIOOperation) -> Bool {
        reaped?.completesWithoutHostThread(operation) ?? false
    }

    /// Installs (or, nil, removes) what sends the guest its event mid-pump.
    func setGuestNotifier(_ notify: (@Sendable () -> Void)?) { guestNotifier.set(notify) }

    // MARK: the pump

    /// One pump: completions in, requests off the ring, I/O out, responses
    /// published; repeats until nothing moves, then
    /// RING_FINAL_CHECK_FOR_REQUESTS before going idle (Linux's
    /// `do_block_io_op`). A ring the guest corrupted throws.
    func pump() throws(DeviceFault) -> BackendChannel.PumpResult {
        var notify = false
        // What the last round ran on this thread (`runsInline`).
        var ranInline: BlockIOCompletion?
        while true {
            // Caller-reaped: the CQEs are taken here, on the queue's own
            // thread, where the doorbell woke it (no reaper thread between).
            var completions = inbox.take()
            if let reaped { completions += reaped.reap() }
            if let done = ranInline {
                completions.append(done)
                ranInline = nil
            }
            let (batch, published, inline) = try state.withLock {
                (s: inout State) throws(DeviceFault) -> ([BlockIORequest], Bool, Bool) in
                do throws(XenRingError) {
                    var batch: [BlockIORequest] = []
                    for c in completions { try complete(c, &s, &batch) }
                    try dispatch(&s, &batch)
                    var published = false
                    if s.unpublished {
                        s.unpublished = false
                        published = try s.ring.pushResponses()
                    }
                    return (batch, published, try runsInline(batch, s))
                } catch {
                    throw DeviceFault(error)
                }
            }
            // The event goes now, before this round's submission and the
            // rounds after it: a busy pump can go round many times, and a
            // frontend that sleeps until its event (blkfront's interrupt)
            // would otherwise hear of these responses only at the pump's
            // end. xen-blkback's make_response notifies the same way, at
            // each RING_PUSH_RESPONSES_AND_CHECK_NOTIFY that asks for it.
            if published {
                if !guestNotifier() { notify = true }
            }
            // Run outside the lock, after the responses went out; its
            // completion is the next round's.
            if inline, let reaped, let request = batch.first {
                BlockMetrics.bump(metrics.inlineOperations)
                ranInline = BlockIOCompletion(tag: request.tag, result: reaped.performInline(request.operation))
                continue
            }
            // Submitted outside the lock: a synchronous engine completes
            // inside `submit`, into the inbox, which the next round reads.
            if !batch.isEmpty {
                engine.submit(batch)
                continue
            }
            if !inbox.isEmpty { continue }
            let more = try state.withLock { (s: inout State) throws(DeviceFault) -> Bool in
                // Blocked (draining, a barrier, stalled) or stopping: the
                // next completion pumps again; the ring waits.
                guard !s.stopping, s.draining == nil, s.stalled == nil, !s.barrierInFlight else { return false }
                do throws(XenRingError) { return try s.ring.finalCheckForRequests() } catch { throw DeviceFault(error) }
            }
            if !more { break }
        }
        let signal = state.withLock { s in
            guard s.stopping, s.isIdle, !s.drainSignalled else { return false }
            s.drainSignalled = true
            return true
        }
        if signal { drained.signal() }
        return notify ? .notifyGuest : .quiet
    }

    /// Whether `batch` is one write or flush to run on this thread
    /// (`CallerReapedBlockIOEngine.performInline`): it is the only request
    /// in flight, none waits on the ring or behind it, and the engine would
    /// hand it to a host thread anyway. At queue depth 1 (a database's
    /// write and fsync, a journal commit) there is nothing to overlap it
    /// with, and the host thread's wake-up and the queue's own after it
    /// cost more than the queue's thread blocking in the system call.
    /// Reads are submitted (their completion comes from the disk alone and
    /// the queue polls for it); discards too (a whole-disk discard may take
    /// seconds, and requests arriving meanwhile would wait on the ring). A
    /// request that arrives while one runs here waits for it: at most one
    /// write's or flush's time.
    private func runsInline(_ batch: [BlockIORequest], _ s: State) throws(XenRingError) -> Bool {
        // The one request in flight is the batch's; `awaitingDevice` already
        // says whether its operation completes without a host thread.
        guard environment.runsLoneOperationsInline, reaped != nil, batch.count == 1, s.inFlight.count == 1,
              s.awaitingDevice == 0, s.stalled == nil, s.draining == nil else { return false }
        switch batch[0].operation {
        case .write, .flush: return try s.ring.unconsumedRequests() == 0
        case .read, .discard: return false
        }
    }

    /// Takes requests while nothing blocks: the stalled request first, then
    /// a draining flush once the writes before it are done, then the ring.
    private func dispatch(_ s: inout State, _ batch: inout [BlockIORequest]) throws(XenRingError) {
        while true {
            if let request = s.stalled {
                s.stalled = nil
                guard try start(request, &s, &batch) else {
                    s.stalled = request
                    return
                }
                continue
            }
            if let request = s.draining {
                guard s.writesInFlight == 0 else { return }
                s.draining = nil
                if try !start(request, &s, &batch) { s.stalled = request }
                continue
            }
            if s.barrierInFlight || s.stopping { return }
            // The rest waits for the next round, after this batch's submission
            // (the pump goes round again whenever the batch is not empty).
            if batch.count >= environment.requestsPerRound { return }
            guard let wire = try s.ring.nextRequest() else { return }
            metrics.counted(wire.operation)
            if case .indirect(let op, _, _, _, _) = wire.body, BlkifOperation(rawValue: op) != .indirect {
                metrics.counted(op)
            }
            BlockMetrics.gauge(metrics.requestsInFlight, 1)
            let checked = environment.validator.validate(wire) { (pages, count) throws(GrantError) in
                try readIndirectSegments(pages, count)
            }
            switch checked {
            case .failure(let rejection):
                BlockMetrics.bump(metrics.rejectedRequests)
                try respond(rejection.response, &s)
            case .success(let request):
                if request.drainsEarlierWrites {
                    s.draining = request
                } else if try !start(request, &s, &batch) {
                    s.stalled = request
                }
            }
        }
    }

    /// xen_blkbk_parse_indirect: maps each indirect page for reading,
    /// copies its segments once, and releases it before any I/O starts.
    private func readIndirectSegments(_ pages: [GrantReference], _ count: Int) throws(GrantError) -> [BlkifSegment] {
        let perPage = BlockBackendLimits.segmentsPerIndirectPage
        let size = BlkifLayout.x86_64.segment.size
        var segments: [BlkifSegment] = []
        segments.reserveCapacity(count)
        for (k, page) in pages.enumerated() {
            let here = min(perPage, count - k * perPage)
            guard here > 0 else { break }
            let mapping = try environment.grants.map(page, access: .read)
            let bytes = try mapping.read(offset: 0, count: here * size)
            mapping.release()
            segments += BlkifSegment.decodeIndirect(bytes, count: here)
        }
        return segments
    }

    /// Starts `request`: maps its pages (for a read the backend writes the
    /// guest's pages: `.write`; for a write it reads them: `.read`), makes
    /// host ranges of exactly the segments' bytes, and queues its first host
    /// operation. A page that cannot be mapped fails the request with
    /// BLKIF_RSP_ERROR. False when the grant table's hold limit was reached
    /// while other requests hold pages: the caller retries it later.
    private func start(_ request: BlockRequest, _ s: inout State, _ batch: inout [BlockIORequest]) throws(XenRingError) -> Bool {
        let operations: [BlockIOOperation]
        var holds: [GrantHold] = []
        switch request.kind {
        case .read(let offset, let segments):
            switch try map(segments, access: .write, request, &s, &holds) {
            case .mapped(let ranges): operations = [.read(offset: offset, into: ranges)]
            case .answered: return true
            case .mustWait: return false
            }
        case .write(let offset, let segments, let ordering):
            let ranges: [HostMemoryRange]
            switch try map(segments, access: .read, request, &s, &holds) {
            case .mapped(let r): ranges = r
            case .answered: return true
            case .mustWait: return false
            }
            switch ordering {
            case .unordered:
                operations = [.write(offset: offset, from: ranges)]
            case .flush, .barrier:
                // The earlier writes are complete (drained); the first flush
                // makes them durable before this one lands, the second makes
                // this one durable before it is acknowledged.
                operations = [.flush, .write(offset: offset, from: ranges), .flush]
            }
        case .flush:
            operations = [.flush]
        case .discard(let offset, let length):
            guard length > 0 else {
                try finish(request, status: .okay, &s)
                return true
            }
            operations = [.discard(offset: offset, length: length)]
        }
        let tag = s.nextTag
        s.nextTag &+= 1
        let awaits = awaitsDevice(operations[0])
        if awaits { s.awaitingDevice += 1 }
        s.inFlight[tag] = InFlight(request: request, holds: holds, remaining: Array(operations.dropFirst()), awaitsDevice: awaits)
        if request.modifiesDisk { s.writesInFlight += 1 }
        if request.isBarrier { s.barrierInFlight = true }
        batch.append(BlockIORequest(tag: tag, operation: operations[0]))
        return true
    }

    private enum Mapped {
        /// Every page is held; the host ranges of the segments, in order.
        case mapped([HostMemoryRange])
        /// The request failed and was answered.
        case answered
        /// Out of grant holds while others are held: try again later.
        case mustWait
    }

    /// Maps every segment's page and makes the host range of its bytes.
    /// On `.answered` and `.mustWait` no hold is kept.
    private func map(_ segments: [BlockSegment], access: GrantAccess, _ request: BlockRequest, _ s: inout State,
                     _ holds: inout [GrantHold]) throws(XenRingError) -> Mapped {
        var ranges: [HostMemoryRange] = []
        ranges.reserveCapacity(segments.count)
        func drop() {
            for h in holds { h.release() }
            holds = []
        }
        for segment in segments {
            let hold: GrantHold
            do {
                hold = GrantHold(try environment.grants.map(segment.grant, access: access))
            } catch .tooManyHolds where !s.inFlight.isEmpty {
                drop()
                return .mustWait
            } catch {
                drop()
                try finish(request, status: .error, &s)
                return .answered
            }
            holds.append(hold)
            // The segment's bytes must lie in the granted bytes (a v2
            // sub-page grant may cover part of its page only).
            guard let bytes = hold.bytes(offset: segment.offset, length: segment.length),
                  let range = try? environment.memory.hostRange(bytes) else {
                drop()
                try finish(request, status: .error, &s)
                return .answered
            }
            ranges.append(range)
        }
        return .mapped(ranges)
    }

    /// One host operation finished: the next one of its request starts, or
    /// the request is answered (an error ends it at once).
    private func complete(_ completion: BlockIOCompletion, _ s: inout State, _ batch: inout [BlockIORequest]) throws(XenRingError) {
        // A tag the engine invented (an engine bug) has nothing to answer.
        guard var entry = s.inFlight.removeValue(forKey: completion.tag) else { return }
        let request = entry.request
        if entry.awaitsDevice { s.awaitingDevice -= 1 }
        let status: BlkifStatus
        switch completion.result {
        case .success:
            if !entry.remaining.isEmpty {
                let next = entry.remaining.removeFirst()
                let tag = s.nextTag
                s.nextTag &+= 1
                entry.awaitsDevice = awaitsDevice(next)
                if entry.awaitsDevice { s.awaitingDevice += 1 }
                s.inFlight[tag] = entry
                batch.append(BlockIORequest(tag: tag, operation: next))
                return
            }
            status = .okay
            switch request.kind {
            case .read: BlockMetrics.bump(metrics.bytesRead, by: request.byteCount)
            case .write: BlockMetrics.bump(metrics.bytesWritten, by: request.byteCount)
            case .flush, .discard: break
            }
        case .failure(let error):
            // Linux's __end_block_io_op: EOPNOTSUPP of a flush or barrier is
            // BLKIF_RSP_EOPNOTSUPP (so is a discard's, dispatch_discard_io);
            // any other error is BLKIF_RSP_ERROR. Never dropped.
            switch (error, request.kind) {
            case (.unsupported, .flush), (.unsupported, .discard): status = .notSupported
            case (.unsupported, .write(_, _, let ordering)) where ordering != .unordered: status = .notSupported
            default:
                status = .error
                BlockMetrics.bump(metrics.hostErrors)
            }
        }
        // Release the pages before the response: the frontend ends its
        // grants when it sees the response (gnttab_end_foreign_access
        // refuses a grant still in use).
        for hold in entry.holds { hold.release() }
        if request.modifiesDisk { s.writesInFlight -= 1 }
        if request.isBarrier { s.barrierInFlight = false }
        try finish(request, status: status, &s)
    }

    /// Writes the response (published at the end of the round).
    private func finish(_ request: BlockRequest, status: BlkifStatus, _ s: inout State) throws(XenRingError) {
        try respond(BlkifWireResponse(id: request.id, operation: request.responseOperation, status: status), &s)
    }

    private func respond(_ response: BlkifWireResponse, _ s: inout State) throws(XenRingError) {
        try s.ring.pushResponse(response)
        s.unpublished = true
        if let status = response.status { metrics.responded(status) }
        BlockMetrics.gauge(metrics.requestsInFlight, -1)
    }

    // MARK: stopping

    /// Takes no more requests; what was taken still runs and is answered.
    func beginStop() { state.withLock { $0.stopping = true } }

    /// Drops everything still held (after the engine was shut down, so no
    /// I/O touches the pages any more): in-flight holds, the inbox.
    func abandon() {
        let dropped = state.withLock { s in
            defer {
                s.inFlight = [:]
                s.awaitingDevice = 0
                s.draining = nil
                s.stalled = nil
            }
            return s.inFlight.count + (s.draining == nil ? 0 : 1) + (s.stalled == nil ? 0 : 1)
        }
        _ = inbox.take()
        BlockMetrics.gauge(metrics.requestsInFlight, -dropped)
    }
}
