import Dispatch
import Foundation
import GuestMemory
import Locking
import Synchronization
import XenABI

/// Why a request to a remote store failed.
public enum XenStoreRemoteError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The store answered XS_ERROR with this error.
    case store(XenStoreError)
    /// The connection is gone (closed by the store, a broken frame, a
    /// reply to nothing, or `close()`): every call fails from then on.
    case connectionLost(String)
    /// No reply within the request timeout.
    case timedOut

    public var description: String {
        switch self {
        case .store(let e): e.wireName
        case .connectionLost(let why): "connection lost: \(why)"
        case .timedOut: "no reply from the store"
        }
    }

    /// As an `xsd_errors` value for `XenStoreService` callers: a lost or
    /// silent store is EIO (what libxenstore reports when the daemon goes).
    public var storeError: XenStoreError {
        if case .store(let e) = self { return e }
        return .eio
    }
}

/// A XenStore client over a connected stream speaking io/xs_wire.h: what
/// libxenstore is to xl, for a process whose store lives elsewhere (a
/// guest process of the toolstack and the host daemon's store; the `pvh`
/// CLI and xenstored's socket). It is a `XenStoreService`, so the xenbus
/// backends and the domain's tree run against it unchanged.
///
/// Threads. Any number of callers may have a request outstanding: each
/// gets a fresh request id, its frame is written whole under a lock, and
/// it waits (bounded by `requestTimeout`) for the reply with that id. One
/// reader thread (`pvh-xs-remote`) reads the stream, hands replies to their
/// callers and queues watch events on the delivery queue
/// (`pvh-xs-watch`), a serial queue that is not the reader: handlers run
/// in the order the store sent the events, never two at once, and may call
/// back into the store (the reader is free to read the reply).
///
/// Watches share the one connection: each gets a wire token
/// `<watch id>:<token>`, so an event finds its handler and the handler sees
/// the caller's token.
///
/// The end. The store closing the stream, a frame breaking xs_wire.h's
/// limits, a reply of the wrong type, or `close()` end the connection: the
/// calls waiting fail with `.connectionLost(reason)`, later ones at once,
/// and `onConnectionLost(reason)` runs once, on the delivery queue after
/// the events read before it. The reader keeps the client alive until the
/// connection ends: `close()` it when done.
public final class XenStoreRemote: XenStoreService {
    private final class Waiter: Sendable {
        let done = DispatchSemaphore(value: 0)
        let reply = Lock<Result<XenStoreMessage, XenStoreRemoteError>?>(nil)
    }

    private struct State: Sendable {
        var waiters: [UInt32: Waiter] = [:]
        var handlers: [UInt64: @Sendable (String, String) -> Void] = [:]
        var nextRequest: UInt32 = 1
        var nextWatch: UInt64 = 1
        var lost: String?
        var eventsQueued: UInt64 = 0
    }

    private let stream: any XenStoreByteStream
    private let state = Lock(State())
    /// Held while writing a frame, and to close the stream.
    private let writer = Lock(())
    /// The reader's exit and `lose`'s shutdown: the second one closes the
    /// stream (under `writer`), so no call touches a closed descriptor.
    private let streamUsers = Atomic<Int>(2)
    private let delivery = DispatchQueue(label: "pvh-xs-watch")
    private let onConnectionLost: @Sendable (String) -> Void
    /// How long a call waits for its reply.
    public let requestTimeout: Duration

    /// Starts reading `stream` (the remote owns it from now on and closes
    /// it when the connection ends).
    public init(stream: any XenStoreByteStream, requestTimeout: Duration = .seconds(30),
                onConnectionLost: @escaping @Sendable (String) -> Void = { _ in }) {
        self.stream = stream
        self.requestTimeout = requestTimeout
        self.onConnectionLost = onConnectionLost
        let thread = Thread { [self] in readLoop() }
        thread.stackSize = 1 << 20
        thread.start()
        thread.name = "pvh-xs-remote"
    }

    /// Why the connection ended, or nil while it works.
    public var lostReason: String? { state.withLock { $0.lost } }

    /// Ends the connection: waiting calls fail, the reader stops and closes the stream.
    public func close() {
        lose("closed by this process")
    }

    // MARK: Requests

    /// Sends one request and waits for its reply's payload.
    public func request(_ type: XenStoreMessageType, _ payload: [UInt8]) throws(XenStoreRemoteError) -> [UInt8] {
        guard payload.count <= XenStoreLimits.payloadMax else { throw .store(.e2big) }
        let waiter = Waiter()
        let registered: Result<UInt32, XenStoreRemoteError> = state.withLock { s in
            if let lost = s.lost { return .failure(.connectionLost(lost)) }
            // Ids in use are skipped, so a wrapped counter never matches a
            // live caller (a late reply to a timed-out one is dropped).
            while s.waiters[s.nextRequest] != nil { s.nextRequest &+= 1 }
            let id = s.nextRequest
            s.nextRequest &+= 1
            s.waiters[id] = waiter
            return .success(id)
        }
        let id = try registered.get()
        let frame = XenStoreMessage(type: type, requestID: id, payload: payload).bytes
        // Not after the end: the stream may be closed by then (the waiter has its answer already).
        let sent = writer.withLock { _ in state.withLock { $0.lost == nil } ? stream.writeAll(frame) : true }
        if !sent { lose("the store's end is closed (write failed)") }
        if waiter.done.wait(timeout: .now() + .milliseconds(Int(requestTimeout / .milliseconds(1)))) == .timedOut {
            state.withLock { _ = $0.waiters.removeValue(forKey: id) }
            throw .timedOut
        }
        let reply = waiter.reply.withLock { $0 } ?? .failure(.connectionLost("no reply"))
        let message = try reply.get()
        if message.type == .error {
            throw .store(XenStoreError(wireName: XenStoreWire.oneArgument(message.payload) ?? "") ?? .eio)
        }
        guard message.type == type else {
            lose("\(message.type) reply to \(type)")
            throw .connectionLost("\(message.type) reply to \(type)")
        }
        return message.payload
    }

