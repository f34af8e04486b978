import Dispatch
import EventChannels
import GuestMemory
import Testing
import TestSupport
import XenABI

private let selfID = DomainID.`self`

// MARK: allocation

@Test func allocUnboundTakesTheLowestFreePortFromOne() throws {
    let f = Fixture()
    #expect(try f.table.allocateUnbound(domain: selfID, remote: Fixture.backend) == port(1))
    #expect(try f.table.allocateUnbound(domain: f.guest, remote: Fixture.backend) == port(2))
    #expect(try f.table.allocateUnbound(domain: selfID, remote: selfID) == port(3))
    try f.table.close(port(2))
    #expect(try f.table.allocateUnbound(domain: selfID, remote: DomainID(rawValue: 42)) == port(2))
    #expect(try f.table.status(domain: selfID, port: port(1)) == EventChannelStatus(binding: .unbound(remote: Fixture.backend), vcpu: vcpu(0)))
    // DOMID_SELF as the remote means the caller; any other remote id is taken as is.
    #expect(try f.table.status(domain: selfID, port: port(3)).binding == .unbound(remote: f.guest))
    #expect(try f.table.status(domain: selfID, port: port(2)).binding == .unbound(remote: DomainID(rawValue: 42)))
    #expect(f.table.activeGuestPorts == 3)
}

@Test func allocUnboundDomainChecks() {
    let f = Fixture()
    #expect(throws: XenErrno.esrch) { try f.table.allocateUnbound(domain: DomainID(rawValue: 3), remote: selfID) }
    #expect(throws: XenErrno.eperm) { try f.table.allocateUnbound(domain: Fixture.backend, remote: selfID) }
    #expect(throws: XenErrno.esrch) { try f.table.allocateUnbound(domain: DomainID(rawValue: 0xffff), remote: selfID) }
}

