import ArgumentParser
import Dispatch
import Locking
import DeviceSpecs
import KVM
import PVHMetrics
import VMM
import XenABI
import XenStore

#if canImport(Glibc)
import Glibc
#endif

@main
struct PVH: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pvh",
        abstract: "Run Xen PVH guests on Linux KVM.",
        subcommands: [Run.self, Create.self, List.self, Shutdown.self, Reboot.self, Destroy.self, Pause.self, Unpause.self, Info.self,
                      ConsoleCommand.self, Daemon.self, MemSet.self, MemMax.self, VCPUSet.self, VCPUList.self, VCPUPin.self, Top.self, Uptime.self, Events.self,
                      XenStoreCommand.self, Dmesg.self, Host.self,
                      BlockAttach.self, BlockDetach.self, BlockList.self, NetworkAttach.self, NetworkDetach.self, NetworkList.self])

    /// ArgumentParser exits 64 on bad usage; pvh's contract is one line and status 2.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let code as ExitCode {
            Glibc.exit(code.rawValue)
        } catch {
            if exitCode(for: error) == .validationFailure {
                let message = fullMessage(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
                usageFailure(message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message)
            }
            exit(withError: error)
        }
    }
}

/// Prints one line to stderr and exits with status 2: bad user input.
func usageFailure(_ message: String) -> Never {
    FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(message)\n".utf8))
    Glibc.exit(2)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Boot one guest in the foreground, its console on stdin/stdout.",
        discussion: """
            The kernel is entered at its PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); \
            an ELF vmlinux or a bzImage (gzip, xz, lzma, bzip2, lz4, zstd payload) is accepted. \
            Exit status: 0 guest powered off, 1 VMM failure, 2 bad arguments or kernel, \
            3 guest rebooted (unless --on-reboot restart), 4 guest crashed, 5 suspended, 6 soft reset, \
            130 stopped by SIGINT/SIGTERM or Ctrl-] on the console.
            """)

    @Option(name: .long, help: ArgumentHelp("Guest kernel: a PVH-capable ELF vmlinux or bzImage.", valueName: "path"))
    var kernel: String

    @Option(name: .long, help: ArgumentHelp("Initial ramdisk, passed to the guest as the first start_info module.", valueName: "path"))
    var initrd: String?

    @Option(name: .long, help: ArgumentHelp("Guest kernel command line.", valueName: "string"))
    var cmdline: String = ""

    @Option(name: .long, help: ArgumentHelp("Guest memory in MiB (16 to \(GuestConfiguration.maximumMemoryMiB)).", valueName: "MiB"))
    var memory: Int = 256

    @Option(name: .long, help: ArgumentHelp("Number of virtual CPUs (1 to \(GuestConfiguration.maximumVCPUs)).", valueName: "n"))
    var vcpus: Int = 1

    @Option(name: .customLong("cpus"),
            help: ArgumentHelp("""
                Host CPUs the vCPUs' threads may run on, in xl's cpus= syntax (xl.cfg(5)): e.g. 2, 0-3,^1, nodes:0 or all. \
                Once: every vCPU; repeated: the Nth for vCPU N-1, the vCPUs past the last unpinned (xl's list form).
                """, valueName: "list"))
    var cpus: [String] = []

    /// The `--cpus` options parsed, by vCPU (a single one for every vCPU).
    func vcpuAffinity() throws(CPUListError) -> [CPUList] {
        let lists = try cpus.map { (text) throws(CPUListError) in try CPUList(parsing: text) }
        return lists.count == 1 ? Array(repeating: lists[0], count: vcpus) : Array(lists.prefix(vcpus))
    }

    @Option(name: .customLong("max-grant-frames"),
            help: ArgumentHelp("Grant table frames the guest may use (xl's max_grant_frames; 1 to \(GuestConfiguration.maximumGrantFrames)).",
                               valueName: "n"))
    var maxGrantFrames: Int = GuestConfiguration.defaultGrantFrames

    @Option(name: .customLong("disk"),
            help: ArgumentHelp("""
                A disk in xl's disk specification syntax (xl-disk-configuration(5)), e.g. /srv/guest.img,raw,xvda,rw \
                or format=raw,vdev=xvda,access=rw,target=/srv/guest.img; repeatable. Served by pvh's blkback (README: Disks).
                """, valueName: "spec"))
    var disk: [String] = []

    @Option(name: .customLong("net"),
            help: ArgumentHelp("""
                A network interface in xl's vif syntax (xl-network-configuration(5)) plus type=user|tap|none, e.g. \
                '' (user networking through passt, no root needed), type=tap,vifname=tap0, bridge=br0, \
                mac=00:16:3e:01:02:03,mtu=1500; repeatable (README: Networking).
                """, valueName: "spec"))
    var net: [String] = []

    /// The `--net` options parsed and checked together (no two with one MAC, name or devid).
    func networks() throws(NetworkInterfaceSpecificationError) -> [NetworkInterfaceSpecification] {
        try NetworkInterfaceSpecification.parse(net)
    }

    /// The `--disk` options parsed and checked together (no two with one vdev).
    func disks() throws(DiskSpecificationError) -> [DiskSpecification] { try DiskSpecification.parse(disk) }

    func validate() throws {
        if let problem = GuestLimits.violation(memoryMiB: memory, vcpus: vcpus, maxGrantFrames: maxGrantFrames, naming: { "--" + $0.split(separator: "_").joined(separator: "-") }) {
            throw ValidationError(problem)
        }
        do {
            _ = try vcpuAffinity()
        } catch {
            throw ValidationError("--cpus \(error)")
        }
        do {
            _ = try disks()
        } catch {
            throw ValidationError(error.description)
        }
        do {
            _ = try networks()
        } catch {
            throw ValidationError(error.description)
        }
    }

    @Option(name: .long, help: ArgumentHelp(
        "The guest's name, for pvh shutdown/reboot/mem-set/xenstore (default pvh-<pid>). Its XenStore socket is <runtime dir>/<name>/xenstored.sock (runtime dir: $PVH_RUNTIME_DIR, /run/pvh for root, else $XDG_RUNTIME_DIR/pvh or /tmp/pvh-<uid>).",
        valueName: "name"))
    var name: String?

    @Option(name: .customLong("on-reboot"),
            help: ArgumentHelp("When the guest reboots: exit (status 3) or restart it (xl's on_reboot).", valueName: "exit|restart"))
    var onReboot: RebootAction = .exit

    enum RebootAction: String, ExpressibleByArgument, CaseIterable {
        case exit, restart
    }

    @OptionGroup var metrics: MetricsOptions

    @OptionGroup var log: LogOptions

    @OptionGroup var handoff: StoreHandoffOptions

    @OptionGroup var sandbox: SandboxOptions

    func run() throws {
        let rawName = name ?? "pvh-\(getpid())"
        guard let guestName = GuestName(rawName) else { usageFailure("--name \(rawName): \(GuestName.rule)") }
        let diskSpecifications: [DiskSpecification]
        do {
            diskSpecifications = try disks()
        } catch {
            usageFailure(error.description)
        }
        let networkSpecifications: [NetworkInterfaceSpecification]
        do {
            networkSpecifications = try networks()
        } catch {
            usageFailure(error.description)
        }
        var config = GuestConfiguration(kernelPath: kernel, initrdPath: initrd, commandLine: cmdline, memoryMiB: memory, vcpus: vcpus,
                                        name: guestName.rawValue, maxGrantFrames: maxGrantFrames, disks: diskSpecifications,
                                        networks: networkSpecifications)
        do {
            config.vcpuAffinity = try vcpuAffinity()
        } catch {
            usageFailure("--cpus \(error)")
        }
        handoff.apply(to: &config)
        try runInForeground(config, name: guestName, restartOnReboot: onReboot == .restart ? "--on-reboot restart" : nil,
                            metrics: metrics.address(), log: log, named: name != nil, store: handoff.store(),
                            sandbox: GuestSandboxSetting(options: sandbox, guestName: guestName.rawValue))
    }
}

