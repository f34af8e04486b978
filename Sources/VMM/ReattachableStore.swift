import GuestMemory
import Locking
import XenABI
import XenStore

/// The host daemon's store for a guest process that outlives its daemon
/// (docs/ARCHITECTURE.md: a daemon restart): the privileged connection its
/// toolstack code and backends use, which a new daemon replaces
/// (`reattach`). While the store is away every call fails with EIO, as
/// libxenstore reports a daemon that went; the watches are kept and
/// registered again on the new connection (each fires its initial event, so
/// a backend reads its nodes again), and the domain, if this process had
/// introduced it, is introduced again (the new store's `isIntroduced`).
public final class ReattachableXenStore: XenStoreService {
    private struct Watch: Sendable {
        let path: String
        let token: String
        let handler: @Sendable (String, String) -> Void
        /// Its id on the current connection.
        var inner: XenStoreWatchID?
    }

    private struct State: Sendable {
        var remote: XenStoreRemote
        var watches: [UInt64: Watch] = [:]
        var nextWatch: UInt64 = 1
        var introduced: (domain: DomainID, ring: GuestFrameNumber, port: EventChannelPort)?
    }

    private let state: Lock<State>

    public init(_ remote: XenStoreRemote) {
        state = Lock(State(remote: remote))
    }

    private var remote: XenStoreRemote { state.withLock { $0.remote } }

    public func call(_ type: XenStoreMessageType, _ payload: [UInt8]) throws(XenStoreError) -> [UInt8] {
        try remote.call(type, payload)
    }

    public func introduceDomain(_ domain: DomainID, ring: GuestFrameNumber, port: EventChannelPort) throws(XenStoreError) {
        try remote.introduceDomain(domain, ring: ring, port: port)
        state.withLock { $0.introduced = (domain, ring, port) }
    }

    public func releaseDomain(_ domain: DomainID) throws(XenStoreError) {
        state.withLock { $0.introduced = nil }
        try remote.releaseDomain(domain)
    }

    public func watch(_ path: String, token: String,
                      handler: @escaping @Sendable (String, String) -> Void) throws(XenStoreError) -> XenStoreWatchID {
        let (id, remote) = state.withLock { s in
            defer { s.nextWatch += 1 }
            s.watches[s.nextWatch] = Watch(path: path, token: token, handler: handler)
            return (s.nextWatch, s.remote)
        }
        do {
            try register(id, path: path, token: token, handler: handler, on: remote)
        } catch {
            _ = state.withLock { $0.watches.removeValue(forKey: id) }
            throw error
        }
        return XenStoreWatchID(rawValue: id)
    }

    public func unwatch(_ id: XenStoreWatchID) {
        let (watch, remote) = state.withLock { s in (s.watches.removeValue(forKey: id.rawValue), s.remote) }
        if let inner = watch?.inner { remote.unwatch(inner) }
    }

    /// Registers watch `id` on `remote` and keeps its inner id, unless the
    /// watch was removed or the connection replaced meanwhile (then it is
    /// removed from `remote` again).
    private func register(_ id: UInt64, path: String, token: String, handler: @escaping @Sendable (String, String) -> Void,
                          on remote: XenStoreRemote) throws(XenStoreError) {
        let inner = try remote.watch(path, token: token, handler: handler)
        let kept = state.withLock { s in
            guard s.watches[id] != nil, s.remote === remote else { return false }
            s.watches[id]?.inner = inner
            return true
        }
        if !kept { remote.unwatch(inner) }
    }

    /// A new daemon's connection: the old one is closed, the domain
    /// introduced again if it was, every watch registered again. Failures
    /// are returned, one line each (the store refused, or went again).
    public func reattach(_ new: XenStoreRemote) -> [String] {
        let (old, watches, introduced) = state.withLock { s in
            defer { s.remote = new }
            for key in s.watches.keys { s.watches[key]?.inner = nil }
            return (s.remote, s.watches, s.introduced)
        }
        old.close()
        var problems: [String] = []
        if let i = introduced {
            do { try new.introduceDomain(i.domain, ring: i.ring, port: i.port) } catch { problems.append("introduce: \(error)") }
        }
        for (id, w) in watches.sorted(by: { $0.key < $1.key }) {
            do {
                try register(id, path: w.path, token: w.token, handler: w.handler, on: new)
            } catch {
                problems.append("watch \(w.path): \(error)")
            }
        }
        return problems
    }
}

/// The peer of a guest's XenStore ring in a guest process that outlives
/// its daemon: a `XenStoreRelay` a new daemon replaces (`reattach`).
///
/// While the store is away (the relay's far end closed) the peer does not
/// fail, as the relay alone would (the ring's `error = COMM`): it takes no
/// more input, so the guest's requests wait in its own ring (bounded by
/// the ring's 1 KiB) and its xenbus simply waits for replies. On
/// `reattach` the guest gets what `XenStoreRingHandover` decides (EAGAIN
/// for what the old store never answered and for its transactions, its
/// watches registered again), then the ring is woken.
public final class ReattachableRingPeer: XenStoreRingPeer {
    private struct State: Sendable {
        var relay: XenStoreRelay
        var domain: DomainID?
        var output: (@Sendable ([UInt8]) -> Void)?
        var wake: (@Sendable () -> Void)?
        var handover = XenStoreRingHandover()
        var fromGuest = XenStoreFramer()
        var fromStore = XenStoreFramer()
        /// Bytes of the relay's output swallowed here (replies to replays).
        var swallowed = 0
    }

