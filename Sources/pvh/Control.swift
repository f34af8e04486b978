import ArgumentParser
import Foundation
import PVHAPI
import Toolstack
import VMM

#if canImport(Glibc)
import Glibc
#endif

/// Finds a running guest by name: its XenStore socket and its domain path,
/// the way xl resolves a name through /local/domain/*/name. A `pvh run`
/// guest's store is its own socket; a daemon's guests live in the daemon's
/// store (xenstored's socket), tried when the guest has no socket of its own.
struct GuestLocator {
    let name: GuestName
    let socket: String
    let client: XenStoreClient
    /// `/local/domain/<domid>`.
    let home: String

    init(_ rawName: String) throws {
        guard let name = GuestName(rawName) else { usageFailure("\(rawName): not a guest name (\(GuestName.rule))") }
        self.name = name
        let own = RuntimeDirectory.default.xenStoreSocket(for: name)
        if let client = try? XenStoreClient(socketPath: own) {
            self.client = client
            socket = own
        } else {
            socket = DaemonDefaults.xenStoreSocket
            do {
                client = try XenStoreClient(socketPath: socket)
            } catch {
                usageFailure("\(rawName): no running guest of that name (\(own) and \(socket): \(error))")
            }
        }
        var found: String?
        for domid in (try? client.directory("/local/domain")) ?? [] where domid != "0" {
            if (try? client.read("/local/domain/\(domid)/name")) == rawName {
                found = "/local/domain/\(domid)"
                break
            }
        }
        guard let found else { usageFailure("\(rawName): no domain of that name in its XenStore (\(socket))") }
        home = found
    }

    /// A path as the user gave it: absolute, or relative to the guest's home.
    func resolve(_ path: String) -> String {
        path.hasPrefix("/") || path.hasPrefix("@") ? path : (path.isEmpty ? home : "\(home)/\(path)")
    }

    /// Runs a store operation; a store error is the user's (exit 1 with its name).
    func perform<T>(_ what: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch {
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(name): \(what): \(error)\n".utf8))
            throw ExitCode(1)
        }
    }

    /// Waits until the domain is gone (@releaseDomain and its home removed,
    /// or the store itself gone with its `pvh run`).
    func waitUntilGone(timeout: Double) -> Bool {
        do {
            try client.watch("@releaseDomain", token: "pvh-wait")
        } catch {
            return true  // the store closed: the guest's pvh run has ended
        }
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            if (try? client.read(home + "/name")) == nil { return true }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return false }
            switch client.waitForWatchEvent(timeout: left) {
            case .event: continue
            case .closed: return true
            case .timedOut: return false
            }
        }
    }
}

/// `control/shutdown` requests (xl shutdown / reboot): the guest's xenbus
/// watch sees the value and shuts itself down cleanly.
struct Shutdown: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a running guest to power off through its control/shutdown watch (xl shutdown).")

    @Argument(help: "The guest's name (pvh run --name).") var name: String?
    @Flag(name: [.short, .customLong("all")], help: "Every guest: the daemon's and those pvh run started on their own (xl shutdown -a).")
    var all = false
    @Flag(name: [.short, .long], help: "Wait until the guest (with -a: every guest) has gone.") var wait = false
    @Option(name: .long, help: "Seconds --wait waits before failing (status 1).") var timeout: Double = 60

    func validate() throws {
        if all && name != nil { throw ValidationError("NAME and -a: one or the other") }
        if !all && name == nil { throw ValidationError("a guest's NAME, or -a for every guest") }
    }

    func run() throws {
        if let name { try requestShutdown(name: name, value: "poweroff", wait: wait, timeout: timeout) } else {
            try shutdownAll(wait: wait, timeout: timeout)
        }
    }
}

/// `pvh shutdown -a [-w]`: every guest is asked first, so they power off
/// side by side, and then (with -w) all are waited for within the one
/// timeout (each of the daemon's through the shutdown route's wait). A guest gone meanwhile counts as done; one that
/// cannot be asked is reported and the rest are still asked (status 1).
func shutdownAll(wait: Bool, timeout: Double) throws {
    let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
    let client = DaemonClient()
    var daemonGuests: [String] = []
    if client.isRunning {
        do {
            daemonGuests = try client.call("GET", "/v1/domains", as: [DomainInfo].self)
                .filter { ["running", "paused"].contains($0.state) }.map(\.name)
        } catch let failure as APIFailure { throw failure.exit }
    }
    let standalone = RuntimeDirectory.default.runningGuests().map(\.rawValue).filter { !daemonGuests.contains($0) }
    var failed = false
    for name in daemonGuests + standalone {
        do { try requestShutdown(name: name, value: "poweroff", wait: false, timeout: timeout) } catch {
            failed = true
        }
    }
    if wait {
        // Each asked again, now with the API's bounded wait for what is
        // left of the timeout: the route tells a guest whose process is
        // ending from a running one (Supervisor.ProcessPhase) and waits
        // for its end. Done once each is gone or shut down
        // (on_poweroff="preserve" keeps it).
        for name in daemonGuests {
            let left = (deadline - ContinuousClock.now) / .seconds(1)
            let bound = min(max(left, 1), APIRoutes.maximumWait)
            let path = "/v1/domains/\(pathSegment(name))/shutdown?wait=true&timeout=\(Int(bound))"
            do {
                _ = try client.send("POST", path, timeout: bound + 10)
            } catch let failure as APIFailure {
                switch failure.error.code {
                case .notFound: continue  // gone meanwhile
                case .conflict:
                    // Not running: kept shut down or crashed is done.
                    let info = try? client.call("GET", "/v1/domains/\(pathSegment(name))", as: DomainInfo.self)
                    if info.map({ ["shutdown", "crashed"].contains($0.state) }) ?? true { continue }
                    FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(failure.error.message)\n".utf8))
                default:
                    FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(failure.error.message)\n".utf8))
                }
                failed = true
            }
        }
        for name in standalone {
            let left = max((deadline - ContinuousClock.now) / .seconds(1), 0)
            guard let guest = try? GuestLocator(name) else { continue }  // gone already
            if !guest.waitUntilGone(timeout: left) {
                FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(name): still running \(timeout) s after the poweroff request\n".utf8))
                failed = true
            }
        }
    }
    if failed { throw ExitCode(1) }
}

