import ArgumentParser
import Foundation
import PVHAPI
import PVHAPIClient
import Toolstack
import VMM

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's client, or exit 1 naming the guest as xl does when there is none.
func daemon(for name: String?) throws -> DaemonClient {
    let client = DaemonClient()
    guard client.isRunning else {
        throw client.fail(name.map { "\($0) is an invalid domain identifier (no pvh daemon)" }
            ?? "no pvh daemon answers on \(client.client.socketPath) (pvh daemon starts one)")
    }
    return client
}

/// Every domain the daemon has (`GET /v1/domains`); each of `names` must
/// be one of them, else one line as xl says it and status 1.
func namedDomains(_ names: [String]) throws -> [DomainInfo] {
    let client = try daemon(for: names.first)
    let domains = try client.call("GET", "/v1/domains", as: [DomainInfo].self)
    for name in names where !domains.contains(where: { $0.name == name }) {
        throw client.fail("\(name) is an invalid domain identifier")
    }
    return domains
}

/// `PUT /v1/domains/{name}/memory` with `request`.
func setMemory(_ name: String, _ request: MemoryRequest) throws {
    try reportingAPIErrors {
        let client = try daemon(for: name)
        _ = try client.send("PUT", "/v1/domains/\(pathSegment(name))/memory", body: Array(try JSONEncoder().encode(request)))
    }
}

/// A size as xl takes it, or one line and status 2.
func kibibytes(_ text: String, verb: String) -> Int64 {
    guard let kib = MemorySize.kibibytes(text), kib > 0 else { usageFailure("\(verb) \(text): \(MemorySize.rule)") }
    return kib
}

struct MemMax: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mem-max",
        abstract: "Set a guest's maximum memory (memory/static-max), the cap its process enforces on ballooning up (xl mem-max).")

    @Argument(help: "The guest's name.") var name: String
    @Argument(help: ArgumentHelp("The maximum: a number with an optional unit t, g, m (the default), k or b.", valueName: "mem"))
    var size: String

    func run() throws { try setMemory(name, MemoryRequest(maxKiB: kibibytes(size, verb: "mem-max"))) }
}

struct VCPUSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vcpu-set",
        abstract: "Set how many of a guest's vCPUs are online (cpu/N/availability; xl vcpu-set).")

    @Argument(help: "The guest's name.") var name: String
    @Argument(help: ArgumentHelp("vCPUs online: 1 to the guest's vcpus.", valueName: "vcpus")) var count: Int

    func run() throws {
        try reportingAPIErrors {
            let client = try daemon(for: name)
            _ = try client.send("PUT", "/v1/domains/\(pathSegment(name))/vcpus",
                                body: Array(try JSONEncoder().encode(VCPURequest(online: count))))
        }
    }
}

struct Uptime: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print how long each guest has run since it was (re)started (xl uptime).")

    @Argument(help: "Only these guests (each must exist).") var names: [String] = []

    func run() throws {
        try reportingAPIErrors {
            let domains = try namedDomains(names)
            let now = Date().timeIntervalSince1970
            print(UptimeListing.header)
            // As xl: the host (Domain-0) first when no guest is named.
            if names.isEmpty, let text = try? String(contentsOfFile: "/proc/uptime", encoding: .utf8),
               let seconds = Double(text.split(separator: " ").first ?? "") {
                print(UptimeListing.row(name: "Domain-0", id: 0, seconds: seconds))
            }
            for d in domains where names.isEmpty || names.contains(d.name) {
                print(UptimeListing.row(name: d.name, id: d.domid, seconds: now - d.startTime))
            }
        }
    }
}

