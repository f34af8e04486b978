import GuestMemory
import Locking
import XenABI

/// Gives guest RAM's host memory back to the host. The dispatcher's seam to
/// the guest-memory implementation for XENMEM_decrease_reservation and
/// XENMEM_populate_physmap; the VMM implements it with
/// `MappedGuestMemory.discard` (madvise), tests with `MockGuestMemory.discard`.
public protocol ReservationService: Sendable {
    /// Releases the host memory behind `range` (page-aligned, inside one RAM
    /// region) and leaves it reading as zero. Called when the guest frees
    /// frames (guest_remove_page) and again when it populates them
    /// (populate_physmap hands out a fresh, scrubbed page), so whatever the
    /// guest wrote to a frame while it was not populated is gone.
    func discard(_ range: GuestPhysicalRange) throws(GuestMemoryError)
}

/// The domain's memory reservation: which guest frames are populated (Xen's
/// p2m RAM entries) and how many pages the domain holds (`domain_tot_pages`)
/// against its limit (`d->max_pages`). Thread-safe; one per domain.
///
/// Only frames inside the RAM regions given at creation are tracked: those
/// are the frames this VMM has host memory (and KVM slots) for, and all of
/// them start populated, as the toolstack leaves a domain. Frames outside
/// (holes, the shared_info page placed in a hole) are never populated here.
///
/// `currentPages` is `populatedPages` plus pages the domain owns that no
/// frame maps: Xen charges those to `tot_pages` too. They arise from
/// XENMEM_increase_reservation (an HVM guest gets pages allocated but not
/// mapped, memory.c increase_reservation) and from populating a frame that
/// is already populated (p2m.c p2m_add_page replaces the mapping; the old
/// page stays allocated to the domain until it dies). They hold no host
/// memory here; they only count against `maximumPages`, as in Xen.
public final class MemoryReservation: Sendable {
    /// One tracked RAM region: frames `[first, first + count)`, a bit per frame.
    struct Region {
        let first: UInt64
        let count: UInt64
        var bits: [UInt64]

        func isPopulated(_ frame: UInt64) -> Bool {
            let i = frame - first
            return bits[Int(i >> 6)] & (1 << (i & 63)) != 0
        }
        mutating func set(_ frame: UInt64, populated: Bool) {
            let i = frame - first
            if populated { bits[Int(i >> 6)] |= 1 << (i & 63) } else { bits[Int(i >> 6)] &= ~(1 << (i & 63)) }
        }
    }

    struct Storage {
        var regions: [Region]
        var populated: UInt64
        /// Pages charged to the domain that no frame maps (see the type's comment).
        var unmapped: UInt64
        /// The domain's page limit (`d->max_pages`).
        var maximum: UInt64
        var total: UInt64 { populated &+ unmapped }

        /// The region holding `frame`.
        func regionIndex(of frame: UInt64) -> Int? {
            regions.firstIndex { frame >= $0.first && frame - $0.first < $0.count }
        }
    }

    let storage: Lock<Storage>

    /// The domain's page limit (`d->max_pages`, XENMEM_maximum_reservation).
    public var maximumPages: UInt64 { storage.withLock { $0.maximum } }

    /// Sets the limit, as XEN_DOMCTL_max_mem does (xen/common/domctl.c):
    /// any value, even below the pages the domain holds now; then it can
    /// allocate nothing until it has given back enough (populate_physmap
    /// and increase_reservation check against it each time). The toolstack
    /// (`pvh mem-max`, memory/static-max) is the only caller.
    public func setMaximumPages(_ pages: UInt64) {
        storage.withLock { $0.maximum = pages }
    }

    /// A reservation over `ram` (each range is cut to whole frames), every
    /// frame populated, limited to `maximumPages`.
    public init(ram: [GuestPhysicalRange], maximumPages: UInt64) {
        var regions: [Region] = []
        for range in ram.sorted(by: { $0.start < $1.start }) {
            let first = (range.start.rawValue &+ 0xfff) >> 12
            let end = range.end >> 12
            guard end > first else { continue }
            let count = end - first
            var bits = [UInt64](repeating: .max, count: Int((count + 63) / 64))
            if count % 64 != 0, let last = bits.indices.last { bits[last] = (1 << (count % 64)) - 1 }
            regions.append(Region(first: first, count: count, bits: bits))
        }
        let total = regions.reduce(0) { $0 + $1.count }
        storage = Lock(Storage(regions: regions, populated: total, unmapped: 0, maximum: maximumPages))
    }

    /// Pages the domain holds now (`domain_tot_pages`, XENMEM_current_reservation).
    public var currentPages: UInt64 { storage.withLock { $0.total } }
    /// Frames mapped to RAM now; `currentPages` minus pages the domain holds unmapped.
    public var populatedPages: UInt64 { storage.withLock { $0.populated } }
    /// Whether guest frame `frame` is populated (false outside tracked RAM).
    public func isPopulated(_ frame: GuestFrameNumber) -> Bool {
        storage.withLock { s in s.regionIndex(of: frame.rawValue).map { s.regions[$0].isPopulated(frame.rawValue) } ?? false }
    }

