import Foundation
import HostIO
import Dispatch
import Toolstack
import VMM
import XLConfig
import XenABI
import XenStore

#if canImport(Glibc)
import Glibc
#endif

/// A daemon restart (docs/ARCHITECTURE.md: the process model, a daemon
/// restart): the state the daemon keeps for the next one, and how a new
/// daemon adopts the guest processes an old one started.
///
/// Saving. `persist()` writes `<state>/daemon-state.json` (DaemonState:
/// the registry with each guest process's pid and start time, the store's
/// nodes) after every registry change (every published event), when a
/// domain is introduced (its tree is complete then), and on a clean stop.
///
/// Adopting. For each saved domain whose process still runs (the same pid
/// and start time), the new daemon opens a pidfd on it (it is not its
/// child: it cannot wait for it, it polls the pidfd), connects to the
/// process's `<state>/<domid>.guest` socket, checks SO_PEERCRED's pid is the
/// recorded one, and hands it three new socketpair ends (store, ring
/// relay, console) with SCM_RIGHTS (GuestReattach.swift). When an adopted
/// process ends, its end is the status it recorded in `<state>/<domid>.exit`
/// just before it exited, or a crash (SIGKILL) without one; the domain's
/// on_poweroff/on_reboot/on_crash applies as for a child. A saved domain
/// whose process is gone by the time the daemon starts is handled the
/// same way at once.
private let persistQueue = DispatchQueue(label: "pvh-daemon-state")

extension Supervisor {
    /// The state file's path.
    var stateFile: String { "\(paths.stateDirectory)/\(DaemonState.fileName)" }

    /// Writes the registry and the store's nodes to the state file; a
    /// failure is logged (the guests run on regardless).
    func persist() {
        // On one serial queue: one writer at a time, so an older snapshot
        // never lands last; and never on the caller's stack, for the
        // caller may be the store's watch delivery (the @introduceDomain
        // handler), which a store read in the walk would enter again.
        persistQueue.async { [self] in persistNow() }
    }

    /// `persist`, returning once written (the daemon's clean stop).
    func persistAndWait() {
        persistQueue.sync { persistNow() }
    }

    private func persistNow() {
        let (records, launches) = state.withLock { ($0.registry.all, $0.launches) }
        let domains = records.map { record in
            SavedDomain(record, overrides: launches[record.id]?.overrides ?? [],
                        processStartTime: record.processID.flatMap { SupervisedProcess.startTime(of: $0) })
        }
        let saved = DaemonState(domains: domains, store: Self.snapshot(store))
        do { try saved.write(to: stateFile) } catch { log("state: \(error)") }
    }

    /// Every node of `store` but the root, each parent before its children.
    static func snapshot(_ store: XenStoreServer) -> [SavedNode] {
        var nodes: [SavedNode] = []
        var queue = ["/"]
        while let path = queue.popLast() {
            if path != "/" {
                guard let value = try? store.readBytes(path), let permissions = try? store.permissions(path) else { continue }
                nodes.append(SavedNode(path: path, value: value, permissions: permissions.strings))
            }
            let children = (try? store.directory(path)) ?? []
            // Reversed onto the stack: visited in the store's order, depth first.
            queue += children.reversed().map { path == "/" ? "/\($0)" : "\(path)/\($0)" }
        }
        return nodes
    }

    /// Puts saved nodes back into `store`; one line per node refused.
    static func restore(_ nodes: [SavedNode], into store: XenStoreServer) -> [String] {
        var problems: [String] = []
        for node in nodes {
            do {
                guard let value = node.bytes else { throw XenStoreError.einval }
                try store.writeBytes(node.path, value)
                try store.setPermissions(node.path, try XenStorePermissions(strings: node.permissions))
            } catch {
                problems.append("\(node.path): \(error)")
            }
        }
        return problems
    }

    /// Reads the state file a previous daemon left: nil (with one line
    /// logged) when there is none or it is refused.
    func readSavedState() -> DaemonState? {
        switch DaemonState.read(from: stateFile) {
        case nil: return nil
        case .success(let saved): return saved
        case .failure(let error):
            log("state: \(stateFile): \(error): ignored, starting with no domains")
            return nil
        }
    }

    /// Takes over the domains of `saved` (its store already restored):
    /// each is registered again under its id; a running process is adopted
    /// and handed new connections, a gone one's end applied.
    func adopt(_ saved: DaemonState) {
        for domain in saved.domains { adopt(domain) }
        // The state now matches what was adopted.
        persistAndWait()
    }

