import XenABI
import XenStore

/// The XenStore tree the toolstack writes for a new domain, as libxl does
/// (tools/libs/light/libxl_create.c libxl__domain_make and libxl_dom.c
/// libxl__build_post): the domain's home readable by it (`n0,r<id>`), the
/// nodes the guest writes owned by it (`n<id>`), and what the guest reads to
/// find its devices, memory target and console.
public struct DomainStoreLayout: Sendable, Equatable {
    public var domain: DomainID
    public var name: String
    /// The domain's UUID, as `/vm/<uuid>`.
    public var uuid: String
    /// `memory/static-max` and the initial `memory/target`, KiB.
    public var maximumMemoryKiB: Int
    public var targetMemoryKiB: Int
    public var vcpus: Int
    /// The XenStore ring (`store/ring-ref`, `store/port`).
    public var storeFrame: UInt64
    public var storePort: UInt32
    /// The primary console ring (`console/ring-ref`, `console/port`).
    public var consoleFrame: UInt64
    public var consolePort: UInt32

    public init(domain: DomainID, name: String, uuid: String, maximumMemoryKiB: Int, targetMemoryKiB: Int, vcpus: Int,
                storeFrame: UInt64, storePort: UInt32, consoleFrame: UInt64, consolePort: UInt32) {
        self.domain = domain
        self.name = name
        self.uuid = uuid
        self.maximumMemoryKiB = maximumMemoryKiB
        self.targetMemoryKiB = targetMemoryKiB
        self.vcpus = vcpus
        self.storeFrame = storeFrame
        self.storePort = storePort
        self.consoleFrame = consoleFrame
        self.consolePort = consolePort
    }

    /// `/local/domain/<id>`.
    public var home: String { "/local/domain/\(domain.rawValue)" }
    /// `/vm/<uuid>`.
    public var vmPath: String { "/vm/\(uuid)" }

    /// Nodes the guest may write (libxl's `rwperm`: owned by the guest).
    public static let guestWritable = [
        "control/shutdown", "control/feature-poweroff", "control/feature-reboot", "control/feature-suspend",
        "control/sysrq", "data", "drivers", "feature", "attr", "error", "device/suspend/event-channel",
    ]
    /// Directories the guest may only read (libxl's `roperm`).
    public static let guestReadable = ["cpu", "memory", "device", "control"]

    /// Writes the tree: the control domain's own entry first (once), then
    /// the domain's. Any old tree of the same domain is removed first.
    public func write(to store: any XenStoreService) throws(XenStoreError) {
        let dom0 = DomainID.controlDomain
        let readOnly = XenStorePermissions(owner: dom0, defaultAccess: .none, entries: [(domain, .read)])
        let guestOwned = XenStorePermissions(owner: domain, defaultAccess: .none)

        if (try? store.read("/local/domain/0/name")) == nil {
            try store.write("/local/domain/0/name", "Domain-0")
            try store.write("/local/domain/0/domid", "0")
        }
        try? store.remove(home)
        try? store.remove(vmPath)
        try store.mkdir(home)
        try store.setPermissions(home, readOnly)
        try store.mkdir(vmPath)
        try store.setPermissions(vmPath, readOnly)
        try store.write("\(vmPath)/uuid", uuid)
        try store.write("\(vmPath)/name", name)

        for dir in Self.guestReadable {
            try store.mkdir("\(home)/\(dir)")
            try store.setPermissions("\(home)/\(dir)", readOnly)
        }
        for node in Self.guestWritable {
            try store.mkdir("\(home)/\(node)")
            try store.setPermissions("\(home)/\(node)", guestOwned)
        }
        // Children written below inherit their parent's permissions (the
        // guest can read them), as xenstored gives a new node its parent's.
        try store.write("\(home)/vm", vmPath)
        try store.write("\(home)/name", name)
        try store.write("\(home)/domid", String(domain.rawValue))
        try store.write("\(home)/control/platform-feature-multiprocessor-suspend", "1")
        try store.write("\(home)/control/platform-feature-xs_reset_watches", "1")
        try store.write("\(home)/memory/static-max", String(maximumMemoryKiB))
        try store.write("\(home)/memory/target", String(targetMemoryKiB))
        try store.write("\(home)/memory/videoram", "-1")
        for cpu in 0..<vcpus {
            try store.write("\(home)/cpu/\(cpu)/availability", "online")
        }
        try store.write("\(home)/store/ring-ref", String(storeFrame))
        try store.write("\(home)/store/port", String(storePort))
        try store.write("\(home)/console/ring-ref", String(consoleFrame))
        try store.write("\(home)/console/port", String(consolePort))
        try store.write("\(home)/console/limit", "1048576")
        try store.write("\(home)/console/type", "xenconsoled")
        try store.write("\(home)/console/output", "pty")
        for dir in ["store", "console"] {
            try store.setPermissions("\(home)/\(dir)", readOnly)
        }
    }

    /// Removes the domain's tree (domain destruction: libxl__destroy_domid
    /// removes the home and /vm entries).
    public func remove(from store: any XenStoreService) {
        try? store.remove(home)
        try? store.remove(vmPath)
    }
}
