import Foundation
import KVM
import Testing

/// pvh-bench compares the test guest's benchmark loops with the same bytes
/// run on a bare 64-bit VM (`KVMMicrobenchmark.LongModeLoop`). That is only a
/// fair comparison while the two agree byte for byte: the compiler places
/// the loops, so check the built guest.
@Suite("bench loops: the test guest runs the reference's bytes")
struct BenchLoopTests {
    func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { i in haystack[i..<i + needle.count].elementsEqual(needle) }
    }

    @Test("bench_exit's 8-OUT loop and bench_hypercall's call loop are in testguest.elf")
    func loopsMatch() throws {
        let elf = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try Env.testGuest.get())))
        #expect(contains(elf, KVMMicrobenchmark.LongModeLoop.eightOutLoop))
        #expect(contains(elf, KVMMicrobenchmark.LongModeLoop.callLoop))
    }

    @Test("the bare 64-bit reference runs: port-I/O exits, and debug exits over a vmcall", .enabled(if: Env.hasKVM, "needs /dev/kvm (read-write)"))
    func bareLoopsRun() throws {
        let system = try KVMSystem()
        let out = try KVMMicrobenchmark.longModeRoundTrips(200, guest: .init(loop: KVMMicrobenchmark.LongModeLoop.eightOutLoop), system: system)
        #expect(out > .zero)
        let vmcall = KVMMicrobenchmark.LongModeLoop(loop: KVMMicrobenchmark.LongModeLoop.callLoop, stub: [0x0F, 0x01, 0xC1, 0xC3], breakpointSkip: 3)
        #expect(try KVMMicrobenchmark.longModeRoundTrips(200, guest: vmcall, system: system) > .zero)
    }
}
