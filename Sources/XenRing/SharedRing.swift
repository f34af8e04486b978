import CXen
import GuestMemory

/// An entry of a request/response ring: a fixed-size C structure that is
/// copied out of (or into) the ring as bytes. Concrete types (blkif, netif)
/// decode every field from the copy, so a guest changing the slot afterwards
/// changes nothing the backend sees.
public protocol RingEntry: Sendable {
    /// `sizeof` the C structure.
    static var size: Int { get }
    /// `_Alignof` the C structure: the ring's slot (a union of request and
    /// response, io/ring.h `DEFINE_RING_TYPES`) is padded to it.
    static var alignment: Int { get }
    /// Decodes a copy of exactly `size` bytes. Must not fail: fields a backend
    /// cannot act on are decoded as they are and rejected by the device.
    init(ringBytes: [UInt8])
    /// The entry as `size` bytes (shorter arrays are zero-padded).
    var ringBytes: [UInt8] { get }
    /// Writes the entry's `size` bytes into `bytes` (which has `size`
    /// bytes), in its storage: a ring that keeps one array for every
    /// response allocates nothing per response. The default assigns
    /// `ringBytes`.
    func writeRingBytes(into bytes: inout [UInt8])
}

extension RingEntry {
    /// Byte-aligned by default; structures with wider fields must say so.
    public static var alignment: Int { 1 }

    public func writeRingBytes(into bytes: inout [UInt8]) {
        var b = ringBytes
        if b.count < Self.size { b += [UInt8](repeating: 0, count: Self.size - b.count) }
        bytes = b
    }
}

/// A request type: what the frontend (guest) puts on the ring.
public protocol RingRequest: RingEntry {}
/// A response type: what the backend puts on the ring.
public protocol RingResponse: RingEntry {}

/// The geometry of a request/response ring (io/ring.h): a 64-byte header
/// (`req_prod, req_event, rsp_prod, rsp_event`, private and padding bytes),
/// then `entries` slots of `slotSize` bytes.
public struct SharedRingGeometry: Hashable, Sendable {
    /// Offsets of the header fields, from Xen's `DEFINE_RING_TYPES`.
    public static let requestProducerOffset = Int(PVH_SRING_REQ_PROD_OFFSET)
    public static let requestEventOffset = Int(PVH_SRING_REQ_EVENT_OFFSET)
    public static let responseProducerOffset = Int(PVH_SRING_RSP_PROD_OFFSET)
    public static let responseEventOffset = Int(PVH_SRING_RSP_EVENT_OFFSET)
    /// Offset of `ring[0]`.
    public static let entriesOffset = Int(PVH_SRING_RING_OFFSET)

    /// Bytes per slot: `sizeof(union { req; rsp; })`.
    public let slotSize: Int
    /// Slots: a power of two (`__RING_SIZE`).
    public let entries: UInt32
    /// Bytes of ring memory the geometry was computed for.
    public let byteCount: Int

    /// The geometry Xen's `__RING_SIZE(s, byteCount)` gives: as many slots as
    /// fit after the header, rounded down to a power of two. Nil if not even
    /// one fits.
    public init?(slotSize: Int, byteCount: Int) {
        guard slotSize > 0, byteCount > Self.entriesOffset else { return nil }
        let fit = (byteCount - Self.entriesOffset) / slotSize
        guard fit > 0 else { return nil }
        var entries = 1
        while entries * 2 <= fit { entries *= 2 }
        guard entries <= Int(UInt32.max / 2) else { return nil }
        self.slotSize = slotSize
        self.entries = UInt32(entries)
        self.byteCount = byteCount
    }

    /// The geometry for `Request`/`Response` in `byteCount` bytes.
    public init?<Request: RingRequest, Response: RingResponse>(_: Request.Type, _: Response.Type, byteCount: Int) {
        let align = max(Request.alignment, Response.alignment, 1)
        let raw = max(Request.size, Response.size)
        self.init(slotSize: (raw + align - 1) / align * align, byteCount: byteCount)
    }

    /// Byte offset (in ring memory) of the slot `index` maps to.
    public func slotOffset(_ index: RingIndex) -> Int {
        Self.entriesOffset + Int(index.rawValue & (entries - 1)) * slotSize
    }
}

