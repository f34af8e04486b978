import BlockBackend
import DeviceRuntime
import EventChannels
import Foundation
import GrantTables
import GuestMemory
import HostIO
import Synchronization
import Testing
import TestSupport
import XenABI
import XenBus
import XenRing
import XenStore

// A guest with a real grant table, event-channel table and XenStore, in
// host-addressable memory (`MappedGuestMemory`, no KVM), and a fake blkfront
// that drives the block backend the way Linux's xen-blkfront does: ring
// pages and data pages granted to d0, an unbound port for d0, the xenbus
// nodes written over the guest's own store connection. The backing is a
// scratch file; tests wait for the backend's pumps (`sync`), never sleep.

/// A scratch backing file that goes away with the value.
final class ScratchDisk {
    let url: URL
    let handle: FileHandle
    init(bytes: Int) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-blk-\(UUID().uuidString).img")
        _ = FileManager.default.createFile(atPath: url.path, contents: nil)
        handle = try FileHandle(forUpdating: url)
        try handle.truncate(atOffset: UInt64(bytes))
    }
    var fd: Int32 { handle.fileDescriptor }
    func read(at offset: Int, count: Int) throws -> [UInt8] {
        try handle.seek(toOffset: UInt64(offset))
        return [UInt8](try handle.read(upToCount: count) ?? Data())
    }
    func write(_ bytes: [UInt8], at offset: Int) throws {
        try handle.seek(toOffset: UInt64(offset))
        try handle.write(contentsOf: Data(bytes))
    }
    deinit {
        try? handle.close()
        try? FileManager.default.removeItem(at: url)
    }
}

/// An engine that holds every request until the test releases it, then
/// runs it on a synchronous engine: proves what the backend submits when.
final class HeldEngine: BlockIOEngine, Sendable {
    private let inner: SynchronousEngine
    private let held = Mutex<[BlockIORequest]>([])
    /// Operations in the order they were performed ("read", "write", "flush", "discard").
    let performed = Mutex<[String]>([])

    init(fd: Int32, onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) {
        inner = SynchronousEngine(fileDescriptor: fd, onComplete: onComplete)
    }

    func submit(_ requests: [BlockIORequest]) { held.withLock { $0 += requests } }

    /// What was submitted and not yet released.
    var pending: [String] { held.withLock { $0.map { Self.name($0.operation) } } }

    /// Runs (and completes) the oldest `count` held requests.
    func release(_ count: Int = .max) {
        let now = held.withLock { h -> [BlockIORequest] in
            let n = min(count, h.count)
            defer { h.removeFirst(n) }
            return Array(h.prefix(n))
        }
        for r in now {
            performed.withLock { $0.append(Self.name(r.operation)) }
            inner.submit([r])
        }
    }

    func shutdown() {
        release()
        inner.shutdown()
    }

    static func name(_ op: BlockIOOperation) -> String {
        switch op {
        case .read: "read"
        case .write: "write"
        case .flush: "flush"
        case .discard: "discard"
        }
    }
}

/// The guest's connection to the store (what its ring would carry): it
/// acts as the unprivileged frontend domain.
final class GuestStore: Sendable {
    let server: XenStoreServer
    let id: XenStoreConnectionID
    private final class Inbox: Sendable { let bytes = Mutex<[UInt8]>([]) }
    private let received = Inbox()
    private let framer = Mutex(XenStoreFramer())
    private let nextID = Atomic<UInt32>(1)

    init(_ server: XenStoreServer, domain: DomainID) {
        self.server = server
        let box = received
        id = server.connect(domain: domain, privileged: false) { bytes in box.bytes.withLock { $0 += bytes } }
    }

    private func request(_ type: XenStoreMessageType, _ payload: [UInt8]) -> Result<[UInt8], XenStoreError> {
        let rid = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        _ = server.receive(XenStoreMessage(type: type, requestID: rid, payload: payload).bytes, from: id)
        let bytes = received.bytes.withLock { b in
            defer { b = [] }
            return b
        }
        let frames = (try? framer.withLock { try $0.feed(bytes) }) ?? []
        for case .message(let m) in frames where m.requestID == rid && m.type != .watchEvent {
            if m.type == .error { return .failure(XenStoreError(wireName: XenStoreWire.oneArgument(m.payload) ?? "") ?? .eio) }
            return .success(m.payload)
        }
        return .failure(.eio)
    }

