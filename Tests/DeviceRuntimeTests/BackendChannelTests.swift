import ConsoleBackend
import Dispatch
import DeviceRuntime
import EventChannels
import Foundation
import GuestMemory
import Locking
import Synchronization
import Testing
import TestSupport
import XenABI
import XenBus
import XenRing
import XenStore



/// A guest domain in mock memory with the real event-channel table.
final class Guest {
    static let domain = DomainID(rawValue: 1)
    static let backend = DomainID(rawValue: 0)
    let memory = MockGuestMemory(size: 1 << 20)
    let table: EventChannelTable
    final class Lines: Sendable { let value = Lock<[String]>([]) }
    private let log = Lines()
    var lines: [String] { log.value.withLock { $0 } }
    let runtime: DeviceRuntime

    init(isForbiddenThread: @escaping @Sendable () -> Bool = { false }) {
        table = EventChannelTable(configuration: .init(domainID: Self.domain, vcpuCount: 1), memory: memory,
                                  locator: FixedSharedInfo(), notifier: CountingUpcalls())
        let log = self.log
        runtime = DeviceRuntime(isForbiddenThread: isForbiddenThread, log: { l in log.value.withLock { $0.append(l) } })
    }

    deinit { runtime.stopAll() }

    /// A port the toolstack leaves unbound for the backend domain (as for
    /// HVM_PARAM_CONSOLE_EVTCHN).
    func toolstackPort() throws -> EventChannelPort {
        try table.allocateUnbound(domain: Self.domain, remote: Self.backend)
    }
}

/// A minimal ring device for the tests: drains a console-layout byte ring
/// at `base` into `received` and asks to notify the guest when it moved bytes.
final class DrainDevice: Sendable {
    let ring: ByteRing
    let received = Lock<[UInt8]>([])
    init(memory: MockGuestMemory, base: GuestPhysicalAddress) throws {
        ring = try ByteRing(layout: .console, memory: memory, base: base)
    }
    func pump() throws(DeviceFault) -> BackendChannel.PumpResult {
        let bytes: [UInt8]
        do { bytes = try ring.consumeFromGuest() } catch { throw DeviceFault(error) }
        received.withLock { $0 += bytes }
        return bytes.isEmpty ? .quiet : .notifyGuest
    }
    var text: String { String(decoding: received.withLock { $0 }, as: UTF8.self) }
}

@Suite("Backend channel over mock memory and the real event-channel table")
struct BackendChannelTests {
    static func wait(_ s: DispatchSemaphore) -> Bool { s.wait(timeout: .now() + 30) == .success }

    @Test("bind to a toolstack port: interdomain; a guest send pumps on the device's thread, not the caller's; the guest hears back")
    func bindNotifyPumpNotify() throws {
        let g = Guest()
        let guestPort = try g.toolstackPort()
        let ring = try DrainDevice(memory: g.memory, base: GuestPhysicalAddress(0x20000))
        let front = try FakeByteRingFrontend(memory: g.memory, base: GuestPhysicalAddress(0x20000))
        let threads = Lock<[String]>([])
        let device = g.runtime.makeDevice("dev")
        let context = device.makeContext()
        let channel = try device.bindChannel(events: g.table, guestPort: guestPort, on: context) { () throws(DeviceFault) in
            threads.withLock { $0.append(Thread.current.name ?? "?") }
            return try ring.pump()
        }
        #expect(g.table.backendPortStatus(channel.port)?.binding == .interdomain(remote: Guest.domain, remotePort: guestPort))
        #expect(g.table.guestPortStatus(guestPort)?.binding == .interdomain(remote: Guest.backend, remotePort: channel.port))
        // Binding notified once (Xen marks the binding side pending): that pump already ran or is queued.
        #expect(device.sync())
        _ = try front.write(Array("hello".utf8))
        try g.table.send(guestPort)
        #expect(device.sync())
        #expect(ring.text == "hello")
        #expect(threads.withLock { $0 }.allSatisfy { $0 == "pvh-dev" }, "\(threads.withLock { $0 })")
        #expect(Thread.current.name != "pvh-dev")
        #expect(g.table.isPending(guestPort), "the pump moved bytes: the guest was notified")
        #expect(device.metrics.notificationsToGuest.load(ordering: .relaxed) == 1)
        #expect(device.metrics.guestNotifications.load(ordering: .relaxed) >= 1)
        #expect(device.metrics.pumpsOnForbiddenThreads.load(ordering: .relaxed) == 0)

        channel.close()
        #expect(g.table.guestPortStatus(guestPort)?.binding == .unbound(remote: Guest.backend))
        let pumps = device.metrics.pumps.load(ordering: .relaxed)
        try g.table.send(guestPort)  // unbound now: dropped
        #expect(device.sync())
        #expect(device.metrics.pumps.load(ordering: .relaxed) == pumps)
    }

