import BlockBackend
import XenABI
import XenBus

/// What a blkif frontend writes: requests as Linux's xen-blkfront builds
/// them, and its side of the xenbus handshake.
public enum Blkfront {
    /// A read or write of `segments` (BLKIF_MAX_SEGMENTS_PER_REQUEST at most
    /// for a valid request) at `sector`.
    public static func rw(_ op: BlkifOperation, id: UInt64, sector: UInt64, _ segments: [BlkifSegment]) -> BlkifWireRequest {
        BlkifWireRequest(operation: op.rawValue, id: id,
                         body: .readWrite(nrSegments: UInt8(segments.count), handle: 0, sectorNumber: sector, segments: segments))
    }

    /// BLKIF_OP_FLUSH_DISKCACHE (or BLKIF_OP_WRITE_BARRIER) with no data:
    /// what blkfront sends for an empty REQ_PREFLUSH, a file system's fsync.
    public static func flush(id: UInt64, barrier: Bool = false) -> BlkifWireRequest {
        rw(barrier ? .writeBarrier : .flushDiskCache, id: id, sector: 0, [])
    }

    /// BLKIF_OP_DISCARD of `count` sectors at `sector`.
    public static func discard(id: UInt64, sector: UInt64, count: UInt64, secure: Bool = false) -> BlkifWireRequest {
        BlkifWireRequest(operation: BlkifOperation.discard.rawValue, id: id,
                         body: .discard(flag: secure ? 1 : 0, sectorNumber: sector, sectorCount: count))
    }

    /// BLKIF_OP_INDIRECT: `segments` segments listed in the indirect
    /// `pages` (filled with `BlkifSegment.indirectPage`), what blkfront
    /// sends for more than 11 segments when the backend offers
    /// "feature-max-indirect-segments".
    public static func indirect(_ op: BlkifOperation, id: UInt64, sector: UInt64, segments: Int, pages: [GrantReference]) -> BlkifWireRequest {
        BlkifWireRequest(operation: BlkifOperation.indirect.rawValue, id: id,
                         body: .indirect(operation: op.rawValue, nrSegments: UInt16(segments), handle: 0, sectorNumber: sector,
                                         pages: pages))
    }

    /// A whole page as one segment (512-byte sectors 0...7).
    public static func page(_ ref: GrantReference) -> BlkifSegment { BlkifSegment(grant: ref, firstSector: 0, lastSector: 7) }

    /// Linux's blkfront `talk_to_blkback`: the rings' details (one ring at
    /// the top, several under "queue-N/" with "multi-queue-num-queues";
    /// "ring-page-order" for more than a page), `protocol` when given,
    /// `extra` nodes, then state Initialised (3), all over the guest's own
    /// store connection. A backend in InitWait connects before this returns.
    public static func connect<L>(_ rings: [BlkfrontRing<L>], device address: XenbusDeviceAddress,
                                  protocolNode: String? = L.abi.protocolName, extra: [(String, String)] = []) throws {
        guard let first = rings.first else { return }
        let fe = address.frontendPath
        var nodes = extra
        if let p = protocolNode { nodes.append(("protocol", p)) }
        if first.refs.count > 1 { nodes.append(("ring-page-order", String(first.refs.count.trailingZeroBitCount))) }
        if rings.count == 1 {
            nodes += first.nodes()
        } else {
            nodes.append(("multi-queue-num-queues", String(rings.count)))
            for (i, r) in rings.enumerated() { nodes += r.nodes(prefix: "queue-\(i)/") }
        }
        do {
            for (k, v) in nodes { try first.guest.storeWire.write("\(fe)/\(k)", v) }
            try first.guest.storeWire.write("\(fe)/state", "3")
        } catch {
            throw BlockFrontendError.store(error)
        }
    }
}
