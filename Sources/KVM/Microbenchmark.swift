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
        let clock = ContinuousClock()
        var failure: KVMError?
        let elapsed = clock.measure {
            for i in 0..<iterations {
                do throws(KVMError) {
                    var exit = try vcpu.run()
                    // A kick signal left pending on this thread (e.g. by an
                    // earlier VCPU) surfaces once as a spurious .interrupted.
                    if exit == .interrupted { exit = try vcpu.run() }
                    guard case .io = exit else {
                        failure = .invalidArgument("unexpected exit in benchmark: \(exit)")
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
