import GuestMemory
import XenABI

// XENMEM_increase_reservation, XENMEM_decrease_reservation and
// XENMEM_populate_physmap, after Xen 4.17 xen/common/memory.c do_memory_op,
// construct_memop_from_reservation, increase_reservation,
// decrease_reservation, populate_physmap and guest_remove_page (compat
// layout: xen/common/compat/memory.c compat_memory_op).
//
// The result is always progress: the index of the first extent not done
// (start_extent + extents completed). Xen returns no errno from these three
// sub-ops: a reservation it cannot copy in, a bad domid, an oversized
// nr_extents, a bad order or bad mem_flags all return start_extent, and a
// bad entry (not populated, out of range, unreadable) ends the loop there.
//
// Continuations: Xen preempts the loop (hypercall_preempt_check) and
// restarts the hypercall with `op | nr_done << MEMOP_EXTENT_SHIFT`. The
// dispatcher has no continuations, so the whole request runs in one call;
// the work is still bounded: a decrease stops at the first frame that is not
// populated (at most every RAM frame once), a populate at the page limit
// (each extent charges at least one page), and an increase is arithmetic.
// Guests may pass a start extent themselves; it is honoured as Xen does.
extension HypercallDispatcher {
    /// `max_order()` for a domU on x86: CONFIG_DOMU_MAX_ORDER is
    /// PAGETABLE_ORDER (9, 2 MiB extents), below MAX_ORDER.
    static let maximumExtentOrder: UInt32 = 9
    /// Entries copied from the extent list at once (at most one guest page's worth).
    static let extentChunk = 512

    func reservationOp(_ command: MemoryOpCommand, startExtent: UInt64, _ arg: GuestVirtualAddress,
                       _ c: CallContext, backing: any ReservationService) -> Int64 {
        // start_extent < 2^58: it came from the command word shifted right by 6.
        let unchanged = Int64(clamping: startExtent)
        let layout = XenWire.MemoryReservation.self
        // The reservation is copied in once; every field below comes from this copy.
        guard let bytes = try? c.guest.readVirtual(at: arg, count: layout.size(c.mode)) else { return unchanged }
        let handle = GuestVirtualAddress(bytes.wireValue(layout.extentStart(c.mode), as: UInt64.self))
        let extents = bytes.wireValue(layout.nrExtents(c.mode), as: UInt64.self)
        let order = bytes.wireValue(layout.extentOrder(c.mode), as: UInt32.self)
        let flags = bytes.wireValue(layout.memFlags(c.mode), as: UInt32.self)
        let domid = bytes.wireValue(layout.domid(c.mode), as: UInt16.self)

        // do_memory_op: "Is size too large for us to encode a continuation?"
        guard extents <= UInt64(UInt32.max) >> MemoryOpCommand.extentShift else { return unchanged }
        guard startExtent < extents else { return unchanged }
        // rcu_lock_domain_by_any_id fails (-ESRCH internally) or
        // xsm_memory_adjust_reservation refuses another domain (-EPERM
        // internally): both return start_extent to the guest.
        guard (try? checkSelf(domid)) != nil else { return unchanged }
        guard Self.acceptsFlags(flags) else { return unchanged }

        let done: UInt64
        switch command {
        case .increaseReservation:
            done = increaseReservation(from: startExtent, extents: extents, order: order)
        case .decreaseReservation:
            done = decreaseReservation(from: startExtent, extents: extents, order: order, handle: handle, c, backing)
        default:
            done = populatePhysmap(from: startExtent, extents: extents, order: order, flags: flags, handle: handle, c, backing)
        }
        return Int64(clamping: done)
    }

    /// construct_memop_from_reservation for a domU without vNUMA: address
    /// bits 1...PAGE_SHIFT are -EINVAL (larger widths only steer Xen's
    /// allocator, and are ignored here; the host's max_page makes every
    /// width ≤ 12 fall in Xen's checked range); a node with
    /// XENMEMF_exact_node_request is -EINVAL (propagate_node: only the
    /// hardware or control domain may name a physical node); XENMEMF_vnode
    /// is accepted and ignored (the domain has no vNUMA, `d->vnuma` is NULL).
    static func acceptsFlags(_ flags: UInt32) -> Bool {
        let layout = XenWire.MemoryReservation.self
        let bits = flags & layout.addressBitsMask
        if bits != 0, bits <= 12 { return false }
        if flags & layout.virtualNode != 0 { return true }
        if layout.node(flags) != layout.noNode, flags & layout.exactNodeRequest != 0 { return false }
        return true
    }

    /// increase_reservation: an HVM (translated) guest's extents are
    /// allocated to the domain but not mapped, and the extent list is not
    /// written (no MFNs for translated guests). Stops at the page limit.
    private func increaseReservation(from start: UInt64, extents: UInt64, order: UInt32) -> UInt64 {
        guard order <= Self.maximumExtentOrder else { return start }
        return start + reservation.allocateUnmapped(extents: extents - start, pagesPerExtent: 1 << UInt64(order))
    }

