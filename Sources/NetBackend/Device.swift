import DeviceRuntime
import EventChannels
import GrantTables
import GuestMemory
import HostIO
import XenABI
import XenBus
import XenRing
import XenStore

/// What the toolstack tells a network backend: the host side and the
/// interface's identity.
public struct NetDeviceConfiguration: Sendable {
    /// The host side (TAP, passt, a test's mock).
    public var link: any NetworkLink
    /// The guest interface's MAC address ("mac" in both directories, as
    /// libxl writes it), e.g. "00:16:3e:00:00:01". Linux's netfront reads
    /// its own directory's and fails to probe without it; nil writes none
    /// (the toolstack must then write it).
    public var mac: String?
    /// "multi-queue-max-queues": queues a frontend may use.
    public var maximumQueues: Int
    /// The transmit limit (xl's `rate=`, the backend's "rate" node); nil:
    /// unlimited.
    public var rate: NetTransmitRate?

    public init(link: any NetworkLink, mac: String? = nil, maximumQueues: Int = 1, rate: NetTransmitRate? = nil) {
        self.link = link
        self.mac = mac
        self.maximumQueues = maximumQueues
        self.rate = rate
    }

    /// The queue limit to offer a guest with `vcpus` vCPUs: one per vCPU
    /// (netfront asks for one per CPU), at most 4.
    public static func defaultMaximumQueues(vcpus: Int) -> Int { min(max(vcpus, 1), 4) }
}

/// Why a network device could not be made.
public enum NetBackendError: Error, Hashable, Sendable {
    case invalidConfiguration(String)
    case store(XenStoreError)
    case link(HostIOError)
}

/// A PV network device (vif) backend, what Linux's xen-netback is to Xen:
/// the xenbus handshake with the guest's netfront and, once connected, one
/// queue per TX/RX ring pair the frontend set up, each on its own execution
/// context with its own event channel(s). TX packets go from the granted
/// pages straight to the link; frames from the link are copied into the
/// frontend's posted RX buffers.
///
/// A guest that breaks a ring's protocol fails this device only (xenbus
/// `fatal`: the error node, Closing, Closed once the frontend closes); it
/// can reconnect from Initialising.
public final class NetBackend: Sendable {
    /// Where the device lives in XenStore.
    public var address: XenbusDeviceAddress { xenbus.address }
    /// The xenbus end (its state, `fatal`).
    public let xenbus: XenbusBackendDevice
    /// Per-queue counters (index = queue), over all connections.
    public var metrics: [NetMetrics] { driver.metrics }
    private let driver: NetDriver

    /// Creates the device's XenStore directories (`address.type` should be
    /// "vif", `address.index` the interface's handle), starts the link's
    /// delivery and, unless `startHandshake` is false, offers the device
    /// (InitWait). The runtime devices are named `vif-<index>`.
    /// `adoptingExisting`: a hot-plugged device's directories, written by
    /// the toolstack, are kept (`XenbusBackendDevice.init`).
    public init(store: any XenStoreService, address: XenbusDeviceAddress, configuration: NetDeviceConfiguration,
                memory: any HostAddressableMemory, grants: GrantTable, events: EventChannelTable, runtime: DeviceRuntime,
                frontendNodes: [(String, String)]? = nil, startHandshake: Bool = true, adoptingExisting: Bool = false,
                log: @escaping @Sendable (String) -> Void = { _ in }) throws(NetBackendError) {
        guard (1...64).contains(configuration.maximumQueues) else {
            throw .invalidConfiguration("\(configuration.maximumQueues) queues")
        }
        let driver = NetDriver(name: "\(address.type)-\(address.index)", configuration: configuration, memory: memory,
                               grants: grants, events: events, runtime: runtime, log: log)
        self.driver = driver
        var nodes = frontendNodes ?? [("handle", String(address.index))]
        if frontendNodes == nil, let mac = configuration.mac { nodes.append(("mac", mac)) }
        do {
            xenbus = try XenbusBackendDevice(store: store, address: address, driver: driver, frontendNodes: nodes,
                                             startHandshake: false, adoptingExisting: adoptingExisting)
        } catch {
            throw .store(error)
        }
        driver.setXenbus(xenbus)
        do {
            // A carrier change is the link's host side going away and coming
            // back (passt died and was restarted): worth a line in the log.
            let name = driver.name, link = configuration.link
            let receive: @Sendable (NetworkFrame) -> Void = { [weak driver] frame in driver?.received(frame) }
            let carrier: @Sendable (Bool) -> Void = { [weak driver] up in
                driver?.carrier.set(up)
                log("\(name): link \(up ? "up" : "down"): \(link.description)")
            }
            if let direct = configuration.link as? any DirectReceiveNetworkLink {
                // Queue 0 reads the link on its own context (one thread
                // fewer per frame), into the posted buffers when it can.
                try direct.start(receive: receive, readable: { [weak driver] in driver?.linkReadable() ?? false },
                                 carrier: carrier)
            } else {
                try configuration.link.start(receive: receive, carrier: carrier)
            }
        } catch {
            xenbus.destroy()
            throw .link(error)
        }
        if startHandshake { try self.startHandshake() }
    }

