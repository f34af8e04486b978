import GuestMemory
import Locking
import XenABI

/// The event channels of one guest domain and of the VMM's backend domain
/// that its interdomain channels connect to, with 2-level delivery into the
/// guest's shared_info / vcpu_info. Semantics and error codes follow Xen
/// 4.17's xen/common/event_channel.c and event_2l.c; each operation names the
/// function it follows.
///
/// Guest operations (`allocateUnbound` ... `reset`) run with the guest's
/// authority: DOMID_SELF and the guest's own id name the guest, the backend
/// domain's id names the VMM's backend domain (which exists, so the guest
/// gets -EPERM rather than -ESRCH where it may not act on it), any other id is
/// -ESRCH. Backend operations (`backend…`) are the VMM's device backends
/// acting as that domain. One lock covers both tables; guest memory is
/// updated under it, and notifications (`EventChannelNotifier`,
/// `EventChannelPeer`) are made after it is released.
public final class EventChannelTable: Sendable {
    /// Static facts about the domain.
    public struct Configuration: Sendable {
        /// The guest's domain id.
        public var domainID: DomainID
        /// vCPUs 0..<vcpuCount exist.
        public var vcpuCount: Int
        /// The VMM's backend domain (the peer of every interdomain channel
        /// that does not loop back into the guest).
        public var backendDomainID: DomainID
        /// The highest port the guest may use (`max_evtchn_port`, set by the
        /// toolstack; xl's `max_event_channels` default is 1023). The 2-level
        /// ABI caps it further at 4095 (64-bit shared_info) or 1023 (32-bit).
        public var maximumPort: UInt32

        public init(domainID: DomainID, vcpuCount: Int, backendDomainID: DomainID = .controlDomain,
                    maximumPort: UInt32 = 4095) {
            self.domainID = domainID
            self.vcpuCount = vcpuCount
            self.backendDomainID = backendDomainID
            self.maximumPort = maximumPort
        }
    }

    public let configuration: Configuration
    let memory: any GuestMemory
    let locator: any SharedInfoLocator
    let notifier: any EventChannelNotifier

    struct State {
        var guest = PortTable()
        var backend = PortTable()
        /// The backend port's peer.
        var peers: [EventChannelPort: any EventChannelPeer] = [:]
        /// `virq_to_evtchn`, per vCPU (global VIRQs live on vCPU 0).
        var virqPorts: [VCPUID: [VIRQ: EventChannelPort]] = [:]
    }
    let state = Lock(State())

    public init(configuration: Configuration, memory: any GuestMemory, locator: any SharedInfoLocator,
                notifier: any EventChannelNotifier) {
        self.configuration = configuration
        self.memory = memory
        self.locator = locator
        self.notifier = notifier
    }

    // MARK: plumbing

    enum Side { case guest, backend }

    /// `rcu_lock_domain_by_any_id`.
    func side(_ domain: DomainID) throws(XenErrno) -> Side {
        if domain == .`self` || domain == configuration.domainID { return .guest }
        if domain == configuration.backendDomainID { return .backend }
        throw .esrch
    }

    func domainID(_ side: Side) -> DomainID {
        side == .guest ? configuration.domainID : configuration.backendDomainID
    }

    func isValid(_ vcpu: VCPUID) -> Bool { Int(vcpu.rawValue) < configuration.vcpuCount }

    /// What to do once the lock is released.
    struct Effects {
        var upcalls: [VCPUID] = []
        var pollers: [EventChannelPort] = []
        var peers: [(any EventChannelPeer, EventChannelPort)] = []
    }

    /// Runs `body` under the lock, then the notifications it queued.
    func withState<R>(_ body: (inout State, inout Effects) throws(XenErrno) -> R) throws(XenErrno) -> R {
        let (result, effects) = try state.withLock { (s: inout State) throws(XenErrno) -> (R, Effects) in
            var e = Effects()
            let r = try body(&s, &e)
            return (r, e)
        }
        for (peer, port) in effects.peers { peer.notify(port) }
        for port in effects.pollers { notifier.portBecamePending(port) }
        for vcpu in effects.upcalls { notifier.upcall(vcpu: vcpu) }
        return result
    }

    var twoLevel: TwoLevel? { TwoLevel(memory: memory, locator: locator) }

