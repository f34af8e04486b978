import Dispatch
import GrantTables
import GuestMemory
import Locking
import Testing
import TestSupport
import XenABI

/// A 16 MiB guest (d5) whose grant table's default area starts at frame
/// 0xf00; the backend domain is d0.
struct Fixture {
    static let guest = DomainID(rawValue: 5)
    static let backend = DomainID(rawValue: 0)
    static let area: UInt64 = 0xf00
    let memory: MockGuestMemory
    let table: GrantTable

    init(maxFrames: Int = 64, maximumHolds: Int = 16384, memory: MockGuestMemory = MockGuestMemory(size: 16 << 20)) {
        self.memory = memory
        table = GrantTable(configuration: .init(domainID: Fixture.guest, maximumFrames: maxFrames,
                                                defaultArea: GuestFrameNumber(Fixture.area), maximumHolds: maximumHolds),
                           memory: memory)
    }

    /// Where shared frame `i` is now (what setup_table reports).
    func frame(_ i: Int) -> UInt64 {
        (try? table.setupTable(domain: .`self`, frames: UInt32(i + 1)))?.last?.rawValue ?? 0xdead
    }

    /// Writes a v1 entry the way a frontend does.
    func v1(_ ref: UInt32, flags: GrantEntryFlags, domid: UInt16 = 0, frame: UInt32) {
        let at = GuestPhysicalAddress(self.frame(Int(ref) / 512) << 12 + UInt64(ref % 512) * 8)
        try? memory.store(UInt64(flags.rawValue) | UInt64(domid) << 16 | UInt64(frame) << 32, at: at)
    }
    func v1Flags(_ ref: UInt32) -> UInt16 {
        (try? memory.load(UInt16.self, at: GuestPhysicalAddress(frame(Int(ref) / 512) << 12 + UInt64(ref % 512) * 8))) ?? 0xdead
    }

    /// Writes a v2 entry (full page, or sub-page when `subPage` is given).
    func v2(_ ref: UInt32, flags: GrantEntryFlags, domid: UInt16 = 0, frame: UInt64, subPage: (UInt16, UInt16)? = nil) {
        var e = [UInt8](repeating: 0, count: 16)
        var f = flags
        if subPage != nil { f.insert(.subPage) }
        e.setWireValue(f.rawValue, in: XenWire.GrantEntryHeader.flags)
        e.setWireValue(domid, in: XenWire.GrantEntryHeader.domid)
        if let (off, len) = subPage {
            e.setWireValue(off, in: XenWire.GrantEntryV2.subPageOffset)
            e.setWireValue(len, in: XenWire.GrantEntryV2.subPageLength)
            e.setWireValue(frame, in: XenWire.GrantEntryV2.subPageFrame)
        } else {
            e.setWireValue(frame, in: XenWire.GrantEntryV2.fullPageFrame)
        }
        try? memory.write(e, at: GuestPhysicalAddress(self.frame(Int(ref) / 256) << 12 + UInt64(ref % 256) * 16))
    }
    func v2Status(_ ref: UInt32) -> UInt16 {
        guard let frames = try? table.statusFrames(domain: .`self`, count: UInt32(table.statusFrameCount)),
              Int(ref) / 2048 < frames.count else { return 0xdead }
        return (try? memory.load(UInt16.self, at: GuestPhysicalAddress(frames[Int(ref) / 2048].rawValue << 12 + UInt64(ref % 2048) * 2))) ?? 0xdead
    }

    func page(_ gfn: UInt64) -> [UInt8] { (try? memory.read(at: GuestPhysicalAddress(gfn << 12), count: 4096)) ?? [] }
    func fill(_ gfn: UInt64, _ byte: UInt8) { try? memory.fill(at: GuestPhysicalAddress(gfn << 12), count: 4096, with: byte) }
}

let permit = GrantEntryFlags.permitAccess
let reading = GrantEntryFlags.reading.rawValue
let writing = GrantEntryFlags.writing.rawValue

@Suite struct SizeAndSetup {
    @Test("query_size: one frame at first, the configured limit; unknown and backend domains refused")
    func querySize() throws {
        let f = Fixture(maxFrames: 32)
        let size = try f.table.querySize(domain: .`self`)
        #expect(size.frames == 1 && size.maximumFrames == 32)
        #expect(try f.table.querySize(domain: Fixture.guest).frames == 1)
        #expect(throws: GrantStatus.badDomain) { try f.table.querySize(domain: DomainID(rawValue: 9)) }
        #expect(throws: GrantStatus.permissionDenied) { try f.table.querySize(domain: Fixture.backend) }
    }

