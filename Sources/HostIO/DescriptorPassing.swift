import CHostIO
#if canImport(Glibc)
import Glibc
#endif

/// Descriptors passed over a connected Unix stream socket (unix(7),
/// SCM_RIGHTS), and who is at its other end (SO_PEERCRED): how a new pvh
/// daemon hands a running guest process its new store and console
/// connections (docs/ARCHITECTURE.md: a daemon restart).
public enum DescriptorPassing {
    /// The most descriptors one message carries.
    public static let maximumCount = 8

    /// Sends one byte, `tag`, with `descriptors` (this process keeps its
    /// own copies). 0, or the errno.
    public static func send(_ descriptors: [Int32], tag: UInt8, over socket: Int32) -> Int32 {
        guard descriptors.count <= maximumCount else { return EINVAL }
        // SAFETY: `descriptors` is a live array of `count` ints for the call.
        let r = unsafe descriptors.withUnsafeBufferPointer { unsafe pvh_send_descriptors(socket, $0.baseAddress, UInt32($0.count), tag) }
        return -r
    }

    /// Receives one byte and the descriptors sent with it (at most
    /// `maximumCount`, close-on-exec, now this process's to close): the tag
    /// and the descriptors, or the errno (EPIPE at end of stream, EMSGSIZE
    /// when more came than fit: none is kept then).
    public static func receive(over socket: Int32) -> Result<(tag: UInt8, descriptors: [Int32]), DescriptorPassingError> {
        var fds = [Int32](repeating: -1, count: maximumCount)
        var tag: UInt8 = 0
        // SAFETY: `fds` has room for `maximumCount` ints and `tag` is a live
        // local, both for the call.
        let n = unsafe fds.withUnsafeMutableBufferPointer { unsafe pvh_receive_descriptors(socket, $0.baseAddress, UInt32($0.count), &tag) }
        guard n >= 0 else { return .failure(DescriptorPassingError(errno: -n)) }
        return .success((tag, Array(fds.prefix(Int(n)))))
    }

    /// The pid and uid of the process at the other end of `socket` when it
    /// connected, or the errno.
    public static func peer(of socket: Int32) -> Result<(pid: Int32, uid: UInt32), DescriptorPassingError> {
        var pid: pid_t = 0
        var uid: uid_t = 0
        // SAFETY: `pid` and `uid` are live locals for the call.
        let r = unsafe pvh_peer_credentials(socket, &pid, &uid)
        guard r == 0 else { return .failure(DescriptorPassingError(errno: -r)) }
        return .success((pid, uid))
    }
}

/// A descriptor-passing call's errno.
public struct DescriptorPassingError: Error, Hashable, Sendable, CustomStringConvertible {
    public let errno: Int32
    // SAFETY: strerror returns a NUL-terminated string, copied at once.
    public var description: String { unsafe String(cString: strerror(errno)) }
}
