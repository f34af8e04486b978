import Foundation
import Logging
import Testing
import XenABI
@testable import PVHLogging

@Suite("pvh's log handler and log files")
struct PVHLoggingTests {
    /// 2026-12-03T10:04:05.125Z
    static let instant = Date(timeIntervalSince1970: 1_796_292_245.125)

    @Test("one line per record: UTC timestamp with milliseconds, level, the guest's label, the message, sorted metadata")
    func format() {
        let line = PVHLogHandler.format(time: Self.instant, level: .warning, label: PVHLogHandler.label(domain: DomainID(rawValue: 1), name: "web"),
                                        message: "vbd-51712: disabled", metadata: ["z": "last", "device": "vbd-51712"])
        #expect(line == "2026-12-03T10:04:05.125Z warning pvh[1/web]: vbd-51712: disabled device=vbd-51712 z=last\n")
    }

    @Test("newlines and control characters in a message are escaped: a record is never two lines")
    func escaping() {
        let line = PVHLogHandler.format(time: Self.instant, level: .info, label: "pvh[2/x]", message: "a\nb\rc\td\u{1}e\u{7f}")
        #expect(line == "2026-12-03T10:04:05.125Z info pvh[2/x]: a\\nb\\rc\\td\\x01e\\x7f\n")
        #expect(line.filter { $0 == "\n" }.count == 1)
    }

    @Test("the handler writes records at its level or worse, with the logger's metadata")
    func handlerLevels() {
        let memory = MemoryLogDestination()
        var logger = Logger(label: "pvh[1/a]") { label in
            PVHLogHandler(label: label, level: .notice, destination: memory, clock: { Self.instant })
        }
        logger[metadataKey: "domid"] = "1"
        logger.info("not written")
        logger.notice("written")
        logger.error("also", metadata: ["why": "test"])
        #expect(memory.lines == [
            "2026-12-03T10:04:05.125Z notice pvh[1/a]: written domid=1\n",
            "2026-12-03T10:04:05.125Z error pvh[1/a]: also domid=1 why=test\n",
        ])
    }

    @Test("a guest's logger: everything from info to the file, warnings and worse also on stderr as `pvh: message`")
    func guestLogger() {
        let file = MemoryLogDestination(), stderr = MemoryLogDestination()
        let logger = GuestLog.logger(label: "pvh[1/web]", file: file, level: .info, standardError: stderr)
        logger.debug("hidden")
        logger.info("vbd-51712: connected")
        logger.warning("xenstore: ring fault")
        #expect(stderr.lines == ["pvh: xenstore: ring fault\n"])
        #expect(file.lines.count == 2)
        #expect(file.lines[0].hasSuffix(" info pvh[1/web]: vbd-51712: connected\n"))
        #expect(file.lines[1].hasSuffix(" warning pvh[1/web]: xenstore: ring fault\n"))
    }

    @Test("a component's logger names it on stderr (`pvh: metrics: ...`) and in the file (component=metrics)")
    func component() {
        let file = MemoryLogDestination(), stderr = MemoryLogDestination()
        let logger = GuestLog.logger(label: "pvh[1/web]", file: file, standardError: stderr, component: "metrics")
        logger.info("server started")
        logger.error("bind failed")
        #expect(stderr.lines == ["pvh: metrics: bind failed\n"])
        #expect(file.lines.map { $0.split(separator: " ", maxSplits: 1).last.map(String.init) } == [
            "info pvh[1/web]: server started component=metrics\n", "error pvh[1/web]: bind failed component=metrics\n",
        ])
    }

    @Test("without a file, only warnings and worse appear, on stderr")
    func noFile() {
        let stderr = MemoryLogDestination()
        let logger = GuestLog.logger(label: "pvh[1/x]", file: nil, standardError: stderr)
        logger.info("quiet")
        logger.error("loud")
        #expect(stderr.lines == ["pvh: loud\n"])
    }

    func temporaryDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-log-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test("a log file past its cap is rotated once to PATH.1: never more than the cap in either, the newest lines kept")
    func rotation() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/sub/web.log"
        let file = try LogFile(path: path, maximumBytes: 100)
        for i in 0..<25 { file.write("line \(String(i).leftPadded(to: 2)) of the log\n") }  // 20 bytes each
        let current = try String(contentsOfFile: path, encoding: .utf8)
        let rotated = try String(contentsOfFile: file.rotatedPath, encoding: .utf8)
        #expect(current.utf8.count <= 100 && rotated.utf8.count <= 100)
        #expect(current.hasSuffix("line 24 of the log\n"))
        #expect(current.hasPrefix("line 20 of the log\n"))
        #expect(rotated.hasPrefix("line 15 of the log\n") && rotated.hasSuffix("line 19 of the log\n"))
        #expect(file.rotations == 4)
        #expect(file.failures == 0)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o640)
        // Reopened, it appends (a restarted guest keeps its log).
        let again = try LogFile(path: path, maximumBytes: 100)
        again.write("x\n")
        #expect(try String(contentsOfFile: path, encoding: .utf8) == current + "x\n")
    }

    @Test("a line longer than the cap is cut to it")
    func hugeLine() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = try LogFile(path: dir + "/a.log", maximumBytes: 64)
        file.write(String(repeating: "x", count: 500) + "\n")
        let text = try String(contentsOfFile: dir + "/a.log", encoding: .utf8)
        #expect(text.utf8.count == 64 && text.hasSuffix("x\n"))
    }

    @Test("a log file where none can be made is one error naming it")
    func unwritable() {
        #expect(throws: LogFileError.self) { try LogFile(path: "/proc/pvh-no/such.log") }
    }

    @Test("default places: PVH_LOG_DIR, /var/log/pvh for root, the XDG state directory otherwise")
    func locations() {
        #expect(LogLocation.defaultPath(name: "web", uid: 0, environment: [:]) == "/var/log/pvh/web.log")
        #expect(LogLocation.defaultPath(name: "web", uid: 0, environment: ["PVH_LOG_DIR": "/srv/logs"]) == "/srv/logs/web.log")
        #expect(LogLocation.defaultPath(name: "web", uid: 1000, environment: ["XDG_STATE_HOME": "/home/u/.st", "HOME": "/home/u"])
                == "/home/u/.st/pvh/web.log")
        #expect(LogLocation.defaultPath(name: "web", uid: 1000, environment: ["HOME": "/home/u"]) == "/home/u/.local/state/pvh/web.log")
        #expect(LogLocation.defaultPath(name: "web", uid: 1000, environment: [:]) == "/tmp/pvh-1000/log/web.log")
    }
}

/// A log whose path the process can no longer reach (a jailed guest
/// process: docs/ARCHITECTURE.md, Sandbox) keeps its bound by starting the
/// file over in place, and loses no later line.
@Suite("Log file without its path")
struct LogFileWithoutPathTests {
    @Test("the rename fails: the open file is truncated, lines after it are written, none counted failed")
    func rotationInPlace() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-log-\(UUID().uuidString.prefix(8))").path
        let log = try LogFile(path: directory + "/g.log", maximumBytes: 100)
        // The path goes; the descriptor stays, as the jail leaves it.
        try FileManager.default.removeItem(atPath: directory)
        let line = String(repeating: "x", count: 59) + "\n"
        for _ in 0..<5 { log.write(line) }
        #expect(log.rotations == 4)
        #expect(log.failures == 0)
        #expect(!FileManager.default.fileExists(atPath: directory))
    }
}
