import Testing
import XenABI
import XenStore

@Suite("XenStore paths and permissions")
struct PathPermissionTests {
    let d1 = DomainID(rawValue: 1)

    @Test("relative paths resolve under /local/domain/<id>; Xen's character and shape rules")
    func paths() throws {
        let p = try XenStorePath("device/vif/0", home: d1)
        #expect(p.rawValue == "/local/domain/1/device/vif/0")
        #expect(p.relative)
        #expect(p.parent.rawValue == "/local/domain/1/device/vif")
        #expect(p.name == "0")
        #expect(try XenStorePath("/", home: d1).rawValue == "/")
        #expect(XenStorePath.root.parent == .root)
        for bad in ["", "/a//b", "/a/", "a b", "/a\u{e9}", "/a.b", "/a:b", "@introduceDomain"] {
            #expect(throws: XenStoreError.einval) { try XenStorePath(bad, home: d1) }
        }
        #expect(try XenStorePath("@releaseDomain", home: d1, allowSpecial: true).isSpecial)
        #expect(try XenStorePath("/A-Z_a@9", home: d1).rawValue == "/A-Z_a@9")
    }

    @Test("length limits: XENSTORE_ABS_PATH_MAX for everyone, the path quota below the home")
    func lengths() throws {
        let long = "/" + String(repeating: "a", count: XenStoreLimits.absolutePathMax - 1)
        #expect(try XenStorePath(long, home: d1).rawValue.count == 3072)
        #expect(throws: XenStoreError.einval) { try XenStorePath(long + "a", home: d1) }
        let rel = String(repeating: "b", count: XenStoreLimits.relativePathMax)
        #expect(try XenStorePath(rel, home: d1, pathQuota: XenStoreLimits.relativePathMax).relative)
        #expect(throws: XenStoreError.einval) {
            try XenStorePath(rel + "b", home: d1, pathQuota: XenStoreLimits.relativePathMax)
        }
    }

    @Test("permission strings round-trip; owner has full rights; first matching entry wins")
    func permissions() throws {
        let p = try XenStorePermissions(strings: ["r0", "w1", "b2", "n1"])
        #expect(p.owner == DomainID(rawValue: 0))
        #expect(p.strings == ["r0", "w1", "b2", "n1"])
        #expect(p.access(for: DomainID(rawValue: 0)) == .both)
        #expect(p.access(for: DomainID(rawValue: 1)) == .write)
        #expect(p.access(for: DomainID(rawValue: 2)) == .both)
        #expect(p.access(for: DomainID(rawValue: 3)) == .read)
        #expect(p.access(for: DomainID(rawValue: 3), target: DomainID(rawValue: 2)) == .both)
        let owned = try XenStorePermissions(strings: ["n5"])
        #expect(owned.access(for: DomainID(rawValue: 5)) == .both)
        for bad in [["x1"], ["r"], ["r-1"], ["r70000"], [], ["r1a"]] {
            #expect(throws: XenStoreError.einval) { try XenStorePermissions(strings: bad) }
        }
    }
}
