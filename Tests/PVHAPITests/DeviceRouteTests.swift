import Foundation
import PVHAPI
import Locking
import Testing
import Toolstack

/// The fake's devices (the daemon's come from its store).
private let fakeDevices = Lock<[String: [DeviceListingEntry]]>([:])

extension FakeService: DeviceService {
    func devices(_ kind: DeviceKind, of name: String) async throws(APIError) -> [DeviceListingEntry] {
        _ = try await domain(named: name)
        return fakeDevices.withLock { $0["\(name)/\(kind.rawValue)"] ?? [] }
    }

    func attach(_ kind: DeviceKind, spec: String, to name: String, timeout: Double) async throws(APIError) -> DeviceListingEntry {
        _ = try await domain(named: name)
        guard spec.hasPrefix("/") else { throw APIError(.badRequest, "\(spec): the target must be an absolute path") }
        let result: Result<DeviceListingEntry, APIError> = fakeDevices.withLock { all in
            let key = "\(name)/\(kind.rawValue)"
            guard !(all[key] ?? []).contains(where: { $0.target == spec }) else {
                return .failure(APIError(.conflict, "\(name): vdev 51728 is in use"))
            }
            let entry = DeviceListingEntry(devid: 51728, backendDomain: 0, handle: 1, state: 1, backendState: 2, eventChannel: -1,
                                           ringRef: -1, rxRingRef: -1, backendPath: "/local/domain/0/backend/vbd/1/51728",
                                           name: "xvdb", target: spec)
            all[key, default: []].append(entry)
            return .success(entry)
        }
        return try result.get()
    }

    func detach(_ kind: DeviceKind, _ device: String, from name: String, force: Bool, timeout: Double) async throws(APIError) -> DeviceListingEntry {
        _ = try await domain(named: name)
        let gone = fakeDevices.withLock { all -> DeviceListingEntry? in
            let key = "\(name)/\(kind.rawValue)"
            guard let i = all[key]?.firstIndex(where: { $0.name == device || String($0.devid) == device }) else { return nil }
            return all[key]?.remove(at: i)
        }
        guard let gone else { throw APIError(.notFound, "\(name) has no disk \(device)") }
        return gone
    }
}

/// The hot-plug routes against the OpenAPI document: every answer's JSON
/// matches the schema the document gives for its status.
@Suite(.serialized) struct DeviceRouteTests {
    @Test func disksListAttachDetach() async throws {
        let h = try await APIHarness()
        var (status, json) = try await h.call("POST", "/v1/domains", body: webConfig)
        #expect(status == 201)
        (status, json) = try await h.call("GET", "/v1/domains/web/disks", route: "/v1/domains/{name}/disks")
        #expect(status == 200 && json == .array([]))
        (status, json) = try await h.call("POST", "/v1/domains/web/disks?timeout=5", route: "/v1/domains/{name}/disks",
                                          body: #"{"spec": "/srv/b.img,raw,xvdb"}"#)
        #expect(status == 201 && json["devid"] == .number(51728) && json["name"] == .string("xvdb"))
        (status, json) = try await h.call("POST", "/v1/domains/web/disks", route: "/v1/domains/{name}/disks",
                                          body: #"{"spec": "/srv/b.img,raw,xvdb"}"#)
        #expect(status == 409 && json["code"] == .string("conflict"))
        (status, json) = try await h.call("POST", "/v1/domains/web/disks", route: "/v1/domains/{name}/disks", body: #"{"spec": "b.img"}"#)
        #expect(status == 400 && json["code"] == .string("bad_request"))
        (status, json) = try await h.call("POST", "/v1/domains/web/disks", route: "/v1/domains/{name}/disks", body: #"{"nospec": 1}"#)
        #expect(status == 400)
        (status, json) = try await h.call("POST", "/v1/domains/web/disks?timeout=9999", route: "/v1/domains/{name}/disks",
                                          body: #"{"spec": "/x"}"#)
        #expect(status == 400)
        (status, json) = try await h.call("GET", "/v1/domains/nosuch/disks", route: "/v1/domains/{name}/disks")
        #expect(status == 404 && json["code"] == .string("not_found"))
        (status, json) = try await h.call("GET", "/v1/domains/web/disks", route: "/v1/domains/{name}/disks")
        guard case .array(let items) = json else { Issue.record("\(json)"); return }
        #expect(status == 200 && items.count == 1 && items.first?["backendState"] == .number(2))
        (status, json) = try await h.call("DELETE", "/v1/domains/web/disks/xvdb?force=maybe", route: "/v1/domains/{name}/disks/{device}")
        #expect(status == 400)
        (status, json) = try await h.call("DELETE", "/v1/domains/web/disks/xvdb?force=true", route: "/v1/domains/{name}/disks/{device}")
        #expect(status == 200 && json["devid"] == .number(51728))
        (status, json) = try await h.call("DELETE", "/v1/domains/web/disks/xvdb", route: "/v1/domains/{name}/disks/{device}")
        #expect(status == 404)
        await h.stop()
    }
}
