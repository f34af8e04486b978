import BlockFrontend
import HostIO
import NetBackend
import NetFrontend
import Testing
import XenABI
import XenBus
import XenStore

@Suite("net backend xenbus handshake")
struct HandshakeTests {
    @Test("netfront's order: InitWait with the features → frontend Connected straight from Initialising → backend Connected (the store in-process, or remote)",
          arguments: [false, true])
    func initWaitToConnected(remote: Bool) throws {
        let guest = try remote ? Guest(backendStore: remoteBackendStore) : Guest()
        let vif = try Vif(guest: guest, maximumQueues: 2)
        #expect(vif.backend.xenbus.backendState == .connected)
        #expect(vif.backendNode("state") == "4")
        for (key, value) in [("feature-sg", "1"), ("feature-gso-tcpv4", "1"), ("feature-gso-tcpv6", "1"),
                             ("feature-ipv6-csum-offload", "1"), ("feature-rx-copy", "1"), ("feature-rx-flip", "0"),
                             ("feature-split-event-channels", "1"), ("multi-queue-max-queues", "2"),
                             ("mac", "00:16:3e:00:00:01")] {
            #expect(vif.backendNode(key) == value, "\(key)")
        }
        #expect(guest.storeWire.read("\(vif.address.frontendPath)/mac") == "00:16:3e:00:00:01")
        #expect(guest.storeWire.read("\(vif.address.frontendPath)/handle") == "0")
        #expect(vif.backend.isConnected)
        #expect(vif.backend.queueCount == 1)
        #expect(vif.backend.runtimeDevice?.name == "vif-0")
        let ports = try #require(vif.backend.backendPorts)
        #expect(ports.count == 1 && ports[0].tx != ports[0].rx, "split channels: two backend ports")
        // The guest can read the backend's nodes, not change them.
        #expect(throws: XenStoreError.eacces) { try guest.storeWire.write("\(vif.address.backendPath)/feature-sg", "0") }
        vif.backend.destroy()
        let stopped = vif.link.stopped.load(ordering: .relaxed)
        #expect(stopped)
    }

