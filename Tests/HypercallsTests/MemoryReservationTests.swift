import GuestMemory
import Hypercalls
import Testing
import TestSupport
import XenABI

// XENMEM_{increase,decrease}_reservation and populate_physmap against Xen
// 4.17 xen/common/memory.c. The harness has 16 MiB of RAM at 0 (frames
// 0...0xfff, all populated: current_reservation 4096) and max_pages 8192.

private let selfID = UInt16(DomainID.`self`.rawValue)
private let bad: UInt64 = 0x7f00_0000  // beyond RAM
private let increase: UInt64 = 0, decrease: UInt64 = 1, current: UInt64 = 3, maximum: UInt64 = 4, populate: UInt64 = 6
private let arg: UInt64 = 0x1000, list: UInt64 = 0x2000

/// Writes a `struct xen_memory_reservation` at `arg` and the extent list at `at`.
private func put(_ h: Harness, _ gfns: [UInt64], order: UInt32 = 0, flags: UInt32 = 0, domid: UInt16 = selfID,
                 extents: UInt64? = nil, at: UInt64 = list, mode: GuestCPUMode = .long64) {
    let w = XenWire.MemoryReservation.self
    var r = [UInt8](repeating: 0, count: w.size(mode))
    r.setWireValue(at, in: w.extentStart(mode))
    r.setWireValue(extents ?? UInt64(gfns.count), in: w.nrExtents(mode))
    r.setWireValue(order, in: w.extentOrder(mode))
    r.setWireValue(flags, in: w.memFlags(mode))
    r.setWireValue(domid, in: w.domid(mode))
    h.put(r, arg)
    let size = w.pfnSize(mode)
    for (i, g) in gfns.enumerated() {
        h.put(Array(LittleEndianBytes.encode(g).prefix(size)), at + UInt64(i * size))
    }
}

private func op(_ h: Harness, _ command: UInt64, start: UInt64 = 0, mode: GuestCPUMode = .long64) -> HypercallOutcome {
    h.call(.memoryOp, command | start << MemoryOpCommand.extentShift, arg, mode: mode)
}

private func currentReservation(_ h: Harness) -> HypercallOutcome {
    h.set(selfID, 0x3000)
    return h.call(.memoryOp, current, 0x3000)
}

private func page(_ h: Harness, _ gfn: UInt64) -> [UInt8] { h.bytes(gfn << 12, 4096) }
private let zeroPage = [UInt8](repeating: 0, count: 4096)
private func scribble(_ h: Harness, _ gfn: UInt64) { h.put([UInt8](repeating: 0xaa, count: 4096), gfn << 12) }

@Test func decreaseReturnsCountZeroesAndDropsCurrentReservation() {
    let h = Harness(withReservation: true)
    for g: UInt64 in 0x800...0x803 { scribble(h, g) }
    put(h, [0x800, 0x801, 0x802])
    #expect(op(h, decrease) == .returnToGuest(3))
    for g: UInt64 in 0x800...0x802 {
        #expect(page(h, g) == zeroPage)
        #expect(!h.dispatcher.reservation.isPopulated(GuestFrameNumber(g)))
    }
    #expect(page(h, 0x803) == [UInt8](repeating: 0xaa, count: 4096))
    #expect(currentReservation(h) == .returnToGuest(4093))
    #expect(h.dispatcher.reservation.currentPages == 4093)
    #expect(h.call(.memoryOp, maximum, 0x3000) == .returnToGuest(8192))
    // The host release went through the service, one page-aligned range each.
    #expect(h.memory.discarded == (0x800...0x802).map { GuestPhysicalRange(start: GuestPhysicalAddress($0 << 12), length: 4096) })
}

@Test func decreaseOfAFrameNotPopulatedStopsThere() {
    let h = Harness(withReservation: true)
    // The same frame twice: the second guest_remove_page finds p2m_invalid.
    put(h, [0x800, 0x800, 0x801])
    #expect(op(h, decrease) == .returnToGuest(1))
    #expect(h.dispatcher.reservation.isPopulated(GuestFrameNumber(0x801)))
    put(h, [0x800])
    #expect(op(h, decrease) == .returnToGuest(0))
    #expect(currentReservation(h) == .returnToGuest(4095))
}

