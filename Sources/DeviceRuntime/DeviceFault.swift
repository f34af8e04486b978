import XenRing

/// Why a device stopped serving its guest: what a pump throws, and what the
/// runtime's one fault path (`RuntimeDevice.fail(_:)`) acts on.
///
/// The style guide's three outcomes (§4) for a device: a guest error goes
/// back to the guest in the ring's own reply and is no fault; a hostile
/// guest (impossible ring indices, a frame the protocol forbids) or a
/// failure of the backend's own host side disables that device only. Never
/// the VMM, never another device: Linux's backends do the same
/// (xen-blkback's `xen_blkif_schedule` stops the ring and calls
/// `xenbus_dev_fatal`; hvc_xen's `domU_read_console` and xen-netback's
/// `xenvif_fatal_tx_err` stop only the offending ring).
public struct DeviceFault: Error, Hashable, Sendable, CustomStringConvertible {
    /// Who is to blame.
    public enum Kind: Hashable, Sendable {
        /// The guest broke the device's protocol.
        case hostileGuest
        /// The backend's host side or guest memory failed (not provably the guest's doing).
        case backendFailure
    }

    public var kind: Kind
    /// What happened, for the log line and the xenbus `error` node.
    public var reason: String

    /// A fault of `kind` described by `reason`.
    public init(kind: Kind, reason: String) {
        self.kind = kind
        self.reason = reason
    }

    /// The guest broke the protocol.
    public static func hostileGuest(_ reason: String) -> DeviceFault { DeviceFault(kind: .hostileGuest, reason: reason) }

    /// A shared ring failed: `XenRingError.isHostileGuest` decides who is to
    /// blame (an index overrun is the guest's, io/ring.h
    /// RING_REQUEST_PROD_OVERFLOW; a ring outside RAM or a backend bug is not).
    public init(_ error: XenRingError) {
        self.init(kind: error.isHostileGuest ? .hostileGuest : .backendFailure, reason: "\(error)")
    }

    public var description: String {
        switch kind {
        case .hostileGuest: "hostile guest: \(reason)"
        case .backendFailure: "backend failure: \(reason)"
        }
    }
}
