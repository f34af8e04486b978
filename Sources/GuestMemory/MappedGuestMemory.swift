#if canImport(Glibc)
import Glibc
#endif
import Locking
import Synchronization

/// One anonymous host mapping that backs one guest physical range.
/// Owns the mapping and unmaps it in `deinit`.
public final class GuestMemoryMapping: @unchecked Sendable {
    // SAFETY: `base` is immutable after init and valid for `range.length`
    // bytes until deinit; all access goes through bounds checks below.
    public let range: GuestPhysicalRange
    let base: UnsafeMutableRawPointer

    init(range: GuestPhysicalRange) throws(GuestMemoryError) {
        let length = Int(range.length)
        // MAP_NORESERVE: guest RAM is touched lazily; a 4 GiB guest that uses
        // 20 MiB costs 20 MiB.
        let p = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let p, p != MAP_FAILED else { throw .mappingFailed(errno: errno) }
        // MADV_DONTFORK, as QEMU does for every RAM block (system/physmem.c,
        // ram_block_add): a fork()ed child never shares guest RAM
        // copy-on-write. It also makes the mapping a VMA of its own ("dc" in
        // /proc/PID/smaps VmFlags) that the kernel does not merge with
        // malloc's MAP_NORESERVE arenas, so its Rss is the guest memory
        // touched (pvh-bench toolstack reads it). Advisory: a failure changes
        // neither.
        // SAFETY: p/length are exactly what mmap returned.
        _ = unsafe madvise(p, length, MADV_DONTFORK)
        self.range = range
        self.base = p
    }

    deinit {
        // SAFETY: base/length are exactly what mmap returned.
        munmap(base, Int(range.length))
    }

    /// The host virtual address of the first byte, for KVM_SET_USER_MEMORY_REGION.
    public var hostAddress: UInt64 { UInt64(UInt(bitPattern: base)) }

    /// The host page size mappings are aligned to (x86-64: 4 KiB, as guest frames).
    static let pageSize: UInt64 = 4096

    /// Host pointer to `offset` inside the mapping. Caller must have checked bounds.
    @unsafe func pointer(at offset: UInt64) -> UnsafeMutableRawPointer { base + Int(offset) }
}

/// Guest RAM backed by anonymous mmap'd regions. Regions may be added while
/// vCPUs run (e.g. the shared_info page placed in a hole), so the region list
/// is read under a lock; the bytes themselves are not locked (the guest writes
/// them concurrently anyway).
public final class MappedGuestMemory: GuestMemory, @unchecked Sendable {
    private let mappings: Lock<[GuestMemoryMapping]>
    /// The first mappings again, for lookups without the lock.
    private let published = PublishedMappings()

    public init() { mappings = Lock([]) }

    /// Creates guest RAM covering each range (page-aligned, non-overlapping).
    public convenience init(ranges: [GuestPhysicalRange]) throws(GuestMemoryError) {
        self.init()
        for r in ranges { _ = try addRegion(r) }
    }

    /// Maps a new zeroed region and returns it (the caller registers it with KVM).
    @discardableResult
    public func addRegion(_ range: GuestPhysicalRange) throws(GuestMemoryError) -> GuestMemoryMapping {
        guard range.length > 0, range.start.rawValue & 0xfff == 0, range.length & 0xfff == 0,
              range.start.advanced(by: range.length) != nil
        else { throw .outOfBounds(range.start, count: range.length) }
        let m = try GuestMemoryMapping(range: range)
        return try mappings.withLock { (list: inout [GuestMemoryMapping]) throws(GuestMemoryError) -> GuestMemoryMapping in
            if list.contains(where: { $0.range.overlaps(range) }) { throw .overlap(range) }
            list.append(m)
            published.append(m)
            list.sort { $0.range.start < $1.range.start }
            return m
        }
    }

    /// The mappings, for registering with KVM.
    public var mappingList: [GuestMemoryMapping] { mappings.withLock { $0 } }

    public var regions: [GuestPhysicalRange] { mappings.withLock { $0.map(\.range) } }

    /// The mapping holding all of `[address, address+count)` and the offset in it.
    /// Looks in the published mappings first (no lock, no retain: every
    /// access of a device's ring or page comes here), then, for a region
    /// added past the published ones, in the full list under the lock.
    fileprivate func locate(_ address: GuestPhysicalAddress, _ count: Int) throws(GuestMemoryError) -> (GuestMemoryMapping, UInt64) {
        guard count >= 0 else { throw .outOfBounds(address, count: 0) }
        if let (m, off) = published.find(address.rawValue, UInt64(count)) { return (m.takeUnretainedValue(), off) }
        let found = mappings.withLock { list in list.first { $0.range.contains(address, count: UInt64(count)) } }
        guard let m = found else { throw .outOfBounds(address, count: UInt64(count)) }
        return (m, address.rawValue - m.range.start.rawValue)
    }

