import Dispatch
import EventChannels
import Locking
import Synchronization
import XenABI

/// The backend end of one interdomain event channel, pumped on a device's
/// execution context: the one implementation every PV backend uses.
///
/// - Connect: `RuntimeDevice.allocateChannel` makes an unbound backend port
///   for a frontend to bind (the frontend reads it from XenStore and calls
///   EVTCHNOP_bind_interdomain, as a xenbus block or net frontend does);
///   `RuntimeDevice.bindChannel` binds to a guest port the toolstack left
///   unbound for the backend domain (HVM_PARAM_CONSOLE_EVTCHN,
///   HVM_PARAM_STORE_EVTCHN).
/// - A guest notification only schedules the pump on the context
///   (`EventChannelPeer.notify` runs on the sending vCPU's thread, inside
///   EVTCHNOP_send); the vCPU returns from the hypercall at once.
/// - The pump runs on the context's thread, never two at once for a
///   context; it returns whether the guest should hear an event, which the
///   channel then sends (`evtchn_send` by the backend domain). A pump that
///   throws a `DeviceFault` disables the whole device (`RuntimeDevice.fail`).
///
/// A block device with several rings has one channel (and context) per
/// ring; a net device's split TX/RX channels are two channels of one
/// queue, on one context or two.
public final class BackendChannel: Sendable {
    /// What a pump asks for when it returns.
    public enum PumpResult: Hashable, Sendable {
        /// Nothing the guest must hear about.
        case quiet
        /// Something moved (responses produced, room made): notify the guest.
        case notifyGuest
    }

    /// A device's pump: moves what can move on its ring(s) and says whether
    /// to notify the guest. Runs on the channel's context only.
    public typealias Pump = @Sendable () throws(DeviceFault) -> PumpResult

    /// The backend domain's port.
    public let port: EventChannelPort
    /// Where the pump runs.
    public let context: ExecutionContext
    /// The device the channel belongs to (its metrics and fault state).
    public let device: RuntimeDevice
    private let events: EventChannelTable
    private let work: ExecutionContext.Work
    private let closed = Atomic<Bool>(false)

    /// Hears the guest's sends on the backend port: schedules, nothing more.
    private final class Doorbell: EventChannelPeer {
        let work: ExecutionContext.Work
        let device: RuntimeDevice
        init(work: ExecutionContext.Work, device: RuntimeDevice) {
            self.work = work
            self.device = device
        }
        func notify(_ port: EventChannelPort) {
            if device.isDisabled {
                DeviceMetrics.bump(device.metrics.ignoredAfterFault)
                return
            }
            DeviceMetrics.bump(device.metrics.guestNotifications)
            work.schedule()
        }
    }

    init(device: RuntimeDevice, events: EventChannelTable, context: ExecutionContext, pump: @escaping Pump,
         connect: (any EventChannelPeer) throws(XenErrno) -> EventChannelPort) throws(XenErrno) {
        // The port is known only after connecting, and connecting may already
        // notify (Xen marks a freshly bound backend port pending), so the
        // first pump may run, and finish, before it is known: the pump reads
        // it from here once it is done, and a notification it asks for
        // before the port is set is remembered and sent when it is (else a
        // frontend that published requests before the bind, or while that
        // first pump ran, would never hear of their responses).
        let portBox = Lock<(port: EventChannelPort?, missed: Bool)>((nil, false))
        let work = context.makeWork { [device, events] in
            Self.run(pump, device: device, context: context, events: events) {
                portBox.withLock { b in
                    if b.port == nil { b.missed = true }
                    return b.port
                }
            }
        }
        let port: EventChannelPort
        do {
            port = try connect(Doorbell(work: work, device: device))
        } catch {
            work.cancel()
            throw error
        }
        let missed = portBox.withLock { b in
            b.port = port
            defer { b.missed = false }
            return b.missed
        }
        if missed {
            try? events.backendSend(port)
            DeviceMetrics.bump(device.metrics.notificationsToGuest)
        }
        self.port = port
        self.context = context
        self.device = device
        self.events = events
        self.work = work
    }

