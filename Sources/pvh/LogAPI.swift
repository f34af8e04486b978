import PVHAPI
import Toolstack

/// The logs over HTTP (PVHAPI/Logs.swift): the daemon's own lines, kept
/// as it logs them (Daemon.swift), and each guest process's log file.
extension Supervisor: LogService {
    /// What the daemon logged (`pvh: daemon: ...` on its stderr), newest last.
    static let logLines = LogLines()

    func daemonLog(lines: Int) async -> [String] { Self.logLines.last(lines) }

    func domainLog(named name: String, lines: Int) async throws(APIError) -> [String] {
        let (record, path) = state.withLock { s in
            let record = s.registry.named(name)
            return (record, record.flatMap { s.launches[$0.id]?.logPath })
        }
        guard record != nil else { throw .notFound(name) }
        guard let path, let tail = LogTail.lines(ofFile: path, count: lines) else {
            throw APIError(.conflict, "\(name) has no log file yet")
        }
        return tail
    }
}
