import EventChannels
import GuestMemory
import Hypercalls
import PVTime
import Testing
import TestSupport
import XenABI

// vcpu_op timers, time and runstate areas, SMP bring-up, set_timer_op,
// SCHEDOP_block and SCHEDOP_poll through the dispatcher.

private let bad: UInt64 = 0x7f00_0000  // beyond the 16 MiB of RAM
private let arg: UInt64 = 0x1000
private let selfID = UInt16(DomainID.`self`.rawValue)
private let shinfoFrame: UInt64 = 0x200  // shared_info at 0x200000

private enum VCPUOp: UInt64 {
    case initialise = 0, up, down, isUp, getRunstateInfo, registerRunstateMemoryArea = 5
    case setPeriodicTimer = 6, stopPeriodicTimer, setSingleshotTimer, stopSingleshotTimer
    case registerVCPUInfo = 10, sendNMI, getPhysID, registerVCPUTimeMemoryArea
}

private func vcpuOp(_ h: Harness, _ op: VCPUOp, target: UInt32, _ pointer: UInt64 = arg, mode: GuestCPUMode = .long64,
                    caller: UInt32 = 0) -> HypercallOutcome {
    h.call(.vcpuOp, op.rawValue, UInt64(target), pointer, mode: mode, vcpu: caller)
}

private func mapSharedInfo(_ h: Harness) {
    h.put([UInt8](repeating: 0, count: 24), 0x3000)
    h.set(selfID, 0x3000)
    h.set(UInt32(0), 0x3004)  // XENMAPSPACE_shared_info
    h.set(UInt64(0), 0x3008)
    h.set(shinfoFrame, 0x3010)
    #expect(h.call(.memoryOp, 7, 0x3000) == .zero)
}

private func now(_ h: Harness) -> Int64 { h.timers?.systemTime().rawValue ?? -1 }

// MARK: wire layouts

@Test func vcpuAndPollLayoutsMatchXenHeaders() {
    #expect(XenWire.VCPUSetSingleshotTimer.size(.long64) == 16 && XenWire.VCPUSetSingleshotTimer.size(.protected32) == 12)
    #expect(XenWire.VCPUSetSingleshotTimer.flags.offset == 8)
    #expect(XenWire.VCPUSetPeriodicTimer.size == 8)
    #expect(XenWire.VCPURegisterMemoryArea.size(.long64) == 8 && XenWire.VCPURegisterMemoryArea.size(.protected32) == 4)
    #expect(XenWire.VCPURunstateInfo.size(compat: false) == 48 && XenWire.VCPURunstateInfo.size(compat: true) == 44)
    #expect(XenWire.VCPURunstateInfo.stateEntryTime(compat: false).offset == 8)
    #expect(XenWire.VCPURunstateInfo.time(3, compat: false).offset == 40 && XenWire.VCPURunstateInfo.time(3, compat: true).offset == 36)
    #expect(XenWire.SchedPoll.size(.long64) == 24 && XenWire.SchedPoll.size(.protected32) == 16)
    #expect([XenWire.SchedPoll.nrPorts(.long64).offset, XenWire.SchedPoll.timeout(.long64).offset] == [8, 16])
    #expect(XenWire.VCPUHVMContext.size == 128)
    #expect(XenWire.VCPUHVMContext.X86_32.eip.offset == 8 + 32 && XenWire.VCPUHVMContext.X86_32.efer.offset == 8 + 56)
    #expect(XenWire.VCPUHVMContext.X86_32.trAR.offset == 8 + 112 && XenWire.VCPUHVMContext.X86_32.pad2.size == 6)
    #expect(XenWire.VCPUHVMContext.X86_64.rip.offset == 8 + 64 && XenWire.VCPUHVMContext.X86_64.efer.offset == 8 + 104)
}

// MARK: set_timer_op

@Test func setTimerOpDecodesOneRegisterOrTwoHalves() {
    let r64 = HypercallRegisters(mode: .long64, rax: 15, rdi: 0x1234_5678_9abc_def0)
    #expect(Hypercall(decoding: r64) == .setTimerOp(0x1234_5678_9abc_def0))
    // compat_set_timer_op(lo = EBX, hi = ECX); upper register halves are ignored.
    let r32 = HypercallRegisters(mode: .protected32, rax: 15, rbx: 0xffff_ffff_9abc_def0, rcx: 0x1234_5678)
    #expect(Hypercall(decoding: r32) == .setTimerOp(0x1234_5678_9abc_def0))
}