    func write(_ path: String, _ value: String) throws {
        if case .failure(let e) = request(.write, XenStoreWire.nulTerminated([path]) + Array(value.utf8)) { throw e }
    }

    func read(_ path: String) -> String? {
        try? request(.read, XenStoreWire.nulTerminated([path])).map { String(decoding: $0, as: UTF8.self) }.get()
    }
}

/// Domain 1 in 32 MiB of host-addressable memory, with its grant table
/// (default area at frame 0x1f00, four frames set up: 2048 v1 entries),
/// its event channels and the toolstack's store.
final class Guest {
    static let domain = DomainID(rawValue: 1)
    static let areaFrame: UInt64 = 0x1f00
    let memory: MappedGuestMemory
    let grants: GrantTable
    let events: EventChannelTable
    let upcalls = CountingUpcalls()
    let store = XenStoreServer()
    let storeWire: GuestStore
    let runtime = DeviceRuntime()
    private var grantFrames: [GuestFrameNumber]
    private var nextFrame: UInt64 = 0x100
    private var nextRef: UInt32 = 8  // 0..7 are reserved (GNTTAB_NR_RESERVED_ENTRIES)

    init() throws {
        memory = try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 32 << 20)])
        grants = GrantTable(configuration: .init(domainID: Self.domain, defaultArea: GuestFrameNumber(Self.areaFrame)),
                            memory: memory)
        events = EventChannelTable(configuration: .init(domainID: Self.domain, vcpuCount: 1), memory: memory,
                                   locator: FixedSharedInfo(), notifier: upcalls)
        grantFrames = try grants.setupTable(domain: .`self`, frames: 4)
        store.introduceDomain(Self.domain)
        storeWire = GuestStore(store, domain: Self.domain)
    }

    deinit { runtime.stopAll() }

    /// `count` fresh contiguous pages (zeroed).
    func allocatePages(_ count: Int = 1) -> GuestFrameNumber {
        let frame = GuestFrameNumber(nextFrame)
        nextFrame += UInt64(count)
        precondition(nextFrame < 0x1f00, "test guest out of pages")
        return frame
    }

    /// A v1 grant of `frame` to d0, as gnttab_grant_foreign_access writes it.
    func grant(_ frame: GuestFrameNumber, readOnly: Bool = false) throws -> GrantReference {
        let ref = nextRef
        nextRef += 1
        var flags = GrantEntryFlags.permitAccess
        if readOnly { flags.insert(.readonly) }
        let entry = UInt64(flags.rawValue) | UInt64(0) << 16 | UInt64(frame.rawValue) << 32
        let at = GuestPhysicalAddress(grantFrames[Int(ref) / 512].rawValue << 12 + UInt64(ref % 512) * 8)
        try memory.store(entry, at: at)
        return GrantReference(rawValue: ref)
    }

    func address(_ frame: GuestFrameNumber, _ offset: Int = 0) -> GuestPhysicalAddress {
        GuestPhysicalAddress(frame.rawValue << 12 + UInt64(offset))
    }

    func fill(_ frame: GuestFrameNumber, _ bytes: [UInt8]) throws { try memory.write(bytes, at: address(frame)) }
    func page(_ frame: GuestFrameNumber) throws -> [UInt8] { try memory.read(at: address(frame), count: 4096) }
}

/// One ring of a fake xen-blkfront in ABI `L`: its granted ring pages (a
/// contiguous run the backend sees as `ring-page-order` separate grants)
/// and its event channel, an unbound guest port for d0.
final class FakeBlkfront<L: BlkifABILayout> {
    typealias Front = FakeFrontend<BlkifRequestEntry<L>, BlkifResponseEntry<L>>
    let guest: Guest
    let ring: Front
    let refs: [GrantReference]
    let port: EventChannelPort
    var layout: BlkifLayout { L.abi.layout }