    @Test("setup_table: frames not placed by the guest are in their default slots; grows, never shrinks; limits")
    func setupTable() throws {
        let f = Fixture(maxFrames: 8)
        let frames = try f.table.setupTable(domain: .`self`, frames: 3)
        #expect(frames.map(\.rawValue) == [0xf00, 0xf01, 0xf02])
        #expect(f.table.frameCount == 3)
        _ = try f.table.setupTable(domain: .`self`, frames: 1)
        #expect(f.table.frameCount == 3)
        #expect(throws: GrantStatus.generalError) { try f.table.setupTable(domain: .`self`, frames: 9) }
        #expect(throws: GrantStatus.generalError) { try f.table.setupTable(domain: .`self`, frames: 4, limit: 3) }
        #expect(throws: GrantStatus.badDomain) { try f.table.setupTable(domain: DomainID(rawValue: 9), frames: 1) }
        #expect(throws: GrantStatus.permissionDenied) { try f.table.setupTable(domain: Fixture.backend, frames: 1) }
        #expect(f.table.defaultAreaRange == GuestPhysicalRange(start: GuestPhysicalAddress(0xf00000), length: 9 * 4096))
    }

    @Test("growth clears the new frames (junk the guest left in the reserved area is not a grant)")
    func growthClears() throws {
        let f = Fixture()
        f.fill(0xf01, 0xff)
        _ = try f.table.setupTable(domain: .`self`, frames: 2)
        #expect(f.page(0xf01).allSatisfy { $0 == 0 })
    }
}

@Suite struct BackendV1 {
    @Test("a v1 grant maps while permitted: GTF_reading while held, cleared at release; bytes bounded to the page")
    func readMapping() throws {
        let f = Fixture()
        try f.memory.write(Array(repeating: 0xab, count: 16), at: GuestPhysicalAddress(0x100000))
        f.v1(10, flags: permit, frame: 0x100)
        let m = try f.table.map(GrantReference(10), access: .read)
        #expect(f.v1Flags(10) == permit.rawValue | reading)
        #expect(m.count == 4096)
        #expect(try m.read(offset: 0, count: 16) == Array(repeating: 0xab, count: 16))
        #expect(throws: GrantError.outOfBounds) { try m.read(offset: 4090, count: 7) }
        #expect(throws: GrantError.outOfBounds) { try m.read(offset: -1, count: 1) }
        #expect(throws: GrantError.notWritable) { try m.write([1], at: 0) }
        m.release()
        #expect(f.v1Flags(10) == permit.rawValue)
        #expect(f.table.pins(GrantReference(10)) == (0, 0))
    }

    @Test("write access sets GTF_reading|GTF_writing; the last writer clears GTF_writing, the last holder GTF_reading")
    func writeMapping() throws {
        let f = Fixture()
        f.v1(11, flags: permit, frame: 0x101)
        let r = try f.table.map(GrantReference(11), access: .read)
        let w = try f.table.map(GrantReference(11), access: .write)
        #expect(f.v1Flags(11) == permit.rawValue | reading | writing)
        try w.write([1, 2, 3], at: 4093)
        #expect(throws: GrantError.outOfBounds) { try w.write([1, 2], at: 4095) }
        #expect(try f.memory.read(at: GuestPhysicalAddress(0x101ffd), count: 3) == [1, 2, 3])
        w.release()
        #expect(f.v1Flags(11) == permit.rawValue | reading)
        r.release()
        #expect(f.v1Flags(11) == permit.rawValue)
    }

    @Test("one-shot copies release before returning")
    func oneShot() throws {
        let f = Fixture()
        f.v1(12, flags: permit, frame: 0x102)
        try f.table.copy(to: GrantReference(12), [9, 8, 7], at: 100)
        #expect(try f.table.copy(from: GrantReference(12), offset: 100, count: 3) == [9, 8, 7])
        #expect(f.v1Flags(12) == permit.rawValue)
        #expect(f.table.holdCount == 0)
    }

