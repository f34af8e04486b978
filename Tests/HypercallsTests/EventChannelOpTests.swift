import EventChannels
import GuestMemory
import Hypercalls
import Testing
import TestSupport
import XenABI

// event_channel_op through the dispatcher: argument copy-in/out, field
// offsets, sub-op decoding, and delivery into the shared_info the guest mapped.

private let bad: UInt64 = 0x7f00_0000  // beyond the 16 MiB of RAM
private let selfID = UInt16(DomainID.`self`.rawValue)
private let arg: UInt64 = 0x1000
private let shinfoFrame: UInt64 = 0x200  // shared_info at 0x200000

private enum Op: UInt64 {
    case bindInterdomain = 0, bindVIRQ, bindPIRQ, close, send, status, allocUnbound, bindIPI, bindVCPU, unmask, reset
    case initControl, expandArray, setPriority, resetCont
}

private func evtchn(_ h: Harness, _ op: Op, mode: GuestCPUMode = .long64, vcpu: UInt32 = 0) -> HypercallOutcome {
    h.call(.eventChannelOp, op.rawValue, arg, mode: mode, vcpu: vcpu)
}

/// A harness with event channels and shared_info mapped (XENMEM_add_to_physmap).
private func mapped() -> Harness {
    let h = Harness(withEventChannels: true)
    h.put([UInt8](repeating: 0, count: 24), 0x3000)
    h.set(selfID, 0x3000)
    h.set(UInt32(0), 0x3004)  // XENMAPSPACE_shared_info
    h.set(UInt64(0), 0x3008)
    h.set(shinfoFrame, 0x3010)
    #expect(h.call(.memoryOp, 7, 0x3000) == .zero)
    return h
}

@Test func eventChannelOpWithoutAServiceIsENOSYS() {
    let h = Harness()
    #expect(evtchn(h, .allocUnbound) == .error(.enosys))
    #expect(evtchn(h, .send) == .error(.enosys))
}

@Test func allocUnboundWritesThePortBack() {
    let h = mapped()
    h.put([UInt8](repeating: 0xee, count: 8), arg)
    h.set(selfID, arg)
    h.set(UInt16(0), arg + 2)
    #expect(evtchn(h, .allocUnbound) == .zero)
    #expect(h.u16(arg) == selfID && h.u16(arg + 2) == 0)
    #expect(h.u32(arg + 4) == 1)
    #expect(evtchn(h, .allocUnbound) == .zero)
    #expect(h.u32(arg + 4) == 2)
    // Errors leave the structure alone.
    h.set(UInt32(0xdead), arg + 4)
    h.set(UInt16(0), arg)  // the backend domain: no authority
    #expect(evtchn(h, .allocUnbound) == .error(.eperm))
    h.set(UInt16(9), arg)
    #expect(evtchn(h, .allocUnbound) == .error(.esrch))
    #expect(h.u32(arg + 4) == 0xdead)
    #expect(h.call(.eventChannelOp, 6, bad) == .error(.efault))
    #expect(h.call(.eventChannelOp, 6, UInt64(Harness.ramSize) - 4) == .error(.efault))
}

@Test func bindVIRQAndIPIThenSendDeliversIntoSharedInfo() {
    let h = mapped()
    let shinfo = shinfoFrame << 12
    // bind_virq { virq, vcpu, port }
    h.set(UInt32(0), arg)  // VIRQ_TIMER
    h.set(UInt32(1), arg + 4)
    #expect(evtchn(h, .bindVIRQ) == .zero)
    #expect(h.u32(arg + 8) == 1)
    #expect(evtchn(h, .bindVIRQ) == .error(.eexist))
    h.set(UInt32(2), arg + 4)
    #expect(evtchn(h, .bindVIRQ) == .error(.enoent))
    h.set(UInt32(24), arg)
    #expect(evtchn(h, .bindVIRQ) == .error(.einval))
    // bind_ipi { vcpu, port }
    h.set(UInt32(1), arg)
    #expect(evtchn(h, .bindIPI) == .zero)
    #expect(h.u32(arg + 4) == 2)
    h.set(UInt32(7), arg)
    #expect(evtchn(h, .bindIPI) == .error(.enoent))
    // send { port }
    h.set(UInt32(2), arg)
    #expect(evtchn(h, .send) == .zero)
    #expect(h.u64(shinfo + 2048) == 1 << 2)  // evtchn_pending[0]
    #expect(h.u64(shinfo + 64 + 8) == 1)  // vcpu_info[1].evtchn_pending_sel
    #expect(h.bytes(shinfo + 64, 1) == [1])  // vcpu_info[1].evtchn_upcall_pending
    #expect(h.notifier.list == [1])
    h.set(UInt32(1), arg)
    #expect(evtchn(h, .send) == .error(.einval))  // a VIRQ port
    h.set(UInt32(0), arg)
    #expect(evtchn(h, .send) == .error(.einval))
    h.set(UInt32.max, arg)
    #expect(evtchn(h, .send) == .error(.einval))
    #expect(h.call(.eventChannelOp, 4, bad) == .error(.efault))
}

