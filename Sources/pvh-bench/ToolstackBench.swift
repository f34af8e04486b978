import Foundation
import HostIO
import Locking
import VMM

#if canImport(Glibc)
import Glibc
#endif

// `pvh-bench toolstack`: the pvh daemon measured from outside, as a user
// meets it, beside `pvh run` of the same guest (issue 12, "Done when").
//
// Everything runs as child processes of the built `pvh` on temporary
// sockets and directories (`PVH_RUNTIME_DIR`, `PVH_LOG_DIR`): a
// `pvh daemon --foreground`, `pvh create CONFIG` (the CLI, a client of the
// daemon's API; the daemon spawns the guest as `pvh create -F`), and
// `pvh run --name NAME` directly for the reference.
//
// "First instruction", observed from outside: the guest's first hypervisor
// console line in `<runtime dir>/NAME/dmesg`, which every named guest
// process writes (README: The hypervisor console). The test guest's entry
// (testguest/head.S `pvh_start32`, then `pvh_main` in main.c) writes
// "PVHTEST BOOT transport=page" to port 0xE9 byte by byte before anything
// else; the line is appended to the file when its newline arrives. That is
// a little after the first instruction (the 32- to 64-bit switch and 27
// OUTs); the offset is measured in process (`firstLineOffset`: the
// domain's first exit, the OUT at `pvh_start32`, to the first console
// line) and printed, and both sides carry it. The file is looked at every
// millisecond (a wait on the daemon's or the guest process's pidfd, so a
// process that dies ends the wait at once): the figures are ±1 ms.
//
// Cases:
// - create-first-insn: `pvh create CONFIG` spawned → first line, through
//   the daemon; host: `pvh run` spawned → first line (ratio direct/daemon).
// - burst-starts: N guests created at once (N CLIs spawned together),
//   guests per second until the last one's first line; host: N `pvh run`
//   spawned together.
// - daemon-rss-0, daemon-rss-N: the daemon's VmRSS with no guest and with
//   the N guests of the burst running.
// - guest-rss-beyond-ram: a guest process's VmRSS minus the resident part
//   of its guest RAM mapping (below), median over the N guests, beside the
//   same for `pvh run`; guest-ram-touched is that resident part.
//
// Guest RAM is one anonymous mapping of exactly the guest's size for
// guests below the 32-bit hole (GuestMemory's GuestMemoryMapping;
// GuestConfiguration.ramRanges), marked MADV_DONTFORK: found in
// /proc/PID/smaps as the mapping whose Size is the RAM size and whose
// VmFlags have "dc"; its Rss is the touched guest memory. (Without the
// mark the kernel merged it with a neighbouring malloc arena, also
// MAP_NORESERVE, and the arena's pages counted as guest RAM. A guest of
// more than 3 GiB would have two ranges, and is refused here.)
//
// Every wait is bounded (`--timeout`, per phase); every process started is
// ended on every way out (guests destroyed through the daemon, the daemon
// SIGTERMed, which destroys what is left, then SIGKILLed; `pvh run`s
// SIGTERMed, then SIGKILLed), also on SIGINT/SIGTERM of pvh-bench.
enum ToolstackBench {
    struct Options {
        var rounds = 5
        var guests = 8
        var memoryMiB = 128
        var timeout = 60
        var pvh: String?
        var kernel: String?
    }

    typealias UsageError = BenchUsageError

    static let usage = "usage: pvh-bench toolstack [--rounds N] [--guests N] [--memory MIB] [--timeout SECONDS] [--pvh PATH] [--kernel PATH]"

    static func parse(_ arguments: [String]) throws(UsageError) -> Options {
        var options = Options()
        var words = BenchArguments(arguments, usage: usage)
        while let argument = words.next() {
            switch argument {
            case "--rounds": options.rounds = try words.positive(argument)
            case "--guests": options.guests = try words.positive(argument)
            case "--memory":
                options.memoryMiB = try words.positive(argument)
                guard options.memoryMiB <= 3072 else { throw UsageError(description: "--memory: at most 3072 (one RAM range below the 32-bit hole)") }
            case "--timeout": options.timeout = try words.positive(argument)
            case "--pvh": options.pvh = try words.value(argument)
            case "--kernel": options.kernel = try words.value(argument)
            default: throw words.unknown(argument)
            }
        }
        return options
    }

