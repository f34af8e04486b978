import Synchronization

/// Counters one device keeps (Firecracker's per-device metrics, e.g.
/// `BlockDeviceMetrics.event_fails`). Relaxed atomics: read by tests, `pvh`
/// and benchmarks, never used for synchronisation.
public final class DeviceMetrics: Sendable {
    /// Guest notifications on the device's channels (EVTCHNOP_send by the
    /// frontend), each of which only scheduled a pump.
    public let guestNotifications = Atomic<UInt64>(0)
    /// Host-side requests for a pump (console input, XenStore watch output).
    public let hostRequests = Atomic<UInt64>(0)
    /// Pumps run.
    public let pumps = Atomic<UInt64>(0)
    /// Pumps that ran on a thread other than their context's, or on one the
    /// runtime was told must never run device work (a vCPU thread). Zero by
    /// construction; counted so that tests and the VMM can check it.
    public let pumpsOnForbiddenThreads = Atomic<UInt64>(0)
    /// Events sent back to the guest.
    public let notificationsToGuest = Atomic<UInt64>(0)
    /// Faults that disabled the device (0 or 1: the first one disables it).
    public let faults = Atomic<UInt64>(0)
    /// Of `faults`, those the guest is to blame for (`DeviceFault.Kind.hostileGuest`,
    /// from `XenRingError.isHostileGuest` for a ring).
    public let hostileGuestFaults = Atomic<UInt64>(0)
    /// Guest notifications that arrived after the device was disabled.
    public let ignoredAfterFault = Atomic<UInt64>(0)

    public init() {}

    static func bump(_ counter: borrowing Atomic<UInt64>) {
        counter.wrappingAdd(1, ordering: .relaxed)
    }
}
