@_spi(Fuzzing) import BlockBackend
import BlockFrontend
import DeviceRuntime
import GuestMemory
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

    @Test("rewind (fuzz-blkif's) puts the ring back at index 0: a re-initialised ring's request is answered again, not without it; a failed device does not rewind")
    func rewind() throws {
        let guest = try Guest(memoryBytes: 4 << 20, mode: .caller)
        let disk = try Disk<BlkifX86_64>(guest: guest)
        let ref = try guest.grant(guest.allocatePages(), readOnly: true)
        let base = disk.front.ring.base
        // The same request on a ring made afresh (SHARED_RING_INIT: req_prod 0), twice.
        func once() throws -> [BlkifWireResponse] {
            let ring = try BlkfrontRing<BlkifX86_64>.Ring(memory: guest.memory, base: base)
            #expect(try ring.enqueue(BlkifRequestEntry(Blkfront.rw(.write, id: 7, sector: 0, [Blkfront.page(ref)]))))
            _ = try ring.pushRequests()
            try disk.front.kick()
            try disk.sync()
            return try ring.takeResponses().map(\.response)
        }
        let answer = [BlkifWireResponse(id: 7, operation: 1, status: .okay)]
        #expect(try once() == answer)
        #expect(try once().isEmpty, "the backend's req_cons is 1 without a rewind: the ring's slot 0 is not taken again")
        #expect(disk.backend.rewind())
        #expect(try once() == answer)
        #expect(disk.backend.rewind())
        #expect(guest.grants.holdCount == 1, "the ring's page only")
        // req_prod past the ring: the device fails, and stays failed.
        try guest.memory.store(UInt32(1000), at: GuestPhysicalAddress(base.rawValue + UInt64(SharedRingGeometry.requestProducerOffset)))
        try disk.front.kick()
        try disk.sync()
        #expect(disk.backend.runtimeDevice?.isDisabled ?? true)
        #expect(!disk.backend.rewind())
    }
}
