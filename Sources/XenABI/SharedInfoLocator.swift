import GuestMemory

/// Where a domain's shared_info and each vCPU's vcpu_info are in guest
/// memory: what the 2-level event channels (pending/mask bitmaps, selector,
/// upcall flag), the PV clock (vcpu_time_info) and the hypercalls that touch
/// vcpu_info all need. The hypercall layer's `DomainState` provides it.
public protocol SharedInfoLocator: Sendable {
    /// The guest frame shared_info is mapped at (XENMEM_add_to_physmap), if any.
    var sharedInfoFrame: GuestFrameNumber? { get }
    /// Whether shared_info and vcpu_info use the 32-bit ("compat") layout.
    var sharedInfoIs32Bit: Bool { get }
    /// The vcpu_info `vcpu` registered with VCPUOP_register_vcpu_info, if any.
    func registeredVCPUInfo(for vcpu: VCPUID) -> GuestPhysicalAddress?
}

extension SharedInfoLocator {
    /// Where `vcpu`'s vcpu_info is now (`VCPUInfoPlacement.address`).
    public func vcpuInfoAddress(for vcpu: VCPUID) -> GuestPhysicalAddress? {
        VCPUInfoPlacement.address(of: vcpu, registered: registeredVCPUInfo(for: vcpu),
                                  sharedInfo: sharedInfoFrame?.address)
    }
}

/// The one rule for where a vCPU's vcpu_info is, as Xen keeps `v->vcpu_info`:
/// the area it registered (VCPUOP_register_vcpu_info), else its legacy slot
/// `shared_info.vcpu_info[vcpu]` for vCPUs below XEN_LEGACY_MAX_VCPUS (32;
/// xen/common/domain.c vcpu_info_reset), else none: Xen points such a vCPU
/// at a dummy vcpu_info, so its events and time updates go nowhere until it
/// registers one.
public enum VCPUInfoPlacement {
    public static func address(of vcpu: VCPUID, registered: GuestPhysicalAddress?,
                               sharedInfo: GuestPhysicalAddress?) -> GuestPhysicalAddress? {
        if let registered { return registered }
        return legacySlot(of: vcpu, sharedInfo: sharedInfo)
    }

    /// Whether `vcpu` has a slot in shared_info (below XEN_LEGACY_MAX_VCPUS).
    public static func hasLegacySlot(_ vcpu: VCPUID) -> Bool {
        Int(vcpu.rawValue) < XenWire.SharedInfo.legacyMaxVCPUs
    }

    /// `shared_info.vcpu_info[vcpu]`, for vCPUs below XEN_LEGACY_MAX_VCPUS.
    /// The slot is at the same offset and of the same size in both layouts.
    public static func legacySlot(of vcpu: VCPUID, sharedInfo: GuestPhysicalAddress?) -> GuestPhysicalAddress? {
        guard let sharedInfo, hasLegacySlot(vcpu) else { return nil }
        return sharedInfo.advanced(by: UInt64(XenWire.SharedInfo.vcpuInfo.offset + Int(vcpu.rawValue) * XenWire.VCPUInfo.size))
    }
}
