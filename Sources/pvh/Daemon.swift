import ArgumentParser
import Dispatch
import Foundation
import HostIO
import PVHAPI
import PVHMetrics
import VMM
import XenStore

#if canImport(Glibc)
import Glibc
#endif

/// Where the daemon's sockets are by default.
enum DaemonDefaults {
    /// `<runtime dir>/api.sock`: /run/pvh/api.sock for root, under
    /// `PVH_RUNTIME_DIR` when set (tests).
    static var apiSocket: String { RuntimeDirectory.default.path + "/api.sock" }
    /// xenstored's standard socket, so Debian's `xenstore-*` need no
    /// environment; under `PVH_RUNTIME_DIR` when set, so tests and a
    /// second daemon never take the host's.
    static var xenStoreSocket: String {
        if let explicit = ProcessInfo.processInfo.environment["PVH_RUNTIME_DIR"], !explicit.isEmpty {
            return explicit + "/xenstored.sock"
        }
        return "/var/run/xenstored/socket"
    }
}

/// `pvh daemon`: the host's toolstack daemon (README: Toolstack).
struct Daemon: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the pvh daemon: the API, the host's XenStore, one supervised process per guest.",
        discussion: """
            Serves the HTTP API (docs/api/openapi.json) on a Unix socket (mode 0600) and the host's XenStore \
            on xenstored's socket, and runs each guest created through it as a child process \
            (pvh create -F), applying its on_poweroff/on_reboot/on_crash. Without --foreground it starts \
            itself detached and returns once its API socket answers. SIGTERM or SIGINT stops the daemon \
            and leaves every guest running: its state (the domains, the store) is in \
            <runtime dir>/.daemon/daemon-state.json, and the next daemon started on the same runtime \
            directory finds the guests again (their ids, consoles and store trees); with \
            --destroy-on-exit it destroys every guest first instead.
            """)

    @Option(name: .customLong("api-socket"), help: ArgumentHelp("The API's Unix socket (default <runtime dir>/api.sock).", valueName: "path"))
    var apiSocket: String?

    @Option(name: .customLong("xenstore-socket"),
            help: ArgumentHelp("The host XenStore's socket (default /var/run/xenstored/socket; $PVH_RUNTIME_DIR/xenstored.sock when that is set).",
                               valueName: "path"))
    var xenStoreSocket: String?

    @Flag(name: .long, help: "Stay in the foreground (for systemd and tests).")
    var foreground = false

    @Flag(name: .customLong("destroy-on-exit"), help: "Destroy every guest when the daemon stops, rather than leave them running for the next daemon.")
    var destroyOnExit = false

    @Option(name: .customLong("metrics"),
            help: ArgumentHelp("Also serve /metrics (the daemon's and every guest's counters) on HOST:PORT for Prometheus.",
                               valueName: "address"))
    var metrics: String?

    @OptionGroup var sandbox: SandboxOptions

    func validate() throws { try MetricsOptions.check(metrics) }

    func run() throws {
        // The daemon's guest processes read it once at their start
        // (GuestSandboxSetting); a detached daemon inherits it too.
        if sandbox.noSandbox { setenv(GuestSandboxSetting.variable, "off", 1) }
        if sandbox.noJail { setenv(GuestSandboxSetting.jailVariable, "off", 1) }
        if let user = sandbox.jailUser { setenv(GuestSandboxSetting.jailUserVariable, user, 1) }
        if let base = sandbox.jailUIDBase { setenv(GuestSandboxSetting.jailUIDBaseVariable, base, 1) }
        let api = apiSocket ?? DaemonDefaults.apiSocket
        let storeSocket = xenStoreSocket ?? DaemonDefaults.xenStoreSocket
        if !foreground {
            let pid = try DaemonConnection.startDetached(api: api, storeSocket: storeSocket, destroyOnExit: destroyOnExit, metrics: metrics)
            print("pvh daemon started (pid \(pid)), API on \(api)")
            return
        }
        try runInForeground(api: api, storeSocket: storeSocket)
    }

    private func runInForeground(api: String, storeSocket: String) throws {
        let stderr = FileDescriptorConsoleSink(fd: 2)
        // Every line also kept for GET /v1/dmesg (LogAPI.swift).
        let log: @Sendable (String) -> Void = {
            Supervisor.logLines.append($0)
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: daemon: \($0)\n".utf8))
        }
        var handled = sigset_t()
        sigemptyset(&handled)
        for sig in [SIGINT, SIGTERM] { sigaddset(&handled, sig) }
        pthread_sigmask(SIG_BLOCK, &handled, nil)
        signal(SIGPIPE, SIG_IGN)
        let runtime = RuntimeDirectory.default
        let stateDirectory = runtime.path + "/.daemon"
        for dir in [runtime.path, stateDirectory, (api as NSString).deletingLastPathComponent,
                    (storeSocket as NSString).deletingLastPathComponent] where !dir.isEmpty {
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        if let probe = try? UnixSocket.connect(to: api) {
            probe.close()
            stderr.emit(Array("pvh: daemon: \(api): a daemon already answers there\n".utf8))
            throw ExitCode(1)
        }
        try? FileManager.default.removeItem(atPath: api)
        let store = XenStoreServer(log: { log("xenstore: \($0)") })
        // The control domain's nodes, as xenstored and libxl leave them.
        try? store.write("/local/domain/0/name", "Domain-0")
        try? store.write("/local/domain/0/domid", "0")
        let supervisor = Supervisor(
            paths: .init(apiSocket: api, xenStoreSocket: storeSocket, stateDirectory: stateDirectory, runtime: runtime,
                         executable: Self.executable),
            store: store, log: log)
        // A previous daemon's store, before anyone can reach it (Adoption.swift).
        let saved = supervisor.readSavedState()
        if let saved {
            let refused = Supervisor.restore(saved.store, into: store)
            refused.prefix(8).forEach { log("state: store node \($0): not restored") }
            log("state: \(saved.domains.count) domain(s) and \(saved.store.count - refused.count) store node(s) restored")
        }
        let storeServer: XenStoreSocketServer
        do {
            storeServer = try XenStoreSocketServer(path: storeSocket, server: store)
        } catch {
            stderr.emit(Array("pvh: daemon: XenStore socket \(storeSocket): \(error)\n".utf8))
            throw ExitCode(1)
        }
        storeServer.start()
        if let saved { supervisor.adopt(saved) }
        // A domain introduced has its tree complete: saved then too, so a
        // daemon killed without a clean stop leaves it for the next one.
        let introduced = try? store.watch("@introduceDomain", token: "persist") { _, _ in
            supervisor.noteIntroductions()
            supervisor.persist()
        }
        // A domain released while its process runs is ending (Supervisor.ProcessPhase).
        let released = try? store.watch("@releaseDomain", token: "phases") { _, _ in supervisor.noteIntroductions() }
        let registry = PVHMetricsRegistry()
        registry.increment(.guestScrapeFailures, by: 0)  // listed from the first scrape on
        let combined = DaemonMetrics(registry: registry, supervisor: supervisor)
        let server: MetricsServer
        do {
            server = try MetricsServer.start(.unix(path: api), registry: registry, timeout: .seconds(30),
                                             routes: { router in
                                                 APIRouter.register(on: router, service: supervisor)
                                                 XenStoreRoutes.register(on: router, store: XenStoreAccess(store))
                                                 APIRoutes.registerMethodNotAllowed(on: router)
                                             },
                                             exposition: { await combined.exposition() })
        } catch {
            storeServer.stop()
            stderr.emit(Array("pvh: daemon: API socket \(api): \(error)\n".utf8))
            throw ExitCode(1)
        }
        // The same /metrics for Prometheus over TCP, when asked.
        var tcpServer: MetricsServer?
        if let metrics, let address = try? MetricsAddress(parsing: metrics) {
            do {
                tcpServer = try MetricsServer.start(address, registry: registry, exposition: { await combined.exposition() })
            } catch {
                server.stop()
                storeServer.stop()
                stderr.emit(Array("pvh: daemon: --metrics \(metrics): \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
        // On stdout once both sockets answer: what a supervisor (or a test)
        // waits for; the detached start waits for the socket itself.
        FileDescriptorConsoleSink(fd: 1).emit(Array("pvh daemon: ready: API on \(api), XenStore on \(storeSocket)\n".utf8))
        let stop = DispatchSemaphore(value: 0)
        let sources = signalSources([SIGINT, SIGTERM]) { stop.signal() }
        stop.wait()
        if destroyOnExit {
            log("stopping: destroying every guest")
            let stopped = DispatchSemaphore(value: 0)
            Task.detached {
                await supervisor.stopAll()
                stopped.signal()
            }
            // Each guest has 10 s for SIGTERM and 10 more after SIGKILL.
            _ = stopped.wait(timeout: .now() + 25)
            server.stop()
            // Written before the exit: the next daemon finds no guest to adopt.
            supervisor.persistAndWait()
        } else {
            // No API call changes the registry once the server stopped;
            // the last state is written after it.
            server.stop()
            introduced.map { store.unwatch($0) }
            released.map { store.unwatch($0) }
            supervisor.persistAndWait()
            log("stopping: \(supervisor.domainCount) guest(s) left running for the next daemon (\(supervisor.stateFile))")
        }
        tcpServer?.stop()
        storeServer.stop()
        sources.forEach { $0.cancel() }
    }

    /// This executable's path (what guest processes and a detached daemon run).
    static var executable: String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    }
}

/// Reaching the daemon from the CLI.
enum DaemonConnection {
    enum Readiness { case ready, exited(SupervisedProcess.End), timedOut }

    /// Starts `pvh daemon --foreground` in a session of its own, its output
    /// in `<runtime dir>/.daemon/daemon.log`, and waits at most 30 s for its
    /// API socket; its pid, or one line and exit 1.
    static func startDetached(api: String, storeSocket: String?, destroyOnExit: Bool = false, metrics: String? = nil) throws -> Int32 {
        let runtime = RuntimeDirectory.default
        let state = runtime.path + "/.daemon"
        try? FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let arguments = [Daemon.executable, "daemon", "--foreground", "--api-socket", api]
            + (storeSocket.map { ["--xenstore-socket", $0] } ?? []) + (destroyOnExit ? ["--destroy-on-exit"] : [])
            + (metrics.map { ["--metrics", $0] } ?? [])
        func fail(_ message: String) -> ExitCode {
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: daemon: \(message)\n".utf8))
            return ExitCode(1)
        }
        let child: SupervisedProcess
        do {
            child = try SupervisedProcess.spawn(arguments, logPath: state + "/daemon.log", newSession: true)
        } catch {
            throw fail("cannot start it: \(error)")
        }
        switch waitForSocket(api, process: child, timeout: 30) {
        case .ready: return child.pid
        case .exited(let end): throw fail("exited at start (\(end)); see \(state)/daemon.log")
        case .timedOut: throw fail("its API socket \(api) did not answer within 30 s")
        }
    }

    /// Waits until `socket` accepts a connection, `process` ended, or
    /// `timeout` seconds passed; each probe waits on the process for
    /// 50 ms, so the loop is bounded and never sleeps blindly.
    static func waitForSocket(_ socket: String, process: SupervisedProcess, timeout: Double) -> Readiness {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let probe = try? UnixSocket.connect(to: socket) {
                probe.close()
                return .ready
            }
            if let end = process.wait(timeout: 0.05) { return .exited(end) }
        }
        return .timedOut
    }
}
