import ConsoleRelay
import Foundation
import HostIO
import KVM
import PVHAPI
import Locking
import Toolstack
import VMM
import XLConfig
import XenABI
import XenStore

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's heart: the registry, one guest process per domain, the
/// host's XenStore tree for them, and the event stream. Each guest process
/// is watched by a thread of its own that waits on its pidfd (bounded
/// waits, in a loop) and applies the domain's on_poweroff/on_reboot/
/// on_crash when it ends; API calls run on Hummingbird's tasks and never
/// wait for a guest except through `?wait=true`, which is bounded.
final class Supervisor: DomainService, Sendable {
    struct Paths: Sendable {
        let apiSocket: String
        let xenStoreSocket: String
        /// `<runtime>/.daemon`: configs and logs, mode 0700 (no guest is
        /// named with a leading dot, so no guest's directory collides).
        let stateDirectory: String
        /// The runtime directory (each guest's hypervisor console file).
        let runtime: RuntimeDirectory
        /// This pvh, which the guest processes run.
        let executable: String
    }

    struct State {
        var registry = DomainRegistry()
        /// How each domain's process is started (Adoption.swift saves its overrides).
        var launches: [DomainID: GuestLaunch] = [:]
        var processes: [DomainID: SupervisedProcess] = [:]
        /// Where each guest process is (`ProcessPhase`); none: starting.
        var phases: [DomainID: ProcessPhase] = [:]
        /// Each domain's PV console (ConsoleRelay/DomainConsole.swift), across restarts.
        var consoles: [DomainID: DomainConsole] = [:]
        /// The daemon's ends of each guest process's two store connections.
        var storeConnections: [DomainID: [XenStoreStreamConnection]] = [:]
        var subscribers: [Int: AsyncStream<DomainEvent>.Continuation] = [:]
        var nextSubscriber = 0
        var stopping = false
    }

    /// A guest process's course as the shutdown route needs it: a domain
    /// whose process has released its domain (a clean end under way) or
    /// has ended (its policy being applied) is ending, neither running nor
    /// gone: a shutdown request has nothing to ask, only to wait for.
    enum ProcessPhase: Sendable {
        /// Spawned (or, for a restart's new id, about to be), its domain
        /// not yet introduced.
        case starting
        /// Its domain introduced (its store tree complete).
        case introduced
        /// Its domain released after being introduced, or its process ended.
        case ending
    }

    let paths: Paths
    let store: XenStoreServer
    let state = Lock(State())
    let log: @Sendable (String) -> Void

    init(paths: Paths, store: XenStoreServer, log: @escaping @Sendable (String) -> Void) {
        self.paths = paths
        self.store = store
        self.log = log
    }

    static var now: Double { Date().timeIntervalSince1970 }

    // MARK: DomainService