    @Test("refused: readonly for write, wrong domid, junk type, frame outside RAM, reference beyond the table")
    func hostileEntries() throws {
        let f = Fixture()
        f.v1(13, flags: [permit, .readonly], frame: 0x103)
        #expect(throws: GrantError.readOnly) { _ = try f.table.map(GrantReference(13), access: .write) }
        #expect(f.v1Flags(13) == permit.rawValue | GrantEntryFlags.readonly.rawValue)
        let ro = try f.table.map(GrantReference(13), access: .read)
        ro.release()
        f.v1(14, flags: permit, domid: 7, frame: 0x103)
        #expect(throws: GrantError.notGranted) { _ = try f.table.map(GrantReference(14), access: .read) }
        f.v1(15, flags: .acceptTransfer, frame: 0x103)
        #expect(throws: GrantError.notGranted) { _ = try f.table.map(GrantReference(15), access: .read) }
        f.v1(16, flags: GrantEntryFlags(rawValue: 0xfffc), frame: 0x103)  // every bit but a type
        #expect(throws: GrantError.notGranted) { _ = try f.table.map(GrantReference(16), access: .read) }
        f.v1(17, flags: permit, frame: 0x10_0000)  // 4 GiB: outside 16 MiB of RAM
        #expect(throws: GrantError.badFrame) { _ = try f.table.map(GrantReference(17), access: .read) }
        #expect(f.v1Flags(17) == permit.rawValue)  // the failed pin left no bits
        #expect(throws: GrantError.badReference) { _ = try f.table.map(GrantReference(512), access: .read) }
        #expect(GrantError.badFrame.status == .badPage && GrantError.badReference.status == .badGrantReference)
        #expect(GrantError.readOnly.status == .generalError && GrantError.tooManyHolds.status == .noSpace)
    }

    @Test("a grant rewritten while held: the hold keeps its frame; release clears only our bits")
    func revokedWhileHeld() throws {
        let f = Fixture()
        try f.memory.write([0x11], at: GuestPhysicalAddress(0x104000))
        try f.memory.write([0x22], at: GuestPhysicalAddress(0x105000))
        f.v1(20, flags: permit, frame: 0x104)
        let m = try f.table.map(GrantReference(20), access: .write)
        // A hostile guest rewrites the whole entry: another frame, readonly.
        f.v1(20, flags: [permit, .readonly, .pcd], frame: 0x105)
        #expect(try m.read(offset: 0, count: 1) == [0x11])
        m.release()
        #expect(f.v1Flags(20) == permit.rawValue | GrantEntryFlags.readonly.rawValue | GrantEntryFlags.pcd.rawValue)
        // Revoked outright (flags 0) while held: release leaves the entry invalid.
        f.v1(21, flags: permit, frame: 0x104)
        let n = try f.table.map(GrantReference(21), access: .read)
        f.v1(21, flags: [], frame: 0)
        n.release()
        #expect(f.v1Flags(21) == 0)
    }

    @Test("holds are bounded: past maximumHolds, GNTST_no_space")
    func holdsBounded() throws {
        let f = Fixture(maximumHolds: 3)
        f.v1(30, flags: permit, frame: 0x106)
        let a = try f.table.map(GrantReference(30), access: .read)
        let b = try f.table.map(GrantReference(30), access: .read)
        let c = try f.table.map(GrantReference(30), access: .read)
        #expect(throws: GrantError.tooManyHolds) { _ = try f.table.map(GrantReference(30), access: .read) }
        #expect(f.table.pins(GrantReference(30)) == (3, 0))
        a.release(); b.release(); c.release()
        #expect(f.table.holdCount == 0)
    }

    @Test("a mapping that is dropped without release() is released too")
    func dropReleases() throws {
        let f = Fixture()
        f.v1(31, flags: permit, frame: 0x107)
        do {
            let m = try f.table.map(GrantReference(31), access: .write)
            #expect(m.count == 4096)
        }
        #expect(f.v1Flags(31) == permit.rawValue)
    }

    @Test("two threads acquiring and releasing one grant keep the bits consistent")
    func concurrency() throws {
        let f = Fixture()
        f.v1(40, flags: permit, frame: 0x108)
        let failures = Lock(0)
        DispatchQueue.concurrentPerform(iterations: 2) { t in
            for _ in 0..<500 {
                do {
                    let m = try f.table.map(GrantReference(40), access: t == 0 ? .read : .write)
                    let flags = f.v1Flags(40)
                    if flags & reading == 0 || (t == 1 && flags & writing == 0) { failures.withLock { $0 += 1 } }
                    m.release()
                } catch {
                    failures.withLock { $0 += 1 }
                }
            }
        }
        #expect(failures.withLock { $0 } == 0)
        #expect(f.v1Flags(40) == permit.rawValue)
        #expect(f.table.pins(GrantReference(40)) == (0, 0))
    }

    @Test("a guest that keeps changing the entry during the compare-and-swap is refused after five tries")
    func unstable() throws {
        let inner = MockGuestMemory(size: 16 << 20)
        let racing = RacingMemory(inner)
        let table = GrantTable(configuration: .init(domainID: Fixture.guest, defaultArea: GuestFrameNumber(Fixture.area)), memory: racing)
        try inner.store(UInt64(permit.rawValue) | UInt64(0x109) << 32, at: GuestPhysicalAddress(0xf00000 + 8 * 50))
        racing.racing.withLock { $0 = true }
        #expect(throws: GrantError.unstable) { _ = try table.map(GrantReference(50), access: .read) }
        #expect(racing.exchanges.withLock { $0 } == 5)
        racing.racing.withLock { $0 = false }
        let m = try table.map(GrantReference(50), access: .read)
        m.release()
    }

