import GuestMemory
import PVTime
import Testing
import TestSupport
import XenABI

@Test func layoutsMatchXenHeaders() {
    // xen.h vcpu_time_info: version, pad0, tsc_timestamp, system_time, mul, shift, flags, pad1 (32 bytes).
    typealias T = PVTimeLayout.TimeInfo
    #expect(T.size == 32)
    #expect([T.version.offset, T.tscTimestamp.offset, T.systemTime.offset,
             T.tscToSystemMultiplier.offset, T.tscShift.offset, T.flags.offset] == [0, 8, 16, 24, 28, 29])
    #expect(PVTimeLayout.vcpuInfoTimeOffset == 32)
    #expect(PVTimeLayout.tscStableFlag == 1)
    // x86_64 shared_info: vcpu_info[32] (2048), evtchn_pending/mask 2 × 64 × 8.
    let n = PVTimeLayout.Wallclock.native
    #expect([n.version.offset, n.seconds.offset, n.nanoseconds.offset, n.secondsHigh.offset] == [3072, 3076, 3080, 3084])
    // x86_32 (compat) shared_info, as QEMU's xen-compat.h spells it out.
    let c = PVTimeLayout.Wallclock.compat
    #expect([c.version.offset, c.seconds.offset, c.nanoseconds.offset, c.secondsHigh.offset] == [2304, 2308, 2312, 2340])
}

/// The guest's formula with our mul/shift reproduces ns from TSC deltas to within 1 ppm.
@Test(arguments: [1_000_000 as UInt32, 1_193_182, 2_000_000, 2_100_000, 2_893_437, 3_700_000, 4_000_000, 100_000, 33_333])
func scaleIsAccurateToOnePPM(tscKHz: UInt32) {
    let clock = PVClock(tscKHz: tscKHz, start: PVClockReading(tsc: 0, monotonicNanoseconds: 0, realtime: WallclockTime(seconds: 0, nanoseconds: 0)))
    // The same mul/shift CPUID leaf 0x40000003 reports.
    let cpuid = XenCPUIDTime(tscKHz: tscKHz).scale
    #expect(clock.multiplier == cpuid.mul && clock.shift == cpuid.shift)
    #expect(clock.multiplier >= 1 << 31)
    for seconds in [0.001, 0.5, 1, 7.3, 3600, 86400 * 3] as [Double] {
        let ticks = UInt64(seconds * Double(tscKHz) * 1000)
        let exact = Double(ticks) * 1_000_000 / Double(tscKHz)
        let got = Double(PVClock.scaleDelta(ticks, multiplier: clock.multiplier, shift: clock.shift))
        #expect(abs(got - exact) <= max(exact * 1e-6, 1), "\(tscKHz) kHz, \(seconds) s: \(got) vs \(exact)")
    }
}

@Test func timeInfoAndWallclockFromAReading() {
    let fake = FakePVClock(tscKHz: 2_500_000)
    let clock = PVClock(tscKHz: 2_500_000, start: fake.read())
    fake.advance(nanoseconds: 1_500_000_000)
    let r = fake.read()
    let info = clock.timeInfo(at: r)
    #expect(info.tscTimestamp == r.tsc)
    #expect(abs(Int64(info.systemTime) - 1_500_000_000) <= 2)
    #expect(info.flags == PVTimeLayout.tscStableFlag)
    #expect(info.tscToSystemMultiplier == clock.multiplier && info.tscShift == clock.shift)
    // Guest extrapolation from this stamp agrees with a later stamp.
    fake.advance(nanoseconds: 250_000_000)
    let later = clock.timeInfo(at: fake.read())
    #expect(abs(Int64(info.systemTime(atTSC: later.tscTimestamp)) - Int64(later.systemTime)) <= 1)
    // Wallclock: real time at system time 0 = start real time (the fake moves all clocks together).
    let wc = clock.wallclock(at: fake.read())
    #expect(wc.seconds == 1_700_000_000)
    #expect(abs(Int64(wc.nanoseconds) - 250_000_000) <= 2)
    // The monotonic model takes system time from the host clock and drops the stable bit.
    let mono = PVClock(tscKHz: 2_500_000, start: clock.start, model: .monotonic)
    #expect(mono.timeInfo(at: fake.read()).systemTime == 1_750_000_000)
    #expect(mono.timeInfo(at: fake.read()).flags == 0)
    // A reading from before the start is time 0, not a wrap.
    #expect(clock.systemTime(at: PVClockReading(tsc: 0, monotonicNanoseconds: 0, realtime: WallclockTime(seconds: 0, nanoseconds: 0))) == .zero)
}

private func readTimeInfo(_ memory: any GuestMemory, _ address: GuestPhysicalAddress) throws -> (version: UInt32, info: VCPUTimeInfo) {
    VCPUTimeInfo.decode(try memory.read(at: address, count: PVTimeLayout.TimeInfo.size))
}

