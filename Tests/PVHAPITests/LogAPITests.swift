import Foundation
import PVHAPI
import PVHAPIClient
import Testing

/// The fake's logs: the real `LogLines`, and one guest log file per test.
private let fakeDaemonLog = LogLines()
private let fakeGuestLog = NSTemporaryDirectory() + "pvh-api-guest-\(UUID().uuidString.prefix(8)).log"

extension FakeService: LogService {
    func daemonLog(lines: Int) async -> [String] { fakeDaemonLog.last(lines) }

    func domainLog(named name: String, lines: Int) async throws(APIError) -> [String] {
        _ = try await domain(named: name)
        guard let tail = LogTail.lines(ofFile: fakeGuestLog, count: lines) else { throw APIError(.conflict, "\(name) has no log file yet") }
        return tail
    }
}

/// `GET /v1/dmesg` and `GET /v1/domains/{name}/log`: the newest lines, `?lines=N` bounded.
@Suite(.serialized) struct LogAPITests {
    func get(_ h: APIHarness, _ path: String) async throws -> APIResponse {
        let client = h.client
        return try await withCheckedThrowingContinuation { (c: CheckedContinuation<APIResponse, any Error>) in
            Thread { c.resume(with: Result { try client.request("GET", path, timeout: 60) }) }.start()
        }
    }

    @Test func daemonAndDomainLogs() async throws {
        let h = try await APIHarness()
        for n in 1...5 { fakeDaemonLog.append("line \(n)") }
        var r = try await get(h, "/v1/dmesg?lines=2")
        #expect(r.status == 200 && r.text == "line 4\nline 5\n")
        r = try await get(h, "/v1/dmesg")
        #expect(r.status == 200 && r.text.hasPrefix("line 1\n"))
        // lines is bounded: 0 and past the maximum are 400.
        var (status, json) = try await h.call("GET", "/v1/dmesg?lines=0", route: "/v1/dmesg")
        #expect(status == 400 && json["code"] == .string("bad_request"))
        (status, _) = try await h.call("GET", "/v1/dmesg?lines=\(APIRoutes.maximumLogLines + 1)", route: "/v1/dmesg")
        #expect(status == 400)

        _ = try await h.call("POST", "/v1/domains", body: webConfig)
        (status, json) = try await h.call("GET", "/v1/domains/web/log", route: "/v1/domains/{name}/log")
        #expect(status == 409 && json["code"] == .string("conflict"))
        try Data("a\nb\nc\n".utf8).write(to: URL(fileURLWithPath: fakeGuestLog))
        defer { try? FileManager.default.removeItem(atPath: fakeGuestLog) }
        r = try await get(h, "/v1/domains/web/log?lines=2")
        #expect(r.status == 200 && r.text == "b\nc\n")
        (status, _) = try await h.call("GET", "/v1/domains/nobody/log", route: "/v1/domains/{name}/log")
        #expect(status == 404)
        await h.stop()
    }

    @Test func theRingKeepsTheNewestLines() {
        let lines = LogLines()
        for n in 0..<(LogLines.capacity + 10) { lines.append("\(n)") }
        #expect(lines.last(2) == ["\(LogLines.capacity + 8)", "\(LogLines.capacity + 9)"])
        #expect(lines.last(LogLines.capacity + 100).count == LogLines.capacity)
        #expect(lines.last(LogLines.capacity + 100).first == "10")
        lines.append(String(repeating: "x", count: LogLines.maximumLineLength + 5))
        #expect(lines.last(1).first?.utf8.count == LogLines.maximumLineLength)
    }
}
