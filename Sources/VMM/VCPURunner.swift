import GuestMemory
import Hypercalls
import Dispatch
import EventChannels
import KVM
import PVTime
import PVHBoot
import Synchronization
import XenABI

/// The transports a hypercall can arrive through (docs/ARCHITECTURE.md).
final class HypercallTransports: Sendable {
    /// The I/O port the hypercall-page stubs write the hypercall number to.
    static let port = IOPort(0xEA)
    /// Xen's hypercall-page MSR (CPUID 0x40000002 EBX).
    static let msr = MSRIndex(XenCPUIDLeaves.hypercallPageMSR)
    /// The debug console port (Xen's `hvm_print_line`, Linux's early console).
    static let debugConsolePort = IOPort(0xE9)
    /// The ACPI sleep registers the FADT names (`ACPITables`).
    static let acpiSleepControlPort = IOPort(ACPITables.sleepControlPort)
    static let acpiSleepStatusPort = IOPort(ACPITables.sleepStatusPort)
    /// Linear addresses of `vmcall`/`vmmcall` sites the VMM breaks on, the
    /// host vendor's site first (`breakpointAddresses(for:preferAMD:kvmIntercepts:)`).
    let breakpointSites: [GuestLinearAddress]
    /// Set once the guest's 64-bit code chose the hypercall page: see `retireSites`.
    let sitesRetired = Atomic<Bool>(false)

    init(breakpointSites: [GuestLinearAddress]) { self.breakpointSites = breakpointSites }

    /// The guest chose the hypercall page: its `vmcall`/`vmmcall` sites are
    /// no longer broken on, on any vCPU. Armed debug registers cost every
    /// exit (KVM loads DR0-3/DR7 around each entry: about 8 µs per exit on
    /// the nested software host, where pvh-bench measured it), so a guest
    /// that does not use them should not pay for them. Guests use one
    /// transport: Linux since XSA-466 has only the sites and never installs
    /// the page; older Linux, FreeBSD and NetBSD install the page and have
    /// no sites. The signal is a hypercall through the page from 64-bit code
    /// before any came through a site (`shouldRetireSites`): the sites are
    /// 64-bit kernel text, so 32-bit start-up code using the page says
    /// nothing about them (the test guest's 32-bit probe does exactly that
    /// and then uses the sites).
    func retireSites() { sitesRetired.store(true, ordering: .releasing) }

    /// Whether a hypercall through the page retires the sites.
    static func shouldRetireSites(sites: [GuestLinearAddress], pageHypercallIn64BitMode: Bool,
                                  siteHypercallsSoFar: UInt64) -> Bool {
        !sites.isEmpty && pageHypercallIn64BitMode && siteHypercallsSoFar == 0
    }

    /// The sites still broken on.
    var activeSites: [GuestLinearAddress] { sitesRetired.load(ordering: .acquiring) ? [] : breakpointSites }
    /// Length of the `vmcall`/`vmmcall` instruction skipped after a breakpoint hypercall.
    static let vmcallLength: UInt64 = 3

    /// The linear addresses to break on: each site's kernel-virtual address
    /// and, where different, its physical alias (early code may run through
    /// the identity map). With more than the four debug registers, the host
    /// vendor's site (the one the guest picks by CPUID) comes first. None
    /// where KVM intercepts hypercalls itself.
    static func breakpointAddresses(for sites: HypercallSites, preferAMD: Bool, kvmIntercepts: Bool) -> [GuestLinearAddress] {
        guard !kvmIntercepts else { return [] }
        let ordered = preferAMD ? [sites.amd, sites.intel] : [sites.intel, sites.amd]
        var seen = Set<UInt64>()
        var addresses: [GuestLinearAddress] = []
        for site in ordered.compactMap({ $0 }) {
            for a in [site.virtualAddress.rawValue, site.physicalAddress.rawValue] where seen.insert(a).inserted {
                addresses.append(GuestLinearAddress(a))
            }
        }
        return Array(addresses.prefix(DebugRegisters.maxBreakpoints))
    }

