import GuestMemory
import PVTime
import Locking
import Testing
import TestSupport
import XenABI

private final class Placement: SharedInfoLocator {
    let frame = Lock<GuestFrameNumber?>(nil)
    var sharedInfoFrame: GuestFrameNumber? { frame.withLock { $0 } }
    var sharedInfoIs32Bit: Bool { false }
    func registeredVCPUInfo(for vcpu: VCPUID) -> GuestPhysicalAddress? { nil }
}

private final class Counter: Sendable {
    let value = Lock(0)
}

private func make(vcpus: Int = 3) -> (DomainTimers, FakePVClock, Placement, MockGuestMemory, Counter) {
    let clock = FakePVClock(tscKHz: 2_000_000)
    let memory = MockGuestMemory(size: 1 << 20)
    let placement = Placement()
    let changes = Counter()
    let timers = DomainTimers(vcpuCount: vcpus, clock: PVClock(tscKHz: 2_000_000, start: clock.read()), source: clock,
                              memory: memory, placement: placement)
    return (timers, clock, placement, memory, changes)
}

@Test func nextDeadlineAcrossVCPUsAndFireDueInOrder() throws {
    let (timers, clock, _, _, changes) = make()
    timers.setChangeHandler { changes.value.withLock { $0 += 1 } }
    #expect(timers.nextDeadline == nil && timers.nanosecondsUntilNextDeadline() == nil)
    try timers.setSingleshot(vcpu: VCPUID(2), deadline: 5_000_000, flags: 0)
    timers.setTimerOp(vcpu: VCPUID(0), deadline: 3_000_000)
    try timers.setPeriodic(vcpu: VCPUID(1), period: 4_000_000)
    #expect(changes.value.withLock { $0 } == 3)
    #expect(timers.nextDeadline == SystemTime(rawValue: 3_000_000))
    #expect(timers.nanosecondsUntilNextDeadline() == 3_000_000)
    clock.advance(nanoseconds: 4_500_000)
    #expect(timers.fireDue() == [
        TimerExpiry(vcpu: VCPUID(0), event: .singleshot(deadline: SystemTime(rawValue: 3_000_000))),
        TimerExpiry(vcpu: VCPUID(1), event: .periodic(deadline: SystemTime(rawValue: 4_000_000))),
    ])
    #expect(timers.nextDeadline == SystemTime(rawValue: 5_000_000))
    #expect(timers.fireDue(now: SystemTime(rawValue: 5_000_000)).map(\.vcpu) == [VCPUID(2)])
    // The periodic timer restarted from the late tick (4.5 ms).
    #expect(timers.nextDeadline == SystemTime(rawValue: 8_500_000))
    timers.stopPeriodic(vcpu: VCPUID(1))
    #expect(timers.nextDeadline == nil)
    // Unknown vCPUs are ignored.
    timers.setTimerOp(vcpu: VCPUID(9), deadline: 1)
    #expect(timers.nextDeadline == nil && timers.timers(for: VCPUID(9)) == nil)
}

@Test func periodicTickDueAtOnceIsQueued() throws {
    let (timers, clock, _, _, _) = make()
    clock.advance(nanoseconds: 30_000_000)
    try timers.setPeriodic(vcpu: VCPUID(0), period: 10_000_000)
    #expect(timers.nanosecondsUntilNextDeadline().map { $0 <= 0 } == true)
    #expect(timers.fireDue().map(\.vcpu) == [VCPUID(0)])
    #expect(timers.fireDue().isEmpty)
    #expect(throws: XenErrno.einval) { try timers.setPeriodic(vcpu: VCPUID(0), period: 10) }
}

@Test func publishesWallclockAndTimeAreas() throws {
    let (timers, clock, placement, memory, _) = make()
    #expect(!timers.publishWallclock())
    placement.frame.withLock { $0 = GuestFrameNumber(0x10) }
    clock.advance(nanoseconds: 7_000)
    timers.sharedInfoMapped()
    #expect(try memory.load(UInt32.self, at: GuestPhysicalAddress(0x10000 + 3072)) == 2)
    // Legacy slots of all three vCPUs.
    for v in 0..<3 {
        let bytes = try memory.read(at: GuestPhysicalAddress(0x10000 + UInt64(v) * 64 + 32), count: 32)
        #expect(VCPUTimeInfo.decode(bytes).info.systemTime == 7_000)
    }
    timers.registerTimeMemoryArea(vcpu: VCPUID(1), address: GuestPhysicalAddress(0x20000))
    #expect(VCPUTimeInfo.decode(try memory.read(at: GuestPhysicalAddress(0x20000), count: 32)).version == 2)
    #expect(timers.publishTime(vcpu: VCPUID(1)) == 2)
    // A copy outside RAM is skipped, not fatal.
    timers.registerTimeMemoryArea(vcpu: VCPUID(2), address: GuestPhysicalAddress(1 << 40))
    #expect(timers.publishTime(vcpu: VCPUID(2)) == 1)
}

/// A long-running guest re-arms its timer hundreds of thousands of times: the
/// change handler must cost the same on the last call as on the first (a
/// handler that grew a thunk per call once overflowed the vCPU's stack).
@Test func changeHandlerStaysFlatOverManyRearms() throws {
    let (timers, _, _, _, changes) = make()
    timers.setChangeHandler { changes.value.withLock { $0 += 1 } }
    for i in 0..<300_000 {
        timers.setTimerOp(vcpu: VCPUID(0), deadline: UInt64(1_000_000 + i))
    }
    #expect(changes.value.withLock { $0 } == 300_000)
}