struct Reboot: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a running guest to reboot through its control/shutdown watch (xl reboot).")

    @Argument(help: "The guest's name (pvh run --name).") var name: String
    @Flag(name: [.short, .long], help: "Wait until the daemon restarted the guest (a daemon's guest only).") var wait = false
    @Option(name: .long, help: "Seconds --wait waits before failing (status 1).") var timeout: Double = 60

    func run() throws { try requestShutdown(name: name, value: "reboot", wait: wait, timeout: timeout) }
}

func requestShutdown(name: String, value: String, wait: Bool, timeout: Double) throws {
    // A guest of the daemon's goes through the API; one `pvh run` started
    // on its own is asked through its own store, as before.
    let client = DaemonClient()
    if client.isRunning {
        let action = value == "poweroff" ? "shutdown" : "reboot"
        let bound = min(max(timeout, 1), APIRoutes.maximumWait)
        let path = "/v1/domains/\(pathSegment(name))/\(action)" + (wait ? "?wait=true&timeout=\(Int(bound))" : "")
        do {
            _ = try client.send("POST", path, timeout: bound + 10)
            return
        } catch let failure as APIFailure {
            let standalone = GuestName(name).map { RuntimeDirectory.default.runningGuests().contains($0) } ?? false
            guard failure.error.code == .notFound, standalone else { throw failure.exit }
        }
    }
    let guest = try GuestLocator(name)
    try guest.perform("write control/shutdown") { try guest.client.write(guest.resolve("control/shutdown"), value) }
    // A standalone guest restarted by --on-reboot restart never goes: -w waits for a power-off only.
    if wait && value == "poweroff" && !guest.waitUntilGone(timeout: timeout) {
        FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(name): still running \(timeout) s after the \(value) request\n".utf8))
        throw ExitCode(1)
    }
}

struct MemSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mem-set",
        abstract: "Set a running guest's memory target (memory/target); its balloon driver gives memory back (xl mem-set).")

    @Argument(help: "The guest's name (pvh run --name).") var name: String
    @Argument(help: ArgumentHelp("The new target: a number with an optional unit t, g, m (the default), k or b (xl's).", valueName: "mem"))
    var size: String

    func run() throws {
        let kib = kibibytes(size, verb: "mem-set")
        // A daemon's guest goes through the API (which checks static-max as
        // libxl does); one `pvh run` started on its own through its store.
        let client = DaemonClient()
        if client.isRunning {
            do {
                try setMemory(name, MemoryRequest(targetKiB: kib))
                return
            } catch let code as ExitCode {
                let standalone = GuestName(name).map { RuntimeDirectory.default.runningGuests().contains($0) } ?? false
                guard standalone else { throw code }
            }
        }
        let guest = try GuestLocator(name)
        let maximum = (try? guest.client.read(guest.resolve("memory/static-max"))).flatMap { Int64($0) }
        if let maximum, kib > maximum {
            usageFailure("mem-set \(size): above the guest's maximum of \(maximum / 1024) MiB")
        }
        try guest.perform("write memory/target") { try guest.client.write(guest.resolve("memory/target"), String(kib)) }
    }
}