    /// Offers the device to the frontend (InitWait), when it was made with
    /// `startHandshake: false`.
    public func startHandshake() throws(NetBackendError) {
        do { try xenbus.startHandshake() } catch { throw .store(error) }
    }

    /// Whether a frontend is connected.
    public var isConnected: Bool { driver.connection != nil }

    /// Queues of the current connection (0 when not connected).
    public var queueCount: Int { driver.connection?.queues.count ?? 0 }

    /// The current connection's runtime device, nil when not connected.
    public var runtimeDevice: RuntimeDevice? { driver.connection?.device }

    /// Each queue's backend ports (TX, RX; the same port twice when the
    /// frontend shares one channel), nil when not connected.
    public var backendPorts: [(tx: EventChannelPort, rx: EventChannelPort)]? {
        driver.connection?.queues.map { ($0.txChannel.port, $0.rxChannel.port) }
    }

    /// Frames from the link dropped because no frontend was connected.
    public var droppedWhileDisconnected: UInt64 { driver.unconnectedDrops.dropped(.rxNotConnected) }

    /// Frames waiting in each queue's RX backlog (nil when not connected).
    public var rxBacklog: [Int]? { driver.connection?.queues.map(\.core.backlog.count) }

    /// Waits until the pumps asked for before this call have run, on every
    /// queue. False on timeout.
    public func sync(timeout: Duration = .seconds(60)) -> Bool {
        driver.connection?.device.sync(timeout: timeout) ?? true
    }

    /// Puts every queue of the connection back as it was when it connected
    /// (the rings' private indices at 0, no packet half read, the RX
    /// backlog empty); false when not connected, failed, or a packet waits
    /// for credit. For a fuzzer that keeps one connection for many inputs
    /// (Fuzz/, fuzz-netif) and puts the guest's side, the rings' pages
    /// among it, back itself: the xenbus handshake and the ring mappings
    /// are what it saves. A real guest's rings would go out of step, hence
    /// the SPI.
    @_spi(Fuzzing) public func rewind() -> Bool {
        guard let connection = driver.connection, !connection.device.isDisabled else { return false }
        return connection.queues.allSatisfy { $0.core.rewind() }
    }

    /// Removes the device: stops the link, disconnects, stops its threads
    /// and deletes its XenStore nodes.
    public func destroy() {
        driver.configuration.link.stop()
        xenbus.destroy()
        driver.disconnect()
    }
}

/// The connected state: one runtime device and its queues.
typealias NetConnection = RuntimeConnection<NetQueue>

/// One queue: its mapped ring pages, its core, its channel(s).
final class NetQueue: Sendable {
    let core: NetQueueCore
    let txChannel: BackendChannel
    /// `txChannel` itself when the frontend shares one event channel.
    let rxChannel: BackendChannel
    let ringHolds: [GrantHold]

    enum SetupError: Error {
        case pages(GrantHold.PageError)
        case ring(XenRingError)
        case memory(GuestMemoryError)
        case eventChannel(EventChannelPort, XenErrno)
    }

