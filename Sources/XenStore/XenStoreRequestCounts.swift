import XenABI

/// One domain's XenStore requests, as its wire connections (a guest's
/// ring, the toolstack's sockets) sent them: what the daemon exports as
/// `pvh_xenstore_requests_total` and `pvh_xenstore_errors_total`. C
/// xenstored keeps per-domain accounting for its quotas
/// (tools/xenstored/domain.c); these are the same requests counted for
/// metrics, by the connection's domain.
public struct XenStoreRequestCounts: Sendable, Equatable {
    /// Requests by type. Keyed by the closed set, so that counting makes
    /// no string; the label is made at export (`XenStoreRequestType.label`).
    public var requests: [XenStoreRequestType: UInt64] = [:]
    /// Error replies by errno (xs_wire.h's `xsd_errors`; the label is its
    /// `wireName`, `ENOENT`, `EACCES`, ...).
    public var errors: [XenStoreError: UInt64] = [:]

    public init() {}

    /// Counts one request of `type` and its reply (an `XS_ERROR` reply's
    /// errno is counted in `errors`).
    mutating func count(_ type: XenStoreRequestType, reply: XenStoreMessage?) {
        requests[type, default: 0] &+= 1
        guard let reply, reply.type == .error else { return }
        let name = XenStoreWire.strings(reply.payload).first ?? ""
        // Only errors the server itself sends: a closed set of labels.
        errors[XenStoreError(wireName: name) ?? .eio, default: 0] &+= 1
    }
}

/// A counted request's type: one xs_wire.h defines, or one it does not
/// (answered ENOSYS, `XenStoreCore.unknownTypeReply`).
public enum XenStoreRequestType: Hashable, Sendable {
    case known(XenStoreMessageType)
    case unknown

    /// The metric label: xs_wire.h's name without `XS_`, in lower case
    /// (`read`, `write`, `transaction_start`, ...), or `unknown`.
    public var label: String {
        switch self {
        case .known(let type): type.description.lowercased()
        case .unknown: "unknown"
        }
    }
}
