import Testing
@testable import VMM

/// The guard over a finished SYSCALL's first instructions (software backend):
/// it lasts while the CPU is at CPL0 on a lower-half (user) stack.
@Suite("SYSCALL entry guard (pure)")
struct SyscallEntryGuardTests {
    @Test("Linux's entry: guarded through swapgs and the RSP save, released at the first kernel-half RSP")
    func linuxEntry() {
        var g = SyscallEntryGuard(savedTPR: 1)
        let user: UInt64 = 0x7ffe_682c_c610
        do { let keep = g.step(rsp: user, cpl: 0, next: [0x90]); #expect(keep) }   // endbr64
        do { let keep = g.step(rsp: user, cpl: 0, next: [0x90]); #expect(keep) }   // swapgs
        do { let keep = g.step(rsp: user, cpl: 0, next: [0x90]); #expect(keep) }   // mov %rsp, %gs:sp2
        do { let keep = g.step(rsp: user, cpl: 0, next: [0x90]); #expect(keep) }   // jmp
        do { let keep = g.step(rsp: 0xffff_c900_0001_3f58, cpl: 0, next: [0x90]); #expect(!keep) }  // mov %gs:top_of_stack, %rsp
        #expect(g.savedTPR == 1 && g.steps == 5)
    }

    @Test("released by a return to CPL3 (a SYSRET before any stack switch) and, at the latest, after maximumSteps")
    func otherEnds() {
        var back = SyscallEntryGuard(savedTPR: 0)
        do { let keep = back.step(rsp: 0x8000_2000, cpl: 0, next: [0x90]); #expect(keep) }
        do { let keep = back.step(rsp: 0x8000_2000, cpl: 3, next: [0x90]); #expect(!keep) }
        var long = SyscallEntryGuard(savedTPR: 0)
        var steps = 0
        while long.step(rsp: 0x1000, cpl: 0, next: [0x90]) { steps += 1 }
        #expect(steps + 1 == SyscallEntryGuard.maximumSteps)
        #expect(SyscallEntryGuard.blockingTPR == 15)
        // About to SYSRET or IRET: released before it, so user mode gets its TPR back.
        for insn: [UInt8] in [[0x48, 0x0f, 0x07], [0x0f, 0x07], [0x48, 0xcf], [0xcf]] {
            var g = SyscallEntryGuard(savedTPR: 0)
            let keep = g.step(rsp: 0x8000_2000, cpl: 0, next: insn)
            #expect(!keep, "\(insn)")
        }
        #expect(!SyscallEntryGuard.returnsToUser([0x0f, 0x01, 0xf8]))  // swapgs
    }
}