@Test func setTimerOpArmsAndStopsTheCallersSingleshotTimer() throws {
    #expect(Harness().call(.setTimerOp, 5_000_000) == .error(.enosys))
    let h = Harness(withTime: true)
    let timers = try #require(h.timers)
    #expect(h.call(.setTimerOp, 5_000_000, vcpu: 1) == .zero)
    #expect(timers.timers(for: VCPUID(1))?.singleshotDeadline == SystemTime(rawValue: 5_000_000))
    #expect(timers.timers(for: VCPUID(0))?.singleshotDeadline == nil)
    // 32-bit: 0x1_0000_0000 ns (~4.3 s) from lo = 0, hi = 1.
    #expect(h.call(.setTimerOp, 0, 1, mode: .protected32) == .zero)
    #expect(timers.timers(for: VCPUID(0))?.singleshotDeadline == SystemTime(rawValue: 1 << 32))
    #expect(h.call(.setTimerOp, 0, vcpu: 1) == .zero)
    #expect(timers.timers(for: VCPUID(1))?.singleshotDeadline == nil)
    // Negative: 100 ms from now (Linux jiffy-wrap workaround).
    #expect(h.call(.setTimerOp, UInt64.max) == .zero)
    #expect(timers.timers(for: VCPUID(0))?.singleshotDeadline == SystemTime(rawValue: now(h) + 100_000_000))
}

// MARK: single-shot and periodic timers

@Test func singleshotTimerOnlyForTheCallingVCPU() throws {
    let h = Harness(withTime: true)
    let timers = try #require(h.timers)
    h.set(UInt64(7_000_000), arg)
    h.set(UInt32(0), arg + 8)
    #expect(vcpuOp(h, .setSingleshotTimer, target: 1, caller: 1) == .zero)
    #expect(timers.timers(for: VCPUID(1))?.singleshotDeadline == SystemTime(rawValue: 7_000_000))
    #expect(timers.nextDeadline == SystemTime(rawValue: 7_000_000))
    #expect(vcpuOp(h, .setSingleshotTimer, target: 0, caller: 1) == .error(.einval))
    #expect(vcpuOp(h, .stopSingleshotTimer, target: 0, caller: 1) == .error(.einval))
    #expect(vcpuOp(h, .setSingleshotTimer, target: 2, caller: 1) == .error(.enoent))
    // Native checks the vCPU before the copy; compat copies first.
    #expect(vcpuOp(h, .setSingleshotTimer, target: 0, bad, caller: 1) == .error(.einval))
    #expect(vcpuOp(h, .setSingleshotTimer, target: 0, bad, mode: .protected32, caller: 1) == .error(.efault))
    #expect(vcpuOp(h, .setSingleshotTimer, target: 1, bad, caller: 1) == .error(.efault))
    #expect(vcpuOp(h, .stopSingleshotTimer, target: 1, caller: 1) == .zero)
    #expect(timers.timers(for: VCPUID(1))?.singleshotDeadline == nil)
    #expect(timers.nextDeadline == nil)
}

@Test func singleshotTimerCompatStructIsTwelveBytes() throws {
    let h = Harness(withTime: true)
    // The 12 bytes end exactly at the end of RAM: a 16-byte copy would fault.
    let end = UInt64(Harness.ramSize) - 12
    h.set(UInt64(9_000_000), end)
    h.set(UInt32(0), end + 8)
    #expect(vcpuOp(h, .setSingleshotTimer, target: 0, end, mode: .protected32) == .zero)
    #expect(h.timers?.timers(for: VCPUID(0))?.singleshotDeadline == SystemTime(rawValue: 9_000_000))
    #expect(vcpuOp(h, .setSingleshotTimer, target: 0, end) == .error(.efault))
}

