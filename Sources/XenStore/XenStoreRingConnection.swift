import CXen
import EventChannels
import GuestMemory
import Synchronization
import XenABI
import XenRing

/// Why a XenStore ring could not be set up.
public enum XenStoreRingError: Error, Sendable {
    case ring(XenRingError)
    case memory(GuestMemoryError)
    case eventChannel(XenErrno)
}

/// A guest's XenStore connection over its `struct xenstore_domain_interface`
/// page (io/xs_wire.h; HVM_PARAM_STORE_PFN) and an interdomain event channel
/// (HVM_PARAM_STORE_EVTCHN), as xenstored's domain.c serves it. Requests are
/// read from `req`, handed to the `XenStoreServer`, and replies and watch
/// events are written to `rsp`; what does not fit waits host-side (never
/// dropped) until the guest frees room and notifies.
///
/// Ring protocol (docs/misc/xenstore-ring.txt): at set-up the page gets
/// `server_features = RECONNECTION | ERROR` and `connection = CONNECTED`. A
/// guest that sets `connection = XENSTORE_RECONNECT` and notifies gets a
/// reset: its watches and transactions are dropped, the four indices are
/// zeroed, `connection` is set back to CONNECTED and the guest notified. An
/// impossible index sets `error = XENSTORE_ERROR_RINGIDX`, an oversized
/// request `error = XENSTORE_ERROR_PROTO`; either way the connection stops
/// being served (the guest is hostile; the VMM goes on) and `report` is told.
///
/// Locks, outermost first: the pump's single-runner flag (`control`, never
/// held across a call), the server's lock, then `outbox` (taken by the
/// `output` closure the server calls under its lock, and by the pump with no
/// other lock held). The pump never holds `outbox` while calling the server.
public final class XenStoreRingConnection: EventChannelPeer, Sendable {
    private struct Control: Sendable {
        var running = false
        var again = false
        var dead = false
        var backendPort: EventChannelPort?
    }

    private let memory: any GuestMemory
    private let ring: ByteRing
    private let base: GuestPhysicalAddress
    private let events: EventChannelTable
    private let server: XenStoreServer
    private let report: @Sendable (String) -> Void
    private let control = Mutex(Control())
    /// Output waiting for room in `rsp`; a class so the server's `output`
    /// closure can hold it without holding the connection.
    private final class Outbox: Sendable {
        let bytes = Mutex<[UInt8]>([])
        func withLock<R>(_ body: (inout [UInt8]) -> R) -> R { bytes.withLock { body(&$0) } }
    }
    private let outbox = Outbox()
    private let connectionBox = Mutex<XenStoreConnectionID?>(nil)

    /// The guest-side port the toolstack puts in HVM_PARAM_STORE_EVTCHN.
    public let guestPort: EventChannelPort
    /// The interface page's frame (HVM_PARAM_STORE_PFN).
    public let frame: GuestFrameNumber
    /// The server's ID of this connection.
    public var connection: XenStoreConnectionID? { connectionBox.withLock { $0 } }

    /// Sets up the ring at `frame` for `domain`: initialises the page's
    /// feature and connection words, allocates the guest's unbound port for
    /// the backend domain and binds the backend's end, and connects to
    /// `server` as an unprivileged client of `domain`.
    public init(memory: any GuestMemory, frame: GuestFrameNumber, events: EventChannelTable, domain: DomainID,
                server: XenStoreServer, report: @escaping @Sendable (String) -> Void) throws {
        guard let base = frame.address else {
            throw XenStoreRingError.ring(.memory(.outOfBounds(GuestPhysicalAddress(UInt64.max), count: GuestFrameNumber.pageSize)))
        }
        do { ring = try ByteRing(layout: .xenStore, memory: memory, base: base) } catch { throw XenStoreRingError.ring(error) }
        self.memory = memory
        self.base = base
        self.frame = frame
        self.events = events
        self.server = server
        self.report = report
        do {
            try memory.store(UInt32(XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR),
                             at: Self.field(base, PVH_XENSTORE_SERVER_FEATURES_OFFSET))
            try memory.store(UInt32(XENSTORE_ERROR_NONE), at: Self.field(base, PVH_XENSTORE_ERROR_OFFSET))
            try memory.store(UInt32(XENSTORE_CONNECTED), at: Self.field(base, PVH_XENSTORE_CONNECTION_OFFSET))
        } catch {
            throw XenStoreRingError.memory(error)
        }
        do {
            guestPort = try events.allocateUnbound(domain: domain, remote: events.configuration.backendDomainID)
        } catch {
            throw XenStoreRingError.eventChannel(error)
        }
        let outbox = self.outbox
        let id = server.connect(domain: domain, privileged: false,
                                output: { bytes in outbox.withLock { $0 += bytes } },
                                wake: { [weak self] in self?.pump() })
        connectionBox.withLock { $0 = id }
        do {
            let port = try events.backendBindInterdomain(guestPort: guestPort, peer: self)
            control.withLock { $0.backendPort = port }
        } catch {
            server.disconnect(id)
            throw XenStoreRingError.eventChannel(error)
        }
    }

