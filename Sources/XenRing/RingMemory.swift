import GuestMemory
import Synchronization

/// The guest memory a ring lives in: one or more guest-physical segments that
/// together form the ring's byte space. A single-page ring (console, XenStore,
/// a one-page shared ring) is one segment; a multi-page shared ring (blkif
/// `ring-page-order`) is one segment per granted frame, which need not be
/// contiguous in guest-physical space. Accesses that straddle segments are
/// split; nothing outside the segments is ever touched.
struct RingMemory: Sendable {
    let memory: any GuestMemory
    /// `(start, length)` of each segment in ring order.
    let segments: [(start: GuestPhysicalAddress, length: Int)]
    let length: Int

    init(memory: any GuestMemory, segments: [(start: GuestPhysicalAddress, length: Int)]) throws(XenRingError) {
        for s in segments where !memory.contains(s.start, count: UInt64(s.length)) {
            throw .memory(.outOfBounds(s.start, count: UInt64(s.length)))
        }
        self.memory = memory
        self.segments = segments
        self.length = segments.reduce(0) { $0 + $1.length }
    }

    /// Calls `body(address, offsetInRequest, count)` for each piece of `[offset, offset + count)`.
    private func forEachPiece(_ offset: Int, _ count: Int,
                              _ body: (GuestPhysicalAddress, Int, Int) throws(GuestMemoryError) -> Void) throws(XenRingError) {
        var remaining = count
        var position = offset
        var done = 0
        for s in segments {
            if remaining == 0 { break }
            if position >= s.length { position -= s.length; continue }
            let n = min(remaining, s.length - position)
            guard let address = s.start.advanced(by: UInt64(position)) else {
                throw .memory(.outOfBounds(s.start, count: UInt64(position)))
            }
            do { try body(address, done, n) } catch { throw .memory(error) }
            done += n
            remaining -= n
            position = 0
        }
        // Offsets are computed by the ring code from masked indices and fixed
        // layouts, never taken from the guest; running past the end would be
        // a pvh bug, reported as an error rather than a crash.
        guard remaining == 0 else {
            throw .memory(.outOfBounds(segments.first?.start ?? GuestPhysicalAddress(0), count: UInt64(offset + count)))
        }
    }

    /// Copies `count` bytes at `offset` out of the guest (one copy: the caller
    /// works on the result, never on guest memory).
    func read(at offset: Int, count: Int) throws(XenRingError) -> [UInt8] {
        if let s = segments.first, offset + count <= s.length, let a = s.start.advanced(by: UInt64(offset)) {
            do { return try memory.read(at: a, count: count) } catch { throw .memory(error) }
        }
        var out: [UInt8] = []
        out.reserveCapacity(count)
        try forEachPiece(offset, count) { address, _, n throws(GuestMemoryError) in
            out += try memory.read(at: address, count: n)
        }
        return out
    }

    /// `read(at:count:)` of `bytes.count` bytes into `bytes` (its storage
    /// reused when not shared; see `GuestMemory.read(at:into:)`).
    func read(at offset: Int, into bytes: inout [UInt8]) throws(XenRingError) {
        if let s = segments.first, offset + bytes.count <= s.length, let a = s.start.advanced(by: UInt64(offset)) {
            do { try memory.read(at: a, into: &bytes) } catch { throw .memory(error) }
            return
        }
        bytes = try read(at: offset, count: bytes.count)
    }

    /// Copies `bytes` into the guest at `offset`.
    func write(_ bytes: ArraySlice<UInt8>, at offset: Int) throws(XenRingError) {
        let base = bytes.startIndex
        try forEachPiece(offset, bytes.count) { address, done, n throws(GuestMemoryError) in
            try memory.write(bytes[(base + done)..<(base + done + n)], at: address)
        }
    }

    /// Loads a ring index with a single 32-bit access, then an acquire fence so
    /// no later read of ring data is satisfied before it (Xen's `rmb()` after
    /// reading a producer index).
    func loadIndex(at offset: Int) throws(XenRingError) -> RingIndex {
        let address = try wordAddress(offset)
        let value: UInt32
        do { value = try memory.load(UInt32.self, at: address) } catch { throw .memory(error) }
        atomicMemoryFence(ordering: .acquiring)
        return RingIndex(value)
    }

    /// A release fence, then a single 32-bit store of a ring index, so the
    /// data written (or read) before it is complete first (Xen's `wmb()`
    /// before publishing a producer index, `mb()` before a consumer index).
    func storeIndex(_ index: RingIndex, at offset: Int) throws(XenRingError) {
        let address = try wordAddress(offset)
        atomicMemoryFence(ordering: .releasing)
        do { try memory.store(index.rawValue, at: address) } catch { throw .memory(error) }
    }

    /// A full fence: Xen's `xen_mb()` between publishing an index and reading
    /// the other side's event index (a store followed by a load, the one
    /// reordering x86 allows).
    func fullFence() { atomicMemoryFence(ordering: .sequentiallyConsistent) }

    private func wordAddress(_ offset: Int) throws(XenRingError) -> GuestPhysicalAddress {
        // Index words sit in the first segment at fixed, 4-byte aligned offsets.
        guard let s = segments.first, offset >= 0, offset + 4 <= s.length,
              let address = s.start.advanced(by: UInt64(offset)) else {
            throw .memory(.outOfBounds(segments.first?.start ?? GuestPhysicalAddress(0), count: UInt64(max(offset, 0) + 4)))
        }
        return address
    }
}
