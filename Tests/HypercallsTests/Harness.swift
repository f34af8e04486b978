import EventChannels
import GrantTables
import GuestMemory
import Hypercalls
import PVTime
import Locking
import TestSupport
import XenABI

final class RecordingConsole: ConsoleService {
    let written = Lock<[UInt8]>([])
    let writes = Lock(0)
    let input = Lock<[UInt8]>([])
    func write(_ bytes: [UInt8], from vcpu: VCPUID) {
        written.withLock { $0 += bytes }
        writes.withLock { $0 += 1 }
    }
    func read(max: Int) -> [UInt8] {
        input.withLock { i in
            let out = Array(i.prefix(max))
            i.removeFirst(out.count)
            return out
        }
    }
}

final class RecordingPhysmap: PhysmapService {
    let frames = Lock<[GuestFrameNumber]>([])
    let failure = Lock<XenErrno?>(nil)
    /// Hole frames backed (`backFrame`), and the memory to add them to.
    let backed = Lock<[GuestFrameNumber]>([])
    let memory = Lock<MockGuestMemory?>(nil)
    func backFrame(at frame: GuestFrameNumber) throws(XenErrno) {
        guard let memory = memory.withLock({ $0 }), let address = frame.address else { throw .einval }
        do { try memory.addRegion(GuestPhysicalRange(start: address, length: 4096)) } catch { throw .enomem }
        backed.withLock { $0.append(frame) }
    }
    func mapSharedInfo(at frame: GuestFrameNumber) throws(XenErrno) {
        if let e = failure.withLock({ $0 }) { throw e }
        frames.withLock { $0.append(frame) }
    }
}

/// Host release over mock memory: zero-fills, as madvise(MADV_DONTNEED)
/// leaves an anonymous mapping. `failure` makes every discard fail.
final class MockReservationBacking: ReservationService {
    let memory: MockGuestMemory
    let failure = Lock(false)
    init(memory: MockGuestMemory) { self.memory = memory }
    func discard(_ range: GuestPhysicalRange) throws(GuestMemoryError) {
        if failure.withLock({ $0 }) { throw .discardFailed(errno: 12) }
        try memory.discard(range)
    }
}

// The conformances the VMM declares for the dispatcher's services.
extension EventChannelTable: EventChannelService {}
extension DomainTimers: TimeService {}

final class RecordingNotifier: EventChannelNotifier {
    let upcalls = Lock<[UInt32]>([])
    func upcall(vcpu: VCPUID) { upcalls.withLock { $0.append(vcpu.rawValue) } }
    var list: [UInt32] { upcalls.withLock { $0 } }
}

/// A VCPULifecycle that keeps Xen's states: vCPU 0 initialised and up, the others neither.
final class FakeLifecycle: VCPULifecycle {
    struct VCPU { var initialised = false; var up = false; var state: VCPUBootState? }
    let vcpus: Lock<[VCPUID: VCPU]>
    init() { vcpus = Lock([VCPUID(0): VCPU(initialised: true, up: true)]) }
    func isInitialised(vcpu: VCPUID) -> Bool { vcpus.withLock { $0[vcpu]?.initialised ?? false } }
    func initialise(vcpu: VCPUID, state: VCPUBootState) throws(XenErrno) {
        try vcpus.withLock { (v: inout [VCPUID: VCPU]) throws(XenErrno) in
            guard v[vcpu]?.initialised != true else { throw .eexist }
            v[vcpu] = VCPU(initialised: true, up: false, state: state)
        }
    }
    func up(vcpu: VCPUID) throws(XenErrno) {
        try vcpus.withLock { (v: inout [VCPUID: VCPU]) throws(XenErrno) in
            guard v[vcpu]?.initialised == true else { throw .einval }
            v[vcpu]?.up = true
        }
    }
    func down(vcpu: VCPUID) throws(XenErrno) { vcpus.withLock { $0[vcpu]?.up = false } }
    func isUp(vcpu: VCPUID) -> Bool { vcpus.withLock { $0[vcpu]?.up ?? false } }
    func state(_ vcpu: UInt32) -> VCPUBootState? { vcpus.withLock { $0[VCPUID(vcpu)]?.state } }
}

/// A 16 MiB guest at 0 with a dispatcher; paging off unless a test says otherwise.
struct Harness {
    static let ramSize = 16 << 20
    static let domid = DomainID(rawValue: 5)
    /// First frame of the grant table's default area (`withGrants`).
    static let grantArea: UInt64 = 0xf00
    static let memoryMap = [
        MemoryMapEntry(start: 0, length: 0x9f000, type: .ram),
        MemoryMapEntry(start: 0x9f000, length: 0x1000, type: .reserved),
        MemoryMapEntry(start: 0x100000, length: UInt64(ramSize) - 0x100000, type: .ram),
    ]
    let memory: MockGuestMemory
    let console = RecordingConsole()
    let physmap = RecordingPhysmap()
    let notifier = RecordingNotifier()
    let dispatcher: HypercallDispatcher
    /// Present when the harness was made `withEventChannels`.
    let eventChannels: EventChannelTable?
    /// Present when the harness was made `withTime` (a 2 GHz fake clock).
    let clock: FakePVClock?
    let timers: DomainTimers?
    /// Present when the harness was made `withLifecycle`.
    let lifecycle: FakeLifecycle?
    /// Present when the harness was made `withReservation`.
    let reservation: MockReservationBacking?
    /// Present when the harness was made `withGrants`: default area at frame 0xf00.
    let grants: GrantTable?

