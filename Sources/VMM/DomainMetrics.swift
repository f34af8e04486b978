import Synchronization

/// Counters a domain keeps about itself: which transport each hypercall came
/// through, and how many exits of each kind. Read by tests, `pvh` and benchmarks.
public final class DomainMetrics: Sendable {
    /// Hypercalls through the hypercall page (port 0xEA stubs).
    public let pageHypercalls = Atomic<UInt64>(0)
    /// Hypercalls through a breakpoint on a vmcall/vmmcall site.
    public let breakpointHypercalls = Atomic<UInt64>(0)
    /// Hypercalls intercepted by KVM itself (KVM_XEN_HVM_CONFIG hosts).
    public let kvmXenHypercalls = Atomic<UInt64>(0)
    /// Hypercall-page installs (MSR writes).
    public let hypercallPageInstalls = Atomic<UInt64>(0)
    /// Emulation failures delivered to the guest's IDT (software backend).
    public let emulationFailuresDelivered = Atomic<UInt64>(0)
    /// User SYSCALLs whose privilege change pvh finished (software backend).
    public let syscallsCompleted = Atomic<UInt64>(0)
    /// Event-channel upcalls injected into a vCPU's local APIC.
    public let upcallsInjected = Atomic<UInt64>(0)
    /// Upcall vectors a vCPU's local APIC refused (KVM_SIGNAL_MSI returned
    /// 0, the LAPIC is software-disabled): each is owed and retried.
    public let upcallsRefused = Atomic<UInt64>(0)
    /// Owed upcalls a local APIC took on a retry (counted in `upcallsInjected` too).
    public let upcallsOwedDelivered = Atomic<UInt64>(0)
    /// HVM_PARAM_CALLBACK_IRQ vectors queued as ExtINT (`CallbackVectorDelivery`).
    public let callbackVectorsQueued = Atomic<UInt64>(0)
    /// SCHEDOP_block calls that slept.
    public let blocks = Atomic<UInt64>(0)
    /// Power-offs through the ACPI sleep control register (S5).
    public let acpiPowerOffs = Atomic<UInt64>(0)
    /// All KVM exits.
    public let exits = Atomic<UInt64>(0)
    /// When the first vCPU first left KVM_RUN for a guest reason: the time of
    /// the guest's first exit, which for a guest whose first instruction
    /// traps (the test guest's POST-code OUT) is its first instruction.
    public let firstExit = Mutex<ContinuousClock.Instant?>(nil)

    /// Each vCPU's host thread id (Linux `gettid`), by vCPU index, once its
    /// thread runs: where its CPU time is read at scrape time
    /// (`/proc/self/task/TID/stat`), so the vCPU loop counts nothing for it.
    public let vcpuThreadIDs = Mutex<[Int: Int32]>([:])

    public init() {}

    func noteFirstExit() {
        let now = ContinuousClock.now
        firstExit.withLock { if $0 == nil { $0 = now } }
    }

    static func bump(_ counter: borrowing Atomic<UInt64>) {
        counter.wrappingAdd(1, ordering: .relaxed)
    }
}
