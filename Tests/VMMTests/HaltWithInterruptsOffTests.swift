import Locking
import Testing
import XenABI
@testable import VMM

/// Xen's `hvm_vcpu_down` (xen/arch/x86/hvm/hvm.c) as SMPControl keeps it:
/// which vCPUs are down after a HLT with interrupts off, and when the
/// domain is left with none (SHUTDOWN_poweroff). The KVM half (a halted
/// vCPU found by HaltProbe's kick) is TestGuestBootTests.haltWithInterruptsOff.
@Suite("Halt with interrupts off (pure)")
struct HaltWithInterruptsOffTests {
    @Test("the last vCPU to halt with interrupts off powers the domain off; one never started counts as down; VCPUOP_up brings one back")
    func lastOnePowersOff() throws {
        let smp = SMPControl(vcpuCount: 3, wakeups: VCPUWakeups(vcpuCount: 3))
        smp.markStartedNatively(VCPUID(1))
        // vCPU 2 never started: down already, as Xen creates it with VPF_down.
        #expect(!smp.haltedWithInterruptsOff(VCPUID(1)), "vCPU 0 still runs")
        #expect(!smp.isUp(vcpu: VCPUID(1)) && smp.isParked(VCPUID(1)))
        #expect(smp.isUp(vcpu: VCPUID(0)))
        // VCPUOP_up from vCPU 0 clears VPF_down again.
        try smp.up(vcpu: VCPUID(1))
        #expect(smp.isUp(vcpu: VCPUID(1)) && !smp.isParked(VCPUID(1)))
        #expect(!smp.haltedWithInterruptsOff(VCPUID(0)), "vCPU 1 is up again")
        #expect(smp.haltedWithInterruptsOff(VCPUID(1)), "no vCPU left up")
    }

    @Test("one vCPU: its halt with interrupts off is the domain's end; an unknown vCPU id changes nothing")
    func single() {
        let smp = SMPControl(vcpuCount: 1, wakeups: VCPUWakeups(vcpuCount: 1))
        #expect(!smp.haltedWithInterruptsOff(VCPUID(7)))
        #expect(smp.isUp(vcpu: VCPUID(0)))
        #expect(smp.haltedWithInterruptsOff(VCPUID(0)))
    }

    @Test("the probe's kicks reach every vCPU that may be in KVM_RUN, not the parked ones")
    func kicks() {
        let smp = SMPControl(vcpuCount: 3, wakeups: VCPUWakeups(vcpuCount: 3))
        let kicked = Lock<[Int]>([])
        smp.setKicks((0..<3).map { i in { kicked.withLock { $0.append(i) } } })
        smp.markStartedNatively(VCPUID(1))
        _ = smp.haltedWithInterruptsOff(VCPUID(1))
        smp.kickRunnable()
        // vCPU 2 was never started: KVM may hold it for INIT/SIPI, a kick only re-enters.
        #expect(kicked.withLock { $0 } == [0, 2])
    }
}
