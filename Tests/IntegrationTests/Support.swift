import Foundation
import Locking
import Testing
import KVM
import VMM

/// Paths and gates shared by the integration tests.
enum Env {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let hasKVM = FileManager.default.isReadableFile(atPath: "/dev/kvm") && FileManager.default.isWritableFile(atPath: "/dev/kvm")
    /// Hardware virtualization (VMX/SVM): Linux runs at native speed.
    static let hardwareKVM = hasKVM && ((try? KVMSystem())?.backend.isSoftware == false)
    /// Tests that take tens of minutes on a software backend run only when asked.
    static let slowTestsWanted = ProcessInfo.processInfo.environment["PVH_SLOW_TESTS"] == "1"
    static let kit = ProcessInfo.processInfo.environment["PVH_GUEST_KIT"].map { URL(fileURLWithPath: $0) }
        ?? repo.appendingPathComponent("guest-kit/out")
    static func kernel(_ version: String) -> String { kit.appendingPathComponent("vmlinuz-\(version)").path }
    static func hasKernel(_ version: String) -> Bool { FileManager.default.fileExists(atPath: kernel(version)) }
    /// `.build/debug/pvh`, or `PVH_BINARY`: scripts/sanitize.sh points it at
    /// the sanitizer build's pvh, so the guests the tests boot run instrumented too.
    static let pvhBinary = ProcessInfo.processInfo.environment["PVH_BINARY"]
        ?? repo.appendingPathComponent(".build/debug/pvh").path
    static let hasPVHBinary = FileManager.default.isExecutableFile(atPath: pvhBinary)

    /// Builds the test guest with the system gcc (once per test process).
    static let testGuest: Result<String, TestGuestBuildError> = {
        let make = Process()
        make.executableURL = URL(fileURLWithPath: "/usr/bin/make")
        make.arguments = ["-s", "-C", repo.appendingPathComponent("testguest").path]
        let out = Pipe()
        make.standardOutput = out
        make.standardError = out
        do { try make.run() } catch { return .failure(TestGuestBuildError(output: "\(error)")) }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        make.waitUntilExit()
        guard make.terminationStatus == 0 else { return .failure(TestGuestBuildError(output: text)) }
        return .success(repo.appendingPathComponent("testguest/build/testguest.elf").path)
    }()

    /// The same guest in an ELF32 container (built by the same `make`).
    static var testGuest32: Result<String, TestGuestBuildError> {
        testGuest.map { _ in repo.appendingPathComponent("testguest/build/testguest32.elf").path }
    }
}

/// What one run of the pvh binary gave.
struct PVHResult {
    let status: Int32
    let stdout: String
    let stderr: String
}

extension Env {
    /// Runs the pvh binary with `args` and no input, to its end; after
    /// `limit` seconds it is killed (SIGKILL), so a hang fails the test
    /// instead of stalling the run.
    static func runPVH(_ args: [String], limit: Double = 300, environment: [String: String] = [:]) throws -> PVHResult {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: pvhBinary)
        p.arguments = args
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        let pid = p.processIdentifier
        let watchdog = DispatchWorkItem { kill(pid, SIGKILL) }
        DispatchQueue.global().asyncAfter(deadline: .now() + limit, execute: watchdog)
        // stderr is drained beside stdout so neither pipe fills and blocks pvh.
        let errData = Lock(Data())
        let errDone = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            let d = err.fileHandleForReading.readDataToEndOfFile()
            errData.withLock { $0 = d }
            errDone.signal()
        }
        let o = out.fileHandleForReading.readDataToEndOfFile()
        errDone.wait()
        p.waitUntilExit()
        watchdog.cancel()
        return PVHResult(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                         stderr: String(decoding: errData.withLock { $0 }, as: UTF8.self))
    }
}

struct TestGuestBuildError: Error, CustomStringConvertible {
    let output: String
    var description: String { "make -C testguest failed:\n\(output)" }
}

/// Runs one guest to its end, capturing its console.
struct GuestRun {
    let exit: DomainExit
    let console: CapturingConsoleSink
    let domain: Domain

    var lines: [String] { console.lines }

