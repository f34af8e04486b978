import Hypercalls
import Testing
import XenABI

@Test func longModeArgumentOrder() {
    let r = HypercallRegisters(mode: .long64, rax: 17, rbx: 0xb, rcx: 0xc, rdx: 3, rsi: 2, rdi: 1, r8: 5, r10: 4, r9: 6, rbp: 0xbb)
    #expect(r.number == 17)
    #expect(r.arguments == [1, 2, 3, 4, 5, 6])
}

@Test func protectedModeArgumentOrderAndTruncation() {
    let high: UInt64 = 0xffff_ffff_0000_0000
    let r = HypercallRegisters(mode: .protected32, rax: high | 17, rbx: high | 1, rcx: high | 2, rdx: high | 3,
                               rsi: high | 4, rdi: high | 5, r8: 0x88, r10: 0x1010, r9: 0x99, rbp: high | 6)
    #expect(r.number == 17)
    #expect(r.arguments == [1, 2, 3, 4, 5, 6])
}

@Test func decoding() {
    func decode(_ nr: UInt64, _ a: [UInt64]) -> Hypercall {
        Hypercall(decoding: HypercallRegisters(mode: .long64, rax: nr, rdx: a[2], rsi: a[1], rdi: a[0]))
    }
    // In 64-bit mode RAX is not truncated: high bits make it no hypercall.
    #expect(decode(1 << 32 | 17, [0, 0, 0]) == .unknown(1 << 32 | 17))
    #expect(decode(99, [0, 0, 0]) == .unknown(99))
    // `int cmd` keeps 32 bits.
    #expect(decode(17, [1 << 32 | 6, 0x1000, 0]) == .xenVersion(.getFeatures, GuestVirtualAddress(0x1000)))
    #expect(decode(18, [0, 5, 0x2000]) == .consoleIO(.write(count: 5, buffer: GuestVirtualAddress(0x2000))))
    #expect(decode(29, [2, 0x3000, 0]) == .schedOp(.shutdown, GuestVirtualAddress(0x3000)))
    // memory_op: low 6 bits are the op, the rest the start extent.
    #expect(decode(12, [3 << 6 | 9, 0x10, 0]) == .memoryOp(.memoryMap, startExtent: 3, GuestVirtualAddress(0x10)))
    #expect(decode(24, [10, 1, 0x40]) == .vcpuOp(.registerVCPUInfo, VCPUID(1), GuestVirtualAddress(0x40)))
    // `unsigned long op` keeps 64 bits.
    #expect(decode(34, [1 << 32 | 1, 0x50, 0]) == .unknownSubOperation(.hvmOp, subOperation: 1 << 32 | 1, arguments: [1 << 32 | 1, 0x50, 0, 0, 0, 0]))
    #expect(decode(34, [1, 0x50, 0]) == .hvmOp(.getParam, GuestVirtualAddress(0x50)))
    // grant_table_op(unsigned int cmd, void *uop, unsigned int count).
    #expect(decode(20, [1, 2, 3]) == .grantTableOp(.unmapGrantRef, GuestVirtualAddress(2), count: 3))
    #expect(decode(20, [1 << 32 | 6, 2, 1 << 32 | 1]) == .grantTableOp(.querySize, GuestVirtualAddress(2), count: 1))
    // Continuation bits above the command: not a command an HVM guest may pass.
    #expect(decode(20, [1 << 13 | 12, 2, 1]) == .unknownSubOperation(.grantTableOp, subOperation: 1 << 13 | 12, arguments: [1 << 13 | 12, 2, 1, 0, 0, 0]))
}