    @Test("holdAll: every page held under one lock, bytes bounded per page, released together; a bad one leaves nothing held")
    func holdSet() throws {
        let f = Fixture()
        f.v1(50, flags: permit, frame: 0x150)
        f.v1(51, flags: permit, frame: 0x151)
        f.v1(52, flags: [.permitAccess, .readonly], frame: 0x152)
        let set = try f.table.holdAll([GrantReference(50), GrantReference(51), GrantReference(50)], access: .read)
        #expect(f.table.holdCount == 3)
        #expect(f.table.pins(GrantReference(50)) == (2, 0))
        #expect(f.v1Flags(51) == permit.rawValue | reading)
        #expect(set.bytes(1, offset: 100, length: 50) == GuestPhysicalRange(start: GuestPhysicalAddress(0x151064), length: 50))
        #expect(set.bytes(1, offset: 4000, length: 97) == nil)
        #expect(set.bytes(3, offset: 0, length: 1) == nil)
        set.release()
        set.release()  // idempotent
        #expect(f.table.holdCount == 0)
        #expect(f.v1Flags(50) == permit.rawValue && f.v1Flags(51) == permit.rawValue)
        // The third is read-only, asked for writing: the first two go back.
        #expect(throws: GrantError.readOnly) {
            _ = try f.table.holdAll([GrantReference(50), GrantReference(51), GrantReference(52)], access: .write)
        }
        #expect(f.table.holdCount == 0)
        #expect(f.v1Flags(50) == permit.rawValue && f.v1Flags(51) == permit.rawValue)
        #expect(f.table.pins(GrantReference(50)) == (0, 0))
    }
}

/// Memory whose every compare-exchange first sees the guest flip a bit of
/// the frame number (a guest racing Xen's cmpxchg loop).
final class RacingMemory: GuestMemory, @unchecked Sendable {
    let inner: MockGuestMemory
    let racing = Lock(false)
    let exchanges = Lock(0)
    init(_ inner: MockGuestMemory) { self.inner = inner }
    var regions: [GuestPhysicalRange] { inner.regions }
    func read(at address: GuestPhysicalAddress, count: Int) throws(GuestMemoryError) -> [UInt8] { try inner.read(at: address, count: count) }
    func write(_ bytes: [UInt8], at address: GuestPhysicalAddress) throws(GuestMemoryError) { try inner.write(bytes, at: address) }
    func fill(at address: GuestPhysicalAddress, count: Int, with value: UInt8) throws(GuestMemoryError) { try inner.fill(at: address, count: count, with: value) }
    func load<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T { try inner.load(type, at: address) }
    func store<T: FixedWidthInteger & UnsignedInteger>(_ value: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) { try inner.store(value, at: address) }
    func atomicOr<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T { try inner.atomicOr(bits, at: address) }
    func atomicAnd<T: FixedWidthInteger & UnsignedInteger>(_ bits: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T { try inner.atomicAnd(bits, at: address) }
    func compareExchange<T: FixedWidthInteger & UnsignedInteger>(expected: T, desired: T, at address: GuestPhysicalAddress) throws(GuestMemoryError) -> T {
        if racing.withLock({ $0 }) {
            exchanges.withLock { $0 += 1 }
            let v = try inner.load(UInt64.self, at: address)
            try inner.store(v ^ (UInt64(1) << 40), at: address)
        }
        return try inner.compareExchange(expected: expected, desired: desired, at: address)
    }
}

@Suite struct BackendV2 {
    @Test("v2: the status word carries GTF_reading/GTF_writing; the entry's flags are untouched")
    func statusWord() throws {
        let f = Fixture()
        try f.table.setVersion(2)
        #expect(f.table.statusFrameCount == 1)
        f.v2(9, flags: permit, frame: 0x110)
        let m = try f.table.map(GrantReference(9), access: .write)
        #expect(f.v2Status(9) == reading | writing)
        m.release()
        #expect(f.v2Status(9) == 0)
        f.v2(10, flags: [permit, .readonly], frame: 0x110)
        #expect(throws: GrantError.readOnly) { _ = try f.table.map(GrantReference(10), access: .write) }
        #expect(f.v2Status(10) == 0)
        #expect(throws: GrantError.badReference) { _ = try f.table.map(GrantReference(256), access: .read) }
    }

