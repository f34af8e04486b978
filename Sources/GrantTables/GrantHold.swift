import GuestMemory
import Locking
import Synchronization
import XenABI

/// A backend hold on one granted page kept across an operation (an I/O,
/// a packet) or, for a ring page, across a connection: a `GrantMapping`
/// that can be shared and released from a class. Releasing ends the hold:
/// the grant's GTF_reading/GTF_writing go, so release before responding.
public final class GrantHold: Sendable {
    /// The granted bytes.
    public let region: GuestPhysicalRange
    private let mapping: Lock<GrantMapping?>

    public init(_ mapping: consuming GrantMapping) {
        region = mapping.region
        self.mapping = Lock(Optional(mapping))
    }

    /// The bytes `[offset, offset + length)` of the granted page, if they
    /// lie in the granted bytes (a v2 sub-page grant may cover part of its
    /// page only); nil otherwise. `offset` and `length` are guest-written.
    public func bytes(offset: Int, length: Int) -> GuestPhysicalRange? { Self.bytes(of: region, offset: offset, length: length) }

    /// `bytes(offset:length:)` of a hold whose granted bytes are `region`.
    public static func bytes(of region: GuestPhysicalRange, offset: Int, length: Int) -> GuestPhysicalRange? {
        guard offset >= 0, length >= 0 else { return nil }
        let pageStart = region.start.rawValue - region.start.pageOffset
        let start = pageStart &+ UInt64(offset)
        guard start >= region.start.rawValue, start <= region.end, UInt64(length) <= region.end - start else { return nil }
        return GuestPhysicalRange(start: GuestPhysicalAddress(start), length: UInt64(length))
    }

    /// Why `GrantTable.holdPages` failed.
    public enum PageError: Error, Hashable, Sendable {
        /// The grant could not be mapped.
        case grant(GrantReference, GrantError)
        /// It grants less than a whole page (a ring needs whole pages).
        case notAPage(GrantReference)
    }

    /// Ends the hold (idempotent; also at the end of the object's life).
    public func release() {
        mapping.withLock { $0 = nil }
    }
}

extension GrantTable {
    /// Holds whole granted pages (a ring's, for a connection's life, as
    /// Linux's backends map them at connect), in order. Each must grant a
    /// whole page; on any failure nothing stays held.
    public func holdPages(_ refs: [GrantReference], access: GrantAccess) throws(GrantHold.PageError) -> [GrantHold] {
        var holds: [GrantHold] = []
        for ref in refs {
            let hold: GrantHold
            do { hold = GrantHold(try map(ref, access: access)) } catch {
                for h in holds { h.release() }
                throw .grant(ref, error)
            }
            holds.append(hold)
            guard hold.region.start.pageOffset == 0, hold.region.length == GuestFrameNumber.pageSize else {
                for h in holds { h.release() }
                throw .notAPage(ref)
            }
        }
        return holds
    }
}

/// Backend holds on several grants taken together (a packet's pages), as
/// one object: mapped under one acquisition of the table's lock and
/// released under one, where a `GrantHold` each would take the lock and
/// allocate once per grant. Releasing ends every hold (before responding).
public final class GrantHoldSet: Sendable {
    /// The granted bytes of each grant, in the order given.
    public let regions: [GuestPhysicalRange]
    private let table: GrantTable
    private let references: [GrantReference]
    private let write: Bool
    private let released = Atomic<Bool>(false)

    init(table: GrantTable, references: [GrantReference], regions: [GuestPhysicalRange], write: Bool) {
        self.table = table
        self.references = references
        self.regions = regions
        self.write = write
    }

    /// The bytes `[offset, offset + length)` of the `index`th grant's page,
    /// if they lie in its granted bytes (`GrantHold.bytes`); guest-written
    /// offsets and lengths.
    public func bytes(_ index: Int, offset: Int, length: Int) -> GuestPhysicalRange? {
        guard regions.indices.contains(index) else { return nil }
        return GrantHold.bytes(of: regions[index], offset: offset, length: length)
    }

    /// Ends every hold (idempotent; also at the end of the object's life).
    public func release() {
        guard !released.exchange(true, ordering: .acquiringAndReleasing) else { return }
        table.releaseHolds(references, write: write)
    }

    deinit { release() }
}

extension GrantTable {
    /// Maps every grant of `references` for `access` as `map` does, under
    /// one lock; on the first that fails, those before are released and
    /// its error thrown (nothing stays held).
    public func holdAll(_ references: [GrantReference], access: GrantAccess) throws(GrantError) -> GrantHoldSet {
        var regions: [GuestPhysicalRange] = []
        try mapAll(references, write: access == .write, into: &regions)
        return GrantHoldSet(table: self, references: references, regions: regions, write: access == .write)
    }

    /// `holdAll` with no object per use: maps every grant of `references`
    /// under one lock into `regions` (emptied first; a caller that keeps
    /// the array keeps its storage, so a packet's holds allocate nothing),
    /// runs `body` with them, and ends every hold under one lock when it
    /// returns. Throws as `holdAll` does (nothing held, `body` not run).
    @inlinable
    public func withHolds<Result>(_ references: [GrantReference], access: GrantAccess, regions: inout [GuestPhysicalRange],
                                  _ body: ([GuestPhysicalRange]) -> Result) throws(GrantError) -> Result {
        try mapAll(references, write: access == .write, into: &regions)
        defer { releaseHolds(references, write: access == .write) }
        return body(regions)
    }
}
