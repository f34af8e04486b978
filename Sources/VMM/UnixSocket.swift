#if canImport(Glibc)
import Glibc
#endif
import XenStore

/// Why a Unix socket operation failed: the call and its errno.
public struct UnixSocketError: Error, CustomStringConvertible, Sendable, Equatable {
    public let operation: String
    public let path: String
    public let errno: Int32

    public var description: String {
        // SAFETY: strerror returns a static NUL-terminated string.
        "\(path): \(operation): \(unsafe String(cString: strerror(errno)))"
    }
}

/// A connected or listening `AF_UNIX` stream socket, owned: closed once in
/// `close()` (or never, if ownership passes on). The XenStore socket
/// (libxenstore's XENSTORED_PATH) and the `pvh` CLI client both use it.
public struct UnixSocket: Sendable {
    public let fd: Int32

    init(fd: Int32) { self.fd = fd }

    /// Takes ownership of a connected stream socket this process inherited
    /// (a descriptor the host daemon handed a guest process, issue 12): it
    /// must be an `AF_UNIX` stream socket, and is marked close-on-exec so it
    /// goes no further. Nil for anything else (EBADF, ENOTSOCK, a datagram
    /// or listening socket).
    public init?(inheritedDescriptor fd: Int32) {
        var type: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        var listening: Int32 = 0
        var listeningLength = socklen_t(MemoryLayout<Int32>.size)
        // SAFETY: getsockopt writes at most `length` bytes into each Int32.
        guard fd >= 0, unsafe getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) == 0,
              type == Int32(SOCK_STREAM.rawValue),
              unsafe getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &listeningLength) == 0, listening == 0
        else { return nil }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        self.fd = fd
    }

    /// A connected pair (socketpair(2), close-on-exec): the daemon keeps
    /// one end and hands the other to a guest process; tests use both.
    public static func pair() throws(UnixSocketError) -> (UnixSocket, UnixSocket) {
        var ends: [Int32] = [-1, -1]
        // SAFETY: socketpair writes the two descriptors into the array's storage.
        let rc = unsafe ends.withUnsafeMutableBufferPointer {
            unsafe socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, $0.baseAddress)
        }
        guard rc == 0 else { throw UnixSocketError(operation: "socketpair", path: "", errno: errno) }
        return (UnixSocket(fd: ends[0]), UnixSocket(fd: ends[1]))
    }

    /// The longest path `sockaddr_un.sun_path` holds, with its NUL.
    static let maximumPathLength = 107

    /// Creates, binds and listens at `path`. A stale socket file left by a
    /// process that died is replaced; a live one (something accepts on it)
    /// is not: EADDRINUSE.
    public static func listen(at path: String, backlog: Int32 = 16) throws(UnixSocketError) -> UnixSocket {
        if let probe = try? connect(to: path) {
            probe.close()
            throw UnixSocketError(operation: "bind", path: path, errno: EADDRINUSE)
        }
        // SAFETY: the String converts to a NUL-terminated path for the call.
        unsafe unlink(path)
        let socket = try make(path)
        let bound = try unsafe withAddress(path) { address, length in
            // SAFETY: `address` is a sockaddr_un of `length` bytes for the call.
            unsafe bind(socket.fd, address, length)
        }
        guard bound == 0 else {
            let e = errno
            socket.close()
            throw UnixSocketError(operation: "bind", path: path, errno: e)
        }
        guard Glibc.listen(socket.fd, backlog) == 0 else {
            let e = errno
            socket.close()
            throw UnixSocketError(operation: "listen", path: path, errno: e)
        }
        return socket
    }

    /// Connects to the socket at `path`.
    public static func connect(to path: String) throws(UnixSocketError) -> UnixSocket {
        let socket = try make(path)
        while true {
            let rc = try unsafe withAddress(path) { address, length in
                // SAFETY: as in listen(at:).
                unsafe Glibc.connect(socket.fd, address, length)
            }
            if rc == 0 { return socket }
            if errno == EINTR { continue }
            let e = errno
            socket.close()
            throw UnixSocketError(operation: "connect", path: path, errno: e)
        }
    }

    /// Waits for the next connection; nil once the listener was shut down.
    public func accept() -> UnixSocket? {
        while true {
            // SAFETY: null address and length: accept writes nothing back.
            let fd = Glibc.accept(self.fd, nil, nil)
            if fd >= 0 {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                return UnixSocket(fd: fd)
            }
            if errno == EINTR || errno == ECONNABORTED { continue }
            return nil
        }
    }

    /// Reads what is there (blocking until something is): nil at end of
    /// stream or on error.
    public func read(max: Int = 65536) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            // SAFETY: recv writes at most `count` bytes into the array's storage.
            let n = unsafe buffer.withUnsafeMutableBytes { unsafe recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 { return Array(buffer[..<n]) }
            if n < 0 && errno == EINTR { continue }
            return nil
        }
    }

    /// Writes all of `bytes`, blocking; false if the peer went away.
    @discardableResult
    public func writeAll(_ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = send(bytes[offset...], flags: Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += n
        }
        return true
    }

    /// Writes what fits without blocking: the count written, 0 when the
    /// socket buffer is full, -1 when the peer went away.
    public func writeNonBlocking(_ bytes: ArraySlice<UInt8>) -> Int {
        while true {
            let n = send(bytes, flags: Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            if n >= 0 { return n }
            if errno == EINTR { continue }
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1
        }
    }

    /// Blocks until the socket is readable (if asked; a hang-up or error
    /// counts as readable either way), writable (if asked) or `wakeup` is
    /// readable. Returns (readable, writable, woken).
    public func poll(readable: Bool = true, writable: Bool, wakeup: Int32) -> (readable: Bool, writable: Bool, woken: Bool) {
        var fds = [
            pollfd(fd: fd, events: (readable ? Int16(POLLIN) : 0) | (writable ? Int16(POLLOUT) : 0), revents: 0),
            pollfd(fd: wakeup, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            // SAFETY: poll reads and writes the two pollfd entries of the array.
            let rc = unsafe fds.withUnsafeMutableBufferPointer { unsafe Glibc.poll($0.baseAddress, 2, -1) }
            if rc >= 0 { break }
            if errno != EINTR { return (true, false, false) }
        }
        let errorBits = Int16(POLLERR) | Int16(POLLHUP) | Int16(POLLNVAL)
        return ((fds[0].revents & (Int16(POLLIN) | errorBits)) != 0,
                (fds[0].revents & Int16(POLLOUT)) != 0,
                (fds[1].revents & Int16(POLLIN)) != 0)
    }

    /// Waits up to `timeout` seconds for something to read (or end of stream).
    public func waitReadable(timeout: Double) -> Bool {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
        let ms = timeout.isFinite ? Int32(min(max(timeout * 1000, 0), Double(Int32.max))) : -1
        // SAFETY: poll reads and writes the one pollfd of the array.
        let rc = unsafe fds.withUnsafeMutableBufferPointer { unsafe Glibc.poll($0.baseAddress, 1, ms) }
        return rc > 0
    }

    /// Bounds every blocking send on this socket (SO_SNDTIMEO, socket(7)):
    /// `writeAll` returns false once a send has waited `seconds` for room.
    public func setSendTimeout(seconds: Double) {
        let whole = Int(max(0, seconds))
        var value = timeval(tv_sec: whole, tv_usec: Int(max(0, seconds - Double(whole)) * 1_000_000))
        // SAFETY: setsockopt reads one timeval from the live local.
        _ = unsafe setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Stops a blocked accept()/read() in another thread, then closes.
    public func shutdownAndClose() {
        shutdown()
        close()
    }

    /// Ends both directions: a read blocked in another thread returns nil
    /// (end of stream), the peer reads end of stream. The descriptor stays.
    public func shutdown() { Glibc.shutdown(fd, Int32(SHUT_RDWR)) }

    public func close() { _ = Glibc.close(fd) }

    private func send(_ bytes: ArraySlice<UInt8>, flags: Int32) -> Int {
        // SAFETY: send reads at most `count` bytes from the slice's storage.
        unsafe bytes.withUnsafeBytes { unsafe Glibc.send(fd, $0.baseAddress, $0.count, flags) }
    }

    private static func make(_ path: String) throws(UnixSocketError) -> UnixSocket {
        guard path.utf8.count <= maximumPathLength else {
            throw UnixSocketError(operation: "socket path longer than \(maximumPathLength) bytes", path: path, errno: ENAMETOOLONG)
        }
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw UnixSocketError(operation: "socket", path: path, errno: errno) }
        return UnixSocket(fd: fd)
    }

    private static func withAddress(_ path: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Int32) throws(UnixSocketError) -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        // SAFETY: sun_path holds maximumPathLength + 1 bytes; make() checked
        // the length, and the zeroed struct supplies the NUL.
        unsafe withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { unsafe raw[i] = b }
        }
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        // SAFETY: the pointer covers the whole sockaddr_un for the call.
        return unsafe withUnsafePointer(to: &address) { pointer in
            unsafe pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe body($0, length) }
        }
    }
}

/// The store's wire protocol runs over a connected Unix socket
/// (`XenStoreRemote`, `XenStoreRelay`).
extension UnixSocket: XenStoreByteStream {}
