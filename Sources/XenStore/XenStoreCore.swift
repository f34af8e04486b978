import XenABI

/// Identifies one client of a `XenStoreServer` / `XenStoreCore`: a guest's
/// ring, a socket, or an in-process toolstack user.
public struct XenStoreConnectionID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Assigned by the server (or by whoever drives a bare `XenStoreCore`).
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "xs-conn\(rawValue)" }
}

/// A message for one connection, produced by `XenStoreCore.handle`.
public struct XenStoreDelivery: Hashable, Sendable {
    /// Who gets it.
    public var connection: XenStoreConnectionID
    /// A reply (or `XS_ERROR`) to that connection's request, or an `XS_WATCH_EVENT`.
    public var message: XenStoreMessage
    public init(connection: XenStoreConnectionID, message: XenStoreMessage) {
        self.connection = connection
        self.message = message
    }
}

/// One node of the store (xenstore.txt "Nodes"): a value, ordered children,
/// permissions, and the generation that changes whenever the node does
/// (DIRECTORY_PART reports it).
struct XenStoreNode: Sendable {
    var value: [UInt8]
    var children: [String]
    var perms: XenStorePermissions
    var generation: UInt64

    /// The size C xenstored accounts to the "node-size" quota: its record
    /// header (generation, counts), 8 bytes per permission, value, and the
    /// NUL-terminated child names.
    var recordSize: Int {
        XenStoreQuota.recordSize(valueBytes: value.count, permissions: perms.count) + children.reduce(0) { $0 + $1.utf8.count + 1 }
    }

    /// The NUL-separated child list as DIRECTORY sends it.
    var childBlob: [UInt8] { XenStoreWire.nulTerminated(children) }
}

/// The node tree plus how many nodes each domain owns (the "nodes" quota).
struct XenStoreTree: Sendable {
    var nodes: [String: XenStoreNode]
    var owned: [DomainID: Int]

    static let empty = XenStoreTree(nodes: [:], owned: [:])

    mutating func put(_ path: String, _ node: XenStoreNode?) {
        if let old = nodes[path] { owned[old.perms.owner, default: 0] -= 1 }
        if let node { owned[node.perms.owner, default: 0] += 1 }
        nodes[path] = node
    }
}

/// A watch event not yet delivered: the node, how watches match it (C
/// xenstored `MATCH_EXACT` / `MATCH_SUBTREE`), and the permissions that
/// decide who may see it (any one granting read is enough: the node's old
/// and new permissions, its parent's; C xenstored `watch_permitted`).
struct XenStoreEvent: Sendable {
    enum Match: Sendable { case exact, subtree }
    var path: XenStorePath
    var match: Match
    var visibleThrough: [XenStorePermissions]
}

/// The pure XenStore: node tree, transactions, watches, permissions, quotas
/// and domain bookkeeping, behind one entry point, `handle(_:from:)`, which
/// takes a request and returns the reply and any watch events, per
/// xenstore.txt and C xenstored. No I/O, no locks: `XenStoreServer` owns one
/// under its mutex; tests drive it directly.
///
/// Transactions (xenstore.txt TRANSACTION_START/END) are optimistic: each
/// works on a snapshot of the store taken when it starts and records every
/// node it reads or writes; TRANSACTION_END "T" fails with EAGAIN if any of
/// those nodes changed outside since the start, otherwise the written nodes
/// replace the committed ones at once. C xenstored also compares node
/// generations (tools/xenstored/transaction.c), but copies a node from the
/// live store at its first access and checks only nodes first *read*; this
/// core is stricter (snapshot isolation, written nodes checked too), which
/// can only turn a commit C would accept into EAGAIN — never lose a
/// concurrent update or a child entry. Watch events of a transaction are
/// held until it commits and discarded if it does not.
public struct XenStoreCore: Sendable {
    struct Watch: Sendable {
        var path: XenStorePath
        var token: String
    }

    struct Transaction: Sendable {
        var base: XenStoreTree
        var tree: XenStoreTree
        var accessed: Set<String> = []
        var changed: Set<String> = []
        var events: [XenStoreEvent] = []
    }

    struct Connection: Sendable {
        var domain: DomainID
        var privileged: Bool
        var watches: [Watch] = []
        var transactions: [UInt32: Transaction] = [:]
        var nextTransactionID: UInt32 = 1
    }

