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
}
