import GuestMemory
import Locking
import XenABI

/// One guest domain's grant table: the shared frames (and, under v2, the
/// status frames) that live in the guest's memory, the operations the guest
/// runs on it (`grant_table_op`, XENMEM_add_to_physmap(XENMAPSPACE_grant_table))
/// and the backend side the VMM's device backends use to reach granted pages.
/// Semantics and errors follow Xen 4.17's xen/common/grant_table.c; each
/// operation names the function it follows.
///
/// **Frames.** Frames 0..<`maximumFrames` (`max_grant_frames`) exist from the
/// start; `frameCount` of them (`nr_grant_frames`, initially 1) make up the
/// table and it only grows (`gnttab_grow_table`). A frame's bytes are guest
/// memory at the frame number where it is placed: at first its slot in the
/// default area (`Configuration.defaultArea`, guest-physical space the
/// toolstack reserves in the memory map), then wherever the guest puts it with
/// XENMEM_add_to_physmap (`mapFrame`); moving a frame moves its contents, as
/// Xen moves the page. A default slot holds only its own frame. A frame
/// displaced by another mapping goes back to its slot.
///
/// **Holds.** A backend (`map`) or a guest copy pins an entry as Xen's active
/// entries do: the first pin sets GTF_reading (and GTF_writing for write
/// access) in the entry (v1, compare-and-swap on the flags/domid/frame word,
/// bounded retries) or its status word (v2), and the last release clears
/// them. The entry is copied once when first pinned; later changes by the
/// guest do not move a hold. One lock covers the state; guest memory is
/// touched under it, and nothing is notified.
public final class GrantTable: Sendable {
    /// Static facts about the domain's table.
    public struct Configuration: Sendable {
        /// The guest's domain id.
        public var domainID: DomainID
        /// The VMM's backend domain: the grantee of `map` and `copy(from:)`.
        public var backendDomainID: DomainID
        /// `max_grant_frames` (the toolstack's limit; Xen's default 64).
        public var maximumFrames: Int
        /// First frame of the default area: `defaultAreaFrameCount(maximumFrames)`
        /// frames, shared frames first, then the v2 status frames.
        public var defaultArea: GuestFrameNumber
        /// Most holds (backend mappings) at once, over all references.
        public var maximumHolds: Int

        public init(domainID: DomainID, backendDomainID: DomainID = DomainID(rawValue: 0),
                    maximumFrames: Int = GrantTable.defaultMaximumFrames, defaultArea: GuestFrameNumber,
                    maximumHolds: Int = 16384) {
            self.domainID = domainID
            self.backendDomainID = backendDomainID
            self.maximumFrames = maximumFrames
            self.defaultArea = defaultArea
            self.maximumHolds = maximumHolds
        }
    }

    /// Xen's `gnttab_max_frames` default, and QEMU's Xen emulation's.
    public static let defaultMaximumFrames = 64
    /// The largest `max_grant_frames` pvh accepts (a host limit, as Xen's
    /// `gnttab_max_frames` is): 1024 frames, 512Ki v1 entries.
    public static let maximumFramesLimit = 1024
    /// Bytes per frame.
    static let page = Int(GuestFrameNumber.pageSize)
    /// `GRANT_STATUS_PER_PAGE`.
    static let statusPerFrame = page / XenWire.GrantStatusEntry.size
    /// Holds of one kind on one reference (Xen's pin counters are 8 bits).
    static let maximumPins = 255

    /// `grant_to_status_frames`: status frames for `frames` v2 shared frames.
    public static func statusFrames(for frames: Int) -> Int {
        let entries = frames * (page / XenWire.GrantEntryV2.size)
        return (entries + statusPerFrame - 1) / statusPerFrame
    }

    /// Frames the default area needs: every shared frame and every status frame.
    public static func defaultAreaFrameCount(maximumFrames: Int) -> Int {
        maximumFrames + statusFrames(for: maximumFrames)
    }

    /// The table's static facts (`maximumFrames` as clamped at creation).
    public let configuration: Configuration
    let memory: any GuestMemory

    /// An active entry (Xen's `struct active_grant_entry`): who holds it and
    /// what it resolved to when first pinned.
    struct Active: Equatable {
        var grantee: DomainID
        var readers = 0
        var writers = 0
        /// The granted bytes, from the entry as copied at the first pin.
        var address: GuestPhysicalAddress
        var length: Int
        var isPinned: Bool { readers + writers > 0 }
    }

    /// The active entries by reference, in an array indexed by it (grown
    /// to the highest reference used, which `acquire` keeps below the
    /// table's size): a dictionary hashed the reference twice per map and
    /// twice per release, four SipHashes per granted page of a packet
    /// (perf: `Hasher` on the net backend's TX context).
    struct ActiveEntries {
        private var entries: [Active?] = []

        subscript(_ ref: UInt32) -> Active? {
            get { Int(ref) < entries.count ? entries[Int(ref)] : nil }
            set {
                let i = Int(ref)
                if i >= entries.count {
                    guard newValue != nil else { return }
                    entries.append(contentsOf: repeatElement(nil, count: i + 1 - entries.count))
                }
                entries[i] = newValue
            }
        }

        /// Whether an entry at `from` or beyond is pinned.
        func anyPinned(from: Int) -> Bool {
            entries.indices.contains { $0 >= from && entries[$0]?.isPinned == true }
        }
    }

