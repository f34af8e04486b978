import Dispatch
import DeviceRuntime
import EventChannels
import GuestMemory
import Hypercalls
import Synchronization
import Testing
import XenABI

/// The guest's EVTCHNOP_send as a vCPU makes it: through the hypercall
/// dispatcher (event_channel_op, cmd 4, a `struct evtchn_send` in guest
/// memory), to a backend port whose pump is blocked. The hypercall returns
/// while the backend's work is still running on the device's thread.
@Suite("EVTCHNOP_send through the dispatcher")
struct HypercallSendTests {
    struct NoConsole: ConsoleService {
        func write(_ bytes: [UInt8], from vcpu: VCPUID) {}
        func read(max: Int) -> [UInt8] { [] }
    }
    struct NoPhysmap: PhysmapService {
        func mapSharedInfo(at frame: GuestFrameNumber) throws(XenErrno) { throw .enosys }
        func backFrame(at frame: GuestFrameNumber) throws(XenErrno) { throw .enosys }
    }
    /// The table as the dispatcher's event-channel service, declared here
    /// rather than borrowed from wherever the VMM declares the conformance.
    /// The upcall hook is a no-op: the test never sets a vector.
    struct Events: EventChannelService {
        let table: EventChannelTable
        func allocateUnbound(domain: DomainID, remote: DomainID) throws(XenErrno) -> EventChannelPort {
            try table.allocateUnbound(domain: domain, remote: remote)
        }
        func bindInterdomain(remoteDomain: DomainID, remotePort: EventChannelPort) throws(XenErrno) -> EventChannelPort {
            try table.bindInterdomain(remoteDomain: remoteDomain, remotePort: remotePort)
        }
        func bindVIRQ(_ virq: VIRQ, vcpu: VCPUID) throws(XenErrno) -> EventChannelPort { try table.bindVIRQ(virq, vcpu: vcpu) }
        func bindIPI(vcpu: VCPUID) throws(XenErrno) -> EventChannelPort { try table.bindIPI(vcpu: vcpu) }
        func close(_ port: EventChannelPort) throws(XenErrno) { try table.close(port) }
        func send(_ port: EventChannelPort) throws(XenErrno) { try table.send(port) }
        func status(domain: DomainID, port: EventChannelPort) throws(XenErrno) -> EventChannelStatus {
            try table.status(domain: domain, port: port)
        }
        func bindVCPU(_ port: EventChannelPort, vcpu: VCPUID) throws(XenErrno) { try table.bindVCPU(port, vcpu: vcpu) }
        func unmask(_ port: EventChannelPort) throws(XenErrno) { try table.unmask(port) }
        func reset(domain: DomainID, resuming: Bool) throws(XenErrno) { try table.reset(domain: domain, resuming: resuming) }
        func assertUpcall(vcpu: VCPUID) {}
        func guestPortStatus(_ port: EventChannelPort) -> EventChannelStatus? { table.guestPortStatus(port) }
        func isPending(_ port: EventChannelPort) -> Bool { table.isPending(port) }
    }

    static let EVTCHNOP_send: UInt64 = 4
    static let argument = GuestPhysicalAddress(0x3000)

    @Test("the hypercall returns 0 while the backend's pump is still blocked")
    func returnsBeforeTheBackend() throws {
        let g = Guest()
        let dispatcher = HypercallDispatcher(
            configuration: DomainConfiguration(domainID: Guest.domain, vcpuCount: 1,
                                               memoryMap: [MemoryMapEntry(start: 0, length: 1 << 20, type: .ram)],
                                               totalPages: 256, maxPages: 256),
            memory: g.memory, console: NoConsole(), physmap: NoPhysmap(), eventChannels: Events(table: g.table))
        let guestPort = try g.toolstackPort()
        let entered = DispatchSemaphore(value: 0), gate = DispatchSemaphore(value: 0)
        let armed = Atomic<Bool>(false), finished = Atomic<Bool>(false)
        let device = g.runtime.makeDevice("blocked")
        _ = try device.bindChannel(events: g.table, guestPort: guestPort, on: device.makeContext()) { () throws(DeviceFault) in
            guard armed.load(ordering: .acquiring) else { return .quiet }
            entered.signal()
            gate.wait()
            finished.store(true, ordering: .releasing)
            return .quiet
        }
        #expect(device.sync())  // the binding's own pump
        armed.store(true, ordering: .releasing)

        // struct evtchn_send { evtchn_port_t port; } at a guest-physical address (paging off).
        try g.memory.store(guestPort.rawValue, at: Self.argument)
        let registers = HypercallRegisters(mode: .long64, rax: UInt64(HypercallNumber.eventChannelOp.rawValue),
                                           rsi: Self.argument.rawValue, rdi: Self.EVTCHNOP_send)
        let outcome = dispatcher.handle(registers, vcpu: VCPUID(0), paging: .pagingDisabled)
        #expect(outcome == .returnToGuest(0))
        // The vCPU is back; the backend's work started on its own thread and cannot have finished.
        #expect(entered.wait(timeout: .now() + 30) == .success)
        #expect(finished.load(ordering: .acquiring) == false)
        gate.signal()
        #expect(device.sync())
        #expect(finished.load(ordering: .acquiring) == true)
        #expect(device.metrics.pumpsOnForbiddenThreads.load(ordering: .relaxed) == 0)
    }
}
