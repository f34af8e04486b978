import Foundation
import Hummingbird
import PVHAPIModels
import Toolstack

/// Hot-plug (the daemon implements it in pvh/Hotplug.swift). The defaults
/// answer 501, for services that do not hot-plug (the tests' fakes).
public protocol DeviceService: Sendable {
    /// The domain's devices of `kind`, in index order.
    func devices(_ kind: DeviceKind, of name: String) async throws(APIError) -> [DeviceListingEntry]
    /// Hot-plugs the device `spec` describes and waits (at most `timeout`
    /// seconds) until its backend offers it (InitWait) or refuses it.
    /// 400 for a bad spec or a refused device, 404 unknown domain, 409 an
    /// index already in use.
    func attach(_ kind: DeviceKind, spec: String, to name: String, timeout: Double) async throws(APIError) -> DeviceListingEntry
    /// Detaches `device` (a vdev name or number, a devid or a MAC): the
    /// backend asked to close and, once it has (at most `timeout` seconds),
    /// both directories removed; `force` removes them without waiting.
    func detach(_ kind: DeviceKind, _ device: String, from name: String, force: Bool, timeout: Double) async throws(APIError) -> DeviceListingEntry
}

extension APIRouter {
    /// Longest hot-plug wait a request may ask for, and its default
    /// (a software-KVM guest closes a ring in seconds, not milliseconds).
    static let defaultDeviceWait = 60.0

    /// GET/POST `/v1/domains/{name}/{disks,nics}`, DELETE
    /// `/v1/domains/{name}/{disks,nics}/{device}`.
    static func registerDevices(on router: Router<BasicRequestContext>, service: any DomainService) {
        guard let devices = service as? any DeviceService else { return }
        for kind in DeviceKind.allCases {
            router.get("/v1/domains/{name}/\(kind.rawValue)") { _, context in
                try await answer { try await devices.devices(kind, of: try name(context)) }
            }
            router.post("/v1/domains/{name}/\(kind.rawValue)") { request, context in
                try await answer(status: .created) {
                    let decoded = try await decode(request, as: AttachDeviceRequest.self, what: "{\"spec\": SPEC}", keys: ["spec"])
                    let timeout = try deviceTimeout(request)
                    return try await devices.attach(kind, spec: decoded.spec, to: try name(context), timeout: timeout)
                }
            }
            router.delete("/v1/domains/{name}/\(kind.rawValue)/{device}") { request, context in
                try await answer {
                    // A MAC's colons come percent-encoded.
                    guard let raw = context.parameters.get("device"), let device = raw.removingPercentEncoding,
                          !device.isEmpty else {
                        throw APIError(.badRequest, "no device")
                    }
                    let force: Bool
                    switch request.uri.queryParameters.get("force").map({ String($0) }) {
                    case nil, "false", "0": force = false
                    case "true", "1": force = true
                    case let other?: throw APIError(.badRequest, "force=\(other): true or false")
                    }
                    return try await devices.detach(kind, device, from: try name(context), force: force,
                                                    timeout: try deviceTimeout(request))
                }
            }
        }
    }

    static func deviceTimeout(_ request: Request) throws(APIError) -> Double {
        try timeoutParameter(request, default: defaultDeviceWait)
    }

    /// `?timeout=SECONDS`, more than 0 and at most `APIRoutes.maximumWait`.
    static func timeoutParameter(_ request: Request, default value: Double) throws(APIError) -> Double {
        guard let text = request.uri.queryParameters.get("timeout") else { return value }
        guard let t = Double(String(text)), t > 0, t <= APIRoutes.maximumWait else {
            throw APIError(.badRequest, "timeout=\(text): seconds, more than 0 and at most \(Int(APIRoutes.maximumWait))")
        }
        return t
    }
}