    struct State {
        var version: UInt32 = 1
        var frameCount = 1
        var statusFrameCount = 0
        /// Where each shared frame is now (index < maximumFrames).
        var shared: [UInt64]
        /// Where each status frame is now.
        var status: [UInt64]
        var active = ActiveEntries()
        /// Backend holds outstanding (`GrantMapping`s alive): each is
        /// released exactly once, when its mapping ends (it is ~Copyable).
        var holds = 0
    }
    let state: Lock<State>

    /// A table of `configuration.maximumFrames` frames (clamped to
    /// 1...`maximumFramesLimit`) over `memory`. The default area must be
    /// guest memory.
    public init(configuration: Configuration, memory: any GuestMemory) {
        var configuration = configuration
        configuration.maximumFrames = min(max(configuration.maximumFrames, 1), Self.maximumFramesLimit)
        self.configuration = configuration
        self.memory = memory
        let base = configuration.defaultArea.rawValue
        let n = configuration.maximumFrames
        state = Lock(State(
            shared: (0..<n).map { base + UInt64($0) },
            status: (0..<Self.statusFrames(for: n)).map { base + UInt64(n + $0) }))
    }

    /// The VMM's backend domain (`configuration.backendDomainID`).
    public var backendDomain: DomainID { configuration.backendDomainID }

    /// The default area in guest-physical space.
    public var defaultAreaRange: GuestPhysicalRange {
        GuestPhysicalRange(start: GuestPhysicalAddress(configuration.defaultArea.rawValue << 12),
                           length: UInt64(Self.defaultAreaFrameCount(maximumFrames: configuration.maximumFrames)) << 12)
    }

    // MARK: plumbing

    enum Side { case guest, backend }

    /// `rcu_lock_domain_by_any_id`: DOMID_SELF or the guest's id is the guest,
    /// the backend domain's id the backend domain, anything else unknown.
    func side(_ domain: DomainID) -> Side? {
        if domain == .`self` || domain == configuration.domainID { return .guest }
        if domain == configuration.backendDomainID { return .backend }
        return nil
    }

    static func entrySize(_ version: UInt32) -> Int {
        version == 1 ? XenWire.GrantEntryV1.size : XenWire.GrantEntryV2.size
    }
    static func entriesPerFrame(_ version: UInt32) -> Int { page / entrySize(version) }

    /// `nr_grant_entries`.
    func entryCount(_ s: State) -> Int { s.frameCount * Self.entriesPerFrame(s.version) }

    func entryAddress(_ ref: UInt32, _ s: State) -> GuestPhysicalAddress {
        let per = Self.entriesPerFrame(s.version)
        let frame = s.shared[Int(ref) / per]
        return GuestPhysicalAddress(frame << 12 + UInt64((Int(ref) % per) * Self.entrySize(s.version)))
    }

    func statusAddress(_ ref: UInt32, _ s: State) -> GuestPhysicalAddress {
        let frame = s.status[Int(ref) / Self.statusPerFrame]
        return GuestPhysicalAddress(frame << 12 + UInt64((Int(ref) % Self.statusPerFrame) * XenWire.GrantStatusEntry.size))
    }

    /// Where `ref`'s GTF_reading/GTF_writing live: the v1 entry's flags or the v2 status word.
    func statusWord(_ ref: UInt32, _ s: State) -> GuestPhysicalAddress {
        s.version == 1 ? entryAddress(ref, s) : statusAddress(ref, s)
    }

    func zero(frame: UInt64) throws(GuestMemoryError) {
        try memory.fill(at: GuestPhysicalAddress(frame << 12), count: Self.page, with: 0)
    }

    /// `gnttab_grow_table`: at least `frames` shared frames (and under v2
    /// their status frames), new frames cleared. Never shrinks.
    func grow(to frames: Int, _ s: inout State) throws(XenErrno) {
        let target = max(frames, 1)
        guard target <= configuration.maximumFrames else { throw .einval }
        do {
            if target > s.frameCount {
                for i in s.frameCount..<target { try zero(frame: s.shared[i]) }
                s.frameCount = target
            }
            if s.version == 2 {
                let need = Self.statusFrames(for: s.frameCount)
                if need > s.statusFrameCount {
                    for i in s.statusFrameCount..<need { try zero(frame: s.status[i]) }
                    s.statusFrameCount = need
                }
            }
        } catch {
            throw .enomem
        }
    }

    // MARK: guest operations (do_grant_table_op, as hvm_grant_table_op allows)

    /// GNTTABOP_query_size (`gnttab_query_size`): the table's frames and its
    /// limit. GNTST_bad_domain for an unknown domain, GNTST_permission_denied
    /// for the backend domain (XSM_TARGET: a guest has no authority over it).
    public func querySize(domain: DomainID) throws(GrantStatus) -> (frames: UInt32, maximumFrames: UInt32) {
        switch side(domain) {
        case nil: throw .badDomain
        case .backend: throw .permissionDenied
        case .guest:
            let frames = state.withLock { $0.frameCount }
            return (UInt32(frames), UInt32(configuration.maximumFrames))
        }
    }

    /// GNTTABOP_setup_table (`gnttab_setup_table`): grows the table to
    /// `frames` frames and returns where each of them is. A frame the guest
    /// has not placed is in its default slot. GNTST_general_error above the
    /// limit or above `limit` (the caller's frame-list capacity: UINT_MAX
    /// native, 1021 compat).
    public func setupTable(domain: DomainID, frames: UInt32, limit: UInt32 = .max) throws(GrantStatus) -> [GuestFrameNumber] {
        switch side(domain) {
        case nil: throw .badDomain
        case .backend: throw .permissionDenied
        case .guest: break
        }
        return try state.withLock { (s: inout State) throws(GrantStatus) -> [GuestFrameNumber] in
            guard frames <= UInt32(configuration.maximumFrames), frames <= limit else { throw .generalError }
            let n = Int(frames)
            if n > s.frameCount || (s.version == 2 && Self.statusFrames(for: n) > s.statusFrameCount) {
                do { try grow(to: n, &s) } catch { throw .generalError }
            }
            return s.shared.prefix(n).map { GuestFrameNumber($0) }
        }
    }

