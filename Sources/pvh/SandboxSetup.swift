import ArgumentParser
import Foundation
import HostIO
import Logging
import Sandbox
import VMM

#if canImport(Glibc)
import Glibc
#endif

/// `--no-sandbox`, for `pvh run`, `pvh create -F` and `pvh daemon`
/// (docs/ARCHITECTURE.md: Sandbox).
struct SandboxOptions: ParsableArguments {
    @Flag(name: .customLong("no-sandbox"),
          help: "Run the guest process without its seccomp filter and with its capabilities (debugging; README: Security).")
    var noSandbox = false
}

/// The guest process's sandbox as this process was asked for it, read once
/// at start-up: `--no-sandbox`, else `PVH_SANDBOX` (`off`, `log`, anything
/// else on), which the daemon's children inherit (`pvh daemon --no-sandbox`
/// sets it to `off` for them).
struct GuestSandboxSetting {
    /// The environment variable: the daemon's setting for all its guests.
    static let variable = "PVH_SANDBOX"
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

    init(options: SandboxOptions, guestName: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
        switch environment[Self.variable] {
        case _ where options.noSandbox: mode = nil
        case "off": mode = nil
        case "log": mode = .log
        default: mode = .enforce
        }
        let trigger = environment[Self.selfTestVariable] ?? ""
        selfTest = trigger == "forbidden-syscall" || trigger == "forbidden-syscall:\(guestName)"
    }

    /// Before any domain is built: the passt spawner, forked while this
    /// process can still fork (docs/ARCHITECTURE.md: Sandbox).
    func prepare(logger: Logger) {
        guard mode != nil else { return }
        do {
            if let spawner = try PasstSpawner.start() {
                logger.info("sandbox: passt spawner pid \(spawner.pid) for \(spawner.program)")
            }
        } catch {
            logger.warning("sandbox: \(error): passt cannot be restarted once the filter is loaded")
        }
    }

    /// Once the domain is built and before its first vCPU runs: every
    /// capability dropped, then the filter loaded into every thread. A
    /// failure here ends the process (status 1): a guest asked to run
    /// confined never runs unconfined.
    func confine(logger: Logger) throws {
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
