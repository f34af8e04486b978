import CXen
import Dispatch
import DeviceRuntime
import EventChannels
import GrantTables
import GuestMemory
import HostIO
import XenABI
import XenBus
import XenRing
import XenStore

/// Makes the host-I/O engine of one queue (ring) of a block device. `queue`
/// is the ring's index; `onComplete` is where the engine must deliver
/// completions (it only hands them to the queue's context and returns).
/// The engine owns the backing file's I/O; the toolstack decides which.
public typealias BlockEngineFactory = @Sendable (_ queue: Int, _ onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) throws -> any BlockIOEngine

/// Discard as the backing does it ("feature-discard" and its geometry,
/// blkif.h).
public struct BlockDiscardGeometry: Hashable, Sendable {
    /// "discard-granularity": bytes of the smallest discard that frees
    /// anything (a file system's block).
    public var granularity: UInt32
    /// "discard-alignment": the offset of the first whole granule.
    public var alignment: UInt32
    public init(granularity: UInt32 = 4096, alignment: UInt32 = 0) {
        self.granularity = granularity
        self.alignment = alignment
    }
}

/// What the toolstack tells a block backend about its disk: the geometry,
/// the access, and how to do host I/O. Paths and file formats are the
/// toolstack's; the backend sees only this.
public struct BlockDeviceConfiguration: Sendable {
    /// The disk's size in `sectorSize` sectors.
    public var sectors: UInt64
    /// The logical sector size: a power of two from 512 to 4096.
    public var sectorSize: UInt32
    /// The physical sector size: a power of two, at least `sectorSize`.
    public var physicalSectorSize: UInt32
    /// Refuse writes, flushes and discards (VDISK_READONLY).
    public var readOnly: Bool
    /// Present a CD-ROM (VDISK_CDROM).
    public var cdrom: Bool
    /// Discard support of the backing; nil: no "feature-discard".
    public var discard: BlockDiscardGeometry?
    /// "multi-queue-max-queues": rings a frontend may use.
    public var maximumQueues: Int
    /// Makes each queue's engine.
    public var makeEngine: BlockEngineFactory
    /// The most requests a queue's pump takes off the ring before it hands
    /// them to the engine and looks for completions again (nil: all there
    /// are). A small number publishes responses and picks up the frontend's
    /// next requests between system calls instead of after a whole burst
    /// of them (`pvh-bench block --per-round`; docs/ARCHITECTURE.md, Host I/O).
    public var requestsPerRound: Int?
    /// A write or flush that is the only request a queue has in flight,
    /// with no other request on the ring, runs on the queue's own thread
    /// (`CallerReapedBlockIOEngine.performInline`) when the engine would
    /// hand it to a host thread anyway. Only caller-reaped engines (io_uring)
    /// do it; false submits everything (`pvh-bench block --inline off`;
    /// docs/ARCHITECTURE.md, Device runtime).
    public var runsLoneOperationsInline = true

    public init(sectors: UInt64, sectorSize: UInt32 = 512, physicalSectorSize: UInt32? = nil, readOnly: Bool = false,
                cdrom: Bool = false, discard: BlockDiscardGeometry? = nil, maximumQueues: Int = 1,
                makeEngine: @escaping BlockEngineFactory) {
        self.sectors = sectors
        self.sectorSize = sectorSize
        self.physicalSectorSize = physicalSectorSize ?? sectorSize
        self.readOnly = readOnly
        self.cdrom = cdrom
        self.discard = discard
        self.maximumQueues = maximumQueues
        self.makeEngine = makeEngine
    }

    /// The queue limit to offer a guest with `vcpus` vCPUs: one ring per
    /// vCPU (Linux's blkfront asks for one per CPU), at most 4 (a thread
    /// each here; more buys little on a file).
    public static func defaultMaximumQueues(vcpus: Int) -> Int { min(max(vcpus, 1), 4) }

    /// The disk's size in bytes.
    public var byteCount: UInt64 { sectors &* UInt64(sectorSize) }

