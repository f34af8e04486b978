import EventChannels
import Hypercalls
import KVM
import XenABI

/// Delivers event-channel upcalls the way Xen does for HVM/PVH guests: the
/// vCPU's own vector (HVMOP_set_evtchn_upcall_vector) if it set one, else the
/// domain's HVM_PARAM_CALLBACK_IRQ vector, raised in the target vCPU's local
/// APIC (Xen: `hvm_assert_evtchn_irq`). KVM_SIGNAL_MSI reaches the in-kernel
/// LAPIC and wakes a vCPU halted in it. A callback via GSI or PCI INTx needs
/// an IOAPIC or a PCI device, which PVH has neither of: no upcall then (the
/// guest still sees the pending bits when it looks).
final class UpcallInjector: EventChannelNotifier, @unchecked Sendable {
    // SAFETY (Sendable): VirtualMachine is thread-safe; DomainState is Sendable.
    let vm: VirtualMachine
    let state: DomainState
    let metrics: DomainMetrics
    let wakeups: VCPUWakeups

    init(vm: VirtualMachine, state: DomainState, metrics: DomainMetrics, wakeups: VCPUWakeups) {
        self.vm = vm
        self.state = state
        self.metrics = metrics
        self.wakeups = wakeups
    }

    func portBecamePending(_ port: EventChannelPort) { wakeups.portBecamePending(port) }

    func upcall(vcpu: VCPUID) {
        // A vCPU sleeping in SCHEDOP_block wakes for any event of its own.
        wakeups.wake(vcpu)
        let vector: UInt8
        if let own = state.upcallVector(for: vcpu) {
            vector = own
        } else if case .vector(let v) = state.callbackVia {
            vector = v
        } else {
            return
        }
        // APIC ID = vCPU index (the MADT says so, and KVM's default).
        if (try? vm.signalMSI(apicID: vcpu.rawValue, vector: vector)) != nil {
            DomainMetrics.bump(metrics.upcallsInjected)
        }
    }
}
