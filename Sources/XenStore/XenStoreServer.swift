import GuestMemory
import Locking
import XenABI

/// What `XenStoreServer.receive` tells its transport.
public enum XenStoreReceiveResult: Hashable, Sendable {
    /// Every complete request was handled; replies went to `output`.
    case ok
    /// The peer broke the framing (a header with `len > XENSTORE_PAYLOAD_MAX`,
    /// xs_wire.h: "Violating this is very bad"): close the connection.
    case close(String)
}

/// A toolstack-side watch made with `XenStoreServer.watch`.
public struct XenStoreWatchID: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
}

/// The XenStore daemon of the VMM (what xenstored is to Xen): one
/// `XenStoreCore` and its connections behind one mutex.
///
/// Wire clients (a guest's ring, see `XenStoreRingConnection`) `connect`, feed
/// bytes with `receive`, and get replies and watch events through their
/// `output` closure, in order. The VMM's own code (the toolstack, device
/// backends) uses the typed calls (`write`, `read`, `watch`, ...), which act
/// as a privileged dom0 client.
///
/// Locking and callbacks. `output` closures run with the server lock held:
/// they must only enqueue (taking at most a lock of their own that is never
/// held while calling into the server). Everything else the server calls —
/// toolstack watch handlers, transports' `wake` closures, the log — runs
/// after the lock is released, from one ordered queue: whichever thread
/// finds the queue idle delivers everything queued, in order, so handlers
/// never run concurrently with each other and may call back into the
/// server (what they cause is queued behind them). A call may therefore
/// return before the handlers its changes triggered have run, when another
/// thread is delivering.
///
/// Bounded memory. A partial request is at most one frame. A connection made
/// with `flowControl: true` reports what its transport has sent with
/// `outputSent(_:for:)`; while `XenStoreQuota.pendingOutputBytes` or more
/// are outstanding `acceptsInput(_:)` is false (the transport leaves requests
/// unread) and watch events for it are dropped, replies never. The backlog
/// thus stays below the quota plus one event plus the replies to one
/// `receive` call (a ring passes at most its 1024 bytes of requests). This plays
/// the part of C xenstored's per-domain "outstanding" and "memory" quotas.
public final class XenStoreServer: XenStoreService {
    private enum Callback: Sendable {
        case watch(@Sendable (String, String) -> Void, String, String)
        case wake(@Sendable () -> Void)
        case log(String)
    }

    private struct Peer: Sendable {
        var framer = XenStoreFramer()
        var output: (@Sendable ([UInt8]) -> Void)?
        var wake: (@Sendable () -> Void)?
        var handler: (@Sendable (String, String) -> Void)?
        /// Bytes handed to `output` not yet reported sent; nil: not tracked.
        var pending: Int?
    }

    private struct State: Sendable {
        var core: XenStoreCore
        var peers: [XenStoreConnectionID: Peer] = [:]
        var nextID: UInt64 = 1
        var callbacks: [Callback] = []
        var draining = false
        var droppedEvents = 0
        /// Wire clients' requests by their domain (`requestCounts`).
        var requests: [DomainID: XenStoreRequestCounts] = [:]
    }

    private let state: Lock<State>
    private let toolstack: XenStoreConnectionID
    private let logSink: @Sendable (String) -> Void

    /// A server with an empty store (just `/`).
    public convenience init(quota: XenStoreQuota = .default) {
        self.init(quota: quota, log: { _ in })
    }

    /// A server whose CONTROL "print" text goes to `log`.
    public init(quota: XenStoreQuota = .default, log: @escaping @Sendable (String) -> Void) {
        var s = State(core: XenStoreCore(quota: quota))
        toolstack = XenStoreConnectionID(rawValue: 0)
        s.core.connect(toolstack, domain: .controlDomain, privileged: true)
        state = Lock(s)
        logSink = log
    }

    // MARK: Wire clients

    /// Connects a wire client of `domain`. `output` receives every byte to
    /// send to this peer (replies and watch events) in order; it must only
    /// enqueue, it is called with the server lock held.
    public func connect(domain: DomainID, privileged: Bool,
                        output: @escaping @Sendable ([UInt8]) -> Void) -> XenStoreConnectionID {
        add(Peer(output: output), domain: domain, privileged: privileged)
    }

