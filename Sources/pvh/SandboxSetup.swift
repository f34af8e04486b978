import ArgumentParser
import Foundation
import HostIO
import Logging
import Sandbox
import VMM
import XenABI

#if canImport(Glibc)
import Glibc
#endif

/// `--no-sandbox`, `--no-jail`, `--jail-user`, `--jail-uid-base`, for `pvh
/// run`, `pvh create -F` and `pvh daemon` (docs/ARCHITECTURE.md: Sandbox).
struct SandboxOptions: ParsableArguments {
    @Flag(name: .customLong("no-sandbox"),
          help: "Run the guest process without its seccomp filter and with its capabilities (debugging; README: Security).")
    var noSandbox = false

    @Flag(name: .customLong("no-jail"),
          help: "Started as root, run the guest process as root in the host's mount namespace (no jail; README: Security).")
    var noJail = false

    @Option(name: .customLong("jail-user"),
            help: ArgumentHelp("""
                The user every jailed guest process runs as: a name or UID[:GID] (default $PVH_JAIL_USER, else a uid \
                of its own per guest).
                """, valueName: "user"))
    var jailUser: String?

    @Option(name: .customLong("jail-uid-base"),
            help: ArgumentHelp("""
                Where the jailed guests' own uids start: a daemon's guest is BASE+domid, a guest on its own \
                BASE+32768+slot (default $PVH_JAIL_UID_BASE, else 1879048192, 0x70000000; README: Security).
                """, valueName: "uid"))
    var jailUIDBase: String?

    func validate() throws {
        if let jailUIDBase {
            do { _ = try JailUIDRange(parsing: jailUIDBase) } catch { throw ValidationError("--jail-uid-base: \(error)") }
        }
    }
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
    /// `PVH_JAIL_USER`: the jail's user for every guest when `--jail-user`
    /// does not say.
    static let jailUserVariable = "PVH_JAIL_USER"
    /// `PVH_JAIL_UID_BASE`: where the guests' own uids start when
    /// `--jail-uid-base` does not say (JailUIDRange).
    static let jailUIDBaseVariable = "PVH_JAIL_UID_BASE"
    /// The test-only trigger (below).
    static let selfTestVariable = "PVH_SANDBOX_SELFTEST"
    /// `PVH_JAIL_SELFTEST=chroot`: the jail takes its chroot fallback as if
    /// pivot_root had failed. It exists only so that a test can show the
    /// fallback's jail holds only its paths (HotplugTests.chrootJail): the
    /// condition that needs it (a root pivot_root refuses, an initramfs)
    /// cannot be made under a test runner; nothing else sets it.
    static let jailSelfTestVariable = "PVH_JAIL_SELFTEST"

    /// Whose ids a jailed guest process takes.
    enum JailUserChoice: Equatable {
        /// One user for every guest (`--jail-user`, `PVH_JAIL_USER`).
        case named(String)
        /// A uid and gid of its own (JailUIDRange), from this base as
        /// written (`--jail-uid-base`, `PVH_JAIL_UID_BASE`), nil: the default.
        case perGuest(base: String?)
    }