    @Test("the backend's state node exists before the handshake starts")
    func stateNodeEarly() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, connect: false)
        _ = vif
        let link = MockLink()
        let address = XenbusDeviceAddress(type: "vif", frontend: Guest.domain, index: 1)
        let backend = try NetBackend(store: guest.store, address: address, configuration: NetDeviceConfiguration(link: link),
                                     memory: guest.memory, grants: guest.grants, events: guest.events, runtime: guest.runtime,
                                     startHandshake: false)
        #expect(try guest.store.read("\(address.backendPath)/state") == "1")
        #expect(backend.xenbus.backendState == .initialising)
        try backend.startHandshake()
        #expect(try guest.store.read("\(address.backendPath)/state") == "2")
    }

    @Test("the Initialised path: a frontend that said Initialised before InitWait is connected when the backend starts")
    func initialisedPath() throws {
        let guest = try Guest()
        let link = MockLink()
        let address = XenbusDeviceAddress(type: "vif", frontend: Guest.domain, index: 0)
        let backend = try NetBackend(store: guest.store, address: address, configuration: NetDeviceConfiguration(link: link),
                                     memory: guest.memory, grants: guest.grants, events: guest.events, runtime: guest.runtime,
                                     startHandshake: false)
        let q = try NetfrontQueue(guest: guest)
        try Netfront.connect([q], device: address, state: .initialised)
        #expect(!backend.isConnected)
        try backend.startHandshake()
        #expect(backend.xenbus.backendState == .connected)
        try q.send(Frames.ipv4(Frames.payload(100)))
        #expect(try q.waitForTxResponses(1).map(\.status) == [.okay])
        #expect(link.sent.map(\.bytes) == [Frames.ipv4(Frames.payload(100))])
        backend.destroy()
    }

    @Test("a shared event channel (no event-channel-tx/rx) carries both rings")
    func sharedChannel() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, split: false)
        let ports = try #require(vif.backend.backendPorts)
        #expect(ports[0].tx == ports[0].rx)
        try vif.q.send(Frames.ipv4(Frames.payload(64)))
        #expect(try vif.q.waitForTxResponses(1).map(\.status) == [.okay])
        vif.link.inject(NetworkFrameFactory.frame(Frames.ipv4(Frames.payload(80))))
        #expect(try vif.q.waitForFrames(1).map(\.bytes) == [Frames.ipv4(Frames.payload(80))])
    }

    @Test("a frontend that polls its rings before blocking (haltpoll) gets every TX response and RX frame, in order; at most one poll hit per wait")
    func pollingFrontend() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest)
        var responses: [NetifTxResponse] = []
        var waits = 0
        for n in 1...20 {
            try vif.q.send(Frames.ipv4(Frames.payload(60 + n)))
            while responses.count < n {
                waits += 1
                responses += try vif.q.collectTxResponses(holdOff: .next, timeout: .seconds(30), polling: .microseconds(200))
            }
        }
        #expect(responses.map(\.status) == Array(repeating: .okay, count: 20))
        #expect(vif.link.sent.map(\.bytes) == (1...20).map { Frames.ipv4(Frames.payload(60 + $0)) })
        var frames: [NetfrontFrame] = []
        for n in 1...20 {
            let frame = Frames.ipv4(Frames.payload(70 + n))
            vif.link.inject(NetworkFrameFactory.frame(frame))
            while frames.count < n {
                waits += 1
                #expect(try vif.q.waitForRxResponses(timeout: .seconds(30), polling: .microseconds(200)))
                frames += try vif.q.receive()
            }
        }
        #expect(frames.map(\.bytes) == (1...20).map { Frames.ipv4(Frames.payload(70 + $0)) })
        // A wait that did not find its responses at once polled once, and
        // blocked only if polling found nothing: at most one poll hit per wait.
        #expect(vif.q.pollHits <= waits)
    }

    @Test("close and reconnect: Closing/Closed tear the queues down, Initialising offers the device again, it connects and works (the store in-process, or remote)",
          arguments: [false, true])
    func reconnect(remote: Bool) throws {
        let guest = try remote ? Guest(backendStore: remoteBackendStore) : Guest()
        let vif = try Vif(guest: guest)
        let fe = vif.address.frontendPath
        #expect(guest.grants.holdCount == 2)
        try guest.storeWire.write("\(fe)/state", "5")
        #expect(vif.backend.xenbus.backendState == .closing)
        #expect(!vif.backend.isConnected)
        #expect(guest.grants.holdCount == 0)
        try guest.storeWire.write("\(fe)/state", "6")
        #expect(vif.backend.xenbus.backendState == .closed)
        try guest.storeWire.write("\(fe)/state", "1")
        #expect(vif.backend.xenbus.backendState == .initWait)
        let q = try NetfrontQueue(guest: guest)
        try Netfront.connect([q], device: vif.address)
        #expect(vif.backend.xenbus.backendState == .connected)
        try q.postReceiveBuffers()
        try q.send(Frames.ipv4(Frames.payload(300)))
        #expect(try q.waitForTxResponses(1).map(\.status) == [.okay])
        vif.link.inject(NetworkFrameFactory.frame(Frames.ipv4(Frames.payload(90))))
        #expect(try q.waitForFrames(1).map(\.bytes) == [Frames.ipv4(Frames.payload(90))])
    }

    @Test("a frontend without request-rx-copy fails the device: Closing, error node")
    func missingRxCopy() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, features: Netfront.features.filter { $0.0 != "request-rx-copy" }, post: false)
        #expect(vif.backend.xenbus.backendState == .closing)
        #expect(!vif.backend.isConnected)
        let error = try guest.store.read(vif.address.errorPath)
        #expect(error.contains("frontend does not support rx-copy"), "\(error)")
    }

    @Test("a ring ref that grants nothing, or no event channel, is fatal; the frontend can start over")
    func badRingRef() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, connect: false)
        let fe = vif.address.frontendPath
        for (k, v) in Netfront.features + [("tx-ring-ref", "4000"), ("rx-ring-ref", "4001"), ("event-channel", "1")] {
            try guest.storeWire.write("\(fe)/\(k)", v)
        }
        try guest.storeWire.write("\(fe)/state", "4")
        #expect(vif.backend.xenbus.backendState == .closing)
        #expect(try guest.store.read(vif.address.errorPath).contains("queue 0"))
        // Closing, then starting over, with no event channel at all.
        try guest.storeWire.write("\(fe)/state", "6")
        #expect(vif.backend.xenbus.backendState == .closed)
        try guest.storeWire.write("\(fe)/state", "1")
        #expect(vif.backend.xenbus.backendState == .initWait)
        try guest.store.remove("\(fe)/event-channel")
        for (k, v) in vif.q.nodes() where k.hasSuffix("ring-ref") { try guest.storeWire.write("\(fe)/\(k)", v) }
        try guest.storeWire.write("\(fe)/state", "4")
        #expect(vif.backend.xenbus.backendState == .closing)
        #expect(try guest.store.read(vif.address.errorPath).contains("event-channel"))
        #expect(guest.grants.holdCount == 0)
        // And then properly.
        try guest.storeWire.write("\(fe)/state", "6")
        try guest.storeWire.write("\(fe)/state", "1")
        try Netfront.connect([vif.q], device: vif.address)
        #expect(vif.backend.xenbus.backendState == .connected)
    }

    @Test("a frontend that writes no multi-queue-num-queues (an older netfront) gets one queue from the flat keys")
    func noQueueCount() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, connect: false)
        let fe = vif.address.frontendPath
        for (k, v) in Netfront.features + vif.q.nodes() { try guest.storeWire.write("\(fe)/\(k)", v) }
        try guest.storeWire.write("\(fe)/state", "4")
        #expect(vif.backend.xenbus.backendState == .connected)
        #expect(vif.backend.queueCount == 1)
        try vif.q.send(Frames.ipv4(Frames.payload(3)))
        #expect(try vif.q.waitForTxResponses(1).map(\.status) == [.okay])
    }

    @Test("more queues than offered is fatal")
    func badQueues() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, queues: 3, maximumQueues: 2, post: false)
        #expect(vif.backend.xenbus.backendState == .closing)
        #expect(try guest.store.read(vif.address.errorPath).contains("queues"))
    }
}

/// Frames from the link in the tests.
enum NetworkFrameFactory {
    static func frame(_ bytes: [UInt8], offload: NetworkOffload = .none) -> NetworkFrame {
        NetworkFrame(bytes: bytes, offload: offload)
    }
}