    /// Connects a flow-controlled wire client: as above, plus `wake`, called
    /// without the server lock (from the ordered callback queue) after output
    /// was queued for this peer by someone else's request (a watch event),
    /// so the transport can push it (a guest's ring only schedules its pump
    /// on its own device thread). The transport reports what it sent with
    /// `outputSent(_:for:)` and stops reading while `acceptsInput` is false.
    public func connect(domain: DomainID, privileged: Bool, output: @escaping @Sendable ([UInt8]) -> Void,
                        wake: @escaping @Sendable () -> Void) -> XenStoreConnectionID {
        add(Peer(output: output, wake: wake, pending: 0), domain: domain, privileged: privileged)
    }

    private func add(_ peer: Peer, domain: DomainID, privileged: Bool) -> XenStoreConnectionID {
        state.withLock { s in
            let id = XenStoreConnectionID(rawValue: s.nextID)
            s.nextID += 1
            s.peers[id] = peer
            s.core.connect(id, domain: domain, privileged: privileged)
            return id
        }
    }

    /// Feeds bytes from the peer and handles every complete request. Returns
    /// `.close` if the peer violated the framing (the caller closes).
    public func receive(_ bytes: [UInt8], from id: XenStoreConnectionID) -> XenStoreReceiveResult {
        let result: XenStoreReceiveResult = state.withLock { s in
            guard var peer = s.peers[id] else { return .close("unknown connection \(id)") }
            let frames: [XenStoreFrame]
            do {
                frames = try peer.framer.feed(bytes)
            } catch {
                s.peers[id] = peer
                return .close("\(error)")
            }
            s.peers[id] = peer
            for frame in frames {
                switch frame {
                case .message(let m):
                    let out = s.core.handle(m, from: id)
                    // The reply is the first delivery to the requester (XenStoreCore.handle).
                    Self.countRequest(.known(m.type), reply: out.first { $0.connection == id }?.message,
                                      from: id, in: &s)
                    Self.route(out, in: &s, requester: id)
                case .unknownType(_, let requestID, let transactionID):
                    let reply = XenStoreCore.unknownTypeReply(requestID: requestID, transactionID: transactionID)
                    Self.countRequest(.unknown, reply: reply, from: id, in: &s)
                    Self.route([XenStoreDelivery(connection: id, message: reply)], in: &s, requester: id)
                }
            }
            Self.collectLog(&s)
            return .ok
        }
        runCallbacks()
        return result
    }

    private static func countRequest(_ type: XenStoreRequestType, reply: XenStoreMessage?, from id: XenStoreConnectionID, in s: inout State) {
        guard let domain = s.core.domain(of: id) else { return }
        s.requests[domain, default: XenStoreRequestCounts()].count(type, reply: reply)
    }

    /// Every domain's wire requests so far, by the domain its connections
    /// were made as (the metrics' per-domain XenStore counts).
    public func requestCounts() -> [DomainID: XenStoreRequestCounts] { state.withLock { $0.requests } }

    /// Forgets `domain`'s counts: the toolstack calls it when the domain
    /// goes, so that an id given to a later domain starts from zero.
    public func forgetRequestCounts(of domain: DomainID) { state.withLock { _ = $0.requests.removeValue(forKey: domain) } }

    /// Disconnects a client: drops its watches and transactions.
    public func disconnect(_ id: XenStoreConnectionID) {
        state.withLock { s in
            s.peers[id] = nil
            s.core.disconnect(id)
        }
    }

    /// Resets a client as a reconnecting ring does (xenstore-ring.txt
    /// "Connection reset"): watches, transactions, partial input and the
    /// output accounting are dropped.
    public func reset(_ id: XenStoreConnectionID) {
        state.withLock { s in
            s.core.reset(id)
            s.peers[id]?.framer.reset()
            if s.peers[id]?.pending != nil { s.peers[id]?.pending = 0 }
        }
    }

