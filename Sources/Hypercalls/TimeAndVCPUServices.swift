import GuestMemory
import XenABI

/// Xen time and timers with the calling guest's authority. The handlers
/// decode and check the arguments (vCPU ids, which vCPU may act, copy-in
/// faults); the service keeps the timers and publishes time information.
/// `DomainTimers` (PVTime) is the implementation.
public protocol TimeService: Sendable {
    /// `NOW()`: the domain's system time (for runstate stamps).
    func systemTime() -> SystemTime
    /// VCPUOP_set_singleshot_timer on `vcpu` (always the caller):
    /// `timeout_abs_ns` and `flags` as the guest gave them. -ETIME is the
    /// only error (`VCPU_SSHOTTMR_future` with a past deadline, if honoured).
    func setSingleshot(vcpu: VCPUID, deadline: UInt64, flags: UInt32) throws(XenErrno)
    /// VCPUOP_stop_singleshot_timer on the caller.
    func stopSingleshot(vcpu: VCPUID)
    /// VCPUOP_set_periodic_timer: -EINVAL outside [1 ms, STIME_DELTA_MAX].
    func setPeriodic(vcpu: VCPUID, period: UInt64) throws(XenErrno)
    /// VCPUOP_stop_periodic_timer.
    func stopPeriodic(vcpu: VCPUID)
    /// The `set_timer_op` hypercall on the caller: the 64-bit timeout (0 stops).
    func setTimerOp(vcpu: VCPUID, deadline: UInt64)
    /// VCPUOP_register_vcpu_time_memory_area, translated through the caller's
    /// page tables at registration (nil: it did not translate, or its 32
    /// bytes are not contiguous in guest-physical memory; updates then go
    /// nowhere, as Xen's failing copies do). Publish the time there now.
    func registerTimeMemoryArea(vcpu: VCPUID, address: GuestPhysicalAddress?)
    /// `vcpu` registered its vcpu_info (VCPUOP_register_vcpu_info): publish
    /// its vcpu_time_info there now (`force_update_vcpu_system_time`).
    func vcpuInfoRegistered(vcpu: VCPUID)
    /// shared_info was mapped (XENMEM_add_to_physmap) or its 32/64-bit layout
    /// latched (HVM_PARAM_CALLBACK_IRQ): write the wallclock
    /// (`update_domain_wallclock_time`) and the legacy vcpu_info slots' time.
    func sharedInfoMapped()
}


/// `DomainState` tells the PV clock where shared_info and vcpu_info are.

/// Secondary vCPU bring-up and take-down (VCPUOP_initialise, up, down,
/// is_up), after xen/common/domain.c `common_vcpu_op` and
/// xen/arch/x86/domain.c `arch_initialise_vcpu`. The handler checks the
/// vCPU id (-ENOENT) and decodes and validates the context
/// (`VCPUBootState`, -EINVAL); the service keeps each vCPU's
/// initialised/down state under one lock, as Xen does under `domain_lock`.
///
/// Xen's states: vCPU 0 starts initialised and up; every other vCPU starts
/// uninitialised and down. A vCPU is also initialised when the guest starts
/// it through its local APIC (INIT/SIPI: Xen's `vlapic_init_sipi_one`),
/// which the VMM must record too.
public protocol VCPULifecycle: Sendable {
    /// Whether `vcpu` is initialised (`is_initialised`): VCPUOP_initialise
    /// answers -EEXIST before it looks at the context, as Xen does.
    func isInitialised(vcpu: VCPUID) -> Bool
    /// VCPUOP_initialise: -EEXIST if `vcpu` is already initialised;
    /// otherwise load `state` into it and mark it initialised (still down).
    func initialise(vcpu: VCPUID, state: VCPUBootState) throws(XenErrno)
    /// VCPUOP_up: -EINVAL if `vcpu` is not initialised; otherwise, if it
    /// was down, mark it up and start it running from its loaded state. Up
    /// already: nothing (0).
    func up(vcpu: VCPUID) throws(XenErrno)
    /// VCPUOP_down: mark `vcpu` down and stop it running (if it is the
    /// caller, after this hypercall returns 0 to it; it resumes there when
    /// brought up again). The handler has already turned "the last vCPU up
    /// goes down" into a poweroff, as Xen does.
    func down(vcpu: VCPUID) throws(XenErrno)
    /// VCPUOP_is_up: not down.
    func isUp(vcpu: VCPUID) -> Bool
}

/// One `struct vcpu_runstate_info` (vcpu.h).
public struct VCPURunstateInfo: Hashable, Sendable {
    public var state: VCPURunstate
    /// System time the state was entered, ns.
    public var stateEntryTime: UInt64
    /// Time spent in each `RUNSTATE_*`, indexed by its raw value.
    public var time: [UInt64]

    public init(state: VCPURunstate, stateEntryTime: UInt64, time: [UInt64] = [0, 0, 0, 0]) {
        self.state = state
        self.stateEntryTime = stateEntryTime
        self.time = time
    }

    /// The structure's bytes in the native or compat layout.
    public func bytes(compat: Bool) -> [UInt8] {
        typealias L = XenWire.VCPURunstateInfo
        var b = [UInt8](repeating: 0, count: L.size(compat: compat))
        b.setWireValue(state.rawValue, in: L.state)
        b.setWireValue(stateEntryTime, in: L.stateEntryTime(compat: compat))
        for i in 0..<4 { b.setWireValue(i < time.count ? time[i] : 0, in: L.time(i, compat: compat)) }
        return b
    }
}
