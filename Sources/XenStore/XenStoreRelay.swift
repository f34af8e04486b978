import Dispatch
import Foundation
import Locking
import Synchronization
import XenABI

/// A guest's XenStore ring relayed to a store in another process: the
/// toolstack's guest process forwards the ring's requests over a stream the
/// host daemon handed it, whose far end the daemon serves as a connection of
/// its `XenStoreServer` as the guest's domain, unprivileged (VMM's
/// `XenStoreStreamConnection`). The guest therefore gets what the daemon's
/// store says, with the daemon's permissions and quotas: this process
/// cannot widen what the guest may do.
///
/// What the relay itself checks: the guest's framing (a header with `len >
/// XENSTORE_PAYLOAD_MAX` is `.close`, so the ring sets `error = PROTO` as
/// with the store in-process; only whole frames cross), and the store's
/// framing (a broken frame ends the relay).
///
/// Bounded. Requests wait in one queue for the writer thread
/// (`pvh-xs-relay-w`); while it holds `maximumQueuedRequests` bytes or
/// more, `acceptsInput` is false and the ring leaves the guest's requests
/// unread. The reader thread (`pvh-xs-relay-r`) reads the store's output
/// only while the guest has less than `maximumPendingOutput` bytes of it
/// not yet taken by the ring; past that the daemon's own flow control
/// stops reading this guest's requests and drops its watch events, as it
/// does for a ring it serves directly.
///
/// Reset (xenstore-ring.txt "Connection reset", or a new boot of the
/// domain attaching): the partial request and the undelivered output are
/// dropped and XS_RESET_WATCHES is sent, which drops the connection's
/// watches and transactions in the store (C xenstored's do_reset_watches);
/// the replies to every request still unanswered, that one's included, and
/// the watch events before it are discarded, so nothing from before the
/// reset reaches the guest after it.
///
/// The end. The store closing the stream (or a write failing) sets
/// `failure` and wakes the ring, whose pump then fails the "xenstore"
/// device: the guest sees `error = COMM`, the fault is logged, the VMM and
/// the other devices go on.
public final class XenStoreRelay: XenStoreRingPeer {
    /// Bytes of requests queued for the store before the ring stops reading.
    public static let maximumQueuedRequests = 16 << 10
    /// Bytes of the store's output waiting for the ring before the reader stops.
    public static let maximumPendingOutput = 64 << 10

    private struct State: Sendable {
        var output: (@Sendable ([UInt8]) -> Void)?
        var wake: (@Sendable () -> Void)?
        var fromGuest = XenStoreFramer()
        var fromStore = XenStoreFramer()
        var toStore: [UInt8] = []
        /// Requests sent (or queued) whose reply has not come.
        var unanswered = 0
        /// Replies still to discard after a reset (and the events before them).
        var discarding = 0
        /// Output handed to the ring not yet taken by it.
        var pendingOutput = 0
        var failure: String?
        var stopped = false
    }

    private let stream: any XenStoreByteStream
    private let state = Lock(State())
    private let requestsQueued = DispatchSemaphore(value: 0)
    private let outputTaken = DispatchSemaphore(value: 0)
    /// The two threads still running; the last one closes the stream.
    private let running = Atomic<Int>(2)
    private let report: @Sendable (String) -> Void

    /// Starts relaying over `stream` (owned from now on: closed when both
    /// threads have ended). `report` hears, once, why the relay ended.
    public init(stream: any XenStoreByteStream, report: @escaping @Sendable (String) -> Void = { _ in }) {
        self.stream = stream
        self.report = report
        for (name, loop) in [("pvh-xs-relay-r", readLoop), ("pvh-xs-relay-w", writeLoop)] {
            let thread = Thread { [self] in
                loop()
                finished()
            }
            thread.stackSize = 1 << 20
            thread.start()
            // swift-corelibs-foundation applies a name only after start().
            thread.name = name
        }
    }

    /// Stops the relay for good (the process is done with the store).
    public func close() { fail("closed by this process") }

    // MARK: XenStoreRingPeer

