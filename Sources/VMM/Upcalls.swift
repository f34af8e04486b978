import Dispatch
import EventChannels
import Hypercalls
import KVM
import Locking
import XenABI

/// Delivers event-channel upcalls the way Xen does for HVM/PVH guests
/// (xen/arch/x86/hvm/irq.c), in one of two modes per vCPU:
///
/// - **Per-vCPU vector** (HVMOP_set_evtchn_upcall_vector, what Linux uses):
///   raised in the vCPU's local APIC like Xen's `vlapic_set_irq`, here a
///   KVM_SIGNAL_MSI; the guest EOIs it. KVM wakes a vCPU halted in it. A
///   LAPIC that refuses it (software-disabled) makes the upcall owed
///   (`OwedUpcalls`): Xen's vlapic keeps the vector in IRR whatever the
///   SVR says, and Linux binds its vector before it enables its LAPIC.
/// - **HVM_PARAM_CALLBACK_IRQ vector** (type 2): Xen injects the vector
///   directly, with no LAPIC and no EOI, on every VM entry while the vCPU's
///   `evtchn_upcall_pending` is set and it can take interrupts
///   (`hvm_vcpu_has_pending_irq`): level-triggered. Only the vCPU's own
///   thread can queue an interrupt in KVM, so this side just kicks the vCPU
///   out of KVM_RUN (`hvm_assert_evtchn_irq` → `vcpu_kick`) and the vCPU's
///   `CallbackVectorDelivery` injects before the next entry.
///
/// Either way a vCPU sleeping in SCHEDOP_block is woken. A callback via GSI
/// or PCI INTx needs an IOAPIC or a PCI device, which PVH has neither of: no
/// upcall then (the guest still sees the pending bits when it looks).
final class UpcallInjector: EventChannelNotifier, @unchecked Sendable {
    // SAFETY (Sendable): VirtualMachine and VCPU.kick() are thread-safe; the
    // rest is Sendable.
    let vm: VirtualMachine
    let state: DomainState
    let metrics: DomainMetrics
    let wakeups: VCPUWakeups
    /// The vCPUs, to kick them out of KVM_RUN; set once they exist.
    private let vcpus = Lock<[VCPU]>([])
    /// The callback vector was asserted for these vCPUs since their threads
    /// last looked (`takeCallbackRequest`).
    private let callbackRequests = Lock<Set<VCPUID>>([])
    /// vCPUs whose refused upcall vector was already reported.
    private let refusalReported = Lock<Set<VCPUID>>([])
    private let report: @Sendable (String) -> Void
    /// Upcalls a local APIC refused, retried until it takes them.
    private let owed = Lock(OwedUpcalls())

    init(vm: VirtualMachine, state: DomainState, metrics: DomainMetrics, wakeups: VCPUWakeups,
         report: @escaping @Sendable (String) -> Void) {
        self.vm = vm
        self.state = state
        self.metrics = metrics
        self.wakeups = wakeups
        self.report = report
    }

    /// Sets the vCPUs to kick (index = vCPU id).
    func setVCPUs(_ v: [VCPU]) { vcpus.withLock { $0 = v } }

    func portBecamePending(_ port: EventChannelPort) { wakeups.portBecamePending(port) }

    func upcall(vcpu: VCPUID) {
        // A vCPU sleeping in SCHEDOP_block wakes for any event of its own.
        wakeups.wake(vcpu)
        switch UpcallRoute(ownVector: state.upcallVector(for: vcpu), callback: state.callbackVia) {
        case .localAPIC(let vector):
            // APIC ID = vCPU index (the MADT says so, and KVM's default).
            signalLocalAPIC(vcpu: vcpu, vector: vector)
            return
        case .none:
            return
        case .callbackVector:
            break
        }
        callbackRequests.withLock { _ = $0.insert(vcpu) }
        guard let target = vcpus.withLock({ Int(vcpu.rawValue) < $0.count ? $0[Int(vcpu.rawValue)] : nil }) else { return }
        // An event the vCPU raised for itself (an IPI or loopback send in a
        // hypercall) is seen before its next entry anyway: no kick, which
        // would cost an extra exit.
        if !target.isCurrentThread { target.kick() }
    }

