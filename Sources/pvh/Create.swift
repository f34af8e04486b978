import ArgumentParser
import Foundation
import PVHAPI
import VMM
import XLConfig

#if canImport(Glibc)
import Glibc
#endif

/// `xl create` for PVH configs (xl.cfg(5), `main_create` in
/// tools/xl/xl_vmcontrol.c): the file parsed with libxlu's grammar, the
/// `KEY=VALUE` arguments appended to it as more lines, the result resolved
/// and either printed (`-n`) or booted.
struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a guest from an xl config file (xl create).",
        discussion: """
            The config is an xl.cfg(5) file for type="pvh" (README: xl configs). Each KEY=VALUE argument is \
            one more config line after the file's, as xl create takes them: it wins over the file, and a \
            string needs its quotes (name='"web"', disk='["/srv/web.img,raw,xvda,rw"]'). \
            Without -F the config goes to the pvh daemon (started on demand when its socket is \
            absent), which runs the guest as a process of its own and applies its on_poweroff/on_reboot/\
            on_crash (README: Toolstack). With -F (xl's "stay in the foreground", for systemd and \
            orchestrators) this process runs the guest, its console on stdin/stdout, with pvh run's exit \
            statuses. -c attaches to the console of the guest the daemon created (pvh console). A config xl would refuse exits 1 with xl's messages; bad arguments exit 2.
            """)

    @Flag(name: [.customShort("n"), .customLong("dry-run")], help: "Print the resolved config as JSON and exit.")
    var dryRun = false

    @Flag(name: .customShort("c"), help: "Attach to the guest's console once it is created (xl create -c); Ctrl-] detaches.")
    var console = false

    @Flag(name: .customShort("F"), help: "Run the guest in this process, in the foreground, not through the daemon.")
    var foreground = false

    @Flag(name: .customShort("p"), help: "Leave the guest paused once created, its vCPUs not started, until pvh unpause (xl create -p; through the daemon).")
    var paused = false

    /// The daemon's child for a `-p` create: stop (SIGSTOP) once the domain
    /// is built, before a vCPU runs; the daemon's unpause continues it.
    @Flag(name: .customLong("start-paused"), help: .hidden)
    var startPaused = false

    @OptionGroup var metrics: MetricsOptions

    @OptionGroup var log: LogOptions

    @OptionGroup var handoff: StoreHandoffOptions

    @OptionGroup var sandbox: SandboxOptions

    @Argument(help: ArgumentHelp("The xl config file.", valueName: "config")) var file: String

    @Argument(help: ArgumentHelp("More config lines, each KEY=VALUE in the file's syntax.", valueName: "KEY=VALUE"))
    var overrides: [String] = []

    /// The largest config file read.
    static let maximumFileSize = 16 << 20

    func validate() throws {
        for line in overrides where !line.contains("=") {
            throw ValidationError("\(line): not KEY=VALUE (xl create takes one config file)")
        }
        if paused && foreground {
            throw ValidationError("-p: only through the daemon (pvh unpause continues a daemon's guest; -F has no daemon)")
        }
        if startPaused && handoff.storeFD == nil {
            throw ValidationError("--start-paused: only for the daemon's guest processes")
        }
    }

    func run() throws {
        let stderr = FileDescriptorConsoleSink(fd: 2)
        func fail(_ lines: [String]) -> ExitCode {
            stderr.emit(Array(lines.map { $0 + "\n" }.joined().utf8))
            return ExitCode(1)
        }
        // xl's message when the file cannot be read (`xlu_cfg_readfile`).
        let fd = open(file, O_RDONLY)
        guard fd >= 0 else { throw fail(["\(file): unable to open configuration file: \(String(cString: strerror(errno)))"]) }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        // Bounded: a config is a few KiB, and /dev/zero is not one.
        let bytes: [UInt8]
        do {
            bytes = Array(try handle.read(upToCount: Self.maximumFileSize + 1) ?? Data())
        } catch {
            throw fail(["\(file): unable to read configuration file: \(error.localizedDescription)"])
        }
        guard bytes.count <= Self.maximumFileSize else {
            throw fail(["\(file): larger than \(Self.maximumFileSize >> 20) MiB: not a configuration file"])
        }
        stderr.emit(Array("Parsing config from \(file)\n".utf8))
        let resolution: XLDomainConfiguration.Resolution
        do {
            let settings = try ConfigSettings(source: file, bytes: bytes, overrides: overrides)
            resolution = try XLDomainConfiguration.resolve(settings)
        } catch {
            throw fail(error.lines)
        }
        let domain = resolution.configuration
        var warnings = resolution.warnings
        guard let name = GuestName(domain.name) else { throw fail(["\(file): name \"\(domain.name)\": \(GuestName.rule)"]) }
        let grantFrames = domain.maximumGrantFrames ?? GuestConfiguration.defaultGrantFrames
        if let problem = GuestLimits.violation(memoryMiB: domain.memoryMiB, vcpus: domain.vcpus, maxGrantFrames: grantFrames,
                                               naming: { "\(file): \($0) =" }) {
            throw fail([problem])
        }
        if dryRun {
            stderr.emit(Array(warnings.map { $0 + "\n" }.joined().utf8))
            print(domain.json.rendered())
            return
        }
        if !foreground {
            stderr.emit(Array(warnings.map { $0 + "\n" }.joined().utf8))
            try createThroughDaemon(bytes)
            return
        }
        warnings += Self.foregroundWarnings(domain)
        stderr.emit(Array(warnings.map { $0 + "\n" }.joined().utf8))
        var config = GuestConfiguration(kernelPath: domain.kernel, initrdPath: domain.ramdisk, commandLine: domain.commandLine ?? "",
                                        memoryMiB: domain.memoryMiB, vcpus: domain.vcpus, name: name.rawValue,
                                        maxGrantFrames: grantFrames, disks: domain.disks, networks: domain.networks)
        config.maximumEventChannelPort = UInt32(clamping: domain.maximumEventChannels)
        config.vcpuAffinity = domain.vcpuAffinity
        handoff.apply(to: &config)
        let restart = domain.action(on: .reboot)
        try runInForeground(config, name: name, restartOnReboot: restart == .restart ? "on_reboot=\"restart\"" : nil,
                            metrics: metrics.address(), log: log, named: true, store: handoff.store(), startPaused: startPaused,
                            sandbox: GuestSandboxSetting(options: sandbox, guestName: name.rawValue))
    }

    /// `POST /v1/domains` with the file's text and the overrides; the
    /// daemon resolves it again (the same parser) and starts the guest.
    private func createThroughDaemon(_ bytes: [UInt8]) throws {
        guard metrics.metrics == nil else {
            usageFailure("--metrics: only with -F (the daemon serves every guest's /metrics on its API socket)")
        }
        let client = DaemonClient()
        try client.ensureRunning()
        let request = CreateDomainRequest(xlConfig: String(decoding: bytes, as: UTF8.self), source: file, overrides: overrides,
                                          paused: paused ? true : nil)
        let body = Array(try JSONEncoder().encode(request))
        try reportingAPIErrors {
            let created = try client.call("POST", "/v1/domains", body: body, timeout: 60, as: CreatedDomain.self)
            print("Domain \(created.domain.domid) (\(created.domain.name)) created, uuid \(created.domain.uuid)")
            if console {
                fflush(nil)  // the "created" line before the console's bytes
                try ConsoleSession.attach(name: created.domain.name, socket: created.domain.console)
            }
        }
    }

    /// What the foreground run cannot do of the configured actions: it
    /// restarts on reboot when asked and otherwise ends with the guest
    /// (pvh run's exit statuses), so every other non-default action is
    /// reported once. The daemon applies them all (pvh create without -F).
    static func foregroundWarnings(_ domain: XLDomainConfiguration) -> [String] {
        var warnings: [String] = []
        for event in ShutdownEvent.allCases {
            let action = domain.action(on: event)
            guard action != event.defaultAction, !(event == .reboot && action == .destroy) else { continue }
            warnings.append("warning: \(event.key)=\"\(action.rawValue)\" is not applied with -F: pvh exits when the guest stops (the daemon applies it)")
        }
        return warnings
    }
}