    @Test("allocate an unbound backend port: the frontend binds it, then its sends pump the device")
    func allocateForFrontend() throws {
        let g = Guest()
        let pumps = Atomic<Int>(0)
        let device = g.runtime.makeDevice("vif")
        let channel = try device.allocateChannel(events: g.table, on: device.makeContext(queue: "q0-tx")) { () throws(DeviceFault) in
            pumps.wrappingAdd(1, ordering: .relaxed)
            return .quiet
        }
        #expect(channel.context.name == "pvh-vif-q0-tx")
        #expect(g.table.backendPortStatus(channel.port)?.binding == .unbound(remote: Guest.domain))
        let local = try g.table.bindInterdomain(remoteDomain: Guest.backend, remotePort: channel.port)
        try g.table.send(local)
        #expect(device.sync())
        #expect(pumps.load(ordering: .relaxed) == 1)
        channel.notifyGuest()
        #expect(g.table.isPending(local))
    }

    @Test("schedule(after:) pumps on the channel's context once the delay has passed; a closed channel is not pumped")
    func scheduleAfter() throws {
        let g = Guest()
        let device = g.runtime.makeDevice("vif")
        let ran = DispatchSemaphore(value: 0)
        let threads = Lock<[String]>([])
        let channel = try device.allocateChannel(events: g.table, on: device.makeContext(queue: "q0")) { () throws(DeviceFault) in
            threads.withLock { $0.append(Thread.current.name ?? "?") }
            ran.signal()
            return .quiet
        }
        let asked = ContinuousClock.now
        channel.schedule(after: .milliseconds(50))
        #expect(Self.wait(ran))
        #expect(ContinuousClock.now - asked >= .milliseconds(50))
        #expect(threads.withLock { $0 } == ["pvh-vif-q0"])

        let closing = try device.allocateChannel(events: g.table, on: device.makeContext(queue: "q1")) { () throws(DeviceFault) in
            threads.withLock { $0.append(Thread.current.name ?? "?") }
            return .quiet
        }
        closing.schedule(after: .milliseconds(20))
        closing.close()
        // A later timer on the first channel fires after the closed one's would have.
        channel.schedule(after: .milliseconds(100))
        #expect(Self.wait(ran))
        #expect(device.sync())
        #expect(threads.withLock { $0 } == ["pvh-vif-q0", "pvh-vif-q0"])
    }

    @Test("a net queue's split TX/RX channels on one context: each send pumps its own side; block-style queues get a context each")
    func splitChannels() throws {
        let g = Guest()
        let tx = Atomic<Int>(0), rx = Atomic<Int>(0)
        let vif = g.runtime.makeDevice("vif")
        let queue = vif.makeContext(queue: "q0")
        let txChannel = try vif.allocateChannel(events: g.table, on: queue) { () throws(DeviceFault) in
            tx.wrappingAdd(1, ordering: .relaxed)
            return .quiet
        }
        let rxChannel = try vif.allocateChannel(events: g.table, on: queue) { () throws(DeviceFault) in
            rx.wrappingAdd(1, ordering: .relaxed)
            return .quiet
        }
        let txPort = try g.table.bindInterdomain(remoteDomain: Guest.backend, remotePort: txChannel.port)
        let rxPort = try g.table.bindInterdomain(remoteDomain: Guest.backend, remotePort: rxChannel.port)
        try g.table.send(txPort)
        #expect(vif.sync())
        #expect(tx.load(ordering: .relaxed) == 1 && rx.load(ordering: .relaxed) == 0)
        try g.table.send(rxPort)
        #expect(vif.sync())
        #expect(tx.load(ordering: .relaxed) == 1 && rx.load(ordering: .relaxed) == 1)

        let vbd = g.runtime.makeDevice("vbd")
        let rings = try (0..<2).map { (i: Int) throws(XenErrno) -> BackendChannel in
            try vbd.allocateChannel(events: g.table, on: vbd.makeContext(queue: "r\(i)")) { () throws(DeviceFault) in .quiet }
        }
        #expect(rings.map(\.context.name) == ["pvh-vbd-r0", "pvh-vbd-r1"])
        #expect(vbd.threadCount == 2 && vif.threadCount == 1)
    }

