import XenABI
import XenStore

/// A device hot-plugged through the store, both halves of it: what the
/// toolstack writes (`backendNodes`, `frontendNodes`, in one transaction,
/// as libxl's libxl__device_disk_add / libxl__device_nic_add do through
/// libxl__device_generic_add, tools/libs/light/libxl_device.c), and what the
/// backend driver reads back from the backend directory before it starts a
/// backend for it (`init(backend:address:)`). The backend directory is in a
/// store other parties write, so the driver treats every node as input:
/// bounded, one charset, one value set, or one line of `HotplugNodeError`
/// (the driver writes it to the backend's `hotplug-error` and says Closed).
public enum HotplugDevice: Hashable, Sendable {
    case disk(HotplugDisk)
    case nic(HotplugNic)

    /// The device class in the store: "vbd" or "vif".
    public var type: String {
        switch self {
        case .disk: "vbd"
        case .nic: "vif"
        }
    }

    /// The nodes libxl writes in every backend directory
    /// (libxl__device_generic_add): `frontend`, `frontend-id`, `online` 1,
    /// `state` 1 (Initialising), then the device's own.
    public func backendNodes(address: XenbusDeviceAddress) -> [(String, String)] {
        var nodes = [("frontend", address.frontendPath), ("frontend-id", String(address.frontend.rawValue)),
                     ("online", "1"), ("state", XenbusState.initialising.storeValue)]
        switch self {
        case .disk(let d): nodes += d.backendNodes
        case .nic(let n): nodes += n.backendNodes(handle: address.index)
        }
        return nodes
    }

    /// The frontend directory's nodes (libxl's `front` list): `backend`,
    /// `backend-id`, `state` 1, then the device's own.
    public func frontendNodes(address: XenbusDeviceAddress) -> [(String, String)] {
        var nodes = [("backend", address.backendPath), ("backend-id", String(address.backend.rawValue)),
                     ("state", XenbusState.initialising.storeValue)]
        switch self {
        case .disk(let d): nodes += [("virtual-device", String(address.index)), ("device-type", d.cdrom ? "cdrom" : "disk")]
        case .nic(let n): nodes += [("handle", String(address.index)), ("mac", n.mac)]
        }
        return nodes
    }

    /// The requests that write both directories: each made, given its
    /// permissions (the frontend's owned by the guest and readable by the
    /// backend domain, the backend's the reverse, as libxl's
    /// libxl__device_generic_add sets them), and filled. For
    /// `XenStoreServer.transaction`.
    public func storeRequests(address: XenbusDeviceAddress) -> [(XenStoreMessageType, [UInt8])] {
        let be = address.backendPath, fe = address.frontendPath
        let backendPerms = XenStorePermissions(owner: address.backend, defaultAccess: .none, entries: [(address.frontend, .read)])
        let frontendPerms = XenStorePermissions(owner: address.frontend, defaultAccess: .none, entries: [(address.backend, .read)])
        var requests: [(XenStoreMessageType, [UInt8])] = [
            (.mkdir, XenStoreWire.nulTerminated([fe])),
            (.setPermissions, XenStoreWire.nulTerminated([fe] + frontendPerms.strings)),
            (.mkdir, XenStoreWire.nulTerminated([be])),
            (.setPermissions, XenStoreWire.nulTerminated([be] + backendPerms.strings)),
        ]
        for (key, value) in frontendNodes(address: address) {
            requests.append((.write, XenStoreWire.nulTerminated(["\(fe)/\(key)"]) + Array(value.utf8)))
        }
        for (key, value) in backendNodes(address: address) {
            requests.append((.write, XenStoreWire.nulTerminated(["\(be)/\(key)"]) + Array(value.utf8)))
        }
        return requests
    }

    /// The most nodes a backend directory is read with (libxl writes about
    /// fifteen; the backend's own come on top).
    public static let maximumNodes = 64
    /// The longest value read (PATH_MAX for `params`).
    public static let maximumValueLength = 4096

