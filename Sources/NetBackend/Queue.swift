import DeviceRuntime
import GrantTables
import GuestMemory
import HostIO
import Locking
import Synchronization
import XenABI
import XenRing

// One netif queue and what serves it: xen-netback's `xenvif_queue` with its
// TX (`xenvif_tx_action`) and RX (`xenvif_rx_action`) work, on the device
// runtime. Both rings are touched only by pumps on the queue's own context.

/// What the frontend negotiated (its "feature-*" nodes).
struct NetFrontendFeatures: Hashable, Sendable {
    var scatterGather = false
    var gsoTCPv4 = false
    var gsoTCPv6 = false
    /// "feature-ipv6-csum-offload": takes IPv6 frames with a partial checksum.
    var ipv6ChecksumOffload = false
    /// "feature-no-csum-offload": takes no partial checksum at all.
    var noChecksumOffload = false
    /// "feature-rx-notify": the frontend honours the RX ring's `req_event`.
    /// Recorded only: the RX pump asks for an event either way, and a
    /// frontend that notifies regardless only wakes it more often.
    var rxNotify = false
}

/// What every queue of a connection shares.
struct NetQueueEnvironment: Sendable {
    let memory: any HostAddressableMemory
    let grants: GrantTable
    let link: any NetworkLink
    let features: NetFrontendFeatures
    let carrier: CarrierState
    /// The vif's `rate`, shared by its queues; nil: unlimited.
    let credit: NetTransmitCredit?
    /// Set when the link lets the backend read it (`DirectReceiveNetworkLink`):
    /// queue 0 reads it whenever it says frames are queued.
    var reader: NetLinkReader? = nil
}

/// How queue 0 reads a `DirectReceiveNetworkLink`.
struct NetLinkReader: Sendable {
    let link: any DirectReceiveNetworkLink
    /// With several queues, where each frame read goes (the flow hash's
    /// queue); nil with one queue, which reads into its posted buffers.
    let steer: (@Sendable (NetworkFrame) -> Void)?
}

/// The link's carrier as it last reported it (up until it says otherwise).
final class CarrierState: Sendable {
    private let up = Atomic<Bool>(true)
    var isUp: Bool { up.load(ordering: .acquiring) }
    func set(_ value: Bool) { up.store(value, ordering: .releasing) }
}

/// Frames from the link waiting for the queue's RX pump: appended on the
/// link's thread, taken on the queue's context. Bounded: beyond `capacity`
/// a frame is dropped (counted) rather than queued without end.
final class RxBacklog: Sendable {
    /// Frames a queue holds for a frontend that posts no buffers.
    static let capacity = 256
    private let frames = Lock<[NetworkFrame]>([])

    /// False (the frame dropped) when full.
    func append(_ frame: NetworkFrame) -> Bool {
        frames.withLock { f in
            guard f.count < Self.capacity else { return false }
            f.append(frame)
            return true
        }
    }

    /// The oldest `count` frames (fewer if fewer wait), left in place: one
    /// lock for a pump's batch. A copy, not a slice: a slice would keep the
    /// backlog's storage shared, and every frame the link appends meanwhile
    /// would copy the whole backlog.
    func prefix(_ count: Int) -> [NetworkFrame] { frames.withLock { Array($0.prefix(count)) } }

    /// Forgets the oldest `count` frames (those a pump took from `prefix`).
    func removeFirst(_ count: Int) { frames.withLock { f in f.removeFirst(min(count, f.count)) } }

    func removeAll() { frames.withLock { $0 = [] } }

    var count: Int { frames.withLock { $0.count } }
}

/// One queue's rings and pumps. The mutexes make the single-context rule
/// checkable; they are never contended in normal running.
final class NetQueueCore: Sendable {
    struct TxState {
        var ring: NetifTxRing
        /// A packet read off the ring (its slots consumed, no responses
        /// yet) that waits for transmit credit; sent first on the next pump.
        var held: (slots: NetTxSlots, packet: NetTxPacket)?
        /// When the credit timer this queue armed fires (netback's
        /// `timer_pending(&queue->credit_timeout)`): pumps before then
        /// leave the held packet alone rather than arm another timer.
        var creditTimerDue: Duration?
        /// A packet's slots with nothing in them: what a new `gathered`
        /// entry starts from.
        var slots = NetTxSlots(first: NetifTxRequest(grant: GrantReference(rawValue: 0), offset: 0, flags: [], id: 0, size: 0))
        var scratch = TxScratch()
        /// The packets of the batch being gathered (`transmitBatch`), the
        /// first `gatheredCount` in use; reused for every batch, each
        /// entry's arrays keep their storage, so a packet costs no allocation.
        var gathered: [GatheredPacket] = []
        var gatheredCount = 0
    }
    /// One packet of a TX batch: its slots as copied off the ring, the
    /// packet they make, why they are bad (nil: valid) and, once sent, why
    /// it did not go (nil: it did).
    struct GatheredPacket {
        var slots: NetTxSlots
        var packet = NetTxPacket(segments: [], length: 0, segmentation: .none, checksumBlank: false)
        var invalid: NetDropReason?
        var outcome: NetDropReason?
    }
    /// Arrays `send` fills for each packet, kept for the next.
    struct TxScratch {
        var grants: [GrantReference] = []
        var regions: [GuestPhysicalRange] = []
        var guestRanges: [GuestPhysicalRange] = []
        var hostRanges: [HostMemoryRange] = []
        /// The copy of a packet's headers a partial checksum is located in.
        var headers: [UInt8] = []
        /// A batch's frames for the link, and each frame's parts in turn.
        var batch = NetworkTransmitBatch()
        /// Which gathered packet each frame of `batch` is.
        var frames: [Int] = []
    }
    struct RxState {
        var ring: NetifRxRing
        /// The last look found too few buffers (counted once per stall).
        var stalled = false
        /// The posted buffers a frame takes (data slots only), reused for
        /// every frame.
        var requests: [NetifRxRequest] = []
        var grants: [GrantReference] = []
        var regions: [GuestPhysicalRange] = []
        var hostRanges: [HostMemoryRange] = []
        /// Buffers of the frame being answered whose grant failed.
        var failedBuffers: [Int] = []
        /// The last frame read from the link took more than a page: the
        /// next read is given every page a frame may take.
        var expectLarge = false
    }
    /// Whether this queue reads the link itself (`DirectReceiveNetworkLink`).
    enum LinkReadState {
        /// The link's thread watches it.
        case idle
        /// The link said frames are queued; this queue's RX pump reads
        /// them until none are left, then hands the right back (`watch`).
        case reading
        /// The queue is stopping: it reads no more.
        case stopped
    }

