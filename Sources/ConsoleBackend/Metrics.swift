import Synchronization

/// What the console moved, for `pvh` and tests (the device runtime's
/// `DeviceMetrics` counts its pumps, notifications and faults).
public final class ConsoleMetrics: Sendable {
    /// Guest output bytes written to the host sink.
    public let outputWritten = Atomic<UInt64>(0)
    /// Host input bytes queued for the guest.
    public let inputQueued = Atomic<UInt64>(0)

    public init() {}

    static func add(_ counter: borrowing Atomic<UInt64>, _ n: Int) {
        counter.wrappingAdd(UInt64(n), ordering: .relaxed)
    }
}
