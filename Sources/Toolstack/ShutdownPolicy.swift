import XLConfig

/// How a guest process ended, as `waitpid` tells it.
public enum GuestProcessEnd: Hashable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// SIGSYS (signal(7): 31 on every Linux architecture pvh builds for):
    /// what the kernel kills a process with when its seccomp filter forbids
    /// a system call it made (SCMP_ACT_KILL_PROCESS; docs/ARCHITECTURE.md:
    /// Sandbox). A guest process dying of it was stopped by its sandbox.
    public static let sandboxKillSignal: Int32 = 31

    /// The guest process's sandbox killed it (a forbidden system call).
    public var killedBySandbox: Bool { self == .signaled(Self.sandboxKillSignal) }

    public var description: String {
        switch self {
        case .exited(let status): "exited with status \(status)"
        case .signaled(let signal) where signal == Self.sandboxKillSignal:
            "killed by the sandbox (seccomp): signal \(signal), SIGSYS: a forbidden system call"
        case .signaled(let signal): "killed by signal \(signal)"
        }
    }
}

/// What ended a domain, read from its guest process's end through the
/// exit-status contract of `pvh run`/`pvh create -F` (README: the exit
/// status table; `DomainExit.exitStatus`):
///
/// | process end | meaning |
/// |---|---|
/// | 0 | the guest powered off |
/// | 3 | the guest rebooted (the daemon gives its child `on_reboot="destroy"`, so the child never restarts itself) |
/// | 4 | the guest crashed, or triple-faulted, or its watchdog fired |
/// | 5 | the guest suspended (no save yet: as a power-off) |
/// | 6 | the guest asked for a soft reset |
/// | 1, any other status, any signal | the VMM failed or the process died: a crash (xl's view of a domain that vanished) |
/// | 2 | the config or kernel was refused before the guest ran: nothing to restart |
/// | 130 | stopped from outside (the daemon's SIGTERM on destroy) |
public enum DomainEnd: Hashable, Sendable {
    /// The guest shut down (or the process died: `.crash`) for this event.
    case shutdown(ShutdownEvent)
    /// Refused before it ran (status 2): never restarted.
    case refused
    /// Stopped on request (status 130): destroyed.
    case stopped

    public init(_ end: GuestProcessEnd) {
        switch end {
        case .exited(0), .exited(5): self = .shutdown(.poweroff)
        case .exited(3): self = .shutdown(.reboot)
        case .exited(6): self = .shutdown(.softReset)
        case .exited(2): self = .refused
        case .exited(130): self = .stopped
        case .exited, .signaled: self = .shutdown(.crash)
        }
    }

    /// The reason events report (`poweroff`, `reboot`, `crash`, ...).
    public var reason: String {
        switch self {
        case .shutdown(let event): event.rawValue
        case .refused: "refused"
        case .stopped: "destroyed"
        }
    }
}

/// What the daemon does after a domain ended: xl's four actions
/// (xl.cfg(5) "Event Actions"; `handle_domain_death` in tools/xl/xl_vmcontrol.c).
public enum AppliedAction: String, Hashable, Sendable {
    case destroy, restart
    case renameRestart = "rename-restart"
    case preserve
}

/// The shutdown-action policy: the configured action for an end, and a
/// warning where pvh does less than xl.
public enum ShutdownPolicy {
    public struct Decision: Hashable, Sendable {
        public let action: AppliedAction
        /// One line, for the daemon's log and the event, when pvh departs
        /// from what the config asks.
        public let warning: String?

        public init(action: AppliedAction, warning: String?) {
            self.action = action
            self.warning = warning
        }
    }

    public static func decide(_ end: DomainEnd, configuration: XLDomainConfiguration) -> Decision {
        guard case .shutdown(let event) = end else { return Decision(action: .destroy, warning: nil) }
        let configured = configuration.action(on: event)
        switch configured {
        case .destroy: return Decision(action: .destroy, warning: nil)
        case .restart: return Decision(action: .restart, warning: nil)
        case .renameRestart: return Decision(action: .renameRestart, warning: nil)
        case .preserve: return Decision(action: .preserve, warning: nil)
        case .coredumpDestroy:
            return Decision(action: .destroy, warning: "\(event.key)=\"coredump-destroy\": no core dumps yet, destroying only")
        case .coredumpRestart:
            return Decision(action: .restart, warning: "\(event.key)=\"coredump-restart\": no core dumps yet, restarting only")
        case .softReset:
            return Decision(action: .restart, warning: "\(event.key)=\"soft-reset\": no soft reset in place yet, restarting")
        }
    }

    /// A restart that would be the `limit`-th in a row of incarnations
    /// each shorter than `minimumRun` seconds is refused: a guest that
    /// dies at once (a kernel that panics early) would otherwise be
    /// started again and again, a busy loop on a shared host. `quickEnds`:
    /// how many incarnations in a row ended that fast, this one included.
    public static func allowsRestart(quickEnds: Int, limit: Int = 5) -> Bool { quickEnds < limit }

    /// How long an incarnation must run for its end not to count as quick.
    public static let minimumRun = 10.0

    /// pvh's name for the domain a rename-restart keeps: `NAME-old-<id>`,
    /// unique because live ids are.
    public static func renamed(_ name: String, id: UInt16) -> String { "\(name)-old-\(id)" }
}
