import Logging

extension Logger {
    /// A line from a PV backend (BlockBackend and NetBackend log plain
    /// strings): their `NAME: connected: ...` and `NAME: link up: ...`
    /// reports are news for the log only; every other line they write is
    /// something that went wrong (abandoned I/O, a link down), a warning
    /// that also reaches stderr. A domain's backends log through its
    /// `GuestTriggeredLog`, which gives their lines these levels.
    func backendLine(_ line: String) {
        log(level: Self.backendLevel(line), "\(line)")
    }

    /// The level of a PV backend's line (see `backendLine`).
    static func backendLevel(_ line: String) -> Logger.Level {
        line.contains(": connected: ") || line.contains(": link up: ") ? .info : .warning
    }
}
