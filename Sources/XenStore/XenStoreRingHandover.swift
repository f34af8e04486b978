import XenABI

/// What a guest's relayed XenStore connection must remember to move to a
/// new store connection when the host daemon restarts (docs/ARCHITECTURE.md:
/// a daemon restart): a pure state machine, fed every request the guest
/// sends and every message the store sends back, that the guest process's
/// ring peer (VMM's `ReattachableRingPeer`) consults.
///
/// A new daemon's store knows nothing of the guest's connection: not its
/// watches, its transactions, nor the requests the old daemon never
/// answered. xenstored's live update carries all three across
/// (docs/designs/xenstore-migration.md: CONNECTION_DATA, WATCH_DATA,
/// TRANSACTION_DATA records); pvh's daemon state keeps only the nodes, so
/// the guest process makes up for the rest with answers a guest already
/// handles: EAGAIN, which xenstore.txt gives XS_TRANSACTION_END for a
/// transaction to be retried (and Linux's xenbus retries on), and its
/// watches registered again. So, on `reattach()`:
/// - every request sent and never answered is answered EAGAIN, ids echoed;
/// - the transactions that were open become stale: any later request in
///   one, its XS_TRANSACTION_END included, is answered EAGAIN here without
///   reaching the store (`request`);
/// - the guest's watches are registered again on the new connection, whose
///   replies are swallowed; their initial events reach the guest (xenstore.txt
///   allows a watch to fire spuriously).
///
/// Replies come back in request order on one connection (xenstored serves
/// a connection's requests one at a time), so the requests waiting for
/// theirs are a queue. Bounded: at most `maximumPending` requests wait
/// (the peer stops reading the ring beyond that) and a watch or
/// transaction is remembered only once the store accepted it, under its
/// quotas.
public struct XenStoreRingHandover: Sendable {
    /// Requests waiting for their reply at most; `acceptsMore` is false beyond.
    public static let maximumPending = 4096

    /// What to do with a request from the guest.
    public enum Decision: Hashable, Sendable {
        /// Send it to the store.
        case forward
        /// Answer the guest with this, here (a request in a stale transaction).
        case answer(XenStoreMessage)
    }

    private struct Pending: Sendable {
        var requestID: UInt32
        var transactionID: UInt32
        /// Nil for a type io/xs_wire.h does not define.
        var type: XenStoreMessageType?
        /// Sent by the handover itself (a watch registered again): its reply is swallowed.
        var replay: Bool
        /// XS_WATCH and XS_UNWATCH: the path and token.
        var watch: Watch?
    }

    /// A guest's watch, as it registered it.
    public struct Watch: Hashable, Sendable {
        public var path: String
        public var token: String
    }

    private var pending: [Pending] = []
    private var openTransactions: Set<UInt32> = []
    private var staleTransactions: Set<UInt32> = []
    /// In the order the guest registered them.
    public private(set) var watches: [Watch] = []

    public init() {}

    /// Whether more requests may go to the store now.
    public var acceptsMore: Bool { pending.count < Self.maximumPending }
    /// Requests sent and not yet answered.
    public var pendingCount: Int { pending.count }

    /// A whole request from the guest.
    public mutating func request(_ message: XenStoreMessage) -> Decision {
        if message.transactionID != 0, staleTransactions.contains(message.transactionID) {
            if message.type == .transactionEnd { staleTransactions.remove(message.transactionID) }
            return .answer(XenStoreWire.errorReply(.eagain, to: message))
        }
        var watch: Watch?
        if message.type == .watch || message.type == .unwatch {
            let parts = XenStoreWire.strings(message.payload)
            if parts.count >= 2 { watch = Watch(path: parts[0], token: parts[1]) }
        }
        pending.append(Pending(requestID: message.requestID, transactionID: message.transactionID, type: message.type,
                               replay: false, watch: watch))
        return .forward
    }

    /// A whole frame of a type xs_wire.h does not define (the store answers it).
    public mutating func unknownRequest(requestID: UInt32, transactionID: UInt32) {
        pending.append(Pending(requestID: requestID, transactionID: transactionID, type: nil, replay: false, watch: nil))
    }

    /// A message from the store: whether it goes on to the guest.
    public mutating func fromStore(_ message: XenStoreMessage) -> Bool {
        if message.type == .watchEvent { return true }
        guard !pending.isEmpty else { return true }
        let request = pending.removeFirst()
        if request.replay { return false }
        guard message.type != .error else { return true }
        switch request.type {
        case .transactionStart:
            if let text = XenStoreWire.oneArgument(message.payload), let id = UInt32(text), id != 0 {
                openTransactions.insert(id)
                // The new store may hand out an id a stale one had: it is live now.
                staleTransactions.remove(id)
            }
        case .transactionEnd:
            openTransactions.remove(request.transactionID)
        case .watch:
            if let w = request.watch, !watches.contains(w) { watches.append(w) }
        case .unwatch:
            if let w = request.watch { watches.removeAll { $0 == w } }
        case .resetWatches:
            watches = []
            openTransactions = []
            staleTransactions = []
        default:
            break
        }
        return true
    }

    /// The guest reset its connection, or a boot detached it: the peer
    /// drops every reply from before, and the store forgets its watches
    /// and transactions (XS_RESET_WATCHES).
    public mutating func reset() {
        pending = []
        watches = []
        openTransactions = []
        staleTransactions = []
    }

    /// The store is back on a new connection: the answers the guest gets
    /// here for what the old one never answered (EAGAIN, in request order),
    /// and the requests to send on the new one before anything else (the
    /// guest's watches again; their replies are swallowed).
    public mutating func reattach() -> (answers: [XenStoreMessage], replays: [XenStoreMessage]) {
        let answers = pending.filter { !$0.replay }.map {
            XenStoreMessage(type: .error, requestID: $0.requestID, transactionID: $0.transactionID,
                            strings: [XenStoreError.eagain.wireName])
        }
        pending = []
        staleTransactions.formUnion(openTransactions)
        openTransactions = []
        let replays = watches.map { XenStoreMessage(type: .watch, strings: [$0.path, $0.token]) }
        pending = watches.map { Pending(requestID: 0, transactionID: 0, type: .watch, replay: true, watch: $0) }
        return (answers, replays)
    }
}
