#if canImport(Glibc)
import Glibc
#endif

/// Why a network link could not be made. `description` is one line naming
/// the interface or program at fault, ready for the CLI to print.
public enum NetworkLinkError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The interface name is empty-but-required, too long (IFNAMSIZ - 1 =
    /// 15 bytes) or holds '/', whitespace or ':' (dev_valid_name).
    case invalidInterfaceName(String)
    /// The MTU is outside what the link takes: from 68 (IPv4's minimum) to
    /// 65535 for a TAP (the largest IP packet), 65520 for passt.
    case invalidMTU(Int, maximum: Int)
    /// Opening /dev/net/tun or TUNSETIFF failed.
    case tapCreation(name: String, errno: Int32)
    /// A step after creation failed (TUNSETVNETHDRSZ, TUNSETOFFLOAD,
    /// SIOCSIFMTU, SIOCSIFFLAGS).
    case tapConfiguration(name: String, step: String, errno: Int32)
    /// `bridge=` names no interface.
    case bridgeNotFound(bridge: String, interface: String)
    /// SIOCBRADDIF failed (e.g. EOPNOTSUPP: the interface is not a bridge).
    case bridgeAttach(bridge: String, interface: String, errno: Int32)
    /// No passt executable at the path given, or on PATH.
    case passtNotFound(searched: String)
    /// posix_spawn of passt failed.
    case passtStart(path: String, errno: Int32)
    /// A system call while setting the link up failed (socketpair, eventfd).
    case system(call: String, errno: Int32)

    /// One line naming what failed and why.
    public var description: String {
        switch self {
        case .invalidInterfaceName(let name):
            "invalid interface name '\(name)': 1 to 15 bytes, no '/', ':' or whitespace"
        case .invalidMTU(let mtu, let maximum):
            "invalid MTU \(mtu): must be 68 to \(maximum)"
        case .tapCreation(let name, let e):
            e == EPERM || e == EACCES
                ? "cannot create TAP \(name): \(Self.describe(e)) (needs CAP_NET_ADMIN)"
                : "cannot create TAP \(name): \(Self.describe(e))"
        case .tapConfiguration(let name, let step, let e):
            "cannot configure TAP \(name): \(step): \(Self.describe(e))"
        case .bridgeNotFound(let bridge, let interface):
            "cannot add \(interface) to bridge \(bridge): no interface called \(bridge)"
        case .bridgeAttach(let bridge, let interface, let e):
            e == EOPNOTSUPP
                ? "cannot add \(interface) to bridge \(bridge): \(bridge) is not a Linux bridge"
                : "cannot add \(interface) to bridge \(bridge): \(Self.describe(e))"
        case .passtNotFound(let searched):
            "passt not found (looked for \(searched)): apt-get install passt"
        case .passtStart(let path, let e):
            "cannot start \(path): \(Self.describe(e))"
        case .system(let call, let e):
            "\(call): \(Self.describe(e))"
        }
    }

    /// strerror(3) in lower case ("operation not permitted").
    static func describe(_ e: Int32) -> String {
        // SAFETY: strerror returns a NUL-terminated string valid until the
        // next strerror call on this thread; it is copied at once.
        let text = unsafe String(cString: strerror(e))
        guard let first = text.first else { return "errno \(e)" }
        return first.lowercased() + text.dropFirst()
    }
}
