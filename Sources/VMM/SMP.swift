import Hypercalls
import KVM
import Locking
import XenABI

/// Secondary vCPUs the Xen way (VCPUOP_initialise / up / down / is_up,
/// xen/common/domain.c): vCPU 0 starts initialised and up; another vCPU gets
/// its register state from VCPUOP_initialise and runs after VCPUOP_up. Its
/// thread sits in KVM_RUN (where the in-kernel LAPIC would also start it on
/// INIT/SIPI, the native path); `up` kicks it out, and the thread loads the
/// state itself (vCPU ioctls belong to the vCPU's thread) and runs.
final class SMPControl: VCPULifecycle, @unchecked Sendable {
    // SAFETY (Sendable): `kicks` is set once before any vCPU runs.
    private struct Slot {
        var initialised = false
        var up = false
        var pendingBoot: VCPUBootState?
    }
    private let slots: Lock<[Slot]>
    private let wakeups: VCPUWakeups
    private var kicks: [@Sendable () -> Void] = []

    init(vcpuCount: Int, wakeups: VCPUWakeups) {
        var s = [Slot](repeating: Slot(), count: max(vcpuCount, 1))
        s[0] = Slot(initialised: true, up: true)
        slots = Lock(s)
        self.wakeups = wakeups
    }

    /// How to interrupt each vCPU's KVM_RUN (set before the vCPUs start).
    func setKicks(_ kicks: [@Sendable () -> Void]) { self.kicks = kicks }

    private func index(_ vcpu: VCPUID) throws(XenErrno) -> Int {
        let i = Int(vcpu.rawValue)
        guard i < slots.withLock({ $0.count }) else { throw .enoent }
        return i
    }

    func isInitialised(vcpu: VCPUID) -> Bool {
        guard let i = try? index(vcpu) else { return false }
        return slots.withLock { $0[i].initialised }
    }

    func initialise(vcpu: VCPUID, state: VCPUBootState) throws(XenErrno) {
        let i = try index(vcpu)
        try slots.withLock { (s: inout [Slot]) throws(XenErrno) in
            guard !s[i].initialised else { throw .eexist }
            s[i].initialised = true
            s[i].pendingBoot = state
        }
    }

    func up(vcpu: VCPUID) throws(XenErrno) {
        let i = try index(vcpu)
        let wasUp = try slots.withLock { (s: inout [Slot]) throws(XenErrno) -> Bool in
            guard s[i].initialised else { throw .einval }
            defer { s[i].up = true }
            return s[i].up
        }
        guard !wasUp else { return }
        wakeups.wake(vcpu)
        if i < kicks.count { kicks[i]() }
    }

    func down(vcpu: VCPUID) throws(XenErrno) {
        let i = try index(vcpu)
        slots.withLock { $0[i].up = false }
        if i < kicks.count { kicks[i]() }
    }

    /// Runner side: the vCPU halted with interrupts off, Xen's
    /// `hvm_vcpu_down` (xen/arch/x86/hvm/hvm.c): it is down from now on
    /// (VPF_down; VCPUOP_up brings it back), and true when no vCPU of the
    /// domain is up any more, for which Xen shuts the domain down with
    /// SHUTDOWN_poweroff ("All CPUs offline -- powering off"). A vCPU never
    /// started counts as down, as a Xen vCPU created with VPF_down does.
    func haltedWithInterruptsOff(_ vcpu: VCPUID) -> Bool {
        guard let i = try? index(vcpu) else { return false }
        return slots.withLock { s in
            s[i].initialised = true
            s[i].up = false
            return !s.contains { $0.up }
        }
    }

    /// Kicks every vCPU that may be in KVM_RUN: all but the parked ones,
    /// which sleep outside it (an AP KVM holds for INIT/SIPI is kicked too:
    /// it only re-enters).
    func kickRunnable() {
        let parked = slots.withLock { $0.map { $0.initialised && !$0.up } }
        for (i, kick) in kicks.enumerated() where !(i < parked.count && parked[i]) { kick() }
    }

    func isUp(vcpu: VCPUID) -> Bool {
        guard let i = try? index(vcpu) else { return false }
        return slots.withLock { $0[i].up }
    }

    /// Runner side: the vCPU is running guest code although VCPUOP_initialise
    /// never named it: the guest started it natively (INIT, SIPI, SIPI
    /// through the in-kernel LAPIC, as Linux brings up a PVH guest's APs).
    /// Xen's SIPI handling (`vlapic_init_sipi_one` → `hvm_vcpu_reset_state`)
    /// marks such a vCPU initialised and up; so do we, so that VCPUOP_is_up
    /// says 1, VCPUOP_initialise answers -EEXIST instead of replacing a
    /// running vCPU's state, and VCPUOP_down of vCPU 0 does not see the
    /// domain's last vCPU.
    func markStartedNatively(_ vcpu: VCPUID) {
        guard let i = try? index(vcpu) else { return }
        slots.withLock { s in
            guard !s[i].initialised else { return }
            s[i].initialised = true
            s[i].up = true
        }
    }

    /// Runner side: the state to load before running again, once.
    func takePendingBoot(_ vcpu: VCPUID) -> VCPUBootState? {
        guard let i = try? index(vcpu) else { return nil }
        return slots.withLock { s in
            guard s[i].up else { return nil }
            defer { s[i].pendingBoot = nil }
            return s[i].pendingBoot
        }
    }

    /// Runner side: true while the vCPU must not run (initialised but down).
    func isParked(_ vcpu: VCPUID) -> Bool {
        guard let i = try? index(vcpu) else { return false }
        return slots.withLock { $0[i].initialised && !$0[i].up }
    }
}

extension VCPUBootState.Segment {
    /// The KVM form of a `vcpu_hvm_context` segment: attribute bits as in
    /// hvm_vcpu.h (type 0-3, S 4, DPL 5-6, P 7, AVL 8, L 9, D/B 10, G 11).
    var kvm: SegmentRegister {
        SegmentRegister(
            base: base, limit: byteLimit, selector: 0, type: type, present: isPresent, dpl: dpl,
            db: isDefaultBig, s: isCodeOrData, l: isLong, g: isPageGranular, avl: isAvailable, unusable: isNull)
    }
}

extension VCPU {
    /// Loads a VCPUOP_initialise state and makes the vCPU runnable (Xen:
    /// `arch_set_info_hvm_guest` then VCPUOP_up). Call on the vCPU's thread.
    func load(_ boot: VCPUBootState) throws(KVMError) {
        var r = X86Registers()
        r.rax = boot.rax; r.rbx = boot.rbx; r.rcx = boot.rcx; r.rdx = boot.rdx
        r.rsi = boot.rsi; r.rdi = boot.rdi; r.rsp = boot.rsp; r.rbp = boot.rbp
        r.rip = boot.rip
        r.rflags = boot.rflags | 0x2
        var s = specialRegisters
        s.cr0 = boot.cr0; s.cr3 = boot.cr3; s.cr4 = boot.cr4; s.efer = boot.efer
        s.cs = boot.cs.kvm
        s.ds = boot.ds.kvm; s.es = boot.es.kvm; s.ss = boot.ss.kvm
        s.fs = boot.ds.kvm; s.gs = boot.ds.kvm
        s.tr = boot.tr.kvm
        s.ldt = SegmentRegister(unusable: true)
        s.gdt = DescriptorTable()
        s.idt = DescriptorTable()
        try makeRunnable()
        registers = r
        specialRegisters = s
    }
}
