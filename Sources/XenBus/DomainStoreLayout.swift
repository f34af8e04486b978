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
    /// Whether this process is the domain's toolstack as well as its
    /// builder: true for `pvh run`'s embedded store, which writes and
    /// removes the whole tree; false for a host daemon's guest process, where
    /// the daemon writes `/vm/<uuid>`, the home node with its permissions
    /// and `name`/`vm`/`domid` (`toolstackNodes`), before the process starts
    /// and removes the whole home when it reaps the process, and this
    /// layout writes and removes only the subtrees under the home
    /// (`builderSubtrees`). Nothing is written by both.
    public var writesToolstackNodes: Bool

    public init(domain: DomainID, name: String, uuid: String, maximumMemoryKiB: Int, targetMemoryKiB: Int, vcpus: Int,
                storeFrame: UInt64, storePort: UInt32, consoleFrame: UInt64, consolePort: UInt32,
                writesToolstackNodes: Bool = true) {
        self.writesToolstackNodes = writesToolstackNodes
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
    /// The home's direct children a daemon's guest process writes (every
    /// first component of `guestWritable` and `guestReadable`, and the two
    /// rings' directories).
    public static let builderSubtrees = ["cpu", "memory", "device", "control", "data", "drivers", "feature", "attr", "error",
                                         "store", "console"]
    /// The home's direct children the toolstack writes (libxl__domain_make).
    public static let toolstackNodes = ["name", "vm", "domid"]

    /// The home's permissions and /vm's: the control domain's, readable
    /// by the domain (libxl's `roperm`).
    public static func readOnly(for domain: DomainID) -> XenStorePermissions {
        XenStorePermissions(owner: .controlDomain, defaultAccess: .none, entries: [(domain, .read)])
    }

    /// Writes the tree: the control domain's own entry first (once), then
    /// the domain's. Any old tree of the same domain is removed first (for
    /// a daemon's guest process, its own subtrees only).
    public func write(to store: any XenStoreService) throws(XenStoreError) {
        let readOnly = Self.readOnly(for: domain)
        let guestOwned = XenStorePermissions(owner: domain, defaultAccess: .none)

        if writesToolstackNodes {
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
        } else {
            for subtree in Self.builderSubtrees { try? store.remove("\(home)/\(subtree)") }
        }

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
        if writesToolstackNodes {
            try store.write("\(home)/vm", vmPath)
            try store.write("\(home)/name", name)
            try store.write("\(home)/domid", String(domain.rawValue))
        }
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
    /// removes the home and /vm entries); a daemon's guest process removes
    /// its subtrees only and leaves the home to the daemon.
    public func remove(from store: any XenStoreService) {
        guard writesToolstackNodes else {
            for subtree in Self.builderSubtrees { try? store.remove("\(home)/\(subtree)") }
            return
        }
        try? store.remove(home)
        try? store.remove(vmPath)
    }
}