    /// GNTTABOP_get_status_frames (`gnttab_get_status_frames`): where the
    /// first `count` status frames are. GNTST_general_error for more than the
    /// table has (all of them under v1) or more than `limit`.
    public func statusFrames(domain: DomainID, count: UInt32, limit: UInt32 = .max) throws(GrantStatus) -> [GuestFrameNumber] {
        switch side(domain) {
        case nil: throw .badDomain
        case .backend: throw .permissionDenied
        case .guest: break
        }
        return try state.withLock { (s: inout State) throws(GrantStatus) -> [GuestFrameNumber] in
            guard count <= UInt32(s.statusFrameCount), count <= limit else { throw .generalError }
            return s.status.prefix(Int(count)).map { GuestFrameNumber($0) }
        }
    }

    /// The table's version (1 or 2).
    public var version: UInt32 { state.withLock { $0.version } }
    /// `nr_grant_frames`.
    public var frameCount: Int { state.withLock { $0.frameCount } }
    /// `nr_status_frames` (0 under v1).
    public var statusFrameCount: Int { state.withLock { $0.statusFrameCount } }

    /// GNTTABOP_get_version (`gnttab_get_version`): -ESRCH unknown domain,
    /// -EPERM the backend domain (XSM_TARGET).
    public func version(domain: DomainID) throws(XenErrno) -> UInt32 {
        switch side(domain) {
        case nil: throw .esrch
        case .backend: throw .eperm
        case .guest: return version
        }
    }

    /// GNTTABOP_set_version (`gnttab_set_version`): -EINVAL for a version
    /// other than 1 or 2; the same version is a no-op. -EBUSY while any entry
    /// past the 8 reserved ones is held; -ERANGE going to v1 while a reserved
    /// entry holds a frame above 32 bits or a transitive grant. The reserved
    /// entries 0..<8 are kept (translated to the new layout, their
    /// GTF_reading/GTF_writing moved between flags and status words), every
    /// other entry is cleared. Going to v2 allocates the status frames (in
    /// their default slots); going to v1 drops them, and a status frame the
    /// guest had placed elsewhere leaves that frame zeroed.
    public func setVersion(_ newVersion: UInt32) throws(XenErrno) {
        guard newVersion == 1 || newVersion == 2 else { throw .einval }
        try state.withLock { (s: inout State) throws(XenErrno) in
            guard s.version != newVersion else { return }
            let reserved = GrantTableConstants.reservedEntries
            if s.active.anyPinned(from: reserved) { throw .ebusy }
            typealias V1 = XenWire.GrantEntryV1
            typealias V2 = XenWire.GrantEntryV2
            let reading = GrantEntryFlags.reading.rawValue | GrantEntryFlags.writing.rawValue
            // The reserved entries as v1 entries, each read once.
            var saved = [UInt8](repeating: 0, count: reserved * V1.size)
            do {
                if s.version == 1 {
                    saved = try memory.read(at: entryAddress(0, s), count: reserved * V1.size)
                } else {
                    let v2 = try memory.read(at: entryAddress(0, s), count: reserved * V2.size)
                    let status = try memory.read(at: statusAddress(0, s), count: reserved * XenWire.GrantStatusEntry.size)
                    for i in 0..<reserved {
                        let e = Array(v2[i * V2.size..<(i + 1) * V2.size])
                        let flags = GrantEntryFlags(rawValue: e.wireValue(XenWire.GrantEntryHeader.flags))
                        switch flags.type {
                        case .permitAccess:
                            let frame: UInt64 = e.wireValue(V2.fullPageFrame)
                            guard frame >> 32 == 0 else { throw XenErrno.erange }
                            let st = UInt16(status[2 * i]) | UInt16(status[2 * i + 1]) << 8
                            var v1 = [UInt8](repeating: 0, count: V1.size)
                            v1.setWireValue(flags.rawValue | (st & reading), in: V1.flags)
                            v1.setWireValue(e.wireValue(XenWire.GrantEntryHeader.domid, as: UInt16.self), in: V1.domid)
                            v1.setWireValue(UInt32(truncatingIfNeeded: frame), in: V1.frame)
                            saved.replaceSubrange(i * V1.size..<(i + 1) * V1.size, with: v1)
                        case .transitive:
                            throw XenErrno.erange
                        case .invalid, .acceptTransfer:
                            // Xen keeps only permit_access entries (the others read as zero).
                            break
                        }
                    }
                }
                if newVersion == 1 {
                    // gnttab_unpopulate_status_frames: the frames leave the
                    // guest's physmap; ours go back to their slots.
                    for i in 0..<s.statusFrameCount {
                        try zero(frame: s.status[i])
                        s.status[i] = statusDefault(i)
                    }
                    s.statusFrameCount = 0
                }
                // No crud from the old layout.
                for i in 0..<s.frameCount { try zero(frame: s.shared[i]) }
                s.version = newVersion
                if newVersion == 2 {
                    // gnttab_populate_status_frames.
                    s.statusFrameCount = Self.statusFrames(for: s.frameCount)
                    for i in 0..<s.statusFrameCount { try zero(frame: s.status[i]) }
                    var entries = [UInt8](repeating: 0, count: reserved * V2.size)
                    var status = [UInt8](repeating: 0, count: reserved * XenWire.GrantStatusEntry.size)
                    for i in 0..<reserved {
                        let v1 = Array(saved[i * V1.size..<(i + 1) * V1.size])
                        let flags: UInt16 = v1.wireValue(V1.flags)
                        var e = [UInt8](repeating: 0, count: V2.size)
                        e.setWireValue(flags & ~reading, in: XenWire.GrantEntryHeader.flags)
                        e.setWireValue(v1.wireValue(V1.domid, as: UInt16.self), in: XenWire.GrantEntryHeader.domid)
                        e.setWireValue(UInt64(v1.wireValue(V1.frame, as: UInt32.self)), in: V2.fullPageFrame)
                        entries.replaceSubrange(i * V2.size..<(i + 1) * V2.size, with: e)
                        status[2 * i] = UInt8(truncatingIfNeeded: flags & reading)
                    }
                    try memory.write(entries, at: entryAddress(0, s))
                    try memory.write(status, at: statusAddress(0, s))
                } else {
                    try memory.write(saved, at: entryAddress(0, s))
                }
            } catch let error as XenErrno {
                throw error
            } catch {
                throw .efault
            }
        }
    }