/// The version is odd while the fields change and even after; a reader that
/// sees one even version before and after its read holds a consistent copy.
@Test func versionProtocol() throws {
    let mock = MockGuestMemory(size: 1 << 20)
    let memory = RecordingGuestMemory(mock)
    let address = GuestPhysicalAddress(0x2000 + 32)
    let old = VCPUTimeInfo(tscTimestamp: 1, systemTime: 2, tscToSystemMultiplier: 3, tscShift: -1, flags: 0)
    let new = VCPUTimeInfo(tscTimestamp: 0x1111_2222_3333, systemTime: 0x4444_5555, tscToSystemMultiplier: 0x8000_1234, tscShift: 1, flags: 1)
    #expect(try PVTimeWriter.write(old, to: memory, at: address) == 2)

    var versionsSeen: [UInt32] = []
    var consistentReads = 0
    memory.afterWrite = { _ in
        // A guest reader running between two steps of the update.
        guard let before = try? readTimeInfo(mock, address) else { return }
        versionsSeen.append(before.version)
        if before.version & 1 == 0, let after = try? readTimeInfo(mock, address), after.version == before.version {
            #expect(before.info == old || before.info == new)
            consistentReads += 1
        }
    }
    #expect(try PVTimeWriter.write(new, to: memory, at: address) == 4)
    memory.afterWrite = nil
    // Three steps: odd version, fields (still odd), even version.
    #expect(versionsSeen == [3, 3, 4])
    #expect(consistentReads == 1)
    let final = try readTimeInfo(mock, address)
    #expect(final.version == 4 && final.info == new)
    // The writes: version, fields, version, in that order, nothing else touched.
    let writes = memory.accesses.filter { $0.kind != .read && $0.kind != .load }.suffix(3)
    #expect(writes.map(\.address.rawValue) == [address.rawValue, address.rawValue + 4, address.rawValue])
    #expect(writes.map(\.count) == [4, 28, 4])
    // A guest that scribbled an odd version still ends up even.
    try mock.store(UInt32(7), at: address)
    #expect(try PVTimeWriter.write(new, to: mock, at: address) == 10)
    try mock.store(UInt32.max, at: address)
    #expect(try PVTimeWriter.write(new, to: mock, at: address) == 2)
    // Outside RAM: an error, not a crash.
    #expect(throws: GuestMemoryError.self) { try PVTimeWriter.write(new, to: mock, at: GuestPhysicalAddress((1 << 20) - 16)) }
}

@Test func publishGoesToRegisteredOrLegacyVCPUInfoAndTheSecondaryArea() throws {
    let memory = MockGuestMemory(size: 1 << 20)
    let info = VCPUTimeInfo(tscTimestamp: 99, systemTime: 1234, tscToSystemMultiplier: 0x9000_0000, tscShift: -1, flags: 1)
    // Nothing set up yet: nothing written.
    #expect(try PVTimeWriter.publish(info, for: VCPUID(0), targets: VCPUTimeTargets(), to: memory) == 0)
    // Legacy slot: shared_info.vcpu_info[3].time.
    let shared = GuestFrameNumber(0x10)
    var targets = VCPUTimeTargets(sharedInfo: shared)
    #expect(try PVTimeWriter.publish(info, for: VCPUID(3), targets: targets, to: memory) == 1)
    #expect(try readTimeInfo(memory, GuestPhysicalAddress(0x10000 + 3 * 64 + 32)) == (2, info))
    // vCPU 32 has no legacy slot.
    #expect(targets.vcpuInfoTime(for: VCPUID(32)) == nil)
    // A registered vcpu_info wins; the secondary area gets its own copy.
    targets.registeredVCPUInfo = GuestPhysicalAddress(0x20040)
    targets.timeMemoryArea = GuestPhysicalAddress(0x30100)
    #expect(try PVTimeWriter.publish(info, for: VCPUID(40), targets: targets, to: memory) == 2)
    #expect(try readTimeInfo(memory, GuestPhysicalAddress(0x20040 + 32)) == (2, info))
    #expect(try readTimeInfo(memory, GuestPhysicalAddress(0x30100)) == (2, info))
}

@Test(arguments: [false, true])
func wallclockFields(is32Bit: Bool) throws {
    let memory = MockGuestMemory(size: 1 << 20)
    let frame = GuestFrameNumber(0x20)
    let l = PVTimeLayout.Wallclock.forSharedInfo(is32Bit: is32Bit)
    let time = WallclockTime(seconds: 0x1_2345_6789, nanoseconds: 987_654_321)  // beyond 2038
    #expect(try PVTimeWriter.writeWallclock(time, to: memory, sharedInfo: frame, is32Bit: is32Bit) == 2)
    func word(_ f: WireField) throws -> UInt32 { try memory.load(UInt32.self, at: GuestPhysicalAddress(0x20000 + UInt64(f.offset))) }
    #expect(try word(l.version) == 2)
    #expect(try word(l.seconds) == 0x2345_6789)
    #expect(try word(l.nanoseconds) == 987_654_321)
    #expect(try word(l.secondsHigh) == 1)
    #expect(try PVTimeWriter.writeWallclock(time, to: memory, sharedInfo: frame, is32Bit: is32Bit) == 4)
    #expect(throws: GuestMemoryError.self) {
        try PVTimeWriter.writeWallclock(time, to: memory, sharedInfo: GuestFrameNumber(0x100), is32Bit: is32Bit)
    }
}
