import Foundation
import Hummingbird
import PVHAPIModels
import Toolstack

extension DomainStats {
    /// The row `pvh top` formats.
    public var sample: DomainSample {
        DomainSample(name: name, state: state, cpuSeconds: cpuSeconds, memoryKiB: memoryKiB, maximumMemoryKiB: maxMemoryKiB,
                     vcpus: vcpus, networks: nets, networkTXBytes: netTXBytes, networkRXBytes: netRXBytes, disks: vbds,
                     diskReads: vbdReads, diskWrites: vbdWrites, diskBytesRead: vbdBytesRead, diskBytesWritten: vbdBytesWritten)
    }
}

/// The service's guest-control calls, as a protocol a daemon adopts on top
/// of `DomainService` (the router looks for it at run time).
public protocol GuestControlService: DomainService {
    /// Writes `memory/target` and/or `memory/static-max` (xl mem-set,
    /// mem-max); 400 for values xl refuses, 409 if the guest has no tree yet.
    func setMemory(on name: String, _ request: MemoryRequest) async throws(APIError) -> DomainInfo
    /// Writes `cpu/<n>/availability` for every n below the domain's vCPUs.
    func setVCPUs(on name: String, online: Int) async throws(APIError) -> DomainInfo
    /// One domain's counters (`name`), or every domain's (nil).
    func stats(named name: String?) async throws(APIError) -> [DomainStats]
}

extension APIRouter {
    /// `PUT /v1/domains/{name}/memory`, `PUT /v1/domains/{name}/vcpus`,
    /// `GET /v1/stats` and `GET /v1/domains/{name}/stats`. Without a
    /// `GuestControlService` they answer 501.
    static func registerGuestControl(on router: Router<BasicRequestContext>, service: any DomainService) {
        let control = service as? any GuestControlService
        router.put("/v1/domains/{name}/memory") { request, context in
            try await answer {
                let body: MemoryRequest = try await decode(request, as: MemoryRequest.self, what: "a memory request ({\"target_kib\": N} and/or {\"max_kib\": N})",
                                                       keys: ["target_kib", "max_kib"])
                guard body.targetKiB != nil || body.maxKiB != nil else {
                    throw APIError(.badRequest, "give target_kib, max_kib or both")
                }
                for (key, value) in [("target_kib", body.targetKiB), ("max_kib", body.maxKiB)] {
                    if let value, value <= 0 { throw APIError(.badRequest, "\(key) \(value): must be more than 0 KiB", key: key) }
                }
                guard let control else { throw APIError(.notImplemented, "PUT /v1/domains/{name}/memory is not implemented here") }
                return try await control.setMemory(on: try name(context), body)
            }
        }
        router.put("/v1/domains/{name}/vcpus") { request, context in
            try await answer {
                let body: VCPURequest = try await decode(request, as: VCPURequest.self, what: "a vCPU request ({\"online\": N})", keys: ["online"])
                guard let control else { throw APIError(.notImplemented, "PUT /v1/domains/{name}/vcpus is not implemented here") }
                return try await control.setVCPUs(on: try name(context), online: body.online)
            }
        }
        router.get("/v1/stats") { _, _ in
            try await answer {
                guard let control else { throw APIError(.notImplemented, "GET /v1/stats is not implemented here") }
                return try await control.stats(named: nil)
            }
        }
        router.get("/v1/domains/{name}/stats") { _, context in
            try await answer {
                guard let control else { throw APIError(.notImplemented, "GET /v1/domains/{name}/stats is not implemented here") }
                let all = try await control.stats(named: try name(context))
                guard let one = all.first else { throw APIError.notFound(try name(context)) }
                return one
            }
        }
    }

    /// A small JSON body decoded as `T`, or 400 naming what was expected.
    /// Only `keys` may appear, none of them null: the document's
    /// `additionalProperties: false` and non-nullable members (Codable alone
    /// ignores an unknown member and reads null as absent; api-check found both).
    static func decode<T: Decodable>(_ request: Request, as type: T.Type, what: String, keys: Set<String>) async throws -> T {
        let body = Data(buffer: try await request.body.collect(upTo: 64 << 10))
        if let object = try? JSONDecoder().decode([String: JSON].self, from: body) {
            for (key, value) in object.sorted(by: { $0.key < $1.key }) where !keys.contains(key) || value == .null {
                throw APIError(.badRequest, "the body is not \(what): \(key): \(keys.contains(key) ? "null" : "not a member")", key: key)
            }
        }
        do {
            return try JSONDecoder().decode(T.self, from: body)
        } catch {
            throw APIError(.badRequest, "the body is not \(what): \(error)")
        }
    }
}