    let index: Int
    let environment: NetQueueEnvironment
    let metrics: NetMetrics
    let backlog = RxBacklog()
    private let tx: Lock<TxState>
    private let rx: Lock<RxState>
    /// Where a checksum the backend completes is assembled: host-addressable
    /// memory of the backend's own, so the link gets a `HostMemoryRange` of
    /// it as it gets one of a granted page.
    private let bounce: MappedGuestMemory
    /// Where a frame read from the link is put when it cannot go straight
    /// into posted buffers (`readCopy`): host-addressable memory of the
    /// backend's own, as `bounce` is for TX.
    private let rxBounce: MappedGuestMemory
    private let linkRead = Lock(LinkReadState.idle)
    /// `rxBounce` as host memory, for a read's tail.
    private let rxBounceRange: HostMemoryRange?
    /// The rings as attached at connect (private indices at 0): what
    /// `rewind` puts back.
    private let attachedTx: NetifTxRing
    private let attachedRx: NetifRxRing

    /// How a pump asks for another run of itself (its channel's
    /// `schedule`), set once the channels exist: a pump that stops at its
    /// batch limit publishes what it did, notifies, and runs again after
    /// the work queued behind it (the other ring's, on a shared context).
    ///
    /// The two closures live in a class of their own, not in the mutex's
    /// value: read out of a generic `Mutex<(tx: (() -> Void)?, ...)>` on
    /// every batch, a closure came back wrapped in one more reabstraction
    /// thunk each time, and after some ten thousand batch-limited pumps
    /// calling it overflowed the context thread's stack (found by
    /// `pvh-bench net`).
    private let again = Lock<Reschedule?>(nil)

    private final class Reschedule: Sendable {
        let tx: @Sendable () -> Void
        let rx: @Sendable () -> Void
        /// The TX pump again once a delay has passed (credit).
        let txAfter: @Sendable (Duration) -> Void
        /// Events to the guest on the TX and RX ring's port, sent from a
        /// pump when a publish in mid-batch crossed `rsp_event`.
        let notifyTx: @Sendable () -> Void
        let notifyRx: @Sendable () -> Void
        init(tx: @escaping @Sendable () -> Void, rx: @escaping @Sendable () -> Void,
             txAfter: @escaping @Sendable (Duration) -> Void,
             notifyTx: @escaping @Sendable () -> Void, notifyRx: @escaping @Sendable () -> Void) {
            self.tx = tx
            self.rx = rx
            self.txAfter = txAfter
            self.notifyTx = notifyTx
            self.notifyRx = notifyRx
        }
    }

    func setReschedule(tx: @escaping @Sendable () -> Void, rx: @escaping @Sendable () -> Void,
                       txAfter: @escaping @Sendable (Duration) -> Void,
                       notifyTx: @escaping @Sendable () -> Void, notifyRx: @escaping @Sendable () -> Void) {
        let r = Reschedule(tx: tx, rx: rx, txAfter: txAfter, notifyTx: notifyTx, notifyRx: notifyRx)
        again.withLock { $0 = r }
    }

    /// Bytes of the bounce buffer: the largest packet.
    static let bounceSize = (NetifLimits.maximumPacketSize + NetifLimits.ethernetHeader + 4095) / 4096 * 4096
    /// Packets one TX pump takes, frames one RX pump delivers, before it
    /// publishes, notifies and yields the context (netback's NAPI budget).
    static let batch = 64
    /// Slots a pump answers before it publishes their responses, not only
    /// at the end of its batch, so a frontend can reuse the slots already
    /// answered while the batch goes; Linux's netback publishes per TX
    /// packet (xenvif_idx_release) and per copy batch on RX
    /// (xenvif_rx_copy_flush). A publish that crosses `rsp_event` sends
    /// its event at once when the ring is running low (`runningLow`), as
    /// netback's RING_PUSH_RESPONSES_AND_CHECK_NOTIFY does, else at the
    /// pump's end. Holding every event to the pump's end let the TX ring
    /// run dry before the frontend heard of any room (pvh-bench net
    /// tx-bulk: one event each way per ring of 15 TSO packets, the queue
    /// idle between them).
    static let publishEvery = 16