    @Test("v2 sub-page: only [page_off, page_off + length) is reachable; one past its page is refused")
    func subPage() throws {
        let f = Fixture()
        try f.table.setVersion(2)
        try f.memory.write([5, 6], at: GuestPhysicalAddress(0x111000 + 100))
        f.v2(11, flags: permit, frame: 0x111, subPage: (100, 50))
        let m = try f.table.map(GrantReference(11), access: .write)
        #expect(m.count == 50 && m.region.start == GuestPhysicalAddress(0x111064))
        #expect(try m.read(offset: 0, count: 2) == [5, 6])
        #expect(throws: GrantError.outOfBounds) { try m.read(offset: 0, count: 51) }
        #expect(throws: GrantError.outOfBounds) { try m.write([1], at: 50) }
        m.release()
        f.v2(12, flags: permit, frame: 0x111, subPage: (4000, 200))
        #expect(throws: GrantError.badSubPage) { _ = try f.table.map(GrantReference(12), access: .read) }
        #expect(f.v2Status(12) == 0)
    }

    /// Found by Fuzz/ fuzz-grants (corpus seed `zero-length-sub-page`): the
    /// fuzzer had assumed a mapping is never empty. The table refuses only
    /// a sub-page that passes its page (`badSubPage`), so a zero-length one
    /// maps; what matters is that it reaches nothing.
    @Test("v2 sub-page of length 0 (fuzz-grants): the mapping is empty, nothing in the page is reachable, and it releases")
    func emptySubPage() throws {
        let f = Fixture()
        try f.table.setVersion(2)
        f.v2(15, flags: permit, frame: 0x111, subPage: (0, 0))
        let m = try f.table.map(GrantReference(15), access: .write)
        #expect(m.count == 0 && m.region.start == GuestPhysicalAddress(0x111000))
        #expect(try m.read(offset: 0, count: 0) == [])
        #expect(throws: GrantError.outOfBounds) { try m.read(offset: 0, count: 1) }
        #expect(throws: GrantError.outOfBounds) { try m.write([1], at: 0) }
        let hold = GrantHold(m)
        #expect(hold.bytes(offset: 0, length: 1) == nil)
        #expect(f.table.holdCount == 1)
        hold.release()
        #expect(f.table.holdCount == 0 && f.table.pins(GrantReference(15)) == (0, 0))
    }

    @Test("v2: transitive grants and grants to another domain are refused")
    func transitive() throws {
        let f = Fixture()
        try f.table.setVersion(2)
        f.v2(13, flags: .transitive, frame: 0)
        #expect(throws: GrantError.notGranted) { _ = try f.table.map(GrantReference(13), access: .read) }
        f.v2(14, flags: permit, domid: 3, frame: 0x112)
        #expect(throws: GrantError.notGranted) { _ = try f.table.map(GrantReference(14), access: .read) }
    }
}

@Suite struct Versions {
    @Test("set_version: -EINVAL, -EBUSY past the reserved entries, reserved entries may stay held")
    func rules() throws {
        let f = Fixture()
        #expect(throws: XenErrno.einval) { try f.table.setVersion(3) }
        #expect(throws: XenErrno.einval) { try f.table.setVersion(0) }
        try f.table.setVersion(1)  // same version: nothing to do
        f.v1(8, flags: permit, frame: 0x120)
        let m = try f.table.map(GrantReference(8), access: .read)
        #expect(throws: XenErrno.ebusy) { try f.table.setVersion(2) }
        #expect(f.table.version == 1)
        m.release()
        f.v1(1, flags: permit, frame: 0x121)
        let held = try f.table.map(GrantReference(1), access: .read)
        try f.table.setVersion(2)
        #expect(f.table.version == 2)
        #expect(try f.table.version(domain: .`self`) == 2)
        #expect(throws: XenErrno.eperm) { try f.table.version(domain: Fixture.backend) }
        #expect(throws: XenErrno.esrch) { try f.table.version(domain: DomainID(rawValue: 9)) }
        // The held reserved entry's GTF_reading moved to its status word.
        #expect(f.v2Status(1) == reading)
        held.release()
        #expect(f.v2Status(1) == 0)
    }