    /// The host address of `[address, address + count)`, which must lie in
    /// one mapping (`.outOfBounds` otherwise): `locate` without the
    /// mapping's reference count touched when it is a published one.
    fileprivate func hostPointer(_ address: GuestPhysicalAddress, _ count: Int) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        guard count >= 0 else { throw .outOfBounds(address, count: 0) }
        if let (m, off) = published.find(address.rawValue, UInt64(count)) {
            // SAFETY: `find` proved [off, off + count) is inside the mapping,
            // which `mappings` keeps alive as long as this memory.
            return unsafe m._withUnsafeGuaranteedRef { unsafe $0.pointer(at: off) }
        }
        let (m, off) = try locate(address, count)
        // SAFETY: locate() proved [off, off + count) is inside the mapping,
        // which `mappings` keeps alive as long as this memory.
        return unsafe m.pointer(at: off)
    }

    public func read(at address: GuestPhysicalAddress, count: Int) throws(GuestMemoryError) -> [UInt8] {
        let p = try hostPointer(address, count)
        // SAFETY: hostPointer() proved [p, p+count) is inside a mapping.
        return unsafe [UInt8](unsafeUninitializedCapacity: count) { buf, n in
            unsafe buf.baseAddress.map { unsafe $0.update(from: p.assumingMemoryBound(to: UInt8.self), count: count) }
            n = count
        }
    }

    public func read(at address: GuestPhysicalAddress, into bytes: inout [UInt8]) throws(GuestMemoryError) {
        let p = try hostPointer(address, bytes.count)
        // SAFETY: hostPointer() proved [p, p+bytes.count) is inside a
        // mapping; the destination is the array's own (unshared) storage.
        unsafe bytes.withUnsafeMutableBytes { dst in
            guard let base = dst.baseAddress else { return }  // empty: nothing to copy
            unsafe base.copyMemory(from: p, byteCount: dst.count)
        }
    }

    public func write(_ bytes: [UInt8], at address: GuestPhysicalAddress) throws(GuestMemoryError) {
        try write(bytes[...], at: address)
    }

    public func write(_ bytes: ArraySlice<UInt8>, at address: GuestPhysicalAddress) throws(GuestMemoryError) {
        let p = try hostPointer(address, bytes.count)
        // SAFETY: hostPointer() proved [p, p+bytes.count) is inside a mapping.
        unsafe bytes.withUnsafeBytes { src in
            guard let base = src.baseAddress else { return }  // empty: nothing to copy
            unsafe p.copyMemory(from: base, byteCount: src.count)
        }
    }

    public func fill(at address: GuestPhysicalAddress, count: Int, with value: UInt8) throws(GuestMemoryError) {
        let p = try hostPointer(address, count)
        // SAFETY: hostPointer() proved the range is inside a mapping.
        _ = unsafe memset(p, Int32(value), count)
    }

    /// Gives the host memory behind `range` back to the host
    /// (`madvise(MADV_DONTNEED)`) and leaves the range reading as zero: the
    /// mapping is private and anonymous, so the next touch faults in a fresh
    /// zero page. The mapping itself stays (KVM's memory slot is unchanged);
    /// a later guest write simply costs host memory again. `range` must be
    /// page-aligned (`.misaligned` otherwise) and inside one region
    /// (`.outOfBounds`); an madvise failure is `.discardFailed`.
    /// For XENMEM_decrease_reservation / populate_physmap
    /// (xen/common/memory.c guest_remove_page, populate_physmap).
    public func discard(_ range: GuestPhysicalRange) throws(GuestMemoryError) {
        let pageMask = GuestMemoryMapping.pageSize - 1
        guard range.start.rawValue & pageMask == 0, range.length & pageMask == 0 else {
            throw .misaligned(range.start, size: Int(clamping: range.length))
        }
        guard range.length > 0 else { return }
        guard range.length <= UInt64(Int.max) else { throw .outOfBounds(range.start, count: range.length) }
        let (m, off) = try locate(range.start, Int(range.length))
        // SAFETY: locate() proved [off, off+length) is inside the mapping,
        // which is page-aligned (mmap), and off and length are page multiples.
        // MADV_DONTNEED only drops pages: it cannot unmap or touch anything
        // outside the range. A vCPU touching the range concurrently sees
        // either the old bytes or zeros, never host memory of another kind.
        let rc = unsafe madvise(m.pointer(at: off), Int(range.length), MADV_DONTNEED)
        guard rc == 0 else { throw .discardFailed(errno: errno) }
    }

    public func contains(_ address: GuestPhysicalAddress, count: UInt64) -> Bool {
        if published.find(address.rawValue, count) != nil { return true }
        return mappings.withLock { list in list.contains { $0.range.contains(address, count: count) } }
    }

    // The accessors below are called through `any GuestMemory`, so they run
    // unspecialized: they switch on `T`'s size and move its bytes as the
    // concrete integer of that size, rather than convert through
    // FixedWidthInteger's protocol witnesses or call the generic
    // loadUnaligned, which cost more than the access itself.

    public func load<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        let size = MemoryLayout<T>.size
        let p = try hostPointer(address, size)
        // SAFETY: in bounds (locate); each load is a single access for a
        // naturally aligned 1/2/4/8-byte value on x86, and T is an unsigned
        // integer of exactly that size, so it has that integer's bit layout.
        switch size {
        case 1: return unsafe unsafeBitCast(p.load(as: UInt8.self), to: T.self)
        case 2: return unsafe unsafeBitCast(UInt16(littleEndian: p.loadUnaligned(as: UInt16.self)), to: T.self)
        case 4: return unsafe unsafeBitCast(UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)), to: T.self)
        case 8: return unsafe unsafeBitCast(UInt64(littleEndian: p.loadUnaligned(as: UInt64.self)), to: T.self)
        default: return T(littleEndian: unsafe p.loadUnaligned(as: T.self))
        }
    }

    public func store<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) {
        let size = MemoryLayout<T>.size
        let p = try hostPointer(address, size)
        // SAFETY: in bounds (locate); T has the bit layout of the unsigned
        // integer of its size (as in `load`).
        switch size {
        case 1: unsafe p.storeBytes(of: unsafeBitCast(value, to: UInt8.self), as: UInt8.self)
        case 2: unsafe p.storeBytes(of: unsafeBitCast(value, to: UInt16.self).littleEndian, as: UInt16.self)
        case 4: unsafe p.storeBytes(of: unsafeBitCast(value, to: UInt32.self).littleEndian, as: UInt32.self)
        case 8: unsafe p.storeBytes(of: unsafeBitCast(value, to: UInt64.self).littleEndian, as: UInt64.self)
        default: unsafe p.storeBytes(of: value.littleEndian, as: T.self)
        }
    }

    public func atomicOr<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        try atomicUpdate(bits, at: address, or: true)
    }

    public func atomicAnd<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        try atomicUpdate(bits, at: address, or: false)
    }

    public func compareExchange<T: FixedWidthInteger & UnsignedInteger>(expected: T, desired: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        let size = MemoryLayout<T>.size
        guard size == 1 || size == 2 || size == 4 || size == 8 else { throw .misaligned(address, size: size) }
        guard address.rawValue % UInt64(size) == 0 else { throw .misaligned(address, size: size) }
        // Naturally aligned guest address → naturally aligned host address (see atomicUpdate).
        let p = try hostPointer(address, size)
        // SAFETY (the casts): T is an unsigned integer of exactly `size`
        // bytes (checked above), so it has the bit layout of UInt<size*8>.
        switch size {
        case 1: return unsafe unsafeBitCast(Self.exchange(p, unsafeBitCast(expected, to: UInt8.self), unsafeBitCast(desired, to: UInt8.self)), to: T.self)
        case 2: return unsafe unsafeBitCast(Self.exchange(p, unsafeBitCast(expected, to: UInt16.self), unsafeBitCast(desired, to: UInt16.self)), to: T.self)
        case 4: return unsafe unsafeBitCast(Self.exchange(p, unsafeBitCast(expected, to: UInt32.self), unsafeBitCast(desired, to: UInt32.self)), to: T.self)
        default: return unsafe unsafeBitCast(Self.exchange(p, unsafeBitCast(expected, to: UInt64.self), unsafeBitCast(desired, to: UInt64.self)), to: T.self)
        }
    }

    // SAFETY (the four below): as for `update`: the caller guarantees `p` is
    // in bounds and naturally aligned, and `Atomic<V>` has the layout of `V`,
    // so this is one locked CMPXCHG on the guest's integer.
    @unsafe private static func exchange(_ p: UnsafeMutableRawPointer, _ expected: UInt8, _ desired: UInt8) -> UInt8 {
        let a = unsafe p.assumingMemoryBound(to: Atomic<UInt8>.self)
        return unsafe a.pointee.compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent).original
    }
    @unsafe private static func exchange(_ p: UnsafeMutableRawPointer, _ expected: UInt16, _ desired: UInt16) -> UInt16 {
        let a = unsafe p.assumingMemoryBound(to: Atomic<UInt16>.self)
        return unsafe a.pointee.compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent).original
    }
    @unsafe private static func exchange(_ p: UnsafeMutableRawPointer, _ expected: UInt32, _ desired: UInt32) -> UInt32 {
        let a = unsafe p.assumingMemoryBound(to: Atomic<UInt32>.self)
        return unsafe a.pointee.compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent).original
    }
    @unsafe private static func exchange(_ p: UnsafeMutableRawPointer, _ expected: UInt64, _ desired: UInt64) -> UInt64 {
        let a = unsafe p.assumingMemoryBound(to: Atomic<UInt64>.self)
        return unsafe a.pointee.compareExchange(expected: expected, desired: desired, ordering: .sequentiallyConsistent).original
    }

    /// One locked read-modify-write of a naturally aligned 1/2/4/8-byte integer.
    private func atomicUpdate<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress, or: Bool) throws(GuestMemoryError) -> T {
        let size = MemoryLayout<T>.size
        guard size == 1 || size == 2 || size == 4 || size == 8 else { throw .misaligned(address, size: size) }
        guard address.rawValue % UInt64(size) == 0 else { throw .misaligned(address, size: size) }
        // Mappings are page-aligned, so a naturally aligned guest address is a
        // naturally aligned host address. x86 is little-endian: no byte swap.
        let p = try hostPointer(address, size)
        // SAFETY (the casts): T is an unsigned integer of exactly `size`
        // bytes (checked above), so it has the bit layout of UInt<size*8>.
        switch size {
        case 1: return unsafe unsafeBitCast(Self.update(p, unsafeBitCast(bits, to: UInt8.self), or), to: T.self)
        case 2: return unsafe unsafeBitCast(Self.update(p, unsafeBitCast(bits, to: UInt16.self), or), to: T.self)
        case 4: return unsafe unsafeBitCast(Self.update(p, unsafeBitCast(bits, to: UInt32.self), or), to: T.self)
        default: return unsafe unsafeBitCast(Self.update(p, unsafeBitCast(bits, to: UInt64.self), or), to: T.self)
        }
    }

    // SAFETY (the four below): the caller guarantees `p` is in bounds and
    // naturally aligned. `Atomic<V>` has exactly the layout of `V` (it is
    // `@_rawLayout(like:)` its storage), so viewing the guest's bytes as one
    // yields a locked read-modify-write on memory Swift did not allocate; the
    // guest only ever sees the integer. Synchronization offers bitwise RMW
    // per concrete type only, hence one overload each.
    @unsafe private static func update(_ p: UnsafeMutableRawPointer, _ bits: UInt8, _ or: Bool) -> UInt8 {
        let a = unsafe p.assumingMemoryBound(to: Atomic<UInt8>.self)
        return or ? unsafe a.pointee.bitwiseOr(bits, ordering: .sequentiallyConsistent).oldValue
            : unsafe a.pointee.bitwiseAnd(bits, ordering: .sequentiallyConsistent).oldValue
    }
    @unsafe private static func update(_ p: UnsafeMutableRawPointer, _ bits: UInt16, _ or: Bool) -> UInt16 {
        let a = unsafe p.assumingMemoryBound(to: Atomic<UInt16>.self)
        return or ? unsafe a.pointee.bitwiseOr(bits, ordering: .sequentiallyConsistent).oldValue
            : unsafe a.pointee.bitwiseAnd(bits, ordering: .sequentiallyConsistent).oldValue
    }
    @unsafe private static func update(_ p: UnsafeMutableRawPointer, _ bits: UInt32, _ or: Bool) -> UInt32 {
        let a = unsafe p.assumingMemoryBound(to: Atomic<UInt32>.self)
        return or ? unsafe a.pointee.bitwiseOr(bits, ordering: .sequentiallyConsistent).oldValue
            : unsafe a.pointee.bitwiseAnd(bits, ordering: .sequentiallyConsistent).oldValue
    }
    @unsafe private static func update(_ p: UnsafeMutableRawPointer, _ bits: UInt64, _ or: Bool) -> UInt64 {
        let a = unsafe p.assumingMemoryBound(to: Atomic<UInt64>.self)
        return or ? unsafe a.pointee.bitwiseOr(bits, ordering: .sequentiallyConsistent).oldValue
            : unsafe a.pointee.bitwiseAnd(bits, ordering: .sequentiallyConsistent).oldValue
    }
}

