import CXen

/// One field of a Xen structure as it sits in guest memory.
public struct WireField: Hashable, Sendable {
    public let offset: Int
    public let size: Int
    public init(offset: Int, size: Int) {
        self.offset = offset
        self.size = size
    }
}

/// Byte layouts of the Xen structures hypercalls exchange with the guest.
///
/// 64-bit (native) layouts come from Xen's headers through CKVM
/// (`MemoryLayout<T>.offset(of:)`, or the `PVH_*` constants for structs that
/// hold a guest handle). Xen has no public header for the 32-bit "compat"
/// layouts (it generates them at build time, xen/include/Makefile); where a
/// structure's compat layout differs, it is derived below from the x86-32 C
/// ABI (`xen_ulong_t`, `xen_pfn_t` and guest handles are 4 bytes, `uint64_t`
/// is 4-byte aligned) and pinned by tests. Structures made only of fixed-width
/// fields are the same in both ABIs.
public enum XenWire {
    private static func field<Root, Value>(_ path: KeyPath<Root, Value>, _: Root.Type) -> WireField {
        WireField(offset: MemoryLayout<Root>.offset(of: path) ?? 0, size: MemoryLayout<Value>.size)
    }

    /// `struct xen_memory_map` (memory.h): `nr_entries`, then a guest handle.
    public enum MemoryMap {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? Int(PVH_XEN_MEMORY_MAP_SIZE) : 8
        }
        public static func nrEntries(_ mode: GuestCPUMode) -> WireField {
            WireField(offset: Int(PVH_XEN_MEMORY_MAP_NR_ENTRIES_OFFSET), size: 4)
        }
        public static func buffer(_ mode: GuestCPUMode) -> WireField {
            mode == .long64
                ? WireField(offset: Int(PVH_XEN_MEMORY_MAP_BUFFER_OFFSET), size: Int(PVH_XEN_MEMORY_MAP_BUFFER_SIZE))
                : WireField(offset: 4, size: 4)
        }
    }

    /// A BIOS E820 entry, the format of XENMEM_memory_map's buffer (memory.h:
    /// "same format as returned by the BIOS INT 0x15 EAX=0xE820 call"): packed,
    /// 20 bytes. Xen's own `struct e820entry` is `__packed` and not public;
    /// note it differs from start_info.h's 24-byte `hvm_memmap_table_entry`.
    public enum E820Entry {
        public static let size = 20
        public static let address = WireField(offset: 0, size: 8)
        public static let length = WireField(offset: 8, size: 8)
        public static let type = WireField(offset: 16, size: 4)
    }

    /// `struct vcpu_time_info` (xen.h): 32 bytes in both ABIs. Its fields are PVTimeLayout's.
    public enum VCPUTimeInfo {
        public static let size = MemoryLayout<vcpu_time_info>.size
    }

    /// `struct xen_add_to_physmap` (memory.h).
    public enum AddToPhysmap {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? MemoryLayout<xen_add_to_physmap>.size : 16
        }
        public static let domid = field(\xen_add_to_physmap.domid, xen_add_to_physmap.self)
        public static let count = field(\xen_add_to_physmap.size, xen_add_to_physmap.self)
        public static let space = field(\xen_add_to_physmap.space, xen_add_to_physmap.self)
        public static func index(_ mode: GuestCPUMode) -> WireField {
            mode == .long64 ? field(\xen_add_to_physmap.idx, xen_add_to_physmap.self) : WireField(offset: 8, size: 4)
        }
        public static func gpfn(_ mode: GuestCPUMode) -> WireField {
            mode == .long64 ? field(\xen_add_to_physmap.gpfn, xen_add_to_physmap.self) : WireField(offset: 12, size: 4)
        }
    }

    /// `struct xen_memory_reservation` (memory.h): the argument of
    /// XENMEM_increase_reservation, XENMEM_decrease_reservation and
    /// XENMEM_populate_physmap. The compat layout (x86-32: guest handle and
    /// `xen_ulong_t` are 4 bytes) is handle 0, nr_extents 4, extent_order 8,
    /// mem_flags 12, domid 16, size 20.
    public enum MemoryReservation {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? Int(PVH_XEN_MEMORY_RESERVATION_SIZE) : 20
        }
        public static func extentStart(_ mode: GuestCPUMode) -> WireField {
            mode == .long64
                ? WireField(offset: Int(PVH_XEN_MEMORY_RESERVATION_EXTENT_START_OFFSET),
                            size: Int(PVH_XEN_MEMORY_RESERVATION_EXTENT_START_SIZE))
                : WireField(offset: 0, size: 4)
        }
        public static func nrExtents(_ mode: GuestCPUMode) -> WireField {
            mode == .long64
                ? WireField(offset: Int(PVH_XEN_MEMORY_RESERVATION_NR_EXTENTS_OFFSET),
                            size: Int(PVH_XEN_MEMORY_RESERVATION_NR_EXTENTS_SIZE))
                : WireField(offset: 4, size: 4)
        }
        public static func extentOrder(_ mode: GuestCPUMode) -> WireField {
            WireField(offset: mode == .long64 ? Int(PVH_XEN_MEMORY_RESERVATION_EXTENT_ORDER_OFFSET) : 8, size: 4)
        }
        public static func memFlags(_ mode: GuestCPUMode) -> WireField {
            WireField(offset: mode == .long64 ? Int(PVH_XEN_MEMORY_RESERVATION_MEM_FLAGS_OFFSET) : 12, size: 4)
        }
        public static func domid(_ mode: GuestCPUMode) -> WireField {
            WireField(offset: mode == .long64 ? Int(PVH_XEN_MEMORY_RESERVATION_DOMID_OFFSET) : 16, size: 2)
        }
        /// One entry of the extent list: `xen_pfn_t` (compat: `compat_pfn_t`, 4 bytes).
        public static func pfnSize(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? Int(PVH_XEN_PFN_SIZE) : 4
        }
        /// `XENMEMF_get_address_bits`.
        public static let addressBitsMask: UInt32 = 0xff
        /// `XENMEMF_get_node`: bits 15:8 hold node + 1 (0: no node, NUMA_NO_NODE).
        public static func node(_ flags: UInt32) -> UInt32 { ((flags >> 8) &- 1) & 0xff }
        /// `NUMA_NO_NODE` as `XENMEMF_get_node` reports it.
        public static let noNode: UInt32 = 0xff
        /// `XENMEMF_populate_on_demand`.
        public static let populateOnDemand = UInt32(XENMEMF_populate_on_demand)
        /// `XENMEMF_exact_node_request`.
        public static let exactNodeRequest = UInt32(XENMEMF_exact_node_request)
        /// `XENMEMF_vnode`.
        public static let virtualNode = UInt32(XENMEMF_vnode)
    }

    /// `struct xen_memory_domain` (memory.h): the argument of XENMEM_{current,maximum}_reservation.
    public enum MemoryDomain {
        public static let size = MemoryLayout<xen_memory_domain>.size
        public static let domid = field(\xen_memory_domain.domid, xen_memory_domain.self)
    }

    /// `struct xen_platform_parameters` (version.h): one `xen_ulong_t`.
    public enum PlatformParameters {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? MemoryLayout<xen_platform_parameters>.size : 4
        }
    }

    /// `struct xen_feature_info` (version.h).
    public enum FeatureInfo {
        public static let size = MemoryLayout<xen_feature_info>.size
        public static let submapIndex = field(\xen_feature_info.submap_idx, xen_feature_info.self)
        public static let submap = field(\xen_feature_info.submap, xen_feature_info.self)
    }

    /// `struct xen_compile_info` (version.h).
    public enum CompileInfo {
        public static let size = MemoryLayout<xen_compile_info>.size
        public static let compiler = field(\xen_compile_info.compiler, xen_compile_info.self)
        public static let compileBy = field(\xen_compile_info.compile_by, xen_compile_info.self)
        public static let compileDomain = field(\xen_compile_info.compile_domain, xen_compile_info.self)
        public static let compileDate = field(\xen_compile_info.compile_date, xen_compile_info.self)
    }

    /// Fixed-size strings of `xen_version` (version.h).
    public static let extraversionLength = MemoryLayout<xen_extraversion_t>.size
    public static let capabilitiesLength = MemoryLayout<xen_capabilities_info_t>.size
    public static let changesetLength = MemoryLayout<xen_changeset_info_t>.size
    public static let commandlineLength = MemoryLayout<xen_commandline_t>.size
    /// `xen_domain_handle_t` (xen.h): the domain's UUID.
    public static let domainHandleLength = MemoryLayout<xen_domain_handle_t>.size

    /// `struct xen_hvm_param` (hvm/hvm_op.h).
    public enum HVMParamArgument {
        public static let size = MemoryLayout<xen_hvm_param>.size
        public static let domid = field(\xen_hvm_param.domid, xen_hvm_param.self)
        public static let index = field(\xen_hvm_param.index, xen_hvm_param.self)
        public static let value = field(\xen_hvm_param.value, xen_hvm_param.self)
    }

    /// `struct vcpu_register_vcpu_info` (vcpu.h).
    public enum RegisterVCPUInfo {
        public static let size = MemoryLayout<vcpu_register_vcpu_info>.size
        public static let mfn = field(\vcpu_register_vcpu_info.mfn, vcpu_register_vcpu_info.self)
        public static let offset = field(\vcpu_register_vcpu_info.offset, vcpu_register_vcpu_info.self)
    }

    /// `struct vcpu_info` (xen.h): 64 bytes in both ABIs.
    public enum VCPUInfo {
        public static let size = MemoryLayout<vcpu_info>.size
        /// Xen requires the registered vcpu_info to be naturally aligned for the
        /// shared-info ABI in use (xen/common/domain.c map_vcpu_info): 8 for the
        /// 64-bit layout, 4 for the 32-bit one (no 8-byte alignment of uint64_t on i386).
        public static func alignment(sharedInfo32Bit: Bool) -> Int {
            sharedInfo32Bit ? 4 : MemoryLayout<vcpu_info>.alignment
        }
        public static let upcallPending = field(\vcpu_info.evtchn_upcall_pending, vcpu_info.self)
        public static let upcallMask = field(\vcpu_info.evtchn_upcall_mask, vcpu_info.self)
        /// `evtchn_pending_sel` (an `xen_ulong_t`): 8 bytes at 8 in the 64-bit
        /// layout; 4 bytes at 4 in the 32-bit one (two `uint8_t`, then a
        /// 4-aligned `unsigned long`).
        public static func pendingSelector(sharedInfo32Bit: Bool) -> WireField {
            sharedInfo32Bit ? WireField(offset: 4, size: 4) : field(\vcpu_info.evtchn_pending_sel, vcpu_info.self)
        }
    }

    /// `struct shared_info` (xen.h).
    public enum SharedInfo {
        public static let size = MemoryLayout<shared_info>.size
        /// Offset of the legacy `vcpu_info[XEN_LEGACY_MAX_VCPUS]` array.
        public static let vcpuInfo = field(\shared_info.vcpu_info, shared_info.self)
        /// `XEN_LEGACY_MAX_VCPUS`: vCPUs with a slot inside shared_info.
        public static let legacyMaxVCPUs = Int(XEN_LEGACY_MAX_VCPUS)
        /// `evtchn_pending[sizeof(xen_ulong_t) * 8]`: right after the legacy
        /// vcpu_info array (64 bytes each in both ABIs), so at the same offset
        /// in both; 64 words of 8 bytes, or 32 words of 4 in the 32-bit layout.
        public static func eventPending(sharedInfo32Bit: Bool) -> WireField {
            sharedInfo32Bit
                ? WireField(offset: vcpuInfo.offset + vcpuInfo.size, size: 32 * 4)
                : field(\shared_info.evtchn_pending, shared_info.self)
        }
        /// `evtchn_mask[sizeof(xen_ulong_t) * 8]`, right after `evtchn_pending`.
        public static func eventMask(sharedInfo32Bit: Bool) -> WireField {
            sharedInfo32Bit
                ? WireField(offset: vcpuInfo.offset + vcpuInfo.size + 32 * 4, size: 32 * 4)
                : field(\shared_info.evtchn_mask, shared_info.self)
        }
        /// Bits per `xen_ulong_t` word of the bitmaps (`BITS_PER_EVTCHN_WORD`).
        public static func bitsPerEventWord(sharedInfo32Bit: Bool) -> Int {
            sharedInfo32Bit ? 32 : MemoryLayout<xen_ulong_t>.size * 8
        }
    }

    // Event channels (event_channel.h). Every argument structure is made of
    // fixed-width fields only, so the 32-bit layout is the same.

    /// `struct evtchn_alloc_unbound`.
    public enum EventChannelAllocUnbound {
        public static let size = MemoryLayout<evtchn_alloc_unbound>.size
        public static let dom = field(\evtchn_alloc_unbound.dom, evtchn_alloc_unbound.self)
        public static let remoteDom = field(\evtchn_alloc_unbound.remote_dom, evtchn_alloc_unbound.self)
        public static let port = field(\evtchn_alloc_unbound.port, evtchn_alloc_unbound.self)
    }

    /// `struct evtchn_bind_interdomain`.
    public enum EventChannelBindInterdomain {
        public static let size = MemoryLayout<evtchn_bind_interdomain>.size
        public static let remoteDom = field(\evtchn_bind_interdomain.remote_dom, evtchn_bind_interdomain.self)
        public static let remotePort = field(\evtchn_bind_interdomain.remote_port, evtchn_bind_interdomain.self)
        public static let localPort = field(\evtchn_bind_interdomain.local_port, evtchn_bind_interdomain.self)
    }

    /// `struct evtchn_bind_virq`.
    public enum EventChannelBindVIRQ {
        public static let size = MemoryLayout<evtchn_bind_virq>.size
        public static let virq = field(\evtchn_bind_virq.virq, evtchn_bind_virq.self)
        public static let vcpu = field(\evtchn_bind_virq.vcpu, evtchn_bind_virq.self)
        public static let port = field(\evtchn_bind_virq.port, evtchn_bind_virq.self)
    }

    /// `struct evtchn_bind_pirq`.
    public enum EventChannelBindPIRQ {
        public static let size = MemoryLayout<evtchn_bind_pirq>.size
    }

    /// `struct evtchn_bind_ipi`.
    public enum EventChannelBindIPI {
        public static let size = MemoryLayout<evtchn_bind_ipi>.size
        public static let vcpu = field(\evtchn_bind_ipi.vcpu, evtchn_bind_ipi.self)
        public static let port = field(\evtchn_bind_ipi.port, evtchn_bind_ipi.self)
    }

    /// `struct evtchn_close`, `evtchn_send` and `evtchn_unmask`: one port each.
    public enum EventChannelPortArgument {
        public static let size = MemoryLayout<evtchn_send>.size
        public static let port = field(\evtchn_send.port, evtchn_send.self)
    }

    /// `struct evtchn_bind_vcpu`.
    public enum EventChannelBindVCPU {
        public static let size = MemoryLayout<evtchn_bind_vcpu>.size
        public static let port = field(\evtchn_bind_vcpu.port, evtchn_bind_vcpu.self)
        public static let vcpu = field(\evtchn_bind_vcpu.vcpu, evtchn_bind_vcpu.self)
    }

    /// `struct evtchn_reset`.
    public enum EventChannelReset {
        public static let size = MemoryLayout<evtchn_reset>.size
        public static let dom = field(\evtchn_reset.dom, evtchn_reset.self)
    }

    /// `struct evtchn_status`. The union `u` starts at `union`; its members
    /// all start there (C unions import as computed properties, so their
    /// offsets are taken from the member structs' own layouts).
    public enum EventChannelStatus {
        public static let size = MemoryLayout<evtchn_status>.size
        public static let dom = field(\evtchn_status.dom, evtchn_status.self)
        public static let port = field(\evtchn_status.port, evtchn_status.self)
        public static let status = field(\evtchn_status.status, evtchn_status.self)
        public static let vcpu = field(\evtchn_status.vcpu, evtchn_status.self)
        static let union = MemoryLayout<evtchn_status>.offset(of: \evtchn_status.u) ?? 0
        private typealias Union = evtchn_status.__Unnamed_union_u
        private static func member<S, V>(_ path: KeyPath<S, V>) -> WireField {
            WireField(offset: union + (MemoryLayout<S>.offset(of: path) ?? 0), size: MemoryLayout<V>.size)
        }
        /// `u.unbound.dom`.
        public static let unboundDom = member(\Union.__Unnamed_struct_unbound.dom)
        /// `u.interdomain.dom`.
        public static let interdomainDom = member(\Union.__Unnamed_struct_interdomain.dom)
        /// `u.interdomain.port`.
        public static let interdomainPort = member(\Union.__Unnamed_struct_interdomain.port)
        /// `u.virq` (also `u.pirq`): a `uint32_t` at the union's start.
        public static let virq = WireField(offset: union, size: 4)
        /// Bytes of the union.
        public static let unionSize = MemoryLayout<evtchn_status>.size - union
    }

    /// `struct xen_hvm_evtchn_upcall_vector` (hvm/hvm_op.h).
    public enum HVMEventChannelUpcallVector {
        public static let size = MemoryLayout<xen_hvm_evtchn_upcall_vector>.size
        public static let vcpu = field(\xen_hvm_evtchn_upcall_vector.vcpu, xen_hvm_evtchn_upcall_vector.self)
        public static let vector = field(\xen_hvm_evtchn_upcall_vector.vector, xen_hvm_evtchn_upcall_vector.self)
    }

    /// `struct sched_shutdown` (sched.h).
    public enum SchedShutdown {
        public static let size = MemoryLayout<sched_shutdown>.size
        public static let reason = field(\sched_shutdown.reason, sched_shutdown.self)
    }

    /// `struct sched_remote_shutdown` (sched.h).
    public enum SchedRemoteShutdown {
        public static let size = MemoryLayout<sched_remote_shutdown>.size
        public static let domainID = field(\sched_remote_shutdown.domain_id, sched_remote_shutdown.self)
        public static let reason = field(\sched_remote_shutdown.reason, sched_remote_shutdown.self)
    }
}