    /// What one operation touched (kept by a transaction) and the events it fired.
    struct Recorder {
        var accessed: Set<String> = []
        var changed: Set<String> = []
        var events: [XenStoreEvent] = []
    }

    /// The caller of one request.
    struct Caller {
        var id: XenStoreConnectionID
        var domain: DomainID
        var privileged: Bool
        var target: DomainID?
    }

    public let quota: XenStoreQuota
    var tree: XenStoreTree
    var connections: [XenStoreConnectionID: Connection] = [:]
    var introduced: Set<DomainID> = []
    var targets: [DomainID: DomainID] = [:]
    var specialPermissions: [String: XenStorePermissions]
    var generation: UInt64 = 1
    /// Text CONTROL "print" asked to log, oldest first; the owner drains it.
    public var log: [String] = []

    /// A store holding `/` (owned by dom0, no access for others; xenstored's
    /// initial tree) and the special nodes `@introduceDomain` and
    /// `@releaseDomain` (same permissions).
    public init(quota: XenStoreQuota = .default) {
        self.quota = quota
        let dom0 = XenStorePermissions(owner: .controlDomain)
        tree = .empty
        tree.put("/", XenStoreNode(value: [], children: [], perms: dom0, generation: 0))
        specialPermissions = [XenStorePath.introduceDomain.rawValue: dom0, XenStorePath.releaseDomain.rawValue: dom0]
    }

    // MARK: Connections

    /// Registers a client of `domain`. Privileged clients (dom0, the
    /// toolstack) bypass permissions and quotas and may use the
    /// privileged requests (xenstore.txt marks them "privileged").
    public mutating func connect(_ id: XenStoreConnectionID, domain: DomainID, privileged: Bool) {
        connections[id] = Connection(domain: domain, privileged: privileged)
    }

    /// The domain a client connected as.
    public func domain(of id: XenStoreConnectionID) -> DomainID? { connections[id]?.domain }

    /// Forgets a client with its watches and transactions.
    public mutating func disconnect(_ id: XenStoreConnectionID) { connections[id] = nil }

    /// Drops a client's watches and open transactions (RESET_WATCHES does
    /// the watches; a reconnecting ring, xenstore-ring.txt, does both).
    public mutating func reset(_ id: XenStoreConnectionID) {
        connections[id]?.watches = []
        connections[id]?.transactions = [:]
    }

    /// Whether `domain` has been introduced (and not released).
    public func isIntroduced(_ domain: DomainID) -> Bool { introduced.contains(domain) }

    /// Number of nodes in the store, the root included.
    public var nodeCount: Int { tree.nodes.count }

    /// Checks the tree's invariants; returns a description of each violation.
    public func invariantViolations() -> [String] {
        var problems: [String] = []
        var owned: [DomainID: Int] = [:]
        if tree.nodes["/"] == nil { problems.append("no root") }
        for (path, node) in tree.nodes {
            owned[node.perms.owner, default: 0] += 1
            if Set(node.children).count != node.children.count { problems.append("\(path): duplicate children") }
            guard let p = XenStorePath(rawValue: path) else { problems.append("\(path): invalid path"); continue }
            for c in node.children where tree.nodes[p.child(c).rawValue] == nil {
                problems.append("\(path): missing child \(c)")
            }
            if path != "/" {
                guard let parent = tree.nodes[p.parent.rawValue] else { problems.append("\(path): no parent"); continue }
                if !parent.children.contains(p.name) { problems.append("\(path): not listed by parent") }
            }
        }
        for (d, n) in tree.owned where n != (owned[d] ?? 0) { problems.append("\(d): owns \(owned[d] ?? 0), counted \(n)") }
        return problems
    }

    // MARK: Requests

    /// Handles one request from `id` and returns what to send, in order:
    /// the reply to `id` first (its ids echoed; `XS_ERROR` with the errno's
    /// name on failure), then any watch events, each to its watcher.
    /// Never traps on client input.
    public mutating func handle(_ request: XenStoreMessage, from id: XenStoreConnectionID) -> [XenStoreDelivery] {
        guard let conn = connections[id] else { return [] }
        let caller = Caller(id: id, domain: conn.domain, privileged: conn.privileged, target: targets[conn.domain])
        var out: [XenStoreDelivery] = []
        var reply: [UInt8]
        var fired: [XenStoreEvent] = []
        var extraEvents: [XenStoreDelivery] = []
        do throws(XenStoreError) {
            reply = try dispatch(request, caller: caller, fired: &fired, extra: &extraEvents)
            if reply.count > XenStoreLimits.payloadMax { throw .e2big }
        } catch {
            return [XenStoreDelivery(connection: id, message: XenStoreWire.errorReply(error, to: request))]
        }
        out.append(XenStoreDelivery(connection: id, message: XenStoreMessage(
            type: request.type, requestID: request.requestID, transactionID: request.transactionID, payload: reply)))
        out += extraEvents
        for e in fired { deliver(e, into: &out) }
        return out
    }

