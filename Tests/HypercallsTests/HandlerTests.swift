import GuestMemory
import Hypercalls
import Testing
import TestSupport
import XenABI

private let bad: UInt64 = 0x7f00_0000  // beyond the 16 MiB of RAM
private let selfID = UInt64(DomainID.`self`.rawValue)

// MARK: dispatch-level

@Test func unknownAndUnimplementedHypercallsAreENOSYS() {
    let h = Harness()
    #expect(h.call(raw: 99, []) == .error(.enosys))
    #expect(h.call(raw: 1 << 40, []) == .error(.enosys))
    #expect(h.call(.grantTableOp, 0, 0, 0) == .error(.enosys))
    #expect(h.call(.eventChannelOp, 0, 0) == .error(.enosys))
}

@Test func userModeHypercallsAreEPERM() {
    let h = Harness()
    #expect(h.call(raw: 17, [0], cpl: 3) == .error(.eperm))
}

// MARK: xen_version

@Test func xenVersionSubOps() {
    let h = Harness()
    #expect(h.call(.xenVersion, 0, 0) == .returnToGuest(0x4_0011))
    #expect(h.call(.xenVersion, 1, 0x1000) == .zero)
    #expect(h.bytes(0x1000, 16) == [UInt8].cString(".0-pvh", length: 16))
    #expect(h.call(.xenVersion, 3, 0x2000) == .zero)
    #expect(String(decoding: h.bytes(0x2000, 1024).prefix { $0 != 0 }, as: UTF8.self) == "hvm-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p")
    #expect(h.call(.xenVersion, 2, 0x3000) == .zero)
    #expect(h.bytes(0x3000, 6) == Array("swift\0".utf8))
    #expect(h.bytes(0x3000 + 64, 4) == Array("pvh\0".utf8))
    h.put([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xaa], 0x4000)
    #expect(h.call(.xenVersion, 5, 0x4000) == .zero)
    #expect(h.bytes(0x4000, 9) == [0, 0, 0, 0, 0, 0, 0, 0, 0xaa])
    #expect(h.call(.xenVersion, 7, 0) == .returnToGuest(4096))
    #expect(h.call(.xenVersion, 7, 0x4000) == .error(.einval))
    #expect(h.call(.xenVersion, 8, 0x5000) == .zero)
    #expect(h.bytes(0x5000, 16) == Array(1...16))
    #expect(h.call(.xenVersion, 9, 0x6000) == .zero)
    #expect(h.bytes(0x6000, 10) == Array("<denied>\0\0".utf8))
    #expect(h.call(.xenVersion, 10, 0) == .error(.eperm))
    #expect(h.call(.xenVersion, 11, 0) == .error(.enosys))
    #expect(h.call(.xenVersion, 1, bad) == .error(.efault))
    #expect(h.call(.xenVersion, 3, UInt64(Harness.ramSize) - 100) == .error(.efault))
}

@Test func platformParametersIsFourBytesInCompatMode() {
    let h = Harness()
    h.put([UInt8](repeating: 0xff, count: 8), 0x4000)
    #expect(h.call(.xenVersion, 5, 0x4000, mode: .protected32) == .zero)
    #expect(h.bytes(0x4000, 8) == [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
}

@Test func getFeatures() {
    let h = Harness()
    h.set(UInt32(0), 0x1000)
    h.set(UInt32(0xdead_beef), 0x1004)
    #expect(h.call(.xenVersion, 6, 0x1000) == .zero)
    let submap = h.u32(0x1004)
    #expect(submap == XenFeatures.pvhDefault.rawValue)
    #expect(submap & (1 << 2) != 0)  // auto_translated_physmap
    #expect(submap & (1 << 8) != 0)  // hvm_callback_vector
    #expect(submap & (1 << 11) == 0)  // not dom0
    h.set(UInt32(1), 0x1000)
    #expect(h.call(.xenVersion, 6, 0x1000) == .error(.einval))
    #expect(h.call(.xenVersion, 6, bad) == .error(.efault))
}

@Test func xenVersionThroughGuestPageTables() throws {
    let h = Harness()
    let b = try PageTableBuilder(memory: h.memory, mode: .level4, tableArea: 0x10_0000)
    try b.map(virtual: 0xffff_ffff_8000_0000, physical: 0x20_0000)
    let r = b.controlRegisters
    let paging = GuestPagingState(cr0: r.cr0, cr3: r.cr3, cr4: r.cr4, efer: r.efer)
    #expect(h.call(.xenVersion, 1, 0xffff_ffff_8000_0100, paging: paging) == .zero)
    #expect(h.bytes(0x20_0100, 6) == Array(".0-pvh".utf8))
    // The same number as a physical address is not what the guest meant.
    #expect(h.call(.xenVersion, 1, 0x20_0100, paging: paging) == .error(.efault))
}

