import Foundation
import GuestMemory
import HostIO
import Testing

let passtPath = "/usr/bin/passt"
let passtInstalled = FileManager.default.isExecutableFile(atPath: passtPath)
let tunAvailable = FileManager.default.fileExists(atPath: "/dev/net/tun")
let ipPath = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }

@Suite("Network links: null, errors")
struct NetworkLinkBasicsTests {
    @Test("NullLink drops every frame as linkDown and never receives")
    func nullLink() throws {
        let link = NullLink()
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        let frames = try FrameMemory()
        #expect(throws: NetworkTransmitDrop.linkDown) { try link.transmit(frames.ranges([1, 2, 3]), offload: .none).get() }
        link.stop()
        link.stop()
        #expect(inbox.carrierHistory.isEmpty)
        #expect(link.description == "none")
    }

    @Test("the TAP permission error names the interface and CAP_NET_ADMIN")
    func tapPermissionMessage() {
        #expect(NetworkLinkError.tapCreation(name: "vif1.0", errno: EPERM).description
                == "cannot create TAP vif1.0: operation not permitted (needs CAP_NET_ADMIN)")
        #expect(NetworkLinkError.bridgeNotFound(bridge: "xenbr0", interface: "vif1.0").description.contains("xenbr0"))
        #expect(NetworkLinkError.passtNotFound(searched: "/x/passt").description.contains("apt-get install passt"))
    }

    @Test("a missing passt binary is a clear error")
    func passtMissing() {
        #expect {
            _ = try PasstLink(executable: "/nonexistent/passt")
        } throws: { error in
            guard let e = error as? NetworkLinkError, case .passtNotFound = e else { return false }
            return e.description.hasPrefix("passt not found") && e.description.contains("apt-get install passt")
        }
    }

    @Test("interface names follow Linux's dev_valid_name")
    func interfaceNames() {
        #expect(TapLink.isValidInterfaceName("vif1.0"))
        #expect(TapLink.isValidInterfaceName("a23456789012345"))
        #expect(!TapLink.isValidInterfaceName("a234567890123456"))
        #expect(!TapLink.isValidInterfaceName(""))
        #expect(!TapLink.isValidInterfaceName("a/b"))
        #expect(!TapLink.isValidInterfaceName("a b"))
        #expect(!TapLink.isValidInterfaceName("a:b"))
        #expect(!TapLink.isValidInterfaceName(".."))
        #expect(throws: NetworkLinkError.invalidInterfaceName("bad name")) { try TapLink(name: "bad name") }
        #expect(throws: NetworkLinkError.invalidMTU(67, maximum: 65535)) { try TapLink(name: "pvhok", mtu: 67) }
        #expect(throws: NetworkLinkError.invalidMTU(65521, maximum: 65520)) { try PasstLink(mtu: 65521, executable: "/bin/true") }
        #expect(NetworkLinkError.invalidMTU(65521, maximum: 65520).description == "invalid MTU 65521: must be 68 to 65520")
    }
}

@Suite("PasstLink against Debian's passt", .enabled(if: passtInstalled, "skipped: /usr/bin/passt is not installed (apt-get install passt)"))
struct PasstLinkTests {
    static let guestMAC: [UInt8] = [0x00, 0x16, 0x3e, 0x12, 0x34, 0x56]

    /// Sends a DISCOVER and waits for passt's OFFER: a UDP packet to port 68
    /// carrying the transaction id, a BOOTREPLY for our MAC.
    func expectOffer(_ link: PasstLink, _ inbox: LinkInbox, frames: FrameMemory, xid: UInt32, address: [UInt8]? = nil) throws {
        let discover = Packet.dhcpDiscover(mac: Self.guestMAC, xid: xid)
        try link.transmit(frames.ranges(discover, parts: 4), offload: .none).get()
        let offer = inbox.waitForFrame { frame in
            guard let bootp = Packet.udpPayload(frame.bytes, destinationPort: 68), bootp.count >= 240 else { return false }
            return Array(bootp[4 ..< 8]) == Packet.be32(xid)
        }
        let reply = try #require(offer.flatMap { Packet.udpPayload($0.bytes, destinationPort: 68) }, "no DHCP reply with xid \(xid) from passt")
        #expect(reply[0] == 2)  // BOOTREPLY
        #expect(Array(reply[28 ..< 34]) == Self.guestMAC)  // chaddr
        #expect(reply[16 ..< 20].contains { $0 != 0 })  // yiaddr: an address offered
        if let address { #expect(Array(reply[16 ..< 20]) == address) }
        #expect(offer?.offload == NetworkOffload.none)
    }

    @Test("a DHCP DISCOVER sent through passt brings its OFFER back")
    func dhcpOffer() throws {
        let link = try PasstLink()
        defer { link.stop() }
        #expect(link.capabilities.isEmpty)
        #expect(link.mtu == PasstLink.defaultMTU)
        #expect(link.description.hasPrefix("user (passt pid "))
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        try expectOffer(link, inbox, frames: try FrameMemory(), xid: 0x5056_4801)
        #expect(inbox.carrierHistory.isEmpty)
    }

    @Test("an address asked for (a vif's ip=) is the one passt offers")
    func offeredAddress() throws {
        let link = try PasstLink(addresses: ["192.0.2.77"])
        defer { link.stop() }
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        try expectOffer(link, inbox, frames: try FrameMemory(), xid: 0x7777_0001, address: [192, 0, 2, 77])
    }

    @Test("offloads and oversized frames are refused; after stop the link is down")
    func transmitRefusals() throws {
        let link = try PasstLink(mtu: 1500)
        let frames = try FrameMemory()
        let frame = Packet.dhcpDiscover(mac: Self.guestMAC, xid: 1)
        #expect(throws: NetworkTransmitDrop.unsupportedOffload) {
            try link.transmit(frames.ranges(frame), offload: NetworkOffload(partialChecksum: .init(start: 34, offset: 6))).get()
        }
        #expect(throws: NetworkTransmitDrop.unsupportedOffload) {
            try link.transmit(frames.ranges(frame), offload: NetworkOffload(segmentation: .tcpv4(segmentSize: 1448))).get()
        }
        #expect(throws: NetworkTransmitDrop.tooLarge) {
            try link.transmit(frames.ranges([UInt8](repeating: 0, count: 1500 + 19)), offload: .none).get()
        }
        let pid = try #require(link.passtProcessID)
        link.stop()
        #expect(link.passtProcessID == nil)
        #expect(kill(pid, 0) != 0)  // reaped: the pid is gone
        #expect(throws: NetworkTransmitDrop.linkDown) { try link.transmit(frames.ranges(frame), offload: .none).get() }
        link.stop()
    }

    @Test("passt killed: carrier down, passt restarted, carrier up, DHCP answers again")
    func restartAfterDeath() throws {
        let link = try PasstLink()
        defer { link.stop() }
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        let frames = try FrameMemory()
        try expectOffer(link, inbox, frames: frames, xid: 0x0101_0101)
        let first = try #require(link.passtProcessID)
        kill(first, SIGKILL)
        #expect(inbox.waitForCarrier { $0 == [false, true] }, "carrier history: \(inbox.carrierHistory)")
        let second = try #require(link.passtProcessID)
        #expect(second != first)
        #expect(link.restarts == 1)
        try expectOffer(link, inbox, frames: frames, xid: 0x0202_0202)
    }

    @Test("stop wakes the reader and returns while passt is idle")
    func stopJoinsReader() throws {
        let link = try PasstLink()
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        let started = ContinuousClock.now
        link.stop()
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(inbox.carrierHistory.isEmpty)
    }
}
