/// A PV device of a domain as `xl block-list` / `xl network-list` show it
/// (libxl_device_disk_getinfo / libxl_device_nic_getinfo read the same
/// nodes): the frontend's state, event channel and ring references (-1
/// where a node is missing or not a number, as libxl's getinfo leaves them),
/// the backend's domain, path and state.
public struct DeviceListingEntry: Codable, Hashable, Sendable {
    /// The device's index under `device/<type>/`: the vdev number of a
    /// vbd, the devid of a vif.
    public var devid: Int
    public var backendDomain: Int
    /// xl's `handle`: the frontend's domain for a vbd, the devid for a vif.
    public var handle: Int
    /// The frontend's XenbusState (0 when it has none).
    public var state: Int
    /// The backend's XenbusState (not in xl's table; for waiting and the API).
    public var backendState: Int
    public var eventChannel: Int
    /// A vbd's `ring-ref` (its first queue's, multi-queue), or a vif's TX ring.
    public var ringRef: Int
    /// A vif's RX ring (-1 for a vbd).
    public var rxRingRef: Int
    public var backendPath: String
    /// A vbd's `dev` ("xvdb"), a vif's `mac`.
    public var name: String
    /// A vbd's image (`params`), a vif's link (`pvh-link` or `link`).
    public var target: String
    /// The backend's `hotplug-error`, if it refused the device.
    public var hotplugError: String?

    public init(devid: Int, backendDomain: Int, handle: Int, state: Int, backendState: Int, eventChannel: Int, ringRef: Int,
                rxRingRef: Int, backendPath: String, name: String, target: String, hotplugError: String? = nil) {
        self.devid = devid
        self.backendDomain = backendDomain
        self.handle = handle
        self.state = state
        self.backendState = backendState
        self.eventChannel = eventChannel
        self.ringRef = ringRef
        self.rxRingRef = rxRingRef
        self.backendPath = backendPath
        self.name = name
        self.target = target
        self.hotplugError = hotplugError
    }

    /// A node's value as libxl's getinfo reads a number: -1 if absent or junk.
    public static func number(_ text: String?) -> Int {
        guard let text, (1...11).contains(text.count), let n = Int(text), n >= -1, n <= Int(UInt32.max) else { return -1 }
        return n
    }
}

/// xl's tables (tools/xl/xl_vbd.c main_blocklist, tools/xl/xl_nic.c
/// main_networklist): the same headers and printf widths.
public enum DeviceListing {
    /// `xl block-list`'s header.
    public static let blockHeader = "Vdev  BE  handle state evt-ch ring-ref BE-path"
    /// `xl network-list`'s header.
    public static let networkHeader = "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path"

    /// `%-5d %-3d %-6d %-5d %-6d %-8d %-30s`.
    public static func blockRow(_ e: DeviceListingEntry) -> String {
        left(e.devid, 5) + " " + left(e.backendDomain, 3) + " " + left(e.handle, 6) + " " + left(e.state, 5) + " "
            + left(e.eventChannel, 6) + " " + left(e.ringRef, 8) + " " + pad(e.backendPath, 30)
    }

    /// `%-3d %-2d %-17s %5d %5d %6d %5d/%-11d %-30s`.
    public static func networkRow(_ e: DeviceListingEntry) -> String {
        left(e.devid, 3) + " " + left(e.backendDomain, 2) + " " + pad(e.name, 17) + " " + right(e.handle, 5) + " "
            + right(e.state, 5) + " " + right(e.eventChannel, 6) + " " + right(e.ringRef, 5) + "/" + left(e.rxRingRef, 11)
            + " " + pad(e.backendPath, 30)
    }

    static func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
    static func left(_ n: Int, _ width: Int) -> String { pad(String(n), width) }
    static func right(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
    }
}
