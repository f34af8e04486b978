import XenABI

/// What a domain may do with a node (xenstore.txt "Permissions"): the
/// letter of a permission string.
public enum XenStoreAccess: Hashable, Sendable, CaseIterable {
    /// `n`: nothing.
    case none
    /// `r`: read (READ, DIRECTORY, GET_PERMS, watch events).
    case read
    /// `w`: write (WRITE, MKDIR, RM, and creating children).
    case write
    /// `b`: both.
    case both

    /// The permission letter.
    public var letter: Character {
        switch self {
        case .none: "n"
        case .read: "r"
        case .write: "w"
        case .both: "b"
        }
    }

    init?(letter: UInt8) {
        switch letter {
        case UInt8(ascii: "n"): self = .none
        case UInt8(ascii: "r"): self = .read
        case UInt8(ascii: "w"): self = .write
        case UInt8(ascii: "b"): self = .both
        default: return nil
        }
    }

    /// `r` or `b`.
    public var canRead: Bool { self == .read || self == .both }
    /// `w` or `b`.
    public var canWrite: Bool { self == .write || self == .both }
}

/// A node's permissions (xenstore.txt "Permissions"; C xenstored
/// `perm_for_conn`): the first entry names the owner and the access every
/// domain not listed gets; later entries grant a listed domain its access.
/// The owner has full rights whatever its letter says, and privileged
/// clients (dom0, the toolstack) bypass the check.
///
/// Text form, one string per entry: `n0`, `r1`, `w2`, `b3` (letter, domid).
public struct XenStorePermissions: Hashable, Sendable, CustomStringConvertible {
    /// The first entry's domain: full rights, and the only one (with
    /// privileged clients) that may change the permissions.
    public var owner: DomainID
    /// Access of domains not listed in `entries` (the first entry's letter).
    public var defaultAccess: XenStoreAccess
    /// Per-domain access; the first entry that names a domain counts.
    public var entries: [(domain: DomainID, access: XenStoreAccess)]

    /// Permissions owned by `owner`, `defaultAccess` for unlisted domains.
    public init(owner: DomainID, defaultAccess: XenStoreAccess = .none,
                entries: [(domain: DomainID, access: XenStoreAccess)] = []) {
        self.owner = owner
        self.defaultAccess = defaultAccess
        self.entries = entries
    }

    /// Parses the permission strings of a SET_PERMS request (at least one).
    /// A bad letter or domain ID is EINVAL, as `xenstore_strings_to_perms`.
    public init(strings: [String]) throws(XenStoreError) {
        var parsed: [(DomainID, XenStoreAccess)] = []
        for s in strings {
            let u = Array(s.utf8)
            guard let l = u.first, let access = XenStoreAccess(letter: l), u.count >= 2, u.count <= 6,
                  u.dropFirst().allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
                  let id = UInt16(String(decoding: u.dropFirst(), as: UTF8.self)) else { throw .einval }
            parsed.append((DomainID(rawValue: id), access))
        }
        guard let first = parsed.first else { throw .einval }
        self.init(owner: first.0, defaultAccess: first.1, entries: parsed.dropFirst().map { ($0.0, $0.1) })
    }

    /// The permission strings (GET_PERMS reply), owner first.
    public var strings: [String] {
        ["\(defaultAccess.letter)\(owner.rawValue)"] + entries.map { "\($0.access.letter)\($0.domain.rawValue)" }
    }

    /// Number of entries including the owner's.
    public var count: Int { entries.count + 1 }

    /// What `domain` may do (an unprivileged client; `target` is the domain
    /// it acts for after SET_TARGET, whose rights it shares).
    public func access(for domain: DomainID, target: DomainID? = nil) -> XenStoreAccess {
        if owner == domain || owner == target { return .both }
        for e in entries where e.domain == domain || e.domain == target { return e.access }
        return defaultAccess
    }

    public static func == (a: Self, b: Self) -> Bool { a.strings == b.strings }
    public func hash(into h: inout Hasher) { h.combine(strings) }
    public var description: String { strings.joined(separator: ",") }
}

/// Per-domain limits for unprivileged clients, with C xenstored's defaults
/// (tools/xenstored/domain.c `quotas[]`, Xen 4.17+). Exceeding one is ENOSPC
/// (paths: EINVAL), as there. Privileged clients are not limited.
public struct XenStoreQuota: Hashable, Sendable {
    /// Nodes a domain may own ("nodes", 1000).
    public var nodes: Int
    /// Watches a domain may hold ("watches", 128).
    public var watches: Int
    /// Open transactions per domain ("transactions", 10).
    public var transactions: Int
    /// Nodes one transaction may touch ("transaction-nodes", 1024).
    public var transactionNodes: Int
    /// Size of one node record written by the domain: header, permissions,
    /// value and child names (C xenstored's "node-size", whose default is 2048).
    public var nodeSize: Int
    /// Entries in a node's permission list ("node-permissions", 5).
    public var permissions: Int
    /// Path length below `/local/domain/<id>/` ("path-max", XENSTORE_REL_PATH_MAX).
    public var pathLength: Int
    /// Bytes of replies and watch events handed to a connection's `output`
    /// and not yet acknowledged by its transport. Stands in for C
    /// xenstored's "outstanding" requests (20) and per-domain "memory"
    /// (2.5 MB) quotas: past it, requests wait unread in the transport and
    /// watch events for the connection are dropped (C xenstored also drops
    /// an event it cannot account to the domain's memory quota).
    public var pendingOutputBytes: Int

    public init(nodes: Int, watches: Int, transactions: Int, transactionNodes: Int, nodeSize: Int, permissions: Int,
                pathLength: Int, pendingOutputBytes: Int) {
        self.nodes = nodes
        self.watches = watches
        self.transactions = transactions
        self.transactionNodes = transactionNodes
        self.nodeSize = nodeSize
        self.permissions = permissions
        self.pathLength = pathLength
        self.pendingOutputBytes = pendingOutputBytes
    }

    /// The largest record `nodeSize` must admit for a guest to store a value of
    /// a full `XENSTORE_PAYLOAD_MAX` (4096) bytes: the record header, a full
    /// permission list (`permissions` entries of 8 bytes) and the value.
    /// C xenstored's default "node-size" of 2048 counts value, permissions and
    /// child names together, so there a guest cannot write a value larger than
    /// about 2000 bytes (ENOSPC); pvh's guests need values up to 4096 bytes
    /// (issue 4: XS_WRITE with a value longer than the 1024-byte ring), so the
    /// default allows the whole payload. Child names are bounded the same way
    /// in practice: a DIRECTORY reply cannot exceed the payload either.
    public static func recordSize(valueBytes: Int, permissions: Int) -> Int { 20 + 8 * permissions + valueBytes }

    /// C xenstored's defaults, except `nodeSize` (see `recordSize(valueBytes:permissions:)`):
    /// a record with a `XENSTORE_PAYLOAD_MAX` value and a full permission list.
    public static let `default` = XenStoreQuota(
        nodes: 1000, watches: 128, transactions: 10, transactionNodes: 1024,
        nodeSize: recordSize(valueBytes: XenStoreLimits.payloadMax, permissions: 5), permissions: 5,
        pathLength: XenStoreLimits.relativePathMax, pendingOutputBytes: 20 * (XenStoreLimits.headerSize + XenStoreLimits.payloadMax))
}
