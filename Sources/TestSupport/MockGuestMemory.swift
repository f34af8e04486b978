import GuestMemory
import Locking

/// Guest memory over plain byte arrays, for unit tests: same semantics as the
/// mmap implementation (regions, bounds checks, little-endian), no pointers.
public final class MockGuestMemory: GuestMemory, @unchecked Sendable {
    private struct Region { var range: GuestPhysicalRange; var bytes: [UInt8] }
    private let state: Lock<[Region]>
    private let discards = Lock<[GuestPhysicalRange]>([])

    /// One region of `size` bytes at `base`.
    public convenience init(size: Int, base: UInt64 = 0) {
        self.init(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(base), length: UInt64(size))])
    }

    public init(ranges: [GuestPhysicalRange]) {
        state = Lock(ranges.sorted { $0.start < $1.start }.map { Region(range: $0, bytes: [UInt8](repeating: 0, count: Int($0.length))) })
    }

    public var regions: [GuestPhysicalRange] { state.withLock { $0.map(\.range) } }

    /// Adds a zero-filled region (as `MappedGuestMemory.addRegion` maps a
    /// hole page); `.overlap` if it meets an existing one.
    public func addRegion(_ range: GuestPhysicalRange) throws(GuestMemoryError) {
        try state.withLock { (regions: inout [Region]) throws(GuestMemoryError) in
            guard !regions.contains(where: { $0.range.overlaps(range) }) else { throw .overlap(range) }
            regions.append(Region(range: range, bytes: [UInt8](repeating: 0, count: Int(range.length))))
            regions.sort { $0.range.start < $1.range.start }
        }
    }

    private func withRegion<R>(_ a: GuestPhysicalAddress, _ count: Int, _ body: (inout [UInt8], Int) -> R) throws(GuestMemoryError) -> R {
        guard count >= 0 else { throw .outOfBounds(a, count: 0) }
        let r: R? = state.withLock { regions in
            guard let i = regions.firstIndex(where: { $0.range.contains(a, count: UInt64(count)) }) else { return nil }
            return body(&regions[i].bytes, Int(a.rawValue - regions[i].range.start.rawValue))
        }
        guard let r else { throw .outOfBounds(a, count: UInt64(count)) }
        return r
    }

    public func read(at address: GuestPhysicalAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        try withRegion(address, count) { b, o in Array(b[o..<o + count]) }
    }

    public func write(_ bytes: [UInt8], at address: GuestPhysicalAddress) throws(GuestMemoryError) {
        try withRegion(address, bytes.count) { b, o in b.replaceSubrange(o..<o + bytes.count, with: bytes) }
    }

    public func fill(at address: GuestPhysicalAddress, count: Int, with value: UInt8) throws(GuestMemoryError) {
        try withRegion(address, count) { b, o in
            for i in o..<o + count { b[i] = value }
        }
    }

    /// `MappedGuestMemory.discard`'s semantics without host memory: the
    /// page-aligned range (else `.misaligned`) inside one region (else
    /// `.outOfBounds`) reads as zero afterwards. Every call is recorded in
    /// `discarded`.
    public func discard(_ range: GuestPhysicalRange) throws(GuestMemoryError) {
        guard range.start.rawValue & 0xfff == 0, range.length & 0xfff == 0 else {
            throw .misaligned(range.start, size: Int(clamping: range.length))
        }
        guard range.length <= UInt64(Int.max) else { throw .outOfBounds(range.start, count: range.length) }
        let count = Int(range.length)
        try withRegion(range.start, count) { b, o in
            b.replaceSubrange(o..<o + count, with: repeatElement(0, count: count))
        }
        discards.withLock { $0.append(range) }
    }

    /// The ranges `discard` zeroed, in order.
    public var discarded: [GuestPhysicalRange] { discards.withLock { $0 } }

    public func load<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        LittleEndianBytes.decode(T.self, from: try read(at: address, count: MemoryLayout<T>.size))
    }

    public func store<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) {
        try write(LittleEndianBytes.encode(value), at: address)
    }

    public func atomicOr<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        try update(address) { $0 | bits }
    }

    public func atomicAnd<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        try update(address) { $0 & bits }
    }

    public func compareExchange<T: FixedWidthInteger & UnsignedInteger>(expected: T, desired: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        try update(address) { $0 == expected ? desired : $0 }
    }

    /// A read-modify-write under the memory's lock (so atomic with respect to
    /// every other access through this object), with the mmap implementation's
    /// alignment rule.
    private func update<T: FixedWidthInteger & UnsignedInteger>(_ address: GuestPhysicalAddress, _ f: (T) -> T) throws(GuestMemoryError) -> T {
        let size = MemoryLayout<T>.size
        guard address.rawValue % UInt64(size) == 0 else { throw .misaligned(address, size: size) }
        return try withRegion(address, size) { b, o in
            let old = LittleEndianBytes.decode(T.self, from: b[o..<o + size])
            b.replaceSubrange(o..<o + size, with: LittleEndianBytes.encode(f(old)))
            return old
        }
    }
}
