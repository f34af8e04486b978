// Fuzz target: the blkif request path (BlockBackend) behind a fake frontend
// (BlockFrontend's FrontendGuest: real grant table, event channels and
// XenStore over host-mapped guest memory, no KVM), in the x86_64 or the
// x86_32 ABI (io/blkif.h, io/protocols.h). The input rewrites what a
// hostile blkfront controls after the handshake: grant entries (flags,
// domid, frame), the data and indirect pages, the request slots, and
// req_prod. Checks: the backend's pump finishes (bounded wait); either the
// device failed (a corrupted ring) or every request produced got exactly one
// response carrying its id; the backend never wrote to a page no grant
// entry names; no grant stays held past the input (but the ring's, for the
// connection), none at all once the device is destroyed.
//
// One connected device per configuration (ABI, read-only, discard), kept
// for the process: the handshake, grant table and ring mapping are made
// once, and after each input the guest's pages and the backend's ring
// state are put back (GuestCheckpoint, BlockBackend.rewind), so every input
// starts from the guest as it was at connect. A device the input failed
// is destroyed and made anew for the next. PVH_FUZZ_VERIFY=1 runs each
// input on a fresh device too and fails unless both ended the same.
@_spi(Fuzzing) import BlockBackend
import BlockFrontend
import EventChannels
import Foundation
import FuzzSupport
import GrantTables
import GuestMemory
import HostIO
import XenABI
import XenBus
import XenRing

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzChoices(data, size, fuzzEither) }

