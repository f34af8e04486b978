import CXen
import XenABI
import XenRing

// The netif wire protocol (xen/io/netif.h): TX and RX requests and
// responses and the extra-info slot, decoded from the one copy the ring
// takes of each slot. Every offset comes from Xen's header through CXen.

/// netif's status codes (`NETIF_RSP_*`).
public enum NetifStatus: Int16, Hashable, Sendable, CaseIterable {
    /// NETIF_RSP_DROPPED.
    case dropped
    /// NETIF_RSP_ERROR.
    case error
    /// NETIF_RSP_OKAY.
    case okay
    /// NETIF_RSP_NULL: the response of an extra-info slot.
    case null

    public init?(rawValue: Int16) {
        switch Int32(rawValue) {
        case NETIF_RSP_DROPPED: self = .dropped
        case NETIF_RSP_ERROR: self = .error
        case NETIF_RSP_OKAY: self = .okay
        case NETIF_RSP_NULL: self = .null
        default: return nil
        }
    }

    public var rawValue: Int16 {
        switch self {
        case .dropped: Int16(NETIF_RSP_DROPPED)
        case .error: Int16(NETIF_RSP_ERROR)
        case .okay: Int16(NETIF_RSP_OKAY)
        case .null: Int16(NETIF_RSP_NULL)
        }
    }
}

/// `NETTXF_*`: the flags of a TX request.
public struct NetifTxFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// NETTXF_csum_blank: the L4 checksum is partial (the pseudo-header sum).
    public static let checksumBlank = NetifTxFlags(rawValue: UInt16(NETTXF_csum_blank))
    /// NETTXF_data_validated.
    public static let dataValidated = NetifTxFlags(rawValue: UInt16(NETTXF_data_validated))
    /// NETTXF_more_data: the packet goes on in the next slot.
    public static let moreData = NetifTxFlags(rawValue: UInt16(NETTXF_more_data))
    /// NETTXF_extra_info: extra-info slots follow this (first) slot.
    public static let extraInfo = NetifTxFlags(rawValue: UInt16(NETTXF_extra_info))
}

/// `NETRXF_*`: the flags of an RX response.
public struct NetifRxFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// NETRXF_data_validated: the checksums were verified (or need no check).
    public static let dataValidated = NetifRxFlags(rawValue: UInt16(NETRXF_data_validated))
    /// NETRXF_csum_blank: the L4 checksum is partial.
    public static let checksumBlank = NetifRxFlags(rawValue: UInt16(NETRXF_csum_blank))
    /// NETRXF_more_data: the frame goes on in the next response.
    public static let moreData = NetifRxFlags(rawValue: UInt16(NETRXF_more_data))
    /// NETRXF_extra_info: an extra-info slot follows this (first) response.
    public static let extraInfo = NetifRxFlags(rawValue: UInt16(NETRXF_extra_info))
}

/// `struct netif_tx_request`: one TX slot's data descriptor.
public struct NetifTxRequest: NetifSlotData {
    public static var size: Int { Int(PVH_NETIF_TX_REQUEST_SIZE) }
    public static var alignment: Int { Int(PVH_NETIF_TX_REQUEST_ALIGN) }
    public var grant: GrantReference
    public var offset: UInt16
    public var flags: NetifTxFlags
    public var id: UInt16
    /// The first slot's: the whole packet's bytes; the others': their own.
    public var size: UInt16

    public init(grant: GrantReference, offset: UInt16, flags: NetifTxFlags, id: UInt16, size: UInt16) {
        self.grant = grant
        self.offset = offset
        self.flags = flags
        self.id = id
        self.size = size
    }

    static let grantField = WireField(offset: Int(PVH_NETIF_TX_REQUEST_GREF_OFFSET), size: 4)
    static let offsetField = WireField(offset: Int(PVH_NETIF_TX_REQUEST_OFFSET_OFFSET), size: 2)
    static let flagsField = WireField(offset: Int(PVH_NETIF_TX_REQUEST_FLAGS_OFFSET), size: 2)
    static let idField = WireField(offset: Int(PVH_NETIF_TX_REQUEST_ID_OFFSET), size: 2)
    static let sizeField = WireField(offset: Int(PVH_NETIF_TX_REQUEST_SIZE_OFFSET), size: 2)

    public init(ringBytes b: [UInt8]) {
        grant = GrantReference(rawValue: b.wireValue(Self.grantField))
        offset = b.wireValue(Self.offsetField)
        flags = NetifTxFlags(rawValue: b.wireValue(Self.flagsField))
        id = b.wireValue(Self.idField)
        size = b.wireValue(Self.sizeField)
    }