    /// nil: no sandbox.
    let mode: SandboxMode?
    /// PVH_SANDBOX_SELFTEST=forbidden-syscall[:NAME]: once confined, this
    /// guest process (every one, or only guest NAME) makes one forbidden
    /// system call. It exists only so that a test can show, on a real
    /// guest process of a real daemon, that the filter kills the process
    /// and the daemon reports it (DaemonTests.sandboxKill); nothing else
    /// sets it.
    let selfTest: Bool
    /// PVH_SANDBOX_SELFTEST=vcpu-forbidden-syscall[:NAME]: once its filter
    /// is loaded, vCPU 0's thread makes one call the process filter allows
    /// and the vCPU filter does not (socket(AF_UNIX)). It exists only so
    /// that a test can show the vCPU filter is in force on a real guest
    /// process (DaemonTests.vcpuSandboxKill); nothing else sets it.
    let vcpuSelfTest: Bool
    /// The jail's user as asked (`--jail-user`, `PVH_JAIL_USER`, else one
    /// of its own); nil: `--no-jail` or `PVH_JAIL=off`.
    let jailUser: JailUserChoice?
    /// PVH_JAIL_SELFTEST=chroot (test only, above).
    let forceChroot: Bool
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
            if let name = options.jailUser ?? environment[Self.jailUserVariable].flatMap({ $0.isEmpty ? nil : $0 }) {
                jailUser = .named(name)
            } else {
                jailUser = .perGuest(base: options.jailUIDBase ?? environment[Self.jailUIDBaseVariable].flatMap { $0.isEmpty ? nil : $0 })
            }
        }
        forceChroot = environment[Self.jailSelfTestVariable] == "chroot"
        let trigger = environment[Self.selfTestVariable] ?? ""
        selfTest = trigger == "forbidden-syscall" || trigger == "forbidden-syscall:\(guestName)"
        vcpuSelfTest = trigger == "vcpu-forbidden-syscall" || trigger == "vcpu-forbidden-syscall:\(guestName)"
    }

    /// Before any domain is built, while the process has one thread: the
    /// passt spawner, forked while this process can still fork (and before
    /// the jail's namespace: it stays in the host's, where passt is), then
    /// the jail's mount, IPC and UTS namespaces (docs/ARCHITECTURE.md: Sandbox).
    /// `unjailed`: why this process must keep the host's paths, if it must
    /// (`pvh run --on-reboot restart` builds the domain again from the
    /// kernel's and images' paths); it is then not jailed, with a log line.
    /// A jail asked for that cannot be set up ends the process (status 1):
    /// a guest asked to run jailed never runs unjailed. `daemonDomain`: the
    /// domid a daemon gave this guest process (its own uid is base +
    /// domid), nil for a guest on its own (a slot of the upper half).
    mutating func prepare(logger: Logger, runtime: RuntimeDirectory, unjailed: String?, daemonDomain: DomainID?) throws {
        var user: JailUser?
        if let jailUser {
            if geteuid() != 0 {
                logger.notice("jail: off: not started as root (nothing to leave)")
            } else if let unjailed {
                logger.notice("jail: off: \(unjailed)")
            } else {
                do {
                    user = try Self.resolve(jailUser, runtime: runtime, daemonDomain: daemonDomain)
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
        // A fixed name, not the host's: the guest's domid (`pvh-1` for a
        // guest on its own, whose domid is always 1).
        let hostname = "pvh-\(daemonDomain?.rawValue ?? 1)"
        do {
            try GuestProcessJail.unshareNamespaces(hostname: hostname)
        } catch {
            fail(logger, "\(error)")
        }
        if forceChroot {
            logger.warning("jail: \(Self.jailSelfTestVariable)=chroot: taking the chroot fallback (test only)")
            GuestProcessJail.forceChrootFallback()
        }
        jail = PlannedJail(user: user, root: GuestProcessJail.rootMountPoint(runtimeDirectory: runtime.path), hostname: hostname)
    }

    /// The jail's user: the one named, or the guest's own ids (JailUIDRange),
    /// checked not to be a host user's or group's.
    private static func resolve(_ choice: JailUserChoice, runtime: RuntimeDirectory,
                                daemonDomain: DomainID?) throws(SandboxError) -> JailUser {
        switch choice {
        case .named(let name):
            return try JailUser.resolve(name)
        case .perGuest(let baseText):
            let range: JailUIDRange
            if let baseText {
                range = try JailUIDRange(parsing: baseText)
            } else {
                range = try JailUIDRange(base: JailUIDRange.defaultBase)
            }
            if let daemonDomain {
                guard let uid = range.uid(domain: daemonDomain.rawValue) else {
                    throw SandboxError(step: "jail: domid \(daemonDomain.rawValue) has no uid of its own", errno: 22)
                }
                return try JailUser.perGuest(uid: uid, describing: "its own, \(range.base)+\(daemonDomain.rawValue)")
            }
            let (uid, slot) = try StandaloneUIDSlot.claim(range: range, runtime: runtime)
            return try JailUser.perGuest(uid: uid, describing: "its own, \(range.base)+\(JailUIDRange.standaloneOffset)+\(slot)")
        }
    }

    /// One line in the log and on stderr, then exit status 1.
    private func fail(_ logger: Logger, _ line: String) -> Never {
        logger.error("\(line)")
        FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(line)\n".utf8))
        Foundation.exit(1)
    }

    /// Once the domain is built and before its first vCPU runs: every
    /// capability dropped, the vCPU threads' filter built and kept (each
    /// loads it as it starts: `confineVCPUThread`), then the process filter
    /// loaded into every thread. A
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
            try GuestProcessSandbox.prepareVCPUFilter(mode: mode)
            try GuestProcessSandbox.confine(mode: mode)
        } catch {
            logger.error("\(error)")
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(error)\n".utf8))
            throw ExitCode(1)
        }
        logger.notice("sandbox: \(mode == .log ? "seccomp filter loaded (log only)" : "seccomp filter loaded"), capabilities dropped; each vCPU thread loads its own on top")
        if selfTest {
            logger.warning("sandbox: \(Self.selfTestVariable): making a forbidden system call (test only)")
            let errno = GuestProcessSandbox.issueForbiddenSystemCall()
            logger.error("sandbox: the forbidden system call returned (errno \(errno)): the filter is not enforcing")
        }
    }
}