/// `--metrics`, for `pvh run` and `pvh create`.
struct MetricsOptions: ParsableArguments {
    @Option(name: .customLong("metrics"),
            help: ArgumentHelp("""
                Serve the guest's counters for Prometheus at GET /metrics on HOST:PORT (TCP) or on a Unix socket \
                path (mode 0600), while the guest runs (README: Metrics).
                """, valueName: "address"))
    var metrics: String?

    func validate() throws { try Self.check(metrics) }

    /// A `--metrics` address that does not parse is a usage error (pvh
    /// daemon's option too).
    static func check(_ metrics: String?) throws {
        guard let metrics else { return }
        do {
            _ = try MetricsAddress(parsing: metrics)
        } catch {
            throw ValidationError("--metrics '\(metrics)': \(error)")
        }
    }

    /// `--metrics` parsed (with what the user wrote, for messages), or the
    /// one-line usage failure naming it.
    func address() -> MetricsOption? {
        guard let metrics else { return nil }
        do {
            return MetricsOption(address: try MetricsAddress(parsing: metrics), text: metrics)
        } catch {
            usageFailure("--metrics '\(metrics)': \(error)")
        }
    }
}

/// The hidden options a host daemon starts a guest process with (issue 12,
/// docs/ARCHITECTURE.md: the process model), for `pvh run` and `pvh create
/// -F`: the domain uses the daemon's store over two inherited connected
/// stream sockets instead of a store of its own, and no xenstored socket is
/// served. `--store-fd`: the daemon's privileged (dom0) connection, for the
/// domain's tree and the backends; `--guest-store-fd`: the connection the
/// daemon serves as the guest's domain, unprivileged, that the guest's ring
/// is relayed over; `--domid`: the domain id the daemon gave the guest.
struct StoreHandoffOptions: ParsableArguments {
    @Option(name: .customLong("store-fd"), help: .hidden)
    var storeFD: Int32?

