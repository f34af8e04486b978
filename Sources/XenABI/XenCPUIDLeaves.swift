import CXen

/// One CPUID leaf's answer. `significantIndex` says whether `index` (ECX on
/// input) selects the answer (KVM: `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`).
public struct CPUIDLeafValue: Hashable, Sendable, CustomStringConvertible {
    public var function: UInt32
    public var index: UInt32
    public var significantIndex: Bool
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    public init(function: UInt32, index: UInt32 = 0, significantIndex: Bool = false,
                eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.significantIndex = significantIndex
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    public var description: String {
        func h(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
        return "cpuid(\(h(function)), \(index)) = \(h(eax)) \(h(ebx)) \(h(ecx)) \(h(edx))"
    }
}

/// Timekeeping facts for the Xen time leaf (0x40000003).
public struct XenCPUIDTime: Hashable, Sendable {
    /// Guest TSC frequency in kHz (sub-leaf 0 ECX).
    public var tscKHz: UInt32
    /// Host TSC is invariant/reliable (sub-leaf 0 EAX bit 1).
    public var tscReliable: Bool
    /// RDTSCP available to the guest (sub-leaf 0 EAX bit 2).
    public var rdtscp: Bool
    /// Xen `tsc_mode` (sub-leaf 0 EBX): 0 default; we never emulate RDTSC.
    public var tscMode: UInt32
    /// Migration count (sub-leaf 0 EDX).
    public var incarnation: UInt32
    /// TSC offset (sub-leaf 1 EAX/EBX), Xen's `vtsc_offset` when TSC is not emulated.
    public var tscOffset: UInt64
    /// Host (physical) TSC frequency in kHz (sub-leaf 2 EAX).
    public var hostTSCKHz: UInt32

    public init(tscKHz: UInt32, tscReliable: Bool = true, rdtscp: Bool = true, tscMode: UInt32 = 0,
                incarnation: UInt32 = 0, tscOffset: UInt64 = 0, hostTSCKHz: UInt32? = nil) {
        self.tscKHz = tscKHz
        self.tscReliable = tscReliable
        self.rdtscp = rdtscp
        self.tscMode = tscMode
        self.incarnation = incarnation
        self.tscOffset = tscOffset
        self.hostTSCKHz = hostTSCKHz ?? tscKHz
    }

    /// The pvclock scale for TSC ticks → ns at `tscKHz`: ns = ((ticks << shift) * mul) >> 32
    /// (negative shift shifts right), `mul` in [2^31, 2^32). Same fixed-point
    /// form as Xen's `set_time_scale` (xen/arch/x86/time.c) and vcpu_time_info.
    public var scale: (mul: UInt32, shift: Int8) { Self.timeScale(hz: UInt64(tscKHz) * 1000) }

    static func timeScale(hz: UInt64) -> (mul: UInt32, shift: Int8) {
        let nsPerSecond: UInt64 = 1_000_000_000
        guard hz > 0 else { return (0, 0) }
        var ticks = hz
        var shift = 0
        while ticks > 2 * nsPerSecond { ticks >>= 1; shift -= 1 }
        while ticks <= nsPerSecond { ticks <<= 1; shift += 1 }
        // ticks in (1e9, 2e9], so (1e9 << 32) / ticks < 2^32.
        return (UInt32(truncatingIfNeeded: (nsPerSecond << 32) / ticks), Int8(truncatingIfNeeded: shift))
    }
}

/// Flags of the HVM leaf (0x40000004 EAX), `XEN_HVM_CPUID_*` (arch-x86/cpuid.h).
public struct XenHVMCPUIDFeatures: OptionSet, Hashable, Sendable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let apicAccessVirt = XenHVMCPUIDFeatures(rawValue: XEN_HVM_CPUID_APIC_ACCESS_VIRT)
    public static let x2apicVirt = XenHVMCPUIDFeatures(rawValue: XEN_HVM_CPUID_X2APIC_VIRT)
    public static let iommuMappings = XenHVMCPUIDFeatures(rawValue: XEN_HVM_CPUID_IOMMU_MAPPINGS)
    public static let vcpuIDPresent = XenHVMCPUIDFeatures(rawValue: XEN_HVM_CPUID_VCPU_ID_PRESENT)
    public static let domIDPresent = XenHVMCPUIDFeatures(rawValue: XEN_HVM_CPUID_DOMID_PRESENT)
    public static let extDestID = XenHVMCPUIDFeatures(rawValue: XEN_HVM_CPUID_EXT_DEST_ID)
    public static let upcallVector = XenHVMCPUIDFeatures(rawValue: XEN_HVM_CPUID_UPCALL_VECTOR)

    /// Our default. Xen 4.17 (xen/arch/x86/traps.c cpuid_hypervisor_leaves) always sets
    /// IOMMU_MAPPINGS, VCPU_ID_PRESENT, DOMID_PRESENT and UPCALL_VECTOR, and the
    /// APIC bits when the hardware virtualises the APIC. We leave out the APIC
    /// bits (hardware-dependent hints). UPCALL_VECTOR tells the guest that
    /// HVMOP_set_evtchn_upcall_vector works: Linux then takes events through a
    /// per-vCPU LAPIC vector (and EOIs it) instead of the domain-wide
    /// HVM_PARAM_CALLBACK_IRQ vector. IOMMU_MAPPINGS only tells the guest it
    /// need not bounce-buffer grant-mapped DMA, which holds with no
    /// passthrough devices.
    public static let pvhDefault: XenHVMCPUIDFeatures = [.iommuMappings, .vcpuIDPresent, .domIDPresent, .upcallVector]
}

/// Xen's hypervisor CPUID leaves at 0x40000000 (arch-x86/cpuid.h,
/// xen/arch/x86/traps.c cpuid_hypervisor_leaves). Leaf 4 differs per vCPU (EBX
/// is the vCPU id), so every vCPU gets its own table.
public enum XenCPUIDLeaves {
    /// `XEN_CPUID_FIRST_LEAF`.
    public static let base = UInt32(XEN_CPUID_FIRST_LEAF)
    /// Highest leaf (base + `XEN_CPUID_MAX_NUM_LEAVES`), Xen's default limit.
    public static let last = base + UInt32(XEN_CPUID_MAX_NUM_LEAVES)
    /// MSR the guest writes a page address to for the hypercall page (leaf 2 EBX).
    public static let hypercallPageMSR: UInt32 = base

