/// A domain's UUID (xl's `uuid=`), read as libxl reads it
/// (`libxl_uuid_from_string`): 32 hex digits in the 8-4-4-4-12 form.
public struct DomainUUID: Hashable, Sendable, CustomStringConvertible {
    /// The 16 bytes, in the order written.
    public let bytes: [UInt8]

    /// Nil unless `text` is exactly 8-4-4-4-12 hex digits (either case).
    public init?(parsing text: String) {
        let chars = Array(text.utf8)
        guard chars.count == 36 else { return nil }
        var bytes: [UInt8] = []
        var i = 0
        while i < chars.count {
            if [8, 13, 18, 23].contains(i) {
                guard chars[i] == UInt8(ascii: "-") else { return nil }
                i += 1
                continue
            }
            guard i + 1 < chars.count, let high = hexDigitValue(chars[i]), let low = hexDigitValue(chars[i + 1]) else { return nil }
            bytes.append(high << 4 | low)
            i += 2
        }
        guard bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    /// Lower-case 8-4-4-4-12.
    public var description: String {
        var out = ""
        for (i, byte) in bytes.enumerated() {
            if [4, 6, 8, 10].contains(i) { out += "-" }
            let digits = String(byte, radix: 16)
            out += digits.count == 1 ? "0" + digits : digits
        }
        return out
    }

}

/// The value of one hex digit, either case; nil for anything else.
func hexDigitValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
    default: nil
    }
}
