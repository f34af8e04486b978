import CXen

/// What `xen_version` and CPUID leaf 0x40000001 tell the guest about "Xen".
public struct XenVersionInfo: Hashable, Sendable {
    /// `XENVER_version` bits 31:16.
    public var major: UInt16
    /// `XENVER_version` bits 15:0.
    public var minor: UInt16
    /// `XENVER_extraversion` (at most `XEN_EXTRAVERSION_LEN - 1` bytes are reported).
    public var extraversion: String
    /// `XENVER_compile_info` fields.
    public var compiler: String
    public var compileBy: String
    public var compileDomain: String
    public var compileDate: String
    /// `XENVER_capabilities`: the guest ABIs "this Xen" runs.
    public var capabilities: String
    /// `XENVER_changeset`.
    public var changeset: String

    public init(major: UInt16, minor: UInt16, extraversion: String, compiler: String = "swift",
                compileBy: String = "pvh", compileDomain: String = "", compileDate: String = "",
                capabilities: String = XenVersionInfo.hvmCapabilities, changeset: String = "unavailable") {
        self.major = major
        self.minor = minor
        self.extraversion = extraversion
        self.compiler = compiler
        self.compileBy = compileBy
        self.compileDomain = compileDomain
        self.compileDate = compileDate
        self.capabilities = capabilities
        self.changeset = changeset
    }

    /// `XENVER_version`'s value: major:minor as 16:16.
    public var packed: UInt32 { UInt32(major) << 16 | UInt32(minor) }

    /// The capabilities an x86 Xen with HVM support reports (Xen builds the
    /// string in xen/arch/x86/setup.c arch_get_xen_caps; PV entries omitted,
    /// since only HVM/PVH guests run here).
    public static let hvmCapabilities = "hvm-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p"

    /// Xen 4.17, the interface version of the headers we build against (libxen-dev 4.17).
    public static let xen417 = XenVersionInfo(major: 4, minor: 17, extraversion: ".0-pvh")
}

/// The `XENVER_get_features` submap 0 bits (`XENFEAT_*`, features.h).
public struct XenFeatures: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    init<T: BinaryInteger>(bit: T) { rawValue = 1 << UInt32(truncatingIfNeeded: bit) }

    public static let writablePageTables = XenFeatures(bit: XENFEAT_writable_page_tables)
    public static let writableDescriptorTables = XenFeatures(bit: XENFEAT_writable_descriptor_tables)
    public static let autoTranslatedPhysmap = XenFeatures(bit: XENFEAT_auto_translated_physmap)
    public static let supervisorModeKernel = XenFeatures(bit: XENFEAT_supervisor_mode_kernel)
    public static let paePgdirAbove4GB = XenFeatures(bit: XENFEAT_pae_pgdir_above_4gb)
    public static let mmuPTUpdatePreserveAD = XenFeatures(bit: XENFEAT_mmu_pt_update_preserve_ad)
    public static let highmemAssist = XenFeatures(bit: XENFEAT_highmem_assist)
    public static let gnttabMapAvailBits = XenFeatures(bit: XENFEAT_gnttab_map_avail_bits)
    public static let hvmCallbackVector = XenFeatures(bit: XENFEAT_hvm_callback_vector)
    public static let hvmSafePVClock = XenFeatures(bit: XENFEAT_hvm_safe_pvclock)
    public static let hvmPIRQs = XenFeatures(bit: XENFEAT_hvm_pirqs)
    public static let dom0 = XenFeatures(bit: XENFEAT_dom0)
    public static let memoryOpVnodeSupported = XenFeatures(bit: XENFEAT_memory_op_vnode_supported)
    public static let linuxRSDPUnrestricted = XenFeatures(bit: XENFEAT_linux_rsdp_unrestricted)
    public static let notDirectMapped = XenFeatures(bit: XENFEAT_not_direct_mapped)
    public static let directMapped = XenFeatures(bit: XENFEAT_direct_mapped)

    /// What Xen 4.17 reports to a PVH domU (xen/common/kernel.c, XENVER_get_features):
    /// vnode memory ops; writable page tables and auto-translated physmap
    /// (paging_mode_translate); hvm_safe_pvclock and hvm_callback_vector (not PV);
    /// no hvm_pirqs (PVH has no emulated PIRQs); not_direct_mapped.
    public static let xenPVHDomU: XenFeatures = [
        .memoryOpVnodeSupported, .writablePageTables, .autoTranslatedPhysmap,
        .hvmSafePVClock, .hvmCallbackVector, .notDirectMapped,
    ]

    /// What we advertise by default: the part of `xenPVHDomU` we can honour now.
    /// - Kept: writable_page_tables / auto_translated_physmap (true of any HVM
    ///   guest: it owns its page tables and sees guest-physical frames),
    ///   hvm_callback_vector (Linux PVH requires it; the vector is stored from
    ///   HVM_PARAM_CALLBACK_IRQ and delivered by the event-channel layer),
    ///   not_direct_mapped (informational: gfn != mfn).
    /// - Dropped until implemented: memory_op_vnode_supported (XENMEM_get_vnumainfo
    ///   answers -ENOSYS), hvm_safe_pvclock (makes Linux use the vcpu_time_info
    ///   pvclock and runstate areas, which nobody fills yet; add it when they do).
    public static let pvhDefault: XenFeatures = [
        .writablePageTables, .autoTranslatedPhysmap, .hvmCallbackVector, .notDirectMapped,
    ]
}
