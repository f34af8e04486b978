import CXen
import GuestMemory

/// Where one direction of a byte ring lives inside its interface page.
public struct ByteRingChannel: Hashable, Sendable {
    /// Offset of the data array.
    public let dataOffset: Int
    /// Size of the data array: a power of two (`MASK_XENCONS_IDX` masks with it).
    public let size: UInt32
    /// Offset of the consumer index.
    public let consumerOffset: Int
    /// Offset of the producer index.
    public let producerOffset: Int

    public init(dataOffset: Int, size: UInt32, consumerOffset: Int, producerOffset: Int) {
        precondition(size > 0 && size & (size - 1) == 0, "byte ring size must be a power of two")
        self.dataOffset = dataOffset
        self.size = size
        self.consumerOffset = consumerOffset
        self.producerOffset = producerOffset
    }
}

/// The layout of a two-way byte ring interface page: the console's
/// `struct xencons_interface` (io/console.h) or XenStore's
/// `struct xenstore_domain_interface` (io/xs_wire.h). Both carry two data
/// arrays and four free-running 32-bit indices; only sizes and offsets differ.
public struct ByteRingLayout: Hashable, Sendable {
    /// Bytes the guest writes and the backend reads (console `out`, XenStore `req`).
    public let fromGuest: ByteRingChannel
    /// Bytes the backend writes and the guest reads (console `in`, XenStore `rsp`).
    public let toGuest: ByteRingChannel
    /// Size of the whole interface structure.
    public let size: Int

    public init(fromGuest: ByteRingChannel, toGuest: ByteRingChannel, size: Int) {
        self.fromGuest = fromGuest
        self.toGuest = toGuest
        self.size = size
    }

    /// `struct xencons_interface`: in[1024] (to the guest), out[2048] (from the guest).
    public static let console = ByteRingLayout(
        fromGuest: ByteRingChannel(dataOffset: Int(PVH_XENCONS_OUT_OFFSET), size: UInt32(PVH_XENCONS_OUT_SIZE),
                                   consumerOffset: Int(PVH_XENCONS_OUT_CONS_OFFSET),
                                   producerOffset: Int(PVH_XENCONS_OUT_PROD_OFFSET)),
        toGuest: ByteRingChannel(dataOffset: Int(PVH_XENCONS_IN_OFFSET), size: UInt32(PVH_XENCONS_IN_SIZE),
                                 consumerOffset: Int(PVH_XENCONS_IN_CONS_OFFSET),
                                 producerOffset: Int(PVH_XENCONS_IN_PROD_OFFSET)),
        size: Int(PVH_XENCONS_SIZE))

    /// `struct xenstore_domain_interface`: req[1024] (from the guest), rsp[1024]
    /// (to the guest). The fields after the indices (server_features,
    /// connection, error) are XenStore's business, not the ring's.
    public static let xenStore = ByteRingLayout(
        fromGuest: ByteRingChannel(dataOffset: Int(PVH_XENSTORE_REQ_OFFSET), size: UInt32(PVH_XENSTORE_REQ_SIZE),
                                   consumerOffset: Int(PVH_XENSTORE_REQ_CONS_OFFSET),
                                   producerOffset: Int(PVH_XENSTORE_REQ_PROD_OFFSET)),
        toGuest: ByteRingChannel(dataOffset: Int(PVH_XENSTORE_RSP_OFFSET), size: UInt32(PVH_XENSTORE_RSP_SIZE),
                                 consumerOffset: Int(PVH_XENSTORE_RSP_CONS_OFFSET),
                                 producerOffset: Int(PVH_XENSTORE_RSP_PROD_OFFSET)),
        size: Int(PVH_XENSTORE_SIZE))
}

/// The backend's view of a byte ring interface in guest memory.
///
/// The backend consumes `fromGuest` and produces `toGuest`. Every call reads
/// each index it needs exactly once, validates `producer - consumer <= size`
/// (modulo 2^32, so indices may wrap), and copies data with at most two
/// accesses (the part before and after the array's end). Nothing is cached
/// between calls: the indices in the page are the protocol state, as in
/// xenconsoled and Linux's hvc_xen.
///
/// Ordering (the barriers Xen's users write as `mb()`/`wmb()`): a producer
/// index is loaded before the data it covers (acquire), data is written
/// before the producer index that publishes it (release), and data is read
/// before the consumer index that frees it (release). On x86 these orders
/// hold for plain accesses (TSO); the fences also stop the compiler moving
/// accesses across them.
public struct ByteRing: Sendable {
    public let layout: ByteRingLayout
    public let base: GuestPhysicalAddress
    let ring: RingMemory

