/// Xen system time (`s_time_t`, xen/include/xen/time.h): signed nanoseconds
/// since the domain started. vcpu_time_info's `system_time` and every timer
/// deadline are in this unit.
public struct SystemTime: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: Int64
    public init(rawValue: Int64) { self.rawValue = rawValue }
    public init(nanoseconds: Int64) { self.rawValue = nanoseconds }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public static let zero = SystemTime(rawValue: 0)
    /// `self + ns`, saturating at `Int64.max` / `Int64.min`.
    public func advanced(by ns: Int64) -> SystemTime {
        let (sum, overflow) = rawValue.addingReportingOverflow(ns)
        return SystemTime(rawValue: overflow ? (ns > 0 ? Int64.max : Int64.min) : sum)
    }
    public var description: String { "\(rawValue) ns" }
}
