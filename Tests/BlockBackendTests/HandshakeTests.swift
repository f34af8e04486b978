import BlockBackend
import BlockFrontend
import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GrantTables
import GuestMemory
import HostIO
import Testing
import XenABI
import XenBus
import XenStore

/// The xenbus handshake of a vbd over a real store, driven by the guest's
/// own (unprivileged) store connection in the orders frontends use.
@Suite("block backend xenbus handshake")
struct HandshakeTests {
    @Test("Linux's order: InitWait with the features → frontend Initialised → Connected with the disk's nodes (the store in-process, or remote)",
          arguments: [false, true])
    func linuxOrder(remote: Bool) throws {
        let guest = try remote ? Guest(backendStore: remoteBackendStore) : Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, sectors: 2048, maximumQueues: 3)
        #expect(disk.backend.xenbus.backendState == .connected)
        #expect(disk.backendNode("state") == "4")
        for (key, value) in [("feature-flush-cache", "1"), ("feature-barrier", "1"), ("feature-max-indirect-segments", "256"),
                             ("multi-queue-max-queues", "3"), ("max-ring-page-order", "4"),
                             ("sectors", "2048"), ("info", "0"), ("sector-size", "512"), ("physical-sector-size", "512")] {
            #expect(disk.backendNode(key) == value, "\(key)")
        }
        #expect(disk.backendNode("feature-persistent") == nil)
        #expect(disk.backendNode("feature-discard") == nil)
        #expect(guest.storeWire.read("\(disk.address.frontendPath)/virtual-device") == "51712")
        #expect(guest.storeWire.read("\(disk.address.frontendPath)/device-type") == "disk")
        // The guest can read the backend's nodes, not change them.
        #expect(guest.storeWire.read("\(disk.address.backendPath)/sectors") == "2048")
        #expect(throws: XenStoreError.eacces) { try guest.storeWire.write("\(disk.address.backendPath)/sectors", "1") }
        #expect(disk.backend.runtimeDevice?.name == "vbd-51712")
    }

    @Test("a frontend that said Initialised before the backend reached InitWait is connected when it does")
    func frontendFirst() throws {
        let guest = try Guest()
        let file = try ScratchDisk(bytes: 1 << 20)
        let fd = file.fd
        let address = XenbusDeviceAddress(type: "vbd", frontend: Guest.domain, index: 51712)
        let backend = try BlockBackend(store: guest.store, address: address,
                                       configuration: BlockDeviceConfiguration(sectors: 2048) { _, done in
                                           SynchronousEngine(fileDescriptor: fd, onComplete: done)
                                       },
                                       memory: guest.memory, grants: guest.grants, events: guest.events, runtime: guest.runtime,
                                       startHandshake: false)
        #expect(backend.xenbus.backendState == .initialising)
        let front = try BlkfrontRing<BlkifX86_32>(guest: guest)
        for (k, v) in front.nodes() + [("protocol", "x86_32-abi")] {
            try guest.storeWire.write("\(address.frontendPath)/\(k)", v)
        }
        try guest.storeWire.write("\(address.frontendPath)/state", "3")
        #expect(backend.xenbus.backendState == .initialising)
        #expect(!backend.isConnected)
        try backend.startHandshake()
        #expect(backend.xenbus.backendState == .connected)
        let frame = guest.allocatePages()
        try guest.fill(frame, Pattern.bytes(5))
        try front.submit([Blkfront.rw(.write, id: 5, sector: 0, [Blkfront.page(try guest.grant(frame, readOnly: true))])])
        #expect(backend.sync())
        #expect(try front.responses() == [BlkifWireResponse(id: 5, operation: 1, status: .okay)])
        #expect(try file.read(at: 0, count: 4096) == Pattern.bytes(5))
        backend.destroy()
    }

    @Test("close and reconnect: Closing/Closed tear the queues down, Initialising offers the device again, it connects and works (the store in-process, or remote)",
          arguments: [false, true])
    func reconnect(remote: Bool) throws {
        let guest = try remote ? Guest(backendStore: remoteBackendStore) : Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, queues: 2)
        let fe = disk.address.frontendPath
        let oldPorts = try #require(disk.backend.backendPorts)
        #expect(guest.grants.holdCount == 2)
        try guest.storeWire.write("\(fe)/state", "5")
        #expect(disk.backend.xenbus.backendState == .closing)
        #expect(!disk.backend.isConnected)
        try guest.storeWire.write("\(fe)/state", "6")
        #expect(disk.backend.xenbus.backendState == .closed)
        #expect(guest.grants.holdCount == 0, "ring pages released")
        for port in oldPorts {
            let status = guest.events.backendPortStatus(port)
            #expect(status == nil || status?.binding == .free, "backend port \(port) closed")
        }
        for f in disk.fronts { #expect(guest.events.guestPortStatus(f.port)?.binding == .unbound(remote: .controlDomain)) }
        #expect(guest.runtime.threadCount == 0)
        #expect(guest.runtime.devices.isEmpty)

        // blkfront starts again with fresh rings and ports.
        let fresh = try (0..<2).map { _ in try BlkfrontRing<BlkifX86_64>(guest: guest) }
        for (i, f) in fresh.enumerated() {
            for (k, v) in f.nodes(prefix: "queue-\(i)/") { try guest.storeWire.write("\(fe)/\(k)", v) }
        }
        try guest.storeWire.write("\(fe)/state", "1")
        #expect(disk.backend.xenbus.backendState == .initWait)
        try guest.storeWire.write("\(fe)/state", "3")
        #expect(disk.backend.xenbus.backendState == .connected)
        #expect(disk.backend.queueCount == 2)
        let frame = guest.allocatePages()
        try fresh[1].submit([Blkfront.rw(.read, id: 1, sector: 0, [Blkfront.page(try guest.grant(frame))])])
        #expect(disk.backend.sync())
        #expect(try fresh[1].responses() == [BlkifWireResponse(id: 1, operation: 0, status: .okay)])
        disk.backend.destroy()
        #expect(guest.grants.holdCount == 0)
        #expect(guest.runtime.threadCount == 0)
    }

    @Test("closing drains in-flight I/O: the ring and pages stay until the last request is answered")
    func closeDrains() throws {
        let guest = try Guest()
        let held = HeldEngines()
        let disk = try Disk<BlkifX86_64>(guest: guest, engine: held.factory)
        let frame = guest.allocatePages()
        try guest.fill(frame, Pattern.bytes(3))
        try disk.front.submit([Blkfront.rw(.write, id: 3, sector: 8, [Blkfront.page(try guest.grant(frame, readOnly: true))])])
        try disk.sync()
        let engine = try #require(held.first)
        #expect(engine.pending == ["write"])
        let closed = DispatchSemaphore(value: 0)
        let wire = guest.storeWire
        let fe = disk.address.frontendPath
        DispatchQueue.global().async {
            try? wire.write("\(fe)/state", "5")
            closed.signal()
        }
        // The disconnect has begun (the connection is gone) and waits for the write.
        let deadline = DispatchTime.now() + .seconds(30)
        while disk.backend.isConnected, DispatchTime.now() < deadline { sched_yield() }
        #expect(!disk.backend.isConnected)
        #expect(closed.wait(timeout: .now()) == .timedOut, "the close waits for in-flight I/O")
        #expect(guest.grants.holdCount == 2, "ring page and data page still held")
        engine.release()
        #expect(closed.wait(timeout: .now() + .seconds(30)) == .success)
        #expect(try disk.front.responses() == [BlkifWireResponse(id: 3, operation: 1, status: .okay)])
        #expect(try disk.file.read(at: 8 * 512, count: 4096) == Pattern.bytes(3))
        #expect(guest.grants.holdCount == 0)
        #expect(disk.backend.xenbus.backendState == .closing)
    }

    @Test("bad frontend details are xenbus-fatal: unknown protocol, too many queues, ring order past 4, a missing ring-ref")
    func badDetails() throws {
        let cases: [(String, [(String, String)], String)] = [
            ("protocol", [("protocol", "arm-abi")], "38 unknown fe protocol arm-abi"),
            ("queues", [("multi-queue-num-queues", "9")], "38 guest requested 9 queues"),
            ("zero queues", [("multi-queue-num-queues", "0")], "38 guest requested 0 queues"),
            ("order", [("ring-page-order", "5")], "22 requested ring page order 5 exceed max:4"),
            ("junk order", [("ring-page-order", "0x1")], "22 requested ring page order"),
            ("ring-ref", [("ring-page-order", "1")], "22 reading ring-ref0"),
        ]
        for (name, extra, message) in cases {
            let guest = try Guest()
            let file = try ScratchDisk(bytes: 1 << 20)
            let fd = file.fd
            let address = XenbusDeviceAddress(type: "vbd", frontend: Guest.domain, index: 51712)
            let backend = try BlockBackend(store: guest.store, address: address,
                                           configuration: BlockDeviceConfiguration(sectors: 2048, maximumQueues: 4) { _, done in
                                               SynchronousEngine(fileDescriptor: fd, onComplete: done)
                                           },
                                           memory: guest.memory, grants: guest.grants, events: guest.events, runtime: guest.runtime)
            let front = try BlkfrontRing<BlkifX86_64>(guest: guest)
            for (k, v) in front.nodes() + extra { try guest.storeWire.write("\(address.frontendPath)/\(k)", v) }
            try guest.storeWire.write("\(address.frontendPath)/state", "3")
            #expect(backend.xenbus.backendState == .closing, "\(name)")
            #expect(!backend.isConnected)
            let error = (try? guest.store.read(address.errorPath)) ?? ""
            #expect(error.hasPrefix(message), "\(name): \(error)")
            #expect(guest.grants.holdCount == 0 && guest.runtime.threadCount == 0, "\(name)")
            // The frontend may close and start over.
            try guest.storeWire.write("\(address.frontendPath)/state", "6")
            #expect(backend.xenbus.backendState == .closed, "\(name)")
            try guest.storeWire.write("\(address.frontendPath)/state", "1")
            #expect(backend.xenbus.backendState == .initWait, "\(name)")
            backend.destroy()
        }
    }

    @Test("no protocol node: the x86_32 layout, as xen-blkback's BLKIF_PROTOCOL_DEFAULT on x86")
    func defaultProtocol() throws {
        let guest = try Guest()
        let disk = try Disk<BlkifX86_32>(guest: guest, protocolNode: nil)
        let frame = guest.allocatePages()
        let responses = try disk.roundTrip([Blkfront.rw(.read, id: 0x1_0000_0002, sector: 8, [Blkfront.page(try guest.grant(frame))])])
        #expect(responses == [BlkifWireResponse(id: 0x1_0000_0002, operation: 0, status: .okay)])
    }

    @Test("feature-large-sector-size: a 4 KiB-sector disk is told in 4 KiB sectors; without it, in 512-byte ones")
    func sectorSizes() throws {
        for large in [false, true] {
            let guest = try Guest()
            let file = try ScratchDisk(bytes: 1 << 20)
            let fd = file.fd
            let address = XenbusDeviceAddress(type: "vbd", frontend: Guest.domain, index: 51712)
            let backend = try BlockBackend(store: guest.store, address: address,
                                           configuration: BlockDeviceConfiguration(sectors: 256, sectorSize: 4096) { _, done in
                                               SynchronousEngine(fileDescriptor: fd, onComplete: done)
                                           },
                                           memory: guest.memory, grants: guest.grants, events: guest.events, runtime: guest.runtime)
            let front = try BlkfrontRing<BlkifX86_64>(guest: guest)
            let extra = large ? [("feature-large-sector-size", "1")] : []
            for (k, v) in front.nodes() + extra + [("protocol", "x86_64-abi")] {
                try guest.storeWire.write("\(address.frontendPath)/\(k)", v)
            }
            try guest.storeWire.write("\(address.frontendPath)/state", "3")
            let node = { (k: String) in try? guest.store.read("\(address.backendPath)/\(k)") }
            #expect(node("sector-size") == (large ? "4096" : "512"))
            #expect(node("sectors") == (large ? "256" : "2048"))
            #expect(node("physical-sector-size") == "4096")
            // Sector 1 is byte 4096 or byte 512.
            let frame = guest.allocatePages()
            try guest.fill(frame, Pattern.bytes(8))
            try front.submit([Blkfront.rw(.write, id: 1, sector: 1,
                                          [BlkifSegment(grant: try guest.grant(frame, readOnly: true), firstSector: 0, lastSector: 0)])])
            #expect(backend.sync())
            #expect(try front.responses().map(\.status) == [.okay])
            let unit = large ? 4096 : 512
            #expect(try file.read(at: unit, count: unit) == Array(Pattern.bytes(8).prefix(unit)))
            backend.destroy()
        }
    }
}
