import GuestMemory

/// Measurement helpers for the benchmarks package: the exit round trip that
/// every hypercall pays (KVM_RUN → port-I/O exit → set RAX in the sync block
/// → KVM_RUN), with no register ioctls.
public enum KVMMicrobenchmark {
    /// The guest loop: `1: out 0xea, eax; jmp 1b` (32-bit code).
    public static let portIOLoop: [UInt8] = [0xE7, 0xEA, 0xEB, 0xFC]

    /// Boots a one-vCPU VM running `portIOLoop` at 0x1000 in PVH entry state
    /// and times `iterations` port-I/O exit round trips (each also sets RAX,
    /// as a hypercall return does). Returns the total duration.
    public static func portIORoundTrips(_ iterations: Int, system: KVMSystem) throws(KVMError) -> Duration {
        let memory = MappedGuestMemory()
        let vm = try system.createVM()
        let mapping: GuestMemoryMapping
        do {
            mapping = try memory.addRegion(GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 0x10000))
            try memory.write(portIOLoop, at: GuestPhysicalAddress(0x1000))
        } catch {
            throw .invalidArgument("guest memory: \(error)")
        }
        try vm.addMemory(mapping)
        let vcpu = try vm.createVCPU(id: KVMVCPUID(0))
        try vcpu.setPVHEntryState(entry: 0x1000, startInfo: 0)
        // Warm up (first exits fault in pages and fill caches).
        for _ in 0..<100 { _ = try vcpu.run() }
        return try timeRoundTrips(iterations, vcpu: vcpu) { () throws(KVMError) -> Bool in
            var exit = try vcpu.run()
            // Another signal unblocked on this thread (a profiler's, say)
            // ends KVM_RUN once as .interrupted: run again.
            if exit == .interrupted { exit = try vcpu.run() }
            guard case .io = exit else { return false }
            return true
        }
    }

    /// Times `iterations` calls of `roundTrip` (false: an unexpected exit),
    /// each followed by setting RAX, as a hypercall's return does.
    static func timeRoundTrips(_ iterations: Int, vcpu: VCPU,
                               _ roundTrip: () throws(KVMError) -> Bool) throws(KVMError) -> Duration {
        let clock = ContinuousClock()
        var failure: KVMError?
        let elapsed = clock.measure {
            for i in 0..<iterations {
                do throws(KVMError) {
                    guard try roundTrip() else {
                        failure = .invalidArgument("unexpected exit in benchmark")
                        return
                    }
                    vcpu.setRAX(UInt64(i))
                } catch {
                    failure = error
                    return
                }
            }
        }
        if let failure { throw failure }
        return elapsed
    }

    /// A bare 64-bit guest for references that must run the *same guest
    /// instructions* as the pvh figure they stand beside. On a software
    /// backend every CPL0 instruction is emulated (about a microsecond each),
    /// so a hypercall's own `call`/`mov`/`ret` cost as much as the exit;
    /// comparing them with a two-instruction loop would measure the guest,
    /// not the VMM. The layout matches the test guest's: identity map with
    /// 2 MiB pages (PML4 0x2000 → PDPT 0x3000 → PD 0x4000), loop at 0x1000,
    /// `stub` at 0x5000 (reached through RBX), stack below 0x8000, RCX the
    /// loop counter, RDI = RSI = 0.
    public struct LongModeLoop: Sendable {
        public var loop: [UInt8]
        public var stub: [UInt8]
        /// Break on the stub's first instruction (a hardware breakpoint, as
        /// pvh's vmcall-site transport does) and skip `breakpointSkip` bytes
        /// at each debug exit.
        public var breakpointSkip: UInt64?
        public init(loop: [UInt8], stub: [UInt8] = [], breakpointSkip: UInt64? = nil) {
            self.loop = loop; self.stub = stub; self.breakpointSkip = breakpointSkip
        }

        public static let loopAddress: UInt64 = 0x1000
        public static let stubAddress: UInt64 = 0x5000

        /// `1: mov $17, %eax; call *%rbx; dec %rcx; jnz 1b` — the test
        /// guest's bench_hypercall loop (testguest/bench.c), byte for byte:
        /// RAX = __HYPERVISOR_xen_version, then the page stub or vmcall site.
        public static let callLoop: [UInt8] = [0xB8, 0x11, 0x00, 0x00, 0x00, 0xFF, 0xD3, 0x48, 0xFF, 0xC9, 0x75, 0xF4]
        /// `1: 8 × out %al, $0xeb; dec %rcx; jnz 1b` — the test guest's
        /// bench_exit loop, byte for byte.
        public static let eightOutLoop: [UInt8] =
            Array([[UInt8]](repeating: [0xE6, 0xEB], count: 8).joined()) + [0x48, 0xFF, 0xC9, 0x75, 0xEB]
    }

    /// Times `iterations` port-I/O exit round trips of `guest` on a bare
    /// 64-bit VM (each sets RAX, as a hypercall return does).
    public static func longModeRoundTrips(_ iterations: Int, guest: LongModeLoop, system: KVMSystem) throws(KVMError) -> Duration {
        let memory = MappedGuestMemory()
        let vm = try system.createVM()
        let mapping: GuestMemoryMapping
        do {
            mapping = try memory.addRegion(GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 0x20_0000))
            func entry(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) } }
            try memory.write(entry(0x3000 | 0x3), at: GuestPhysicalAddress(0x2000))        // PML4[0] → PDPT, P|RW
            try memory.write(entry(0x4000 | 0x3), at: GuestPhysicalAddress(0x3000))        // PDPT[0] → PD, P|RW
            try memory.write(entry(0x0000 | 0x83), at: GuestPhysicalAddress(0x4000))       // PD[0]: 2 MiB page, P|RW|PS
            try memory.write(guest.loop, at: GuestPhysicalAddress(LongModeLoop.loopAddress))
            if !guest.stub.isEmpty { try memory.write(guest.stub, at: GuestPhysicalAddress(LongModeLoop.stubAddress)) }
        } catch {
            throw .invalidArgument("guest memory: \(error)")
        }
        try vm.addMemory(mapping)
        let vcpu = try vm.createVCPU(id: KVMVCPUID(0))
        try vcpu.setPVHEntryState(entry: UInt32(LongModeLoop.loopAddress), startInfo: 0)
        var s = vcpu.specialRegisters
        s.cs = SegmentRegister(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0xb, present: true, dpl: 0, db: false, s: true, l: true, g: true)
        s.cr3 = 0x2000
        s.cr4 = 1 << 5  // PAE
        s.cr0 = X86SpecialRegisters.cr0PE | X86SpecialRegisters.cr0ET | X86SpecialRegisters.cr0PG
        s.efer = X86SpecialRegisters.eferLME | X86SpecialRegisters.eferLMA
        vcpu.specialRegisters = s
        var r = vcpu.registers
        r.rip = LongModeLoop.loopAddress
        r.rbx = LongModeLoop.stubAddress
        r.rcx = UInt64.max
        r.rsp = 0x8000
        r.rdi = 0; r.rsi = 0
        vcpu.registers = r
        if guest.breakpointSkip != nil {
            try vcpu.setGuestDebug(hardwareBreakpoints: [GuestLinearAddress(LongModeLoop.stubAddress)])
        }
        // One round trip: a port-I/O exit, or a debug exit whose instruction
        // is skipped.
        func roundTrip() throws(KVMError) -> Bool {
            var exit = try vcpu.run()
            if exit == .interrupted { exit = try vcpu.run() }
            switch (exit, guest.breakpointSkip) {
            case (.io, nil): return true
            case (.debug, let skip?):
                var regs = vcpu.registers
                regs.rip &+= skip
                vcpu.registers = regs
                return true
            default: return false
            }
        }
        for _ in 0..<100 {
            guard try roundTrip() else { throw .invalidArgument("bare 64-bit loop: unexpected exit") }
        }
        return try timeRoundTrips(iterations, vcpu: vcpu, roundTrip)
    }

    /// The reference for "start to first guest exit": create a VM with
    /// `memoryMiB` of RAM and one vCPU in PVH entry state, run it until its
    /// first exit (`out 0xe9, al`). Returns the elapsed time.
    public static func createAndFirstExit(memoryMiB: Int, system: KVMSystem) throws(KVMError) -> Duration {
        let clock = ContinuousClock()
        let start = clock.now
        let memory = MappedGuestMemory()
        let vm = try system.createVM()
        try vm.enableSplitIRQChip()
        let mapping: GuestMemoryMapping
        do {
            mapping = try memory.addRegion(GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(memoryMiB) << 20))
            try memory.write([0xE6, 0xE9, 0xF4], at: GuestPhysicalAddress(0x1000))  // out 0xe9, al; hlt
        } catch {
            throw .invalidArgument("guest memory: \(error)")
        }
        try vm.addMemory(mapping)
        let vcpu = try vm.createVCPU(id: KVMVCPUID(0))
        try vcpu.setPVHEntryState(entry: 0x1000, startInfo: 0)
        guard case .io = try vcpu.run() else { throw .invalidArgument("unexpected first exit") }
        return clock.now - start
    }
}
