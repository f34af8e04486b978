import Synchronization

/// What one block device did, over all its queues and connections (the
/// device runtime's `DeviceMetrics` count its pumps, notifications and
/// faults, per connection). Relaxed atomics, like Firecracker's
/// `BlockDeviceMetrics`: read by tests, `pvh` and benchmarks, never used
/// for synchronisation.
public final class BlockMetrics: Sendable {
    /// Requests taken off the rings, by the operation they named
    /// (an INDIRECT request counts as `indirectRequests` and as its
    /// indirect operation's).
    public let readRequests = Atomic<UInt64>(0)
    public let writeRequests = Atomic<UInt64>(0)
    public let flushRequests = Atomic<UInt64>(0)
    public let barrierRequests = Atomic<UInt64>(0)
    public let discardRequests = Atomic<UInt64>(0)
    public let indirectRequests = Atomic<UInt64>(0)
    /// Requests with an operation blkif does not define (answered EOPNOTSUPP).
    public let unknownRequests = Atomic<UInt64>(0)
    /// Bytes read from the disk into guest pages.
    public let bytesRead = Atomic<UInt64>(0)
    /// Bytes written from guest pages to the disk.
    public let bytesWritten = Atomic<UInt64>(0)
    /// Responses with BLKIF_RSP_ERROR (a bad request, grant or host I/O).
    public let errorResponses = Atomic<UInt64>(0)
    /// Responses with BLKIF_RSP_EOPNOTSUPP.
    public let notSupportedResponses = Atomic<UInt64>(0)
    /// Of `errorResponses`, the requests that failed a check before any I/O.
    public let rejectedRequests = Atomic<UInt64>(0)
    /// Of `errorResponses`, host I/O errors.
    public let hostErrors = Atomic<UInt64>(0)
    /// Host operations (a write or a flush) a queue ran on its own thread
    /// instead of submitting them (`BlockDeviceConfiguration.runsLoneOperationsInline`):
    /// how often a frontend kept one request in flight and waited for it.
    public let inlineOperations = Atomic<UInt64>(0)
    /// Requests taken but not yet answered, over all queues (a gauge).
    public let requestsInFlight = Atomic<Int>(0)
    /// Connections failed by a fault (a ring the guest corrupted, a failure
    /// of the backend's host side): the device went through xenbus `fatal`.
    /// Counted here as well as in the connection's `DeviceMetrics`, which
    /// go with the connection.
    public let faults = Atomic<UInt64>(0)
    /// Of `faults`, those the guest is to blame for (`DeviceFault.Kind.hostileGuest`).
    public let hostileGuestFaults = Atomic<UInt64>(0)

    public init() {}

    static func bump(_ counter: borrowing Atomic<UInt64>, by n: Int = 1) {
        counter.wrappingAdd(UInt64(n), ordering: .relaxed)
    }

    static func gauge(_ gauge: borrowing Atomic<Int>, _ delta: Int) {
        gauge.wrappingAdd(delta, ordering: .relaxed)
    }

    /// Counts a request taken off a ring.
    func counted(_ operation: UInt8) {
        switch BlkifOperation(rawValue: operation) {
        case .read: Self.bump(readRequests)
        case .write: Self.bump(writeRequests)
        case .flushDiskCache: Self.bump(flushRequests)
        case .writeBarrier: Self.bump(barrierRequests)
        case .discard: Self.bump(discardRequests)
        case .indirect: Self.bump(indirectRequests)
        case nil: Self.bump(unknownRequests)
        }
    }

    /// Counts a response by its status.
    func responded(_ status: BlkifStatus) {
        switch status {
        case .okay: break
        case .error: Self.bump(errorResponses)
        case .notSupported: Self.bump(notSupportedResponses)
        }
    }
}
