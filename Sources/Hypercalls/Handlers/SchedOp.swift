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
        case .block, .poll, .watchdog:
            // Not yet: SCHEDOP_block/poll need event channels (the next piece of
            // work) and watchdog a timer. -ENOSYS until then; Linux PVH idles
            // with HLT and treats a failed poll as a spurious wake-up.
            return .returnToGuest(XenErrno.enosys.negated)
        }
    }
}