// MARK: console_io

@Test func consoleWrite() {
    let h = Harness()
    h.put(Array("hello\n".utf8), 0x1000)
    #expect(h.call(.consoleIO, 0, 6, 0x1000) == .zero)
    #expect(h.console.written.withLock { $0 } == Array("hello\n".utf8))
    #expect(h.call(.consoleIO, 0, 0, bad) == .zero)  // nothing to copy
    #expect(h.call(.consoleIO, 0, 6, bad) == .error(.efault))
}

@Test func consoleWriteHugeCountIsBoundedByMemoryNotDropped() {
    // A write of more than a page-table's worth arrives whole (nothing dropped)...
    let h0 = Harness()
    let big = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 % 251) }
    h0.put(big, 0x1000)
    #expect(h0.call(.consoleIO, 0, UInt64(big.count), 0x1000) == .zero)
    #expect(h0.console.written.withLock { $0 } == big)
    // ...and a huge count ends with -EFAULT at the end of RAM, after what it copied.
    let h = Harness()
    #expect(h.call(.consoleIO, 0, 0xffff_ffff, 0x1000) == .error(.efault))
    #expect(h.console.written.withLock { $0.count } == Harness.ramSize - 0x1000)
    // A long write that runs off the end of RAM stops with -EFAULT after what it copied.
    let h2 = Harness()
    #expect(h2.call(.consoleIO, 0, 0x2000, UInt64(Harness.ramSize) - 0x1000) == .error(.efault))
    #expect(h2.console.written.withLock { $0.count } == 0x1000)
}

@Test func consoleRead() {
    let h = Harness()
    #expect(h.call(.consoleIO, 1, 16, 0x1000) == .zero)
    h.console.input.withLock { $0 = Array("abc".utf8) }
    #expect(h.call(.consoleIO, 1, 2, 0x1000) == .returnToGuest(2))
    #expect(h.bytes(0x1000, 2) == Array("ab".utf8))
    #expect(h.call(.consoleIO, 1, 0x8000_0000, 0x1000) == .error(.e2big))
    #expect(h.call(.consoleIO, 2, 0, 0) == .error(.enosys))
}

// MARK: sched_op

@Test(arguments: ShutdownReason.allCases)
func shutdownReasons(reason: ShutdownReason) {
    let h = Harness()
    h.set(reason.rawValue, 0x1000)
    #expect(h.call(.schedOp, 2, 0x1000) == .shutdown(reason))
}

@Test func shutdownCodeLatchesTheReason() {
    let h = Harness()
    h.set(UInt32(1), 0x1000)
    #expect(h.call(.schedOp, 5, 0x1000) == .zero)  // shutdown_code: reboot
    h.set(UInt32(0), 0x1000)
    #expect(h.call(.schedOp, 2, 0x1000) == .shutdown(.reboot))
    #expect(h.state.shutdownCode == 1)
}

@Test func schedOpOthers() {
    let h = Harness()
    #expect(h.call(.schedOp, 0, 0) == .yield)
    #expect(h.call(.schedOp, 2, bad) == .error(.efault))
    h.set(UInt32(200), 0x1000)
    #expect(h.call(.schedOp, 2, 0x1000) == .shutdown(.crash))  // unknown reason
    #expect(h.call(.schedOp, 1, 0) == .error(.enosys))  // block: documented, needs event channels
    #expect(h.call(.schedOp, 3, 0x1000) == .error(.enosys))  // poll: same
    #expect(h.call(.schedOp, 7, 0x1000) == .error(.eperm))  // pin_override: hardware domain only
    h.set(UInt16(Harness.domid.rawValue), 0x2000)
    #expect(h.call(.schedOp, 4, 0x2000) == .error(.eperm))
    h.set(UInt16(9), 0x2000)
    #expect(h.call(.schedOp, 4, 0x2000) == .error(.esrch))
    #expect(h.call(.schedOp, 42, 0) == .error(.enosys))
}

// MARK: memory_op

private func putMemoryMap(_ h: Harness, at a: UInt64, capacity: UInt32, buffer: UInt64, mode: GuestCPUMode = .long64) {
    h.set(capacity, a)
    if mode == .long64 { h.set(buffer, a + 8) } else { h.set(UInt32(buffer), a + 4) }
}