    /// The ENOSYS reply C xenstored gives a frame of an unknown type.
    public static func unknownTypeReply(requestID: UInt32, transactionID: UInt32) -> XenStoreMessage {
        XenStoreMessage(type: .error, requestID: requestID, transactionID: transactionID,
                        strings: [XenStoreError.enosys.wireName])
    }

    static let ok = XenStoreWire.nulTerminated(["OK"])

    private static let privilegedTypes: Set<XenStoreMessageType> = [
        .control, .introduce, .release, .isDomainIntroduced, .resume, .setTarget,
    ]

    private mutating func dispatch(_ m: XenStoreMessage, caller: Caller, fired: inout [XenStoreEvent],
                                   extra: inout [XenStoreDelivery]) throws(XenStoreError) -> [UInt8] {
        // C xenstored process_message: privileged check, then the transaction lookup
        // (WATCH and UNWATCH ignore tx_id).
        if Self.privilegedTypes.contains(m.type) && !caller.privileged { throw .eacces }
        var tx: UInt32 = 0
        if m.type != .watch && m.type != .unwatch && m.transactionID != 0 {
            guard connections[caller.id]?.transactions[m.transactionID] != nil else { throw .enoent }
            tx = m.transactionID
        }
        switch m.type {
        case .read, .directory, .directoryPart, .getPermissions, .write, .mkdir, .remove, .setPermissions:
            return try treeOperation(m, caller: caller, tx: tx, fired: &fired)
        case .watch:
            return try watch(m, caller: caller, extra: &extra)
        case .unwatch:
            let s = XenStoreWire.strings(m.payload)
            guard s.count == 2 else { throw .einval }
            let path = try parsePath(s[0], caller: caller, allowSpecial: true)
            guard let i = connections[caller.id]?.watches.firstIndex(where: { $0.path.rawValue == path.rawValue && $0.token == s[1] })
            else { throw .enoent }
            connections[caller.id]?.watches.remove(at: i)
            return Self.ok
        case .transactionStart:
            if tx != 0 { throw .ebusy }
            if !caller.privileged {
                let open = connections.values.filter { $0.domain == caller.domain }.reduce(0) { $0 + $1.transactions.count }
                if open >= quota.transactions { throw .enospc }
            }
            guard var conn = connections[caller.id] else { throw .eio }
            var newID = conn.nextTransactionID
            while newID == 0 || conn.transactions[newID] != nil { newID &+= 1 }
            conn.nextTransactionID = newID &+ 1
            conn.transactions[newID] = Transaction(base: tree, tree: tree)
            connections[caller.id] = conn
            return XenStoreWire.nulTerminated(["\(newID)"])
        case .transactionEnd:
            guard let arg = XenStoreWire.oneArgument(m.payload), arg == "T" || arg == "F" else { throw .einval }
            guard tx != 0, let t = connections[caller.id]?.transactions.removeValue(forKey: tx) else { throw .enoent }
            if arg == "T" { try commit(t, caller: caller, fired: &fired) }
            return Self.ok
        case .introduce:
            let s = XenStoreWire.strings(m.payload)
            guard s.count == 3 else { throw .einval }
            let d = try Self.parseDomain(s[0])
            // The ring's frame is ignored (C xenstored maps the grant instead);
            // the port must be positive.
            guard let port = Int(s[2]), port > 0 else { throw .einval }
            if introduce(d) && d.rawValue != 0 { fired.append(specialEvent(.introduceDomain)) }
            return Self.ok
        case .release:
            guard let arg = XenStoreWire.oneArgument(m.payload) else { throw .einval }
            let d = try Self.parseDomain(arg)
            if d.rawValue == 0 { throw .einval }  // C xenstored onearg_domain: not dom0 / the store domain
            guard release(d) else { throw .enoent }
            fired.append(specialEvent(.releaseDomain))
            return Self.ok
        case .isDomainIntroduced:
            guard let arg = XenStoreWire.oneArgument(m.payload) else { throw .einval }
            let d = try Self.parseDomain(arg)
            let known = introduced.contains(d) || d.rawValue == 0 || d == .`self`
            return XenStoreWire.nulTerminated([known ? "T" : "F"])
        case .getDomainPath:
            guard let arg = XenStoreWire.oneArgument(m.payload) else { throw .einval }
            return XenStoreWire.nulTerminated([XenStorePath.home(of: try Self.parseDomain(arg)).rawValue])
        case .resume:
            guard let arg = XenStoreWire.oneArgument(m.payload) else { throw .einval }
            let d = try Self.parseDomain(arg)
            if d.rawValue == 0 { throw .einval }
            guard introduced.contains(d) else { throw .enoent }
            return Self.ok
        case .setTarget:
            let s = XenStoreWire.strings(m.payload)
            guard s.count == 2 else { throw .einval }
            let d = try Self.parseDomain(s[0]), t = try Self.parseDomain(s[1])
            guard introduced.contains(d) || d.rawValue == 0, introduced.contains(t) || t.rawValue == 0 else { throw .enoent }
            targets[d] = t
            return Self.ok
        case .resetWatches:
            connections[caller.id]?.watches = []
            connections[caller.id]?.transactions = [:]
            return Self.ok
        case .control:
            return try control(XenStoreWire.strings(m.payload))
        case .watchEvent, .error:
            // Server-to-client types; C xenstored has no handler for them.
            throw .enosys
        }
    }