    @Option(name: .customLong("guest-store-fd"), help: .hidden)
    var guestStoreFD: Int32?

    @Option(name: .customLong("domid"), help: .hidden)
    var domid: UInt16?

    /// Where a new daemon hands this process new connections after a
    /// restart (GuestReattach.swift); without it a lost store stays lost.
    @Option(name: .customLong("reattach-socket"), help: .hidden)
    var reattachSocket: String?

    /// Where this process records its exit status before it exits, for a
    /// daemon that cannot reap it (GuestExitRecord).
    @Option(name: .customLong("exit-record"), help: .hidden)
    var exitRecord: String?

    func validate() throws {
        if (storeFD == nil) != (guestStoreFD == nil) {
            throw ValidationError("--store-fd and --guest-store-fd: give both or neither")
        }
        if let storeFD, storeFD == guestStoreFD { throw ValidationError("--store-fd \(storeFD): the same descriptor as --guest-store-fd") }
        if let domid, domid == 0 || domid >= 0x7ff0 {
            throw ValidationError("--domid \(domid): must be 1 to 32751 (not dom0, below DOMID_FIRST_RESERVED)")
        }
    }

    func apply(to config: inout GuestConfiguration) {
        if let domid { config.domainID = DomainID(rawValue: domid) }
    }

    /// The daemon's store over the inherited descriptors, or nil for the
    /// embedded default. A descriptor that is not a connected stream socket
    /// is a usage failure.
    func store() -> HandedOverStore? {
        guard let storeFD, let guestStoreFD else { return nil }
        guard let control = UnixSocket(inheritedDescriptor: storeFD) else {
            usageFailure("--store-fd \(storeFD): not a connected stream socket")
        }
        guard let guest = UnixSocket(inheritedDescriptor: guestStoreFD) else {
            usageFailure("--guest-store-fd \(guestStoreFD): not a connected stream socket")
        }
        return HandedOverStore(control: control, guest: guest, reattachSocket: reattachSocket, exitRecord: exitRecord)
    }
}

