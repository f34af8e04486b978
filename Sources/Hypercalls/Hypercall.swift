import XenABI

/// A decoded hypercall: the number and the argument registers, typed. Decoding
/// reads registers only; structures behind pointers are copied in by the
/// handler, once.
///
/// Argument widths follow the C prototypes Xen calls with the raw registers
/// (xen/include/hypercall-defs.c): `int`/`unsigned int` arguments keep only
/// their low 32 bits even in 64-bit mode; `unsigned long` keeps all 64.
public enum Hypercall: Hashable, Sendable {
    /// `xen_version(int cmd, void *arg)`.
    case xenVersion(XenVersionCommand, GuestVirtualAddress)
    /// `console_io(unsigned int cmd, unsigned int count, char *buffer)`.
    case consoleIO(ConsoleIOCall)
    /// `sched_op(int cmd, void *arg)`.
    case schedOp(SchedOpCommand, GuestVirtualAddress)
    /// `memory_op(unsigned long cmd, void *arg)`: the low 6 bits of `cmd` are
    /// the sub-op, the rest a continuation's start extent.
    case memoryOp(MemoryOpCommand, startExtent: UInt64, GuestVirtualAddress)
    /// `vcpu_op(int cmd, unsigned int vcpuid, void *arg)`.
    case vcpuOp(VCPUOpCommand, VCPUID, GuestVirtualAddress)
    /// `hvm_op(unsigned long op, void *arg)`.
    case hvmOp(HVMOpCommand, GuestVirtualAddress)
    /// `event_channel_op(int cmd, void *arg)`.
    case eventChannelOp(EventChannelOpCommand, GuestVirtualAddress)
    /// `grant_table_op(unsigned int cmd, void *uop, unsigned int count)`.
    /// A command with bits above the sub-op (Xen's continuation bits) is an
    /// unknown sub-operation: HVM guests reach only the listed commands
    /// (xen/arch/x86/hvm/hypercall.c hvm_grant_table_op).
    case grantTableOp(GrantTableOpCommand, GuestVirtualAddress, count: UInt32)
    /// `set_timer_op(s_time_t timeout)`: one 64-bit register in 64-bit mode;
    /// from a 32-bit caller `compat_set_timer_op(uint32_t lo, uint32_t hi)`,
    /// the low half in EBX and the high half in ECX (xen/include/hypercall-defs.c:
    /// HVM32 uses the compat entry, HVM64 `do`; xen/common/sched/compat.c).
    case setTimerOp(UInt64)
    /// A handled hypercall whose sub-operation Xen's header does not name.
    case unknownSubOperation(HypercallNumber, subOperation: UInt64, arguments: [UInt64])
    /// A Xen hypercall this VMM does not implement (yet): -ENOSYS.
    case unimplemented(HypercallNumber, arguments: [UInt64])
    /// Not a Xen hypercall number: -ENOSYS.
    case unknown(UInt64)

    /// Decodes `registers` (never fails: anything unrecognised is `.unknown…`).
    public init(decoding registers: HypercallRegisters) {
        let args = registers.arguments
        let rawNumber = registers.number
        guard let number = HypercallNumber(rawValue: rawNumber) else {
            self = .unknown(rawNumber)
            return
        }
        func int32(_ i: Int) -> UInt64 { args[i] & 0xffff_ffff }
        func pointer(_ i: Int) -> GuestVirtualAddress { GuestVirtualAddress(args[i]) }
        func unknownSubOp(_ raw: UInt64) -> Hypercall {
            .unknownSubOperation(number, subOperation: raw, arguments: args)
        }
        switch number {
        case .xenVersion:
            guard let command = XenVersionCommand(rawValue: int32(0)) else { self = unknownSubOp(int32(0)); return }
            self = .xenVersion(command, pointer(1))
        case .consoleIO:
            let count = UInt32(truncatingIfNeeded: args[1])
            switch ConsoleIOCommand(rawValue: int32(0)) {
            case .write: self = .consoleIO(.write(count: count, buffer: pointer(2)))
            case .read: self = .consoleIO(.read(count: count, buffer: pointer(2)))
            case nil: self = unknownSubOp(int32(0))
            }
        case .schedOp:
            guard let command = SchedOpCommand(rawValue: int32(0)) else { self = unknownSubOp(int32(0)); return }
            self = .schedOp(command, pointer(1))
        case .memoryOp:
            let op = args[0] & MemoryOpCommand.commandMask
            guard let command = MemoryOpCommand(rawValue: op) else { self = unknownSubOp(args[0]); return }
            self = .memoryOp(command, startExtent: args[0] >> MemoryOpCommand.extentShift, pointer(1))
        case .vcpuOp:
            guard let command = VCPUOpCommand(rawValue: int32(0)) else { self = unknownSubOp(int32(0)); return }
            self = .vcpuOp(command, VCPUID(UInt32(truncatingIfNeeded: args[1])), pointer(2))
        case .hvmOp:
            guard let command = HVMOpCommand(rawValue: args[0]) else { self = unknownSubOp(args[0]); return }
            self = .hvmOp(command, pointer(1))
        case .eventChannelOp:
            guard let command = EventChannelOpCommand(rawValue: int32(0)) else { self = unknownSubOp(int32(0)); return }
            self = .eventChannelOp(command, pointer(1))
        case .grantTableOp:
            guard let command = GrantTableOpCommand(rawValue: int32(0)) else { self = unknownSubOp(int32(0)); return }
            self = .grantTableOp(command, pointer(1), count: UInt32(truncatingIfNeeded: args[2]))
        case .setTimerOp:
            self = .setTimerOp(registers.mode == .long64 ? args[0] : (args[1] << 32) | args[0])
        default:
            self = .unimplemented(number, arguments: args)
        }
    }
}

/// `console_io` sub-operations with their arguments.
public enum ConsoleIOCall: Hashable, Sendable {
    /// `CONSOLEIO_write`: `count` bytes from `buffer` to the console.
    case write(count: UInt32, buffer: GuestVirtualAddress)
    /// `CONSOLEIO_read`: up to `count` bytes of console input into `buffer`.
    case read(count: UInt32, buffer: GuestVirtualAddress)
}
