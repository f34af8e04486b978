import Foundation
import HostIO
import Synchronization
import VMM
import Logging
import XenStore

#if canImport(Glibc)
import Glibc
#endif

/// A guest process's side of a daemon restart (docs/ARCHITECTURE.md: a
/// daemon restart): it listens on `<state>/<domid>.guest`, a socket only
/// the daemon's user reaches (mode 0600 in the 0700 state directory; a
/// peer of another uid, SO_PEERCRED, is refused at once), for a new
/// daemon that hands it, as SCM_RIGHTS with the one byte `tag`, its three
/// new connections: the privileged store connection, the guest ring's
/// relay and the console. The process then moves its store onto them
/// (`ReattachableXenStore`, `ReattachableRingPeer`), puts the console on
/// its stdin and stdout (dup2) and answers one line, `pvh-guest attached`.
/// The daemon, for its part, checks SO_PEERCRED's pid against the pid it
/// recorded for the guest, so a stale socket is never taken for it.
final class GuestReattachListener: Sendable {
    /// The byte sent with the descriptors: the message's version.
    static let tag: UInt8 = 1
    /// What the guest process answers once it moved.
    static let reply = "pvh-guest attached\n"
    /// How long a connected daemon has to send the descriptors.
    static let sendWithin = 5.0
    /// The byte sent with a hot-plugged disk's image (ImagePassing).
    static let imageTag: UInt8 = 2

    let path: String
    private let listener: UnixSocket
    private let store: ReattachableXenStore
    private let ring: ReattachableRingPeer
    /// Where a hot-plugged disk's passed image waits for its backend.
    private let images: PassedImages
    private let consoleReplaced: @Sendable () -> Void
    private let report: @Sendable (String) -> Void
    private let closed = Atomic<Bool>(false)

    init(path: String, store: ReattachableXenStore, ring: ReattachableRingPeer, images: PassedImages,
         consoleReplaced: @escaping @Sendable () -> Void, report: @escaping @Sendable (String) -> Void) throws(UnixSocketError) {
        self.path = path
        self.images = images
        self.store = store
        self.ring = ring
        self.consoleReplaced = consoleReplaced
        self.report = report
        listener = try UnixSocket.listen(at: path, backlog: 2)
        chmod(path, 0o600)
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "pvh-reattach"
        thread.start()
    }

    /// Stops listening and removes the socket (the process is ending).
    func close() {
        guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
        unlink(path)
        listener.shutdown()
    }

    private func acceptLoop() {
        while !closed.load(ordering: .acquiring) {
            guard let connection = listener.accept() else {
                if closed.load(ordering: .acquiring) { break }
                continue
            }
            serve(connection)
            connection.close()
        }
        listener.close()
    }

    private func serve(_ connection: UnixSocket) {
        guard case .success(let peer) = DescriptorPassing.peer(of: connection.fd), peer.uid == getuid() || peer.uid == 0 else {
            report("reattach: refused a peer that is not the daemon's user")
            return
        }
        guard connection.waitReadable(timeout: Self.sendWithin) else {
            report("reattach: pid \(peer.pid) sent nothing within \(Int(Self.sendWithin)) s")
            return
        }
        let received: (tag: UInt8, descriptors: [Int32])
        switch DescriptorPassing.receive(over: connection.fd) {
        case .success(let r): received = r
        case .failure(let error):
            report("reattach: pid \(peer.pid): \(error)")
            return
        }
        let fds = received.descriptors
        if received.tag == Self.imageTag {
            receiveImage(fds, over: connection, from: peer.pid)
            return
        }
        // Exactly three connected stream sockets, or nothing is taken.
        let sockets = fds.compactMap { UnixSocket(inheritedDescriptor: $0) }
        guard received.tag == Self.tag, fds.count == 3, sockets.count == 3 else {
            fds.forEach { _ = Glibc.close($0) }
            report("reattach: pid \(peer.pid): not the daemon's message (tag \(received.tag), \(fds.count) descriptors)")
            return
        }
        let log = report
        let problems = store.reattach(XenStoreRemote(stream: sockets[0]) { log("the daemon's store: connection lost: \($0)") })
        ring.reattach(XenStoreRelay(stream: sockets[1]) { log("guest ring relay: \($0)") })
        // The console: the daemon's new socketpair end on stdin and stdout.
        _ = dup2(sockets[2].fd, 0)
        _ = dup2(sockets[2].fd, 1)
        sockets[2].close()
        consoleReplaced()
        problems.forEach { report("reattach: \($0)") }
        report("reattached to a new daemon (pid \(peer.pid))")
        _ = connection.writeAll(Array(Self.reply.utf8))
    }
}

