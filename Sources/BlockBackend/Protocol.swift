import CXen
import GuestMemory
import XenABI
import XenRing

// The blkif wire protocol (xen/io/blkif.h): the request and response
// structures in both ABIs a frontend may use, decoded from the one copy the
// ring takes of each slot. Every offset comes from Xen's header through CXen.

/// The layout a frontend uses for blkif's structures, named by its
/// `protocol` node (io/protocols.h). The structures are the same; the i386 C
/// ABI aligns their 64-bit fields to 4 bytes, so a 32-bit frontend's `id`
/// is at 4, not 8, and its request is 108 bytes, not 112.
public enum BlkifABI: Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// "x86_64-abi" (XEN_IO_PROTO_ABI_X86_64): the native layout on this host.
    case x86_64
    /// "x86_32-abi" (XEN_IO_PROTO_ABI_X86_32).
    case x86_32

    /// `XEN_IO_PROTO_ABI_NATIVE` as the header sets it for this host.
    public static var native: BlkifABI {
        // Derived from the header's own macro, which is XEN_IO_PROTO_ABI_X86_64 on x86_64.
        BlkifABI(protocolName: XEN_IO_PROTO_ABI_NATIVE) ?? .x86_64
    }

    /// The ABI a frontend gets when it writes no `protocol` node. Linux's
    /// xen-blkback (common.h `BLKIF_PROTOCOL_DEFAULT`, used by
    /// `connect_ring`) assumes x86_32 on x86, because the frontends that
    /// predate the node were 32-bit PV guests; a frontend of any other kind
    /// writes the node (Linux's blkfront always writes
    /// XEN_IO_PROTO_ABI_NATIVE).
    public static let frontendDefault: BlkifABI = .x86_32

    /// Parses a protocol name; nil for anything else ("arm-abi" included:
    /// no ARM guest runs here).
    public init?(protocolName: String) {
        switch protocolName {
        case XEN_IO_PROTO_ABI_X86_64: self = .x86_64
        case XEN_IO_PROTO_ABI_X86_32: self = .x86_32
        default: return nil
        }
    }

    /// The `protocol` node's value for this ABI.
    public var protocolName: String {
        switch self {
        case .x86_64: XEN_IO_PROTO_ABI_X86_64
        case .x86_32: XEN_IO_PROTO_ABI_X86_32
        }
    }

    public var description: String { protocolName }

    /// Byte offsets and sizes of blkif's structures in this ABI.
    public var layout: BlkifLayout {
        switch self {
        case .x86_64: .x86_64
        case .x86_32: .x86_32
        }
    }
}

/// Offsets and sizes of blkif's structures in one ABI, from the header
/// through CXen (`PVH_BLKIF_X86_64_*` is blkif.h as compiled for this host,
/// `PVH_BLKIF_X86_32_*` the same header compiled with the i386 packing).
public struct BlkifLayout: Hashable, Sendable {
    /// `struct blkif_request`: the read/write request and the ring's largest entry.
    public struct Request: Hashable, Sendable {
        public let size, alignment, operation, nrSegments, handle, id, sectorNumber, segments: Int
    }
    /// `struct blkif_request_segment` (also the entries of an indirect page).
    public struct Segment: Hashable, Sendable {
        public let size, grantReference, firstSector, lastSector: Int
    }
    /// `struct blkif_request_discard`.
    public struct Discard: Hashable, Sendable {
        public let size, flag, id, sectorNumber, sectorCount: Int
    }
    /// `struct blkif_request_indirect`.
    public struct Indirect: Hashable, Sendable {
        public let size, indirectOperation, nrSegments, id, sectorNumber, handle, grantReferences: Int
    }
    /// `struct blkif_response`.
    public struct Response: Hashable, Sendable {
        public let size, alignment, id, operation, status: Int
    }

    public let request: Request
    public let segment: Segment
    public let discard: Discard
    public let indirect: Indirect
    public let response: Response
    /// `sizeof(union blkif_sring_entry)`: one ring slot.
    public let slotSize: Int
    /// Offset of `ring[0]` in `struct blkif_sring`.
    public let ringOffset: Int