/// The backend half of a request/response ring (io/ring.h `back_ring`) over
/// guest memory: takes requests off, puts responses on, and decides when the
/// frontend needs an event.
///
/// Private state is `req_cons` and `rsp_prod_pvt`, as in `BACK_RING_ATTACH`;
/// the shared header is read through guest memory, each field once per
/// decision, and validated against that private state
/// (`RING_REQUEST_PROD_OVERFLOW`), so impossible indices give
/// `.indexOverrun` instead of a loop over garbage.
public struct SharedRing<Request: RingRequest, Response: RingResponse>: Sendable {
    public let geometry: SharedRingGeometry
    let ring: RingMemory
    /// `req_cons`: the next request to take.
    public private(set) var requestConsumer: RingIndex
    /// `rsp_prod_pvt`: responses written but perhaps not yet published.
    public private(set) var responseProducerPrivate: RingIndex
    /// The `rsp_prod` this backend last published (the "old" value of
    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`; kept privately so a guest
    /// rewriting `rsp_prod` cannot change the decision).
    public private(set) var responseProducerPublished: RingIndex
    /// The slot copies are made in, one array for every request (and one
    /// for every response): reused, so taking or answering a slot
    /// allocates nothing.
    private var requestBytes: [UInt8]
    private var responseBytes: [UInt8]

    /// Attaches to the ring in `frames` (one frame per ring page, in order),
    /// as `BACK_RING_ATTACH(r, s, index, pages * PAGE_SIZE)`: both private
    /// indices start at `index` (0 for a fresh ring). Throws `.memory` if a
    /// frame is not guest RAM.
    public init(memory: any GuestMemory, frames: [GuestFrameNumber], startingAt index: RingIndex = RingIndex(0)) throws(XenRingError) {
        var segments: [(start: GuestPhysicalAddress, length: Int)] = []
        for frame in frames {
            guard let a = frame.address else {
                throw .memory(.outOfBounds(GuestPhysicalAddress(UInt64.max), count: GuestFrameNumber.pageSize))
            }
            segments.append((a, Int(GuestFrameNumber.pageSize)))
        }
        try self.init(ring: RingMemory(memory: memory, segments: segments), startingAt: index)
    }

    /// Attaches to a ring of `byteCount` contiguous guest-physical bytes at `base`.
    public init(memory: any GuestMemory, base: GuestPhysicalAddress, byteCount: Int = Int(GuestFrameNumber.pageSize),
                startingAt index: RingIndex = RingIndex(0)) throws(XenRingError) {
        try self.init(ring: RingMemory(memory: memory, segments: [(base, byteCount)]), startingAt: index)
    }

    init(ring: RingMemory, startingAt index: RingIndex) throws(XenRingError) {
        guard let g = SharedRingGeometry(Request.self, Response.self, byteCount: ring.length) else {
            throw .memory(.outOfBounds(ring.segments.first?.start ?? GuestPhysicalAddress(0), count: UInt64(ring.length)))
        }
        self.geometry = g
        self.ring = ring
        self.requestConsumer = index
        self.responseProducerPrivate = index
        self.responseProducerPublished = index
        requestBytes = [UInt8](repeating: 0, count: Request.size)
        responseBytes = [UInt8](repeating: 0, count: Response.size)
    }

    /// Requests the backend may take now: `RING_HAS_UNCONSUMED_REQUESTS`,
    /// i.e. `min(req_prod - req_cons, size - (req_cons - rsp_prod_pvt))`.
    /// Reads `req_prod` once; throws `.indexOverrun` if it claims more
    /// requests than the ring can hold (`RING_REQUEST_PROD_OVERFLOW`).
    public func unconsumedRequests() throws(XenRingError) -> UInt32 {
        let producer = try ring.loadIndex(at: SharedRingGeometry.requestProducerOffset)
        return try unconsumed(producer: producer)
    }

    /// Copies the next request out of the ring (once: the guest may rewrite
    /// the slot at any time) and advances `req_cons`. Nil when there is none,
    /// or when `size` requests are outstanding without responses
    /// (`RING_REQUEST_CONS_OVERFLOW`: the backend must respond first).
    public mutating func nextRequest() throws(XenRingError) -> Request? {
        guard try unconsumedRequests() > 0 else { return nil }
        try ring.read(at: geometry.slotOffset(requestConsumer), into: &requestBytes)
        requestConsumer = requestConsumer.advanced(by: 1)
        return Request(ringBytes: requestBytes)
    }

    /// Copies the request `ahead` slots past `req_cons` out of the ring
    /// (once, as `nextRequest` does) without taking it: for a backend that
    /// must use several requests' buffers before it knows how many it takes
    /// (netback's RX, reading a frame straight into the posted buffers).
    /// Nil when fewer than `ahead + 1` requests are there. The caller keeps
    /// the copy and later takes the requests with `skipRequests`, never
    /// reading the slots again.
    public mutating func peekRequest(ahead: UInt32) throws(XenRingError) -> Request? {
        guard try unconsumedRequests() > ahead else { return nil }
        try ring.read(at: geometry.slotOffset(requestConsumer.advanced(by: ahead)), into: &requestBytes)
        return Request(ringBytes: requestBytes)
    }

    /// Takes the next `count` requests, already copied with `peekRequest`
    /// (which saw them there; `req_prod` only moves on), without reading
    /// them again.
    public mutating func skipRequests(_ count: UInt32) {
        requestConsumer = requestConsumer.advanced(by: count)
    }

    /// Writes `response` into the next response slot (not yet visible to the
    /// guest: publish with `pushResponses()`). Throws
    /// `.responseWithoutRequest` if every taken request already has its
    /// response, since the slot would overwrite an unread request.
    public mutating func pushResponse(_ response: Response) throws(XenRingError) {
        guard requestConsumer.distance(from: responseProducerPrivate) > 0 else {
            throw .responseWithoutRequest(responseProducer: responseProducerPrivate, requestConsumer: requestConsumer)
        }
        response.writeRingBytes(into: &responseBytes)
        try ring.write(responseBytes.prefix(Response.size), at: geometry.slotOffset(responseProducerPrivate))
        responseProducerPrivate = responseProducerPrivate.advanced(by: 1)
    }

    /// Publishes the responses written so far and says whether the frontend
    /// wants an event: `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`. `rsp_prod` is
    /// stored after the response bytes; a full fence separates it from the
    /// single read of `rsp_event`; notify iff `rsp_event` lies in
    /// `(old, new]`, i.e. `new - rsp_event < new - old` modulo 2^32.
    public mutating func pushResponses() throws(XenRingError) -> Bool {
        let old = responseProducerPublished
        let new = responseProducerPrivate
        try ring.storeIndex(new, at: SharedRingGeometry.responseProducerOffset)
        responseProducerPublished = new
        ring.fullFence()
        let event = try ring.loadIndex(at: SharedRingGeometry.responseEventOffset)
        return new.distance(from: event) < new.distance(from: old)
    }

    /// Before the backend goes idle: `RING_FINAL_CHECK_FOR_REQUESTS`. If
    /// requests are waiting, returns true. Otherwise sets `req_event =
    /// req_cons + 1` (the frontend will notify on the very next request),
    /// fences, and checks once more, closing the race with a request
    /// produced in between.
    public func finalCheckForRequests() throws(XenRingError) -> Bool {
        if try unconsumedRequests() > 0 { return true }
        try ring.storeIndex(requestConsumer.advanced(by: 1), at: SharedRingGeometry.requestEventOffset)
        ring.fullFence()
        return try unconsumedRequests() > 0
    }