@_cdecl("fuzz_blkif_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

/// One scratch disk for the whole run: what is on it does not matter. On
/// tmpfs where there is one: a flush (fdatasync) there costs nothing,
/// where on a disk it would take milliseconds of every input that asks.
private let sectors: UInt64 = 2048
private let backing: FileHandle = {
    let shm = URL(fileURLWithPath: "/dev/shm")
    let directory = FileManager.default.isWritableFile(atPath: shm.path) ? shm : FileManager.default.temporaryDirectory
    let url = directory.appendingPathComponent("pvh-fuzz-blkif-\(getpid()).img")
    guard FileManager.default.createFile(atPath: url.path, contents: nil),
          let h = try? FileHandle(forUpdating: url), (try? h.truncate(atOffset: sectors * 512)) != nil
    else { preconditionFailure("fuzz-blkif: cannot make the scratch disk \(url.path)") }
    try? FileManager.default.removeItem(at: url)
    return h
}()

/// Pages the frontend grants for data (and indirect segment lists).
private let dataPages = 8
private let memoryBytes = 4 << 20

/// A connected device and its guest, as the set-up left them.
private final class Session {
    let guest: FrontendGuest
    let backend: BlockBackend
    let fuzzed: FuzzedGuest
    let ringBase: GuestPhysicalAddress
    /// The frontend's port (its `event-channel`).
    let port: EventChannelPort
    let checkpoint: GuestCheckpoint
    /// Holds the connection keeps (the ring's mapping).
    let connectionHolds: Int

    init<L: BlkifABILayout>(_: L.Type, flags: UInt8) throws {
        // Threadless: the pumps run inside `sync`, on this thread, so an
        // input takes one path (and no thread is made per device).
        guest = try FrontendGuest(memoryBytes: memoryBytes, grantFrames: 1, mode: .caller)
        let fd = backing.fileDescriptor
        let configuration = BlockDeviceConfiguration(
            sectors: sectors, readOnly: flags & 1 != 0, discard: flags & 2 != 0 ? BlockDiscardGeometry() : nil,
            makeEngine: { _, done in SynchronousEngine(fileDescriptor: fd, onComplete: done) })
        backend = try BlockBackend(store: guest.backendStore,
                                   address: XenbusDeviceAddress(type: "vbd", frontend: FrontendGuest.domain, index: 51712),
                                   configuration: configuration, memory: guest.memory, grants: guest.grants,
                                   events: guest.events, runtime: guest.runtime)
        let front = try BlkfrontRing<L>(guest: guest, order: 0)
        try Blkfront.connect([front], device: backend.address)
        precondition(backend.isConnected, "fuzz-blkif: the handshake did not connect")
        fuzzed = try FuzzedGuest(guest, pages: dataPages)
        // The pump the channel's binding asked for runs now, not in the first input.
        precondition(backend.sync(timeout: .seconds(10)), "fuzz-blkif: the backend's first pump did not finish")
        ringBase = front.ring.base
        port = front.port
        let ringFrame = GuestFrameNumber(ringBase.rawValue >> 12)
        checkpoint = try GuestCheckpoint(fuzzed, memoryBytes: memoryBytes,
                                         frames: [FrontendGuest.sharedInfoFrame] + (0...dataPages).map { GuestFrameNumber(ringFrame.rawValue + UInt64($0)) },
                                         checkingTheRest: verify)
        connectionHolds = guest.grants.holdCount
    }
}

/// The kept devices by configuration (`key`). libFuzzer calls a target from
/// one thread, one input at a time.
nonisolated(unsafe) private var sessions: [Int: Session] = [:]
private let verify = ProcessInfo.processInfo.environment["PVH_FUZZ_VERIFY"] == "1"

/// Byte 0's bit 0 picks the ABI.
private func fuzzEither(_ r: inout FuzzReader) {
    if r.bool() { fuzzOne(BlkifX86_32.self, 1, &r) } else { fuzzOne(BlkifX86_64.self, 0, &r) }
}

private func fuzzOne<L: BlkifABILayout>(_: L.Type, _ abi: Int, _ r: inout FuzzReader) {
    let flags = r.byte()
    let key = abi << 2 | Int(flags & 3)
    do {
        var fresh = r
        let session = try sessions[key] ?? Session(L.self, flags: flags)
        if verify { try clearDisk() }
        let kept = try run(L.self, session, &r)
        sessions[key] = try reuse(session) ? session : nil
        if verify {
            try clearDisk()
            let once = try Session(L.self, flags: flags)
            let other = try run(L.self, once, &fresh)
            _ = try reuse(once)
            precondition(kept == other, "fuzz-blkif: the kept device ended otherwise than a fresh one:\n\(kept)\n\(other)")
        }
    } catch {
        preconditionFailure("fuzz-blkif: \(error)")
    }
}

/// Puts the session back as it was at connect (true), or destroys its
/// failed (or busy) device (false).
private func reuse(_ s: Session) throws -> Bool {
    try s.checkpoint.keepOrDestroy("blkif", rewound: s.backend.runtimeDevice?.isDisabled == false && s.backend.rewind(), connectionHolds: s.connectionHolds) { s.backend.destroy() }
}

/// The scratch disk zeroed: PVH_FUZZ_VERIFY's two runs of an input then read the same data.
private func clearDisk() throws {
    try backing.truncate(atOffset: 0)
    try backing.truncate(atOffset: sectors * 512)
}

/// What an input did, to compare a kept device's run with a fresh one's.
private struct Outcome: Equatable {
    var faulted: Bool
    var responses: [BlkifWireResponse]
    var pages: [[UInt8]]
}

private func run<L: BlkifABILayout>(_: L.Type, _ s: Session, _ r: inout FuzzReader) throws -> Outcome {
    let guest = s.guest
    let backend = s.backend
    let g = s.fuzzed
    let refs = g.refs
    // The frontend's private indices, as at connect (its shared header is the checkpoint's).
    let ring = try BlkfrontRing<L>.Ring(memory: guest.memory, base: s.ringBase)
    // Grant entries the guest rewrites, the ring's own (8) among them.
    try g.rewriteGrants(&r, span: dataPages + 2, extraFrames: [GuestFrameNumber(s.ringBase.rawValue >> 12)])

    // Requests: well-formed ones from blkfront's builders with fuzzed
    // fields, or raw slot bytes.
    var ids: [UInt64] = []
    let entries = ring.geometry.entries
    let count = r.below(Int(entries) + 1)
    for i in 0..<count {
        let id = UInt64(i) | UInt64(r.byte()) << 56
        let bytes: [UInt8]
        switch r.below(6) {
        case 0: bytes = r.exactly(L.abi.layout.request.size)
        case 1: bytes = BlkifRequestEntry<L>(Blkfront.flush(id: id, barrier: r.bool())).ringBytes
        case 2: bytes = BlkifRequestEntry<L>(Blkfront.discard(id: id, sector: UInt64(r.u16()), count: UInt64(r.u16()), secure: r.bool())).ringBytes
        case 3:
            let pages = (0..<r.below(3)).map { _ in refs[r.below(refs.count)] }
            bytes = BlkifRequestEntry<L>(Blkfront.indirect(r.bool() ? .write : .read, id: id, sector: UInt64(r.u16()),
                                                           segments: r.below(600), pages: pages)).ringBytes
        default:
            let segments = (0..<r.below(13)).map { _ in
                BlkifSegment(grant: r.below(4) == 0 ? GrantReference(rawValue: r.u32()) : refs[r.below(refs.count)],
                             firstSector: r.byte() % 9, lastSector: r.byte() % 9)
            }
            bytes = BlkifRequestEntry<L>(Blkfront.rw(r.bool() ? .write : .read, id: id, sector: UInt64(r.u16()) % (sectors + 16),
                                                     segments)).ringBytes
        }
        ids.append(BlkifWireRequest(ringBytes: bytes, layout: L.abi.layout).id)
        let slot = s.ringBase.rawValue + UInt64(ring.geometry.slotOffset(RingIndex(UInt32(i))))
        try guest.memory.write(bytes, at: GuestPhysicalAddress(slot))
    }
    // The data pages' contents: the indirect pages' segment lists.
    try guest.memory.write(r.take(dataPages * 4096), at: guest.address(g.first))
    let producer = r.below(8) == 0 ? r.u32() : UInt32(count)
    try guest.memory.store(producer, at: GuestPhysicalAddress(s.ringBase.rawValue + UInt64(SharedRingGeometry.requestProducerOffset)))
    try guest.events.send(s.port)
    precondition(backend.sync(timeout: .seconds(10)), "fuzz-blkif: the backend's pump did not finish")

    let faulted = backend.runtimeDevice?.isDisabled ?? true
    let responses = try ring.takeResponses().map(\.response)
    if !faulted {
        // Slots past `count` hold zeros, a READ of no segments: answered too.
        precondition(producer <= entries, "fuzz-blkif: req_prod \(producer) past a ring of \(entries) was not refused")
        precondition(responses.count == Int(producer), "fuzz-blkif: \(producer) requests, \(responses.count) responses")
        if producer == UInt32(count) {
            precondition(responses.map(\.id).sorted() == ids.sorted(), "fuzz-blkif: requests \(ids) answered as \(responses.map(\.id))")
        }
    } else {
        precondition(Set(responses.map(\.id)).isSubset(of: ids), "fuzz-blkif: a response to no request")
    }
    try g.checkCanary("blkif")
    guard verify else { return Outcome(faulted: faulted, responses: [], pages: []) }
    let ringFrame = GuestFrameNumber(s.ringBase.rawValue >> 12)
    let pages = try (0...dataPages).map { try guest.page(GuestFrameNumber(ringFrame.rawValue + UInt64($0))) } + [try guest.page(g.table)]
    return Outcome(faulted: faulted, responses: responses, pages: pages)
}
