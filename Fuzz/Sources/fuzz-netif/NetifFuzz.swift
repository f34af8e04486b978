// Fuzz target: the netif TX and RX paths (NetBackend) behind NetFrontend's
// fake netfront over a FrontendGuest (io/netif.h), no KVM. The input picks
// the features the frontend writes, rewrites grant entries, puts TX slots
// (netfront-shaped requests with fuzzed grant, offset, flags and size, or
// raw bytes, extras included) and RX requests (fuzzed id and grant) on the
// rings with a fuzzed req_prod, and has the host side deliver frames of
// fuzzed sizes and refuse the transmitted frames it picks; the link takes
// TX in batches as a TAP does, or (option bit 7) one packet at a time. Checks: the pumps finish (bounded wait); a device that did
// not fail answered every TX slot and no more RX requests than posted, with
// ids it was given; every byte the link was handed from guest memory lies
// in a page some grant entry names; the canary page nothing grants is
// intact; no grant stays held past the input (but the rings', for the
// connection), none at all once the device is destroyed.
//
// One connected device per choice of split event channels and features,
// kept for the process: the handshake, grant table and ring mappings are
// made once, and after each input the guest's pages and the backend's
// queue state are put back (GuestCheckpoint, NetBackend.rewind), so every
// input starts from the guest as it was at connect. A device the input
// failed is destroyed and made anew for the next. PVH_FUZZ_VERIFY=1 runs
// each input on a fresh device too and fails unless both ended the same.
import BlockFrontend
import EventChannels
import Foundation
import FuzzSupport
import GrantTables
import GuestMemory
import HostIO
import Locking
@_spi(Fuzzing) import NetBackend
import NetFrontend
import Synchronization
import XenABI
import XenBus
import XenRing

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzChoices(data, size, fuzzOne) }

