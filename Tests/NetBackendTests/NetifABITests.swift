import NetBackend
import Testing
import XenABI
import XenRing

/// The netif structures against bytes written out by hand from netif.h,
/// one comment per field (x86_64; netif has one layout for every ABI).
@Suite("netif wire layout")
struct NetifABITests {
    @Test("sizes as netif.h lays them out; ring geometry 256 slots a page each way")
    func sizes() {
        #expect(NetifTxRequest.size == 12 && NetifTxRequest.alignment == 4)
        #expect(NetifTxResponse.size == 4)
        #expect(NetifRxRequest.size == 8)
        #expect(NetifRxResponse.size == 8)
        #expect(NetifExtraInfo(type: 1).ringBytes.count == 8)
        #expect(SharedRingGeometry(NetifTxSlot.self, NetifTxResponse.self, byteCount: 4096)?.entries == 256)
        #expect(SharedRingGeometry(NetifRxRequest.self, NetifRxSlot.self, byteCount: 4096)?.entries == 256)
    }

    @Test("netif_tx_request and netif_extra_info (GSO) round-trip through golden bytes")
    func txGolden() {
        let golden: [UInt8] = [
            0x78, 0x56, 0x34, 0x12,  // gref 0x12345678
            0x10, 0x00,              // offset 16
            0x0d, 0x00,              // flags csum_blank | more_data | extra_info
            0x07, 0x00,              // id 7
            0xdc, 0x05,              // size 1500
        ]
        let r = NetifTxRequest(ringBytes: golden)
        #expect(r == NetifTxRequest(grant: GrantReference(rawValue: 0x1234_5678), offset: 16,
                                    flags: [.checksumBlank, .moreData, .extraInfo], id: 7, size: 1500))
        #expect(r.ringBytes == golden)
        let extra: [UInt8] = [
            0x01,        // type XEN_NETIF_EXTRA_TYPE_GSO
            0x01,        // flags XEN_NETIF_EXTRA_FLAG_MORE
            0xa8, 0x05,  // u.gso.size 1448
            0x01,        // u.gso.type XEN_NETIF_GSO_TYPE_TCPV4
            0x00,        // u.gso.pad
            0x00, 0x00,  // u.gso.features
        ]
        #expect(NetifExtraInfo(ringBytes: extra) == .gso(size: 1448, type: NetifExtraInfo.gsoTCPv4, more: true))
        #expect(NetifExtraInfo.gso(size: 1448, type: NetifExtraInfo.gsoTCPv4, more: true).ringBytes == extra)
        // A TX slot holding the extra reads it back from the same copy.
        #expect(NetifTxSlot(ringBytes: extra + [0, 0, 0, 0]).extra.gsoSize == 1448)
    }

    @Test("netif_tx_response, netif_rx_request and netif_rx_response golden bytes")
    func rxGolden() {
        #expect(NetifTxResponse(id: 3, status: .null).ringBytes == [0x03, 0x00, 0x01, 0x00])  // id 3, status NETIF_RSP_NULL
        #expect(NetifTxResponse(id: 3, status: .error).ringBytes == [0x03, 0x00, 0xff, 0xff])  // status -1
        let rxReq: [UInt8] = [
            0x2a, 0x00,              // id 42
            0x00, 0x00,              // pad
            0x09, 0x00, 0x00, 0x00,  // gref 9
        ]
        #expect(NetifRxRequest(ringBytes: rxReq) == NetifRxRequest(id: 42, grant: GrantReference(rawValue: 9)))
        let rxRsp: [UInt8] = [
            0x2a, 0x00,  // id 42
            0x00, 0x00,  // offset 0
            0x0d, 0x00,  // flags data_validated | more_data | extra_info
            0x00, 0x10,  // status 4096 bytes
        ]
        let r = NetifRxResponse(id: 42, flags: [.dataValidated, .moreData, .extraInfo], status: 4096)
        #expect(r.ringBytes == rxRsp)
        #expect(NetifRxSlot(ringBytes: rxRsp).response == r)
    }
}
