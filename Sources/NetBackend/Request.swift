import GrantTables
import HostIO
import XenABI

// TX packets as the frontend lays them on the ring, checked the way Linux's
// xen-netback checks them (`xenvif_tx_build_gops`, `xenvif_count_requests`,
// `xenvif_get_extras`, `xenvif_set_skb_gso`, `checksum_setup`), and the
// header parsing both directions need: where a partial checksum goes, which
// queue a received flow belongs to. Pure: the queue reads the ring and the
// pages; nothing here touches guest memory.

/// The slots of one TX packet, as copied off the ring: the first data
/// slot, the extra-info slots after it, the `more_data` chain.
public struct NetTxSlots: Hashable, Sendable {
    public var first: NetifTxRequest
    public var extras: [NetifExtraInfo]
    public var chain: [NetifTxRequest]

    public init(first: NetifTxRequest, extras: [NetifExtraInfo] = [], chain: [NetifTxRequest] = []) {
        self.first = first
        self.extras = extras
        self.chain = chain
    }

    /// Data slots (first and chain).
    public var dataSlots: Int { 1 + chain.count }

    /// One response per consumed slot, in ring order: the first slot's,
    /// NETIF_RSP_NULL for each extra, then the chain's (Linux's
    /// `make_tx_response` with its `extra_count`).
    public func responses(_ status: NetifStatus) -> [NetifTxResponse] {
        var out: [NetifTxResponse] = []
        forEachResponse(status) { out.append($0) }
        return out
    }

    /// `responses(status)`, each handed to `body` in ring order, with no array.
    func forEachResponse<E: Error>(_ status: NetifStatus, _ body: (NetifTxResponse) throws(E) -> Void) throws(E) {
        try body(NetifTxResponse(id: first.id, status: status))
        for _ in extras { try body(NetifTxResponse(id: 0, status: .null)) }
        for r in chain { try body(NetifTxResponse(id: r.id, status: status)) }
    }

    /// Makes this the slots of a packet starting with `first`, with no
    /// extras or chain yet; the arrays keep their storage (a queue reuses
    /// one value for every packet).
    mutating func reset(first: NetifTxRequest) {
        self.first = first
        extras.removeAll(keepingCapacity: true)
        chain.removeAll(keepingCapacity: true)
    }
}

/// A checked TX packet: the bytes of each page to send, in order, and its offloads.
public struct NetTxPacket: Hashable, Sendable {
    /// `[offset, offset + length)` of the page `grant` names.
    public struct Segment: Hashable, Sendable {
        public var grant: GrantReference
        public var offset: Int
        public var length: Int
    }
    public var segments: [Segment]
    /// The packet's length (the first slot's `size`).
    public var length: Int
    /// From a GSO extra.
    public var segmentation: NetworkOffload.Segmentation
    /// NETTXF_csum_blank.
    public var checksumBlank: Bool
}

/// Checks a TX packet's slots. A failure is the drop reason; the packet's
/// slots are then answered NETIF_RSP_ERROR. Fatal conditions (a chain past
/// `NetifLimits.fatalTxSlots`, a bad extra type, a truncated packet) are the
/// queue's, found while it reads the ring.
public enum NetTxValidator {
    public static func validate(_ slots: NetTxSlots) -> Result<NetTxPacket, NetDropReason> {
        var packet = NetTxPacket(segments: [], length: 0, segmentation: .none, checksumBlank: false)
        if let reason = validate(slots, into: &packet) { return .failure(reason) }
        return .success(packet)
    }