    /// Reads a new device's backend directory as its backend driver must:
    /// the nodes libxl writes, each checked. `backend` holds the directory's
    /// nodes by name (what the driver read, at most `maximumNodes`).
    public init(backend nodes: [String: String], address: XenbusDeviceAddress) throws(HotplugNodeError) {
        guard address.type == "vbd" || address.type == "vif" else {
            throw .invalid("type", "device class \(address.type) is not hot-pluggable")
        }
        guard nodes.count <= Self.maximumNodes else { throw .tooManyNodes(nodes.count) }
        for (key, value) in nodes where value.utf8.count > Self.maximumValueLength || value.utf8.contains(0) {
            throw .invalid(key, "longer than \(Self.maximumValueLength) bytes or has a NUL")
        }
        func need(_ key: String) throws(HotplugNodeError) -> String {
            guard let value = nodes[key] else { throw .missing(key) }
            return value
        }
        guard try need("frontend") == address.frontendPath else { throw .invalid("frontend", "not \(address.frontendPath)") }
        guard try need("frontend-id") == String(address.frontend.rawValue) else {
            throw .invalid("frontend-id", "not \(address.frontend.rawValue)")
        }
        guard try need("online") == "1" else { throw .invalid("online", "not 1") }
        guard try need("state") == XenbusState.initialising.storeValue else { throw .invalid("state", "not 1 (Initialising)") }
        self = address.type == "vbd" ? .disk(try HotplugDisk(nodes, need: need)) : .nic(try HotplugNic(nodes, need: need))
    }
}

/// Why a backend directory was refused: one line, for `hotplug-error`.
public enum HotplugNodeError: Error, Hashable, Sendable, CustomStringConvertible {
    case missing(String)
    case invalid(String, String)
    case tooManyNodes(Int)

    public var description: String {
        switch self {
        case .missing(let key): "\(key): missing"
        case .invalid(let key, let why): "\(key): \(why)"
        case .tooManyNodes(let n): "\(n) nodes in the backend directory, at most \(HotplugDevice.maximumNodes)"
        }
    }
}

/// A hot-plugged disk's nodes (libxl_disk.c device_disk_add): `params` the
/// image, `mode` r or w, `type` (libxl's backend kind: "phy" for the
/// kernel's blkback; pvh's own backend also answers "file"), `dev` the
/// virtual device's name, `device-type` disk or cdrom, `removable`,
/// `bootable`, `discard-enable`.
public struct HotplugDisk: Hashable, Sendable {
    public var target: String
    public var readOnly: Bool
    /// The virtual device as the user named it ("xvdb"); its number is the devid.
    public var virtualDevice: String
    public var cdrom: Bool
    public var discard: Bool

    public init(target: String, readOnly: Bool, virtualDevice: String, cdrom: Bool, discard: Bool) {
        self.target = target
        self.readOnly = readOnly
        self.virtualDevice = virtualDevice
        self.cdrom = cdrom
        self.discard = discard
    }

    var backendNodes: [(String, String)] {
        [("params", target), ("mode", readOnly ? "r" : "w"), ("type", "phy"), ("dev", virtualDevice),
         ("device-type", cdrom ? "cdrom" : "disk"), ("removable", "0"), ("bootable", "1"),
         ("discard-enable", discard ? "1" : "0")]
    }

    init(_ nodes: [String: String], need: (String) throws(HotplugNodeError) -> String) throws(HotplugNodeError) {
        let params = try need("params")
        guard params.hasPrefix("/"), !params.contains("\n") else { throw .invalid("params", "not an absolute path") }
        let mode = try need("mode")
        guard mode == "r" || mode == "w" else { throw .invalid("mode", "'\(mode)', not r or w") }
        let type = try need("type")
        guard type == "phy" || type == "file" else { throw .invalid("type", "'\(type)', not phy or file (pvh serves raw images)") }
        let dev = try need("dev")
        guard (1...16).contains(dev.utf8.count), dev.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0)) })
        else { throw .invalid("dev", "not a virtual device name") }
        let kind = nodes["device-type"] ?? "disk"
        guard kind == "disk" || kind == "cdrom" else { throw .invalid("device-type", "'\(kind)', not disk or cdrom") }
        let discard = nodes["discard-enable"] ?? "1"
        guard discard == "0" || discard == "1" else { throw .invalid("discard-enable", "not 0 or 1") }
        self.init(target: params, readOnly: mode == "r" || kind == "cdrom", virtualDevice: dev, cdrom: kind == "cdrom",
                  discard: discard == "1")
    }

    /// The disk as an xl disk spec (xl-disk-configuration(5)), for the
    /// one parser the boot-time disks go through: `target=` last, since it
    /// takes the rest of the spec (a path may hold commas).
    public var specification: String {
        "format=raw,vdev=\(virtualDevice),access=\(readOnly ? "ro" : "rw"),\(cdrom ? "devtype=cdrom," : "")"
            + "\(discard ? "discard" : "no-discard"),target=\(target)"
    }
}