    func host() async -> HostInfo {
        let backend = HostBackend.detect()
        let report = (try? KVMSystem().hostReport) ?? "KVM: /dev/kvm cannot be opened"
        let kind = access("/dev/kvm", F_OK) != 0 ? "none" : (backend.isSoftware ? "software" : (backend == .unknown ? "unknown" : "hardware"))
        let meminfo = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8)) ?? ""
        func kib(_ key: String) -> Int {
            for line in meminfo.split(separator: "\n") where line.hasPrefix(key + ":") {
                return Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0
            }
            return 0
        }
        return HostInfo(backend: kind, backendReport: report, version: pvhVersion, freeMemoryMiB: kib("MemAvailable") / 1024,
                        totalMemoryMiB: kib("MemTotal") / 1024, cpus: ProcessInfo.processInfo.activeProcessorCount,
                        xenstoreSocket: paths.xenStoreSocket, apiSocket: paths.apiSocket,
                        domains: state.withLock { $0.registry.all.count })
    }

    func domains() async -> [DomainInfo] {
        state.withLock { $0.registry.all }.map(info)
    }

    func domain(named name: String) async throws(APIError) -> DomainInfo {
        guard let record = state.withLock({ $0.registry.named(name) }) else { throw .notFound(name) }
        return info(record)
    }

    func create(_ request: ResolvedCreateRequest) async throws(APIError) -> CreatedDomain {
        let config = request.configuration
        guard GuestName(config.name) != nil else {
            throw APIError(.configInvalid, "\(request.source): name \"\(config.name)\": \(GuestName.rule)", file: request.source, key: "name")
        }
        if let problem = GuestLimits.violation(memoryMiB: config.memoryMiB, vcpus: config.vcpus,
                                               maxGrantFrames: config.maximumGrantFrames ?? GuestConfiguration.defaultGrantFrames,
                                               naming: { "\(request.source): \($0) =" }) {
            throw APIError(.configInvalid, problem, file: request.source)
        }
        // Pinning that leaves a vCPU no CPU of this host: the request's 400,
        // not a guest process that exits 2 at once.
        do {
            _ = try GuestConfiguration.resolveAffinity(config.vcpuAffinity, vcpus: config.vcpus, on: HostCPUs.current())
        } catch {
            throw APIError(.configInvalid, "\(request.source): \(error.description)", file: request.source, key: "cpus")
        }
        // Checked here so that a missing file is the request's 400 (xl
        // create fails the same way) rather than a guest process that
        // exits 2 at once.
        for (key, path) in [("kernel", config.kernel), ("ramdisk", config.ramdisk)] {
            guard let path else { continue }
            guard access(path, R_OK) == 0 else {
                throw APIError(.configInvalid, "\(request.source): \(key) \"\(path)\": \(String(cString: strerror(errno)))",
                               file: request.source, key: key)
            }
        }
        let record: DomainRecord
        do {
            record = try state.withLock { s throws(RegistryError) in
                guard !s.stopping else { throw RegistryError.noFreeID }
                return try s.registry.create(config, now: Self.now)
            }
        } catch {
            if case .noFreeID = error { throw APIError(.conflict, "the daemon is not taking new domains (\(error))") }
            throw APIError(.nameInUse, error.description, key: "name")
        }
        let configPath = "\(paths.stateDirectory)/\(record.id.rawValue).cfg"
        do {
            try Data(request.text).write(to: URL(fileURLWithPath: configPath))
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: configPath)
        } catch {
            state.withLock { _ = $0.registry.remove(record.id) }
            throw APIError(.internalError, "cannot write \(configPath): \(error.localizedDescription)")
        }
        writeStoreNodes(record)
        openConsole(record)
        var launch = GuestLaunch(executable: paths.executable, configPath: configPath, logPath: logPath(record.name),
                                 overrides: request.overrides, domain: record.id, stateDirectory: paths.stateDirectory)
        launch.startPaused = request.paused
        do {
            try start(record.id, launch)
        } catch {
            forget(record.id)
            throw APIError(.internalError, "cannot start the guest process: \(error)")
        }
        var started = state.withLock { $0.registry[record.id] } ?? record
        publish(DomainEvent(type: .created, record: started, time: Self.now))
        if request.paused, let paused = await markPausedOnceStopped(record.id) {
            started = paused
        }
        return CreatedDomain(domain: info(started), warnings: request.warnings)
    }

    func destroy(named name: String) async throws(APIError) -> DomainInfo {
        guard let record = state.withLock({ $0.registry.named(name) }) else { throw .notFound(name) }
        let gone = await destroy(record.id, grace: 10)
        return info(gone ?? record)
    }

    func perform(_ action: DomainAction, on name: String, wait: Bool, timeout: Double) async throws(APIError) -> DomainInfo? {
        guard let record = state.withLock({ $0.registry.named(name) }) else { throw .notFound(name) }
        switch action {
        case .pause, .unpause:
            let (process, current) = state.withLock { s in (s.processes[record.id], s.registry[record.id]?.state) }
            guard let process else { throw APIError(.conflict, "\(name) has no running guest process (state \(current?.name ?? "gone"))") }
            let wanted: DomainState = action == .pause ? .paused : .running
            guard current == (action == .pause ? .running : .paused) else {
                throw APIError(.conflict, "\(name) is \(current?.name ?? "gone"), cannot \(action.rawValue)")
            }
            // The whole process group: vCPU threads, backends, passt.
            process.signal(action == .pause ? SIGSTOP : SIGCONT, group: true)
            let updated = state.withLock { $0.registry.update(record.id) { $0.state = wanted } }
            if let updated { publish(DomainEvent(type: action == .pause ? .paused : .unpaused, record: updated, time: Self.now)) }
            return updated.map(info)
        case .shutdown, .reboot:
            // Subscribed before the state is read: whatever happens to the
            // domain from then on is seen by the wait below.
            let events = subscribe()
            defer { events.cancel() }
            guard let current = state.withLock({ $0.registry[record.id] }) else { throw .notFound(name) }
            if !isEnding(record.id) {
                guard current.state == .running else { throw APIError(.conflict, "\(name) is \(current.state.name), cannot \(action.rawValue)") }
                do {
                    try await writeControlShutdown(record, value: action == .shutdown ? "poweroff" : "reboot")
                } catch {
                    // Its process began to end meanwhile (or ended and the
                    // domain went): the end is under way, and waited for.
                    guard isEnding(record.id) || state.withLock({ $0.registry[record.id] == nil }) else { throw error }
                }
            }
            guard wait else { return state.withLock { $0.registry[record.id] }.map(info) ?? info(current) }
            let (domid, uuid) = (Int(record.id.rawValue), record.uuid.description)
            // A reboot's restart is the same domain (its UUID) under a new
            // id (DomainEvent.endsWait says which events end each wait).
            let done = await events.first(within: timeout) { event in
                event.endsWait(forReboot: action == .reboot, domid: domid, uuid: uuid)
            }
            guard done else {
                throw APIError(.timedOut, "\(name): still running \(Int(timeout)) s after the \(action == .shutdown ? "poweroff" : "reboot") request")
            }
            return state.withLock { s in s.registry[record.id] ?? s.registry.all.first { $0.uuid == record.uuid } }.map(info)
        }
    }

    func events() -> AsyncStream<DomainEvent> { subscribe().stream }

    // MARK: Guest processes

    func logPath(_ name: String) -> String { "\(paths.stateDirectory)/\(name).log" }

    /// The domain's console socket, `<state>/<domid>.console`; without one
    /// (it cannot be bound) the guest runs with its console on /dev/null.
    func openConsole(_ record: DomainRecord) {
        do {
            let console = try DomainConsole(name: record.name, socketPath: "\(paths.stateDirectory)/\(record.id.rawValue).console")
            state.withLock { $0.consoles[record.id] = console }
        } catch {
            log("\(record.name): no console: \(error)")
        }
    }

    /// Spawns the domain's process on the daemon's store, with its console,
    /// and its watcher. Two socketpairs for the store (close-on-exec, so no
    /// other child inherits them): the daemon serves one end of each on its
    /// store, the process gets the other as descriptors 3 and 4
    /// (GuestLaunch) and the daemon closes its copies once it is spawned.
    /// The backends' connection is dom0's, privileged, as Xen's backends in
    /// dom0 are (issue 13's sandbox will narrow it); the ring's is the
    /// domain's, unprivileged, flow-controlled as xenstored treats a
    /// domain's ring. A third socketpair is the process's stdin and stdout,
    /// whose other end feeds the domain's console.
    private func start(_ id: DomainID, _ launch: GuestLaunch) throws(SupervisedProcessError) {
        // A record left by an earlier incarnation is not this one's end.
        if let record = launch.exitRecord { try? FileManager.default.removeItem(atPath: record) }
        // Its counters on a socket of the state directory (GuestControl.swift);
        // one a SIGKILLed process left would make the new one's bind fail.
        var launch = launch
        launch.metricsSocket = metricsSocket(id)
        unlink(metricsSocket(id))
        let fail = { (call: String, errno: Int32) in SupervisedProcessError(operation: call, path: launch.executable, errno: errno) }
        let control: (UnixSocket, UnixSocket), guest: (UnixSocket, UnixSocket)
        do {
            control = try UnixSocket.pair()
        } catch {
            throw fail("socketpair", error.errno)
        }
        do {
            guest = try UnixSocket.pair()
        } catch {
            control.0.close()
            control.1.close()
            throw fail("socketpair", error.errno)
        }
        let console = state.withLock { $0.consoles[id] }
        let consoleEnds = console == nil ? nil : try? UnixSocket.pair()
        // The far ends are this process's to close whatever happens; the
        // near ends are the connections' once served.
        defer {
            control.1.close()
            guest.1.close()
            consoleEnds?.1.close()
        }
        guard let controlEnd = XenStoreStreamConnection.start(socket: control.0, server: store, domain: .controlDomain,
                                                              privileged: true, flowControl: false) else {
            control.0.close()
            guest.0.close()
            consoleEnds?.0.close()
            throw fail("XenStore connection", EMFILE)
        }
        guard let guestEnd = XenStoreStreamConnection.start(socket: guest.0, server: store, domain: launch.domain,
                                                            privileged: false, flowControl: true) else {
            controlEnd.hangUp()
            guest.0.close()
            consoleEnds?.0.close()
            throw fail("XenStore connection", EMFILE)
        }
        let process: SupervisedProcess
        do {
            // A session of its own: a guest process outlives the daemon
            // (Adoption.swift), and a process group whose parent exits is
            // sent SIGHUP if any member is stopped (a paused guest) unless
            // it was never in the parent's session.
            process = try SupervisedProcess.spawn(launch.arguments, logPath: launch.logPath, newSession: true, console: consoleEnds?.1.fd,
                                                  descriptors: [(control.1.fd, GuestLaunch.storeDescriptor),
                                                                (guest.1.fd, GuestLaunch.guestStoreDescriptor)])
        } catch {
            controlEnd.hangUp()
            guestEnd.hangUp()
            consoleEnds?.0.close()
            throw error
        }
        if let consoleEnds, let console { console.connect(consoleEnds.0) }
        // Only the first start is paused: a restart (reboot) runs at once.
        launch.startPaused = false
        state.withLock { s in
            s.processes[id] = process
            s.phases[id] = .starting
            s.launches[id] = launch
            s.storeConnections[id] = [controlEnd, guestEnd]
            s.registry.update(id) { $0.processID = process.pid }
        }
        startWatching(id, process, launch)
    }

    /// The process's watcher thread (a child's, or an adopted process's).
    func startWatching(_ id: DomainID, _ process: SupervisedProcess, _ launch: GuestLaunch) {
        let thread = Thread { [self] in watch(id, process, launch) }
        thread.name = "pvh-watch-\(id.rawValue)"
        thread.start()
    }

    /// Waits for the process's end (in bounded steps) and applies the policy.
    private func watch(_ id: DomainID, _ process: SupervisedProcess, _ launch: GuestLaunch) {
        var end: SupervisedProcess.End?
        while end == nil { end = process.wait(timeout: 5) }
        guard let end else { return }
        let processEnd: GuestProcessEnd = switch end {
        case .exited(let status): .exited(status)
        case .signaled(let signal): .signaled(signal)
        }
        ended(id, process: process, end: processEnd, launch: launch)
    }

    /// `process` nil: a process a previous daemon started, found gone (Adoption.swift).
    func ended(_ id: DomainID, process: SupervisedProcess?, end: GuestProcessEnd, launch: GuestLaunch) {
        let (record, destroying, stopping) = state.withLock { s -> (DomainRecord?, Bool, Bool) in
            guard s.processes[id] === process else { return (nil, false, s.stopping) }
            s.processes[id] = nil
            s.phases[id] = .ending
            let dying = s.registry[id]?.state == .dying
            let r = s.registry.update(id) { $0.processID = nil }
            return (r, dying, s.stopping)
        }
        guard let record else { return }
        log("\(record.name) (domain \(id.rawValue)): guest process \(end)")
        // However the process ended (SIGKILL included), nothing of it stays
        // in the store; a domain kept or restarted gets its toolstack nodes
        // again below.
        releaseStore(id)
        let domainEnd = DomainEnd(end)
        if destroying || stopping {
            forget(id)
            publish(DomainEvent(type: .destroyed, record: record, reason: "destroyed", time: Self.now))
            return
        }
        var decision = ShutdownPolicy.decide(domainEnd, configuration: record.configuration)
        if let warning = decision.warning { log("\(record.name): \(warning)") }
        let quick = Self.now - record.startTime < ShutdownPolicy.minimumRun
        let quickEnds = quick ? record.quickEnds + 1 : 0
        state.withLock { _ = $0.registry.update(id) { $0.quickEnds = quickEnds } }
        if decision.action == .restart || decision.action == .renameRestart, !ShutdownPolicy.allowsRestart(quickEnds: quickEnds) {
            log("\(record.name): ended \(quickEnds) times in a row within \(Int(ShutdownPolicy.minimumRun)) s of its start: not restarted, destroyed")
            decision = ShutdownPolicy.Decision(action: .destroy, warning: nil)
        }
        let reason: String = if case .signaled = end { "\(end)" } else { domainEnd.reason }
        if end.killedBySandbox { log("\(record.name) (domain \(id.rawValue)): its guest process made a system call its sandbox forbids (docs/ARCHITECTURE.md: Sandbox)") }
        state.withLock { _ = $0.registry.update(id) { $0.lastEnd = reason } }
        let isCrash = domainEnd == .shutdown(.crash)
        let isReboot = domainEnd == .shutdown(.reboot)
        switch decision.action {
        case .destroy:
            publish(DomainEvent(type: isCrash ? .crashed : .shutdown, record: record, reason: reason, action: "destroy", time: Self.now))
            forget(id)
            publish(DomainEvent(type: .destroyed, record: record, reason: reason, time: Self.now))
        case .preserve:
            let kept = state.withLock { s in
                s.registry.update(id) { $0.state = isCrash ? .crashed : .shutdown(Self.event(domainEnd)) }
            } ?? record
            writeStoreNodes(kept)
            publish(DomainEvent(type: isCrash ? .crashed : .shutdown, record: kept, reason: reason, action: "preserve", time: Self.now))
        case .restart:
            if !isReboot {
                publish(DomainEvent(type: isCrash ? .crashed : .shutdown, record: record, reason: reason, action: "restart", time: Self.now))
            }
            restartUnderNewID(record, launch: launch, reason: reason, isReboot: isReboot)
        case .renameRestart:
            let oldName = ShutdownPolicy.renamed(record.name, id: id.rawValue)
            let kept = state.withLock { s -> DomainRecord? in
                try? s.registry.rename(id, to: oldName)
                return s.registry.update(id) { $0.state = isCrash ? .crashed : .shutdown(Self.event(domainEnd)) }
            } ?? record
            writeStoreNodes(kept)
            publish(DomainEvent(type: isCrash ? .crashed : .shutdown, record: kept, reason: reason, action: "rename-restart", time: Self.now))
            restartFresh(record.configuration, launch: launch)
        }
    }

    /// A `restart` action: as xl does (tools/xl/xl_vmcontrol.c, the
    /// `start:` label after libxl_domain_destroy), the old domain is gone
    /// and the domain is created again under a fresh id from the registry,
    /// keeping its name, UUID and config. The old id's store is already
    /// released (`releaseStore`: home, backend directories, its
    /// connections with their watches and transactions, @releaseDomain);
    /// `/vm/<uuid>` keeps its path and is written again, so that its
    /// nodes' read permission names the new id (children take their
    /// parent's permissions when created, xenstored's `create_node`); the config file and console socket are renamed
    /// to the new id (an attached console client stays attached), the old
    /// id's other files removed. Events: `destroyed` for the old id (action
    /// `restart`), then `rebooted` (a reboot) or `created` for the new one.
    private func restartUnderNewID(_ record: DomainRecord, launch: GuestLaunch, reason: String, isReboot: Bool) {
        let oldID = record.id
        let renumbered: Result<(DomainRecord, DomainConsole?), RegistryError> = state.withLock { s in
            do throws(RegistryError) {
                let fresh = try s.registry.renumber(oldID) {
                    $0.state = .running
                    $0.startTime = Self.now
                    $0.restarts += 1
                }
                s.launches[fresh.id] = s.launches.removeValue(forKey: oldID)
                s.phases[oldID] = nil
                // Starting from now, before its process is spawned below:
                // a shutdown or reboot asked meanwhile finds the domain
                // under its name and waits for its introduction
                // (`awaitIntroduced`) instead of being told it has no process.
                s.phases[fresh.id] = .starting
                let console = s.consoles.removeValue(forKey: oldID)
                s.consoles[fresh.id] = console
                return .success((fresh, console))
            } catch {
                return .failure(error)
            }
        }
        guard case .success(let (fresh, console)) = renumbered else {
            log("\(record.name): cannot restart under a new domain id: \(renumbered)")
            forget(oldID)
            publish(DomainEvent(type: .destroyed, record: record, reason: "restart failed", time: Self.now))
            return
        }
        let oldConfig = "\(paths.stateDirectory)/\(oldID.rawValue).cfg"
        let newConfig = "\(paths.stateDirectory)/\(fresh.id.rawValue).cfg"
        if rename(oldConfig, newConfig) != 0 { log("\(record.name): cannot rename \(oldConfig): \(String(cString: strerror(errno)))") }
        if let console, !console.move(to: "\(paths.stateDirectory)/\(fresh.id.rawValue).console") {
            log("\(record.name): console socket kept at \(console.socketPath)")
        }
        for suffix in ["exit", "guest"] { try? FileManager.default.removeItem(atPath: "\(paths.stateDirectory)/\(oldID.rawValue).\(suffix)") }
        unlink(metricsSocket(oldID))
        store.forgetRequestCounts(of: oldID)
        try? store.remove("/vm/\(record.uuid)")
        writeStoreNodes(fresh)
        publish(DomainEvent(type: .destroyed, record: record, reason: reason, action: "restart", time: Self.now))
        var launch = launch
        launch.domain = fresh.id
        launch.configPath = newConfig
        do {
            try start(fresh.id, launch)
            let current = state.withLock { $0.registry[fresh.id] } ?? fresh
            publish(DomainEvent(type: isReboot ? .rebooted : .created, record: current, reason: reason, action: "restart", time: Self.now))
        } catch {
            log("\(record.name): cannot restart the guest process: \(error)")
            forget(fresh.id)
            publish(DomainEvent(type: .destroyed, record: fresh, reason: "restart failed", time: Self.now))
        }
    }

    /// rename-restart's new domain: a new id and UUID, the old config and name.
    private func restartFresh(_ configuration: XLDomainConfiguration, launch: GuestLaunch) {
        var fresh = configuration
        fresh.uuid = nil
        guard let record = try? state.withLock({ s throws(RegistryError) in try s.registry.create(fresh, now: Self.now) }) else {
            log("\(configuration.name): rename-restart: cannot register the new domain")
            return
        }
        writeStoreNodes(record)
        openConsole(record)
        var launch = launch
        launch.domain = record.id
        do {
            try start(record.id, launch)
            publish(DomainEvent(type: .created, record: state.withLock { $0.registry[record.id] } ?? record, action: "rename-restart", time: Self.now))
        } catch {
            log("\(record.name): rename-restart: \(error)")
            forget(record.id)
        }
    }

    private static func event(_ end: DomainEnd) -> ShutdownEvent {
        if case .shutdown(let event) = end { return event }
        return .poweroff
    }

    /// Destroys a domain: SIGTERM (the guest process stops its guest and
    /// exits 130), `grace` seconds, then SIGKILL to its process group; the
    /// watcher reaps it and publishes `destroyed`. Bounded throughout.
    func destroy(_ id: DomainID, grace: Double) async -> DomainRecord? {
        let events = subscribe()
        defer { events.cancel() }
        let (process, record) = state.withLock { s in
            (s.processes[id], s.registry.update(id) { $0.state = .dying })
        }
        guard let record else { return nil }
        guard let process else {
            forget(id)
            publish(DomainEvent(type: .destroyed, record: record, reason: "destroyed", time: Self.now))
            return record
        }
        if record.state == .paused { process.signal(SIGCONT, group: true) }
        process.signal(SIGTERM)
        let isGone: @Sendable (DomainEvent) -> Bool = { $0.type == .destroyed && $0.domid == Int(id.rawValue) }
        if await events.first(within: grace, where: isGone) { return record }
        log("\(record.name): no exit \(grace) s after SIGTERM: SIGKILL")
        process.signal(SIGKILL, group: true)
        _ = await events.first(within: 10, where: isGone)
        return record
    }

    /// Ends every guest (the daemon is stopping), bounded.
    func stopAll() async {
        let ids = state.withLock { s in
            s.stopping = true
            return s.registry.all.map(\.id)
        }
        await withTaskGroup(of: Void.self) { group in
            for id in ids { group.addTask { _ = await self.destroy(id, grace: 10) } }
        }
        // Event streams end with the daemon (their HTTP responses close).
        let streams = state.withLock { s in
            defer { s.subscribers.removeAll() }
            return Array(s.subscribers.values)
        }
        streams.forEach { $0.finish() }
    }

    // MARK: Store, events, helpers

    /// The toolstack's nodes for a domain in the host's store (who writes
    /// what: `DomainStoreNodes`): the home and `/vm/<uuid>`, dom0's and
    /// readable by the domain (libxl's `roperm` in libxl__domain_make),
    /// then `name`, `vm`, `domid` and /vm's `name`, `uuid`. The guest
    /// process writes the rest of the home under them.
    private func writeStoreNodes(_ record: DomainRecord) {
        let nodes = DomainStoreNodes(domain: record.id, name: record.name, uuid: record.uuid)
        let readOnly = XenStorePermissions(owner: .controlDomain, defaultAccess: .none, entries: [(record.id, .read)])
        do {
            for path in [nodes.home, nodes.vm] {
                try store.mkdir(path)
                try store.setPermissions(path, readOnly)
            }
            for (path, value) in nodes.writes { try store.write(path, value) }
        } catch {
            log("\(record.name): XenStore: \(error)")
        }
    }

    /// After a domain's guest process ended: its store connections hung up
    /// (nothing it left unread is served), its home and backend
    /// directories removed, and the domain released (`@releaseDomain`) if
    /// the process did not release it itself (a SIGKILL, a crash), as
    /// libxl__destroy_domid and xenstored do for a dead domain. `/vm/<uuid>`
    /// stays until the domain is forgotten.
    private func releaseStore(_ id: DomainID) {
        let (connections, record) = state.withLock { s in (s.storeConnections.removeValue(forKey: id) ?? [], s.registry[id]) }
        connections.forEach { $0.hangUp() }
        guard let record else { return }
        let nodes = DomainStoreNodes(domain: id, name: record.name, uuid: record.uuid)
        try? store.remove(nodes.home)
        let types = (try? store.directory("/local/domain/0/backend")) ?? []
        for directory in nodes.backendDirectories(types: types) { try? store.remove(directory) }
        if store.isIntroduced(id) { store.releaseDomain(id) }
    }

    /// Forgets a domain: registry, store nodes, config file.
    private func forget(_ id: DomainID) {
        releaseStore(id)
        let (record, console) = state.withLock { s -> (DomainRecord?, DomainConsole?) in
            s.processes[id] = nil
            s.phases[id] = nil
            s.launches[id] = nil
            return (s.registry.remove(id), s.consoles.removeValue(forKey: id))
        }
        console?.close()
        guard let record else { return }
        try? store.remove("/vm/\(record.uuid)")
        store.forgetRequestCounts(of: id)
        try? FileManager.default.removeItem(atPath: "\(paths.stateDirectory)/\(id.rawValue).cfg")
        // A killed guest process leaves its exit record (none) and reattach socket behind.
        for suffix in ["exit", "guest"] { try? FileManager.default.removeItem(atPath: "\(paths.stateDirectory)/\(id.rawValue).\(suffix)") }
        unlink(metricsSocket(id))
    }

    /// `control/shutdown` in the daemon's store, as `xl shutdown` writes
    /// it; the guest's xenbus watch does the rest. It is written once the
    /// guest process introduced the domain (its tree is complete then; a
    /// write before would be lost when the process lays out `control`):
    /// checked every 100 ms for up to `startup` seconds while it runs.
    private func writeControlShutdown(_ record: DomainRecord, value: String, startup: Double = 10) async throws(APIError) {
        try await awaitIntroduced(record, startup: startup)
        do {
            try store.write("/local/domain/\(record.id.rawValue)/control/shutdown", value)
        } catch {
            throw APIError(.conflict, "\(record.name): control/shutdown: \(error)")
        }
    }

    /// Returns once the guest process introduced the domain (its tree is
    /// complete), checked every 100 ms for up to `startup` seconds while
    /// the process runs or is being started (a restart's new id); 409
    /// otherwise.
    func awaitIntroduced(_ record: DomainRecord, startup: Double = 10) async throws(APIError) {
        let deadline = Date().addingTimeInterval(startup)
        while !store.isIntroduced(record.id) {
            let running = state.withLock { s in
                s.phases[record.id] == .starting || (s.processes[record.id] != nil && s.phases[record.id] != .ending)
            }
            guard running else { throw APIError(.conflict, "\(record.name): its guest process is not running") }
            guard Date() < deadline else {
                throw APIError(.conflict, "\(record.name): its guest has not introduced its domain \(Int(startup)) s after its start")
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// Whether the domain is on its way out: being destroyed, or its
    /// process released its domain or ended while the record still says
    /// running (ProcessPhase).
    func isEnding(_ id: DomainID) -> Bool {
        state.withLock { s in
            guard let record = s.registry[id] else { return false }
            return record.state == .dying || (record.state == .running && s.phases[id] == .ending)
        }
    }

    /// The store's `@introduceDomain` and `@releaseDomain` fired (the
    /// daemon's watch, Daemon.swift): each guest process's phase follows
    /// whether its domain is introduced. Called on the store's callback
    /// queue; `isIntroduced` takes the store's lock only.
    func noteIntroductions() {
        let ids = state.withLock { Array($0.processes.keys) }
        let introduced = Set(ids.filter { store.isIntroduced($0) })
        state.withLock { s in
            for id in ids where s.processes[id] != nil {
                switch (introduced.contains(id), s.phases[id]) {
                case (true, .ending?): break
                case (true, _): s.phases[id] = .introduced
                case (false, .introduced?): s.phases[id] = .ending
                case (false, _): break
                }
            }
        }
    }

    func info(_ record: DomainRecord) -> DomainInfo {
        var info = DomainInfo(record, cpuSeconds: record.processID.map(Self.cpuSeconds) ?? 0,
                              console: state.withLock { $0.consoles[record.id]?.socketPath })
        addLiveControls(to: &info, record)
        info.sandbox = record.processID.flatMap(Self.confinement)
        return info
    }

    /// A guest process's confinement as /proc shows it (README: Security):
    /// its status, whether its root is another directory than the
    /// daemon's (the jail's tmpfs: pivot_root or its chroot fallback), and
    /// which of its namespaces are not the daemon's (/proc/PID/ns links'
    /// inodes, namespaces(7)). Nil when the process is gone or unreadable.
    static func confinement(_ pid: Int32) -> ProcessConfinement? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        var own = stat(), theirs = stat()
        guard stat("/", &own) == 0, stat("/proc/\(pid)/root/", &theirs) == 0 else { return nil }
        var confinement = ProcessConfinement(status: text, jailed: own.st_dev != theirs.st_dev || own.st_ino != theirs.st_ino)
        var namespaces: [String]? = []
        for kind in ProcessConfinement.namespaceKinds {
            var mine = stat(), guest = stat()
            // A kind this kernel lacks is in neither; one unreadable is no answer.
            guard stat("/proc/self/ns/\(kind)", &mine) == 0 else { continue }
            guard stat("/proc/\(pid)/ns/\(kind)", &guest) == 0 else {
                namespaces = nil
                break
            }
            if mine.st_ino != guest.st_ino || mine.st_dev != guest.st_dev { namespaces?.append(kind) }
        }
        confinement?.namespaces = namespaces
        return confinement
    }

    /// utime + stime of a process (proc(5): /proc/PID/stat fields 14 and 15).
    static func cpuSeconds(_ pid: Int32) -> Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        // Fields after the command's closing parenthesis start at field 3.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return 0 }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// A subscription to the event stream (events from now on).
    struct Subscription: Sendable {
        let stream: AsyncStream<DomainEvent>
        let cancel: @Sendable () -> Void

        /// True once an event matching `match` arrives, false after `timeout` seconds.
        func first(within timeout: Double, where match: @escaping @Sendable (DomainEvent) -> Bool) async -> Bool {
            await withTaskGroup(of: Bool.self) { group in
                group.addTask {
                    for await event in stream where match(event) { return true }
                    return false
                }
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(Int64(timeout * 1000)))
                    return false
                }
                let result = await group.next() ?? false
                group.cancelAll()
                cancel()
                return result
            }
        }
    }

    // MARK: Guest control's view (GuestControl.swift)

    /// The live domain named `name`.
    func record(named name: String) -> DomainRecord? { state.withLock { $0.registry.named(name) } }
    /// Every live domain, and whether its guest process runs.
    func records() -> [(record: DomainRecord, running: Bool)] {
        state.withLock { s in s.registry.all.map { ($0, s.processes[$0.id] != nil) } }
    }
    /// Where the guest process of domain `id` serves its counters.
    func metricsSocket(_ id: DomainID) -> String { "\(paths.stateDirectory)/\(id.rawValue).metrics" }

    private func subscribe() -> Subscription {
        let (stream, continuation) = AsyncStream<DomainEvent>.makeStream(bufferingPolicy: .bufferingNewest(1024))
        let key = state.withLock { s in
            defer { s.nextSubscriber += 1 }
            s.subscribers[s.nextSubscriber] = continuation
            return s.nextSubscriber
        }
        let remove: @Sendable () -> Void = { [weak self] in
            let c = self?.state.withLock { $0.subscribers.removeValue(forKey: key) }
            c?.finish()
        }
        continuation.onTermination = { _ in remove() }
        return Subscription(stream: stream, cancel: remove)
    }

    func publish(_ event: DomainEvent) {
        // Every registry change is published: the state file follows it.
        persist()
        let all = state.withLock { Array($0.subscribers.values) }
        for c in all { c.yield(event) }
        log("event: \(event.type.rawValue) \(event.name) (domain \(event.domid))\(event.reason.map { ": \($0)" } ?? "")")
    }
}

