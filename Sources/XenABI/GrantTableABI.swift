import CXen
import GuestMemory

/// `GNTTABOP_*` (grant_table.h): the sub-operations of `grant_table_op`.
public enum GrantTableOpCommand: XenSubOperation {
    case mapGrantRef, unmapGrantRef, setupTable, dumpTable, transfer, copy, querySize
    case unmapAndReplace, setVersion, getStatusFrames, getVersion, swapGrantRef, cacheFlush
    public var rawValue: UInt32 {
        switch self {
        case .mapGrantRef: xenConstant(GNTTABOP_map_grant_ref)
        case .unmapGrantRef: xenConstant(GNTTABOP_unmap_grant_ref)
        case .setupTable: xenConstant(GNTTABOP_setup_table)
        case .dumpTable: xenConstant(GNTTABOP_dump_table)
        case .transfer: xenConstant(GNTTABOP_transfer)
        case .copy: xenConstant(GNTTABOP_copy)
        case .querySize: xenConstant(GNTTABOP_query_size)
        case .unmapAndReplace: xenConstant(GNTTABOP_unmap_and_replace)
        case .setVersion: xenConstant(GNTTABOP_set_version)
        case .getStatusFrames: xenConstant(GNTTABOP_get_status_frames)
        case .getVersion: xenConstant(GNTTABOP_get_version)
        case .swapGrantRef: xenConstant(GNTTABOP_swap_grant_ref)
        case .cacheFlush: xenConstant(GNTTABOP_cache_flush)
        }
    }
}

/// `GNTST_*` (grant_table.h): the per-operation status grant operations
/// write into their argument structures (`int16_t status`). Closed: the
/// values the header names. Thrown by grant-table operations whose failure
/// Xen reports as a status rather than an errno (never `.okay`).
public enum GrantStatus: Error, CaseIterable, Hashable, Sendable, CustomStringConvertible {
    case okay, generalError, badDomain, badGrantReference, badHandle, badVirtualAddress
    case badDeviceAddress, noDeviceSpace, permissionDenied, badPage, badCopyArgument
    case addressTooBig, again, noSpace

    /// The `GNTST_*` value (0 or negative).
    public var rawValue: Int16 {
        let v: Int32
        switch self {
        case .okay: v = GNTST_okay
        case .generalError: v = GNTST_general_error
        case .badDomain: v = GNTST_bad_domain
        case .badGrantReference: v = GNTST_bad_gntref
        case .badHandle: v = GNTST_bad_handle
        case .badVirtualAddress: v = GNTST_bad_virt_addr
        case .badDeviceAddress: v = GNTST_bad_dev_addr
        case .noDeviceSpace: v = GNTST_no_device_space
        case .permissionDenied: v = GNTST_permission_denied
        case .badPage: v = GNTST_bad_page
        case .badCopyArgument: v = GNTST_bad_copy_arg
        case .addressTooBig: v = GNTST_address_too_big
        case .again: v = GNTST_eagain
        case .noSpace: v = GNTST_no_space
        }
        return Int16(truncatingIfNeeded: v)
    }

    /// The status whose value is `rawValue`, or nil.
    public init?(rawValue: Int16) {
        guard let match = Self.allCases.first(where: { $0.rawValue == rawValue }) else { return nil }
        self = match
    }

    public var description: String { "GNTST(\(rawValue))" }
}

/// The type field of a grant entry's flags (`GTF_type_mask`).
public enum GrantEntryType: Hashable, Sendable {
    /// `GTF_invalid`: the entry grants nothing.
    case invalid
    /// `GTF_permit_access`: `domid` may map and access `frame`.
    case permitAccess
    /// `GTF_accept_transfer`: `domid` may transfer a page into `frame`.
    case acceptTransfer
    /// `GTF_transitive` (v2 only): `domid` may use another domain's grant.
    case transitive

    /// The type in `flags`.
    public init(_ flags: GrantEntryFlags) {
        switch UInt32(flags.rawValue) & UInt32(GTF_type_mask) {
        case UInt32(GTF_permit_access): self = .permitAccess
        case UInt32(GTF_accept_transfer): self = .acceptTransfer
        case UInt32(GTF_transitive): self = .transitive
        default: self = .invalid
        }
    }
}