    /// Runs the benchmark; the process's exit status.
    static func main(_ arguments: [String]) -> Int32 {
        benchSubcommand("toolstack", usage: usage, arguments, failure: 1) { try run(try parse(arguments)) }
    }

    // MARK: the run

    static func run(_ options: Options) throws {
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let pvh = options.pvh ?? (ToolstackRun.executableDirectory + "/pvh")
        let kernel = options.kernel ?? repo.appendingPathComponent("testguest/build/testguest.elf").path
        guard FileManager.default.isExecutableFile(atPath: pvh) else { throw UsageError(description: "\(pvh): no pvh executable (swift build; or --pvh)") }
        guard FileManager.default.isReadableFile(atPath: kernel) else {
            throw UsageError(description: "\(kernel): no test guest (make -C testguest; or --kernel)")
        }
        let bench = try ToolstackRun(pvh: pvh, kernel: kernel, options: options)
        defer { bench.cleanUp() }
        ToolstackRun.cleanUpOnSignals(bench)

        let offset = firstLineOffset(kernel: kernel, memoryMiB: options.memoryMiB, rounds: options.rounds)
        print("pvh-bench toolstack: \(pvh), test guest \(kernel), \(options.memoryMiB) MiB, "
              + "medians of \(options.rounds) interleaved rounds, bursts of \(options.guests)")
        print("  first instruction = the guest's first hypervisor console line in <runtime dir>/NAME/dmesg (±1 ms)")
        if let offset {
            print(String(format: "toolstack first-line-after-first-insn pvh %.2f ms (in process: first exit → first console line; in both sides' times)", offset))
        }

        let daemonStart = try bench.startDaemon()
        print(String(format: "toolstack daemon-start pvh %.1f ms (pvh daemon --foreground spawned → its API socket answers)", daemonStart))
        let rssEmpty = ToolstackRun.statusKiB(bench.daemonPID, "VmRSS") ?? 0

        // 1. create → first instruction, one guest at a time.
        var viaDaemon: [Double] = [], direct: [Double] = []
        for round in 0..<options.rounds {
            var steps: [() throws -> Void] = [
                { viaDaemon.append(try bench.createThroughDaemon(names: ["bd\(round)"]).last ?? .nan)
                  try bench.destroyThroughDaemon(["bd\(round)"]) },
                { let (times, runs) = try bench.runDirectly(names: ["br\(round)"])
                  direct.append(times.last ?? .nan)
                  bench.stop(runs) },
            ]
            if round % 2 == 1 { steps.reverse() }
            for step in steps { try step() }
        }
        let d = median(viaDaemon), r = median(direct)
        print(String(format: "toolstack create-first-insn pvh %.1f ms host %.1f ms ratio %.2f", d, r, d > 0 ? r / d : .nan))
        print("  pvh: pvh create CONFIG through the daemon; host: pvh run of the same guest; rounds: pvh \(list(viaDaemon)) | host \(list(direct))")
        if let offset {
            print(String(format: "  less the first line's %.1f ms after the first instruction: pvh %.1f ms, host %.1f ms", offset, d - offset, r - offset))
        }

        // 2. and 3. N at once; memory while they run.
        let n = options.guests
        let names = (0..<n).map { "bb\($0)" }
        let burst = try bench.createThroughDaemon(names: names)
        let daemonRate = Double(n) / ((burst.last ?? .nan) / 1000)
        try bench.waitForSteadyState(names)
        let rssFull = ToolstackRun.statusKiB(bench.daemonPID, "VmRSS") ?? 0
        let guestPIDs = try bench.daemonGuestPIDs(names)
        let daemonGuests = guestPIDs.compactMap { ToolstackRun.memory(of: $0, ramMiB: options.memoryMiB) }
        try bench.destroyThroughDaemon(names)

        let directNames = (0..<n).map { "rb\($0)" }
        let (directBurst, runs) = try bench.runDirectly(names: directNames)
        let directRate = Double(n) / ((directBurst.last ?? .nan) / 1000)
        try bench.waitForSteadyState(directNames)
        let directGuests = runs.compactMap { ToolstackRun.memory(of: $0.pid, ramMiB: options.memoryMiB) }
        bench.stop(runs)

        print(String(format: "toolstack burst-starts pvh %.2f guests/s host %.2f guests/s ratio %.2f", daemonRate, directRate,
                     directRate > 0 ? daemonRate / directRate : .nan))
        print("  \(n) guests of \(options.memoryMiB) MiB at once; last first instruction after: pvh \(list([burst.last ?? .nan])) ms | host \(list([directBurst.last ?? .nan])) ms")
        print("  each guest's first instruction (ms, sorted): pvh \(list(burst)) | host \(list(directBurst))")
        print(String(format: "toolstack daemon-rss-0 pvh %.1f MiB", Double(rssEmpty) / 1024))
        print(String(format: "toolstack daemon-rss-%d pvh %.1f MiB (%.2f MiB per guest)", n, Double(rssFull) / 1024,
                     Double(rssFull - rssEmpty) / 1024 / Double(n)))
        guard !daemonGuests.isEmpty, !directGuests.isEmpty else {
            throw UsageError(description: "no guest RAM mapping of \(options.memoryMiB) MiB found in the guest processes' smaps "
                             + "(daemon's guests \(guestPIDs): \(daemonGuests.count), pvh runs \(runs.map(\.pid)): \(directGuests.count))")
        }
        let beyond = median(daemonGuests.map { Double($0.rssKiB - $0.ramKiB) / 1024 })
        let beyondDirect = median(directGuests.map { Double($0.rssKiB - $0.ramKiB) / 1024 })
        print(String(format: "toolstack guest-rss-beyond-ram pvh %.1f MiB host %.1f MiB ratio %.2f", beyond, beyondDirect,
                     beyond > 0 ? beyondDirect / beyond : .nan))
        print(String(format: "toolstack guest-ram-touched pvh %.2f MiB host %.2f MiB",
                     median(daemonGuests.map { Double($0.ramKiB) / 1024 }), median(directGuests.map { Double($0.ramKiB) / 1024 })))
        print("  pvh: the daemon's guest processes (pvh create -F), host: pvh run; VmRSS minus the guest RAM mapping's Rss "
              + "(/proc/PID/smaps), medians over \(n), once each guest waits for control/shutdown")
    }

