import Foundation
import PVHAPI
import PVHAPIClient
import PVHMetrics
import Locking
import Testing
import Toolstack
import XLConfig
import XenABI
import XenStore

/// The API's service without a daemon: the real registry, no processes.
final class FakeService: DomainService {
    private struct State {
        var registry = DomainRegistry()
        var subscribers: [AsyncStream<DomainEvent>.Continuation] = []
    }
    private let state = Lock(State())

    func host() async -> HostInfo {
        HostInfo(backend: "software", backendReport: "KVM backend: test", version: "test", freeMemoryMiB: 1, totalMemoryMiB: 2,
                 cpus: 2, xenstoreSocket: "/tmp/x", apiSocket: "/tmp/a", domains: state.withLock { $0.registry.all.count })
    }

    func domains() async -> [DomainInfo] { state.withLock { $0.registry.all }.map { DomainInfo($0, cpuSeconds: 1.5) } }

    func domain(named name: String) async throws(APIError) -> DomainInfo {
        guard let r = state.withLock({ $0.registry.named(name) }) else { throw .notFound(name) }
        return DomainInfo(r, cpuSeconds: 0)
    }

    func create(_ request: ResolvedCreateRequest) async throws(APIError) -> CreatedDomain {
        let record: DomainRecord
        do {
            record = try state.withLock { s throws(RegistryError) in try s.registry.create(request.configuration, now: 100) }
        } catch {
            throw APIError(.nameInUse, error.description, key: "name")
        }
        publish(DomainEvent(type: .created, record: record, time: 100))
        return CreatedDomain(domain: DomainInfo(record, cpuSeconds: 0), warnings: request.warnings)
    }

    func destroy(named name: String) async throws(APIError) -> DomainInfo {
        guard let r = state.withLock({ s in s.registry.named(name).flatMap { s.registry.remove($0.id) } }) else { throw .notFound(name) }
        publish(DomainEvent(type: .destroyed, record: r, reason: "destroyed", time: 101))
        return DomainInfo(r, cpuSeconds: 0)
    }

    func perform(_ action: DomainAction, on name: String, wait: Bool, timeout: Double) async throws(APIError) -> DomainInfo? {
        guard let r = state.withLock({ $0.registry.named(name) }) else { throw .notFound(name) }
        switch action {
        case .pause:
            guard r.state == .running else { throw APIError(.conflict, "\(name) is \(r.state.name)") }
            return state.withLock { $0.registry.update(r.id) { $0.state = .paused } }.map { DomainInfo($0, cpuSeconds: 0) }
        case .unpause:
            guard r.state == .paused else { throw APIError(.conflict, "\(name) is \(r.state.name)") }
            return state.withLock { $0.registry.update(r.id) { $0.state = .running } }.map { DomainInfo($0, cpuSeconds: 0) }
        case .shutdown, .reboot:
            // The fake guest obeys at once: gone on shutdown.
            if action == .shutdown {
                state.withLock { _ = $0.registry.remove(r.id) }
                publish(DomainEvent(type: .shutdown, record: r, reason: "poweroff", action: "destroy", time: 102))
                return nil
            }
            return DomainInfo(r, cpuSeconds: 0)
        }
    }

    func events() -> AsyncStream<DomainEvent> {
        let (stream, continuation) = AsyncStream<DomainEvent>.makeStream()
        state.withLock { $0.subscribers.append(continuation) }
        return stream
    }

    var subscriberCount: Int { state.withLock { $0.subscribers.count } }

    private func publish(_ event: DomainEvent) {
        for c in state.withLock({ $0.subscribers }) { c.yield(event) }
    }
}

/// A real server (Hummingbird on a temp Unix socket, as the daemon serves)
/// and the real client; everything bounded.
struct APIHarness {
    let service = FakeService()
    /// A real store behind the XenStore routes, as the daemon's.
    let store = XenStoreAccess(XenStoreServer())
    let server: MetricsServer
    let client: APIClient
    let checker: SchemaChecker
    let directory: String

    /// `keepalive`: how often an idle XenStore watch stream writes an empty line.
    init(keepalive: Duration = XenStoreRoutes.keepalive) async throws {
        directory = NSTemporaryDirectory() + "pvh-api-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let socket = directory + "/api.sock"
        let service = self.service
        let store = self.store
        try store.store.write("/local/domain/1/name", "web")
        try store.store.mkdir("/vm")
        server = try await MetricsServer.startServing(.unix(path: socket), registry: PVHMetricsRegistry(), timeout: .seconds(600)) {
            APIRouter.register(on: $0, service: service)
            XenStoreRoutes.register(on: $0, store: store, keepalive: keepalive)
            APIRoutes.registerMethodNotAllowed(on: $0)
        }
        client = APIClient(socketPath: socket)
        let document = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/api/openapi.json").path
        checker = try SchemaChecker(documentAt: document)
    }

