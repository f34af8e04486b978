import GuestMemory
import Locking

/// Guest memory that forwards to another and logs every access, for tests
/// that check how often (and in which order) code touches the guest: a
/// request copied exactly once, a version word written before the data.
/// `afterWrite` runs after each write or store, so a test can look at the
/// guest's memory between two steps of an update (as a concurrent reader would).
public final class RecordingGuestMemory: GuestMemory, @unchecked Sendable {
    public enum Kind: Hashable, Sendable { case read, write, load, store, fill, atomic }
    public struct Access: Hashable, Sendable {
        public var kind: Kind
        public var address: GuestPhysicalAddress
        public var count: Int
    }

    public let inner: any GuestMemory
    private let state = Lock<[Access]>([])
    /// Called after every write, store or fill (not under any lock).
    public var afterWrite: ((Access) -> Void)?

    public init(_ inner: any GuestMemory) { self.inner = inner }

    public var accesses: [Access] { state.withLock { $0 } }
    public func clear() { state.withLock { $0.removeAll() } }

    /// Accesses that read any byte of `[address, address + count)`.
    public func reads(overlapping address: GuestPhysicalAddress, count: Int) -> [Access] {
        accesses.filter { a in
            (a.kind == .read || a.kind == .load)
                && a.address.rawValue < address.rawValue + UInt64(count)
                && address.rawValue < a.address.rawValue + UInt64(a.count)
        }
    }

    private func log(_ kind: Kind, _ address: GuestPhysicalAddress, _ count: Int) -> Access {
        let a = Access(kind: kind, address: address, count: count)
        state.withLock { $0.append(a) }
        return a
    }

    public var regions: [GuestPhysicalRange] { inner.regions }

    public func read(at address: GuestPhysicalAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        _ = log(.read, address, count)
        return try inner.read(at: address, count: count)
    }

    public func write(_ bytes: [UInt8], at address: GuestPhysicalAddress) throws(GuestMemoryError) {
        try inner.write(bytes, at: address)
        afterWrite?(log(.write, address, bytes.count))
    }

    public func fill(at address: GuestPhysicalAddress, count: Int, with value: UInt8) throws(GuestMemoryError) {
        try inner.fill(at: address, count: count, with: value)
        afterWrite?(log(.fill, address, count))
    }

    public func load<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        _ = log(.load, address, MemoryLayout<T>.size)
        return try inner.load(type, at: address)
    }

    public func store<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) {
        try inner.store(value, at: address)
        afterWrite?(log(.store, address, MemoryLayout<T>.size))
    }

    public func atomicOr<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        let old = try inner.atomicOr(bits, at: address)
        afterWrite?(log(.atomic, address, MemoryLayout<T>.size))
        return old
    }

    public func atomicAnd<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        let old = try inner.atomicAnd(bits, at: address)
        afterWrite?(log(.atomic, address, MemoryLayout<T>.size))
        return old
    }

    public func compareExchange<T: FixedWidthInteger & UnsignedInteger>(expected: T, desired: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        let old = try inner.compareExchange(expected: expected, desired: desired, at: address)
        afterWrite?(log(.atomic, address, MemoryLayout<T>.size))
        return old
    }
}
