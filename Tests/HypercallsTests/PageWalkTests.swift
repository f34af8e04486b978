import GuestMemory
import Hypercalls
import Testing
import TestSupport
import XenABI

private func paging(_ b: PageTableBuilder) -> GuestPagingState {
    let r = b.controlRegisters
    return GuestPagingState(cr0: r.cr0, cr3: r.cr3, cr4: r.cr4, efer: r.efer)
}

private func setup(_ mode: PageTableBuilder.Mode) throws -> (MockGuestMemory, PageTableBuilder) {
    let memory = MockGuestMemory(size: 16 << 20)
    return (memory, try PageTableBuilder(memory: memory, mode: mode, tableArea: 0x10_0000))
}

@Test func pagingDisabledIsIdentity() throws {
    let memory = MockGuestMemory(size: 1 << 20)
    let t = GuestAddressTranslator(memory: memory, paging: .pagingDisabled)
    #expect(try t.translate(GuestVirtualAddress(0x1234)) == GuestPhysicalAddress(0x1234))
    try memory.write([1, 2, 3], at: GuestPhysicalAddress(0xfff))
    #expect(try t.readVirtual(at: GuestVirtualAddress(0xfff), count: 3) == [1, 2, 3])
    #expect(throws: XenErrno.efault) { try t.readVirtual(at: GuestVirtualAddress(1 << 20), count: 1) }
    // 32-bit linear addresses do not wrap.
    #expect(throws: XenErrno.efault) { try t.readVirtual(at: GuestVirtualAddress(0xffff_fffe), count: 4) }
}

@Test func longModeSmallLargeHugePages() throws {
    let (memory, b) = try setup(.level4)
    try b.map(virtual: 0xffff_8000_0000_1000, physical: 0x20_0000)
    try b.map(virtual: 0xffff_8000_4000_0000, physical: 0x40_0000, size: .large)
    try b.map(virtual: 0x0000_7f00_0000_0000, physical: 0, size: .huge)
    let t = GuestAddressTranslator(memory: memory, paging: paging(b))
    #expect(try t.translate(GuestVirtualAddress(0xffff_8000_0000_1abc)) == GuestPhysicalAddress(0x20_0abc))
    #expect(try t.translate(GuestVirtualAddress(0xffff_8000_401f_fff0)) == GuestPhysicalAddress(0x5f_fff0))
    #expect(try t.translate(GuestVirtualAddress(0x0000_7f00_00ab_cdef)) == GuestPhysicalAddress(0xab_cdef))
    // Not mapped, non-canonical, and mapped but outside RAM.
    #expect(throws: XenErrno.efault) { try t.translate(GuestVirtualAddress(0xffff_8000_0000_2000)) }
    #expect(throws: XenErrno.efault) { try t.translate(GuestVirtualAddress(0x0000_8000_0000_0000)) }
    try b.map(virtual: 0x1000, physical: 0x4000_0000)
    #expect(throws: XenErrno.efault) { try t.readVirtual(at: GuestVirtualAddress(0x1000), count: 1) }
    // 5-level paging is refused.
    var la57 = paging(b)
    la57.cr4 |= 1 << 12
    #expect(throws: XenErrno.efault) { try GuestAddressTranslator(memory: memory, paging: la57).translate(GuestVirtualAddress(0x1000)) }
}

@Test func nonPresentEntries() throws {
    let (memory, b) = try setup(.level4)
    try b.map(virtual: 0x40_0000, physical: 0x30_0000, present: false)
    try b.map(virtual: 0x80_0000, physical: 0x60_0000, size: .large, present: false)
    let t = GuestAddressTranslator(memory: memory, paging: paging(b))
    #expect(throws: XenErrno.efault) { try t.translate(GuestVirtualAddress(0x40_0000)) }
    #expect(throws: XenErrno.efault) { try t.translate(GuestVirtualAddress(0x80_0000)) }
}

