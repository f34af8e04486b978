import BlockFrontend
import GuestMemory
import HostIO
import NetBackend
import NetFrontend
import Locking
import Synchronization
import Testing
import VMM
import XenABI
import XenBus
import XenStore

// The guest is BlockFrontend's `FrontendGuest` (domain 1 in host-addressable
// memory with a real grant table, event-channel table and XenStore, no KVM)
// and NetFrontend's `NetfrontQueue`s, which drive the backend the way
// Linux's xen-netfront does. The host side is `MockLink`. Tests wait on the
// frontend's ports or the backend's pumps (`sync`), never sleep.

typealias Guest = FrontendGuest

/// An in-memory `NetworkLink`: records what is transmitted (the bytes
/// gathered from the host ranges during the call, as a TAP's writev would),
/// and lets the test deliver frames and carrier changes as the link's
/// thread would.
///
/// It takes batches (`BatchTransmitNetworkLink`) of up to `batchLimit`
/// frames (1: the backend sends frame by frame, as to a link without
/// batches), recording each batch's size (`onBatch` runs as it arrives);
/// `refuse` makes it drop (`.busy`) the frames whose index over the whole
/// run (from 0) it names.
final class MockLink: BatchTransmitNetworkLink, Sendable {
    struct Sent: Sendable {
        var bytes: [UInt8]
        var offload: NetworkOffload
        var parts: Int
    }
    let description = "mock"
    let mtu = 1500
    let capabilities: NetworkLinkCapabilities
    let batchLimit: Int
    private let sentFrames = Lock<[Sent]>([])
    private let receive = CallbackSlot<NetworkFrame>()
    private let carrier = CallbackSlot<Bool>()
    let stopped = Atomic<Bool>(false)
    /// Sizes of the batches taken, in order.
    let batches = Lock<[Int]>([])
    /// Frames (by index over the run) to answer `.busy`, not recording them.
    let refuse = Lock<Set<Int>>([])
    private let offered = Atomic<Int>(0)
    /// Called with each batch before it is recorded.
    let onBatch = CallbackSlot<Int>()

    init(capabilities: NetworkLinkCapabilities = [.partialChecksum, .tcpv4Segmentation, .tcpv6Segmentation], batchLimit: Int = 32) {
        self.capabilities = capabilities
        self.batchLimit = batchLimit
    }

    var transmitBatchLimit: Int { batchLimit }

    func transmit(_ batch: inout NetworkTransmitBatch) {
        batches.withLock { $0.append(batch.count) }
        onBatch(batch.count)
        var scratch: [HostMemoryRange] = []
        transmitEach(&batch, scratch: &scratch)
    }

    func transmit(_ parts: [HostMemoryRange], offload: NetworkOffload) -> Result<Void, NetworkTransmitDrop> {
        let index = offered.wrappingAdd(1, ordering: .relaxed).oldValue
        if refuse.withLock({ $0.contains(index) }) { return .failure(.busy) }
        var bytes: [UInt8] = []
        for p in parts {
            // The range stays mapped during the call (NetworkLink's contract).
            let buffer = UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: p.address), count: p.count)
            bytes += Array(buffer)
        }
        sentFrames.withLock { $0.append(Sent(bytes: bytes, offload: offload, parts: parts.count)) }
        onTransmit()
        return .success(())
    }

    /// Called after each frame is recorded, on the backend's context (a
    /// test looks at what the guest has heard by then).
    let onTransmit = CallbackSlot<Void>()

    func start(receive: @escaping @Sendable (NetworkFrame) -> Void, carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {
        self.receive.set(receive)
        self.carrier.set(carrier)
    }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        receive.set(nil)
        carrier.set(nil)
    }

    var sent: [Sent] { sentFrames.withLock { $0 } }

    /// `frontendConnected`'s argument, each time it was called.
    let connections = Lock<[Bool]>([])
    func frontendConnected(scatterGather: Bool) { connections.withLock { $0.append(scatterGather) } }

    /// A frame from the host side.
    func inject(_ frame: NetworkFrame) { receive(frame) }

    func setCarrier(_ up: Bool) { carrier(up) }
}

