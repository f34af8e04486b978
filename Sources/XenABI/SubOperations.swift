import CXen

/// A hypercall's sub-operation: a closed set of the values Xen's header names.
/// `rawValue` comes from the header's constant; any other value is not one of these.
public protocol XenSubOperation: CaseIterable, Hashable, Sendable {
    /// The C constant's value.
    var rawValue: UInt32 { get }
}

extension XenSubOperation {
    /// The sub-operation numbered `rawValue`, or nil (a guest may pass any value).
    public init?(rawValue: UInt64) {
        guard let match = Self.allCases.first(where: { UInt64($0.rawValue) == rawValue }) else { return nil }
        self = match
    }
}

@inline(__always)
func xenConstant<T: BinaryInteger>(_ value: T) -> UInt32 { UInt32(truncatingIfNeeded: value) }

/// `XENVER_*` (version.h): the sub-operations of `xen_version` in Xen 4.17.
public enum XenVersionCommand: XenSubOperation {
    case version, extraversion, compileInfo, capabilities, changeset
    case platformParameters, getFeatures, pagesize, guestHandle, commandline, buildID
    public var rawValue: UInt32 {
        switch self {
        case .version: xenConstant(XENVER_version)
        case .extraversion: xenConstant(XENVER_extraversion)
        case .compileInfo: xenConstant(XENVER_compile_info)
        case .capabilities: xenConstant(XENVER_capabilities)
        case .changeset: xenConstant(XENVER_changeset)
        case .platformParameters: xenConstant(XENVER_platform_parameters)
        case .getFeatures: xenConstant(XENVER_get_features)
        case .pagesize: xenConstant(XENVER_pagesize)
        case .guestHandle: xenConstant(XENVER_guest_handle)
        case .commandline: xenConstant(XENVER_commandline)
        case .buildID: xenConstant(XENVER_build_id)
        }
    }
}

/// `CONSOLEIO_*` (xen.h).
public enum ConsoleIOCommand: XenSubOperation {
    case write, read
    public var rawValue: UInt32 {
        switch self {
        case .write: xenConstant(CONSOLEIO_write)
        case .read: xenConstant(CONSOLEIO_read)
        }
    }
}

/// `SCHEDOP_*` (sched.h).
public enum SchedOpCommand: XenSubOperation {
    case yield, block, shutdown, poll, remoteShutdown, shutdownCode, watchdog, pinOverride
    public var rawValue: UInt32 {
        switch self {
        case .yield: xenConstant(SCHEDOP_yield)
        case .block: xenConstant(SCHEDOP_block)
        case .shutdown: xenConstant(SCHEDOP_shutdown)
        case .poll: xenConstant(SCHEDOP_poll)
        case .remoteShutdown: xenConstant(SCHEDOP_remote_shutdown)
        case .shutdownCode: xenConstant(SCHEDOP_shutdown_code)
        case .watchdog: xenConstant(SCHEDOP_watchdog)
        case .pinOverride: xenConstant(SCHEDOP_pin_override)
        }
    }
}

/// `SHUTDOWN_*` (sched.h): why a domain stopped.
public enum ShutdownReason: XenSubOperation, CustomStringConvertible {
    case poweroff, reboot, suspend, crash, watchdog, softReset
    public var rawValue: UInt32 {
        switch self {
        case .poweroff: xenConstant(SHUTDOWN_poweroff)
        case .reboot: xenConstant(SHUTDOWN_reboot)
        case .suspend: xenConstant(SHUTDOWN_suspend)
        case .crash: xenConstant(SHUTDOWN_crash)
        case .watchdog: xenConstant(SHUTDOWN_watchdog)
        case .softReset: xenConstant(SHUTDOWN_soft_reset)
        }
    }
    public var description: String {
        switch self {
        case .poweroff: "poweroff"
        case .reboot: "reboot"
        case .suspend: "suspend"
        case .crash: "crash"
        case .watchdog: "watchdog"
        case .softReset: "soft_reset"
        }
    }
}