    func validate() throws(BlockBackendError) {
        func power(_ v: UInt32) -> Bool { v != 0 && v & (v - 1) == 0 }
        guard power(sectorSize), (512...4096).contains(sectorSize) else {
            throw .invalidConfiguration("sector size \(sectorSize): not a power of two from 512 to 4096")
        }
        guard power(physicalSectorSize), physicalSectorSize >= sectorSize else {
            throw .invalidConfiguration("physical sector size \(physicalSectorSize): not a power of two of at least \(sectorSize)")
        }
        guard sectors.multipliedReportingOverflow(by: UInt64(sectorSize)).overflow == false else {
            throw .invalidConfiguration("\(sectors) sectors of \(sectorSize) bytes overflow")
        }
        guard (1...64).contains(maximumQueues) else { throw .invalidConfiguration("\(maximumQueues) queues") }
        if let d = discard, !power(d.granularity) || d.alignment >= d.granularity {
            throw .invalidConfiguration("discard granularity \(d.granularity), alignment \(d.alignment)")
        }
    }
}

/// Why a block device could not be made.
public enum BlockBackendError: Error, Hashable, Sendable {
    case invalidConfiguration(String)
    case store(XenStoreError)
}

/// A PV block device (vbd) backend, what Linux's xen-blkback is to Xen: the
/// xenbus handshake with the guest's blkfront and, once connected, one
/// queue per ring the frontend set up, each on its own execution context
/// with its own event channel and host-I/O engine, moving data straight
/// between the backing and the guest's granted pages.
///
/// Create one per disk when the domain is built; `destroy()` it before the
/// domain's XenStore tree and runtime go. A guest that breaks a ring's
/// protocol fails this device only (xenbus `fatal`: the error node,
/// Closing, the ring unmapped, Closed once the frontend closes; counted in
/// `metrics.faults`); it can reconnect from Initialising, as with Linux.
public final class BlockBackend: Sendable {
    /// Where the device lives in XenStore.
    public var address: XenbusDeviceAddress { xenbus.address }
    /// The xenbus end (its state, `fatal`).
    public let xenbus: XenbusBackendDevice
    /// Requests, bytes and errors, over all queues and connections.
    public var metrics: BlockMetrics { driver.metrics }
    private let driver: BlockDriver

    /// Creates the device's XenStore directories (`address.type` should be
    /// "vbd", `address.index` the virtual-device number, e.g. 51712 for
    /// xvda) and, unless `startHandshake` is false, offers the device
    /// (InitWait). `frontendNodes` default to libxl's "virtual-device" and
    /// "device-type". The device's runtime devices (one per connection) are
    /// named `vbd-<index>`; their threads `pvh-vbd-<index>-<queue>`.
    /// `adoptingExisting`: a hot-plugged device's directories, written by
    /// the toolstack, are kept (`XenbusBackendDevice.init`).
    public init(store: any XenStoreService, address: XenbusDeviceAddress, configuration: BlockDeviceConfiguration,
                memory: any HostAddressableMemory, grants: GrantTable, events: EventChannelTable, runtime: DeviceRuntime,
                frontendNodes: [(String, String)]? = nil, startHandshake: Bool = true, adoptingExisting: Bool = false,
                log: @escaping @Sendable (String) -> Void = { _ in }) throws(BlockBackendError) {
        try configuration.validate()
        let driver = BlockDriver(name: "\(address.type)-\(address.index)", configuration: configuration, memory: memory,
                                 grants: grants, events: events, runtime: runtime, log: log)
        self.driver = driver
        let nodes = frontendNodes ?? [("virtual-device", String(address.index)),
                                      ("device-type", configuration.cdrom ? "cdrom" : "disk")]
        do {
            xenbus = try XenbusBackendDevice(store: store, address: address, driver: driver, frontendNodes: nodes,
                                             startHandshake: false, adoptingExisting: adoptingExisting)
        } catch {
            throw .store(error)
        }
        driver.setXenbus(xenbus)
        if startHandshake { try self.startHandshake() }
    }