    /// CONTROL (xenstore.txt "CONTROL|<command>|..."): the harmless subset of
    /// C xenstored's commands. Others are EINVAL, as there.
    private mutating func control(_ args: [String]) throws(XenStoreError) -> [UInt8] {
        guard let command = args.first else { throw .einval }
        switch command {
        case "print":
            guard args.count >= 2 else { throw .einval }
            log.append(args[1])
            return Self.ok
        case "log":
            return Self.ok
        case "check":
            if !invariantViolations().isEmpty { throw .eio }
            return Self.ok
        case "help":
            return XenStoreWire.nulTerminated(["check\nhelp\nlog [on|off]\nprint <string>\n"])
        default:
            throw .einval
        }
    }

    static func parseDomain(_ s: String) throws(XenStoreError) -> DomainID {
        let u = Array(s.utf8)
        guard !u.isEmpty, u.count <= 5, u.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
              let v = UInt16(s) else { throw .einval }
        return DomainID(rawValue: v)
    }

    private func parsePath(_ s: String, caller: Caller, allowSpecial: Bool = false) throws(XenStoreError) -> XenStorePath {
        try XenStorePath(s, home: caller.domain, allowSpecial: allowSpecial,
                         pathQuota: caller.privileged ? nil : quota.pathLength)
    }

    // MARK: Domains

    /// Marks `domain` introduced; true if it was not already.
    mutating func introduce(_ domain: DomainID) -> Bool { introduced.insert(domain).inserted }

    /// Marks `domain` released; true if it was introduced. Its connections
    /// lose their watches, so removing its nodes next fires nothing at it
    /// (C xenstored do_release).
    mutating func release(_ domain: DomainID) -> Bool {
        guard introduced.remove(domain) != nil else { return false }
        targets[domain] = nil
        for (id, c) in connections where c.domain == domain && !c.privileged { connections[id]?.watches = [] }
        return true
    }

    func specialEvent(_ path: XenStorePath) -> XenStoreEvent {
        XenStoreEvent(path: path, match: .exact,
                      visibleThrough: specialPermissions[path.rawValue].map { [$0] } ?? [])
    }

    /// Introduces `domain` as the toolstack does (XS_INTRODUCE) and returns
    /// the `@introduceDomain` events to deliver.
    public mutating func introduceDomain(_ domain: DomainID) -> [XenStoreDelivery] {
        var out: [XenStoreDelivery] = []
        if introduce(domain) { deliver(specialEvent(.introduceDomain), into: &out) }
        return out
    }