@Test func singleshotFutureFlagWithAPastDeadlineIsETIME() throws {
    let h = Harness(withTime: true)
    let clock = try #require(h.clock)
    clock.advance(nanoseconds: 50_000_000)
    h.set(UInt64(1_000_000), arg)
    h.set(UInt32(1), arg + 8)  // VCPU_SSHOTTMR_future
    #expect(vcpuOp(h, .setSingleshotTimer, target: 0) == .error(.etime))
    #expect(h.timers?.timers(for: VCPUID(0))?.singleshotDeadline == nil)
    // Without the flag a past deadline is due at once.
    h.set(UInt32(0), arg + 8)
    #expect(vcpuOp(h, .setSingleshotTimer, target: 0) == .zero)
    let fired = try #require(h.timers).fireDue()
    #expect(fired == [TimerExpiry(vcpu: VCPUID(0), event: .singleshot(deadline: SystemTime(rawValue: 1_000_000)))])
    // Xen ≥ 4.17.x ignores the flag.
    let ignoring = Harness(withTime: true, policy: .ignore)
    ignoring.clock?.advance(nanoseconds: 50_000_000)
    ignoring.set(UInt64(1_000_000), arg)
    ignoring.set(UInt32(1), arg + 8)
    #expect(vcpuOp(ignoring, .setSingleshotTimer, target: 0) == .zero)
}

@Test func periodicTimerForAnyVCPUWithinLimits() throws {
    let h = Harness(withTime: true)
    let timers = try #require(h.timers)
    try #require(h.clock).advance(nanoseconds: 20_000_000)
    h.set(UInt64(10_000_000), arg)
    // Any vCPU may set another's periodic timer; a whole period has passed
    // since the last periodic event (0), so a tick is due at once.
    #expect(vcpuOp(h, .setPeriodicTimer, target: 1, caller: 0) == .zero)
    #expect(timers.timers(for: VCPUID(1))?.period == 10_000_000)
    #expect(timers.fireDue().map(\.vcpu) == [VCPUID(1)])
    h.set(UInt64(999_999), arg)
    #expect(vcpuOp(h, .setPeriodicTimer, target: 0) == .error(.einval))
    h.set(UInt64(1) << 62, arg)
    #expect(vcpuOp(h, .setPeriodicTimer, target: 0) == .error(.einval))
    #expect(vcpuOp(h, .setPeriodicTimer, target: 0, bad) == .error(.efault))
    #expect(vcpuOp(h, .stopPeriodicTimer, target: 1) == .zero)
    #expect(timers.timers(for: VCPUID(1))?.period == 0)
    #expect(vcpuOp(h, .stopPeriodicTimer, target: 9) == .error(.enoent))
}

@Test func timerOpsWithoutATimeServiceAreENOSYS() {
    let h = Harness()
    for op in [VCPUOp.setSingleshotTimer, .stopSingleshotTimer, .setPeriodicTimer, .stopPeriodicTimer, .registerVCPUTimeMemoryArea] {
        #expect(vcpuOp(h, op, target: 0) == .error(.enosys))
    }
    #expect(vcpuOp(h, .getPhysID, target: 0) == .error(.einval))
}

// MARK: time areas and publication

@Test func timeMemoryAreaGetsTheTimeAtOnce() throws {
    let h = Harness(withTime: true)
    let clock = try #require(h.clock)
    clock.advance(nanoseconds: 3_000_000)
    h.set(UInt64(0x5000), arg)
    #expect(vcpuOp(h, .registerVCPUTimeMemoryArea, target: 1) == .zero)
    let (version, info) = VCPUTimeInfo.decode(h.bytes(0x5000, 32))
    #expect(version == 2)
    #expect(info.systemTime == 3_000_000 && info.tscTimestamp == clock.read().tsc)
    #expect(h.timers?.timeTargets(for: VCPUID(1)).timeMemoryArea == GuestPhysicalAddress(0x5000))
    // Compat: a 4-byte handle (the next word is not read).
    h.set(UInt32(0x6000), arg)
    h.set(UInt32(0xffff_ffff), arg + 4)
    #expect(vcpuOp(h, .registerVCPUTimeMemoryArea, target: 0, mode: .protected32) == .zero)
    #expect(VCPUTimeInfo.decode(h.bytes(0x6000, 32)).version == 2)
    // An address that does not translate is accepted and goes nowhere (Xen: guest_handle_okay is true for HVM).
    h.set(bad, arg)
    #expect(vcpuOp(h, .registerVCPUTimeMemoryArea, target: 1) == .zero)
    #expect(h.timers?.timeTargets(for: VCPUID(1)).timeMemoryArea == nil)
    #expect(vcpuOp(h, .registerVCPUTimeMemoryArea, target: 1, bad) == .error(.efault))
}