extension GuestReattachListener {
    /// A hot-plugged disk's image (ImagePassing): one descriptor, then the
    /// line `vbd <index>`; kept for the hot-plug watcher, answered
    /// `pvh-guest image <index>` (anything else: closed, no answer).
    fileprivate func receiveImage(_ fds: [Int32], over connection: UnixSocket, from pid: Int32) {
        guard fds.count == 1, let descriptor = fds.first else {
            fds.forEach { _ = Glibc.close($0) }
            report("hot-plug: pid \(pid): an image message with \(fds.count) descriptors")
            return
        }
        var line: [UInt8] = []
        while !line.contains(UInt8(ascii: "\n")) && line.count <= ImagePassing.maximumLine {
            guard connection.waitReadable(timeout: Self.sendWithin), let more = connection.read(max: ImagePassing.maximumLine + 1),
                  !more.isEmpty else { break }
            line += more
        }
        guard let index = ImagePassing.index(line) else {
            _ = Glibc.close(descriptor)
            report("hot-plug: pid \(pid): an image without its vdev line")
            return
        }
        guard images.deposit(descriptor, index: index) else {
            report("hot-plug: vbd \(index): \(PassedImages.maximumHeld) passed images wait already: refused")
            return
        }
        _ = connection.writeAll(ImagePassing.reply(index))
    }
}

/// A hot-plugged disk's image passed from the daemon to its guest process
/// over the process's reattach socket (docs/ARCHITECTURE.md: Sandbox): the
/// descriptor with the one byte `GuestReattachListener.imageTag`, then the
/// line `vbd <index>` (the vdev number), answered `pvh-guest image <index>`
/// once the process holds it; the daemon writes the device's directories
/// after that answer, so the watcher finds the image waiting.
enum ImagePassing {
    /// The longest line either way.
    static let maximumLine = 32

    static func request(_ index: Int) -> [UInt8] { Array("vbd \(index)\n".utf8) }
    static func reply(_ index: Int) -> [UInt8] { Array("pvh-guest image \(index)\n".utf8) }

    /// The vdev number of a request line: 0 to Int32.max, decimal.
    static func index(_ line: [UInt8]) -> Int? {
        guard line.count <= maximumLine, line.last == UInt8(ascii: "\n") else { return nil }
        let text = String(decoding: line.dropLast(), as: UTF8.self)
        guard text.hasPrefix("vbd ") else { return nil }
        let digits = text.dropFirst(4)
        guard (1...10).contains(digits.count), digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(digits),
              n <= Int(Int32.max) else { return nil }
        return n
    }
}

/// The file a guest process of the daemon leaves, just before it exits, with
/// the exit status it exits with (`DomainExit.exitStatus`, one line): a
/// daemon that did not start the process cannot reap it, and reads its end
/// here (no file, or an empty one: it was killed, a crash).
/// `<state>/<domid>.exit`. The process opens it empty at its start and
/// writes the status at its end through that descriptor: a jailed process
/// has no path to it (docs/ARCHITECTURE.md: Sandbox).
final class GuestExitRecord {
    private var fd: Int32

    /// Creates (or empties) the record at `path`, mode 0600; nil, with a
    /// warning, when it cannot (the daemon then takes the end for a crash).
    static func open(_ path: String, logger: Logger) -> GuestExitRecord? {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            logger.warning("exit record \(path): errno \(errno): a later daemon will take this guest's end for a crash")
            return nil
        }
        return GuestExitRecord(fd: fd)
    }

    private init(fd: Int32) { self.fd = fd }

    /// The status, one line, at the file's start (a few bytes in one pwrite:
    /// a reader finds the file empty or whole).
    func write(_ status: Int32) {
        guard fd >= 0 else { return }
        let bytes = Array("\(status)\n".utf8)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        close(fd)
        fd = -1
    }

    deinit { if fd >= 0 { close(fd) } }
}

extension GuestExitRecord {
    /// The status recorded at `path`, nil if none (or not a status).
    static func read(_ path: String) -> Int32? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: 16) else { return nil }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let status = Int32(text), (0...255).contains(status) else { return nil }
        return status
    }
}

/// A guest process's store connections that a new daemon can replace.
struct ReattachableDomainStore {
    let access: ReattachableXenStore
    let ring: ReattachableRingPeer
}

/// Listens at `path` for a new daemon (nil, with a warning, when the socket
/// cannot be made: the guest then runs on without).
func startReattachListener(_ path: String, store: ReattachableDomainStore, images: PassedImages, logger: Logger,
                           consoleReplaced: @escaping @Sendable () -> Void) -> GuestReattachListener? {
    do {
        return try GuestReattachListener(path: path, store: store.access, ring: store.ring, images: images,
                                         consoleReplaced: consoleReplaced) {
            logger.notice("\($0)")
        }
    } catch {
        logger.warning("reattach socket: \(error): this guest will not outlive its daemon's restart")
        return nil
    }
}