@_cdecl("fuzz_netif_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

/// The host side: checks where each transmitted part lies and counts it,
/// never reads it; refuses the frames the input asks it to; delivers the
/// frames the input asks for. It takes batches as a TAP does
/// (`BatchTransmitNetworkLink`, 32 frames), or with a limit of 1 the
/// packet-by-packet path a link without batches (passt) takes.
private final class FuzzLink: BatchTransmitNetworkLink, Sendable {
    let description = "fuzz"
    let mtu = 1500
    let capabilities: NetworkLinkCapabilities = [.partialChecksum, .tcpv4Segmentation, .tcpv6Segmentation]
    /// The guest's RAM in host addresses, and the check a part inside it must pass.
    let guestBase: UInt
    let guestBytes: UInt
    let granted: @Sendable (GuestFrameNumber) -> Bool
    let receive = CallbackSlot<NetworkFrame>()
    let transmitted = Atomic<Int>(0)
    let transmitBatchLimit: Int
    /// Frame n of an input (counted from 0) is refused when bit n % 8 is set.
    let refusals = Atomic<UInt8>(0)
    private let frames = Atomic<Int>(0)

    init(guestBase: UInt, guestBytes: UInt, batchLimit: Int, granted: @escaping @Sendable (GuestFrameNumber) -> Bool) {
        self.guestBase = guestBase
        self.guestBytes = guestBytes
        self.granted = granted
        transmitBatchLimit = batchLimit
    }

    /// A new input: its refusals, its frames counted from 0.
    func reset(refusals: UInt8) {
        self.refusals.store(refusals, ordering: .relaxed)
        frames.store(0, ordering: .relaxed)
    }

    func transmit(_ batch: inout NetworkTransmitBatch) {
        batch.results.removeAll(keepingCapacity: true)
        for k in 0..<batch.count {
            batch.results.append(transmit(Array(batch.parts(of: k)), offload: batch.offloads[k]))
        }
    }

    func transmit(_ parts: [HostMemoryRange], offload: NetworkOffload) -> Result<Void, NetworkTransmitDrop> {
        for p in parts where p.address >= guestBase && p.address < guestBase + guestBytes {
            let start = UInt64(p.address - guestBase)
            precondition(p.count >= 0 && start + UInt64(p.count) <= UInt64(guestBytes), "fuzz-netif: a part runs past guest RAM")
            guard p.count > 0 else { continue }
            for frame in (start >> 12)...((start + UInt64(p.count) - 1) >> 12) {
                precondition(granted(GuestFrameNumber(frame)), "fuzz-netif: transmitted bytes from frame \(frame), which nothing grants")
            }
        }
        let n = frames.add(1, ordering: .relaxed).oldValue
        if refusals.load(ordering: .relaxed) & (1 << (n % 8)) != 0 {
            return .failure(n % 16 < 8 ? .busy : .hostError(5))
        }
        transmitted.add(1, ordering: .relaxed)
        return .success(())
    }

    func start(receive: @escaping @Sendable (NetworkFrame) -> Void, carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {
        self.receive.set(receive)
    }

    func stop() { receive.set(nil) }

    func inject(_ frame: NetworkFrame) { receive(frame) }
}

private let memoryBytes = 4 << 20
/// Byte i of a host frame with seed s is (i + s) mod 256: this from s on,
/// sliced rather than built a byte at a time for every input.
private let framePattern = (0..<(70_000 + 256)).map { UInt8(truncatingIfNeeded: $0) }
private let dataPages = 8

/// FuzzedGuest's check, callable from the link's thread: the guest is only
/// read, and the fuzzer thread waits in `sync` meanwhile.
private final class GrantCheck: @unchecked Sendable {
    // SAFETY (Sendable): set once before the link is used; FuzzedGuest's
    // `granted` only reads guest memory, which is thread-safe.
    var guest: FuzzedGuest?
    func callAsFunction(_ frame: GuestFrameNumber) -> Bool { guest?.granted(frame) ?? false }
}

/// A connected device and its guest, as the set-up left them.
private final class Session {
    let guest: FrontendGuest
    let backend: NetBackend
    let link: FuzzLink
    let fuzzed: FuzzedGuest
    let txBase: GuestPhysicalAddress
    let rxBase: GuestPhysicalAddress
    let txPort: EventChannelPort
    let rxPort: EventChannelPort
    let checkpoint: GuestCheckpoint
    /// Holds the connection keeps (the rings' mappings).
    let connectionHolds: Int
    /// Whether the handshake connected: a frontend without the features
    /// netback insists on (request-rx-copy) never does, and then the input
    /// changes nothing but the guest's pages.
    let connected: Bool

    init(options: UInt8) throws {
        // Threadless: the pumps run inside `sync`, on this thread, so an
        // input takes one path (and no thread is made per device).
        guest = try FrontendGuest(memoryBytes: memoryBytes, grantFrames: 1, mode: .caller)
        let check = GrantCheck()
        let base = try guest.memory.hostRange(GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(memoryBytes))).address
        link = FuzzLink(guestBase: base, guestBytes: UInt(memoryBytes), batchLimit: options & 0x80 != 0 ? 1 : 32,
                        granted: { check($0) })
        backend = try NetBackend(store: guest.backendStore,
                                 address: XenbusDeviceAddress(type: "vif", frontend: FrontendGuest.domain, index: 0),
                                 configuration: NetDeviceConfiguration(link: link, mac: "00:16:3e:00:00:01"),
                                 memory: guest.memory, grants: guest.grants, events: guest.events, runtime: guest.runtime)
        let queue = try NetfrontQueue(guest: guest, split: options & 1 != 0)
        // Each of netfront's features, or not (bits 1...6).
        let features = Netfront.features.enumerated().filter { options & (2 << $0.offset) != 0 }.map(\.element)
        try Netfront.connect([queue], device: backend.address, features: features)
        fuzzed = try FuzzedGuest(guest, pages: dataPages, readOnlyEvery: 2)
        check.guest = fuzzed
        // The pumps the channels' binding asked for run now, not in the first input.
        precondition(backend.sync(timeout: .seconds(10)), "fuzz-netif: the backend's first pumps did not finish")
        txBase = queue.tx.base
        rxBase = queue.rx.base
        txPort = queue.txPort
        rxPort = queue.rxPort
        // The TX ring, the RX ring, the data pages: contiguous from the TX ring's frame.
        let first = txBase.rawValue >> 12
        checkpoint = try GuestCheckpoint(fuzzed, memoryBytes: memoryBytes,
                                         frames: [FrontendGuest.sharedInfoFrame] + (0..<(2 + dataPages)).map { GuestFrameNumber(first + UInt64($0)) },
                                         checkingTheRest: verify)
        connectionHolds = guest.grants.holdCount
        connected = backend.isConnected
    }
}

/// The kept devices by `options` (bits 0-6 the frontend, bit 7 the link's
/// batch limit). libFuzzer calls a target from one thread, one input at a
/// time.
nonisolated(unsafe) private var sessions: [UInt8: Session] = [:]
private let verify = ProcessInfo.processInfo.environment["PVH_FUZZ_VERIFY"] == "1"

private func fuzzOne(_ r: inout FuzzReader) {
    let options = r.byte()
    let key = options
    do {
        var fresh = r
        let session = try sessions[key] ?? Session(options: options)
        let kept = try run(session, &r)
        sessions[key] = try reuse(session) ? session : nil
        if verify {
            let once = try Session(options: options)
            let other = try run(once, &fresh)
            _ = try reuse(once)
            precondition(kept == other, "fuzz-netif: the kept device ended otherwise than a fresh one: \(kept.summary), \(other.summary)")
        }
    } catch {
        preconditionFailure("fuzz-netif: \(error)")
    }
}

/// Puts the session back as it was at connect (true), or destroys its
/// failed (or busy) device (false).
private func reuse(_ s: Session) throws -> Bool {
    try s.checkpoint.keepOrDestroy("netif", rewound: s.connected ? s.backend.runtimeDevice?.isDisabled == false && s.backend.rewind() : !s.backend.isConnected, connectionHolds: s.connectionHolds) { s.backend.destroy() }
}

/// What an input did, to compare a kept device's run with a fresh one's.
private struct Outcome: Equatable {
    var faulted: Bool
    var txResponses: Int
    var rxResponses: Int
    var transmitted: Int
    var pages: [[UInt8]]
    var summary: String { "faulted \(faulted), \(txResponses) TX and \(rxResponses) RX responses, \(transmitted) transmitted" }
}

private func run(_ s: Session, _ r: inout FuzzReader) throws -> Outcome {
    let guest = s.guest
    let backend = s.backend
    let g = s.fuzzed
    let transmittedBefore = s.link.transmitted.load(ordering: .relaxed)
    // The frontend's private indices, as at connect (its shared headers are the checkpoint's).
    let tx = try NetfrontQueue.TxRing(memory: guest.memory, base: s.txBase)
    let rx = try NetfrontQueue.RxRing(memory: guest.memory, base: s.rxBase)
    try g.rewriteGrants(&r, span: dataPages + 2, extraFrames: [GuestFrameNumber(s.txBase.rawValue >> 12)])
    try guest.memory.write(r.take(2 * 4096), at: guest.address(g.first))

    // TX: slots as netfront writes them with fuzzed fields, or raw.
    let txEntries = tx.geometry.entries
    let txCount = r.below(Int(txEntries) + 1)
    for i in 0..<txCount {
        let bytes: [UInt8]
        if r.below(4) == 0 {
            bytes = r.exactly(NetifTxSlot.size)
        } else {
            let grant = r.below(5) == 0 ? GrantReference(rawValue: r.u32()) : g.refs[r.below(g.refs.count)]
            bytes = NetifTxSlot(NetifTxRequest(grant: grant, offset: r.u16() % 4200, flags: NetifTxFlags(rawValue: UInt16(r.byte() & 0xf)),
                                               id: UInt16(i), size: r.u16() % 9000)).ringBytes
        }
        try guest.memory.write(bytes, at: GuestPhysicalAddress(s.txBase.rawValue + UInt64(tx.geometry.slotOffset(RingIndex(UInt32(i))))))
    }
    let txProducer = r.below(8) == 0 ? r.u32() : UInt32(txCount)
    try guest.memory.store(txProducer, at: GuestPhysicalAddress(s.txBase.rawValue + UInt64(SharedRingGeometry.requestProducerOffset)))

    // RX: buffers posted with fuzzed ids and grants.
    let rxEntries = rx.geometry.entries
    let rxCount = r.below(Int(rxEntries) + 1)
    for _ in 0..<rxCount {
        let id = UInt16(r.byte())
        let grant = r.below(5) == 0 ? GrantReference(rawValue: r.u32()) : g.refs[r.below(g.refs.count)]
        _ = try rx.enqueue(NetifRxRequest(id: id, grant: grant))
    }
    _ = try rx.pushRequests()
    if r.below(8) == 0 {
        try guest.memory.store(r.u32(), at: GuestPhysicalAddress(s.rxBase.rawValue + UInt64(SharedRingGeometry.requestProducerOffset)))
    }
    try guest.events.send(s.rxPort)
    // Only the kick: the TX slots and req_prod are written above, and a
    // push (RING_PUSH_REQUESTS) would put req_prod back to this ring's
    // req_prod_pvt, 0, so no TX slot would ever be taken (as until
    // 4 December: NetfrontQueue.sendSlots([], kick: true) did just that).
    try guest.events.send(s.txPort)
    for _ in 0..<r.below(6) {
        let size = r.below(2) == 0 ? r.below(128) : r.below(70_000)
        let seed = r.byte()
        s.link.inject(NetworkFrame(bytes: Array(framePattern[Int(seed)..<Int(seed) + size])))
    }
    s.link.reset(refusals: r.byte())
    precondition(backend.sync(timeout: .seconds(10)), "fuzz-netif: the backend's pumps did not finish")

    let faulted = backend.runtimeDevice?.isDisabled ?? true
    let txResponses = try tx.takeResponses()
    let rxResponses = try rx.takeResponses()
    // A packet whose last slot asks for more waits for it (netback's
    // xenvif_count_requests), and extras are answered without an id of
    // their own: so at most one response per slot, none for nothing.
    if !faulted {
        precondition(txProducer <= txEntries, "fuzz-netif: TX req_prod \(txProducer) past a ring of \(txEntries) was not refused")
        precondition(txResponses.count <= Int(txProducer), "fuzz-netif: \(txResponses.count) TX responses for \(txProducer) slots")
    }
    precondition(rxResponses.count <= rxCount, "fuzz-netif: \(rxResponses.count) RX responses for \(rxCount) buffers")
    try g.checkCanary("netif")
    let transmitted = s.link.transmitted.load(ordering: .relaxed) - transmittedBefore
    guard verify else { return Outcome(faulted: faulted, txResponses: txResponses.count, rxResponses: rxResponses.count, transmitted: transmitted, pages: []) }
    let first = s.txBase.rawValue >> 12
    let pages = try (0..<(2 + dataPages)).map { try guest.page(GuestFrameNumber(first + UInt64($0))) } + [try guest.page(g.table)]
    return Outcome(faulted: faulted, txResponses: txResponses.count, rxResponses: rxResponses.count, transmitted: transmitted, pages: pages)
}