    /// Ports the guest may allocate: below min(max_evtchn_port + 1, the ABI's
    /// port count) (`evtchn_allocate_port`: port > max_evtchn_port ||
    /// port >= max_evtchns(d) → -ENOSPC).
    var guestPortLimit: Int {
        let abi = XenWire.SharedInfo.bitsPerEventWord(sharedInfo32Bit: locator.sharedInfoIs32Bit)
        return min(Int(configuration.maximumPort) + 1, abi * abi)
    }
    /// The backend domain runs no guest ABI; give it the 64-bit 2-level count.
    static let backendPortLimit = 4096

    /// `evtchn_port_set_pending` on a guest port.
    func setGuestPending(_ port: EventChannelPort, vcpu: VCPUID, _ e: inout Effects) {
        guard let two = twoLevel else { return }
        let out = two.setPending(port, vcpu: vcpu)
        if out.newlyPending { e.pollers.append(port) }
        if out.upcall { e.upcalls.append(vcpu) }
    }

    /// `evtchn_port_set_pending` on a backend port: its peer hears it.
    func setBackendPending(_ port: EventChannelPort, _ s: State, _ e: inout Effects) {
        if let peer = s.peers[port] { e.peers.append((peer, port)) }
    }

    /// `evtchn_free` on the guest side: clear the pending bit, back to free on vCPU 0.
    func freeGuest(_ port: EventChannelPort, _ s: inout State) {
        if s.guest[port].binding.isUsable { twoLevel?.clearPending(port) }
        s.guest[port] = PortTable.Entry()
    }

    // MARK: guest operations (do_event_channel_op)

    /// EVTCHNOP_alloc_unbound (`evtchn_alloc_unbound`): a port of `domain`
    /// that `remote` may bind to. `remote` is not checked (Xen does not);
    /// DOMID_SELF there means the caller. -ESRCH unknown domain, -ENOSPC no
    /// free port, -EPERM for the backend domain (XSM_TARGET: a guest has no
    /// authority over it).
    public func allocateUnbound(domain: DomainID, remote: DomainID) throws(XenErrno) -> EventChannelPort {
        let side = try side(domain)
        return try withState { (s, _) throws(XenErrno) in
            switch side {
            case .backend:
                _ = try s.backend.allocate(below: Self.backendPortLimit)
                throw .eperm
            case .guest:
                let port = try s.guest.allocate(below: guestPortLimit)
                s.guest[port].binding = .unbound(remote: remote == .`self` ? configuration.domainID : remote)
                return port
            }
        }
    }

    /// EVTCHNOP_bind_interdomain (`evtchn_bind_interdomain`): a new guest port
    /// connected to `remotePort` of `remoteDomain`, which must be unbound and
    /// waiting for this guest (-EINVAL otherwise, or if the port is invalid).
    /// The guest itself may be the remote (a loopback channel). The new port
    /// is set pending at once, as Xen does, in case the remote end already
    /// notified. -ESRCH unknown domain, -ENOSPC no free port.
    public func bindInterdomain(remoteDomain: DomainID, remotePort: EventChannelPort) throws(XenErrno) -> EventChannelPort {
        let remoteSide = try side(remoteDomain)
        let me = configuration.domainID
        return try withState { (s, e) throws(XenErrno) in
            let local = try s.guest.allocate(below: guestPortLimit)
            let remote = remoteSide == .guest ? s.guest.entry(remotePort) : s.backend.entry(remotePort)
            guard let remote, case .unbound(let waitingFor) = remote.binding, waitingFor == me else { throw .einval }
            s.guest[local].binding = .interdomain(remote: domainID(remoteSide), remotePort: remotePort)
            switch remoteSide {
            case .guest: s.guest[remotePort].binding = .interdomain(remote: me, remotePort: local)
            case .backend: s.backend[remotePort].binding = .interdomain(remote: me, remotePort: local)
            }
            setGuestPending(local, vcpu: s.guest[local].vcpu, &e)
            return local
        }
    }