/// `pvh --version`'s and the API's version.
let pvhVersion = "0.12.0-dev"

// MARK: Hot-plug's access (pvh/Hotplug.swift)

extension Supervisor {
    /// The domain of that name, which must have a guest process serving
    /// its backends (running or paused): 404 unknown, 409 otherwise.
    func hotplugTarget(named name: String) throws(APIError) -> DomainRecord {
        let (record, hasProcess) = state.withLock { s in
            let record = s.registry.named(name)
            return (record, record.map { s.processes[$0.id] != nil } ?? false)
        }
        guard let record else { throw .notFound(name) }
        guard hasProcess, record.state == .running || record.state == .paused else {
            throw APIError(.conflict, "\(name) is \(record.state.name): no guest process to serve a device")
        }
        return record
    }

    /// Publishes a device event on the stream.
    func publishDeviceEvent(_ type: DomainEvent.Kind, _ record: DomainRecord, device: String) {
        publish(DomainEvent(type: type, record: record, reason: device, time: Self.now))
    }
}

// MARK: - xl create -p

extension Supervisor {
    /// Waits (at most 60 s: the domain is built first, its kernel loaded)
    /// until a guest process started with `--start-paused` has stopped
    /// itself, then records the domain paused, so that an `unpause`
    /// (SIGCONT) can never come before that stop and be lost. nil when the
    /// process ended instead (its watcher reports how) or never stopped.
    func markPausedOnceStopped(_ id: DomainID) async -> DomainRecord? {
        guard let pid = state.withLock({ $0.processes[id]?.pid }) else { return nil }
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            switch Self.processState(pid) {
            case "T"?:
                let updated = state.withLock { s in
                    s.processes[id]?.pid == pid ? s.registry.update(id) { $0.state = .paused } : nil
                }
                if let updated { publish(DomainEvent(type: .paused, record: updated, time: Self.now)) }
                return updated
            case nil, "Z"?, "X"?:
                return nil
            default:
                try? await Task.sleep(for: .milliseconds(5))
            }
        }
        log("domain \(id.rawValue): its process did not stop itself within 60 s of a paused create; left running")
        return nil
    }

    /// proc(5) `stat` field 3, the process state (`T` stopped by a signal);
    /// nil when the process is gone.
    static func processState(_ pid: Int32) -> Character? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        return text[close...].dropFirst().first { $0 != " " }
    }
}
