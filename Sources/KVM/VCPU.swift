import CKVM
import GuestMemory
import Locking
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One virtual CPU: its fd and its mapped `struct kvm_run`.
///
/// Threading: every method except `kick()` must be called from one thread at
/// a time (normally the vCPU's own thread, which calls `run()` in a loop,
/// then `releaseThread()` before it ends). `kick()` may be called from any
/// thread.
///
/// Registers travel in kvm_run's sync-register block (KVM_CAP_SYNC_REGS,
/// api.rst §5 "kvm_valid_regs/kvm_dirty_regs"): KVM stores REGS, SREGS and
/// EVENTS there on every exit, so reading `registers` after an exit costs no
/// ioctl; writing marks the block dirty and KVM loads it on the next KVM_RUN.
public final class VCPU: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): the only cross-thread entry point is
    // kick(), which touches `kickTarget` (a lock) and kvm_run.immediate_exit
    // (atomic store in C). Everything else is documented single-threaded.
    public let id: KVMVCPUID
    let fd: Int32
    let kvmRun: UnsafeMutablePointer<kvm_run>
    let sync: UnsafeMutablePointer<kvm_sync_regs>
    let mmapSize: Int
    let capabilities: KVMCapabilities

    /// pthread_t of the thread that last entered `run()` (0: none yet, or
    /// released). Read without a lock by `run()` and `isCurrentThread`.
    private let thread = Atomic<UInt>(0)
    /// The thread `kick()` signals (0: none). A lock, not an atomic: kick()
    /// signals while holding it and `releaseThread()` clears it under it, so
    /// no kick can signal a thread that has released the vCPU and gone
    /// (pthread_kill on an ended thread's pthread_t is undefined; glibc may
    /// have given it to a new thread by then).
    private let kickTarget = Lock<UInt>(0)
    /// For the last KVM_EXIT_IO with direction IN: where the data goes.
    private var pendingIn: (offset: Int, length: Int)?
    /// The last exit was an MMIO read of this many bytes.
    private var pendingMMIORead: Int?

    /// The signal `kick()` sends. Its handler is a no-op installed without
    /// SA_RESTART. `run()` blocks it on the vCPU thread except inside
    /// KVM_RUN (KVM_SET_SIGNAL_MASK), so it interrupts KVM_RUN only.
    public static let kickSignal: Int32 = pvh_vcpu_kick_signal()
    private static let kickHandlerInstalled: Bool = pvh_install_kick_handler(kickSignal) == 0

    static let syncAll = UInt64(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS | KVM_SYNC_X86_EVENTS)

    init(id: KVMVCPUID, fd: Int32, mmapSize: Int, capabilities: KVMCapabilities) throws(KVMError) {
        guard capabilities.fullSyncRegs else { throw .unsupported("KVM_CAP_SYNC_REGS with REGS|SREGS|EVENTS") }
        guard mmapSize >= MemoryLayout<kvm_run>.size else { throw .invalidArgument("KVM_GET_VCPU_MMAP_SIZE \(mmapSize) < sizeof(kvm_run)") }
        let p = mmap(nil, mmapSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw .mmap(errno: errno) }
        self.id = id
        self.fd = fd
        self.mmapSize = mmapSize
        self.capabilities = capabilities
        // SAFETY: offset 0 of the vCPU mapping is a struct kvm_run (api.rst
        // KVM_GET_VCPU_MMAP_SIZE); the mapping lives until deinit.
        self.kvmRun = p.bindMemory(to: kvm_run.self, capacity: 1)
        // SAFETY: kvm_run.s.regs is a struct kvm_sync_regs at this offset inside the same mapping.
        self.sync = (p + Int(PVH_KVM_RUN_SYNC_REGS_OFFSET)).bindMemory(to: kvm_sync_regs.self, capacity: 1)
        guard VCPU.kickHandlerInstalled else { throw .unsupported("installing the vCPU kick signal's handler failed") }
        // Prime the sync block so `registers` is meaningful before the first
        // exit. KVM only reads it for bits set in kvm_dirty_regs.
        do throws(KVMError) {
            _ = try Syscall.ioctl(fd, PVH_KVM_GET_REGS, "KVM_GET_REGS", &sync.pointee.regs)
            _ = try Syscall.ioctl(fd, PVH_KVM_GET_SREGS, "KVM_GET_SREGS", &sync.pointee.sregs)
            _ = try Syscall.ioctl(fd, PVH_KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &sync.pointee.events)
        } catch {
            munmap(p, mmapSize)
            throw error
        }
        kvmRun.pointee.kvm_valid_regs = VCPU.syncAll
        kvmRun.pointee.kvm_dirty_regs = 0
    }

    deinit {
        // SAFETY: `kvmRun` is the start of the mmapSize-byte mapping made in init.
        munmap(UnsafeMutableRawPointer(kvmRun), mmapSize)
        close(fd)
    }

    // MARK: Running

    /// KVM_RUN until the next exit. Dirty registers are loaded first; after
    /// the exit, `registers`/`specialRegisters` hold the vCPU's state.
    /// EINTR (a `kick()`, any signal, or immediate_exit) is `.interrupted`,
    /// and so is EAGAIN (an AP that received INIT: run again).
    public func run() throws(KVMError) -> VCPUExit {
        let me = pvh_pthread_self()
        if me != thread.load(ordering: .relaxed) { try prepareThreadForKicks(me) }
        pendingIn = nil
        pendingMMIORead = nil
        do throws(KVMError) {
            _ = try Syscall.ioctl(fd, PVH_KVM_RUN, "KVM_RUN", value: 0)
        } catch {
            guard case .ioctl(_, let e) = error, e == EINTR || e == EAGAIN else { throw error }
            // EAGAIN: an AP parked in KVM_MP_STATE_UNINITIALIZED took its
            // INIT (x86.c kvm_arch_vcpu_ioctl_run returns -EAGAIN so that
            // userspace may look at it); run it again and KVM waits for the
            // SIPI, as QEMU's kvm_cpu_exec does. Linux's native INIT/SIPI
            // bring-up of secondary vCPUs takes this path.
            if e == EAGAIN { return .interrupted }
            pvh_kvm_run_set_immediate_exit(kvmRun, 0)
            pvh_consume_kick_signal(VCPU.kickSignal)
            return .interrupted
        }
        return decodeExit()
    }

    /// First `run()` on a thread: block `kickSignal` on the thread and let
    /// KVM unblock it only inside KVM_RUN (KVM_SET_SIGNAL_MASK, api.rst
    /// §4.19), so a kick interrupts KVM_RUN and nothing else. Swift
    /// concurrency's pool threads block most signals, so the mask cannot be
    /// taken for granted.
    ///
    /// A kick signal already pending on the thread was meant for another
    /// vCPU that ran here before (a late kick after its last `run()`), and is
    /// dropped: a kick meant for this vCPU is also carried by its own
    /// kvm_run.immediate_exit, which kick() sets before it signals.
    /// Otherwise the stale signal would end this vCPU's first KVM_RUN.
    private func prepareThreadForKicks(_ me: UInt) throws(KVMError) {
        var mask: UInt64 = 0
        let r = pvh_prepare_kick_thread(VCPU.kickSignal, &mask)
        guard r == 0 else { throw .ioctl(name: "pthread_sigmask", errno: r) }
        pvh_consume_kick_signal(VCPU.kickSignal)
        // struct kvm_signal_mask { __u32 len; __u8 sigset[]; } with len = 8.
        var buffer: (UInt32, UInt32, UInt32) = (8, UInt32(truncatingIfNeeded: mask), UInt32(truncatingIfNeeded: mask >> 32))
        _ = try Syscall.ioctl(fd, PVH_KVM_SET_SIGNAL_MASK, "KVM_SET_SIGNAL_MASK", &buffer)
        kickTarget.withLock { $0 = me }
        thread.store(me, ordering: .releasing)
    }

    /// Reads `kvm_run` after a successful KVM_RUN into a `VCPUExit`.
    private func decodeExit() -> VCPUExit {
        let r = kvmRun.pointee
        switch r.exit_reason {
        case UInt32(KVM_EXIT_IO):
            let io = r.io
            let size = Int(io.size), count = Int(io.count)
            let length = size * count
            let offset = Int(io.data_offset)
            // The kernel chose data_offset; still, never step outside the mapping.
            guard length >= 0, offset >= 0, offset <= mmapSize - length else {
                return .internalError(InternalError(suberror: .other(UInt32.max), data: [UInt64(offset), UInt64(length)]))
            }
            let port = IOPort(io.port)
            if io.direction == UInt8(KVM_EXIT_IO_OUT) {
                // SAFETY: [offset, offset+length) is inside the kvm_run mapping (checked above).
                let bytes = [UInt8](UnsafeRawBufferPointer(start: UnsafeRawPointer(kvmRun) + offset, count: length))
                return .io(IOExit(port: port, direction: .out, size: size, count: count, data: bytes))
            }
            pendingIn = (offset, length)
            return .io(IOExit(port: port, direction: .in, size: size, count: count, data: []))
        case UInt32(KVM_EXIT_MMIO):
            var m = r.mmio
            let len = min(Int(m.len), 8)
            let address = GuestPhysicalAddress(m.phys_addr)
            if m.is_write != 0 {
                let bytes = withUnsafeBytes(of: &m.data) { [UInt8]($0.prefix(len)) }
                return .mmio(MMIOExit(address: address, isWrite: true, length: len, data: bytes))
            }
            pendingMMIORead = len
            return .mmio(MMIOExit(address: address, isWrite: false, length: len, data: []))
        case UInt32(KVM_EXIT_HLT):
            return .halt
        case UInt32(KVM_EXIT_SHUTDOWN):
            return .shutdown
        case UInt32(KVM_EXIT_X86_WRMSR):
            return .wrmsr(MSRIndex(r.msr.index), value: r.msr.data)
        case UInt32(KVM_EXIT_X86_RDMSR):
            return .rdmsr(MSRIndex(r.msr.index))
        case UInt32(KVM_EXIT_DEBUG):
            let a = r.debug.arch
            return .debug(pc: GuestLinearAddress(a.pc), dr6: a.dr6, dr7: a.dr7, exception: a.exception)
        case UInt32(KVM_EXIT_INTERNAL_ERROR):
            return .internalError(decodeInternalError())
        case UInt32(KVM_EXIT_SYSTEM_EVENT):
            switch Int32(bitPattern: r.system_event.type) {
            case KVM_SYSTEM_EVENT_SHUTDOWN: return .systemEvent(.shutdown)
            case KVM_SYSTEM_EVENT_RESET: return .systemEvent(.reset)
            case KVM_SYSTEM_EVENT_CRASH: return .systemEvent(.crash)
            case KVM_SYSTEM_EVENT_WAKEUP: return .systemEvent(.wakeup)
            case KVM_SYSTEM_EVENT_SUSPEND: return .systemEvent(.suspend)
            default: return .systemEvent(.other(r.system_event.type))
            }
        case UInt32(KVM_EXIT_XEN):
            var x = r.xen
            guard x.type == UInt32(KVM_EXIT_XEN_HCALL) else { return .unknown(reason: r.exit_reason) }
            let params = withUnsafeBytes(of: &x.u.hcall.params) { Array($0.bindMemory(to: UInt64.self)) }
            return .xenHypercall(XenHypercallExit(longMode: x.u.hcall.longmode != 0, cpl: x.u.hcall.cpl,
                                                  input: x.u.hcall.input, params: params))
        case UInt32(KVM_EXIT_FAIL_ENTRY):
            return .failEntry(reason: r.fail_entry.hardware_entry_failure_reason, cpu: r.fail_entry.cpu)
        case UInt32(KVM_EXIT_IRQ_WINDOW_OPEN):
            return .interruptWindowOpen
        case UInt32(KVM_EXIT_INTR):
            pvh_kvm_run_set_immediate_exit(kvmRun, 0)
            pvh_consume_kick_signal(VCPU.kickSignal)
            return .interrupted
        default:
            return .unknown(reason: r.exit_reason)
        }
    }

    private func decodeInternalError() -> InternalError {
        var internalInfo = kvmRun.pointee.internal
        let suberror: InternalError.Suberror
        switch Int32(bitPattern: internalInfo.suberror) {
        case KVM_INTERNAL_ERROR_EMULATION: suberror = .emulation
        case KVM_INTERNAL_ERROR_SIMUL_EX: suberror = .simultaneousException
        case KVM_INTERNAL_ERROR_DELIVERY_EV: suberror = .deliveryEvent
        case KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: suberror = .unexpectedExitReason
        default: suberror = .other(internalInfo.suberror)
        }
        let n = min(Int(internalInfo.ndata), 16)
        let words = withUnsafeBytes(of: &internalInfo.data) { Array($0.bindMemory(to: UInt64.self).prefix(n)) }
        var insn = [UInt8](repeating: 0, count: 15)
        // SAFETY: `insn` has the 15 bytes the helper may write.
        let size = insn.withUnsafeMutableBufferPointer { pvh_kvm_run_emulation_insn(kvmRun, $0.baseAddress) }
        return InternalError(suberror: suberror, instructionBytes: Array(insn.prefix(Int(size))), data: words)
    }

    /// Whether the calling thread is the one that runs this vCPU (the last
    /// to call `run()`): work it asks for before the next entry needs no kick.
    public var isCurrentThread: Bool { thread.load(ordering: .relaxed) == pvh_pthread_self() }

    /// Makes `run()` return `.interrupted` soon: sets kvm_run.immediate_exit
    /// (covers a thread about to enter KVM_RUN) and signals the thread that
    /// last called `run()` with `kickSignal` (covers one inside KVM_RUN).
    /// Callable from any thread, also after the vCPU's thread has released
    /// it and ended (then only immediate_exit is set).
    public func kick() {
        pvh_kvm_run_set_immediate_exit(kvmRun, 1)
        kickTarget.withLock { t in
            if t != 0 { _ = pvh_pthread_kill(t, VCPU.kickSignal) }
        }
    }

    /// The calling thread, which ran this vCPU, runs it no more (it is about
    /// to end): from now on kicks do not signal it, and a kick signal
    /// already sent to it is dropped. Kicks still set immediate_exit, so a
    /// later `run()` on any thread sees them. Call on the vCPU's thread.
    public func releaseThread() {
        kickTarget.withLock { $0 = 0 }
        thread.store(0, ordering: .releasing)
        pvh_consume_kick_signal(VCPU.kickSignal)
    }

    // MARK: Completions (before the next run())

    /// Supplies the data for the last exit, an `.io` IN: `size * count` bytes
    /// (shorter input is zero-padded; longer is an error).
    public func completeIOIn(_ bytes: [UInt8]) throws(KVMError) {
        guard let (offset, length) = pendingIn else { throw .invalidArgument("completeIOIn without a pending IN exit") }
        guard bytes.count <= length else { throw .invalidArgument("\(bytes.count) bytes for a \(length)-byte IN") }
        // SAFETY: [offset, offset+length) was bounds-checked against the mapping in decodeExit.
        let dst = UnsafeMutableRawPointer(kvmRun) + offset
        dst.initializeMemory(as: UInt8.self, repeating: 0, count: length)
        bytes.withUnsafeBytes { src in dst.copyMemory(from: src.baseAddress ?? UnsafeRawPointer(dst), byteCount: src.count) }
    }

    /// Supplies the data for the last exit, an `.mmio` read.
    public func completeMMIORead(_ bytes: [UInt8]) throws(KVMError) {
        guard let len = pendingMMIORead else { throw .invalidArgument("completeMMIORead without a pending MMIO read") }
        guard bytes.count <= len else { throw .invalidArgument("\(bytes.count) bytes for a \(len)-byte MMIO read") }
        var m = kvmRun.pointee.mmio
        withUnsafeMutableBytes(of: &m.data) { d in
            for i in 0..<d.count { d[i] = i < bytes.count ? bytes[i] : 0 }
        }
        kvmRun.pointee.mmio = m
    }

    /// Completes a `.rdmsr`/`.wrmsr` exit: `value` is what RDMSR returns;
    /// `error` makes KVM inject #GP instead (kvm_run.msr.error).
    public func completeMSR(value: UInt64 = 0, error: Bool = false) {
        var m = kvmRun.pointee.msr
        m.data = value
        m.error = error ? 1 : 0
        kvmRun.pointee.msr = m
    }

    /// Completes a `.xenHypercall` exit: `result` goes to the guest's RAX.
    public func completeXenHypercall(result: UInt64) {
        var x = kvmRun.pointee.xen
        x.u.hcall.result = result
        kvmRun.pointee.xen = x
    }

    // MARK: Registers (sync regs)

    /// General-purpose registers. Reading is free after an exit; setting marks
    /// them dirty so KVM loads them on the next KVM_RUN.
    public var registers: X86Registers {
        get { X86Registers(sync.pointee.regs) }
        set {
            sync.pointee.regs = newValue.kvm
            kvmRun.pointee.kvm_dirty_regs |= UInt64(KVM_SYNC_X86_REGS)
        }
    }

    /// Control/segment/descriptor-table registers, as `registers`.
    public var specialRegisters: X86SpecialRegisters {
        get { X86SpecialRegisters(sync.pointee.sregs) }
        set {
            newValue.apply(to: &sync.pointee.sregs)
            kvmRun.pointee.kvm_dirty_regs |= UInt64(KVM_SYNC_X86_SREGS)
        }
    }

    /// The current CPU mode (selects the hypercall ABI).
    public var cpuMode: CPUMode { X86SpecialRegisters(sync.pointee.sregs).cpuMode }

    /// Sets RAX only (the hypercall return path).
    public func setRAX(_ value: UInt64) {
        sync.pointee.regs.rax = value
        kvmRun.pointee.kvm_dirty_regs |= UInt64(KVM_SYNC_X86_REGS)
    }

    /// RIP as of the last exit.
    public var rip: UInt64 { sync.pointee.regs.rip }

    // MARK: Configuration

    /// KVM_SET_CPUID2: the CPUID the guest sees.
    public func setCPUID(_ table: CPUIDTable) throws(KVMError) {
        let buffer = CPUIDBuffer(table)
        _ = try Syscall.ioctl(fd, PVH_KVM_SET_CPUID2, "KVM_SET_CPUID2", buffer.raw)
    }

    /// KVM_SET_GUEST_DEBUG with KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP:
    /// execute breakpoints at up to four linear addresses (DR0–DR3, DR7 from
    /// `DebugRegisters.dr7`). A hit is `.debug(pc:...)`; to resume at the
    /// same pc, move RIP (or set RFLAGS.RF). An empty list disables debugging.
    public func setGuestDebug(hardwareBreakpoints: [GuestLinearAddress], singleStep: Bool = false) throws(KVMError) {
        guard hardwareBreakpoints.count <= DebugRegisters.maxBreakpoints else {
            throw .invalidArgument("\(hardwareBreakpoints.count) hardware breakpoints (max \(DebugRegisters.maxBreakpoints))")
        }
        var dbg = kvm_guest_debug()
        if singleStep {
            // One instruction, then KVM_EXIT_DEBUG (stepping over a breakpoint
            // that must not fire again: KVM ignores RF for its own breakpoints).
            dbg.control = UInt32(KVM_GUESTDBG_ENABLE) | UInt32(KVM_GUESTDBG_SINGLESTEP)
        }
        if !hardwareBreakpoints.isEmpty {
            dbg.control |= UInt32(KVM_GUESTDBG_ENABLE) | UInt32(KVM_GUESTDBG_USE_HW_BP)
            withUnsafeMutableBytes(of: &dbg.arch.debugreg) { raw in
                for (i, a) in hardwareBreakpoints.enumerated() { raw.storeBytes(of: a.rawValue, toByteOffset: i * 8, as: UInt64.self) }
                raw.storeBytes(of: DebugRegisters.dr7(executeBreakpoints: hardwareBreakpoints.count), toByteOffset: 7 * 8, as: UInt64.self)
            }
        }
        _ = try Syscall.ioctl(fd, PVH_KVM_SET_GUEST_DEBUG, "KVM_SET_GUEST_DEBUG", &dbg)
    }

    /// KVM_SET_MSRS. Throws if KVM accepts fewer than all of them.
    public func setMSRs(_ msrs: [(MSRIndex, UInt64)]) throws(KVMError) {
        guard !msrs.isEmpty else { return }
        let buffer = MSRBuffer(msrs)
        let n = try Syscall.ioctl(fd, PVH_KVM_SET_MSRS, "KVM_SET_MSRS", buffer.raw)
        if Int(n) < msrs.count { throw .invalidArgument("KVM_SET_MSRS rejected \(msrs[Int(n)].0)") }
    }

    /// KVM_GET_MSRS: the values of `indices`, in order.
    public func getMSRs(_ indices: [MSRIndex]) throws(KVMError) -> [UInt64] {
        guard !indices.isEmpty else { return [] }
        let buffer = MSRBuffer(indices.map { ($0, 0) })
        let n = try Syscall.ioctl(fd, PVH_KVM_GET_MSRS, "KVM_GET_MSRS", buffer.raw)
        if Int(n) < indices.count { throw .invalidArgument("KVM_GET_MSRS rejected \(indices[Int(n)])") }
        return buffer.values()
    }

    /// KVM_GET_TSC_KHZ on this vCPU.
    public var tscKHz: UInt32 {
        get throws(KVMError) { UInt32(try Syscall.ioctl(fd, PVH_KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", value: 0)) }
    }

    // MARK: Events

    /// The x87 status word (KVM_GET_FPU, kvm_fpu.fsw).
    func x87StatusWord() throws(KVMError) -> UInt16 {
        var f = kvm_fpu()
        _ = try Syscall.ioctl(fd, PVH_KVM_GET_FPU, "KVM_GET_FPU", &f)
        return f.fsw
    }

    /// KVM_GET_MP_STATE: e.g. KVM_MP_STATE_UNINITIALIZED (a secondary vCPU
    /// waiting for INIT/SIPI under the in-kernel LAPIC) or RUNNABLE.
    public var mpState: UInt32 {
        get throws(KVMError) {
            var s = kvm_mp_state()
            _ = try Syscall.ioctl(fd, PVH_KVM_GET_MP_STATE, "KVM_GET_MP_STATE", &s)
            return s.mp_state
        }
    }

    /// Whether the vCPU sits in HLT (KVM_MP_STATE_HALTED): with the in-kernel
    /// LAPIC KVM handles HLT itself and the vCPU stays halted in KVM_RUN
    /// until an event it can take arrives. Call on the vCPU's thread while
    /// it is outside KVM_RUN.
    public var isHalted: Bool {
        get throws(KVMError) { try mpState == UInt32(KVM_MP_STATE_HALTED) }
    }

    /// Whether an event is being delivered or waits to be, as of the last
    /// exit (sync regs' kvm_vcpu_events): an exception or interrupt being
    /// injected, or an NMI injected or pending. Xen's `hvm_event_pending`
    /// asks the same before HLT blocks. From the sync regs: no ioctl.
    public var hasPendingEvent: Bool {
        // SAFETY: `sync` points into this vCPU's kvm_run mapping, alive as
        // long as `self`; KVM writes it only inside KVM_RUN, on this thread.
        let e = sync.pointee.events
        return e.exception.injected != 0 || e.exception.pending != 0 || e.interrupt.injected != 0
            || e.nmi.injected != 0 || e.nmi.pending != 0
    }

    /// Makes a parked secondary vCPU runnable (KVM_SET_MP_STATE RUNNABLE), as
    /// Xen's VCPUOP_up does after VCPUOP_initialise. Call on the vCPU's thread
    /// while it is outside KVM_RUN.
    public func makeRunnable() throws(KVMError) {
        var s = kvm_mp_state(mp_state: UInt32(KVM_MP_STATE_RUNNABLE))
        _ = try Syscall.ioctl(fd, PVH_KVM_SET_MP_STATE, "KVM_SET_MP_STATE", &s)
    }

    /// Injects exception `vector` (with `errorCode` for #DF, #TS, #NP, #SS,
    /// #GP, #PF, #AC) on the next entry: KVM_GET_VCPU_EVENTS, set
    /// exception.injected, KVM_SET_VCPU_EVENTS (api.rst §4.31). It is
    /// delivered at the current RIP.
    public func injectException(vector: UInt8, errorCode: UInt32? = nil) throws(KVMError) {
        try modifyEvents { e in
            e.exception.injected = 1
            e.exception.pending = 0
            e.exception.nr = vector
            e.exception.has_error_code = errorCode == nil ? 0 : 1
            e.exception.error_code = errorCode ?? 0
        }
    }

    /// Injects an interrupt `vector` through the IDT on the next entry
    /// (kvm_vcpu_events.interrupt; `soft` marks a software interrupt,
    /// `int n`). Delivered at the current RIP regardless of RFLAGS.IF.
    public func injectInterrupt(vector: UInt8, soft: Bool) throws(KVMError) {
        try modifyEvents { e in
            e.interrupt.injected = 1
            e.interrupt.nr = vector
            e.interrupt.soft = soft ? 1 : 0
        }
    }

    /// Queues an external interrupt `vector`, as an 8259 PIC's INTA would
    /// hand it over (KVM_INTERRUPT, api.rst §4.16; with the split irqchip it
    /// is KVM's `pending_external_vector`, an ExtINT). KVM delivers it through
    /// the IDT as soon as the guest can take interrupts (RFLAGS.IF, no
    /// interrupt shadow) and the local APIC accepts ExtINT (`acceptsExternalInterrupts`),
    /// waking a vCPU halted in the kernel; it needs no EOI. Returns false
    /// when one is already queued and not yet delivered (EEXIST): at most one
    /// waits at a time. Call on the vCPU's thread, outside KVM_RUN.
    @discardableResult
    public func queueExternalInterrupt(vector: UInt8) throws(KVMError) -> Bool {
        var irq = kvm_interrupt(irq: UInt32(vector))
        do throws(KVMError) {
            _ = try Syscall.ioctl(fd, PVH_KVM_INTERRUPT, "KVM_INTERRUPT", &irq)
        } catch {
            if case .ioctl(_, let e) = error, e == EEXIST { return false }
            throw error
        }
        return true
    }

    /// kvm_run.request_interrupt_window: when set, KVM_RUN returns
    /// `.interruptWindowOpen` as soon as the guest can take an interrupt and
    /// none is queued in KVM (x86.c dm_request_for_irq_injection: honoured
    /// without an in-kernel PIC, so with the split irqchip).
    public var requestInterruptWindow: Bool {
        get { kvmRun.pointee.request_interrupt_window != 0 }
        set { kvmRun.pointee.request_interrupt_window = newValue ? 1 : 0 }
    }

    /// Whether the in-kernel local APIC takes ExtINT interrupts
    /// (`queueExternalInterrupt`): it is hardware-disabled (IA32_APIC_BASE
    /// bit 11 clear), or LVT0 is unmasked in ExtINT mode (virtual-wire mode,
    /// Intel SDM Vol. 3 §11.5.1; KVM's kvm_apic_accept_pic_intr). Reads the
    /// LAPIC (KVM_GET_LAPIC) unless it is hardware-disabled.
    /// Whether the vCPU, as of the last exit (and any register change since),
    /// can take a maskable interrupt now: RFLAGS.IF set and no STI or MOV SS
    /// interrupt shadow (Intel SDM Vol. 3 §6.8.1; Xen's
    /// hvm_interrupt_blocked). From the sync regs: no ioctl.
    public var interruptsOpen: Bool {
        sync.pointee.regs.rflags & 0x200 != 0 && sync.pointee.events.interrupt.shadow == 0
    }

    public var acceptsExternalInterrupts: Bool {
        get throws(KVMError) {
            guard sync.pointee.sregs.apic_base & UInt64(PVH_MSR_APIC_BASE_ENABLE) != 0 else { return true }
            let lvt0 = try localAPICRegister(at: Int(PVH_APIC_LVT0_OFFSET))
            return lvt0 & UInt32(PVH_APIC_LVT_MASKED) == 0
                && lvt0 & UInt32(PVH_APIC_LVT_DELIVERY_MODE_MASK) == UInt32(PVH_APIC_DM_EXTINT)
        }
    }

    /// Puts the local APIC's LINT0 in virtual-wire mode (LVT0 = ExtINT,
    /// unmasked; MP spec §3.6.2.2), as PC firmware leaves it before the OS
    /// starts, so that `queueExternalInterrupt` reaches a guest that never
    /// enables its local APIC. A guest that sets up its LAPIC may mask LVT0
    /// again; Linux keeps it in ExtINT mode on the boot CPU (apic.c
    /// setup_local_APIC). Call before the vCPU first runs.
    public func setLocalAPICVirtualWire() throws(KVMError) {
        var state = kvm_lapic_state()
        _ = try Syscall.ioctl(fd, PVH_KVM_GET_LAPIC, "KVM_GET_LAPIC", &state)
        withUnsafeMutableBytes(of: &state.regs) { raw in
            let offset = Int(PVH_APIC_LVT0_OFFSET)
            let old = raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)
            let lvt0 = old & ~UInt32(PVH_APIC_LVT_MASKED | PVH_APIC_LVT_DELIVERY_MODE_MASK) | UInt32(PVH_APIC_DM_EXTINT)
            raw.storeBytes(of: lvt0, toByteOffset: offset, as: UInt32.self)
        }
        _ = try Syscall.ioctl(fd, PVH_KVM_SET_LAPIC, "KVM_SET_LAPIC", &state)
    }

    /// One 32-bit local APIC register at `offset` (KVM_GET_LAPIC's register page).
    func localAPICRegister(at offset: Int) throws(KVMError) -> UInt32 {
        var state = kvm_lapic_state()
        _ = try Syscall.ioctl(fd, PVH_KVM_GET_LAPIC, "KVM_GET_LAPIC", &state)
        return withUnsafeBytes(of: &state.regs) { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
    }

    private func modifyEvents(_ body: (inout kvm_vcpu_events) -> Void) throws(KVMError) {
        var e = kvm_vcpu_events()
        _ = try Syscall.ioctl(fd, PVH_KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", &e)
        body(&e)
        _ = try Syscall.ioctl(fd, PVH_KVM_SET_VCPU_EVENTS, "KVM_SET_VCPU_EVENTS", &e)
        sync.pointee.events = e
    }

    /// Finishes a SYSCALL the software backend left at CPL3 (see
    /// `FastSystemCall`), from the page fault it caused: the fault's frame
    /// dropped, kernel CS/SS from IA32_STAR, RFLAGS masked with IA32_FMASK.
    public func completeSyscallEntry(fromFault frame: InterruptFrame) throws(KVMError) {
        let msrs = try getMSRs([FastSystemCall.star, FastSystemCall.fmask])
        let (r, s) = FastSystemCall.enterKernel(fromFault: frame, regs: registers, sregs: specialRegisters,
                                                star: msrs[0], fmask: msrs[1])
        registers = r
        specialRegisters = s
    }

    /// The guest's own DR6 (KVM_GET_DEBUGREGS, api.rst §4.33): what its #DB
    /// handler would read, apart from pvh's breakpoints (KVM_SET_GUEST_DEBUG
    /// keeps those out of it).
    public var guestDR6: UInt64 {
        get throws(KVMError) {
            var d = kvm_debugregs()
            _ = try Syscall.ioctl(fd, PVH_KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", &d)
            return d.dr6
        }
    }

    /// Runs the handler of a trap pvh delivered (`UserModeTrap`), whose frame
    /// the caller has written at `delivery.rsp`: RIP, RSP and RFLAGS from
    /// the delivery. CS and SS stay as the backend's own delivery to the
    /// same kernel code segment left them.
    public func enterTrapHandler(_ delivery: TrapDelivery) {
        var r = registers
        r.rip = delivery.rip
        r.rsp = delivery.rsp
        r.rflags = delivery.rflags
        registers = r
    }

    /// Applies `EmulationFailure.resolve` to an `.internalError` exit: for
    /// int3 / int n / icebp at CPL0, advances RIP past the instruction and
    /// injects the event so the guest's IDT handles it; returns the
    /// resolution (`.unhandled` leaves the vCPU untouched).
    @discardableResult
    public func handleEmulationFailure(_ error: InternalError) throws(KVMError) -> EmulationFailure.Resolution {
        guard error.suberror == .emulation else { return .unhandled(reason: error.description) }
        let regs = registers, sregs = specialRegisters
        let bytes = error.instructionBytes
        let opcode = bytes.first { !EmulationFailure.ignorablePrefixes.contains($0) }
        let fsw: UInt16? = opcode == 0x9B ? try x87StatusWord() : nil
        let resolution = EmulationFailure.resolve(bytes: bytes, regs: regs, sregs: sregs, fpuStatus: fsw)
        switch resolution {
        case .skip(let length):
            sync.pointee.regs.rip = EmulationFailure.advance(rip: regs.rip, by: length, mode: sregs.cpuMode)
            kvmRun.pointee.kvm_dirty_regs |= UInt64(KVM_SYNC_X86_REGS)
        case .fault(let vector):
            try injectException(vector: vector)
        case .exception(let vector, let length):
            sync.pointee.regs.rip = EmulationFailure.advance(rip: regs.rip, by: length, mode: sregs.cpuMode)
            kvmRun.pointee.kvm_dirty_regs |= UInt64(KVM_SYNC_X86_REGS)
            try injectException(vector: vector)
        case .softwareInterrupt(let vector, let length):
            sync.pointee.regs.rip = EmulationFailure.advance(rip: regs.rip, by: length, mode: sregs.cpuMode)
            kvmRun.pointee.kvm_dirty_regs |= UInt64(KVM_SYNC_X86_REGS)
            try injectInterrupt(vector: vector, soft: EmulationFailure.injectIntAsSoft)
        case .systemReturn:
            let star = try getMSRs([FastSystemCall.star])[0]
            if let (r, s) = FastSystemCall.returnToUser(regs: regs, sregs: sregs, star: star) {
                registers = r
                specialRegisters = s
            } else {
                try injectException(vector: 13, errorCode: 0)
            }
        case .unhandled:
            break
        }
        return resolution
    }

    // MARK: PVH entry

    /// Sets the PVH entry state (Xen docs/misc/pvh.pandoc): 32-bit flat
    /// protected mode, paging off; CS 32-bit execute/read base 0 limit 4 GiB
    /// (selector 0x10); DS/ES/SS/FS/GS 32-bit read/write base 0 limit 4 GiB
    /// (selector 0x18); TR a busy 32-bit TSS base 0 limit 0x67; CR0 = PE|ET,
    /// CR4 = 0, EFER = 0; EFLAGS = 0x2; EBX = `startInfo`; EIP = `entry`;
    /// other GPRs 0. Uses KVM_SET_SREGS/KVM_SET_REGS directly.
    public func setPVHEntryState(entry: UInt32, startInfo: UInt32) throws(KVMError) {
        var k = kvm_sregs()
        _ = try Syscall.ioctl(fd, PVH_KVM_GET_SREGS, "KVM_GET_SREGS", &k)
        var s = X86SpecialRegisters(k)
        s = PVHEntryState.specialRegisters(keeping: s)
        s.apply(to: &k)
        _ = try Syscall.ioctl(fd, PVH_KVM_SET_SREGS, "KVM_SET_SREGS", &k)
        var r = PVHEntryState.registers(entry: entry, startInfo: startInfo).kvm
        _ = try Syscall.ioctl(fd, PVH_KVM_SET_REGS, "KVM_SET_REGS", &r)
        // Refresh the sync block from the kernel's view; nothing is dirty now.
        _ = try Syscall.ioctl(fd, PVH_KVM_GET_REGS, "KVM_GET_REGS", &sync.pointee.regs)
        _ = try Syscall.ioctl(fd, PVH_KVM_GET_SREGS, "KVM_GET_SREGS", &sync.pointee.sregs)
        kvmRun.pointee.kvm_dirty_regs &= ~UInt64(KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS)
    }
}

/// The PVH boot register state (Xen docs/misc/pvh.pandoc, "x86/HVM"). Pure.
public enum PVHEntryState {
    /// CS: 32-bit execute/read code, accessed (type 0xb), base 0, limit 4 GiB.
    public static let codeSegment = SegmentRegister(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0xb, present: true,
                                                     dpl: 0, db: true, s: true, l: false, g: true)
    /// DS/ES/SS/FS/GS: 32-bit read/write data, accessed (type 0x3), base 0, limit 4 GiB.
    public static let dataSegment = SegmentRegister(base: 0, limit: 0xFFFF_FFFF, selector: 0x18, type: 0x3, present: true,
                                                     dpl: 0, db: true, s: true, l: false, g: true)
    /// TR: busy 32-bit TSS (type 0xb, system), base 0, limit 0x67.
    public static let taskSegment = SegmentRegister(base: 0, limit: 0x67, selector: 0x20, type: 0xb, present: true,
                                                     dpl: 0, db: false, s: false, l: false, g: false)

    /// Special registers for PVH entry; `apicBase` and descriptor tables are
    /// kept from `current`.
    public static func specialRegisters(keeping current: X86SpecialRegisters) -> X86SpecialRegisters {
        var s = current
        s.cs = codeSegment
        s.ds = dataSegment; s.es = dataSegment; s.ss = dataSegment; s.fs = dataSegment; s.gs = dataSegment
        s.tr = taskSegment
        s.ldt = SegmentRegister(base: 0, limit: 0, selector: 0, type: 0x2, present: false, unusable: true)
        s.cr0 = X86SpecialRegisters.cr0PE | X86SpecialRegisters.cr0ET
        s.cr2 = 0; s.cr3 = 0; s.cr4 = 0; s.cr8 = 0
        s.efer = 0
        return s
    }

    /// General registers for PVH entry: EIP = entry, EBX = start_info, EFLAGS = 0x2.
    public static func registers(entry: UInt32, startInfo: UInt32) -> X86Registers {
        var r = X86Registers()
        r.rip = UInt64(entry)
        r.rbx = UInt64(startInfo)
        r.rflags = 0x2
        return r
    }
}

/// A heap `struct kvm_msrs` (flexible array of kvm_msr_entry).
final class MSRBuffer {
    let raw: UnsafeMutableRawPointer
    let count: Int
    static let header = MemoryLayout<kvm_msrs>.size
    static let stride = MemoryLayout<kvm_msr_entry>.stride

    init(_ msrs: [(MSRIndex, UInt64)]) {
        count = msrs.count
        let bytes = MSRBuffer.header + count * MSRBuffer.stride
        raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        // SAFETY: fresh allocation of `bytes` bytes; entries follow the header.
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        raw.assumingMemoryBound(to: kvm_msrs.self).pointee.nmsrs = UInt32(count)
        for (i, (index, value)) in msrs.enumerated() {
            var e = kvm_msr_entry()
            e.index = index.rawValue
            e.data = value
            (raw + MSRBuffer.header + i * MSRBuffer.stride).storeBytes(of: e, as: kvm_msr_entry.self)
        }
    }

    func values() -> [UInt64] {
        (0..<count).map { (raw + MSRBuffer.header + $0 * MSRBuffer.stride).load(as: kvm_msr_entry.self).data }
    }

    deinit { raw.deallocate() }
}