    /// Releases `domain` (XS_RELEASE, or the domain died) and returns the
    /// `@releaseDomain` events to deliver. Nothing if it was not introduced.
    public mutating func releaseDomain(_ domain: DomainID) -> [XenStoreDelivery] {
        var out: [XenStoreDelivery] = []
        if release(domain) { deliver(specialEvent(.releaseDomain), into: &out) }
        return out
    }

    // MARK: Watches

    private mutating func watch(_ m: XenStoreMessage, caller: Caller,
                                extra: inout [XenStoreDelivery]) throws(XenStoreError) -> [UInt8] {
        // Two arguments; a third (watch depth) needs XENSTORE_SERVER_FEATURE_WATCHDEPTH, not offered.
        let s = XenStoreWire.strings(m.payload)
        guard s.count == 2 else { throw .einval }
        let path = try parsePath(s[0], caller: caller, allowSpecial: true)
        guard let conn = connections[caller.id] else { throw .eio }
        if conn.watches.contains(where: { $0.path.rawValue == path.rawValue && $0.token == s[1] }) { throw .eexist }
        if !caller.privileged {
            let held = connections.values.filter { $0.domain == caller.domain }.reduce(0) { $0 + $1.watches.count }
            if held >= quota.watches { throw .enospc }
        }
        connections[caller.id]?.watches.append(Watch(path: path, token: s[1]))
        // xenstore.txt WATCH: "an initial watch event is sent immediately", with the path as given.
        let event = XenStoreWire.watchEvent(path: reported(path, for: caller.domain), token: s[1])
        if event.payload.count <= XenStoreLimits.payloadMax {
            extra.append(XenStoreDelivery(connection: caller.id, message: event))
        }
        return Self.ok
    }

    private func reported(_ path: XenStorePath, for domain: DomainID) -> String {
        path.relative ? path.reported(relativeTo: domain) : path.rawValue
    }

    /// Sends `event` to every watch it matches on a connection allowed to
    /// see it (C xenstored `fire_watches`), in connection order.
    mutating func deliver(_ event: XenStoreEvent, into out: inout [XenStoreDelivery]) {
        for id in connections.keys.sorted() {
            guard let conn = connections[id], !conn.watches.isEmpty else { continue }
            let target = targets[conn.domain]
            guard conn.privileged || event.visibleThrough.contains(where: { $0.access(for: conn.domain, target: target).canRead })
            else { continue }
            for w in conn.watches {
                let hit: Bool
                switch event.match {
                case .exact: hit = w.path.rawValue == event.path.rawValue
                case .subtree: hit = event.path.isInside(w.path)
                }
                guard hit else { continue }
                let shown = w.path.relative ? event.path.reported(relativeTo: conn.domain) : event.path.rawValue
                let message = XenStoreWire.watchEvent(path: shown, token: w.token)
                // C xenstored send_event: "Don't try to send over-long events."
                guard message.payload.count <= XenStoreLimits.payloadMax else { continue }
                out.append(XenStoreDelivery(connection: id, message: message))
            }
        }
    }

    // MARK: Transactions

    private mutating func commit(_ t: Transaction, caller: Caller, fired: inout [XenStoreEvent]) throws(XenStoreError) {
        for p in t.accessed where t.base.nodes[p]?.generation != tree.nodes[p]?.generation { throw .eagain }
        var next = tree  // a copy: the committed tree stays untouched if the commit fails
        for p in t.changed.sorted() {
            if var n = t.tree.nodes[p] {
                n.generation = generation
                generation += 1
                next.put(p, n)
            } else {
                next.put(p, nil)
            }
        }
        // The domain may have run over its node quota inside the
        // transaction (C xenstored checks at commit too): nothing is applied.
        if !caller.privileged && (next.owned[caller.domain] ?? 0) > quota.nodes { throw .enospc }
        tree = next
        fired += t.events
    }

    // MARK: Tree operations

