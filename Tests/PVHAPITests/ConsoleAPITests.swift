import Foundation
import PVHAPI
import PVHAPIClient
import Locking
import Testing

/// The fake's consoles: a backlog, the real `ConsoleStreams`, and a guest
/// input that takes at most `inputRoom` bytes in all (a ring that never
/// drains), so the 503 path is reachable.
private let fakeConsoles = Lock<[String: (backlog: [UInt8], streams: ConsoleStreams, taken: Int)]>([:])
private let inputRoom = 16

extension FakeService: ConsoleService {
    /// The fake domain `name`'s console, made on first use.
    func fakeConsole(_ name: String) -> ConsoleStreams {
        fakeConsoles.withLock { all in
            if let console = all[name] { return console.streams }
            let streams = ConsoleStreams()
            all[name] = (Array("PVHTEST hello\n".utf8), streams, 0)
            return streams
        }
    }

    /// Output from the fake guest: buffered and published, under one lock as the daemon does.
    func fakeOutput(_ name: String, _ bytes: [UInt8]) {
        fakeConsoles.withLock { all in
            all[name]?.backlog += bytes
            all[name]?.streams.publish(bytes)
        }
    }

    func consoleOutput(of name: String, follow: Bool) async throws(APIError) -> ConsoleOutput {
        _ = try await domain(named: name)
        _ = fakeConsole(name)
        return try fakeConsoles.withLock { all throws(APIError) -> ConsoleOutput in
            guard let console = all[name] else { throw APIError(.conflict, "\(name) has no console") }
            return ConsoleOutput(dropped: 3, chunks: try console.streams.open(backlog: console.backlog, follow: follow))
        }
    }

    func consoleInput(_ bytes: [UInt8], to name: String, timeout: Double) async throws(APIError) -> ConsoleInputAnswer {
        _ = try await domain(named: name)
        _ = fakeConsole(name)
        let accepted = fakeConsoles.withLock { all -> Int in
            let n = min(bytes.count, inputRoom - (all[name]?.taken ?? 0))
            all[name]?.taken += n
            return n
        }
        guard accepted == bytes.count else {
            throw APIError(.unavailable, "\(name): took \(accepted) of \(bytes.count) bytes", accepted: accepted)
        }
        return ConsoleInputAnswer(accepted: accepted)
    }
}