    func statusDefault(_ i: Int) -> UInt64 {
        configuration.defaultArea.rawValue + UInt64(configuration.maximumFrames + i)
    }
    func sharedDefault(_ i: Int) -> UInt64 { configuration.defaultArea.rawValue + UInt64(i) }

    /// GNTTABOP_swap_grant_ref (`swap_grant_ref`): swaps two entries (and
    /// their v2 status words). GNTST_bad_gntref beyond the table,
    /// GNTST_eagain while either is held; the same reference twice is a no-op.
    public func swap(_ a: GrantReference, _ b: GrantReference) -> GrantStatus {
        state.withLock { s in
            let n = entryCount(s)
            guard Int(a.rawValue) < n, Int(b.rawValue) < n else { return .badGrantReference }
            guard a != b else { return .okay }
            if s.active[a.rawValue]?.isPinned == true || s.active[b.rawValue]?.isPinned == true { return .again }
            do {
                let size = Self.entrySize(s.version)
                let ea = entryAddress(a.rawValue, s), eb = entryAddress(b.rawValue, s)
                let x = try memory.read(at: ea, count: size), y = try memory.read(at: eb, count: size)
                try memory.write(y, at: ea)
                try memory.write(x, at: eb)
                if s.version == 2 {
                    let sa = statusAddress(a.rawValue, s), sb = statusAddress(b.rawValue, s)
                    let p = try memory.load(UInt16.self, at: sa), q = try memory.load(UInt16.self, at: sb)
                    try memory.store(q, at: sa)
                    try memory.store(p, at: sb)
                }
                return .okay
            } catch {
                return .generalError
            }
        }
    }

    /// GNTTABOP_map_grant_ref (`map_grant_ref`) for an HVM caller: no flags
    /// to map with is GNTST_bad_gntref; device, application or PTE mappings
    /// are GNTST_general_error ("No device mapping in HVM domain");
    /// DOMID_SELF and unknown domains GNTST_bad_domain (`rcu_lock_domain_by_id`).
    /// The backend domain grants nothing: its table is one v1 frame of
    /// invalid entries, so GNTST_bad_gntref beyond it and
    /// GNTST_general_error inside. The guest's own grants cannot be mapped
    /// into its physmap here (pvh cannot alias a guest page at a second
    /// frame number): GNTST_general_error, Xen's status when the p2m mapping
    /// fails, after the reference's bounds check.
    public func mapForeign(domain: DomainID, reference: GrantReference, flags: GrantMapFlags) -> GrantStatus {
        guard !flags.isDisjoint(with: [.hostMap, .deviceMap]) else { return .badGrantReference }
        guard flags.isDisjoint(with: [.deviceMap, .applicationMap, .containsPTE]) else { return .generalError }
        guard domain != .`self` else { return .badDomain }
        switch side(domain) {
        case nil:
            return .badDomain
        case .backend:
            return Int(reference.rawValue) < Self.entriesPerFrame(1) ? .generalError : .badGrantReference
        case .guest:
            let n = state.withLock { entryCount($0) }
            return Int(reference.rawValue) < n ? .generalError : .badGrantReference
        }
    }

    /// GNTTABOP_unmap_grant_ref (`unmap_common`): the guest has no mappings
    /// (`mapForeign` never makes one), so every handle is beyond its
    /// maptrack table: GNTST_bad_handle.
    public func unmapForeign(handle: UInt32) -> GrantStatus { .badHandle }

    // MARK: XENMEM_add_to_physmap(XENMAPSPACE_grant_table)

    enum FrameKey: Hashable { case shared(Int), status(Int) }

    func location(_ key: FrameKey, _ s: State) -> UInt64 {
        switch key {
        case .shared(let i): s.shared[i]
        case .status(let i): s.status[i]
        }
    }
    func setLocation(_ key: FrameKey, _ gfn: UInt64, _ s: inout State) {
        switch key {
        case .shared(let i): s.shared[i] = gfn
        case .status(let i): s.status[i] = gfn
        }
    }
    func defaultLocation(_ key: FrameKey) -> UInt64 {
        switch key {
        case .shared(let i): sharedDefault(i)
        case .status(let i): statusDefault(i)
        }
    }

