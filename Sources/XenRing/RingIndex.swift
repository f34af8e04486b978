import GuestMemory

/// A free-running 32-bit ring index (`RING_IDX` in io/ring.h,
/// `XENCONS_RING_IDX` in io/console.h, `XENSTORE_RING_IDX` in io/xs_wire.h).
///
/// Indices are never reduced modulo the ring size: they count up forever and
/// wrap at 2^32. The number of entries between two indices is their wrapping
/// difference, and the slot of an index is `index & (size - 1)` (ring sizes are
/// powers of two, so this stays correct across the 2^32 wrap).
public struct RingIndex: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// `self - earlier` modulo 2^32: the entries produced between the two.
    public func distance(from earlier: RingIndex) -> UInt32 { rawValue &- earlier.rawValue }

    /// `self + n` modulo 2^32.
    public func advanced(by n: UInt32) -> RingIndex { RingIndex(rawValue &+ n) }

    public var description: String { "idx \(rawValue)" }
}

/// Which producer/consumer pair of a ring a fault was found on.
public enum RingDirection: Hashable, Sendable {
    /// Guest → backend: console `out`, XenStore `req`, requests of a shared ring.
    case fromGuest
    /// Backend → guest: console `in`, XenStore `rsp`, responses of a shared ring.
    case toGuest
}

/// Errors of the ring implementations.
///
/// Two outcomes are kept apart (style guide §4): `.memory` means the ring is
/// not (wholly) in guest RAM, which the caller reports against whoever named
/// the frame; `.indexOverrun` means the guest's indices are impossible, which
/// only a broken or hostile guest produces: the caller stops serving the ring
/// (and may destroy the domain). Neither is a crash, and no loop runs on the
/// guest's say-so.
public enum XenRingError: Error, Equatable, Sendable {
    /// Part of the ring is not in guest RAM.
    case memory(GuestMemoryError)
    /// The indices claim more entries than the ring holds: `producer -
    /// consumer > size` (io/ring.h `RING_REQUEST_PROD_OVERFLOW`; Linux's
    /// hvc_xen treats the same condition on the console as fatal).
    case indexOverrun(RingDirection, producer: RingIndex, consumer: RingIndex, size: UInt32)
    /// The backend pushed a response with no request outstanding (a bug in
    /// the backend using the ring, not in the guest).
    case responseWithoutRequest(responseProducer: RingIndex, requestConsumer: RingIndex)

    /// True when the guest broke the ring protocol (the domain is at fault).
    /// The device runtime's `DeviceFault` reads it to say who is to blame
    /// when a ring fails; either way only that device is disabled.
    public var isHostileGuest: Bool {
        if case .indexOverrun = self { return true }
        return false
    }
}