    /// The breakpoints once the guest armed the software backend's trap
    /// fix-ups (`GuestTrapBreakpoints`): each trap handler takes one debug
    /// register, in the order given, but one is kept for the hypercall
    /// sites while any is in use (a guest without its hypercalls cannot run;
    /// one without the last fix-up, #BP's, only gets #BP for #GP). The sites
    /// keep the rest, kernel-virtual addresses first (the guest wrote LSTAR
    /// from its kernel mapping: the identity aliases early boot needed are
    /// done with), otherwise in the order given (the host vendor's site
    /// first: the only one a guest that picks its instruction by CPUID
    /// uses). Linux has four sites (AMD and Intel, two aliases each); with
    /// three handlers armed its vendor's kernel-virtual site is the one kept.
    static func breakpointAddresses(sites: [GuestLinearAddress], handlers: [GuestLinearAddress]) -> [GuestLinearAddress] {
        let armed = Array(handlers.prefix(DebugRegisters.maxBreakpoints - (sites.isEmpty ? 0 : 1)))
        let kernel = sites.filter { $0.rawValue >> 63 == 1 }, other = sites.filter { $0.rawValue >> 63 == 0 }
        return Array((kernel + other).prefix(DebugRegisters.maxBreakpoints - armed.count)) + armed
    }
}

/// What the vCPU threads share.
struct DomainServices: Sendable {
    let memory: MappedGuestMemory
    let dispatcher: HypercallDispatcher
    /// Xen's console: console_io's and port 0xE9's bytes.
    let console: HypervisorConsole
    let lifecycle: DomainLifecycle
    let transports: HypercallTransports
    let metrics: DomainMetrics
    let events: EventChannelTable
    let timers: DomainTimers
    let wakeups: VCPUWakeups
    let smp: SMPControl
    let dumps: VCPUStateDump
    let state: DomainState
    let upcalls: UpcallInjector
}

/// One vCPU's thread body: run KVM, handle each exit, until the domain ends.
/// Exits are a closed enum; every case is handled here and nowhere else.
final class VCPURunner: @unchecked Sendable {
    // SAFETY (Sendable): a runner is used by exactly one thread after start.
    let vcpu: VCPU
    let id: VCPUID
    let services: DomainServices

    /// This vCPU has left KVM_RUN with a real exit at least once.
    private var hasRun = false
    /// The software backend's fix-ups at the guest's trap handlers, armed
    /// when the guest writes IA32_LSTAR (Domain traps that write only there).
    private var traps = GuestTrapBreakpoints()
    /// This vCPU's debug registers were last armed with the hypercall sites
    /// (which another vCPU may have retired since: re-arm before KVM_RUN).
    private var armedWithSites = true
    /// The HVM_PARAM_CALLBACK_IRQ vector's level-triggered delivery.
    private var callback = CallbackVectorDelivery()

    init(vcpu: VCPU, id: VCPUID, services: DomainServices) {
        self.vcpu = vcpu
        self.id = id
        self.services = services
    }

    func run() {
        let lifecycle = services.lifecycle
        let vcpu = self.vcpu
        lifecycle.onStop { vcpu.kick() }
        // This thread ends after the loop; devices and the toolstack may
        // still kick the vCPU until the domain is torn down.
        defer { vcpu.releaseThread() }
        while lifecycle.exit == nil {
            if armedWithSites, services.transports.sitesRetired.load(ordering: .relaxed), !traps.stepping {
                if let end = armBreakpoints() {
                    lifecycle.finish(end)
                    return
                }
            }
            if let end = injectCallbackVector() {
                lifecycle.finish(end)
                return
            }
            let exit: VCPUExit
            do {
                exit = try vcpu.run()
            } catch {
                lifecycle.finish(.failed("\(id): KVM_RUN failed: \(error)"))
                return
            }
            if let end = handle(exit) {
                lifecycle.finish(end)
                return
            }
        }
    }

