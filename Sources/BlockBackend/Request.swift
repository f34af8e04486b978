import CXen
import GrantTables
import XenABI

// What a blkif request means once checked: the closed `BlockRequest`, and
// the checks that turn a `BlkifWireRequest` (guest-written, hostile) into
// one, after Linux's xen-blkback `dispatch_rw_block_io`,
// `xen_blkbk_parse_indirect`, `dispatch_discard_io`, `dispatch_other_io`
// and `xen_vbd_translate`. A request that fails them gets exactly one
// response with its id: BLKIF_RSP_ERROR, or BLKIF_RSP_EOPNOTSUPP for an
// operation the backend does not do. None of them is a device fault.

/// What requests may address: the disk as the frontend sees it.
public struct BlockRequestLimits: Hashable, Sendable {
    /// Bytes per sector in requests (`sector_number`, `first_sect`,
    /// `last_sect`, `nr_sectors`): 512, as blkif.h fixes it, unless the
    /// frontend wrote "feature-large-sector-size" = 1, when it is the
    /// disk's "sector-size".
    public var sectorUnit: Int
    /// The disk's size in `sectorUnit` sectors.
    public var sectors: UInt64
    /// Writes, flushes and discards are refused (Linux's `xen_vbd_translate`
    /// refuses every operation but a read on a read-only vbd).
    public var readOnly: Bool
    /// The backing can discard ("feature-discard").
    public var discard: Bool
    /// Segments an INDIRECT request may carry ("feature-max-indirect-segments").
    public var maximumIndirectSegments: Int

    /// Xen pages are 4 KiB: a segment addresses sectors of one page.
    public static let pageSize = 4096

    public init(sectorUnit: Int = 512, sectors: UInt64, readOnly: Bool = false, discard: Bool = false,
                maximumIndirectSegments: Int = BlockBackendLimits.maximumIndirectSegments) {
        self.sectorUnit = sectorUnit
        self.sectors = sectors
        self.readOnly = readOnly
        self.discard = discard
        self.maximumIndirectSegments = maximumIndirectSegments
    }
}

/// Fixed limits of this backend.
public enum BlockBackendLimits {
    /// "feature-max-indirect-segments": Linux's MAX_INDIRECT_SEGMENTS (256).
    /// With 512 segments to an indirect page (blkif.h: PAGE_SIZE /
    /// sizeof(struct blkif_request_segment)) that is one indirect page.
    public static let maximumIndirectSegments = 256
    /// Segments in one indirect page.
    public static let segmentsPerIndirectPage = Int(PVH_BLKIF_SEGMENTS_PER_INDIRECT_PAGE)
    /// BLKIF_MAX_SEGMENTS_PER_REQUEST: segments of a direct request.
    public static let maximumDirectSegments = Int(BLKIF_MAX_SEGMENTS_PER_REQUEST)
    /// "max-ring-page-order": Linux's default `xen_blkif_max_ring_order`
    /// limit (XENBUS_MAX_RING_GRANT_ORDER = 4, 16 pages, 512 requests in
    /// flight per ring).
    public static let maximumRingPageOrder = 4
}

/// One segment of a checked request: the bytes `[offset, offset + length)`
/// of the page `grant` names.
public struct BlockSegment: Hashable, Sendable {
    public var grant: GrantReference
    /// Byte offset in the granted page (`first_sect * sector unit`).
    public var offset: Int
    /// Bytes (`(last_sect - first_sect + 1) * sector unit`).
    public var length: Int
    public init(grant: GrantReference, offset: Int, length: Int) {
        self.grant = grant
        self.offset = offset
        self.length = length
    }
}

/// A request that passed every check: what the queue does with it.
public struct BlockRequest: Hashable, Sendable {
    /// How a write is ordered with the writes around it.
    public enum WriteOrdering: Hashable, Sendable {
        /// A plain WRITE.
        case unordered
        /// FLUSH_DISKCACHE with data: earlier writes are made durable
        /// first, and this one before it is acknowledged.
        case flush
        /// WRITE_BARRIER with data (how Linux's blkfront sends a FUA write
        /// when the backend offers barriers only): as `flush`, and no
        /// later request starts before it is done (blkif.h's barrier).
        case barrier
    }

    public enum Kind: Hashable, Sendable {
        /// Read `segments` from the disk at byte `offset`.
        case read(offset: UInt64, segments: [BlockSegment])
        /// Write `segments` to the disk at byte `offset`.
        case write(offset: UInt64, segments: [BlockSegment], ordering: WriteOrdering)
        /// FLUSH_DISKCACHE (or WRITE_BARRIER, `barrier`) without data.
        case flush(barrier: Bool)
        /// Deallocate `length` bytes at `offset` (0 bytes: nothing to do).
        case discard(offset: UInt64, length: UInt64)
    }