@Test func statusFillsTheStructure() {
    let h = mapped()
    guard let table = h.eventChannels else { return }
    let b = try? table.backendAllocateUnbound(peer: NullPeer())
    // bind_interdomain { remote_dom, remote_port, local_port }
    h.set(UInt16(0), arg)
    h.set(b?.rawValue ?? 0, arg + 4)
    #expect(evtchn(h, .bindInterdomain) == .zero)
    #expect(h.u32(arg + 8) == 1)
    #expect(evtchn(h, .bindInterdomain) == .error(.einval))  // now bound
    // status { dom, port, status, vcpu, union }
    func status(_ port: UInt32, dom: UInt16 = selfID) -> HypercallOutcome {
        h.put([UInt8](repeating: 0xaa, count: 24), arg)
        h.set(dom, arg)
        h.set(port, arg + 4)
        return evtchn(h, .status)
    }
    #expect(status(1) == .zero)
    #expect(h.u32(arg + 8) == 2 && h.u32(arg + 12) == 0)  // EVTCHNSTAT_interdomain, vCPU 0
    #expect(h.u16(arg + 16) == 0 && h.u32(arg + 20) == b?.rawValue)
    #expect(h.u16(arg + 18) == 0xaaaa)  // union padding goes back as it came
    h.set(UInt32(0), arg)  // VIRQ_TIMER on vCPU 1
    h.set(UInt32(1), arg + 4)
    #expect(evtchn(h, .bindVIRQ) == .zero)
    #expect(status(2) == .zero)
    #expect(h.u32(arg + 8) == 4 && h.u32(arg + 12) == 1 && h.u32(arg + 16) == 0)
    h.set(selfID, arg)
    h.set(UInt16(0), arg + 2)
    #expect(evtchn(h, .allocUnbound) == .zero)
    #expect(status(3) == .zero)
    #expect(h.u32(arg + 8) == 1 && h.u16(arg + 16) == 0 && h.u16(arg + 18) == 0xaaaa)
    #expect(status(0) == .zero)
    #expect(h.u32(arg + 8) == 0 && h.u32(arg + 16) == 0xaaaa_aaaa)
    #expect(status(64) == .error(.einval))
    #expect(status(1, dom: 0) == .error(.eperm))
    #expect(status(1, dom: 3) == .error(.esrch))
    #expect(status(1, dom: UInt16(Harness.domid.rawValue)) == .zero)
}

@Test func closeUnmaskBindVCPUAndReset() {
    let h = mapped()
    let shinfo = shinfoFrame << 12
    h.set(UInt32(0), arg)
    #expect(evtchn(h, .bindIPI) == .zero)  // port 1 on vCPU 0
    h.set(UInt64(1 << 1), shinfo + 2560)  // the guest masks it
    h.set(UInt32(1), arg)
    #expect(evtchn(h, .send) == .zero)
    #expect(h.notifier.list.isEmpty)
    #expect(evtchn(h, .unmask) == .zero)
    #expect(h.notifier.list == [0] && h.u64(shinfo + 2560) == 0)
    h.set(UInt32(64), arg)
    #expect(evtchn(h, .unmask) == .error(.einval))
    // bind_vcpu { port, vcpu }: not for IPIs.
    h.set(UInt32(1), arg)
    h.set(UInt32(1), arg + 4)
    #expect(evtchn(h, .bindVCPU) == .error(.einval))
    h.set(UInt32(5), arg + 4)
    #expect(evtchn(h, .bindVCPU) == .error(.enoent))
    // close { port }
    h.set(UInt32(1), arg)
    #expect(evtchn(h, .close) == .zero)
    #expect(evtchn(h, .close) == .error(.einval))
    #expect(h.u64(shinfo + 2048) == 0)
    // reset { dom }
    h.set(UInt32(1), arg)
    #expect(evtchn(h, .bindIPI) == .zero)
    h.set(UInt16(0), arg)
    #expect(evtchn(h, .reset) == .error(.eperm))
    h.set(UInt16(4), arg)
    #expect(evtchn(h, .reset) == .error(.esrch))
    h.set(selfID, arg)
    #expect(evtchn(h, .resetCont) == .error(.ebusy))
    #expect(h.eventChannels?.activeGuestPorts == 1)
    #expect(evtchn(h, .reset) == .zero)
    #expect(h.eventChannels?.activeGuestPorts == 0)
    #expect(h.call(.eventChannelOp, 10, bad) == .error(.efault))
}

