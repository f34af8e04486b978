/// What the toolstack does when a guest stops for a reason: xl's
/// `on_poweroff`, `on_reboot`, `on_watchdog`, `on_crash`, `on_soft_reset`
/// (xl.cfg(5) "Event Actions"; the names of `action_on_shutdown_names` in
/// tools/xl/xl_parse.c).
public enum ShutdownAction: String, Hashable, Sendable, CaseIterable {
    /// Destroy the domain.
    case destroy
    /// Destroy it and start a new one from the same configuration.
    case restart
    /// Rename the old domain and start a new one.
    case renameRestart = "rename-restart"
    /// Keep the domain as it is, for inspection.
    case preserve
    /// Write a core dump, then destroy.
    case coredumpDestroy = "coredump-destroy"
    /// Write a core dump, then restart.
    case coredumpRestart = "coredump-restart"
    /// Reset the domain's state and let it continue (`on_soft_reset`'s default).
    case softReset = "soft-reset"
}

/// The five events a shutdown action is configured for, with xl's keys
/// and defaults (tools/xl/xl_parse.c `parse_config_data`).
public enum ShutdownEvent: String, Hashable, Sendable, CaseIterable {
    case poweroff, reboot, watchdog, crash
    case softReset = "soft_reset"

    /// `on_poweroff`, ...
    public var key: String { "on_\(rawValue)" }

    /// xl's default: restart on reboot, soft-reset on soft reset, else destroy.
    public var defaultAction: ShutdownAction {
        switch self {
        case .reboot: .restart
        case .softReset: .softReset
        case .poweroff, .watchdog, .crash: .destroy
        }
    }
}
