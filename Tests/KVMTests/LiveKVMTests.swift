import Foundation
import GuestMemory
import Synchronization
import Testing
@testable import KVM

/// Tests that boot tiny hand-assembled 32-bit blobs. CPL0 guest code may be
/// emulated (software backend, ~1M instructions/s): blobs stay tiny.
let hasKVM = FileManager.default.isReadableFile(atPath: "/dev/kvm") && FileManager.default.isWritableFile(atPath: "/dev/kvm")

/// A one-vCPU VM with 64 KiB of RAM at 0, `code` at 0x1000, in PVH entry state.
struct TinyGuest {
    static let codeBase: UInt64 = 0x1000
    let system: KVMSystem
    let vm: VirtualMachine
    let memory: MappedGuestMemory
    let vcpu: VCPU

    init(_ code: [UInt8], splitIRQChip: Bool = false, configure: (VirtualMachine) throws -> Void = { _ in }) throws {
        system = try KVMSystem()
        vm = try system.createVM()
        if splitIRQChip { try vm.enableSplitIRQChip(ioapicPins: 24) }
        try vm.enableEmulationFailureExits()
        try configure(vm)
        memory = MappedGuestMemory()
        let m = try memory.addRegion(GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 0x10000))
        try vm.addMemory(m)
        try memory.write(code, at: GuestPhysicalAddress(Self.codeBase))
        vcpu = try vm.createVCPU(id: KVMVCPUID(0))
        try vcpu.setPVHEntryState(entry: UInt32(Self.codeBase), startInfo: 0x6000)
    }

    /// Installs a GDT (flat code at 0x10, data at 0x18) at 0x3000, an IDT at
    /// 0x2000 whose gates for `vectors` all point at `handler`, and ESP 0x8000.
    func installIDT(vectors: [UInt8], handler: UInt32) throws {
        var gdt = [UInt8](repeating: 0, count: 0x28)
        func desc(_ i: Int, _ v: UInt64) { for b in 0..<8 { gdt[i * 8 + b] = UInt8(truncatingIfNeeded: v >> (8 * b)) } }
        desc(2, 0x00CF_9B00_0000_FFFF)
        desc(3, 0x00CF_9300_0000_FFFF)
        try memory.write(gdt, at: GuestPhysicalAddress(0x3000))
        for v in vectors {
            // 32-bit interrupt gate: offset 15..0, selector, 0, P|DPL0|0xE, offset 31..16.
            let gate: [UInt8] = [UInt8(handler & 0xff), UInt8(handler >> 8 & 0xff), 0x10, 0x00, 0x00, 0x8E,
                                 UInt8(handler >> 16 & 0xff), UInt8(handler >> 24)]
            try memory.write(gate, at: GuestPhysicalAddress(0x2000 + UInt64(v) * 8))
        }
        var s = vcpu.specialRegisters
        s.gdt = DescriptorTable(base: 0x3000, limit: 0x27)
        s.idt = DescriptorTable(base: 0x2000, limit: 0x7ff)
        vcpu.specialRegisters = s
        vcpu.registers.rsp = 0x8000
    }
}

