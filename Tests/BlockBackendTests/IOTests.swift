import BlockBackend
import DeviceRuntime
import GrantTables
import GuestMemory
import HostIO
import Synchronization
import Testing
import TestSupport
import XenABI
import XenBus

/// Block I/O end to end: a fake blkfront's requests through the ring, the
/// backend's grants and engine, a scratch file.
@Suite("block backend I/O")
struct IOTests {

    /// Writes `pages` patterned pages at `sector` with one request of
    /// sub-page segments, reads them back into other pages, and checks the
    /// guest's pages and the file.
    func roundTrip<L: BlkifABILayout>(_: L.Type) throws {
        let guest = try Guest()
        let disk = try Disk<L>(guest: guest)
        #expect(disk.backend.xenbus.backendState == .connected)
        // Eleven segments: whole pages, and sectors 2…5 of one page.
        var segments: [BlkifSegment] = []
        var expected: [UInt8] = []
        for i in 0..<11 {
            let frame = guest.allocatePages()
            let bytes = Pattern.bytes(UInt64(i) + 1)
            try guest.fill(frame, bytes)
            let ref = try guest.grant(frame, readOnly: true)
            if i == 4 {
                segments.append(BlkifSegment(grant: ref, firstSector: 2, lastSector: 5))
                expected += bytes[1024..<3072]
            } else {
                segments.append(Blkfront.page(ref))
                expected += bytes
            }
        }
        let write = try disk.roundTrip([Blkfront.rw(.write, id: 0xdead_beef_0000_0001, sector: 16, segments)])
        #expect(write == [BlkifWireResponse(id: 0xdead_beef_0000_0001, operation: 1, status: .okay)])
        #expect(Pattern.checksum(try disk.file.read(at: 16 * 512, count: expected.count)) == Pattern.checksum(expected))

        // Read it back into fresh pages (granted writable), as 11 whole pages
        // where sector counts allow: 10 pages and 4 sectors.
        var readSegments: [BlkifSegment] = []
        var readFrames: [GuestFrameNumber] = []
        for i in 0..<11 {
            let frame = guest.allocatePages()
            readFrames.append(frame)
            let ref = try guest.grant(frame)
            readSegments.append(i == 10 ? BlkifSegment(grant: ref, firstSector: 4, lastSector: 7) : Blkfront.page(ref))
        }
        let read = try disk.roundTrip([Blkfront.rw(.read, id: 2, sector: 16, readSegments)])
        #expect(read == [BlkifWireResponse(id: 2, operation: 0, status: .okay)])
        var got: [UInt8] = []
        for (i, f) in readFrames.enumerated() {
            let page = try guest.page(f)
            if i == 10 {
                got += page[2048..<4096]
                #expect(page[0..<2048].allSatisfy { $0 == 0 }, "bytes outside the segment stay untouched")
            } else {
                got += page
            }
        }
        #expect(Pattern.checksum(got) == Pattern.checksum(expected))
        #expect(got == expected)
        let m = disk.backend.metrics
        #expect(m.writeRequests.load(ordering: .relaxed) == 1 && m.readRequests.load(ordering: .relaxed) == 1)
        #expect(m.bytesWritten.load(ordering: .relaxed) == UInt64(expected.count))
        #expect(m.bytesRead.load(ordering: .relaxed) == UInt64(expected.count))
        #expect(m.requestsInFlight.load(ordering: .relaxed) == 0)
        #expect(guest.grants.holdCount == disk.front.refs.count, "only the ring pages stay mapped")
        #expect(guest.events.isPending(disk.front.port), "the guest was notified")
    }

    @Test("x86_64 frontend: write and read back 11 segments, checksummed")
    func roundTrip64() throws { try roundTrip(BlkifX86_64.self) }

    @Test("x86_32 frontend: the same through the 32-bit layout")
    func roundTrip32() throws { try roundTrip(BlkifX86_32.self) }
}