    static func median(_ values: [Double]) -> Double { benchMedian(values) }

    static func list(_ values: [Double]) -> String { values.map { String(format: "%.1f", $0) }.joined(separator: " ") }

    /// The domain's first exit (the OUT at `pvh_start32`, DomainMetrics.firstExit)
    /// to the first hypervisor console line, in process: what the outside
    /// signal adds to the first instruction. Median, ms; nil without KVM.
    static func firstLineOffset(kernel: String, memoryMiB: Int, rounds: Int) -> Double? {
        var offsets: [Double] = []
        for _ in 0..<rounds {
            let firstLine = Lock<ContinuousClock.Instant?>(nil)
            let sink = CapturingConsoleSink { _ in
                let now = ContinuousClock.now
                firstLine.withLock { if $0 == nil { $0 = now } }
            }
            guard let domain = try? Domain(configuration: GuestConfiguration(kernelPath: kernel, commandLine: "pvh.scenarios=version",
                                                                             memoryMiB: memoryMiB), console: sink) else { return nil }
            _ = domain.run()
            guard let exit = domain.metrics.firstExit.withLock({ $0 }), let line = firstLine.withLock({ $0 }) else { continue }
            let d = line - exit
            offsets.append(Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15)
        }
        return offsets.isEmpty ? nil : median(offsets)
    }
}

/// A child process of the benchmark: reaped at most once, ended on the way out.
final class BenchProcess: @unchecked Sendable {
    let process: SupervisedProcess
    let what: String
    private let end = Lock<SupervisedProcess.End?>(nil)

    init(_ arguments: [String], log: String, what: String) throws {
        process = try SupervisedProcess.spawn(arguments, logPath: log)
        self.what = what
    }

    var pid: Int32 { process.pid }

    /// Its end, waiting at most `timeout` seconds; nil while it runs.
    func ended(within timeout: Double) -> SupervisedProcess.End? {
        if let e = end.withLock({ $0 }) { return e }
        guard let e = process.wait(timeout: timeout) else { return nil }
        end.withLock { $0 = e }
        return e
    }