    /// EVTCHNOP_bind_virq (`evtchn_bind_virq`, Xen 4.17): -EINVAL for a VIRQ
    /// ≥ NR_VIRQS or a global VIRQ on a vCPU other than 0, -ENOENT no such
    /// vCPU, -EEXIST already bound on that vCPU, -ENOSPC no free port.
    public func bindVIRQ(_ virq: VIRQ, vcpu: VCPUID) throws(XenErrno) -> EventChannelPort {
        // `int virq = bind->virq`: values ≥ 2^31 are negative, hence invalid too.
        guard virq.isValid else { throw .einval }
        guard virq.isPerVCPU || vcpu.rawValue == 0 else { throw .einval }
        guard isValid(vcpu) else { throw .enoent }
        return try withState { (s, _) throws(XenErrno) in
            guard s.virqPorts[vcpu]?[virq] == nil else { throw .eexist }
            let port = try s.guest.allocate(below: guestPortLimit)
            s.guest[port] = PortTable.Entry(binding: .virq(virq), vcpu: vcpu)
            s.virqPorts[vcpu, default: [:]][virq] = port
            return port
        }
    }

    /// EVTCHNOP_bind_ipi (`evtchn_bind_ipi`): a port that notifies `vcpu`
    /// when the guest sends on it. -ENOENT no such vCPU, -ENOSPC.
    public func bindIPI(vcpu: VCPUID) throws(XenErrno) -> EventChannelPort {
        guard isValid(vcpu) else { throw .enoent }
        return try withState { (s, _) throws(XenErrno) in
            let port = try s.guest.allocate(below: guestPortLimit)
            s.guest[port] = PortTable.Entry(binding: .ipi, vcpu: vcpu)
            return port
        }
    }

    /// EVTCHNOP_close (`evtchn_close` with guest = true): free the port and
    /// clear its pending bit. The other end of an interdomain channel goes
    /// back to unbound, waiting for this guest again. -EINVAL invalid, free or
    /// reserved port.
    public func close(_ port: EventChannelPort) throws(XenErrno) {
        try withState { (s, _) throws(XenErrno) in try closeGuest(port, &s) }
    }

    func closeGuest(_ port: EventChannelPort, _ s: inout State) throws(XenErrno) {
        guard let entry = s.guest.entry(port) else { throw .einval }
        switch entry.binding {
        case .free, .reserved:
            throw .einval
        case .unbound, .ipi:
            break
        case .virq(let virq):
            let owner = virq.isPerVCPU ? entry.vcpu : VCPUID(0)
            s.virqPorts[owner]?[virq] = nil
        case .interdomain(let remote, let remotePort):
            let me = configuration.domainID
            if remote == me {
                s.guest[remotePort].binding = .unbound(remote: me)
            } else {
                s.backend[remotePort].binding = .unbound(remote: me)
            }
        }
        freeGuest(port, &s)
    }

    /// EVTCHNOP_send (`evtchn_send`): an interdomain port notifies its remote
    /// end (a backend's peer, or the guest's own port for a loopback), an IPI
    /// port its own vCPU; an unbound port drops the event silently. -EINVAL
    /// for an invalid port or any other state (free, reserved, VIRQ).
    public func send(_ port: EventChannelPort) throws(XenErrno) {
        try withState { (s, e) throws(XenErrno) in
            guard let entry = s.guest.entry(port) else { throw .einval }
            switch entry.binding {
            case .interdomain(let remote, let remotePort):
                if remote == configuration.domainID {
                    setGuestPending(remotePort, vcpu: s.guest[remotePort].vcpu, &e)
                } else {
                    setBackendPending(remotePort, s, &e)
                }
            case .ipi:
                setGuestPending(port, vcpu: entry.vcpu, &e)
            case .unbound:
                break
            default:
                throw .einval
            }
        }
    }

    /// EVTCHNOP_status (`evtchn_status`): -ESRCH unknown domain, -EINVAL
    /// invalid port (checked in that domain's table first), -EPERM the
    /// backend domain's ports (XSM_TARGET).
    public func status(domain: DomainID, port: EventChannelPort) throws(XenErrno) -> EventChannelStatus {
        let side = try side(domain)
        return try withState { (s, _) throws(XenErrno) in
            switch side {
            case .backend:
                guard s.backend.entry(port) != nil else { throw .einval }
                throw .eperm
            case .guest:
                guard let entry = s.guest.entry(port) else { throw .einval }
                return EventChannelStatus(binding: entry.binding, vcpu: entry.vcpu)
            }
        }
    }