/// Host memory behind a guest-physical range, so that host I/O (io_uring,
/// preadv/pwritev) moves data straight between a file and guest pages with no
/// bounce buffer. It keeps its owner (the host mapping) alive, so the bytes
/// stay mapped for as long as the value exists, even if the domain is torn
/// down while an I/O is in flight. The address is only meaningful to the
/// host-I/O layer, the one other place allowed to make a pointer of it.
public struct HostMemoryRange: @unchecked Sendable {
    // SAFETY (Sendable): `owner` is immutable and only kept alive, never used.
    let owner: AnyObject
    /// Host virtual address of the first byte.
    public let address: UInt
    /// Length in bytes.
    public let count: Int

    /// For memory types outside this module (tests, the benchmark): `owner`
    /// must keep `[address, address + count)` mapped while it lives.
    @unsafe public init(owner: AnyObject, address: UInt, count: Int) {
        self.owner = owner
        self.address = address
        self.count = count
    }
}

/// Guest memory whose bytes are host memory the host-I/O layer may read and
/// write directly.
public protocol HostAddressableMemory: GuestMemory {
    /// The host memory behind `range`, which must lie inside one region
    /// (`.outOfBounds` otherwise, as for `read`).
    func hostRange(_ range: GuestPhysicalRange) throws(GuestMemoryError) -> HostMemoryRange
}

