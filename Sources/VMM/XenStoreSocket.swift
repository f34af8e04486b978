#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Locking
import Synchronization
import XenABI
import XenStore

/// The control domain's door to the store: xenstored's Unix socket, served
/// with the wire protocol of xs_wire.h exactly as on the ring, so Debian's
/// `xenstore-*` clients (libxenstore: `XENSTORED_PATH`) and `pvh xenstore`
/// work unchanged. Every peer is dom0 and privileged, as on Xen where only
/// root can open the socket; the socket file is created in a 0700 directory.
///
/// One thread per peer: it reads requests (blocking) and writes replies and
/// watch events without blocking the store. The store's output callback only
/// appends to the peer's queue and wakes the thread (an eventfd), so a peer
/// that stops reading can never stall the store or another peer; one whose
/// queue passes `maximumPendingOutput` is disconnected (C xenstored bounds
/// a connection's pending output the same way).
public final class XenStoreSocketServer: Sendable {
    public let path: String
    private let listener: UnixSocket
    private let server: XenStoreServer
    private let peers = Lock<[Int32: XenStoreStreamConnection]>([:])
    private let stopped = Atomic<Bool>(false)
    /// Whether `start` ran: then the accept thread closes the listener.
    private let started = Atomic<Bool>(false)

    /// Bytes a peer may have waiting before it is dropped.
    public static let maximumPendingOutput = 4 << 20

    public init(path: String, server: XenStoreServer) throws(UnixSocketError) {
        self.path = path
        self.server = server
        listener = try UnixSocket.listen(at: path)
        // SAFETY: the String converts to a NUL-terminated path for the call.
        _ = unsafe chmod(path, 0o600)
    }

    /// Starts accepting peers on a thread of its own.
    public func start() {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "pvh-xenstored"
        thread.start()
    }

    /// Stops accepting, disconnects every peer and removes the socket file.
    public func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // SAFETY: as in init.
        unsafe unlink(path)
        // Shut down only: the accept thread closes the descriptor once its
        // accept has returned, so the number cannot be reused by another
        // socket while that thread is about to accept on it.
        if started.load(ordering: .acquiring) { listener.shutdown() } else { listener.shutdownAndClose() }
        let all = peers.withLock { p in
            defer { p.removeAll() }
            return Array(p.values)
        }
        all.forEach { $0.hangUp() }
    }

    private func acceptLoop() {
        defer { listener.close() }
        while !stopped.load(ordering: .acquiring), let socket = listener.accept() {
            let fd = socket.fd
            guard let connection = XenStoreStreamConnection.start(
                socket: socket, server: server, domain: .controlDomain, privileged: true, flowControl: false,
                onEnd: { [self] in peers.withLock { _ = $0.removeValue(forKey: fd) } })
            else {
                socket.close()
                continue
            }
            peers.withLock { $0[fd] = connection }
            if stopped.load(ordering: .acquiring) {
                connection.hangUp()
                break
            }
        }
    }
}

/// One connected stream served as a client of the store, on a thread of its
/// own (`pvh-xenstored-peer`): a peer of xenstored's socket (dom0,
/// privileged), or the far end of a guest's `XenStoreRelay` that the host
/// daemon handed a guest process (the guest's domain, unprivileged, flow
/// controlled). The thread reads requests (blocking) and writes replies and
/// watch events without blocking the store: the store's output callback
/// only appends to the peer's queue and wakes the thread through a pipe,
/// and a queue past `XenStoreSocketServer.maximumPendingOutput` drops the
/// peer.
///
/// With `flowControl` the connection is the server's flow-controlled kind,
/// as a ring it serves directly: what the socket took is reported with
/// `outputSent`, and while `acceptsInput` is false the thread leaves the
/// peer's requests unread (and the server drops its watch events, never its
/// replies), so a guest that stops reading costs the store a bounded
/// backlog.
public final class XenStoreStreamConnection: Sendable {
    private let peer: Peer

    private init(peer: Peer) { self.peer = peer }

    /// Serves `socket` (owned from now on: closed when the connection ends)
    /// as a client of `server` of `domain`; `onEnd` runs on the
    /// connection's thread when it has ended. Nil if the thread's wake-up
    /// pipe cannot be made (the socket is then the caller's).
    public static func start(socket: UnixSocket, server: XenStoreServer, domain: DomainID, privileged: Bool,
                             flowControl: Bool, onEnd: @escaping @Sendable () -> Void = {}) -> XenStoreStreamConnection? {
        guard let peer = Peer(socket: socket) else { return nil }
        let thread = Thread {
            serve(peer, server: server, domain: domain, privileged: privileged, flowControl: flowControl)
            onEnd()
            peer.close()
        }
        thread.name = "pvh-xenstored-peer"
        thread.start()
        return XenStoreStreamConnection(peer: peer)
    }

    /// Ends the connection (the peer reads end of stream).
    public func hangUp() { peer.hangUp() }