    /// EVTCHNOP_bind_vcpu (`evtchn_bind_vcpu`, Xen 4.17): notify `vcpu` from
    /// now on. Allowed for unbound and interdomain ports and global VIRQs;
    /// -EINVAL for per-vCPU VIRQs, IPIs, free/reserved or invalid ports;
    /// -ENOENT no such vCPU (checked first). Events already pending stay
    /// where they were signalled, as in Xen.
    public func bindVCPU(_ port: EventChannelPort, vcpu: VCPUID) throws(XenErrno) {
        guard isValid(vcpu) else { throw .enoent }
        try withState { (s, _) throws(XenErrno) in
            guard let entry = s.guest.entry(port) else { throw .einval }
            switch entry.binding {
            case .virq(let virq) where !virq.isPerVCPU:
                s.guest[port].vcpu = vcpu
            case .unbound, .interdomain:
                s.guest[port].vcpu = vcpu
            default:
                throw .einval
            }
        }
    }

    /// EVTCHNOP_unmask (`evtchn_unmask`, `evtchn_2l_unmask`): clear the mask
    /// bit and, if the port is pending, deliver it to its vCPU now. -EINVAL
    /// for an invalid port; a free or reserved port is a successful no-op.
    public func unmask(_ port: EventChannelPort) throws(XenErrno) {
        try withState { (s, e) throws(XenErrno) in
            guard let entry = s.guest.entry(port) else { throw .einval }
            guard entry.binding.isUsable, let two = twoLevel else { return }
            if two.unmask(port, vcpu: entry.vcpu) { e.upcalls.append(entry.vcpu) }
        }
    }

    /// EVTCHNOP_reset / EVTCHNOP_reset_cont (`evtchn_reset`): close every port
    /// of the guest. -ESRCH unknown domain, -EPERM the backend domain. The
    /// continuation form (`resuming`) finds no reset in progress (ours never
    /// needs preempting) and answers -EBUSY, as Xen does then.
    public func reset(domain: DomainID, resuming: Bool = false) throws(XenErrno) {
        guard try side(domain) == .guest else { throw .eperm }
        if resuming { throw .ebusy }
        try withState { (s, _) throws(XenErrno) in
            for p in 1..<s.guest.validCount {
                let port = EventChannelPort(UInt32(p))
                if s.guest[port].binding.isUsable { try? closeGuest(port, &s) }
            }
        }
    }

    // MARK: Xen-raised events

    /// Raises `virq` (`send_guest_vcpu_virq` for per-vCPU VIRQs on `vcpu`,
    /// `send_guest_global_virq` for the others, which go to the bound port's
    /// vCPU). True when a port was bound to it.
    @discardableResult
    public func raise(_ virq: VIRQ, on vcpu: VCPUID = VCPUID(0)) -> Bool {
        (try? withState { (s, e) throws(XenErrno) -> Bool in
            let owner = virq.isPerVCPU ? vcpu : VCPUID(0)
            guard let port = s.virqPorts[owner]?[virq] else { return false }
            setGuestPending(port, vcpu: virq.isPerVCPU ? vcpu : s.guest[port].vcpu, &e)
            return true
        }) ?? false
    }

    /// Asserts `vcpu`'s upcall once, whether or not an event is pending
    /// (hvm.c hvm_assert_evtchn_irq, called by hvmop_set_evtchn_upcall_vector
    /// for the new vector and by hvm_set_callback_via on every vCPU).
    public func assertUpcall(vcpu: VCPUID) {
        notifier.upcall(vcpu: vcpu)
    }

    // MARK: the VMM's backend domain

    /// A backend port waiting for the guest to bind it (the frontend reads it
    /// from XenStore and calls EVTCHNOP_bind_interdomain). `peer` hears the
    /// guest's notifications on it. -ENOSPC.
    public func backendAllocateUnbound(peer: any EventChannelPeer) throws(XenErrno) -> EventChannelPort {
        let me = configuration.domainID
        return try withState { (s, _) throws(XenErrno) in
            let port = try s.backend.allocate(below: Self.backendPortLimit)
            s.backend[port].binding = .unbound(remote: me)
            s.peers[port] = peer
            return port
        }
    }

