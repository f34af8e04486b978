import Logging

/// A guest's logger: every record at `level` or worse to its log file
/// (when it has one), and warnings or worse also on stderr as `pvh: ...`,
/// as pvh's diagnostics always were.
public enum GuestLog {
    /// `component`: a part of pvh with records of its own (`metrics`): named
    /// on stderr (`pvh: metrics: ...`) and in the file (`component=metrics`).
    public static func logger(label: String, file: (any LogDestination)?, level: Logger.Level = .info,
                              standardError: any LogDestination = StandardError(),
                              standardErrorLevel: Logger.Level = .warning, component: String? = nil) -> Logger {
        var handlers: [any LogHandler] = [StandardErrorLogHandler(prefix: component, level: standardErrorLevel,
                                                                  destination: standardError)]
        if let file { handlers.append(PVHLogHandler(label: label, level: level, destination: file)) }
        var logger = Logger(label: label, factory: { _ in MultiplexLogHandler(handlers) })
        if let component { logger[metadataKey: "component"] = "\(component)" }
        return logger
    }

    /// The logger of a library user that set up nothing: `pvh: ...` on
    /// stderr for warnings and worse, nothing else.
    public static func standardErrorOnly(label: String = "pvh") -> Logger {
        Logger(label: label, factory: { _ in StandardErrorLogHandler() })
    }
}
