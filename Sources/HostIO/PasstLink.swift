#if canImport(Glibc)
import Glibc
#endif
import CHostIO
import GuestMemory
import Locking

/// User-mode networking through passt (passt(1), Debian's `passt`): no
/// privileges, no host configuration. passt runs as a child process on one
/// end of a socketpair (`--fd`), and frames cross it in qemu's stream
/// format (`PasstFrameCodec`). passt answers the guest's DHCP, NDP and ARP
/// itself, handing out the host's own address, and proxies its TCP, UDP and
/// ICMP through ordinary host sockets.
///
/// If passt exits, the link reports carrier loss, starts it again after a
/// back-off (100 ms, doubling to 5 s while it keeps dying), and reports the
/// carrier back; the guest keeps its address, as the new passt hands out
/// the same one.
///
/// passt's MTU (65520 by default) needs a frontend with scatter-gather; one
/// without it (a frame must fit one 4 KiB page) gets a passt restarted with
/// MTU 1500 when it connects (`frontendConnected`), so that DHCP and NDP
/// hand it an MTU it can take.
public final class PasstLink: NetworkLink, @unchecked Sendable {
    // SAFETY (Sendable): the lets are immutable; the child and its socket
    // live in `state`, under its lock, and a socket taken out of it is
    // closed only by the thread that took it.

    /// passt's default MTU: the largest 802.3 frame less its header, rounded
    /// down to 32 bits (passt(1), `--mtu`).
    public static let defaultMTU = 65520
    /// The first back-off before a restart, and the longest.
    static let firstRestartDelay: Int32 = 100
    static let longestRestartDelay: Int32 = 5000
    /// A passt that ran this long before dying is restarted after the first delay again.
    static let stableRun: Duration = .seconds(10)

    /// The MTU asked for (`--mtu`), the one passt hands a guest with
    /// scatter-gather (`runningMTU` is the one it runs with now).
    public let mtu: Int
    /// The MTU for a frontend without scatter-gather: Ethernet's.
    public static let pageFrameMTU = 1500
    /// None: checksums are completed before a frame reaches passt, and
    /// passt takes no segmentation frames (its socket carries plain frames).
    public let capabilities: NetworkLinkCapabilities = []
    /// The passt binary.
    public let executable: String
    /// Options given to passt after pvh's own (`-f -q --fd N --mtu M`, and
    /// `--runas nobody` as root):
    /// `--address` for each address asked for, then the caller's.
    public let extraArguments: [String]

    /// `user (passt pid N)`, or `user (passt not running)` while restarting.
    public var description: String {
        let pid = state.withLock { $0.child?.pid }
        return pid.map { "user (passt pid \($0))" } ?? "user (passt not running)"
    }

    /// One running passt and pvh's end of its socket.
    struct Child: Sendable {
        var socket: Int32
        var pid: pid_t
        var started: ContinuousClock.Instant
    }

    private struct State {
        var child: Child?
        var stopped = false
        /// The MTU the running passt was started with.
        var runningMTU: Int
        /// The MTU the connected frontend can take (`frontendConnected`);
        /// the reader restarts passt when it differs from `runningMTU`.
        var wantedMTU: Int
        /// The tail of a frame the socket took only part of: it goes on
        /// the stream before anything else (the reader sends it when the
        /// socket has room, or the next transmit does). Empty on a new stream.
        var pending: [UInt8] = []
        /// One frame's gather list and length prefix, rewritten for each
        /// transmit (under the lock) rather than allocated, as TapLink's.
        let vectors = IOVectorList(capacity: 20)
        // SAFETY: the closure writes nothing (the bytes start zeroed).
        let prefix = unsafe LinkHeaderBuffer(count: 4) { _ in }
    }

    private let state: Lock<State>
    private let reader: LinkThread
    /// Tells the reader a pending tail appeared (so it also polls for room).
    private let nudge: Int32
    private let restartCount = LinkCounter()