/// `XENMEM_*` (memory.h): the sub-operations of `memory_op`.
public enum MemoryOpCommand: XenSubOperation {
    case increaseReservation, decreaseReservation, maximumRAMPage, currentReservation
    case maximumReservation, machphysMFNList, populatePhysmap, addToPhysmap, memoryMap
    case machineMemoryMap, exchange, machphysMapping, setMemoryMap, maximumGPFN
    case removeFromPhysmap, setPodTarget, getPodTarget, getSharingFreedPages
    case getSharingSharedPages, pagingOp, accessOp, sharingOp, addToPhysmapBatch
    case claimPages, machphysCompatMFNList
    public var rawValue: UInt32 {
        switch self {
        case .increaseReservation: xenConstant(XENMEM_increase_reservation)
        case .decreaseReservation: xenConstant(XENMEM_decrease_reservation)
        case .maximumRAMPage: xenConstant(XENMEM_maximum_ram_page)
        case .currentReservation: xenConstant(XENMEM_current_reservation)
        case .maximumReservation: xenConstant(XENMEM_maximum_reservation)
        case .machphysMFNList: xenConstant(XENMEM_machphys_mfn_list)
        case .populatePhysmap: xenConstant(XENMEM_populate_physmap)
        case .addToPhysmap: xenConstant(XENMEM_add_to_physmap)
        case .memoryMap: xenConstant(XENMEM_memory_map)
        case .machineMemoryMap: xenConstant(XENMEM_machine_memory_map)
        case .exchange: xenConstant(XENMEM_exchange)
        case .machphysMapping: xenConstant(XENMEM_machphys_mapping)
        case .setMemoryMap: xenConstant(XENMEM_set_memory_map)
        case .maximumGPFN: xenConstant(XENMEM_maximum_gpfn)
        case .removeFromPhysmap: xenConstant(XENMEM_remove_from_physmap)
        case .setPodTarget: xenConstant(XENMEM_set_pod_target)
        case .getPodTarget: xenConstant(XENMEM_get_pod_target)
        case .getSharingFreedPages: xenConstant(XENMEM_get_sharing_freed_pages)
        case .getSharingSharedPages: xenConstant(XENMEM_get_sharing_shared_pages)
        case .pagingOp: xenConstant(XENMEM_paging_op)
        case .accessOp: xenConstant(XENMEM_access_op)
        case .sharingOp: xenConstant(XENMEM_sharing_op)
        case .addToPhysmapBatch: xenConstant(XENMEM_add_to_physmap_batch)
        case .claimPages: xenConstant(XENMEM_claim_pages)
        case .machphysCompatMFNList: xenConstant(XENMEM_machphys_compat_mfn_list)
        }
    }

    /// Xen splits `memory_op`'s command word: the low bits are the sub-op,
    /// the rest is a continuation's start extent. `MEMOP_EXTENT_SHIFT` is
    /// Xen-internal (xen/include/xen/hypercall.h), not in the public headers.
    public static let extentShift: UInt64 = 6
    /// `MEMOP_CMD_MASK`.
    public static let commandMask: UInt64 = (1 << extentShift) - 1
}

/// `XENMAPSPACE_*` (memory.h): what `XENMEM_add_to_physmap` maps.
public enum PhysmapSpace: XenSubOperation {
    case sharedInfo, grantTable, gmfn, gmfnRange, gmfnForeign, devMMIO
    public var rawValue: UInt32 {
        switch self {
        case .sharedInfo: xenConstant(XENMAPSPACE_shared_info)
        case .grantTable: xenConstant(XENMAPSPACE_grant_table)
        case .gmfn: xenConstant(XENMAPSPACE_gmfn)
        case .gmfnRange: xenConstant(XENMAPSPACE_gmfn_range)
        case .gmfnForeign: xenConstant(XENMAPSPACE_gmfn_foreign)
        case .devMMIO: xenConstant(XENMAPSPACE_dev_mmio)
        }
    }
}

/// `VCPUOP_*` (vcpu.h).
public enum VCPUOpCommand: XenSubOperation {
    case initialise, up, down, isUp, getRunstateInfo, registerRunstateMemoryArea
    case setPeriodicTimer, stopPeriodicTimer, setSingleshotTimer, stopSingleshotTimer
    case registerVCPUInfo, sendNMI, getPhysID, registerVCPUTimeMemoryArea
    public var rawValue: UInt32 {
        switch self {
        case .initialise: xenConstant(VCPUOP_initialise)
        case .up: xenConstant(VCPUOP_up)
        case .down: xenConstant(VCPUOP_down)
        case .isUp: xenConstant(VCPUOP_is_up)
        case .getRunstateInfo: xenConstant(VCPUOP_get_runstate_info)
        case .registerRunstateMemoryArea: xenConstant(VCPUOP_register_runstate_memory_area)
        case .setPeriodicTimer: xenConstant(VCPUOP_set_periodic_timer)
        case .stopPeriodicTimer: xenConstant(VCPUOP_stop_periodic_timer)
        case .setSingleshotTimer: xenConstant(VCPUOP_set_singleshot_timer)
        case .stopSingleshotTimer: xenConstant(VCPUOP_stop_singleshot_timer)
        case .registerVCPUInfo: xenConstant(VCPUOP_register_vcpu_info)
        case .sendNMI: xenConstant(VCPUOP_send_nmi)
        case .getPhysID: xenConstant(VCPUOP_get_physid)
        case .registerVCPUTimeMemoryArea: xenConstant(VCPUOP_register_vcpu_time_memory_area)
        }
    }
}