    /// False while a flow-controlled client has more than the quota of
    /// output outstanding: leave its requests unread.
    public func acceptsInput(_ id: XenStoreConnectionID) -> Bool {
        state.withLock { s in
            guard let pending = s.peers[id]?.pending else { return true }
            return pending < s.core.quota.pendingOutputBytes
        }
    }

    /// A flow-controlled client's transport sent `count` bytes of its output.
    public func outputSent(_ count: Int, for id: XenStoreConnectionID) {
        state.withLock { s in
            if let p = s.peers[id]?.pending { s.peers[id]?.pending = max(0, p - count) }
        }
    }

    /// Watch events dropped so far because a client's output was over quota.
    public var droppedEventCount: Int { state.withLock { $0.droppedEvents } }

    /// Calls `body` with the core, under the lock (tests, invariant checks).
    public func withCore<R>(_ body: (inout XenStoreCore) -> R) -> R where R: Sendable {
        state.withLock { body(&$0.core) }
    }

    // MARK: Routing

    private static func route(_ deliveries: [XenStoreDelivery], in s: inout State, requester: XenStoreConnectionID?) {
        for d in deliveries {
            guard var peer = s.peers[d.connection] else { continue }
            if let handler = peer.handler {
                let strings = XenStoreWire.strings(d.message.payload)
                if d.message.type == .watchEvent, strings.count >= 2 {
                    s.callbacks.append(.watch(handler, strings[0], strings[1]))
                }
                continue
            }
            guard let output = peer.output else { continue }
            let bytes = d.message.bytes
            if let pending = peer.pending {
                if d.message.type == .watchEvent && pending >= s.core.quota.pendingOutputBytes {
                    s.droppedEvents += 1
                    continue
                }
                peer.pending = pending + bytes.count
                s.peers[d.connection] = peer
            }
            output(bytes)
            if d.connection != requester, let wake = peer.wake { s.callbacks.append(.wake(wake)) }
        }
    }

    private static func collectLog(_ s: inout State) {
        guard !s.core.log.isEmpty else { return }
        for line in s.core.log { s.callbacks.append(.log(line)) }
        s.core.log = []
    }

    /// Delivers queued callbacks in order, outside the lock; one thread at a time.
    private func runCallbacks() {
        let start = state.withLock { s in
            guard !s.draining, !s.callbacks.isEmpty else { return false }
            s.draining = true
            return true
        }
        guard start else { return }
        while true {
            let batch: [Callback] = state.withLock { s in
                let b = s.callbacks
                s.callbacks = []
                if b.isEmpty { s.draining = false }
                return b
            }
            if batch.isEmpty { return }
            for c in batch {
                switch c {
                case .watch(let handler, let path, let token): handler(path, token)
                case .wake(let wake): wake()
                case .log(let line): logSink(line)
                }
            }
        }
    }

    // MARK: In-process toolstack access (acting as dom0, each call atomic)

    private func perform(_ type: XenStoreMessageType, _ payload: [UInt8],
                         as id: XenStoreConnectionID? = nil) -> Result<[UInt8], XenStoreError> {
        let caller = id ?? toolstack
        let result: Result<[UInt8], XenStoreError> = state.withLock { s in
            let out = s.core.handle(XenStoreMessage(type: type, payload: payload), from: caller)
            var reply: XenStoreMessage?
            var rest: [XenStoreDelivery] = []
            for d in out {
                if reply == nil && d.connection == caller { reply = d.message } else { rest.append(d) }
            }
            Self.route(rest, in: &s, requester: nil)
            Self.collectLog(&s)
            guard let reply else { return .failure(.eio) }
            if reply.type == .error {
                let name = XenStoreWire.strings(reply.payload).first ?? ""
                return .failure(XenStoreError(wireName: name) ?? .eio)
            }
            return .success(reply.payload)
        }
        runCallbacks()
        return result
    }

    /// `XenStoreService`: one request as the toolstack (dom0, privileged),
    /// handled at once under the lock; its watch handlers run after it.
    public func call(_ type: XenStoreMessageType, _ payload: [UInt8]) throws(XenStoreError) -> [UInt8] {
        try perform(type, payload).get()
    }

