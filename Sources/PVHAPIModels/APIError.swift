import XLConfig

/// The API's error answer, `{code, message, file?, line?, key?}`, with a
/// stable `code` a client may switch on; the HTTP status follows the code.
public struct APIError: Error, Codable, Hashable, Sendable, CustomStringConvertible {
    /// The closed set of codes (docs/api/openapi.json lists the same).
    public enum Code: String, Codable, Hashable, Sendable, CaseIterable {
        /// The request is malformed (JSON, a parameter).
        case badRequest = "bad_request"
        /// The config does not parse (xl's parse messages).
        case configSyntax = "config_syntax"
        /// The config parses but is refused (a key's value, a missing key).
        case configInvalid = "config_invalid"
        /// No domain of that name, or no such XenStore node, or no route.
        case notFound = "not_found"
        /// A live domain already has this name or UUID.
        case nameInUse = "name_in_use"
        /// The domain's state does not allow the action (pausing a paused one).
        case conflict
        /// `?wait=true` ran out of time; the action was made.
        case timedOut = "timed_out"
        /// Not built yet.
        case notImplemented = "not_implemented"
        /// XenStore refused the path or value as malformed (EINVAL, E2BIG, ...).
        case xenStoreInvalid = "xenstore_invalid"
        /// XenStore refused the request (EACCES, EEXIST, a quota, ...).
        case xenStoreRefused = "xenstore_refused"
        /// The path exists; the method is not one it serves (405).
        case methodNotAllowed = "method_not_allowed"
        /// The daemon failed (spawning a guest process, its store).
        case internalError = "internal_error"
        /// The request's body is larger than the route takes (413).
        case tooLarge = "too_large"
        /// The domain already has as many console streams as it serves (429).
        case tooManyStreams = "too_many_streams"
        /// The guest did not take all of the console input in time (503;
        /// `accepted` says how many bytes it took, in order, from the start).
        case unavailable

        /// 400, 404, 405, 409, 413, 429, 501, 503 or 500.
        public var httpStatus: Int {
            switch self {
            case .badRequest, .configSyntax, .configInvalid, .xenStoreInvalid: 400
            case .notFound: 404
            case .nameInUse, .conflict, .timedOut, .xenStoreRefused: 409
            case .methodNotAllowed: 405
            case .notImplemented: 501
            case .internalError: 500
            case .tooLarge: 413
            case .tooManyStreams: 429
            case .unavailable: 503
            }
        }
    }

    public var code: Code
    public var message: String
    public var file: String?
    public var line: Int?
    public var key: String?
    /// With `unavailable` from console input: the bytes the guest took.
    public var accepted: Int?

    public init(_ code: Code, _ message: String, file: String? = nil, line: Int? = nil, key: String? = nil, accepted: Int? = nil) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        self.accepted = accepted
    }

    public var description: String { message }

    /// A config refused by XLConfig: its first line's `FILE:LINE:` prefix
    /// and the key xl quotes (`` `memory' ``) become file, line and key.
    public init(config error: XLConfigError, source: String) {
        let first = error.lines.first ?? ""
        var file: String?
        var line: Int?
        if first.hasPrefix(source + ":") {
            let rest = first.dropFirst(source.count + 1)
            if let colon = rest.firstIndex(of: ":"), let n = Int(rest[..<colon]) {
                file = source
                line = n
            }
        }
        var key: String?
        if let open = first.firstIndex(of: "`"), let close = first[first.index(after: open)...].firstIndex(of: "'") {
            let quoted = first[first.index(after: open)..<close]
            if !quoted.isEmpty, quoted.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) { key = String(quoted) }
        }
        let code: Code = if case .parse = error { .configSyntax } else { .configInvalid }
        self.init(code, error.lines.joined(separator: "\n"), file: file, line: line, key: code == .configSyntax ? nil : key)
    }

    public static func notFound(_ name: String) -> APIError { APIError(.notFound, "\(name) is an invalid domain identifier") }
}