/// An in-memory `DirectReceiveNetworkLink`, as a TAP's: frames queue in
/// the link until the backend reads them (`receive(into:)`, each written
/// into the parts it names, as readv does) or, when the backend does not
/// take the right to read, are handed to `receive` as the link's thread
/// would. `inject` plays the TAP becoming readable.
final class MockDirectLink: DirectReceiveNetworkLink, Sendable {
    let description = "mock direct"
    let mtu = 1500
    let capabilities: NetworkLinkCapabilities = [.partialChecksum, .tcpv4Segmentation, .tcpv6Segmentation]
    let maximumReceiveLength: Int
    private struct State {
        var queued: [NetworkFrame] = []
        /// The backend holds the right to read.
        var lent = false
        var receive: (@Sendable (NetworkFrame) -> Void)?
        var readable: (@Sendable () -> Bool)?
        var reads = 0
        var partsSeen: [Int] = []
    }
    private let state = Lock(State())
    /// Runs inside each `receive(into:)`, before the bytes are written (a
    /// test rewrites the guest's ring meanwhile).
    let duringRead = CallbackSlot<Void>()

    init(maximumReceiveLength: Int = 65550) { self.maximumReceiveLength = maximumReceiveLength }

    func transmit(_ parts: [HostMemoryRange], offload: NetworkOffload) -> Result<Void, NetworkTransmitDrop> { .success(()) }
    func start(receive: @escaping @Sendable (NetworkFrame) -> Void, carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {
        state.withLock { $0.receive = receive }
    }
    func start(receive: @escaping @Sendable (NetworkFrame) -> Void, readable: @escaping @Sendable () -> Bool,
               carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {
        state.withLock {
            $0.receive = receive
            $0.readable = readable
        }
    }
    func stop() { state.withLock { $0 = State() } }

    /// Frames from the host side, queued; the backend is told (or the
    /// link delivers them itself when the backend does not read).
    func inject(_ frames: NetworkFrame...) {
        let (readable, wasLent) = state.withLock { s in
            s.queued += frames
            return (s.readable, s.lent)
        }
        if !wasLent { offer(readable) }
    }

    private func offer(_ readable: (@Sendable () -> Bool)?) {
        if let readable {
            // Lent before asking: the pump may read and hand it back at once.
            state.withLock { $0.lent = true }
            if readable() { return }
            state.withLock { $0.lent = false }
        }
        let (frames, receive) = state.withLock { s in
            defer { s.queued = [] }
            return (s.queued, s.receive)
        }
        for f in frames { receive?(f) }
    }

    func receive(into parts: [HostMemoryRange]) -> NetworkDirectReceive {
        guard let frame = state.withLock({ s -> NetworkFrame? in
            s.reads += 1
            s.partsSeen.append(parts.count)
            return s.queued.isEmpty ? nil : s.queued.removeFirst()
        }) else { return .empty }
        duringRead()
        let capacity = parts.reduce(0) { $0 + $1.count }
        guard frame.bytes.count <= capacity else { return .dropped(length: frame.bytes.count) }
        var at = 0
        for p in parts where at < frame.bytes.count {
            let n = min(p.count, frame.bytes.count - at)
            // The parts stay mapped during the call (the protocol's contract).
            let buffer = UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: p.address), count: p.count)
            frame.bytes[at..<(at + n)].withUnsafeBytes { source in
                if let from = source.baseAddress { buffer.baseAddress?.copyMemory(from: from, byteCount: n) }
            }
            at += n
        }
        return .frame(length: frame.bytes.count, offload: frame.offload)
    }

    func watch(lastFrameLarge: Bool) {
        let (readable, again) = state.withLock { s in
            s.lent = false
            return (s.readable, !s.queued.isEmpty)
        }
        if again { offer(readable) }
    }

    /// Frames the link still holds.
    var queuedCount: Int { state.withLock { $0.queued.count } }
    /// Whether the backend holds the right to read.
    var isLent: Bool { state.withLock { $0.lent } }
    /// How many buffers each read was given.
    var partsSeen: [Int] { state.withLock { $0.partsSeen } }
}

/// A vif over `guest`'s store, its frontend connected with `queues` queues.
final class Vif {
    let guest: Guest
    let link: MockLink
    let backend: NetBackend
    var queues: [NetfrontQueue]
    var address: XenbusDeviceAddress { backend.address }
    var q: NetfrontQueue { queues[0] }