    /// Offers the device to the frontend (InitWait), when it was made with
    /// `startHandshake: false` (the backing is ready only now). A frontend
    /// that already said Initialised is connected at once.
    public func startHandshake() throws(BlockBackendError) {
        do { try xenbus.startHandshake() } catch { throw .store(error) }
    }

    /// Whether a frontend is connected.
    public var isConnected: Bool { driver.connection != nil }

    /// Rings of the current connection (0 when not connected).
    public var queueCount: Int { driver.connection?.queues.count ?? 0 }

    /// The current connection's runtime device (its pumps, notifications
    /// and fault), nil when not connected.
    public var runtimeDevice: RuntimeDevice? { driver.connection?.device }

    /// The backend's end of each queue's event channel (nil when not connected).
    public var backendPorts: [EventChannelPort]? { driver.connection?.queues.map(\.channel.port) }

    /// Waits until the pumps asked for before this call have run, on every
    /// queue (I/O a synchronous engine did is answered by then). False on
    /// timeout.
    public func sync(timeout: Duration = .seconds(60)) -> Bool {
        driver.connection?.device.sync(timeout: timeout) ?? true
    }

    /// Puts every queue of the connection back as it was when it connected
    /// (the rings' private indices at 0, nothing taken), if none has
    /// anything in flight; false when not connected, failed or busy. For a
    /// fuzzer that keeps one connection for many inputs (Fuzz/, fuzz-blkif)
    /// and puts the guest's side, the shared ring's pages among it, back
    /// itself: the xenbus handshake and the ring mappings are what it
    /// saves. A real guest's ring would go out of step, hence the SPI.
    @_spi(Fuzzing) public func rewind() -> Bool {
        guard let connection = driver.connection, !connection.device.isDisabled else { return false }
        return connection.queues.allSatisfy { $0.core.rewind() }
    }

    /// Removes the device: disconnects (in-flight I/O is drained and
    /// answered first), stops its threads and deletes its XenStore nodes.
    public func destroy() {
        xenbus.destroy()
        driver.disconnect()
    }
}

/// The connected state: one runtime device and its queues.
typealias BlockConnection = RuntimeConnection<BlockQueue>

/// One ring: its mapped pages, its queue core, its channel.
final class BlockQueue: Sendable {
    let core: QueueCore
    let channel: BackendChannel
    let ringHolds: [GrantHold]

    /// How long a stop waits for in-flight I/O before it gives up on it.
    static let drainTimeout: Duration = .seconds(30)

    enum SetupError: Error {
        case pages(GrantHold.PageError)
        case ring(XenRingError)
        case engine(String)
        case eventChannel(EventChannelPort, XenErrno)
    }

    /// Maps the ring's pages (held for the connection's life, like
    /// xen-blkback's `xen_blkif_map`), makes its engine, and binds the
    /// frontend's event channel on a new context of `device`.
    init(index: Int, refs: [GrantReference], port: EventChannelPort, abi: BlkifABI, environment: QueueEnvironment,
         device: RuntimeDevice, events: EventChannelTable, makeEngine: BlockEngineFactory) throws(SetupError) {
        let holds: [GrantHold]
        do { holds = try environment.grants.holdPages(refs, access: .write) } catch { throw .pages(error) }
        let ring: BlkifRing
        do { ring = try BlkifRing(abi: abi, memory: environment.memory, frames: holds.map(\.region.start.frameNumber)) } catch {
            for h in holds { h.release() }
            throw .ring(error)
        }
        let inbox = CompletionInbox()
        let engine: any BlockIOEngine
        do { engine = try makeEngine(index, { inbox.deliver($0) }) } catch {
            for h in holds { h.release() }
            throw .engine("\(error)")
        }
        let core = QueueCore(index: index, ring: ring, environment: environment, engine: engine, inbox: inbox)
        // While a read is in the disk (caller-reaped io_uring),
        // its completion is on its way: the context polls for it on the
        // longer budget (ExecutionContextPolling).
        let context = device.makeContext(queue: String(index), doorbell: core.reaped.map { EngineDoorbell($0) },
                                         expectsWork: { core.awaitsDevice })
        let channel: BackendChannel
        do {
            channel = try device.bindChannel(events: events, guestPort: port, on: context) { () throws(DeviceFault) in
                try core.pump()
            }
        } catch {
            context.stop()
            engine.shutdown()
            for h in holds { h.release() }
            throw .eventChannel(port, error)
        }
        inbox.setWake { [weak channel] in channel?.schedule() }
        core.setGuestNotifier { [weak channel] in channel?.notifyGuest() }
        if core.reaped != nil { channel.pumpOnDoorbellEvent() }
        self.core = core
        self.channel = channel
        self.ringHolds = holds
    }