    public static let x86_64 = BlkifLayout(
        request: Request(size: Int(PVH_BLKIF_X86_64_REQUEST_SIZE), alignment: Int(PVH_BLKIF_X86_64_REQUEST_ALIGN),
                         operation: Int(PVH_BLKIF_X86_64_REQUEST_OPERATION_OFFSET),
                         nrSegments: Int(PVH_BLKIF_X86_64_REQUEST_NR_SEGMENTS_OFFSET),
                         handle: Int(PVH_BLKIF_X86_64_REQUEST_HANDLE_OFFSET), id: Int(PVH_BLKIF_X86_64_REQUEST_ID_OFFSET),
                         sectorNumber: Int(PVH_BLKIF_X86_64_REQUEST_SECTOR_NUMBER_OFFSET),
                         segments: Int(PVH_BLKIF_X86_64_REQUEST_SEG_OFFSET)),
        segment: Segment(size: Int(PVH_BLKIF_X86_64_SEGMENT_SIZE), grantReference: Int(PVH_BLKIF_X86_64_SEGMENT_GREF_OFFSET),
                         firstSector: Int(PVH_BLKIF_X86_64_SEGMENT_FIRST_SECT_OFFSET),
                         lastSector: Int(PVH_BLKIF_X86_64_SEGMENT_LAST_SECT_OFFSET)),
        discard: Discard(size: Int(PVH_BLKIF_X86_64_DISCARD_SIZE), flag: Int(PVH_BLKIF_X86_64_DISCARD_FLAG_OFFSET),
                         id: Int(PVH_BLKIF_X86_64_DISCARD_ID_OFFSET),
                         sectorNumber: Int(PVH_BLKIF_X86_64_DISCARD_SECTOR_NUMBER_OFFSET),
                         sectorCount: Int(PVH_BLKIF_X86_64_DISCARD_NR_SECTORS_OFFSET)),
        indirect: Indirect(size: Int(PVH_BLKIF_X86_64_INDIRECT_SIZE),
                           indirectOperation: Int(PVH_BLKIF_X86_64_INDIRECT_OP_OFFSET),
                           nrSegments: Int(PVH_BLKIF_X86_64_INDIRECT_NR_SEGMENTS_OFFSET),
                           id: Int(PVH_BLKIF_X86_64_INDIRECT_ID_OFFSET),
                           sectorNumber: Int(PVH_BLKIF_X86_64_INDIRECT_SECTOR_NUMBER_OFFSET),
                           handle: Int(PVH_BLKIF_X86_64_INDIRECT_HANDLE_OFFSET),
                           grantReferences: Int(PVH_BLKIF_X86_64_INDIRECT_GREFS_OFFSET)),
        response: Response(size: Int(PVH_BLKIF_X86_64_RESPONSE_SIZE), alignment: Int(PVH_BLKIF_X86_64_RESPONSE_ALIGN),
                           id: Int(PVH_BLKIF_X86_64_RESPONSE_ID_OFFSET),
                           operation: Int(PVH_BLKIF_X86_64_RESPONSE_OPERATION_OFFSET),
                           status: Int(PVH_BLKIF_X86_64_RESPONSE_STATUS_OFFSET)),
        slotSize: Int(PVH_BLKIF_X86_64_SRING_ENTRY_SIZE), ringOffset: Int(PVH_BLKIF_SRING_RING_OFFSET))