@Test func decreaseOfAFrameOutsideRAMStopsThere() {
    let h = Harness(withReservation: true)
    put(h, [0x800, 0x1000, 0x801])  // 0x1000: the first frame past 16 MiB
    #expect(op(h, decrease) == .returnToGuest(1))
    put(h, [.max, 0x801])
    #expect(op(h, decrease) == .returnToGuest(0))
    // An order-9 extent starting near the top of the frame space: no overflow.
    put(h, [.max - 3], order: 9)
    #expect(op(h, decrease) == .returnToGuest(0))
    #expect(currentReservation(h) == .returnToGuest(4095))
}

@Test func decreaseOrders() {
    let h = Harness(withReservation: true)
    put(h, [0x400], order: 9)
    #expect(op(h, decrease) == .returnToGuest(1))
    #expect(currentReservation(h) == .returnToGuest(4096 - 512))
    #expect(h.memory.discarded.last == GuestPhysicalRange(start: GuestPhysicalAddress(0x40_0000), length: 0x20_0000))
    // Above max_order (9 for a domU on x86): start_extent, nothing done.
    put(h, [0x800], order: 10)
    #expect(op(h, decrease) == .returnToGuest(0))
    #expect(h.dispatcher.reservation.isPopulated(GuestFrameNumber(0x800)))
    // A partial extent: frames removed before the hole stay removed, the extent is not counted.
    put(h, [0x901])
    #expect(op(h, decrease) == .returnToGuest(1))
    put(h, [0x900], order: 1)
    #expect(op(h, decrease) == .returnToGuest(0))
    #expect(!h.dispatcher.reservation.isPopulated(GuestFrameNumber(0x900)))
    #expect(currentReservation(h) == .returnToGuest(4096 - 512 - 2))
}

@Test func otherDomainsGetStartExtentNotAnErrno() {
    let h = Harness(withReservation: true)
    put(h, [0x800], domid: 0)
    #expect(op(h, decrease) == .returnToGuest(0))
    put(h, [0x800, 0x801, 0x802], domid: 7)
    #expect(op(h, decrease, start: 2) == .returnToGuest(2))
    #expect(currentReservation(h) == .returnToGuest(4096))
    put(h, [0x800], domid: Harness.domid.rawValue)
    #expect(op(h, decrease) == .returnToGuest(1))
}

@Test func populateBringsFramesBackZeroed() {
    let h = Harness(withReservation: true)
    put(h, [0x800, 0x801])
    #expect(op(h, decrease) == .returnToGuest(2))
    // The guest writes to a frame it gave back (KVM still maps it): populate hands out a zero page anyway.
    scribble(h, 0x800)
    put(h, [0x800, 0x801])
    #expect(op(h, populate) == .returnToGuest(2))
    #expect(page(h, 0x800) == zeroPage)
    #expect(h.dispatcher.reservation.isPopulated(GuestFrameNumber(0x800)))
    #expect(currentReservation(h) == .returnToGuest(4096))
    // Order 9 at an unaligned frame is fine (p2m_set_entry splits it).
    put(h, [0x401], order: 9)
    #expect(op(h, decrease) == .returnToGuest(1))
    put(h, [0x401], order: 9)
    #expect(op(h, populate) == .returnToGuest(1))
    #expect(h.dispatcher.reservation.populatedPages == 4096)
}

@Test func populateOfAPopulatedFrameReplacesItAndChargesTheOldPage() {
    // p2m_add_page: the old page loses its mapping but stays the domain's (tot_pages).
    let h = Harness(withReservation: true)
    scribble(h, 0x801)
    put(h, [0x801])
    #expect(op(h, populate) == .returnToGuest(1))
    #expect(page(h, 0x801) == zeroPage)
    #expect(currentReservation(h) == .returnToGuest(4097))
    #expect(h.dispatcher.reservation.populatedPages == 4096)
}

