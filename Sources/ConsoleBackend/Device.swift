import DeviceRuntime
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
///
/// The device runs on the device runtime: a guest notification or host
/// input only schedules the pump on the console's own context (thread
/// `pvh-console`), which moves bytes both ways and writes guest output to
/// the host sink there, in order (one pump at a time). A guest that breaks
/// the ring protocol disables the console only, through the runtime's fault
/// path; the guest goes on without it.
public final class ConsoleBackend: Sendable {
    /// What the backend tells its owner.
    public enum Event: Sendable, Equatable {
        /// The guest broke the ring protocol (impossible indices): the console
        /// is shut down, the guest goes on without it.
        case hostileGuest(String)
        /// The ring failed for another reason (its page is not RAM): the
        /// console is shut down likewise.
        case failed(String)
    }

    private let engine: ConsoleEngine
    /// Bytes moved each way.
    public var metrics: ConsoleMetrics { engine.metrics }
    private let channel: BackendChannel

    /// The console's device in the runtime: its metrics and fault state.
    public var device: RuntimeDevice { channel.device }
    /// The guest-side port the toolstack puts in HVM_PARAM_CONSOLE_EVTCHN.
    public let guestPort: EventChannelPort
    /// The console page's frame (HVM_PARAM_CONSOLE_PFN).
    public let frame: GuestFrameNumber

    /// Sets up the console at `frame`: allocates the guest's unbound port for
    /// the backend domain and binds the backend's end to it, as the toolstack
    /// and xenconsoled do, on a new device "console" of `runtime`. `output`
    /// receives guest output in order, on the console's thread. `report` hears
    /// the fault that disabled the console (the runtime also logs it).
    public init(memory: any GuestMemory, frame: GuestFrameNumber, events: EventChannelTable, domain: DomainID,
                runtime: DeviceRuntime,
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
        let engine = ConsoleEngine(ring: ring, output: output)
        self.engine = engine
        // The guest-visible effect of a fault is silence: the page and the
        // port stay as they are and nothing more is served (Linux's hvc_xen
        // likewise treats impossible indices as fatal to the console only).
        let device = runtime.makeDevice("console") { fault in
            report(fault.kind == .hostileGuest ? .hostileGuest(fault.reason) : .failed(fault.reason))
        }
        let context = device.makeContext()
        do {
            channel = try device.bindChannel(events: events, guestPort: guestPort, on: context) { () throws(DeviceFault) in
                try engine.pump()
            }
        } catch {
            context.stop()
            throw .eventChannel(error)
        }
    }

    /// Queues host input (keyboard bytes) and has the console's context
    /// deliver what fits. Returns at once.
    public func input(_ bytes: [UInt8]) {
        engine.ring.withLock { $0.queueInput(bytes) }
        ConsoleMetrics.add(engine.metrics.inputQueued, bytes.count)
        channel.schedule()
    }

    /// False while enough input waits for the guest: stop reading the terminal.
    public var acceptsInput: Bool { engine.ring.withLock { $0.acceptsInput } }

    /// Asks for a pump on the console's context (both directions). Returns at once.
    public func pump() { channel.schedule() }

    /// Waits until every pump asked for before this call has run (guest
    /// output written to the host). False on timeout.
    public func sync(timeout: Duration = .seconds(60)) -> Bool { device.sync(timeout: timeout) }

    /// The domain ended: a last pump writes what the guest left in the ring,
    /// then the console's context stops.
    public func shutdown(timeout: Duration = .seconds(10)) {
        channel.schedule()
        _ = device.sync(timeout: timeout)
        device.stop()
    }
}

/// Why the console could not be set up.
public enum ConsoleBackendError: Error, Sendable {
    case ring(XenRingError)
    case eventChannel(XenErrno)
}