/// `pvh top`: xentop's table from `GET /v1/stats`.
struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show each guest's CPU, memory, vCPUs, network and block counters, refreshed (xl top, xentop).",
        discussion: "The columns are xentop's (xentop(1)); CPU(%) is over the delay between two refreshes (0 in the first).")

    @Flag(name: [.short, .customLong("batch")], help: "Batch mode: print each refresh, no screen control (xentop -b).")
    var batch = false
    @Option(name: [.short, .customLong("iterations")], help: "Stop after this many refreshes (default: until interrupted).")
    var iterations: Int?
    @Option(name: [.short, .customLong("delay")], help: "Seconds between refreshes (default 3).") var delay: Double = 3
    @Flag(name: [.short, .customLong("full-name")], help: "Whole names, not cut to 10 characters (xentop -f).")
    var fullName = false

    func validate() throws {
        if let iterations, iterations < 1 { throw ValidationError("-i \(iterations): at least 1") }
        guard delay > 0, delay <= 3600 else { throw ValidationError("-d \(delay): seconds, more than 0 and at most 3600") }
    }

    func run() throws {
        try reportingAPIErrors {
            let client = try daemon(for: nil)
            let host = try client.call("GET", "/v1/host", as: HostInfo.self)
            let hostKiB = Int64(host.totalMemoryMiB) * 1024
            let redraw = !batch && isatty(1) == 1
            var previous: [String: (DomainSample, Date)] = [:]
            var done = 0
            while iterations.map({ done < $0 }) ?? true {
                if done > 0 { Thread.sleep(forTimeInterval: delay) }  // the refresh interval, not a synchronisation
                let stats = try client.call("GET", "/v1/stats", as: [DomainStats].self)
                let now = Date()
                let width = fullName ? max(10, stats.map(\.name.count).max() ?? 10) : 10
                var screen = redraw ? "\u{1B}[H\u{1B}[2J" : ""
                screen += TopListing.header(nameWidth: width) + "\n"
                for s in stats {
                    let sample = s.sample
                    let before = previous[s.name]
                    let percent = TopListing.cpuPercent(now: sample, before: before?.0,
                                                        seconds: before.map { now.timeIntervalSince($0.1) } ?? 0)
                    screen += TopListing.row(sample, cpuPercent: percent, hostMemoryKiB: hostKiB, nameWidth: width) + "\n"
                    previous[s.name] = (sample, now)
                }
                print(screen, terminator: "")
                fflush(nil)
                done += 1
            }
        }
    }
}

/// `pvh events`: the daemon's event stream, one line per event.
struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print domain events as they happen: created, paused, unpaused, shutdown (with its reason), rebooted, crashed, destroyed, memory and vCPU changes.",
        discussion: "Text by default (TIME NAME (ID) EVENT [reason] [action]); --json prints each event as the API's NDJSON line (docs/api/openapi.json).")

    @Flag(name: .long, help: "One JSON object per line, as GET /v1/events sends them.") var json = false
    @Option(name: [.customShort("n"), .customLong("count")], help: "Exit after this many events.") var count: Int?
    @Option(name: .long, help: "Exit (status 0) after this many seconds.") var timeout: Double?

    func validate() throws {
        if let count, count < 1 { throw ValidationError("--count \(count): at least 1") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout \(timeout): more than 0 seconds") }
    }

    func run() throws {
        let client = try daemon(for: nil)
        let socket = client.client.socketPath
        var partial: [UInt8] = []
        var seen = 0
        let json = self.json, count = self.count
        let status: Int
        do {
            // Without --timeout, as long as the daemon runs (a year bounds the client's timer).
            status = try client.client.stream("/v1/events", timeout: timeout ?? 365 * 86400, head: { status in
                // Said once the stream is open: events from here on are seen.
                if status == 200 { FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: events: watching \(socket)\n".utf8)) }
            }) { chunk in
                partial += chunk
                while let newline = partial.firstIndex(of: 0x0a) {
                    let line = Array(partial[..<newline])
                    partial.removeSubrange(...newline)
                    guard !line.isEmpty else { continue }
                    print(json ? String(decoding: line, as: UTF8.self) : Self.text(line))
                    fflush(nil)
                    seen += 1
                    if let count, seen >= count { return false }
                }
                return true
            }
        } catch .timedOut {
            return
        } catch {
            throw client.fail("the pvh daemon (\(socket)): \(error)")
        }
        guard status == 200 else { throw client.fail("GET /v1/events: HTTP \(status)") }
    }

    /// `2026-12-03 13:20:01 web (1) shutdown poweroff destroy`.
    static func text(_ line: [UInt8]) -> String {
        guard let event = try? JSONDecoder().decode(DomainEvent.self, from: Data(line)) else { return String(decoding: line, as: UTF8.self) }
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        let when = formatter.string(from: Date(timeIntervalSince1970: event.time))
        return ([when, event.name, "(\(event.domid))", event.type.rawValue] + [event.reason, event.action].compactMap { $0 })
            .joined(separator: " ")
    }
}
