import GuestMemory
import Hypercalls
import Testing
import TestSupport
import XenABI

/// Random registers, random control registers and random guest memory (so
/// page walks follow garbage): every call must come back with a value, and
/// every error must be one of Xen's.
@Test(arguments: [1 as UInt64, 2, 3])
func hostileRegistersNeverCrash(seed: UInt64) throws {
    var rng = SplitMix64(state: seed)
    let memory = MockGuestMemory(size: 4 << 20)
    var junk = [UInt8](repeating: 0, count: 1 << 20)
    for i in junk.indices { junk[i] = UInt8(truncatingIfNeeded: rng.next()) }
    try memory.write(junk, at: GuestPhysicalAddress(0))
    let h = Harness(vcpuCount: 3, memory: memory, withEventChannels: seed % 2 == 0, withTime: seed != 1,
                    withLifecycle: seed != 1, withReservation: seed != 2)
    h.console.input.withLock { $0 = Array(repeating: 0x41, count: 10000) }
    let known = Set(XenErrno.allCases.map(\.negated))

    func value() -> UInt64 {
        switch rng.next() % 6 {
        case 0: return rng.next() % 16
        case 1: return rng.next() % (4 << 20)  // into RAM
        case 2: return 0xffff_ffff_8000_0000 | rng.next() % (1 << 31)
        case 3: return UInt64.max - rng.next() % 4096
        case 4: return UInt64(UInt32.max) - rng.next() % 64
        default: return rng.next()
        }
    }

    for round in 0..<1500 {
        let number: UInt64 = round % 5 == 4 ? value() : rng.next() % 64
        let paging = GuestPagingState(
            cr0: [0, 0x8001_0001, rng.next()][Int(rng.next() % 3)],
            cr3: rng.next() % 2 == 0 ? rng.next() % (1 << 20) : rng.next(),
            cr4: [0, 0x10, 0x20, 0x1020, rng.next()][Int(rng.next() % 5)],
            efer: [0, 0x500, rng.next()][Int(rng.next() % 3)])
        let args = (0..<6).map { _ in value() }
        let mode: GuestCPUMode = rng.next() % 2 == 0 ? .long64 : .protected32
        let outcome = h.call(raw: number, args, mode: mode, vcpu: UInt32(rng.next() % 3), paging: paging)
        if case .returnToGuest(let rax) = outcome, rax < 0 {
            #expect(known.contains(rax), "round \(round): \(rax)")
        }
    }
}

/// Every hypercall number in Xen's table, with all-zero and all-ones arguments.
@Test func everyHypercallNumberAnswers() {
    let h = Harness(withEventChannels: true, withTime: true, withLifecycle: true, withReservation: true)
    for number in HypercallNumber.allCases {
        for fill in [0 as UInt64, .max] {
            for mode in [GuestCPUMode.long64, .protected32] {
                let outcome = h.call(raw: UInt64(number.rawValue), Array(repeating: fill, count: 6), mode: mode)
                switch outcome {
                case .returnToGuest, .yield, .shutdown, .block, .poll: break
                }
            }
        }
    }
}
