import GuestMemory
import XenABI

/// The VMM side of delivery: what Xen's `vcpu_mark_events_pending` and
/// `evtchn_check_pollers` do after the guest-memory bits are set.
///
/// Called without any event-channel lock held, possibly from any thread
/// (a vCPU sending an IPI, a backend thread, a timer).
public protocol EventChannelNotifier: Sendable {
    /// `vcpu_info.evtchn_upcall_pending` of `vcpu` went from 0 to 1 (or the
    /// upcall is asserted anyway): make the vCPU take its upcall. The VMM
    /// injects the per-vCPU vector (HVMOP_set_evtchn_upcall_vector) into the
    /// vCPU's local APIC if one is set, otherwise kicks the vCPU so that it
    /// injects the domain's HVM_PARAM_CALLBACK_IRQ vector on entry, and again
    /// on later entries while upcall_pending stays set; either way a vCPU
    /// halted or blocked in SCHEDOP_block wakes up (xen/arch/x86/hvm/irq.c
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