func expectIO(_ exit: VCPUExit, port: UInt16, direction: IOExit.Direction = .out, value: UInt32? = nil,
              sourceLocation: SourceLocation = #_sourceLocation) {
    guard case .io(let io) = exit else {
        Issue.record("expected .io on port 0x\(String(port, radix: 16)), got \(exit)", sourceLocation: sourceLocation)
        return
    }
    #expect(io.port == IOPort(port), sourceLocation: sourceLocation)
    #expect(io.direction == direction, sourceLocation: sourceLocation)
    if let value { #expect(io.value == value, "0x\(String(io.value, radix: 16))", sourceLocation: sourceLocation) }
}

@Suite(.enabled(if: hasKVM, "needs read/write access to /dev/kvm"), .serialized)
struct LiveKVMTests {
    @Test func systemAndCapabilities() throws {
        let system = try KVMSystem()
        #expect(system.capabilities.fullSyncRegs)
        #expect(system.vcpuMmapSize >= 4096)
        let cpuid = try system.supportedCPUID()
        #expect(cpuid.lookup(function: 0) != nil)
        print(system.hostReport)
    }

    @Test func portIOAndSyncRegisters() throws {
        let g = try TinyGuest([
            0xB8, 0x34, 0x12, 0x00, 0x00,  // mov eax, 0x1234
            0xE7, 0xEA,                    // out 0xea, eax
            0xE7, 0xEB,                    // out 0xeb, eax   (echoes the RAX pvh set)
            0xE5, 0xEC,                    // in eax, 0xec
            0xE7, 0xED,                    // out 0xed, eax   (echoes the IN data)
            0x89, 0xD8,                    // mov eax, ebx
            0xE7, 0xEE,                    // out 0xee, eax   (start_info from EBX)
            0xF4,                          // hlt
        ])
        #expect(g.vcpu.cpuMode == .protected32)
        var exit = try g.vcpu.run()
        expectIO(exit, port: 0xEA, value: 0x1234)
        if case .io(let io) = exit { #expect(io.size == 4 && io.count == 1 && io.data == [0x34, 0x12, 0, 0]) }
        #expect(g.vcpu.registers.rip == 0x1007)
        #expect(g.vcpu.cpuMode == .protected32)
        g.vcpu.registers.rax = 0xCAFE_BABE
        exit = try g.vcpu.run()
        expectIO(exit, port: 0xEB, value: 0xCAFE_BABE)
        #expect(g.vcpu.registers.rax == 0xCAFE_BABE)
        exit = try g.vcpu.run()
        expectIO(exit, port: 0xEC, direction: .in)
        try g.vcpu.completeIOIn([0x78, 0x56, 0x34, 0x12])
        exit = try g.vcpu.run()
        expectIO(exit, port: 0xED, value: 0x1234_5678)
        exit = try g.vcpu.run()
        expectIO(exit, port: 0xEE, value: 0x6000)
        #expect(try g.vcpu.run() == .halt)
    }

    @Test func syncRegisterRoundTripIssuesOnlyKVMRun() throws {
        let g = try TinyGuest(KVMMicrobenchmark.portIOLoop)
        _ = try g.vcpu.run()
        #if DEBUG
        KVMSyscallRecorder.start()
        for i in 0..<3 {
            expectIO(try g.vcpu.run(), port: 0xEA, value: UInt32(i))
            g.vcpu.setRAX(UInt64(i + 1))
        }
        let calls = KVMSyscallRecorder.stop()
        #expect(calls == ["KVM_RUN", "KVM_RUN", "KVM_RUN"])
        #endif
    }

    @Test func trappedMSRAccessesExit() throws {
        let g = try TinyGuest([
            0xB9, 0x00, 0x00, 0x00, 0x40,  // mov ecx, 0x40000000
            0xB8, 0x00, 0x50, 0x00, 0x00,  // mov eax, 0x5000
            0xBA, 0x01, 0x00, 0x00, 0x00,  // mov edx, 1
            0x0F, 0x30,                    // wrmsr
            0x0F, 0x32,                    // rdmsr
            0xE7, 0xEA,                    // out 0xea, eax
            0x89, 0xD0,                    // mov eax, edx
            0xE7, 0xEB,                    // out 0xeb, eax
            0xF4,                          // hlt
        ]) { vm in
            try vm.trapMSRWrites([MSRIndex(0x4000_0000)])
            try vm.trapMSRReads([MSRIndex(0x4000_0000)])
        }
        #expect(try g.vcpu.run() == .wrmsr(MSRIndex(0x4000_0000), value: 0x1_0000_5000))
        g.vcpu.completeMSR()
        #expect(try g.vcpu.run() == .rdmsr(MSRIndex(0x4000_0000)))
        g.vcpu.completeMSR(value: 0x1122_3344_5566_7788)
        expectIO(try g.vcpu.run(), port: 0xEA, value: 0x5566_7788)
        expectIO(try g.vcpu.run(), port: 0xEB, value: 0x1122_3344)
        #expect(try g.vcpu.run() == .halt)
    }

    @Test func hardwareBreakpointGivesDebugExit() throws {
        let g = try TinyGuest([
            0x90, 0x90, 0x90,  // nop x3
            0xE7, 0xEA,        // out 0xea, eax   (0x1003)
            0xF4,
        ])
        try g.vcpu.setGuestDebug(hardwareBreakpoints: [GuestLinearAddress(0x1002)])
        let exit = try g.vcpu.run()
        guard case .debug(let pc, _, _, let exception) = exit else {
            Issue.record("expected .debug, got \(exit)")
            return
        }
        #expect(pc == GuestLinearAddress(0x1002))
        #expect(exception == 1)
        #expect(g.vcpu.rip == 0x1002)
        try g.vcpu.setGuestDebug(hardwareBreakpoints: [])
        expectIO(try g.vcpu.run(), port: 0xEA)
    }

    /// int3 → #BP and icebp → #DB, both traps: the handler sees EIP 0x1001.
    @Test(arguments: [(UInt8(0xCC), UInt8(3)), (UInt8(0xF1), UInt8(1))])
    func trapAtCPL0IsDeliveredThroughTheIDT(opcode: UInt8, vector: UInt8) throws {
        let g = try TinyGuest([
            opcode,                        // int3 / icebp       (0x1000)
            0xE7, 0xE9,                    // out 0xe9, eax      (not reached first)
            0xF4,
        ] + [UInt8](repeating: 0x90, count: 0xFC) + [
            0x8B, 0x04, 0x24,              // handler @0x1100: mov eax, [esp] (return EIP)
            0xE7, 0xEA,                    // out 0xea, eax
            0xF4,                          // hlt
        ])
        try g.installIDT(vectors: [vector], handler: 0x1100)
        let exit = try g.vcpu.run()
        guard case .internalError(let error) = exit else {
            // A hardware backend runs these natively: straight to the handler.
            expectIO(exit, port: 0xEA, value: 0x1001)
            return
        }
        print("opcode 0x\(String(opcode, radix: 16)) emulation failure: \(error)")
        #expect(error.suberror == .emulation)
        #expect(error.instructionBytes.first == opcode)
        #expect(try g.vcpu.handleEmulationFailure(error) == .exception(vector: vector, length: 1))
        expectIO(try g.vcpu.run(), port: 0xEA, value: 0x1001)
    }

    @Test func intImm8AtCPL0IsDeliveredThroughTheIDT() throws {
        let g = try TinyGuest([
            0xCD, 0x80,                    // int 0x80            (0x1000)
            0xF4,
        ] + [UInt8](repeating: 0x90, count: 0xFD) + [
            0x8B, 0x04, 0x24,              // handler @0x1100: mov eax, [esp]
            0xE7, 0xEA,                    // out 0xea, eax
            0xF4,
        ])
        try g.installIDT(vectors: [0x80], handler: 0x1100)
        let exit = try g.vcpu.run()
        guard case .internalError(let error) = exit else {
            print("int 0x80 ran natively: \(exit)")
            expectIO(exit, port: 0xEA, value: 0x1002)
            return
        }
        print("int 0x80 emulation failure: \(error)")
        #expect(try g.vcpu.handleEmulationFailure(error) == .softwareInterrupt(vector: 0x80, length: 2))
        expectIO(try g.vcpu.run(), port: 0xEA, value: 0x1002)
    }

    /// Records how this host delivers `int n` injected as a *soft* interrupt
    /// after pvh advanced RIP (VMX adds the VM-entry instruction length;
    /// the software backend may not). Informational: prints the pushed EIP.
    @Test func softInterruptInjectionPushedEIP() throws {
        let g = try TinyGuest([0xCD, 0x80, 0xF4] + [UInt8](repeating: 0x90, count: 0xFD) + [0x8B, 0x04, 0x24, 0xE7, 0xEA, 0xF4])
        try g.installIDT(vectors: [0x80], handler: 0x1100)
        guard case .internalError = try g.vcpu.run() else { return }
        g.vcpu.registers.rip += 2
        try g.vcpu.injectInterrupt(vector: 0x80, soft: true)
        let exit = try g.vcpu.run()
        print("int 0x80 injected with soft=1 after RIP+=2: \(exit)")
        if case .io(let io) = exit { print("pushed EIP 0x\(String(io.value, radix: 16)) (0x1002 is architectural)") }
    }

    @Test(arguments: [false, true]) func kickInterruptsRun(halt: Bool) throws {
        // hlt with IF=0 under the split irqchip blocks in the kernel; `jmp $` spins.
        let g = try TinyGuest(halt ? [0xF4] : [0xEB, 0xFE], splitIRQChip: halt)
        g.vcpu.kick()
        #expect(try g.vcpu.run() == .interrupted)  // immediate_exit path
        let done = Atomic<Bool>(false)
        let kickerEnded = DispatchSemaphore(value: 0)
        let vcpu = g.vcpu
        let kicker = Thread {
            while !done.load(ordering: .acquiring) {
                vcpu.kick()
                usleep(2000)
            }
            kickerEnded.signal()
        }
        kicker.start()
        let exit = try g.vcpu.run()  // blocked in HLT until the signal
        done.store(true, ordering: .releasing)
        // The kicker may be between its check of `done` and its kick: wait
        // for it to end, so no kick of this test reaches the thread after its
        // last run (swift-testing runs the next test on the same thread).
        kickerEnded.wait()
        #expect(exit == .interrupted)
        // Kicks keep working; a late kick from the loop above may already be
        // pending, which also yields exactly this one .interrupted.
        g.vcpu.kick()
        #expect(try g.vcpu.run() == .interrupted)
    }

    /// mov eax, 1; out 0xea, eax; hlt
    static let outOneThenHalt: [UInt8] = [0xB8, 0x01, 0x00, 0x00, 0x00, 0xE7, 0xEA, 0xF4]

    /// After its thread releases the vCPU, a kick signals that thread no
    /// more (it may have ended) but still ends the vCPU's next run.
    @Test func kickAfterReleaseSignalsNoThread() throws {
        let g = try TinyGuest(Self.outOneThenHalt)
        let vcpu = g.vcpu
        let released = DispatchSemaphore(value: 0)
        let kicked = DispatchSemaphore(value: 0)
        let ended = DispatchSemaphore(value: 0)
        let firstExitWasIO = Atomic<Bool>(false)
        let signalPendingAfterKick = Atomic<Bool>(true)
        let runner = Thread {
            if case .io = try? vcpu.run() { firstExitWasIO.store(true, ordering: .relaxed) }
            vcpu.releaseThread()
            released.signal()
            kicked.wait()
            // The kick signal is blocked on this thread outside KVM_RUN: had
            // the kick signalled it, it would be pending here.
            var pending = sigset_t()
            sigemptyset(&pending)
            sigpending(&pending)
            signalPendingAfterKick.store(sigismember(&pending, VCPU.kickSignal) == 1, ordering: .relaxed)
            ended.signal()
        }
        runner.start()
        released.wait()
        vcpu.kick()
        kicked.signal()
        ended.wait()
        let wasIO = firstExitWasIO.load(ordering: .relaxed)
        let pending = signalPendingAfterKick.load(ordering: .relaxed)
        #expect(wasIO)
        #expect(!pending)
        // The kick is not lost: this thread's first run returns at once.
        #expect(try vcpu.run() == .interrupted)
        #expect(try vcpu.run() == .halt)
    }

    /// A kick left pending on a thread by one vCPU (sent after its last run)
    /// does not end the first run of the next vCPU on that thread; the
    /// kicked vCPU still sees its kick (kvm_run.immediate_exit).
    @Test func staleKickOfAnotherVCPUIsDropped() throws {
        let first = try TinyGuest(Self.outOneThenHalt)
        expectIO(try first.vcpu.run(), port: 0xEA, value: 1)
        // This thread last ran `first`: the kick signal stays pending here
        // (it is blocked outside KVM_RUN).
        first.vcpu.kick()
        let second = try TinyGuest(Self.outOneThenHalt)
        expectIO(try second.vcpu.run(), port: 0xEA, value: 1)
        #expect(try first.vcpu.run() == .interrupted)
    }

    @Test func mmioExitsAndCompletion() throws {
        let g = try TinyGuest([
            0xB8, 0x44, 0x33, 0x22, 0x11,  // mov eax, 0x11223344
            0xA3, 0x00, 0x00, 0x02, 0x00,  // mov [0x20000], eax  (no slot there)
            0xA1, 0x08, 0x00, 0x02, 0x00,  // mov eax, [0x20008]
            0xE7, 0xEA,                    // out 0xea, eax
            0xF4,
        ])
        #expect(try g.vcpu.run() == .mmio(MMIOExit(address: GuestPhysicalAddress(0x20000), isWrite: true, length: 4, data: [0x44, 0x33, 0x22, 0x11])))
        #expect(try g.vcpu.run() == .mmio(MMIOExit(address: GuestPhysicalAddress(0x20008), isWrite: false, length: 4, data: [])))
        try g.vcpu.completeMMIORead([0xEF, 0xBE, 0xAD, 0xDE])
        expectIO(try g.vcpu.run(), port: 0xEA, value: 0xDEAD_BEEF)
        // A second region gets the next slot.
        let extra = try g.memory.addRegion(GuestPhysicalRange(start: GuestPhysicalAddress(0x100000), length: 0x1000))
        #expect(try g.vm.addMemory(extra) == MemorySlot(1))
    }

    /// Hypervisor leaves (0x4000_0000+) set with KVM_SET_CPUID2 reach the guest
    /// (pvh's Xen leaves depend on it).
    @Test func hypervisorCPUIDLeavesReachTheGuest() throws {
        let g = try TinyGuest([
            0xB8, 0x00, 0x00, 0x00, 0x40,  // mov eax, 0x40000000
            0x31, 0xC9,                    // xor ecx, ecx
            0x0F, 0xA2,                    // cpuid
            0xE7, 0xEA,                    // out 0xea, eax
            0x89, 0xD8,                    // mov eax, ebx
            0xE7, 0xEB,                    // out 0xeb, eax
            0xF4,
        ])
        var table = try g.system.supportedCPUID()
        table.remove(function: 0x4000_0000)
        table.set(CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0005, ebx: 0x566E_6558, ecx: 0x6558_4D4D, edx: 0x4D4D_566E))
        try g.vcpu.setCPUID(table)
        expectIO(try g.vcpu.run(), port: 0xEA, value: 0x4000_0005)
        expectIO(try g.vcpu.run(), port: 0xEB, value: 0x566E_6558)  // "XenV"
    }

    @Test func tscFrequency() throws {
        let g = try TinyGuest([0xF4])
        #expect(try g.vcpu.tscKHz > 0)
    }

    @Test func portIORoundTripLatency() throws {
        let system = try KVMSystem()
        let n = 20_000
        let d = try KVMMicrobenchmark.portIORoundTrips(n, system: system)
        let us = Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12
        print("port I/O exit round trip: \(us / Double(n)) µs (\(n) iterations)")
        #expect(us > 0)
    }
}
