/// A value as libxlu keeps it: numbers stay text until a key is looked up
/// as a number; lists may nest.
public enum ConfigValue: Hashable, Sendable {
    case string(String)
    case list([ConfigValue])
}

/// One `KEY = VALUE` or `KEY += VALUE` as stored.
public struct ConfigSetting: Hashable, Sendable {
    public let name: String
    /// After a `+=`, the previous value and this one joined.
    public let value: ConfigValue
    /// Written with `+=` (libxlu then refuses it as a number).
    public let appended: Bool
    /// The line where the value starts.
    public let line: Int
}

/// Why an xl config was refused: each line as the CLI prints it (xl
/// prints them to stderr and exits 1).
public enum XLConfigError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Parsing failed: libxlu's messages, in order.
    case parse([String])
    /// A key's value is of the wrong type or out of range, or the keys do
    /// not make a PVH guest pvh can build. One line.
    case invalid(String)

    public var lines: [String] {
        switch self {
        case .parse(let lines): lines
        case .invalid(let line): [line]
        }
    }

    public var description: String { lines.joined(separator: "\n") }
}

/// A parsed xl config: every setting, the latest of each key winning, and
/// lookups that convert on demand as libxlu's `xlu_cfg_get_*` do
/// (tools/libs/util/libxlu_cfg.c), their messages naming the key and line.
public struct ConfigSettings: Sendable {
    /// The file name messages start with.
    public let source: String
    /// Every assignment in file order.
    public let all: [ConfigSetting]
    private let latest: [String: Int]

    /// Parses a config. `source` names it in messages (xl: the file's path).
    public init(source: String, bytes: [UInt8]) throws(XLConfigError) {
        var parser = ConfigParser(source: source, bytes: bytes)
        switch parser.parse() {
        case .success(let settings): self = settings
        case .failure(let error): throw error
        }
    }

    /// Parses a config file with `xl create FILE KEY=VALUE...`'s overrides:
    /// xl appends them to the file's text, a line each, after one line
    /// end (`create_domain` in tools/xl/xl_vmcontrol.c), so they are
    /// parsed with the same grammar, win over the file, and an error in
    /// one is reported at its line past the file's end.
    public init(source: String, bytes: [UInt8], overrides: [String]) throws(XLConfigError) {
        var text = bytes
        if !overrides.isEmpty {
            text += Array("\n".utf8)
            for line in overrides { text += Array(line.utf8) + Array("\n".utf8) }
            text += Array("\n".utf8)
        }
        try self.init(source: source, bytes: text)
    }

    fileprivate init(source: String, all: [ConfigSetting]) {
        self.source = source
        self.all = all
        var latest: [String: Int] = [:]
        for (i, setting) in all.enumerated() { latest[setting.name] = i }
        self.latest = latest
    }

    /// The setting in force for `key`: the last one.
    public subscript(key: String) -> ConfigSetting? { latest[key].map { all[$0] } }

    /// The keys set, each once, in the order they were first set.
    public var keys: [String] {
        var seen = Set<String>()
        return all.compactMap { seen.insert($0.name).inserted ? $0.name : nil }
    }

    /// `xlu_cfg_get_string`: nil when unset; a list is refused.
    public func string(_ key: String) throws(XLConfigError) -> String? {
        guard let setting = self[key] else { return nil }
        guard case .string(let s) = setting.value else {
            throw .invalid("\(source):\(setting.line): parameter `\(key)' is a list but should be a single value")
        }
        return s
    }

    /// `xlu_cfg_get_list`: nil when unset; a single value is refused.
    public func list(_ key: String) throws(XLConfigError) -> (items: [ConfigValue], line: Int)? {
        guard let setting = self[key] else { return nil }
        guard case .list(let items) = setting.value else {
            throw .invalid("\(source):\(setting.line): parameter `\(key)' is a single value but should be a list")
        }
        return (items, setting.line)
    }

