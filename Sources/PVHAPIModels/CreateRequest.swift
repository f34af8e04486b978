import Foundation
import XLConfig

/// A create request checked and resolved (the config text is what the
/// guest process will read).
public struct ResolvedCreateRequest: Sendable {
    public let configuration: XLDomainConfiguration
    public let warnings: [String]
    /// The config as xl.cfg text, overrides not included.
    public let text: [UInt8]
    public let overrides: [String]
    /// The name messages use (the client's file name, or `<request>`).
    public let source: String
    /// Leave the domain paused once created (`paused` in the request).
    public let paused: Bool

    /// Resolves `request` the way `pvh create` resolves a file.
    public init(_ request: CreateDomainRequest) throws(APIError) {
        let source = request.source.map { $0.isEmpty ? "<request>" : $0 } ?? "<request>"
        let text: [UInt8]
        switch (request.xlConfig, request.config) {
        case (let xl?, nil): text = Array(xl.utf8)
        case (nil, let json?): text = Array(try Self.xlText(json).utf8)
        default: throw APIError(.badRequest, "give either xl_config (xl.cfg text) or config (a JSON object of xl keys)")
        }
        guard text.count <= Self.maximumConfigSize else {
            throw APIError(.badRequest, "the config is larger than \(Self.maximumConfigSize >> 10) KiB")
        }
        let overrides = request.overrides ?? []
        for line in overrides where !line.contains("=") {
            throw APIError(.badRequest, "\(line): not KEY=VALUE")
        }
        do {
            let settings = try ConfigSettings(source: source, bytes: text, overrides: overrides)
            let resolution = try XLDomainConfiguration.resolve(settings)
            configuration = resolution.configuration
            warnings = resolution.warnings
        } catch {
            throw APIError(config: error, source: source)
        }
        self.text = text
        self.overrides = overrides
        self.source = source
        self.paused = request.paused ?? false
    }

    /// The largest config accepted (pvh create reads up to 16 MiB from a
    /// file; a request's is kept in memory, so less).
    public static let maximumConfigSize = 1 << 20

    /// A JSON object of xl keys as xl.cfg lines: strings quoted (C escapes
    /// for quote and backslash), numbers as integers, lists of strings.
    static func xlText(_ object: [String: JSON]) throws(APIError) -> String {
        var lines: [String] = []
        for (key, value) in object.sorted(by: { $0.key < $1.key }) {
            guard let first = key.unicodeScalars.first, first == "_" || ("a"..."z").contains(first),
                  key.unicodeScalars.allSatisfy({ $0 == "_" || ("a"..."z").contains($0) || ("0"..."9").contains($0) })
            else { throw APIError(.badRequest, "config: \(key): not an xl key (lower-case letters, digits, '_')", key: key) }
            lines.append("\(key) = \(try xlValue(value, key: key, nested: false))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func xlValue(_ value: JSON, key: String, nested: Bool) throws(APIError) -> String {
        switch value {
        case .string(let s):
            return "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n") + "\""
        case .number(let n) where n == n.rounded() && abs(n) < 1e15: return String(Int(n))
        case .bool(let b): return b ? "1" : "0"
        case .array(let items) where !nested:
            var parts: [String] = []
            for item in items { parts.append(try xlValue(item, key: key, nested: true)) }
            return "[ " + parts.joined(separator: ", ") + " ]"
        default:
            throw APIError(.badRequest, "config: \(key): a string, an integer, a boolean or a list of those", key: key)
        }
    }
}
