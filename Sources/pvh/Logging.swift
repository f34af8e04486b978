import ArgumentParser
import Foundation
import Logging
import PVHLogging
import VMM

#if canImport(Glibc)
import Glibc
#endif

/// Where the hypervisor console (console_io, port 0xE9) shows, besides its
/// ring and `pvh dmesg`.
enum HypervisorConsoleMode: String, ExpressibleByArgument, CaseIterable {
    /// In the guest's log (xl: the hypervisor's console is `xl dmesg`, not the guest's terminal).
    case log
    /// Also on stderr as it comes, `(dN) ...` (watching a boot).
    case stderr
    /// Also on stdout, the bytes as the guest wrote them, beside the PV
    /// console: what pvh did before the two were told apart; scripts and
    /// the integration tests read the test guest's results there.
    case stdout
    /// Only in the ring and `pvh dmesg`.
    case none
}

/// `--log-file`, `--log-level`, `--hypervisor-console`: for `pvh run` and `pvh create`.
struct LogOptions: ParsableArguments {
    @Option(name: .customLong("log-file"),
            help: ArgumentHelp("""
                The guest's log (xl's xl-NAME.log): default /var/log/pvh/NAME.log for root, else \
                $XDG_STATE_HOME/pvh/NAME.log ($PVH_LOG_DIR overrides); capped at 4 MiB, rotated once to PATH.1. \
                A guest run without --name has no log file unless this names one.
                """, valueName: "path"))
    var logFile: String?

    @Option(name: .customLong("log-level"),
            help: ArgumentHelp("Least severe record the log file keeps.",
                               valueName: "level"))
    var logLevel: Logger.Level = .info

    @Option(name: .customLong("hypervisor-console"),
            help: ArgumentHelp("""
                Where the guest's hypervisor console (console_io and port 0xE9) shows besides pvh dmesg: \
                log (the log file; default, as xl keeps it off the guest's console), \
                stderr (also on stderr, (dN)-prefixed lines), stdout (also on stdout as written, beside the PV console), \
                none (only pvh dmesg).
                """, valueName: "log|stderr|stdout|none"))
    var hypervisorConsole: HypervisorConsoleMode = .log

    /// The guest's logger, and a maker of loggers for parts of pvh into the
    /// same file (`metrics`). `named`: the user named the guest,
    /// so a default log file is kept under that name. A log file that
    /// cannot be opened is one line and exit 2.
    func logger(for config: GuestConfiguration, named: Bool) -> (Logger, (String?) -> Logger) {
        let label = PVHLogHandler.label(domain: config.domainID, name: config.name)
        let path = logFile ?? (named ? LogLocation.defaultPath(name: config.name, uid: getuid(),
                                                                environment: ProcessInfo.processInfo.environment) : nil)
        var file: LogFile?
        if let path {
            do {
                file = try LogFile(path: path)
            } catch {
                // The default place is named as such: the user did not write it.
                usageFailure(logFile == nil ? "log file '\(path)' (--log-file chooses another): \(error.reason)"
                                            : "--log-file '\(path)': \(error.reason)")
            }
        }
        let level = logLevel
        return (GuestLog.logger(label: label, file: file, level: level),
                { component in GuestLog.logger(label: label, file: file, level: level, component: component) })
    }

    /// Where the hypervisor console goes for this run; `stdout` is the
    /// run's own (shared with the PV console, so their bytes keep their order).
    func hypervisorConsoleOutputs(logger: Logger, file: HypervisorConsoleFile?, stdout: any ConsoleSink) -> HypervisorConsoleOutputs {
        switch hypervisorConsole {
        case .log: HypervisorConsoleOutputs(logger: logger, file: file)
        case .stderr: HypervisorConsoleOutputs(lines: FileDescriptorConsoleSink(fd: 2), logger: logger, file: file)
        case .stdout: HypervisorConsoleOutputs(raw: stdout, logger: logger, file: file)
        case .none: HypervisorConsoleOutputs(file: file)
        }
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// `pvh dmesg [NAME]`: the hypervisor console (xl dmesg). Without a
/// daemon each guest's ring is a file in its runtime directory,
/// `<runtime dir>/<NAME>/dmesg`, kept after the guest ends (until a guest
/// of that name starts again).
struct Dmesg: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the hypervisor console: what guests wrote with console_io and to port 0xE9 (xl dmesg).",
        discussion: """
            Each line is prefixed (dN), N the guest's domain id, as Xen prints guest output. Without NAME, \
            every guest's lines, guest by guest in name order. A guest keeps its newest 64 KiB; a first line \
            `(pvh) N older lines dropped` counts what went. Exit 1 if NAME has no console.
            """)

    @Argument(help: "The guest's name (all guests if none).") var name: String?

    func run() throws {
        let runtime = RuntimeDirectory.default
        if let name {
            guard let guest = GuestName(name) else { usageFailure("\(name): not a guest name (\(GuestName.rule))") }
            guard let bytes = FileManager.default.contents(atPath: runtime.hypervisorConsoleFile(for: guest)) else {
                FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(name): no such guest (no \(runtime.hypervisorConsoleFile(for: guest)))\n".utf8))
                throw ExitCode(1)
            }
            FileDescriptorConsoleSink(fd: 1).emit(Array(bytes))
            return
        }
        for guest in runtime.guestsWithHypervisorConsole() {
            if let bytes = FileManager.default.contents(atPath: runtime.hypervisorConsoleFile(for: guest)) {
                FileDescriptorConsoleSink(fd: 1).emit(Array(bytes))
            }
        }
    }
}