/// `EVTCHNOP_*` (event_channel.h): the sub-operations of `event_channel_op`.
public enum EventChannelOpCommand: XenSubOperation {
    case bindInterdomain, bindVIRQ, bindPIRQ, close, send, status, allocUnbound
    case bindIPI, bindVCPU, unmask, reset, initControl, expandArray, setPriority
    /// `EVTCHNOP_reset_cont`: Xen's own continuation of `reset`. The header
    /// hides it (`#ifdef __XEN__`), but do_event_channel_op accepts it from
    /// any caller, so a guest can pass it.
    case resetContinuation
    public var rawValue: UInt32 {
        switch self {
        case .bindInterdomain: xenConstant(EVTCHNOP_bind_interdomain)
        case .bindVIRQ: xenConstant(EVTCHNOP_bind_virq)
        case .bindPIRQ: xenConstant(EVTCHNOP_bind_pirq)
        case .close: xenConstant(EVTCHNOP_close)
        case .send: xenConstant(EVTCHNOP_send)
        case .status: xenConstant(EVTCHNOP_status)
        case .allocUnbound: xenConstant(EVTCHNOP_alloc_unbound)
        case .bindIPI: xenConstant(EVTCHNOP_bind_ipi)
        case .bindVCPU: xenConstant(EVTCHNOP_bind_vcpu)
        case .unmask: xenConstant(EVTCHNOP_unmask)
        case .reset: xenConstant(EVTCHNOP_reset)
        case .initControl: xenConstant(EVTCHNOP_init_control)
        case .expandArray: xenConstant(EVTCHNOP_expand_array)
        case .setPriority: xenConstant(EVTCHNOP_set_priority)
        case .resetContinuation: 14  // EVTCHNOP_reset_cont, xen/include/public/event_channel.h (__XEN__ only)
        }
    }
}

/// A virtual IRQ (`VIRQ_*`, xen.h): an event Xen itself raises, bound to a
/// port with EVTCHNOP_bind_virq. Open (a struct): any value below `count`
/// may be bound, named or not, as in Xen.
public struct VIRQ: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    init<T: BinaryInteger>(_ c: T) { rawValue = xenConstant(c) }

    /// `NR_VIRQS`: values at or above it are invalid (-EINVAL).
    public static let count = xenConstant(NR_VIRQS)
    public var isValid: Bool { rawValue < Self.count }

    public static let timer = VIRQ(VIRQ_TIMER)
    public static let debug = VIRQ(VIRQ_DEBUG)
    public static let console = VIRQ(VIRQ_CONSOLE)
    public static let domainException = VIRQ(VIRQ_DOM_EXC)
    public static let traceBuffer = VIRQ(VIRQ_TBUF)
    public static let debugger = VIRQ(VIRQ_DEBUGGER)
    public static let xenoprof = VIRQ(VIRQ_XENOPROF)
    public static let consoleRing = VIRQ(VIRQ_CON_RING)
    public static let pcpuState = VIRQ(VIRQ_PCPU_STATE)
    public static let memoryEvent = VIRQ(VIRQ_MEM_EVENT)
    public static let argo = VIRQ(VIRQ_ARGO)
    public static let lowMemory = VIRQ(VIRQ_ENOMEM)
    public static let xenPMU = VIRQ(VIRQ_XENPMU)

    /// Per-vCPU VIRQs (Xen 4.17 event_channel.c `virq_is_global` is false):
    /// each vCPU binds its own. Every other VIRQ is global: bound once, on
    /// vCPU 0, and may be re-targeted with EVTCHNOP_bind_vcpu. x86 has no
    /// per-vCPU `VIRQ_ARCH_*` (arch_virq_is_global is true).
    public var isPerVCPU: Bool { self == .timer || self == .debug || self == .xenoprof || self == .xenPMU }

    public var description: String { "VIRQ \(rawValue)" }
}

