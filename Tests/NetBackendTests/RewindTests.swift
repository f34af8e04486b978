import BlockFrontend
import GuestMemory
import HostIO
@_spi(Fuzzing) import NetBackend
import NetFrontend
import Testing
import XenABI
import XenRing

/// `NetBackend.rewind`, what fuzz-netif resets a kept device with between
/// inputs (its guest's pages it puts back itself), on a threadless runtime
/// so the pumps run in `sync` only.
@Suite("net backend rewind")
struct NetRewindTests {
    @Test("rewind puts the TX ring back at index 0 (a re-initialised ring's packet is sent again, not without it) and drops the RX backlog; a failed device does not rewind")
    func rewind() throws {
        let guest = try Guest(memoryBytes: 4 << 20, mode: .caller)
        let vif = try Vif(guest: guest, post: false)
        let frame = Frames.ipv4(Frames.payload(40))
        let page = guest.allocatePages()
        try guest.fill(page, frame)
        let grant = try guest.grant(page, readOnly: true)
        let base = vif.q.tx.base
        // One packet on a TX ring made afresh (SHARED_RING_INIT: req_prod 0).
        func send() throws -> Int {
            let before = vif.link.sent.count
            let tx = try NetfrontQueue.TxRing(memory: guest.memory, base: base)
            #expect(try tx.enqueue(NetifTxSlot(NetifTxRequest(grant: grant, offset: 0, flags: [], id: 3, size: UInt16(frame.count)))))
            _ = try tx.pushRequests()
            try vif.q.notify(vif.q.txPort)
            try vif.sync()
            return vif.link.sent.count - before
        }
        #expect(try send() == 1)
        #expect(try send() == 0, "the backend's req_cons is 1 without a rewind: slot 0 is not taken again")
        // No RX buffer posted: the frame waits in the backlog.
        vif.link.inject(NetworkFrame(bytes: frame))
        try vif.sync()
        #expect(vif.backend.rxBacklog == [1])
        #expect(vif.backend.rewind())
        #expect(vif.backend.rxBacklog == [0])
        #expect(try send() == 1)
        #expect(vif.link.sent.last?.bytes == frame)
        // req_prod past the ring: the device fails, and stays failed.
        try guest.memory.store(UInt32(1000), at: GuestPhysicalAddress(base.rawValue + UInt64(SharedRingGeometry.requestProducerOffset)))
        try vif.q.notify(vif.q.txPort)
        try vif.sync()
        #expect(vif.backend.runtimeDevice?.isDisabled ?? true)
        #expect(!vif.backend.rewind())
    }
}