    /// `validate(slots)` into `packet`, whose segments array keeps its
    /// storage (a queue reuses one packet value): nil when valid, else the
    /// drop reason (and `packet` is not to be used).
    static func validate(_ slots: NetTxSlots, into packet: inout NetTxPacket) -> NetDropReason? {
        // xenvif_count_requests: more than XEN_NETBK_LEGACY_SLOTS_MAX is dropped.
        guard slots.dataSlots <= NetifLimits.maximumTxSlots else { return .txTooManySlots }
        let first = slots.first
        // xenvif_tx_build_gops: a runt (shorter than an Ethernet header) is dropped.
        guard Int(first.size) >= NetifLimits.ethernetHeader else { return .txBadSize }
        var rest = 0
        for r in slots.chain {
            rest += Int(r.size)
            guard Int(r.offset) + Int(r.size) <= NetifLimits.pageSize else { return .txCrossesPage }
        }
        // The first slot's size is the whole packet's: the chain cannot hold more.
        guard rest <= Int(first.size) else { return .txSizeMismatch }
        let firstLength = Int(first.size) - rest
        guard Int(first.offset) + firstLength <= NetifLimits.pageSize else { return .txCrossesPage }
        var segmentation = NetworkOffload.Segmentation.none
        for extra in slots.extras where extra.type == NetifExtraInfo.typeGSO {
            // xenvif_set_skb_gso: a size of 0 or an unknown type is dropped.
            guard extra.gsoSize > 0 else { return .txBadGSO }
            switch extra.gsoType {
            case NetifExtraInfo.gsoTCPv4: segmentation = .tcpv4(segmentSize: extra.gsoSize)
            case NetifExtraInfo.gsoTCPv6: segmentation = .tcpv6(segmentSize: extra.gsoSize)
            default: return .txBadGSO
            }
        }
        packet.segments.removeAll(keepingCapacity: true)
        packet.segments.reserveCapacity(slots.dataSlots)
        if firstLength > 0 {
            packet.segments.append(.init(grant: first.grant, offset: Int(first.offset), length: firstLength))
        }
        for r in slots.chain where r.size > 0 {
            packet.segments.append(.init(grant: r.grant, offset: Int(r.offset), length: Int(r.size)))
        }
        packet.length = Int(first.size)
        packet.segmentation = segmentation
        packet.checksumBlank = first.flags.contains(.checksumBlank)
        return nil
    }
}

/// The Internet checksum (RFC 1071): a one's-complement sum of 16-bit
/// big-endian words, carried into 32 bits and folded at the end.
public enum InternetChecksum {
    /// Adds `bytes` (an odd last byte is padded with zero) to `initial`.
    public static func sum<C: Collection<UInt8>>(_ bytes: C, initial: UInt32 = 0) -> UInt32 {
        var total = UInt64(initial)
        var high = true
        for b in bytes {
            total += high ? UInt64(b) << 8 : UInt64(b)
            high.toggle()
        }
        while total >> 32 != 0 { total = (total & 0xffff_ffff) + (total >> 32) }
        return UInt32(total)
    }

    /// `sum` of two more 16-bit words, given as their values.
    public static func add(_ a: UInt32, _ b: UInt32, to initial: UInt32) -> UInt32 {
        var total = UInt64(initial) + UInt64(a) + UInt64(b)
        while total >> 32 != 0 { total = (total & 0xffff_ffff) + (total >> 32) }
        return UInt32(total)
    }

    /// Folds a sum to 16 bits (end-around carry).
    public static func fold(_ sum: UInt32) -> UInt16 {
        var s = sum
        while s >> 16 != 0 { s = (s & 0xffff) + (s >> 16) }
        return UInt16(s)
    }

    /// The checksum field's value: the complement of the folded sum.
    public static func checksum<C: Collection<UInt8>>(_ bytes: C, initial: UInt32 = 0) -> UInt16 {
        ~fold(sum(bytes, initial: initial))
    }
}

/// Where an L4 checksum lives in a frame, and its pseudo-header sum:
/// what Linux's `skb_checksum_setup` finds for netback's `checksum_setup`.
public struct NetChecksumLocation: Hashable, Sendable {
    /// Start of the L4 header (the checksum covers from here to the end).
    public var start: Int
    /// Offset of the checksum field from `start` (16 for TCP, 6 for UDP).
    public var offset: Int
    /// The one's-complement sum of the pseudo-header (addresses, protocol,
    /// L4 length) for a frame of `frameLength` bytes.
    public var pseudoHeaderSum: UInt32
    /// UDP: a computed 0 is sent as 0xffff.
    public var isUDP: Bool

    static let ipv4: UInt16 = 0x0800
    static let ipv6: UInt16 = 0x86dd
    static let tcp: UInt8 = 6
    static let udp: UInt8 = 17