extension MappedGuestMemory: HostAddressableMemory {
    public func hostRange(_ range: GuestPhysicalRange) throws(GuestMemoryError) -> HostMemoryRange {
        guard range.length <= UInt64(Int.max) else { throw .outOfBounds(range.start, count: range.length) }
        let (m, off) = try locate(range.start, Int(range.length))
        // SAFETY: locate() proved [off, off+length) is inside the mapping;
        // the range keeps `m` (and so the mmap) alive.
        return unsafe HostMemoryRange(owner: m, address: UInt(bitPattern: m.pointer(at: off)), count: Int(range.length))
    }
}

/// The first `capacity` mappings of a `MappedGuestMemory`, readable without
/// its lock. Every guest-memory access of a backend (a ring index, a slot,
/// a grant entry, a packet's page) looks up its mapping; under the lock,
/// a device thread and the threads of its frontend (a vCPU, the
/// benchmark's fake guest) took turns on one contended word for every
/// access (perf: `locate` and futex waits under `pvh-bench net`).
///
/// Append-only, as mappings are (a region is never removed while the
/// memory lives): an entry is written once, under the memory's lock,
/// before the count that covers it is stored with release ordering;
/// readers load the count with acquire ordering and read only entries
/// below it, which never change again. A memory with more regions than
/// this holds (one per page placed in a hole) finds the rest under the
/// lock, as before.
@safe final class PublishedMappings: @unchecked Sendable {
    // SAFETY (Sendable): see the type's documentation: entries below
    // `count` are immutable and published by a release store.
    struct Entry {
        let start: UInt64
        let length: UInt64
        /// Unretained: the memory's `mappings` list owns the mapping.
        let mapping: Unmanaged<GuestMemoryMapping>
    }