    /// The frame placed at `gfn`, if any.
    func frame(at gfn: UInt64, _ s: State) -> FrameKey? {
        if let i = s.shared.firstIndex(of: gfn) { return .shared(i) }
        if let i = s.status.firstIndex(of: gfn) { return .status(i) }
        return nil
    }

    func isInDefaultArea(_ gfn: UInt64) -> Bool {
        let base = configuration.defaultArea.rawValue
        return gfn >= base && gfn - base < UInt64(Self.defaultAreaFrameCount(maximumFrames: configuration.maximumFrames))
    }

    /// `gnttab_map_frame`'s checks without changing anything: whether
    /// XENMEM_add_to_physmap may place frame `index` (a status frame when
    /// XENMAPIDX_grant_table_status is set under v2) at `gfn`. The handler
    /// asks before it backs a hole, so a bad index costs no memory.
    public func checkFrameIndex(_ index: UInt64, at gfn: GuestFrameNumber) throws(XenErrno) {
        try state.withLock { (s: inout State) throws(XenErrno) in
            let key = try frameKey(index, s)
            guard !isInDefaultArea(gfn.rawValue) || gfn.rawValue == defaultLocation(key) else { throw .einval }
        }
    }

    /// Decodes and bounds an add_to_physmap index (`gnttab_map_frame`,
    /// `gnttab_get_shared_frame_mfn`, `gnttab_get_status_frame_mfn`): a frame
    /// beyond the table is fine if the table may grow to it.
    func frameKey(_ index: UInt64, _ s: State) throws(XenErrno) -> FrameKey {
        let bit = GrantTableConstants.statusFrameIndexBit
        if s.version == 2 && index & bit != 0 {
            let idx = index & ~bit
            guard idx < UInt64(s.status.count), Int(idx) < Self.statusFrames(for: configuration.maximumFrames) else { throw .einval }
            // nr_grant = status_to_grant_frames(idx + 1) must fit the limit,
            // unless the status frame already exists.
            if Int(idx) >= s.statusFrameCount {
                let grants = (Int(idx) + 1) * (Self.statusPerFrame / (Self.page / XenWire.GrantEntryV2.size))
                guard grants <= configuration.maximumFrames else { throw .einval }
            }
            return .status(Int(idx))
        }
        // Under v1 the status bit makes the index huge: beyond any limit (-EINVAL).
        guard index < UInt64(configuration.maximumFrames) else { throw .einval }
        return .shared(Int(index))
    }

    /// XENMEM_add_to_physmap(XENMAPSPACE_grant_table) (`gnttab_map_frame`,
    /// then xenmem_add_to_physmap_one's p2m update): grows the table to
    /// include the frame, then moves it to `gfn` with its contents; its old
    /// place is zeroed (the page left it). A frame already at `gfn` goes back
    /// to its default slot. `gfn` must be guest memory (the caller backs a
    /// hole first) and may not be another frame's default slot. -EINVAL for
    /// an index beyond the limit (any status index under v1).
    public func mapFrame(_ index: UInt64, at gfn: GuestFrameNumber) throws(XenErrno) {
        let target = gfn.rawValue
        guard target < (1 << 52), memory.contains(GuestPhysicalAddress(target << 12), count: GuestFrameNumber.pageSize)
        else { throw .einval }
        try state.withLock { (s: inout State) throws(XenErrno) in
            let key = try frameKey(index, s)
            guard !isInDefaultArea(target) || target == defaultLocation(key) else { throw .einval }
            switch key {
            case .shared(let i): if i >= s.frameCount { try grow(to: i + 1, &s) }
            case .status(let i):
                if i >= s.statusFrameCount {
                    try grow(to: (i + 1) * (Self.statusPerFrame / (Self.page / XenWire.GrantEntryV2.size)), &s)
                }
            }
            let current = location(key, s)
            guard current != target else { return }
            do {
                if let other = frame(at: target, s), other != key {
                    try move(other, to: defaultLocation(other), &s)
                }
                try move(key, to: target, &s)
            } catch {
                throw .efault
            }
        }
    }

    func move(_ key: FrameKey, to gfn: UInt64, _ s: inout State) throws(GuestMemoryError) {
        let from = location(key, s)
        let bytes = try memory.read(at: GuestPhysicalAddress(from << 12), count: Self.page)
        try memory.write(bytes, at: GuestPhysicalAddress(gfn << 12))
        try zero(frame: from)
        setLocation(key, gfn, &s)
    }

    /// Something else takes the frames in `range` (shared_info, a populated
    /// page): a grant frame placed there goes back to its default slot, with
    /// its contents (Xen unhooks the special page from the frame number).
    /// False, with nothing moved, when the range meets the default area:
    /// those frames have no other place.
    public func vacate(_ range: ClosedRange<GuestFrameNumber>) -> Bool {
        let lo = range.lowerBound.rawValue, hi = range.upperBound.rawValue
        let base = configuration.defaultArea.rawValue
        let end = base + UInt64(Self.defaultAreaFrameCount(maximumFrames: configuration.maximumFrames))
        guard hi < base || lo >= end else { return false }
        return state.withLock { s in
            var keys: [FrameKey] = []
            for (i, f) in s.shared.enumerated() where f >= lo && f <= hi { keys.append(.shared(i)) }
            for (i, f) in s.status.enumerated() where f >= lo && f <= hi { keys.append(.status(i)) }
            for key in keys { try? move(key, to: defaultLocation(key), &s) }
            return true
        }
    }

    /// Whether a grant frame (in use or not) is placed at `gfn`.
    public func holdsFrame(_ gfn: GuestFrameNumber) -> Bool {
        state.withLock { frame(at: gfn.rawValue, $0) != nil }
    }

