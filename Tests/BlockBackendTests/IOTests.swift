import BlockBackend
import BlockFrontend
import DeviceRuntime
import GrantTables
import GuestMemory
import HostIO
import Locking
import Synchronization
import Testing
import TestSupport
import XenABI
import XenBus
import XenRing

/// Block I/O end to end: a fake blkfront's requests through the ring, the
/// backend's grants and engine, a scratch file.
@Suite("block backend I/O")
struct IOTests {

    /// Writes `pages` patterned pages at `sector` with one request of
    /// sub-page segments, reads them back into other pages, and checks the
    /// guest's pages and the file.
    func roundTrip<L: BlkifABILayout>(_: L.Type) throws {
        let guest = try Guest()
        let disk = try Disk<L>(guest: guest)
        #expect(disk.backend.xenbus.backendState == .connected)
        // Eleven segments: whole pages, and sectors 2…5 of one page.
        var segments: [BlkifSegment] = []
        var expected: [UInt8] = []
        for i in 0..<11 {
            let frame = guest.allocatePages()
            let bytes = Pattern.bytes(UInt64(i) + 1)
            try guest.fill(frame, bytes)
            let ref = try guest.grant(frame, readOnly: true)
            if i == 4 {
                segments.append(BlkifSegment(grant: ref, firstSector: 2, lastSector: 5))
                expected += bytes[1024..<3072]
            } else {
                segments.append(Blkfront.page(ref))
                expected += bytes
            }
        }
        let write = try disk.roundTrip([Blkfront.rw(.write, id: 0xdead_beef_0000_0001, sector: 16, segments)])
        #expect(write == [BlkifWireResponse(id: 0xdead_beef_0000_0001, operation: 1, status: .okay)])
        #expect(Pattern.checksum(try disk.file.read(at: 16 * 512, count: expected.count)) == Pattern.checksum(expected))

        // Read it back into fresh pages (granted writable), as 11 whole pages
        // where sector counts allow: 10 pages and 4 sectors.
        var readSegments: [BlkifSegment] = []
        var readFrames: [GuestFrameNumber] = []
        for i in 0..<11 {
            let frame = guest.allocatePages()
            readFrames.append(frame)
            let ref = try guest.grant(frame)
            readSegments.append(i == 10 ? BlkifSegment(grant: ref, firstSector: 4, lastSector: 7) : Blkfront.page(ref))
        }
        let read = try disk.roundTrip([Blkfront.rw(.read, id: 2, sector: 16, readSegments)])
        #expect(read == [BlkifWireResponse(id: 2, operation: 0, status: .okay)])
        var got: [UInt8] = []
        for (i, f) in readFrames.enumerated() {
            let page = try guest.page(f)
            if i == 10 {
                got += page[2048..<4096]
                #expect(page[0..<2048].allSatisfy { $0 == 0 }, "bytes outside the segment stay untouched")
            } else {
                got += page
            }
        }
        #expect(Pattern.checksum(got) == Pattern.checksum(expected))
        #expect(got == expected)
        let m = disk.backend.metrics
        #expect(m.writeRequests.load(ordering: .relaxed) == 1 && m.readRequests.load(ordering: .relaxed) == 1)
        #expect(m.bytesWritten.load(ordering: .relaxed) == UInt64(expected.count))
        #expect(m.bytesRead.load(ordering: .relaxed) == UInt64(expected.count))
        #expect(m.requestsInFlight.load(ordering: .relaxed) == 0)
        #expect(guest.grants.holdCount == disk.front.refs.count, "only the ring pages stay mapped")
        #expect(guest.events.isPending(disk.front.port), "the guest was notified")
    }