@Test func populateStopsAtMaxPagesAndOutsideRAM() {
    let h = Harness(withReservation: true, maxPages: 4096)
    put(h, [0x800, 0x801])
    #expect(op(h, decrease) == .returnToGuest(2))
    // 0x802 is populated: replacing it charges its old page (4096 in all),
    // so there is no room left for 0x801.
    put(h, [0x800, 0x802, 0x801])
    #expect(op(h, populate) == .returnToGuest(2))
    #expect(!h.dispatcher.reservation.isPopulated(GuestFrameNumber(0x801)))
    #expect(currentReservation(h) == .returnToGuest(4096))
    put(h, [0x801])
    #expect(op(h, populate) == .returnToGuest(0))
    // Free two frames: an order-1 extent fits, but not outside RAM (Xen
    // could map it anywhere; this VMM backs only its RAM) nor above max_order.
    put(h, [0x803, 0x804])
    #expect(op(h, decrease) == .returnToGuest(2))
    put(h, [0x1000, 0x801])
    #expect(op(h, populate) == .returnToGuest(0))
    put(h, [0x801], order: 10)
    #expect(op(h, populate) == .returnToGuest(0))
    put(h, [0x803], order: 1)
    #expect(op(h, populate) == .returnToGuest(1))
    #expect(currentReservation(h) == .returnToGuest(4096))
    put(h, [0x801])
    #expect(op(h, populate) == .returnToGuest(0))
}

@Test func unreadableExtentListsStopWithProgress() {
    let h = Harness(withReservation: true)
    // The whole list unmapped: nothing done.
    put(h, [], extents: 2, at: bad)
    #expect(op(h, decrease) == .returnToGuest(0))
    #expect(op(h, populate) == .returnToGuest(0))
    // The list runs off the end of RAM: the first entry is read, the second faults.
    let end = UInt64(Harness.ramSize)
    put(h, [0x800], extents: 2, at: end - 8)
    #expect(op(h, decrease) == .returnToGuest(1))
    // The reservation itself unreadable: start_extent (never -EFAULT).
    #expect(h.call(.memoryOp, decrease | 3 << 6, bad) == .returnToGuest(3))
    #expect(h.call(.memoryOp, populate, bad) == .returnToGuest(0))
    #expect(currentReservation(h) == .returnToGuest(4095))
}

@Test func startExtentResumes() {
    let h = Harness(withReservation: true)
    put(h, [0x800, 0x801, 0x802, 0x803])
    #expect(op(h, decrease, start: 2) == .returnToGuest(4))
    #expect(h.dispatcher.reservation.isPopulated(GuestFrameNumber(0x800)))
    #expect(!h.dispatcher.reservation.isPopulated(GuestFrameNumber(0x803)))
    // start_extent ≥ nr_extents: returned as is.
    #expect(op(h, decrease, start: 4) == .returnToGuest(4))
    #expect(op(h, populate, start: 9) == .returnToGuest(9))
    // nr_extents too large to encode a continuation (> UINT_MAX >> 6).
    put(h, [0x800], extents: (UInt64(UInt32.max) >> 6) + 1)
    #expect(op(h, decrease) == .returnToGuest(0))
    #expect(currentReservation(h) == .returnToGuest(4094))
    // Resuming populate.
    put(h, [0x800, 0x801, 0x802, 0x803])
    #expect(op(h, populate, start: 2) == .returnToGuest(4))
    #expect(currentReservation(h) == .returnToGuest(4096))
}

@Test func compatLayoutHasFourBytePFNs() {
    let h = Harness(withReservation: true)
    put(h, [0x800, 0x801], mode: .protected32)
    #expect(op(h, decrease, mode: .protected32) == .returnToGuest(2))
    #expect(!h.dispatcher.reservation.isPopulated(GuestFrameNumber(0x801)))
    put(h, [0x801], mode: .protected32)
    #expect(op(h, populate, mode: .protected32) == .returnToGuest(1))
    #expect(currentReservation(h) == .returnToGuest(4095))
}

