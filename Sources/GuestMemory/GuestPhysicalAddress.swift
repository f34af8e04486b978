/// A guest physical address (Xen: `paddr_t`). Never a bare integer across a target boundary.
public struct GuestPhysicalAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    /// `self + offset`, or nil on 64-bit overflow (a guest can name any value).
    public func advanced(by offset: UInt64) -> GuestPhysicalAddress? {
        let (sum, overflow) = rawValue.addingReportingOverflow(offset)
        return overflow ? nil : GuestPhysicalAddress(sum)
    }

    public var frameNumber: GuestFrameNumber { GuestFrameNumber(rawValue >> 12) }
    public var pageOffset: UInt64 { rawValue & 0xfff }
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// A guest frame number (Xen: `xen_pfn_t` / gfn): a guest physical address >> 12.
public struct GuestFrameNumber: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public static let pageSize: UInt64 = 4096
    /// The frame's first byte, or nil if the frame number does not fit a 64-bit address.
    public var address: GuestPhysicalAddress? {
        rawValue > (UInt64.max >> 12) ? nil : GuestPhysicalAddress(rawValue << 12)
    }
    public var description: String { "gfn 0x" + String(rawValue, radix: 16) }
}

/// A guest physical range `[start, start + length)`.
public struct GuestPhysicalRange: Hashable, Sendable {
    public var start: GuestPhysicalAddress
    public var length: UInt64
    public init(start: GuestPhysicalAddress, length: UInt64) {
        self.start = start
        self.length = length
    }
    /// One past the last byte; saturates at UInt64.max.
    public var end: UInt64 {
        let (e, o) = start.rawValue.addingReportingOverflow(length)
        return o ? UInt64.max : e
    }
    public func contains(_ address: GuestPhysicalAddress, count: UInt64 = 1) -> Bool {
        guard address.rawValue >= start.rawValue else { return false }
        let (last, o) = address.rawValue.addingReportingOverflow(count)
        return !o && last <= end
    }
    public func overlaps(_ other: GuestPhysicalRange) -> Bool {
        start.rawValue < other.end && other.start.rawValue < end
    }
}