    func stop() async {
        await server.stopServing(timeout: .seconds(1))
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// `method path` off the concurrency pool (the client blocks), its
    /// answer checked against the document's schema for (route, status).
    func call(_ method: String, _ path: String, route: String? = nil, body: String? = nil) async throws -> (Int, JSON) {
        let client = self.client
        let response = try await withCheckedThrowingContinuation { (c: CheckedContinuation<APIResponse, any Error>) in
            Thread {
                c.resume(with: Result { try client.request(method, path, json: body.map { Array($0.utf8) }, timeout: 60) })
            }.start()
        }
        let json = try JSONDecoder().decode(JSON.self, from: Data(response.body))
        let route = route ?? path
        let schema = try #require(checker.responseSchema(method, route, status: response.status),
                                  "the document has no \(response.status) answer for \(method) \(route)")
        let problems = checker.check(json, against: schema)
        #expect(problems.isEmpty, "\(method) \(path) -> \(response.status): \(problems)")
        return (response.status, json)
    }
}

let webConfig = """
    {"xl_config": "type = \\"pvh\\"\\nname = \\"web\\"\\nkernel = \\"/k\\"\\nmemory = 64\\n", "source": "web.cfg", "overrides": ["vcpus=2"]}
    """

@Suite(.serialized) struct APIRouteTests {
    @Test func routesAndDocumentAgree() async throws {
        let h = try await APIHarness()
        let served = Set(APIRoutes.all.map { "\($0.method) \($0.path)" })
        #expect(served == h.checker.operations, "served but undocumented: \(served.subtracting(h.checker.operations)); documented but not served: \(h.checker.operations.subtracting(served))")
        // Every documented, unbuilt route answers 501 with the error JSON.
        for route in APIRoutes.all where !route.implemented {
            let path = route.path.replacingOccurrences(of: "{name}", with: "web").replacingOccurrences(of: "{path}", with: "local/domain")
            let (status, json) = try await h.call(route.method, path, route: route.path, body: route.method == "GET" ? nil : "{}")
            #expect(status == 501)
            #expect(json["code"] == .string("not_implemented"))
        }
        await h.stop()
    }

