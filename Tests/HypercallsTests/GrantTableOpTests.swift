import GrantTables
import GuestMemory
import Hypercalls
import Testing
import TestSupport
import XenABI

// grant_table_op and XENMAPSPACE_grant_table through the dispatcher, against
// Xen 4.17 hvm_grant_table_op / do_grant_table_op / compat_grant_table_op and
// memory.c. The harness's grant area starts at frame 0xf00 (64 frames + 8
// status frames), the guest is d5, paging is off (virtual = physical).

private let selfID = UInt16(DomainID.`self`.rawValue)
private let arg: UInt64 = 0x1000, list: UInt64 = 0x3000
private let modes: [GuestCPUMode] = [.long64, .protected32]

private func gnttab(_ h: Harness, _ op: GrantTableOpCommand, count: UInt64 = 1, at: UInt64 = arg,
                    mode: GuestCPUMode = .long64) -> HypercallOutcome {
    h.call(.grantTableOp, UInt64(op.rawValue), at, count, mode: mode)
}

@Test("grant_table_op: -ENOSYS without the service and for the sub-ops HVM guests may not use")
func grantTableOpGate() {
    #expect(gnttab(Harness(), .querySize) == .error(.enosys))
    let h = Harness(withGrants: true)
    for op: GrantTableOpCommand in [.dumpTable, .transfer, .unmapAndReplace, .getStatusFrames, .cacheFlush] {
        #expect(gnttab(h, op) == .error(.enosys))
    }
    #expect(h.call(.grantTableOp, 99, arg, 1) == .error(.enosys))
    // (int)count < 0.
    #expect(gnttab(h, .querySize, count: 0x8000_0000) == .error(.einval))
    #expect(gnttab(h, .querySize, count: 2) == .error(.einval))
    #expect(gnttab(h, .querySize, at: 0x7f00_0000) == .error(.efault))
}

@Test("query_size in both modes: nr_frames, max_nr_frames, status; unknown domain is a status", arguments: modes)
func querySizeOp(mode: GuestCPUMode) {
    let h = Harness(withGrants: true, maxGrantFrames: 32)
    typealias W = XenWire.GrantQuerySize
    h.set(selfID, arg + UInt64(W.dom.offset))
    #expect(gnttab(h, .querySize, mode: mode) == .zero)
    #expect(h.u32(arg + UInt64(W.nrFrames.offset)) == 1)
    #expect(h.u32(arg + UInt64(W.maxNrFrames.offset)) == 32)
    #expect(h.u16(arg + UInt64(W.status.offset)) == 0)
    h.set(UInt16(9), arg + UInt64(W.dom.offset))
    #expect(gnttab(h, .querySize, mode: mode) == .zero)
    #expect(Int16(bitPattern: h.u16(arg + UInt64(W.status.offset))) == GrantStatus.badDomain.rawValue)
}

@Test("setup_table in both modes: the default slots, as xen_pfn_t (compat: 4 bytes); too many is a status", arguments: modes)
func setupTableOp(mode: GuestCPUMode) {
    let h = Harness(withGrants: true)
    typealias W = XenWire.GrantSetupTable
    var s = [UInt8](repeating: 0, count: W.size(mode))
    s.setWireValue(selfID, in: W.dom)
    s.setWireValue(UInt32(3), in: W.nrFrames)
    s.setWireValue(list, in: W.frameList(mode))
    h.put(s, arg)
    h.put([UInt8](repeating: 0xee, count: 32), list)
    #expect(gnttab(h, .setupTable, mode: mode) == .zero)
    #expect(h.u16(arg + UInt64(W.status.offset)) == 0)
    let size = W.pfnSize(mode)
    let frames = (0..<3).map { i in h.bytes(list + UInt64(i * size), size).wireValue(WireField(offset: 0, size: size), as: UInt64.self) }
    #expect(frames == [0xf00, 0xf01, 0xf02])
    #expect(h.bytes(list + UInt64(3 * size), 1) == [0xee])
    // More than max_grant_frames.
    s.setWireValue(UInt32(65), in: W.nrFrames)
    h.put(s, arg)
    #expect(gnttab(h, .setupTable, mode: mode) == .zero)
    #expect(Int16(bitPattern: h.u16(arg + UInt64(W.status.offset))) == GrantStatus.generalError.rawValue)
    // An unwritable frame list.
    s.setWireValue(UInt32(1), in: W.nrFrames)
    s.setWireValue(UInt64(0x7f00_0000), in: W.frameList(mode))
    h.put(s, arg)
    #expect(gnttab(h, .setupTable, mode: mode) == .zero)
    #expect(Int16(bitPattern: h.u16(arg + UInt64(W.status.offset))) == GrantStatus.badVirtualAddress.rawValue)
    // count: native must be 1; compat 0 is a no-op.
    #expect(gnttab(h, .setupTable, count: 2, mode: mode) == .error(.einval))
    #expect(gnttab(h, .setupTable, count: 0, mode: mode) == (mode == .long64 ? .error(.einval) : .zero))
}