    // MARK: pinning (acquire_grant_for_copy / release_grant_for_copy)

    /// Pins `ref` for `grantee`: on the first pin of its kind, sets the
    /// status bits (`_set_status`) and, on the very first, resolves the
    /// granted bytes from the one copy of the entry.
    func acquire(_ ref: UInt32, grantee: DomainID, write: Bool, _ s: inout State) throws(GrantError) -> Active {
        guard Int(ref) < entryCount(s) else { throw .badReference }
        let existing = s.active[ref]
        let pinned = existing?.isPinned ?? false
        if let existing, pinned {
            guard existing.grantee == grantee else { throw .notGranted }
            guard (write ? existing.writers : existing.readers) < Self.maximumPins else { throw .pinOverflow }
        }
        var act: Active
        if !pinned || (write && existing?.writers == 0) {
            let entry = try setStatus(ref, grantee: grantee, write: write, pinned: pinned, s)
            if let existing, pinned {
                act = existing
            } else {
                do {
                    act = try resolve(entry, grantee: grantee, s)
                } catch {
                    reduceStatus(ref, remaining: existing, wrote: write, s)
                    throw error
                }
            }
        } else if let existing {
            act = existing
        } else {
            throw .notGranted
        }
        if write { act.writers += 1 } else { act.readers += 1 }
        s.active[ref] = act
        return act
    }

    /// The granted bytes of a copied entry: v1 and v2 full pages, v2 sub-pages
    /// (`page_off + length` must stay in the page). The frame must be guest
    /// memory (`get_paged_frame`: GNTST_bad_page).
    func resolve(_ copied: CopiedEntry, grantee: DomainID, _ s: State) throws(GrantError) -> Active {
        let frame: UInt64
        var start = 0, length = Self.page
        switch copied {
        case .v1(let word):
            // The field's bytes of the little-endian 8-byte entry.
            let field = XenWire.GrantEntryV1.frame
            frame = (word >> UInt64(field.offset * 8)) & (UInt64.max >> UInt64(64 - field.size * 8))
        case .v2(let entry):
            let flags = GrantEntryFlags(rawValue: entry.wireValue(XenWire.GrantEntryHeader.flags))
            if flags.contains(.subPage) {
                frame = entry.wireValue(XenWire.GrantEntryV2.subPageFrame)
                start = Int(entry.wireValue(XenWire.GrantEntryV2.subPageOffset, as: UInt16.self))
                length = Int(entry.wireValue(XenWire.GrantEntryV2.subPageLength, as: UInt16.self))
                guard start + length <= Self.page else { throw .badSubPage }
            } else {
                frame = entry.wireValue(XenWire.GrantEntryV2.fullPageFrame)
            }
        }
        guard frame < (1 << 52) else { throw .badFrame }
        let address = GuestPhysicalAddress(frame << 12 + UInt64(start))
        guard memory.contains(GuestPhysicalAddress(frame << 12), count: GuestFrameNumber.pageSize) else { throw .badFrame }
        return Active(grantee: grantee, address: address, length: length)
    }

    /// A grant entry as `setStatus` copied it: a v1 entry is one 8-byte
    /// word (kept as the integer: no array per grant mapped), a v2 entry
    /// its bytes.
    enum CopiedEntry {
        case v1(UInt64)
        case v2([UInt8])
    }

    /// `_set_status_v1` / `_set_status_v2`. Returns the entry as copied.
    func setStatus(_ ref: UInt32, grantee: DomainID, write: Bool, pinned: Bool, _ s: State) throws(GrantError) -> CopiedEntry {
        let permit = GrantEntryFlags.permitAccess.rawValue
        let typeMask = GrantEntryFlags.typeMask.rawValue
        let readonly = GrantEntryFlags.readonly.rawValue
        let bits = write ? GrantEntryFlags.reading.rawValue | GrantEntryFlags.writing.rawValue : GrantEntryFlags.reading.rawValue
        let address = entryAddress(ref, s)
        func check(_ flags: UInt16, _ domid: UInt16) throws(GrantError) {
            if !pinned && (flags & typeMask != permit || domid != grantee.rawValue) { throw .notGranted }
            if write && flags & readonly != 0 { throw .readOnly }
        }
        do {
            if s.version == 1 {
                // The whole 8-byte entry (flags, domid, frame) in one load and
                // one CMPXCHG: the frame used is the one the flags were set on.
                var snapshot = try memory.load(UInt64.self, at: address)
                var retries = 0
                while true {
                    let flags = UInt16(truncatingIfNeeded: snapshot)
                    try check(flags, UInt16(truncatingIfNeeded: snapshot >> 16))
                    let desired = snapshot | UInt64(bits)
                    let previous = try memory.compareExchange(expected: snapshot, desired: desired, at: address)
                    if previous == snapshot { return .v1(desired) }
                    // The guest changed the entry under us: retry a few times, as
                    // Xen does, then give up on a guest that keeps changing it.
                    if retries == 4 { throw GrantError.unstable }
                    retries += 1
                    snapshot = previous
                }
            } else {
                let entry = try memory.read(at: address, count: XenWire.GrantEntryV2.size)
                let flags: UInt16 = entry.wireValue(XenWire.GrantEntryHeader.flags)
                let domid: UInt16 = entry.wireValue(XenWire.GrantEntryHeader.domid)
                try check(flags, domid)
                let status = statusAddress(ref, s)
                _ = try memory.atomicOr(bits, at: status)
                // The guest must see our bits before it can revoke; then check
                // that it had not revoked already (the second look is the
                // handshake, not a second use of the entry).
                let header = try memory.load(UInt32.self, at: address)
                let f = UInt16(truncatingIfNeeded: header), d = UInt16(truncatingIfNeeded: header >> 16)
                if !pinned {
                    if f & typeMask != permit || d != grantee.rawValue || (write && f & readonly != 0) {
                        _ = try memory.atomicAnd(~bits, at: status)
                        throw GrantError.unstable
                    }
                } else if f & readonly != 0 {
                    _ = try memory.atomicAnd(~GrantEntryFlags.writing.rawValue, at: status)
                    throw GrantError.unstable
                }
                return .v2(entry)
            }
        } catch let error as GrantError {
            throw error
        } catch {
            throw .memory
        }
    }