    init(guest: Guest, order: Int = 0) throws {
        self.guest = guest
        let pages = 1 << order
        let first = guest.allocatePages(pages)
        ring = try Front(memory: guest.memory, base: guest.address(first), byteCount: pages * 4096)
        refs = try (0..<pages).map { try guest.grant(GuestFrameNumber(first.rawValue + UInt64($0))) }
        port = try guest.events.allocateUnbound(domain: Guest.domain, remote: .controlDomain)
    }

    /// This ring's xenbus nodes (`prefix` "queue-N/" for one of several).
    func nodes(prefix: String = "") -> [(String, String)] {
        var n: [(String, String)] = [("\(prefix)event-channel", String(port.rawValue))]
        if refs.count == 1 {
            n.append(("\(prefix)ring-ref", String(refs[0].rawValue)))
        } else {
            for (i, r) in refs.enumerated() { n.append(("\(prefix)ring-ref\(i)", String(r.rawValue))) }
        }
        return n
    }

    /// Puts `requests` on the ring, publishes them and notifies the backend
    /// if it asked (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY); false if one did not fit.
    @discardableResult
    func submit(_ requests: [BlkifWireRequest]) throws -> Bool {
        for r in requests {
            guard try ring.enqueue(BlkifRequestEntry<L>(r)) else { return false }
        }
        if try ring.pushRequests() { try guest.events.send(port) }
        return true
    }

    /// Notifies the backend whatever it asked for (a guest may always send).
    func kick() throws { try guest.events.send(port) }

    func responses() throws -> [BlkifWireResponse] { try ring.takeResponses().map(\.response) }
}

/// A block device of `sectors` 512-byte sectors on a scratch file, made
/// over `guest`'s store, its frontend connected with `queues` rings.
final class Disk<L: BlkifABILayout> {
    let guest: Guest
    let file: ScratchDisk
    let backend: BlockBackend
    let fronts: [FakeBlkfront<L>]
    var address: XenbusDeviceAddress { backend.address }
    var front: FakeBlkfront<L> { fronts[0] }

    static var defaultEngine: (ScratchDisk) -> BlockEngineFactory {
        { file in
            let fd = file.fd
            return { _, done in SynchronousEngine(fileDescriptor: fd, onComplete: done) }
        }
    }

    init(guest: Guest, index: Int = 51712, sectors: UInt64 = 2048, queues: Int = 1, order: Int = 0,
         readOnly: Bool = false, discard: Bool = false, protocolNode: String? = L.abi.protocolName,
         maximumQueues: Int = 4, engine: ((ScratchDisk) -> BlockEngineFactory)? = nil) throws {
        self.guest = guest
        file = try ScratchDisk(bytes: Int(sectors) * 512)
        let configuration = BlockDeviceConfiguration(
            sectors: sectors, readOnly: readOnly, discard: discard ? BlockDiscardGeometry() : nil,
            maximumQueues: maximumQueues, makeEngine: (engine ?? Self.defaultEngine)(file))
        backend = try BlockBackend(store: guest.store,
                                   address: XenbusDeviceAddress(type: "vbd", frontend: Guest.domain, index: index),
                                   configuration: configuration, memory: guest.memory, grants: guest.grants,
                                   events: guest.events, runtime: guest.runtime)
        fronts = try (0..<queues).map { _ in try FakeBlkfront<L>(guest: guest, order: order) }
        try connect(protocolNode: protocolNode)
    }

    /// Linux's blkfront `talk_to_blkback`: ring details, then Initialised.
    func connect(protocolNode: String? = L.abi.protocolName, extra: [(String, String)] = []) throws {
        let fe = address.frontendPath
        var nodes: [(String, String)] = extra
        if let p = protocolNode { nodes.append(("protocol", p)) }
        if fronts[0].refs.count > 1 {
            nodes.append(("ring-page-order", String(fronts[0].refs.count.trailingZeroBitCount)))
        }
        if fronts.count == 1 {
            nodes += fronts[0].nodes()
        } else {
            nodes.append(("multi-queue-num-queues", String(fronts.count)))
            for (i, f) in fronts.enumerated() { nodes += f.nodes(prefix: "queue-\(i)/") }
        }
        for (k, v) in nodes { try guest.storeWire.write("\(fe)/\(k)", v) }
        try guest.storeWire.write("\(fe)/state", "3")
    }

