import Dispatch
import Foundation

/// Finds vCPUs halted with interrupts off. Xen sees every HLT (`hvm_hlt`,
/// xen/arch/x86/hvm/hvm.c) and takes a vCPU that halts with RFLAGS.IF
/// clear and no event pending as going down, powering the domain off when
/// none is left. With the in-kernel LAPIC, KVM handles HLT inside KVM_RUN
/// and never exits for it, so such a guest would sit there for ever; this
/// thread kicks the running vCPUs every `interval`, and each vCPU's thread
/// then asks KVM whether it is still halted (`VCPURunner`: the check needs
/// the vCPU's own ioctls). A kick costs one exit, about 15 µs on the
/// software backend: 0.002 % of a vCPU at one a second.
final class HaltProbe: Sendable {
    /// How often the running vCPUs are looked at: also how long a guest
    /// halted for good runs on before it is powered off.
    static let interval: Duration = .seconds(1)

    private let smp: SMPControl
    private let lifecycle: DomainLifecycle
    private let wake = DispatchSemaphore(value: 0)

    init(smp: SMPControl, lifecycle: DomainLifecycle) {
        self.smp = smp
        self.lifecycle = lifecycle
        let wake = self.wake
        lifecycle.onStop { wake.signal() }
    }

    /// Runs on its own thread until the domain ends; `exited` is signalled last.
    func start(exited: DispatchSemaphore) {
        let nanoseconds = Int(Self.interval.components.seconds) * 1_000_000_000
            + Int(Self.interval.components.attoseconds / 1_000_000_000)
        let thread = Thread { [self] in
            while lifecycle.exit == nil {
                // Woken early only by the domain's end.
                if wake.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .success { continue }
                smp.kickRunnable()
            }
            exited.signal()
        }
        thread.name = "pvh-haltprobe"
        thread.start()
    }
}
