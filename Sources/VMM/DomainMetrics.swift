import KVM
import Locking
import Synchronization
import XenABI

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
    /// User-mode `int n`, `int1` and `int3` (DPL0 gate) pvh delivered as the CPU would (software backend, `UserModeTrap`).
    public let userTrapsCompleted = Atomic<UInt64>(0)
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
    public let firstExit = Lock<ContinuousClock.Instant?>(nil)

    /// Each vCPU's host thread id (Linux `gettid`), by vCPU index, once its
    /// thread runs: where its CPU time is read at scrape time
    /// (`/proc/self/task/TID/stat`), so the vCPU loop counts nothing for it.
    public let vcpuThreadIDs = Lock<[Int: Int32]>([:])

    /// Hypercalls by number (`cells[n]` for Xen's hypercall `n` below
    /// `hypercallSlots`, the last cell for any other number), counted as
    /// each reaches the dispatcher: one relaxed add on the vCPU thread.
    public let hypercallsByNumber: [CounterCell] = (0...DomainMetrics.hypercallSlots).map { _ in CounterCell() }
    /// KVM exits by reason (`cells[ExitReason.rawValue]`).
    public let exitsByReason: [CounterCell] = ExitReason.allCases.map { _ in CounterCell() }
    /// EVTCHNOP_send calls from the guest (event_channel.h): its
    /// notifications to backends and to itself.
    public let eventChannelSends = Atomic<UInt64>(0)

    /// Hypercall numbers counted one by one: Xen's are below 64
    /// (xen.h: `__HYPERVISOR_arch_7` is 55).
    public static let hypercallSlots = 64

    public init() {}

    /// Counts one hypercall with `number` whose first argument is `command`.
    func countHypercall(_ number: UInt64, command: UInt64) {
        hypercallsByNumber[number < UInt64(Self.hypercallSlots) ? Int(number) : Self.hypercallSlots].bump()
        if number == Self.eventChannelOp && command == Self.send { eventChannelSends.wrappingAdd(1, ordering: .relaxed) }
    }

    private static let eventChannelOp = UInt64(HypercallNumber.eventChannelOp.rawValue)
    private static let send = UInt64(EventChannelOpCommand.send.rawValue)

    func noteFirstExit() {
        let now = ContinuousClock.now
        firstExit.withLock { if $0 == nil { $0 = now } }
    }

    static func bump(_ counter: borrowing Atomic<UInt64>) {
        counter.wrappingAdd(1, ordering: .relaxed)
    }
}

/// One relaxed counter a scrape reads (an array of these is a lock-free
/// histogram by index).
public final class CounterCell: Sendable {
    public let value = Atomic<UInt64>(0)
    public init() {}
    func bump() { value.wrappingAdd(1, ordering: .relaxed) }
    public var current: UInt64 { value.load(ordering: .relaxed) }
}

/// Why a vCPU left KVM_RUN, for `pvh_exits_by_reason_total`: one case per
/// `VCPUExit` case, closed.
public enum ExitReason: Int, CaseIterable, Sendable {
    case io, mmio, wrmsr, rdmsr, debug, halt, shutdown, internalError, systemEvent, xenHypercall, interrupted
    case interruptWindow, failEntry, unknown

    init(_ exit: VCPUExit) {
        self = switch exit {
        case .io: .io
        case .mmio: .mmio
        case .wrmsr: .wrmsr
        case .rdmsr: .rdmsr
        case .debug: .debug
        case .halt: .halt
        case .shutdown: .shutdown
        case .internalError: .internalError
        case .systemEvent: .systemEvent
        case .xenHypercall: .xenHypercall
        case .interrupted: .interrupted
        case .interruptWindowOpen: .interruptWindow
        case .failEntry: .failEntry
        case .unknown: .unknown
        }
    }

    /// The `reason` label (KVM's exit names, lower case).
    public var label: String {
        switch self {
        case .io: "io"
        case .mmio: "mmio"
        case .wrmsr: "wrmsr"
        case .rdmsr: "rdmsr"
        case .debug: "debug"
        case .halt: "hlt"
        case .shutdown: "shutdown"
        case .internalError: "internal_error"
        case .systemEvent: "system_event"
        case .xenHypercall: "xen"
        case .interrupted: "intr"
        case .interruptWindow: "irq_window_open"
        case .failEntry: "fail_entry"
        case .unknown: "unknown"
        }
    }
}