@Test func increaseReservationAllocatesUnmappedPagesUpToMax() {
    let h = Harness(withReservation: true)
    put(h, [], order: 9, extents: 3, at: 0)  // a null handle is fine for increase
    #expect(op(h, increase) == .returnToGuest(3))
    #expect(currentReservation(h) == .returnToGuest(4096 + 3 * 512))
    #expect(h.dispatcher.reservation.populatedPages == 4096)
    // (8192 - 5632) / 512 = 5 more fit.
    put(h, [], order: 9, extents: 10, at: 0)
    #expect(op(h, increase) == .returnToGuest(5))
    #expect(currentReservation(h) == .returnToGuest(8192))
    put(h, [], order: 10, extents: 1, at: 0)
    #expect(op(h, increase) == .returnToGuest(0))
    // At the limit, nothing more can be populated; freeing makes room.
    put(h, [0x800])
    #expect(op(h, populate) == .returnToGuest(0))
    #expect(op(h, decrease) == .returnToGuest(1))
    #expect(op(h, populate) == .returnToGuest(1))
}

@Test func memFlagsChecks() {
    let h = Harness(withReservation: true)
    // populate-on-demand on oneself: refused (no progress).
    put(h, [0x800], flags: XenWire.MemoryReservation.populateOnDemand)
    #expect(op(h, populate) == .returnToGuest(0))
    // address_bits ≤ PAGE_SHIFT: -EINVAL inside construct_memop_from_reservation.
    put(h, [0x800], flags: 12)
    #expect(op(h, decrease) == .returnToGuest(0))
    // A physical node with exact_node_request: refused for a domU.
    put(h, [0x800], flags: (2 + 1) << 8 | XenWire.MemoryReservation.exactNodeRequest)
    #expect(op(h, decrease) == .returnToGuest(0))
    // Wider address bits, a node hint without exact, a vnode: accepted.
    put(h, [0x800], flags: 32 | (2 + 1) << 8)
    #expect(op(h, decrease) == .returnToGuest(1))
    put(h, [0x801], flags: XenWire.MemoryReservation.virtualNode | (0 + 1) << 8 | XenWire.MemoryReservation.exactNodeRequest)
    #expect(op(h, decrease) == .returnToGuest(1))
}

@Test func reservationChangesWithoutAServiceAreENOSYS() {
    let h = Harness()
    put(h, [0x800])
    #expect(op(h, decrease) == .error(.enosys))
    #expect(op(h, populate) == .error(.enosys))
    #expect(op(h, increase) == .error(.enosys))
    #expect(currentReservation(h) == .returnToGuest(4096))
    // PoD targets stay unimplemented.
    #expect(h.call(.memoryOp, 16, 0x3000) == .error(.enosys))
    #expect(h.call(.memoryOp, 17, 0x3000) == .error(.enosys))
}

@Test func aFailedHostReleaseStopsWithTheFrameStillPopulated() {
    let h = Harness(withReservation: true)
    h.reservation?.failure.withLock { $0 = true }
    put(h, [0x800, 0x801])
    #expect(op(h, decrease) == .returnToGuest(0))
    #expect(op(h, populate) == .returnToGuest(0))
    #expect(h.dispatcher.reservation.isPopulated(GuestFrameNumber(0x800)))
    #expect(currentReservation(h) == .returnToGuest(4096))
}

@Test func freeingTheSharedInfoFrameLeavesTheDispatcherWorking() {
    // Xen lets a guest free any of its frames; later accesses here just see zeros.
    let h = Harness(withEventChannels: true, withTime: true, withReservation: true)
    let w = XenWire.AddToPhysmap.self
    var xatp = [UInt8](repeating: 0, count: w.size(.long64))
    xatp.setWireValue(selfID, in: w.domid)
    xatp.setWireValue(UInt32(0), in: w.space)  // XENMAPSPACE_shared_info
    xatp.setWireValue(UInt64(0x900), in: w.gpfn(.long64))
    h.put(xatp, 0x4000)
    #expect(h.call(.memoryOp, 7, 0x4000) == .zero)
    put(h, [0x900])
    #expect(op(h, decrease) == .returnToGuest(1))
    #expect(page(h, 0x900) == zeroPage)
    // An IPI port delivered into the (freed, zero) shared_info page.
    h.set(UInt32(0), 0x5000)
    guard case .returnToGuest(let rc) = h.call(.eventChannelOp, 7, 0x5000), rc == 0 else {
        Issue.record("bind_ipi failed")
        return
    }
    let port = h.u32(0x5004)
    h.set(port, 0x5000)
    #expect(h.call(.eventChannelOp, 4, 0x5000) == .zero)  // EVTCHNOP_send
    #expect(currentReservation(h) == .returnToGuest(4095))
}