@Test("set_version / get_version: the version in force is written back even on error")
func versionOps() {
    let h = Harness(withGrants: true)
    h.set(UInt32(2), arg)
    #expect(gnttab(h, .setVersion) == .zero)
    #expect(h.u32(arg) == 2)
    h.set(UInt32(3), arg)
    #expect(gnttab(h, .setVersion) == .error(.einval))
    #expect(h.u32(arg) == 2)
    typealias G = XenWire.GrantGetVersion
    h.set(selfID, arg + UInt64(G.dom.offset))
    h.set(UInt32(0), arg + UInt64(G.version.offset))
    #expect(gnttab(h, .getVersion, mode: .protected32) == .zero)
    #expect(h.u32(arg + UInt64(G.version.offset)) == 2)
    h.set(UInt16(0), arg + UInt64(G.dom.offset))
    #expect(gnttab(h, .getVersion) == .error(.eperm))
    h.set(UInt16(9), arg + UInt64(G.dom.offset))
    #expect(gnttab(h, .getVersion) == .error(.esrch))
}

@Test("copy in both modes: frame to frame with DOMID_SELF, per-op status, -EFAULT past the array", arguments: modes)
func copyOp(mode: GuestCPUMode) {
    let h = Harness(withGrants: true)
    typealias W = XenWire.GrantCopy
    h.put([1, 2, 3, 4], 0x150010)
    func put(_ i: Int, srcDom: UInt16 = selfID, len: UInt16 = 4) {
        var c = [UInt8](repeating: 0, count: W.size(mode))
        c.setWireValue(UInt64(0x150), in: W.gmfn(destination: false, mode))
        c.setWireValue(srcDom, in: W.domid(destination: false, mode))
        c.setWireValue(UInt16(0x10), in: W.offset(destination: false, mode))
        c.setWireValue(UInt64(0x151), in: W.gmfn(destination: true, mode))
        c.setWireValue(selfID, in: W.domid(destination: true, mode))
        c.setWireValue(UInt16(0x20), in: W.offset(destination: true, mode))
        c.setWireValue(len, in: W.length(mode))
        c.setWireValue(UInt16(0x7777), in: W.status(mode))
        h.put(c, arg + UInt64(i * W.size(mode)))
    }
    put(0)
    put(1, srcDom: UInt16(Harness.domid.rawValue))  // a frame needs DOMID_SELF
    #expect(gnttab(h, .copy, count: 2, mode: mode) == .zero)
    #expect(h.bytes(0x151020, 4) == [1, 2, 3, 4])
    #expect(h.u16(arg + UInt64(W.status(mode).offset)) == 0)
    #expect(Int16(bitPattern: h.u16(arg + UInt64(W.size(mode) + W.status(mode).offset))) == GrantStatus.permissionDenied.rawValue)
    #expect(gnttab(h, .copy, count: 3, at: 0xfff000 + 4096 - UInt64(2 * W.size(mode)), mode: mode) == .error(.efault))
}

