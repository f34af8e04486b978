import CXen

// Grant-table structures (grant_table.h) and XENMEM_add_to_physmap_batch
// (memory.h). Native layouts come from the headers (`MemoryLayout` of the
// imported structs, or the `PVH_*` constants for structs that hold a guest
// handle). Xen's compat layouts (xen/common/compat/grant_table.c: entries,
// map/unmap, dump, set/get_version, swap and cache_flush pass through
// unchanged, CHECK_*; setup_table, transfer, copy and get_status_frames are
// translated) are derived from the x86-32 C ABI where they differ and pinned
// by tests.
extension XenWire {
    fileprivate static func gfield<Root, Value>(_ path: KeyPath<Root, Value>, _: Root.Type, base: Int = 0) -> WireField {
        WireField(offset: base + (MemoryLayout<Root>.offset(of: path) ?? 0), size: MemoryLayout<Value>.size)
    }

    /// `struct grant_entry_v1`: 8 bytes, 512 per frame.
    public enum GrantEntryV1 {
        public static let size = MemoryLayout<grant_entry_v1>.size
        public static let flags = gfield(\grant_entry_v1.flags, grant_entry_v1.self)
        public static let domid = gfield(\grant_entry_v1.domid, grant_entry_v1.self)
        public static let frame = gfield(\grant_entry_v1.frame, grant_entry_v1.self)
    }

    /// `struct grant_entry_header`: the flags and domid word every v2 entry
    /// starts with (and a v1 entry too: Xen's `_set_status_v1` swaps it as one
    /// 32-bit word).
    public enum GrantEntryHeader {
        public static let size = MemoryLayout<grant_entry_header>.size
        public static let flags = gfield(\grant_entry_header.flags, grant_entry_header.self)
        public static let domid = gfield(\grant_entry_header.domid, grant_entry_header.self)
    }

    /// `union grant_entry_v2`: 16 bytes, 256 per frame. Every member starts
    /// at the union's start with a `grant_entry_header`.
    public enum GrantEntryV2 {
        public static let size = MemoryLayout<grant_entry_v2>.size
        private typealias FullPage = grant_entry_v2.__Unnamed_struct_full_page
        private typealias SubPage = grant_entry_v2.__Unnamed_struct_sub_page
        private typealias Transitive = grant_entry_v2.__Unnamed_struct_transitive
        /// `full_page.frame`.
        public static let fullPageFrame = gfield(\FullPage.frame, FullPage.self)
        /// `sub_page.page_off`.
        public static let subPageOffset = gfield(\SubPage.page_off, SubPage.self)
        /// `sub_page.length`.
        public static let subPageLength = gfield(\SubPage.length, SubPage.self)
        /// `sub_page.frame`.
        public static let subPageFrame = gfield(\SubPage.frame, SubPage.self)
        /// `transitive.trans_domid`.
        public static let transitiveDomain = gfield(\Transitive.trans_domid, Transitive.self)
        /// `transitive.gref`.
        public static let transitiveReference = gfield(\Transitive.gref, Transitive.self)
    }

    /// `grant_status_t`: one 16-bit status word per entry in the v2 status frames.
    public enum GrantStatusEntry {
        public static let size = MemoryLayout<grant_status_t>.size
    }

