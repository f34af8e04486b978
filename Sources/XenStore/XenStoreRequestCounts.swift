import XenABI

/// One domain's XenStore requests, as its wire connections (a guest's
/// ring, the toolstack's sockets) sent them: what the daemon exports as
/// `pvh_xenstore_requests_total` and `pvh_xenstore_errors_total`. C
/// xenstored keeps per-domain accounting for its quotas
/// (tools/xenstored/domain.c); these are the same requests counted for
/// metrics, by the connection's domain.
public struct XenStoreRequestCounts: Sendable, Equatable {
    /// Requests by type: xs_wire.h's name without `XS_`, in lower case
    /// (`read`, `write`, `transaction_start`, ...), `unknown` for a type
    /// the header does not define.
    public var requests: [String: UInt64] = [:]
    /// Error replies by errno name (`ENOENT`, `EACCES`, ...; xs_wire.h's
    /// `xsd_errors`).
    public var errors: [String: UInt64] = [:]

    public init() {}

    /// Counts one request of `type` and its reply (an `XS_ERROR` reply's
    /// errno name is counted in `errors`).
    mutating func count(_ type: String, reply: XenStoreMessage?) {
        requests[type, default: 0] &+= 1
        guard let reply, reply.type == .error else { return }
        let name = XenStoreWire.strings(reply.payload).first ?? ""
        // Only names the server itself sends: a closed set of labels.
        errors[XenStoreError(wireName: name)?.wireName ?? "EIO", default: 0] &+= 1
    }
}
