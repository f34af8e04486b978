import CXen

private func field<Root, Value>(_ path: KeyPath<Root, Value>, _: Root.Type, base: Int = 0) -> WireField {
    WireField(offset: base + (MemoryLayout<Root>.offset(of: path) ?? 0), size: MemoryLayout<Value>.size)
}

// Argument structures of vcpu_op's timer, runstate and SMP operations
// (vcpu.h, hvm/hvm_vcpu.h) and of SCHEDOP_poll (sched.h).
extension XenWire {
    /// `struct vcpu_set_singleshot_timer` {`timeout_abs_ns`, `flags`}: 16
    /// bytes natively; 12 in the compat ABI (its `uint64_t` is 4-byte aligned,
    /// so there is no tail padding; xen/common/compat/domain.c copies the
    /// compat struct and translates it).
    public enum VCPUSetSingleshotTimer {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? MemoryLayout<vcpu_set_singleshot_timer>.size : 12
        }
        public static let timeoutAbsoluteNanoseconds = field(\vcpu_set_singleshot_timer.timeout_abs_ns, vcpu_set_singleshot_timer.self)
        public static let flags = field(\vcpu_set_singleshot_timer.flags, vcpu_set_singleshot_timer.self)
    }

    /// `struct vcpu_set_periodic_timer` {`period_ns`}: the same in both ABIs.
    public enum VCPUSetPeriodicTimer {
        public static let size = MemoryLayout<vcpu_set_periodic_timer>.size
        public static let period = field(\vcpu_set_periodic_timer.period_ns, vcpu_set_periodic_timer.self)
    }

    /// `struct vcpu_register_time_memory_area` and `struct
    /// vcpu_register_runstate_memory_area`: one guest handle (a guest
    /// *virtual* address). Natively the union with `uint64_t p` makes it 8
    /// bytes; the compat code copies only the 4-byte compat handle
    /// (xen/arch/x86/x86_64/domain.c compat_vcpu_op: `copy_from_guest(&area.addr.h, arg, 1)`).
    public enum VCPURegisterMemoryArea {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? Int(PVH_VCPU_REGISTER_TIME_AREA_SIZE) : 4
        }
        public static func address(_ mode: GuestCPUMode) -> WireField {
            WireField(offset: 0, size: size(mode))
        }
    }

    /// `struct vcpu_runstate_info` {`int state`, `uint64_t state_entry_time`,
    /// `uint64_t time[4]`}: 48 bytes natively; 44 in the compat layout
    /// (`uint64_t` 4-byte aligned: entry time at 4, times from 12). Xen writes
    /// the compat layout when the domain's shared_info is 32-bit
    /// (`has_32bit_shinfo`, domain.c update_runstate_area) and for a 32-bit
    /// caller of VCPUOP_get_runstate_info (compat_common_vcpu_op).
    public enum VCPURunstateInfo {
        public static func size(compat: Bool) -> Int { compat ? 44 : MemoryLayout<vcpu_runstate_info>.size }
        public static let state = field(\vcpu_runstate_info.state, vcpu_runstate_info.self)
        public static func stateEntryTime(compat: Bool) -> WireField {
            compat ? WireField(offset: 4, size: 8) : field(\vcpu_runstate_info.state_entry_time, vcpu_runstate_info.self)
        }
        /// `time[index]`, index a `RUNSTATE_*` value (0...3).
        public static func time(_ index: Int, compat: Bool) -> WireField {
            let base = compat ? 12 : (MemoryLayout<vcpu_runstate_info>.offset(of: \vcpu_runstate_info.time) ?? 16)
            return WireField(offset: base + 8 * index, size: 8)
        }
    }

    /// `struct sched_poll` {`ports` handle, `nr_ports`, `timeout`}: 24 bytes
    /// natively; 16 in the compat layout (4-byte handle, `nr_ports` at 4,
    /// `timeout` at 8).
    public enum SchedPoll {
        public static func size(_ mode: GuestCPUMode) -> Int {
            mode == .long64 ? Int(PVH_SCHED_POLL_SIZE) : 16
        }
        public static func ports(_ mode: GuestCPUMode) -> WireField {
            mode == .long64
                ? WireField(offset: Int(PVH_SCHED_POLL_PORTS_OFFSET), size: Int(PVH_SCHED_POLL_PORTS_SIZE))
                : WireField(offset: 0, size: 4)
        }
        public static func nrPorts(_ mode: GuestCPUMode) -> WireField {
            WireField(offset: mode == .long64 ? Int(PVH_SCHED_POLL_NR_PORTS_OFFSET) : 4, size: 4)
        }
        public static func timeout(_ mode: GuestCPUMode) -> WireField {
            WireField(offset: mode == .long64 ? Int(PVH_SCHED_POLL_TIMEOUT_OFFSET) : 8, size: 8)
        }
        /// The size of one `evtchn_port_t` in the port list.
        public static let portSize = MemoryLayout<evtchn_port_t>.size
    }

    /// `struct vcpu_hvm_context` (hvm/hvm_vcpu.h): 128 bytes. The union
    /// starts at 8 and its members hold only fixed-width fields with natural
    /// alignment, so the compat layout is the same.
    public enum VCPUHVMContext {
        public static let size = MemoryLayout<vcpu_hvm_context>.size
        public static let mode = field(\vcpu_hvm_context.mode, vcpu_hvm_context.self)
        public static let pad = field(\vcpu_hvm_context.pad, vcpu_hvm_context.self)
        static let union = MemoryLayout<vcpu_hvm_context>.offset(of: \vcpu_hvm_context.cpu_regs) ?? 8

        /// `VCPU_HVM_MODE_32B`, `VCPU_HVM_MODE_64B`.
        public static let mode32 = UInt32(VCPU_HVM_MODE_32B)
        public static let mode64 = UInt32(VCPU_HVM_MODE_64B)

        /// `struct vcpu_hvm_x86_32` inside the union.
        public enum X86_32 {
            private typealias S = vcpu_hvm_x86_32
            private static func f<V>(_ p: KeyPath<S, V>) -> WireField { field(p, S.self, base: union) }
            public static let eax = f(\.eax), ecx = f(\.ecx), edx = f(\.edx), ebx = f(\.ebx)
            public static let esp = f(\.esp), ebp = f(\.ebp), esi = f(\.esi), edi = f(\.edi)
            public static let eip = f(\.eip), eflags = f(\.eflags)
            public static let cr0 = f(\.cr0), cr3 = f(\.cr3), cr4 = f(\.cr4), pad1 = f(\.pad1), efer = f(\.efer)
            public static let csBase = f(\.cs_base), dsBase = f(\.ds_base), ssBase = f(\.ss_base)
            public static let esBase = f(\.es_base), trBase = f(\.tr_base)
            public static let csLimit = f(\.cs_limit), dsLimit = f(\.ds_limit), ssLimit = f(\.ss_limit)
            public static let esLimit = f(\.es_limit), trLimit = f(\.tr_limit)
            public static let csAR = f(\.cs_ar), dsAR = f(\.ds_ar), ssAR = f(\.ss_ar), esAR = f(\.es_ar), trAR = f(\.tr_ar)
            /// `pad2[3]`: three `uint16_t`.
            public static let pad2 = f(\.pad2)
        }

        /// `struct vcpu_hvm_x86_64` inside the union.
        public enum X86_64 {
            private typealias S = vcpu_hvm_x86_64
            private static func f<V>(_ p: KeyPath<S, V>) -> WireField { field(p, S.self, base: union) }
            public static let rax = f(\.rax), rcx = f(\.rcx), rdx = f(\.rdx), rbx = f(\.rbx)
            public static let rsp = f(\.rsp), rbp = f(\.rbp), rsi = f(\.rsi), rdi = f(\.rdi)
            public static let rip = f(\.rip), rflags = f(\.rflags)
            public static let cr0 = f(\.cr0), cr3 = f(\.cr3), cr4 = f(\.cr4), efer = f(\.efer)
        }
    }
}

/// `RUNSTATE_*` (vcpu.h).
public enum VCPURunstate: XenSubOperation {
    case running, runnable, blocked, offline
    public var rawValue: UInt32 {
        switch self {
        case .running: xenConstant(RUNSTATE_running)
        case .runnable: xenConstant(RUNSTATE_runnable)
        case .blocked: xenConstant(RUNSTATE_blocked)
        case .offline: xenConstant(RUNSTATE_offline)
        }
    }
}
