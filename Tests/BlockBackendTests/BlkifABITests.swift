import BlockBackend
import CXen
import GrantTables
import Testing
import XenABI
import XenRing

// Checked mirrors: the numbers below are typed from blkif.h (Xen 4.17) and
// Linux's xen-blkback common.h (`blkif_x86_32_request*`, `__packed`), and
// compared with what the code takes from the header through CXen.
@Suite("blkif ABI layouts")
struct BlkifABITests {
    @Test("x86_64: id at 8, sector at 16, seg at 24, a 112-byte request, 16-byte response, 32 slots a page")
    func x86_64() throws {
        let l = BlkifLayout.x86_64
        #expect(l.request.operation == 0 && l.request.nrSegments == 1 && l.request.handle == 2)
        #expect(l.request.id == 8 && l.request.sectorNumber == 16 && l.request.segments == 24)
        #expect(l.request.size == 112 && l.request.alignment == 8)
        #expect(l.segment.size == 8 && l.segment.grantReference == 0 && l.segment.firstSector == 4 && l.segment.lastSector == 5)
        #expect(l.discard.flag == 1 && l.discard.id == 8 && l.discard.sectorNumber == 16 && l.discard.sectorCount == 24)
        #expect(l.indirect.indirectOperation == 1 && l.indirect.nrSegments == 2 && l.indirect.id == 8)
        #expect(l.indirect.sectorNumber == 16 && l.indirect.handle == 24 && l.indirect.grantReferences == 28 && l.indirect.size == 64)
        #expect(l.response.id == 0 && l.response.operation == 8 && l.response.status == 10 && l.response.size == 16)
        #expect(l.slotSize == 112 && l.ringOffset == 64)
        let g = try #require(SharedRingGeometry(BlkifRequestEntry<BlkifX86_64>.self, BlkifResponseEntry<BlkifX86_64>.self, byteCount: 4096))
        #expect(g.slotSize == l.slotSize && g.entries == 32)
    }

    @Test("x86_32: 64-bit fields 4-aligned: id at 4, sector at 12, seg at 20, a 108-byte request, 12-byte response")
    func x86_32() throws {
        let l = BlkifLayout.x86_32
        #expect(l.request.id == 4 && l.request.sectorNumber == 12 && l.request.segments == 20)
        #expect(l.request.size == 108 && l.request.alignment == 4)
        #expect(l.segment == BlkifLayout.x86_64.segment)
        // blkif_x86_32_request_discard: flag 1, id 4, sector_number 12, nr_sectors 20; 28 bytes.
        #expect(l.discard.id == 4 && l.discard.sectorNumber == 12 && l.discard.sectorCount == 20 && l.discard.size == 28)
        // blkif_x86_32_request_indirect: id 4, sector 12, handle 20, grefs 24, padded to 64.
        #expect(l.indirect.id == 4 && l.indirect.sectorNumber == 12 && l.indirect.handle == 20)
        #expect(l.indirect.grantReferences == 24 && l.indirect.size == 64)
        #expect(l.response.id == 0 && l.response.operation == 8 && l.response.status == 10 && l.response.size == 12)
        #expect(l.slotSize == 108 && l.ringOffset == 64)
        let g = try #require(SharedRingGeometry(BlkifRequestEntry<BlkifX86_32>.self, BlkifResponseEntry<BlkifX86_32>.self, byteCount: 4096))
        #expect(g.slotSize == 108 && g.entries == 32)
        // ring-page-order 4: 16 pages → 512 slots (__RING_SIZE rounds down to a power of two).
        #expect(SharedRingGeometry(slotSize: l.slotSize, byteCount: 16 * 4096)?.entries == 512)
    }

    @Test("constants: operations, statuses, VDISK flags, protocol names, 512 segments to an indirect page")
    func constants() {
        #expect(BlkifOperation.allCases.map(\.rawValue) == [0, 1, 2, 3, 5, 6])
        #expect(BlkifOperation(rawValue: 4) == nil)  // BLKIF_OP_RESERVED_1
        #expect(BlkifStatus.allCases.map(\.rawValue) == [0, -1, -2])
        #expect(VDISK_CDROM == 1 && VDISK_READONLY == 4)
        #expect(BlkifABI(protocolName: "x86_32-abi") == .x86_32 && BlkifABI(protocolName: "x86_64-abi") == .x86_64)
        #expect(BlkifABI(protocolName: "arm-abi") == nil && BlkifABI(protocolName: "x86_64-abi ") == nil)
        #expect(BlkifABI.native == .x86_64)
        #expect(BlkifABI.frontendDefault == .x86_32)
        #expect(BlockBackendLimits.segmentsPerIndirectPage == 512)
        #expect(BlockBackendLimits.maximumDirectSegments == 11)
    }

    @Test("a request decodes from its bytes in each ABI: fields at their offsets, only what the operation has")
    func decode() {
        for abi in BlkifABI.allCases {
            let l = abi.layout
            let segments = (0..<11).map { BlkifSegment(grant: GrantReference(rawValue: UInt32(100 + $0)), firstSector: UInt8($0 % 8), lastSector: 7) }
            let rw = BlkifWireRequest(operation: 1, id: 0x1122_3344_5566_7788,
                                      body: .readWrite(nrSegments: 11, handle: 0xabcd, sectorNumber: 0x0102_0304_0506_0708, segments: segments))
            let bytes = rw.ringBytes(layout: l)
            #expect(bytes.count == l.request.size)
            #expect(bytes[l.request.id] == 0x88 && bytes[l.request.id + 7] == 0x11)
            #expect(bytes[l.request.sectorNumber] == 0x08)
            #expect(bytes[l.request.segments + 10 * 8] == 110)
            #expect(BlkifWireRequest(ringBytes: bytes, layout: l) == rw)

            // nr_segments 200 on a direct request: only the 11 slots that exist are read.
            var big = bytes
            big[l.request.nrSegments] = 200
            if case .readWrite(let n, _, _, let s) = BlkifWireRequest(ringBytes: big, layout: l).body {
                #expect(n == 200 && s.count == 11)
            } else { Issue.record("not decoded as read/write") }

            let ind = BlkifWireRequest(operation: 6, id: 7, body: .indirect(operation: 0, nrSegments: 600, handle: 1, sectorNumber: 9,
                                                                            pages: [GrantReference(rawValue: 40), GrantReference(rawValue: 41)]))
            #expect(BlkifWireRequest(ringBytes: ind.ringBytes(layout: l), layout: l) == ind)
            let disc = BlkifWireRequest(operation: 5, id: 8, body: .discard(flag: 1, sectorNumber: 3, sectorCount: 4))
            #expect(BlkifWireRequest(ringBytes: disc.ringBytes(layout: l), layout: l) == disc)
            // An unknown operation keeps its id only.
            var other = bytes
            other[0] = 42
            #expect(BlkifWireRequest(ringBytes: other, layout: l) == BlkifWireRequest(operation: 42, id: 0x1122_3344_5566_7788, body: .other))

            let rsp = BlkifWireResponse(id: 0xfeed, operation: 6, status: .notSupported)
            let rb = rsp.ringBytes(layout: l)
            #expect(rb.count == l.response.size && rb[l.response.status] == 0xfe && rb[l.response.status + 1] == 0xff)
            #expect(BlkifWireResponse(ringBytes: rb, layout: l) == rsp)
        }
    }
}