    public var ringBytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: Self.size)
        writeRingBytes(into: &b)
        return b
    }

    /// Every field written, in place (the fields fill the structure).
    public func writeRingBytes(into b: inout [UInt8]) {
        b.setWireValue(grant.rawValue, in: Self.grantField)
        b.setWireValue(offset, in: Self.offsetField)
        b.setWireValue(flags.rawValue, in: Self.flagsField)
        b.setWireValue(id, in: Self.idField)
        b.setWireValue(size, in: Self.sizeField)
    }
}

/// `struct netif_extra_info`: a slot that carries offload details instead
/// of data. Only XEN_NETIF_EXTRA_TYPE_GSO has fields decoded here; the
/// others keep their type (and are skipped, as Linux's netback skips
/// multicast ones).
public struct NetifExtraInfo: Hashable, Sendable {
    /// XEN_NETIF_EXTRA_TYPE_*, as written.
    public var type: UInt8
    /// XEN_NETIF_EXTRA_FLAG_MORE: another extra slot follows.
    public var more: Bool
    /// `u.gso.size`: the segment size (MSS).
    public var gsoSize: UInt16
    /// `u.gso.type`: XEN_NETIF_GSO_TYPE_*.
    public var gsoType: UInt8
    /// `u.gso.features`.
    public var gsoFeatures: UInt16

    public init(type: UInt8, more: Bool = false, gsoSize: UInt16 = 0, gsoType: UInt8 = 0, gsoFeatures: UInt16 = 0) {
        self.type = type
        self.more = more
        self.gsoSize = gsoSize
        self.gsoType = gsoType
        self.gsoFeatures = gsoFeatures
    }

    /// An XEN_NETIF_EXTRA_TYPE_GSO slot.
    public static func gso(size: UInt16, type: UInt8, more: Bool = false) -> NetifExtraInfo {
        NetifExtraInfo(type: UInt8(XEN_NETIF_EXTRA_TYPE_GSO), more: more, gsoSize: size, gsoType: type)
    }

    public static let typeGSO = UInt8(XEN_NETIF_EXTRA_TYPE_GSO)
    public static let typeMaximum = UInt8(XEN_NETIF_EXTRA_TYPE_MAX)
    public static let gsoTCPv4 = UInt8(XEN_NETIF_GSO_TYPE_TCPV4)
    public static let gsoTCPv6 = UInt8(XEN_NETIF_GSO_TYPE_TCPV6)

    static let typeField = WireField(offset: Int(PVH_NETIF_EXTRA_TYPE_OFFSET), size: 1)
    static let flagsField = WireField(offset: Int(PVH_NETIF_EXTRA_FLAGS_OFFSET), size: 1)
    static let gsoSizeField = WireField(offset: Int(PVH_NETIF_EXTRA_GSO_SIZE_OFFSET), size: 2)
    static let gsoTypeField = WireField(offset: Int(PVH_NETIF_EXTRA_GSO_TYPE_OFFSET), size: 1)
    static let gsoFeaturesField = WireField(offset: Int(PVH_NETIF_EXTRA_GSO_FEATURES_OFFSET), size: 2)

    public init(ringBytes b: [UInt8]) {
        type = b.wireValue(Self.typeField)
        more = (b.wireValue(Self.flagsField) as UInt8) & UInt8(XEN_NETIF_EXTRA_FLAG_MORE) != 0
        gsoSize = b.wireValue(Self.gsoSizeField)
        gsoType = b.wireValue(Self.gsoTypeField)
        gsoFeatures = b.wireValue(Self.gsoFeaturesField)
    }

    public var ringBytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: Int(PVH_NETIF_EXTRA_INFO_SIZE))
        writeRingBytes(into: &b)
        return b
    }

    /// `ringBytes` written into `b` in place, all of `b` zeroed first:
    /// only some fields are set, and a TX slot is wider than the extra.
    public func writeRingBytes(into b: inout [UInt8]) {
        for i in b.indices { b[i] = 0 }
        b.setWireValue(type, in: Self.typeField)
        b.setWireValue(more ? UInt8(XEN_NETIF_EXTRA_FLAG_MORE) : 0, in: Self.flagsField)
        if type == Self.typeGSO {
            b.setWireValue(gsoSize, in: Self.gsoSizeField)
            b.setWireValue(gsoType, in: Self.gsoTypeField)
            b.setWireValue(gsoFeatures, in: Self.gsoFeaturesField)
        }
    }
}

