import KVM

/// The software backend's fix-ups that run at the guest's own trap
/// handlers (docs/ARCHITECTURE.md: Software backend fix-ups). kvm_pvm runs
/// guest CPL3 code natively, so pvh cannot see a user instruction; what it
/// can see is the handler the backend delivered the wrong event to, with a
/// hardware breakpoint on it:
///
/// - #PF (vector 14): a SYSCALL left at CPL3 faults fetching LSTAR (`FastSystemCall`);
/// - #UD (vector 6): `int n` at CPL3 arrives as #UD (`UserModeTrap.deliverSoftwareInterrupt`);
/// - #DB (vector 1): `int1` at CPL3 arrives with RIP on the instruction (`UserModeTrap.completeICEBP`);
/// - #BP (vector 3): `int3` at CPL3 arrives as #BP through a DPL0 gate too
///   (`UserModeTrap.deliverBreakpoint`). Broken on only when the gate's DPL
///   is below 3: through a DPL3 gate (Linux's) the backend is right.
///
/// Armed when the guest writes IA32_LSTAR (the only MSR write trapped for
/// this, on the software backend only): an OS sets its IDT before it
/// enables SYSCALL (Linux: trap_init, then syscall_init), and rewrites
/// LSTAR whenever it sets a CPU up again, so the gates are read then. One
/// vCPU's state; no locking.
struct GuestTrapBreakpoints {
    /// The vectors broken on, most needed first: each takes a debug
    /// register from the hypercall sites (`HypercallTransports.breakpointAddresses`),
    /// which keep one while any is in use, so the last is armed only for a
    /// guest that no longer uses them.
    static let vectors: [UInt8] = [14, 6, 1, UserModeTrap.breakpointVector]

    /// IA32_LSTAR as the guest last wrote it.
    private(set) var syscallEntry: UInt64?
    /// The handlers broken on, by vector; one address at most once (a
    /// shared handler could not tell which event it took).
    private(set) var handlers: [(vector: UInt8, address: GuestLinearAddress)] = []
    /// Stepping over a handler's first instruction with breakpoints off
    /// (KVM ignores RF for its own breakpoints, so the handler could not
    /// otherwise start).
    var stepping = false

    /// Arms the fix-ups for LSTAR `lstar` and the handlers of the gates
    /// `gate` finds (nil: that vector's gate is unreadable or not present).
    /// #BP only through a gate CPL3 may not use (DPL < 3).
    mutating func arm(lstar: UInt64, gate: (UInt8) -> InterruptGate?) {
        syscallEntry = lstar
        handlers = []
        for vector in Self.vectors {
            guard let target = gate(vector), target.present,
                  vector != UserModeTrap.breakpointVector || target.dpl < 3 else { continue }
            let address = GuestLinearAddress(target.offset)
            if !handlers.contains(where: { $0.address == address }) { handlers.append((vector, address)) }
        }
    }

    var addresses: [GuestLinearAddress] { handlers.map(\.address) }

    /// The vector whose handler is at `pc`, if it is broken on.
    func vector(at pc: GuestLinearAddress) -> UInt8? {
        handlers.first { $0.address == pc }?.vector
    }
}