    /// A view of the interface at `base`. Throws `.memory` unless the whole
    /// structure lies in guest RAM.
    public init(layout: ByteRingLayout, memory: any GuestMemory, base: GuestPhysicalAddress) throws(XenRingError) {
        self.layout = layout
        self.base = base
        self.ring = try RingMemory(memory: memory, segments: [(base, layout.size)])
    }

    /// Bytes the guest has produced and the backend not yet consumed.
    public func availableFromGuest() throws(XenRingError) -> Int {
        let c = layout.fromGuest
        let consumer = try ring.loadIndex(at: c.consumerOffset)
        let producer = try ring.loadIndex(at: c.producerOffset)
        return Int(try Self.validated(.fromGuest, c, producer: producer, consumer: consumer))
    }

    /// Free space in the guest-bound direction.
    public func freeToGuest() throws(XenRingError) -> Int {
        let c = layout.toGuest
        let consumer = try ring.loadIndex(at: c.consumerOffset)
        let producer = try ring.loadIndex(at: c.producerOffset)
        return Int(c.size - (try Self.validated(.toGuest, c, producer: producer, consumer: consumer)))
    }

    /// Takes up to `max` bytes the guest produced (console `out`, XenStore
    /// `req`) and advances the consumer index past them.
    ///
    /// Throws `.indexOverrun` (a hostile guest) when `prod - cons` exceeds
    /// the ring size; the ring is then left untouched.
    public func consumeFromGuest(max: Int = Int.max) throws(XenRingError) -> [UInt8] {
        let c = layout.fromGuest
        let consumer = try ring.loadIndex(at: c.consumerOffset)
        let producer = try ring.loadIndex(at: c.producerOffset)
        let available = try Self.validated(.fromGuest, c, producer: producer, consumer: consumer)
        let count = UInt32(min(Int(available), Swift.max(max, 0)))
        guard count > 0 else { return [] }
        let bytes = try copyOut(c, from: consumer, count: count)
        try ring.storeIndex(consumer.advanced(by: count), at: c.consumerOffset)
        return bytes
    }

    /// Writes as many of `bytes` as fit into the guest-bound direction
    /// (console `in`, XenStore `rsp`), publishes them, and returns how many
    /// were written. Nothing is dropped: the caller keeps `bytes[count...]`.
    ///
    /// Throws `.indexOverrun` when the guest's consumer index is impossible
    /// (`prod - cons > size`); nothing is written then.
    public func produceToGuest(_ bytes: some Collection<UInt8>) throws(XenRingError) -> Int {
        let c = layout.toGuest
        let consumer = try ring.loadIndex(at: c.consumerOffset)
        let producer = try ring.loadIndex(at: c.producerOffset)
        let used = try Self.validated(.toGuest, c, producer: producer, consumer: consumer)
        let count = UInt32(min(Int(c.size - used), bytes.count))
        guard count > 0 else { return 0 }
        let data = Array(bytes.prefix(Int(count)))
        let slot = Int(producer.rawValue & (c.size - 1))
        let first = min(Int(count), Int(c.size) - slot)
        try ring.write(data[0..<first], at: c.dataOffset + slot)
        if first < data.count { try ring.write(data[first...], at: c.dataOffset) }
        try ring.storeIndex(producer.advanced(by: count), at: c.producerOffset)
        return Int(count)
    }

    private func copyOut(_ c: ByteRingChannel, from consumer: RingIndex, count: UInt32) throws(XenRingError) -> [UInt8] {
        let slot = Int(consumer.rawValue & (c.size - 1))
        let first = min(Int(count), Int(c.size) - slot)
        var bytes = try ring.read(at: c.dataOffset + slot, count: first)
        if first < Int(count) { bytes += try ring.read(at: c.dataOffset, count: Int(count) - first) }
        return bytes
    }

    private static func validated(_ direction: RingDirection, _ c: ByteRingChannel,
                                  producer: RingIndex, consumer: RingIndex) throws(XenRingError) -> UInt32 {
        let used = producer.distance(from: consumer)
        guard used <= c.size else {
            throw .indexOverrun(direction, producer: producer, consumer: consumer, size: c.size)
        }
        return used
    }
}
