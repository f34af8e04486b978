import BlockBackend
import BlockFrontend
import DeviceRuntime
import Testing
import XenABI
import XenRing

/// The block backend on a threadless runtime (`ExecutionContextMode.caller`,
/// what fuzz-blkif uses): its pumps run only in `sync()`, on the test's
/// thread, and a destroy drains on that thread instead of waiting for a
/// pump nobody runs.
@Suite("block backend, caller mode")
struct BlockCallerModeTests {
    @Test("a request is answered in sync, not before; the pump ran on the caller's thread; destroy returns at once and releases every grant")
    func requestsInSync() throws {
        let guest = try Guest(memoryBytes: 4 << 20, mode: .caller)
        let disk = try Disk<BlkifX86_64>(guest: guest)
        #expect(disk.backend.xenbus.backendState == .connected)
        let device = try #require(disk.backend.runtimeDevice)
        let frame = guest.allocatePages()
        try guest.fill(frame, Pattern.bytes(7))
        let write = Blkfront.rw(.write, id: 41, sector: 8, [Blkfront.page(try guest.grant(frame, readOnly: true))])
        #expect(try disk.front.submit([write]))
        #expect(try disk.front.responses().isEmpty, "nothing runs before sync")
        try disk.sync()
        #expect(try disk.front.responses() == [BlkifWireResponse(id: 41, operation: 1, status: .okay)])
        #expect(try disk.file.read(at: 8 * 512, count: 4096) == Pattern.bytes(7))
        #expect(device.metrics.pumps.load(ordering: .relaxed) >= 1)
        #expect(device.metrics.pumpsOnForbiddenThreads.load(ordering: .relaxed) == 0, "every pump ran as the context's")
        // Published, not yet pumped at destroy: the queue's stop runs its
        // last pump itself (which takes nothing new once stopping) and
        // does not wait out the drain timeout.
        let read = Blkfront.rw(.read, id: 42, sector: 8, [Blkfront.page(try guest.grant(guest.allocatePages()))])
        #expect(try disk.front.submit([read]))
        let started = ContinuousClock.now
        disk.backend.destroy()
        #expect(ContinuousClock.now - started < .seconds(10), "destroy waited for a pump nobody ran")
        #expect(try disk.front.responses().isEmpty)
        #expect(disk.backend.metrics.requestsInFlight.load(ordering: .relaxed) == 0)
        #expect(guest.grants.holdCount == 0)
    }
}