    @Test("EVTCHNOP_send to a backend port returns before the backend's work is done")
    func sendReturnsAtOnce() throws {
        let g = Guest()
        let guestPort = try g.toolstackPort()
        let entered = DispatchSemaphore(value: 0), gate = DispatchSemaphore(value: 0)
        let armed = Atomic<Bool>(false), finished = Atomic<Bool>(false)
        let device = g.runtime.makeDevice("slow")
        _ = try device.bindChannel(events: g.table, guestPort: guestPort, on: device.makeContext()) { () throws(DeviceFault) in
            guard armed.load(ordering: .acquiring) else { return .quiet }
            entered.signal()
            gate.wait()  // the backend's work cannot finish until the test lets it
            finished.store(true, ordering: .releasing)
            return .quiet
        }
        #expect(device.sync())  // the binding's own pump
        armed.store(true, ordering: .releasing)
        try g.table.send(guestPort)  // what EVTCHNOP_send does on the vCPU thread
        // Back from the hypercall; the pump is running on its thread and blocked.
        #expect(Self.wait(entered))
        #expect(finished.load(ordering: .acquiring) == false)
        try g.table.send(guestPort)  // a second send while the pump is blocked returns too
        gate.signal()
        gate.signal()
        #expect(device.sync())
        #expect(finished.load(ordering: .acquiring) == true)
    }

    @Test("a pump on a thread the runtime forbids is counted")
    func forbiddenThreadsCounted() throws {
        let g = Guest(isForbiddenThread: { Thread.current.name == "pvh-dev" })
        let device = g.runtime.makeDevice("dev")
        _ = try device.bindChannel(events: g.table, guestPort: try g.toolstackPort(), on: device.makeContext()) { () throws(DeviceFault) in
            .quiet
        }
        #expect(device.sync())
        #expect(g.runtime.pumpsOnForbiddenThreads >= 1)
    }
}

@Suite("A corrupted ring disables its device only")
struct DeviceFaultTests {
    @Test("the hostile ring's device stops (log line, counter, onFault once); another device and the console keep working")
    func onlyThatDevice() throws {
        let g = Guest()
        let faults = Lock<[DeviceFault]>([])
        // Device A: a drain device on a ring at 0x20000.
        let a = try DrainDevice(memory: g.memory, base: GuestPhysicalAddress(0x20000))
        let aFront = try FakeByteRingFrontend(memory: g.memory, base: GuestPhysicalAddress(0x20000))
        let aDevice = g.runtime.makeDevice("a") { f in faults.withLock { $0.append(f) } }
        let aPort = try g.toolstackPort()
        _ = try aDevice.bindChannel(events: g.table, guestPort: aPort, on: aDevice.makeContext()) { () throws(DeviceFault) in
            try a.pump()
        }
        // Device B: the same kind on a ring at 0x30000.
        let b = try DrainDevice(memory: g.memory, base: GuestPhysicalAddress(0x30000))
        let bFront = try FakeByteRingFrontend(memory: g.memory, base: GuestPhysicalAddress(0x30000))
        let bDevice = g.runtime.makeDevice("b")
        let bPort = try g.toolstackPort()
        _ = try bDevice.bindChannel(events: g.table, guestPort: bPort, on: bDevice.makeContext()) { () throws(DeviceFault) in
            try b.pump()
        }
        // And the real console on the same runtime.
        let out = Lock<[UInt8]>([])
        let console = try ConsoleBackend(memory: g.memory, frame: GuestFrameNumber(0x40), events: g.table, domain: Guest.domain,
                                         runtime: g.runtime, output: { bytes in out.withLock { $0 += bytes } })
        let consoleFront = try FakeByteRingFrontend(memory: g.memory, base: GuestPhysicalAddress(0x40000))
        #expect(g.runtime.threadCount == 3)

        // The guest corrupts A's ring: out_prod far beyond out_cons + size.
        try aFront.store(RingIndex(0x7fff_0000), ByteRingLayout.console.fromGuest.producerOffset)
        try g.table.send(aPort)
        #expect(aDevice.sync())
        #expect(aDevice.isDisabled)
        #expect(aDevice.fault?.kind == .hostileGuest)
        #expect(aDevice.metrics.faults.load(ordering: .relaxed) == 1)
        #expect(aDevice.metrics.hostileGuestFaults.load(ordering: .relaxed) == 1)
        #expect(faults.withLock { $0.count } == 1)
        #expect(g.lines.count == 1)
        #expect(g.lines.first?.hasPrefix("a: disabled: hostile guest: indexOverrun") == true, "\(g.lines)")
        // A hears nothing more; its thread is gone.
        try g.table.send(aPort)
        #expect(aDevice.metrics.ignoredAfterFault.load(ordering: .relaxed) == 1)
        #expect(faults.withLock { $0.count } == 1)
        aDevice.stop()
        #expect(aDevice.threadCount == 0)

        // B and the console go on.
        _ = try bFront.write(Array("still here".utf8))
        try g.table.send(bPort)
        #expect(bDevice.sync())
        #expect(b.text == "still here")
        _ = try consoleFront.write(Array("console too\n".utf8))
        try g.table.send(console.guestPort)
        #expect(console.sync())
        #expect(String(decoding: out.withLock { $0 }, as: UTF8.self) == "console too\n")
        #expect(!bDevice.isDisabled && !console.device.isDisabled)
        #expect(g.runtime.threadCount == 2)
    }