@Test("map_grant_ref / unmap_grant_ref / swap_grant_ref: per-op statuses")
func mapUnmapSwapOps() {
    let h = Harness(withGrants: true)
    typealias M = XenWire.GrantMapGrantRef
    h.set(UInt32(GrantMapFlags.hostMap.rawValue), arg + UInt64(M.flags.offset))
    h.set(UInt32(1), arg + UInt64(M.ref.offset))
    h.set(UInt16(0), arg + UInt64(M.dom.offset))
    h.set(UInt32(0xabcd), arg + UInt64(M.handle.offset))
    #expect(gnttab(h, .mapGrantRef) == .zero)
    #expect(Int16(bitPattern: h.u16(arg + UInt64(M.status.offset))) == GrantStatus.generalError.rawValue)
    #expect(h.u32(arg + UInt64(M.handle.offset)) == 0xabcd)
    typealias U = XenWire.GrantUnmapGrantRef
    #expect(gnttab(h, .unmapGrantRef, at: 0x2000) == .zero)
    #expect(Int16(bitPattern: h.u16(0x2000 + UInt64(U.status.offset))) == GrantStatus.badHandle.rawValue)
    typealias S = XenWire.GrantSwapGrantRef
    h.set(UInt32(1), 0x2100 + UInt64(S.refA.offset))
    h.set(UInt32(600), 0x2100 + UInt64(S.refB.offset))
    #expect(gnttab(h, .swapGrantRef, at: 0x2100, mode: .protected32) == .zero)
    #expect(Int16(bitPattern: h.u16(0x2100 + UInt64(S.status.offset))) == GrantStatus.badGrantReference.rawValue)
}

private func putAddToPhysmap(_ h: Harness, space: UInt32 = 1, idx: UInt64, gpfn: UInt64) {
    h.set(selfID, 0x1000)
    h.set(UInt16(0), 0x1002)
    h.set(space, 0x1004)
    h.set(idx, 0x1008)
    h.set(gpfn, 0x1010)
}

private func currentPages(_ h: Harness) -> HypercallOutcome {
    h.set(selfID, 0x4000)
    return h.call(.memoryOp, 3, 0x4000)
}

@Test("add_to_physmap(grant_table) in RAM: the frame moves there; the RAM page is no longer the domain's")
func addGrantFrameRAM() {
    let h = Harness(withGrants: true)
    // The grant area is not counted as the domain's pages.
    #expect(currentPages(h) == .returnToGuest(4096 - 72))
    putAddToPhysmap(h, idx: 0, gpfn: 0x500)
    #expect(h.call(.memoryOp, 7, 0x1000) == .zero)
    #expect(currentPages(h) == .returnToGuest(4096 - 73))
    #expect(h.grants?.holdsFrame(GuestFrameNumber(0x500)) == true)
    // Same place again: no change.
    #expect(h.call(.memoryOp, 7, 0x1000) == .zero)
    #expect(currentPages(h) == .returnToGuest(4096 - 73))
    // A status frame under v1, another frame's default slot, INVALID_GFN.
    putAddToPhysmap(h, idx: GrantTableConstants.statusFrameIndexBit, gpfn: 0x501)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.einval))
    putAddToPhysmap(h, idx: 1, gpfn: 0xf05)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.einval))
    putAddToPhysmap(h, idx: 64, gpfn: 0x501)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.einval))
    // shared_info may not go into the grant area.
    putAddToPhysmap(h, space: 0, idx: 0, gpfn: 0xf00)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.einval))
}

@Test("add_to_physmap(grant_table) in a hole: the VMM backs the page first; a bad index backs nothing")
func addGrantFrameHole() {
    let h = Harness(withGrants: true)
    putAddToPhysmap(h, idx: 99, gpfn: 0xfeff0)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.einval))
    #expect(h.physmap.backed.withLock { $0 }.isEmpty)
    putAddToPhysmap(h, idx: 63, gpfn: 0xfeff0)
    #expect(h.call(.memoryOp, 7, 0x1000) == .zero)
    #expect(h.physmap.backed.withLock { $0 } == [GuestFrameNumber(0xfeff0)])
    #expect(h.grants?.frameCount == 64)
    #expect(currentPages(h) == .returnToGuest(4096 - 72))
}