/// `GTF_*` (grant_table.h): a grant entry's 16-bit `flags`. The low two bits
/// are a type (see `GrantEntryType`); `permitAccess` etc. are those values
/// as bits, for building entries.
public struct GrantEntryFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    private init(_ v: UInt32) { rawValue = UInt16(truncatingIfNeeded: v) }

    /// `GTF_permit_access` (a type value).
    public static let permitAccess = Self(UInt32(GTF_permit_access))
    /// `GTF_accept_transfer` (a type value).
    public static let acceptTransfer = Self(UInt32(GTF_accept_transfer))
    /// `GTF_transitive` (a type value, v2 only).
    public static let transitive = Self(UInt32(GTF_transitive))
    /// `GTF_type_mask`.
    public static let typeMask = Self(UInt32(GTF_type_mask))
    /// `GTF_readonly`: the grantee may only read. [GST]
    public static let readonly = Self(UInt32(GTF_readonly))
    /// `GTF_reading`: the grantee is reading the frame (v1: set by Xen in
    /// the entry; v2: in the status entry). [XEN]
    public static let reading = Self(UInt32(GTF_reading))
    /// `GTF_writing`: the grantee is writing the frame. [XEN]
    public static let writing = Self(UInt32(GTF_writing))
    /// `GTF_PWT`, `GTF_PCD`, `GTF_PAT`: cache attributes for the mapping.
    public static let pwt = Self(UInt32(GTF_PWT))
    public static let pcd = Self(UInt32(GTF_PCD))
    public static let pat = Self(UInt32(GTF_PAT))
    /// `GTF_sub_page` (v2): only `[page_off, page_off + length)` is granted.
    public static let subPage = Self(UInt32(GTF_sub_page))
    /// `GTF_transfer_committed` / `GTF_transfer_completed` (accept_transfer entries).
    public static let transferCommitted = Self(UInt32(GTF_transfer_committed))
    public static let transferCompleted = Self(UInt32(GTF_transfer_completed))

    /// The entry's type.
    public var type: GrantEntryType { GrantEntryType(self) }
}

/// `GNTMAP_*` (grant_table.h): `gnttab_map_grant_ref.flags`.
public struct GrantMapFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// `GNTMAP_device_map`.
    public static let deviceMap = Self(rawValue: UInt32(GNTMAP_device_map))
    /// `GNTMAP_host_map`.
    public static let hostMap = Self(rawValue: UInt32(GNTMAP_host_map))
    /// `GNTMAP_readonly`.
    public static let readonly = Self(rawValue: UInt32(GNTMAP_readonly))
    /// `GNTMAP_application_map`.
    public static let applicationMap = Self(rawValue: UInt32(GNTMAP_application_map))
    /// `GNTMAP_contains_pte`.
    public static let containsPTE = Self(rawValue: UInt32(GNTMAP_contains_pte))
}

/// `GNTCOPY_*` (grant_table.h): `gnttab_copy.flags`.
public struct GrantCopyFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `GNTCOPY_source_gref`: `source.u` is a grant reference, else a gmfn.
    public static let sourceGrant = Self(rawValue: UInt16(GNTCOPY_source_gref))
    /// `GNTCOPY_dest_gref`: `dest.u` is a grant reference, else a gmfn.
    public static let destinationGrant = Self(rawValue: UInt16(GNTCOPY_dest_gref))
}

/// Grant-table constants from grant_table.h and memory.h.
public enum GrantTableConstants {
    /// `GNTTAB_NR_RESERVED_ENTRIES`: entries kept across a version switch.
    public static let reservedEntries = Int(GNTTAB_NR_RESERVED_ENTRIES)
    /// `GNTTAB_RESERVED_CONSOLE`.
    public static let consoleReference = GrantReference(UInt32(GNTTAB_RESERVED_CONSOLE))
    /// `GNTTAB_RESERVED_XENSTORE`.
    public static let xenstoreReference = GrantReference(UInt32(GNTTAB_RESERVED_XENSTORE))
    /// `XENMAPIDX_grant_table_status` (memory.h): the idx bit of
    /// XENMAPSPACE_grant_table that names a v2 status frame.
    public static let statusFrameIndexBit = UInt64(XENMAPIDX_grant_table_status)
    /// `GNTTAB_CACHE_CLEAN`, `GNTTAB_CACHE_INVAL`, `GNTTAB_CACHE_SOURCE_GREF`.
    public static let cacheClean = UInt32(GNTTAB_CACHE_CLEAN)
    public static let cacheInvalidate = UInt32(GNTTAB_CACHE_INVAL)
    public static let cacheSourceGrant = UInt32(GNTTAB_CACHE_SOURCE_GREF)
}

/// One end of a `gnttab_copy` (`struct gnttab_copy_ptr`), decoded: a grant
/// reference of `domain` or (DOMID_SELF only) a frame of the caller.
public struct GrantCopyPointer: Hashable, Sendable {
    /// What `u` names, chosen by `GNTCOPY_source_gref` / `GNTCOPY_dest_gref`.
    public enum Target: Hashable, Sendable {
        case grant(GrantReference)
        case frame(GuestFrameNumber)
    }
    public var target: Target
    public var domain: DomainID
    /// Byte offset in the page.
    public var offset: UInt16
    public init(target: Target, domain: DomainID, offset: UInt16) {
        self.target = target
        self.domain = domain
        self.offset = offset
    }
}

/// One `gnttab_copy` operation, decoded from the guest's structure.
public struct GrantCopyOperation: Hashable, Sendable {
    public var source: GrantCopyPointer
    public var destination: GrantCopyPointer
    public var length: UInt16
    public init(source: GrantCopyPointer, destination: GrantCopyPointer, length: UInt16) {
        self.source = source
        self.destination = destination
        self.length = length
    }
}
