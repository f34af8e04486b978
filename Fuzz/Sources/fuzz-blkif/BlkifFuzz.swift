// Fuzz target: the blkif request path (BlockBackend) behind a fake frontend
// (BlockFrontend's FrontendGuest: real grant table, event channels and
// XenStore over host-mapped guest memory, no KVM), in the x86_64 or the
// x86_32 ABI (io/blkif.h, io/protocols.h). The input rewrites what a
// hostile blkfront controls after the handshake: grant entries (flags,
// domid, frame), the data and indirect pages, the request slots, and
// req_prod. Checks: the backend's pump finishes (bounded wait); either the
// device failed (a corrupted ring) or every request produced got exactly one
// response carrying its id; the backend never wrote to a page no grant
// entry names; once the device is destroyed no grant stays held.
import BlockBackend
import BlockFrontend
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

/// Byte 0's bit 0 picks the ABI.
private func fuzzEither(_ r: inout FuzzReader) {
    if r.bool() { fuzzOne(BlkifX86_32.self, &r) } else { fuzzOne(BlkifX86_64.self, &r) }
}

private func fuzzOne<L: BlkifABILayout>(_: L.Type, _ r: inout FuzzReader) {
    let flags = r.byte()
    do {
        // Threadless: the pumps run inside `sync` below, on this thread, so
        // an input takes one path (and no thread is made per input).
        let guest = try FrontendGuest(memoryBytes: 4 << 20, grantFrames: 1, mode: .caller)
        let fd = backing.fileDescriptor
        let configuration = BlockDeviceConfiguration(
            sectors: sectors, readOnly: flags & 1 != 0, discard: flags & 2 != 0 ? BlockDiscardGeometry() : nil,
            makeEngine: { _, done in SynchronousEngine(fileDescriptor: fd, onComplete: done) })
        let backend = try BlockBackend(store: guest.backendStore,
                                       address: XenbusDeviceAddress(type: "vbd", frontend: FrontendGuest.domain, index: 51712),
                                       configuration: configuration, memory: guest.memory, grants: guest.grants,
                                       events: guest.events, runtime: guest.runtime)
        let front = try BlkfrontRing<L>(guest: guest, order: 0)
        try Blkfront.connect([front], device: backend.address)
        precondition(backend.isConnected, "fuzz-blkif: the handshake did not connect")
        let g = try FuzzedGuest(guest, pages: dataPages)
        let refs = g.refs
        // Grant entries the guest rewrites, the ring's own (8) among them.
        try g.rewriteGrants(&r, span: dataPages + 2, extraFrames: [GuestFrameNumber(front.ring.base.rawValue >> 12)])

        // Requests: well-formed ones from blkfront's builders with fuzzed
        // fields, or raw slot bytes.
        var ids: [UInt64] = []
        let entries = front.ring.geometry.entries
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
            let slot = front.ring.base.rawValue + UInt64(front.ring.geometry.slotOffset(RingIndex(UInt32(i))))
            try guest.memory.write(bytes, at: GuestPhysicalAddress(slot))
        }
        // The data pages' contents: the indirect pages' segment lists.
        try guest.memory.write(r.take(dataPages * 4096), at: guest.address(g.first))
        let producer = r.below(8) == 0 ? r.u32() : UInt32(count)
        try guest.memory.store(producer, at: GuestPhysicalAddress(front.ring.base.rawValue + UInt64(SharedRingGeometry.requestProducerOffset)))
        try front.kick()
        precondition(backend.sync(timeout: .seconds(10)), "fuzz-blkif: the backend's pump did not finish")

        let faulted = backend.runtimeDevice?.isDisabled ?? true
        let responses = try front.responses()
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
        backend.destroy()
        precondition(guest.grants.holdCount == 0, "fuzz-blkif: \(guest.grants.holdCount) grant holds left after destroy")
    } catch {
        preconditionFailure("fuzz-blkif: \(error)")
    }
}