    public static let x86_32 = BlkifLayout(
        request: Request(size: Int(PVH_BLKIF_X86_32_REQUEST_SIZE), alignment: Int(PVH_BLKIF_X86_32_REQUEST_ALIGN),
                         operation: Int(PVH_BLKIF_X86_32_REQUEST_OPERATION_OFFSET),
                         nrSegments: Int(PVH_BLKIF_X86_32_REQUEST_NR_SEGMENTS_OFFSET),
                         handle: Int(PVH_BLKIF_X86_32_REQUEST_HANDLE_OFFSET), id: Int(PVH_BLKIF_X86_32_REQUEST_ID_OFFSET),
                         sectorNumber: Int(PVH_BLKIF_X86_32_REQUEST_SECTOR_NUMBER_OFFSET),
                         segments: Int(PVH_BLKIF_X86_32_REQUEST_SEG_OFFSET)),
        segment: Segment(size: Int(PVH_BLKIF_X86_32_SEGMENT_SIZE), grantReference: Int(PVH_BLKIF_X86_32_SEGMENT_GREF_OFFSET),
                         firstSector: Int(PVH_BLKIF_X86_32_SEGMENT_FIRST_SECT_OFFSET),
                         lastSector: Int(PVH_BLKIF_X86_32_SEGMENT_LAST_SECT_OFFSET)),
        discard: Discard(size: Int(PVH_BLKIF_X86_32_DISCARD_SIZE), flag: Int(PVH_BLKIF_X86_32_DISCARD_FLAG_OFFSET),
                         id: Int(PVH_BLKIF_X86_32_DISCARD_ID_OFFSET),
                         sectorNumber: Int(PVH_BLKIF_X86_32_DISCARD_SECTOR_NUMBER_OFFSET),
                         sectorCount: Int(PVH_BLKIF_X86_32_DISCARD_NR_SECTORS_OFFSET)),
        indirect: Indirect(size: Int(PVH_BLKIF_X86_32_INDIRECT_SIZE),
                           indirectOperation: Int(PVH_BLKIF_X86_32_INDIRECT_OP_OFFSET),
                           nrSegments: Int(PVH_BLKIF_X86_32_INDIRECT_NR_SEGMENTS_OFFSET),
                           id: Int(PVH_BLKIF_X86_32_INDIRECT_ID_OFFSET),
                           sectorNumber: Int(PVH_BLKIF_X86_32_INDIRECT_SECTOR_NUMBER_OFFSET),
                           handle: Int(PVH_BLKIF_X86_32_INDIRECT_HANDLE_OFFSET),
                           grantReferences: Int(PVH_BLKIF_X86_32_INDIRECT_GREFS_OFFSET)),
        response: Response(size: Int(PVH_BLKIF_X86_32_RESPONSE_SIZE), alignment: Int(PVH_BLKIF_X86_32_RESPONSE_ALIGN),
                           id: Int(PVH_BLKIF_X86_32_RESPONSE_ID_OFFSET),
                           operation: Int(PVH_BLKIF_X86_32_RESPONSE_OPERATION_OFFSET),
                           status: Int(PVH_BLKIF_X86_32_RESPONSE_STATUS_OFFSET)),
        slotSize: Int(PVH_BLKIF_X86_32_SRING_ENTRY_SIZE), ringOffset: Int(PVH_BLKIF_X86_32_SRING_RING_OFFSET))
}

/// blkif's request operation codes (`BLKIF_OP_*`). Closed: a code outside
/// it stays a raw byte in `BlkifWireRequest` and is answered with
/// BLKIF_RSP_EOPNOTSUPP.
public enum BlkifOperation: UInt8, Hashable, Sendable, CaseIterable {
    case read
    case write
    case writeBarrier
    case flushDiskCache
    case discard
    case indirect

    public init?(rawValue: UInt8) {
        switch Int32(rawValue) {
        case BLKIF_OP_READ: self = .read
        case BLKIF_OP_WRITE: self = .write
        case BLKIF_OP_WRITE_BARRIER: self = .writeBarrier
        case BLKIF_OP_FLUSH_DISKCACHE: self = .flushDiskCache
        case BLKIF_OP_DISCARD: self = .discard
        case BLKIF_OP_INDIRECT: self = .indirect
        default: return nil
        }
    }

    public var rawValue: UInt8 {
        switch self {
        case .read: UInt8(BLKIF_OP_READ)
        case .write: UInt8(BLKIF_OP_WRITE)
        case .writeBarrier: UInt8(BLKIF_OP_WRITE_BARRIER)
        case .flushDiskCache: UInt8(BLKIF_OP_FLUSH_DISKCACHE)
        case .discard: UInt8(BLKIF_OP_DISCARD)
        case .indirect: UInt8(BLKIF_OP_INDIRECT)
        }
    }
}

/// A response's status (`BLKIF_RSP_*`).
public enum BlkifStatus: Int16, Hashable, Sendable, CaseIterable {
    case okay
    /// BLKIF_RSP_ERROR: the request failed (bad request, grant, or host I/O).
    case error
    /// BLKIF_RSP_EOPNOTSUPP: the operation is not supported.
    case notSupported

    public init?(rawValue: Int16) {
        switch Int32(rawValue) {
        case BLKIF_RSP_OKAY: self = .okay
        case BLKIF_RSP_ERROR: self = .error
        case BLKIF_RSP_EOPNOTSUPP: self = .notSupported
        default: return nil
        }
    }

    public var rawValue: Int16 {
        switch self {
        case .okay: Int16(BLKIF_RSP_OKAY)
        case .error: Int16(BLKIF_RSP_ERROR)
        case .notSupported: Int16(BLKIF_RSP_EOPNOTSUPP)
        }
    }
}

