/// An error XenStore returns to a client: the closed set of `xsd_errors`
/// (io/xs_wire.h), sent on the wire as an `XS_ERROR` reply whose payload is
/// the errno's *name* plus a NUL (xenstore.txt, "ERROR" in the message list).
///
/// The cases are in `xsd_errors` order (the header asks for new errors to be
/// appended); `XenStoreTests` checks the names and the order against the C
/// table. Which operation fails with which error follows C xenstored
/// (tools/xenstored/core.c, transaction.c, watch.c, domain.c).
public enum XenStoreError: Error, CaseIterable, Hashable, Sendable, CustomStringConvertible {
    case einval, eacces, eexist, eisdir, enoent, enomem, enospc, eio
    case enotempty, enosys, erofs, ebusy, eagain, eisconn, e2big, eperm

    /// The name sent in an `XS_ERROR` payload (without the NUL), as
    /// `XSD_ERROR(x)` stringifies it.
    public var wireName: String {
        switch self {
        case .einval: "EINVAL"
        case .eacces: "EACCES"
        case .eexist: "EEXIST"
        case .eisdir: "EISDIR"
        case .enoent: "ENOENT"
        case .enomem: "ENOMEM"
        case .enospc: "ENOSPC"
        case .eio: "EIO"
        case .enotempty: "ENOTEMPTY"
        case .enosys: "ENOSYS"
        case .erofs: "EROFS"
        case .ebusy: "EBUSY"
        case .eagain: "EAGAIN"
        case .eisconn: "EISCONN"
        case .e2big: "E2BIG"
        case .eperm: "EPERM"
        }
    }

    /// The error named `name` (an `XS_ERROR` payload without its NUL), if any.
    public init?(wireName name: String) {
        guard let e = Self.allCases.first(where: { $0.wireName == name }) else { return nil }
        self = e
    }

    public var description: String { wireName }
}