    /// Handles one exit; returns how the domain ends, or nil to resume.
    func handle(_ exit: VCPUExit) -> DomainExit? {
        DomainMetrics.bump(services.metrics.exits)
        services.metrics.exitsByReason[ExitReason(exit).rawValue].bump()
        if !hasRun, exit != .interrupted {
            // A secondary vCPU leaves KVM_RUN only by a kick until it runs
            // guest code: VCPUOP_up, or INIT/SIPI through the LAPIC.
            hasRun = true
            if id == VCPUID(0) { services.metrics.noteFirstExit() }
            services.smp.markStartedNatively(id)
        }
        switch exit {
        case .io(let io):
            return handleIO(io)
        case .wrmsr(let index, let value):
            return handleWRMSR(index: index, value: value)
        case .rdmsr:
            // Only writes are filtered; a read exit means a filter we did not ask for.
            vcpu.completeMSR(value: 0, error: true)
            return nil
        case .debug(let pc, _, _, _):
            if traps.stepping || traps.vector(at: pc) != nil {
                return trapHandlerStop(at: pc)
            }
            guard services.transports.activeSites.contains(pc) else {
                return .failed("\(id): unexpected debug exit at \(pc)")
            }
            DomainMetrics.bump(services.metrics.breakpointHypercalls)
            return hypercall(advancingRIPBy: HypercallTransports.vmcallLength)
        case .mmio(let mmio):
            // PVH has no emulated devices: reads see all-ones, writes are dropped.
            if !mmio.isWrite {
                do { try vcpu.completeMMIORead([UInt8](repeating: 0xff, count: mmio.length)) } catch {
                    return .failed("\(id): \(error)")
                }
            }
            return nil
        case .halt:
            // With the in-kernel LAPIC KVM handles HLT itself; an exit here means
            // a halted vCPU with interrupts off: nothing can wake it.
            return .failed("\(id): halted with interrupts disabled at rip 0x\(String(vcpu.rip, radix: 16))")
        case .shutdown:
            return .tripleFault(rip: vcpu.rip)
        case .internalError(let error):
            // Software backend: int3 / int n / icebp at CPL0 go to the guest's IDT.
            do {
                if case .unhandled(let why) = try vcpu.handleEmulationFailure(error) {
                    return .failed("\(id): \(error) (\(why)) at rip 0x\(String(vcpu.rip, radix: 16))")
                }
                DomainMetrics.bump(services.metrics.emulationFailuresDelivered)
            } catch {
                return .failed("\(id): \(error)")
            }
            return nil
        case .systemEvent(let type):
            return .failed("\(id): KVM system event \(type)")
        case .interrupted:
            if services.dumps.take(id) {
                FileDescriptorConsoleSink(fd: 2).emit(Array(VCPUStateDump.describe(id, vcpu: vcpu, memory: services.memory).utf8))
            }
            if let end = downIfHaltedWithInterruptsOff() { return end }
            return applyLifecycleChanges()
        case .interruptWindowOpen:
            // The queued callback vector was taken; look at the level again.
            callback.windowOpened()
            return nil
        case .xenHypercall:
            // KVM_XEN_HVM_CONFIG hosts: the kernel trapped vmcall for us.
            DomainMetrics.bump(services.metrics.kvmXenHypercalls)
            return hypercall(advancingRIPBy: 0, completeXen: true)
        case .failEntry(let reason, _):
            return .failed("\(id): KVM entry failed (hardware reason 0x\(String(reason, radix: 16)))")
        case .unknown(let reason):
            return .failed("\(id): unhandled KVM exit \(reason)")
        }
    }

