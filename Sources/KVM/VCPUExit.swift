import GuestMemory

/// Why KVM_RUN returned (`kvm_run.exit_reason`, Documentation/virt/kvm/api.rst
/// §5 "The kvm_run structure"). Payloads are copies; completions that must
/// reach the kernel before the next KVM_RUN (IN data, MMIO read data, MSR
/// results) go through `VCPU.complete…`.
public enum VCPUExit: Equatable, Sendable {
    /// KVM_EXIT_IO: IN/OUT/INS/OUTS. For `.in`, supply the data with
    /// `VCPU.completeIOIn(_:)` before the next `run()`.
    case io(IOExit)
    /// KVM_EXIT_MMIO: access to guest-physical memory no slot backs. For
    /// reads, supply the data with `VCPU.completeMMIORead(_:)`.
    case mmio(MMIOExit)
    /// KVM_EXIT_HLT (only without an in-kernel local APIC: with the split
    /// irqchip KVM blocks the vCPU itself until an interrupt arrives).
    case halt
    /// KVM_EXIT_SHUTDOWN: triple fault.
    case shutdown
    /// KVM_EXIT_X86_WRMSR (filtered or unknown MSR). Complete with
    /// `VCPU.completeMSR(error:)`.
    case wrmsr(MSRIndex, value: UInt64)
    /// KVM_EXIT_X86_RDMSR. Complete with `VCPU.completeMSR(value:error:)`.
    case rdmsr(MSRIndex)
    /// KVM_EXIT_DEBUG (`struct kvm_debug_exit_arch`): a hardware breakpoint
    /// or single step. `exception` is the vector (1 = #DB, 3 = #BP).
    case debug(pc: GuestLinearAddress, dr6: UInt64, dr7: UInt64, exception: UInt32)
    /// KVM_EXIT_INTERNAL_ERROR: KVM could not continue (on a software backend,
    /// usually an instruction its emulator cannot run; see `EmulationFailure`).
    case internalError(InternalError)
    /// KVM_EXIT_SYSTEM_EVENT.
    case systemEvent(SystemEvent)
    /// KVM_EXIT_XEN (KVM_EXIT_XEN_HCALL), only with KVM_XEN_HVM_CONFIG. Complete
    /// with `VCPU.completeXenHypercall(result:)`.
    case xenHypercall(XenHypercallExit)
    /// KVM_RUN returned EINTR: `kick()`, another signal, or immediate_exit.
    case interrupted
    /// KVM_EXIT_IRQ_WINDOW_OPEN: `VCPU.requestInterruptWindow` was set and
    /// the vCPU can take an interrupt now (RFLAGS.IF set, no interrupt
    /// shadow, nothing queued in KVM).
    case interruptWindowOpen
    /// KVM_EXIT_FAIL_ENTRY: the hardware refused VM entry.
    case failEntry(reason: UInt64, cpu: UInt32)
    /// Any other exit reason (KVM_EXIT_* number).
    case unknown(reason: UInt32)
}

/// A port I/O exit (`kvm_run.io`).
public struct IOExit: Equatable, Sendable {
    public enum Direction: Equatable, Sendable {
        /// KVM_EXIT_IO_IN: the guest reads; pvh supplies data.
        case `in`
        /// KVM_EXIT_IO_OUT: the guest writes `data`.
        case out
    }
    public var port: IOPort
    public var direction: Direction
    /// Access width in bytes: 1, 2 or 4.
    public var size: Int
    /// Repetitions (>1 only for REP INS/OUTS).
    public var count: Int
    /// For `.out`, the `size * count` bytes written; empty for `.in`.
    public var data: [UInt8]

    public init(port: IOPort, direction: Direction, size: Int, count: Int, data: [UInt8]) {
        self.port = port; self.direction = direction; self.size = size; self.count = count; self.data = data
    }

    /// The first element of an OUT as a little-endian integer (e.g. EAX of `out dx, eax`).
    public var value: UInt32 {
        var v: UInt32 = 0
        for (i, b) in data.prefix(min(size, 4)).enumerated() { v |= UInt32(b) << (8 * i) }
        return v
    }
}

/// An MMIO exit (`kvm_run.mmio`).
public struct MMIOExit: Equatable, Sendable {
    public var address: GuestPhysicalAddress
    public var isWrite: Bool
    /// Access length in bytes (1–8).
    public var length: Int
    /// For writes, the bytes written; empty for reads.
    public var data: [UInt8]
    public init(address: GuestPhysicalAddress, isWrite: Bool, length: Int, data: [UInt8]) {
        self.address = address; self.isWrite = isWrite; self.length = length; self.data = data
    }
}

/// KVM_EXIT_INTERNAL_ERROR (`kvm_run.internal` / `kvm_run.emulation_failure`).
public struct InternalError: Equatable, Sendable, CustomStringConvertible {
    public enum Suberror: Equatable, Sendable {
        /// KVM_INTERNAL_ERROR_EMULATION: the instruction emulator failed.
        case emulation
        /// KVM_INTERNAL_ERROR_SIMUL_EX: an exception while delivering one.
        case simultaneousException
        /// KVM_INTERNAL_ERROR_DELIVERY_EV: event delivery faulted.
        case deliveryEvent
        /// KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON.
        case unexpectedExitReason
        case other(UInt32)
    }
    public var suberror: Suberror
    /// For `.emulation` with KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES
    /// (KVM_CAP_EXIT_ON_EMULATION_FAILURE): the bytes at the failing RIP.
    public var instructionBytes: [UInt8]
    /// The raw `internal.data[0..<ndata]` words (debug information).
    public var data: [UInt64]

    public init(suberror: Suberror, instructionBytes: [UInt8] = [], data: [UInt64] = []) {
        self.suberror = suberror; self.instructionBytes = instructionBytes; self.data = data
    }

    public var description: String {
        var s = "KVM internal error (\(suberror))"
        if !instructionBytes.isEmpty {
            s += ", instruction bytes " + instructionBytes.map { b in
                let h = String(b, radix: 16)
                return h.count == 1 ? "0" + h : h
            }.joined(separator: " ")
        }
        return s
    }
}

/// KVM_EXIT_SYSTEM_EVENT types (`kvm_run.system_event.type`).
public enum SystemEvent: Equatable, Sendable {
    case shutdown, reset, crash, wakeup, suspend
    case other(UInt32)
}

/// KVM_EXIT_XEN / KVM_EXIT_XEN_HCALL (`kvm_run.xen.u.hcall`).
public struct XenHypercallExit: Equatable, Sendable {
    public var longMode: Bool
    public var cpl: UInt32
    /// The hypercall number.
    public var input: UInt64
    /// Arguments 1–6 in ABI order.
    public var params: [UInt64]
    public init(longMode: Bool, cpl: UInt32, input: UInt64, params: [UInt64]) {
        self.longMode = longMode; self.cpl = cpl; self.input = input; self.params = params
    }
}