    /// Maps both rings' pages (held for the connection's life) and binds
    /// the frontend's channel(s) on a new context of `device`.
    init(index: Int, ring: NetFrontendParameters.Queue, environment: NetQueueEnvironment, metrics: NetMetrics,
         device: RuntimeDevice, events: EventChannelTable) throws(SetupError) {
        let holds: [GrantHold]
        do { holds = try environment.grants.holdPages([ring.txRing, ring.rxRing], access: .write) } catch {
            throw .pages(error)
        }
        func release() { for h in holds { h.release() } }
        let tx: NetifTxRing, rx: NetifRxRing
        do throws(XenRingError) {
            tx = try NetifTxRing(memory: environment.memory, frames: [holds[0].region.start.frameNumber])
            rx = try NetifRxRing(memory: environment.memory, frames: [holds[1].region.start.frameNumber])
        } catch {
            release()
            throw .ring(error)
        }
        let core: NetQueueCore
        do throws(GuestMemoryError) {
            core = try NetQueueCore(index: index, tx: tx, rx: rx, environment: environment, metrics: metrics)
        } catch {
            release()
            throw .memory(error)
        }
        let context = device.makeContext(queue: String(index))
        let channels: (tx: BackendChannel, rx: BackendChannel)
        switch ring.channels {
        case .shared(let port):
            do {
                let channel = try device.bindChannel(events: events, guestPort: port, on: context) { () throws(DeviceFault) in
                    let t = try core.pumpTx()
                    let r = try core.pumpRx()
                    return t == .notifyGuest || r == .notifyGuest ? .notifyGuest : .quiet
                }
                channels = (channel, channel)
            } catch {
                context.stop()
                release()
                throw .eventChannel(port, error)
            }
        case .split(let txPort, let rxPort):
            let t: BackendChannel
            do {
                t = try device.bindChannel(events: events, guestPort: txPort, on: context) { () throws(DeviceFault) in
                    try core.pumpTx()
                }
            } catch {
                context.stop()
                release()
                throw .eventChannel(txPort, error)
            }
            do {
                let r = try device.bindChannel(events: events, guestPort: rxPort, on: context) { () throws(DeviceFault) in
                    try core.pumpRx()
                }
                channels = (t, r)
            } catch {
                t.close()
                context.stop()
                release()
                throw .eventChannel(rxPort, error)
            }
        }
        txChannel = channels.tx
        rxChannel = channels.rx
        core.setReschedule(tx: { [weak tx = channels.tx] in tx?.schedule() },
                           rx: { [weak rx = channels.rx] in rx?.schedule() },
                           txAfter: { [weak tx = channels.tx] delay in tx?.schedule(after: delay) },
                           notifyTx: { [weak tx = channels.tx] in tx?.notifyGuest() },
                           notifyRx: { [weak rx = channels.rx] in rx?.notifyGuest() })
        self.core = core
        self.ringHolds = holds
    }

    /// A frame for this queue (the link's thread): backlog, then a pump.
    func received(_ frame: NetworkFrame) {
        if core.enqueue(frame) { rxChannel.schedule() }
    }

    /// Closes the channel(s) (waiting for a running pump), drops the
    /// backlog and releases the ring pages.
    func stop() {
        txChannel.close()
        rxChannel.close()
        // After the pumps: none reads the link any more.
        core.stopLinkReads()
        core.backlog.removeAll()
        for h in ringHolds { h.release() }
    }
}

/// The xenbus driver of a network device: the handshake's nodes, the
/// frontend's rings, the connection, and the link's frames.
final class NetDriver: XenbusBackendDriver {
    let name: String
    let configuration: NetDeviceConfiguration
    let memory: any HostAddressableMemory
    let grants: GrantTable
    let events: EventChannelTable
    let runtime: DeviceRuntime
    let log: @Sendable (String) -> Void
    let metrics: [NetMetrics]
    let carrier = CarrierState()
    /// Frames that came while no frontend was connected.
    let unconnectedDrops = NetMetrics()

    private let xenbusLink = XenbusDriverLink<NetConnection>()

