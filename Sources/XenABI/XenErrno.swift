import CXen

/// An error Xen returns to a guest (`XEN_E*`, xen/errno.h), negated in RAX.
/// Closed: only the values the header exposes to guests (EINTR and ERESTART
/// are hypervisor-internal and never reach a guest).
public enum XenErrno: Error, CaseIterable, Hashable, Sendable, CustomStringConvertible {
    case eperm, enoent, esrch, eio, enxio, e2big, enoexec, ebadf, echild, eagain
    case enomem, eacces, efault, ebusy, eexist, exdev, enodev, enotdir, eisdir
    case einval, enfile, emfile, enospc, erofs, emlink, edom, erange, edeadlk
    case enametoolong, enolck, enosys, enotempty, enodata, etime, ebadmsg
    case eoverflow, eilseq, enotsock, emsgsize, eopnotsupp, eaddrinuse
    case eaddrnotavail, enobufs, eisconn, enotconn, etimedout, econnrefused

    /// The positive `XEN_E*` value.
    public var rawValue: Int32 {
        let e: xen_errno
        switch self {
        case .eperm: e = XEN_EPERM
        case .enoent: e = XEN_ENOENT
        case .esrch: e = XEN_ESRCH
        case .eio: e = XEN_EIO
        case .enxio: e = XEN_ENXIO
        case .e2big: e = XEN_E2BIG
        case .enoexec: e = XEN_ENOEXEC
        case .ebadf: e = XEN_EBADF
        case .echild: e = XEN_ECHILD
        case .eagain: e = XEN_EAGAIN
        case .enomem: e = XEN_ENOMEM
        case .eacces: e = XEN_EACCES
        case .efault: e = XEN_EFAULT
        case .ebusy: e = XEN_EBUSY
        case .eexist: e = XEN_EEXIST
        case .exdev: e = XEN_EXDEV
        case .enodev: e = XEN_ENODEV
        case .enotdir: e = XEN_ENOTDIR
        case .eisdir: e = XEN_EISDIR
        case .einval: e = XEN_EINVAL
        case .enfile: e = XEN_ENFILE
        case .emfile: e = XEN_EMFILE
        case .enospc: e = XEN_ENOSPC
        case .erofs: e = XEN_EROFS
        case .emlink: e = XEN_EMLINK
        case .edom: e = XEN_EDOM
        case .erange: e = XEN_ERANGE
        case .edeadlk: e = XEN_EDEADLK
        case .enametoolong: e = XEN_ENAMETOOLONG
        case .enolck: e = XEN_ENOLCK
        case .enosys: e = XEN_ENOSYS
        case .enotempty: e = XEN_ENOTEMPTY
        case .enodata: e = XEN_ENODATA
        case .etime: e = XEN_ETIME
        case .ebadmsg: e = XEN_EBADMSG
        case .eoverflow: e = XEN_EOVERFLOW
        case .eilseq: e = XEN_EILSEQ
        case .enotsock: e = XEN_ENOTSOCK
        case .emsgsize: e = XEN_EMSGSIZE
        case .eopnotsupp: e = XEN_EOPNOTSUPP
        case .eaddrinuse: e = XEN_EADDRINUSE
        case .eaddrnotavail: e = XEN_EADDRNOTAVAIL
        case .enobufs: e = XEN_ENOBUFS
        case .eisconn: e = XEN_EISCONN
        case .enotconn: e = XEN_ENOTCONN
        case .etimedout: e = XEN_ETIMEDOUT
        case .econnrefused: e = XEN_ECONNREFUSED
        }
        return Int32(truncatingIfNeeded: e.rawValue)
    }

    /// The value a hypercall returns in RAX: `-rawValue`.
    public var negated: Int64 { -Int64(rawValue) }

    /// The error whose positive value is `rawValue`, or nil.
    public init?(rawValue: Int32) {
        guard let match = Self.allCases.first(where: { $0.rawValue == rawValue }) else { return nil }
        self = match
    }

    public var description: String { "-E(\(rawValue))" }
}
