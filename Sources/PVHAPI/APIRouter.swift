import Foundation
import Hummingbird
import PVHAPIModels
import Toolstack

/// The API's routes (docs/api/openapi.json describes each): one table, so
/// the router and the document's test read the same list.
public enum APIRoutes {
    /// A route as the OpenAPI document names it (`{name}` parameters).
    public struct Route: Hashable, Sendable {
        public let method: String
        public let path: String
        /// Answers 501 with the error JSON: documented, not built yet.
        public let implemented: Bool
    }

    public static let all: [Route] = [
        Route(method: "GET", path: "/v1/host", implemented: true),
        Route(method: "GET", path: "/v1/domains", implemented: true),
        Route(method: "POST", path: "/v1/domains", implemented: true),
        Route(method: "GET", path: "/v1/domains/{name}", implemented: true),
        Route(method: "DELETE", path: "/v1/domains/{name}", implemented: true),
        Route(method: "POST", path: "/v1/domains/{name}/shutdown", implemented: true),
        Route(method: "POST", path: "/v1/domains/{name}/reboot", implemented: true),
        Route(method: "POST", path: "/v1/domains/{name}/pause", implemented: true),
        Route(method: "POST", path: "/v1/domains/{name}/unpause", implemented: true),
        Route(method: "PUT", path: "/v1/domains/{name}/memory", implemented: true),
        Route(method: "PUT", path: "/v1/domains/{name}/vcpus", implemented: true),
        Route(method: "GET", path: "/v1/domains/{name}/stats", implemented: true),
        Route(method: "GET", path: "/v1/stats", implemented: true),
        // Hot-plug (Devices.swift).
        Route(method: "GET", path: "/v1/domains/{name}/disks", implemented: true),
        Route(method: "POST", path: "/v1/domains/{name}/disks", implemented: true),
        Route(method: "DELETE", path: "/v1/domains/{name}/disks/{device}", implemented: true),
        Route(method: "GET", path: "/v1/domains/{name}/nics", implemented: true),
        Route(method: "POST", path: "/v1/domains/{name}/nics", implemented: true),
        Route(method: "DELETE", path: "/v1/domains/{name}/nics/{device}", implemented: true),
        // The console (Console.swift), from the daemon's relay.
        Route(method: "GET", path: "/v1/domains/{name}/console", implemented: true),
        Route(method: "POST", path: "/v1/domains/{name}/console", implemented: true),
        // Logs (Logs.swift).
        Route(method: "GET", path: "/v1/dmesg", implemented: true),
        Route(method: "GET", path: "/v1/domains/{name}/log", implemented: true),
        Route(method: "GET", path: "/v1/events", implemented: true),
        Route(method: "GET", path: "/v1/xenstore", implemented: true),
        Route(method: "GET", path: "/v1/xenstore/{path}", implemented: true),
        // XenStoreRoutes serves these (as dom0).
        Route(method: "PUT", path: "/v1/xenstore/{path}", implemented: true),
        Route(method: "DELETE", path: "/v1/xenstore/{path}", implemented: true),
        Route(method: "GET", path: "/v1/xenstore-watch/{path}", implemented: true),
        Route(method: "GET", path: "/metrics", implemented: true),
    ]

    /// Longest wait a `?wait=true` may ask for, seconds.
    public static let maximumWait = 600.0
    /// Its default.
    public static let defaultWait = 60.0
    /// The largest request body read.
    public static let maximumBody = ResolvedCreateRequest.maximumConfigSize + 64 << 10
}

/// Adds the API's routes to a Hummingbird router (the daemon's server
/// also serves /metrics itself, from PVHMetrics).
public enum APIRouter {
    public static func register(on router: Router<BasicRequestContext>, service: any DomainService) {
        router.get("/v1/host") { _, _ in try json(await service.host()) }
        router.get("/v1/domains") { _, _ in try json(await service.domains()) }
        router.post("/v1/domains") { request, _ in
            try await answer(status: .created) {
                let body = try await request.body.collect(upTo: APIRoutes.maximumBody)
                let decoded: CreateDomainRequest
                do {
                    decoded = try JSONDecoder().decode(CreateDomainRequest.self, from: Data(buffer: body))
                } catch {
                    throw APIError(.badRequest, "the body is not a create request: \(error)")
                }
                return try await service.create(try ResolvedCreateRequest(decoded))
            }
        }
        router.get("/v1/domains/{name}") { _, context in
            try await answer { try await service.domain(named: try name(context)) }
        }
        router.delete("/v1/domains/{name}") { _, context in
            try await answer { try await service.destroy(named: try name(context)) }
        }
        for action in DomainAction.allCases {
            router.post("/v1/domains/{name}/\(action.rawValue)") { request, context in
                try await answer {
                    let (wait, timeout) = try waitParameters(request)
                    let info = try await service.perform(action, on: try name(context), wait: wait, timeout: timeout)
                    return ActionAnswer(action: action.rawValue, domain: info)
                }
            }
        }
        router.get("/v1/events") { _, _ in ndjson(service.events()) }
        registerDevices(on: router, service: service)
        // Memory, vCPUs and stats (GuestControl.swift).
        registerGuestControl(on: router, service: service)
        registerConsole(on: router, service: service)
        registerLogs(on: router, service: service)
        for route in APIRoutes.all where !route.implemented {
            let path = route.path.replacingOccurrences(of: "{path}", with: "**")
            let method: HTTPRequest.Method = switch route.method {
            case "PUT": .put
            case "POST": .post
            case "DELETE": .delete
            default: .get
            }
            router.on(RouterPath(path), method: method) { _, _ in
                try errorResponse(APIError(.notImplemented, "\(route.method) \(route.path) is not implemented yet"))
            }
        }
    }

    /// `{"action": ..., "domain": ...}`: the domain after the action (null once it is gone).
    struct ActionAnswer: Codable {
        let action: String
        let domain: DomainInfo?
    }

    static func name(_ context: BasicRequestContext) throws(APIError) -> String {
        guard let name = context.parameters.get("name"), !name.isEmpty else { throw APIError(.badRequest, "no domain name") }
        return name
    }

    static func waitParameters(_ request: Request) throws(APIError) -> (Bool, Double) {
        let query = request.uri.queryParameters
        let wait: Bool
        let text: String? = query.get("wait").map { String($0) }
        switch text {
        case nil, "false", "0": wait = false
        case "true", "1": wait = true
        case let other?: throw APIError(.badRequest, "wait=\(other): true or false")
        }
        var timeout = APIRoutes.defaultWait
        if let text = query.get("timeout") {
            guard let t = Double(String(text)), t > 0, t <= APIRoutes.maximumWait else {
                throw APIError(.badRequest, "timeout=\(text): seconds, more than 0 and at most \(Int(APIRoutes.maximumWait))")
            }
            timeout = t
        }
        return (wait, timeout)
    }

    /// Runs `body`; an APIError becomes its JSON answer with its status.
    static func answer<T: Encodable>(status: HTTPResponse.Status = .ok, _ body: () async throws -> T) async throws -> Response {
        do {
            return try json(try await body(), status: status)
        } catch let error as APIError {
            return try errorResponse(error)
        }
    }

    static func json<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        var data = try JSONEncoder.api.encode(value)
        data.append(0x0a)
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(data: data)))
    }

    public static func errorResponse(_ error: APIError) throws -> Response {
        try json(error, status: HTTPResponse.Status(code: error.code.httpStatus))
    }
}

extension JSONEncoder {
    /// Sorted keys: stable output for clients and tests.
    static var api: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }
}