    private mutating func treeOperation(_ m: XenStoreMessage, caller: Caller, tx: UInt32,
                                        fired: inout [XenStoreEvent]) throws(XenStoreError) -> [UInt8] {
        var rec = Recorder()
        var result: [UInt8] = []
        if tx == 0 {
            var t = XenStoreTree.empty
            swap(&t, &tree)
            defer { swap(&t, &tree) }
            result = try operate(m, caller: caller, on: &t, rec: &rec)
            fired += rec.events
        } else {
            guard var txn = connections[caller.id]?.transactions.removeValue(forKey: tx) else { throw .enoent }
            // "transaction-nodes" quota, checked before each request (C checks per node accessed).
            if !caller.privileged && txn.accessed.count >= quota.transactionNodes {
                connections[caller.id]?.transactions[tx] = txn
                throw .enospc
            }
            defer { connections[caller.id]?.transactions[tx] = txn }
            do throws(XenStoreError) {
                result = try operate(m, caller: caller, on: &txn.tree, rec: &rec)
            } catch {
                txn.accessed.formUnion(rec.accessed)
                throw error
            }
            txn.accessed.formUnion(rec.accessed)
            txn.changed.formUnion(rec.changed)
            txn.events += rec.events
        }
        return result
    }

    private func access(_ caller: Caller, _ perms: XenStorePermissions) -> XenStoreAccess {
        caller.privileged ? .both : perms.access(for: caller.domain, target: caller.target)
    }

    private func isOwner(_ caller: Caller, _ perms: XenStorePermissions) -> Bool {
        caller.privileged || perms.owner == caller.domain || perms.owner == caller.target
    }

    /// The nearest existing ancestor of `path` (C xenstored `ask_parents`).
    private func nearestAncestor(_ path: XenStorePath, in t: XenStoreTree, rec: inout Recorder) -> (XenStorePath, XenStoreNode)? {
        var p = path
        while p.rawValue != "/" {
            p = p.parent
            rec.accessed.insert(p.rawValue)
            if let n = t.nodes[p.rawValue] { return (p, n) }
        }
        return nil
    }

    /// A node the caller needs `read`/`write` access to. A missing node is
    /// ENOENT only if the nearest ancestor grants that access, else EACCES
    /// (C xenstored `errno_from_parents`: errors must not reveal nodes).
    private func lookup(_ path: XenStorePath, in t: XenStoreTree, caller: Caller, write: Bool,
                        rec: inout Recorder) throws(XenStoreError) -> XenStoreNode {
        rec.accessed.insert(path.rawValue)
        if let n = t.nodes[path.rawValue] {
            let a = access(caller, n.perms)
            guard write ? a.canWrite : a.canRead else { throw .eacces }
            return n
        }
        throw missingError(path, in: t, caller: caller, write: write, rec: &rec)
    }

    private func missingError(_ path: XenStorePath, in t: XenStoreTree, caller: Caller, write: Bool,
                              rec: inout Recorder) -> XenStoreError {
        guard let (_, a) = nearestAncestor(path, in: t, rec: &rec) else { return .enoent }
        let acc = access(caller, a.perms)
        return (write ? acc.canWrite : acc.canRead) ? .enoent : .eacces
    }

    private mutating func nextGeneration() -> UInt64 {
        defer { generation += 1 }
        return generation
    }

    private func event(_ path: XenStorePath, _ match: XenStoreEvent.Match, _ perms: [XenStorePermissions?],
                       in t: XenStoreTree) -> XenStoreEvent {
        var visible = perms.compactMap { $0 }
        if path.rawValue != "/", let parent = t.nodes[path.parent.rawValue] { visible.append(parent.perms) }
        return XenStoreEvent(path: path, match: match, visibleThrough: visible)
    }

