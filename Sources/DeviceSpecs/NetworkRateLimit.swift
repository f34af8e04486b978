/// A vif's transmit credit (`rate=`): the guest may send `bytesPerInterval`
/// bytes in each `intervalMicroseconds`, what netback's credit scheduler
/// reads from the `rate` node ("bytes,usecs") and what libxl computes from
/// xl's `RATE[@INTERVAL]` (libxlu_vif.c, xlu_vif_parse_rate).
public struct NetworkRateLimit: Hashable, Sendable, CustomStringConvertible {
    /// Bytes the guest may send per interval.
    public let bytesPerInterval: UInt64
    /// The replenishment interval, in microseconds (xl's default: 50 ms).
    public let intervalMicroseconds: UInt32

    /// xl's default replenishment interval.
    public static let defaultIntervalMicroseconds: UInt32 = 50_000

    /// A limit as netback's `rate` node holds it.
    public init(bytesPerInterval: UInt64, intervalMicroseconds: UInt32) {
        self.bytesPerInterval = bytesPerInterval
        self.intervalMicroseconds = intervalMicroseconds
    }

    /// The interval as a duration.
    public var interval: Duration { .microseconds(Int64(intervalMicroseconds)) }

    /// `bytesPerInterval,intervalMicroseconds`: the `rate` node's form.
    public var description: String { "\(bytesPerInterval),\(intervalMicroseconds)" }

    /// Why a `rate=` value was refused.
    public enum ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        /// Nothing before `@`.
        case noRate
        /// The rate is not `<digits>[K|M|G](B|b)/s`.
        case invalidRate(String)
        /// The interval is not `<digits>[m|u][s]`.
        case invalidInterval(String)
        /// A rate or interval of 0, or above 2^32 - 1 (bytes/s before the
        /// unit, microseconds after).
        case outOfRange(String)

        /// Why, in one line.
        public var description: String {
            switch self {
            case .noRate: "no rate before '@'"
            case .invalidRate(let r): "rate '\(r)' is not <number>[K|M|G](B|b)/s, e.g. 10Mb/s or 100KB/s"
            case .invalidInterval(let i): "interval '\(i)' is not <number>[ms|us|s], e.g. 20ms"
            case .outOfRange(let v): "'\(v)' is out of range (1 to 4294967295, in its unit)"
            }
        }
    }

    /// Parses xl's `RATE[@INTERVAL]`:
    /// - RATE: a decimal number, an optional decimal multiplier `K` (10^3),
    ///   `M` (10^6) or `G` (10^9), then `B/s` (bytes) or `b/s` (bits, / 8);
    /// - INTERVAL: a decimal number then `ms`/`m` (milliseconds), `us`/`u`
    ///   (microseconds), `s` or nothing (seconds); 50 ms when omitted.
    /// bytesPerInterval is bytes/s × interval, as libxl rounds it (down).
    /// Unlike xl's strtoull, a leading `0` or `0x` is not octal or hex.
    public init(parsing text: String) throws(ParseError) {
        let pieces = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false)
        let rate = String(pieces[0])
        guard !rate.isEmpty else { throw .noRate }
        let bytesPerSecond = try Self.bytesPerSecond(rate)
        var interval = Self.defaultIntervalMicroseconds
        if pieces.count == 2 { interval = try Self.intervalMicroseconds(String(pieces[1])) }
        let (product, overflow) = bytesPerSecond.multipliedReportingOverflow(by: UInt64(interval))
        guard !overflow else { throw .outOfRange(text) }
        self.init(bytesPerInterval: product / 1_000_000, intervalMicroseconds: interval)
    }

    private static func bytesPerSecond(_ rate: String) throws(ParseError) -> UInt64 {
        let digits = rate.prefix(while: \.isASCIIDigit)
        var rest = Substring(rate.dropFirst(digits.count))
        guard !digits.isEmpty else { throw .invalidRate(rate) }
        var multiplier: UInt64 = 1
        switch rest.first {
        case "K": multiplier = 1000
        case "M": multiplier = 1_000_000
        case "G": multiplier = 1_000_000_000
        default: break
        }
        if multiplier != 1 { rest = rest.dropFirst() }
        let bits: Bool
        switch rest {
        case "B/s": bits = false
        case "b/s": bits = true
        default: throw .invalidRate(rate)
        }
        guard let value = UInt64(digits), value > 0, value <= UInt64(UInt32.max) else { throw .outOfRange(rate) }
        let bytes = value * multiplier
        return bits ? bytes / 8 : bytes
    }

    private static func intervalMicroseconds(_ interval: String) throws(ParseError) -> UInt32 {
        let digits = interval.prefix(while: \.isASCIIDigit)
        let unit = interval.dropFirst(digits.count)
        guard !digits.isEmpty else { throw .invalidInterval(interval) }
        let scale: UInt64
        switch unit {
        case "", "s": scale = 1_000_000
        case "m", "ms": scale = 1000
        case "u", "us": scale = 1
        default: throw .invalidInterval(interval)
        }
        guard let value = UInt64(digits), value > 0, value <= UInt64(UInt32.max) else { throw .outOfRange(interval) }
        let (micro, overflow) = value.multipliedReportingOverflow(by: scale)
        guard !overflow, micro <= UInt64(UInt32.max) else { throw .outOfRange(interval) }
        return UInt32(micro)
    }
}

extension Character {
    /// 0-9 only (not other scripts' digits).
    var isASCIIDigit: Bool { isASCII && isNumber }
}