@Test func pageCrossingCopiesUseEachPagesMapping() throws {
    let (memory, b) = try setup(.level4)
    // Two adjacent virtual pages backed by non-adjacent physical pages.
    try b.map(virtual: 0x7000_0000, physical: 0x30_0000)
    try b.map(virtual: 0x7000_1000, physical: 0x50_0000)
    let t = GuestAddressTranslator(memory: memory, paging: paging(b))
    try t.writeVirtual(Array(0..<8), at: GuestVirtualAddress(0x7000_0ffc))
    #expect(try memory.read(at: GuestPhysicalAddress(0x30_0ffc), count: 4) == [0, 1, 2, 3])
    #expect(try memory.read(at: GuestPhysicalAddress(0x50_0000), count: 4) == [4, 5, 6, 7])
    #expect(try t.readVirtual(at: GuestVirtualAddress(0x7000_0ffe), count: 4) == [2, 3, 4, 5])
    // A copy running into an unmapped page fails without writing anything.
    #expect(throws: XenErrno.efault) { try t.writeVirtual([9, 9, 9, 9], at: GuestVirtualAddress(0x7000_1ffe)) }
    #expect(try memory.read(at: GuestPhysicalAddress(0x50_0ffe), count: 2) == [0, 0])
    // Strings stop at the NUL, across the page boundary.
    try memory.write(Array("he".utf8), at: GuestPhysicalAddress(0x30_0ffe))
    try memory.write(Array("llo\0junk".utf8), at: GuestPhysicalAddress(0x50_0000))
    #expect(try t.readString(at: GuestVirtualAddress(0x7000_0ffe), max: 100) == Array("hello".utf8))
    #expect(try t.readString(at: GuestVirtualAddress(0x7000_0ffe), max: 3) == Array("hel".utf8))
}

@Test func writeProtectionHonoursCR0WP() throws {
    let (memory, b) = try setup(.level4)
    try b.map(virtual: 0x9000, physical: 0x30_0000, writable: false)
    let t = GuestAddressTranslator(memory: memory, paging: paging(b))
    #expect(try t.readVirtual(at: GuestVirtualAddress(0x9000), count: 1) == [0])
    #expect(throws: XenErrno.efault) { try t.writeVirtual([1], at: GuestVirtualAddress(0x9000)) }
    var noWP = paging(b)
    noWP.cr0 &= ~(1 << 16)
    try GuestAddressTranslator(memory: memory, paging: noWP).writeVirtual([1], at: GuestVirtualAddress(0x9000))
    #expect(try memory.read(at: GuestPhysicalAddress(0x30_0000), count: 1) == [1])
}

@Test func paeSmallAndLargePages() throws {
    let (memory, b) = try setup(.pae)
    try b.map(virtual: 0xc000_1000, physical: 0x20_0000)
    try b.map(virtual: 0x4020_0000, physical: 0x60_0000, size: .large)
    let t = GuestAddressTranslator(memory: memory, paging: paging(b))
    #expect(try t.translate(GuestVirtualAddress(0xc000_1008)) == GuestPhysicalAddress(0x20_0008))
    #expect(try t.translate(GuestVirtualAddress(0x4030_0001)) == GuestPhysicalAddress(0x70_0001))
    #expect(throws: XenErrno.efault) { try t.translate(GuestVirtualAddress(0x8000_0000)) }
    #expect(throws: XenErrno.efault) { try t.translate(GuestVirtualAddress(0x1_0000_0000)) }
}

@Test func twoLevelSmallAndPSEPages() throws {
    let (memory, b) = try setup(.twoLevel)
    try b.map(virtual: 0xc000_3000, physical: 0x20_0000)
    try b.map(virtual: 0x0040_0000, physical: 0x80_0000, size: .large)
    let t = GuestAddressTranslator(memory: memory, paging: paging(b))
    #expect(try t.translate(GuestVirtualAddress(0xc000_3fff)) == GuestPhysicalAddress(0x20_0fff))
    #expect(try t.translate(GuestVirtualAddress(0x0052_3456)) == GuestPhysicalAddress(0x92_3456))
    #expect(throws: XenErrno.efault) { try t.translate(GuestVirtualAddress(0x0080_0000)) }
    // Without CR4.PSE the PS bit is ignored: the entry points at a "page
    // table" at 0x800000, which is all zeroes (not present).
    var noPSE = paging(b)
    noPSE.cr4 = 0
    #expect(throws: XenErrno.efault) { try GuestAddressTranslator(memory: memory, paging: noPSE).translate(GuestVirtualAddress(0x0040_0000)) }
    try memory.store(UInt32(0x0030_0001), at: GuestPhysicalAddress(0x80_0000))
    #expect(try GuestAddressTranslator(memory: memory, paging: noPSE).translate(GuestVirtualAddress(0x0040_0123)) == GuestPhysicalAddress(0x30_0123))
}

@Test func hugeCopyIsRefused() throws {
    let memory = MockGuestMemory(size: 1 << 20)
    let t = GuestAddressTranslator(memory: memory, paging: .pagingDisabled)
    #expect(throws: XenErrno.efault) { try t.readVirtual(at: GuestVirtualAddress(0), count: Int.max) }
    #expect(throws: XenErrno.efault) { try t.readVirtual(at: GuestVirtualAddress(0), count: -1) }
}