    /// Before every entry: the HVM_PARAM_CALLBACK_IRQ vector while this
    /// vCPU's `evtchn_upcall_pending` is set (see `CallbackVectorDelivery`).
    private func injectCallbackVector() -> DomainExit? {
        let vector = services.state.callbackVector(for: id)
        // Guests that use their own vector (Linux) pay one lock per entry.
        guard vector != nil || callback.queued else {
            // A window asked for while the callback vector served this vCPU
            // must not outlive it: with nothing queued KVM would exit at
            // every instruction boundary with interrupts open.
            if vcpu.requestInterruptWindow { vcpu.requestInterruptWindow = false }
            return nil
        }
        let asserted = services.upcalls.takeCallbackRequest(id)
        let pending = vector != nil && services.events.upcallPending(vcpu: id)
        var lapicError: (any Error)?
        // Queued in KVM, the vector waits for IF by itself, and a halted
        // vCPU wakes for it; only at CPL0 on a lower-half stack (the kernel's
        // SYSCALL entry right after pvh finished a SYSCALL) must it wait for
        // IF here: kvm_pvm delivered it there with IF clear.
        // Only asked when the upcall is pending and IF is clear (short-circuit:
        // this runs before every entry of a callback-vector guest).
        let mayQueue = !pending || vcpu.interruptsOpen
            || !(vcpu.registers.rsp >> 47 == 0 && vcpu.specialRegisters.cpl == 0)
        let action = callback.beforeEntry(vector: vector, upcallPending: pending, asserted: asserted,
                                          interruptsOpen: mayQueue) {
            do { return try vcpu.acceptsExternalInterrupts } catch {
                lapicError = error
                return false
            }
        }
        if let lapicError { return .failed("\(id): KVM_GET_LAPIC: \(lapicError)") }
        switch action {
        case .none(let window):
            vcpu.requestInterruptWindow = window
        case .queueExternalInterrupt(let v):
            do {
                if try vcpu.queueExternalInterrupt(vector: v) {
                    DomainMetrics.bump(services.metrics.callbackVectorsQueued)
                } else {
                    callback.alreadyQueued()
                }
            } catch {
                return .failed("\(id): KVM_INTERRUPT: \(error)")
            }
            vcpu.requestInterruptWindow = true
        case .signalLocalAPIC(let v):
            services.upcalls.signalLocalAPIC(vcpu: id, vector: v)
            vcpu.requestInterruptWindow = false
        }
        return nil
    }

    private func handleIO(_ io: IOExit) -> DomainExit? {
        switch (io.port, io.direction) {
        case (HypercallTransports.port, .out):
            DomainMetrics.bump(services.metrics.pageHypercalls)
            if let end = hypercall(advancingRIPBy: 0) { return end }
            // The guest's 64-bit code chose the page transport (see `retireSites`).
            let transports = services.transports
            // Cheap checks first: this runs on every page hypercall, and a
            // guest without sites (or with them retired) must not pay for
            // decoding its CPU mode each time.
            if !transports.breakpointSites.isEmpty, !transports.sitesRetired.load(ordering: .relaxed), !traps.stepping,
               HypercallTransports.shouldRetireSites(
                   sites: transports.breakpointSites, pageHypercallIn64BitMode: vcpu.cpuMode == .long64,
                   siteHypercallsSoFar: services.metrics.breakpointHypercalls.load(ordering: .relaxed)) {
                transports.retireSites()
                return armBreakpoints()
            }
            return nil
        case (HypercallTransports.debugConsolePort, .out):
            services.console.write(io.data)
            return nil
        case (HypercallTransports.acpiSleepControlPort, .out):
            // The guest's ACPI S5 (Linux's acpi_power_off): power off, as
            // SCHEDOP_shutdown(poweroff) would.
            guard let value = io.data.first, ACPISleepControl(written: value) == .powerOff else { return nil }
            DomainMetrics.bump(services.metrics.acpiPowerOffs)
            return .shutdown(.poweroff)
        case (HypercallTransports.acpiSleepStatusPort, .in):
            // WAK_STS clear: nothing ever wakes the guest from a sleep state.
            do { try vcpu.completeIOIn([UInt8](repeating: 0, count: io.size * io.count)) } catch {
                return .failed("\(id): \(error)")
            }
            return nil
        case (_, .in):
            // No legacy devices in PVH: an unassigned port reads as all-ones.
            do { try vcpu.completeIOIn([UInt8](repeating: 0xff, count: io.size * io.count)) } catch {
                return .failed("\(id): \(error)")
            }
            return nil
        case (_, .out):
            return nil
        }
    }