/// A netif structure that shares its ring slot with `netif_extra_info`: a
/// TX request, or an RX response.
public protocol NetifSlotData: Hashable, Sendable {
    /// `sizeof` and `_Alignof` the C structure (the slot's).
    static var size: Int { get }
    static var alignment: Int { get }
    init(ringBytes: [UInt8])
    var ringBytes: [UInt8] { get }
    /// `ringBytes` written into `bytes` (at least `size` of them) in place.
    func writeRingBytes(into bytes: inout [UInt8])
}

extension NetifSlotData {
    public func writeRingBytes(into bytes: inout [UInt8]) { bytes = ringBytes }
}

/// A ring slot that holds either `Data` or an extra-info structure: what it
/// is depends on the slot before it, so the one copy is kept and decoded
/// either way from the same bytes. A slot the backend makes (a response,
/// an extra) keeps the structure and is encoded only when written to the
/// ring, straight into the ring's kept array (no array per response).
public struct NetifSlot<Data: NetifSlotData>: RingEntry, Hashable {
    public static var size: Int { Data.size }
    public static var alignment: Int { Data.alignment }
    private enum Content: Sendable {
        /// A copy off the ring (the one copy).
        case bytes([UInt8])
        case data(Data)
        case extra(NetifExtraInfo)
    }
    private let content: Content
    public init(ringBytes: [UInt8]) { content = .bytes(ringBytes) }
    public init(_ data: Data) { content = .data(data) }
    public init(_ extra: NetifExtraInfo) { content = .extra(extra) }
    /// The slot's bytes.
    public var ringBytes: [UInt8] {
        switch content {
        case .bytes(let b): b
        case .data(let d): d.ringBytes
        case .extra(let e): e.ringBytes
        }
    }
    public func writeRingBytes(into bytes: inout [UInt8]) {
        switch content {
        case .bytes(let b):
            bytes = b
            if bytes.count < Self.size { bytes += [UInt8](repeating: 0, count: Self.size - bytes.count) }
        case .data(let d): d.writeRingBytes(into: &bytes)
        case .extra(let e): e.writeRingBytes(into: &bytes)
        }
    }
    /// The slot read as `Data`.
    public var data: Data {
        if case .data(let d) = content { return d }
        return Data(ringBytes: ringBytes)
    }
    /// The slot read as `struct netif_extra_info`.
    public var extra: NetifExtraInfo {
        if case .extra(let e) = content { return e }
        return NetifExtraInfo(ringBytes: ringBytes)
    }
    /// Slots are equal when their bytes are.
    public static func == (a: Self, b: Self) -> Bool { a.ringBytes == b.ringBytes }
    public func hash(into hasher: inout Hasher) { hasher.combine(ringBytes) }
}

/// A TX ring slot: a `netif_tx_request` or an extra.
public typealias NetifTxSlot = NetifSlot<NetifTxRequest>
/// An RX response slot: a `netif_rx_response` or the extra that follows a
/// first response with NETRXF_extra_info.
public typealias NetifRxSlot = NetifSlot<NetifRxResponse>

extension NetifSlot: RingRequest where Data == NetifTxRequest {
    /// The slot read as `struct netif_tx_request`.
    public var request: NetifTxRequest { data }
}

extension NetifSlot: RingResponse where Data == NetifRxResponse {
    /// The slot read as `struct netif_rx_response`.
    public var response: NetifRxResponse { data }
}

/// `struct netif_tx_response`.
public struct NetifTxResponse: RingResponse, Hashable {
    public static var size: Int { Int(PVH_NETIF_TX_RESPONSE_SIZE) }
    public static var alignment: Int { Int(PVH_NETIF_TX_RESPONSE_ALIGN) }
    public var id: UInt16
    public var rawStatus: Int16
    public var status: NetifStatus? { NetifStatus(rawValue: rawStatus) }

    public init(id: UInt16, status: NetifStatus) {
        self.id = id
        rawStatus = status.rawValue
    }

    static let idField = WireField(offset: Int(PVH_NETIF_TX_RESPONSE_ID_OFFSET), size: 2)
    static let statusField = WireField(offset: Int(PVH_NETIF_TX_RESPONSE_STATUS_OFFSET), size: 2)

    public init(ringBytes b: [UInt8]) {
        id = b.wireValue(Self.idField)
        rawStatus = Int16(bitPattern: b.wireValue(Self.statusField))
    }

    public var ringBytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: Self.size)
        writeRingBytes(into: &b)
        return b
    }

    /// Every field written, in place (the fields fill the structure).
    public func writeRingBytes(into b: inout [UInt8]) {
        b.setWireValue(id, in: Self.idField)
        b.setWireValue(UInt16(bitPattern: rawStatus), in: Self.statusField)
    }
}