@Test func vcpuInfoRegistrationAndSharedInfoPublishTime() throws {
    let h = Harness(withTime: true)
    try #require(h.clock).advance(nanoseconds: 1_000_000)
    mapSharedInfo(h)
    // The legacy slots and the wallclock are written when shared_info is mapped.
    let shinfo = shinfoFrame << 12
    #expect(VCPUTimeInfo.decode(h.bytes(shinfo + 32, 32)).info.systemTime == 1_000_000)
    #expect(VCPUTimeInfo.decode(h.bytes(shinfo + 64 + 32, 32)).version == 2)
    #expect(h.u32(shinfo + 3072) == 2)  // wc_version
    // wc = real time minus system time: the real time at system time 0.
    #expect(h.u32(shinfo + 3076) == 1_700_000_000 && (249_999_990...250_000_010).contains(h.u32(shinfo + 3080)))
    // A registered vcpu_info gets the time when it is registered.
    h.set(UInt64(0x40), arg)  // mfn
    h.set(UInt32(0x80), arg + 8)  // offset
    #expect(vcpuOp(h, .registerVCPUInfo, target: 1) == .zero)
    // It started as a copy of the legacy slot (version 2), then was updated.
    let (version, info) = VCPUTimeInfo.decode(h.bytes(0x40080 + 32, 32))
    #expect(version == 4 && info.systemTime == 1_000_000)
}

// MARK: runstate

@Test func runstateAreaAndGetRunstateInfo() throws {
    let h = Harness(withTime: true, withLifecycle: true)
    try #require(h.clock).advance(nanoseconds: 2_000_000)
    h.set(UInt64(0x7000), arg)
    #expect(vcpuOp(h, .registerRunstateMemoryArea, target: 0) == .zero)
    #expect(h.state.runstateArea(for: VCPUID(0)) == GuestPhysicalAddress(0x7000))
    #expect(h.u32(0x7000) == 0)  // RUNSTATE_running
    #expect(h.u64(0x7008) == 2_000_000 && h.u64(0x7010) == 2_000_000)
    // vCPU 1 is down: offline.
    h.set(UInt64(0x7100), arg)
    #expect(vcpuOp(h, .registerRunstateMemoryArea, target: 1) == .zero)
    #expect(h.u32(0x7100) == 3 && h.u64(0x7100 + 16 + 24) == 2_000_000)
    // get_runstate_info in the caller's layout: compat entry time at 4.
    h.put([UInt8](repeating: 0xee, count: 48), 0x8000)
    #expect(vcpuOp(h, .getRunstateInfo, target: 0, 0x8000, mode: .protected32) == .zero)
    #expect(h.u32(0x8000) == 0 && h.u64(0x8004) == 2_000_000 && h.u64(0x800c) == 2_000_000)
    #expect(h.bytes(0x8000 + 44, 4) == [0xee, 0xee, 0xee, 0xee])
    #expect(vcpuOp(h, .getRunstateInfo, target: 0, bad) == .error(.efault))
    #expect(vcpuOp(h, .registerRunstateMemoryArea, target: 0, bad) == .error(.efault))
}

// MARK: SCHEDOP_block

@Test func blockClearsTheUpcallMaskAndBlocks() {
    #expect(Harness().call(.schedOp, 1, 0) == .error(.enosys))
    let h = Harness(withEventChannels: true)
    mapSharedInfo(h)
    let slot1 = (shinfoFrame << 12) + 64
    h.set(UInt8(1), slot1 + 1)  // evtchn_upcall_mask of vCPU 1's legacy slot
    #expect(h.call(.schedOp, 1, 0, vcpu: 1) == .block)
    #expect(h.bytes(slot1, 2) == [0, 0])
    // A registered vcpu_info is the one cleared.
    h.set(UInt64(0x40), arg)
    h.set(UInt32(0), arg + 8)
    #expect(vcpuOp(h, .registerVCPUInfo, target: 0) == .zero)
    h.set(UInt8(1), 0x40001)
    #expect(h.call(.schedOp, 1, 0) == .block)
    #expect(h.bytes(0x40001, 1) == [0])
}