    /// Several requests as the toolstack in one transaction, as libxl
    /// writes a new device's two directories (xs_transaction_start, the
    /// writes, xs_transaction_end): all of them or none. The lock is held
    /// from the start to the commit, so no other client's request comes
    /// between them and the commit cannot conflict (no EAGAIN loop); the
    /// watches fire once, at the commit. The first failing request aborts
    /// the transaction and is thrown.
    public func transaction(_ requests: [(XenStoreMessageType, [UInt8])]) throws(XenStoreError) {
        let caller = toolstack
        let result: Result<Void, XenStoreError> = state.withLock { s in
            func handle(_ m: XenStoreMessage) -> Result<[UInt8], XenStoreError> {
                var reply: XenStoreMessage?
                var rest: [XenStoreDelivery] = []
                for d in s.core.handle(m, from: caller) {
                    if reply == nil && d.connection == caller { reply = d.message } else { rest.append(d) }
                }
                Self.route(rest, in: &s, requester: nil)
                guard let reply else { return .failure(.eio) }
                guard reply.type != .error else {
                    return .failure(XenStoreError(wireName: XenStoreWire.strings(reply.payload).first ?? "") ?? .eio)
                }
                return .success(reply.payload)
            }
            defer { Self.collectLog(&s) }
            let started = handle(XenStoreMessage(type: .transactionStart, payload: [0]))
            guard case .success(let id) = started,
                  let tx = UInt32(XenStoreWire.strings(id).first ?? "") else {
                if case .failure(let e) = started { return .failure(e) }
                return .failure(.eio)
            }
            for (type, payload) in requests {
                if case .failure(let e) = handle(XenStoreMessage(type: type, transactionID: tx, payload: payload)) {
                    _ = handle(XenStoreMessage(type: .transactionEnd, transactionID: tx, payload: XenStoreWire.nulTerminated(["F"])))
                    return .failure(e)
                }
            }
            return handle(XenStoreMessage(type: .transactionEnd, transactionID: tx, payload: XenStoreWire.nulTerminated(["T"])))
                .map { _ in () }
        }
        runCallbacks()
        try result.get()
    }

    /// Introduces `domain` and fires `@introduceDomain` (XS_INTRODUCE).
    public func introduceDomain(_ domain: DomainID) {
        state.withLock { s in Self.route(s.core.introduceDomain(domain), in: &s, requester: nil) }
        runCallbacks()
    }

    /// Releases `domain` and fires `@releaseDomain` (XS_RELEASE).
    public func releaseDomain(_ domain: DomainID) {
        state.withLock { s in Self.route(s.core.releaseDomain(domain), in: &s, requester: nil) }
        runCallbacks()
    }

    /// `XenStoreService`: the ring and port are not needed in-process (C
    /// xenstored would map the ring; the guest's ring is served by
    /// `XenStoreRingConnection`).
    public func introduceDomain(_ domain: DomainID, ring: GuestFrameNumber, port: EventChannelPort) {
        introduceDomain(domain)
    }

    /// Whether `domain` is introduced (XS_IS_DOMAIN_INTRODUCED).
    public func isIntroduced(_ domain: DomainID) -> Bool { state.withLock { $0.core.isIntroduced(domain) } }

    /// A toolstack-side watch (XS_WATCH as dom0) on `path` (absolute, or
    /// `@introduceDomain` / `@releaseDomain`). `handler(path, token)` runs
    /// outside the server lock, from the ordered callback queue (see the type's
    /// documentation), first for the initial event xenstore.txt promises.
    public func watch(_ path: String, token: String,
                      handler: @escaping @Sendable (String, String) -> Void) throws(XenStoreError) -> XenStoreWatchID {
        let id = add(Peer(handler: handler), domain: .controlDomain, privileged: true)
        switch perform(.watch, XenStoreWire.nulTerminated([path, token]), as: id) {
        case .success: return XenStoreWatchID(rawValue: id.rawValue)
        case .failure(let e):
            disconnect(id)
            throw e
        }
    }

    /// Removes a toolstack-side watch; its handler is not called again
    /// (events already queued for it may still be delivered).
    public func unwatch(_ id: XenStoreWatchID) { disconnect(XenStoreConnectionID(rawValue: id.rawValue)) }
}