    public func attach(domain: DomainID, output: @escaping @Sendable ([UInt8]) -> Void, wake: @escaping @Sendable () -> Void) {
        state.withLock { s in
            s.output = output
            s.wake = wake
        }
    }

    public func acceptsInput() -> Bool {
        state.withLock { $0.failure == nil && $0.toStore.count < Self.maximumQueuedRequests }
    }

    public func receive(_ bytes: [UInt8]) -> XenStoreReceiveResult {
        let result: XenStoreReceiveResult = state.withLock { s in
            guard s.failure == nil else { return .ok }
            let frames: [XenStoreFrame]
            do { frames = try s.fromGuest.feed(bytes) } catch { return .close("\(error)") }
            for frame in frames {
                switch frame {
                case .message(let m): s.toStore += m.bytes
                case .unknownType(let type, let requestID, let transactionID):
                    // The store answers it (ENOSYS, ids echoed); its payload does not matter.
                    for v in [type, requestID, transactionID, 0] { XenStoreWire.appendLittleEndian(v, to: &s.toStore) }
                }
                s.unanswered += 1
            }
            return .ok
        }
        requestsQueued.signal()
        return result
    }

    public func outputSent(_ count: Int) {
        state.withLock { $0.pendingOutput = max(0, $0.pendingOutput - count) }
        outputTaken.signal()
    }

    public func reset() {
        state.withLock { s in
            s.fromGuest.reset()
            s.pendingOutput = 0
            s.discarding = s.unanswered + 1
            s.unanswered += 1
            s.toStore += XenStoreMessage(type: .resetWatches).bytes
        }
        requestsQueued.signal()
        outputTaken.signal()
    }

    public var failure: String? { state.withLock { $0.failure } }

    /// The ring stopped: nothing more goes to it, and the store forgets the
    /// guest's watches and transactions (a next boot attaches afresh).
    public func detach() {
        state.withLock { s in
            s.output = nil
            s.wake = nil
        }
        reset()
    }

    // MARK: Threads

    private func readLoop() {
        while true {
            // Room for more of the store's output first (see the type's comment).
            while true {
                let (room, stop) = state.withLock { ($0.pendingOutput < Self.maximumPendingOutput, $0.failure != nil) }
                if stop { return }
                if room { break }
                outputTaken.wait()
            }
            guard let bytes = stream.read(max: 65536) else {
                fail("the store closed the connection")
                return
            }
            let wake: (@Sendable () -> Void)? = state.withLock { s in
                let frames: [XenStoreFrame]
                do { frames = try s.fromStore.feed(bytes) } catch {
                    s.failure = s.failure ?? "bad frame from the store: \(error)"
                    return s.wake
                }
                for case .message(let m) in frames {
                    if m.type != .watchEvent {
                        s.unanswered = max(0, s.unanswered - 1)
                        if s.discarding > 0 {
                            s.discarding -= 1
                            continue
                        }
                    } else if s.discarding > 0 {
                        continue
                    }
                    guard let output = s.output else { continue }
                    let out = m.bytes
                    s.pendingOutput += out.count
                    output(out)
                }
                return s.wake
            }
            wake?()
            if failure != nil {
                fail(failure ?? "")
                return
            }
        }
    }

    private func writeLoop() {
        while true {
            requestsQueued.wait()
            let (bytes, stop) = state.withLock { s in
                defer { s.toStore = [] }
                return (s.toStore, s.failure != nil)
            }
            if stop { return }
            guard !bytes.isEmpty else { continue }
            guard stream.writeAll(bytes) else {
                fail("the store's end is closed (write failed)")
                return
            }
            // Room in the queue again: the ring may read requests it left.
            state.withLock { $0.wake }?()
        }
    }

    /// Ends the relay once: wakes the ring (whose pump sees `failure`) and both threads.
    private func fail(_ reason: String) {
        let (first, wake) = state.withLock { s in
            let first = !s.stopped
            s.stopped = true
            if s.failure == nil { s.failure = reason }
            return (first, s.wake)
        }
        guard first else { return }
        stream.shutdown()
        requestsQueued.signal()
        outputTaken.signal()
        report(failure ?? reason)
        wake?()
    }

    private func finished() {
        if running.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0 { stream.close() }
    }
}