@Test func fifoSubOpsAndPIRQsAreRefused() {
    let h = mapped()
    // FIFO ABI: -ENOSYS without reading the argument, so Linux falls back to 2-level.
    #expect(h.call(.eventChannelOp, 11, bad) == .error(.enosys))
    #expect(h.call(.eventChannelOp, 12, arg) == .error(.enosys))
    #expect(h.call(.eventChannelOp, 13, arg) == .error(.enosys))
    #expect(evtchn(h, .bindPIRQ) == .error(.eopnotsupp))
    #expect(h.call(.eventChannelOp, 2, bad) == .error(.efault))
}

@Test func garbageCommandsAndCompatMode() {
    let h = mapped()
    #expect(h.call(.eventChannelOp, 15, arg) == .error(.enosys))
    #expect(h.call(.eventChannelOp, 0xffff_ffff, arg) == .error(.enosys))
    // `int cmd`: only the low 32 bits count.
    h.set(UInt32(0), arg)
    #expect(h.call(.eventChannelOp, 1 << 32 | 7, arg) == .zero)  // bind_ipi
    #expect(h.u32(arg + 4) == 1)
    // 32-bit callers: same structures, arguments in EBX/ECX.
    h.set(UInt32(1), arg)
    #expect(evtchn(h, .send, mode: .protected32) == .zero)
    #expect(h.notifier.list == [0])
}

@Test func compatSharedInfoLayoutAfterCallbackIRQ() {
    let h = mapped()
    let shinfo = shinfoFrame << 12
    // HVM_PARAM_CALLBACK_IRQ set from 32-bit mode latches the 32-bit layout.
    h.set(selfID, 0x2000)
    h.set(UInt32(HVMParam.callbackIRQ.rawValue), 0x2004)
    h.set(UInt64(2) << 56 | 0xf3, 0x2008)
    #expect(h.call(.hvmOp, 0, 0x2000, mode: .protected32) == .zero)
    #expect(h.state.sharedInfoIs32Bit)
    #expect(h.state.callbackVia == .vector(0xf3))
    // hvm_set_callback_via asserts the upcall on every vCPU.
    #expect(h.notifier.list == [0, 1])
    h.notifier.upcalls.withLock { $0 = [] }
    for _ in 0..<33 {
        h.set(UInt32(1), arg)
        #expect(evtchn(h, .bindIPI) == .zero)
    }
    h.set(UInt32(33), arg)  // word 1, bit 1 of 32-bit words
    #expect(evtchn(h, .send) == .zero)
    #expect(h.u32(shinfo + 2048 + 4) == 1 << 1)
    #expect(h.u32(shinfo + 64 + 4) == 1 << 1)  // vcpu_info[1].evtchn_pending_sel (32-bit)
    #expect(h.notifier.list == [1])
}

@Test func setEvtchnUpcallVector() {
    let h = mapped()
    // xen_hvm_evtchn_upcall_vector { uint32_t vcpu; uint8_t vector; }
    h.set(UInt32(1), 0x2000)
    h.set(UInt8(0x0f), 0x2004)
    #expect(h.call(.hvmOp, 23, 0x2000) == .error(.einval))
    h.set(UInt8(0xf3), 0x2004)
    h.set(UInt32(2), 0x2000)
    #expect(h.call(.hvmOp, 23, 0x2000) == .error(.enoent))
    h.set(UInt32(1), 0x2000)
    #expect(h.call(.hvmOp, 23, 0x2000) == .zero)
    #expect(h.state.upcallVector(for: VCPUID(1)) == 0xf3)
    #expect(h.state.upcallVector(for: VCPUID(0)) == nil)
    #expect(h.notifier.list == [1])  // asserted once, as Xen does
    #expect(h.call(.hvmOp, 23, bad) == .error(.efault))
    // Without event channels the vector is still recorded.
    let plain = Harness()
    plain.set(UInt32(0), 0x2000)
    plain.set(UInt8(0x20), 0x2004)
    #expect(plain.call(.hvmOp, 23, 0x2000) == .zero)
    #expect(plain.state.upcallVector(for: VCPUID(0)) == 0x20)
}

private final class NullPeer: EventChannelPeer {
    func notify(_ port: EventChannelPort) {}
}