    /// The frontend's id, echoed in the response.
    public var id: UInt64
    /// The operation as the request named it (INDIRECT for an indirect one).
    public var operation: BlkifOperation
    /// The operation the response carries: the indirect operation for
    /// INDIRECT (Linux's `pending_req->operation`, which blkfront checks).
    public var responseOperation: UInt8
    public var kind: Kind

    public init(id: UInt64, operation: BlkifOperation, responseOperation: UInt8, kind: Kind) {
        self.id = id
        self.operation = operation
        self.responseOperation = responseOperation
        self.kind = kind
    }

    /// Bytes of data the request moves.
    public var byteCount: Int {
        switch kind {
        case .read(_, let s), .write(_, let s, _): s.reduce(0) { $0 + $1.length }
        case .flush, .discard: 0
        }
    }

    /// Whether it changes the disk (what a flush must wait for).
    public var modifiesDisk: Bool {
        switch kind {
        case .read, .flush: false
        case .write, .discard: true
        }
    }

    /// Whether it may start only after every earlier write is done: a
    /// flush or barrier, with or without data (Linux's `xen_blk_drain_io`
    /// for barriers; pvh drains for FLUSH_DISKCACHE too, because fdatasync
    /// covers only writes that completed before it).
    public var drainsEarlierWrites: Bool {
        switch kind {
        case .flush: true
        case .write(_, _, let ordering): ordering != .unordered
        case .read, .discard: false
        }
    }

    /// Whether no later request may start until it is done (blkif.h:
    /// "all writes issued after the barrier request must not execute until
    /// after the completion of the barrier request").
    public var isBarrier: Bool {
        switch kind {
        case .flush(let barrier): barrier
        case .write(_, _, let ordering): ordering == .barrier
        case .read, .discard: false
        }
    }
}

/// A request that failed a check: the one response it gets, and why.
public struct BlockRequestRejection: Error, Hashable, Sendable {
    /// Why (for the metrics and the log; the guest sees `status` only).
    public enum Reason: Hashable, Sendable {
        /// Not an operation blkif defines, or one this backend does not do
        /// (Linux's `dispatch_other_io`).
        case unknownOperation
        /// INDIRECT whose indirect operation is not READ or WRITE.
        case badIndirectOperation
        /// nr_segments out of range (0 for a data operation, more than 11
        /// direct or 256 indirect).
        case badSegmentCount
        /// `first_sect > last_sect` or `last_sect` past the page.
        case badSegment
        /// The sectors reach past the end of the disk (or wrap).
        case outOfRange
        /// A write, flush or discard of a read-only disk.
        case readOnly
        /// DISCARD when the backing cannot discard.
        case discardUnsupported
        /// An indirect page could not be read (its grant).
        case badIndirectPage(GrantError)
    }

    public var id: UInt64
    public var responseOperation: UInt8
    public var status: BlkifStatus
    public var reason: Reason

    public init(id: UInt64, responseOperation: UInt8, status: BlkifStatus, reason: Reason) {
        self.id = id
        self.responseOperation = responseOperation
        self.status = status
        self.reason = reason
    }

    /// The response the frontend gets.
    public var response: BlkifWireResponse {
        BlkifWireResponse(id: id, operation: responseOperation, status: status)
    }
}

/// Turns wire requests into `BlockRequest`s or rejections. Pure: the one
/// thing it reads from the guest, an INDIRECT request's segment pages, it
/// asks of `indirectSegments`, once.
public struct BlockRequestValidator: Hashable, Sendable {
    public var limits: BlockRequestLimits

    public init(limits: BlockRequestLimits) { self.limits = limits }

    /// Reads `count` segments from the indirect pages `pages` (in order,
    /// 512 to a page); throws the grant's error.
    public typealias IndirectSegmentReader = (_ pages: [GrantReference], _ count: Int) throws(GrantError) -> [BlkifSegment]