    init(name: String, configuration: NetDeviceConfiguration, memory: any HostAddressableMemory, grants: GrantTable,
         events: EventChannelTable, runtime: DeviceRuntime, log: @escaping @Sendable (String) -> Void) {
        self.name = name
        self.configuration = configuration
        self.memory = memory
        self.grants = grants
        self.events = events
        self.runtime = runtime
        self.log = log
        metrics = (0..<configuration.maximumQueues).map { _ in NetMetrics() }
    }

    func setXenbus(_ device: XenbusBackendDevice) { xenbusLink.attach(device) }

    var connection: NetConnection? { xenbusLink.connection }

    /// The nodes Linux's xen-netback writes in `netback_probe` before
    /// InitWait: its offloads, rx-copy (and no rx-flip), split event
    /// channels, the queue limit; libxl's "mac" when configured.
    func backendNodes() -> [(String, String)] {
        var nodes: [(String, String)] = [
            ("feature-sg", "1"),
            ("feature-gso-tcpv4", "1"),
            ("feature-gso-tcpv6", "1"),
            ("feature-ipv6-csum-offload", "1"),
            ("feature-rx-copy", "1"),
            ("feature-rx-flip", "0"),
            ("feature-split-event-channels", "1"),
            ("multi-queue-max-queues", String(configuration.maximumQueues)),
        ]
        if let mac = configuration.mac { nodes.append(("mac", mac)) }
        // libxl writes "rate" for netback's credit scheduler (`xen_net_read_rate`).
        if let rate = configuration.rate { nodes.append(("rate", rate.description)) }
        return nodes
    }

    /// Linux's `connect` on the frontend's Initialised/Connected: the vif
    /// flags (`read_xenbus_vif_flags`: rx-copy is required), the queues
    /// (`connect_data_rings`: ring refs and event channels of each), bad
    /// values fatal. Nothing to publish before Connected.
    func connect(frontend nodes: [String: String]) throws -> [(String, String)] {
        disconnect()
        let parameters = try NetFrontendParameters(nodes, maximumQueues: configuration.maximumQueues)
        // A frontend without feature-sg takes no frame over a page: a link
        // handing out a larger MTU (passt's 65520) lowers it before the
        // guest asks DHCP for one.
        configuration.link.frontendConnected(scatterGather: parameters.features.scatterGather)
        var environment = NetQueueEnvironment(memory: memory, grants: grants, link: configuration.link,
                                              features: parameters.features, carrier: carrier,
                                              credit: configuration.rate.map { NetTransmitCredit($0) })
        if let direct = configuration.link as? any DirectReceiveNetworkLink {
            var steer: (@Sendable (NetworkFrame) -> Void)?
            if parameters.queues.count > 1 { steer = { @Sendable [weak self] frame in self?.received(frame) } }
            environment.reader = NetLinkReader(link: direct, steer: steer)
        }
        let device = runtime.makeDevice(name) { [weak self] fault in self?.faulted(fault) }
        var queues: [NetQueue] = []
        for (index, ring) in parameters.queues.enumerated() {
            do {
                queues.append(try NetQueue(index: index, ring: ring, environment: environment, metrics: metrics[index],
                                           device: device, events: events))
            } catch {
                for q in queues { q.stop() }
                runtime.remove(device)
                throw XenbusFatalError(.einval, "mapping shared-frames \(ring.txRing.rawValue)/\(ring.rxRing.rawValue) of queue \(index): \(error)")
            }
        }
        xenbusLink.install(NetConnection(device: device, queues: queues))
        log("\(name): connected: \(queues.count) queue(s), link \(configuration.link.description)")
        return []
    }

    /// Stops every queue and forgets the connection. Idempotent; safe from
    /// a queue's fault path.
    func disconnect() {
        guard let connection = xenbusLink.take() else { return }
        for q in connection.queues { q.stop() }
        runtime.remove(connection.device)
    }

