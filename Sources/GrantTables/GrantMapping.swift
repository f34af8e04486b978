import GuestMemory
import XenABI

/// How a backend uses a granted page.
public enum GrantAccess: Hashable, Sendable {
    /// Read only: GTF_reading while held.
    case read
    /// Read and write: GTF_reading and GTF_writing while held; refused for a
    /// GTF_readonly grant.
    case write
}

/// Why a grant could not be used. Closed; each maps to the `GNTST_*` status
/// Xen reports for the same failure (`status`).
public enum GrantError: Error, Hashable, Sendable {
    /// The reference is beyond the table (GNTST_bad_gntref).
    case badReference
    /// The entry does not grant access to this domain: wrong type (not
    /// GTF_permit_access, or transitive), wrong domid, or held by another
    /// domain (GNTST_general_error).
    case notGranted
    /// Write access to a GTF_readonly grant (GNTST_general_error).
    case readOnly
    /// The guest kept changing the entry while its status was set, or
    /// revoked it before seeing our status (GNTST_general_error).
    case unstable
    /// A v2 sub-page grant whose `page_off + length` passes its page (GNTST_general_error).
    case badSubPage
    /// The granted frame is not guest memory (GNTST_bad_page, `get_paged_frame`).
    case badFrame
    /// The reference is held too many times (Xen's pin counters; GNTST_general_error).
    case pinOverflow
    /// Too many holds in the table (GNTST_no_space).
    case tooManyHolds
    /// An access outside the granted bytes (GNTST_bad_copy_arg).
    case outOfBounds
    /// A write through a read mapping (GNTST_permission_denied).
    case notWritable
    /// The grant table's own memory could not be accessed (GNTST_general_error).
    case memory

    /// The `GNTST_*` status Xen would report.
    public var status: GrantStatus {
        switch self {
        case .badReference: .badGrantReference
        case .notGranted, .readOnly, .unstable, .badSubPage, .pinOverflow, .memory: .generalError
        case .badFrame: .badPage
        case .tooManyHolds: .noSpace
        case .outOfBounds: .badCopyArgument
        case .notWritable: .permissionDenied
        }
    }
}

/// A backend's hold on a granted page (`GrantTable.map`): bounded reads and
/// writes of the granted bytes only. The hold keeps GTF_reading/GTF_writing
/// set; `release()` (or the end of the value's life) clears them, so release
/// before posting the response the frontend waits for: Linux's
/// `gnttab_end_foreign_access` fails on a grant still marked in use. The
/// hold stays on the bytes it resolved, whatever the guest does to the
/// entry afterwards.
public struct GrantMapping: ~Copyable, Sendable {
    let table: GrantTable
    /// The grant this maps.
    public let reference: GrantReference
    /// How it was mapped.
    public let access: GrantAccess
    /// The granted bytes in guest memory (a whole page, or a v2 sub-page).
    public let region: GuestPhysicalRange

    init(table: GrantTable, reference: GrantReference, access: GrantAccess, region: GuestPhysicalRange) {
        self.table = table
        self.reference = reference
        self.access = access
        self.region = region
    }

    /// Number of granted bytes.
    public var count: Int { Int(region.length) }

    /// `[offset, offset + count)` of the granted bytes, or `.outOfBounds`.
    func address(_ offset: Int, _ count: Int) throws(GrantError) -> GuestPhysicalAddress {
        guard offset >= 0, count >= 0, offset <= self.count, count <= self.count - offset else { throw .outOfBounds }
        return GuestPhysicalAddress(region.start.rawValue + UInt64(offset))
    }

    /// Copies `count` bytes at `offset` (from the start of the granted bytes) out of the guest.
    public func read(offset: Int, count: Int) throws(GrantError) -> [UInt8] {
        let at = try address(offset, count)
        do { return try table.memory.read(at: at, count: count) } catch { throw .badFrame }
    }

    /// Copies `bytes` into the granted bytes at `offset`; `.notWritable` for a read mapping.
    public func write(_ bytes: [UInt8], at offset: Int) throws(GrantError) {
        guard access == .write else { throw .notWritable }
        let at = try address(offset, bytes.count)
        do { try table.memory.write(bytes, at: at) } catch { throw .badFrame }
    }

    /// Copies `bytes` (a part of a larger buffer, not copied first) into
    /// the granted bytes at `offset`; `.notWritable` for a read mapping.
    public func write(_ bytes: ArraySlice<UInt8>, at offset: Int) throws(GrantError) {
        guard access == .write else { throw .notWritable }
        let at = try address(offset, bytes.count)
        do { try table.memory.write(bytes, at: at) } catch { throw .badFrame }
    }

    /// Ends the hold: the last holder clears GTF_reading (and the last
    /// writer GTF_writing), and only those bits.
    public consuming func release() {}

    deinit { table.releaseHold(reference, write: access == .write) }
}