    /// The first interface's first queue's backend counters, for failure
    /// messages: how much moved each way, RX ring full, drops.
    var networkCounters: String {
        guard let m = domain.networkMetrics.first?.first else { return "no network backend" }
        return "rx \(m.rxPackets.load(ordering: .relaxed)) packets \(m.rxBytes.load(ordering: .relaxed)) bytes, "
            + "tx \(m.txPackets.load(ordering: .relaxed)) packets \(m.txBytes.load(ordering: .relaxed)) bytes, "
            + "rx ring full \(m.rxRingFull.load(ordering: .relaxed)), drops \(m.totalDrops)"
    }

    func results() -> [String: String] {
        var r: [String: String] = [:]
        for line in lines where line.hasPrefix("PVHTEST ") {
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            if parts.count >= 3 { r[parts[1]] = parts[2] }
        }
        return r
    }

    /// `onLine` sees each console line with the domain, on its own queue
    /// (never on the vCPU thread that printed it).
    static func boot(_ config: GuestConfiguration, stopWhen: (@Sendable ([String]) -> Bool)? = nil,
                     onLine: (@Sendable (String, Domain) -> Void)? = nil,
                     limit: Duration, before: (Domain) -> Void = { _ in }) throws -> GuestRun {
        let seen = Lock<[String]>([])
        let domainBox = Lock<Domain?>(nil)
        let lineQueue = DispatchQueue(label: "pvh-test-lines")
        let console = CapturingConsoleSink { line in
            if let onLine, let domain = domainBox.withLock({ $0 }) { lineQueue.async { onLine(line, domain) } }
            guard let stopWhen else { return }
            let all = seen.withLock { $0.append(line); return $0 }
            if stopWhen(all) { domainBox.withLock { $0 }?.stop() }
        }
        let domain = try Domain(configuration: config, console: console)
        domainBox.withLock { $0 = domain }
        before(domain)
        // A bound, not synchronisation: a guest that never gets there fails the test.
        let watchdog = DispatchWorkItem { domain.lifecycle.finish(.failed("test time limit \(limit) reached")) }
        let (seconds, attoseconds) = limit.components
        DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(Int(seconds)) + .nanoseconds(Int(attoseconds / 1_000_000_000)), execute: watchdog)
        let exit = domain.run()
        watchdog.cancel()
        return GuestRun(exit: exit, console: console, domain: domain)
    }
}

/// A child process whose stdout is read line by line as it comes (a reader
/// thread), so a test can wait for a given line with a time bound; its
/// stderr is collected. `stop()` ends it if it still runs (SIGTERM, then
/// SIGKILL), so a failing test leaves nothing behind.
final class ChildProcess: @unchecked Sendable {
    let process = Process()
    let started = ContinuousClock.now
    private let cond = NSCondition()
    // Guarded by `cond`.
    private var lines: [String] = []
    private var partial: [UInt8] = []
    private var stdoutClosed = false
    private var stderrText = ""
    private var stderrClosed = false
    private var exitInstant: ContinuousClock.Instant?
    /// stdin's pipe when asked for (`input`), else stdin is /dev/null.
    private let stdinPipe: Pipe?