    /// Xen's hypercall-page MSR (Xen: `wrmsr_hypervisor_regs`): bits 12+ name
    /// the frame, bits 0-11 the page index; we offer one page (CPUID
    /// 0x40000002 EAX = 1), so any other index is a #GP, as in Xen.
    private func handleWRMSR(index: MSRIndex, value: UInt64) -> DomainExit? {
        if index == FastSystemCall.lstar {
            return setSyscallEntry(value)
        }
        guard index == HypercallTransports.msr, value & 0xfff == 0 else {
            vcpu.completeMSR(value: 0, error: true)
            return nil
        }
        let page = GuestPhysicalAddress(value & ~0xfff)
        do {
            try services.memory.write(HypercallPage.make(port: UInt8(HypercallTransports.port.rawValue)), at: page)
            vcpu.completeMSR(value: 0, error: false)
            DomainMetrics.bump(services.metrics.hypercallPageInstalls)
        } catch {
            vcpu.completeMSR(value: 0, error: true)
        }
        return nil
    }

    /// The guest wrote IA32_LSTAR (trapped only on the software backend).
    /// KVM did not write it, so pvh does. Then pvh breaks on the guest's
    /// #PF, #UD, #DB and (through a DPL0 gate only) #BP handlers (IDT
    /// vectors 14, 6, 1, 3, read now: Linux sets its IDT before
    /// syscall_init), where the events the backend gets wrong at CPL3 end
    /// up (`GuestTrapBreakpoints`). A hardware breakpoint on a
    /// user instruction does not fire (kvm_pvm runs CPL3 natively). Each
    /// handler takes one of the four debug registers from the hypercall sites.
    private func setSyscallEntry(_ value: UInt64) -> DomainExit? {
        do {
            try vcpu.setMSRs([(FastSystemCall.lstar, value)])
        } catch {
            vcpu.completeMSR(value: 0, error: true)
            return nil
        }
        vcpu.completeMSR(value: 0, error: false)
        let sregs = vcpu.specialRegisters
        let translator = translator(sregs)
        traps.arm(lstar: value) { vector in
            sregs.cpuMode == .long64 ? Self.readGate(vector, sregs: sregs, translator: translator) : nil
        }
        return armBreakpoints()
    }

    private func translator(_ sregs: X86SpecialRegisters) -> GuestAddressTranslator {
        GuestAddressTranslator(
            memory: services.memory, paging: GuestPagingState(cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer))
    }

    /// IDT entry `vector` (SDM Vol. 3 §6.10: nil past the IDTR limit), read once.
    private static func readGate(_ vector: UInt8, sregs: X86SpecialRegisters,
                                 translator: GuestAddressTranslator) -> InterruptGate? {
        let offset = UInt64(vector) * UInt64(InterruptGate.size)
        guard offset + UInt64(InterruptGate.size) - 1 <= UInt64(sregs.idt.limit),
              let bytes = try? translator.readVirtual(at: GuestVirtualAddress(sregs.idt.base &+ offset),
                                                      count: InterruptGate.size) else { return nil }
        return InterruptGate(bytes)
    }

    /// The hypercall sites, plus the trap handlers when armed.
    private func armBreakpoints(singleStep: Bool = false) -> DomainExit? {
        let sites = services.transports.activeSites
        armedWithSites = !sites.isEmpty
        let addresses = HypercallTransports.breakpointAddresses(
            sites: sites, handlers: singleStep ? [] : traps.addresses)
        do {
            try vcpu.setGuestDebug(hardwareBreakpoints: addresses, singleStep: singleStep)
        } catch {
            return .failed("\(id): KVM_SET_GUEST_DEBUG: \(error)")
        }
        return nil
    }