    @Test("reserved entries survive v1 → v2 → v1; the rest are cleared; status frames come and go")
    func reservedKept() throws {
        let f = Fixture()
        f.v1(1, flags: [permit, .readonly], domid: 0, frame: 0x1234)
        f.v1(9, flags: permit, frame: 0x99)
        try f.table.setVersion(2)
        let v2 = try f.memory.read(at: GuestPhysicalAddress(0xf00000 + 16), count: 16)
        #expect(v2.wireValue(XenWire.GrantEntryHeader.flags, as: UInt16.self) == permit.rawValue | GrantEntryFlags.readonly.rawValue)
        #expect(v2.wireValue(XenWire.GrantEntryV2.fullPageFrame, as: UInt64.self) == 0x1234)
        #expect(try f.memory.read(at: GuestPhysicalAddress(0xf00000 + 9 * 16), count: 16).allSatisfy { $0 == 0 })
        #expect(try f.table.statusFrames(domain: .`self`, count: 1).map(\.rawValue) == [0xf40])
        try f.table.setVersion(1)
        #expect(f.table.statusFrameCount == 0)
        #expect(f.v1Flags(1) == permit.rawValue | GrantEntryFlags.readonly.rawValue)
        #expect(throws: GrantStatus.generalError) { try f.table.statusFrames(domain: .`self`, count: 1) }
    }

    @Test("v2 → v1 refuses a reserved entry a v1 entry cannot hold (-ERANGE)")
    func range() throws {
        let f = Fixture()
        try f.table.setVersion(2)
        f.v2(2, flags: permit, frame: 1 << 33)
        #expect(throws: XenErrno.erange) { try f.table.setVersion(1) }
        #expect(f.table.version == 2)
        f.v2(2, flags: .transitive, frame: 0)
        #expect(throws: XenErrno.erange) { try f.table.setVersion(1) }
    }
}

@Suite struct Placement {
    @Test("add_to_physmap in RAM: the frame's contents move, its old place is zeroed, the table uses the new place")
    func moveToRAM() throws {
        let f = Fixture()
        f.v1(3, flags: permit, frame: 0x130)
        try f.table.mapFrame(0, at: GuestFrameNumber(0x500))
        #expect(f.frame(0) == 0x500)
        #expect(f.page(0xf00).allSatisfy { $0 == 0 })
        #expect(try f.memory.load(UInt16.self, at: GuestPhysicalAddress(0x500000 + 24)) == permit.rawValue)
        // Backends follow the frame.
        let m = try f.table.map(GrantReference(3), access: .read)
        #expect(try f.memory.load(UInt16.self, at: GuestPhysicalAddress(0x500000 + 24)) == permit.rawValue | reading)
        m.release()
        // Moved again (e.g. to a ballooned page): contents follow.
        try f.table.mapFrame(0, at: GuestFrameNumber(0x600))
        #expect(f.page(0x500).allSatisfy { $0 == 0 })
        #expect(try f.memory.load(UInt16.self, at: GuestPhysicalAddress(0x600000 + 24)) == permit.rawValue)
        #expect(f.table.holdsFrame(GuestFrameNumber(0x600)) && !f.table.holdsFrame(GuestFrameNumber(0x500)))
    }

    @Test("Linux's order: highest index first grows the table at once; then lower indices; later growth keeps them")
    func highestFirst() throws {
        let f = Fixture(maxFrames: 16)
        for i in stride(from: 15, through: 0, by: -1) {
            try f.table.mapFrame(UInt64(i), at: GuestFrameNumber(0x800 + UInt64(i)))
            #expect(f.table.frameCount == 16)
        }
        #expect(try f.table.setupTable(domain: .`self`, frames: 16).map(\.rawValue) == (0..<16).map { 0x800 + UInt64($0) })
        #expect(throws: XenErrno.einval) { try f.table.mapFrame(16, at: GuestFrameNumber(0x900)) }
    }

    @Test("a frame in a hole (memory added there first) works like one in RAM")
    func hole() throws {
        let f = Fixture()
        try f.memory.addRegion(GuestPhysicalRange(start: GuestPhysicalAddress(0xfeff0000), length: 4096))
        f.v1(4, flags: permit, frame: 0x131)
        try f.table.mapFrame(0, at: GuestFrameNumber(0xfeff0))
        #expect(try f.memory.load(UInt16.self, at: GuestPhysicalAddress(0xfeff0000 + 32)) == permit.rawValue)
        let m = try f.table.map(GrantReference(4), access: .read)
        m.release()
        // Not backed: refused.
        #expect(throws: XenErrno.einval) { try f.table.mapFrame(1, at: GuestFrameNumber(0xfeff1)) }
    }