    /// SIGTERM, `grace` seconds, then SIGKILL to its process group (bounded).
    func stop(grace: Double) {
        guard ended(within: 0) == nil else { return }
        process.signal(SIGTERM)
        if ended(within: grace) == nil {
            process.signal(SIGKILL, group: true)
            _ = ended(within: 5)
        }
    }
}

/// One `pvh-bench toolstack` run: its processes and files.
final class ToolstackRun: @unchecked Sendable {
    let pvh: String
    let kernel: String
    let options: ToolstackBench.Options
    let directory: String
    var runtime: String { directory + "/run" }
    var api: String { runtime + "/api.sock" }
    private let children = Lock<[BenchProcess]>([])
    private let daemonChild = Lock<BenchProcess?>(nil)
    private let cleanupLock = NSLock()
    private var cleaned = false  // guarded by cleanupLock

    init(pvh: String, kernel: String, options: ToolstackBench.Options) throws {
        self.pvh = pvh
        self.kernel = kernel
        self.options = options
        directory = NSTemporaryDirectory() + "pvh-bench-toolstack-\(getpid())"
        for dir in [directory, directory + "/run", directory + "/log", directory + "/cfg"] {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        }
        // Inherited by every pvh started from here, and by the daemon's guests.
        setenv("PVH_RUNTIME_DIR", runtime, 1)
        setenv("PVH_LOG_DIR", directory + "/log", 1)
    }