    /// A stop at one of the guest's trap handlers (or the end of the step
    /// over a handler's first instruction). If the event is one the
    /// backend got wrong, put it right; otherwise let the handler run: step
    /// over its first instruction with the breakpoints off, then re-arm.
    private func trapHandlerStop(at pc: GuestLinearAddress) -> DomainExit? {
        if traps.stepping {
            traps.stepping = false
            return armBreakpoints()
        }
        let action: TrapHandlerAction
        do {
            switch traps.vector(at: pc) {
            case 14: action = try completeHalfDoneSyscall()
            case 6: action = completeUserSoftwareInterrupt()
            case 1: action = try completeUserICEBP()
            case UserModeTrap.breakpointVector: action = completeUserBreakpoint()
            default: action = .runHandler
            }
        } catch {
            return .failed("\(id): \(error.message)")
        }
        // Delivered into a handler that is itself broken on (`int $6` from
        // user mode): that one runs as is.
        if action == .resume, traps.vector(at: GuestLinearAddress(vcpu.rip)) == nil { return nil }
        traps.stepping = true
        return armBreakpoints(singleStep: true)
    }

    /// After a stop at a trap handler.
    private enum TrapHandlerAction {
        /// The handler runs on the event as it is (its first instruction
        /// stepped over with the breakpoints off).
        case runHandler
        /// pvh replaced the event: the vCPU is where the right one leads.
        case resume
    }

    private struct FixupFailure: Error { let message: String }

    /// At the #PF handler: a frame saying "CPL3 at LSTAR" is the backend's
    /// half-done SYSCALL; finish it (`FastSystemCall`).
    private func completeHalfDoneSyscall() throws(FixupFailure) -> TrapHandlerAction {
        let regs = vcpu.registers, sregs = vcpu.specialRegisters
        guard let lstar = traps.syscallEntry,
              let bytes = try? translator(sregs).readVirtual(at: GuestVirtualAddress(regs.rsp), count: 48),
              let frame = InterruptFrame(bytes, hasErrorCode: true), FastSystemCall.isHalfDoneSyscall(frame, lstar: lstar)
        else { return .runHandler }
        do {
            try vcpu.completeSyscallEntry(fromFault: frame)
        } catch {
            throw FixupFailure(message: "completing SYSCALL: \(error)")
        }
        DomainMetrics.bump(services.metrics.syscallsCompleted)
        return .resume
    }

    /// At the #UD handler: a #UD from CPL3 on an `int n` is the backend's;
    /// deliver what INT n does instead (`UserModeTrap`): vector n, or #GP /
    /// #NP with the IDT error code. The #UD's frame is dropped (the stack
    /// it sits on is the handler's, free space to the guest).
    private func completeUserSoftwareInterrupt() -> TrapHandlerAction {
        let sregs = vcpu.specialRegisters, translator = translator(sregs)
        guard let user = userTrapFrame(sregs, translator),
              let instruction = try? translator.readVirtual(at: GuestVirtualAddress(user.rip), count: 6),
              let (vector, length) = UserModeTrap.softwareInterrupt(in: instruction) else { return .runHandler }
        return enter(sregs, translator) {
            UserModeTrap.deliverSoftwareInterrupt(vector: vector, length: length, user: user, kernelCS: $0, gate: $1, stack: $2)
        }
    }

    /// At the #BP handler (armed for a gate of DPL < 3 only): a #BP from
    /// CPL3 right after a CC is the backend's, which skipped INT3's DPL
    /// check; deliver #GP(0x1a) at the CC instead (`UserModeTrap.deliverBreakpoint`).
    /// The #BP's frame is dropped, as the #UD's is above.
    private func completeUserBreakpoint() -> TrapHandlerAction {
        let sregs = vcpu.specialRegisters, translator = translator(sregs)
        guard let frame = userTrapFrame(sregs, translator),
              let previous = (try? translator.readVirtual(at: GuestVirtualAddress(frame.rip &- 1), count: 1))?.first
        else { return .runHandler }
        return enter(sregs, translator) {
            UserModeTrap.deliverBreakpoint(frame: frame, previousByte: previous, kernelCS: $0, gate: $1, stack: $2)
        }
    }

    /// The frame (no error code) at the trap handler's RSP, read once, if
    /// the trap came from CPL3 in long mode.
    private func userTrapFrame(_ sregs: X86SpecialRegisters, _ translator: GuestAddressTranslator) -> InterruptFrame? {
        guard sregs.cpuMode == .long64,
              let bytes = try? translator.readVirtual(at: GuestVirtualAddress(vcpu.registers.rsp), count: 40),
              let frame = InterruptFrame(bytes, hasErrorCode: false), frame.cs & 3 == 3 else { return nil }
        return frame
    }