    @Test func domainsLifecycle() async throws {
        let h = try await APIHarness()
        var (status, json) = try await h.call("GET", "/v1/host")
        #expect(status == 200 && json["backend"] == .string("software"))
        (status, json) = try await h.call("POST", "/v1/domains", body: webConfig)
        #expect(status == 201)
        #expect(json["domain"]?["name"] == .string("web") && json["domain"]?["vcpus"] == .number(2))
        #expect(json["domain"]?["flags"] == .string("r-----"))
        // A JSON config of xl keys goes through the same resolver.
        (status, json) = try await h.call("POST", "/v1/domains", body: #"{"config": {"name": "db", "kernel": "/k", "memory": 128, "on_crash": "preserve", "vif": [""]}}"#)
        #expect(status == 201)
        #expect(json["domain"]?["config"]?["on_crash"] == .string("preserve"))
        #expect(json["domain"]?["memory_mib"] == .number(128))
        (status, json) = try await h.call("GET", "/v1/domains")
        guard case .array(let all) = json else { Issue.record("not an array"); return }
        #expect(all.compactMap { $0["name"] } == [.string("web"), .string("db")])
        (status, json) = try await h.call("GET", "/v1/domains/web", route: "/v1/domains/{name}")
        #expect(status == 200 && json["domid"] == .number(1))
        (status, json) = try await h.call("POST", "/v1/domains/web/pause", route: "/v1/domains/{name}/pause")
        #expect(status == 200 && json["domain"]?["flags"] == .string("--p---"))
        (status, json) = try await h.call("POST", "/v1/domains/web/pause", route: "/v1/domains/{name}/pause")
        #expect(status == 409 && json["code"] == .string("conflict"))
        (status, _) = try await h.call("POST", "/v1/domains/web/unpause", route: "/v1/domains/{name}/unpause")
        #expect(status == 200)
        (status, json) = try await h.call("POST", "/v1/domains/db/shutdown?wait=true&timeout=5", route: "/v1/domains/{name}/shutdown")
        #expect(status == 200 && json["action"] == .string("shutdown") && json["domain"] == nil)
        (status, json) = try await h.call("POST", "/v1/domains/web/shutdown?wait=maybe", route: "/v1/domains/{name}/shutdown")
        #expect(status == 400 && json["code"] == .string("bad_request"))
        (status, json) = try await h.call("DELETE", "/v1/domains/web", route: "/v1/domains/{name}")
        #expect(status == 200 && json["name"] == .string("web"))
        (status, json) = try await h.call("GET", "/v1/domains/web", route: "/v1/domains/{name}")
        #expect(status == 404 && json["code"] == .string("not_found") && json["message"] == .string("web is an invalid domain identifier"))
        (status, json) = try await h.call("DELETE", "/v1/domains/nobody", route: "/v1/domains/{name}")
        #expect(status == 404)
        await h.stop()
    }

    @Test func configErrorsNameFileLineAndKey() async throws {
        let h = try await APIHarness()
        // A syntax error: xl's message, the file and line.
        var (status, json) = try await h.call("POST", "/v1/domains",
                                              body: #"{"xl_config": "name = \"a\"\nkernel = = 3\n", "source": "bad.cfg"}"#)
        #expect(status == 400 && json["code"] == .string("config_syntax"))
        #expect(json["file"] == .string("bad.cfg") && json["line"] == .number(2))
        // A value of the wrong type: its key and line.
        (status, json) = try await h.call("POST", "/v1/domains",
                                          body: #"{"xl_config": "name = \"a\"\nkernel = \"/k\"\nmemory = \"lots\"\n", "source": "t.cfg"}"#)
        #expect(status == 400 && json["code"] == .string("config_invalid"))
        #expect(json["key"] == .string("memory") && json["line"] == .number(3))
        // An override's error is at its line past the file's end (xl adds a
        // line end after the file's own: the two-line file's override is line 4).
        (status, json) = try await h.call("POST", "/v1/domains",
                                          body: #"{"xl_config": "name = \"a\"\nkernel = \"/k\"\n", "source": "t.cfg", "overrides": ["vcpus=\"x\""]}"#)
        #expect(status == 400 && json["key"] == .string("vcpus") && json["line"] == .number(4))
        (status, json) = try await h.call("POST", "/v1/domains", body: #"{"config": {"Name": "x"}}"#)
        #expect(status == 400 && json["code"] == .string("bad_request"))
        (status, json) = try await h.call("POST", "/v1/domains", body: "not json")
        #expect(status == 400 && json["code"] == .string("bad_request"))
        (status, json) = try await h.call("POST", "/v1/domains", body: #"{"xl_config": "name=\"a\"\n", "config": {}}"#)
        #expect(status == 400)
        // The name twice: 409.
        (status, _) = try await h.call("POST", "/v1/domains", body: webConfig)
        #expect(status == 201)
        (status, json) = try await h.call("POST", "/v1/domains", body: webConfig)
        #expect(status == 409 && json["code"] == .string("name_in_use") && json["key"] == .string("name"))
        await h.stop()
    }

    @Test func xenStoreAndMetrics() async throws {
        let h = try await APIHarness()
        var (status, json) = try await h.call("GET", "/v1/xenstore")
        #expect(status == 200 && json["children"] == .array([.string("local"), .string("vm")]))
        (status, json) = try await h.call("GET", "/v1/xenstore/local/domain/1/name", route: "/v1/xenstore/{path}")
        #expect(status == 200 && json["value"] == .string("web") && json["path"] == .string("/local/domain/1/name"))
        (status, json) = try await h.call("GET", "/v1/xenstore/nothing/here", route: "/v1/xenstore/{path}")
        #expect(status == 404)
        let client = h.client
        let metrics = try await withCheckedThrowingContinuation { (c: CheckedContinuation<APIResponse, any Error>) in
            Thread { c.resume(with: Result { try client.request("GET", "/metrics", timeout: 60) }) }.start()
        }
        #expect(metrics.status == 200 && metrics.text.contains("pvh_metrics_scrapes_total"))
        await h.stop()
    }

    @Test func eventStreamIsNDJSON() async throws {
        let h = try await APIHarness()
        let (reader, lines) = h.readStream("/v1/events", lines: 2)
        // Events come only once the stream is subscribed: wait for it, bounded.
        let subscribed = ContinuousClock.now + .seconds(60)
        while h.service.subscriberCount == 0 && ContinuousClock.now < subscribed { await Task.yield() }
        #expect(h.service.subscriberCount == 1)
        _ = try await h.call("POST", "/v1/domains", body: webConfig)
        _ = try await h.call("DELETE", "/v1/domains/web", route: "/v1/domains/{name}")
        let status = try await reader.value
        #expect(status == 200)
        let events = try lines.all.map { try JSONDecoder().decode(JSON.self, from: Data($0.utf8)) }
        #expect(events.map { $0["type"] } == [.string("created"), .string("destroyed")])
        let schema = try #require(h.checker.schema(named: "DomainEvent"))
        for event in events { #expect(h.checker.check(event, against: schema).isEmpty) }
        await h.stop()
    }
}