    /// `xlu_cfg_get_bounded_long`: the value read as C's `strtol(s, &end,
    /// 0)` reads it (decimal, `0x` hex, leading-`0` octal, optional sign
    /// and leading white space), all of it a number, within `range`.
    public func integer(_ key: String, in range: ClosedRange<Int> = Int.min...Int.max) throws(XLConfigError) -> Int? {
        guard let setting = self[key] else { return nil }
        let here = "\(source):\(setting.line)"
        guard case .string(let text) = setting.value else {
            throw .invalid("\(here): parameter `\(key)' is a list but should be a single value")
        }
        guard !setting.appended else { throw .invalid("\(here): can't use += with numbers for parameter `\(key)'") }
        let value: Int
        switch Self.strtol(text) {
        case .value(let v): value = v
        case .invalid: throw .invalid("\(here): parameter `\(key)' is not a valid number")
        case .outOfRange:
            throw .invalid("\(here): parameter `\(key)' could not be parsed as a number: Numerical result out of range")
        }
        guard value >= range.lowerBound else {
            throw .invalid("\(here): parameter `\(key)': value `\(value)' is smaller than minimum bound '\(range.lowerBound)'")
        }
        guard value <= range.upperBound else {
            throw .invalid("\(here): parameter `\(key)': value `\(value)' is greater than maximum bound '\(range.upperBound)'")
        }
        return value
    }

    enum Conversion: Equatable {
        case value(Int)
        case invalid
        case outOfRange
    }

    /// C's `strtol(text, &end, 0)` with the whole text required to be used.
    static func strtol(_ text: String) -> Conversion {
        var bytes = Array(text.utf8)[...]
        while let c = bytes.first, c == 0x20 || (0x09...0x0D).contains(c) { bytes = bytes.dropFirst() }
        var negative = false
        if let sign = bytes.first, sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") {
            negative = sign == UInt8(ascii: "-")
            bytes = bytes.dropFirst()
        }
        var radix = 10
        if bytes.count >= 3, bytes.first == UInt8(ascii: "0"), bytes.dropFirst().first.map({ $0 | 0x20 }) == UInt8(ascii: "x"),
           hexDigitValue(bytes[bytes.startIndex + 2]) != nil {
            radix = 16
            bytes = bytes.dropFirst(2)
        } else if bytes.first == UInt8(ascii: "0") {
            radix = 8
        }
        guard !bytes.isEmpty else { return .invalid }
        var magnitude: UInt64 = 0
        var overflow = false
        var used = 0
        for c in bytes {
            guard let digit = hexDigitValue(c).map(Int.init), digit < radix else { break }
            let (m, o1) = magnitude.multipliedReportingOverflow(by: UInt64(radix))
            let (a, o2) = m.addingReportingOverflow(UInt64(digit))
            if o1 || o2 { overflow = true }
            magnitude = a
            used += 1
        }
        // strtol consumes every digit even past overflow; anything after them
        // (or no digit at all) is not a number.
        guard used > 0, used == bytes.count else { return .invalid }
        let limit = negative ? UInt64(Int.max) + 1 : UInt64(Int.max)
        guard !overflow, magnitude <= limit else { return .outOfRange }
        return .value(negative ? Int(truncatingIfNeeded: 0 &- magnitude) : Int(magnitude))
    }


    /// Collects settings as the parser stores them.
    struct Builder {
        var source = ""
        private var all: [ConfigSetting] = []
        private var latest: [String: Int] = [:]

        /// `xlu__cfg_set_store`; the message when a `+=` mixes a list and a string.
        mutating func store(name: String, value: ConfigValue, append: Bool, line: Int) -> String? {
            var value = value
            if append, let previous = latest[name].map({ all[$0].value }) {
                switch (previous, value) {
                case (.string(let a), .string(let b)): value = .string(a + b)
                case (.list(let a), .list(let b)): value = .list(a + b)
                default: return "can't add [list] to \"string\" or vice versa"
                }
            }
            latest[name] = all.count
            all.append(ConfigSetting(name: name, value: value, appended: append, line: line))
            return nil
        }

        func build() -> ConfigSettings { ConfigSettings(source: source, all: all) }
    }
}
