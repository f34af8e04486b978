import Foundation
import PVHAPI
import Testing
import Toolstack

/// The fake's guest control: the domain's values echoed as the daemon
/// would set them, its limits the daemon's (target ≤ maximum, 1...vcpus).
extension FakeService: GuestControlService {
    func setMemory(on name: String, _ request: MemoryRequest) async throws(APIError) -> DomainInfo {
        var info = try await domain(named: name)
        let maximum = request.maxKiB ?? Int64(info.memoryMiB) * 1024
        let target = request.targetKiB ?? Int64(info.memoryMiB) * 1024
        guard target <= maximum else { throw APIError(.badRequest, "\(name): target above the maximum", key: "target_kib") }
        info.memoryTargetKiB = target
        info.maxMemoryKiB = maximum
        return info
    }

    func setVCPUs(on name: String, online: Int) async throws(APIError) -> DomainInfo {
        var info = try await domain(named: name)
        guard (1...info.vcpus).contains(online) else { throw APIError(.badRequest, "\(name): \(online) vCPUs", key: "online") }
        info.onlineVCPUs = online
        return info
    }

    func stats(named name: String?) async throws(APIError) -> [DomainStats] {
        var all = await domains()
        if let name {
            all = all.filter { $0.name == name }
            guard !all.isEmpty else { throw .notFound(name) }
        }
        return all.map {
            DomainStats(name: $0.name, domid: $0.domid, state: $0.state, cpuSeconds: 1.5, memoryKiB: Int64($0.memoryMiB) * 1024,
                        maxMemoryKiB: Int64($0.memoryMiB) * 1024, vcpus: $0.vcpus, nets: 1, netTXBytes: 4096, metrics: true)
        }
    }
}

@Suite(.serialized) struct GuestControlRouteTests {
    @Test("memory, vCPUs and stats: answers in the document's shapes, 400 for bad bodies, 404 for unknown domains")
    func memoryVCPUsAndStats() async throws {
        let h = try await APIHarness()
        var (status, json) = try await h.call("POST", "/v1/domains", body: webConfig)
        #expect(status == 201)
        let memory = "/v1/domains/{name}/memory", vcpus = "/v1/domains/{name}/vcpus"
        (status, json) = try await h.call("PUT", "/v1/domains/web/memory", route: memory, body: #"{"target_kib": 32768}"#)
        #expect(status == 200 && json["memory_target_kib"] == .number(32768))
        (status, json) = try await h.call("PUT", "/v1/domains/web/memory", route: memory, body: #"{"target_kib": 1, "max_kib": 4096}"#)
        #expect(status == 200 && json["max_memory_kib"] == .number(4096))
        for bad in ["{}", #"{"target_kib": 0}"#, #"{"max_kib": -4}"#, #"{"target_kib": "1g"}"#, #"{"target_kib": 1.5}"#, "[", #"{"target_kib": 99999, "max_kib": 1}"#] {
            (status, json) = try await h.call("PUT", "/v1/domains/web/memory", route: memory, body: bad)
            #expect(status == 400 && json["code"] == .string("bad_request"), "\(bad)")
        }
        (status, json) = try await h.call("PUT", "/v1/domains/nope/memory", route: memory, body: #"{"target_kib": 1}"#)
        #expect(status == 404 && json["code"] == .string("not_found"))
        (status, json) = try await h.call("PUT", "/v1/domains/web/vcpus", route: vcpus, body: #"{"online": 1}"#)
        #expect(status == 200 && json["online_vcpus"] == .number(1))
        for bad in [#"{"online": 0}"#, #"{"online": 3}"#, #"{"on": 1}"#] {
            (status, _) = try await h.call("PUT", "/v1/domains/web/vcpus", route: vcpus, body: bad)
            #expect(status == 400, "\(bad)")
        }
        (status, _) = try await h.call("PUT", "/v1/domains/nope/vcpus", route: vcpus, body: #"{"online": 1}"#)
        #expect(status == 404)
        (status, json) = try await h.call("GET", "/v1/stats")
        guard case .array(let all) = json else { Issue.record("not an array: \(json)"); return }
        #expect(status == 200 && all.count == 1 && all.first?["net_tx_bytes"] == .number(4096))
        (status, json) = try await h.call("GET", "/v1/domains/web/stats", route: "/v1/domains/{name}/stats")
        #expect(status == 200 && json["name"] == .string("web") && json["cpu_seconds"] == .number(1.5))
        (status, _) = try await h.call("GET", "/v1/domains/nope/stats", route: "/v1/domains/{name}/stats")
        #expect(status == 404)
        await h.stop()
    }
}

/// Request bodies are as strict as the document: no unknown member, no null (api-check found both accepted).
@Suite(.serialized) struct StrictBodyTests {
    @Test func unknownAndNullMembersAre400() async throws {
        let h = try await APIHarness()
        _ = try await h.call("POST", "/v1/domains", body: webConfig)
        var (status, json) = try await h.call("PUT", "/v1/domains/web/vcpus", route: "/v1/domains/{name}/vcpus",
                                              body: #"{"online": 1, "extra": 42}"#)
        #expect(status == 400 && json["key"] == .string("extra"))
        (status, json) = try await h.call("PUT", "/v1/domains/web/memory", route: "/v1/domains/{name}/memory",
                                          body: #"{"max_kib": null, "target_kib": 1}"#)
        #expect(status == 400 && json["key"] == .string("max_kib"))
        (status, json) = try await h.call("POST", "/v1/domains/web/nics", route: "/v1/domains/{name}/nics",
                                          body: #"{"spec": "", "x": 1}"#)
        #expect(status == 400 && json["key"] == .string("x"))
        await h.stop()
    }
}
