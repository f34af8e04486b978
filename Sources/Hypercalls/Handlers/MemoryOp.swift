import GuestMemory
import XenABI

// memory_op, after Xen 4.17 xen/common/memory.c do_memory_op,
// xen/arch/x86/mm.c arch_memory_op and xen/arch/x86/hvm/hypercall.c hvm_memory_op.
extension HypercallDispatcher {
    func memoryOp(_ command: MemoryOpCommand, startExtent: UInt64, _ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        switch command {
        case .memoryMap:
            // arch_memory_op matches the whole command word: extent bits → default (-ENOSYS).
            guard startExtent == 0 else { throw .enosys }
            return try memoryMap(arg, c)
        case .currentReservation, .maximumReservation:
            guard startExtent == 0 else { throw .einval }
            let bytes = try c.guest.readVirtual(at: arg, count: XenWire.MemoryDomain.size)
            try checkSelf(bytes.wireValue(XenWire.MemoryDomain.domid, as: UInt16.self))
            // domain_tot_pages(d) / d->max_pages.
            // The live limit: the toolstack may have changed it (mem-max).
            let pages = command == .currentReservation ? reservation.currentPages : reservation.maximumPages
            return Int64(clamping: pages)
        case .increaseReservation, .decreaseReservation, .populatePhysmap:
            // Without a service to release host memory the domain keeps all its RAM.
            guard let backing = reservationService else { throw .enosys }
            return reservationOp(command, startExtent: startExtent, arg, c, backing: backing)
        case .addToPhysmap:
            // The start extent must fit xatp.size (uint16_t).
            guard startExtent <= UInt64(UInt16.max) else { throw .edom }
            return try addToPhysmap(arg, c)
        case .addToPhysmapBatch:
            // The start extent must fit xatpb.size (uint16_t).
            guard startExtent <= UInt64(UInt16.max) else { throw .edom }
            return try addToPhysmapBatch(arg, startExtent: startExtent, c)
        case .machineMemoryMap, .machphysMapping:
            // Refused to HVM guests outright (hvm_memory_op).
            throw .enosys
        case .getPodTarget, .setPodTarget:
            // Populate-on-demand needs the toolstack (x86 arch_memory_op:
            // set_pod_target is privileged, get_pod_target reports PoD
            // state). This VMM has no PoD: every frame is populated at
            // creation and the balloon uses decrease_reservation and
            // populate_physmap, so both stay not implemented.
            throw .enosys
        default:
            // Exchange (PV only), vNUMA, etc.: not implemented yet.
            throw .enosys
        }
    }

    /// XENMEM_memory_map: copies min(nr_entries, map size) E820 entries and
    /// writes the count back. A short buffer is not an error: the map is
    /// truncated (xen/arch/x86/mm.c). No map at all is -ENOSYS.
    private func memoryMap(_ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        let entries = configuration.memoryMap
        guard !entries.isEmpty else { throw .enosys }
        var header = try c.guest.readVirtual(at: arg, count: XenWire.MemoryMap.size(c.mode))
        let capacity = header.wireValue(XenWire.MemoryMap.nrEntries(c.mode), as: UInt32.self)
        let buffer = GuestVirtualAddress(header.wireValue(XenWire.MemoryMap.buffer(c.mode), as: UInt64.self))
        let n = min(Int(capacity), entries.count)
        var out: [UInt8] = []
        out.reserveCapacity(n * XenWire.E820Entry.size)
        for entry in entries.prefix(n) {
            var e = [UInt8](repeating: 0, count: XenWire.E820Entry.size)
            e.setWireValue(entry.range.start.rawValue, in: XenWire.E820Entry.address)
            e.setWireValue(entry.range.length, in: XenWire.E820Entry.length)
            e.setWireValue(entry.type.rawValue, in: XenWire.E820Entry.type)
            out += e
        }
        try c.guest.writeVirtual(out, at: buffer)
        header.setWireValue(UInt32(n), in: XenWire.MemoryMap.nrEntries(c.mode))
        try c.guest.writeVirtual(header, at: arg)
        return 0
    }

    /// XENMEM_add_to_physmap (memory.c xenmem_add_to_physmap), one frame.
    private func addToPhysmap(_ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        let bytes = try c.guest.readVirtual(at: arg, count: XenWire.AddToPhysmap.size(c.mode))
        let rawSpace = bytes.wireValue(XenWire.AddToPhysmap.space, as: UInt32.self)
        let space = PhysmapSpace(rawValue: UInt64(rawSpace))
        // Foreign mappings are only possible through the batch call.
        if space == .gmfnForeign { throw .enosys }
        try checkSelf(bytes.wireValue(XenWire.AddToPhysmap.domid, as: UInt16.self))
        // dev_mmio is for the hardware domain only (xatp_permission_check).
        if space == .devMMIO { throw .eacces }
        let index = bytes.wireValue(XenWire.AddToPhysmap.index(c.mode), as: UInt64.self)
        let gpfnField = XenWire.AddToPhysmap.gpfn(c.mode)
        let gpfn = bytes.wireValue(gpfnField, as: UInt64.self)
        // INVALID_GFN (all ones in the field's width) is refused.
        let invalid: UInt64 = gpfnField.size >= 8 ? .max : (1 << (UInt64(gpfnField.size) * 8)) - 1
        guard gpfn != invalid else { throw .einval }
        return try addToPhysmapOne(space, index: index, gpfn: gpfn, foreignDomain: nil)
    }

