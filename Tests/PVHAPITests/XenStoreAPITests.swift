import Foundation
import PVHAPI
import PVHAPIClient
import Locking
import Testing
import XenStore

/// The XenStore routes over a real server and a real store (APIHarness):
/// read, write, remove, watch; every answer checked against the document.
@Suite(.serialized) struct XenStoreAPITests {
    @Test func writeReadRemove() async throws {
        let h = try await APIHarness()
        let route = "/v1/xenstore/{path}"
        var (status, json) = try await h.call("PUT", "/v1/xenstore/tool/pvh/greeting", route: route, body: #"{"value": "hello"}"#)
        #expect(status == 200 && json["path"] == .string("/tool/pvh/greeting") && json["value"] == .string("hello"))
        // The store made the parents (XS_WRITE).
        (status, json) = try await h.call("GET", "/v1/xenstore/tool/pvh", route: route)
        #expect(status == 200 && json["children"] == .array([.string("greeting")]))
        #expect(try h.store.store.read("/tool/pvh/greeting") == "hello")
        // Overwritten, then an empty value.
        (status, json) = try await h.call("PUT", "/v1/xenstore/tool/pvh/greeting", route: route, body: #"{"value": ""}"#)
        #expect(status == 200 && json["value"] == .string(""))

        // A body that is not {"value": string}: 400 bad_request, nothing written.
        for body in ["hello", #"{"value": 3}"#, "{}", #"{"value": "x", "other": 1}"#, "[]"] {
            (status, json) = try await h.call("PUT", "/v1/xenstore/tool/pvh/other", route: route, body: body)
            #expect(status == 400 && json["code"] == .string("bad_request"), "\(body)")
        }
        #expect(throws: XenStoreError.enoent) { try h.store.store.read("/tool/pvh/other") }
        // What the store refuses as malformed: 400 xenstore_invalid, the errno named.
        (status, json) = try await h.call("PUT", "/v1/xenstore/tool/bad*char", route: route, body: #"{"value": "x"}"#)
        #expect(status == 400 && json["code"] == .string("xenstore_invalid"))
        if case .string(let message)? = json["message"] { #expect(message.hasSuffix("EINVAL")) }
        let large = String(repeating: "v", count: 5000)
        (status, json) = try await h.call("PUT", "/v1/xenstore/tool/large", route: route, body: #"{"value": "\#(large)"}"#)
        #expect(status == 400 && json["code"] == .string("xenstore_invalid"), "\(json)")
        (status, json) = try await h.call("GET", "/v1/xenstore/tool/bad*char", route: route)
        #expect(status == 400 && json["code"] == .string("xenstore_invalid"))

        // Removed with everything below it; then 404.
        (status, json) = try await h.call("DELETE", "/v1/xenstore/tool/pvh", route: route)
        #expect(status == 200 && json["path"] == .string("/tool/pvh") && json["removed"] == .bool(true))
        (status, json) = try await h.call("GET", "/v1/xenstore/tool/pvh/greeting", route: route)
        #expect(status == 404 && json["code"] == .string("not_found"))
        (status, json) = try await h.call("DELETE", "/v1/xenstore/tool/nothing/below", route: route)
        #expect(status == 404 && json["code"] == .string("not_found"))
        await h.stop()
    }

    @Test func watchStreamsEventsAndEndsWithItsClient() async throws {
        let h = try await APIHarness()
        let (reader, lines) = h.readStream("/v1/xenstore-watch/local/domain/1?token=t1", lines: 2)
        // The initial event says the watch is in place; then a change below the path.
        let deadline = ContinuousClock.now + .seconds(60)
        while lines.all.isEmpty && ContinuousClock.now < deadline { await Task.yield() }
        #expect(h.store.activeWatches == 1)
        _ = try await h.call("PUT", "/v1/xenstore/local/domain/1/memory/target", route: "/v1/xenstore/{path}", body: #"{"value": "65536"}"#)
        #expect(try await reader.value == 200)
        let events = try lines.all.map { try JSONDecoder().decode(JSON.self, from: Data($0.utf8)) }
        #expect(events == [.object(["path": .string("/local/domain/1"), "token": .string("t1")]),
                           .object(["path": .string("/local/domain/1/memory/target"), "token": .string("t1")])])
        let schema = try #require(h.checker.responseSchema("GET", "/v1/xenstore-watch/{path}", status: 200))
        for event in events { #expect(h.checker.check(event, against: schema).isEmpty) }
        // The client hung up: the next event finds it gone and the watch is removed.
        let removed = ContinuousClock.now + .seconds(60)
        var n = 0
        while h.store.activeWatches > 0 && ContinuousClock.now < removed {
            n += 1
            try h.store.store.write("/local/domain/1/poke", "\(n)")
            await Task.yield()
        }
        #expect(h.store.activeWatches == 0)
        // A path the store refuses: an error answer, no stream.
        let (status, json) = try await h.call("GET", "/v1/xenstore-watch/bad*path", route: "/v1/xenstore-watch/{path}")
        #expect(status == 400 && json["code"] == .string("xenstore_invalid"))
        await h.stop()
    }

    @Test func aClientGoneWhileThePathIsQuietIsFoundByTheKeepalive() async throws {
        let h = try await APIHarness(keepalive: .milliseconds(100))
        // The initial event, then the client hangs up; nothing changes below the path.
        let (reader, lines) = h.readStream("/v1/xenstore-watch/local/domain/1", lines: 1)
        #expect(try await reader.value == 200)
        #expect(lines.all == [#"{"path":"\/local\/domain\/1","token":"pvh-api"}"#])
        let deadline = ContinuousClock.now + .seconds(30)
        while h.store.activeWatches > 0 && ContinuousClock.now < deadline { await Task.yield() }
        #expect(h.store.activeWatches == 0)
        await h.stop()
    }

    @Test func aClientThatDoesNotReadIsDropped() async throws {
        let access = XenStoreAccess(XenStoreServer())
        let stream = try access.watch("/data", token: "slow")
        #expect(access.activeWatches == 1)
        // Nobody reads: the initial event and 255 changes fill the buffer;
        // the next change ends the stream and removes the watch.
        for i in 0..<(XenStoreAccess.watchBuffer + 50) { try access.store.write("/data/\(i)", "x") }
        #expect(access.activeWatches == 0)
        var received = 0
        for await _ in stream { received += 1 }
        #expect(received == XenStoreAccess.watchBuffer)
    }

    @Test func childrenPastOneReplyComeInParts() async throws {
        let h = try await APIHarness()
        // 300 names of 40 bytes: 12 KiB of names, three DIRECTORY_PART replies.
        let names = (0..<300).map { String(format: "child-%034d", $0) }
        for name in names { try h.store.store.write("/big/\(name)", "") }
        #expect(throws: XenStoreError.e2big) { try h.store.store.directory("/big") }
        let (status, json) = try await h.call("GET", "/v1/xenstore/big", route: "/v1/xenstore/{path}")
        #expect(status == 200)
        #expect(json["children"] == .array(names.map { .string($0) }))
        await h.stop()
    }

    @Test func watchStreamsAreBounded() async throws {
        let access = XenStoreAccess(XenStoreServer())
        var streams: [AsyncStream<XenStoreWatchEvent>] = []
        for i in 0..<XenStoreAccess.maximumWatches { streams.append(try access.watch("/w/\(i)", token: "t")) }
        #expect(throws: APIError.self) { try access.watch("/w/more", token: "t") }
        #expect(access.activeWatches == XenStoreAccess.maximumWatches)
        // Streams given up (their consumer gone) free their watches.
        streams.removeAll()
        #expect(access.activeWatches == 0)
        _ = try access.watch("/w/again", token: "t")
        // @releaseDomain is a path a watch may name.
        let special = try access.watch("@releaseDomain", token: "r")
        var iterator = special.makeAsyncIterator()
        #expect(await iterator.next() == XenStoreWatchEvent(path: "@releaseDomain", token: "r"))
    }
}

/// A documented path asked with a method it does not serve: 405, not 404.
@Suite struct MethodNotAllowedTests {
    @Test func undeclaredMethodsAre405WithAllow() async throws {
        let h = try await APIHarness()
        for (method, path, route) in [("TRACE", "/v1/host", "/v1/host"), ("PATCH", "/v1/xenstore/local", "/v1/xenstore/{path}"),
                                      ("POST", "/v1/domains/web", "/v1/domains/{name}"), ("QUERY", "/v1/domains", "/v1/domains")] {
            let client = h.client
            let response = try await withCheckedThrowingContinuation { (c: CheckedContinuation<APIResponse, any Error>) in
                Thread { c.resume(with: Result { try client.request(method, path, timeout: 60) }) }.start()
            }
            #expect(response.status == 405, "\(method) \(path)")
            let json = try JSONDecoder().decode(JSON.self, from: Data(response.body))
            #expect(json["code"] == .string("method_not_allowed"), "\(method) \(path)")
            let served = APIRoutes.all.filter { $0.path == route }.map(\.method).sorted().joined(separator: ", ")
            if case .string(let message)? = json["message"] { #expect(message.hasSuffix("\(served) are"), "\(message)") }
        }
        await h.stop()
    }
}

/// Lines an NDJSON stream delivered so far.
final class StreamLines: Sendable {
    private let lines = Lock<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func append(_ line: String) -> Int { lines.withLock { $0.append(line); return $0.count } }
}

extension APIHarness {
    /// Reads `path`'s NDJSON answer on a thread of its own until `count`
    /// non-empty lines came (bounded by 60 s), then hangs up; the task's value is the status.
    func readStream(_ path: String, lines count: Int) -> (Task<Int, any Error>, StreamLines) {
        let client = self.client
        let lines = StreamLines()
        let reader = Task.detached {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Int, any Error>) in
                Thread {
                    var pending: [UInt8] = []
                    c.resume(with: Result {
                        try client.stream(path, timeout: 60) { chunk in
                            pending += chunk
                            var seen = lines.all.count
                            while let newline = pending.firstIndex(of: 0x0a) {
                                // Empty lines are a watch's keepalives.
                                if newline > 0 { seen = lines.append(String(decoding: pending[..<newline], as: UTF8.self)) }
                                pending.removeSubrange(...newline)
                            }
                            return seen < count
                        }
                    })
                }.start()
            }
        }
        return (reader, lines)
    }
}