    /// `XenStoreService`: `request`, with a lost or silent store as EIO.
    public func call(_ type: XenStoreMessageType, _ payload: [UInt8]) throws(XenStoreError) -> [UInt8] {
        do { return try request(type, payload) } catch { throw error.storeError }
    }

    private func run(_ type: XenStoreMessageType, _ strings: [String]) throws(XenStoreError) -> [UInt8] {
        try call(type, XenStoreWire.nulTerminated(strings))
    }

    /// XS_INTRODUCE: domid, the ring's frame, the port (xenstore.txt).
    public func introduceDomain(_ domain: DomainID, ring: GuestFrameNumber, port: EventChannelPort) throws(XenStoreError) {
        _ = try run(.introduce, [String(domain.rawValue), String(ring.rawValue), String(port.rawValue)])
    }

    public func releaseDomain(_ domain: DomainID) throws(XenStoreError) {
        _ = try run(.release, [String(domain.rawValue)])
    }

    public func watch(_ path: String, token: String,
                      handler: @escaping @Sendable (String, String) -> Void) throws(XenStoreError) -> XenStoreWatchID {
        // The handler is in place before the request, for the initial event
        // may be read before the reply is.
        let id = state.withLock { s in
            defer { s.nextWatch += 1 }
            s.handlers[s.nextWatch] = { path, _ in handler(path, token) }
            return s.nextWatch
        }
        do {
            _ = try request(.watch, XenStoreWire.nulTerminated([path, Self.wireToken(id, token)]))
        } catch {
            _ = state.withLock { $0.handlers.removeValue(forKey: id) }
            throw error.storeError
        }
        watchPaths.withLock { $0[id] = (path, token) }
        return XenStoreWatchID(rawValue: id)
    }

    private let watchPaths = Lock<[UInt64: (path: String, token: String)]>([:])

    public func unwatch(_ id: XenStoreWatchID) {
        _ = state.withLock { $0.handlers.removeValue(forKey: id.rawValue) }
        guard let w = watchPaths.withLock({ $0.removeValue(forKey: id.rawValue) }) else { return }
        _ = try? request(.unwatch, XenStoreWire.nulTerminated([w.path, Self.wireToken(id.rawValue, w.token)]))
    }

    static func wireToken(_ id: UInt64, _ token: String) -> String { "\(id):\(token)" }

    /// Waits until the store has answered everything sent before and the
    /// handlers of the events it sent meanwhile (and of those their own
    /// requests caused) have run: one round trip, then the delivery queue,
    /// again until a round brings no event (at most `rounds`). For tests and
    /// callers that need the in-process store's "handled before it returns".
    /// Not from a watch handler.
    public func settle(rounds: Int = 64) {
        for _ in 0..<rounds {
            let before = state.withLock { $0.eventsQueued }
            _ = try? request(.isDomainIntroduced, XenStoreWire.nulTerminated(["0"]))
            delivery.sync {}
            if state.withLock({ $0.eventsQueued }) == before { return }
        }
    }

    // MARK: Reading

    private func readLoop() {
        var framer = XenStoreFramer()
        while state.withLock({ $0.lost == nil }) {
            guard let bytes = stream.read(max: 65536) else {
                lose("the store closed the connection")
                break
            }
            let frames: [XenStoreFrame]
            do { frames = try framer.feed(bytes) } catch {
                lose("bad frame from the store: \(error)")
                break
            }
            for frame in frames {
                guard case .message(let m) = frame else {
                    lose("a message of unknown type from the store")
                    break
                }
                if m.type == .watchEvent { event(m) } else { reply(m) }
            }
        }
        releaseStream()
    }

    private func releaseStream() {
        guard streamUsers.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 else { return }
        writer.withLock { _ in stream.close() }
    }

    private func event(_ m: XenStoreMessage) {
        let parts = XenStoreWire.strings(m.payload)
        guard parts.count >= 2, let colon = parts[1].firstIndex(of: ":"), let id = UInt64(parts[1][..<colon]) else { return }
        let handler: (@Sendable (String, String) -> Void)? = state.withLock { s in
            guard let h = s.handlers[id] else { return nil }
            s.eventsQueued += 1
            return h
        }
        guard let handler else { return }
        let path = parts[0], token = String(parts[1][parts[1].index(after: colon)...])
        delivery.async { handler(path, token) }
    }

    private func reply(_ m: XenStoreMessage) {
        guard let waiter = state.withLock({ $0.waiters.removeValue(forKey: m.requestID) }) else { return }
        waiter.reply.withLock { $0 = .success(m) }
        waiter.done.signal()
    }

    /// Ends the connection once: fails the waiting calls, stops the reader
    /// (which closes the stream), tells `onConnectionLost` after the events
    /// already queued.
    private func lose(_ reason: String) {
        let waiting: [Waiter]? = state.withLock { s in
            guard s.lost == nil else { return nil }
            s.lost = reason
            defer { s.waiters = [:]; s.handlers = [:] }
            return Array(s.waiters.values)
        }
        guard let waiting else { return }
        for w in waiting {
            w.reply.withLock { $0 = .failure(.connectionLost(reason)) }
            w.done.signal()
        }
        stream.shutdown()
        releaseStream()
        let report = onConnectionLost
        delivery.async { report(reason) }
    }
}
