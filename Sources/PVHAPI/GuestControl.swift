import Foundation
import Hummingbird
import Toolstack

/// `PUT /v1/domains/{name}/memory`: xl mem-set's target and/or xl
/// mem-max's maximum, KiB (`memory/target`, `memory/static-max`).
public struct MemoryRequest: Codable, Hashable, Sendable {
    public var targetKiB: Int64?
    public var maxKiB: Int64?

    public init(targetKiB: Int64? = nil, maxKiB: Int64? = nil) {
        self.targetKiB = targetKiB
        self.maxKiB = maxKiB
    }

    enum CodingKeys: String, CodingKey {
        case targetKiB = "target_kib"
        case maxKiB = "max_kib"
    }
}

/// `PUT /v1/domains/{name}/vcpus`: how many vCPUs are online (xl vcpu-set).
public struct VCPURequest: Codable, Hashable, Sendable {
    public var online: Int
    public init(online: Int) { self.online = online }
}

/// One domain's counters for `pvh top` (`GET /v1/stats`,
/// `GET /v1/domains/{name}/stats`), read by the daemon from the guest
/// process's metrics at the request.
public struct DomainStats: Codable, Hashable, Sendable {
    public var name: String
    public var domid: Int
    public var state: String
    /// Host CPU time of its vCPU threads, seconds.
    public var cpuSeconds: Double
    public var memoryKiB: Int64
    public var maxMemoryKiB: Int64
    public var vcpus: Int
    public var nets: Int
    public var netTXBytes: UInt64
    public var netRXBytes: UInt64
    public var vbds: Int
    public var vbdReads: UInt64
    public var vbdWrites: UInt64
    public var vbdBytesRead: UInt64
    public var vbdBytesWritten: UInt64
    /// False when the guest process's metrics did not answer: the counters
    /// are zero and `cpu_seconds` is its process's CPU time.
    public var metrics: Bool

    public init(name: String, domid: Int, state: String, cpuSeconds: Double, memoryKiB: Int64, maxMemoryKiB: Int64, vcpus: Int,
                nets: Int = 0, netTXBytes: UInt64 = 0, netRXBytes: UInt64 = 0, vbds: Int = 0, vbdReads: UInt64 = 0,
                vbdWrites: UInt64 = 0, vbdBytesRead: UInt64 = 0, vbdBytesWritten: UInt64 = 0, metrics: Bool) {
        self.name = name
        self.domid = domid
        self.state = state
        self.cpuSeconds = cpuSeconds
        self.memoryKiB = memoryKiB
        self.maxMemoryKiB = maxMemoryKiB
        self.vcpus = vcpus
        self.nets = nets
        self.netTXBytes = netTXBytes
        self.netRXBytes = netRXBytes
        self.vbds = vbds
        self.vbdReads = vbdReads
        self.vbdWrites = vbdWrites
        self.vbdBytesRead = vbdBytesRead
        self.vbdBytesWritten = vbdBytesWritten
        self.metrics = metrics
    }

    /// The row `pvh top` formats.
    public var sample: DomainSample {
        DomainSample(name: name, state: state, cpuSeconds: cpuSeconds, memoryKiB: memoryKiB, maximumMemoryKiB: maxMemoryKiB,
                     vcpus: vcpus, networks: nets, networkTXBytes: netTXBytes, networkRXBytes: netRXBytes, disks: vbds,
                     diskReads: vbdReads, diskWrites: vbdWrites, diskBytesRead: vbdBytesRead, diskBytesWritten: vbdBytesWritten)
    }

    enum CodingKeys: String, CodingKey {
        case name, domid, state, vcpus, nets, vbds, metrics
        case cpuSeconds = "cpu_seconds"
        case memoryKiB = "memory_kib"
        case maxMemoryKiB = "max_memory_kib"
        case netTXBytes = "net_tx_bytes"
        case netRXBytes = "net_rx_bytes"
        case vbdReads = "vbd_reads"
        case vbdWrites = "vbd_writes"
        case vbdBytesRead = "vbd_bytes_read"
        case vbdBytesWritten = "vbd_bytes_written"
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
                let body: MemoryRequest = try await decode(request, as: MemoryRequest.self, what: "a memory request ({\"target_kib\": N} and/or {\"max_kib\": N})")
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
                let body: VCPURequest = try await decode(request, as: VCPURequest.self, what: "a vCPU request ({\"online\": N})")
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
    static func decode<T: Decodable>(_ request: Request, as type: T.Type, what: String) async throws -> T {
        let body = try await request.body.collect(upTo: 64 << 10)
        do {
            return try JSONDecoder().decode(T.self, from: Data(buffer: body))
        } catch {
            throw APIError(.badRequest, "the body is not \(what): \(error)")
        }
    }
}