    /// RSP0 (`ist` 0) or IST n from the guest's 64-bit TSS, read once; nil
    /// past TR's limit or unreadable.
    private static func readStackPointer(ist: UInt8, sregs: X86SpecialRegisters,
                                         translator: GuestAddressTranslator) -> UInt64? {
        let offset = TaskStateSegment64.stackPointerOffset(ist: ist)
        guard offset + 7 <= Int(sregs.tr.limit), let b = try? translator.readVirtual(
            at: GuestVirtualAddress(sregs.tr.base &+ UInt64(offset)), count: 8), b.count == 8 else { return nil }
        return b.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }

    /// Runs the handler `decide` names given the kernel CS the backend
    /// delivered through, the guest's IDT and its TSS's stacks, the frame
    /// written first; anything else leaves the guest the event the backend
    /// gave it.
    private func enter(_ sregs: X86SpecialRegisters, _ translator: GuestAddressTranslator,
                       _ decide: (UInt16, (UInt8) -> InterruptGate?, (UInt8) -> UInt64?) -> UserModeTrap.Outcome)
        -> TrapHandlerAction {
        let outcome = decide(sregs.cs.selector, { Self.readGate($0, sregs: sregs, translator: translator) },
                             { Self.readStackPointer(ist: $0, sregs: sregs, translator: translator) })
        guard case .deliver(let delivery) = outcome,
              // A frame the CPU could not push would be a double fault: leave the guest the backend's event.
              (try? translator.writeVirtual(delivery.frame.bytes, at: GuestVirtualAddress(delivery.rsp))) != nil
        else { return .runHandler }
        vcpu.enterTrapHandler(delivery)
        DomainMetrics.bump(services.metrics.userTrapsCompleted)
        return .resume
    }

    /// At the #DB handler: the backend's #DB for `int1` at CPL3 left RIP on
    /// the instruction; move the frame's RIP past it, as the trap it is.
    private func completeUserICEBP() throws(FixupFailure) -> TrapHandlerAction {
        let regs = vcpu.registers, sregs = vcpu.specialRegisters
        let translator = translator(sregs)
        guard let bytes = try? translator.readVirtual(at: GuestVirtualAddress(regs.rsp), count: 40),
              let frame = InterruptFrame(bytes, hasErrorCode: false), frame.cs & 3 == 3,
              let instruction = try? translator.readVirtual(at: GuestVirtualAddress(frame.rip), count: 5)
        else { return .runHandler }
        let dr6: UInt64
        do { dr6 = try vcpu.guestDR6 } catch { throw FixupFailure(message: "reading DR6: \(error)") }
        if let completed = UserModeTrap.completeICEBP(frame: frame, instruction: instruction, dr6: dr6),
           (try? translator.writeVirtual(completed.bytes, at: GuestVirtualAddress(regs.rsp))) != nil {
            DomainMetrics.bump(services.metrics.userTrapsCompleted)
        }
        // Either way the guest's #DB handler runs, now on a trap's frame.
        return .runHandler
    }