/// `EVTCHNSTAT_*` (event_channel.h): the state EVTCHNOP_status reports.
public enum EventChannelStatusCode: XenSubOperation {
    case closed, unbound, interdomain, pirq, virq, ipi
    public var rawValue: UInt32 {
        switch self {
        case .closed: xenConstant(EVTCHNSTAT_closed)
        case .unbound: xenConstant(EVTCHNSTAT_unbound)
        case .interdomain: xenConstant(EVTCHNSTAT_interdomain)
        case .pirq: xenConstant(EVTCHNSTAT_pirq)
        case .virq: xenConstant(EVTCHNSTAT_virq)
        case .ipi: xenConstant(EVTCHNSTAT_ipi)
        }
    }
}

/// `HVMOP_*` (hvm/hvm_op.h) of the current interface (the pre-4.9 device-model
/// ops 2...4 are not guest operations any more; they answer -ENOSYS).
public enum HVMOpCommand: XenSubOperation {
    case setParam, getParam
    case flushTLBs, pagetableDying, getTime, xentrace, setMemAccess, getMemAccess
    case getMemType, setEvtchnUpcallVector, guestRequestVMEvent, altp2m
    public var rawValue: UInt32 {
        switch self {
        case .setParam: xenConstant(HVMOP_set_param)
        case .getParam: xenConstant(HVMOP_get_param)
        case .flushTLBs: xenConstant(HVMOP_flush_tlbs)
        case .pagetableDying: xenConstant(HVMOP_pagetable_dying)
        case .getTime: xenConstant(HVMOP_get_time)
        case .xentrace: xenConstant(HVMOP_xentrace)
        case .setMemAccess: xenConstant(HVMOP_set_mem_access)
        case .getMemAccess: xenConstant(HVMOP_get_mem_access)
        case .getMemType: xenConstant(HVMOP_get_mem_type)
        case .setEvtchnUpcallVector: xenConstant(HVMOP_set_evtchn_upcall_vector)
        case .guestRequestVMEvent: xenConstant(HVMOP_guest_request_vm_event)
        case .altp2m: xenConstant(HVMOP_altp2m)
        }
    }
}

