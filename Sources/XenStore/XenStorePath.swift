import XenABI

/// A validated XenStore path in canonical form (xenstore.txt "Paths";
/// C xenstored `canonicalize`): either absolute (`/`, `/local/domain/1/name`)
/// or a special watch path starting with `@` (`@introduceDomain`,
/// `@releaseDomain`). A relative path given by a client is resolved against
/// its home `/local/domain/<domid>`; `relative` remembers that, because watch
/// events for a relative watch are reported relative again (xenstore.txt WATCH).
///
/// Rules, as in C xenstored: only `[A-Za-z0-9-/_@]`; not empty; no `//`; no
/// trailing `/` except the root; `@` only where special paths are allowed;
/// at most `XENSTORE_ABS_PATH_MAX` bytes, and for unprivileged clients at
/// most the path quota (default `XENSTORE_REL_PATH_MAX`) below
/// `/local/domain/<id>/`. Any violation is `EINVAL`.
public struct XenStorePath: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The canonical absolute or special path.
    public let rawValue: String
    /// The client wrote it relative to its home directory.
    public let relative: Bool

    /// `@introduceDomain`: fired when a domain is introduced (xenstore.txt INTRODUCE).
    public static let introduceDomain = XenStorePath(trusted: "@introduceDomain")
    /// `@releaseDomain`: fired when a domain is released or dies (xenstore.txt RELEASE).
    public static let releaseDomain = XenStorePath(trusted: "@releaseDomain")
    /// The root, `/`.
    public static let root = XenStorePath(trusted: "/")

    private init(trusted: String, relative: Bool = false) {
        self.rawValue = trusted
        self.relative = relative
    }

    /// Validates an absolute or special path (never relative).
    public init?(rawValue: String) {
        guard let p = try? XenStorePath(rawValue, home: .controlDomain, allowSpecial: true, pathQuota: nil),
                  !p.relative else { return nil }
        self = p
    }

    /// `/local/domain/<domain>`: a domain's home (xenstore.txt GET_DOMAIN_PATH).
    public static func home(of domain: DomainID) -> XenStorePath {
        XenStorePath(trusted: "/local/domain/\(domain.rawValue)")
    }

    /// Parses `text` as a client of domain `home` wrote it.
    /// - Parameters:
    ///   - allowSpecial: accept `@...` (WATCH, UNWATCH, GET/SET_PERMS).
    ///   - pathQuota: the longest part below `/local/domain/<id>/` allowed
    ///     (unprivileged clients: `XenStoreQuota.pathLength`), nil for none.
    public init(_ text: String, home: DomainID, allowSpecial: Bool = false,
                pathQuota: Int? = nil) throws(XenStoreError) {
        let utf8 = Array(text.utf8)
        guard let first = utf8.first, utf8.allSatisfy(Self.isValid) else { throw .einval }
        if first == UInt8(ascii: "@") && !allowSpecial { throw .einval }
        let relative = first != UInt8(ascii: "/") && first != UInt8(ascii: "@")
        let full = relative ? XenStorePath.home(of: home).rawValue + "/" + text : text
        let bytes = relative ? Array(full.utf8) : utf8
        if bytes.count > 1 && bytes.last == UInt8(ascii: "/") { throw .einval }
        if first != UInt8(ascii: "@") {
            for i in 1..<max(bytes.count, 1) where bytes[i] == UInt8(ascii: "/") && bytes[i - 1] == UInt8(ascii: "/") {
                throw .einval
            }
        }
        guard bytes.count <= XenStoreLimits.absolutePathMax else { throw .einval }
        if let pathQuota, bytes.count - Self.localPrefixLength(bytes) > pathQuota { throw .einval }
        self.rawValue = full
        self.relative = relative
    }

    /// Allowed characters (C xenstored `valid_chars`).
    private static func isValid(_ c: UInt8) -> Bool {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "/"),
             UInt8(ascii: "_"), UInt8(ascii: "@"):
            true
        default: false
        }
    }

    /// Length of a leading `/local/domain/<up to 5 digits>/`, else 0 (what
    /// C xenstored's path-length quota does not count).
    private static func localPrefixLength(_ b: [UInt8]) -> Int {
        let prefix = Array("/local/domain/".utf8)
        guard b.count > prefix.count, Array(b[0..<prefix.count]) == prefix else { return 0 }
        var i = prefix.count
        while i < b.count, i - prefix.count < 5, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[i]) { i += 1 }
        guard i > prefix.count, i < b.count, b[i] == UInt8(ascii: "/") else { return 0 }
        return i + 1
    }

    /// A special (`@...`) path.
    public var isSpecial: Bool { rawValue.utf8.first == UInt8(ascii: "@") }

    /// The parent of an absolute path (`/` for a top-level node and for `/`).
    public var parent: XenStorePath {
        guard !isSpecial, let slash = rawValue.utf8.lastIndex(of: UInt8(ascii: "/")),
              slash != rawValue.utf8.startIndex else { return .root }
        return XenStorePath(trusted: String(rawValue[rawValue.startIndex..<slash]))
    }

    /// The last component (empty for `/`).
    public var name: String {
        guard let slash = rawValue.utf8.lastIndex(of: UInt8(ascii: "/")) else { return rawValue }
        return String(rawValue[rawValue.index(after: slash)...])
    }

    /// The child `name` of this path (`name` is a single valid component).
    func child(_ name: String) -> XenStorePath {
        XenStorePath(trusted: rawValue == "/" ? "/" + name : rawValue + "/" + name)
    }

    /// Whether `self` is `other` or lies below it.
    public func isInside(_ other: XenStorePath) -> Bool {
        if other.rawValue == "/" { return !isSpecial }
        guard rawValue.hasPrefix(other.rawValue) else { return false }
        let rest = rawValue.utf8.dropFirst(other.rawValue.utf8.count)
        return rest.isEmpty || rest.first == UInt8(ascii: "/")
    }

    /// The path as reported to a client that named it relative to `home`:
    /// the part after `/local/domain/<id>/` (C xenstored `get_watch_path`).
    func reported(relativeTo home: DomainID) -> String {
        let prefix = XenStorePath.home(of: home).rawValue + "/"
        guard rawValue.hasPrefix(prefix) else { return rawValue }
        return String(rawValue.dropFirst(prefix.count))
    }

    /// Paths are equal when they name the same node, however they were written.
    public static func == (a: Self, b: Self) -> Bool { a.rawValue == b.rawValue }
    public func hash(into h: inout Hasher) { h.combine(rawValue) }

    public var description: String { rawValue }
}
