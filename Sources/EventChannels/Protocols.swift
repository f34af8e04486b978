import GuestMemory
import XenABI

/// Where the guest keeps the 2-level event state: shared_info (pending and
/// mask bitmaps, legacy vcpu_info slots) and each vCPU's vcpu_info (selector,
/// upcall-pending flag). The hypercall layer's `DomainState` provides it.
public protocol SharedInfoLocator: Sendable {
    /// The guest frame shared_info is mapped at (XENMEM_add_to_physmap), if any.
    var sharedInfoFrame: GuestFrameNumber? { get }
    /// Whether shared_info and vcpu_info use the 32-bit ("compat") layout.
    var sharedInfoIs32Bit: Bool { get }
    /// The vcpu_info `vcpu` registered with VCPUOP_register_vcpu_info, if any.
    func registeredVCPUInfo(for vcpu: VCPUID) -> GuestPhysicalAddress?
}

/// The VMM side of delivery: what Xen's `vcpu_mark_events_pending` and
/// `evtchn_check_pollers` do after the guest-memory bits are set.
///
/// Called without any event-channel lock held, possibly from any thread
/// (a vCPU sending an IPI, a backend thread, a timer).
public protocol EventChannelNotifier: Sendable {
    /// `vcpu_info.evtchn_upcall_pending` of `vcpu` went from 0 to 1: make the
    /// vCPU take its upcall. The VMM injects the per-vCPU vector
    /// (HVMOP_set_evtchn_upcall_vector) into the vCPU's local APIC if one is
    /// set, otherwise kicks the vCPU so that it injects the domain's
    /// HVM_PARAM_CALLBACK_IRQ vector on entry; either way a vCPU halted or
    /// blocked in SCHEDOP_block wakes up (xen/arch/x86/hvm/irq.c
    /// hvm_assert_evtchn_irq, hvm_vcpu_has_pending_irq).
    func upcall(vcpu: VCPUID)
    /// `port`'s pending bit went from 0 to 1, masked or not: wake any vCPU in
    /// SCHEDOP_poll on it (xen/common/event_channel.c evtchn_check_pollers).
    /// The default does nothing.
    func portBecamePending(_ port: EventChannelPort)
}

extension EventChannelNotifier {
    public func portBecamePending(_ port: EventChannelPort) {}
}

/// A backend in the VMM at the other end of an interdomain channel. The VMM
/// plays the backend domain (domain 0) for every device; each backend port
/// has one peer that hears the guest's notifications.
public protocol EventChannelPeer: Sendable {
    /// The guest sent on the channel whose backend end is `port` (or the
    /// channel was just connected: Xen conservatively marks the binding
    /// side's port pending, event_channel.c evtchn_bind_interdomain).
    ///
    /// Called on the sending thread (a guest vCPU inside EVTCHNOP_send, or
    /// the thread binding the channel) after the table's lock is released:
    /// it must only schedule the backend's work and return, as the device
    /// runtime's `BackendChannel` does.
    func notify(_ port: EventChannelPort)
}

/// What a port is bound to: Xen's `ECS_*` state and its payload
/// (xen/include/xen/sched.h struct evtchn).
public enum EventChannelBinding: Hashable, Sendable {
    /// `ECS_FREE`.
    case free
    /// `ECS_RESERVED`: port 0.
    case reserved
    /// `ECS_UNBOUND`: waiting for `remote` to bind.
    case unbound(remote: DomainID)
    /// `ECS_INTERDOMAIN`: connected to `remotePort` of `remote`.
    case interdomain(remote: DomainID, remotePort: EventChannelPort)
    /// `ECS_VIRQ`.
    case virq(VIRQ)
    /// `ECS_IPI`.
    case ipi

    /// Whether events can be set pending on it (Xen's `evtchn_usable`: state > ECS_RESERVED).
    var isUsable: Bool {
        switch self {
        case .free, .reserved: false
        default: true
        }
    }
}

/// What EVTCHNOP_status reports for a port.
public struct EventChannelStatus: Hashable, Sendable {
    public var binding: EventChannelBinding
    /// The vCPU notified (`notify_vcpu_id`).
    public var vcpu: VCPUID
    public init(binding: EventChannelBinding, vcpu: VCPUID) {
        self.binding = binding
        self.vcpu = vcpu
    }
    /// `EVTCHNSTAT_*`: free and reserved ports are both "closed".
    public var code: EventChannelStatusCode {
        switch binding {
        case .free, .reserved: .closed
        case .unbound: .unbound
        case .interdomain: .interdomain
        case .virq: .virq
        case .ipi: .ipi
        }
    }
}