    /// The leaves vCPU `vcpu` of domain `domain` sees.
    public static func make(vcpu: VCPUID, domain: DomainID, version: XenVersionInfo = .xen417,
                            time: XenCPUIDTime,
                            hvmFeatures: XenHVMCPUIDFeatures = .pvhDefault) -> [CPUIDLeafValue] {
        let scale = time.scale
        var hvm = hvmFeatures
        hvm.insert([.vcpuIDPresent, .domIDPresent])
        return [
            CPUIDLeafValue(function: base, eax: last, ebx: UInt32(truncatingIfNeeded: XEN_CPUID_SIGNATURE_EBX),
                           ecx: UInt32(truncatingIfNeeded: XEN_CPUID_SIGNATURE_ECX),
                           edx: UInt32(truncatingIfNeeded: XEN_CPUID_SIGNATURE_EDX)),
            CPUIDLeafValue(function: base + 1, eax: version.packed),
            // One hypercall page, installed by writing its address to MSR base.
            CPUIDLeafValue(function: base + 2, eax: 1, ebx: hypercallPageMSR),
            CPUIDLeafValue(function: base + 3, index: 0, significantIndex: true,
                           eax: (time.tscReliable ? 1 << 1 : 0) | (time.rdtscp ? 1 << 2 : 0),
                           ebx: time.tscMode, ecx: time.tscKHz, edx: time.incarnation),
            CPUIDLeafValue(function: base + 3, index: 1, significantIndex: true,
                           eax: UInt32(truncatingIfNeeded: time.tscOffset),
                           ebx: UInt32(truncatingIfNeeded: time.tscOffset >> 32),
                           ecx: scale.mul, edx: UInt32(bitPattern: Int32(scale.shift))),
            CPUIDLeafValue(function: base + 3, index: 2, significantIndex: true, eax: time.hostTSCKHz),
            CPUIDLeafValue(function: base + 4, index: 0, significantIndex: true,
                           eax: hvm.rawValue, ebx: vcpu.rawValue, ecx: UInt32(domain.rawValue)),
            // Leaf 5 (PV-specific parameters) is all zeroes for HVM guests.
            CPUIDLeafValue(function: base + 5, index: 0, significantIndex: true),
        ]
    }

    /// The tables of vCPUs `0..<vcpuCount`, indexed by vCPU id.
    public static func make(vcpuCount: Int, domain: DomainID, version: XenVersionInfo = .xen417,
                            time: XenCPUIDTime,
                            hvmFeatures: XenHVMCPUIDFeatures = .pvhDefault) -> [[CPUIDLeafValue]] {
        (0..<max(0, vcpuCount)).map {
            make(vcpu: VCPUID(UInt32(truncatingIfNeeded: $0)), domain: domain, version: version,
                 time: time, hvmFeatures: hvmFeatures)
        }
    }
}
