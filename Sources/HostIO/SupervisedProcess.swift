import CHostIO
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a supervised process could not be started.
public struct SupervisedProcessError: Error, Equatable, Sendable, CustomStringConvertible {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    // SAFETY: strerror returns a NUL-terminated string, copied at once.
    public var description: String { "\(operation) \(path): \(unsafe String(cString: strerror(errno)))" }
}

/// A child the pvh daemon supervises (one guest's process): started with
/// an empty signal mask in a process group of its own, its output appended
/// to a log file, watched through a pidfd so every wait is bounded, and
/// reaped exactly once.
public final class SupervisedProcess: Sendable {
    /// How it ended (`waitpid`'s status, decoded).
    public enum End: Hashable, Sendable {
        case exited(Int32)
        case signaled(Int32)
    }

    public let pid: Int32
    private let pidfd: Int32
    /// For a process this one adopted rather than started (it is not our
    /// child: no waitpid), how it ended, told once its pidfd is readable.
    private let adoptedEnd: (@Sendable () -> End)?

    private init(pid: Int32, pidfd: Int32, adoptedEnd: (@Sendable () -> End)? = nil) {
        self.pid = pid
        self.pidfd = pidfd
        self.adoptedEnd = adoptedEnd
    }

    /// Whether this process was adopted (started by another process).
    public var isAdopted: Bool { adoptedEnd != nil }

    /// Takes over watching process `pid`, which another process started (a
    /// guest process of a daemon that stopped), if it is still the process
    /// that started at `startTime` (`startTime(of:)`): a pid reused since
    /// is refused (ESRCH). The start time is checked again after the pidfd
    /// is open, so the pidfd names that very process. Its end cannot be
    /// reaped here, so `end` tells it once the pidfd is readable (the
    /// daemon reads the record the process left, exit record).
    public static func adopt(pid: Int32, startTime: UInt64, end: @escaping @Sendable () -> End) throws(SupervisedProcessError) -> SupervisedProcess {
        let path = "/proc/\(pid)"
        guard pid > 0, Self.startTime(of: pid) == startTime else { throw SupervisedProcessError(operation: "adopt", path: path, errno: ESRCH) }
        let pidfd = pvh_pidfd_open(pid)
        guard pidfd >= 0 else { throw SupervisedProcessError(operation: "pidfd_open", path: path, errno: -pidfd) }
        guard Self.startTime(of: pid) == startTime else {
            close(pidfd)
            throw SupervisedProcessError(operation: "adopt", path: path, errno: ESRCH)
        }
        return SupervisedProcess(pid: pid, pidfd: pidfd, adoptedEnd: end)
    }

    /// When process `pid` started, in clock ticks since boot (proc(5):
    /// /proc/PID/stat field 22, `starttime`): with the pid, what names one
    /// process for good (a pid is reused, this pair is not). Nil when there
    /// is no such process.
    public static func startTime(of pid: Int32) -> UInt64? {
        guard pid > 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // Fields after the command's closing parenthesis start at field 3.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return UInt64(fields[19])
    }

    deinit { close(pidfd) }