    private mutating func operate(_ m: XenStoreMessage, caller: Caller, on t: inout XenStoreTree,
                                  rec: inout Recorder) throws(XenStoreError) -> [UInt8] {
        switch m.type {
        case .read:
            guard let arg = XenStoreWire.oneArgument(m.payload) else { throw .einval }
            return try lookup(parsePath(arg, caller: caller), in: t, caller: caller, write: false, rec: &rec).value
        case .directory:
            guard let arg = XenStoreWire.oneArgument(m.payload) else { throw .einval }
            return try lookup(parsePath(arg, caller: caller), in: t, caller: caller, write: false, rec: &rec).childBlob
        case .directoryPart:
            return try directoryPart(m.payload, caller: caller, in: t, rec: &rec)
        case .getPermissions:
            guard let arg = XenStoreWire.oneArgument(m.payload) else { throw .einval }
            let path = try parsePath(arg, caller: caller, allowSpecial: true)
            if path.isSpecial {
                guard let perms = specialPermissions[path.rawValue] else { throw .enoent }
                guard access(caller, perms).canRead else { throw .eacces }
                return XenStoreWire.nulTerminated(perms.strings)
            }
            return XenStoreWire.nulTerminated(try lookup(path, in: t, caller: caller, write: false, rec: &rec).perms.strings)
        case .write:
            // path NUL value: the value is every byte after the first NUL (it may hold NULs).
            guard let nul = m.payload.firstIndex(of: 0) else { throw .einval }
            let path = try parsePath(String(decoding: m.payload[..<nul], as: UTF8.self), caller: caller)
            try write(path, Array(m.payload[(nul + 1)...]), caller: caller, on: &t, rec: &rec)
            return Self.ok
        case .mkdir:
            guard let arg = XenStoreWire.oneArgument(m.payload) else { throw .einval }
            let path = try parsePath(arg, caller: caller)
            if t.nodes[path.rawValue] != nil {
                _ = try lookup(path, in: t, caller: caller, write: true, rec: &rec)
            } else {
                try write(path, [], caller: caller, on: &t, rec: &rec)
            }
            return Self.ok
        case .remove:
            guard let arg = XenStoreWire.oneArgument(m.payload) else { throw .einval }
            try remove(parsePath(arg, caller: caller), caller: caller, on: &t, rec: &rec)
            return Self.ok
        case .setPermissions:
            try setPermissions(m.payload, caller: caller, on: &t, rec: &rec)
            return Self.ok
        default:
            throw .enosys
        }
    }