    /// `struct gnttab_setup_table`. Compat: dom 0, nr_frames 4, status 8,
    /// frame_list 12 (a 4-byte handle to 4-byte `compat_pfn_t`), size 16.
    public enum GrantSetupTable {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? Int(PVH_GNTTAB_SETUP_TABLE_SIZE) : 16
        }
        public static let dom = WireField(offset: Int(PVH_GNTTAB_SETUP_TABLE_DOM_OFFSET), size: 2)
        public static let nrFrames = WireField(offset: Int(PVH_GNTTAB_SETUP_TABLE_NR_FRAMES_OFFSET), size: 4)
        public static let status = WireField(offset: Int(PVH_GNTTAB_SETUP_TABLE_STATUS_OFFSET), size: 2)
        public static func frameList(_ mode: GuestCPUMode) -> WireField {
            mode == .long64
                ? WireField(offset: Int(PVH_GNTTAB_SETUP_TABLE_FRAME_LIST_OFFSET), size: Int(PVH_GNTTAB_SETUP_TABLE_FRAME_LIST_SIZE))
                : WireField(offset: 12, size: 4)
        }
        /// One frame_list entry: `xen_pfn_t`, compat `compat_pfn_t` (4 bytes).
        public static func pfnSize(_ mode: GuestCPUMode) -> Int { mode == .long64 ? Int(PVH_XEN_PFN_SIZE) : 4 }
    }

    /// `struct gnttab_query_size` (fixed-width: same in both ABIs).
    public enum GrantQuerySize {
        public static let size = MemoryLayout<gnttab_query_size>.size
        public static let dom = gfield(\gnttab_query_size.dom, gnttab_query_size.self)
        public static let nrFrames = gfield(\gnttab_query_size.nr_frames, gnttab_query_size.self)
        public static let maxNrFrames = gfield(\gnttab_query_size.max_nr_frames, gnttab_query_size.self)
        public static let status = gfield(\gnttab_query_size.status, gnttab_query_size.self)
    }

    /// `struct gnttab_set_version`.
    public enum GrantSetVersion {
        public static let size = MemoryLayout<gnttab_set_version>.size
        public static let version = gfield(\gnttab_set_version.version, gnttab_set_version.self)
    }

    /// `struct gnttab_get_version`.
    public enum GrantGetVersion {
        public static let size = MemoryLayout<gnttab_get_version>.size
        public static let dom = gfield(\gnttab_get_version.dom, gnttab_get_version.self)
        public static let version = gfield(\gnttab_get_version.version, gnttab_get_version.self)
    }

    /// `struct gnttab_get_status_frames`. Compat: nr_frames 0, dom 4,
    /// status 6, frame_list 8 (4-byte handle to `uint64_t`), size 12.
    public enum GrantGetStatusFrames {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? Int(PVH_GNTTAB_GET_STATUS_FRAMES_SIZE) : 12
        }
        public static let nrFrames = WireField(offset: Int(PVH_GNTTAB_GET_STATUS_FRAMES_NR_FRAMES_OFFSET), size: 4)
        public static let dom = WireField(offset: Int(PVH_GNTTAB_GET_STATUS_FRAMES_DOM_OFFSET), size: 2)
        public static let status = WireField(offset: Int(PVH_GNTTAB_GET_STATUS_FRAMES_STATUS_OFFSET), size: 2)
        public static func frameList(_ mode: GuestCPUMode) -> WireField {
            mode == .long64
                ? WireField(offset: Int(PVH_GNTTAB_GET_STATUS_FRAMES_FRAME_LIST_OFFSET),
                            size: Int(PVH_GNTTAB_GET_STATUS_FRAMES_FRAME_LIST_SIZE))
                : WireField(offset: 8, size: 4)
        }
        /// Frame numbers are `uint64_t` in both ABIs.
        public static let frameSize = 8
    }

    /// `struct gnttab_dump_table`.
    public enum GrantDumpTable {
        public static let size = MemoryLayout<gnttab_dump_table>.size
        public static let dom = gfield(\gnttab_dump_table.dom, gnttab_dump_table.self)
        public static let status = gfield(\gnttab_dump_table.status, gnttab_dump_table.self)
    }

    /// `struct gnttab_copy`: a source and a destination `gnttab_copy_ptr`
    /// (`u.ref` or `u.gmfn`, `domid`, `offset`), `len`, `flags`, `status`.
    /// Compat: `u` is 4 bytes (`compat_pfn_t`), so each pointer is 8 bytes:
    /// source 0, dest 8, len 16, flags 18, status 20, size 24.
    public enum GrantCopy {
        private typealias Ptr = gnttab_copy_ptr
        private static let nativeSource = MemoryLayout<gnttab_copy>.offset(of: \gnttab_copy.source) ?? 0
        private static let nativeDest = MemoryLayout<gnttab_copy>.offset(of: \gnttab_copy.dest) ?? 0
        private static let nativeU = MemoryLayout<Ptr>.offset(of: \Ptr.u) ?? 0
        public static func size(_ mode: GuestCPUMode) -> Int { mode == .long64 ? MemoryLayout<gnttab_copy>.size : 24 }
        private static func base(_ destination: Bool, _ mode: GuestCPUMode) -> Int {
            mode == .long64 ? (destination ? nativeDest : nativeSource) : (destination ? 8 : 0)
        }
        /// `u.ref` of the source (`destination` false) or destination pointer.
        public static func reference(destination: Bool, _ mode: GuestCPUMode) -> WireField {
            WireField(offset: base(destination, mode) + (mode == .long64 ? nativeU : 0), size: MemoryLayout<grant_ref_t>.size)
        }
        /// `u.gmfn`: `xen_pfn_t`, compat 4 bytes.
        public static func gmfn(destination: Bool, _ mode: GuestCPUMode) -> WireField {
            WireField(offset: base(destination, mode) + (mode == .long64 ? nativeU : 0),
                      size: mode == .long64 ? Int(PVH_XEN_PFN_SIZE) : 4)
        }
        public static func domid(destination: Bool, _ mode: GuestCPUMode) -> WireField {
            mode == .long64 ? gfield(\Ptr.domid, Ptr.self, base: base(destination, mode)) : WireField(offset: base(destination, mode) + 4, size: 2)
        }
        public static func offset(destination: Bool, _ mode: GuestCPUMode) -> WireField {
            mode == .long64 ? gfield(\Ptr.offset, Ptr.self, base: base(destination, mode)) : WireField(offset: base(destination, mode) + 6, size: 2)
        }
        public static func length(_ mode: GuestCPUMode) -> WireField {
            mode == .long64 ? gfield(\gnttab_copy.len, gnttab_copy.self) : WireField(offset: 16, size: 2)
        }
        public static func flags(_ mode: GuestCPUMode) -> WireField {
            mode == .long64 ? gfield(\gnttab_copy.flags, gnttab_copy.self) : WireField(offset: 18, size: 2)
        }
        public static func status(_ mode: GuestCPUMode) -> WireField {
            mode == .long64 ? gfield(\gnttab_copy.status, gnttab_copy.self) : WireField(offset: 20, size: 2)
        }
    }

    /// `struct gnttab_map_grant_ref` (fixed-width: same in both ABIs).
    public enum GrantMapGrantRef {
        public static let size = MemoryLayout<gnttab_map_grant_ref>.size
        public static let hostAddress = gfield(\gnttab_map_grant_ref.host_addr, gnttab_map_grant_ref.self)
        public static let flags = gfield(\gnttab_map_grant_ref.flags, gnttab_map_grant_ref.self)
        public static let ref = gfield(\gnttab_map_grant_ref.ref, gnttab_map_grant_ref.self)
        public static let dom = gfield(\gnttab_map_grant_ref.dom, gnttab_map_grant_ref.self)
        public static let status = gfield(\gnttab_map_grant_ref.status, gnttab_map_grant_ref.self)
        public static let handle = gfield(\gnttab_map_grant_ref.handle, gnttab_map_grant_ref.self)
        public static let deviceBusAddress = gfield(\gnttab_map_grant_ref.dev_bus_addr, gnttab_map_grant_ref.self)
    }

    /// `struct gnttab_unmap_grant_ref` (same in both ABIs).
    public enum GrantUnmapGrantRef {
        public static let size = MemoryLayout<gnttab_unmap_grant_ref>.size
        public static let handle = gfield(\gnttab_unmap_grant_ref.handle, gnttab_unmap_grant_ref.self)
        public static let status = gfield(\gnttab_unmap_grant_ref.status, gnttab_unmap_grant_ref.self)
    }

    /// `struct gnttab_unmap_and_replace` (same in both ABIs).
    public enum GrantUnmapAndReplace {
        public static let size = MemoryLayout<gnttab_unmap_and_replace>.size
        public static let handle = gfield(\gnttab_unmap_and_replace.handle, gnttab_unmap_and_replace.self)
        public static let status = gfield(\gnttab_unmap_and_replace.status, gnttab_unmap_and_replace.self)
    }

    /// `struct gnttab_transfer`. Compat: mfn 0 (4 bytes), domid 4, ref 8, status 12, size 16.
    public enum GrantTransfer {
        public static func size(_ mode: GuestCPUMode) -> Int { mode == .long64 ? MemoryLayout<gnttab_transfer>.size : 16 }
        public static func status(_ mode: GuestCPUMode) -> WireField {
            mode == .long64 ? gfield(\gnttab_transfer.status, gnttab_transfer.self) : WireField(offset: 12, size: 2)
        }
    }

    /// `struct gnttab_swap_grant_ref` (same in both ABIs).
    public enum GrantSwapGrantRef {
        public static let size = MemoryLayout<gnttab_swap_grant_ref>.size
        public static let refA = gfield(\gnttab_swap_grant_ref.ref_a, gnttab_swap_grant_ref.self)
        public static let refB = gfield(\gnttab_swap_grant_ref.ref_b, gnttab_swap_grant_ref.self)
        public static let status = gfield(\gnttab_swap_grant_ref.status, gnttab_swap_grant_ref.self)
    }

    /// `struct gnttab_cache_flush` (same in both ABIs: the union holds a
    /// `uint64_t`, 16 bytes either way).
    public enum GrantCacheFlush {
        public static let size = MemoryLayout<gnttab_cache_flush>.size
    }

    /// `struct xen_add_to_physmap_batch` (memory.h). Compat (4-byte guest
    /// handles): domid 0, space 2, size 4, u 6, idxs 8, gpfns 12, errs 16,
    /// size 20. `idxs` holds `xen_ulong_t`, `gpfns` `xen_pfn_t` (4 bytes
    /// each in compat), `errs` `int`.
    public enum AddToPhysmapBatch {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? Int(PVH_XEN_ADD_TO_PHYSMAP_BATCH_SIZE) : 20
        }
        public static let domid = WireField(offset: Int(PVH_XEN_ADD_TO_PHYSMAP_BATCH_DOMID_OFFSET), size: 2)
        public static let space = WireField(offset: Int(PVH_XEN_ADD_TO_PHYSMAP_BATCH_SPACE_OFFSET), size: 2)
        public static let count = WireField(offset: Int(PVH_XEN_ADD_TO_PHYSMAP_BATCH_COUNT_OFFSET), size: 2)
        /// `u.foreign_domid` / `u.res0`.
        public static let extra = WireField(offset: Int(PVH_XEN_ADD_TO_PHYSMAP_BATCH_EXTRA_OFFSET),
                                            size: Int(PVH_XEN_ADD_TO_PHYSMAP_BATCH_EXTRA_SIZE))
        private static func handle(_ native: Int32, compat: Int, _ mode: GuestCPUMode) -> WireField {
            mode == .long64 ? WireField(offset: Int(native), size: Int(PVH_XEN_ADD_TO_PHYSMAP_BATCH_HANDLE_SIZE))
                : WireField(offset: compat, size: 4)
        }
        public static func indices(_ mode: GuestCPUMode) -> WireField {
            handle(Int32(PVH_XEN_ADD_TO_PHYSMAP_BATCH_IDXS_OFFSET), compat: 8, mode)
        }
        public static func gpfns(_ mode: GuestCPUMode) -> WireField {
            handle(Int32(PVH_XEN_ADD_TO_PHYSMAP_BATCH_GPFNS_OFFSET), compat: 12, mode)
        }
        public static func errors(_ mode: GuestCPUMode) -> WireField {
            handle(Int32(PVH_XEN_ADD_TO_PHYSMAP_BATCH_ERRS_OFFSET), compat: 16, mode)
        }
        /// One `idxs` entry (`xen_ulong_t`).
        public static func indexSize(_ mode: GuestCPUMode) -> Int { mode == .long64 ? Int(PVH_XEN_ULONG_SIZE) : 4 }
        /// One `gpfns` entry (`xen_pfn_t`).
        public static func gpfnSize(_ mode: GuestCPUMode) -> Int { mode == .long64 ? Int(PVH_XEN_PFN_SIZE) : 4 }
        /// One `errs` entry (`int`).
        public static let errorSize = 4
    }
}
