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
            let pages = command == .currentReservation ? reservation.currentPages : configuration.maxPages
            return Int64(clamping: pages)
        case .increaseReservation, .decreaseReservation, .populatePhysmap:
            // Without a service to release host memory the domain keeps all its RAM.
            guard let backing = reservationService else { throw .enosys }
            return reservationOp(command, startExtent: startExtent, arg, c, backing: backing)
        case .addToPhysmap:
            // The start extent must fit xatp.size (uint16_t).
            guard startExtent <= UInt64(UInt16.max) else { throw .edom }
            return try addToPhysmap(arg, c)
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

    /// XENMEM_add_to_physmap. Only XENMAPSPACE_shared_info index 0 is served
    /// now; xenmem_add_to_physmap_one (xen/arch/x86/mm/p2m.c) answers -EINVAL
    /// for a bad index or unknown space.
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
        switch space {
        case .sharedInfo:
            let frame = GuestFrameNumber(gpfn)
            guard index == 0, frame.address != nil else { throw .einval }
            try physmap.mapSharedInfo(at: frame)
            state.storage.withLock { $0.sharedInfoFrame = frame }
            time?.sharedInfoMapped()
            return 0
        case .grantTable, .gmfn, .gmfnRange:
            // Grant tables and guest frame moves are not implemented yet.
            throw .enosys
        case .gmfnForeign, .devMMIO, nil:
            throw .einval
        }
    }
}