    /// DIRECTORY_PART (xenstore.txt): `path`, byte offset into the child
    /// list → the node's generation, NUL, as many whole child names as fit
    /// from the offset, and one more NUL once the list is complete.
    private func directoryPart(_ payload: [UInt8], caller: Caller, in t: XenStoreTree,
                               rec: inout Recorder) throws(XenStoreError) -> [UInt8] {
        let s = XenStoreWire.strings(payload)
        guard s.count == 2, payload.last == 0 else { throw .einval }
        let node = try lookup(parsePath(s[0], caller: caller), in: t, caller: caller, write: false, rec: &rec)
        // C uses atoi: leading digits, anything else 0.
        let digits = s[1].utf8.prefix { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        let offset = digits.isEmpty ? 0 : (Int(String(decoding: digits.prefix(12), as: UTF8.self)) ?? Int.max)
        let gen = Array("\(node.generation)".utf8) + [0]
        let blob = node.childBlob
        guard offset < blob.count else { return gen + [0] }
        let maxLength = XenStoreLimits.payloadMax - gen.count - 1
        var end = offset
        while end < blob.count {
            guard let nul = blob[end...].firstIndex(of: 0) else { break }
            if nul + 1 - offset > maxLength { break }
            end = nul + 1
        }
        var out = gen + blob[offset..<end]
        if end == blob.count { out.append(0) }
        return out
    }

    /// WRITE / MKDIR: sets `path`'s value, creating it and any missing
    /// parents (xenstore.txt WRITE: "intermediate nodes are created").
    /// New nodes copy their parent's permissions; one created by an
    /// unprivileged domain is owned by it (C xenstored `construct_node`).
    private mutating func write(_ path: XenStorePath, _ value: [UInt8], caller: Caller,
                                on t: inout XenStoreTree, rec: inout Recorder) throws(XenStoreError) {
        rec.accessed.insert(path.rawValue)
        if var node = t.nodes[path.rawValue] {
            let old = node.perms
            guard access(caller, node.perms).canWrite else { throw .eacces }
            node.value = value
            if !caller.privileged && node.recordSize > quota.nodeSize { throw .enospc }
            node.generation = nextGeneration()
            t.put(path.rawValue, node)
            rec.changed.insert(path.rawValue)
            rec.events.append(event(path, .subtree, [old], in: t))
            return
        }
        guard let (ancestorPath, ancestor) = nearestAncestor(path, in: t, rec: &rec) else { throw .enoent }
        guard access(caller, ancestor.perms).canWrite else { throw .eacces }
        // The chain of nodes to create, top-down.
        var chain: [XenStorePath] = []
        var p = path
        while p.rawValue != ancestorPath.rawValue {
            chain.append(p)
            p = p.parent
        }
        chain.reverse()
        if !caller.privileged && (t.owned[caller.domain] ?? 0) + chain.count > quota.nodes { throw .enospc }
        var parent = ancestor
        parent.children.append(chain[0].name)
        if !caller.privileged && parent.recordSize > quota.nodeSize { throw .enospc }
        var created: [(XenStorePath, XenStoreNode)] = []
        var perms = ancestor.perms
        if !caller.privileged { perms.owner = caller.domain }
        for (i, c) in chain.enumerated() {
            let children = i + 1 < chain.count ? [chain[i + 1].name] : []
            let n = XenStoreNode(value: c == path ? value : [], children: children, perms: perms, generation: 0)
            if !caller.privileged && n.recordSize > quota.nodeSize { throw .enospc }
            created.append((c, n))
        }
        parent.generation = nextGeneration()
        t.put(ancestorPath.rawValue, parent)
        rec.changed.insert(ancestorPath.rawValue)
        for (c, var n) in created {
            n.generation = nextGeneration()
            t.put(c.rawValue, n)
            rec.accessed.insert(c.rawValue)
            rec.changed.insert(c.rawValue)
        }
        rec.events.append(event(path, .subtree, [perms], in: t))
    }

    /// RM (xenstore.txt): removes `path` and everything below it. A missing
    /// node whose parent exists is success; `/` is EINVAL.
    private mutating func remove(_ path: XenStorePath, caller: Caller, on t: inout XenStoreTree,
                                 rec: inout Recorder) throws(XenStoreError) {
        rec.accessed.insert(path.rawValue)
        if t.nodes[path.rawValue] == nil {
            let error = missingError(path, in: t, caller: caller, write: true, rec: &rec)
            guard error == .enoent else { throw error }
            rec.accessed.insert(path.parent.rawValue)
            if t.nodes[path.parent.rawValue] != nil { return }
            throw .enoent
        }
        _ = try lookup(path, in: t, caller: caller, write: true, rec: &rec)
        if path.rawValue == "/" { throw .einval }
        // Post-order, as C xenstored's walk: children's events (exact) before the node's (subtree).
        var order: [XenStorePath] = []
        var stack: [(XenStorePath, Bool)] = [(path, false)]
        while let (p, expanded) = stack.popLast() {
            if expanded { order.append(p); continue }
            stack.append((p, true))
            for c in (t.nodes[p.rawValue]?.children ?? []).reversed() { stack.append((p.child(c), false)) }
        }
        for p in order {
            let n = t.nodes[p.rawValue]
            rec.events.append(event(p, p == path ? .subtree : .exact, [n?.perms], in: t))
            t.put(p.rawValue, nil)
            rec.accessed.insert(p.rawValue)
            rec.changed.insert(p.rawValue)
        }
        let parentPath = path.parent
        if var parent = t.nodes[parentPath.rawValue] {
            parent.children.removeAll { $0 == path.name }
            parent.generation = nextGeneration()
            t.put(parentPath.rawValue, parent)
            rec.accessed.insert(parentPath.rawValue)
            rec.changed.insert(parentPath.rawValue)
        }
    }

    /// SET_PERMS (xenstore.txt): only the owner (or a privileged client) may,
    /// and an unprivileged owner may not give the node away (EPERM).
    private mutating func setPermissions(_ payload: [UInt8], caller: Caller, on t: inout XenStoreTree,
                                         rec: inout Recorder) throws(XenStoreError) {
        let s = XenStoreWire.strings(payload)
        guard s.count >= 2 else { throw .einval }
        if !caller.privileged && s.count - 1 > quota.permissions { throw .enospc }
        let perms = try XenStorePermissions(strings: Array(s.dropFirst()))
        let path = try parsePath(s[0], caller: caller, allowSpecial: true)
        if path.isSpecial {
            guard let old = specialPermissions[path.rawValue] else { throw .enoent }
            guard isOwner(caller, old) else { throw .eacces }
            if !caller.privileged && perms.owner != old.owner { throw .eperm }
            specialPermissions[path.rawValue] = perms
            return
        }
        var node = try lookup(path, in: t, caller: caller, write: true, rec: &rec)
        guard isOwner(caller, node.perms) else { throw .eacces }
        if !caller.privileged && perms.owner != node.perms.owner { throw .eperm }
        let old = node.perms
        node.perms = perms
        if !caller.privileged && node.recordSize > quota.nodeSize { throw .enospc }
        node.generation = nextGeneration()
        t.put(path.rawValue, node)
        rec.changed.insert(path.rawValue)
        rec.events.append(event(path, .subtree, [old, perms], in: t))
    }
}
