/// Bounds-checked little-endian reads over a file held in memory. Offsets and
/// sizes come from the file itself, so every accessor returns nil instead of
/// trapping when `[offset, offset + size)` is not inside the bytes or the sum
/// overflows.
struct ByteView: Sendable {
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var count: Int { bytes.count }

    /// The index range `[offset, offset + size)` if it lies inside the bytes.
    func range(_ offset: UInt64, _ size: UInt64) -> Range<Int>? {
        let (end, overflow) = offset.addingReportingOverflow(size)
        guard !overflow, end <= UInt64(bytes.count) else { return nil }
        return Int(offset)..<Int(end)
    }

    func slice(_ offset: UInt64, _ size: UInt64) -> ArraySlice<UInt8>? {
        range(offset, size).map { bytes[$0] }
    }

    func integer<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, at offset: UInt64) -> T? {
        guard let r = range(offset, UInt64(MemoryLayout<T>.size)) else { return nil }
        var value: T = 0
        for (i, b) in bytes[r].enumerated() { value |= T(b) << (8 * i) }
        return value
    }

    func u8(_ offset: UInt64) -> UInt8? { integer(UInt8.self, at: offset) }
    func u16(_ offset: UInt64) -> UInt16? { integer(UInt16.self, at: offset) }
    func u32(_ offset: UInt64) -> UInt32? { integer(UInt32.self, at: offset) }
    func u64(_ offset: UInt64) -> UInt64? { integer(UInt64.self, at: offset) }

    /// The NUL-terminated string at `offset` (at most `limit` bytes scanned).
    func cString(at offset: UInt64, limit: Int = 256) -> [UInt8]? {
        guard offset < UInt64(bytes.count) else { return nil }
        let start = Int(offset)
        let end = min(bytes.count, start + limit)
        guard let nul = bytes[start..<end].firstIndex(of: 0) else { return nil }
        return Array(bytes[start..<nul])
    }
}

extension UInt64 {
    /// `self` rounded up to a multiple of `alignment` (a power of two), or nil on overflow.
    func alignedUp(_ alignment: UInt64) -> UInt64? {
        guard alignment > 1 else { return self }
        let (sum, overflow) = addingReportingOverflow(alignment - 1)
        return overflow ? nil : sum & ~(alignment - 1)
    }

    /// `self` rounded down to a multiple of `alignment` (a power of two).
    func alignedDown(_ alignment: UInt64) -> UInt64 {
        alignment > 1 ? self & ~(alignment - 1) : self
    }
}
