/// A memory size as `xl mem-set` and `xl mem-max` take it
/// (`parse_mem_size_kb` in tools/xl/xl_utils.c): decimal digits and at most
/// one unit letter, `t`, `g`, `m`, `k` or `b` in either case; no letter
/// means MiB (xl's code, whatever xl(1) says of KiB). The value is KiB;
/// bytes are rounded down to whole KiB, as xl shifts them.
public enum MemorySize {
    /// Why a size was refused (one phrase, for the CLI's and the API's 400).
    public static let rule = "a number with an optional unit: t, g, m (the default), k or b (512m, 1g, 262144k)"

    /// The size in KiB, or nil if `text` is not one (empty, signed, a
    /// fraction, two letters, an unknown unit, or more than Int64 holds).
    public static func kibibytes(_ text: String) -> Int64? {
        var digits = Substring(text)
        var shift = 10  // MiB → KiB
        var bytes = false
        if let last = digits.last, !last.isASCII || !last.isNumber {
            switch last.lowercased() {
            case "t": shift = 30
            case "g": shift = 20
            case "m": shift = 10
            case "k": shift = 0
            case "b": bytes = true
            default: return nil
            }
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int64(digits) else { return nil }
        if bytes { return value >> 10 }
        // Refused rather than wrapped: 9999999999t is no size.
        guard value <= Int64.max >> shift else { return nil }
        return value << shift
    }
}