// MARK: SCHEDOP_poll

private func pollArgument(_ h: Harness, ports: [UInt32], timeout: UInt64, mode: GuestCPUMode = .long64, count: UInt32? = nil) {
    let list: UInt64 = 0x2000
    for (i, p) in ports.enumerated() { h.set(p, list + UInt64(i) * 4) }
    if mode == .long64 {
        h.set(list, arg)
        h.set(count ?? UInt32(ports.count), arg + 8)
        h.set(timeout, arg + 16)
    } else {
        h.set(UInt32(list), arg)
        h.set(count ?? UInt32(ports.count), arg + 4)
        h.set(timeout, arg + 8)
    }
}

private func bindIPI(_ h: Harness) -> UInt32 {
    h.set(UInt32(0), 0x3800)
    #expect(h.call(.eventChannelOp, 7, 0x3800) == .zero)
    return h.u32(0x3804)
}

@Test func pollValidatesPortsAndBlocks() {
    let h = Harness(withEventChannels: true)
    mapSharedInfo(h)
    let a = bindIPI(h), b = bindIPI(h)
    pollArgument(h, ports: [a, b], timeout: 123_000)
    #expect(h.call(.schedOp, 3, arg) == .poll(ports: [EventChannelPort(a), EventChannelPort(b)], deadline: SystemTime(rawValue: 123_000)))
    pollArgument(h, ports: [b], timeout: 0)
    #expect(h.call(.schedOp, 3, arg) == .poll(ports: [EventChannelPort(b)], deadline: nil))
    pollArgument(h, ports: [], timeout: 0)
    #expect(h.call(.schedOp, 3, arg) == .poll(ports: [], deadline: nil))
    // Compat layout.
    pollArgument(h, ports: [a], timeout: 5, mode: .protected32)
    #expect(h.call(.schedOp, 3, arg, mode: .protected32) == .poll(ports: [EventChannelPort(a)], deadline: SystemTime(rawValue: 5)))
    // Errors: a free port, a port beyond the table, too many ports, faults.
    pollArgument(h, ports: [a, 40], timeout: 0)
    #expect(h.call(.schedOp, 3, arg) == .error(.einval))
    pollArgument(h, ports: [a, 100_000], timeout: 0)
    #expect(h.call(.schedOp, 3, arg) == .error(.einval))
    pollArgument(h, ports: [a], timeout: 0, count: 129)
    #expect(h.call(.schedOp, 3, arg) == .error(.einval))
    #expect(h.call(.schedOp, 3, bad) == .error(.efault))
    h.set(bad, arg)
    h.set(UInt32(1), arg + 8)
    #expect(h.call(.schedOp, 3, arg) == .error(.efault))
    // Without event channels: -ENOSYS.
    #expect(Harness().call(.schedOp, 3, arg) == .error(.enosys))
}

@Test func pollReturnsAtOnceWhenAPortIsPending() {
    let h = Harness(withEventChannels: true)
    mapSharedInfo(h)
    let a = bindIPI(h), b = bindIPI(h)
    h.set(b, 0x3900)
    #expect(h.call(.eventChannelOp, 4, 0x3900) == .zero)  // EVTCHNOP_send
    // b is pending: 0 at once; a port after it is never looked at (do_poll stops there).
    pollArgument(h, ports: [a, b, 4000], timeout: 0)
    #expect(h.call(.schedOp, 3, arg) == .zero)
}

// MARK: SMP

private func context64(rip: UInt64 = 0xffff_ffff_8100_0000, cr0: UInt64 = 0x8000_0011, cr4: UInt64 = 0x20,
                       efer: UInt64 = 0x500) -> [UInt8] {
    typealias R = XenWire.VCPUHVMContext.X86_64
    var b = [UInt8](repeating: 0, count: 128)
    b.setWireValue(UInt32(1), in: XenWire.VCPUHVMContext.mode)
    b.setWireValue(rip, in: R.rip)
    b.setWireValue(UInt64(0x9000), in: R.rsp)
    b.setWireValue(UInt64(0x2), in: R.rflags)
    b.setWireValue(UInt64(0xabc), in: R.rbx)
    b.setWireValue(cr0, in: R.cr0)
    b.setWireValue(UInt64(0x10_0000), in: R.cr3)
    b.setWireValue(cr4, in: R.cr4)
    b.setWireValue(efer, in: R.efer)
    return b
}