    /// `reduce_status_for_pin`: clear GTF_reading when nothing holds the
    /// entry any more, GTF_writing when no writer does. Only those two bits
    /// change; whatever else the guest wrote stays.
    func reduceStatus(_ ref: UInt32, remaining: Active?, wrote: Bool, _ s: State) {
        var clear: UInt16 = 0
        if !(remaining?.isPinned ?? false) { clear |= GrantEntryFlags.reading.rawValue }
        if wrote && (remaining?.writers ?? 0) == 0 { clear |= GrantEntryFlags.writing.rawValue }
        guard clear != 0, Int(ref) < entryCount(s) else { return }
        _ = try? memory.atomicAnd(~clear, at: statusWord(ref, s))
    }

    /// `release_grant_for_copy`.
    func release(_ ref: UInt32, write: Bool, _ s: inout State) {
        guard var act = s.active[ref] else { return }
        if write { act.writers = max(0, act.writers - 1) } else { act.readers = max(0, act.readers - 1) }
        s.active[ref] = act.isPinned ? act : nil
        reduceStatus(ref, remaining: act, wrote: write, s)
    }

    /// GNTTABOP_copy, one operation (`gnttab_copy_one`): both ends are the
    /// guest's (DOMID_SELF or its id) or the backend domain's. A frame may
    /// only be named with DOMID_SELF (GNTST_permission_denied otherwise, even
    /// for the guest's own id) and must be guest memory (GNTST_bad_page); a
    /// guest grant must be granted to the guest itself, and is pinned for the
    /// copy (GTF_reading, GTF_writing for the destination) as Xen does. The
    /// backend domain grants nothing (see `mapForeign`). Beyond the page:
    /// GNTST_bad_copy_arg; beyond the granted bytes: GNTST_general_error.
    public func copy(_ op: GrantCopyOperation) -> GrantStatus {
        // gnttab_copy_lock_domains.
        for p in [op.source, op.destination] {
            if case .frame = p.target, p.domain != .`self` { return .permissionDenied }
            if side(p.domain) == nil { return .badDomain }
        }
        return state.withLock { s in
            var taken: [(UInt32, Bool)] = []
            defer { for (ref, write) in taken { release(ref, write: write, &s) } }
            func claim(_ p: GrantCopyPointer, write: Bool) -> Result<(GuestPhysicalAddress, Int), GrantStatus> {
                switch p.target {
                case .frame(let gfn):
                    guard gfn.rawValue < (1 << 52),
                          memory.contains(GuestPhysicalAddress(gfn.rawValue << 12), count: GuestFrameNumber.pageSize)
                    else { return .failure(.badPage) }
                    return .success((GuestPhysicalAddress(gfn.rawValue << 12), Self.page))
                case .grant(let ref):
                    if side(p.domain) == .backend {
                        return .failure(Int(ref.rawValue) < Self.entriesPerFrame(1) ? .generalError : .badGrantReference)
                    }
                    do {
                        let act = try acquire(ref.rawValue, grantee: configuration.domainID, write: write, &s)
                        taken.append((ref.rawValue, write))
                        return .success((act.address, act.length))
                    } catch {
                        return .failure(error.status)
                    }
                }
            }
            let src: (GuestPhysicalAddress, Int), dst: (GuestPhysicalAddress, Int)
            switch claim(op.source, write: false) {
            case .failure(let e): return e
            case .success(let r): src = r
            }
            switch claim(op.destination, write: true) {
            case .failure(let e): return e
            case .success(let r): dst = r
            }
            // gnttab_copy_buf.
            let len = Int(op.length)
            let so = Int(op.source.offset), dof = Int(op.destination.offset)
            guard so + len <= Self.page, dof + len <= Self.page else { return .badCopyArgument }
            let sStart = Int(src.0.pageOffset), dStart = Int(dst.0.pageOffset)
            guard so >= sStart, so + len <= sStart + src.1, dof >= dStart, dof + len <= dStart + dst.1 else {
                return .generalError
            }
            do {
                let srcPage = src.0.rawValue & ~0xfff, dstPage = dst.0.rawValue & ~0xfff
                let bytes = try memory.read(at: GuestPhysicalAddress(srcPage + UInt64(so)), count: len)
                try memory.write(bytes, at: GuestPhysicalAddress(dstPage + UInt64(dof)))
                return .okay
            } catch {
                return .generalError
            }
        }
    }

    // MARK: the toolstack