    /// Before waiting for more requests than are there (a backend that
    /// needs several slots for its next item, as netback's
    /// `xenvif_rx_ring_slots_available`): asks for an event on the very
    /// next request produced (`req_event = req_prod + 1`, not `req_cons +
    /// 1`, which the frontend may already have passed), fences, and says
    /// whether `req_prod` moved meanwhile (look again then). Throws
    /// `.indexOverrun` as `unconsumedRequests` does.
    public func requestEventOnNextRequest() throws(XenRingError) -> Bool {
        let producer = try ring.loadIndex(at: SharedRingGeometry.requestProducerOffset)
        _ = try unconsumed(producer: producer)
        try ring.storeIndex(producer.advanced(by: 1), at: SharedRingGeometry.requestEventOffset)
        ring.fullFence()
        return try ring.loadIndex(at: SharedRingGeometry.requestProducerOffset) != producer
    }

    private func unconsumed(producer: RingIndex) throws(XenRingError) -> UInt32 {
        let size = geometry.entries
        // RING_REQUEST_PROD_OVERFLOW: more requests than free slots can hold.
        guard producer.distance(from: responseProducerPrivate) <= size else {
            throw .indexOverrun(.fromGuest, producer: producer, consumer: requestConsumer, size: size)
        }
        let requests = producer.distance(from: requestConsumer)
        // A producer behind req_cons (the guest moved req_prod backwards).
        guard requests <= size else {
            throw .indexOverrun(.fromGuest, producer: producer, consumer: requestConsumer, size: size)
        }
        let room = size - requestConsumer.distance(from: responseProducerPrivate)
        return min(requests, room)
    }
}
