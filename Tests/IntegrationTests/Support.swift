import Foundation
import Synchronization
import Testing
import VMM

/// Paths and gates shared by the integration tests.
enum Env {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let hasKVM = FileManager.default.isReadableFile(atPath: "/dev/kvm") && FileManager.default.isWritableFile(atPath: "/dev/kvm")
    static let kit = ProcessInfo.processInfo.environment["PVH_GUEST_KIT"].map { URL(fileURLWithPath: $0) }
        ?? repo.appendingPathComponent("guest-kit/out")
    static func kernel(_ version: String) -> String { kit.appendingPathComponent("vmlinuz-\(version)").path }
    static func hasKernel(_ version: String) -> Bool { FileManager.default.fileExists(atPath: kernel(version)) }
    static let pvhBinary = repo.appendingPathComponent(".build/debug/pvh").path
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
    func results() -> [String: String] {
        var r: [String: String] = [:]
        for line in lines where line.hasPrefix("PVHTEST ") {
            let parts = line.split(separator: " ", maxSplits: 2).map(String.init)
            if parts.count >= 3 { r[parts[1]] = parts[2] }
        }
        return r
    }

    static func boot(_ config: GuestConfiguration, stopWhen: (@Sendable ([String]) -> Bool)? = nil,
                     limit: Duration, before: (Domain) -> Void = { _ in }) throws -> GuestRun {
        let seen = Mutex<[String]>([])
        let domainBox = Mutex<Domain?>(nil)
        let console = CapturingConsoleSink { line in
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