    /// Runs `pump`; `port` gives the port to notify on once it is done
    /// (nil, remembered, before the channel knows it).
    private static func run(_ pump: Pump, device: RuntimeDevice, context: ExecutionContext, events: EventChannelTable,
                            port: () -> EventChannelPort?) {
        guard !device.isDisabled else { return }
        let metrics = device.metrics
        DeviceMetrics.bump(metrics.pumps)
        if !context.isCurrent || device.isForbiddenThread() { DeviceMetrics.bump(metrics.pumpsOnForbiddenThreads) }
        do {
            if try pump() == .notifyGuest, let port = port() {
                try? events.backendSend(port)
                DeviceMetrics.bump(metrics.notificationsToGuest)
            }
        } catch {
            device.fail(error)
        }
    }

    /// Asks for a pump on the context because host-side work arrived
    /// (console input, XenStore output for this guest). Returns at once.
    public func schedule() {
        guard !device.isDisabled else { return }
        DeviceMetrics.bump(device.metrics.hostRequests)
        work.schedule()
    }

    /// Asks for a pump once `delay` has passed, for a backend that must
    /// wait before it can go on (xen-netback's `credit_timeout` while a vif
    /// is over its `rate`). A timer on a shared Dispatch queue only calls
    /// `schedule()`, so the pump still runs on the channel's context; a
    /// channel closed by then is not pumped.
    public func schedule(after delay: Duration) {
        let (seconds, attoseconds) = delay.components
        let nanoseconds = max(0, seconds) * 1_000_000_000 + max(0, attoseconds) / 1_000_000_000
        let deadline = DispatchTime.now() + .nanoseconds(Int(clamping: nanoseconds))
        DispatchQueue.global().asyncAfter(deadline: deadline) { [weak self] in
            guard let self, !self.closed.load(ordering: .acquiring) else { return }
            self.schedule()
        }
    }

    /// Makes the context's doorbell events (see `ExecutionContextDoorbell`)
    /// pump this channel: for a device whose host work (I/O completions)
    /// wakes the context directly.
    public func pumpOnDoorbellEvent() { context.runOnDoorbellEvent(work) }

    /// Notifies the guest now (`evtchn_send` by the backend domain), for a
    /// device that has something for the guest outside a pump.
    public func notifyGuest() {
        guard !closed.load(ordering: .acquiring) else { return }
        try? events.backendSend(port)
        DeviceMetrics.bump(device.metrics.notificationsToGuest)
    }

    /// Closes the backend port (the guest's end goes back to unbound) and
    /// stops pumping it; waits for a running pump unless called from it.
    public func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        work.cancel()
        _ = context.sync()
        try? events.backendClose(port)
    }
}

extension RuntimeDevice {
    /// A channel on a new unbound backend port for a frontend to bind
    /// (`EventChannelTable.backendAllocateUnbound`), pumped on `context`.
    /// -ENOSPC.
    public func allocateChannel(events: EventChannelTable, on context: ExecutionContext,
                                pump: @escaping BackendChannel.Pump) throws(XenErrno) -> BackendChannel {
        try BackendChannel(device: self, events: events, context: context, pump: pump) { (peer) throws(XenErrno) in
            try events.backendAllocateUnbound(peer: peer)
        }
    }

    /// A channel bound to `guestPort`, which the toolstack left unbound for
    /// the backend domain (`EventChannelTable.backendBindInterdomain`),
    /// pumped on `context`. The binding notifies once, so the first pump
    /// runs at once. -EINVAL if the port is not waiting for the backend.
    public func bindChannel(events: EventChannelTable, guestPort: EventChannelPort, on context: ExecutionContext,
                            pump: @escaping BackendChannel.Pump) throws(XenErrno) -> BackendChannel {
        try BackendChannel(device: self, events: events, context: context, pump: pump) { (peer) throws(XenErrno) in
            try events.backendBindInterdomain(guestPort: guestPort, peer: peer)
        }
    }
}