    /// Whether the callback vector was asserted for `vcpu` since the last call.
    func takeCallbackRequest(_ vcpu: VCPUID) -> Bool {
        callbackRequests.withLock { $0.remove(vcpu) != nil }
    }

    /// Raises `vector` in `vcpu`'s local APIC; a refusal makes it owed.
    func signalLocalAPIC(vcpu: VCPUID, vector: UInt8) {
        do {
            if try vm.signalMSI(apicID: vcpu.rawValue, vector: vector) {
                DomainMetrics.bump(metrics.upcallsInjected)
                return
            }
            refused(vcpu, "vector 0x\(String(vector, radix: 16)) refused by its local APIC (software-disabled?); "
                    + "retried every millisecond until it takes it")
        } catch {
            refused(vcpu, "vector 0x\(String(vector, radix: 16)): \(error); retried")
        }
    }

    private func refused(_ vcpu: VCPUID, _ why: String) {
        DomainMetrics.bump(metrics.upcallsRefused)
        if refusalReported.withLock({ $0.insert(vcpu).inserted }) { report("\(vcpu): event upcall \(why)") }
        owed.withLock { o in
            guard o.owe(vcpu), !o.stopped, o.timer == nil else { return }
            let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "pvh-upcall-owed"))
            timer.schedule(deadline: .now() + OwedUpcalls.retryInterval, repeating: OwedUpcalls.retryInterval)
            timer.setEventHandler { [weak self] in self?.retryOwed() }
            timer.resume()
            o.timer = timer
        }
    }

    /// One retry of every owed upcall (on the retry timer's queue). A vCPU
    /// whose vector was taken, or which no longer has a vector, owes nothing
    /// more unless it was refused again meanwhile; the timer ends with the
    /// last debt.
    private func retryOwed() {
        let debts = owed.withLock { $0.debts }
        var settled: [VCPUID: UInt64] = [:]
        for (vcpu, generation) in debts {
            guard let vector = state.upcallVector(for: vcpu) else {
                settled[vcpu] = generation
                continue
            }
            if (try? vm.signalMSI(apicID: vcpu.rawValue, vector: vector)) == true {
                DomainMetrics.bump(metrics.upcallsInjected)
                DomainMetrics.bump(metrics.upcallsOwedDelivered)
                settled[vcpu] = generation
            }
        }
        owed.withLock { $0.settle(settled) }
    }

    /// The domain ended: no more retries.
    func stopRetrying() { owed.withLock { $0.stop() } }
}

/// Upcall vectors that a vCPU's local APIC refused, by vCPU, with a
/// generation so that a retry that succeeds does not clear a refusal that
/// came after it. KVM drops a fixed MSI to a software-disabled LAPIC
/// (KVM_SIGNAL_MSI returns 0), and the guest's later enable is a write the
/// in-kernel LAPIC takes without an exit, so pvh cannot learn when to signal
/// again: it retries on a timer, which runs only while something is owed.
struct OwedUpcalls: ~Copyable {
    /// How often owed upcalls are retried: about one timer tick of a guest.
    static let retryInterval = DispatchTimeInterval.milliseconds(1)
    private(set) var debts: [VCPUID: UInt64] = [:]
    private var generation: UInt64 = 0
    var timer: (any DispatchSourceTimer)?
    private(set) var stopped = false

    /// Records a refusal; returns whether retries should run.
    mutating func owe(_ vcpu: VCPUID) -> Bool {
        generation &+= 1
        debts[vcpu] = generation
        return !stopped
    }

    /// Clears the debts retried successfully (unless refused again since);
    /// the timer ends when nothing is owed.
    mutating func settle(_ settled: [VCPUID: UInt64]) {
        for (vcpu, generation) in settled where debts[vcpu] == generation { debts[vcpu] = nil }
        if debts.isEmpty || stopped { cancelTimer() }
    }

    mutating func stop() {
        stopped = true
        debts = [:]
        cancelTimer()
    }

    private mutating func cancelTimer() {
        timer?.cancel()
        timer = nil
    }
}