@Test("add_to_physmap(grant_table) at a ballooned-out frame: no pages charged; populate later moves the frame out")
func addGrantFrameBallooned() {
    let h = Harness(withReservation: true, withGrants: true)
    // decrease_reservation of frame 0x600.
    var r = [UInt8](repeating: 0, count: XenWire.MemoryReservation.size(.long64))
    r.setWireValue(UInt64(0x5000), in: XenWire.MemoryReservation.extentStart(.long64))
    r.setWireValue(UInt64(1), in: XenWire.MemoryReservation.nrExtents(.long64))
    r.setWireValue(selfID, in: XenWire.MemoryReservation.domid(.long64))
    h.put(r, 0x4100)
    h.set(UInt64(0x600), 0x5000)
    #expect(h.call(.memoryOp, 1, 0x4100) == .returnToGuest(1))
    #expect(currentPages(h) == .returnToGuest(4096 - 73))
    putAddToPhysmap(h, idx: 0, gpfn: 0x600)
    #expect(h.call(.memoryOp, 7, 0x1000) == .zero)
    #expect(currentPages(h) == .returnToGuest(4096 - 73))
    // populate_physmap of 0x600: the grant frame goes back to its slot.
    #expect(h.call(.memoryOp, 6, 0x4100) == .returnToGuest(1))
    #expect(h.grants?.holdsFrame(GuestFrameNumber(0xf00)) == true)
    #expect(currentPages(h) == .returnToGuest(4096 - 72))
}

@Test("add_to_physmap_batch in both modes: per-entry errs; whole-call errors", arguments: modes)
func addToPhysmapBatch(mode: GuestCPUMode) {
    let h = Harness(withGrants: true)
    typealias W = XenWire.AddToPhysmapBatch
    func put(space: UInt16 = 1, size: UInt16 = 3) {
        var b = [UInt8](repeating: 0, count: W.size(mode))
        b.setWireValue(selfID, in: W.domid)
        b.setWireValue(space, in: W.space)
        b.setWireValue(size, in: W.count)
        b.setWireValue(UInt64(0x2000), in: W.indices(mode))
        b.setWireValue(UInt64(0x2100), in: W.gpfns(mode))
        b.setWireValue(UInt64(0x2200), in: W.errors(mode))
        h.put(b, arg)
        let idx: [UInt64] = [2, 1, 5000], gpfns: [UInt64] = [0x702, 0x701, 0x703]
        for i in 0..<3 {
            h.put(Array(LittleEndianBytes.encode(idx[i]).prefix(W.indexSize(mode))), 0x2000 + UInt64(i * W.indexSize(mode)))
            h.put(Array(LittleEndianBytes.encode(gpfns[i]).prefix(W.gpfnSize(mode))), 0x2100 + UInt64(i * W.gpfnSize(mode)))
        }
        h.put([UInt8](repeating: 0x55, count: 12), 0x2200)
    }
    put()
    #expect(h.call(.memoryOp, 23, arg, mode: mode) == .zero)
    #expect(h.u32(0x2200) == 0 && h.u32(0x2204) == 0)
    #expect(Int32(bitPattern: h.u32(0x2208)) == -XenErrno.einval.rawValue)
    #expect(h.grants?.frameCount == 3)
    #expect(h.grants?.holdsFrame(GuestFrameNumber(0x702)) == true)
    // A start extent: entries before it are not touched.
    put()
    #expect(h.call(.memoryOp, 23 | 2 << 6, arg, mode: mode) == .zero)
    #expect(h.u32(0x2200) == 0x5555_5555)
    #expect(h.call(.memoryOp, 23 | 4 << 6, arg, mode: mode) == .error(.eilseq))
    #expect(h.call(.memoryOp, 23 | 3 << 6, arg, mode: mode) == .error(.eilseq))
    put(size: 0)
    #expect(h.call(.memoryOp, 23, arg, mode: mode) == .zero)
    put(space: 3)  // gmfn_range
    #expect(h.call(.memoryOp, 23, arg, mode: mode) == .error(.eopnotsupp))
    put(space: 5)  // dev_mmio
    #expect(h.call(.memoryOp, 23, arg, mode: mode) == .error(.eacces))
    put(space: 4)  // gmfn_foreign from d0 (u = 0): not the guest's to map
    #expect(h.call(.memoryOp, 23, arg, mode: mode) == .zero)
    #expect(Int32(bitPattern: h.u32(0x2200)) == -XenErrno.eperm.rawValue)
    put()
    #expect(h.call(.memoryOp, 23, 0x7f00_0000, mode: mode) == .error(.efault))
}