    public func validate(_ wire: BlkifWireRequest,
                         indirectSegments: IndirectSegmentReader) -> Result<BlockRequest, BlockRequestRejection> {
        func reject(_ status: BlkifStatus, _ reason: BlockRequestRejection.Reason,
                    operation: UInt8 = wire.operation) -> Result<BlockRequest, BlockRequestRejection> {
            .failure(BlockRequestRejection(id: wire.id, responseOperation: operation, status: status, reason: reason))
        }
        guard let operation = BlkifOperation(rawValue: wire.operation) else { return reject(.notSupported, .unknownOperation) }

        switch (operation, wire.body) {
        case (.read, .readWrite(let n, _, let sector, let segments)),
             (.write, .readWrite(let n, _, let sector, let segments)),
             (.writeBarrier, .readWrite(let n, _, let sector, let segments)),
             (.flushDiskCache, .readWrite(let n, _, let sector, let segments)):
            // dispatch_rw_block_io: 0 segments only for a flush (REQ_PREFLUSH), at most 11.
            let flushes = operation == .writeBarrier || operation == .flushDiskCache
            guard (n == 0 && flushes) || (1...BlockBackendLimits.maximumDirectSegments).contains(Int(n)),
                  segments.count == Int(n) else {
                return reject(.error, .badSegmentCount)
            }
            return readWrite(wire, operation: operation, responseOperation: wire.operation, isRead: operation == .read,
                             sector: sector, wireSegments: segments)

        case (.indirect, .indirect(let indirectOperation, let n, _, let sector, let pages)):
            // Every rejection of an indirect request names its indirect operation.
            let isRead: Bool
            switch BlkifOperation(rawValue: indirectOperation) {
            case .read: isRead = true
            case .write: isRead = false
            default: return reject(.error, .badIndirectOperation, operation: indirectOperation)
            }
            guard (1...limits.maximumIndirectSegments).contains(Int(n)) else {
                return reject(.error, .badSegmentCount, operation: indirectOperation)
            }
            let perPage = BlockBackendLimits.segmentsPerIndirectPage
            guard pages.count == (Int(n) + perPage - 1) / perPage else {
                return reject(.error, .badSegmentCount, operation: indirectOperation)
            }
            let segments: [BlkifSegment]
            do {
                segments = try indirectSegments(pages, Int(n))
            } catch {
                return reject(.error, .badIndirectPage(error), operation: indirectOperation)
            }
            guard segments.count == Int(n) else { return reject(.error, .badSegmentCount, operation: indirectOperation) }
            return readWrite(wire, operation: .indirect, responseOperation: indirectOperation, isRead: isRead,
                             sector: sector, wireSegments: segments)

        case (.discard, .discard(_, let sector, let count)):
            // dispatch_discard_io: xen_vbd_translate (read-only, range) first,
            // then the discard itself, whose EOPNOTSUPP is BLKIF_RSP_EOPNOTSUPP.
            // BLKIF_DISCARD_SECURE is ignored: "discard-secure" is never
            // offered (blkif.h: "ignored if discard-secure=0").
            if limits.readOnly { return reject(.error, .readOnly) }
            if count > 0 {
                guard sector <= limits.sectors, count <= limits.sectors - sector else { return reject(.error, .outOfRange) }
            }
            guard limits.discard else { return reject(.notSupported, .discardUnsupported) }
            let unit = UInt64(limits.sectorUnit)
            return .success(BlockRequest(id: wire.id, operation: .discard, responseOperation: wire.operation,
                                         kind: .discard(offset: sector * unit, length: count * unit)))

        default:
            // A body that does not match its operation cannot come out of
            // `BlkifWireRequest(ringBytes:)`; refuse it all the same.
            return reject(.notSupported, .unknownOperation)
        }
    }

    private func readWrite(_ wire: BlkifWireRequest, operation: BlkifOperation, responseOperation: UInt8, isRead: Bool,
                           sector: UInt64, wireSegments: [BlkifSegment]) -> Result<BlockRequest, BlockRequestRejection> {
        func reject(_ reason: BlockRequestRejection.Reason) -> Result<BlockRequest, BlockRequestRejection> {
            .failure(BlockRequestRejection(id: wire.id, responseOperation: responseOperation, status: .error, reason: reason))
        }
        let unit = limits.sectorUnit
        let sectorsPerPage = BlockRequestLimits.pageSize / unit
        var segments: [BlockSegment] = []
        segments.reserveCapacity(wireSegments.count)
        var total: UInt64 = 0
        for s in wireSegments {
            // dispatch_rw_block_io / xen_blkbk_parse_indirect: last_sect inside
            // the page, first_sect <= last_sect.
            guard Int(s.lastSector) < sectorsPerPage, s.firstSector <= s.lastSector else { return reject(.badSegment) }
            let count = Int(s.lastSector) - Int(s.firstSector) + 1
            segments.append(BlockSegment(grant: s.grant, offset: Int(s.firstSector) * unit, length: count * unit))
            total += UInt64(count)
        }
        // xen_vbd_translate: a read-only vbd takes reads only; the range
        // (when there is one) must be inside the disk and must not wrap.
        if limits.readOnly && !isRead { return reject(.readOnly) }
        if total > 0 {
            guard sector <= limits.sectors, total <= limits.sectors - sector else { return reject(.outOfRange) }
        }
        let offset = sector &* UInt64(unit)
        let kind: BlockRequest.Kind
        switch operation {
        case .flushDiskCache, .writeBarrier:
            let barrier = operation == .writeBarrier
            kind = segments.isEmpty ? .flush(barrier: barrier)
                : .write(offset: offset, segments: segments, ordering: barrier ? .barrier : .flush)
        default:
            kind = isRead ? .read(offset: offset, segments: segments)
                : .write(offset: offset, segments: segments, ordering: .unordered)
        }
        return .success(BlockRequest(id: wire.id, operation: operation, responseOperation: responseOperation, kind: kind))
    }
}