    /// A xenbus device's driver that counts disconnects.
    final class StubDriver: XenbusBackendDriver {
        let disconnects = Atomic<Int>(0)
        func backendNodes() -> [(String, String)] { [] }
        func connect(frontend: [String: String]) throws -> [(String, String)] { [] }
        func disconnect() { disconnects.wrappingAdd(1, ordering: .relaxed) }
    }

    @Test("a xenbus device whose ring is corrupted: error node as xenbus_dev_fatal writes it, Closing, Closed when the frontend closes; the XenStore ring keeps serving")
    func xenbusDeviceFatal() throws {
        let g = Guest()
        let store = XenStoreServer()
        try store.mkdir("/local/domain/1")
        try store.setPermissions("/local/domain/1", XenStorePermissions(owner: Guest.domain))
        let address = XenbusDeviceAddress(type: "vtest", frontend: Guest.domain, index: 0)
        let driver = StubDriver()
        let xenbus = try XenbusBackendDevice(store: store, address: address, driver: driver)
        // Every backend state the frontend could see, in order.
        let states = Lock<[String]>([])
        _ = try store.watch("\(address.backendPath)/state", token: "t") { path, _ in
            if let v = try? store.read(path) { states.withLock { $0.append(v) } }
        }
        try store.write("\(address.frontendPath)/state", "3")  // frontend Initialised
        #expect(xenbus.backendState == .connected)

        let ring = try DrainDevice(memory: g.memory, base: GuestPhysicalAddress(0x20000))
        let front = try FakeByteRingFrontend(memory: g.memory, base: GuestPhysicalAddress(0x20000))
        let device = g.runtime.makeDevice("vtest-0") { fault in xenbus.fatal("\(fault)") }
        let port = try g.toolstackPort()
        _ = try device.bindChannel(events: g.table, guestPort: port, on: device.makeContext()) { () throws(DeviceFault) in
            try ring.pump()
        }
        // The guest's XenStore ring on the same runtime and store.
        let xs = try XenStoreRingConnection(memory: g.memory, frame: GuestFrameNumber(0x50), events: g.table,
                                            domain: Guest.domain, server: store, runtime: g.runtime)
        let xsFront = try FakeByteRingFrontend(memory: g.memory, base: GuestPhysicalAddress(0x50000), layout: .xenStore)

        try front.store(RingIndex(0x7fff_0000), ByteRingLayout.console.fromGuest.producerOffset)
        try g.table.send(port)
        #expect(device.sync())
        #expect(device.isDisabled)
        #expect(xenbus.backendState == .closing)
        #expect(driver.disconnects.load(ordering: .relaxed) == 1)
        let error = try store.read("/local/domain/0/error/backend/vtest/1/0/error")
        #expect(error.hasPrefix("5 hostile guest: indexOverrun"), "\(error)")
        #expect(address.errorPath == "/local/domain/0/error/backend/vtest/1/0/error")
        try store.write("\(address.frontendPath)/state", "6")  // frontend Closed
        #expect(xenbus.backendState == .closed)
        #expect(driver.disconnects.load(ordering: .relaxed) == 1)
        #expect(states.withLock { $0 }.suffix(2) == ["5", "6"], "Closing then Closed: \(states.withLock { $0 })")

        // The XenStore ring still answers the guest.
        let request = XenStoreMessage(type: .read, requestID: 3, strings: ["/local/domain/0/backend/vtest/1/0/state"])
        _ = try xsFront.write(request.bytes)
        try g.table.send(xs.guestPort)
        #expect(xs.sync())
        let reply = try xsFront.read()
        #expect(reply.count > 16)
        #expect(Array(reply.suffix(1)) == Array("6".utf8))
        #expect(!xs.isDead)
    }
}

@Suite("Who is to blame")
struct DeviceFaultKindTests {
    @Test("XenRingError.isHostileGuest decides: an index overrun is the guest's, a ring outside RAM or a backend bug is not")
    func blame() {
        let overrun = XenRingError.indexOverrun(.fromGuest, producer: RingIndex(100), consumer: RingIndex(0), size: 32)
        #expect(DeviceFault(overrun).kind == .hostileGuest)
        let bug = XenRingError.responseWithoutRequest(responseProducer: RingIndex(1), requestConsumer: RingIndex(0))
        #expect(DeviceFault(bug).kind == .backendFailure)
        let memory = XenRingError.memory(.outOfBounds(GuestPhysicalAddress(1 << 40), count: 4096))
        #expect(DeviceFault(memory).kind == .backendFailure)
    }
}