extension GuestSandboxSetting {
    /// What each vCPU thread runs before its first KVM_RUN (Domain.run):
    /// the vCPU filter `confine` kept, loaded into that thread only; nil
    /// when there is no sandbox. A failure ends the domain.
    func vcpuConfinement(logger: Logger) -> (@Sendable (Int) -> String?)? {
        guard mode != nil, GuestProcessSandbox.vcpuFilterPrepared else { return nil }
        let selfTest = vcpuSelfTest
        return { index in
            do {
                try GuestProcessSandbox.confineVCPUThread()
            } catch {
                return "\(error)"
            }
            if selfTest && index == 0 {
                logger.warning("sandbox: \(Self.selfTestVariable): vCPU 0 making a call only device threads may (test only)")
                let errno = GuestProcessSandbox.issueVCPUForbiddenSystemCall()
                logger.error("sandbox: the vCPU's forbidden call returned (errno \(errno)): the vCPU filter is not enforcing")
            }
            return nil
        }
    }
}

/// The jail a guest process enters once its domain is built
/// (docs/ARCHITECTURE.md: Sandbox): its namespace made in `prepare`.
struct PlannedJail {
    let user: JailUser
    /// Where its tmpfs root is mounted before the switch.
    let root: String
    /// Its host name (its own UTS namespace, set in `prepare`).
    let hostname: String

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
        return try GuestProcessJail.enter(root: root, binds: binds(guestDirectory: guestDirectory), user: user, hostname: hostname)
    }
}

/// A guest process of its own (`pvh run`, `pvh create -F` without a
/// daemon) has domid 1 like every other, so its uid is a slot of
/// JailUIDRange's upper half held by an exclusive flock on
/// `<runtime>/.jail-uids/<uid>` for as long as the process lives (the
/// descriptor is never closed; the kernel drops the lock at its end, a
/// crash included): two guests of one runtime directory never share a
/// uid. The search starts at the pid's slot, so that guests started
/// together rarely contend for the same file.
enum StandaloneUIDSlot {
    static func claim(range: JailUIDRange, runtime: RuntimeDirectory) throws(SandboxError) -> (uid: UInt32, slot: UInt32) {
        let directory = runtime.path + "/.jail-uids"
        for path in [runtime.path, directory] where mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw SandboxError(step: "jail: mkdir \(path)", errno: errno)
        }
        let slots = JailUIDRange.size - JailUIDRange.standaloneOffset
        let start = UInt32(getpid()) % slots
        for step in 0..<slots {
            let slot = (start + step) % slots
            guard let uid = range.uid(standaloneSlot: slot) else { break }
            let fd = open("\(directory)/\(uid)", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw SandboxError(step: "jail: opening \(directory)/\(uid)", errno: errno) }
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { return (uid, slot) }
            let failure = errno
            close(fd)
            guard failure == EWOULDBLOCK else { throw SandboxError(step: "jail: flock \(directory)/\(uid)", errno: failure) }
        }
        throw SandboxError(step: "jail: all \(slots) standalone uids of \(directory) are held", errno: EAGAIN)
    }
}