    /// Starts `arguments` (argv[0] is the program's path), stdout and
    /// stderr appended to `logPath` (created 0600); `newSession`: in a
    /// session of its own (setsid) rather than only a process group;
    /// `console`: a descriptor (a socketpair's end) that becomes the
    /// child's stdin and stdout, only stderr going to the log.
    /// `descriptors`: (a descriptor of this process, its number in the
    /// child), at most 8, numbers above 2; nothing else is inherited, not
    /// even what lacks close-on-exec (SwiftNIO's listening sockets do: a
    /// guest process outliving the daemon must not hold its API socket).
    public static func spawn(_ arguments: [String], logPath: String, newSession: Bool = false, console: Int32? = nil,
                             descriptors: [(Int32, Int32)] = []) throws(SupervisedProcessError) -> SupervisedProcess {
        guard let path = arguments.first, descriptors.count <= 8, descriptors.allSatisfy({ $0.0 >= 0 && $0.1 > 2 }),
              (console ?? 0) >= 0 else {
            throw SupervisedProcessError(operation: "spawn", path: arguments.first ?? "", errno: EINVAL)
        }
        let sources = descriptors.map(\.0), targets = descriptors.map(\.1)
        // SAFETY: the String converts to a NUL-terminated path for the call.
        let log = unsafe open(logPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard log >= 0 else { throw SupervisedProcessError(operation: "open", path: logPath, errno: errno) }
        defer { close(log) }
        // SAFETY: strdup'd copies, NUL-terminated, freed after the spawn
        // (posix_spawn copies argv into the child before returning).
        let argv: [UnsafeMutablePointer<CChar>?] = unsafe arguments.map { unsafe strdup($0) } + [nil]
        defer { unsafe argv.forEach { unsafe free($0) } }
        var pid: pid_t = 0
        // SAFETY: `argv` is a NULL-terminated array of C strings alive for
        // the call; `sources` and `targets` are live arrays of `descriptors.count`
        // ints; `console` (or -1) is the caller's open descriptor; `pid` is a live local.
        let r = unsafe argv.withUnsafeBufferPointer { argv in
            unsafe sources.withUnsafeBufferPointer { sources in
                unsafe targets.withUnsafeBufferPointer { targets in
                    unsafe pvh_spawn_supervised(path, argv.baseAddress, log, newSession ? 1 : 0, console ?? -1,
                                                sources.baseAddress, targets.baseAddress, UInt32(sources.count), &pid)
                }
            }
        }
        guard r == 0 else { throw SupervisedProcessError(operation: "spawn", path: path, errno: r) }
        let pidfd = pvh_pidfd_open(pid)
        guard pidfd >= 0 else {
            kill(pid, SIGKILL)
            var status: Int32 = 0
            // SAFETY: `status` is a live local.
            while unsafe waitpid(pid, &status, 0) < 0, errno == EINTR {}
            throw SupervisedProcessError(operation: "pidfd_open", path: path, errno: -pidfd)
        }
        return SupervisedProcess(pid: pid, pidfd: pidfd)
    }

    /// Sends `signal` to the process (`group`: to its whole process group,
    /// as pause and unpause do). The pid is ours and not yet reaped until
    /// `wait` returned its end, so it names no other process.
    public func signal(_ signal: Int32, group: Bool = false) {
        // An adopted process is not ours to reap: once it ended, its pid
        // may name another process. The pidfd names it alone, and
        // tells whether it still runs before its group is signalled.
        if isAdopted {
            if group, !hasEnded { kill(-pid, signal) } else { _ = pvh_pidfd_send_signal(pidfd, signal) }
            return
        }
        kill(group ? -pid : pid, signal)
    }

    /// Whether the process ended (its pidfd is readable), without waiting.
    private var hasEnded: Bool {
        var fds = [pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
        // SAFETY: `fds` is a live array of one pollfd for the call.
        return unsafe poll(&fds, 1, 0) > 0
    }

    /// Waits at most `timeout` seconds for the process to end; its end
    /// (reaped) or nil if it still runs. Call from one thread at a time.
    public func wait(timeout: Double) -> End? {
        var fds = [pollfd(fd: pidfd, events: Int16(POLLIN), revents: 0)]
        let milliseconds = Int32(max(0, min(timeout, 86_400)) * 1000)
        // SAFETY: `fds` is a live array of one pollfd for the call.
        let ready = unsafe poll(&fds, 1, milliseconds)
        guard ready > 0 else { return nil }
        if let adoptedEnd { return adoptedEnd() }
        var status: Int32 = 0
        var r: pid_t
        repeat {
            // SAFETY: `status` is a live local.
            r = unsafe waitpid(pid, &status, WNOHANG)
        } while r < 0 && errno == EINTR
        guard r == pid else { return nil }
        // <sys/wait.h>'s WIFEXITED/WEXITSTATUS/WTERMSIG, which Swift does not import.
        let termination = status & 0x7f
        return termination == 0 ? .exited((status >> 8) & 0xff) : .signaled(termination)
    }
}