/// The two connections a daemon handed this guest process, and where a
/// later daemon finds it again.
struct HandedOverStore {
    let control: UnixSocket
    let guest: UnixSocket
    let reattachSocket: String?
    let exitRecord: String?
}

/// `pvh run --metrics`: where to serve, and the option as written.
struct MetricsOption {
    let address: MetricsAddress
    let text: String
}

/// What pvh accepts for a guest's size, checked the same way for `pvh run`'s
/// options and `pvh create`'s config keys.
enum GuestLimits {
    /// The first value out of range, one line (`naming` turns xl's key, such
    /// as `max_grant_frames`, into what the user wrote: `--max-grant-frames`,
    /// `max_grant_frames=`); nil if all fit.
    static func violation(memoryMiB: Int, vcpus: Int, maxGrantFrames: Int, naming: (String) -> String) -> String? {
        if !(1...GuestConfiguration.maximumGrantFrames).contains(maxGrantFrames) {
            return "\(naming("max_grant_frames")) \(maxGrantFrames): must be 1 to \(GuestConfiguration.maximumGrantFrames)"
        }
        if !(16...GuestConfiguration.maximumMemoryMiB).contains(memoryMiB) {
            return "\(naming("memory")) \(memoryMiB): must be 16 to \(GuestConfiguration.maximumMemoryMiB) MiB"
        }
        if !(1...GuestConfiguration.maximumVCPUs).contains(vcpus) {
            return "\(naming("vcpus")) \(vcpus): must be 1 to \(GuestConfiguration.maximumVCPUs)"
        }
        return nil
    }
}

