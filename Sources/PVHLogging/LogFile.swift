import Foundation
import Locking

/// Why a log file could not be opened: one line for the user.
public struct LogFileError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}

/// A guest's log file, bounded: when the next line would take it past
/// `maximumBytes` it is renamed to `PATH.1` (replacing the last one) and a
/// new file begins (where the rename fails, as in a jailed guest process,
/// the file starts over in place), so the two never hold more than twice the cap (xl
/// rotates `xl-NAME.log` at each create instead; a guest that runs for
/// months needs the bound while it runs). Created mode 0640, its directory
/// 0750 if missing. Lines are appended whole, under one lock.
public final class LogFile: LogDestination {
    public let path: String
    public let maximumBytes: Int
    /// The default cap: 4 MiB (with the rotated file, 8 MiB per guest at most).
    public static let defaultMaximumBytes = 4 << 20

    private struct State {
        var handle: FileHandle?
        var size: Int
        var rotations = 0
        var failures = 0
    }
    private let state: Lock<State>

    public init(path: String, maximumBytes: Int = LogFile.defaultMaximumBytes) throws(LogFileError) {
        self.path = path
        self.maximumBytes = max(maximumBytes, 1)
        let handle = try Self.open(path)
        let size: Int
        do {
            size = Int(try handle.seekToEnd())
        } catch {
            throw LogFileError(path: path, reason: "\(error.localizedDescription)")
        }
        state = Lock(State(handle: handle, size: size))
    }

    /// The rotated file's path.
    public var rotatedPath: String { path + ".1" }
    /// Times the file was rotated since it was opened.
    public var rotations: Int { state.withLock { $0.rotations } }
    /// Lines that could not be written (a full disk, the file gone).
    public var failures: Int { state.withLock { $0.failures } }

    public func write(_ line: String) {
        var bytes = Data(line.utf8)
        // One line longer than the whole cap is cut to it, so the bound holds.
        if bytes.count > maximumBytes { bytes = bytes.prefix(maximumBytes - 1) + Data("\n".utf8) }
        state.withLock { s in
            if s.size > 0 && s.size + bytes.count > maximumBytes { rotate(&s) }
            guard let handle = s.handle else {
                s.failures += 1
                return
            }
            do {
                try handle.write(contentsOf: bytes)
                s.size += bytes.count
            } catch {
                s.failures += 1
            }
        }
    }

    private func rotate(_ s: inout State) {
        let fm = FileManager.default
        try? fm.removeItem(atPath: rotatedPath)
        guard (try? fm.moveItem(atPath: path, toPath: rotatedPath)) != nil else {
            // The path cannot be reached any more (a jailed guest process
            // has its log only as the descriptor it opened:
            // docs/ARCHITECTURE.md, Sandbox): the bound holds by starting
            // the same file over, the older lines lost instead of kept.
            if let handle = s.handle, (try? handle.truncate(atOffset: 0)) != nil {
                s.size = 0
                s.rotations += 1
            }
            return
        }
        try? s.handle?.close()
        s.handle = try? Self.open(path)
        s.size = Int((try? s.handle?.seekToEnd()) ?? 0)
        s.rotations += 1
    }

    private static func open(_ path: String) throws(LogFileError) -> FileHandle {
        let fm = FileManager.default
        let directory = (path as NSString).deletingLastPathComponent
        if !directory.isEmpty && !fm.fileExists(atPath: directory) {
            do {
                try fm.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                       attributes: [.posixPermissions: 0o750])
            } catch {
                throw LogFileError(path: path, reason: "cannot create its directory: \(error.localizedDescription)")
            }
        }
        if !fm.fileExists(atPath: path) && !fm.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o640]) {
            throw LogFileError(path: path, reason: "cannot create it (permission denied?)")
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw LogFileError(path: path, reason: "cannot open it for writing (permission denied?)")
        }
        return handle
    }

    deinit { state.withLock { try? $0.handle?.close() } }
}

/// Where a guest's log goes when `--log-file` does not say: xl writes
/// `/var/log/xen/xl-NAME.log`; pvh writes `/var/log/pvh/NAME.log` for root,
/// otherwise `NAME.log` in `$XDG_STATE_HOME/pvh` (or `~/.local/state/pvh`,
/// the XDG base directory default), and `$PVH_LOG_DIR` overrides both.
public enum LogLocation {
    public static func defaultPath(name: String, uid: UInt32, environment: [String: String]) -> String {
        directory(uid: uid, environment: environment) + "/" + name + ".log"
    }

    public static func directory(uid: UInt32, environment: [String: String]) -> String {
        if let explicit = environment["PVH_LOG_DIR"], !explicit.isEmpty { return explicit }
        if uid == 0 { return "/var/log/pvh" }
        if let state = environment["XDG_STATE_HOME"], state.hasPrefix("/") { return state + "/pvh" }
        if let home = environment["HOME"], home.hasPrefix("/") { return home + "/.local/state/pvh" }
        return "/tmp/pvh-\(uid)/log"
    }
}
