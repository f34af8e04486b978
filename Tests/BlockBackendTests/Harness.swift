import BlockBackend
import BlockFrontend
import DeviceRuntime
import EventChannels
import Foundation
import GrantTables
import GuestMemory
import HostIO
import Locking
import Testing
import TestSupport
import VMM
import XenABI
import XenBus
import XenRing
import XenStore

// The guest is BlockFrontend's `FrontendGuest` (domain 1 in host-addressable
// memory with a real grant table, event-channel table and XenStore, no KVM)
// and its `BlkfrontRing`s, which drive the block backend the way Linux's
// xen-blkfront does: ring pages and data pages granted to d0, an unbound
// port for d0, the xenbus nodes written over the guest's own store
// connection. The backing is a scratch file; tests wait for the backend's
// pumps (`sync`), never sleep.

typealias Guest = FrontendGuest

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
    private let held = Lock<[BlockIORequest]>([])
    /// Operations in the order they were performed ("read", "write", "flush", "discard").
    let performed = Lock<[String]>([])

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

/// A block device of `sectors` 512-byte sectors on a scratch file, made
/// over `guest`'s store, its frontend connected with `queues` rings.
final class Disk<L: BlkifABILayout> {
    let guest: Guest
    let file: ScratchDisk
    let backend: BlockBackend
    let fronts: [BlkfrontRing<L>]
    var address: XenbusDeviceAddress { backend.address }
    var front: BlkfrontRing<L> { fronts[0] }

    static var defaultEngine: (ScratchDisk) -> BlockEngineFactory {
        { file in
            let fd = file.fd
            return { _, done in SynchronousEngine(fileDescriptor: fd, onComplete: done) }
        }
    }

    init(guest: Guest, index: Int = 51712, sectors: UInt64 = 2048, queues: Int = 1, order: Int = 0,
         readOnly: Bool = false, discard: Bool = false, protocolNode: String? = L.abi.protocolName,
         maximumQueues: Int = 4, engine: ((ScratchDisk) -> BlockEngineFactory)? = nil, requestsPerRound: Int? = nil,
         inline: Bool = true) throws {
        self.guest = guest
        file = try ScratchDisk(bytes: Int(sectors) * 512)
        var configuration = BlockDeviceConfiguration(
            sectors: sectors, readOnly: readOnly, discard: discard ? BlockDiscardGeometry() : nil,
            maximumQueues: maximumQueues, makeEngine: (engine ?? Self.defaultEngine)(file))
        configuration.requestsPerRound = requestsPerRound
        configuration.runsLoneOperationsInline = inline
        backend = try BlockBackend(store: guest.backendStore,
                                   address: XenbusDeviceAddress(type: "vbd", frontend: Guest.domain, index: index),
                                   configuration: configuration, memory: guest.memory, grants: guest.grants,
                                   events: guest.events, runtime: guest.runtime)
        fronts = try (0..<queues).map { _ in try BlkfrontRing<L>(guest: guest, order: order) }
        try connect(protocolNode: protocolNode)
    }

    /// Linux's blkfront `talk_to_blkback`: ring details, then Initialised.
    func connect(protocolNode: String? = L.abi.protocolName, extra: [(String, String)] = []) throws {
        try Blkfront.connect(fronts, device: address, protocolNode: protocolNode, extra: extra)
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

/// An engine that calls `probe` as each submission arrives, then hands the
/// requests to `inner`: lets a test look at the guest at that moment.
final class ProbedEngine: BlockIOEngine, Sendable {
    private let inner: any BlockIOEngine
    private let probe: @Sendable () -> Void
    init(_ inner: any BlockIOEngine, probe: @escaping @Sendable () -> Void) {
        self.inner = inner
        self.probe = probe
    }
    func submit(_ requests: [BlockIORequest]) {
        probe()
        inner.submit(requests)
    }
    func shutdown() { inner.shutdown() }
}

/// Makes `HeldEngine`s and keeps them for the test to release.
final class HeldEngines: Sendable {
    let engines = Lock<[HeldEngine]>([])
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

/// The backends' store over the wire: `XenStoreRemote` through a socketpair
/// to the guest's server, as a guest process reaches the daemon's store;
/// the guest's writes then wait for the backends' watch handlers.
func remoteBackendStore(_ server: XenStoreServer) throws -> (any XenStoreService, @Sendable () -> Void) {
    let remote = try XenStoreRemote.loopback(to: server)
    return (remote, { remote.settle() })
}
