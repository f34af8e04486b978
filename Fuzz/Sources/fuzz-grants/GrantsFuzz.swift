// Fuzz target: the grant table's checks (GrantTables) over mock guest
// memory: up to 64 operations a guest and its backend could interleave,
// GNTTABOP_setup_table, set_version (v1 and v2), get_status_frames,
// XENMEM_add_to_physmap of table frames, raw entry writes (flags, domid,
// frames, sub-page bounds), backend maps and releases, one-shot copies,
// GNTTABOP_copy and swap_grant_ref (grant_table.h). Checks: a mapping lies
// in guest RAM within one page (possibly empty); a hold's byte ranges lie in its region;
// a failed GNTTABOP_copy changes nothing but grant flags; the hold count
// follows the holds, and once all are released nothing is held or pinned.
import FuzzSupport
import GrantTables
import GuestMemory
import XenABI

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzChoices(data, size, fuzzOne) }

@_cdecl("fuzz_grants_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

/// 256 KiB of RAM; the table's default area in frames 0x30... (4 frames
/// and their status frames).
private let ramSize = 256 << 10
private let guestDomain = DomainID(rawValue: 3)
private let domains = [DomainID.`self`, guestDomain, DomainID(rawValue: 0), DomainID(rawValue: 7)]

/// One mapping for the whole run, zeroed at the start of every input (a
/// memset: cheaper than a fresh mapping's page faults), and the two
/// snapshots a copy is checked with, allocated once.
private let memory = guestRAM(ramSize)
nonisolated(unsafe) private var before = [UInt8](repeating: 0, count: ramSize)
nonisolated(unsafe) private var after = [UInt8](repeating: 0, count: ramSize)

private func fuzzOne(_ r: inout FuzzReader) {
    do { try memory.fill(at: GuestPhysicalAddress(0), count: ramSize, with: 0) } catch {
        preconditionFailure("fuzz-grants: cannot zero guest RAM: \(error)")
    }
    let grants = GrantTable(configuration: .init(domainID: guestDomain, maximumFrames: 4, defaultArea: GuestFrameNumber(0x30),
                                                 maximumHolds: 16),
                            memory: memory)
    var tableFrames = (try? grants.setupTable(domain: .`self`, frames: 1)) ?? []
    var holds: [GrantHold] = []
    var touched = Set<UInt32>()
    func reference() -> GrantReference {
        let ref = r.below(4) == 0 ? r.u32() : UInt32(r.below(40))
        touched.insert(ref)
        return GrantReference(rawValue: ref)
    }
    func pointer() -> GrantCopyPointer {
        let target: GrantCopyPointer.Target = r.bool() ? .grant(reference()) : .frame(GuestFrameNumber(r.below(8) == 0 ? r.u64() : UInt64(r.below(80))))
        return GrantCopyPointer(target: target, domain: domains[r.below(domains.count)], offset: r.u16() % 4200)
    }
    for _ in 0..<r.below(65) {
        switch r.below(11) {
        case 0:
            if let f = try? grants.setupTable(domain: domains[r.below(domains.count)], frames: UInt32(r.below(7))), !f.isEmpty { tableFrames = f }
        case 1:
            try? grants.setVersion(UInt32(r.below(4)))
        case 2:
            // A guest's raw entry words anywhere in its table frames.
            guard !tableFrames.isEmpty else { break }
            let frame = tableFrames[r.below(tableFrames.count)]
            let at = GuestPhysicalAddress(frame.rawValue << 12 + UInt64(r.below(512)) * 8)
            try? memory.store(r.below(2) == 0 ? r.u64() : UInt64(r.u16() & 0x7ff | 1) | UInt64(r.below(2)) << 16 | UInt64(r.below(80)) << 32, at: at)
        case 3:
            guard let mapping = try? grants.map(reference(), access: r.bool() ? .write : .read) else { break }
            let region = mapping.region
            // A v2 sub-page grant may be empty (length 0): it reaches nothing.
            precondition(region.length <= 4096 && memory.contains(region.start, count: region.length),
                         "fuzz-grants: mapping \(region) outside guest RAM")
            precondition(region.length == 0 || region.start.rawValue >> 12 == (region.start.rawValue + region.length - 1) >> 12,
                         "fuzz-grants: mapping \(region) crosses a page")
            holds.append(GrantHold(mapping))
        case 4:
            guard !holds.isEmpty else { break }
            let h = holds[r.below(holds.count)]
            if let b = h.bytes(offset: r.below(4200), length: r.below(4200)) {
                precondition(b.start >= h.region.start && b.start.rawValue + b.length <= h.region.start.rawValue + h.region.length,
                             "fuzz-grants: bytes \(b) outside the hold's \(h.region)")
            }
        case 5:
            guard !holds.isEmpty else { break }
            holds.remove(at: r.below(holds.count)).release()
        case 6:
            let op = GrantCopyOperation(source: pointer(), destination: pointer(), length: r.u16() % 4200)
            try? memory.read(at: GuestPhysicalAddress(0), into: &before)
            let status = grants.copy(op)
            try? memory.read(at: GuestPhysicalAddress(0), into: &after)
            if status != .okay, !sameBytes(before, after) {
                // A failed copy changes at most the flags of the grants it
                // pinned and released: table and status frames only, where
                // they are now (case 9 may have placed one at a low frame,
                // XENMAPSPACE_grant_table: fuzz10m found this check missing that).
                for page in 0..<(ramSize >> 12) where before[page << 12..<(page + 1) << 12] != after[page << 12..<(page + 1) << 12] {
                    let frame = GuestFrameNumber(UInt64(page))
                    precondition(page >= 0x30 || tableFrames.contains(frame) || grants.holdsFrame(frame),
                                 "fuzz-grants: a failed copy (\(status)) changed frame \(page)")
                }
            }
        case 7:
            _ = grants.swap(reference(), reference())
        case 8:
            if r.bool() { _ = try? grants.copy(from: reference(), offset: r.below(4200), count: r.below(4200)) } else {
                try? grants.copy(to: reference(), r.take(r.below(64)), at: r.below(4200))
            }
        case 9:
            try? grants.mapFrame(r.below(4) == 0 ? r.u64() : UInt64(r.below(8)) | (r.bool() ? 1 << 31 : 0),
                                 at: GuestFrameNumber(UInt64(r.below(72))))
        default:
            _ = try? grants.statusFrames(domain: domains[r.below(domains.count)], count: UInt32(r.below(6)))
        }
        precondition(grants.holdCount == holds.count, "fuzz-grants: \(grants.holdCount) holds counted, \(holds.count) made")
    }
    for h in holds { h.release() }
    holds.removeAll()
    precondition(grants.holdCount == 0, "fuzz-grants: \(grants.holdCount) holds left")
    for ref in touched {
        let p = grants.pins(GrantReference(rawValue: ref))
        precondition(p.readers == 0 && p.writers == 0, "fuzz-grants: grant \(ref) still pinned \(p)")
    }
}