/// `pvh list`: the daemon's domains in xl's columns (`-l`/`--json`: the
/// API's JSON, configs included); without a daemon, the guests `pvh run`
/// started on their own.
struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List guests (xl list).")

    @Flag(name: [.short, .long], help: "Each domain's record and resolved config, as JSON.") var long = false
    @Flag(name: .long, help: "JSON (as -l).") var json = false
    @Argument(help: "Only these guests (each must exist).") var names: [String] = []

    func run() throws {
        let client = DaemonClient()
        guard client.isRunning else {
            guard names.isEmpty && !long && !json else {
                throw client.fail("no pvh daemon answers on \(client.client.socketPath)")
            }
            Self.listStandalone()
            return
        }
        try reportingAPIErrors {
            var domains = try client.call("GET", "/v1/domains", as: [DomainInfo].self)
            if !names.isEmpty {
                for name in names where !domains.contains(where: { $0.name == name }) {
                    throw client.fail("\(name) is an invalid domain identifier")
                }
                domains = domains.filter { names.contains($0.name) }
            }
            if long || json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(domains), as: UTF8.self))
                return
            }
            print(DomainListing.header)
            for d in domains {
                // Mem: the target now (pvh mem-set), as xl's column; VCPUs: those online.
                print(DomainListing.row(name: d.name, id: d.domid, memoryMiB: d.memoryTargetKiB.map { Int($0 / 1024) } ?? d.memoryMiB,
                                        vcpus: d.onlineVCPUs ?? d.vcpus, flags: d.flags, cpuSeconds: d.cpuTime))
            }
        }
    }

    /// Guests `pvh run` runs on its own (each with its store's socket).
    static func listStandalone() {
        let directory = RuntimeDirectory.default
        print("Name                 ID   Mem(MiB)  VCPUs  XenStore socket")
        for name in directory.runningGuests() {
            guard let guest = try? GuestLocator(name.rawValue) else { continue }
            let id = guest.home.split(separator: "/").last.map(String.init) ?? "?"
            let kib = (try? guest.client.read(guest.resolve("memory/target"))).flatMap { Int($0) } ?? 0
            let vcpus = (try? guest.client.directory(guest.resolve("cpu")))?.count ?? 0
            print("\(name.rawValue.padding(toLength: 20, withPad: " ", startingAt: 0)) \(id.padding(toLength: 4, withPad: " ", startingAt: 0)) \(String(kib / 1024).padding(toLength: 9, withPad: " ", startingAt: 0)) \(String(vcpus).padding(toLength: 6, withPad: " ", startingAt: 0)) \(guest.socket)")
        }
    }
}

/// Direct access to a guest's XenStore, like xenstore-ls/-read/-write/-rm/
/// -watch (which also work: `XENSTORED_PATH=<socket>`, see `pvh list`).
/// Relative paths are relative to the guest's /local/domain/<id>.
struct XenStoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xenstore",
        abstract: "Read and change a running guest's XenStore.",
        subcommands: [Ls.self, Read.self, Write.self, Rm.self, Watch.self])

    struct Ls: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a subtree with values and permissions.")
        @Argument(help: "The guest's name.") var name: String
        @Argument(help: "Path (default: the guest's home).") var path: String = ""

        func run() throws {
            let guest = try GuestLocator(name)
            let root = guest.resolve(path)
            try guest.perform("ls \(root)") { try list(guest.client, root, depth: 0) }
        }

        private func list(_ client: XenStoreClient, _ path: String, depth: Int) throws {
            for child in try client.directory(path) {
                let full = path == "/" ? "/\(child)" : "\(path)/\(child)"
                let value = (try? client.read(full)) ?? ""
                let perms = (try? client.permissions(full))?.joined(separator: ",") ?? ""
                print("\(String(repeating: " ", count: depth))\(child) = \"\(escaped(value))\"  (\(perms))")
                try list(client, full, depth: depth + 1)
            }
        }

        private func escaped(_ s: String) -> String {
            s.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0 != "\"" && $0 != "\\" ? String($0) : "\\x\(String($0.value, radix: 16))" }.joined()
        }
    }

    struct Read: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a node's value.")
        @Argument(help: "The guest's name.") var name: String
        @Argument(help: "Path.") var path: String

        func run() throws {
            let guest = try GuestLocator(name)
            let full = guest.resolve(path)
            print(try guest.perform("read \(full)") { try guest.client.read(full) })
        }
    }

    struct Write: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write a node's value (parents are created).")
        @Argument(help: "The guest's name.") var name: String
        @Argument(help: "Path.") var path: String
        @Argument(help: "Value.") var value: String

        func run() throws {
            let guest = try GuestLocator(name)
            let full = guest.resolve(path)
            try guest.perform("write \(full)") { try guest.client.write(full, value) }
        }
    }

    struct Rm: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a node and everything below it.")
        @Argument(help: "The guest's name.") var name: String
        @Argument(help: "Path.") var path: String

        func run() throws {
            let guest = try GuestLocator(name)
            let full = guest.resolve(path)
            try guest.perform("rm \(full)") { try guest.client.remove(full) }
        }
    }

    struct Watch: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the path of each change under a node (the first is the watch's initial event).")
        @Argument(help: "The guest's name.") var name: String
        @Argument(help: "Path.") var path: String
        @Option(name: [.short, .customLong("count")], help: "Stop after this many events.") var count: Int?

        func run() throws {
            let guest = try GuestLocator(name)
            let full = guest.resolve(path)
            try guest.perform("watch \(full)") { try guest.client.watch(full, token: "pvh") }
            var seen = 0
            while count.map({ seen < $0 }) ?? true {
                guard case .event(let changed, _) = guest.client.waitForWatchEvent(timeout: .infinity) else { break }
                // Unbuffered: a watcher's reader sees each event as it comes.
                FileDescriptorConsoleSink(fd: 1).emit(Array("\(changed)\n".utf8))
                seen += 1
            }
        }
    }
}
