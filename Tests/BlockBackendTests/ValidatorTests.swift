import BlockBackend
import BlockFrontend
import GrantTables
import Testing
import XenABI

/// The checks of Linux's dispatch_rw_block_io / dispatch_discard_io /
/// xen_vbd_translate, on wire requests, without a ring.
@Suite("blkif request validation")
struct ValidatorTests {
    let disk = BlockRequestValidator(limits: BlockRequestLimits(sectors: 1000, discard: true))
    let g = GrantReference(rawValue: 9)
    func noIndirect(_: [GrantReference], _: Int) throws(GrantError) -> [BlkifSegment] { throw .badReference }

    func check(_ v: BlockRequestValidator, _ r: BlkifWireRequest,
               indirect: BlockRequestValidator.IndirectSegmentReader? = nil) -> Result<BlockRequest, BlockRequestRejection> {
        v.validate(r, indirectSegments: indirect ?? noIndirect)
    }

    func rejection(_ r: Result<BlockRequest, BlockRequestRejection>) -> (BlkifStatus, BlockRequestRejection.Reason, UInt8)? {
        if case .failure(let e) = r { return (e.status, e.reason, e.responseOperation) }
        return nil
    }

    @Test("a read: byte offset and segment bytes from sector units")
    func read() throws {
        let r = try check(disk, Blkfront.rw(.read, id: 5, sector: 10, [BlkifSegment(grant: g, firstSector: 2, lastSector: 5), Blkfront.page(g)])).get()
        #expect(r.id == 5 && r.responseOperation == 0)
        #expect(r.kind == .read(offset: 5120, segments: [BlockSegment(grant: g, offset: 1024, length: 2048),
                                                         BlockSegment(grant: g, offset: 0, length: 4096)]))
        #expect(r.byteCount == 6144 && !r.modifiesDisk && !r.drainsEarlierWrites)
    }

    @Test("segment counts: 1…11 direct, 0 only for flush and barrier")
    func segmentCounts() {
        #expect(rejection(check(disk, Blkfront.rw(.read, id: 1, sector: 0, [])))?.1 == .badSegmentCount)
        #expect(rejection(check(disk, Blkfront.rw(.write, id: 1, sector: 0, [])))?.1 == .badSegmentCount)
        let twelve = BlkifWireRequest(operation: 1, id: 2, body: .readWrite(nrSegments: 12, handle: 0, sectorNumber: 0,
                                                                            segments: Array(repeating: Blkfront.page(g), count: 11)))
        #expect(rejection(check(disk, twelve))?.0 == .error)
        #expect((try? check(disk, Blkfront.flush(id: 3)).get())?.kind == .flush(barrier: false))
        #expect((try? check(disk, Blkfront.flush(id: 3, barrier: true)).get())?.kind == .flush(barrier: true))
        let fua = try? check(disk, Blkfront.rw(.writeBarrier, id: 4, sector: 8, [Blkfront.page(g)])).get()
        #expect(fua?.kind == .write(offset: 4096, segments: [BlockSegment(grant: g, offset: 0, length: 4096)], ordering: .barrier))
        #expect(fua?.isBarrier == true && fua?.drainsEarlierWrites == true)
    }

    @Test("first_sect <= last_sect <= 7")
    func segments() {
        #expect(rejection(check(disk, Blkfront.rw(.read, id: 1, sector: 0, [BlkifSegment(grant: g, firstSector: 3, lastSector: 2)])))?.1 == .badSegment)
        #expect(rejection(check(disk, Blkfront.rw(.read, id: 1, sector: 0, [BlkifSegment(grant: g, firstSector: 0, lastSector: 8)])))?.1 == .badSegment)
        // A frontend with "feature-large-sector-size" and 4 KiB sectors: only sector 0 of a page exists.
        let large = BlockRequestValidator(limits: BlockRequestLimits(sectorUnit: 4096, sectors: 100))
        #expect(rejection(check(large, Blkfront.rw(.read, id: 1, sector: 0, [BlkifSegment(grant: g, firstSector: 0, lastSector: 1)])))?.1 == .badSegment)
        #expect((try? check(large, Blkfront.rw(.read, id: 1, sector: 99, [BlkifSegment(grant: g, firstSector: 0, lastSector: 0)])).get())?.kind
                == .read(offset: 99 * 4096, segments: [BlockSegment(grant: g, offset: 0, length: 4096)]))
    }

    @Test("the range must lie inside the disk and not wrap")
    func range() {
        #expect((try? check(disk, Blkfront.rw(.write, id: 1, sector: 992, [Blkfront.page(g)])).get()) != nil)
        #expect(rejection(check(disk, Blkfront.rw(.write, id: 1, sector: 993, [Blkfront.page(g)])))?.1 == .outOfRange)
        #expect(rejection(check(disk, Blkfront.rw(.read, id: 1, sector: .max - 3, [Blkfront.page(g)])))?.1 == .outOfRange)
        #expect(rejection(check(disk, Blkfront.discard(id: 1, sector: 999, count: 2)))?.1 == .outOfRange)
        #expect(rejection(check(disk, Blkfront.discard(id: 1, sector: 1, count: .max)))?.1 == .outOfRange)
    }

    @Test("a read-only disk takes reads only")
    func readOnly() {
        let ro = BlockRequestValidator(limits: BlockRequestLimits(sectors: 1000, readOnly: true, discard: true))
        #expect((try? check(ro, Blkfront.rw(.read, id: 1, sector: 0, [Blkfront.page(g)])).get()) != nil)
        #expect(rejection(check(ro, Blkfront.rw(.write, id: 1, sector: 0, [Blkfront.page(g)])))?.1 == .readOnly)
        #expect(rejection(check(ro, Blkfront.flush(id: 1)))?.1 == .readOnly)
        #expect(rejection(check(ro, Blkfront.discard(id: 1, sector: 0, count: 8)))?.1 == .readOnly)
    }

    @Test("unknown operations and unsupported discard are EOPNOTSUPP with the request's id and operation")
    func unsupported() {
        let r = rejection(check(disk, BlkifWireRequest(operation: 4, id: 77, body: .other)))
        #expect(r?.0 == .notSupported && r?.1 == .unknownOperation && r?.2 == 4)
        let noDiscard = BlockRequestValidator(limits: BlockRequestLimits(sectors: 1000))
        #expect(rejection(check(noDiscard, Blkfront.discard(id: 1, sector: 0, count: 8)))?.0 == .notSupported)
        #expect((try? check(disk, Blkfront.discard(id: 1, sector: 8, count: 8, secure: true)).get())?.kind == .discard(offset: 4096, length: 4096))
    }

    @Test("indirect: READ/WRITE only, 1…256 segments, pages read once, the response names the indirect operation")
    func indirect() {
        let pages = [GrantReference(rawValue: 30)]
        var calls = 0
        let reader: BlockRequestValidator.IndirectSegmentReader = { p, n throws(GrantError) in
            calls += 1
            #expect(p == pages)
            return Array(repeating: Blkfront.page(GrantReference(rawValue: 31)), count: n)
        }
        let ok = try? check(disk, Blkfront.indirect(.write, id: 3, sector: 0, segments: 64, pages: pages), indirect: reader).get()
        #expect(calls == 1)
        #expect(ok?.operation == .indirect && ok?.responseOperation == 1 && ok?.byteCount == 64 * 4096)
        let flushOp = rejection(check(disk, Blkfront.indirect(.flushDiskCache, id: 3, sector: 0, segments: 4, pages: pages), indirect: reader))
        #expect(flushOp?.1 == .badIndirectOperation && flushOp?.2 == 3)
        #expect(rejection(check(disk, Blkfront.indirect(.read, id: 3, sector: 0, segments: 257, pages: pages), indirect: reader))?.1 == .badSegmentCount)
        #expect(rejection(check(disk, Blkfront.indirect(.read, id: 3, sector: 0, segments: 0, pages: []), indirect: reader))?.1 == .badSegmentCount)
        let bad = rejection(check(disk, Blkfront.indirect(.read, id: 3, sector: 0, segments: 4, pages: pages)))
        #expect(bad?.1 == .badIndirectPage(.badReference) && bad?.2 == 0)
        #expect(calls == 1)  // rejected before reading
    }
}