@Test func memoryMap() {
    let h = Harness()
    putMemoryMap(h, at: 0x1000, capacity: 16, buffer: 0x2000)
    #expect(h.call(.memoryOp, 9, 0x1000) == .zero)
    #expect(h.u32(0x1000) == 3)
    #expect(h.u64(0x2000) == 0 && h.u64(0x2008) == 0x9f000 && h.u32(0x2010) == 1)
    // Entries are packed 20-byte E820 records.
    #expect(h.u64(0x2014) == 0x9f000 && h.u64(0x201c) == 0x1000 && h.u32(0x2024) == 2)
    #expect(h.u64(0x2028) == 0x100000 && h.u32(0x2038) == 1)
    #expect(h.u32(0x203c) == 0)
}

@Test func memoryMapTooSmallIsTruncated() {
    let h = Harness()
    putMemoryMap(h, at: 0x1000, capacity: 1, buffer: 0x2000)
    #expect(h.call(.memoryOp, 9, 0x1000) == .zero)
    #expect(h.u32(0x1000) == 1)
    #expect(h.u64(0x2014) == 0)  // nothing past the first entry
    putMemoryMap(h, at: 0x1000, capacity: 0, buffer: bad)
    #expect(h.call(.memoryOp, 9, 0x1000) == .zero)
    #expect(h.u32(0x1000) == 0)
}

@Test func memoryMapCompatLayoutAndErrors() {
    let h = Harness()
    putMemoryMap(h, at: 0x1000, capacity: 8, buffer: 0x3000, mode: .protected32)
    #expect(h.call(.memoryOp, 9, 0x1000, mode: .protected32) == .zero)
    #expect(h.u32(0x1000) == 3 && h.u64(0x3008) == 0x9f000)
    putMemoryMap(h, at: 0x1000, capacity: 8, buffer: bad)
    #expect(h.call(.memoryOp, 9, 0x1000) == .error(.efault))
    #expect(h.call(.memoryOp, 9, bad) == .error(.efault))
    #expect(h.call(.memoryOp, 1 << 6 | 9, 0x1000) == .error(.enosys))
    #expect(Harness(memoryMap: []).call(.memoryOp, 9, 0x1000) == .error(.enosys))
    #expect(h.call(.memoryOp, 10, 0x1000) == .error(.enosys))  // machine_memory_map
    #expect(h.call(.memoryOp, 63, 0x1000) == .error(.enosys))
}

@Test func reservations() {
    let h = Harness()
    h.set(UInt16(selfID), 0x1000)
    #expect(h.call(.memoryOp, 3, 0x1000) == .returnToGuest(4096))
    #expect(h.call(.memoryOp, 4, 0x1000) == .returnToGuest(8192))
    h.set(Harness.domid.rawValue, 0x1000)
    #expect(h.call(.memoryOp, 3, 0x1000) == .returnToGuest(4096))
    // The control domain exists but is not ours (XSM_TARGET); domain 9 does not exist.
    h.set(UInt16(0), 0x1000)
    #expect(h.call(.memoryOp, 3, 0x1000) == .error(.eperm))
    h.set(UInt16(9), 0x1000)
    #expect(h.call(.memoryOp, 3, 0x1000) == .error(.esrch))
    #expect(h.call(.memoryOp, 3, bad) == .error(.efault))
    #expect(h.call(.memoryOp, 1 << 6 | 3, 0x1000) == .error(.einval))
}

private func putAddToPhysmap(_ h: Harness, domid: UInt64 = selfID, space: UInt32, idx: UInt64, gpfn: UInt64) {
    h.set(UInt16(domid), 0x1000)
    h.set(UInt16(0), 0x1002)
    h.set(space, 0x1004)
    h.set(idx, 0x1008)
    h.set(gpfn, 0x1010)
}