    init(guest: Guest, index: Int = 0, queues: Int = 1, maximumQueues: Int = 4, split: Bool = true,
         link: MockLink = MockLink(), features: [(String, String)] = Netfront.features,
         state: XenbusState = .connected, connect: Bool = true, post: Bool = true,
         rate: NetTransmitRate? = nil, hostLink: (any NetworkLink)? = nil) throws {
        self.guest = guest
        self.link = link
        backend = try NetBackend(store: guest.backendStore, address: XenbusDeviceAddress(type: "vif", frontend: Guest.domain, index: index),
                                 configuration: NetDeviceConfiguration(link: hostLink ?? link, mac: "00:16:3e:00:00:01",
                                                                       maximumQueues: maximumQueues, rate: rate),
                                 memory: guest.memory, grants: guest.grants, events: guest.events, runtime: guest.runtime)
        self.queues = try (0..<queues).map { _ in try NetfrontQueue(guest: guest, split: split) }
        if connect {
            try Netfront.connect(self.queues, device: address, features: features, state: state)
            if post { for q in self.queues { try q.postReceiveBuffers() } }
        }
    }

    func backendNode(_ key: String) -> String? { try? guest.store.read("\(address.backendPath)/\(key)") }

    func sync() throws { try #require(backend.sync(timeout: .seconds(30)), "the net backend's pumps did not finish") }

    var metrics: NetMetrics { backend.metrics[0] }
}

/// Frames for the tests: Ethernet + IPv4/IPv6 + TCP/UDP with a payload.
enum Frames {
    static let mac: [UInt8] = [0x00, 0x16, 0x3e, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]

    static func payload(_ count: Int, seed: UInt8 = 1) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ Int(seed)) }
    }

    /// IPv4 (20-byte header) + TCP (20) or UDP (8), checksum field 0.
    static func ipv4(_ payload: [UInt8], tcp: Bool = true, source: UInt8 = 1, sourcePort: UInt16 = 1234) -> [UInt8] {
        let l4 = (tcp ? 20 : 8) + payload.count
        let total = 20 + l4
        var f = mac + [0x08, 0x00]
        f += [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 0, 0x40, 0, 64, tcp ? 6 : 17, 0, 0,
              10, 0, 0, source, 10, 0, 0, 200]
        f += self.l4(payload, tcp: tcp, length: l4, sourcePort: sourcePort)
        return f
    }

    /// IPv6 (40-byte header) + TCP or UDP.
    static func ipv6(_ payload: [UInt8], tcp: Bool = false, sourcePort: UInt16 = 1234) -> [UInt8] {
        let l4 = (tcp ? 20 : 8) + payload.count
        var f = mac + [0x86, 0xdd]
        f += [0x60, 0, 0, 0, UInt8(l4 >> 8), UInt8(l4 & 0xff), tcp ? 6 : 17, 64]
        f += [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [1]
        f += [0xfd, 0] + [UInt8](repeating: 0, count: 13) + [2]
        f += self.l4(payload, tcp: tcp, length: l4, sourcePort: sourcePort)
        return f
    }

    private static func l4(_ payload: [UInt8], tcp: Bool, length: Int, sourcePort: UInt16) -> [UInt8] {
        let ports: [UInt8] = [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xff), 0x00, 0x50]
        if tcp {
            return ports + [0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0] + payload
        }
        return ports + [UInt8(length >> 8), UInt8(length & 0xff), 0, 0] + payload
    }

    /// Verifies an L4 checksum independently: the one's-complement sum of
    /// the pseudo-header and the L4 bytes, checksum included, is 0xffff.
    static func l4ChecksumIsValid(_ f: [UInt8]) -> Bool {
        var words: [UInt8]
        let l4: Int
        if f[12] == 0x08 {
            let ihl = Int(f[14] & 0x0f) * 4
            l4 = 14 + ihl
            let len = f.count - l4
            words = Array(f[26..<34]) + [0, f[23], UInt8(len >> 8), UInt8(len & 0xff)]
        } else {
            l4 = 54
            let len = f.count - l4
            words = Array(f[22..<54]) + [0, 0, UInt8(len >> 8), UInt8(len & 0xff), 0, 0, 0, f[20]]
        }
        words += f[l4...]
        if words.count % 2 == 1 { words.append(0) }
        var sum: UInt32 = 0
        for i in stride(from: 0, to: words.count, by: 2) { sum += UInt32(words[i]) << 8 | UInt32(words[i + 1]) }
        while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
        return sum == 0xffff
    }
}

/// The backends' store over the wire: `XenStoreRemote` through a socketpair
/// to the guest's server, as a guest process reaches the daemon's store;
/// the guest's writes then wait for the backends' watch handlers.
func remoteBackendStore(_ server: XenStoreServer) throws -> (any XenStoreService, @Sendable () -> Void) {
    let remote = try XenStoreRemote.loopback(to: server)
    return (remote, { remote.settle() })
}
