import EventChannels
import GuestMemory
import Synchronization
import XenABI
import XenRing

/// The PV console backend (what xenconsoled is to Xen): serves the guest's
/// `xencons_interface` page (HVM_PARAM_CONSOLE_PFN) over an interdomain
/// event channel (HVM_PARAM_CONSOLE_EVTCHN), copying guest output to the host
/// and host input to the guest. Nothing is dropped: output waits in the ring
/// (the guest blocks on a full ring) while the host side is slow, and input
/// waits host-side while the guest is slow (see `ConsoleRing`).
public final class ConsoleBackend: EventChannelPeer, Sendable {
    /// What the backend tells its owner.
    public enum Event: Sendable, Equatable {
        /// The guest broke the ring protocol (impossible indices): the console
        /// is shut down, the guest goes on without it.
        case hostileGuest(String)
    }

    private struct State {
        var ring: ConsoleRing
        var backendPort: EventChannelPort?
        var dead = false
    }

    private let state: Mutex<State>
    private let events: EventChannelTable
    private let output: @Sendable ([UInt8]) -> Void
    private let report: @Sendable (Event) -> Void

    /// The guest-side port the toolstack puts in HVM_PARAM_CONSOLE_EVTCHN.
    public let guestPort: EventChannelPort
    /// The console page's frame (HVM_PARAM_CONSOLE_PFN).
    public let frame: GuestFrameNumber

    /// Sets up the console at `frame`: allocates the guest's unbound port for
    /// the backend domain and binds the backend's end to it, as the toolstack
    /// and xenconsoled do. `output` receives guest output in order.
    public init(memory: any GuestMemory, frame: GuestFrameNumber, events: EventChannelTable, domain: DomainID,
                output: @escaping @Sendable ([UInt8]) -> Void,
                report: @escaping @Sendable (Event) -> Void = { _ in }) throws(ConsoleBackendError) {
        let ring: ConsoleRing
        do { ring = try ConsoleRing(memory: memory, frame: frame) } catch { throw .ring(error) }
        do {
            guestPort = try events.allocateUnbound(domain: domain, remote: events.configuration.backendDomainID)
        } catch {
            throw .eventChannel(error)
        }
        self.frame = frame
        self.events = events
        self.output = output
        self.report = report
        self.state = Mutex(State(ring: ring))
        do {
            let port = try events.backendBindInterdomain(guestPort: guestPort, peer: self)
            state.withLock { $0.backendPort = port }
        } catch {
            throw .eventChannel(error)
        }
    }

    /// The guest sent an event on the console channel: move bytes both ways.
    public func notify(_ port: EventChannelPort) { pump() }

    /// Queues host input (keyboard bytes) and delivers what fits now.
    public func input(_ bytes: [UInt8]) {
        state.withLock { $0.ring.queueInput(bytes) }
        pump()
    }

    /// False while enough input waits for the guest: stop reading the terminal.
    public var acceptsInput: Bool { state.withLock { $0.ring.acceptsInput } }

    /// Moves bytes both ways, writes guest output to the host and notifies the
    /// guest if anything moved. Safe from any thread.
    public func pump() {
        // Output is written under the lock so two pumps (two vCPUs) keep the
        // guest's byte order; the event goes out after it is released.
        let (notifyPort, failure): (EventChannelPort?, String?) = state.withLock { s in
            guard !s.dead else { return (nil, nil) }
            do {
                let moved = try s.ring.pump()
                let out = s.ring.pendingOutput()
                if !out.isEmpty {
                    output(out)
                    s.ring.outputWritten(out.count)
                }
                return (moved.notifyGuest ? s.backendPort : nil, nil)
            } catch {
                s.dead = true
                return (nil, "\(error)")
            }
        }
        if let notifyPort { try? events.backendSend(notifyPort) }
        if let failure { report(.hostileGuest(failure)) }
    }
}

/// Why the console could not be set up.
public enum ConsoleBackendError: Error, Sendable {
    case ring(XenRingError)
    case eventChannel(XenErrno)
}
