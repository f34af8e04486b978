import GuestMemory
import XenABI

// sched_op, after xen/common/sched/core.c do_sched_op and
// xen/common/domain.c domain_shutdown.
extension HypercallDispatcher {
    func schedOp(_ command: SchedOpCommand, _ arg: GuestVirtualAddress, _ c: CallContext) -> HypercallOutcome {
        switch command {
        case .yield:
            return .yield
        case .shutdown:
            let bytes: [UInt8]
            do { bytes = try c.guest.readVirtual(at: arg, count: XenWire.SchedShutdown.size) } catch { return .returnToGuest(error.negated) }
            // Xen truncates the reason to 8 bits, and a code recorded earlier by
            // SCHEDOP_shutdown_code (or a previous shutdown) wins.
            let requested = UInt32(bytes.wireValue(XenWire.SchedShutdown.reason, as: UInt8.self))
            let code = state.storage.withLock { s in
                if s.shutdownCode == nil { s.shutdownCode = requested }
                return s.shutdownCode ?? requested
            }
            // Xen accepts any reason and stops the domain; the toolstack's
            // default for one it does not know is to destroy it, which is
            // what it does for a crash.
            return .shutdown(ShutdownReason(rawValue: UInt64(code)) ?? .crash)
        case .shutdownCode:
            let bytes: [UInt8]
            do { bytes = try c.guest.readVirtual(at: arg, count: XenWire.SchedShutdown.size) } catch { return .returnToGuest(error.negated) }
            let requested = UInt32(bytes.wireValue(XenWire.SchedShutdown.reason, as: UInt8.self))
            state.storage.withLock { s in if s.shutdownCode == nil { s.shutdownCode = requested } }
            return .returnToGuest(0)
        case .remoteShutdown:
            let bytes: [UInt8]
            do { bytes = try c.guest.readVirtual(at: arg, count: XenWire.SchedRemoteShutdown.size) } catch { return .returnToGuest(error.negated) }
            let domid = bytes.wireValue(XenWire.SchedRemoteShutdown.domainID, as: UInt16.self)
            // Looked up by real id only (DOMID_SELF is not one); a domain is not
            // its own device model, so XSM_DM_PRIV refuses it.
            return .returnToGuest(domid == configuration.domainID.rawValue ? XenErrno.eperm.negated : XenErrno.esrch.negated)
        case .pinOverride:
            // Hardware domain only.
            return .returnToGuest(XenErrno.eperm.negated)
        case .block:
            guard eventChannels != nil else { return .returnToGuest(XenErrno.enosys.negated) }
            // vcpu_block_enable_events: local_event_delivery_enable() clears
            // the caller's evtchn_upcall_mask, then vcpu_block().
            enableEventDelivery(c.vcpu)
            return .block
        case .poll:
            do {
                return try poll(arg, c)
            } catch {
                return .returnToGuest(error.negated)
            }
        case .watchdog:
            // Domain watchdogs (domain_watchdog) are not implemented: -ENOSYS,
            // which Linux's xen_wdt driver reports as "no watchdog".
            return .returnToGuest(XenErrno.enosys.negated)
        }
    }

    /// Xen's "fairly arbitrary limit" on SCHEDOP_poll's port list (do_poll).
    public static let maximumPollPorts = 128

    /// SCHEDOP_poll (do_sched_op, do_poll; compat_poll for 32-bit callers):
    /// copy the struct (-EFAULT); more than 128 ports is -EINVAL; then each
    /// port in order, each read once: a fault is -EFAULT, a port beyond the
    /// domain's or not in use is -EINVAL (evtchn_port_poll), and a pending
    /// one ends the poll at once with 0 (ports after it are not looked at).
    /// Otherwise the vCPU blocks: `.poll`. A `timeout` of 0 means none; any
    /// other value is an absolute system time (`set_timer(poll_timer,
    /// timeout)`; 2^63 and above are negative `s_time_t`, i.e. past).
    private func poll(_ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> HypercallOutcome {
        guard let eventChannels else { throw .enosys }
        typealias P = XenWire.SchedPoll
        let bytes = try c.guest.readVirtual(at: arg, count: P.size(c.mode))
        let count = bytes.wireValue(P.nrPorts(c.mode), as: UInt32.self)
        let list = GuestVirtualAddress(bytes.wireValue(P.ports(c.mode), as: UInt64.self))
        let timeout = bytes.wireValue(P.timeout(c.mode), as: UInt64.self)
        guard count <= Self.maximumPollPorts else { throw .einval }
        var ports: [EventChannelPort] = []
        ports.reserveCapacity(Int(count))
        for i in 0..<UInt64(count) {
            let raw = try c.guest.readVirtual(at: list.advanced(by: i * UInt64(P.portSize)), count: P.portSize)
            let port = EventChannelPort(raw.wireValue(WireField(offset: 0, size: P.portSize), as: UInt32.self))
            guard let status = eventChannels.guestPortStatus(port), status.code != .closed else { throw .einval }
            if eventChannels.isPending(port) { return .returnToGuest(0) }
            ports.append(port)
        }
        return .poll(ports: ports, deadline: timeout == 0 ? nil : SystemTime(rawValue: Int64(bitPattern: timeout)))
    }

    /// `local_event_delivery_enable`: clears `evtchn_upcall_mask` in `vcpu`'s
    /// vcpu_info (registered, else its legacy slot in shared_info, else it
    /// has none and there is nothing to clear).
    func enableEventDelivery(_ vcpu: VCPUID) {
        guard let base = state.vcpuInfoAddress(for: vcpu),
              let mask = base.advanced(by: UInt64(XenWire.VCPUInfo.upcallMask.offset)) else { return }
        try? memory.store(UInt8(0), at: mask)
    }


    /// The `set_timer_op` hypercall (sched/core.c do_set_timer_op, compat.c
    /// compat_set_timer_op): always 0; drives the caller's single-shot timer.
    func setTimerOp(_ timeout: UInt64, _ c: CallContext) throws(XenErrno) -> Int64 {
        guard let time else { throw .enosys }
        time.setTimerOp(vcpu: c.vcpu, deadline: timeout)
        return 0
    }
}