    /// Starts passt (`executable`, else `passt` on PATH, /usr/bin or /usr/sbin) with
    /// MTU `mtu`, which it also hands the guest by DHCP and NDP. `addresses`
    /// (at most one IPv4 and one IPv6, a vif's `ip=`) are what passt hands
    /// the guest instead of the host's own (`--address`).
    public init(mtu: Int = defaultMTU, addresses: [String] = [], executable: String? = nil,
                extraArguments: [String] = []) throws(NetworkLinkError) {
        guard (68...Self.defaultMTU).contains(mtu) else { throw .invalidMTU(mtu, maximum: Self.defaultMTU) }
        let path = try Self.locate(executable)
        self.mtu = mtu
        self.executable = path
        self.extraArguments = addresses.flatMap { ["--address", $0] } + extraArguments
        reader = try LinkThread()
        let nudge = pvh_eventfd()
        guard nudge >= 0 else { throw .system(call: "eventfd", errno: -nudge) }
        let child: Child
        do {
            child = try Self.spawn(path: path, mtu: mtu, extraArguments: self.extraArguments)
        } catch {
            close(nudge)
            throw error
        }
        self.nudge = nudge
        state = Lock(State(child: child, runningMTU: mtu, wantedMTU: mtu))
    }

    deinit {
        stop()
        close(nudge)
    }

    /// The pid of the running passt, nil while it is being restarted or once stopped.
    public var passtProcessID: pid_t? { state.withLock { $0.child?.pid } }

    /// How many times passt was started again (after it died, or for a new MTU).
    public var restarts: Int { restartCount.value }

    /// The MTU the running passt hands out now.
    public var runningMTU: Int { state.withLock { $0.runningMTU } }

    /// Asks the reader to restart passt with MTU 1500 for a frontend
    /// without scatter-gather, or with `mtu` again for one with it; nothing
    /// when the running passt already fits.
    public func frontendConnected(scatterGather: Bool) {
        let wanted = scatterGather ? mtu : min(mtu, Self.pageFrameMTU)
        let changed = state.withLock { s -> Bool in
            guard !s.stopped, s.wantedMTU != wanted else { return false }
            s.wantedMTU = wanted
            return true
        }
        if changed { EventCounter.signal(nudge) }
    }

    /// The spawner's passt when this process has a spawner and no other
    /// passt is asked for: it was found before the jail (whose root has no
    /// /usr/bin) and the spawner, outside the jail's mount namespace, runs
    /// it (a user vif hot-plugged into a jailed guest). Else `executable`
    /// when it is an executable file; else the first `passt` on PATH, then
    /// in /usr/bin or /usr/sbin.
    static func locate(_ executable: String?) throws(NetworkLinkError) -> String {
        if let spawner = PasstSpawner.current, executable == nil || executable == spawner.program {
            return spawner.program
        }
        // SAFETY (access): Swift passes a NUL-terminated copy of each path for the call.
        if let executable {
            guard unsafe access(executable, X_OK) == 0 else { throw .passtNotFound(searched: executable) }
            return executable
        }
        let path = ProcessEnvironment.path ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin"]
        for directory in directories where !directory.isEmpty {
            let candidate = directory + "/passt"
            if unsafe access(candidate, X_OK) == 0 { return candidate }
        }
        throw .passtNotFound(searched: "passt on PATH and in /usr/bin, /usr/sbin")
    }