    /// guest_remove_page for up to `count` frames from `first`, stopping at
    /// the first frame that is not populated (p2m_invalid: -ENOENT, which
    /// decrease_reservation treats as the end) or outside tracked RAM.
    /// Each run of populated frames is discarded through `backing`, then
    /// marked unpopulated; a failed discard also stops (the run stays
    /// populated). Returns how many frames were removed.
    func remove(from first: UInt64, count: UInt64, backing: any ReservationService) -> UInt64 {
        storage.withLock { s in
            var done: UInt64 = 0
            while done < count {
                let (frame, overflow) = first.addingReportingOverflow(done)
                guard !overflow, let r = s.regionIndex(of: frame) else { return done }
                // The populated run from `frame`, within this region and the request.
                // (No local copy of the region: it would make the bit update below copy the bitmap.)
                let limit = min(count - done, s.regions[r].first + s.regions[r].count - frame)
                var run: UInt64 = 0
                while run < limit, s.regions[r].isPopulated(frame + run) { run += 1 }
                guard run > 0 else { return done }
                do {
                    try backing.discard(GuestPhysicalRange(start: GuestPhysicalAddress(frame << 12), length: run << 12))
                } catch {
                    return done
                }
                for f in frame..<frame + run { s.regions[r].set(f, populated: false) }
                s.populated -= run
                done += run
                if run < limit { return done }
            }
            return done
        }
    }

    /// Allocates and maps one extent of `count` frames from `first`
    /// (populate_physmap: alloc_domheap_pages, then guest_physmap_add_page).
    /// False, with nothing changed, when the domain would exceed its limit
    /// (assign_pages: `nr > max_pages - tot_pages`, or already over it) or
    /// a frame is outside tracked RAM (Xen would map it anywhere in the
    /// guest's physical space; this VMM can only back its RAM regions), or
    /// the discard fails. A frame already populated is replaced by a fresh
    /// zero page and its old page stays charged (p2m_add_page).
    func populate(from first: UInt64, count: UInt64, backing: any ReservationService) -> Bool {
        storage.withLock { s in
            guard s.total <= s.maximum, count <= s.maximum - s.total else { return false }
            // Every frame inside tracked RAM, split into per-region pieces.
            var pieces: [(region: Int, first: UInt64, count: UInt64)] = []
            var done: UInt64 = 0
            while done < count {
                let (frame, overflow) = first.addingReportingOverflow(done)
                guard !overflow, let r = s.regionIndex(of: frame) else { return false }
                let n = min(count - done, s.regions[r].first + s.regions[r].count - frame)
                pieces.append((r, frame, n))
                done += n
            }
            for piece in pieces {
                do {
                    try backing.discard(GuestPhysicalRange(start: GuestPhysicalAddress(piece.first << 12), length: piece.count << 12))
                } catch {
                    // Earlier pieces are zeroed but still populated as before:
                    // only their contents changed, which the guest asked for.
                    return false
                }
            }
            for piece in pieces {
                for f in piece.first..<piece.first + piece.count {
                    if s.regions[piece.region].isPopulated(f) {
                        s.unmapped += 1
                    } else {
                        s.regions[piece.region].set(f, populated: true)
                        s.populated += 1
                    }
                }
            }
            return true
        }
    }

    /// increase_reservation for an HVM guest: allocates up to `extents`
    /// extents of `pagesPerExtent` pages without mapping them (a translated
    /// guest gets no MFNs back), stopping when the next would exceed the
    /// limit. Returns how many were allocated.
    func allocateUnmapped(extents: UInt64, pagesPerExtent: UInt64) -> UInt64 {
        storage.withLock { s in
            guard s.total <= s.maximum, pagesPerExtent > 0 else { return 0 }
            let n = min(extents, (s.maximum - s.total) / pagesPerExtent)
            s.unmapped += n * pagesPerExtent
            return n
        }
    }

    /// A grant frame takes guest frame `frame` (xenmem_add_to_physmap_one:
    /// the RAM page there is freed with guest_remove_page): it is no longer
    /// populated nor charged. The grant frame itself is not the domain's
    /// page. Host memory stays: the grant frame's bytes live there. No-op
    /// for a frame that is not populated RAM.
    func giveToGrantFrame(_ frame: GuestFrameNumber) {
        storage.withLock { s in
            guard let r = s.regionIndex(of: frame.rawValue), s.regions[r].isPopulated(frame.rawValue) else { return }
            s.regions[r].set(frame.rawValue, populated: false)
            s.populated -= 1
        }
    }
}