    init(index: Int, tx: NetifTxRing, rx: NetifRxRing, environment: NetQueueEnvironment, metrics: NetMetrics)
        throws(GuestMemoryError) {
        self.index = index
        self.environment = environment
        self.metrics = metrics
        self.tx = Lock(TxState(ring: tx))
        self.rx = Lock(RxState(ring: rx))
        attachedTx = tx
        attachedRx = rx
        bounce = try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(Self.bounceSize))])
        rxBounce = try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(Self.bounceSize))])
        rxBounceRange = try? rxBounce.hostRange(GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(Self.bounceSize)))
    }

    /// Puts the queue back as it was at connect (both rings' private
    /// indices at 0, no packet read, no frame waiting for RX buffers);
    /// false, changing nothing, while a packet waits for transmit credit
    /// (its timer is still to fire). `NetBackend.rewind`'s, for the
    /// fuzzer; never with a real guest, whose rings would go out of step.
    func rewind() -> Bool {
        // A direct-receive link's reading handed to this queue is in flight too.
        guard linkRead.withLock({ $0 == .idle }) else { return false }
        let rewound = tx.withLock { s in
            guard s.held == nil, s.creditTimerDue == nil else { return false }
            s = TxState(ring: attachedTx)
            return true
        }
        guard rewound else { return false }
        rx.withLock { $0 = RxState(ring: attachedRx) }
        backlog.removeAll()
        return true
    }

    // MARK: TX

    /// The TX pump: packets off the ring to the link, one response per
    /// slot, published in batches; RING_FINAL_CHECK_FOR_REQUESTS before
    /// going idle. A ring (or packet framing) the guest broke throws.
    ///
    /// Over the vif's `rate`, the pump stops with the packet held and a
    /// timer armed for when the credit comes back; it asks for no event
    /// meanwhile (no final check), as netback stops taking requests while
    /// `rate_limited`.
    func pumpTx() throws(DeviceFault) -> BackendChannel.PumpResult {
        // The last publish asked for an event: the pump's result sends it
        // (those in mid-batch send theirs at once).
        var owed = false
        var yielded = false
        var creditWait: Duration?
        while true {
            let more = try tx.withLock { (s: inout TxState) throws(DeviceFault) -> Bool in
                var taken = 0
                var unpublished = 0
                func ready() throws(DeviceFault) -> Bool {
                    if s.held != nil { return true }
                    return try Self.guest({ () throws(XenRingError) in try s.ring.unconsumedRequests() }) > 0
                }
                while taken < Self.batch, try ready() {
                    let step = try transmitBatch(&s, limit: Self.batch - taken)
                    taken += step.packets
                    unpublished += step.responses
                    if unpublished >= Self.publishEvery {
                        unpublished = 0
                        if try Self.guest({ () throws(XenRingError) in try s.ring.pushResponses() }) { owed = true }
                        if owed, try Self.guest({ () throws(XenRingError) in try Self.runningLow(s.ring) }) {
                            owed = false
                            again.withLock { $0 }?.notifyTx()
                        }
                    }
                    if let wait = step.creditWait { creditWait = wait }
                    if s.held != nil { break }
                }
                if unpublished > 0, try Self.guest({ () throws(XenRingError) in try s.ring.pushResponses() }) { owed = true }
                if s.held != nil { return false }
                if taken == Self.batch {
                    yielded = true
                    return false
                }
                return try Self.guest { () throws(XenRingError) in try s.ring.finalCheckForRequests() }
            }
            if !more { break }
        }
        if let creditWait { again.withLock { $0 }?.txAfter(creditWait) }
        if yielded { again.withLock { $0 }?.tx() }
        return owed ? .notifyGuest : .quiet
    }

    /// Whether an event the frontend asked for (a publish in this pump
    /// crossed `rsp_event`) goes at a mid-batch publish: when fewer than half the ring's
    /// slots hold requests still to be taken, the frontend is about to run
    /// out of work for this pump (TX: requests; RX: posted buffers) and
    /// should refill now, while the pump goes on. With more queued, the
    /// event waits for the pump's end: a frontend that re-arms at every
    /// response (Linux's netfront since 4.x) would otherwise be woken at
    /// every publish, which measured slower for 64-byte packets
    /// (pvh-bench net tx-64 --tx-event next: 0.62 to 0.48).
    private static func runningLow<Request, Response>(_ ring: SharedRing<Request, Response>) throws(XenRingError) -> Bool {
        try ring.unconsumedRequests() < ring.geometry.entries / 2
    }

    /// A ring operation whose failure is the device's fault.
    private static func guest<T>(_ body: () throws(XenRingError) -> T) throws(DeviceFault) -> T {
        do { return try body() } catch { throw DeviceFault(error) }
    }

    /// What one `transmitBatch` did.
    struct TxBatchStep {
        /// Packets taken off the ring and answered.
        var packets = 0
        /// Their responses (written, not yet published).
        var responses = 0
        /// Set when a packet is now held for credit: `.some(delay)` asks
        /// for a timer to pump again after it, `.some(nil)` means one armed
        /// earlier still will.
        var creditWait: Duration??
    }

    /// Packets the TX pump gathers into one batch for the link, at most:
    /// the link's own limit (a TAP: 32 frames per io_uring_enter), and
    /// packets up to this many slots, so a TSO packet's 17 slots make a
    /// batch of two and the frontend hears of room as often as before.
    static let gatherSlots = 32

    /// Reads up to `limit` packets (at least one request is there, or a
    /// packet is held), checks each, sends the valid ones to the link as
    /// one batch and writes every packet's responses in ring order; stops
    /// at a packet held for credit (not sent, no responses).
    private func transmitBatch(_ s: inout TxState, limit: Int) throws(DeviceFault) -> TxBatchStep {
        var step = TxBatchStep()
        let link = environment.link as? any BatchTransmitNetworkLink
        let most = min(limit, max(1, link?.transmitBatchLimit ?? 1))
        s.gatheredCount = 0
        var slots = 0
        while s.gatheredCount < most, slots < Self.gatherSlots {
            if s.gatheredCount > 0 {
                guard try Self.guest({ () throws(XenRingError) in try s.ring.unconsumedRequests() }) > 0 else { break }
            }
            if s.gatheredCount == s.gathered.count {
                s.gathered.append(GatheredPacket(slots: s.slots))
            }
            let k = s.gatheredCount
            if let held = s.held {
                s.gathered[k].slots = held.slots
                s.gathered[k].packet = held.packet
                s.gathered[k].invalid = nil
            } else {
                try readPacket(&s.ring, into: &s.gathered[k].slots)
                s.gathered[k].invalid = NetTxValidator.validate(s.gathered[k].slots, into: &s.gathered[k].packet)
            }
            if s.gathered[k].invalid == nil, let credit = environment.credit {
                // tx_credit_exceeded: a timer still pending means wait for it.
                if let due = s.creditTimerDue, credit.now() < due {
                    s.held = (s.gathered[k].slots, s.gathered[k].packet)
                    step.creditWait = .some(nil)
                    break
                }
                s.creditTimerDue = nil
                if case .wait(let delay) = credit.take(s.gathered[k].packet.length) {
                    s.held = (s.gathered[k].slots, s.gathered[k].packet)
                    s.creditTimerDue = credit.now() + delay
                    NetMetrics.bump(metrics.txCreditWaits)
                    step.creditWait = .some(delay)
                    break
                }
            }
            s.held = nil
            slots += s.gathered[k].slots.extras.count + s.gathered[k].slots.dataSlots
            s.gatheredCount += 1
        }
        let count = s.gatheredCount
        guard count > 0 else { return step }
        if let link, count > 1 {
            sendBatch(&s.gathered, count: count, link: link, &s.scratch)
        } else {
            for k in 0..<count where s.gathered[k].invalid == nil {
                s.gathered[k].outcome = send(s.gathered[k].packet, &s.scratch)
            }
        }
        for k in 0..<count {
            let status: NetifStatus
            if let invalid = s.gathered[k].invalid {
                metrics.drop(invalid)
                status = .error
            } else if let reason = s.gathered[k].outcome {
                metrics.drop(reason)
                // The host side's refusal is not the guest's error.
                status = reason == .txBadGrant || reason == .txBadChecksumHeaders || reason == .txBadGSO ? .error : .okay
            } else {
                status = .okay
            }
            // NetTxSlots.forEachResponse's order, read in place (a copy of
            // the slots would hold each of their arrays once per packet).
            do throws(XenRingError) {
                try s.ring.pushResponse(NetifTxResponse(id: s.gathered[k].slots.first.id, status: status))
                for _ in 0..<s.gathered[k].slots.extras.count {
                    try s.ring.pushResponse(NetifTxResponse(id: 0, status: .null))
                }
                for j in 0..<s.gathered[k].slots.chain.count {
                    try s.ring.pushResponse(NetifTxResponse(id: s.gathered[k].slots.chain[j].id, status: status))
                }
                step.responses += s.gathered[k].slots.extras.count + s.gathered[k].slots.dataSlots
            } catch {
                throw DeviceFault(error)
            }
        }
        step.packets = count
        return step
    }

    /// The first slot, its extras, its `more_data` chain, as
    /// `xenvif_get_extras` and `xenvif_count_requests` read them. Fatal
    /// (`xenvif_fatal_tx_err`): a packet whose slots are not all on the
    /// ring, a chain longer than `fatalTxSlots`, an extra of no known type
    /// or repeated.
    private func readPacket(_ ring: inout NetifTxRing, into slots: inout NetTxSlots) throws(DeviceFault) {
        func next(_ what: String) throws(DeviceFault) -> NetifTxSlot {
            let slot: NetifTxSlot?
            do { slot = try ring.nextRequest() } catch { throw DeviceFault(error) }
            guard let slot else { throw .hostileGuest("TX queue \(index): \(what) missing: the packet is not all on the ring") }
            return slot
        }
        let first = try next("first slot").request
        slots.reset(first: first)
        if first.flags.contains(.extraInfo) {
            var more = true
            // The types seen, one bit each (all are below typeMaximum, 5).
            var seen: UInt32 = 0
            while more {
                let extra = try next("extra info").extra
                guard extra.type != 0, extra.type < NetifExtraInfo.typeMaximum, seen & (1 << UInt32(extra.type)) == 0 else {
                    throw .hostileGuest("TX queue \(index): invalid extra type \(extra.type)")
                }
                seen |= 1 << UInt32(extra.type)
                slots.extras.append(extra)
                more = extra.more
            }
        }
        var more = first.flags.contains(.moreData)
        while more {
            guard slots.dataSlots < NetifLimits.fatalTxSlots else {
                throw .hostileGuest("TX queue \(index): packet of more than \(NetifLimits.fatalTxSlots) slots")
            }
            let r = try next("more_data slot").request
            slots.chain.append(r)
            more = r.flags.contains(.moreData)
        }
    }

    /// Maps the packet's pages and hands them to the link (straight from
    /// the granted pages, unless a checksum must be completed here). Nil
    /// when sent; else why not. `scratch`'s arrays are reused.
    private func send(_ packet: NetTxPacket, _ scratch: inout TxScratch) -> NetDropReason? {
        // No carrier: nothing is mapped or copied for a frame that cannot go.
        guard environment.carrier.isUp else { return .txLinkDown }
        scratch.grants.removeAll(keepingCapacity: true)
        for segment in packet.segments { scratch.grants.append(segment.grant) }
        // Taken out of `scratch` while the closure below fills them.
        var guestRanges = scratch.guestRanges
        var hostRanges = scratch.hostRanges
        var headers = scratch.headers
        scratch.guestRanges = []
        scratch.hostRanges = []
        scratch.headers = []
        defer {
            // Emptied (storage kept): no page stays named past its hold.
            guestRanges.removeAll(keepingCapacity: true)
            hostRanges.removeAll(keepingCapacity: true)
            scratch.guestRanges = guestRanges
            scratch.hostRanges = hostRanges
            scratch.headers = headers
        }
        // Every page of the packet held at once (one pass over the grant
        // table's lock each way, not one per slot), released on return.
        do {
            return try environment.grants.withHolds(scratch.grants, access: .read, regions: &scratch.regions) { regions in
                switch plan(packet, regions, base: 0, &guestRanges, &hostRanges, &headers) {
                case .dropped(let reason): return reason
                case .viaBounce: return sendViaBounce(packet, guestRanges)
                case .ready(let offload):
                    if let reason = Self.dropReason(environment.link.transmit(hostRanges, offload: offload)) { return reason }
                    countSent(packet)
                    return nil
                }
            }
        } catch {
            return .txBadGrant
        }
    }

    /// The valid packets of `gathered[..<count]` to the link as one batch
    /// (`BatchTransmitNetworkLink`: a TAP writes them in one system call):
    /// every page of all of them held at once (one pass over the grant
    /// table's lock each way for the batch), each packet's frame gathered
    /// from its pages, the frames sent in ring order in one call, then the
    /// holds ended, so no page is released to the guest before the host
    /// took its frame. Each packet's `outcome` is set. A packet that needs
    /// the bounce buffer (a checksum or segmentation the link cannot do)
    /// goes alone, after the frames before it. When any grant cannot be
    /// held, the packets go one by one (`send`), so only a packet with a
    /// bad grant is dropped.
    private func sendBatch(_ gathered: inout [GatheredPacket], count: Int, link: any BatchTransmitNetworkLink,
                           _ scratch: inout TxScratch) {
        guard environment.carrier.isUp else {
            for k in 0..<count where gathered[k].invalid == nil { gathered[k].outcome = .txLinkDown }
            return
        }
        scratch.grants.removeAll(keepingCapacity: true)
        for k in 0..<count where gathered[k].invalid == nil {
            gathered[k].outcome = nil
            for segment in gathered[k].packet.segments { scratch.grants.append(segment.grant) }
        }
        // Taken out of `scratch` while the closure below fills them.
        var guestRanges = scratch.guestRanges
        var headers = scratch.headers
        var batch = scratch.batch
        var frames = scratch.frames
        scratch.guestRanges = []
        scratch.headers = []
        scratch.batch = NetworkTransmitBatch()
        scratch.frames = []
        defer {
            // Emptied (storage kept): no page stays named past its hold.
            guestRanges.removeAll(keepingCapacity: true)
            batch.removeAll()
            frames.removeAll(keepingCapacity: true)
            scratch.guestRanges = guestRanges
            scratch.headers = headers
            scratch.batch = batch
            scratch.frames = frames
        }
        let held: Bool? = try? environment.grants.withHolds(scratch.grants, access: .read, regions: &scratch.regions) { regions in
            /// The frames gathered so far to the link, each packet's outcome from its result.
            func flush() {
                guard batch.count > 0 else { return }
                link.transmit(&batch)
                for (i, k) in frames.enumerated() {
                    let result = i < batch.results.count ? batch.results[i] : .failure(.linkDown)
                    if let reason = Self.dropReason(result) {
                        gathered[k].outcome = reason
                    } else {
                        countSent(gathered[k].packet)
                    }
                }
                batch.removeAll()
                frames.removeAll(keepingCapacity: true)
            }
            var base = 0
            for k in 0..<count where gathered[k].invalid == nil {
                guestRanges.removeAll(keepingCapacity: true)
                // The frame's parts go straight into the batch (no array of
                // the packet's own: each part held once less).
                switch plan(gathered[k].packet, regions, base: base, &guestRanges, &batch, &headers) {
                case .ready(let offload):
                    batch.endFrame(offload: offload)
                    frames.append(k)
                case .dropped(let reason):
                    batch.discardOpenFrame()
                    gathered[k].outcome = reason
                case .viaBounce:
                    batch.discardOpenFrame()
                    flush()
                    gathered[k].outcome = sendViaBounce(gathered[k].packet, guestRanges)
                }
                base += gathered[k].packet.segments.count
            }
            flush()
            return true
        }
        if held == nil {
            for k in 0..<count where gathered[k].invalid == nil { gathered[k].outcome = send(gathered[k].packet, &scratch) }
        }
    }

    /// Where `plan` puts a frame's parts: the frame's own array (`send`),
    /// or the batch being gathered (`sendBatch`).
    protocol TxPartSink {
        mutating func appendPart(_ part: HostMemoryRange)
    }

    /// How a packet whose pages are held goes to the link.
    enum TxPlan {
        /// Straight from the granted pages (`parts`) with this offload.
        case ready(NetworkOffload)
        /// Through the bounce buffer: a checksum to complete or a
        /// segmentation to do here.
        case viaBounce
        /// Not at all.
        case dropped(NetDropReason)
    }

    /// `packet`'s bytes in its held pages (`regions[base...]`, one per
    /// segment) as guest ranges and host parts, and its offload; a partial
    /// checksum located in a copy of its headers (each guest byte read once).
    private func plan<Parts: TxPartSink>(_ packet: NetTxPacket, _ regions: [GuestPhysicalRange], base: Int,
                                         _ guestRanges: inout [GuestPhysicalRange], _ parts: inout Parts,
                                         _ headers: inout [UInt8]) -> TxPlan {
        let env = environment
        for (k, segment) in packet.segments.enumerated() {
            guard base + k < regions.count,
                  let range = GrantHold.bytes(of: regions[base + k], offset: segment.offset, length: segment.length),
                  let host = try? env.memory.hostRange(range) else { return .dropped(.txBadGrant) }
            parts.appendPart(host)
            guestRanges.append(range)
        }
        var offload = NetworkOffload(segmentation: packet.segmentation)
        let capabilities = env.link.capabilities
        switch packet.segmentation {
        case .none: break
        case .tcpv4: if !capabilities.contains(.tcpv4Segmentation) { return .viaBounce }
        case .tcpv6: if !capabilities.contains(.tcpv6Segmentation) { return .viaBounce }
        }
        if packet.checksumBlank {
            // checksum_setup: the headers say where the checksum goes. Only
            // the headers are read when the link completes the checksum;
            // else the whole frame is copied (`sendViaBounce`).
            guard capabilities.contains(.partialChecksum) else { return .viaBounce }
            guard copyHeaders(guestRanges, limit: min(packet.length, 256), into: &headers),
                  let location = NetChecksumLocation(headers: headers, frameLength: packet.length) else {
                return .dropped(.txBadChecksumHeaders)
            }
            offload.partialChecksum = .init(start: UInt16(location.start), offset: UInt16(location.offset))
        }
        return .ready(offload)
    }

    /// A packet the link cannot take as it is (`TxPlan.viaBounce`), its
    /// pages held (`guestRanges`): segmented here, or copied once and its
    /// checksum completed, and sent from the bounce buffer. Nil when sent.
    private func sendViaBounce(_ packet: NetTxPacket, _ guestRanges: [GuestPhysicalRange]) -> NetDropReason? {
        let capabilities = environment.link.capabilities
        switch packet.segmentation {
        case .tcpv4(let mss) where !capabilities.contains(.tcpv4Segmentation),
             .tcpv6(let mss) where !capabilities.contains(.tcpv6Segmentation):
            return segmentAndSend(packet, guestRanges, mss: mss)
        default: break
        }
        // The link takes complete frames only: copy, complete, send the copy.
        guard var frame = try? copy(guestRanges, limit: packet.length) else { return .txBadGrant }
        guard let location = NetChecksumLocation(headers: frame, frameLength: frame.count) else {
            return .txBadChecksumHeaders
        }
        location.complete(&frame)
        guard let whole = staged(frame) else { return .txLinkRefused }
        NetMetrics.bump(metrics.txChecksumsCompleted)
        let offload = NetworkOffload(segmentation: packet.segmentation)
        if let reason = Self.dropReason(environment.link.transmit([whole], offload: offload)) { return reason }
        countSent(packet)
        return nil
    }

    /// The metrics of a packet the link took.
    private func countSent(_ packet: NetTxPacket) {
        NetMetrics.bump(metrics.txPackets)
        NetMetrics.bump(metrics.txBytes, by: packet.length)
        if packet.segmentation != .none { NetMetrics.bump(metrics.txGSOPackets) }
    }

    /// Why the link did not take a frame (nil: it did).
    private static func dropReason(_ result: Result<Void, NetworkTransmitDrop>) -> NetDropReason? {
        switch result {
        case .success: nil
        case .failure(.linkDown): .txLinkDown
        case .failure(.busy): .txLinkBusy
        case .failure: .txLinkRefused
        }
    }

    /// `frame` in the bounce buffer, as host memory for the link (valid
    /// until the next frame is staged).
    private func staged(_ frame: [UInt8]) -> HostMemoryRange? {
        guard (try? bounce.write(frame, at: GuestPhysicalAddress(0))) != nil else { return nil }
        return try? bounce.hostRange(GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(frame.count)))
    }

    /// A GSO packet for a link without segmentation: copied, cut into
    /// MSS-sized frames with complete checksums (`NetTCPSegmenter`), each
    /// sent from the bounce buffer. Nil when all went.
    private func segmentAndSend(_ packet: NetTxPacket, _ ranges: [GuestPhysicalRange], mss: UInt16) -> NetDropReason? {
        guard let frame = try? copy(ranges, limit: packet.length) else { return .txBadGrant }
        guard let segments = NetTCPSegmenter.segment(frame, segmentSize: Int(mss)) else { return .txBadGSO }
        for segment in segments {
            guard let range = staged(segment) else { return .txLinkRefused }
            if let reason = Self.dropReason(environment.link.transmit([range], offload: .none)) { return reason }
        }
        NetMetrics.bump(metrics.txPackets)
        NetMetrics.bump(metrics.txBytes, by: packet.length)
        NetMetrics.bump(metrics.txGSOPackets)
        NetMetrics.bump(metrics.txSegmentedPackets)
        return nil
    }

    /// The first `limit` bytes of `ranges` copied into `headers` (its
    /// storage kept from packet to packet when the first range holds them
    /// all, as a packet's first slot does); false if they are not guest memory.
    private func copyHeaders(_ ranges: [GuestPhysicalRange], limit: Int, into headers: inout [UInt8]) -> Bool {
        if let first = ranges.first, first.length >= UInt64(limit) {
            if headers.count != limit { headers = [UInt8](repeating: 0, count: limit) }
            return (try? environment.memory.read(at: first.start, into: &headers)) != nil
        }
        guard let copied = try? copy(ranges, limit: limit) else { return false }
        headers = copied
        return true
    }

    /// The first `limit` bytes of `ranges`, copied out of guest memory.
    private func copy(_ ranges: [GuestPhysicalRange], limit: Int) throws(GuestMemoryError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(limit)
        for r in ranges where out.count < limit {
            out += try environment.memory.read(at: r.start, count: min(Int(r.length), limit - out.count))
        }
        return out
    }

    // MARK: RX

    /// Hands a frame from the link to this queue (on the link's thread).
    /// False when the backlog is full (the frame is dropped and counted).
    func enqueue(_ frame: NetworkFrame) -> Bool {
        guard backlog.append(frame) else {
            metrics.drop(.rxBacklogFull)
            return false
        }
        return true
    }

    /// The link said frames are queued and this queue reads them (its RX
    /// pump must run): false once the queue is stopping, when the link's
    /// thread must read them itself.
    func linkReadable() -> Bool {
        linkRead.withLock { state in
            guard state != .stopped else { return false }
            state = .reading
            return true
        }
    }

    /// The queue stops: it reads the link no more, and hands the right to
    /// read back if it held it (else nobody would read again).
    func stopLinkReads() {
        let held = linkRead.withLock { state in
            defer { state = .stopped }
            return state == .reading
        }
        if held { environment.reader?.link.watch(lastFrameLarge: false) }
    }

    /// What one RX pump has done so far.
    private struct RxProgress {
        var owed = false  // as in pumpTx
        var unpublished = 0
        var delivered = 0
        /// Too few posted buffers for the next frame.
        var blocked = false
    }

    /// The RX pump: backlog frames into the frontend's posted buffers while
    /// there are enough for the next frame, then, while this queue holds
    /// the link's right to read, frames read straight from the link
    /// (`readLink`); when there are too few buffers, asks for an event on
    /// the next posted buffer (`req_event`, the frontend's
    /// feature-rx-notify) and stops.
    func pumpRx() throws(DeviceFault) -> BackendChannel.PumpResult {
        try rx.withLock { (s: inout RxState) throws(DeviceFault) -> BackendChannel.PumpResult in
            do throws(XenRingError) {
                var p = RxProgress()
                let entries = Int(s.ring.geometry.entries)
                // The backlog's frames a batch at a time (one lock to look,
                // one to forget those taken), not one lock per frame.
                while p.delivered < Self.batch, !p.blocked {
                    let frames = backlog.prefix(Self.batch - p.delivered)
                    if frames.isEmpty { break }
                    var used = 0
                    for frame in frames {
                        guard let slots = plan(frame.bytes.count, frame.offload, entries: entries) else {
                            used += 1
                            continue
                        }
                        guard try waitForBuffers(slots.total, &s) else {
                            p.blocked = true
                            break
                        }
                        try takeRequests(slots, &s)
                        try deliver(frame, slots, &s)
                        used += 1
                        try answered(slots.total, &p, &s)
                    }
                    backlog.removeFirst(used)
                }
                var reading = false
                if !p.blocked, p.delivered < Self.batch, backlog.count == 0, let reader = environment.reader,
                   linkRead.withLock({ $0 == .reading }) {
                    reading = try readLink(reader, &p, &s)
                }
                if p.unpublished > 0, try s.ring.pushResponses() { p.owed = true }
                if p.delivered == Self.batch, !p.blocked, reading || backlog.count > 0 { again.withLock { $0 }?.rx() }
                return p.owed ? .notifyGuest : .quiet
            } catch {
                throw DeviceFault(error)
            }
        }
    }

    /// A frame's `slots` responses were written: publish every
    /// `publishEvery`, with the event at once when the ring runs low.
    private func answered(_ slots: Int, _ p: inout RxProgress, _ s: inout RxState) throws(XenRingError) {
        p.delivered += 1
        p.unpublished += slots
        guard p.unpublished >= Self.publishEvery else { return }
        p.unpublished = 0
        if try s.ring.pushResponses() { p.owed = true }
        if p.owed, try Self.runningLow(s.ring) {
            p.owed = false
            again.withLock { $0 }?.notifyRx()
        }
    }

    /// Whether `count` posted buffers are there. When not: an event on the
    /// next buffer posted (xenvif_rx_ring_slots_available: `req_event =
    /// req_prod + 1`, so a frame needing several buffers is woken by each
    /// until there are enough), looking again if one came meanwhile.
    private func waitForBuffers(_ count: Int, _ s: inout RxState) throws(XenRingError) -> Bool {
        while Int(try s.ring.unconsumedRequests()) < count {
            if try s.ring.requestEventOnNextRequest() { continue }
            if !s.stalled { NetMetrics.bump(metrics.rxRingFull) }
            s.stalled = true
            return false
        }
        s.stalled = false
        return true
    }

    /// Reads frames from the link while this queue holds the right to,
    /// up to the pump's batch: with one queue straight into the posted
    /// buffers (`readIntoPostedBuffers`), with several into a buffer of
    /// the backend's and on to the queue the flow hash chooses. True while
    /// the right is still held (frames may be left).
    private func readLink(_ reader: NetLinkReader, _ p: inout RxProgress, _ s: inout RxState) throws(XenRingError) -> Bool {
        let entries = Int(s.ring.geometry.entries)
        let direct = reader.steer == nil && directSlots.total <= entries
        while p.delivered < Self.batch {
            let result: NetworkDirectReceive
            if direct {
                guard try waitForBuffers(directSlots.total, &s) else {
                    // Frames wait in the link's own queue until buffers come.
                    p.blocked = true
                    return true
                }
                switch try readIntoPostedBuffers(reader, &p, &s) {
                case .delivered:
                    if s.expectLarge { continue }
                    // A small frame: the link's thread reads the next ones,
                    // beside this one's ring work (`DirectReceiveNetworkLink.watch`).
                    linkRead.withLock { if $0 == .reading { $0 = .idle } }
                    reader.link.watch(lastFrameLarge: false)
                    return false
                case .link(let r): result = r
                case .fellBack(let r):
                    result = r
                    if case .frame = r {
                        // The backlog goes first: the pump runs again.
                        again.withLock { $0 }?.rx()
                        return true
                    }
                }
            } else {
                result = readCopy(reader, &s)
            }
            switch result {
            case .frame: continue
            case .dropped(let length):
                // Longer than the buffers (the link counts what it dropped for itself).
                if length > 0 { metrics.drop(.rxTooLarge) }
            case .empty:
                linkRead.withLock { if $0 == .reading { $0 = .idle } }
                reader.link.watch(lastFrameLarge: direct && s.expectLarge)
                return false
            case .gone:
                linkRead.withLock { if $0 == .reading { $0 = .idle } }
                return false
            }
        }
        return true
    }

    /// The posted buffers a frame read straight from the link may take:
    /// as many pages as the link's largest frame (one without feature-sg),
    /// behind a slot for the GSO extra when the frontend negotiated GSO.
    /// The frame's data goes into the first buffer and those after the
    /// extra's, the order its responses will have.
    private var directSlots: RxPlan {
        let features = environment.features
        let maximum = environment.reader?.link.maximumReceiveLength ?? NetifLimits.pageSize
        let data = features.scatterGather ? (maximum + NetifLimits.pageSize - 1) / NetifLimits.pageSize : 1
        let gso = features.gsoTCPv4 || features.gsoTCPv6
        return RxPlan(dataSlots: data, gso: gso ? .gso(size: 0, type: NetifExtraInfo.gsoTCPv4) : nil)
    }

    /// What `readIntoPostedBuffers` did.
    private enum DirectStep {
        /// A frame was delivered and answered.
        case delivered
        /// What the link said, no frame delivered (dropped, empty, gone).
        case link(NetworkDirectReceive)
        /// The posted buffers could not be used as they are (a grant that
        /// cannot be held, a buffer less than a page): the frame went
        /// through the backend's own buffer into the backlog (`readCopy`).
        case fellBack(NetworkDirectReceive)
    }

    /// One frame read from the link into the next posted buffers (their
    /// requests copied once, taken only as far as the frame needs them),
    /// answered in place. The frame lands page by page in the buffers'
    /// order with the GSO extra's slot skipped, which is where it belongs
    /// unless it needs the backend's hand (several pages without GSO on a
    /// GSO frontend, a partial checksum the frontend does not take): then
    /// its bytes are copied out while the buffers are held, and delivered
    /// into the same buffers as a backlog frame is.
    private func readIntoPostedBuffers(_ reader: NetLinkReader, _ p: inout RxProgress,
                                       _ s: inout RxState) throws(XenRingError) -> DirectStep {
        let posted = directSlots
        let extraSlot = posted.gso != nil
        // A large frame's every page held and read into, or a small frame's
        // one: holding 17 grants for a 64-byte frame cost more than the copy
        // it saves. The guess is the last frame's size, as the TAP reader's
        // (`TapLink.FrameReader`); a wrong small guess reads the rest of a
        // large frame into the backend's buffer and copies it.
        let large = s.expectLarge && posted.dataSlots > 1
        s.requests.removeAll(keepingCapacity: true)
        s.grants.removeAll(keepingCapacity: true)
        for k in 0..<(large ? posted.total : 1) {
            // The caller saw `posted.total` requests there.
            guard let request = try s.ring.peekRequest(ahead: UInt32(k)) else { return .link(.dropped(length: 0)) }
            s.requests.append(request)
            if k == 1 && extraSlot { continue }
            s.grants.append(request.grant)
        }
        let memory = environment.memory
        let link = reader.link
        let entries = Int(s.ring.geometry.entries)
        let tail = large || posted.dataSlots == 1 ? nil : rxBounceRange
        var hostRanges = s.hostRanges
        hostRanges.removeAll(keepingCapacity: true)
        var unusable = false
        // Set when the frame needs the backend's hand: its bytes.
        var copied: NetworkFrame?
        var slots: RxPlan?
        let rxBounce = self.rxBounce
        let held = try? environment.grants.withHolds(s.grants, access: .write, regions: &s.regions) { regions -> NetworkDirectReceive in
            for region in regions {
                // A posted buffer is a whole page at offset 0 (netfront's
                // xennet_alloc_rx_buffers; rx responses carry offset 0).
                guard region.length == UInt64(NetifLimits.pageSize), let host = try? memory.hostRange(region) else {
                    unusable = true
                    return .empty
                }
                hostRanges.append(host)
            }
            if let tail { hostRanges.append(tail) }
            let r = link.receive(into: hostRanges)
            guard case .frame(let length, let offload) = r else { return r }
            // `plan` counts a frame this frontend cannot take.
            guard let plan = plan(length, offload, entries: entries) else { return .dropped(length: 0) }
            slots = plan
            let inPlace = length <= regions.count * NetifLimits.pageSize
            let laidOut = plan.dataSlots == 1 || (plan.gso != nil) == extraSlot
            let checksumTaken = offload.partialChecksum == nil || takesPartialChecksum(firstBuffer: regions.first, memory: memory)
            if !inPlace || !laidOut || !checksumTaken {
                var bytes: [UInt8] = []
                bytes.reserveCapacity(length)
                for region in regions where bytes.count < length {
                    guard let piece = try? memory.read(at: region.start, count: min(Int(region.length), length - bytes.count)) else {
                        slots = nil
                        return .dropped(length: 0)
                    }
                    bytes += piece
                }
                if bytes.count < length {
                    guard let rest = try? rxBounce.read(at: GuestPhysicalAddress(0), count: length - bytes.count) else {
                        slots = nil
                        return .dropped(length: 0)
                    }
                    bytes += rest
                }
                copied = NetworkFrame(bytes: bytes, offload: offload)
            }
            return r
        }
        s.hostRanges = hostRanges
        guard let held, !unusable else {
            // The buffers are not the pages netfront posts, or a grant
            // cannot be held: the frame goes through the backlog, whose
            // delivery answers each buffer on its own.
            return .fellBack(readCopy(NetLinkReader(link: link, steer: nil), &s))
        }
        guard case .frame(let length, let offload) = held, let slots else { return .link(held) }
        s.expectLarge = length > NetifLimits.pageSize
        // The rest of the requests a frame read on a small guess takes,
        // each copied once as the first was.
        while s.requests.count < slots.total {
            guard let request = try s.ring.peekRequest(ahead: UInt32(s.requests.count)) else {
                metrics.drop(.rxTooLarge)
                return .link(.dropped(length: 0))
            }
            s.requests.append(request)
        }
        // The requests this frame takes, as copied: its first buffer, the
        // extra's slot (if it has one) and its other data buffers.
        s.requests.removeSubrange(slots.total...)
        if slots.gso != nil { s.requests.remove(at: 1) }
        s.ring.skipRequests(UInt32(slots.total))
        if let copied {
            try deliver(copied, slots, &s)
        } else {
            try respond(length: length, slots, firstFlags: rxFlags(offload, checksumTaken: true, gso: slots.gso != nil),
                        failed: false, &s)
            NetMetrics.bump(metrics.rxPackets)
            NetMetrics.bump(metrics.rxBytes, by: length)
            if slots.gso != nil { NetMetrics.bump(metrics.rxGSOPackets) }
            NetMetrics.bump(metrics.rxDirectPackets)
        }
        try answered(slots.total, &p, &s)
        return .delivered
    }

    /// One frame read from the link into the backend's own buffer and
    /// copied out as a `NetworkFrame` for the queue the flow hash chooses
    /// (`steer`); this queue's own frames go through its backlog.
    private func readCopy(_ reader: NetLinkReader, _ s: inout RxState) -> NetworkDirectReceive {
        let buffer = rxBounce
        guard let host = try? buffer.hostRange(GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(Self.bounceSize))) else {
            return .gone
        }
        let r = reader.link.receive(into: [host])
        guard case .frame(let length, let offload) = r,
              let bytes = try? buffer.read(at: GuestPhysicalAddress(0), count: length) else { return r }
        let frame = NetworkFrame(bytes: bytes, offload: offload)
        if let steer = reader.steer { steer(frame) } else { _ = enqueue(frame) }
        return r
    }

    struct RxPlan {
        var dataSlots: Int
        var gso: NetifExtraInfo?
        var total: Int { dataSlots + (gso == nil ? 0 : 1) }
    }

    /// The slots a frame of `length` bytes with `offload` takes, or nil
    /// (dropped, counted) when this frontend cannot take it.
    private func plan(_ length: Int, _ offload: NetworkOffload, entries: Int) -> RxPlan? {
        let features = environment.features
        let page = NetifLimits.pageSize
        let data = max(1, (length + page - 1) / page)
        if data > 1 && !features.scatterGather {
            metrics.drop(.rxTooLarge)
            return nil
        }
        var gso: NetifExtraInfo?
        switch offload.segmentation {
        case .none: break
        case .tcpv4(let size):
            guard features.gsoTCPv4, size > 0 else {
                metrics.drop(.rxUnsupportedOffload)
                return nil
            }
            gso = .gso(size: size, type: NetifExtraInfo.gsoTCPv4)
        case .tcpv6(let size):
            guard features.gsoTCPv6, size > 0 else {
                metrics.drop(.rxUnsupportedOffload)
                return nil
            }
            gso = .gso(size: size, type: NetifExtraInfo.gsoTCPv6)
        }
        let p = RxPlan(dataSlots: data, gso: gso)
        guard p.total <= entries else {
            metrics.drop(.rxTooLarge)
            return nil
        }
        return p
    }

    /// `bytes` cut into pages, each written at the start of its held
    /// buffer (`regions`, one per page); false, with perhaps some written,
    /// when a buffer grants fewer bytes than its page of the frame.
    private static func copy(_ bytes: [UInt8], into regions: [GuestPhysicalRange], memory: any HostAddressableMemory) -> Bool {
        let page = NetifLimits.pageSize
        for (k, region) in regions.enumerated() {
            let start = min(k * page, bytes.count)
            let end = min(bytes.count, start + page)
            guard UInt64(end - start) <= region.length, (try? memory.write(bytes[start..<end], at: region.start)) != nil else {
                return false
            }
        }
        return true
    }

    /// Whether the frontend takes a partial checksum of a frame whose
    /// EtherType is `frame[12...13]` as it is.
    private func takesPartialChecksum(ipv6: Bool) -> Bool {
        let features = environment.features
        if features.noChecksumOffload { return false }
        return !ipv6 || features.ipv6ChecksumOffload
    }

    private func takesPartialChecksum(_ frame: [UInt8]) -> Bool {
        takesPartialChecksum(ipv6: frame.count >= 14 && frame[12] == 0x86 && frame[13] == 0xdd)
    }

    /// `takesPartialChecksum` for a frame read into the buffer `first`
    /// (its EtherType read from there once).
    private func takesPartialChecksum(firstBuffer first: GuestPhysicalRange?, memory: any HostAddressableMemory) -> Bool {
        guard let first, let at = first.start.advanced(by: 12), let type = try? memory.read(at: at, count: 2) else { return false }
        return takesPartialChecksum(ipv6: type == [0x86, 0xdd])
    }

    /// The first data response's flags for a frame with `offload`.
    private func rxFlags(_ offload: NetworkOffload, checksumTaken: Bool, gso: Bool) -> NetifRxFlags {
        var flags: NetifRxFlags = []
        if offload.partialChecksum != nil {
            flags = checksumTaken ? [.checksumBlank, .dataValidated] : [.dataValidated]
        } else if offload.checksumValidated {
            flags.insert(.dataValidated)
        }
        if gso { flags.insert(.extraInfo) }
        return flags
    }

    /// Takes the next `slots.total` posted buffers off the ring into
    /// `s.requests` (data buffers only: the GSO extra's is skipped).
    private func takeRequests(_ slots: RxPlan, _ s: inout RxState) throws(XenRingError) {
        s.requests.removeAll(keepingCapacity: true)
        for k in 0..<slots.total {
            guard let request = try s.ring.nextRequest() else { return }
            if k == 1 && slots.gso != nil { continue }
            s.requests.append(request)
        }
    }

    /// Copies `frame` into the buffers of `s.requests` (taken for it) and
    /// writes their responses.
    private func deliver(_ frame: NetworkFrame, _ slots: RxPlan, _ s: inout RxState) throws(XenRingError) {
        var frame = frame
        var checksumTaken = true
        if frame.offload.partialChecksum != nil, !takesPartialChecksum(frame.bytes) {
            // A frontend without the offload for this frame (no
            // feature-ipv6-csum-offload for IPv6, feature-no-csum-offload)
            // gets it complete, as Linux's netback has the stack do.
            checksumTaken = false
            if let location = NetChecksumLocation(headers: frame.bytes, frameLength: frame.bytes.count) {
                location.complete(&frame.bytes)
                NetMetrics.bump(metrics.rxChecksumsCompleted)
            }
        }
        let firstFlags = rxFlags(frame.offload, checksumTaken: checksumTaken, gso: slots.gso != nil)
        s.grants.removeAll(keepingCapacity: true)
        for request in s.requests { s.grants.append(request.grant) }
        // Every buffer of the frame held at once and written (one pass over
        // the grant table's lock each way, not one map per buffer); when
        // any grant fails, buffer by buffer, so each gets its own status.
        let copied = (try? environment.grants.withHolds(s.grants, access: .write, regions: &s.regions) { regions in
            Self.copy(frame.bytes, into: regions, memory: environment.memory)
        }) ?? false
        var failed = false
        if !copied {
            let page = NetifLimits.pageSize
            for (k, request) in s.requests.enumerated() {
                let start = k * page
                let end = min(frame.bytes.count, start + page)
                do { try environment.grants.copy(to: request.grant, frame.bytes[min(start, end)..<end]) } catch {
                    failed = true
                    s.failedBuffers.append(k)
                }
            }
        }
        try respond(length: frame.bytes.count, slots, firstFlags: firstFlags, failed: failed, &s)
        if failed {
            metrics.drop(.rxBadGrant)
            return
        }
        NetMetrics.bump(metrics.rxPackets)
        NetMetrics.bump(metrics.rxBytes, by: frame.bytes.count)
        if slots.gso != nil { NetMetrics.bump(metrics.rxGSOPackets) }
    }

    /// The responses of a frame of `length` bytes in the buffers of
    /// `s.requests`: the first data response (with `firstFlags`), the GSO
    /// extra, the rest of the data, NETRXF_more_data on all data responses
    /// but the last (netfront's `xennet_get_responses` order); a buffer in
    /// `s.failedBuffers` answered NETIF_RSP_ERROR.
    private func respond(length: Int, _ slots: RxPlan, firstFlags: NetifRxFlags, failed: Bool,
                         _ s: inout RxState) throws(XenRingError) {
        let page = NetifLimits.pageSize
        defer { s.failedBuffers.removeAll(keepingCapacity: true) }
        for (k, request) in s.requests.enumerated() {
            let start = k * page
            let end = min(length, start + page)
            var status = Int16(max(0, end - start))
            if failed, s.failedBuffers.contains(k) { status = NetifStatus.error.rawValue }
            var flags: NetifRxFlags = k == 0 ? firstFlags : []
            if k < slots.dataSlots - 1 { flags.insert(.moreData) }
            try s.ring.pushResponse(NetifRxSlot(NetifRxResponse(id: request.id, offset: 0, flags: flags, status: status)))
            if k == 0, let gso = slots.gso {
                try s.ring.pushResponse(NetifRxSlot(gso))
            }
        }
    }
}

extension [HostMemoryRange]: NetQueueCore.TxPartSink {
    mutating func appendPart(_ part: HostMemoryRange) { append(part) }
}

extension NetworkTransmitBatch: NetQueueCore.TxPartSink {}