    /// Stops the queue: takes no more requests, waits (up to
    /// `drainTimeout`) until what was taken is done and answered, unless
    /// the device failed or its context was stopped (its pumps no longer
    /// run; after a fault the ring is not trusted either), then shuts the
    /// engine down, closes the channel and releases every page. Never
    /// called on a healthy queue's own context.
    func stop(device: RuntimeDevice, log: (String) -> Void) {
        core.beginStop()
        if !device.isDisabled && !channel.context.isStopped {
            channel.schedule()
            let deadline = DispatchTime.now() + .seconds(Int(Self.drainTimeout.components.seconds))
            while true {
                // A threadless context pumps only when synced
                // (ExecutionContextMode.caller): the pump asked for above,
                // and those later completions ask for, run here.
                if channel.context.mode == .caller { _ = channel.context.sync(timeout: Self.drainTimeout) }
                if core.drained.wait(timeout: .now() + .milliseconds(100)) == .success { break }
                if device.isDisabled || channel.context.isStopped { break }
                if DispatchTime.now() >= deadline {
                    log("\(device.name): queue \(core.index): in-flight I/O did not finish; abandoned")
                    break
                }
            }
        }
        core.inbox.setWake(nil)
        // No pump runs from here on, so a caller-reaped engine's shutdown is
        // the only one reaping.
        channel.close()
        // Every submitted request completes before shutdown returns, so no
        // I/O touches the guest's pages once their holds go below.
        core.engine.shutdown()
        core.abandon()
        for h in ringHolds { h.release() }
    }
}

/// The xenbus driver of a block device: the handshake's nodes, the
/// frontend's ring details, the connection. Its calls come from the store's
/// callback queue, and `disconnect` also from a queue's fault path.
final class BlockDriver: XenbusBackendDriver {
    let name: String
    let configuration: BlockDeviceConfiguration
    let memory: any HostAddressableMemory
    let grants: GrantTable
    let events: EventChannelTable
    let runtime: DeviceRuntime
    let log: @Sendable (String) -> Void
    let metrics = BlockMetrics()

    private let xenbusLink = XenbusDriverLink<BlockConnection>()

    init(name: String, configuration: BlockDeviceConfiguration, memory: any HostAddressableMemory, grants: GrantTable,
         events: EventChannelTable, runtime: DeviceRuntime, log: @escaping @Sendable (String) -> Void) {
        self.name = name
        self.configuration = configuration
        self.memory = memory
        self.grants = grants
        self.events = events
        self.runtime = runtime
        self.log = log
    }

    func setXenbus(_ device: XenbusBackendDevice) { xenbusLink.attach(device) }

    var connection: BlockConnection? { xenbusLink.connection }

