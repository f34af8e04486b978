import GuestMemory
import XenRing

/// The guest (frontend) half of a request/response ring in guest memory
/// (mock memory, or `MappedGuestMemory` for a backend that does host I/O),
/// written the way Linux's frontends use io/ring.h: `XEN_FRONT_RING_INIT`,
/// requests filled in at `req_prod_pvt`, `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`,
/// responses read up to `rsp_prod`, `RING_FINAL_CHECK_FOR_RESPONSES`.
/// Raw accessors let tests act like a hostile guest.
public final class FakeFrontend<Request: RingRequest, Response: RingResponse> {
    public let memory: any GuestMemory
    public let base: GuestPhysicalAddress
    public let geometry: SharedRingGeometry
    /// `req_prod_pvt`.
    public private(set) var requestProducerPrivate: RingIndex
    /// `rsp_cons`.
    public private(set) var responseConsumer: RingIndex

    /// Initialises the shared header (`SHARED_RING_INIT`, with the indices at
    /// `index` instead of 0 so tests can start near the 2^32 wrap) and
    /// attaches (`FRONT_RING_ATTACH`).
    public init(memory: any GuestMemory, base: GuestPhysicalAddress, byteCount: Int = 4096,
                startingAt index: RingIndex = RingIndex(0)) throws {
        guard let g = SharedRingGeometry(Request.self, Response.self, byteCount: byteCount) else {
            throw GuestMemoryError.outOfBounds(base, count: UInt64(byteCount))
        }
        self.memory = memory
        self.base = base
        self.geometry = g
        self.requestProducerPrivate = index
        self.responseConsumer = index
        try memory.fill(at: base, count: SharedRingGeometry.entriesOffset, with: 0)
        try setRaw(.requestProducer, index)
        try setRaw(.responseProducer, index)
        try setRaw(.requestEvent, index.advanced(by: 1))
        try setRaw(.responseEvent, index.advanced(by: 1))
    }

    /// The four header words.
    public enum HeaderField {
        case requestProducer, requestEvent, responseProducer, responseEvent
        var offset: Int {
            switch self {
            case .requestProducer: SharedRingGeometry.requestProducerOffset
            case .requestEvent: SharedRingGeometry.requestEventOffset
            case .responseProducer: SharedRingGeometry.responseProducerOffset
            case .responseEvent: SharedRingGeometry.responseEventOffset
            }
        }
    }

    private func address(_ offset: Int) -> GuestPhysicalAddress {
        GuestPhysicalAddress(base.rawValue + UInt64(offset))
    }

    public func raw(_ field: HeaderField) throws -> RingIndex {
        RingIndex(try memory.load(UInt32.self, at: address(field.offset)))
    }

    public func setRaw(_ field: HeaderField, _ value: RingIndex) throws {
        try memory.store(value.rawValue, at: address(field.offset))
    }

    /// `RING_FREE_REQUESTS`.
    public var freeRequests: UInt32 { geometry.entries - requestProducerPrivate.distance(from: responseConsumer) }

    /// Fills the next request slot (not yet visible to the backend). False if the ring is full.
    public func enqueue(_ request: Request) throws -> Bool {
        guard freeRequests > 0 else { return false }
        try writeSlot(requestProducerPrivate, request.ringBytes)
        requestProducerPrivate = requestProducerPrivate.advanced(by: 1)
        return true
    }

    /// Overwrites the slot of an already produced request (a guest changing
    /// a request after the backend may have read it).
    public func overwriteRequest(at index: RingIndex, with request: Request) throws {
        try writeSlot(index, request.ringBytes)
    }

    private func writeSlot(_ index: RingIndex, _ bytes: [UInt8]) throws {
        try memory.write(bytes, at: address(geometry.slotOffset(index)))
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes and says whether the
    /// backend wants an event.
    public func pushRequests() throws -> Bool {
        let old = try raw(.requestProducer)
        let new = requestProducerPrivate
        try setRaw(.requestProducer, new)
        let event = try raw(.requestEvent)
        return new.distance(from: event) < new.distance(from: old)
    }

    /// Takes every published response (validating as
    /// `RING_RESPONSE_PROD_OVERFLOW` does, like Linux's xen-blkfront).
    public func takeResponses() throws -> [Response] {
        let producer = try raw(.responseProducer)
        precondition(producer.distance(from: responseConsumer) <= geometry.entries, "backend overran the ring")
        var out: [Response] = []
        while responseConsumer != producer {
            let bytes = try memory.read(at: address(geometry.slotOffset(responseConsumer)), count: Response.size)
            out.append(Response(ringBytes: bytes))
            responseConsumer = responseConsumer.advanced(by: 1)
        }
        return out
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: true if responses wait; otherwise
    /// asks for an event on the next one (`rsp_event = rsp_cons + 1`).
    public func finalCheckForResponses() throws -> Bool {
        if try raw(.responseProducer) != responseConsumer { return true }
        try setRaw(.responseEvent, responseConsumer.advanced(by: 1))
        return try raw(.responseProducer) != responseConsumer
    }
}

/// The guest half of a byte ring (console or XenStore) in mock memory, the
/// way Linux's hvc_xen and xenbus_comms use it: write into `fromGuest` up
/// to the free space then publish the producer; read `toGuest` up to the
/// producer then publish the consumer.
public final class FakeByteRingFrontend {
    public let memory: MockGuestMemory
    public let base: GuestPhysicalAddress
    public let layout: ByteRingLayout

    public init(memory: MockGuestMemory, base: GuestPhysicalAddress, layout: ByteRingLayout = .console,
                startingAt index: RingIndex = RingIndex(0)) throws {
        self.memory = memory
        self.base = base
        self.layout = layout
        try memory.fill(at: base, count: layout.size, with: 0)
        for c in [layout.fromGuest, layout.toGuest] {
            try store(index, c.consumerOffset)
            try store(index, c.producerOffset)
        }
    }

    private func address(_ offset: Int) -> GuestPhysicalAddress { GuestPhysicalAddress(base.rawValue + UInt64(offset)) }
    public func load(_ offset: Int) throws -> RingIndex { RingIndex(try memory.load(UInt32.self, at: address(offset))) }
    public func store(_ value: RingIndex, _ offset: Int) throws { try memory.store(value.rawValue, at: address(offset)) }

    /// hvc_xen `__write_console`: as many bytes as fit; returns the count.
    public func write(_ bytes: [UInt8]) throws -> Int {
        let c = layout.fromGuest
        let cons = try load(c.consumerOffset)
        var prod = try load(c.producerOffset)
        var sent = 0
        while sent < bytes.count, prod.distance(from: cons) < c.size {
            try memory.write([bytes[sent]], at: address(c.dataOffset + Int(prod.rawValue & (c.size - 1))))
            prod = prod.advanced(by: 1)
            sent += 1
        }
        try store(prod, c.producerOffset)
        return sent
    }

    /// hvc_xen `domU_read_console`: everything the backend produced.
    public func read() throws -> [UInt8] {
        let c = layout.toGuest
        var cons = try load(c.consumerOffset)
        let prod = try load(c.producerOffset)
        precondition(prod.distance(from: cons) <= c.size, "backend overran the ring")
        var out: [UInt8] = []
        while cons != prod {
            out += try memory.read(at: address(c.dataOffset + Int(cons.rawValue & (c.size - 1))), count: 1)
            cons = cons.advanced(by: 1)
        }
        try store(cons, c.consumerOffset)
        return out
    }
}