/// Little-endian field access on a copied-in structure. Out-of-range reads
/// give zero bytes for the missing part (callers copy `size` bytes first).
extension Array where Element == UInt8 {
    /// The little-endian integer in `field`, zero-extended or truncated to `T`.
    /// Inlinable so callers get it specialized for their `T` (it runs per
    /// ring slot and per grant entry).
    @inlinable
    public func wireValue<T: FixedWidthInteger>(_ field: WireField, as: T.Type = T.self) -> T {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        var i = field.offset
        let end = field.offset + Swift.min(field.size, 8)
        while i < end {
            if i >= 0, i < count { value |= UInt64(self[i]) << shift }
            shift += 8
            i += 1
        }
        return T(truncatingIfNeeded: value)
    }

    /// Stores `value` little-endian into `field` (bytes beyond the array are dropped).
    @inlinable
    public mutating func setWireValue<T: FixedWidthInteger>(_ value: T, in field: WireField) {
        let v = UInt64(truncatingIfNeeded: value)
        for k in 0..<Swift.min(field.size, 8) {
            let i = field.offset + k
            if i >= 0, i < count { self[i] = UInt8(truncatingIfNeeded: v >> (UInt64(k) * 8)) }
        }
    }

    /// `string` as a NUL-padded C array of `length` bytes, truncated so that
    /// at least one NUL terminates it (Xen's `safe_strcpy`).
    public static func cString(_ string: String, length: Int) -> [UInt8] {
        guard length > 0 else { return [] }
        var bytes = Array(string.utf8.prefix(length - 1))
        bytes.append(contentsOf: repeatElement(0, count: length - bytes.count))
        return bytes
    }
}
