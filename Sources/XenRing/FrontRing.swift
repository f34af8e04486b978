import GuestMemory

/// The frontend (guest) half of a request/response ring (io/ring.h
/// `front_ring`) over guest memory, as Linux's frontends use it:
/// `SHARED_RING_INIT` and `FRONT_RING_ATTACH`, requests filled in at
/// `req_prod_pvt`, `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`, responses read up
/// to `rsp_prod`, `RING_FINAL_CHECK_FOR_RESPONSES`.
///
/// For what plays the guest without a VM: test fixtures and the block
/// benchmark's frontend. Index accesses are single 32-bit loads and stores
/// with the fences io/ring.h's macros have (`wmb()` before publishing
/// `req_prod`, `mb()` before reading `req_event` or re-reading `rsp_prod`),
/// so it can run on one thread while the backend runs on another.
///
/// Not thread-safe: one owner drives it, as one guest CPU drives a ring
/// under its lock.
public final class FrontRing<Request: RingRequest, Response: RingResponse> {
    /// The guest memory the ring is in.
    public let memory: any GuestMemory
    /// Where the ring starts (the shared header).
    public let base: GuestPhysicalAddress
    /// Slot size and count.
    public let geometry: SharedRingGeometry
    let ring: RingMemory
    /// `req_prod_pvt`: requests written, perhaps not yet published.
    public private(set) var requestProducerPrivate: RingIndex
    /// `rsp_cons`: the next response to read.
    public private(set) var responseConsumer: RingIndex
    /// One array for every request written and every response read (as
    /// `SharedRing`'s): a frontend that refills a ring allocates nothing
    /// per slot (the benchmark's frontend shares the backend's two cores).
    private var requestBytes: [UInt8]
    private var responseBytes: [UInt8]

    /// Initialises the shared header in `byteCount` contiguous bytes at
    /// `base` (`SHARED_RING_INIT`; the indices start at `index` rather than
    /// 0 so tests can start near the 2^32 wrap) and attaches
    /// (`FRONT_RING_ATTACH`). Throws `.memory` if the bytes are not guest
    /// memory or hold no slot.
    public init(memory: any GuestMemory, base: GuestPhysicalAddress, byteCount: Int = Int(GuestFrameNumber.pageSize),
                startingAt index: RingIndex = RingIndex(0)) throws(XenRingError) {
        let ring = try RingMemory(memory: memory, segments: [(base, byteCount)])
        guard let g = SharedRingGeometry(Request.self, Response.self, byteCount: byteCount) else {
            throw .memory(.outOfBounds(base, count: UInt64(byteCount)))
        }
        self.memory = memory
        self.base = base
        self.geometry = g
        self.ring = ring
        self.requestProducerPrivate = index
        self.responseConsumer = index
        requestBytes = [UInt8](repeating: 0, count: Request.size)
        responseBytes = [UInt8](repeating: 0, count: Response.size)
        do { try memory.fill(at: base, count: SharedRingGeometry.entriesOffset, with: 0) } catch { throw .memory(error) }
        try ring.storeIndex(index, at: SharedRingGeometry.requestProducerOffset)
        try ring.storeIndex(index, at: SharedRingGeometry.responseProducerOffset)
        try ring.storeIndex(index.advanced(by: 1), at: SharedRingGeometry.requestEventOffset)
        try ring.storeIndex(index.advanced(by: 1), at: SharedRingGeometry.responseEventOffset)
    }

    /// `RING_FREE_REQUESTS`: slots the frontend may fill now.
    public var freeRequests: UInt32 { geometry.entries - requestProducerPrivate.distance(from: responseConsumer) }

    /// Fills the next request slot (not yet visible to the backend: publish
    /// with `pushRequests()`). False if the ring is full.
    public func enqueue(_ request: Request) throws(XenRingError) -> Bool {
        guard freeRequests > 0 else { return false }
        request.writeRingBytes(into: &requestBytes)
        try ring.write(requestBytes.prefix(Request.size), at: geometry.slotOffset(requestProducerPrivate))
        requestProducerPrivate = requestProducerPrivate.advanced(by: 1)
        return true
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes the requests written
    /// so far and says whether the backend wants an event (`req_event` in
    /// `(old, new]`).
    public func pushRequests() throws(XenRingError) -> Bool {
        let old = try ring.loadIndex(at: SharedRingGeometry.requestProducerOffset)
        let new = requestProducerPrivate
        try ring.storeIndex(new, at: SharedRingGeometry.requestProducerOffset)
        ring.fullFence()
        let event = try ring.loadIndex(at: SharedRingGeometry.requestEventOffset)
        return new.distance(from: event) < new.distance(from: old)
    }

    /// Takes every published response, in order, and advances `rsp_cons`.
    /// A `rsp_prod` claiming more responses than the ring holds is
    /// `.indexOverrun(.toGuest, ...)` (`RING_RESPONSE_PROD_OVERFLOW`, which
    /// Linux's xen-blkfront checks too); nothing is taken then.
    public func takeResponses() throws(XenRingError) -> [Response] {
        let producer = try ring.loadIndex(at: SharedRingGeometry.responseProducerOffset)
        guard producer.distance(from: responseConsumer) <= geometry.entries else {
            throw .indexOverrun(.toGuest, producer: producer, consumer: responseConsumer, size: geometry.entries)
        }
        var out: [Response] = []
        out.reserveCapacity(Int(producer.distance(from: responseConsumer)))
        while responseConsumer != producer {
            try ring.read(at: geometry.slotOffset(responseConsumer), into: &responseBytes)
            out.append(Response(ringBytes: responseBytes))
            responseConsumer = responseConsumer.advanced(by: 1)
        }
        return out
    }

    /// `RING_HAS_UNCONSUMED_RESPONSES`: whether `rsp_prod` is past `rsp_cons`
    /// (one index load; nothing is taken or asked for).
    public func hasUnconsumedResponses() throws(XenRingError) -> Bool {
        try ring.loadIndex(at: SharedRingGeometry.responseProducerOffset) != responseConsumer
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: true if responses wait; otherwise
    /// asks for an event on the next one (`rsp_event = rsp_cons + 1`),
    /// fences, and looks once more (a response published in between).
    public func finalCheckForResponses() throws(XenRingError) -> Bool {
        try finalCheckForResponses(eventAfter: 1)
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES` with the event held off: true if
    /// responses wait; otherwise asks for an event only once `count` more
    /// responses are published (`rsp_event = rsp_cons + count`, at least
    /// 1), fences, and looks once more. io/ring.h leaves the event index to
    /// the consumer for this (a frontend that wants fewer wake-ups); Linux's
    /// netfront set its TX ring's halfway through the outstanding requests.
    public func finalCheckForResponses(eventAfter count: UInt32) throws(XenRingError) -> Bool {
        if try ring.loadIndex(at: SharedRingGeometry.responseProducerOffset) != responseConsumer { return true }
        try ring.storeIndex(responseConsumer.advanced(by: max(1, count)), at: SharedRingGeometry.responseEventOffset)
        ring.fullFence()
        return try ring.loadIndex(at: SharedRingGeometry.responseProducerOffset) != responseConsumer
    }

    /// Requests published or written and not yet answered
    /// (`req_prod_pvt - rsp_cons`).
    public var outstandingRequests: UInt32 { requestProducerPrivate.distance(from: responseConsumer) }
}