@Test func addToPhysmapSharedInfo() {
    let h = Harness()
    putAddToPhysmap(h, space: 0, idx: 0, gpfn: 0xfeff0)
    #expect(h.call(.memoryOp, 7, 0x1000) == .zero)
    #expect(h.physmap.frames.withLock { $0 } == [GuestFrameNumber(0xfeff0)])
    #expect(h.state.sharedInfoFrame == GuestFrameNumber(0xfeff0))
    putAddToPhysmap(h, space: 0, idx: 1, gpfn: 0xfeff0)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.einval))
    putAddToPhysmap(h, space: 0, idx: 0, gpfn: .max)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.einval))
    putAddToPhysmap(h, space: 1, idx: 0, gpfn: 0x100)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.enosys))  // grant table: no service in this harness
    putAddToPhysmap(h, space: 4, idx: 0, gpfn: 0x100)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.enosys))  // foreign: batch only
    putAddToPhysmap(h, space: 99, idx: 0, gpfn: 0x100)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.einval))
    putAddToPhysmap(h, domid: 3, space: 0, idx: 0, gpfn: 0x100)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.esrch))
    h.physmap.failure.withLock { $0 = .enomem }
    putAddToPhysmap(h, space: 0, idx: 0, gpfn: 0x200)
    #expect(h.call(.memoryOp, 7, 0x1000) == .error(.enomem))
    #expect(h.state.sharedInfoFrame == GuestFrameNumber(0xfeff0))
}

@Test func addToPhysmapCompatLayout() {
    let h = Harness()
    h.set(UInt16(selfID), 0x1000)
    h.set(UInt32(0), 0x1004)  // space shared_info
    h.set(UInt32(0), 0x1008)  // idx
    h.set(UInt32(0xfeff1), 0x100c)  // gpfn (4 bytes in compat)
    #expect(h.call(.memoryOp, 7, 0x1000, mode: .protected32) == .zero)
    #expect(h.state.sharedInfoFrame == GuestFrameNumber(0xfeff1))
}

// MARK: vcpu_op

private func putRegistration(_ h: Harness, mfn: UInt64, offset: UInt32) {
    h.set(mfn, 0x1000)
    h.set(offset, 0x1008)
    h.set(UInt32(0), 0x100c)
}

@Test func registerVCPUInfo() {
    let h = Harness()
    h.put([UInt8](repeating: 0xee, count: 64), 0x5040)
    putRegistration(h, mfn: 5, offset: 0x40)
    #expect(h.call(.vcpuOp, 10, 1, 0x1000) == .zero)
    #expect(h.state.vcpuInfo(for: VCPUID(1)) == VCPUInfoRegistration(frame: GuestFrameNumber(5), offset: 0x40))
    // No shared_info yet: zeroed, events masked.
    #expect(h.bytes(0x5040, 2) == [0, 1] && h.bytes(0x5042, 62).allSatisfy { $0 == 0 })
    // A vCPU registers once.
    #expect(h.call(.vcpuOp, 10, 1, 0x1000) == .error(.einval))
}

@Test func registerVCPUInfoCopiesTheLegacySlot() {
    let h = Harness()
    putAddToPhysmap(h, space: 0, idx: 0, gpfn: 0x80)
    #expect(h.call(.memoryOp, 7, 0x1000) == .zero)
    h.put([UInt8](repeating: 0x5a, count: 64), 0x80000 + 64)  // shared_info.vcpu_info[1]
    putRegistration(h, mfn: 6, offset: 0)
    #expect(h.call(.vcpuOp, 10, 1, 0x1000) == .zero)
    #expect(h.bytes(0x6000, 64) == [UInt8](repeating: 0x5a, count: 64))
}

@Test func registerVCPUInfoErrors() {
    let h = Harness()
    putRegistration(h, mfn: 5, offset: 4096 - 32)  // would cross the page
    #expect(h.call(.vcpuOp, 10, 0, 0x1000) == .error(.enxio))
    putRegistration(h, mfn: 5, offset: 0xffff_ffff)
    #expect(h.call(.vcpuOp, 10, 0, 0x1000) == .error(.enxio))
    putRegistration(h, mfn: 5, offset: 4)  // misaligned
    #expect(h.call(.vcpuOp, 10, 0, 0x1000) == .error(.enxio))
    putRegistration(h, mfn: 0x7_0000, offset: 0)  // not RAM
    #expect(h.call(.vcpuOp, 10, 0, 0x1000) == .error(.einval))
    putRegistration(h, mfn: .max, offset: 0)
    #expect(h.call(.vcpuOp, 10, 0, 0x1000) == .error(.einval))
    putRegistration(h, mfn: 5, offset: 4096 - 64)  // last slot that fits
    #expect(h.call(.vcpuOp, 10, 2, 0x1000) == .error(.enoent))  // vCPU 2 of 2
    #expect(h.call(.vcpuOp, 10, 0, bad) == .error(.efault))
    #expect(h.call(.vcpuOp, 10, 0, 0x1000) == .zero)
    #expect(h.call(.vcpuOp, 3, 0, 0) == .returnToGuest(1))  // is_up: vCPU 0 is up even without a lifecycle service
    #expect(h.call(.vcpuOp, 1, 1, 0) == .error(.enosys))  // up: no lifecycle service
    #expect(h.call(.vcpuOp, 99, 0, 0) == .error(.enosys))
    #expect(h.call(.vcpuOp, 99, 7, 0) == .error(.enoent))
}