    func backendNode(_ key: String) -> String? { try? guest.store.read("\(address.backendPath)/\(key)") }

    /// The frontend's send, then the wait for the pumps it caused.
    func roundTrip(_ requests: [BlkifWireRequest], queue: Int = 0) throws -> [BlkifWireResponse] {
        try fronts[queue].submit(requests)
        try #require(backend.sync(timeout: .seconds(30)), "the block backend's pumps did not finish")
        return try fronts[queue].responses()
    }

    func sync() throws { try #require(backend.sync(timeout: .seconds(30))) }
}

/// Requests as blkfront builds them.
enum Blkfront {
    static func rw(_ op: BlkifOperation, id: UInt64, sector: UInt64, _ segments: [BlkifSegment]) -> BlkifWireRequest {
        BlkifWireRequest(operation: op.rawValue, id: id,
                         body: .readWrite(nrSegments: UInt8(segments.count), handle: 0, sectorNumber: sector, segments: segments))
    }

    static func flush(id: UInt64, barrier: Bool = false) -> BlkifWireRequest {
        rw(barrier ? .writeBarrier : .flushDiskCache, id: id, sector: 0, [])
    }

    static func discard(id: UInt64, sector: UInt64, count: UInt64, secure: Bool = false) -> BlkifWireRequest {
        BlkifWireRequest(operation: BlkifOperation.discard.rawValue, id: id,
                         body: .discard(flag: secure ? 1 : 0, sectorNumber: sector, sectorCount: count))
    }

    static func indirect(_ op: BlkifOperation, id: UInt64, sector: UInt64, segments: Int, pages: [GrantReference]) -> BlkifWireRequest {
        BlkifWireRequest(operation: BlkifOperation.indirect.rawValue, id: id,
                         body: .indirect(operation: op.rawValue, nrSegments: UInt16(segments), handle: 0, sectorNumber: sector,
                                         pages: pages))
    }

    /// A whole page as one segment.
    static func page(_ ref: GrantReference) -> BlkifSegment { BlkifSegment(grant: ref, firstSector: 0, lastSector: 7) }
}

/// Deterministic page contents: a pattern from `seed`, and its checksum (FNV-1a).
enum Pattern {
    static func bytes(_ seed: UInt64, count: Int = 4096) -> [UInt8] {
        var x = seed &* 0x9e37_79b9_7f4a_7c15 | 1
        return (0..<count).map { _ in
            x ^= x << 13
            x ^= x >> 7
            x ^= x << 17
            return UInt8(truncatingIfNeeded: x)
        }
    }

    static func checksum(_ bytes: some Sequence<UInt8>) -> UInt64 {
        bytes.reduce(0xcbf2_9ce4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01b3 }
    }
}

/// Makes `HeldEngine`s and keeps them for the test to release.
final class HeldEngines: Sendable {
    let engines = Mutex<[HeldEngine]>([])
    var first: HeldEngine? { engines.withLock { $0.first } }
    func factory(_ file: ScratchDisk) -> BlockEngineFactory {
        let fd = file.fd
        return { [self] _, done in
            let e = HeldEngine(fd: fd, onComplete: done)
            engines.withLock { $0.append(e) }
            return e
        }
    }
}

/// An engine whose every request fails with `error`.
final class FailingEngine: BlockIOEngine, Sendable {
    let error: HostIOError
    let onComplete: @Sendable ([BlockIOCompletion]) -> Void
    init(_ error: HostIOError, onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) {
        self.error = error
        self.onComplete = onComplete
    }
    func submit(_ requests: [BlockIORequest]) { onComplete(requests.map { BlockIOCompletion(tag: $0.tag, result: .failure(error)) }) }
    func shutdown() {}
}