/// One `struct blkif_request_segment`: a granted page and the sectors of it
/// (`first_sect`..`last_sect`, inclusive) to transfer.
public struct BlkifSegment: Hashable, Sendable {
    public var grant: GrantReference
    public var firstSector: UInt8
    public var lastSector: UInt8
    public init(grant: GrantReference, firstSector: UInt8, lastSector: UInt8) {
        self.grant = grant
        self.firstSector = firstSector
        self.lastSector = lastSector
    }

    /// Decodes the segment at `offset` of `bytes` (a ring slot or an indirect page).
    init(_ bytes: [UInt8], at offset: Int, layout: BlkifLayout.Segment) {
        grant = GrantReference(rawValue: bytes.wireValue(UInt32.self, at: offset + layout.grantReference))
        firstSector = bytes.wireValue(UInt8.self, at: offset + layout.firstSector)
        lastSector = bytes.wireValue(UInt8.self, at: offset + layout.lastSector)
    }

    func encode(into bytes: inout [UInt8], at offset: Int, layout: BlkifLayout.Segment) {
        bytes.setWireValue(grant.rawValue, at: offset + layout.grantReference)
        bytes.setWireValue(firstSector, at: offset + layout.firstSector)
        bytes.setWireValue(lastSector, at: offset + layout.lastSector)
    }

    /// Decodes `count` segments packed from the start of an indirect page's bytes.
    static func decodeIndirect(_ bytes: [UInt8], count: Int) -> [BlkifSegment] {
        let layout = BlkifLayout.x86_64.segment
        return (0..<count).map { BlkifSegment(bytes, at: $0 * layout.size, layout: layout) }
    }

    /// An indirect page as a frontend fills it: `segments` packed from its
    /// start as `struct blkif_request_segment` (one layout for both ABIs),
    /// the rest zero. At most `BlockBackendLimits.segmentsPerIndirectPage`.
    public static func indirectPage(_ segments: [BlkifSegment]) -> [UInt8] {
        let layout = BlkifLayout.x86_64.segment
        precondition(segments.count * layout.size <= Int(GuestFrameNumber.pageSize), "more segments than an indirect page holds")
        var bytes = [UInt8](repeating: 0, count: Int(GuestFrameNumber.pageSize))
        for (i, s) in segments.enumerated() { s.encode(into: &bytes, at: i * layout.size, layout: layout) }
        return bytes
    }
}

/// A request as the frontend wrote it, decoded field by field from the one
/// copy of its slot, as Linux's `blkif_get_x86_32_req`/`_x86_64_req` copy
/// it: which fields exist depends on the operation, and an unknown
/// operation keeps only its `id` (so it can be answered). Nothing here is
/// validated yet: that is `BlockRequestValidator`'s job.
public struct BlkifWireRequest: Hashable, Sendable {
    /// The operation byte as written.
    public var operation: UInt8
    /// The frontend's private value, echoed in the response.
    public var id: UInt64
    public var body: Body

    public enum Body: Hashable, Sendable {
        /// READ, WRITE, WRITE_BARRIER, FLUSH_DISKCACHE: `segments` holds the
        /// first min(nr_segments, 11) slots.
        case readWrite(nrSegments: UInt8, handle: UInt16, sectorNumber: UInt64, segments: [BlkifSegment])
        /// DISCARD.
        case discard(flag: UInt8, sectorNumber: UInt64, sectorCount: UInt64)
        /// INDIRECT: `pages` holds the grants of the first
        /// min(8, ceil(nr_segments / 512)) indirect pages.
        case indirect(operation: UInt8, nrSegments: UInt16, handle: UInt16, sectorNumber: UInt64, pages: [GrantReference])
        /// Any other operation: only `id` is known.
        case other
    }

    public init(operation: UInt8, id: UInt64, body: Body) {
        self.operation = operation
        self.id = id
        self.body = body
    }