    /// A frontend that sleeps until its event (blkfront's interrupt) must
    /// hear of a response when it is published, not when the pump ends:
    /// with one request per round, the pump publishes the first read's
    /// response in the round that submits the second, and the event must
    /// already be pending when that submission happens.
    @Test("a response's event is sent when it is published, before the pump's next submission")
    func eventBeforeNextSubmission() throws {
        let guest = try Guest()
        let port = Lock<EventChannelPort?>(nil)
        let pendingAtSubmit = Lock<[Bool]>([])
        let events = guest.events
        let disk = try Disk<BlkifX86_64>(guest: guest, engine: { file in
            let fd = file.fd
            return { _, done in
                ProbedEngine(SynchronousEngine(fileDescriptor: fd, onComplete: done)) {
                    let pending = port.withLock { $0 }.map { events.isPending($0) } ?? false
                    pendingAtSubmit.withLock { $0.append(pending) }
                }
            }
        }, requestsPerRound: 1)
        guest.notifications.clearPending(disk.front.port)
        #expect(!guest.events.isPending(disk.front.port))
        port.withLock { $0 = disk.front.port }
        let requests = try (1...2).map { id in
            Blkfront.rw(.read, id: UInt64(id), sector: UInt64(id) * 8, [Blkfront.page(try guest.grant(guest.allocatePages()))])
        }
        let responses = try disk.roundTrip(requests)
        #expect(responses.map(\.id) == [1, 2])
        #expect(responses.allSatisfy { $0.status == .okay })
        #expect(pendingAtSubmit.withLock { $0 } == [false, true])
    }

    @Test("x86_64 frontend: write and read back 11 segments, checksummed")
    func roundTrip64() throws { try roundTrip(BlkifX86_64.self) }

    @Test("x86_32 frontend: the same through the 32-bit layout")
    func roundTrip32() throws { try roundTrip(BlkifX86_32.self) }
}

extension IOTests {
    /// One whole-page write of pattern `seed` at `sector`, from a fresh page.
    func pageWrite(_ guest: Guest, id: UInt64, sector: UInt64, seed: UInt64) throws -> BlkifWireRequest {
        let frame = guest.allocatePages()
        try guest.fill(frame, Pattern.bytes(seed))
        return Blkfront.rw(.write, id: id, sector: sector, [Blkfront.page(try guest.grant(frame, readOnly: true))])
    }

    /// One whole-page read at `sector` into a fresh page.
    func pageRead(_ guest: Guest, id: UInt64, sector: UInt64) throws -> (BlkifWireRequest, GuestFrameNumber) {
        let frame = guest.allocatePages()
        return (Blkfront.rw(.read, id: id, sector: sector, [Blkfront.page(try guest.grant(frame))]), frame)
    }

