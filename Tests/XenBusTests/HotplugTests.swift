import Testing
import XenABI
import XenBus
import XenStore

/// The hot-plug nodes: what the toolstack writes reads back as the same
/// device, and every node a backend driver reads is checked (a store other
/// parties write is input).
@Suite struct HotplugNodeTests {
    let vbd = XenbusDeviceAddress(type: "vbd", frontend: DomainID(rawValue: 3), index: 51728)
    let vif = XenbusDeviceAddress(type: "vif", frontend: DomainID(rawValue: 3), index: 1)
    let disk = HotplugDevice.disk(HotplugDisk(target: "/srv/a,b.img", readOnly: false, virtualDevice: "xvdb", cdrom: false, discard: true))
    let nic = HotplugDevice.nic(HotplugNic(link: "user", mac: "00:16:3e:00:00:01", mtu: 1400, ip: "10.0.0.2"))

    func nodes(_ device: HotplugDevice, _ address: XenbusDeviceAddress) -> [String: String] {
        Dictionary(device.backendNodes(address: address), uniquingKeysWith: { _, last in last })
    }

    @Test func roundTrip() throws {
        #expect(try HotplugDevice(backend: nodes(disk, vbd), address: vbd) == disk)
        #expect(try HotplugDevice(backend: nodes(nic, vif), address: vif) == nic)
        let be = nodes(disk, vbd)
        #expect(be["frontend"] == "/local/domain/3/device/vbd/51728" && be["frontend-id"] == "3")
        #expect(be["online"] == "1" && be["state"] == "1" && be["params"] == "/srv/a,b.img" && be["mode"] == "w")
        let fe = Dictionary(disk.frontendNodes(address: vbd), uniquingKeysWith: { _, last in last })
        #expect(fe["backend"] == "/local/domain/0/backend/vbd/3/51728" && fe["virtual-device"] == "51728" && fe["state"] == "1")
        // target= last: a path with commas survives the spec.
        if case .disk(let d) = disk { #expect(d.specification.hasSuffix(",target=/srv/a,b.img")) }
        if case .nic(let n) = nic { #expect(n.specification(devid: 1) == "type=user,mac=00:16:3e:00:00:01,devid=1,mtu=1400,ip=10.0.0.2") }
    }

    /// Each bad node gives one line naming the node.
    @Test(arguments: [
        ("frontend", "/local/domain/4/device/vbd/51728", "frontend: not /local/domain/3/device/vbd/51728"),
        ("frontend-id", "4", "frontend-id: not 3"),
        ("online", "0", "online: not 1"),
        ("state", "4", "state: not 1 (Initialising)"),
        ("params", "relative.img", "params: not an absolute path"),
        ("mode", "rw", "mode: 'rw', not r or w"),
        ("type", "qdisk", "type: 'qdisk', not phy or file (pvh serves raw images)"),
        ("dev", "xvd b", "dev: not a virtual device name"),
        ("device-type", "floppy", "device-type: 'floppy', not disk or cdrom"),
        ("discard-enable", "yes", "discard-enable: not 0 or 1"),
        ("params", "/" + String(repeating: "a", count: 5000), "params: longer than 4096 bytes or has a NUL"),
    ])
    func badDiskNodes(key: String, value: String, message: String) {
        var be = nodes(disk, vbd)
        be[key] = value
        #expect(throws: HotplugNodeError.self) { try HotplugDevice(backend: be, address: vbd) }
        do { _ = try HotplugDevice(backend: be, address: vbd) } catch { #expect(error.description == message) }
    }

    @Test func missingAndTooMany() {
        var be = nodes(disk, vbd)
        be["params"] = nil
        do { _ = try HotplugDevice(backend: be, address: vbd); Issue.record("accepted") } catch {
            #expect(error == .missing("params"))
        }
        var many = nodes(disk, vbd)
        for i in 0..<HotplugDevice.maximumNodes { many["x\(i)"] = "1" }
        do { _ = try HotplugDevice(backend: many, address: vbd); Issue.record("accepted") } catch {
            #expect(error == .tooManyNodes(many.count))
        }
        do { _ = try HotplugDevice(backend: nodes(disk, vbd), address: XenbusDeviceAddress(type: "console", frontend: DomainID(rawValue: 3), index: 0)); Issue.record("accepted") } catch {
            #expect(error == .invalid("type", "device class console is not hot-pluggable"))
        }
    }

    /// A vif's values go into a spec: no separator may smuggle a key in.
    @Test(arguments: [
        ("mac", "00:16:3e:00:00:01,type=tap"), ("bridge", "br0,vifname=x"), ("vifname", "a b"), ("ip", "1=2"),
    ])
    func vifValuesCannotInjectKeys(key: String, value: String) {
        var be = nodes(nic, vif)
        be[key] = value
        do { _ = try HotplugDevice(backend: be, address: vif); Issue.record("accepted \(value)") } catch {
            #expect(error.description.hasPrefix("\(key): "))
        }
    }

    @Test func badVifNodes() {
        for (key, value) in [("pvh-link", "vde"), ("type", "ioemu"), ("mtu", "10")] {
            var be = nodes(nic, vif)
            be[key] = value
            do { _ = try HotplugDevice(backend: be, address: vif); Issue.record("accepted \(key)=\(value)") } catch {
                #expect(error.description.hasPrefix("\(key): "))
            }
        }
    }

    /// The toolstack's requests in one transaction: both directories with
    /// libxl's permissions, and one watch event each for what they wrote,
    /// after the commit.
    @Test func writtenInOneTransaction() throws {
        let server = XenStoreServer(log: { _ in })
        try server.write("/local/domain/3/device/vbd/51712/state", "4")
        try server.transaction(disk.storeRequests(address: vbd))
        #expect(try server.read("\(vbd.backendPath)/params") == "/srv/a,b.img")
        #expect(try server.read("\(vbd.frontendPath)/backend") == vbd.backendPath)
        #expect(try server.permissions(vbd.frontendPath).strings == ["n3", "r0"])
        #expect(try server.permissions(vbd.backendPath).strings == ["n0", "r3"])
        // A failing request aborts all of it.
        let other = XenbusDeviceAddress(type: "vbd", frontend: DomainID(rawValue: 3), index: 51744)
        var requests = disk.storeRequests(address: other)
        requests.append((.write, XenStoreWire.nulTerminated([""]) + Array("x".utf8)))
        #expect(throws: XenStoreError.self) { try server.transaction(requests) }
        #expect((try? server.read("\(other.backendPath)/params")) == nil)
    }
}