    /// Decodes a slot's copy in `layout`.
    public init(ringBytes b: [UInt8], layout: BlkifLayout) {
        let op = b.wireValue(UInt8.self, at: layout.request.operation)
        operation = op
        switch BlkifOperation(rawValue: op) {
        case .read, .write, .writeBarrier, .flushDiskCache:
            let r = layout.request
            let n = b.wireValue(UInt8.self, at: r.nrSegments)
            let present = min(Int(n), Int(BLKIF_MAX_SEGMENTS_PER_REQUEST))
            id = b.wireValue(UInt64.self, at: r.id)
            body = .readWrite(nrSegments: n, handle: b.wireValue(UInt16.self, at: r.handle),
                              sectorNumber: b.wireValue(UInt64.self, at: r.sectorNumber),
                              segments: (0..<present).map {
                                  BlkifSegment(b, at: r.segments + $0 * layout.segment.size, layout: layout.segment)
                              })
        case .discard:
            let d = layout.discard
            id = b.wireValue(UInt64.self, at: d.id)
            body = .discard(flag: b.wireValue(UInt8.self, at: d.flag), sectorNumber: b.wireValue(UInt64.self, at: d.sectorNumber),
                            sectorCount: b.wireValue(UInt64.self, at: d.sectorCount))
        case .indirect:
            let i = layout.indirect
            let n = b.wireValue(UInt16.self, at: i.nrSegments)
            let perPage = Int(PVH_BLKIF_SEGMENTS_PER_INDIRECT_PAGE)
            let pages = min((Int(n) + perPage - 1) / perPage, Int(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST))
            id = b.wireValue(UInt64.self, at: i.id)
            body = .indirect(operation: b.wireValue(UInt8.self, at: i.indirectOperation), nrSegments: n,
                             handle: b.wireValue(UInt16.self, at: i.handle),
                             sectorNumber: b.wireValue(UInt64.self, at: i.sectorNumber),
                             pages: (0..<pages).map { GrantReference(rawValue: b.wireValue(UInt32.self, at: i.grantReferences + $0 * 4)) })
        case nil:
            // Linux's blkif_request_other: the id is where every variant has it.
            id = b.wireValue(UInt64.self, at: layout.request.id)
            body = .other
        }
    }

    /// The slot's bytes in `layout` (what a frontend writes; used by tests).
    public func ringBytes(layout: BlkifLayout) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: layout.request.size)
        b.setWireValue(operation, at: layout.request.operation)
        switch body {
        case .readWrite(let n, let handle, let sector, let segments):
            let r = layout.request
            b.setWireValue(n, at: r.nrSegments)
            b.setWireValue(handle, at: r.handle)
            b.setWireValue(id, at: r.id)
            b.setWireValue(sector, at: r.sectorNumber)
            for (k, s) in segments.prefix(Int(BLKIF_MAX_SEGMENTS_PER_REQUEST)).enumerated() {
                s.encode(into: &b, at: r.segments + k * layout.segment.size, layout: layout.segment)
            }
        case .discard(let flag, let sector, let count):
            let d = layout.discard
            b.setWireValue(flag, at: d.flag)
            b.setWireValue(id, at: d.id)
            b.setWireValue(sector, at: d.sectorNumber)
            b.setWireValue(count, at: d.sectorCount)
        case .indirect(let op, let n, let handle, let sector, let pages):
            let i = layout.indirect
            b.setWireValue(op, at: i.indirectOperation)
            b.setWireValue(n, at: i.nrSegments)
            b.setWireValue(id, at: i.id)
            b.setWireValue(sector, at: i.sectorNumber)
            b.setWireValue(handle, at: i.handle)
            for (k, g) in pages.prefix(Int(BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST)).enumerated() {
                b.setWireValue(g.rawValue, at: i.grantReferences + k * 4)
            }
        case .other:
            b.setWireValue(id, at: layout.request.id)
        }
        return b
    }
}

/// A response: the request's `id`, its operation (for INDIRECT, the
/// indirect operation: Linux's blkfront checks it), and the status.
public struct BlkifWireResponse: Hashable, Sendable {
    public var id: UInt64
    public var operation: UInt8
    public var status: BlkifStatus?
    /// The raw status (a status outside `BlkifStatus` keeps its value here).
    public var rawStatus: Int16

    public init(id: UInt64, operation: UInt8, status: BlkifStatus) {
        self.id = id
        self.operation = operation
        self.status = status
        self.rawStatus = status.rawValue
    }

    public init(ringBytes b: [UInt8], layout: BlkifLayout) {
        id = b.wireValue(UInt64.self, at: layout.response.id)
        operation = b.wireValue(UInt8.self, at: layout.response.operation)
        rawStatus = Int16(bitPattern: b.wireValue(UInt16.self, at: layout.response.status))
        status = BlkifStatus(rawValue: rawStatus)
    }

    public func ringBytes(layout: BlkifLayout) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: layout.response.size)
        b.setWireValue(id, at: layout.response.id)
        b.setWireValue(operation, at: layout.response.operation)
        b.setWireValue(UInt16(bitPattern: rawStatus), at: layout.response.status)
        return b
    }
}

/// Names one of the two layouts at the type level, so that each ABI has its
/// own ring entry types for `SharedRing`.
public protocol BlkifABILayout: Sendable {
    static var abi: BlkifABI { get }
}

