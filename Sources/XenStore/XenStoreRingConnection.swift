import CXen
import DeviceRuntime
import EventChannels
import GuestMemory
import Locking
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
/// read from `req` and handed to the connection's `XenStoreRingPeer` (the
/// `XenStoreServer` in this process, or `XenStoreRelay` to the host
/// daemon's), and replies and watch events are written to `rsp`; what does
/// not fit waits host-side (never dropped) until the guest frees room and
/// notifies.
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
/// Threads. The connection is a device of the device runtime ("xenstore"):
/// the guest's notifications and the server's `wake` (output queued for this
/// guest by someone else's request, a watch event) only schedule the pump on
/// the connection's own context (thread `pvh-xenstore`), which runs one pump
/// at a time, so requests are handled in ring order. A protocol violation
/// goes through the runtime's fault path, whose effect here is the `error`
/// word and the disconnection from the server.
///
/// Locks, outermost first: the peer's (the server's) lock, then `outbox`
/// (taken by the `output` closure the peer calls under its lock, and by the
/// pump with no other lock held). The pump never holds `outbox` while
/// calling the peer. A peer that fails (the relay's daemon end closed)
/// fails the device the same way, with `error = COMM`.
public final class XenStoreRingConnection: Sendable {
    /// The ring and what the pump keeps between runs. Made before the
    /// runtime device, whose pump and fault effect it carries.
    private final class Engine: Sendable {
        let memory: any GuestMemory
        let ring: ByteRing
        let base: GuestPhysicalAddress
        let peer: any XenStoreRingPeer
        let report: @Sendable (String) -> Void
        let attached = Atomic<Bool>(false)
        /// The `error` word the fault path writes: set by the pump before it throws.
        let errorWord = Lock<UInt32>(UInt32(XENSTORE_ERROR_COMM))
        /// Output waiting for room in `rsp`.
        let outbox = Lock<[UInt8]>([])

        init(memory: any GuestMemory, ring: ByteRing, base: GuestPhysicalAddress, peer: any XenStoreRingPeer,
             report: @escaping @Sendable (String) -> Void) {
            self.memory = memory
            self.ring = ring
            self.base = base
            self.peer = peer
            self.report = report
        }

        private struct PumpFailure: Error {
            var error: UInt32
            var fault: DeviceFault
        }

        /// Moves requests to the server and output to the guest until
        /// neither side makes progress. Runs on the connection's context only.
        func pump() throws(DeviceFault) -> BackendChannel.PumpResult {
            var notify = false
            var progress = true
            while progress {
                do {
                    progress = try pumpOnce(&notify)
                } catch let e as PumpFailure {
                    errorWord.withLock { $0 = e.error }
                    throw e.fault
                } catch {
                    errorWord.withLock { $0 = UInt32(XENSTORE_ERROR_COMM) }
                    throw DeviceFault(kind: .backendFailure, reason: "\(error)")
                }
            }
            return notify ? .notifyGuest : .quiet
        }

        /// The runtime's fault path reached this connection: tell the guest
        /// why (xenstore-ring.txt "error" word), stop serving it, keep the VMM up.
        func fault(_ fault: DeviceFault) {
            let word = errorWord.withLock { $0 }
            try? memory.store(word, at: field(PVH_XENSTORE_ERROR_OFFSET))
            detach()
            report("xenstore ring: \(fault.reason)")
        }

        /// Leaves the peer, once (fault, shutdown or the end of the connection).
        func detach() {
            if attached.exchange(false, ordering: .acquiringAndReleasing) { peer.detach() }
        }

        func field(_ offset: some BinaryInteger) -> GuestPhysicalAddress {
            GuestPhysicalAddress(base.rawValue &+ UInt64(offset))
        }