/// An HVM parameter index (`HVM_PARAM_*`, hvm/params.h). Open (a struct):
/// the index space is `0..<HVM_NR_PARAMS` and most indices only matter to a toolstack.
public struct HVMParam: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    init<T: BinaryInteger>(_ c: T) { rawValue = xenConstant(c) }

    /// `HVM_NR_PARAMS`: indices at or above this are invalid.
    public static let count = xenConstant(HVM_NR_PARAMS)
    /// True when the index names a slot (`< HVM_NR_PARAMS`).
    public var isValid: Bool { rawValue < Self.count }

    public static let callbackIRQ = HVMParam(HVM_PARAM_CALLBACK_IRQ)
    public static let storePFN = HVMParam(HVM_PARAM_STORE_PFN)
    public static let storeEvtchn = HVMParam(HVM_PARAM_STORE_EVTCHN)
    public static let pae = HVMParam(HVM_PARAM_PAE_ENABLED)
    public static let ioreqPFN = HVMParam(HVM_PARAM_IOREQ_PFN)
    public static let bufioreqPFN = HVMParam(HVM_PARAM_BUFIOREQ_PFN)
    public static let viridian = HVMParam(HVM_PARAM_VIRIDIAN)
    public static let timerMode = HVMParam(HVM_PARAM_TIMER_MODE)
    public static let hpetEnabled = HVMParam(HVM_PARAM_HPET_ENABLED)
    public static let identPT = HVMParam(HVM_PARAM_IDENT_PT)
    public static let dmDomain = HVMParam(HVM_PARAM_DM_DOMAIN)
    public static let acpiSState = HVMParam(HVM_PARAM_ACPI_S_STATE)
    public static let vm86TSS = HVMParam(HVM_PARAM_VM86_TSS)
    public static let vptAlign = HVMParam(HVM_PARAM_VPT_ALIGN)
    public static let consolePFN = HVMParam(HVM_PARAM_CONSOLE_PFN)
    public static let consoleEvtchn = HVMParam(HVM_PARAM_CONSOLE_EVTCHN)
    public static let acpiIOPortsLocation = HVMParam(HVM_PARAM_ACPI_IOPORTS_LOCATION)
    public static let memoryEventCR0 = HVMParam(HVM_PARAM_MEMORY_EVENT_CR0)
    public static let memoryEventCR3 = HVMParam(HVM_PARAM_MEMORY_EVENT_CR3)
    public static let memoryEventCR4 = HVMParam(HVM_PARAM_MEMORY_EVENT_CR4)
    public static let memoryEventINT3 = HVMParam(HVM_PARAM_MEMORY_EVENT_INT3)
    public static let nestedHVM = HVMParam(HVM_PARAM_NESTEDHVM)
    public static let memoryEventSingleStep = HVMParam(HVM_PARAM_MEMORY_EVENT_SINGLE_STEP)
    public static let bufioreqEvtchn = HVMParam(HVM_PARAM_BUFIOREQ_EVTCHN)
    public static let pagingRingPFN = HVMParam(HVM_PARAM_PAGING_RING_PFN)
    public static let monitorRingPFN = HVMParam(HVM_PARAM_MONITOR_RING_PFN)
    public static let sharingRingPFN = HVMParam(HVM_PARAM_SHARING_RING_PFN)
    public static let memoryEventMSR = HVMParam(HVM_PARAM_MEMORY_EVENT_MSR)
    public static let tripleFaultReason = HVMParam(HVM_PARAM_TRIPLE_FAULT_REASON)
    public static let ioreqServerPFN = HVMParam(HVM_PARAM_IOREQ_SERVER_PFN)
    public static let nrIoreqServerPages = HVMParam(HVM_PARAM_NR_IOREQ_SERVER_PAGES)
    public static let vmGenerationIDAddr = HVMParam(HVM_PARAM_VM_GENERATION_ID_ADDR)
    public static let altp2m = HVMParam(HVM_PARAM_ALTP2M)
    public static let x87FIPWidth = HVMParam(HVM_PARAM_X87_FIP_WIDTH)
    public static let vm86TSSSized = HVMParam(HVM_PARAM_VM86_TSS_SIZED)
    public static let mcaCap = HVMParam(HVM_PARAM_MCA_CAP)

    /// Parameters Xen marks deprecated (hvm/params.h, "meaning is undefined");
    /// both get and set answer -EINVAL (xen/arch/x86/hvm/hvm.c hvm_allow_{get,set}_param).
    public static let deprecated: Set<HVMParam> = [
        .pae, .dmDomain, .memoryEventCR0, .memoryEventCR3, .memoryEventCR4, .memoryEventINT3,
        .nestedHVM, .memoryEventSingleStep, .bufioreqEvtchn, .memoryEventMSR,
    ]

    public var description: String { "HVM_PARAM \(rawValue)" }
}

/// `HVM_PARAM_CALLBACK_IRQ` value encoding (hvm/params.h): type in bits 63:56.
public enum HVMCallbackVia: Hashable, Sendable {
    /// No callback registered (value 0).
    case none
    /// `HVM_PARAM_CALLBACK_TYPE_GSI`.
    case gsi(UInt32)
    /// `HVM_PARAM_CALLBACK_TYPE_PCI_INTX`: domain/bus/device/intx packed in the low bits.
    case pciINTx(UInt64)
    /// `HVM_PARAM_CALLBACK_TYPE_VECTOR`: a vector Xen injects itself, past
    /// the local APIC (no IRR/ISR, no EOI), while evtchn_upcall_pending is set.
    case vector(UInt8)
    /// Any other type byte.
    case unknown(UInt64)

    /// `HVM_PARAM_CALLBACK_IRQ_TYPE_MASK` is `0xFF << 56`; the header spells it with a
    /// function-like macro (`xen_mk_ullong`) that Swift cannot import.
    static let typeShift: UInt64 = 56
    static let typeMask: UInt64 = 0xFF << typeShift

    public init(parameterValue v: UInt64) {
        let type = (v & Self.typeMask) >> Self.typeShift
        switch type {
        case UInt64(HVM_PARAM_CALLBACK_TYPE_GSI): self = v == 0 ? .none : .gsi(UInt32(truncatingIfNeeded: v))
        case UInt64(HVM_PARAM_CALLBACK_TYPE_PCI_INTX): self = .pciINTx(v & ~Self.typeMask)
        case UInt64(HVM_PARAM_CALLBACK_TYPE_VECTOR): self = .vector(UInt8(truncatingIfNeeded: v))
        default: self = .unknown(v)
        }
    }
}