    init(vcpuCount: Int = 2, memoryMap: [MemoryMapEntry] = Harness.memoryMap, memory: MockGuestMemory? = nil,
         withEventChannels: Bool = false, withTime: Bool = false, withLifecycle: Bool = false,
         withReservation: Bool = false, withGrants: Bool = false, maxGrantFrames: Int = 64,
         maxPages: UInt64 = 8192, policy: SingleshotFuturePolicy = .honour) {
        self.memory = memory ?? MockGuestMemory(size: Harness.ramSize)
        let mem = self.memory
        physmap.memory.withLock { $0 = mem }
        grants = withGrants
            ? GrantTable(configuration: .init(domainID: Harness.domid, maximumFrames: maxGrantFrames,
                                              defaultArea: GuestFrameNumber(Harness.grantArea)),
                         memory: self.memory)
            : nil
        let config = DomainConfiguration(
            domainID: Harness.domid, vcpuCount: vcpuCount, memoryMap: memoryMap, totalPages: 4096,
            maxPages: maxPages, handle: Array(1...16))
        let state = DomainState()
        eventChannels = withEventChannels
            ? EventChannelTable(configuration: .init(domainID: Harness.domid, vcpuCount: vcpuCount),
                                memory: self.memory, locator: state, notifier: notifier)
            : nil
        if withTime {
            let clock = FakePVClock(tscKHz: 2_000_000)
            self.clock = clock
            timers = DomainTimers(vcpuCount: vcpuCount, clock: PVClock(tscKHz: 2_000_000, start: clock.read()),
                                  source: clock, memory: self.memory, placement: state, policy: policy)
        } else {
            clock = nil
            timers = nil
        }
        lifecycle = withLifecycle ? FakeLifecycle() : nil
        reservation = withReservation ? MockReservationBacking(memory: self.memory) : nil
        dispatcher = HypercallDispatcher(configuration: config, memory: self.memory, console: console, physmap: physmap,
                                         state: state, eventChannels: eventChannels, time: timers, lifecycle: lifecycle,
                                         reservationService: reservation, grantTables: grants)
    }

    var state: DomainState { dispatcher.state }

    func call(_ number: HypercallNumber, _ args: UInt64..., mode: GuestCPUMode = .long64, vcpu: UInt32 = 0,
              paging: GuestPagingState = .pagingDisabled) -> HypercallOutcome {
        call(raw: UInt64(number.rawValue), args, mode: mode, vcpu: vcpu, paging: paging)
    }

    func call(raw number: UInt64, _ args: [UInt64], mode: GuestCPUMode = .long64, vcpu: UInt32 = 0,
              paging: GuestPagingState = .pagingDisabled, cpl: UInt8 = 0) -> HypercallOutcome {
        let a = args + [UInt64](repeating: 0, count: max(0, 6 - args.count))
        let regs = switch mode {
        case .long64:
            HypercallRegisters(mode: mode, rax: number, rdx: a[2], rsi: a[1], rdi: a[0], r8: a[4], r10: a[3], r9: a[5], cpl: cpl)
        case .protected32:
            HypercallRegisters(mode: mode, rax: number, rbx: a[0], rcx: a[1], rdx: a[2], rsi: a[3], rdi: a[4], rbp: a[5], cpl: cpl)
        }
        return dispatcher.handle(regs, vcpu: VCPUID(vcpu), paging: paging)
    }

    func bytes(_ address: UInt64, _ count: Int) -> [UInt8] {
        (try? memory.read(at: GuestPhysicalAddress(address), count: count)) ?? []
    }
    func put(_ bytes: [UInt8], _ address: UInt64) {
        try? memory.write(bytes, at: GuestPhysicalAddress(address))
    }
    func u16(_ address: UInt64) -> UInt16 { (try? memory.load(UInt16.self, at: GuestPhysicalAddress(address))) ?? 0xdead }
    func u32(_ address: UInt64) -> UInt32 { (try? memory.load(UInt32.self, at: GuestPhysicalAddress(address))) ?? 0xdead }
    func u64(_ address: UInt64) -> UInt64 { (try? memory.load(UInt64.self, at: GuestPhysicalAddress(address))) ?? 0xdead }
    func set<T: FixedWidthInteger & UnsignedInteger>(_ value: T, _ address: UInt64) {
        try? memory.store(value, at: GuestPhysicalAddress(address))
    }
}

extension HypercallOutcome {
    static func error(_ e: XenErrno) -> HypercallOutcome { .returnToGuest(e.negated) }
    static let zero = HypercallOutcome.returnToGuest(0)
}

/// SplitMix64: a seeded generator, so fuzz failures reproduce.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// What the VMM target declares for the dispatcher.
extension GrantTable: GrantTableService {}
