import ArgumentParser
import Foundation
import HostIO
import Logging
import Sandbox
import VMM

#if canImport(Glibc)
import Glibc
#endif

/// `--no-sandbox`, `--no-jail`, `--jail-user`, for `pvh run`, `pvh create
/// -F` and `pvh daemon` (docs/ARCHITECTURE.md: Sandbox).
struct SandboxOptions: ParsableArguments {
    @Flag(name: .customLong("no-sandbox"),
          help: "Run the guest process without its seccomp filter and with its capabilities (debugging; README: Security).")
    var noSandbox = false

    @Flag(name: .customLong("no-jail"),
          help: "Started as root, run the guest process as root in the host's mount namespace (no jail; README: Security).")
    var noJail = false

    @Option(name: .customLong("jail-user"),
            help: ArgumentHelp("The user a jailed guest process runs as: a name or UID[:GID] (default $PVH_JAIL_USER, else nobody).",
                               valueName: "user"))
    var jailUser: String?
}

/// The guest process's sandbox as this process was asked for it, read once
/// at start-up: `--no-sandbox`, else `PVH_SANDBOX` (`off`, `log`, anything
/// else on), which the daemon's children inherit (`pvh daemon --no-sandbox`
/// sets it to `off` for them).
struct GuestSandboxSetting {
    /// The environment variable: the daemon's setting for all its guests.
    static let variable = "PVH_SANDBOX"
    /// `PVH_JAIL=off`: no jail (`--no-jail`; the daemon's guests inherit it).
    static let jailVariable = "PVH_JAIL"
    /// `PVH_JAIL_USER`: the jail's user when `--jail-user` does not say.
    static let jailUserVariable = "PVH_JAIL_USER"
    /// The jail's user by default: present on every Debian system, and
    /// passt's own choice when it drops root. Guests sharing it can signal
    /// one another (kill is in the filter); a uid of its own per guest
    /// (`--jail-user`, as Firecracker's jailer's --uid) keeps them apart.
    static let defaultJailUser = "nobody"
    /// The test-only trigger (below).
    static let selfTestVariable = "PVH_SANDBOX_SELFTEST"

    /// nil: no sandbox.
    let mode: SandboxMode?
    /// PVH_SANDBOX_SELFTEST=forbidden-syscall[:NAME]: once confined, this
    /// guest process (every one, or only guest NAME) makes one forbidden
    /// system call. It exists only so that a test can show, on a real
    /// guest process of a real daemon, that the filter kills the process
    /// and the daemon reports it (DaemonTests.sandboxKill); nothing else
    /// sets it.
    let selfTest: Bool
    /// The jail's user as asked (`--jail-user`, `PVH_JAIL_USER`, nobody);
    /// nil: `--no-jail` or `PVH_JAIL=off`.
    let jailUser: String?
    /// Set by `prepare`: the jail this process will enter, nil if none.
    private(set) var jail: PlannedJail?

    init(options: SandboxOptions, guestName: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
        switch environment[Self.variable] {
        case _ where options.noSandbox: mode = nil
        case "off": mode = nil
        case "log": mode = .log
        default: mode = .enforce
        }
        if options.noJail || environment[Self.jailVariable] == "off" {
            jailUser = nil
        } else {
            jailUser = options.jailUser ?? environment[Self.jailUserVariable].flatMap { $0.isEmpty ? nil : $0 } ?? Self.defaultJailUser
        }
        let trigger = environment[Self.selfTestVariable] ?? ""
        selfTest = trigger == "forbidden-syscall" || trigger == "forbidden-syscall:\(guestName)"
    }

