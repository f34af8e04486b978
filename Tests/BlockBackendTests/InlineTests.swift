import BlockBackend
import BlockFrontend
import DeviceRuntime
import HostIO
import Testing
import XenABI

/// A queue runs a write or flush on its own thread
/// (`CallerReapedBlockIOEngine.performInline`) only when it is the one
/// request in flight and none waits on the ring. The engine here completes
/// nothing that was submitted until the test releases it, so a response
/// that comes without a release was run inline.
@Suite("Block queue running lone writes and flushes on its thread")
struct InlineTests {
    typealias Held = PendingPollingTests.HeldCallerReaped

    static func disk(_ guest: Guest, inline: Bool = true) throws -> (Disk<BlkifX86_64>, Held) {
        try PendingPollingTests.heldDisk(guest, inline: inline)
    }

    /// The next `count` responses (a released completion wakes the queue
    /// through the engine's event, not in step with `sync`).
    static func responses(_ disk: Disk<BlkifX86_64>, _ count: Int) throws -> [BlkifWireResponse] {
        var all: [BlkifWireResponse] = []
        while all.count < count {
            let more = try disk.front.waitForResponses(timeout: .seconds(30))
            if more.isEmpty { break }
            all += more
        }
        return all
    }

    @Test("a lone write, a lone flush and a barrier's flush–write–flush run inline and are answered with nothing submitted; a write while a read is in the disk, and two writes taken together, are submitted; the data is on disk")
    func loneOperations() throws {
        let guest = try Guest()
        let (disk, held) = try Self.disk(guest)
        let io = IOTests()

        #expect(try disk.front.submit([try io.pageWrite(guest, id: 1, sector: 0, seed: 11)]))
        #expect(try disk.front.waitForResponses(timeout: .seconds(30)) == [BlkifWireResponse(id: 1, operation: 1, status: .okay)])
        #expect(try disk.front.submit([Blkfront.flush(id: 2)]))
        #expect(try disk.front.waitForResponses(timeout: .seconds(30)) == [BlkifWireResponse(id: 2, operation: 3, status: .okay)])
        #expect(held.inlined.withLock { $0 } == ["write", "flush"])
        #expect(held.heldCount == 0)
        #expect(try disk.file.read(at: 0, count: 4096) == Pattern.bytes(11))

        let frame = guest.allocatePages()
        try guest.fill(frame, Pattern.bytes(12))
        let barrier = Blkfront.rw(.writeBarrier, id: 3, sector: 8, [Blkfront.page(try guest.grant(frame, readOnly: true))])
        #expect(try disk.front.submit([barrier]))
        #expect(try disk.front.waitForResponses(timeout: .seconds(30)) == [BlkifWireResponse(id: 3, operation: 2, status: .okay)])
        #expect(held.inlined.withLock { $0 } == ["write", "flush", "flush", "write", "flush"])
        #expect(disk.backend.metrics.inlineOperations.load(ordering: .relaxed) == 5)
        #expect(try disk.file.read(at: 8 * 512, count: 4096) == Pattern.bytes(12))

        // A read is submitted (never inline); a write behind it is not alone.
        let (read, readFrame) = try io.pageRead(guest, id: 4, sector: 0)
        #expect(try disk.front.submit([read]))
        try disk.sync()
        #expect(held.heldCount == 1)
        #expect(try disk.front.submit([try io.pageWrite(guest, id: 5, sector: 16, seed: 13)]))
        try disk.sync()
        #expect(held.heldCount == 2)
        #expect(try disk.front.responses().isEmpty)
        held.release()
        #expect(Set(try Self.responses(disk, 2).map(\.id)) == [4, 5])
        #expect(try guest.page(readFrame) == Pattern.bytes(11))

        // Two writes taken off the ring together: both submitted.
        #expect(try disk.front.submit([try io.pageWrite(guest, id: 6, sector: 24, seed: 14),
                                       try io.pageWrite(guest, id: 7, sector: 32, seed: 15)]))
        try disk.sync()
        #expect(held.heldCount == 2)
        held.release()
        #expect(Set(try Self.responses(disk, 2).map(\.id)) == [6, 7])
        #expect(held.inlined.withLock { $0 }.count == 5)
        #expect(disk.backend.metrics.inlineOperations.load(ordering: .relaxed) == 5)
        #expect(try disk.file.read(at: 16 * 512, count: 4096) == Pattern.bytes(13))
        #expect(try disk.file.read(at: 32 * 512, count: 4096) == Pattern.bytes(15))
    }

    @Test("runsLoneOperationsInline off: a lone write and flush are submitted")
    func off() throws {
        let guest = try Guest()
        let (disk, held) = try Self.disk(guest, inline: false)
        #expect(try disk.front.submit([try IOTests().pageWrite(guest, id: 1, sector: 0, seed: 21)]))
        try disk.sync()
        #expect(held.heldCount == 1)
        held.release()
        #expect(try Self.responses(disk, 1).map(\.id) == [1])
        #expect(try disk.front.submit([Blkfront.flush(id: 2)]))
        try disk.sync()
        #expect(held.heldCount == 1)
        held.release()
        #expect(try Self.responses(disk, 1).map(\.id) == [2])
        #expect(held.inlined.withLock { $0 }.isEmpty)
        #expect(disk.backend.metrics.inlineOperations.load(ordering: .relaxed) == 0)
    }
}