@Test func portExhaustionIsENOSPC() throws {
    let f = Fixture(maximumPort: 10)
    for n in 1...10 { #expect(try f.table.bindIPI(vcpu: vcpu(0)) == port(UInt32(n))) }
    #expect(throws: XenErrno.enospc) { try f.table.bindIPI(vcpu: vcpu(0)) }
    #expect(throws: XenErrno.enospc) { try f.table.allocateUnbound(domain: selfID, remote: selfID) }
    #expect(throws: XenErrno.enospc) { try f.table.bindVIRQ(.timer, vcpu: vcpu(0)) }
    #expect(throws: XenErrno.enospc) { try f.table.bindInterdomain(remoteDomain: selfID, remotePort: port(1)) }
    try f.table.close(port(7))
    #expect(try f.table.bindVIRQ(.timer, vcpu: vcpu(0)) == port(7))
}

@Test func twoLevelLimitIs4095PortsOr1023With32BitSharedInfo() throws {
    let f = Fixture()
    for _ in 1...4095 { _ = try f.table.bindIPI(vcpu: vcpu(0)) }
    #expect(throws: XenErrno.enospc) { try f.table.bindIPI(vcpu: vcpu(0)) }
    #expect(f.table.activeGuestPorts == 4095)

    let g = Fixture()
    g.locator.s.withLock { $0.is32 = true }
    for _ in 1...1023 { _ = try g.table.bindIPI(vcpu: vcpu(0)) }
    #expect(throws: XenErrno.enospc) { try g.table.bindIPI(vcpu: vcpu(0)) }
}

// MARK: VIRQs and IPIs

@Test func bindVIRQRules() throws {
    let f = Fixture()
    let t0 = try f.table.bindVIRQ(.timer, vcpu: vcpu(0))
    let t1 = try f.table.bindVIRQ(.timer, vcpu: vcpu(1))
    #expect(t0 == port(1) && t1 == port(2))
    #expect(throws: XenErrno.eexist) { try f.table.bindVIRQ(.timer, vcpu: vcpu(1)) }
    #expect(try f.table.status(domain: selfID, port: t1) == EventChannelStatus(binding: .virq(.timer), vcpu: vcpu(1)))
    // Global VIRQs only on vCPU 0.
    #expect(throws: XenErrno.einval) { try f.table.bindVIRQ(.console, vcpu: vcpu(1)) }
    let console = try f.table.bindVIRQ(.console, vcpu: vcpu(0))
    #expect(throws: XenErrno.eexist) { try f.table.bindVIRQ(.console, vcpu: vcpu(0)) }
    // Out of range, including values that are negative as C ints.
    #expect(throws: XenErrno.einval) { try f.table.bindVIRQ(VIRQ(rawValue: 24), vcpu: vcpu(0)) }
    #expect(throws: XenErrno.einval) { try f.table.bindVIRQ(VIRQ(rawValue: .max), vcpu: vcpu(0)) }
    // Bad vCPU: -ENOENT for per-vCPU VIRQs, -EINVAL first for global ones.
    #expect(throws: XenErrno.enoent) { try f.table.bindVIRQ(.timer, vcpu: vcpu(4)) }
    #expect(throws: XenErrno.enoent) { try f.table.bindVIRQ(.debug, vcpu: vcpu(.max)) }
    #expect(throws: XenErrno.einval) { try f.table.bindVIRQ(.console, vcpu: vcpu(.max)) }
    // Closing frees the VIRQ for binding again.
    try f.table.close(t1)
    #expect(try f.table.bindVIRQ(.timer, vcpu: vcpu(1)) == t1)
    try f.table.close(console)
    #expect(try f.table.bindVIRQ(.console, vcpu: vcpu(0)) == console)
}

@Test func bindIPIRules() throws {
    let f = Fixture()
    #expect(try f.table.bindIPI(vcpu: vcpu(3)) == port(1))
    #expect(try f.table.status(domain: selfID, port: port(1)) == EventChannelStatus(binding: .ipi, vcpu: vcpu(3)))
    #expect(throws: XenErrno.enoent) { try f.table.bindIPI(vcpu: vcpu(4)) }
    #expect(throws: XenErrno.enoent) { try f.table.bindIPI(vcpu: vcpu(.max)) }
}

// MARK: 2-level delivery

@Test func sendSetsExactlyPendingSelectorAndUpcallOnLegacyVCPUInfo() throws {
    let f = Fixture()
    // Fill ports 1...69 so that the IPI lands on port 70: word 1, bit 6.
    for _ in 1...69 { _ = try f.table.allocateUnbound(domain: selfID, remote: Fixture.backend) }
    let p = try f.table.bindIPI(vcpu: vcpu(1))
    #expect(p == port(70))
    try f.table.send(p)
    let vi = Fixture.legacyVCPUInfo(1)
    #expect(f.pendingWord(0) == 0)
    #expect(f.pendingWord(1) == 1 << 6)
    #expect(f.selector(vi) == 1 << 1)
    #expect(f.upcallFlag(vi) == 1)
    #expect(f.notifier.upcallList == [1])
    #expect(f.notifier.pendingList == [70])
    // Nothing on vCPU 0.
    #expect(f.selector(Fixture.legacyVCPUInfo(0)) == 0 && f.upcallFlag(Fixture.legacyVCPUInfo(0)) == 0)
    // Sending again on a pending port changes nothing and notifies nobody.
    try f.table.send(p)
    #expect(f.notifier.upcallList == [1])
    #expect(f.notifier.pendingList == [70])
    #expect(f.table.isPending(p) && !f.table.isMasked(p) && f.table.upcallPending(vcpu: vcpu(1)))
}

@Test func deliveryUsesTheRegisteredVCPUInfo() throws {
    let f = Fixture()
    let registered: UInt64 = 0x20040
    f.locator.s.withLock { $0.registered[vcpu(2)] = GuestPhysicalAddress(registered) }
    let p = try f.table.bindIPI(vcpu: vcpu(2))
    try f.table.send(p)
    #expect(f.pendingWord(0) == 1 << 1)
    #expect(f.selector(registered) == 1 && f.upcallFlag(registered) == 1)
    #expect(f.selector(Fixture.legacyVCPUInfo(2)) == 0 && f.upcallFlag(Fixture.legacyVCPUInfo(2)) == 0)
    #expect(f.notifier.upcallList == [2])
}

@Test func aVCPUAbove31WithoutVCPUInfoGetsNoUpcall() throws {
    let f = Fixture(vcpus: 40)
    let p = try f.table.bindIPI(vcpu: vcpu(35))
    try f.table.send(p)
    #expect(f.pendingWord(0) == 1 << 1)
    #expect(f.notifier.upcallList.isEmpty)
    // Once it registers one, unmask-style re-delivery and new words reach it.
    f.locator.s.withLock { $0.registered[vcpu(35)] = GuestPhysicalAddress(0x30000) }
    let q = try f.table.bindIPI(vcpu: vcpu(35))
    try f.table.send(q)
    #expect(f.selector(0x30000) == 1 && f.notifier.upcallList == [35])
}

@Test func maskedPortsWaitForUnmask() throws {
    let f = Fixture()
    let p = try f.table.bindIPI(vcpu: vcpu(0))
    f.maskPort(p.rawValue)
    try f.table.send(p)
    let vi = Fixture.legacyVCPUInfo(0)
    #expect(f.pendingWord(0) == 1 << 1)
    #expect(f.selector(vi) == 0 && f.upcallFlag(vi) == 0)
    #expect(f.notifier.upcallList.isEmpty)
    #expect(f.notifier.pendingList == [1])  // a poller would still wake
    #expect(f.table.isMasked(p))
    try f.table.unmask(p)
    #expect(f.u64(Fixture.mask64) == 0)
    #expect(f.selector(vi) == 1 && f.upcallFlag(vi) == 1)
    #expect(f.notifier.upcallList == [0])
    // A second unmask finds the mask clear: nothing more.
    try f.table.unmask(p)
    #expect(f.notifier.upcallList == [0])
    // Unmasking a port that is not pending delivers nothing.
    let q = try f.table.bindIPI(vcpu: vcpu(1))
    f.maskPort(q.rawValue)
    try f.table.unmask(q)
    #expect(f.notifier.upcallList == [0])
    #expect(f.upcallFlag(Fixture.legacyVCPUInfo(1)) == 0)
}

@Test func anUpcallStillPendingIsNotSignalledAgain() throws {
    let f = Fixture()
    for _ in 1...63 { _ = try f.table.bindIPI(vcpu: vcpu(0)) }
    try f.table.send(port(5))
    let p = try f.table.bindIPI(vcpu: vcpu(0))  // port 64: word 1
    try f.table.send(p)
    let vi = Fixture.legacyVCPUInfo(0)
    #expect(f.selector(vi) == 0b11)
    #expect(f.notifier.upcallList == [0])
    // The guest handles the upcall: clears the flag and the selector.
    f.set(UInt8(0), vi)
    f.set(UInt64(0), vi + 8)
    f.set(UInt64(0), Fixture.pending64)
    try f.table.send(port(5))
    #expect(f.notifier.upcallList == [0, 0])
}

@Test func thirtyTwoBitLayout() throws {
    let f = Fixture()
    f.locator.s.withLock { $0.is32 = true }
    for _ in 1...39 { _ = try f.table.allocateUnbound(domain: selfID, remote: Fixture.backend) }
    let p = try f.table.bindIPI(vcpu: vcpu(1))  // port 40: word 1 bit 8 of 32-bit words
    try f.table.send(p)
    let vi = Fixture.legacyVCPUInfo(1)
    #expect(f.u32(Fixture.pending32) == 0)
    #expect(f.u32(Fixture.pending32 + 4) == 1 << 8)
    #expect(f.u32(vi + 4) == 1 << 1)  // evtchn_pending_sel at 4
    #expect(f.u32(vi + 8) == 0)
    #expect(f.upcallFlag(vi) == 1)
    // The mask array starts at 2048 + 128.
    let q = try f.table.bindIPI(vcpu: vcpu(1))  // port 41
    f.set(UInt32(1 << 9), Fixture.mask32 + 4)
    try f.table.send(q)
    #expect(f.u32(Fixture.pending32 + 4) == 1 << 8 | 1 << 9)
    #expect(f.notifier.upcallList == [1])
    try f.table.unmask(q)
    #expect(f.u32(Fixture.mask32 + 4) == 0)
}

@Test func withoutSharedInfoEventsAreDropped() throws {
    let f = Fixture()
    f.locator.s.withLock { $0.frame = nil }
    let p = try f.table.bindIPI(vcpu: vcpu(0))
    try f.table.send(p)
    try f.table.unmask(p)
    #expect(f.notifier.upcallList.isEmpty && f.notifier.pendingList.isEmpty)
    #expect(!f.table.isPending(p))
}

// MARK: interdomain

@Test func frontendBindsABackendPort() throws {
    let f = Fixture()
    let peer = RecordingPeer()
    let b = try f.table.backendAllocateUnbound(peer: peer)
    #expect(b == port(1))
    #expect(f.table.backendPortStatus(b)?.binding == .unbound(remote: f.guest))
    let g = try f.table.bindInterdomain(remoteDomain: Fixture.backend, remotePort: b)
    #expect(g == port(1))
    #expect(try f.table.status(domain: selfID, port: g).binding == .interdomain(remote: Fixture.backend, remotePort: b))
    #expect(f.table.backendPortStatus(b)?.binding == .interdomain(remote: f.guest, remotePort: g))
    // Binding marks the new local port pending (event_channel.c: lost notifications).
    #expect(f.pendingWord(0) == 1 << 1 && f.notifier.upcallList == [0])
    // Guest → backend.
    try f.table.send(g)
    try f.table.send(g)
    #expect(peer.list == [1, 1])
    // Backend → guest, after the guest has consumed the first event.
    f.set(UInt64(0), Fixture.pending64)
    f.set(UInt8(0), Fixture.legacyVCPUInfo(0))
    f.set(UInt64(0), Fixture.legacyVCPUInfo(0) + 8)
    try f.table.backendSend(b)
    #expect(f.pendingWord(0) == 1 << 1 && f.notifier.upcallList == [0, 0])
    // The guest retargets its end: later events go to vCPU 2.
    try f.table.bindVCPU(g, vcpu: vcpu(2))
    f.set(UInt64(0), Fixture.pending64)
    try f.table.backendSend(b)
    #expect(f.upcallFlag(Fixture.legacyVCPUInfo(2)) == 1 && f.notifier.upcallList == [0, 0, 2])
    // The guest closes: the backend port waits for it again, events are dropped.
    try f.table.close(g)
    #expect(f.pendingWord(0) == 0)  // closing clears the pending bit
    #expect(f.table.backendPortStatus(b)?.binding == .unbound(remote: f.guest))
    #expect(try f.table.status(domain: selfID, port: g) == EventChannelStatus(binding: .free, vcpu: vcpu(0)))
    try f.table.backendSend(b)
    #expect(f.pendingWord(0) == 0)
    #expect(throws: XenErrno.einval) { try f.table.send(g) }
    // And it can bind again.
    #expect(try f.table.bindInterdomain(remoteDomain: Fixture.backend, remotePort: b) == g)
}

@Test func backendBindsAToolstackPort() throws {
    let f = Fixture()
    // What the toolstack does for HVM_PARAM_CONSOLE_EVTCHN.
    let c = try f.table.allocateUnbound(domain: f.guest, remote: Fixture.backend)
    let peer = RecordingPeer()
    let b = try f.table.backendBindInterdomain(guestPort: c, peer: peer)
    #expect(peer.list == [b.rawValue])  // the binding side's port is set pending
    #expect(try f.table.status(domain: selfID, port: c).binding == .interdomain(remote: Fixture.backend, remotePort: b))
    try f.table.send(c)
    #expect(peer.list == [b.rawValue, b.rawValue])
    try f.table.backendClose(b)
    #expect(try f.table.status(domain: selfID, port: c).binding == .unbound(remote: Fixture.backend))
    #expect(throws: XenErrno.einval) { try f.table.backendClose(b) }
    #expect(throws: XenErrno.einval) { try f.table.backendSend(port(4000)) }
    // Only ports waiting for the backend domain can be bound by it.
    let other = try f.table.allocateUnbound(domain: selfID, remote: DomainID(rawValue: 9))
    #expect(throws: XenErrno.einval) { try f.table.backendBindInterdomain(guestPort: other, peer: peer) }
    #expect(throws: XenErrno.einval) { try f.table.backendBindInterdomain(guestPort: port(0), peer: peer) }
    #expect(throws: XenErrno.einval) { try f.table.backendBindInterdomain(guestPort: port(999), peer: peer) }
}

@Test func bindInterdomainErrors() throws {
    let f = Fixture()
    #expect(throws: XenErrno.esrch) { try f.table.bindInterdomain(remoteDomain: DomainID(rawValue: 1), remotePort: port(1)) }
    #expect(throws: XenErrno.einval) { try f.table.bindInterdomain(remoteDomain: Fixture.backend, remotePort: port(1)) }  // free
    #expect(throws: XenErrno.einval) { try f.table.bindInterdomain(remoteDomain: Fixture.backend, remotePort: port(0)) }  // reserved
    #expect(throws: XenErrno.einval) { try f.table.bindInterdomain(remoteDomain: Fixture.backend, remotePort: port(.max)) }
    // A port waiting for another domain.
    let p = try f.table.allocateUnbound(domain: selfID, remote: DomainID(rawValue: 9))
    #expect(throws: XenErrno.einval) { try f.table.bindInterdomain(remoteDomain: selfID, remotePort: p) }
    // A bound port.
    let ipi = try f.table.bindIPI(vcpu: vcpu(0))
    #expect(throws: XenErrno.einval) { try f.table.bindInterdomain(remoteDomain: selfID, remotePort: ipi) }
    // Failures leave no port behind.
    #expect(f.table.activeGuestPorts == 2)
}

@Test func loopbackChannelWithinTheGuest() throws {
    let f = Fixture()
    let a = try f.table.allocateUnbound(domain: selfID, remote: selfID)
    let b = try f.table.bindInterdomain(remoteDomain: selfID, remotePort: a)
    #expect(try f.table.status(domain: selfID, port: a).binding == .interdomain(remote: f.guest, remotePort: b))
    #expect(try f.table.status(domain: f.guest, port: b).binding == .interdomain(remote: f.guest, remotePort: a))
    f.set(UInt64(0), Fixture.pending64)
    try f.table.send(b)
    #expect(f.pendingWord(0) == 1 << a.rawValue)
    try f.table.send(a)
    #expect(f.pendingWord(0) == 1 << a.rawValue | 1 << b.rawValue)
    try f.table.close(b)
    #expect(try f.table.status(domain: selfID, port: a).binding == .unbound(remote: f.guest))
    #expect(f.pendingWord(0) == 1 << a.rawValue)
}

// MARK: status, bind_vcpu, close, send, unmask

@Test func statusOfEveryState() throws {
    let f = Fixture()
    let unbound = try f.table.allocateUnbound(domain: selfID, remote: Fixture.backend)
    let timer = try f.table.bindVIRQ(.timer, vcpu: vcpu(3))
    let ipi = try f.table.bindIPI(vcpu: vcpu(2))
    let b = try f.table.backendAllocateUnbound(peer: RecordingPeer())
    let inter = try f.table.bindInterdomain(remoteDomain: Fixture.backend, remotePort: b)
    func status(_ p: EventChannelPort) throws -> EventChannelStatus { try f.table.status(domain: selfID, port: p) }
    #expect(try status(port(0)) == EventChannelStatus(binding: .reserved, vcpu: vcpu(0)))
    #expect(try status(port(0)).code == .closed)
    #expect(try status(port(63)).code == .closed)  // free, inside the first bucket
    #expect(try status(unbound).code == .unbound)
    #expect(try status(timer) == EventChannelStatus(binding: .virq(.timer), vcpu: vcpu(3)))
    #expect(try status(timer).code == .virq)
    #expect(try status(ipi) == EventChannelStatus(binding: .ipi, vcpu: vcpu(2)))
    #expect(try status(ipi).code == .ipi)
    #expect(try status(inter).code == .interdomain)
    // Beyond the allocated bucket: invalid.
    #expect(throws: XenErrno.einval) { try f.table.status(domain: selfID, port: port(64)) }
    #expect(throws: XenErrno.einval) { try f.table.status(domain: selfID, port: port(.max)) }
    // Other domains.
    #expect(throws: XenErrno.esrch) { try f.table.status(domain: DomainID(rawValue: 8), port: port(1)) }
    #expect(throws: XenErrno.eperm) { try f.table.status(domain: Fixture.backend, port: b) }
    #expect(throws: XenErrno.einval) { try f.table.status(domain: Fixture.backend, port: port(5000)) }
}

@Test func bucketsGrowAndStayValid() throws {
    let f = Fixture(maximumPort: 200)
    for _ in 1...64 { _ = try f.table.bindIPI(vcpu: vcpu(0)) }  // port 64 opens the second bucket
    #expect(try f.table.status(domain: selfID, port: port(127)).code == .closed)
    #expect(throws: XenErrno.einval) { try f.table.status(domain: selfID, port: port(128)) }
    try f.table.reset(domain: selfID)
    #expect(try f.table.status(domain: selfID, port: port(127)).code == .closed)
}

@Test func bindVCPURules() throws {
    let f = Fixture()
    let unbound = try f.table.allocateUnbound(domain: selfID, remote: Fixture.backend)
    let console = try f.table.bindVIRQ(.console, vcpu: vcpu(0))
    let timer = try f.table.bindVIRQ(.timer, vcpu: vcpu(0))
    let ipi = try f.table.bindIPI(vcpu: vcpu(0))
    try f.table.bindVCPU(unbound, vcpu: vcpu(3))
    #expect(try f.table.status(domain: selfID, port: unbound).vcpu == vcpu(3))
    try f.table.bindVCPU(console, vcpu: vcpu(2))
    #expect(try f.table.status(domain: selfID, port: console).vcpu == vcpu(2))
    #expect(throws: XenErrno.einval) { try f.table.bindVCPU(timer, vcpu: vcpu(1)) }
    #expect(throws: XenErrno.einval) { try f.table.bindVCPU(ipi, vcpu: vcpu(1)) }
    #expect(throws: XenErrno.einval) { try f.table.bindVCPU(port(0), vcpu: vcpu(1)) }
    #expect(throws: XenErrno.einval) { try f.table.bindVCPU(port(40), vcpu: vcpu(1)) }  // free
    #expect(throws: XenErrno.einval) { try f.table.bindVCPU(port(9999), vcpu: vcpu(1)) }
    // The vCPU is checked first.
    #expect(throws: XenErrno.enoent) { try f.table.bindVCPU(port(9999), vcpu: vcpu(4)) }
    #expect(throws: XenErrno.enoent) { try f.table.bindVCPU(unbound, vcpu: vcpu(.max)) }
    // A re-targeted global VIRQ is raised on its new vCPU.
    #expect(f.table.raise(.console))
    #expect(f.notifier.upcallList == [2])
}

@Test func raiseVIRQ() throws {
    let f = Fixture()
    #expect(!f.table.raise(.timer, on: vcpu(1)))
    let t1 = try f.table.bindVIRQ(.timer, vcpu: vcpu(1))
    #expect(f.table.raise(.timer, on: vcpu(1)))
    #expect(!f.table.raise(.timer, on: vcpu(0)))
    #expect(f.pendingWord(0) == 1 << t1.rawValue)
    #expect(f.upcallFlag(Fixture.legacyVCPUInfo(1)) == 1 && f.notifier.upcallList == [1])
}

@Test func closeRules() throws {
    let f = Fixture()
    #expect(throws: XenErrno.einval) { try f.table.close(port(0)) }
    #expect(throws: XenErrno.einval) { try f.table.close(port(1)) }  // free
    #expect(throws: XenErrno.einval) { try f.table.close(port(64)) }
    #expect(throws: XenErrno.einval) { try f.table.close(port(.max)) }
    let p = try f.table.bindIPI(vcpu: vcpu(2))
    try f.table.send(p)
    try f.table.close(p)
    #expect(f.pendingWord(0) == 0)
    #expect(throws: XenErrno.einval) { try f.table.close(p) }
    // A freed port is back on vCPU 0.
    #expect(try f.table.status(domain: selfID, port: p) == EventChannelStatus(binding: .free, vcpu: vcpu(0)))
}

@Test func sendRules() throws {
    let f = Fixture()
    #expect(throws: XenErrno.einval) { try f.table.send(port(0)) }
    #expect(throws: XenErrno.einval) { try f.table.send(port(1)) }
    #expect(throws: XenErrno.einval) { try f.table.send(port(1 << 31)) }
    let timer = try f.table.bindVIRQ(.timer, vcpu: vcpu(0))
    #expect(throws: XenErrno.einval) { try f.table.send(timer) }
    let unbound = try f.table.allocateUnbound(domain: selfID, remote: Fixture.backend)
    try f.table.send(unbound)  // silently dropped
    #expect(f.pendingWord(0) == 0 && f.notifier.upcallList.isEmpty)
}

@Test func unmaskRules() throws {
    let f = Fixture()
    #expect(throws: XenErrno.einval) { try f.table.unmask(port(64)) }
    #expect(throws: XenErrno.einval) { try f.table.unmask(port(.max)) }
    // Port 0 and free ports: a successful no-op that leaves the mask alone.
    f.maskPort(0)
    f.maskPort(3)
    try f.table.unmask(port(0))
    try f.table.unmask(port(3))
    #expect(f.u64(Fixture.mask64) == 0b1001)
}

// MARK: reset

@Test func resetClosesEverything() throws {
    let f = Fixture()
    let peer = RecordingPeer()
    let b = try f.table.backendAllocateUnbound(peer: peer)
    _ = try f.table.bindInterdomain(remoteDomain: Fixture.backend, remotePort: b)
    _ = try f.table.bindVIRQ(.timer, vcpu: vcpu(1))
    _ = try f.table.bindIPI(vcpu: vcpu(2))
    _ = try f.table.allocateUnbound(domain: selfID, remote: selfID)
    #expect(f.table.activeGuestPorts == 4)
    #expect(throws: XenErrno.eperm) { try f.table.reset(domain: Fixture.backend) }
    #expect(throws: XenErrno.esrch) { try f.table.reset(domain: DomainID(rawValue: 77)) }
    #expect(throws: XenErrno.ebusy) { try f.table.reset(domain: selfID, resuming: true) }
    #expect(f.table.activeGuestPorts == 4)
    try f.table.reset(domain: f.guest)
    #expect(f.table.activeGuestPorts == 0)
    #expect(f.pendingWord(0) == 0)
    #expect(f.table.backendPortStatus(b)?.binding == .unbound(remote: f.guest))
    // VIRQs can be bound again, ports are reused from 1.
    #expect(try f.table.bindVIRQ(.timer, vcpu: vcpu(1)) == port(1))
}

// MARK: concurrency

@Test func concurrentSendsToOneWordLoseNoBits() throws {
    // Real mmap memory, so the guest-memory updates are the locked RMWs the
    // VMM uses; two threads send on the 63 ports of word 0 while a third,
    // playing the guest, sets and clears mask bits of word 0 of the mask
    // array (which must not disturb the pending word).
    let memory = try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 1 << 20)])
    let f = Fixture(memory: memory)
    for _ in 1...63 { _ = try f.table.bindIPI(vcpu: vcpu(0)) }
    for round in 0..<50 {
        f.set(UInt64(0), Fixture.pending64)
        DispatchQueue.concurrentPerform(iterations: 3) { worker in
            switch worker {
            case 0: for p in stride(from: 1, to: 64, by: 2) { try? f.table.send(port(UInt32(p))) }
            case 1: for p in stride(from: 2, to: 64, by: 2) { try? f.table.send(port(UInt32(p))) }
            default:
                for _ in 0..<64 {
                    _ = try? memory.testAndSetBit(63, of: UInt64.self, at: GuestPhysicalAddress(Fixture.mask64))
                    _ = try? memory.testAndClearBit(63, of: UInt64.self, at: GuestPhysicalAddress(Fixture.mask64))
                }
            }
        }
        #expect(f.pendingWord(0) == UInt64.max - 1, "round \(round)")
    }
}