    /// The link has frames queued (its thread): queue 0 reads them on its
    /// context when connected; false (the link's thread reads them, to be
    /// dropped as `rxNotConnected`) otherwise.
    func linkReadable() -> Bool {
        guard let connection = connection, !connection.device.isDisabled, let first = connection.queues.first,
              first.core.linkReadable() else { return false }
        first.rxChannel.schedule()
        return true
    }

    /// A frame from the link (its thread): steered to a queue by its flow.
    func received(_ frame: NetworkFrame) {
        guard let connection = connection, !connection.device.isDisabled, !connection.queues.isEmpty else {
            unconnectedDrops.drop(.rxNotConnected)
            return
        }
        let q = NetFlowHash.queue(frame.bytes, queues: connection.queues.count)
        connection.queues[q].received(frame)
    }

    private func faulted(_ fault: DeviceFault) {
        xenbusLink.fail(fault.reason) { disconnect() }
    }
}

/// The frontend's details, read and checked as Linux's `connect`,
/// `read_xenbus_vif_flags` and `connect_data_rings` read them.
/// Guest-written: parsed strictly; anything wrong is fatal for the device.
struct NetFrontendParameters: Equatable {
    enum Channels: Equatable {
        /// "event-channel": one port for both rings.
        case shared(EventChannelPort)
        /// "event-channel-tx" and "event-channel-rx".
        case split(tx: EventChannelPort, rx: EventChannelPort)
    }
    struct Queue: Equatable {
        var txRing: GrantReference
        var rxRing: GrantReference
        var channels: Channels
    }
    var queues: [Queue]
    var features: NetFrontendFeatures

    init(_ nodes: [String: String], maximumQueues: Int) throws(XenbusFatalError) {
        func number(_ key: String) -> UInt32? {
            guard let s = nodes[key], !s.isEmpty, s.utf8.count <= 10, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                  let v = UInt64(s), v <= UInt64(UInt32.max) else { return nil }
            return UInt32(v)
        }
        func flag(_ key: String) -> Bool { number(key).map { $0 != 0 } ?? false }
        // read_xenbus_vif_flags: only rx-copy is supported ("request-rx-copy" = 1).
        guard number("request-rx-copy") == 1 else {
            throw XenbusFatalError(.eopnotsupp, "frontend does not support rx-copy")
        }
        features = NetFrontendFeatures(scatterGather: flag("feature-sg"), gsoTCPv4: flag("feature-gso-tcpv4"),
                                       gsoTCPv6: flag("feature-gso-tcpv6"),
                                       ipv6ChecksumOffload: flag("feature-ipv6-csum-offload"),
                                       noChecksumOffload: flag("feature-no-csum-offload"),
                                       rxNotify: flag("feature-rx-notify"))
        let count: Int
        if nodes["multi-queue-num-queues"] != nil {
            guard let n = number("multi-queue-num-queues"), n >= 1, n <= UInt32(maximumQueues) else {
                throw XenbusFatalError(.einval, "guest requested \(String((nodes["multi-queue-num-queues"] ?? "").prefix(20))) queues, exceeding the maximum of \(maximumQueues).")
            }
            count = Int(n)
        } else {
            count = 1
        }
        var queues: [Queue] = []
        for q in 0..<count {
            // One queue: the keys are at the top; more: under "queue-N/" (netif.h).
            let dir = count == 1 ? "" : "queue-\(q)/"
            guard let tx = number("\(dir)tx-ring-ref"), let rx = number("\(dir)rx-ring-ref") else {
                throw XenbusFatalError(.einval, "reading \(dir)tx-ring-ref/rx-ring-ref")
            }
            let channels: Channels
            if let shared = number("\(dir)event-channel") {
                channels = .shared(EventChannelPort(rawValue: shared))
            } else if let t = number("\(dir)event-channel-tx"), let r = number("\(dir)event-channel-rx") {
                channels = .split(tx: EventChannelPort(rawValue: t), rx: EventChannelPort(rawValue: r))
            } else {
                throw XenbusFatalError(.einval, "reading \(dir)event-channel(-tx/rx)")
            }
            queues.append(Queue(txRing: GrantReference(rawValue: tx), rxRing: GrantReference(rawValue: rx), channels: channels))
        }
        self.queues = queues
    }
}
