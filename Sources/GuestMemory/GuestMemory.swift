/// Errors from guest-memory access. A guest-supplied address that is not backed
/// by RAM is a normal, recoverable condition (the hypercall layer turns it into -EFAULT).
public enum GuestMemoryError: Error, Equatable, Sendable {
    /// `[address, address + count)` is not wholly inside one guest RAM region.
    case outOfBounds(GuestPhysicalAddress, count: UInt64)
    /// A region could not be created or registered.
    case mappingFailed(errno: Int32)
    /// A new region overlaps an existing one.
    case overlap(GuestPhysicalRange)
    /// An atomic access at an address that is not naturally aligned for its
    /// size, or a discard of a range that is not page-aligned (`size`: its length).
    case misaligned(GuestPhysicalAddress, size: Int)
    /// `madvise(MADV_DONTNEED)` failed while discarding a range.
    case discardFailed(errno: Int32)
}

/// Guest physical memory as consumers (loader, hypercalls, devices) see it:
/// bounds-checked copies in and out, never a pointer. Every access either
/// lies wholly inside one region or fails with `.outOfBounds`; nothing a
/// guest names can reach host memory outside the guest.
///
/// Multi-byte integers are little-endian (x86). Loads copy: a value read
/// once is the value used (the guest may change memory concurrently).
public protocol GuestMemory: AnyObject, Sendable {
    /// The RAM regions, sorted by address.
    var regions: [GuestPhysicalRange] { get }

    /// True when `[address, address + count)` lies wholly inside one region
    /// (the default looks through `regions`).
    func contains(_ address: GuestPhysicalAddress, count: UInt64) -> Bool

    /// Copies `count` bytes out of the guest.
    func read(at address: GuestPhysicalAddress, count: Int) throws(GuestMemoryError) -> [UInt8]

    /// Copies `bytes.count` bytes out of the guest into `bytes`, in its own
    /// storage when it is not shared: a reader that keeps one array for
    /// every copy (a ring's slot) allocates nothing per copy. The default
    /// reads a new array.
    func read(at address: GuestPhysicalAddress, into bytes: inout [UInt8]) throws(GuestMemoryError)

    /// Copies `bytes` into the guest.
    func write(_ bytes: [UInt8], at address: GuestPhysicalAddress) throws(GuestMemoryError)

    /// Copies part of a buffer into the guest without an intermediate copy
    /// (kernel segments are tens of MiB).
    func write(_ bytes: ArraySlice<UInt8>, at address: GuestPhysicalAddress) throws(GuestMemoryError)

    /// Sets `count` bytes to `value`.
    func fill(at address: GuestPhysicalAddress, count: Int, with value: UInt8) throws(GuestMemoryError)

    /// Loads an integer with a single access where the implementation can
    /// (ring indices are read this way, so a concurrent guest write is seen
    /// either wholly or not at all).
    func load<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T

    /// Stores an integer with a single access where the implementation can.
    func store<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at address: GuestPhysicalAddress) throws(GuestMemoryError)

    /// Atomically ORs `bits` into the integer at `address` and returns the
    /// previous value: a locked read-modify-write, so a guest vCPU updating
    /// the same word concurrently (with its own locked bit operations, as
    /// Linux's `sync_set_bit` does on shared_info) loses nothing.
    /// `address` must be naturally aligned for `T` (`.misaligned` otherwise).
    func atomicOr<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T

    /// Atomically ANDs `bits` into the integer at `address` and returns the
    /// previous value; same rules as `atomicOr`.
    func atomicAnd<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T

    /// Atomically replaces the integer at `address` with `desired` if it
    /// equals `expected` (a locked CMPXCHG) and returns the value it held
    /// before: equal to `expected` exactly when the exchange happened. Xen's
    /// `guest_cmpxchg`, used where a word is shared with a guest that may
    /// change it at any time (grant entries, `_set_status_v1`). Same
    /// alignment rule as `atomicOr`.
    func compareExchange<T: FixedWidthInteger & UnsignedInteger>(expected: T, desired: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T
}

extension GuestMemory {
    public func read(at address: GuestPhysicalAddress, into bytes: inout [UInt8]) throws(GuestMemoryError) {
        bytes = try read(at: address, count: bytes.count)
    }

    public func write(_ bytes: ArraySlice<UInt8>, at address: GuestPhysicalAddress) throws(GuestMemoryError) {
        try write(Array(bytes), at: address)
    }

    /// True when `[address, address + count)` lies wholly inside one region.
    public func contains(_ address: GuestPhysicalAddress, count: UInt64) -> Bool {
        regions.contains { $0.contains(address, count: count) }
    }

    /// Total RAM bytes.
    public var size: UInt64 { regions.reduce(0) { $0 + $1.length } }

    /// Atomically sets bit `bit` (0 = least significant) of the integer at
    /// `address`; true when it was already set (Xen's `test_and_set_bit`).
    public func testAndSetBit<T: FixedWidthInteger & UnsignedInteger>(_ bit: Int, of type: T.Type, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> Bool {
        let mask: T = 1 << T(bit)
        return try atomicOr(mask, at: address) & mask != 0
    }

    /// Atomically clears bit `bit` of the integer at `address`; true when it
    /// was set (Xen's `test_and_clear_bit`).
    public func testAndClearBit<T: FixedWidthInteger & UnsignedInteger>(_ bit: Int, of type: T.Type, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> Bool {
        let mask: T = 1 << T(bit)
        return try atomicAnd(~mask, at: address) & mask != 0
    }
}

/// Little-endian integer (de)serialisation shared by implementations and tests.
/// Inlinable so callers get it specialized for their `T`.
public enum LittleEndianBytes {
    @inlinable
    public static func decode<T: FixedWidthInteger>(_ type: T.Type, from bytes: some Collection<UInt8>) -> T {
        var value: T = 0
        var shift = 0
        for b in bytes.prefix(MemoryLayout<T>.size) {
            value |= T(truncatingIfNeeded: b) << shift
            shift += 8
        }
        return value
    }

    @inlinable
    public static func encode<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }
}