    /// decrease_reservation: each entry is a GFN; guest_remove_page on each
    /// of its 2^order frames. A frame that is not populated or lies outside
    /// RAM (p2m_invalid: -ENOENT, no populate-on-demand here) ends the loop;
    /// frames of that extent already removed stay removed and the extent is
    /// not counted, as in Xen.
    private func decreaseReservation(from start: UInt64, extents: UInt64, order: UInt32, handle: GuestVirtualAddress,
                                     _ c: CallContext, _ backing: any ReservationService) -> UInt64 {
        guard order <= Self.maximumExtentOrder else { return start }
        let pages: UInt64 = 1 << UInt64(order)
        var list = ExtentList(handle: handle, count: extents, entrySize: XenWire.MemoryReservation.pfnSize(c.mode), guest: c.guest)
        var i = start
        while i < extents {
            guard let gfn = list.entry(i) else { return i }  // __copy_from_guest_offset failed
            guard reservation.remove(from: gfn, count: pages, backing: backing) == pages else { return i }
            i += 1
        }
        return i
    }

    /// populate_physmap: each entry is a GFN to back with 2^order fresh
    /// (zero) frames. Stops when the domain would exceed its page limit, a
    /// frame is outside RAM, or the entry cannot be read. With
    /// XENMEMF_populate_on_demand, Xen refuses PoD on the calling domain
    /// itself ("Disallow populating PoD pages on oneself"): no progress.
    private func populatePhysmap(from start: UInt64, extents: UInt64, order: UInt32, flags: UInt32,
                                 handle: GuestVirtualAddress, _ c: CallContext,
                                 _ backing: any ReservationService) -> UInt64 {
        // PoD on oneself: whatever the order (PoD allows up to MAX_ORDER) and
        // whether or not the first entry reads, the loop ends at start_extent.
        guard flags & XenWire.MemoryReservation.populateOnDemand == 0 else { return start }
        guard order <= Self.maximumExtentOrder else { return start }
        let pages: UInt64 = 1 << UInt64(order)
        var list = ExtentList(handle: handle, count: extents, entrySize: XenWire.MemoryReservation.pfnSize(c.mode), guest: c.guest)
        var i = start
        while i < extents {
            guard let gfn = list.entry(i) else { return i }
            // A grant frame placed there makes way (p2m_add_page replaces the
            // mapping); the grant table's own area cannot be populated.
            if let grants = grantTables {
                let (last, overflow) = gfn.addingReportingOverflow(pages - 1)
                guard !overflow, grants.vacate(GuestFrameNumber(gfn)...GuestFrameNumber(last)) else { return i }
            }
            guard reservation.populate(from: gfn, count: pages, backing: backing) else { return i }
            i += 1
        }
        return i
    }
}

/// The guest's extent list (`XEN_GUEST_HANDLE(xen_pfn_t)`), read a guest
/// page at a time: each entry is copied from the guest once, and an entry
/// Xen's `__copy_from_guest_offset` could not read is nil.
struct ExtentList {
    let handle: GuestVirtualAddress
    let count: UInt64
    let entrySize: Int
    let guest: GuestAddressTranslator
    private var cache: [UInt8] = []
    private var cacheFirst: UInt64 = 0
    private var cacheCount: UInt64 = 0

    init(handle: GuestVirtualAddress, count: UInt64, entrySize: Int, guest: GuestAddressTranslator) {
        self.handle = handle
        self.count = count
        self.entrySize = entrySize
        self.guest = guest
    }

    /// Entry `index` (< count), zero-extended.
    mutating func entry(_ index: UInt64) -> UInt64? {
        if !(index >= cacheFirst && index - cacheFirst < cacheCount) {
            guard fill(from: index) else { return nil }
        }
        let offset = Int(index - cacheFirst) * entrySize
        return cache.wireValue(WireField(offset: offset, size: entrySize), as: UInt64.self)
    }

    /// Copies the entries from `index` to the end of the guest page that
    /// holds its first byte (at least that entry, at most `extentChunk`).
    /// All of them lie in one or two pages, so the copy fails exactly when
    /// Xen's copy of entry `index` would.
    private mutating func fill(from index: UInt64) -> Bool {
        let size = UInt64(entrySize)
        let (offset, o1) = index.multipliedReportingOverflow(by: size)
        let (address, o2) = handle.rawValue.addingReportingOverflow(offset)
        guard !o1, !o2 else { return false }
        let toPageEnd = 4096 - (address & 0xfff)
        let n = min(max(toPageEnd / size, 1), count - index, UInt64(HypercallDispatcher.extentChunk))
        guard let bytes = try? guest.readVirtual(at: GuestVirtualAddress(address), count: Int(n * size)) else { return false }
        cache = bytes
        cacheFirst = index
        cacheCount = n
        return true
    }
}