/// `struct netif_rx_request`: a buffer page the frontend posts.
public struct NetifRxRequest: RingRequest, Hashable {
    public static var size: Int { Int(PVH_NETIF_RX_REQUEST_SIZE) }
    public static var alignment: Int { Int(PVH_NETIF_RX_REQUEST_ALIGN) }
    public var id: UInt16
    public var grant: GrantReference

    public init(id: UInt16, grant: GrantReference) {
        self.id = id
        self.grant = grant
    }

    static let idField = WireField(offset: Int(PVH_NETIF_RX_REQUEST_ID_OFFSET), size: 2)
    static let grantField = WireField(offset: Int(PVH_NETIF_RX_REQUEST_GREF_OFFSET), size: 4)

    public init(ringBytes b: [UInt8]) {
        id = b.wireValue(Self.idField)
        grant = GrantReference(rawValue: b.wireValue(Self.grantField))
    }

    public var ringBytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: Self.size)
        b.setWireValue(id, in: Self.idField)
        b.setWireValue(grant.rawValue, in: Self.grantField)
        return b
    }
}

/// `struct netif_rx_response`: `status` is the byte count when positive.
public struct NetifRxResponse: NetifSlotData {
    public static var size: Int { Int(PVH_NETIF_RX_RESPONSE_SIZE) }
    public static var alignment: Int { Int(PVH_NETIF_RX_RESPONSE_ALIGN) }
    public var id: UInt16
    public var offset: UInt16
    public var flags: NetifRxFlags
    /// Bytes in the buffer (>= 0), or a negative NETIF_RSP_*.
    public var status: Int16

    public init(id: UInt16, offset: UInt16 = 0, flags: NetifRxFlags = [], status: Int16) {
        self.id = id
        self.offset = offset
        self.flags = flags
        self.status = status
    }

    static let idField = WireField(offset: Int(PVH_NETIF_RX_RESPONSE_ID_OFFSET), size: 2)
    static let offsetField = WireField(offset: Int(PVH_NETIF_RX_RESPONSE_OFFSET_OFFSET), size: 2)
    static let flagsField = WireField(offset: Int(PVH_NETIF_RX_RESPONSE_FLAGS_OFFSET), size: 2)
    static let statusField = WireField(offset: Int(PVH_NETIF_RX_RESPONSE_STATUS_OFFSET), size: 2)

    public init(ringBytes b: [UInt8]) {
        id = b.wireValue(Self.idField)
        offset = b.wireValue(Self.offsetField)
        flags = NetifRxFlags(rawValue: b.wireValue(Self.flagsField))
        status = Int16(bitPattern: b.wireValue(Self.statusField))
    }

    public var ringBytes: [UInt8] {
        var b = [UInt8](repeating: 0, count: Self.size)
        writeRingBytes(into: &b)
        return b
    }

    /// Every field written, in place (the fields fill the structure).
    public func writeRingBytes(into b: inout [UInt8]) {
        b.setWireValue(id, in: Self.idField)
        b.setWireValue(offset, in: Self.offsetField)
        b.setWireValue(flags.rawValue, in: Self.flagsField)
        b.setWireValue(UInt16(bitPattern: status), in: Self.statusField)
    }
}

/// The backend half of a TX ring.
typealias NetifTxRing = SharedRing<NetifTxSlot, NetifTxResponse>
/// The backend half of an RX ring.
typealias NetifRxRing = SharedRing<NetifRxRequest, NetifRxSlot>

/// Fixed netif limits.
public enum NetifLimits {
    /// Xen pages are 4 KiB: a slot's bytes lie in one page.
    public static let pageSize = 1 << Int(XEN_PAGE_SHIFT)
    /// XEN_NETBK_LEGACY_SLOTS_MAX (XEN_NETIF_NR_SLOTS_MIN, 18): the data
    /// slots of one TX packet; more are dropped with NETIF_RSP_ERROR.
    public static let maximumTxSlots = Int(XEN_NETIF_NR_SLOTS_MIN)
    /// Linux netback's `fatal_skb_slots` default (FATAL_SKB_SLOTS_DEFAULT,
    /// 20): a chain longer than this is a hostile frontend.
    public static let fatalTxSlots = 20
    /// XEN_NETIF_MAX_TX_SIZE: the largest packet.
    public static let maximumPacketSize = Int(XEN_NETIF_MAX_TX_SIZE)
    /// ETH_HLEN.
    public static let ethernetHeader = 14
}