/// A hot-plugged network interface's nodes (libxl_nic.c
/// libxl__set_xenstore_nic: `mac`, `handle`, `type` vif, `bridge`,
/// `vifname`, `mtu`, `ip`), and pvh's `pvh-link` (user, tap or none: what
/// carries its frames on the host, which libxl leaves to its hotplug script).
public struct HotplugNic: Hashable, Sendable {
    public var link: String
    public var mac: String
    public var bridge: String?
    public var vifname: String?
    public var mtu: Int?
    public var ip: String?

    public init(link: String, mac: String, bridge: String? = nil, vifname: String? = nil, mtu: Int? = nil, ip: String? = nil) {
        self.link = link
        self.mac = mac
        self.bridge = bridge
        self.vifname = vifname
        self.mtu = mtu
        self.ip = ip
    }

    func backendNodes(handle: Int) -> [(String, String)] {
        var nodes = [("mac", mac), ("handle", String(handle)), ("type", "vif"), ("pvh-link", link)]
        if let bridge { nodes.append(("bridge", bridge)) }
        if let vifname { nodes.append(("vifname", vifname)) }
        if let mtu { nodes.append(("mtu", String(mtu))) }
        if let ip { nodes.append(("ip", ip)) }
        return nodes
    }

    /// A value that goes into a vif spec: no separator of the spec's
    /// grammar (`,` `=`), no space, printable ASCII.
    static func word(_ key: String, _ value: String) throws(HotplugNodeError) -> String {
        guard (1...255).contains(value.utf8.count),
              value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7f && $0 != "," && $0 != "=" })
        else { throw .invalid(key, "'\(value.prefix(40))' has a character a vif spec cannot carry") }
        return value
    }

    init(_ nodes: [String: String], need: (String) throws(HotplugNodeError) -> String) throws(HotplugNodeError) {
        let type = try need("type")
        guard type == "vif" else { throw .invalid("type", "'\(type)', not vif") }
        let link = try need("pvh-link")
        guard ["user", "tap", "none"].contains(link) else { throw .invalid("pvh-link", "'\(link)', not user, tap or none") }
        let mac = try Self.word("mac", try need("mac"))
        var mtu: Int?
        if let text = nodes["mtu"] {
            guard let n = Int(text), (68...65535).contains(n) else { throw .invalid("mtu", "not 68 to 65535") }
            mtu = n
        }
        self.init(link: link, mac: mac, bridge: try nodes["bridge"].map { v throws(HotplugNodeError) in try Self.word("bridge", v) },
                  vifname: try nodes["vifname"].map { v throws(HotplugNodeError) in try Self.word("vifname", v) },
                  mtu: mtu, ip: try nodes["ip"].map { v throws(HotplugNodeError) in try Self.word("ip", v) })
    }

    /// The interface as an xl vif spec (xl-network-configuration(5)), for
    /// the parser the boot-time interfaces go through.
    public func specification(devid: Int) -> String {
        var parts = ["type=\(link)", "mac=\(mac)", "devid=\(devid)"]
        if let bridge { parts.append("bridge=\(bridge)") }
        if let vifname { parts.append("vifname=\(vifname)") }
        if let mtu { parts.append("mtu=\(mtu)") }
        if let ip { parts.append("ip=\(ip)") }
        return parts.joined(separator: ",")
    }
}