/// Boots `config` in the foreground, its console on stdin/stdout, and exits
/// with the guest's end (`pvh run`'s exit statuses): `pvh run`, and
/// `pvh create` until the daemon exists. `restartOnReboot`: a reboot starts
/// the guest again (xl's `on_reboot="restart"`) instead of exiting 3; the
/// text names what asked for it (`--on-reboot restart`) in the message.
/// `metrics`: serve the guest's counters there while it runs. `log`: the
/// guest's log and hypervisor console; `named`: the user chose the name, so
/// the log and `pvh dmesg`'s file are kept under it after the guest ends.
func runInForeground(_ config: GuestConfiguration, name guestName: GuestName, restartOnReboot restartReason: String?,
                     metrics: MetricsOption? = nil, log: LogOptions, named: Bool,
                     store handedOver: HandedOverStore? = nil, startPaused: Bool = false,
                     sandbox: GuestSandboxSetting) throws {
    let rawName = guestName.rawValue
    let (logger, componentLogger) = log.logger(for: config, named: named)
    // The signals pvh acts on are blocked in every thread (each thread
    // inherits the mask, so this comes before any is started). Dispatch
    // receives them through a signalfd, which sees only blocked signals;
    // unblocked, a signal goes to any thread and the do-nothing handler
    // of `signalSources` takes it (SIGUSR1 dumps were lost that way after
    // the first). One that comes before the sources exist stays pending.
    var handled = sigset_t()
    sigemptyset(&handled)
    for sig in [SIGINT, SIGTERM, SIGUSR1] { sigaddset(&handled, sig) }
    pthread_sigmask(SIG_BLOCK, &handled, nil)
    // The passt spawner is forked now, before any domain exists (it keeps
    // none of this process's descriptors either way), and the jail's mount
    // namespace made while this is the only thread.
    let runtime = RuntimeDirectory.default
    var sandbox = sandbox
    var unjailed: String?
    if restartReason != nil {
        unjailed = "--on-reboot restart rebuilds the domain from its files"
    } else if handedOver == nil, case .unix? = metrics?.address {
        // The daemon removes its guests' sockets; `pvh run`'s would stay
        // behind (the next run's bind refused), so it keeps its paths.
        unjailed = "--metrics serves a Unix socket the jailed process could not remove at its end"
    }
    try sandbox.prepare(logger: logger, runtime: runtime, unjailed: unjailed, daemonDomain: handedOver == nil ? nil : config.domainID)
    // Opened now, written at the end: the jail has no path to it.
    let exitRecord = handedOver?.exitRecord.flatMap { GuestExitRecord.open($0, logger: logger) }
    let domainStore: DomainStore
    let socketServer: XenStoreSocketServer?
    var reattach: ReattachableDomainStore?
    if let handedOver {
        // A guest process of the daemon: its store, no socket of our own
        // (the daemon serves xenstored's). The guest's directory still
        // holds its hypervisor console's file (pvh dmesg).
        do { try runtime.prepare(for: guestName) } catch { logger.warning("pvh dmesg: \(error)") }
        let report: @Sendable (String) -> Void = { logger.warning("xenstore: \($0)") }
        let remote = XenStoreRemote(stream: handedOver.control) { report("the daemon's store: connection lost: \($0)") }
        let relay = XenStoreRelay(stream: handedOver.guest) { report("guest ring relay: \($0)") }
        if handedOver.reattachSocket != nil {
            // It outlives its daemon (GuestReattach.swift): a console or
            // store whose daemon went must not end it (EPIPE, not SIGPIPE;
            // no SIGHUP from an orphaned process group), and the store is
            // waited for, not failed.
            signal(SIGPIPE, SIG_IGN)
            signal(SIGHUP, SIG_IGN)
            let store = ReattachableDomainStore(access: ReattachableXenStore(remote), ring: ReattachableRingPeer(relay))
            reattach = store
            domainStore = .remote(store.access, guestRing: store.ring)
        } else {
            // Losing it is reported; the guest runs on (its ring gets error = COMM).
            domainStore = .remote(remote, guestRing: relay)
        }
        socketServer = nil
    } else {
        // The toolstack's XenStore: outlives a guest rebooted with
        // --on-reboot restart, served to dom0 clients on a Unix socket.
        let store = XenStoreServer(log: { logger.warning("xenstore: \($0)") })
        do {
            try runtime.prepare(for: guestName)
            socketServer = try XenStoreSocketServer(path: runtime.xenStoreSocket(for: guestName), server: store)
        } catch {
            if error.errno == EADDRINUSE { usageFailure("--name \(rawName): a guest of that name is already running") }
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: XenStore socket: \(error)\n".utf8))
            throw ExitCode(1)
        }
        domainStore = .embedded(store)
    }
    socketServer?.start()
    defer {
        if let socketServer {
            socketServer.stop()
            runtime.cleanUp(for: guestName)
        }
    }
    // The metrics server runs on its own threads from before the first
    // boot until the last domain ended (each boot's counters replace the
    // last's under the same name).
    let metricsRegistry = PVHMetricsRegistry()
    var metricsServer: MetricsServer?
    if let metrics {
        do {
            metricsServer = try MetricsServer.start(metrics.address, registry: metricsRegistry, logger: componentLogger("metrics"))
        } catch {
            if let socketServer {
                socketServer.stop()
                runtime.cleanUp(for: guestName)
            }
            usageFailure("--metrics '\(metrics.text)': \(error)")
        }
    }
    defer { metricsServer?.stop() }
    let current = CurrentDomain()
    let terminal = HostTerminal()
    terminal.attach(to: current)
    // A daemon's guest holds its console output while no daemon runs
    // (HeldConsole.swift); `pvh run`'s goes to its terminal as it is.
    // `pvh run`'s stdout (the PV console, and the hypervisor console with
    // `stdout`) never holds the console's device thread or the guest: a
    // buffer and a writer thread of its own (BufferedConsoleSink: 1 MiB,
    // then the oldest output dropped and counted; docs/ARCHITECTURE.md:
    // Host faults). A daemon's guest's goes to the daemon's relay the same
    // way, and is held while no daemon runs (HeldConsole.swift).
    let heldConsole = handedOver == nil ? nil : HeldConsoleSink()
    let bufferedStdout = heldConsole?.output ?? BufferedConsoleSink(fd: 1)
    let consoleSink: any ConsoleSink = heldConsole ?? bufferedStdout
    // Hot-plugged disks' images the daemon opens and passes (a jailed
    // process cannot open them).
    let passedImages = PassedImages()
    let reattachListener = reattach.flatMap { store in
        handedOver?.reattachSocket.flatMap { path in
            startReattachListener(path, store: store, images: passedImages, logger: logger) {
                if let held = heldConsole?.consoleReplaced() {
                    logger.notice("console: \(held.written) byte(s) written while no daemon ran handed to the new one (\(held.dropped) older dropped)")
                }
                terminal.attachAgain(to: current)
            }
        }
    }
    defer { reattachListener?.close() }
    // A reader of stdout that goes away (`pvh run | head`) must not end
    // the guest: EPIPE, not SIGPIPE, and the console sink drops and counts.
    signal(SIGPIPE, SIG_IGN)
    // SIGINT/SIGTERM from outside stop the guest cleanly (terminal restored, status 130).
    var sources = signalSources([SIGINT, SIGTERM]) { current.stop() }
    // SIGUSR1: each vCPU prints its registers and stack top (xl debug-keys).
    sources += signalSources([SIGUSR1]) { current.domain?.dumpVCPUState() }
    // The hypervisor console's file (pvh dmesg), started empty: kept after
    // the guest ends when the user named it, gone with it otherwise, and
    // gone if no guest ever booted.
    let consoleFile: HypervisorConsoleFile?
    do {
        consoleFile = try HypervisorConsoleFile(path: runtime.hypervisorConsoleFile(for: guestName))
    } catch {
        logger.warning("pvh dmesg: \(error)")
        consoleFile = nil
    }
    var end = DomainExit.stopped
    var boots = 0
    defer { if !named || boots == 0 { consoleFile?.remove() } }
    repeat {
        let domain: Domain
        do {
            domain = try Domain(configuration: config, console: consoleSink, domainStore: domainStore,
                                hypervisorConsole: log.hypervisorConsoleOutputs(logger: logger, file: consoleFile, stdout: consoleSink),
                                passedImages: passedImages, logger: logger)
        } catch {
            terminal.restore()
            metricsServer?.stop()
            if !named || boots == 0 { consoleFile?.remove() }
            if let socketServer {
                socketServer.stop()
                runtime.cleanUp(for: guestName)
            }
            logger.notice("not started: \(error.description)")
            if error.isUsageError { usageFailure(error.description) }
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(error.description)\n".utf8))
            throw ExitCode(1)
        }
        if boots > 0 {
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: guest rebooted: restarting it (\(restartReason ?? ""))\r\n".utf8))
            logger.notice("guest rebooted: restarting it (\(restartReason ?? ""))")
        }
        logger.notice("domain \(config.domainID.rawValue) started: kernel \(config.kernelPath), \(config.memoryMiB) MiB, \(config.vcpus) vCPU(s)")
        boots += 1
        metricsRegistry.add(DomainMetricSource(domain: domain))
        // memory/static-max from the toolstack is the domain's cap (pvh mem-max).
        let memoryLimit = domain.watchMemoryLimit()
        defer { memoryLimit.map(domain.store.unwatch) }
        // Set-up is done (memory mapped, images opened, vCPUs created, passt
        // started, sockets connected): confined before the first vCPU runs,
        // once; a restarted domain is built under the filter.
        if boots == 1 {
            let guestDirectory = runtime.directory(for: guestName)
            try sandbox.confine(logger: logger, guestDirectory: access(guestDirectory, F_OK) == 0 ? guestDirectory : nil)
        }
        // xl create -p: built, not run. The whole process stops here; the
        // daemon sees it stopped (proc(5) state T), records the domain
        // paused, and its unpause (SIGCONT) lets the vCPUs start.
        if startPaused && boots == 1 { kill(getpid(), SIGSTOP) }
        guard current.start(domain) else { break }
        end = domain.run(confineThread: sandbox.vcpuConfinement(logger: logger))
        current.finished()
    } while end == .shutdown(.reboot) && restartReason != nil && !current.stopRequested
    // A stop from outside wins over a reboot that raced with it.
    if current.stopRequested && end == .shutdown(.reboot) && restartReason != nil { end = .stopped }
    terminal.restore()
    sources.forEach { $0.cancel() }
    // What the guest wrote reaches stdout, unless nobody reads it: then
    // pvh ends without waiting for the reader, saying what it lost.
    let unwritten = bufferedStdout.flush(idle: .seconds(5))
    let dropped = bufferedStdout.dropped
    if dropped > 0 || unwritten > 0 {
        let lost = "console: \(dropped) bytes of guest output dropped and \(unwritten) not written: stdout was not read"
        logger.warning("\(lost)")
        FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(lost)\n".utf8))
    }
    if case .shutdown(.poweroff) = end {} else {
        FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(end)\n".utf8))
    }
    logger.notice("domain \(config.domainID.rawValue) ended: \(end) (exit status \(end.exitStatus))")
    exitRecord?.write(end.exitStatus)
    throw ExitCode(end.exitStatus)
}

