import CXen

/// A Xen hypercall number (`__HYPERVISOR_*`, xen.h). Closed: a number that
/// is not listed here is not a hypercall (the dispatcher answers -ENOSYS).
///
/// Raw values come from Xen's header through CKVM, which selects the
/// hypervisor-side (latest) interface, so `schedOp` is 29, not the legacy 6.
public enum HypercallNumber: CaseIterable, Hashable, Sendable, CustomStringConvertible {
    case setTrapTable, mmuUpdate, setGDT, stackSwitch, setCallbacks, fpuTaskswitch
    case schedOpCompat, platformOp, setDebugreg, getDebugreg, updateDescriptor
    case memoryOp, multicall, updateVAMapping, setTimerOp, eventChannelOpCompat
    case xenVersion, consoleIO, physdevOpCompat, grantTableOp, vmAssist
    case updateVAMappingOtherdomain, iret, vcpuOp, setSegmentBase, mmuextOp
    case xsmOp, nmiOp, schedOp, callbackOp, xenoprofOp, eventChannelOp, physdevOp
    case hvmOp, sysctl, domctl, kexecOp, tmemOp, argoOp, xenpmuOp, dmOp, hypfsOp

    /// The `__HYPERVISOR_*` value.
    public var rawValue: UInt32 {
        let value: Int32
        switch self {
        case .setTrapTable: value = __HYPERVISOR_set_trap_table
        case .mmuUpdate: value = __HYPERVISOR_mmu_update
        case .setGDT: value = __HYPERVISOR_set_gdt
        case .stackSwitch: value = __HYPERVISOR_stack_switch
        case .setCallbacks: value = __HYPERVISOR_set_callbacks
        case .fpuTaskswitch: value = __HYPERVISOR_fpu_taskswitch
        case .schedOpCompat: value = __HYPERVISOR_sched_op_compat
        case .platformOp: value = __HYPERVISOR_platform_op
        case .setDebugreg: value = __HYPERVISOR_set_debugreg
        case .getDebugreg: value = __HYPERVISOR_get_debugreg
        case .updateDescriptor: value = __HYPERVISOR_update_descriptor
        case .memoryOp: value = __HYPERVISOR_memory_op
        case .multicall: value = __HYPERVISOR_multicall
        case .updateVAMapping: value = __HYPERVISOR_update_va_mapping
        case .setTimerOp: value = __HYPERVISOR_set_timer_op
        case .eventChannelOpCompat: value = __HYPERVISOR_event_channel_op_compat
        case .xenVersion: value = __HYPERVISOR_xen_version
        case .consoleIO: value = __HYPERVISOR_console_io
        case .physdevOpCompat: value = __HYPERVISOR_physdev_op_compat
        case .grantTableOp: value = __HYPERVISOR_grant_table_op
        case .vmAssist: value = __HYPERVISOR_vm_assist
        case .updateVAMappingOtherdomain: value = __HYPERVISOR_update_va_mapping_otherdomain
        case .iret: value = __HYPERVISOR_iret
        case .vcpuOp: value = __HYPERVISOR_vcpu_op
        case .setSegmentBase: value = __HYPERVISOR_set_segment_base
        case .mmuextOp: value = __HYPERVISOR_mmuext_op
        case .xsmOp: value = __HYPERVISOR_xsm_op
        case .nmiOp: value = __HYPERVISOR_nmi_op
        case .schedOp: value = __HYPERVISOR_sched_op
        case .callbackOp: value = __HYPERVISOR_callback_op
        case .xenoprofOp: value = __HYPERVISOR_xenoprof_op
        case .eventChannelOp: value = __HYPERVISOR_event_channel_op
        case .physdevOp: value = __HYPERVISOR_physdev_op
        case .hvmOp: value = __HYPERVISOR_hvm_op
        case .sysctl: value = __HYPERVISOR_sysctl
        case .domctl: value = __HYPERVISOR_domctl
        case .kexecOp: value = __HYPERVISOR_kexec_op
        case .tmemOp: value = __HYPERVISOR_tmem_op
        case .argoOp: value = __HYPERVISOR_argo_op
        case .xenpmuOp: value = __HYPERVISOR_xenpmu_op
        case .dmOp: value = __HYPERVISOR_dm_op
        case .hypfsOp: value = __HYPERVISOR_hypfs_op
        }
        return UInt32(truncatingIfNeeded: value)
    }

    /// The hypercall with number `rawValue`, or nil (any 64-bit value may arrive in RAX).
    public init?(rawValue: UInt64) {
        guard let match = Self.byNumber[rawValue] else { return nil }
        self = match
    }

    private static let byNumber: [UInt64: HypercallNumber] = Dictionary(
        uniqueKeysWithValues: allCases.map { (UInt64($0.rawValue), $0) })

    public var description: String { "hypercall \(rawValue)" }
}