    /// Writes a full-page GTF_permit_access entry with the toolstack's
    /// authority, as libxl does for the reserved entries at domain creation
    /// (xc_dom_gnttab_seed: GNTTAB_RESERVED_CONSOLE and
    /// GNTTAB_RESERVED_XENSTORE grant the console and XenStore rings to
    /// their backends). The frame and domid go in before the flags, so a
    /// reader never sees a valid entry with stale contents.
    public func seed(_ reference: GrantReference, to domain: DomainID, frame: GuestFrameNumber) throws(GrantError) {
        try state.withLock { (s: inout State) throws(GrantError) in
            guard Int(reference.rawValue) < entryCount(s) else { throw .badReference }
            let at = entryAddress(reference.rawValue, s)
            do {
                if s.version == 1 {
                    guard frame.rawValue <= UInt64(UInt32.max) else { throw GrantError.badFrame }
                    try memory.store(UInt32(frame.rawValue), at: GuestPhysicalAddress(at.rawValue + UInt64(XenWire.GrantEntryV1.frame.offset)))
                } else {
                    try memory.store(frame.rawValue, at: GuestPhysicalAddress(at.rawValue + UInt64(XenWire.GrantEntryV2.fullPageFrame.offset)))
                }
                try memory.store(domain.rawValue, at: GuestPhysicalAddress(at.rawValue + UInt64(XenWire.GrantEntryHeader.domid.offset)))
                try memory.store(GrantEntryFlags.permitAccess.rawValue, at: GuestPhysicalAddress(at.rawValue + UInt64(XenWire.GrantEntryHeader.flags.offset)))
            } catch let error as GrantError {
                throw error
            } catch {
                throw .memory
            }
        }
    }

    // MARK: the backend side

    /// Maps `reference` for the backend domain: the granted bytes while the
    /// entry permits it (GTF_permit_access to `backendDomainID`, not
    /// GTF_readonly for `.write`, a v2 sub-page's bounds, the frame in guest
    /// memory). GTF_reading (and GTF_writing) stay set until the last holder
    /// releases. Transitive grants are refused (the only other domain is the
    /// backend itself).
    public func map(_ reference: GrantReference, access: GrantAccess) throws(GrantError) -> GrantMapping {
        let write = access == .write
        let act = try state.withLock { (s: inout State) throws(GrantError) -> Active in
            guard s.holds < configuration.maximumHolds else { throw .tooManyHolds }
            let act = try acquire(reference.rawValue, grantee: configuration.backendDomainID, write: write, &s)
            s.holds += 1
            return act
        }
        return GrantMapping(table: self, reference: reference, access: access,
                            region: GuestPhysicalRange(start: act.address, length: UInt64(act.length)))
    }

    /// `map` of each of `references` under one lock (a `GrantHoldSet`'s,
    /// `withHolds`'): their granted bytes, in order, into `regions`
    /// (emptied first); on a failure those before are released, nothing
    /// stays held and `regions` is left empty.
    @usableFromInline
    func mapAll(_ references: [GrantReference], write: Bool, into regions: inout [GuestPhysicalRange]) throws(GrantError) {
        regions.removeAll(keepingCapacity: true)
        regions.reserveCapacity(references.count)
        try state.withLock { (s: inout State) throws(GrantError) in
            for reference in references {
                do throws(GrantError) {
                    guard s.holds < configuration.maximumHolds else { throw .tooManyHolds }
                    let act = try acquire(reference.rawValue, grantee: configuration.backendDomainID, write: write, &s)
                    s.holds += 1
                    regions.append(GuestPhysicalRange(start: act.address, length: UInt64(act.length)))
                } catch {
                    for taken in references.prefix(regions.count) {
                        s.holds -= 1
                        release(taken.rawValue, write: write, &s)
                    }
                    regions.removeAll(keepingCapacity: true)
                    throw error
                }
            }
        }
    }

    /// Ends one hold of each of `references` under one lock (a `GrantHoldSet`'s, once).
    @usableFromInline
    func releaseHolds(_ references: [GrantReference], write: Bool) {
        state.withLock { s in
            for reference in references {
                s.holds -= 1
                release(reference.rawValue, write: write, &s)
            }
        }
    }

    /// Ends one hold of `reference` (a `GrantMapping`'s, once, at its end).
    func releaseHold(_ reference: GrantReference, write: Bool) {
        state.withLock { s in
            s.holds -= 1
            release(reference.rawValue, write: write, &s)
        }
    }

    /// Reads `count` bytes at `offset` in the granted bytes of `reference`
    /// (a one-shot read mapping, released before returning).
    public func copy(from reference: GrantReference, offset: Int = 0, count: Int) throws(GrantError) -> [UInt8] {
        let mapping = try map(reference, access: .read)
        return try mapping.read(offset: offset, count: count)
    }

    /// Writes `bytes` at `offset` in the granted bytes of `reference` (a
    /// one-shot write mapping, released before returning).
    public func copy(to reference: GrantReference, _ bytes: [UInt8], at offset: Int = 0) throws(GrantError) {
        let mapping = try map(reference, access: .write)
        try mapping.write(bytes, at: offset)
    }

    /// `copy(to:_:at:)` of a part of a larger buffer, without copying it out first.
    public func copy(to reference: GrantReference, _ bytes: ArraySlice<UInt8>, at offset: Int = 0) throws(GrantError) {
        let mapping = try map(reference, access: .write)
        try mapping.write(bytes, at: offset)
    }

    /// How many holds (readers, writers) `reference` has now.
    public func pins(_ reference: GrantReference) -> (readers: Int, writers: Int) {
        state.withLock { s in
            let a = s.active[reference.rawValue]
            return (a?.readers ?? 0, a?.writers ?? 0)
        }
    }

    /// Backend holds outstanding.
    public var holdCount: Int { state.withLock { $0.holds } }
}