/// Which way an upcall goes (xen/arch/x86/hvm/irq.c hvm_assert_evtchn_irq):
/// the vCPU's own vector first, then the domain's callback vector; a GSI or
/// PCI INTx callback (or none) raises nothing on PVH.
enum UpcallRoute: Equatable {
    /// HVMOP_set_evtchn_upcall_vector: into the vCPU's LAPIC (`vlapic_set_irq`).
    case localAPIC(UInt8)
    /// HVM_PARAM_CALLBACK_IRQ type 2: the vCPU injects it before its next entry.
    case callbackVector
    /// Nothing to raise (the pending bits are there when the guest looks).
    case none

    init(ownVector: UInt8?, callback: HVMCallbackVia) {
        if let ownVector {
            self = .localAPIC(ownVector)
        } else if case .vector = callback {
            self = .callbackVector
        } else {
            self = .none
        }
    }
}

/// The HVM_PARAM_CALLBACK_IRQ vector on one vCPU, kept by that vCPU's
/// thread. Xen treats the vector as a level: while `evtchn_upcall_pending`
/// is set it is injected at every VM entry at which the vCPU can take
/// interrupts (xen/arch/x86/hvm/irq.c hvm_vcpu_has_pending_irq), with no
/// LAPIC involved and no EOI.
///
/// On KVM with the split irqchip the only way to inject a vector that
/// bypasses the LAPIC's IRR/ISR is the ExtINT path: KVM_INTERRUPT queues it
/// and KVM delivers it when RFLAGS.IF allows (waking a halted vCPU), provided
/// the LAPIC accepts ExtINT, which the VMM arranges by putting LVT0 in
/// virtual-wire mode at creation (`VCPU.setLocalAPICVirtualWire`). Direct
/// injection through KVM_SET_VCPU_EVENTS would ignore RFLAGS.IF, and an MSI
/// is dropped by a software-disabled LAPIC. To see the level again after a
/// delivery the VMM asks for an interrupt-window exit: KVM opens the window
/// only once the queued vector was taken and the guest can take another, and
/// the vCPU then looks at `evtchn_upcall_pending` again.
///
/// A guest that masked LVT0 with its LAPIC enabled cannot take ExtINT; it
/// gets the vector through its LAPIC as an edge instead (and must EOI it),
/// once per assertion.
struct CallbackVectorDelivery: Equatable {
    /// An ExtINT is queued in KVM and the window not yet open since.
    private(set) var queued = false

    /// What to do before entering the guest.
    enum Action: Equatable {
        /// Nothing to inject; the interrupt-window request is `requestWindow`.
        case none(requestWindow: Bool)
        /// Queue the vector as an ExtINT and request the window.
        case queueExternalInterrupt(UInt8)
        /// The LAPIC does not take ExtINT: raise the vector in it instead.
        case signalLocalAPIC(UInt8)
    }

    /// The decision before an entry. `vector` is the callback vector serving
    /// this vCPU (nil: none, or it has a vector of its own); `interruptsOpen`
    /// says whether it can take an interrupt now (RFLAGS.IF, no shadow);
    /// `acceptsExtINT` is asked only when a vector must be injected.
    mutating func beforeEntry(vector: UInt8?, upcallPending: Bool, asserted: Bool, interruptsOpen: Bool,
                              acceptsExtINT: () -> Bool) -> Action {
        guard let vector else {
            return .none(requestWindow: queued)
        }
        if queued { return .none(requestWindow: true) }
        guard upcallPending else { return .none(requestWindow: false) }
        // Not while the vCPU must not take it (the caller decides: Xen's
        // hvm_interrupt_blocked, narrowed to where the software backend
        // ignored IF for a queued vector, the kernel's SYSCALL entry on the
        // user's stack: Debian 6.12's double fault at init's first system
        // call). Wait for the window then.
        guard interruptsOpen else { return .none(requestWindow: true) }
        if acceptsExtINT() {
            queued = true
            return .queueExternalInterrupt(vector)
        }
        return asserted ? .signalLocalAPIC(vector) : .none(requestWindow: false)
    }

    /// KVM_EXIT_IRQ_WINDOW_OPEN: a queued ExtINT has been delivered.
    mutating func windowOpened() { queued = false }

    /// KVM_INTERRUPT found one already queued: keep waiting for the window.
    mutating func alreadyQueued() { queued = true }
}