    /// Parses the Ethernet, IPv4 or IPv6 (with hop-by-hop, routing and
    /// destination-options headers) and TCP or UDP headers at the start of
    /// `frame` (at least the headers; `frameLength` is the whole frame's).
    /// Nil for anything else: a fragment, another protocol, truncated headers.
    public init?(headers frame: [UInt8], frameLength: Int) {
        func u16(_ i: Int) -> UInt16? { i + 2 <= frame.count ? UInt16(frame[i]) << 8 | UInt16(frame[i + 1]) : nil }
        let eth = NetifLimits.ethernetHeader
        guard let type = u16(12), frameLength <= NetifLimits.maximumPacketSize + eth else { return nil }
        var proto: UInt8
        var l4: Int
        var pseudo: UInt32
        switch type {
        case Self.ipv4:
            guard frame.count >= eth + 20, frame[eth] >> 4 == 4 else { return nil }
            let ihl = Int(frame[eth] & 0x0f) * 4
            guard ihl >= 20, frame.count >= eth + ihl, let flagsFragment = u16(eth + 6) else { return nil }
            // More fragments, or a fragment offset: not a whole L4 packet.
            guard flagsFragment & 0x3fff == 0 else { return nil }
            proto = frame[eth + 9]
            l4 = eth + ihl
            pseudo = InternetChecksum.sum(frame[(eth + 12)..<(eth + 20)])
        case Self.ipv6:
            guard frame.count >= eth + 40, frame[eth] >> 4 == 6 else { return nil }
            proto = frame[eth + 6]
            l4 = eth + 40
            pseudo = InternetChecksum.sum(frame[(eth + 8)..<(eth + 40)])
            // Extension headers (RFC 8200 §4): hop-by-hop 0, routing 43,
            // destination options 60 are skipped; a fragment (44) is refused.
            var hops = 0
            while proto == 0 || proto == 43 || proto == 60 {
                hops += 1
                guard hops <= 8, frame.count >= l4 + 8 else { return nil }
                let next = frame[l4]
                l4 += (Int(frame[l4 + 1]) + 1) * 8
                proto = next
            }
        default:
            return nil
        }
        let offset: Int
        switch proto {
        case Self.tcp: offset = 16
        case Self.udp: offset = 6
        default: return nil
        }
        guard l4 + offset + 2 <= frame.count, l4 < frameLength else { return nil }
        let length = frameLength - l4
        // The words 0|proto and the length's low half; an IPv6
        // upper-layer length is 32 bits, so above 65535 its high half
        // counts too (added as values: no array per packet).
        pseudo = InternetChecksum.add(UInt32(proto), UInt32(length & 0xffff), to: pseudo)
        pseudo = InternetChecksum.add(UInt32((length >> 16) & 0xffff), 0, to: pseudo)
        start = l4
        self.offset = offset
        pseudoHeaderSum = pseudo
        isUDP = proto == Self.udp
    }

    /// Writes the complete checksum into `frame` (the whole frame): the
    /// field is zeroed, the pseudo-header and L4 bytes summed, the
    /// complement stored (0xffff for a UDP 0, RFC 768).
    public func complete(_ frame: inout [UInt8]) {
        let at = start + offset
        guard at + 2 <= frame.count else { return }
        frame[at] = 0
        frame[at + 1] = 0
        var c = InternetChecksum.checksum(frame[start...], initial: pseudoHeaderSum)
        if isUDP && c == 0 { c = 0xffff }
        frame[at] = UInt8(c >> 8)
        frame[at + 1] = UInt8(c & 0xff)
    }
}

/// Which queue a received frame goes to: a hash of its IP addresses and,
/// for TCP and UDP, ports (the frame's flow), so a flow stays on one queue
/// and in order. Frames that are not IP hash to 0.
public enum NetFlowHash {
    public static func hash(_ frame: [UInt8]) -> UInt32 {
        func u16(_ i: Int) -> UInt16? { i + 2 <= frame.count ? UInt16(frame[i]) << 8 | UInt16(frame[i + 1]) : nil }
        let eth = NetifLimits.ethernetHeader
        guard let type = u16(12) else { return 0 }
        var fields: ArraySlice<UInt8>
        var proto: UInt8
        var l4: Int
        switch type {
        case NetChecksumLocation.ipv4:
            guard frame.count >= eth + 20 else { return 0 }
            fields = frame[(eth + 12)..<(eth + 20)]
            proto = frame[eth + 9]
            l4 = eth + Int(frame[eth] & 0x0f) * 4
            // A later fragment has no ports.
            if let f = u16(eth + 6), f & 0x1fff != 0 { proto = 0 }
        case NetChecksumLocation.ipv6:
            guard frame.count >= eth + 40 else { return 0 }
            fields = frame[(eth + 8)..<(eth + 40)]
            proto = frame[eth + 6]
            l4 = eth + 40
        default:
            return 0
        }
        var h: UInt32 = 0x811c_9dc5
        func mix(_ b: UInt8) { h = (h ^ UInt32(b)) &* 0x0100_0193 }
        for b in fields { mix(b) }
        if proto == NetChecksumLocation.tcp || proto == NetChecksumLocation.udp, l4 + 4 <= frame.count {
            for b in frame[l4..<(l4 + 4)] { mix(b) }
        }
        return h
    }

    /// The queue of `queues` (at least 1) `frame` goes to.
    public static func queue(_ frame: [UInt8], queues: Int) -> Int {
        queues <= 1 ? 0 : Int(hash(frame) % UInt32(queues))
    }
}