// MARK: hvm_op

private func putParam(_ h: Harness, domid: UInt64 = selfID, index: UInt32, value: UInt64 = 0) {
    h.set(UInt16(domid), 0x1000)
    h.set(index, 0x1004)
    h.set(value, 0x1008)
}

@Test func hvmParams() {
    let h = Harness()
    putParam(h, index: 1, value: 0xdead)
    #expect(h.call(.hvmOp, 1, 0x1000) == .zero)
    #expect(h.u64(0x1008) == 0)  // STORE_PFN unset: 0, success
    h.state.setParameter(.storePFN, to: 0xfeffe)
    #expect(h.call(.hvmOp, 1, 0x1000) == .zero)
    #expect(h.u64(0x1008) == 0xfeffe)
    putParam(h, index: 0, value: 2 << 56 | 0xf3)
    #expect(h.call(.hvmOp, 0, 0x1000) == .zero)
    #expect(h.state.callbackVia == .vector(0xf3))
    #expect(h.state.sharedInfoIs32Bit == false)
    putParam(h, index: 0, value: 0)
    #expect(h.call(.hvmOp, 1, 0x1000) == .zero)
    #expect(h.u64(0x1008) == 2 << 56 | 0xf3)
    putParam(h, domid: UInt64(Harness.domid.rawValue), index: 2, value: 7)
    #expect(h.call(.hvmOp, 0, 0x1000) == .zero)
    #expect(h.state.parameter(.storeEvtchn) == 7)
}

@Test func hvmParamErrors() {
    let h = Harness()
    putParam(h, index: 39)
    #expect(h.call(.hvmOp, 1, 0x1000) == .error(.einval))
    putParam(h, index: 0xffff_ffff)
    #expect(h.call(.hvmOp, 0, 0x1000) == .error(.einval))
    putParam(h, index: 4)  // deprecated PAE_ENABLED
    #expect(h.call(.hvmOp, 1, 0x1000) == .error(.einval))
    putParam(h, domid: 0, index: 1)
    #expect(h.call(.hvmOp, 1, 0x1000) == .error(.eperm))  // the control domain: exists, not ours
    putParam(h, domid: 9, index: 1)
    #expect(h.call(.hvmOp, 1, 0x1000) == .error(.esrch))
    putParam(h, index: 10)  // TIMER_MODE: toolstack only
    #expect(h.call(.hvmOp, 1, 0x1000) == .error(.eperm))
    putParam(h, index: 1, value: 5)  // STORE_PFN: the guest may not set it
    #expect(h.call(.hvmOp, 0, 0x1000) == .error(.eperm))
    putParam(h, index: 36, value: 5)  // X87_FIP_WIDTH in {0, 4, 8}
    #expect(h.call(.hvmOp, 0, 0x1000) == .error(.einval))
    putParam(h, index: 15, value: 1 << 33)  // VM86_TSS beyond 32 bits: Xen crashes the domain
    #expect(h.call(.hvmOp, 0, 0x1000) == .shutdown(.crash))
    putParam(h, index: 19, value: 1)
    #expect(h.call(.hvmOp, 0, 0x1000) == .error(.enodev))
    #expect(h.call(.hvmOp, 1, bad) == .error(.efault))
    #expect(h.call(.hvmOp, 99, 0x1000) == .error(.enosys))
    #expect(h.call(.hvmOp, 10, 0x1000) == .error(.enosys))  // HVMOP_get_time: not implemented
}

@Test func callbackFrom32BitModeLatchesSharedInfoLayout() {
    let h = Harness()
    putParam(h, index: 0, value: 2 << 56 | 0xf3)
    #expect(h.call(.hvmOp, 0, 0x1000, mode: .protected32) == .zero)
    #expect(h.state.sharedInfoIs32Bit)
    // vcpu_info then only needs 4-byte alignment.
    putRegistration(h, mfn: 5, offset: 4)
    #expect(h.call(.vcpuOp, 10, 0, 0x1000, mode: .protected32) == .zero)
}