    private static func serve(_ peer: Peer, server: XenStoreServer, domain: DomainID, privileged: Bool, flowControl: Bool) {
        let id = flowControl
            ? server.connect(domain: domain, privileged: privileged, output: { bytes in peer.enqueue(bytes) },
                             wake: { peer.signal() })
            : server.connect(domain: domain, privileged: privileged) { bytes in peer.enqueue(bytes) }
        defer { server.disconnect(id) }
        func flush() -> Bool {
            guard let sent = peer.flush() else { return false }
            if flowControl && sent > 0 { server.outputSent(sent, for: id) }
            return true
        }
        while !peer.isDead {
            let wantInput = !flowControl || server.acceptsInput(id)
            let (readable, writable, woken) = peer.socket.poll(readable: wantInput, writable: peer.hasPendingOutput,
                                                               wakeup: peer.wakeup)
            if woken { peer.drainWakeup() }
            if writable || woken { guard flush() else { return } }
            if readable {
                // Not asked for input: only a hang-up or an error wakes us here.
                guard wantInput, let bytes = peer.socket.read() else { return }
                if case .close = server.receive(bytes, from: id) { return }
                guard flush() else { return }
            }
        }
    }
}

/// One socket peer: its pending output and the eventfd that wakes its thread.
private final class Peer: Sendable {
    let socket: UnixSocket
    /// The wake-up pipe: the thread polls `wakeup`, the store writes `signalFD`.
    let wakeup: Int32
    private let signalFD: Int32
    private struct Output {
        var bytes: [UInt8] = []
        var sent = 0
        var dead = false
    }
    private let output = Lock(Output())

    init?(socket: UnixSocket) {
        var ends: [Int32] = [-1, -1]
        // SAFETY: pipe(2) writes the two descriptors into the array's storage.
        guard unsafe ends.withUnsafeMutableBufferPointer({ unsafe pipe($0.baseAddress) }) == 0 else { return nil }
        for fd in ends {
            _ = fcntl(fd, F_SETFL, O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        self.socket = socket
        self.wakeup = ends[0]
        self.signalFD = ends[1]
    }

    var isDead: Bool { output.withLock { $0.dead } }
    var hasPendingOutput: Bool { output.withLock { $0.sent < $0.bytes.count } }

    /// Called by the store with its lock held: append and wake, never block.
    func enqueue(_ bytes: [UInt8]) {
        let wake = output.withLock { o -> Bool in
            guard !o.dead else { return false }
            if o.bytes.count - o.sent + bytes.count > XenStoreSocketServer.maximumPendingOutput {
                o.dead = true
            } else {
                o.bytes += bytes
            }
            return true
        }
        if wake { signal() }
    }

    /// Writes what the socket takes now: the count written, nil once the peer is gone.
    func flush() -> Int? {
        output.withLock { o in
            guard !o.dead else { return nil }
            var written = 0
            while o.sent < o.bytes.count {
                let n = socket.writeNonBlocking(o.bytes[o.sent...])
                if n < 0 {
                    o.dead = true
                    return nil
                }
                if n == 0 { break }
                o.sent += n
                written += n
            }
            if o.sent == o.bytes.count {
                o.bytes.removeAll(keepingCapacity: true)
                o.sent = 0
            } else if o.sent > 65536 {
                o.bytes.removeFirst(o.sent)
                o.sent = 0
            }
            return written
        }
    }

    func hangUp() {
        output.withLock { $0.dead = true }
        Glibc.shutdown(socket.fd, Int32(SHUT_RDWR))
        signal()
    }

    func drainWakeup() {
        var buffer = [UInt8](repeating: 0, count: 256)
        // SAFETY: read(2) writes at most `count` bytes into the array's storage.
        while unsafe buffer.withUnsafeMutableBytes({ unsafe Glibc.read(wakeup, $0.baseAddress, $0.count) }) > 0 {}
    }

    func signal() {
        // A full pipe already holds a wake-up: EAGAIN is fine.
        let one: [UInt8] = [1]
        // SAFETY: write(2) reads the one byte of the array.
        _ = unsafe one.withUnsafeBytes { unsafe Glibc.write(signalFD, $0.baseAddress, 1) }
    }

    func close() {
        socket.close()
        _ = Glibc.close(wakeup)
        _ = Glibc.close(signalFD)
    }
}

extension XenStoreRemote {
    /// A `XenStoreRemote` to `server` in this process over a socketpair
    /// whose far end `server` serves as `domain` (a `XenStoreStreamConnection`):
    /// the store reached over the wire exactly as a guest process reaches
    /// the daemon's, for tests and benchmarks. `close()` ends both ends.
    public static func loopback(to server: XenStoreServer, domain: DomainID = .controlDomain, privileged: Bool = true,
                                onConnectionLost: @escaping @Sendable (String) -> Void = { _ in }) throws(UnixSocketError) -> XenStoreRemote {
        let (near, far) = try UnixSocket.pair()
        guard XenStoreStreamConnection.start(socket: far, server: server, domain: domain, privileged: privileged,
                                             flowControl: !privileged) != nil else {
            near.close()
            far.close()
            throw UnixSocketError(operation: "pipe", path: "", errno: EMFILE)
        }
        return XenStoreRemote(stream: near, onConnectionLost: onConnectionLost)
    }
}