/// A flat 32-bit context: CS 0x9b-ish code, DS/SS/ES data, TR a 32-bit TSS.
private func context32(eip: UInt32 = 0x10_0000, cs: UInt16 = 0xc9b, ds: UInt16 = 0xc93, ss: UInt16 = 0xc93,
                       tr: UInt16 = 0x8b, csLimit: UInt32 = 0xfffff, efer: UInt64 = 0) -> [UInt8] {
    typealias R = XenWire.VCPUHVMContext.X86_32
    var b = [UInt8](repeating: 0, count: 128)
    b.setWireValue(UInt32(0), in: XenWire.VCPUHVMContext.mode)
    b.setWireValue(eip, in: R.eip)
    b.setWireValue(UInt32(0x11), in: R.cr0)
    b.setWireValue(UInt32(0x8000), in: R.ebx)
    b.setWireValue(efer, in: R.efer)
    b.setWireValue(csLimit, in: R.csLimit)
    b.setWireValue(UInt32(0xfffff), in: R.dsLimit)
    b.setWireValue(UInt32(0xfffff), in: R.ssLimit)
    b.setWireValue(UInt32(0x67), in: R.trLimit)
    b.setWireValue(cs, in: R.csAR)
    b.setWireValue(ds, in: R.dsAR)
    b.setWireValue(ss, in: R.ssAR)
    b.setWireValue(tr, in: R.trAR)
    return b
}

@Test func bootStateFrom64BitContext() throws {
    let s = try VCPUBootState(decoding: context64())
    #expect(s.mode == .bits64)
    #expect(s.rip == 0xffff_ffff_8100_0000 && s.rsp == 0x9000 && s.rbx == 0xabc && s.rflags == 2)
    #expect(s.cr3 == 0x10_0000 && s.efer == 0x500)
    #expect(s.cs.attributes == 0xa9b && s.cs.isLong && s.ds.attributes == 0xc93 && s.tr.limit == 0x67 && s.tr.type == 0xb)
    // LME alone gets LMA.
    #expect(try VCPUBootState(decoding: context64(efer: 0x100)).efer == 0x500)
    // Xen's 64-bit checks.
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context64(rip: 0x0000_8000_0000_0000)) }
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context64(cr0: 0x11)) }
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context64(cr4: 0)) }
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context64(efer: 0)) }
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context64(cr4: 0x20 | 0x1000)) }  // LA57
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context64(efer: 0x500 | 0x1000)) }  // SVME
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context64(efer: 0x500 | 1 << 20)) }  // unknown
    let narrow = VCPUBootState.Limits(cr4: 0x20, efer: 0x500)
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context64(cr4: 0x20 | 0x80), limits: narrow) }
}

@Test func bootStateFrom32BitContext() throws {
    let s = try VCPUBootState(decoding: context32())
    #expect(s.mode == .bits32 && s.rip == 0x10_0000 && s.rbx == 0x8000 && s.cr0 == 0x11)
    // Present segments get their accessed bit; a null ES is allowed.
    #expect(s.cs.attributes == 0xc9b && s.ds.attributes == 0xc93 && s.es.isNull && s.tr.attributes == 0x8b)
    // An available TSS becomes busy.
    #expect(try VCPUBootState(decoding: context32(tr: 0x89)).tr.type == 0xb)
    // Byte-granular CS limit: EIP beyond it.
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(cs: 0x49b, csLimit: 0xffff)) }
    #expect(try VCPUBootState(decoding: context32(eip: 0xfff0, cs: 0x49b, csLimit: 0xffff)).rip == 0xfff0)
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(cs: 0xc93)) }  // data segment as CS
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(ss: 0xc9b)) }  // code as SS
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(ss: 0xc91)) }  // read-only SS
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(ss: 0xcf3)) }  // SS.DPL 3 ≠ CS.DPL 0
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(ds: 0xcf3 & ~0x80 | 0x80 | 0x60)) }  // DS.DPL > CS.DPL
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(ss: 0)) }  // null SS
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(tr: 0x83)) }  // not a TSS
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(cs: 0xc1b)) }  // not present
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(cs: 0x1c9b)) }  // bits 12-15
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: context32(efer: 0x400)) }  // LMA without LME
    var padded = context32()
    padded.setWireValue(UInt16(1), in: WireField(offset: XenWire.VCPUHVMContext.X86_32.pad2.offset + 4, size: 2))
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: padded) }
}