        /// One round: reconnect if asked, flush output, read requests. Returns
        /// whether anything moved.
        private func pumpOnce(_ notify: inout Bool) throws -> Bool {
            guard attached.load(ordering: .acquiring) else { return false }
            if let failure = peer.failure {
                throw PumpFailure(error: UInt32(XENSTORE_ERROR_COMM), fault: DeviceFault(kind: .backendFailure, reason: failure))
            }
            let connectionWord = try memory.load(UInt32.self, at: field(PVH_XENSTORE_CONNECTION_OFFSET))
            if connectionWord == UInt32(XENSTORE_RECONNECT) {
                // xenstore-ring.txt "Connection reset": discard everything, zero
                // the indices, then report CONNECTED and notify.
                peer.reset()
                outbox.withLock { $0 = [] }
                for c in [ring.layout.fromGuest, ring.layout.toGuest] {
                    try memory.store(UInt32(0), at: field(c.consumerOffset))
                    try memory.store(UInt32(0), at: field(c.producerOffset))
                }
                atomicMemoryFence(ordering: .releasing)
                try memory.store(UInt32(XENSTORE_CONNECTED), at: field(PVH_XENSTORE_CONNECTION_OFFSET))
                notify = true
                return true
            }
            var moved = try flush()
            if peer.acceptsInput() {
                let bytes: [UInt8]
                do { bytes = try ring.consumeFromGuest() } catch {
                    throw PumpFailure(error: UInt32(XENSTORE_ERROR_RINGIDX), fault: DeviceFault(error))
                }
                if !bytes.isEmpty {
                    notify = true  // room was made in req
                    moved = true
                    if case .close(let reason) = peer.receive(bytes) {
                        throw PumpFailure(error: UInt32(XENSTORE_ERROR_PROTO), fault: .hostileGuest(reason))
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
            guard !pending.isEmpty else { return false }
            let written: Int
            do { written = try ring.produceToGuest(pending) } catch {
                throw PumpFailure(error: UInt32(XENSTORE_ERROR_RINGIDX), fault: DeviceFault(error))
            }
            guard written > 0 else { return false }
            outbox.withLock { $0.removeFirst(written) }
            peer.outputSent(written)
            return true
        }
    }

    private let engine: Engine
    private let channel: BackendChannel

    /// The guest-side port the toolstack puts in HVM_PARAM_STORE_EVTCHN.
    public let guestPort: EventChannelPort
    /// The interface page's frame (HVM_PARAM_STORE_PFN).
    public let frame: GuestFrameNumber
    /// What the ring's bytes go to.
    public var peer: any XenStoreRingPeer { engine.peer }
    /// The server's ID of this connection, when its peer is the store in this process.
    public var connection: XenStoreConnectionID? { (engine.peer as? XenStoreServerRingPeer)?.connection }
    /// The connection's device in the runtime: its metrics and fault state.
    public var device: RuntimeDevice { channel.device }

    /// Sets up the ring at `frame` for `domain`: initialises the page's
    /// feature and connection words, allocates the guest's unbound port for
    /// the backend domain and binds the backend's end (a device "xenstore"
    /// of `runtime`), and connects to `server` as an unprivileged client of
    /// `domain`. `report` hears the fault that stopped the connection (the
    /// runtime also logs it).
    public convenience init(memory: any GuestMemory, frame: GuestFrameNumber, events: EventChannelTable, domain: DomainID,
                            server: XenStoreServer, runtime: DeviceRuntime,
                            report: @escaping @Sendable (String) -> Void = { _ in }) throws {
        try self.init(memory: memory, frame: frame, events: events, domain: domain,
                      peer: XenStoreServerRingPeer(server: server), runtime: runtime, report: report)
    }

    /// As above, with the ring's bytes going to `peer` (attached as `domain`).
    public init(memory: any GuestMemory, frame: GuestFrameNumber, events: EventChannelTable, domain: DomainID,
                peer: any XenStoreRingPeer, runtime: DeviceRuntime,
                report: @escaping @Sendable (String) -> Void = { _ in }) throws {
        guard let base = frame.address else {
            throw XenStoreRingError.ring(.memory(.outOfBounds(GuestPhysicalAddress(UInt64.max), count: GuestFrameNumber.pageSize)))
        }
        let ring: ByteRing
        do { ring = try ByteRing(layout: .xenStore, memory: memory, base: base) } catch { throw XenStoreRingError.ring(error) }
        self.frame = frame
        let engine = Engine(memory: memory, ring: ring, base: base, peer: peer, report: report)
        self.engine = engine
        do {
            try memory.store(UInt32(XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR),
                             at: engine.field(PVH_XENSTORE_SERVER_FEATURES_OFFSET))
            try memory.store(UInt32(XENSTORE_ERROR_NONE), at: engine.field(PVH_XENSTORE_ERROR_OFFSET))
            try memory.store(UInt32(XENSTORE_CONNECTED), at: engine.field(PVH_XENSTORE_CONNECTION_OFFSET))
        } catch {
            throw XenStoreRingError.memory(error)
        }
        do {
            guestPort = try events.allocateUnbound(domain: domain, remote: events.configuration.backendDomainID)
        } catch {
            throw XenStoreRingError.eventChannel(error)
        }
        let device = runtime.makeDevice("xenstore") { fault in engine.fault(fault) }
        let context = device.makeContext()
        let channel: BackendChannel
        do {
            // Pumps before the server connection exists move nothing.
            channel = try device.bindChannel(events: events, guestPort: guestPort, on: context) { () throws(DeviceFault) in
                try engine.pump()
            }
        } catch {
            context.stop()
            throw XenStoreRingError.eventChannel(error)
        }
        self.channel = channel
        // `wake` runs from the server's callback queue (or the relay's
        // threads), on whichever thread: it only schedules the pump on this
        // ring's context.
        peer.attach(domain: domain, output: { bytes in engine.outbox.withLock { $0 += bytes } },
                    wake: { channel.schedule() })
        engine.attached.store(true, ordering: .releasing)
        channel.schedule()
    }

    deinit { engine.detach() }

    /// Whether the connection was shut down for a protocol violation.
    public var isDead: Bool { device.isDisabled }

    /// Bytes of replies and events waiting for room in `rsp`.
    public var pendingOutputCount: Int { engine.outbox.withLock { $0.count } }

    /// Asks for a pump on the connection's context. Returns at once.
    public func pump() { channel.schedule() }

    /// Waits until every pump asked for before this call has run. False on timeout.
    public func sync(timeout: Duration = .seconds(60)) -> Bool { device.sync(timeout: timeout) }

    /// The domain ended: stops the connection's context (waiting for a
    /// running pump) and disconnects from the server.
    public func shutdown() {
        device.stop()
        engine.detach()
    }
}