/// The x86_64 ("x86_64-abi", native) layout.
public enum BlkifX86_64: BlkifABILayout {
    public static var abi: BlkifABI { .x86_64 }
}

/// The x86_32 ("x86_32-abi") layout.
public enum BlkifX86_32: BlkifABILayout {
    public static var abi: BlkifABI { .x86_32 }
}

/// A request slot of a blkif ring in ABI `L`.
public struct BlkifRequestEntry<L: BlkifABILayout>: RingRequest, Hashable {
    public static var size: Int { L.abi.layout.request.size }
    public static var alignment: Int { L.abi.layout.request.alignment }
    public var request: BlkifWireRequest
    public init(_ request: BlkifWireRequest) { self.request = request }
    public init(ringBytes: [UInt8]) { request = BlkifWireRequest(ringBytes: ringBytes, layout: L.abi.layout) }
    public var ringBytes: [UInt8] { request.ringBytes(layout: L.abi.layout) }
}

/// A response slot of a blkif ring in ABI `L`.
public struct BlkifResponseEntry<L: BlkifABILayout>: RingResponse, Hashable {
    public static var size: Int { L.abi.layout.response.size }
    public static var alignment: Int { L.abi.layout.response.alignment }
    public var response: BlkifWireResponse
    public init(_ response: BlkifWireResponse) { self.response = response }
    public init(ringBytes: [UInt8]) { response = BlkifWireResponse(ringBytes: ringBytes, layout: L.abi.layout) }
    public var ringBytes: [UInt8] { response.ringBytes(layout: L.abi.layout) }
}

/// The backend half of one blkif ring in whichever ABI the frontend chose.
enum BlkifRing: Sendable {
    case x86_64(SharedRing<BlkifRequestEntry<BlkifX86_64>, BlkifResponseEntry<BlkifX86_64>>)
    case x86_32(SharedRing<BlkifRequestEntry<BlkifX86_32>, BlkifResponseEntry<BlkifX86_32>>)

    init(abi: BlkifABI, memory: any GuestMemory, frames: [GuestFrameNumber]) throws(XenRingError) {
        switch abi {
        case .x86_64: self = .x86_64(try SharedRing(memory: memory, frames: frames))
        case .x86_32: self = .x86_32(try SharedRing(memory: memory, frames: frames))
        }
    }

    /// Slots in the ring (`RING_SIZE`).
    var entries: UInt32 {
        switch self {
        case .x86_64(let r): r.geometry.entries
        case .x86_32(let r): r.geometry.entries
        }
    }

    mutating func nextRequest() throws(XenRingError) -> BlkifWireRequest? {
        switch self {
        case .x86_64(var r):
            defer { self = .x86_64(r) }
            return try r.nextRequest()?.request
        case .x86_32(var r):
            defer { self = .x86_32(r) }
            return try r.nextRequest()?.request
        }
    }

    mutating func pushResponse(_ response: BlkifWireResponse) throws(XenRingError) {
        switch self {
        case .x86_64(var r):
            defer { self = .x86_64(r) }
            try r.pushResponse(BlkifResponseEntry(response))
        case .x86_32(var r):
            defer { self = .x86_32(r) }
            try r.pushResponse(BlkifResponseEntry(response))
        }
    }

    mutating func pushResponses() throws(XenRingError) -> Bool {
        switch self {
        case .x86_64(var r):
            defer { self = .x86_64(r) }
            return try r.pushResponses()
        case .x86_32(var r):
            defer { self = .x86_32(r) }
            return try r.pushResponses()
        }
    }

    /// Requests the frontend produced that were not taken yet.
    func unconsumedRequests() throws(XenRingError) -> UInt32 {
        switch self {
        case .x86_64(let r): try r.unconsumedRequests()
        case .x86_32(let r): try r.unconsumedRequests()
        }
    }

    func finalCheckForRequests() throws(XenRingError) -> Bool {
        switch self {
        case .x86_64(let r): try r.finalCheckForRequests()
        case .x86_32(let r): try r.finalCheckForRequests()
        }
    }
}

extension Array where Element == UInt8 {
    /// The little-endian `T` at `offset` of a copied slot (XenABI's wire access, by offset).
    fileprivate func wireValue<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        wireValue(WireField(offset: offset, size: MemoryLayout<T>.size))
    }

    fileprivate mutating func setWireValue<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        setWireValue(value, in: WireField(offset: offset, size: MemoryLayout<T>.size))
    }
}