    static let capacity = 64
    private let entries: UnsafeMutablePointer<Entry>
    private let count = Atomic<Int>(0)

    init() {
        unsafe entries = UnsafeMutablePointer<Entry>.allocate(capacity: Self.capacity)
    }

    deinit {
        // SAFETY: allocated in init; Entry is trivial (an unmanaged reference
        // and integers), so nothing needs deinitializing.
        unsafe entries.deallocate()
    }

    /// Publishes `mapping` if there is room. The caller holds the memory's
    /// lock (one appender at a time) and keeps `mapping` alive as long as
    /// this table.
    func append(_ mapping: GuestMemoryMapping) {
        let n = count.load(ordering: .relaxed)
        guard n < Self.capacity else { return }
        // SAFETY: `n` is below the capacity, and no reader looks at entry
        // `n` before the release store below makes it part of the count.
        unsafe (entries + n).initialize(to: Entry(start: mapping.range.start.rawValue, length: mapping.range.length,
                                                  mapping: Unmanaged.passUnretained(mapping)))
        count.store(n + 1, ordering: .releasing)
    }

    /// The published mapping holding all of `[address, address + length)`
    /// and the offset in it; nil when none does.
    func find(_ address: UInt64, _ length: UInt64) -> (Unmanaged<GuestMemoryMapping>, UInt64)? {
        let n = count.load(ordering: .acquiring)
        for i in 0..<n {
            // SAFETY: entries below the count loaded (acquire) are initialized and never change.
            let e = unsafe entries[i]
            if address >= e.start, address - e.start <= e.length, length <= e.length - (address - e.start) {
                return (e.mapping, address - e.start)
            }
        }
        return nil
    }
}