    private let state: Lock<State>

    public init(_ relay: XenStoreRelay) {
        state = Lock(State(relay: relay))
    }

    private var relay: XenStoreRelay { state.withLock { $0.relay } }

    /// The relay's output passes through here: each call is one whole
    /// message of the store's (XenStoreRelay hands them over one by one).
    private func fromStore(_ bytes: [UInt8], relay: XenStoreRelay) {
        let (output, deliver) = state.withLock { s -> ((@Sendable ([UInt8]) -> Void)?, Bool) in
            guard s.relay === relay else { return (nil, false) }
            guard let frames = try? s.fromStore.feed(bytes) else { return (s.output, true) }
            var deliver = true
            for case .message(let m) in frames { deliver = s.handover.fromStore(m) && deliver }
            return (s.output, deliver)
        }
        if deliver {
            output?(bytes)
        } else {
            // The relay counted it as output the ring has yet to take; it
            // never will. Credited with the ring's next outputSent: the
            // relay calls this under its lock, so not back into it now.
            state.withLock { s in if s.relay === relay { s.swallowed += bytes.count } }
        }
    }

    public func attach(domain: DomainID, output: @escaping @Sendable ([UInt8]) -> Void, wake: @escaping @Sendable () -> Void) {
        let relay = state.withLock { s in
            s.domain = domain
            s.output = output
            s.wake = wake
            return s.relay
        }
        relay.attach(domain: domain, output: { [weak self, relay] in self?.fromStore($0, relay: relay) }, wake: wake)
    }

    public func acceptsInput() -> Bool {
        let (relay, more) = state.withLock { ($0.relay, $0.handover.acceptsMore) }
        return more && relay.failure == nil && relay.acceptsInput()
    }

    public func receive(_ bytes: [UInt8]) -> XenStoreReceiveResult {
        // Framed here (as the relay frames them: the same rule refuses the
        // same frames) so the handover sees each request; whole frames go on.
        let framed: Result<(XenStoreRelay, [[UInt8]], [UInt8]), XenStoreFramingError> = state.withLock { s in
            let frames: [XenStoreFrame]
            do throws(XenStoreFramingError) { frames = try s.fromGuest.feed(bytes) } catch { return .failure(error) }
            var answers: [[UInt8]] = []
            var forward: [UInt8] = []
            for frame in frames {
                switch frame {
                case .message(let m):
                    switch s.handover.request(m) {
                    case .forward: forward += m.bytes
                    case .answer(let reply): answers.append(reply.bytes)
                    }
                case .unknownType(let type, let requestID, let transactionID):
                    s.handover.unknownRequest(requestID: requestID, transactionID: transactionID)
                    // The store answers it (ENOSYS, ids echoed); its payload does not matter.
                    for v in [type, requestID, transactionID, 0] { forward += Self.littleEndian(v) }
                }
            }
            return .success((s.relay, answers, forward))
        }
        guard case .success(let (relay, answers, forward)) = framed else {
            if case .failure(let error) = framed { return .close("\(error)") }
            return .ok
        }
        let output = state.withLock { $0.output }
        for a in answers { output?(a) }
        // With the store away the requests stay recorded, unsent: the
        // reattach answers them EAGAIN (the ring reads no more meanwhile).
        guard !forward.isEmpty, relay.failure == nil else { return .ok }
        return relay.receive(forward)
    }

    private static func littleEndian(_ v: UInt32) -> [UInt8] {
        [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 24)]
    }

    public func outputSent(_ count: Int) {
        let (relay, swallowed) = state.withLock { s in
            defer { s.swallowed = 0 }
            return (s.relay, s.swallowed)
        }
        relay.outputSent(count + swallowed)
    }

    public func reset() {
        let relay = state.withLock { s in
            s.handover.reset()
            s.fromGuest.reset()
            s.fromStore.reset()
            return s.relay
        }
        relay.reset()
    }

    /// Never fails: a store that went is waited for (see the type's comment).
    public var failure: String? { nil }

    public func detach() {
        let relay = state.withLock { s in
            s.output = nil
            s.wake = nil
            s.handover.reset()
            s.fromGuest.reset()
            return s.relay
        }
        relay.detach()
    }

    /// A new daemon's connection for the guest's ring: the old relay is
    /// closed, the new one attached, the guest answered for what the old
    /// store never answered, its watches sent again, the ring woken.
    public func reattach(_ new: XenStoreRelay) {
        let (old, domain, output, wake, answers, replays) = state.withLock { s in
            let old = s.relay
            s.relay = new
            s.fromStore.reset()
            s.swallowed = 0
            let (answers, replays) = s.handover.reattach()
            return (old, s.domain, s.output, s.wake, answers, replays)
        }
        old.close()
        if let domain, let wake {
            new.attach(domain: domain, output: { [weak self, new] in self?.fromStore($0, relay: new) }, wake: wake)
        }
        for a in answers { output?(a.bytes) }
        let first = replays.flatMap(\.bytes)
        if !first.isEmpty { _ = new.receive(first) }
        wake?()
    }
}