    @Test("refused: another frame's default slot, a status frame under v1, beyond the limit")
    func refused() throws {
        let f = Fixture(maxFrames: 8)
        #expect(throws: XenErrno.einval) { try f.table.mapFrame(0, at: GuestFrameNumber(0xf01)) }
        #expect(throws: XenErrno.einval) { try f.table.checkFrameIndex(0, at: GuestFrameNumber(0xf01)) }
        try f.table.checkFrameIndex(0, at: GuestFrameNumber(0xf00))
        #expect(throws: XenErrno.einval) { try f.table.mapFrame(GrantTableConstants.statusFrameIndexBit, at: GuestFrameNumber(0x700)) }
        #expect(throws: XenErrno.einval) { try f.table.mapFrame(8, at: GuestFrameNumber(0x700)) }
        #expect(throws: XenErrno.einval) { try f.table.mapFrame(1 << 40, at: GuestFrameNumber(0x700)) }
        #expect(f.table.frameCount == 1)
    }

    @Test("a frame mapped where another frame is sends that one back to its slot with its contents")
    func displaced() throws {
        let f = Fixture()
        _ = try f.table.setupTable(domain: .`self`, frames: 2)
        try f.table.mapFrame(0, at: GuestFrameNumber(0x700))
        f.v1(5, flags: permit, frame: 0x132)  // frame 0, now at 0x700
        try f.table.mapFrame(1, at: GuestFrameNumber(0x700))
        #expect(f.frame(0) == 0xf00 && f.frame(1) == 0x700)
        #expect(try f.memory.load(UInt16.self, at: GuestPhysicalAddress(0xf00000 + 40)) == permit.rawValue)
        // vacate: shared_info or a populated page takes 0x700.
        #expect(f.table.vacate(GuestFrameNumber(0x700)...GuestFrameNumber(0x700)))
        #expect(f.frame(1) == 0xf01)
        #expect(!f.table.vacate(GuestFrameNumber(0xf00)...GuestFrameNumber(0xf00)))
    }

    @Test("v2 status frames: placed with XENMAPIDX_grant_table_status; growing a status index grows the table")
    func statusFrames() throws {
        let f = Fixture(maxFrames: 16)
        try f.table.setVersion(2)
        try f.table.mapFrame(GrantTableConstants.statusFrameIndexBit | 1, at: GuestFrameNumber(0x710))
        #expect(f.table.frameCount == 16 && f.table.statusFrameCount == 2)
        #expect(try f.table.statusFrames(domain: .`self`, count: 2).map(\.rawValue) == [0xf10, 0x710])
        #expect(throws: XenErrno.einval) { try f.table.mapFrame(GrantTableConstants.statusFrameIndexBit | 2, at: GuestFrameNumber(0x711)) }
    }
}

@Suite struct Toolstack {
    @Test("seed: the reserved console and XenStore entries, usable by the backend domain")
    func seed() throws {
        let f = Fixture()
        try f.table.seed(GrantTableConstants.consoleReference, to: Fixture.backend, frame: GuestFrameNumber(0xffe))
        try f.table.seed(GrantTableConstants.xenstoreReference, to: Fixture.backend, frame: GuestFrameNumber(0xffd))
        #expect(try f.memory.load(UInt64.self, at: GuestPhysicalAddress(0xf00000)) == UInt64(permit.rawValue) | 0xffe << 32)
        #expect(try f.memory.load(UInt64.self, at: GuestPhysicalAddress(0xf00008)) == UInt64(permit.rawValue) | 0xffd << 32)
        let m = try f.table.map(GrantTableConstants.xenstoreReference, access: .write)
        #expect(m.region.start == GuestPhysicalAddress(0xffd000))
        m.release()
        #expect(throws: GrantError.badReference) { try f.table.seed(GrantReference(512), to: Fixture.backend, frame: GuestFrameNumber(1)) }
    }
}

@Suite struct GuestOperations {
    @Test("swap_grant_ref: entries (and v2 status) swap; held → GNTST_eagain; beyond → GNTST_bad_gntref; same → okay")
    func swap() throws {
        let f = Fixture()
        f.v1(20, flags: permit, frame: 0x140)
        f.v1(21, flags: [permit, .readonly], frame: 0x141)
        #expect(f.table.swap(GrantReference(20), GrantReference(21)) == .okay)
        #expect(f.v1Flags(20) == permit.rawValue | GrantEntryFlags.readonly.rawValue)
        #expect(f.table.swap(GrantReference(20), GrantReference(20)) == .okay)
        #expect(f.table.swap(GrantReference(20), GrantReference(512)) == .badGrantReference)
        let m = try f.table.map(GrantReference(21), access: .read)
        #expect(f.table.swap(GrantReference(20), GrantReference(21)) == .again)
        m.release()
    }

