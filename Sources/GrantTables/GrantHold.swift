import GuestMemory
import Synchronization
import XenABI

/// A backend hold on one granted page kept across an operation (an I/O,
/// a packet) or, for a ring page, across a connection: a `GrantMapping`
/// that can be shared and released from a class. Releasing ends the hold:
/// the grant's GTF_reading/GTF_writing go, so release before responding.
public final class GrantHold: Sendable {
    /// The granted bytes.
    public let region: GuestPhysicalRange
    private let mapping: Mutex<GrantMapping?>

    public init(_ mapping: consuming GrantMapping) {
        region = mapping.region
        self.mapping = Mutex(Optional(mapping))
    }

    /// The bytes `[offset, offset + length)` of the granted page, if they
    /// lie in the granted bytes (a v2 sub-page grant may cover part of its
    /// page only); nil otherwise. `offset` and `length` are guest-written.
    public func bytes(offset: Int, length: Int) -> GuestPhysicalRange? {
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