@Test func bootStateRejectsBadModeAndPadding() {
    var b = context64()
    b.setWireValue(UInt32(2), in: XenWire.VCPUHVMContext.mode)
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: b) }
    b = context64()
    b.setWireValue(UInt32(1), in: XenWire.VCPUHVMContext.pad)
    #expect(throws: XenErrno.einval) { try VCPUBootState(decoding: b) }
}

@Test func initialiseUpDownIsUp() throws {
    let h = Harness(withLifecycle: true)
    let lifecycle = try #require(h.lifecycle)
    h.put(context64(), 0x4000)
    #expect(vcpuOp(h, .isUp, target: 1) == .returnToGuest(0))
    #expect(vcpuOp(h, .up, target: 1) == .error(.einval))  // not initialised
    #expect(vcpuOp(h, .initialise, target: 1, 0x4000) == .zero)
    #expect(lifecycle.state(1)?.rip == 0xffff_ffff_8100_0000)
    #expect(vcpuOp(h, .initialise, target: 1, 0x4000) == .error(.eexist))
    #expect(vcpuOp(h, .initialise, target: 0, 0x4000) == .error(.eexist))
    #expect(vcpuOp(h, .initialise, target: 2, 0x4000) == .error(.enoent))
    #expect(vcpuOp(h, .initialise, target: 1, bad) == .error(.efault))
    #expect(vcpuOp(h, .up, target: 1) == .zero)
    #expect(vcpuOp(h, .isUp, target: 1) == .returnToGuest(1))
    #expect(vcpuOp(h, .down, target: 1) == .zero)
    #expect(vcpuOp(h, .isUp, target: 1) == .returnToGuest(0))
    // The last vCPU up going down powers the domain off.
    #expect(vcpuOp(h, .down, target: 0) == .shutdown(.poweroff))
}

@Test func initialiseChecksTheContextAfterEEXIST() throws {
    let h = Harness(withLifecycle: true)
    var badMode = context64()
    badMode.setWireValue(UInt32(7), in: XenWire.VCPUHVMContext.mode)
    h.put(badMode, 0x4000)
    #expect(vcpuOp(h, .initialise, target: 1, 0x4000) == .error(.einval))
    #expect(vcpuOp(h, .initialise, target: 0, 0x4000) == .error(.eexist))
    #expect(h.lifecycle?.isInitialised(vcpu: VCPUID(1)) == false)
}

@Test func initialiseNeedsAVCPUInfoAboveTheLegacySlots() {
    let h = Harness(vcpuCount: 34, withLifecycle: true)
    h.put(context64(), 0x4000)
    #expect(vcpuOp(h, .initialise, target: 33, 0x4000) == .error(.einval))
    h.set(UInt64(0x40), arg)
    h.set(UInt32(0), arg + 8)
    #expect(vcpuOp(h, .registerVCPUInfo, target: 33) == .zero)
    #expect(vcpuOp(h, .initialise, target: 33, 0x4000) == .zero)
}

@Test func smpOpsWithoutALifecycleService() {
    let h = Harness()
    h.put(context64(), 0x4000)
    #expect(vcpuOp(h, .initialise, target: 1, 0x4000) == .error(.enosys))
    #expect(vcpuOp(h, .up, target: 1) == .error(.enosys))
    #expect(vcpuOp(h, .down, target: 1) == .error(.enosys))
    #expect(vcpuOp(h, .isUp, target: 0) == .returnToGuest(1))
    #expect(vcpuOp(h, .isUp, target: 1) == .error(.enosys))
}
