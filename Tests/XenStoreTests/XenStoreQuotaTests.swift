import Testing
import XenABI
import XenStore

/// The node-size quota: a guest may store a value as large as one message
/// can carry (XENSTORE_PAYLOAD_MAX), C xenstored's 2048 would refuse it.
@Suite("XenStore node-size quota")
struct XenStoreQuotaTests {
    static let dom0 = XenStoreConnectionID(rawValue: 1)
    static let guest = XenStoreConnectionID(rawValue: 2)

    /// A store with `/local/domain/1` owned by domain 1, and a domain-1 client.
    func store(_ quota: XenStoreQuota = .default) -> XenStoreCore {
        var core = XenStoreCore(quota: quota)
        core.connect(Self.dom0, domain: DomainID(rawValue: 0), privileged: true)
        core.connect(Self.guest, domain: DomainID(rawValue: 1), privileged: false)
        _ = core.handle(XenStoreMessage(type: .mkdir, requestID: 1, strings: ["/local/domain/1"]), from: Self.dom0)
        let r = core.handle(XenStoreMessage(type: .setPermissions, requestID: 2, strings: ["/local/domain/1", "n1"]), from: Self.dom0)
        #expect(r.first?.message.type == .setPermissions)
        return core
    }

    func write(_ core: inout XenStoreCore, _ path: String, _ value: [UInt8]) -> XenStoreMessage? {
        core.handle(XenStoreMessage(type: .write, requestID: 3, payload: Array(path.utf8) + [0] + value), from: Self.guest).first?.message
    }

    @Test("the default admits a record with a full-payload value and a full permission list")
    func defaultSize() {
        let q = XenStoreQuota.default
        #expect(q.nodeSize >= XenStoreQuota.recordSize(valueBytes: XenStoreLimits.payloadMax, permissions: q.permissions))
        #expect(q.nodeSize > 2048)
    }

    @Test("a guest writes and reads back the largest value a WRITE can carry (and 3000 bytes, over Xen's 2048)",
          arguments: [3000, XenStoreLimits.payloadMax - "data/big".utf8.count - 1])
    func largestValue(_ size: Int) {
        var core = store()
        let value = (0..<size).map { UInt8(ascii: "a") + UInt8($0 % 26) }
        let w = write(&core, "data/big", value)
        #expect(w?.type == .write, "\(String(decoding: w?.payload ?? [], as: UTF8.self))")
        let r = core.handle(XenStoreMessage(type: .read, requestID: 4, strings: ["data/big"]), from: Self.guest).first?.message
        #expect(r?.type == .read)
        #expect(r?.payload == value)
    }

    @Test("the quota is still enforced: a smaller node size gives ENOSPC")
    func enforced() {
        var q = XenStoreQuota.default
        q.nodeSize = 2048
        var core = store(q)
        let w = write(&core, "data/big", [UInt8](repeating: 0x41, count: 3000))
        #expect(w?.type == .error)
        #expect(w?.payload == Array("ENOSPC".utf8) + [0])
        #expect(write(&core, "data/small", [UInt8](repeating: 0x41, count: 1000))?.type == .write)
    }
}
