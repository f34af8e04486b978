import GuestMemory
import Synchronization

/// A backend hold on one granted page kept across an operation (an I/O,
/// a packet) or, for a ring page, across a connection: a `GrantMapping`
/// that can be shared and released from a class. Releasing ends the hold:
/// the grant's GTF_reading/GTF_writing go, so release before responding.
public final class GrantHold: Sendable {
    /// The granted bytes.
    public let region: GuestPhysicalRange
    private let mapping: Mutex<GrantMapping?>

    public init(_ mapping: consuming GrantMapping) {
        region = mapping.region
        self.mapping = Mutex(Optional(mapping))
    }

    /// Ends the hold (idempotent; also at the end of the object's life).
    public func release() {
        mapping.withLock { $0 = nil }
    }
}