    init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], input: Bool = false) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        stdinPipe = input ? Pipe() : nil
        process.standardInput = stdinPipe ?? FileHandle.nullDevice
        process.terminationHandler = { [self] _ in
            let now = ContinuousClock.now
            cond.lock()
            exitInstant = now
            cond.broadcast()
            cond.unlock()
        }
        try process.run()
        let outReader = out.fileHandleForReading, errReader = err.fileHandleForReading
        Thread { [self] in
            while true {
                let chunk = outReader.availableData
                cond.lock()
                if chunk.isEmpty {
                    if !partial.isEmpty { lines.append(String(decoding: partial, as: UTF8.self)) }
                    partial = []
                    stdoutClosed = true
                    cond.broadcast()
                    cond.unlock()
                    return
                }
                for byte in chunk {
                    if byte == UInt8(ascii: "\n") {
                        var line = String(decoding: partial, as: UTF8.self)
                        if line.hasSuffix("\r") { line.removeLast() }
                        lines.append(line)
                        partial = []
                    } else {
                        partial.append(byte)
                    }
                }
                cond.broadcast()
                cond.unlock()
            }
        }.start()
        Thread { [self] in
            // As it comes, so that `waitForErrors` sees a line before the exit.
            var bytes: [UInt8] = []
            while true {
                let chunk = errReader.availableData
                bytes += chunk
                cond.lock()
                stderrText = String(decoding: bytes, as: UTF8.self)
                if chunk.isEmpty { stderrClosed = true }
                cond.broadcast()
                cond.unlock()
                if chunk.isEmpty { return }
            }
        }.start()
    }

    var pid: Int32 { process.processIdentifier }

    /// Writes to its stdin (a child started with `input`); a pipe write
    /// of a few bytes never blocks.
    func send(_ bytes: [UInt8]) {
        try? stdinPipe?.fileHandleForWriting.write(contentsOf: Data(bytes))
    }

    /// The stdout lines so far.
    var outputLines: [String] { cond.lock(); defer { cond.unlock() }; return lines }
    var output: String { outputLines.joined(separator: "\n") }
    /// stderr so far, complete once the process has exited (see `waitForExit`).
    var errors: String { cond.lock(); defer { cond.unlock() }; return stderrText }
    /// When the process was seen to exit.
    var exitedAt: ContinuousClock.Instant? { cond.lock(); defer { cond.unlock() }; return exitInstant }

    /// Waits (at most `timeout`) for a stdout line satisfying `match`; nil
    /// if none came in time or stdout closed first.
    @discardableResult
    func waitForLine(timeout: Duration, _ match: (String) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout.seconds)
        cond.lock()
        defer { cond.unlock() }
        var checked = 0
        while true {
            while checked < lines.count {
                if match(lines[checked]) { return lines[checked] }
                checked += 1
            }
            if stdoutClosed { return nil }
            if !cond.wait(until: deadline) && checked == lines.count { return nil }
        }
    }

    /// Waits (at most `timeout`) for a line starting with `prefix`.
    @discardableResult
    func waitForLine(startingWith prefix: String, timeout: Duration = .seconds(30)) -> String? {
        waitForLine(timeout: timeout) { $0.hasPrefix(prefix) }
    }

    /// Waits (at most `timeout`) until stderr holds `text`; false if it
    /// did not in time or stderr closed without it.
    func waitForErrors(containing text: String, timeout: Duration) -> Bool {
        let deadline = Date().addingTimeInterval(timeout.seconds)
        cond.lock()
        defer { cond.unlock() }
        while !stderrText.contains(text) {
            if stderrClosed || !cond.wait(until: deadline) { return stderrText.contains(text) }
        }
        return true
    }

    /// Waits (at most `timeout`) for the exit and the end of both output
    /// streams: the exit status, or nil if it still runs.
    func waitForExit(timeout: Duration) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout.seconds)
        cond.lock()
        while !(exitInstant != nil && stdoutClosed && stderrClosed) {
            if !cond.wait(until: deadline) { break }
        }
        let done = exitInstant != nil && stdoutClosed && stderrClosed
        cond.unlock()
        return done ? process.terminationStatus : nil
    }

    /// Ends the process if it still runs: SIGTERM, then SIGKILL after 5 s.
    func stop() {
        guard exitedAt == nil else { return }
        kill(pid, SIGTERM)
        if waitForExit(timeout: .seconds(5)) == nil {
            kill(pid, SIGKILL)
            _ = waitForExit(timeout: .seconds(5))
        }
    }

    deinit { stop() }
}

extension Duration {
    var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) / 1e18
    }
}

/// One finished command: status, stdout, stderr.
struct CommandResult: CustomStringConvertible {
    let status: Int32
    let stdout: String
    let stderr: String
    var description: String { "status \(status), stdout \(stdout.debugDescription), stderr \(stderr.debugDescription)" }
}

struct CommandTimedOut: Error, CustomStringConvertible {
    let command: [String]
    var description: String { "\(command.joined(separator: " ")) still running after its time limit: killed" }
}

/// Runs a command to its end (killed and an error after `timeout`).
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                timeout: Duration = .seconds(30)) throws -> CommandResult {
    let child = try ChildProcess(executable, arguments, environment: environment)
    guard let status = child.waitForExit(timeout: timeout) else {
        child.stop()
        throw CommandTimedOut(command: [executable] + arguments)
    }
    let out = child.outputLines.map { $0 + "\n" }.joined()
    return CommandResult(status: status, stdout: out, stderr: child.errors)
}

