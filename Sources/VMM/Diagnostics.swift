import Logging

extension Logger {
    /// A line from a PV backend (BlockBackend and NetBackend log plain
    /// strings): their `NAME: connected: ...` and `NAME: link up: ...`
    /// reports are news for the log only; every other line they write is
    /// something that went wrong (abandoned I/O, a link down), a warning
    /// that also reaches stderr.
    func backendLine(_ line: String) {
        if line.contains(": connected: ") || line.contains(": link up: ") {
            info("\(line)")
        } else {
            warning("\(line)")
        }
    }
}