    static var executableDirectory: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (exe as NSString).deletingLastPathComponent
    }

    var daemonPID: Int32 { daemonChild.withLock { $0?.pid } ?? 0 }

    private func spawn(_ arguments: [String], what: String) throws -> BenchProcess {
        let child = try BenchProcess([pvh] + arguments, log: "\(directory)/log/\(what).out", what: what)
        children.withLock { $0.append(child) }
        return child
    }

    /// `pvh daemon --foreground` on this run's sockets; ms until its API socket answers.
    func startDaemon() throws -> Double {
        let t0 = ContinuousClock.now
        let daemon = try spawn(["daemon", "--foreground", "--destroy-on-exit", "--api-socket", api, "--xenstore-socket", runtime + "/xenstored.sock"], what: "daemon")
        daemonChild.withLock { $0 = daemon }
        let deadline = Date().addingTimeInterval(Double(options.timeout))
        while Date() < deadline {
            if let probe = try? UnixSocket.connect(to: api) {
                probe.close()
                return Self.millis(ContinuousClock.now - t0)
            }
            if let end = daemon.ended(within: 0.001) { throw failure("the daemon ended at start (\(end))", log: "daemon") }
        }
        throw failure("the daemon's API socket did not answer within \(options.timeout) s", log: "daemon")
    }

    /// An xl config for the test guest named `name`, waiting for
    /// control/shutdown (testguest/xenstore.c `control`); every end destroys it.
    func config(_ name: String) throws -> String {
        let path = "\(directory)/cfg/\(name).cfg"
        let text = """
            type = "pvh"
            name = "\(name)"
            kernel = "\(kernel)"
            memory = \(options.memoryMiB)
            extra = "pvh.scenarios=control"
            on_poweroff = "destroy"
            on_reboot = "destroy"
            on_crash = "destroy"

            """
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Spawns `pvh create CONFIG` for each name at once; each guest's
    /// time (ms, sorted) from the spawn to its first console line.
    func createThroughDaemon(names: [String]) throws -> [Double] {
        guard let daemon = daemonChild.withLock({ $0 }) else { throw failure("no daemon", log: "daemon") }
        let configs = try names.map(config)
        let t0 = ContinuousClock.now
        let clients = try zip(names, configs).map { try spawn(["create", $1], what: "create-\($0)") }
        let times = try waitForFirstLines(names, since: t0, anchor: daemon, watched: clients) { client, end in
            // A CLI ends with the daemon's answer: anything but 0 is a refusal.
            guard end == .exited(0) else { throw self.failure("pvh create \(client.what) ended \(end)", log: client.what) }
        }
        // Its answer came before or after the first instruction; it ends either way.
        for client in clients where client.ended(within: Double(options.timeout)) != .exited(0) {
            throw failure("\(client.what) did not end with 0", log: client.what)
        }
        return times
    }

    /// `pvh destroy NAME` for each, at once, bounded.
    func destroyThroughDaemon(_ names: [String]) throws {
        let clients = try names.map { try spawn(["destroy", $0], what: "destroy-\($0)") }
        for client in clients {
            guard let end = client.ended(within: Double(options.timeout) + 25) else {
                client.stop(grace: 1)
                throw failure("\(client.what) did not end", log: client.what)
            }
            guard end == .exited(0) else { throw failure("\(client.what) ended \(end)", log: client.what) }
        }
    }

    /// Spawns `pvh run --name NAME` of the same guest for each name at
    /// once; each one's time (ms, sorted) to its first console line.
    func runDirectly(names: [String]) throws -> ([Double], [BenchProcess]) {
        let t0 = ContinuousClock.now
        let runs = try names.map {
            try spawn(["run", "--name", $0, "--kernel", kernel, "--memory", String(options.memoryMiB), "--cmdline", "pvh.scenarios=control"],
                      what: "run-\($0)")
        }
        let times = try waitForFirstLines(names, since: t0, anchor: runs[0], watched: runs) { run, end in
            throw self.failure("\(run.what) ended \(end) before its first instruction", log: run.what)
        }
        return (times, runs)
    }

    /// Ends `pvh run`s: SIGTERM (they stop their guest and exit 130), bounded.
    func stop(_ runs: [BenchProcess]) {
        runs.forEach { $0.process.signal(SIGTERM) }
        runs.forEach { $0.stop(grace: 10) }
    }

    private func dmesg(_ name: String) -> String { "\(runtime)/\(name)/dmesg" }

    /// Waits (bounded by `--timeout`) until every guest's dmesg file has a
    /// line; between looks, at most 1 ms on `anchor`'s pidfd (a process
    /// that must outlive the wait: its end is a failure). `ended` is told
    /// of each watched process that ends meanwhile.
    private func waitForFirstLines(_ names: [String], since t0: ContinuousClock.Instant, anchor: BenchProcess, watched: [BenchProcess],
                                   ended: (BenchProcess, SupervisedProcess.End) throws -> Void) throws -> [Double] {
        var times: [String: Double] = [:]
        var seenEnd = Set<Int32>()
        let deadline = t0 + .seconds(options.timeout)
        while times.count < names.count {
            let now = ContinuousClock.now
            for name in names where times[name] == nil {
                var st = stat()
                if stat(dmesg(name), &st) == 0, st.st_size > 0 { times[name] = Self.millis(now - t0) }
            }
            if times.count == names.count { break }
            for child in watched where !seenEnd.contains(child.pid) {
                if let end = child.ended(within: 0) {
                    seenEnd.insert(child.pid)
                    try ended(child, end)
                }
            }
            guard now < deadline else {
                let missing = names.filter { times[$0] == nil }
                throw failure("no first instruction within \(options.timeout) s: \(missing.joined(separator: ", "))", log: anchor.what)
            }
            if let end = anchor.ended(within: 0.001) { throw failure("\(anchor.what) ended (\(end))", log: anchor.what) }
        }
        return times.values.sorted()
    }

    /// Waits (bounded) until each guest says it waits for control/shutdown
    /// ("PVHTEST control WAITING"): booted, its store connected, at rest.
    func waitForSteadyState(_ names: [String]) throws {
        let deadline = Date().addingTimeInterval(Double(options.timeout))
        var pending = Set(names)
        let anchor = daemonChild.withLock { $0 }
        while !pending.isEmpty {
            for name in pending {
                let text = (try? String(contentsOfFile: dmesg(name), encoding: .utf8)) ?? ""
                if text.contains("PVHTEST control WAITING") { pending.remove(name) }
                if text.contains("PVHTEST control FAIL") { throw failure("\(name): \(text)", log: "daemon") }
            }
            guard Date() < deadline else { throw failure("not waiting for control/shutdown after \(options.timeout) s: \(pending.sorted())", log: "daemon") }
            if let anchor, let end = anchor.ended(within: 0.005) { throw failure("the daemon ended (\(end))", log: "daemon") }
            if anchor == nil { _ = poll(nil, 0, 5) }  // a look every 5 ms; bounded by the deadline
        }
    }

    /// The guest processes' pids, from `pvh list --json` (the API's records).
    func daemonGuestPIDs(_ names: [String]) throws -> [Int32] {
        let list = try spawn(["list", "--json"], what: "list")
        guard let end = list.ended(within: Double(options.timeout)), end == .exited(0) else {
            list.stop(grace: 1)
            throw failure("pvh list --json failed", log: "list")
        }
        let out = (try? Data(contentsOf: URL(fileURLWithPath: "\(directory)/log/list.out"))) ?? Data()
        let json = out.firstIndex(of: UInt8(ascii: "[")).map { out[$0...] } ?? Data()
        guard let records = try? JSONSerialization.jsonObject(with: Data(json)) as? [[String: Any]] else {
            throw failure("pvh list --json: not a JSON array", log: "list")
        }
        return records.filter { names.contains($0["name"] as? String ?? "") }.compactMap { ($0["pid"] as? Int).map(Int32.init) }
    }

    /// A process's VmRSS and the Rss of its guest RAM mapping (KiB), or nil
    /// when no mapping of exactly `ramMiB` is found.
    static func memory(of pid: Int32, ramMiB: Int) -> (rssKiB: Int, ramKiB: Int)? {
        guard let rss = statusKiB(pid, "VmRSS"),
              let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps"),
              let bytes = try? handle.readToEnd() else { return nil }
        // Read to its end: a /proc file has no size for a one-shot read.
        let smaps = String(decoding: bytes, as: UTF8.self)
        // Each mapping: a header line, then fields, VmFlags last (proc(5)).
        var size = 0, resident = 0
        var found: Int?
        for line in smaps.split(separator: "\n") {
            if line.hasPrefix("Size:") { size = kib(line) }
            if line.hasPrefix("Rss:") { resident = kib(line) }
            if line.hasPrefix("VmFlags:"), size == ramMiB * 1024, line.split(separator: " ").contains("dc") {
                guard found == nil else { return nil }  // two candidates: not told apart
                found = resident
            }
        }
        return found.map { (rss, $0) }
    }

    private static func kib(_ line: Substring) -> Int {
        Int(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "") ?? 0
    }

    /// A /proc/PID/status line in KiB (VmRSS).
    static func statusKiB(_ pid: Int32, _ field: String) -> Int? {
        guard pid > 0, let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") { return kib(line) }
        return nil
    }

    static func millis(_ d: Duration) -> Double { Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15 }

    private func failure(_ message: String, log: String) -> BenchUsageError {
        let text = (try? String(contentsOfFile: "\(directory)/log/\(log).out", encoding: .utf8)) ?? ""
        let tail = text.split(separator: "\n").suffix(5).joined(separator: "\n    ")
        return BenchUsageError(description: message + (tail.isEmpty ? "" : "\n    \(log): \(tail)"))
    }

    /// Ends everything started, once: the daemon's guests through the
    /// daemon (SIGTERM destroys them, bounded by the daemon at 25 s), the
    /// daemon, every other child; then the directory.
    func cleanUp() {
        // Held throughout: a signal during the main thread's clean-up waits
        // for it rather than exiting half-way.
        cleanupLock.lock()
        defer { cleanupLock.unlock() }
        guard !cleaned else { return }
        cleaned = true
        let all = children.withLock { $0 }
        if let daemon = daemonChild.withLock({ $0 }) {
            daemon.process.signal(SIGTERM)
            daemon.stop(grace: 30)
        }
        all.forEach { $0.process.signal(SIGTERM) }
        all.forEach { $0.stop(grace: 10) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// SIGINT/SIGTERM: clean up, then exit 130 (the children have process
    /// groups of their own, so a Ctrl-C reaches only pvh-bench).
    static func cleanUpOnSignals(_ bench: ToolstackRun) {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(Data("pvh-bench toolstack: stopped: ending the guests and the daemon\n".utf8))
                bench.cleanUp()
                exit(130)
            }
            source.resume()
            signalSources.append(source)
        }
    }

    // Set up once, from the main thread, before any child is started.
    nonisolated(unsafe) private static var signalSources: [any DispatchSourceSignal] = []
}
