import DeviceRuntime
import EventChannels
import GrantTables
import GuestMemory
import XenABI
import XenStore

// A guest domain without a VM: host-addressable memory (`MappedGuestMemory`,
// no KVM) with the VMM's services for it (a real grant table, event-channel
// table, XenStore and device runtime) and the guest's own side of each:
// pages it allocates, grant entries it writes, its store connection, the
// events it waits for. What the block backend's tests and `pvh-bench
// block` run a frontend in.

/// Domain 1 in `memoryBytes` of host-addressable memory: shared_info at
/// frame 0x10, pages handed out from frame 0x100, and at the top the grant
/// table's default area (Xen's v1 table, `grantFrames` frames set up with
/// GNTTABOP_setup_table: 512 entries each).
public final class FrontendGuest {
    /// The guest's domain id.
    public static let domain = DomainID(rawValue: 1)
    /// Where shared_info is (the event bitmaps a frontend's port uses).
    public static let sharedInfoFrame = GuestFrameNumber(0x10)
    /// The first frame `allocatePages` hands out.
    static let firstPage: UInt64 = 0x100
    /// Frames left at the top for the grant table's default area (its
    /// shared and status frames: 72 for 64 frames).
    static let grantAreaFrames: UInt64 = 0x100

    /// The guest's RAM.
    public let memory: MappedGuestMemory
    /// The VMM's grant table of the domain (the guest writes its entries).
    public let grants: GrantTable
    /// The domain's event channels and the backend domain's.
    public let events: EventChannelTable
    /// Upcalls and the ports that became pending: what a frontend waits on.
    public let notifications: GuestNotifications
    /// The toolstack's store (privileged access).
    public let store: XenStoreServer
    /// The store as the backends under test reach it: `store` itself, or
    /// `store` over the wire (what `init`'s `backendStore` made).
    public let backendStore: any XenStoreService
    /// The guest's own, unprivileged store connection.
    public let storeWire: GuestStoreConnection
    /// Where the backends' queues run.
    public let runtime: DeviceRuntime
    private let grantFrames: [GuestFrameNumber]
    private let pageLimit: UInt64
    private var nextFrame = FrontendGuest.firstPage
    private var nextRef: UInt32 = 8  // 0..7 are reserved (GNTTAB_NR_RESERVED_ENTRIES)

    /// Makes the memory (a multiple of 4 KiB, at least 4 MiB), the
    /// services and the guest's store connection; sets up `grantFrames`
    /// frames of grant table (at most 64). `backendStore`, if given, makes
    /// the backends' access to the store and what waits for their watch
    /// handlers after a guest's write (a remote store's `settle`).
    /// `polling`, `mode`: the device runtime's (`DeviceRuntime(polling:mode:)`;
    /// `.caller`: the backends' pumps run in their `sync()`, on the caller's thread).
    public init(memoryBytes: Int = 32 << 20, grantFrames: Int = 4,
                backendStore: ((XenStoreServer) throws -> (any XenStoreService, @Sendable () -> Void))? = nil,
                polling: ExecutionContextPolling = .standard, mode: ExecutionContextMode = .thread) throws {
        runtime = DeviceRuntime(polling: polling, mode: mode)
        precondition(memoryBytes >= 4 << 20 && memoryBytes % 4096 == 0, "guest memory: a multiple of 4 KiB, at least 4 MiB")
        memory = try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(memoryBytes))])
        let area = UInt64(memoryBytes / 4096) - Self.grantAreaFrames
        pageLimit = area
        grants = GrantTable(configuration: .init(domainID: Self.domain, defaultArea: GuestFrameNumber(area)), memory: memory)
        let notifications = GuestNotifications(memory: memory)
        self.notifications = notifications
        events = EventChannelTable(configuration: .init(domainID: Self.domain, vcpuCount: 1), memory: memory,
                                   locator: notifications.locator, notifier: notifications)
        self.grantFrames = try grants.setupTable(domain: .`self`, frames: UInt32(grantFrames))
        store = XenStoreServer()
        store.introduceDomain(Self.domain)
        if let backendStore {
            let (access, settle) = try backendStore(store)
            self.backendStore = access
            storeWire = GuestStoreConnection(store, domain: Self.domain, settle: settle)
        } else {
            self.backendStore = store
            storeWire = GuestStoreConnection(store, domain: Self.domain)
        }
    }

    deinit { runtime.stopAll() }

    /// `count` fresh contiguous pages (zeroed), never handed out before.
    public func allocatePages(_ count: Int = 1) -> GuestFrameNumber {
        let frame = GuestFrameNumber(nextFrame)
        nextFrame += UInt64(count)
        precondition(nextFrame <= pageLimit, "guest out of pages")
        return frame
    }

    /// Grant references written so far can be followed by this many more.
    public var freeGrantReferences: Int { grantFrames.count * 512 - Int(nextRef) }

    /// A v1 grant of `frame` to domain 0, as gnttab_grant_foreign_access
    /// writes it (frame and domid, then the flags: one 8-byte store here).
    /// Throws when the table set up has no free entry.
    public func grant(_ frame: GuestFrameNumber, readOnly: Bool = false) throws -> GrantReference {
        guard freeGrantReferences > 0 else { throw BlockFrontendError.outOfGrantReferences }
        let ref = nextRef
        nextRef += 1
        var flags = GrantEntryFlags.permitAccess
        if readOnly { flags.insert(.readonly) }
        let entry = UInt64(flags.rawValue) | UInt64(DomainID.controlDomain.rawValue) << 16 | UInt64(frame.rawValue) << 32
        let at = GuestPhysicalAddress(grantFrames[Int(ref) / 512].rawValue << 12 + UInt64(ref % 512) * 8)
        try memory.store(entry, at: at)
        return GrantReference(rawValue: ref)
    }

    /// The guest-physical address of `offset` in `frame`.
    public func address(_ frame: GuestFrameNumber, _ offset: Int = 0) -> GuestPhysicalAddress {
        GuestPhysicalAddress(frame.rawValue << 12 + UInt64(offset))
    }

    /// Writes `bytes` from the start of `frame` (may run into the next pages).
    public func fill(_ frame: GuestFrameNumber, _ bytes: [UInt8]) throws { try memory.write(bytes, at: address(frame)) }

    /// The bytes of one page.
    public func page(_ frame: GuestFrameNumber) throws -> [UInt8] { try memory.read(at: address(frame), count: 4096) }
}