/// `pvh run` as a child process with a unique `--name` and its own runtime
/// directory (`PVH_RUNTIME_DIR`, a fresh temporary directory), for the
/// control commands (`pvh shutdown`, `pvh xenstore`, ...) and Debian's
/// xenstore-* tools (`XENSTORED_PATH`) to find.
final class RunningGuest: @unchecked Sendable {
    let name: String
    let runtimeDirectory: String
    let child: ChildProcess

    /// Boots the test guest with `cmdline` and waits (bounded) until its
    /// XenStore socket answers, i.e. the guest's domain tree is there.
    init(cmdline: String, memoryMiB: Int = 32, name: String? = nil, runtimeDirectory: String? = nil,
         arguments extra: [String] = []) throws {
        let elf = try Env.testGuest.get()
        let unique = String(UUID().uuidString.prefix(8)).lowercased()
        self.name = name ?? "it-\(unique)"
        if let runtimeDirectory {
            self.runtimeDirectory = runtimeDirectory
        } else {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-it-\(unique)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            self.runtimeDirectory = dir
        }
        // The test guest's results travel on the hypervisor console
        // (console_io): --hypervisor-console stdout puts them on the stream
        // read here. Its log goes to the runtime directory, removed with it.
        child = try ChildProcess(Env.pvhBinary, ["run", "--name", self.name, "--kernel", elf, "--memory", String(memoryMiB),
                                                 "--cmdline", cmdline, "--hypervisor-console", "stdout"] + extra,
                                 environment: ["PVH_RUNTIME_DIR": self.runtimeDirectory, "PVH_LOG_DIR": self.runtimeDirectory])
        // The console's first line comes once the domain (and its store) exist.
        guard child.waitForLine(startingWith: "PVHTEST BOOT", timeout: .seconds(30)) != nil else {
            child.stop()
            throw GuestDidNotStart(output: child.output, errors: child.errors)
        }
    }

    var socket: String { "\(runtimeDirectory)/\(name)/xenstored.sock" }
    /// For the `pvh` control commands.
    var environment: [String: String] { ["PVH_RUNTIME_DIR": runtimeDirectory, "PVH_LOG_DIR": runtimeDirectory] }
    /// For Debian's xenstore-* tools.
    var xenstoreEnvironment: [String: String] { ["XENSTORED_PATH": socket] }

    /// `/local/domain/<id>` of this guest, found by its name as xl does.
    func domainPath() throws -> String {
        let client = try XenStoreClient(socketPath: socket)
        for id in try client.directory("/local/domain") where id != "0" {
            if (try? client.read("/local/domain/\(id)/name")) == name { return "/local/domain/\(id)" }
        }
        throw GuestDidNotStart(output: "no /local/domain/*/name = \(name)", errors: "")
    }

    /// Runs `.build/debug/pvh` with this guest's runtime directory.
    func pvh(_ arguments: [String], timeout: Duration = .seconds(30)) throws -> CommandResult {
        try runCommand(Env.pvhBinary, arguments, environment: environment, timeout: timeout)
    }

    /// Runs one of Debian's xenstore-* tools against this guest's socket.
    func xenstoreTool(_ tool: String, _ arguments: [String], timeout: Duration = .seconds(30)) throws -> CommandResult {
        try runCommand("/usr/bin/\(tool)", arguments, environment: xenstoreEnvironment, timeout: timeout)
    }

    /// Ends `pvh run` if it still runs and removes the runtime directory.
    func stop() {
        child.stop()
        try? FileManager.default.removeItem(atPath: runtimeDirectory)
    }

    deinit { stop() }
}

struct GuestDidNotStart: Error, CustomStringConvertible {
    let output: String
    let errors: String
    var description: String { "pvh run did not start the guest:\n\(output)\n\(errors)" }
}

/// A line of /proc/<pid>/status in KiB (VmRSS, RssAnon, ...), nil if absent.
func procStatusKiB(_ pid: Int32, _ field: String) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        return Int(line.dropFirst(field.count + 1).split(whereSeparator: { $0 == " " || $0 == "\t" }).first ?? "")
    }
    return nil
}