    /// A socketpair and passt on its other end (`-f`: passt must stay our
    /// child, `-q`: no banner, `--fd`: the connected socket).
    static func spawn(path: String, mtu: Int, extraArguments: [String]) throws(NetworkLinkError) -> Child {
        var fds: [Int32] = [-1, -1]
        // SAFETY: `fds` holds the two ints socketpair writes.
        guard unsafe socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw .system(call: "socketpair", errno: errno)
        }
        let (ours, theirs) = (fds[0], fds[1])
        defer { close(theirs) }
        // Under the sandbox, the spawner forked before the filter starts
        // passt (it always puts the socket at 3).
        let spawner = PasstSpawner.current.flatMap { $0.program == path ? $0 : nil }
        // The descriptor number passt is told; a dup2 onto another number
        // clears FD_CLOEXEC on the child's copy.
        let target: Int32 = spawner != nil ? 3 : theirs == 3 ? 4 : 3
        // As root, passt drops to nobody by itself but says so on stderr
        // (pvh's), and fails to tell syslog too; asking for it is silent. As
        // anyone else it must not be asked (it cannot change its IDs).
        let runas = geteuid() == 0 ? ["--runas", "nobody"] : []
        let arguments = [path, "-f", "-q", "--fd", "\(target)", "--mtu", "\(mtu)"] + runas + extraArguments
        // SAFETY: strdup'd copies, NUL-terminated, freed below after the
        // spawn (posix_spawn copies argv into the child before returning).
        let argv: [UnsafeMutablePointer<CChar>?] = unsafe arguments.map { unsafe strdup($0) } + [nil]
        defer { unsafe argv.forEach { unsafe free($0) } }
        var pid: pid_t = 0
        // SAFETY: `argv` is a NULL-terminated array of C strings that lives
        // for the call; `pid` is a live local.
        let r = unsafe argv.withUnsafeBufferPointer { argv in
            if let spawner {
                unsafe pvh_spawner_request(spawner.socket, argv.baseAddress, theirs, &pid)
            } else {
                unsafe pvh_spawn_with_fd(path, argv.baseAddress, theirs, target, &pid)
            }
        }
        guard r == 0 else {
            close(ours)
            throw .passtStart(path: path, errno: r)
        }
        return Child(socket: ours, pid: pid, started: .now)
    }

    /// Ends passt: SIGTERM, up to `grace` ms for it to exit, then SIGKILL;
    /// reaped either way. The pid is ours and unreaped, so it cannot name
    /// another process meanwhile. One the sandbox's spawner started is the
    /// spawner's child, which reaps it only when asked for the next passt
    /// (after this returns), so its pid is as safe: it is killed if its
    /// pidfd does not show it ended, and waited for through the pidfd.
    static func terminate(_ pid: pid_t, grace: Int32) {
        let pidfd = pvh_pidfd_open(pid)
        kill(pid, SIGTERM)
        if pidfd >= 0 { _ = Self.waitForExit(pidfd, milliseconds: grace) }
        var status: Int32 = 0
        // SAFETY: `status` is a live local for each call.
        let reaped = unsafe waitpid(pid, &status, WNOHANG)
        if reaped == 0 {
            kill(pid, SIGKILL)
            while unsafe waitpid(pid, &status, 0) < 0, errno == EINTR {}
        } else if reaped < 0, errno == ECHILD, pidfd >= 0, !Self.waitForExit(pidfd, milliseconds: 0) {
            kill(pid, SIGKILL)
            _ = Self.waitForExit(pidfd, milliseconds: 1000)
        }
        if pidfd >= 0 { close(pidfd) }
    }

    /// Whether the process behind `pidfd` ended within `milliseconds`.
    private static func waitForExit(_ pidfd: Int32, milliseconds: Int32) -> Bool {
        var fds = [pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
        // SAFETY: `fds` is a live array of one pollfd for the call.
        return unsafe poll(&fds, 1, milliseconds) == 1
    }

    /// One sendmsg of the length prefix and `parts`, never blocking: a full
    /// socket is `.busy`; frames must be complete (no offloads).
    public func transmit(_ parts: [HostMemoryRange], offload: NetworkOffload) -> Result<Void, NetworkTransmitDrop> {
        guard offload.partialChecksum == nil, offload.segmentation == .none else { return .failure(.unsupportedOffload) }
        let length = parts.reduce(0) { $0 + $1.count }
        guard length > 0, length <= min(mtu + 18, PasstFrameCodec.maximumFrameLength), parts.count < Int(pvh_iov_max()) else {
            return .failure(.tooLarge)
        }
        return state.withLock { s -> Result<Void, NetworkTransmitDrop> in
            guard !s.stopped, let child = s.child else { return .failure(.linkDown) }
            // An earlier frame's tail goes first; while it cannot, the socket is full.
            if !s.pending.isEmpty {
                Self.flush(&s.pending, to: child.socket)
                guard s.pending.isEmpty else { return .failure(.busy) }
            }
            unsafe s.prefix.rewrite { base in
                // SAFETY: the buffer has 4 bytes, what is stored: the frame's
                // length as a big-endian 32-bit word (PasstFrameCodec.prefix).
                unsafe base.storeBytes(of: UInt32(length).bigEndian, as: UInt32.self)
            }
            let list = s.vectors
            list.reload(head: s.prefix.range, parts)
            defer { list.reload(head: nil, []) }  // the caller's pages are not kept
            while true {
                // SAFETY: the vectors name the prefix and the caller's parts,
                // which `list` keeps mapped during the call.
                let (vectors, count) = unsafe list.remaining
                let n = unsafe pvh_send_vectors(child.socket, vectors, count)
                if n >= 0 {
                    list.advance(by: n)
                    if list.isComplete { return .success(()) }
                    continue
                }
                switch Int32(-n) {
                case EINTR: continue
                case EAGAIN where list.transferred == 0:
                    return .failure(.busy)
                case EAGAIN:
                    // A Unix stream socket takes a large frame in pieces
                    // (unix_stream_sendmsg) and may stop between them. The
                    // frame is on the stream in part, so it is sent: the rest
                    // is kept and follows as soon as there is room.
                    s.pending = list.remainingBytes()
                    EventCounter.signal(nudge)
                    return .success(())
                case EPIPE, ECONNRESET, ENOTCONN:
                    return .failure(.linkDown)
                case let e:
                    return .failure(.hostError(e))
                }
            }
        }
    }

    /// Sends as much of `pending` as the socket takes now.
    private static func flush(_ pending: inout [UInt8], to socket: Int32) {
        while !pending.isEmpty {
            // SAFETY: one iovec over `pending`'s own storage, alive for the call.
            let n = unsafe pending.withUnsafeMutableBytes { bytes in
                var vector = unsafe iovec(iov_base: bytes.baseAddress, iov_len: bytes.count)
                return unsafe pvh_send_vectors(socket, &vector, 1)
            }
            if n > 0 {
                pending.removeFirst(n)
            } else if n != -Int(EINTR) {
                return  // EAGAIN: later; an error: the reader sees the end of the stream
            }
        }
    }

    /// Starts the reader thread (`pvh-passt`): it delivers frames, and
    /// replaces passt when it dies or its stream goes out of step.
    public func start(receive: @escaping @Sendable (NetworkFrame) -> Void,
                      carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {
        FrameMemory.retainFreedFrames
        reader.start(name: "pvh-passt") { [self] in
            var codec = PasstFrameCodec()
            var buffer = [UInt8](repeating: 0, count: 1 << 18)
            var delay = Self.firstRestartDelay
            while true {
                let current = state.withLock { s in s.child.map { ($0.socket, !s.pending.isEmpty, s.wantedMTU != s.runningMTU) } }
                guard let (socket, hasPending, newMTU) = current else { return }
                if newMTU {
                    // A frontend that needs another MTU: a new passt at once
                    // (no back-off: the old one did not fail).
                    carrier(false)
                    guard restart(&codec, delay: &delay, immediately: true) else { return }
                    carrier(true)
                    continue
                }
                let events = Int16(POLLIN) | (hasPending ? Int16(POLLOUT) : 0)
                let revents: Int16
                switch LinkPoll.wait([(socket, events), (nudge, Int16(POLLIN))], wake: reader.wake, timeout: -1) {
                case .woken, .failed: return
                case .timedOut: continue
                case .ready(let ready):
                    if ready[1] != 0 { EventCounter.drain(nudge) }
                    revents = ready[0]
                }
                if revents & Int16(POLLOUT) != 0 {
                    state.withLock { s in
                        if let child = s.child, child.socket == socket { Self.flush(&s.pending, to: socket) }
                    }
                }
                guard revents & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 else { continue }
                let capacity = buffer.count
                // SAFETY: reads at most `capacity` bytes into the buffer's own storage.
                let n = unsafe buffer.withUnsafeMutableBytes { unsafe read(socket, $0.baseAddress, capacity) }
                var broken = n == 0
                if n > 0 {
                    do {
                        for frame in try codec.feed(buffer[0 ..< n]) { receive(NetworkFrame(bytes: frame)) }
                    } catch {
                        broken = true  // out of step: only a new passt (a new stream) recovers
                    }
                } else if n < 0, errno != EINTR, errno != EAGAIN {
                    broken = true
                }
                guard broken else { continue }
                carrier(false)
                guard restart(&codec, delay: &delay) else { return }
                carrier(true)
            }
        }
    }

    /// Replaces a dead (or out-of-step) passt: ends and reaps it, waits the
    /// back-off (woken at once by `stop`; none the first time when
    /// `immediately`, for a passt that did not fail), starts a new one with
    /// the MTU wanted now. False when the link stopped meanwhile.
    private func restart(_ codec: inout PasstFrameCodec, delay: inout Int32, immediately: Bool = false) -> Bool {
        let old = state.withLock { s -> Child? in
            defer {
                s.child = nil
                s.pending = []  // the rest of a frame for the old stream
            }
            return s.child
        }
        if let old {
            close(old.socket)
            Self.terminate(old.pid, grace: 0)
            if ContinuousClock.now - old.started >= Self.stableRun { delay = Self.firstRestartDelay }
        }
        codec.reset()
        var wait = immediately ? 0 : delay
        while true {
            if case .woken = LinkPoll.wait([], wake: reader.wake, timeout: wait) { return false }
            if wait != 0 || !immediately { delay = min(delay * 2, Self.longestRestartDelay) }
            wait = delay
            let wanted = state.withLock { $0.wantedMTU }
            guard let child = try? Self.spawn(path: executable, mtu: wanted, extraArguments: extraArguments) else {
                continue
            }
            let accepted = state.withLock { s -> Bool in
                guard !s.stopped else { return false }
                s.child = child
                s.runningMTU = wanted
                return true
            }
            guard accepted else {
                close(child.socket)
                Self.terminate(child.pid, grace: 0)
                return false
            }
            restartCount.increment()
            return true
        }
    }

    /// Wakes and joins the reader, then ends passt (its socket closed,
    /// SIGTERM, SIGKILL after a second) and reaps it.
    public func stop() {
        let (first, child) = state.withLock { s -> (Bool, Child?) in
            guard !s.stopped else { return (false, nil) }
            s.stopped = true
            defer { s.child = nil }
            return (true, s.child)
        }
        guard first else { return }
        reader.signal()
        reader.join()
        if let child {
            // passt exits when its socket closes; SIGTERM in case it does not.
            close(child.socket)
            Self.terminate(child.pid, grace: 1000)
        }
    }
}

/// The passt spawner of a sandboxed guest process (CHostIO.h: the passt
/// spawner; docs/ARCHITECTURE.md: Sandbox): forked once, before the
/// process's seccomp filter, after which PasstLink starts every passt
/// through it.
public struct PasstSpawner: Sendable {
    /// The passt it runs (PasstLink.locate's answer at the fork).
    public let program: String
    let socket: Int32
    /// The spawner's pid (it is this process's child).
    public let pid: pid_t

    private static let started = Lock<PasstSpawner?>(nil)

    /// The spawner started in this process, if any.
    public static var current: PasstSpawner? { started.withLock { $0 } }

    /// Forks the spawner for the passt PasstLink would run (`executable`,
    /// else passt on PATH), once per process; nil when there is no passt
    /// (a user network then fails as it would anyway). Call it before any
    /// other thread may be forking (it forks) and before the filter.
    /// `runAs`: the uid and gid every passt runs as from its exec (a jailed
    /// guest process's user), nil for passt's own drop to nobody.
    @discardableResult
    public static func start(executable: String? = nil, runAs: (uid: UInt32, gid: UInt32)? = nil) throws(NetworkLinkError) -> PasstSpawner? {
        if let current { return current }
        guard let program = try? PasstLink.locate(executable) else { return nil }
        var socket: Int32 = -1
        var pid: pid_t = 0
        // SAFETY: Swift passes a NUL-terminated copy of `program` for the
        // call; `socket` and `pid` are live locals.
        let r = unsafe pvh_spawner_start(program, runAs?.uid ?? UInt32.max, runAs?.gid ?? UInt32.max, &socket, &pid)
        guard r == 0 else { throw .system(call: "fork (passt spawner)", errno: r) }
        let spawner = PasstSpawner(program: program, socket: socket, pid: pid)
        started.withLock { $0 = spawner }
        return spawner
    }
}

/// The environment's PATH, read once per lookup.
enum ProcessEnvironment {
    static var path: String? {
        // SAFETY: getenv returns a NUL-terminated string owned by the
        // environment, copied at once.
        unsafe getenv("PATH").map { unsafe String(cString: $0) }
    }
}