    @Test("copy between the guest's own frames (DOMID_SELF) and through grants to itself")
    func copySelf() throws {
        let f = Fixture()
        try f.memory.write([1, 2, 3, 4], at: GuestPhysicalAddress(0x150010))
        let frame150 = GrantCopyPointer(target: .frame(GuestFrameNumber(0x150)), domain: .`self`, offset: 0x10)
        let frame151 = GrantCopyPointer(target: .frame(GuestFrameNumber(0x151)), domain: .`self`, offset: 0x20)
        #expect(f.table.copy(GrantCopyOperation(source: frame150, destination: frame151, length: 4)) == .okay)
        #expect(try f.memory.read(at: GuestPhysicalAddress(0x151020), count: 4) == [1, 2, 3, 4])
        // A grant the guest made to itself, pinned for the copy and released.
        f.v1(22, flags: permit, domid: 5, frame: 0x152)
        let grant = GrantCopyPointer(target: .grant(GrantReference(22)), domain: Fixture.guest, offset: 0)
        #expect(f.table.copy(GrantCopyOperation(source: frame150, destination: grant, length: 4)) == .okay)
        #expect(try f.memory.read(at: GuestPhysicalAddress(0x152000), count: 4) == [1, 2, 3, 4])
        #expect(f.v1Flags(22) == permit.rawValue)
        // A grant to d0 is not the guest's to copy through.
        f.v1(23, flags: permit, domid: 0, frame: 0x152)
        let other = GrantCopyPointer(target: .grant(GrantReference(23)), domain: .`self`, offset: 0)
        #expect(f.table.copy(GrantCopyOperation(source: other, destination: frame151, length: 4)) == .generalError)
        #expect(f.v1Flags(23) == permit.rawValue)
    }

    @Test("copy errors: frame with a numeric domid, unknown domain, beyond the page, the backend's grants, bad frame")
    func copyErrors() {
        let f = Fixture()
        let good = GrantCopyPointer(target: .frame(GuestFrameNumber(0x150)), domain: .`self`, offset: 0)
        func op(_ s: GrantCopyPointer, _ d: GrantCopyPointer, _ len: UInt16 = 8) -> GrantCopyOperation {
            GrantCopyOperation(source: s, destination: d, length: len)
        }
        #expect(f.table.copy(op(GrantCopyPointer(target: .frame(GuestFrameNumber(0x150)), domain: Fixture.guest, offset: 0), good)) == .permissionDenied)
        #expect(f.table.copy(op(GrantCopyPointer(target: .grant(GrantReference(1)), domain: DomainID(rawValue: 9), offset: 0), good)) == .badDomain)
        #expect(f.table.copy(op(good, GrantCopyPointer(target: .frame(GuestFrameNumber(0x151)), domain: .`self`, offset: 4090))) == .badCopyArgument)
        #expect(f.table.copy(op(GrantCopyPointer(target: .grant(GrantReference(1)), domain: Fixture.backend, offset: 0), good)) == .generalError)
        #expect(f.table.copy(op(GrantCopyPointer(target: .grant(GrantReference(600)), domain: Fixture.backend, offset: 0), good)) == .badGrantReference)
        #expect(f.table.copy(op(GrantCopyPointer(target: .frame(GuestFrameNumber(0x10_0000)), domain: .`self`, offset: 0), good)) == .badPage)
        #expect(f.table.copy(op(GrantCopyPointer(target: .grant(GrantReference(600)), domain: .`self`, offset: 0), good)) == .badGrantReference)
    }

    @Test("map_grant_ref / unmap_grant_ref: nothing a lone guest can map")
    func foreignMaps() {
        let f = Fixture()
        #expect(f.table.mapForeign(domain: Fixture.backend, reference: GrantReference(1), flags: []) == .badGrantReference)
        #expect(f.table.mapForeign(domain: Fixture.backend, reference: GrantReference(1), flags: [.hostMap, .applicationMap]) == .generalError)
        #expect(f.table.mapForeign(domain: .`self`, reference: GrantReference(1), flags: .hostMap) == .badDomain)
        #expect(f.table.mapForeign(domain: DomainID(rawValue: 9), reference: GrantReference(1), flags: .hostMap) == .badDomain)
        #expect(f.table.mapForeign(domain: Fixture.backend, reference: GrantReference(1), flags: .hostMap) == .generalError)
        #expect(f.table.mapForeign(domain: Fixture.backend, reference: GrantReference(512), flags: .hostMap) == .badGrantReference)
        #expect(f.table.mapForeign(domain: Fixture.guest, reference: GrantReference(1), flags: .hostMap) == .generalError)
        #expect(f.table.mapForeign(domain: Fixture.guest, reference: GrantReference(512), flags: .hostMap) == .badGrantReference)
        #expect(f.table.unmapForeign(handle: 0) == .badHandle)
    }
}
