import GuestMemory
import XenRing

/// The guest (frontend) half of a request/response ring: XenRing's
/// `FrontRing` (mock memory, or `MappedGuestMemory` for a backend that does
/// host I/O), with raw accessors below so tests can act like a hostile guest.
public typealias FakeFrontend<Request: RingRequest, Response: RingResponse> = FrontRing<Request, Response>

extension FrontRing {
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

    /// A header word as it is in memory now.
    public func raw(_ field: HeaderField) throws -> RingIndex {
        RingIndex(try memory.load(UInt32.self, at: address(field.offset)))
    }

    /// Overwrites a header word (a guest writing whatever it likes).
    public func setRaw(_ field: HeaderField, _ value: RingIndex) throws {
        try memory.store(value.rawValue, at: address(field.offset))
    }

    /// Overwrites the slot of an already produced request (a guest changing
    /// a request after the backend may have read it).
    public func overwriteRequest(at index: RingIndex, with request: Request) throws {
        try memory.write(request.ringBytes, at: address(geometry.slotOffset(index)))
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
