import BlockFrontend
import HostIO
import NetBackend
import NetFrontend
import Testing
import TestSupport
import XenABI
import XenRing

/// What a broken or hostile frontend can put on the TX ring: each bad
/// packet gets exactly one response per slot (ERROR) and is counted; a
/// broken ring or framing fails this device only.
@Suite("net backend hostile frontend")
struct HostileTests {
    static func request(grant: GrantReference, offset: UInt16 = 0, flags: NetifTxFlags = [], id: UInt16, size: UInt16) -> NetifTxSlot {
        NetifTxSlot(NetifTxRequest(grant: grant, offset: offset, flags: flags, id: id, size: size))
    }

    @Test("a bad grant: ERROR, counted")
    func badGrant() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        try vif.q.sendSlots([Self.request(grant: GrantReference(rawValue: 5000), id: 7, size: 100)])
        let rsp = try vif.q.waitForTxResponses(1)
        #expect(rsp == [NetifTxResponse(id: 7, status: .error)])
        #expect(vif.metrics.dropped(.txBadGrant) == 1)
        #expect(vif.link.sent.isEmpty)
        #expect(vif.backend.xenbus.backendState == .connected)
    }

    @Test("offset + size past the page: ERROR, counted")
    func offsetPastPage() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        var slots = try vif.q.packetSlots(Frames.ipv4(Frames.payload(200)))
        var r = slots[0].request
        r.offset = 4000
        slots[0] = NetifTxSlot(r)
        try vif.q.sendSlots(slots)
        #expect(try vif.q.waitForTxResponses(1).map(\.status) == [.error])
        #expect(vif.metrics.dropped(.txCrossesPage) == 1)
    }

    @Test("slots ending exactly at the page's edge (offset 4000, 96 bytes each): sent whole; one byte more: ERROR")
    func offsetAtPageEdge() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let frame = Frames.ipv4(Frames.payload(200))
        let slots = try vif.q.packetSlots(frame, slotBytes: 96, offset: 4000)
        #expect(slots.count == 3)
        try vif.q.sendSlots(slots)
        #expect(try vif.q.waitForTxResponses(3).map(\.status) == [.okay, .okay, .okay])
        #expect(vif.link.sent.map(\.bytes) == [frame])
        // The same pages, the second slot 97 bytes from offset 4000: one past the page.
        let a = slots[0].request, b = slots[1].request
        let over = [NetifTxSlot(NetifTxRequest(grant: a.grant, offset: 4000, flags: [.moreData], id: 100, size: 96 + 97)),
                    NetifTxSlot(NetifTxRequest(grant: b.grant, offset: 4000, flags: [], id: 101, size: 97))]
        try vif.q.sendSlots(over)
        #expect(try vif.q.waitForTxResponses(2).map(\.status) == [.error, .error])
        #expect(vif.metrics.dropped(.txCrossesPage) == 1)
        #expect(vif.link.sent.count == 1)
    }

    @Test("a first slot of size 0 (or a runt): ERROR, counted")
    func sizeZero() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        try vif.q.sendSlots([Self.request(grant: vif.q.txRef, id: 1, size: 0), Self.request(grant: vif.q.txRef, id: 2, size: 10)])
        #expect(try vif.q.waitForTxResponses(2).map(\.status) == [.error, .error])
        #expect(vif.metrics.dropped(.txBadSize) == 2)
    }

    @Test("chain sizes adding up to more than the first slot's: ERROR on every slot")
    func sizeMismatch() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        var slots = try vif.q.packetSlots(Frames.ipv4(Frames.payload(5000)))
        var r = slots[0].request
        r.size = 500  // the chain's second slot alone holds 978
        slots[0] = NetifTxSlot(r)
        try vif.q.sendSlots(slots)
        #expect(try vif.q.waitForTxResponses(2).map(\.status) == [.error, .error])
        #expect(vif.metrics.dropped(.txSizeMismatch) == 1)
    }

    @Test("19 and 20 slots (more than XEN_NETBK_LEGACY_SLOTS_MAX): dropped, every slot ERROR; the device goes on")
    func tooManySlotsDropped() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        for n in [19, 20] {
            let slots = try vif.q.packetSlots(Frames.payload(64 * n), slotBytes: 64)
            #expect(slots.count == n)
            try vif.q.sendSlots(slots)
            let rsp = try vif.q.waitForTxResponses(n)
            #expect(rsp.count == n && rsp.allSatisfy { $0.status == .error })
        }
        #expect(vif.metrics.dropped(.txTooManySlots) == 2)
        #expect(vif.backend.xenbus.backendState == .connected)
        // 18 is fine.
        let ok = Frames.payload(64 * 18)
        try vif.q.sendSlots(try vif.q.packetSlots(ok, slotBytes: 64))
        #expect(try vif.q.waitForTxResponses(18).allSatisfy { $0.status == .okay })
        #expect(vif.link.sent.map(\.bytes) == [ok])
    }

    @Test("more than 20 slots: hostile, the device fails (Closing, error node); another device goes on")
    func tooManySlotsFatal() throws {
        let guest = try Guest()
        let bad = try Vif(guest: guest, index: 0)
        let good = try Vif(guest: guest, index: 1)
        let device = try #require(bad.backend.runtimeDevice)
        try bad.q.sendSlots(try bad.q.packetSlots(Frames.payload(64 * 21), slotBytes: 64))
        #expect(device.sync(timeout: .seconds(30)))
        #expect(device.fault?.kind == .hostileGuest)
        #expect(bad.backend.xenbus.backendState == .closing)
        #expect(!bad.backend.isConnected)
        let error = try guest.store.read(bad.address.errorPath)
        #expect(error.hasPrefix("5 ") && error.contains("more than 20 slots"), "\(error)")
        try good.q.send(Frames.ipv4(Frames.payload(10)))
        #expect(try good.q.waitForTxResponses(1).map(\.status) == [.okay])
        #expect(good.backend.xenbus.backendState == .connected)
    }

    @Test("a more_data chain that ends before the published requests do: fatal")
    func truncatedPacket() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let device = try #require(vif.backend.runtimeDevice)
        try vif.q.sendSlots([Self.request(grant: vif.q.txRef, flags: .moreData, id: 1, size: 100)])
        #expect(device.sync(timeout: .seconds(30)))
        #expect(device.fault?.kind == .hostileGuest)
        #expect(vif.backend.xenbus.backendState == .closing)
    }

    @Test("an extra of no known type: fatal")
    func badExtraType() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        let device = try #require(vif.backend.runtimeDevice)
        try vif.q.sendSlots([Self.request(grant: vif.q.txRef, flags: .extraInfo, id: 1, size: 100),
                             NetifTxSlot(NetifExtraInfo(type: 0))])
        #expect(device.sync(timeout: .seconds(30)))
        #expect(device.fault?.kind == .hostileGuest)
        #expect(try guest.store.read(vif.address.errorPath).contains("invalid extra type"))
    }

    @Test("a TX producer index beyond the ring: fatal, error node; the RX ring's the same")
    func indexOverrun() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, index: 0)
        let device = try #require(vif.backend.runtimeDevice)
        try vif.q.tx.setRaw(.requestProducer, RingIndex(1000))
        try vif.q.notify(vif.q.txPort)
        #expect(device.sync(timeout: .seconds(30)))
        #expect(device.fault?.kind == .hostileGuest)
        #expect(vif.backend.xenbus.backendState == .closing)
        let error = try guest.store.read(vif.address.errorPath)
        #expect(error.hasPrefix("5 ") && error.contains("indexOverrun"), "\(error)")
        #expect(guest.grants.holdCount == 0)

        let rxVif = try Vif(guest: guest, index: 1)
        let rxDevice = try #require(rxVif.backend.runtimeDevice)
        try rxVif.q.rx.setRaw(.requestProducer, RingIndex(5000))
        rxVif.link.inject(NetworkFrame(bytes: Frames.ipv4(Frames.payload(1))))
        #expect(rxDevice.sync(timeout: .seconds(30)))
        #expect(rxDevice.fault?.kind == .hostileGuest)
        #expect(rxVif.backend.xenbus.backendState == .closing)
    }
}