/// `GET`/`POST /v1/domains/{name}/console` against the document: the
/// backlog, the live stream and its end, the stream bound (429), input
/// taken (200), too large (413), not all taken (503 with accepted).
@Suite(.serialized) struct ConsoleAPITests {
    /// `GET path` read whole (it must end: follow=false, or the domain goes) off the pool.
    func readAll(_ h: APIHarness, _ path: String, head: (@Sendable (Int) -> Void)? = nil) -> Task<(Int, [UInt8]), any Error> {
        let client = h.client
        return Task.detached {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<(Int, [UInt8]), any Error>) in
                Thread {
                    let bytes = Lock<[UInt8]>([])
                    c.resume(with: Result {
                        let status = try client.stream(path, timeout: 60, head: head) { chunk in
                            bytes.withLock { $0 += chunk }
                            return true
                        }
                        return (status, bytes.withLock { $0 })
                    })
                }.start()
            }
        }
    }

    @Test func outputBacklogThenLiveUntilTheDomainGoes() async throws {
        let h = try await APIHarness()
        _ = try await h.call("POST", "/v1/domains", body: webConfig)
        let streams = h.service.fakeConsole("web")
        // follow=false: the backlog, then the end, no slot taken.
        let (status, backlog) = try await readAll(h, "/v1/domains/web/console?follow=false").value
        #expect(status == 200 && backlog == Array("PVHTEST hello\n".utf8))
        #expect(streams.count == 0)
        // Four follow streams; their heads arrive once they are registered.
        let readers = (0..<ConsoleStreams.maximum).map { _ in readAll(h, "/v1/domains/web/console") }
        let opened = ContinuousClock.now + .seconds(60)
        while streams.count < ConsoleStreams.maximum && ContinuousClock.now < opened { await Task.yield() }
        #expect(streams.count == ConsoleStreams.maximum)
        // A fifth: 429, the error JSON.
        var (code, json) = try await h.call("GET", "/v1/domains/web/console", route: "/v1/domains/{name}/console")
        #expect(code == 429 && json["code"] == .string("too_many_streams"))
        h.service.fakeOutput("web", Array("live line\n".utf8))
        // The domain goes away: every stream ends, each with the backlog then the live bytes.
        streams.finish()
        for reader in readers {
            let (status, bytes) = try await reader.value
            #expect(status == 200)
            #expect(String(decoding: bytes, as: UTF8.self) == "PVHTEST hello\nlive line\n")
        }
        #expect(streams.count == 0)
        (code, json) = try await h.call("GET", "/v1/domains/nobody/console", route: "/v1/domains/{name}/console")
        #expect(code == 404 && json["code"] == .string("not_found"))
        (code, json) = try await h.call("GET", "/v1/domains/web/console?follow=perhaps", route: "/v1/domains/{name}/console")
        #expect(code == 400 && json["code"] == .string("bad_request"))
        await h.stop()
    }

    @Test func aReaderThatFallsBehindIsEndedNotHeldFor() throws {
        let streams = ConsoleStreams()
        let stream = try streams.open(backlog: [1], follow: true)
        // Nobody reads: the backlog and `backlogChunks` chunks fit; one more ends it.
        for _ in 0..<ConsoleStreams.backlogChunks { streams.publish([2]) }
        #expect(streams.count == 1)
        streams.publish([3])
        #expect(streams.count == 0)
        _ = stream
    }

    @Test func inputTakenTooLargeAndPartlyTaken() async throws {
        let h = try await APIHarness()
        _ = try await h.call("POST", "/v1/domains", body: webConfig)
        let client = h.client
        func post(_ path: String, _ bytes: [UInt8]) async throws -> (Int, JSON) {
            let response = try await withCheckedThrowingContinuation { (c: CheckedContinuation<APIResponse, any Error>) in
                Thread {
                    c.resume(with: Result {
                        try client.request("POST", path, json: bytes, contentType: "application/octet-stream", timeout: 60)
                    })
                }.start()
            }
            let json = try JSONDecoder().decode(JSON.self, from: Data(response.body))
            let schema = try #require(h.checker.responseSchema("POST", "/v1/domains/{name}/console", status: response.status))
            #expect(h.checker.check(json, against: schema).isEmpty, "\(response.status): \(json)")
            return (response.status, json)
        }
        var (status, json) = try await post("/v1/domains/web/console", Array("ls\r".utf8))
        #expect(status == 200 && json == .object(["accepted": .number(3)]))
        // Over the bound: 413, nothing taken.
        (status, json) = try await post("/v1/domains/web/console", [UInt8](repeating: 0x61, count: APIRoutes.maximumConsoleInput + 1))
        #expect(status == 413 && json["code"] == .string("too_large"))
        // A bad query with a body over the bound: the query's 400 (api-check found a 413 here).
        (status, json) = try await post("/v1/domains/web/console?timeout=1e16", [UInt8](repeating: 0x61, count: APIRoutes.maximumConsoleInput + 1))
        #expect(status == 400 && json["code"] == .string("bad_request"))
        // 13 bytes of room left: 503 with what was taken.
        (status, json) = try await post("/v1/domains/web/console", [UInt8](repeating: 0x62, count: 20))
        #expect(status == 503 && json["code"] == .string("unavailable") && json["accepted"] == .number(13))
        (status, json) = try await post("/v1/domains/nobody/console", [0x0d])
        #expect(status == 404)
        (status, json) = try await post("/v1/domains/web/console?timeout=0", [0x0d])
        #expect(status == 400 && json["code"] == .string("bad_request"))
        await h.stop()
    }
}