    @Test("ring wrap-around: 200 requests through a 32-slot ring in rounds of 24, every one answered once")
    func wrapAround() throws {
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, sectors: 4096)
        var answered: [UInt64: BlkifStatus] = [:]
        var id: UInt64 = 0
        for round in 0..<9 {
            var batch: [BlkifWireRequest] = []
            for k in 0..<24 where id < 200 {
                batch.append(try pageWrite(guest, id: id, sector: UInt64((round * 24 + k) % 512) * 8, seed: id))
                id += 1
            }
            for r in try disk.roundTrip(batch) {
                #expect(answered[r.id] == nil, "answered twice: \(r.id)")
                answered[r.id] = r.status
            }
        }
        #expect(answered.count == 200 && answered.values.allSatisfy { $0 == .okay })
        #expect(try disk.file.read(at: 199 * 8 * 512, count: 4096) == Pattern.bytes(199))
        #expect(disk.front.ring.requestProducerPrivate.rawValue == 200)
    }

    @Test("a producer index beyond the ring: this device fails (error node, Closing, ring released, counted; Closed when the frontend closes), another device goes on")
    func overflowingProducer() throws {
        let guest = try Guest()
        let bad = try Disk<BlkifX86_64>(guest: guest, index: 51712)
        let good = try Disk<BlkifX86_64>(guest: guest, index: 51728)
        let device = try #require(bad.backend.runtimeDevice)
        try bad.front.ring.setRaw(.requestProducer, RingIndex(1000))
        try bad.front.kick()
        // The fault path (xenbus fatal, disconnect) runs in the pump on the
        // device's context: it is done when that pump is.
        #expect(device.sync(timeout: .seconds(30)))
        #expect(device.fault?.kind == .hostileGuest)
        #expect(bad.backend.xenbus.backendState == .closing)
        #expect(!bad.backend.isConnected)
        let error = try guest.store.read(bad.address.errorPath)
        #expect(error.hasPrefix("5 ") && error.contains("indexOverrun"), "\(error)")
        #expect(bad.backend.metrics.requestsInFlight.load(ordering: .relaxed) == 0)
        #expect(bad.backend.metrics.faults.load(ordering: .relaxed) == 1)
        #expect(bad.backend.metrics.hostileGuestFaults.load(ordering: .relaxed) == 1)
        #expect(good.backend.metrics.faults.load(ordering: .relaxed) == 0)
        // More notifications on the dead ring change nothing.
        try bad.front.kick()
        #expect(bad.backend.metrics.faults.load(ordering: .relaxed) == 1)
        // The frontend closes: Closed; it may start over.
        try guest.storeWire.write("\(bad.address.frontendPath)/state", "6")
        #expect(bad.backend.xenbus.backendState == .closed)
        try guest.storeWire.write("\(bad.address.frontendPath)/state", "1")
        #expect(bad.backend.xenbus.backendState == .initWait)

        let w = try pageWrite(guest, id: 9, sector: 0, seed: 9)
        #expect(try good.roundTrip([w]) == [BlkifWireResponse(id: 9, operation: 1, status: .okay)])
        #expect(try good.file.read(at: 0, count: 4096) == Pattern.bytes(9))
        #expect(good.backend.xenbus.backendState == .connected)
        // The failed device's grants and port are released; the good one holds its ring page only.
        #expect(guest.grants.holdCount == 1)
    }

    @Test("indirect: 64 segments from one indirect page, written and read back")
    func indirect() throws {
        let guest = try Guest()
        let disk = try Disk<BlkifX86_32>(guest: guest, sectors: 8192)
        func indirectPage(_ segments: [BlkifSegment]) throws -> GrantReference {
            let frame = guest.allocatePages()
            var bytes = [UInt8](repeating: 0, count: 4096)
            for (i, s) in segments.enumerated() {
                let e = BlkifWireRequest(operation: 0, id: 0, body: .readWrite(nrSegments: 1, handle: 0, sectorNumber: 0, segments: [s]))
                    .ringBytes(layout: .x86_64)
                let at = BlkifLayout.x86_64.request.segments
                bytes.replaceSubrange(i * 8..<(i * 8 + 8), with: e[at..<(at + 8)])
            }
            try guest.fill(frame, bytes)
            return try guest.grant(frame, readOnly: true)
        }
        var expected: [UInt8] = []
        var writeSegments: [BlkifSegment] = []
        for i in 0..<64 {
            let frame = guest.allocatePages()
            let bytes = Pattern.bytes(1000 + UInt64(i))
            try guest.fill(frame, bytes)
            writeSegments.append(Blkfront.page(try guest.grant(frame, readOnly: true)))
            expected += bytes
        }
        let w = Blkfront.indirect(.write, id: 41, sector: 64, segments: 64, pages: [try indirectPage(writeSegments)])
        #expect(try disk.roundTrip([w]) == [BlkifWireResponse(id: 41, operation: 1, status: .okay)])
        #expect(Pattern.checksum(try disk.file.read(at: 64 * 512, count: 64 * 4096)) == Pattern.checksum(expected))

        var readFrames: [GuestFrameNumber] = []
        var readSegments: [BlkifSegment] = []
        for _ in 0..<64 {
            let frame = guest.allocatePages()
            readFrames.append(frame)
            readSegments.append(Blkfront.page(try guest.grant(frame)))
        }
        let r = Blkfront.indirect(.read, id: 42, sector: 64, segments: 64, pages: [try indirectPage(readSegments)])
        #expect(try disk.roundTrip([r]) == [BlkifWireResponse(id: 42, operation: 0, status: .okay)])
        let got = try readFrames.flatMap { try guest.page($0) }
        #expect(Pattern.checksum(got) == Pattern.checksum(expected))
        #expect(disk.backend.metrics.indirectRequests.load(ordering: .relaxed) == 2)
        #expect(guest.grants.holdCount == 1, "segment and indirect pages released")
    }

    @Test("an invalid grant reference: BLKIF_RSP_ERROR for that request, the device keeps working")
    func invalidGrant() throws {
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest)
        let good = try guest.grant(guest.allocatePages())
        let beyond = GrantReference(rawValue: 100_000)
        let notGranted = GrantReference(rawValue: 2000)  // inside the table, never written
        let responses = try disk.roundTrip([
            Blkfront.rw(.read, id: 1, sector: 0, [Blkfront.page(good), Blkfront.page(beyond)]),
            Blkfront.rw(.read, id: 2, sector: 0, [Blkfront.page(notGranted)]),
            Blkfront.indirect(.read, id: 3, sector: 0, segments: 4, pages: [beyond]),
        ])
        #expect(responses == [BlkifWireResponse(id: 1, operation: 0, status: .error),
                              BlkifWireResponse(id: 2, operation: 0, status: .error),
                              BlkifWireResponse(id: 3, operation: 0, status: .error)])
        #expect(guest.grants.pins(good) == (0, 0), "the good page mapped before the bad one was released")
        let (r, _) = try pageRead(guest, id: 4, sector: 0)
        #expect(try disk.roundTrip([r]) == [BlkifWireResponse(id: 4, operation: 0, status: .okay)])
        #expect(disk.backend.metrics.errorResponses.load(ordering: .relaxed) == 3)
    }

    @Test("a write to a read-only page grant, out-of-range sectors, an unknown operation: one error response each")
    func badRequests() throws {
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, sectors: 64)
        let roPage = try guest.grant(guest.allocatePages(), readOnly: true)
        let responses = try disk.roundTrip([
            Blkfront.rw(.read, id: 1, sector: 0, [Blkfront.page(roPage)]),  // the backend must write it: refused
            Blkfront.rw(.write, id: 2, sector: 60, [Blkfront.page(roPage)]),  // 60 + 8 > 64
            Blkfront.rw(.read, id: 3, sector: .max, [Blkfront.page(roPage)]),
            BlkifWireRequest(operation: 9, id: 4, body: .other),
            Blkfront.rw(.write, id: 5, sector: 56, [Blkfront.page(roPage)]),  // the last 8 sectors: fine
        ])
        #expect(responses.map(\.id) == [1, 2, 3, 4, 5])
        #expect(responses.map(\.status) == [.error, .error, .error, .notSupported, .okay])
        #expect(responses[3].operation == 9)
    }

    @Test("a read-only disk: reads work, writes, flushes and discards are refused; no flush/barrier/discard offered")
    func readOnlyDisk() throws {
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, readOnly: true, discard: true)
        #expect(disk.backendNode("info") == "4")
        #expect(disk.backendNode("feature-flush-cache") == "0" && disk.backendNode("feature-discard") == nil)
        let (r, _) = try pageRead(guest, id: 1, sector: 0)
        let w = try pageWrite(guest, id: 2, sector: 0, seed: 2)
        // Refused requests are answered at once, the read when its I/O is done.
        let responses = try disk.roundTrip([r, w, Blkfront.flush(id: 3), Blkfront.discard(id: 4, sector: 0, count: 8)])
            .sorted { $0.id < $1.id }
        #expect(responses.map(\.status) == [.okay, .error, .error, .error])
        #expect(try disk.file.read(at: 0, count: 4096).allSatisfy { $0 == 0 })
    }

    @Test("a request changed in the ring after it was produced: the backend acts on its copy")
    func changedAfterProduced() throws {
        let guest = try Guest()
        let held = HeldEngines()
        let disk = try Disk<BlkifX86_64>(guest: guest, engine: held.factory)
        let w = try pageWrite(guest, id: 7, sector: 8, seed: 7)
        try disk.front.submit([w])
        try disk.sync()
        let engine = try #require(held.first)
        #expect(engine.pending == ["write"])
        // The guest rewrites the slot: another id, another sector, another page.
        let other = try pageWrite(guest, id: 99, sector: 800, seed: 99)
        try disk.front.ring.overwriteRequest(at: RingIndex(0), with: BlkifRequestEntry(other))
        engine.release()
        try disk.sync()
        #expect(try disk.front.responses() == [BlkifWireResponse(id: 7, operation: 1, status: .okay)])
        #expect(try disk.file.read(at: 8 * 512, count: 4096) == Pattern.bytes(7))
        #expect(try disk.file.read(at: 800 * 512, count: 4096).allSatisfy { $0 == 0 })
    }

    @Test("flush: issued only after the earlier write completed, answered only after the flush")
    func flushOrdering() throws {
        let guest = try Guest()
        let held = HeldEngines()
        let disk = try Disk<BlkifX86_64>(guest: guest, engine: held.factory)
        let w = try pageWrite(guest, id: 1, sector: 0, seed: 1)
        let (r, _) = try pageRead(guest, id: 3, sector: 100)
        try disk.front.submit([w, Blkfront.flush(id: 2), r])
        try disk.sync()
        let engine = try #require(held.first)
        // The write is in flight; the flush waits for it, and the read behind the flush waits too.
        #expect(engine.pending == ["write"])
        #expect(try disk.front.responses().isEmpty)

        engine.release()
        try disk.sync()
        #expect(try disk.front.responses() == [BlkifWireResponse(id: 1, operation: 1, status: .okay)])
        #expect(engine.pending == ["flush", "read"], "the flush goes once the write is done; a flush does not hold later requests")
        engine.release(1)
        try disk.sync()
        #expect(try disk.front.responses() == [BlkifWireResponse(id: 2, operation: 3, status: .okay)])
        engine.release()
        try disk.sync()
        #expect(try disk.front.responses() == [BlkifWireResponse(id: 3, operation: 0, status: .okay)])
        #expect(engine.performed.withLock { $0 } == ["write", "flush", "read"])
        #expect(disk.backend.metrics.flushRequests.load(ordering: .relaxed) == 1)
    }

    @Test("barrier with data: drains earlier writes, flush–write–flush, and nothing after it starts before it is answered")
    func barrier() throws {
        let guest = try Guest()
        let held = HeldEngines()
        let disk = try Disk<BlkifX86_64>(guest: guest, engine: held.factory)
        let w1 = try pageWrite(guest, id: 1, sector: 0, seed: 1)
        let frame = guest.allocatePages()
        try guest.fill(frame, Pattern.bytes(2))
        let b = Blkfront.rw(.writeBarrier, id: 2, sector: 8, [Blkfront.page(try guest.grant(frame, readOnly: true))])
        let w3 = try pageWrite(guest, id: 3, sector: 16, seed: 3)
        try disk.front.submit([w1, b, w3])
        try disk.sync()
        let engine = try #require(held.first)
        #expect(engine.pending == ["write"])
        for expected in [["flush"], ["write"], ["flush"]] {
            engine.release()
            try disk.sync()
            #expect(engine.pending == expected)
        }
        #expect(try disk.front.responses().map(\.id) == [1])
        engine.release()
        try disk.sync()
        #expect(try disk.front.responses() == [BlkifWireResponse(id: 2, operation: 2, status: .okay)])
        #expect(engine.pending == ["write"], "the write after the barrier starts only now")
        engine.release()
        try disk.sync()
        #expect(try disk.front.responses().map(\.id) == [3])
        #expect(engine.performed.withLock { $0 } == ["write", "flush", "write", "flush", "write"])
        #expect(try disk.file.read(at: 8 * 512, count: 4096) == Pattern.bytes(2))
    }

    @Test("responses go out of order as completions arrive")
    func outOfOrder() throws {
        let guest = try Guest()
        let held = HeldEngines()
        let disk = try Disk<BlkifX86_64>(guest: guest, engine: held.factory)
        let (r1, _) = try pageRead(guest, id: 1, sector: 0)
        let (r2, _) = try pageRead(guest, id: 2, sector: 8)
        try disk.front.submit([r1, r2])
        try disk.sync()
        let engine = try #require(held.first)
        #expect(engine.pending == ["read", "read"])
        #expect(disk.backend.metrics.requestsInFlight.load(ordering: .relaxed) == 2)
        // Complete the second first: a held engine releases in order, so swap by hand.
        engine.release(1)
        try disk.sync()
        #expect(try disk.front.responses().map(\.id) == [1])
        engine.release()
        try disk.sync()
        #expect(try disk.front.responses().map(\.id) == [2])
    }

    @Test("host errors are BLKIF_RSP_ERROR; an unsupported flush is BLKIF_RSP_EOPNOTSUPP; nothing is dropped")
    func hostErrors() throws {
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, engine: { _ in { _, done in FailingEngine(.system(errno: 5), onComplete: done) } })
        let (r, _) = try pageRead(guest, id: 1, sector: 0)
        #expect(try disk.roundTrip([r, Blkfront.flush(id: 2)]).map(\.status) == [.error, .error])
        #expect(disk.backend.metrics.hostErrors.load(ordering: .relaxed) == 2)
        let guest2 = try Guest()
        let unsupported = try Disk<BlkifX86_64>(guest: guest2, discard: true,
                                                engine: { _ in { _, done in FailingEngine(.unsupported, onComplete: done) } })
        let (r2, _) = try pageRead(guest2, id: 1, sector: 0)
        let responses = try unsupported.roundTrip([r2, Blkfront.flush(id: 2), Blkfront.discard(id: 3, sector: 0, count: 8)])
        #expect(responses.map(\.status) == [.error, .notSupported, .notSupported])
        #expect(guest2.grants.holdCount == 1)
    }

    @Test("discard punches a hole (or is EOPNOTSUPP where the file system cannot); a disk without discard says EOPNOTSUPP")
    func discard() throws {
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, discard: true)
        #expect(disk.backendNode("feature-discard") == "1" && disk.backendNode("discard-granularity") == "4096")
        #expect(disk.backendNode("discard-secure") == nil)
        try disk.file.write([UInt8](repeating: 0xab, count: 0x10000), at: 0)
        let responses = try disk.roundTrip([Blkfront.discard(id: 1, sector: 32, count: 16), Blkfront.discard(id: 2, sector: 0, count: 0)])
            .sorted { $0.id < $1.id }
        #expect(responses.map(\.id) == [1, 2])
        #expect(responses[1].status == .okay)
        if responses[0].status == .okay {
            let bytes = try disk.file.read(at: 0, count: 0x10000)
            #expect(bytes[0x4000..<0x6000].allSatisfy { $0 == 0 })
            #expect(bytes[0x3fff] == 0xab && bytes[0x6000] == 0xab)
        } else {
            #expect(responses[0].status == .notSupported)
        }
        let guest2 = try Guest()
        let plain = try Disk<BlkifX86_64>(guest: guest2)
        #expect(plain.backendNode("feature-discard") == nil)
        #expect(try plain.roundTrip([Blkfront.discard(id: 5, sector: 0, count: 8)]) == [BlkifWireResponse(id: 5, operation: 5, status: .notSupported)])
    }

    @Test("two queues: each its own ring, port and thread, both serving I/O")
    func multiQueue() throws {
        let guest = try Guest()
        let disk = try Disk<BlkifX86_64>(guest: guest, queues: 2)
        #expect(disk.backend.queueCount == 2)
        #expect(disk.backend.runtimeDevice?.threadCount == 2)
        #expect(Set(disk.backend.backendPorts ?? []).count == 2)
        for q in 0..<2 {
            let w = try pageWrite(guest, id: UInt64(10 + q), sector: UInt64(q) * 8, seed: UInt64(10 + q))
            #expect(try disk.roundTrip([w], queue: q) == [BlkifWireResponse(id: UInt64(10 + q), operation: 1, status: .okay)])
            #expect(try disk.fronts[1 - q].responses().isEmpty)
        }
        #expect(try disk.file.read(at: 0, count: 4096) == Pattern.bytes(10))
        #expect(try disk.file.read(at: 4096, count: 4096) == Pattern.bytes(11))
    }

    @Test("a ring of order 2: four granted pages, 128 slots, 100 requests in one go")
    func multiPageRing() throws {
        let guest = try Guest()
        let held = HeldEngines()
        let disk = try Disk<BlkifX86_32>(guest: guest, sectors: 8192, order: 2, engine: held.factory)
        #expect(disk.front.ring.geometry.entries == 128)
        var batch: [BlkifWireRequest] = []
        for i in 0..<100 { batch.append(try pageWrite(guest, id: UInt64(i), sector: UInt64(i) * 8, seed: UInt64(i))) }
        #expect(try disk.front.submit(batch))
        try disk.sync()
        let engine = try #require(held.first)
        #expect(engine.pending.count == 100, "all 100 in flight at once")
        #expect(disk.backend.metrics.requestsInFlight.load(ordering: .relaxed) == 100)
        engine.release()
        try disk.sync()
        let responses = try disk.front.responses()
        #expect(Set(responses.map(\.id)) == Set(0..<100) && responses.allSatisfy { $0.status == .okay })
        #expect(try disk.file.read(at: 99 * 4096, count: 4096) == Pattern.bytes(99))
    }
}