    /// Runs the hypercall named by the vCPU's registers and writes its result
    /// to RAX. `advancingRIPBy` skips the trapping instruction for the
    /// breakpoint transport (the port transport's `out` completes by itself).
    private func hypercall(advancingRIPBy skip: UInt64, completeXen: Bool = false) -> DomainExit? {
        var regs = vcpu.registers
        let sregs = vcpu.specialRegisters
        let mode: GuestCPUMode = sregs.cpuMode == .long64 ? .long64 : .protected32
        let call = HypercallRegisters(
            mode: mode, rax: regs.rax, rbx: regs.rbx, rcx: regs.rcx, rdx: regs.rdx,
            rsi: regs.rsi, rdi: regs.rdi, r8: regs.r8, r10: regs.r10, r9: regs.r9, rbp: regs.rbp, cpl: sregs.cpl)
        let paging = GuestPagingState(cr0: sregs.cr0, cr3: sregs.cr3, cr4: sregs.cr4, efer: sregs.efer)
        // The first argument register (rdi, or ebx in 32-bit code): the sub-operation.
        services.metrics.countHypercall(call.number, command: mode == .long64 ? call.rdi : call.rbx & 0xffff_ffff)
        let result: UInt64
        var then = AfterHypercall.resume
        switch services.dispatcher.handle(call, vcpu: id, paging: paging) {
        case .returnToGuest(let value):
            result = UInt64(bitPattern: value)
        case .yield:
            result = 0
        case .shutdown(let reason):
            return .shutdown(reason)
        case .block:
            result = 0
            then = .block
        case .poll(let ports, let deadline):
            result = 0
            then = .poll(ports, deadline)
        }
        if completeXen {
            vcpu.completeXenHypercall(result: result)
        } else if skip == 0 {
            vcpu.setRAX(result)
        } else {
            regs.rax = result
            regs.rip &+= skip
            vcpu.registers = regs
        }
        switch then {
        case .resume: break
        case .block: block()
        case .poll(let ports, let deadline): poll(ports, until: deadline)
        }
        return nil
    }

    private enum AfterHypercall {
        case resume, block
        case poll([EventChannelPort], SystemTime?)
    }

    /// SCHEDOP_block: sleep until an event is pending for this vCPU (its
    /// upcall wakes it) or the domain ends (Xen: `vcpu_block`).
    private func block() {
        guard !services.events.upcallPending(vcpu: id), services.lifecycle.exit == nil else { return }
        DomainMetrics.bump(services.metrics.blocks)
        services.wakeups.sleep(id)
    }

    /// SCHEDOP_poll: sleep until one of `ports` is pending (any, if none are
    /// named), the deadline passes, or the domain ends (Xen: `do_poll`).
    private func poll(_ ports: [EventChannelPort], until deadline: SystemTime?) {
        services.wakeups.startPolling(id, ports: ports)
        defer { services.wakeups.stopPolling(id) }
        while services.lifecycle.exit == nil {
            if ports.contains(where: { services.events.isPending($0) }) || services.events.upcallPending(vcpu: id) { return }
            var wakeAt: DispatchTime?
            if let deadline {
                let ns = deadline.rawValue &- services.timers.systemTime().rawValue
                guard ns > 0 else { return }
                wakeAt = .now() + .nanoseconds(Int(ns))
            }
            if !services.wakeups.sleep(id, until: wakeAt) { return }
        }
    }

    /// After a kick: load a VCPUOP_initialise state once VCPUOP_up has come,
    /// or stay parked while the vCPU is down (Xen: `_VPF_down`).
    /// Xen's `hvm_hlt` (xen/arch/x86/hvm/hvm.c) for a HLT KVM kept to
    /// itself (in-kernel LAPIC; `HaltProbe` kicked us out of KVM_RUN): a
    /// vCPU still halted with RFLAGS.IF clear and no event pending
    /// (`hvm_event_pending`) can only be woken by an NMI, and Xen takes it
    /// as going down (`hvm_vcpu_down`): it stops running, and with no vCPU
    /// left up the domain shuts down with SHUTDOWN_poweroff. A HLT with IF
    /// set, or with an event pending, is left to KVM as before.
    private func downIfHaltedWithInterruptsOff() -> DomainExit? {
        guard vcpu.registers.rflags & 0x200 == 0, !vcpu.hasPendingEvent, (try? vcpu.isHalted) == true else { return nil }
        return services.smp.haltedWithInterruptsOff(id) ? .shutdown(.poweroff) : nil
    }

    private func applyLifecycleChanges() -> DomainExit? {
        while services.smp.isParked(id), services.lifecycle.exit == nil {
            services.wakeups.sleep(id)
        }
        if let boot = services.smp.takePendingBoot(id) {
            do { try vcpu.load(boot) } catch { return .failed("\(id): loading VCPUOP_initialise state: \(error)") }
        }
        return nil
    }
}