    /// Connects a new backend port to guest port `guestPort`, which must be
    /// unbound and waiting for the backend domain (the frontend's
    /// alloc_unbound, or a toolstack port such as HVM_PARAM_CONSOLE_EVTCHN made
    /// with `allocateUnbound(domain:remote:)`); -EINVAL otherwise. The new
    /// port is set pending, so `peer` hears one notification at once.
    public func backendBindInterdomain(guestPort: EventChannelPort, peer: any EventChannelPeer) throws(XenErrno) -> EventChannelPort {
        let me = configuration.domainID
        let backendID = configuration.backendDomainID
        return try withState { (s, e) throws(XenErrno) in
            let local = try s.backend.allocate(below: Self.backendPortLimit)
            guard let remote = s.guest.entry(guestPort), case .unbound(let waitingFor) = remote.binding,
                  waitingFor == backendID
            else { throw .einval }
            s.backend[local].binding = .interdomain(remote: me, remotePort: guestPort)
            s.guest[guestPort].binding = .interdomain(remote: backendID, remotePort: local)
            s.peers[local] = peer
            setBackendPending(local, s, &e)
            return local
        }
    }

    /// The backend notifies the guest over `port` (`evtchn_send` by the
    /// backend domain): sets the guest port pending on its vCPU. Dropped if
    /// the guest has not bound yet or has closed; -EINVAL for a port that is
    /// not the backend's.
    public func backendSend(_ port: EventChannelPort) throws(XenErrno) {
        try withState { (s, e) throws(XenErrno) in
            guard let entry = s.backend.entry(port) else { throw .einval }
            switch entry.binding {
            case .interdomain(_, let guestPort):
                setGuestPending(guestPort, vcpu: s.guest[guestPort].vcpu, &e)
            case .unbound:
                break
            default:
                throw .einval
            }
        }
    }

    /// Closes a backend port; the guest's end goes back to unbound, waiting
    /// for the backend domain. -EINVAL for a port that is not in use.
    public func backendClose(_ port: EventChannelPort) throws(XenErrno) {
        let backendID = configuration.backendDomainID
        try withState { (s, _) throws(XenErrno) in
            guard let entry = s.backend.entry(port), entry.binding.isUsable else { throw .einval }
            if case .interdomain(_, let guestPort) = entry.binding {
                s.guest[guestPort].binding = .unbound(remote: backendID)
            }
            s.backend[port] = PortTable.Entry()
            s.peers[port] = nil
        }
    }

    // MARK: queries for the VMM

    /// The state of a guest port with toolstack authority (nil: invalid port).
    public func guestPortStatus(_ port: EventChannelPort) -> EventChannelStatus? {
        state.withLock { s in s.guest.entry(port).map { EventChannelStatus(binding: $0.binding, vcpu: $0.vcpu) } }
    }

    /// The state of a backend port (nil: invalid port).
    public func backendPortStatus(_ port: EventChannelPort) -> EventChannelStatus? {
        state.withLock { s in s.backend.entry(port).map { EventChannelStatus(binding: $0.binding, vcpu: $0.vcpu) } }
    }

    /// Whether a guest port is in use and pending (`evtchn_port_is_pending`,
    /// for SCHEDOP_poll).
    public func isPending(_ port: EventChannelPort) -> Bool {
        state.withLock { s in
            guard let entry = s.guest.entry(port), entry.binding.isUsable else { return false }
            return twoLevel?.isPending(port) ?? false
        }
    }

    /// Whether a guest port is masked (`evtchn_port_is_masked`: unusable ports are).
    public func isMasked(_ port: EventChannelPort) -> Bool {
        state.withLock { s in
            guard let entry = s.guest.entry(port), entry.binding.isUsable else { return true }
            return twoLevel?.isMasked(port) ?? true
        }
    }

    /// `vcpu_info.evtchn_upcall_pending` of `vcpu`: while it is set, a vCPU
    /// using the HVM_PARAM_CALLBACK_IRQ vector must be given that vector on
    /// entry whenever it can take interrupts (hvm_vcpu_has_pending_irq).
    public func upcallPending(vcpu: VCPUID) -> Bool {
        twoLevel?.upcallPending(vcpu) ?? false
    }

    /// Guest ports in use.
    public var activeGuestPorts: Int { state.withLock { $0.guest.activeCount } }
}