    private func adopt(_ saved: SavedDomain) {
        let id = DomainID(rawValue: saved.id)
        let configPath = "\(paths.stateDirectory)/\(saved.id).cfg"
        let configuration: XLDomainConfiguration
        do {
            let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: configPath)).prefix(Create.maximumFileSize))
            let settings = try ConfigSettings(source: configPath, bytes: bytes, overrides: saved.overrides)
            configuration = try XLDomainConfiguration.resolve(settings).configuration
        } catch {
            log("\(saved.name) (domain \(saved.id)): not adopted: its config \(configPath): \(error)")
            return
        }
        guard let record = saved.record(configuration: configuration) else { return }
        do {
            try state.withLock { s throws(RegistryError) in try s.registry.restore(record) }
        } catch {
            log("\(saved.name) (domain \(saved.id)): not adopted: \(error)")
            return
        }
        let launch = GuestLaunch(executable: paths.executable, configPath: configPath, logPath: logPath(record.name),
                                 overrides: saved.overrides, domain: id, stateDirectory: paths.stateDirectory)
        state.withLock { $0.launches[id] = launch }
        openConsole(record)
        guard let pid = saved.processID, let startTime = saved.processStartTime else { return }  // kept (preserve): no process
        let exitRecord = launch.exitRecord
        let end: @Sendable () -> SupervisedProcess.End = {
            exitRecord.flatMap(GuestExitRecord.read).map { .exited($0) } ?? .signaled(SIGKILL)
        }
        guard let process = try? SupervisedProcess.adopt(pid: pid, startTime: startTime, end: end) else {
            // Gone while no daemon watched: its recorded end, or a crash.
            let processEnd: GuestProcessEnd = switch end() {
            case .exited(let status): .exited(status)
            case .signaled(let signal): .signaled(signal)
            }
            log("\(record.name) (domain \(saved.id)): its guest process \(pid) ended while no daemon ran")
            state.withLock { _ = $0.registry.update(id) { $0.processID = nil } }
            ended(id, process: nil, end: processEnd, launch: launch)
            return
        }
        state.withLock { $0.processes[id] = process }
        do {
            try handOver(id, to: process, launch: launch)
            log("\(record.name) (domain \(saved.id)): guest process \(pid) adopted")
        } catch {
            // It runs on, watched, without a store: it can still be destroyed.
            log("\(record.name) (domain \(saved.id)): guest process \(pid) adopted without its store: \(error)")
        }
        startWatching(id, process, launch)
    }

    /// Why a guest process could not be handed its new connections.
    struct HandOverError: Error, CustomStringConvertible {
        let description: String
    }

    /// Connects to the process's reattach socket, checks it is that
    /// process, and passes it new store, relay and console connections,
    /// served here as `start` serves a new child's. Bounded: 5 s for its answer.
    private func handOver(_ id: DomainID, to process: SupervisedProcess, launch: GuestLaunch) throws(HandOverError) {
        guard let path = launch.reattachSocket else { throw HandOverError(description: "no reattach socket") }
        let connection: UnixSocket
        do { connection = try UnixSocket.connect(to: path) } catch { throw HandOverError(description: "\(error)") }
        defer { connection.close() }
        guard case .success(let peer) = DescriptorPassing.peer(of: connection.fd), peer.pid == process.pid else {
            throw HandOverError(description: "\(path): not served by the guest process \(process.pid)")
        }
        var pairs: [(UnixSocket, UnixSocket)] = []
        for _ in 0..<3 {
            guard let pair = try? UnixSocket.pair() else {
                pairs.forEach { $0.0.close(); $0.1.close() }
                throw HandOverError(description: "socketpair: out of descriptors")
            }
            pairs.append(pair)
        }
        defer { pairs.forEach { $0.1.close() } }  // the process has its copies once sent
        let sent = DescriptorPassing.send(pairs.map(\.1.fd), tag: GuestReattachListener.tag, over: connection.fd)
        guard sent == 0 else {
            pairs.forEach { $0.0.close() }
            throw HandOverError(description: "sendmsg: errno \(sent)")
        }
        let record = state.withLock { $0.registry[id] }
        var connections: [XenStoreStreamConnection] = []
        if let c = XenStoreStreamConnection.start(socket: pairs[0].0, server: store, domain: .controlDomain, privileged: true, flowControl: false) {
            connections.append(c)
        } else { pairs[0].0.close() }
        if let c = XenStoreStreamConnection.start(socket: pairs[1].0, server: store, domain: id, privileged: false, flowControl: true) {
            connections.append(c)
        } else { pairs[1].0.close() }
        if let console = state.withLock({ $0.consoles[id] }) { console.connect(pairs[2].0) } else { pairs[2].0.close() }
        state.withLock { $0.storeConnections[id] = connections }
        // Its answer, once it moved onto them.
        guard connection.waitReadable(timeout: 5), let answer = connection.read(max: 64),
              String(decoding: answer, as: UTF8.self) == GuestReattachListener.reply else {
            throw HandOverError(description: "\(record?.name ?? "?"): no answer from the guest process within 5 s")
        }
    }
}

extension Supervisor {
    /// Live domains now.
    var domainCount: Int { state.withLock { $0.registry.all.count } }
}