    /// The nodes Linux's xen-blkback writes in `xen_blkbk_probe` (before
    /// InitWait: "feature-max-indirect-segments", "multi-queue-max-queues",
    /// "max-ring-page-order") and in `connect` (the cache and discard
    /// features). All are known before InitWait here, so they are
    /// published then; the disk's size and sector sizes wait for the
    /// frontend's "feature-large-sector-size" (see `connect`).
    ///
    /// No "feature-persistent": persistent grants let a backend keep pages
    /// mapped across requests because mapping costs a Xen backend a
    /// hypercall and a TLB flush; mapping a grant costs pvh a table lookup,
    /// so persistence would only add the copy the frontend then makes into
    /// and out of its persistent pages.
    ///
    /// A read-only disk offers neither flush nor barrier nor discard, which
    /// it would refuse (`xen_vbd_translate` takes only reads on a
    /// read-only vbd). "discard-secure" is never offered: punching a hole
    /// frees the blocks but does not make their old contents unrecoverable.
    func backendNodes() -> [(String, String)] {
        let writable = !configuration.readOnly
        var nodes: [(String, String)] = [
            ("feature-flush-cache", writable ? "1" : "0"),
            ("feature-barrier", writable ? "1" : "0"),
        ]
        if writable, let discard = configuration.discard {
            nodes += [("feature-discard", "1"),
                      ("discard-granularity", String(discard.granularity)),
                      ("discard-alignment", String(discard.alignment))]
        }
        nodes += [("feature-max-indirect-segments", String(BlockBackendLimits.maximumIndirectSegments)),
                  ("multi-queue-max-queues", String(configuration.maximumQueues)),
                  ("max-ring-page-order", String(BlockBackendLimits.maximumRingPageOrder))]
        return nodes
    }

    /// Linux's `frontend_changed` on Initialised/Connected: disconnect
    /// whatever was there (idempotent), `connect_ring` (protocol, queues,
    /// ring order, each ring's refs and event channel: bad values are
    /// fatal), then `connect`'s nodes: "sectors", "info", "sector-size",
    /// "physical-sector-size".
    func connect(frontend nodes: [String: String]) throws -> [(String, String)] {
        disconnect()
        let parameters = try BlockFrontendParameters(nodes, maximumQueues: configuration.maximumQueues,
                                                     maximumRingPageOrder: BlockBackendLimits.maximumRingPageOrder)
        // blkif.h "feature-large-sector-size": without it sector quantities
        // are 512-byte units and "sector-size" must be 512; the disk's own
        // sector sizes are then told as "physical-sector-size".
        let unit = parameters.largeSectors ? Int(configuration.sectorSize) : 512
        let presentedSectors = configuration.byteCount / UInt64(unit)
        let limits = BlockRequestLimits(sectorUnit: unit, sectors: presentedSectors, readOnly: configuration.readOnly,
                                        discard: configuration.discard != nil && !configuration.readOnly)
        let environment = QueueEnvironment(memory: memory, grants: grants, validator: BlockRequestValidator(limits: limits),
                                           metrics: metrics, requestsPerRound: max(configuration.requestsPerRound ?? .max, 1),
                                           runsLoneOperationsInline: configuration.runsLoneOperationsInline)
        let device = runtime.makeDevice(name) { [weak self] fault in self?.faulted(fault) }
        var queues: [BlockQueue] = []
        for (index, ring) in parameters.rings.enumerated() {
            do {
                queues.append(try BlockQueue(index: index, refs: ring.refs, port: ring.port, abi: parameters.abi,
                                             environment: environment, device: device, events: events,
                                             makeEngine: configuration.makeEngine))
            } catch {
                for q in queues { q.stop(device: device, log: log) }
                runtime.remove(device)
                throw XenbusFatalError(.einval, "mapping ring-ref port \(ring.port.rawValue) of queue \(index): \(error)")
            }
        }
        xenbusLink.install(BlockConnection(device: device, queues: queues))
        log("\(name): connected: \(queues.count) queue(s) of \(parameters.rings.first?.refs.count ?? 0) page(s), protocol \(parameters.abi)")
        var info: UInt32 = 0
        if configuration.cdrom { info |= UInt32(VDISK_CDROM) }
        if configuration.readOnly { info |= UInt32(VDISK_READONLY) }
        let physical = max(configuration.physicalSectorSize, configuration.sectorSize)
        return [("sectors", String(presentedSectors)),
                ("info", String(info)),
                ("sector-size", String(unit)),
                ("physical-sector-size", String(max(physical, UInt32(unit))))]
    }

