import XenABI

// event_channel_op, after Xen 4.17 xen/common/event_channel.c do_event_channel_op:
// copy the sub-op's structure in once (-EFAULT), run it, and on success copy
// the whole structure back (-EFAULT) for the sub-ops that have outputs.
extension HypercallDispatcher {
    func eventChannelOp(_ command: EventChannelOpCommand, _ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        guard let channels = eventChannels else { throw .enosys }
        switch command {
        case .allocUnbound:
            typealias W = XenWire.EventChannelAllocUnbound
            var bytes = try c.guest.readVirtual(at: arg, count: W.size)
            let port = try channels.allocateUnbound(domain: DomainID(rawValue: bytes.wireValue(W.dom)),
                                                    remote: DomainID(rawValue: bytes.wireValue(W.remoteDom)))
            bytes.setWireValue(port.rawValue, in: W.port)
            try c.guest.writeVirtual(bytes, at: arg)

        case .bindInterdomain:
            typealias W = XenWire.EventChannelBindInterdomain
            var bytes = try c.guest.readVirtual(at: arg, count: W.size)
            let port = try channels.bindInterdomain(remoteDomain: DomainID(rawValue: bytes.wireValue(W.remoteDom)),
                                                    remotePort: EventChannelPort(bytes.wireValue(W.remotePort)))
            bytes.setWireValue(port.rawValue, in: W.localPort)
            try c.guest.writeVirtual(bytes, at: arg)

        case .bindVIRQ:
            typealias W = XenWire.EventChannelBindVIRQ
            var bytes = try c.guest.readVirtual(at: arg, count: W.size)
            let port = try channels.bindVIRQ(VIRQ(rawValue: bytes.wireValue(W.virq)), vcpu: VCPUID(bytes.wireValue(W.vcpu)))
            bytes.setWireValue(port.rawValue, in: W.port)
            try c.guest.writeVirtual(bytes, at: arg)

        case .bindIPI:
            typealias W = XenWire.EventChannelBindIPI
            var bytes = try c.guest.readVirtual(at: arg, count: W.size)
            let port = try channels.bindIPI(vcpu: VCPUID(bytes.wireValue(W.vcpu)))
            bytes.setWireValue(port.rawValue, in: W.port)
            try c.guest.writeVirtual(bytes, at: arg)

        case .bindPIRQ:
            // No physical or emulated IRQs in this VMM: Xen's answer when it is
            // built without CONFIG_HAS_PIRQ (evtchn_bind_pirq), after the copy-in.
            _ = try c.guest.readVirtual(at: arg, count: XenWire.EventChannelBindPIRQ.size)
            throw .eopnotsupp

        case .close:
            try channels.close(try port(arg, c))

        case .send:
            try channels.send(try port(arg, c))

        case .unmask:
            try channels.unmask(try port(arg, c))

        case .status:
            typealias W = XenWire.EventChannelStatus
            var bytes = try c.guest.readVirtual(at: arg, count: W.size)
            let status = try channels.status(domain: DomainID(rawValue: bytes.wireValue(W.dom)),
                                             port: EventChannelPort(bytes.wireValue(W.port)))
            bytes.setWireValue(status.code.rawValue, in: W.status)
            bytes.setWireValue(status.vcpu.rawValue, in: W.vcpu)
            // Only the member for the state is written; the rest of the union
            // goes back as the guest passed it, as in Xen.
            switch status.binding {
            case .unbound(let remote):
                bytes.setWireValue(remote.rawValue, in: W.unboundDom)
            case .interdomain(let remote, let remotePort):
                bytes.setWireValue(remote.rawValue, in: W.interdomainDom)
                bytes.setWireValue(remotePort.rawValue, in: W.interdomainPort)
            case .virq(let virq):
                bytes.setWireValue(virq.rawValue, in: W.virq)
            case .free, .reserved, .ipi:
                break
            }
            try c.guest.writeVirtual(bytes, at: arg)

        case .bindVCPU:
            typealias W = XenWire.EventChannelBindVCPU
            let bytes = try c.guest.readVirtual(at: arg, count: W.size)
            try channels.bindVCPU(EventChannelPort(bytes.wireValue(W.port)), vcpu: VCPUID(bytes.wireValue(W.vcpu)))

        case .reset, .resetContinuation:
            typealias W = XenWire.EventChannelReset
            let bytes = try c.guest.readVirtual(at: arg, count: W.size)
            try channels.reset(domain: DomainID(rawValue: bytes.wireValue(W.dom)), resuming: command == .resetContinuation)

        case .initControl, .expandArray, .setPriority:
            // The FIFO ABI is not offered: these answer -ENOSYS, as a Xen
            // without it does (before 4.4 they were unknown sub-ops, the
            // default case). Linux then uses the 2-level ABI
            // (drivers/xen/events/events_base.c xen_init_IRQ: any error from
            // xen_evtchn_fifo_init → xen_evtchn_2l_init).
            throw .enosys
        }
        return 0
    }

    /// The port of `evtchn_close`, `evtchn_send` and `evtchn_unmask`.
    private func port(_ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> EventChannelPort {
        let bytes = try c.guest.readVirtual(at: arg, count: XenWire.EventChannelPortArgument.size)
        return EventChannelPort(bytes.wireValue(XenWire.EventChannelPortArgument.port))
    }
}
