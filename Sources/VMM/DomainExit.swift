import XenABI

/// How a guest run ended.
public enum DomainExit: Sendable, Equatable, CustomStringConvertible {
    /// SCHEDOP_shutdown with a reason (poweroff, reboot, crash, ...).
    case shutdown(ShutdownReason)
    /// A triple fault (KVM_EXIT_SHUTDOWN): what Xen reports as a crash.
    case tripleFault(rip: UInt64)
    /// The VMM stopped the guest: an exit it cannot handle (named), or a host failure.
    case failed(String)
    /// Stopped from outside (a test that saw what it waited for, a signal).
    case stopped

    /// `pvh run`'s exit status: 0 poweroff, 1 VMM failure, 3 reboot, 4 crash
    /// (also triple fault and watchdog), 5 suspend, 6 soft reset, 130 stopped.
    public var exitStatus: Int32 {
        switch self {
        case .shutdown(.poweroff): 0
        case .shutdown(.reboot): 3
        case .shutdown(.crash), .shutdown(.watchdog), .tripleFault: 4
        case .shutdown(.suspend): 5
        case .shutdown(.softReset): 6
        case .failed: 1
        case .stopped: 130
        }
    }

    public var description: String {
        switch self {
        case .shutdown(let r): "guest shut down: \(r)"
        case .tripleFault(let rip): "guest triple-faulted at rip 0x\(String(rip, radix: 16))"
        case .failed(let why): "guest stopped: \(why)"
        case .stopped: "guest stopped by the host"
        }
    }
}