    /// Stops every queue (draining in-flight I/O) and forgets the
    /// connection. Idempotent; safe from a queue's fault path.
    func disconnect() {
        guard let connection = xenbusLink.take() else { return }
        for q in connection.queues { q.stop(device: connection.device, log: log) }
        runtime.remove(connection.device)
    }

    /// A queue's ring is corrupt (or the backend failed): the device is
    /// failed through xenbus, which disconnects it.
    private func faulted(_ fault: DeviceFault) {
        BlockMetrics.bump(metrics.faults)
        if fault.kind == .hostileGuest { BlockMetrics.bump(metrics.hostileGuestFaults) }
        xenbusLink.fail(fault.reason) { disconnect() }
    }
}

/// The frontend's ring details, read and checked as Linux's `connect_ring`
/// and `read_per_ring_refs` read them. Guest-written: every value is
/// parsed strictly and bounded; anything wrong is fatal for the device.
struct BlockFrontendParameters: Equatable {
    struct Ring: Equatable {
        var refs: [GrantReference]
        var port: EventChannelPort
    }
    var abi: BlkifABI
    var rings: [Ring]
    var largeSectors: Bool

    init(_ nodes: [String: String], maximumQueues: Int, maximumRingPageOrder: Int) throws(XenbusFatalError) {
        if let name = nodes["protocol"] {
            guard let abi = BlkifABI(protocolName: name) else {
                throw XenbusFatalError(.enosys, "unknown fe protocol \(String(name.prefix(64)))")
            }
            self.abi = abi
        } else {
            abi = BlkifABI.frontendDefault
        }
        let queues: Int
        if let raw = nodes["multi-queue-num-queues"] {
            guard let n = Self.decimal(raw), n >= 1, n <= UInt64(maximumQueues) else {
                throw XenbusFatalError(.enosys, "guest requested \(String(raw.prefix(20))) queues, exceeding the maximum of \(maximumQueues).")
            }
            queues = Int(n)
        } else {
            queues = 1
        }
        var order = 0
        if let raw = nodes["ring-page-order"] {
            guard let n = Self.decimal(raw), n <= UInt64(maximumRingPageOrder) else {
                throw XenbusFatalError(.einval, "requested ring page order \(String(raw.prefix(20))) exceed max:\(maximumRingPageOrder)")
            }
            order = Int(n)
        }
        let pages = 1 << order
        var rings: [Ring] = []
        for q in 0..<queues {
            // One queue: the keys are at the top; more: under "queue-N" (blkif.h).
            let dir = queues == 1 ? "" : "queue-\(q)/"
            guard let p = nodes["\(dir)event-channel"].flatMap(Self.decimal), p <= UInt64(UInt32.max) else {
                throw XenbusFatalError(.einval, "reading \(dir)event-channel")
            }
            var refs: [GrantReference] = []
            for i in 0..<pages {
                if let r = nodes["\(dir)ring-ref\(i)"].flatMap(Self.decimal), r <= UInt64(UInt32.max) {
                    refs.append(GrantReference(rawValue: UInt32(r)))
                } else if pages == 1, let r = nodes["\(dir)ring-ref"].flatMap(Self.decimal), r <= UInt64(UInt32.max) {
                    // A single page may be "ring-ref" (read_per_ring_refs' fallback).
                    refs.append(GrantReference(rawValue: UInt32(r)))
                } else {
                    throw XenbusFatalError(.einval, "reading \(dir)ring-ref\(pages == 1 ? "" : String(i))")
                }
            }
            rings.append(Ring(refs: refs, port: EventChannelPort(rawValue: UInt32(p))))
        }
        self.rings = rings
        largeSectors = nodes["feature-large-sector-size"].flatMap(Self.decimal).map { $0 != 0 } ?? false
    }

    /// A decimal number of at most 20 ASCII digits, nothing else.
    static func decimal(_ s: String) -> UInt64? {
        guard !s.isEmpty, s.utf8.count <= 20, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return UInt64(s)
    }
}