/// Dispatch sources that run `handler` for each of `signals` (blocked in
/// every thread beforehand, so the signalfd behind them sees them). A
/// signal that reaches a thread directly runs a handler that does nothing.
/// Not SIG_IGN: setting SIG_IGN discards an instance already pending
/// (POSIX sigaction, "Signal Actions"; Linux's do_sigaction flushes it),
/// so a SIGTERM that came while the signals were blocked and the sources
/// not yet made was lost, and `pvh destroy` of a guest process just
/// started waited its whole grace period for it.
func signalSources(_ signals: [Int32], handler: @escaping @Sendable () -> Void) -> [DispatchSourceSignal] {
    signals.map { sig in
        signal(sig) { _ in }
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler(handler: handler)
        source.resume()
        return source
    }
}

/// The domain `pvh run` is running now (a reboot with `--on-reboot restart`
/// replaces it); what stdin and signals act on.
final class CurrentDomain: Sendable {
    private struct State {
        var domain: Domain?
        var stopped = false
        /// Input typed while no domain runs (before the first, between reboots).
        var pendingInput: [UInt8] = []
    }
    private let state = Lock(State())

    /// Makes `domain` current and hands it the input that waited; false if a stop came first.
    func start(_ domain: Domain) -> Bool {
        let waiting: [UInt8]? = state.withLock { s in
            guard !s.stopped else { return nil }
            s.domain = domain
            defer { s.pendingInput = [] }
            return s.pendingInput
        }
        guard let waiting else { return false }
        if !waiting.isEmpty { domain.consoleBackend.input(waiting) }
        return true
    }

    /// Console input: to the running guest, or kept for the next one.
    func input(_ bytes: [UInt8]) {
        let d = state.withLock { s -> Domain? in
            if s.domain == nil { s.pendingInput += bytes }
            return s.domain
        }
        d?.consoleBackend.input(bytes)
    }

    var domain: Domain? { state.withLock { $0.domain } }
    var stopRequested: Bool { state.withLock { $0.stopped } }

    /// The current domain ended: input waits for the next one.
    func finished() { state.withLock { $0.domain = nil } }

    /// Stops the running guest and any restart.
    func stop() {
        let d = state.withLock { s -> Domain? in
            s.stopped = true
            return s.domain
        }
        d?.stop()
    }
}

struct Host: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe this host's KVM: hardware or software backend, and the capabilities pvh uses.")

    func run() throws {
        do {
            let system = try KVMSystem()
            print(system.hostReport)
        } catch {
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: /dev/kvm: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