    deinit {
        if let id = connectionBox.withLock({ $0 }) { server.disconnect(id) }
    }

    private static func field(_ base: GuestPhysicalAddress, _ offset: some BinaryInteger) -> GuestPhysicalAddress {
        GuestPhysicalAddress(base.rawValue &+ UInt64(offset))
    }

    /// The guest sent an event on the XenStore channel: move bytes both ways.
    public func notify(_ port: EventChannelPort) { pump() }

    /// Whether the connection was shut down for a protocol violation.
    public var isDead: Bool { control.withLock { $0.dead } }

    /// Bytes of replies and events waiting for room in `rsp`.
    public var pendingOutputCount: Int { outbox.withLock { $0.count } }

    /// Moves requests to the server and output to the guest until neither
    /// side makes progress. One runner at a time: a call arriving while
    /// another thread pumps asks it to go round again and returns, which
    /// keeps requests in ring order.
    public func pump() {
        let start = control.withLock { c in
            if c.dead { return false }
            if c.running { c.again = true; return false }
            c.running = true
            return true
        }
        guard start else { return }
        while true {
            var notify = false
            var failure: (UInt32, String)?
            var progress = true
            while progress && failure == nil {
                do {
                    progress = try pumpOnce(&notify)
                } catch let e as PumpFailure {
                    failure = (e.error, e.reason)
                } catch {
                    failure = (UInt32(XENSTORE_ERROR_COMM), "\(error)")
                }
            }
            if let failure {
                // The guest broke the protocol: stop serving it, keep the VMM up.
                try? memory.store(failure.0, at: Self.field(base, PVH_XENSTORE_ERROR_OFFSET))
                control.withLock { $0.dead = true; $0.running = false }
                if let id = connection { server.disconnect(id) }
                report("xenstore ring: \(failure.1)")
                return
            }
            let port = control.withLock { $0.backendPort }
            if notify, let port { try? events.backendSend(port) }
            let more = control.withLock { c in
                if c.again { c.again = false; return true }
                c.running = false
                return false
            }
            if !more { return }
        }
    }

    private struct PumpFailure: Error {
        var error: UInt32
        var reason: String
    }

    /// One round: reconnect if asked, flush output, read requests. Returns
    /// whether anything moved.
    private func pumpOnce(_ notify: inout Bool) throws -> Bool {
        guard let id = connection else { return false }
        let connectionWord = try memory.load(UInt32.self, at: Self.field(base, PVH_XENSTORE_CONNECTION_OFFSET))
        if connectionWord == UInt32(XENSTORE_RECONNECT) {
            // xenstore-ring.txt "Connection reset": discard everything, zero
            // the indices, then report CONNECTED and notify.
            server.reset(id)
            outbox.withLock { $0 = [] }
            for c in [ring.layout.fromGuest, ring.layout.toGuest] {
                try memory.store(UInt32(0), at: Self.field(base, c.consumerOffset))
                try memory.store(UInt32(0), at: Self.field(base, c.producerOffset))
            }
            atomicMemoryFence(ordering: .releasing)
            try memory.store(UInt32(XENSTORE_CONNECTED), at: Self.field(base, PVH_XENSTORE_CONNECTION_OFFSET))
            notify = true
            return true
        }
        var moved = try flush()
        if server.acceptsInput(id) {
            let bytes: [UInt8]
            do { bytes = try ring.consumeFromGuest() } catch {
                throw PumpFailure(error: UInt32(XENSTORE_ERROR_RINGIDX), reason: "\(error)")
            }
            if !bytes.isEmpty {
                notify = true  // room was made in req
                moved = true
                if case .close(let reason) = server.receive(bytes, from: id) {
                    throw PumpFailure(error: UInt32(XENSTORE_ERROR_PROTO), reason: reason)
                }
                _ = try flush()
            }
        }
        if moved { notify = true }
        return moved
    }

    /// Writes queued output into `rsp`; keeps what does not fit.
    private func flush() throws -> Bool {
        let pending = outbox.withLock { $0 }
        guard !pending.isEmpty, let id = connection else { return false }
        let written: Int
        do { written = try ring.produceToGuest(pending) } catch {
            throw PumpFailure(error: UInt32(XENSTORE_ERROR_RINGIDX), reason: "\(error)")
        }
        guard written > 0 else { return false }
        outbox.withLock { $0.removeFirst(written) }
        server.outputSent(written, for: id)
        return true
    }
}