    /// Before any domain is built, while the process has one thread: the
    /// passt spawner, forked while this process can still fork (and before
    /// the jail's namespace: it stays in the host's, where passt is), then
    /// the jail's mount namespace (docs/ARCHITECTURE.md: Sandbox).
    /// `unjailed`: why this process must keep the host's paths, if it must
    /// (`pvh run --on-reboot restart` builds the domain again from the
    /// kernel's and images' paths); it is then not jailed, with a log line.
    /// A jail asked for that cannot be set up ends the process (status 1):
    /// a guest asked to run jailed never runs unjailed.
    mutating func prepare(logger: Logger, runtime: RuntimeDirectory, unjailed: String?) throws {
        var user: JailUser?
        if let jailUser {
            if geteuid() != 0 {
                logger.notice("jail: off: not started as root (nothing to leave)")
            } else if let unjailed {
                logger.notice("jail: off: \(unjailed)")
            } else {
                do {
                    user = try JailUser.resolve(jailUser)
                } catch {
                    fail(logger, "\(error)")
                }
            }
        } else {
            logger.notice("jail: off (--no-jail or \(Self.jailVariable)=off)")
        }
        if mode != nil || user != nil {
            do {
                if let spawner = try PasstSpawner.start(runAs: user.map { ($0.uid, $0.gid) }) {
                    logger.info("sandbox: passt spawner pid \(spawner.pid) for \(spawner.program)\(user.map { ", its passts run as \($0)" } ?? "")")
                }
            } catch {
                logger.warning("sandbox: \(error): passt cannot be restarted once the filter is loaded")
            }
        }
        guard let user else { return }
        do {
            try GuestProcessJail.unshareMounts()
        } catch {
            fail(logger, "\(error)")
        }
        jail = PlannedJail(user: user, root: GuestProcessJail.rootMountPoint(runtimeDirectory: runtime.path))
    }

    /// One line in the log and on stderr, then exit status 1.
    private func fail(_ logger: Logger, _ line: String) -> Never {
        logger.error("\(line)")
        FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(line)\n".utf8))
        Foundation.exit(1)
    }

    /// Once the domain is built and before its first vCPU runs: every
    /// capability dropped, then the filter loaded into every thread. A
    /// failure here ends the process (status 1): a guest asked to run
    /// confined never runs unconfined.
    func confine(logger: Logger, guestDirectory: String?) throws {
        if let jail {
            do {
                let report = try jail.enter(guestDirectory: guestDirectory)
                logger.notice("jail: \(report)")
            } catch {
                logger.error("\(error)")
                FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
        guard let mode else {
            logger.notice("sandbox: off (--no-sandbox or \(Self.variable)=off)")
            return
        }
        do {
            try GuestProcessSandbox.dropCapabilities()
            try GuestProcessSandbox.confine(mode: mode)
        } catch {
            logger.error("\(error)")
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(error)\n".utf8))
            throw ExitCode(1)
        }
        logger.notice("sandbox: \(mode == .log ? "seccomp filter loaded (log only)" : "seccomp filter loaded"), capabilities dropped")
        if selfTest {
            logger.warning("sandbox: \(Self.selfTestVariable): making a forbidden system call (test only)")
            let errno = GuestProcessSandbox.issueForbiddenSystemCall()
            logger.error("sandbox: the forbidden system call returned (errno \(errno)): the filter is not enforcing")
        }
    }
}

/// The jail a guest process enters once its domain is built
/// (docs/ARCHITECTURE.md: Sandbox): its namespace made in `prepare`.
struct PlannedJail {
    let user: JailUser
    /// Where its tmpfs root is mounted before the switch.
    let root: String

    /// What the process still reaches by path after set-up, bind-mounted at
    /// the same paths: /dev/null and /dev/urandom (libraries' fallbacks),
    /// /dev/net/tun for a TAP hot-plugged later (a persistent TAP the
    /// jail's user owns), and the guest's runtime directory (its hypervisor
    /// console's file, rewritten by rename; `pvh run`'s XenStore socket,
    /// removed at its end), handed to the jail's user. Everything else it
    /// uses is a descriptor opened before: guest memory, /dev/kvm and the
    /// vCPUs, images, TAPs, passt's sockets, the log, the exit record, the
    /// sockets it serves.
    func binds(guestDirectory: String?) -> [JailBind] {
        var binds = [JailBind(path: "/dev/null", readOnly: false, device: true),
                     JailBind(path: "/dev/urandom", readOnly: true, device: true)]
        if access("/dev/net/tun", F_OK) == 0 { binds.append(JailBind(path: "/dev/net/tun", readOnly: false, device: true)) }
        if let guestDirectory { binds.append(JailBind(path: guestDirectory, readOnly: false)) }
        return binds
    }

    func enter(guestDirectory: String?) throws(SandboxError) -> JailReport {
        if let guestDirectory, chown(guestDirectory, user.uid, user.gid) != 0 {
            throw SandboxError(step: "jail: chown \(guestDirectory)", errno: errno)
        }
        return try GuestProcessJail.enter(root: root, binds: binds(guestDirectory: guestDirectory), user: user)
    }
}
