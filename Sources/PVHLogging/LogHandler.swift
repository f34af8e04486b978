import Foundation
import Logging
import Locking
import XenABI

/// Where formatted log lines go: a file, stderr, a test's array. Called on
/// the logging thread; implementations serialise themselves.
public protocol LogDestination: Sendable {
    func write(_ line: String)
}

/// swift-log's handler for pvh: one line per record,
/// `TIMESTAMP LEVEL LABEL: MESSAGE[ key=value ...]`, the label being the
/// guest's (`pvh[1/web]`, see `label(domain:name:)`), the timestamp UTC
/// with milliseconds (ISO 8601). The line is the whole record: a message
/// with newlines has them escaped, so one record never looks like two.
public struct PVHLogHandler: LogHandler {
    public let label: String
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    let destination: any LogDestination
    let clock: @Sendable () -> Date

    public init(label: String, level: Logger.Level = .info, destination: any LogDestination,
                clock: @escaping @Sendable () -> Date = { Date() }) {
        self.label = label
        self.logLevel = level
        self.destination = destination
        self.clock = clock
    }

    /// The label of a guest's records: `pvh[DOMID/NAME]`.
    public static func label(domain: DomainID, name: String) -> String { "pvh[\(domain.rawValue)/\(name)]" }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        destination.write(Self.format(time: clock(), level: event.level, label: label, message: event.message.description,
                                      metadata: merged))
    }

    static let timestampStyle = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

    /// One record as a line (with its newline).
    public static func format(time: Date, level: Logger.Level, label: String, message: String,
                              metadata: Logger.Metadata = [:]) -> String {
        var line = "\(time.formatted(timestampStyle)) \(level.rawValue) \(label): \(escaped(message))"
        for key in metadata.keys.sorted() {
            line += " \(key)=\(escaped(metadata[key]?.description ?? ""))"
        }
        return line + "\n"
    }

    /// Control characters as `\n`, `\r`, `\t` or `\xHH`: a record stays one line.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7f:
                out += "\\x" + String(scalar.value, radix: 16, uppercase: false).leftPadded(to: 2)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

/// pvh's diagnostics on stderr in the shape they always had, `pvh: MESSAGE`
/// (one line, no timestamp: the terminal's reader sees what happens now),
/// for records at `level` or worse: the mirror of a guest's log that keeps
/// device faults and XenStore problems in front of the person running it.
public struct StandardErrorLogHandler: LogHandler {
    /// Put between `pvh: ` and the message (`metrics` gives `pvh: metrics: ...`); nil for none.
    public let prefix: String?
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    let destination: any LogDestination

    public init(prefix: String? = nil, level: Logger.Level = .warning, destination: any LogDestination = StandardError()) {
        self.prefix = prefix
        self.logLevel = level
        self.destination = destination
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        destination.write("pvh: \(prefix.map { $0 + ": " } ?? "")\(event.message)\n")
    }
}

/// The process's stderr, one `write` per line (FileHandle serialises).
public struct StandardError: LogDestination {
    public init() {}
    public func write(_ line: String) {
        try? FileHandle.standardError.write(contentsOf: Data(line.utf8))
    }
}

/// Lines kept in memory (tests, and whoever wants the last records).
public final class MemoryLogDestination: LogDestination {
    private let stored = Lock<[String]>([])
    public init() {}
    public func write(_ line: String) { stored.withLock { $0.append(line) } }
    public var lines: [String] { stored.withLock { $0 } }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
