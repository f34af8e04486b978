import Locking
import XenABI

/// What a guest's XenStore ring (`XenStoreRingConnection`) hands its bytes
/// to: the store in this process (`XenStoreServerRingPeer`), or a relay to
/// the host daemon's store over a stream (`XenStoreRelay`). The ring
/// connection calls everything but `attach` from its own pump, one call at
/// a time.
public protocol XenStoreRingPeer: AnyObject, Sendable {
    /// The ring of `domain` starts using this peer. `output` queues bytes
    /// for the guest (replies and watch events, in order; it only enqueues
    /// and may be called with the peer's or the store's lock held); `wake`
    /// schedules the ring's pump, from any thread.
    func attach(domain: DomainID, output: @escaping @Sendable ([UInt8]) -> Void, wake: @escaping @Sendable () -> Void)
    /// False while the peer wants no more requests (its output backlog or
    /// its own queue is full): the ring leaves them unread, so a guest that
    /// does not read its replies is held up by its own ring.
    func acceptsInput() -> Bool
    /// Requests from the guest, as the ring carried them (any chunking).
    /// `.close` when the guest broke the framing.
    func receive(_ bytes: [UInt8]) -> XenStoreReceiveResult
    /// The ring took `count` bytes of what `output` queued.
    func outputSent(_ count: Int)
    /// The guest reset its connection (xenstore-ring.txt "Connection
    /// reset"): its watches, transactions, partial request and queued
    /// output are gone, and no reply to a request from before comes after.
    func reset()
    /// Why the peer can no longer serve the guest (the relay's far end is
    /// gone), or nil while it can. The ring then fails as a device.
    var failure: String? { get }
    /// The ring stopped (a fault, or the domain ended).
    func detach()
}

/// The embedded default: the guest's ring is a connection of the
/// `XenStoreServer` in this process, as `domain`, unprivileged, with the
/// server's flow control (`acceptsInput`/`outputSent`).
public final class XenStoreServerRingPeer: XenStoreRingPeer {
    public let server: XenStoreServer
    private let id = Lock<XenStoreConnectionID?>(nil)

    public init(server: XenStoreServer) { self.server = server }

    /// The server's ID of the ring's connection, once attached.
    public var connection: XenStoreConnectionID? { id.withLock { $0 } }

    public func attach(domain: DomainID, output: @escaping @Sendable ([UInt8]) -> Void, wake: @escaping @Sendable () -> Void) {
        let c = server.connect(domain: domain, privileged: false, output: output, wake: wake)
        id.withLock { $0 = c }
    }

    public func acceptsInput() -> Bool { connection.map { server.acceptsInput($0) } ?? false }

    public func receive(_ bytes: [UInt8]) -> XenStoreReceiveResult {
        guard let c = connection else { return .close("not attached") }
        return server.receive(bytes, from: c)
    }

    public func outputSent(_ count: Int) { connection.map { server.outputSent(count, for: $0) } }

    public func reset() { connection.map { server.reset($0) } }

    public var failure: String? { nil }

    public func detach() {
        if let c = id.withLock({ v in defer { v = nil }; return v }) { server.disconnect(c) }
    }
}