    /// xenmem_add_to_physmap_one for the spaces this VMM serves:
    /// shared_info index 0, grant-table frames. Guest frame moves
    /// (XENMAPSPACE_gmfn) are not implemented (-ENOSYS); foreign frames need
    /// a domain the guest may map from (there is none); any other space is
    /// -EINVAL (no MFN for it).
    private func addToPhysmapOne(_ space: PhysmapSpace?, index: UInt64, gpfn: UInt64, foreignDomain: UInt16?) throws(XenErrno) -> Int64 {
        switch space {
        case .sharedInfo:
            let frame = GuestFrameNumber(gpfn)
            guard index == 0, frame.address != nil else { throw .einval }
            // A grant frame there makes way; the grant area is not for shared_info.
            if let grants = grantTables, !grants.vacate(frame...frame) { throw .einval }
            try physmap.mapSharedInfo(at: frame)
            state.storage.withLock { $0.sharedInfoFrame = frame }
            time?.sharedInfoMapped()
            return 0
        case .grantTable:
            guard let grants = grantTables else { throw .enosys }
            try addGrantFrame(index, at: GuestFrameNumber(gpfn), grants)
            return 0
        case .gmfnForeign:
            // p2m_add_foreign: the foreign domain must be another, live domain
            // the caller may map (XSM_TARGET): the backend domain is not the
            // guest's to map (-EPERM), DOMID_SELF or the guest itself is
            // -EINVAL, anything else -ESRCH.
            guard let foreign = foreignDomain else { throw .einval }
            if foreign == DomainID.`self`.rawValue || foreign == configuration.domainID.rawValue { throw .einval }
            if foreign == grantTables?.backendDomain.rawValue { throw .eperm }
            throw .esrch
        case .gmfn, .gmfnRange:
            // Guest frame moves are not implemented yet.
            throw .enosys
        case .devMMIO, nil:
            throw .einval
        }
    }

    /// XENMAPSPACE_grant_table (gnttab_map_frame, then the p2m update of
    /// xenmem_add_to_physmap_one): the index is checked first; a hole gets a
    /// fresh page from the VMM; the frame moves there; a RAM page there is
    /// freed (guest_remove_page: no longer populated nor charged); a
    /// shared_info page there is unhooked.
    private func addGrantFrame(_ index: UInt64, at frame: GuestFrameNumber, _ grants: any GrantTableService) throws(XenErrno) {
        guard let address = frame.address, frame.rawValue < (1 << 40) else { throw .einval }
        try grants.checkFrameIndex(index, at: frame)
        if !memory.contains(address, count: GuestFrameNumber.pageSize) {
            try physmap.backFrame(at: frame)
        }
        try grants.mapFrame(index, at: frame)
        reservation.giveToGrantFrame(frame)
        state.storage.withLock { if $0.sharedInfoFrame == frame { $0.sharedInfoFrame = nil } }
    }

    /// XENMEM_add_to_physmap_batch (memory.c xenmem_add_to_physmap_batch):
    /// entries `startExtent..<size`, each with its own errno in `errs` (0 on
    /// success). Whole-call errors: -EFAULT (argument, or an entry or its
    /// errs slot), -EOPNOTSUPP for gmfn_range, -ESRCH for another domain,
    /// -EACCES for dev_mmio, -EILSEQ for a start past the size, -EINVAL for
    /// an INVALID_GFN entry (the loop stops there). No continuation: bounded
    /// by `size` (a uint16_t).
    private func addToPhysmapBatch(_ arg: GuestVirtualAddress, startExtent: UInt64, _ c: CallContext) throws(XenErrno) -> Int64 {
        typealias W = XenWire.AddToPhysmapBatch
        let bytes = try c.guest.readVirtual(at: arg, count: W.size(c.mode))
        let rawSpace = bytes.wireValue(W.space, as: UInt16.self)
        let space = PhysmapSpace(rawValue: UInt64(rawSpace))
        if space == .gmfnRange { throw .eopnotsupp }
        try checkSelf(bytes.wireValue(W.domid, as: UInt16.self))
        // xatp_permission_check: dev_mmio is for the hardware domain only.
        if space == .devMMIO { throw .eacces }
        let size = UInt64(bytes.wireValue(W.count, as: UInt16.self))
        if size < startExtent { throw .eilseq }
        if size == startExtent { if startExtent != 0 { throw .eilseq } else { return 0 } }
        let extra: UInt16 = bytes.wireValue(W.extra)
        let indices = GuestVirtualAddress(bytes.wireValue(W.indices(c.mode), as: UInt64.self))
        let gpfns = GuestVirtualAddress(bytes.wireValue(W.gpfns(c.mode), as: UInt64.self))
        let errors = GuestVirtualAddress(bytes.wireValue(W.errors(c.mode), as: UInt64.self))
        let indexSize = W.indexSize(c.mode), gpfnSize = W.gpfnSize(c.mode)
        let invalid: UInt64 = gpfnSize >= 8 ? .max : (1 << (UInt64(gpfnSize) * 8)) - 1
        for extent in startExtent..<size {
            let idx = try c.guest.readVirtual(at: indices.advanced(by: extent * UInt64(indexSize)), count: indexSize)
            let pfn = try c.guest.readVirtual(at: gpfns.advanced(by: extent * UInt64(gpfnSize)), count: gpfnSize)
            let index = idx.wireValue(WireField(offset: 0, size: indexSize), as: UInt64.self)
            let gpfn = pfn.wireValue(WireField(offset: 0, size: gpfnSize), as: UInt64.self)
            guard gpfn != invalid else { throw .einval }
            let rc: Int32
            do {
                _ = try addToPhysmapOne(space, index: index, gpfn: gpfn,
                                        foreignDomain: space == .gmfnForeign ? extra : nil)
                rc = 0
            } catch {
                rc = -error.rawValue
            }
            try c.guest.writeVirtual(LittleEndianBytes.encode(UInt32(bitPattern: rc)),
                                     at: errors.advanced(by: extent * UInt64(W.errorSize)))
        }
        return 0
    }
}