/// Random reservations: the result is progress in [start, nr], and the
/// accounting matches the bitmap; every unpopulated frame reads zero.
@Test(arguments: [11 as UInt64, 12, 13])
func randomReservationsKeepAccountingConsistent(seed: UInt64) {
    var rng = SplitMix64(state: seed)
    let h = Harness(withReservation: true, maxPages: 4096 + 64)
    let frames: ClosedRange<UInt64> = 0x10...0x40  // clear of the argument pages at 0x1000-0x2fff
    for g in frames { scribble(h, g) }
    for round in 0..<400 {
        let command = [increase, decrease, populate][Int(rng.next() % 3)]
        let mode: GuestCPUMode = rng.next() % 4 == 0 ? .protected32 : .long64
        let n = Int(rng.next() % 6)
        let gfns = (0..<n).map { _ in
            rng.next() % 8 == 0 ? rng.next() : frames.lowerBound + rng.next() % UInt64(frames.count)
        }
        let order = UInt32(rng.next() % 8 == 0 ? rng.next() % 12 : rng.next() % 2)
        let start = rng.next() % 4 == 0 ? rng.next() % 4 : 0
        let domid = rng.next() % 10 == 0 ? UInt16(truncatingIfNeeded: rng.next()) : selfID
        put(h, gfns, order: order, domid: domid, mode: mode)
        let outcome = op(h, command, start: start, mode: mode)
        guard case .returnToGuest(let rc) = outcome else {
            Issue.record("round \(round): \(outcome)")
            return
        }
        #expect(rc >= 0 && (rc == Int64(start) || (rc > Int64(start) && rc <= Int64(n))), "round \(round): \(rc)")
        let r = h.dispatcher.reservation
        var populated: UInt64 = 0
        for g: UInt64 in 0..<0x1000 where r.isPopulated(GuestFrameNumber(g)) { populated += 1 }
        #expect(populated == r.populatedPages, "round \(round)")
        #expect(r.currentPages >= r.populatedPages && r.currentPages <= 4096 + 64, "round \(round)")
        #expect(currentReservation(h) == .returnToGuest(Int64(r.currentPages)))
        for g in frames where !r.isPopulated(GuestFrameNumber(g)) {
            #expect(page(h, g) == zeroPage, "round \(round): gfn \(g)")
        }
    }
}

/// pvh mem-max (XEN_DOMCTL_max_mem): the limit changes while the domain
/// runs; below what it holds, it can populate nothing until it gives back.
@Test func maximumChangedByTheToolstack() {
    let h = Harness(withReservation: true, maxPages: 4096)
    let maximum = UInt64(MemoryOpCommand.maximumReservation.rawValue)
    put(h, [0x800, 0x801])
    #expect(op(h, decrease) == .returnToGuest(2))
    h.dispatcher.reservation.setMaximumPages(4094)
    h.set(selfID, 0x3000)
    #expect(h.call(.memoryOp, maximum, 0x3000) == .returnToGuest(4094))
    // Holding 4094 of 4094: no room for one more.
    put(h, [0x800])
    #expect(op(h, populate) == .returnToGuest(0))
    h.dispatcher.reservation.setMaximumPages(4095)
    #expect(op(h, populate) == .returnToGuest(1))
    #expect(currentReservation(h) == .returnToGuest(4095))
    // Below what it holds: nothing more until it frees enough.
    h.dispatcher.reservation.setMaximumPages(4000)
    put(h, [0x801])
    #expect(op(h, populate) == .returnToGuest(0))
    #expect(h.dispatcher.reservation.populatedPages == 4095)
}
