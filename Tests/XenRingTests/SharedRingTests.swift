import GuestMemory
import Testing
import TestSupport
import XenRing

private let ringBase = GuestPhysicalAddress(0x3000)

private func makeRing(startingAt index: RingIndex = RingIndex(0), memory: MockGuestMemory = MockGuestMemory(size: 64 << 10))
    throws -> (FakeFrontend<ToyRequest, ToyResponse>, SharedRing<ToyRequest, ToyResponse>) {
    let front = try FakeFrontend<ToyRequest, ToyResponse>(memory: memory, base: ringBase, startingAt: index)
    let back = try SharedRing<ToyRequest, ToyResponse>(memory: memory, frames: [ringBase.frameNumber], startingAt: index)
    return (front, back)
}

@Test func geometryMatchesXenHeaders() throws {
    // io/ring.h: req_prod, req_event, rsp_prod, rsp_event, then 48 bytes, then ring[].
    #expect(SharedRingGeometry.requestProducerOffset == 0)
    #expect(SharedRingGeometry.requestEventOffset == 4)
    #expect(SharedRingGeometry.responseProducerOffset == 8)
    #expect(SharedRingGeometry.responseEventOffset == 12)
    #expect(SharedRingGeometry.entriesOffset == 64)
    // blkif: 112-byte requests, 16-byte responses → 32 slots in a page
    // (BLK_RING_SIZE(4096) in Linux).
    let g = try #require(SharedRingGeometry(ToyRequest.self, ToyResponse.self, byteCount: 4096))
    #expect(g.slotSize == 112 && g.entries == 32)
    // Rounded down to a power of two: 2 pages fit 72 slots → 64.
    #expect(SharedRingGeometry(slotSize: 112, byteCount: 8192)?.entries == 64)
    // Slot padded to the wider alignment: max(12, 4) with 8-byte alignment → 16.
    #expect(SharedRingGeometry(slotSize: 16, byteCount: 4096)?.entries == 128)
    #expect(SharedRingGeometry(slotSize: 4096, byteCount: 4096) == nil)
}

@Test func requestsAndResponsesRoundTrip() throws {
    let (front, back0) = try makeRing()
    var back = back0
    for i in 0..<3 { #expect(try front.enqueue(ToyRequest(id: UInt64(i), value: UInt32(i * 10)))) }
    // SHARED_RING_INIT sets req_event = 1: the first push notifies.
    #expect(try front.pushRequests())
    var seen: [ToyRequest] = []
    while let r = try back.nextRequest() { seen.append(r) }
    #expect(seen.map(\.id) == [0, 1, 2] && seen.map(\.value) == [0, 10, 20])
    for r in seen { try back.pushResponse(ToyResponse(id: r.id, status: -5)) }
    #expect(try back.pushResponses())  // rsp_event = 1
    #expect(try front.takeResponses() == [0, 1, 2].map { ToyResponse(id: $0, status: -5) })
    #expect(try back.finalCheckForRequests() == false)
    #expect(try front.raw(.requestEvent) == RingIndex(4))
}

/// Indices start just below 2^32 and wrap while thousands of requests pass.
@Test(arguments: [UInt32.max - 40, UInt32.max, UInt32.max - 1000])
func wrapAroundNearUInt32Max(start: UInt32) throws {
    let (front, back0) = try makeRing(startingAt: RingIndex(start))
    var back = back0
    var next: UInt64 = 0
    var answered: UInt64 = 0
    var batch = 1
    while answered < 3000 {
        for _ in 0..<batch where front.freeRequests > 0 {
            #expect(try front.enqueue(ToyRequest(id: next)))
            next += 1
        }
        _ = try front.pushRequests()
        while let r = try back.nextRequest() { try back.pushResponse(ToyResponse(id: r.id)) }
        _ = try back.pushResponses()
        for r in try front.takeResponses() {
            #expect(r.id == answered)
            answered += 1
        }
        batch = batch % 37 + 1
    }
    #expect(back.requestConsumer.rawValue == start &+ UInt32(next))
    #expect(try front.raw(.responseProducer).rawValue == start &+ UInt32(answered))
}

@Test func overflowingRequestProducerIsHostile() throws {
    let (front, back0) = try makeRing(startingAt: RingIndex(UInt32.max - 3))
    var back = back0
    // Claim 33 requests on a 32-slot ring.
    try front.setRaw(.requestProducer, RingIndex(UInt32.max - 3).advanced(by: 33))
    #expect(throws: XenRingError.indexOverrun(.fromGuest, producer: RingIndex(29), consumer: RingIndex(UInt32.max - 3), size: 32)) {
        _ = try back.nextRequest()
    }
    do { _ = try back.nextRequest() } catch { #expect(error.isHostileGuest) }
    #expect(throws: XenRingError.self) { _ = try back.finalCheckForRequests() }
    // A producer moved backwards is just as impossible.
    try front.setRaw(.requestProducer, RingIndex(UInt32.max - 4))
    #expect(throws: XenRingError.self) { _ = try back.nextRequest() }
    // Exactly full is legal.
    try front.setRaw(.requestProducer, RingIndex(UInt32.max - 3).advanced(by: 32))
    var n = 0
    while try back.nextRequest() != nil { n += 1 }
    #expect(n == 32)
    // With 32 requests unanswered the backend may take no more (RING_REQUEST_CONS_OVERFLOW),
    // and one more claimed request is an overrun.
    try front.setRaw(.requestProducer, RingIndex(UInt32.max - 3).advanced(by: 33))
    #expect(throws: XenRingError.self) { _ = try back.nextRequest() }
    try back.pushResponse(ToyResponse(id: 0))
    #expect(try back.nextRequest() != nil)
}

@Test func responseWithoutRequestIsRefused() throws {
    var (_, back) = try makeRing()
    #expect(throws: XenRingError.responseWithoutRequest(responseProducer: RingIndex(0), requestConsumer: RingIndex(0))) {
        try back.pushResponse(ToyResponse(id: 1))
    }
}

/// req_event / rsp_event: an event only when the other side asked for one.
@Test func eventHoldOff() throws {
    let (front, back0) = try makeRing()
    var back = back0
    // Requests: the backend is idle and armed (req_event = 1).
    _ = try front.enqueue(ToyRequest(id: 1))
    #expect(try front.pushRequests() == true)
    // The backend has not re-armed: more requests need no event.
    _ = try front.enqueue(ToyRequest(id: 2))
    #expect(try front.pushRequests() == false)
    #expect(try back.nextRequest()?.id == 1)
    #expect(try back.nextRequest()?.id == 2)
    // Going idle re-arms at req_cons + 1 ...
    #expect(try back.finalCheckForRequests() == false)
    #expect(try front.raw(.requestEvent) == RingIndex(3))
    _ = try front.enqueue(ToyRequest(id: 3))
    #expect(try front.pushRequests() == true)
    // ... and a request that raced with going idle is seen by the final check.
    #expect(try back.finalCheckForRequests() == true)
    _ = try back.nextRequest()

    // Responses: the frontend asks for an event only on the 3rd response from now.
    try front.setRaw(.responseEvent, RingIndex(3))
    try back.pushResponse(ToyResponse(id: 1))
    #expect(try back.pushResponses() == false)
    try back.pushResponse(ToyResponse(id: 2))
    #expect(try back.pushResponses() == false)
    try back.pushResponse(ToyResponse(id: 3))
    #expect(try back.pushResponses() == true)
    #expect(try front.takeResponses().map(\.id) == [1, 2, 3])
    // Not re-armed: nothing more is signalled; after FINAL_CHECK it is.
    _ = try front.enqueue(ToyRequest(id: 4))
    _ = try front.pushRequests()
    _ = try back.nextRequest()
    try back.pushResponse(ToyResponse(id: 4))
    #expect(try back.pushResponses() == false)
    #expect(try front.finalCheckForResponses() == true)
    #expect(try front.takeResponses().map(\.id) == [4])
    #expect(try front.finalCheckForResponses() == false)
    _ = try front.enqueue(ToyRequest(id: 5))
    _ = try front.pushRequests()
    _ = try back.nextRequest()
    try back.pushResponse(ToyResponse(id: 5))
    #expect(try back.pushResponses() == true)
    // Several responses published at once: notify if rsp_event is anywhere in (old, new].
    for id in 6...8 {
        _ = try front.enqueue(ToyRequest(id: UInt64(id)))
    }
    _ = try front.pushRequests()
    try front.setRaw(.responseEvent, RingIndex(7))
    while let r = try back.nextRequest() { try back.pushResponse(ToyResponse(id: r.id)) }
    #expect(try back.pushResponses() == true)
}

/// A guest rewriting the rsp_prod it cannot own does not change the backend's notify decision.
@Test func guestRewritingResponseProducerDoesNotMisleadNotify() throws {
    let (front, back0) = try makeRing()
    var back = back0
    _ = try front.enqueue(ToyRequest(id: 1))
    _ = try front.pushRequests()
    _ = try back.nextRequest()
    try front.setRaw(.responseEvent, RingIndex(1))
    try front.setRaw(.responseProducer, RingIndex(0x8000_0000))
    try back.pushResponse(ToyResponse(id: 1))
    #expect(try back.pushResponses() == true)
}

/// The backend copies each request once; rewriting the slot later changes nothing it holds.
@Test func requestMutatedAfterProductionIsCopiedOnce() throws {
    let mock = MockGuestMemory(size: 64 << 10)
    let recording = RecordingGuestMemory(mock)
    let front = try FakeFrontend<ToyRequest, ToyResponse>(memory: mock, base: ringBase)
    var back = try SharedRing<ToyRequest, ToyResponse>(memory: recording, base: ringBase)
    _ = try front.enqueue(ToyRequest(id: 7, operation: 1, value: 100))
    _ = try front.pushRequests()
    let slot = GuestPhysicalAddress(ringBase.rawValue + UInt64(front.geometry.slotOffset(RingIndex(0))))
    let request = try #require(try back.nextRequest())
    try front.overwriteRequest(at: RingIndex(0), with: ToyRequest(id: 666, operation: 9, value: 0xdead))
    #expect(request == ToyRequest(id: 7, operation: 1, value: 100))
    // The backend moves on without reading the slot again.
    try back.pushResponse(ToyResponse(id: request.id))
    _ = try back.pushResponses()
    #expect(try back.nextRequest() == nil)
    _ = try back.finalCheckForRequests()
    let slotReads = recording.reads(overlapping: slot, count: ToyRequest.size)
    #expect(slotReads.count == 1)
    #expect(slotReads.first?.count == ToyRequest.size)
}

/// A two-page ring on frames that are not adjacent: slots straddle the page boundary.
@Test func multiPageRingOnScatteredFrames() throws {
    let memory = MockGuestMemory(size: 64 << 10)
    let frames = [GuestFrameNumber(5), GuestFrameNumber(2)]
    var back = try SharedRing<ToyRequest, ToyResponse>(memory: memory, frames: frames)
    #expect(back.geometry.entries == 64)
    // The frontend sees the pages contiguously (its own mapping): model it with
    // a scratch contiguous copy and scatter to the frames after each step.
    let scratch = MockGuestMemory(size: 8192, base: 0x100000)
    let front = try FakeFrontend<ToyRequest, ToyResponse>(memory: scratch, base: GuestPhysicalAddress(0x100000), byteCount: 8192)
    func sync(toFrames: Bool) throws {
        for (i, f) in frames.enumerated() {
            let a = try #require(f.address)
            let s = GuestPhysicalAddress(0x100000 + UInt64(i) * 4096)
            if toFrames { try memory.write(try scratch.read(at: s, count: 4096), at: a) }
            else { try scratch.write(try memory.read(at: a, count: 4096), at: s) }
        }
    }
    var answered: UInt64 = 0
    var sent: UInt64 = 0
    while answered < 200 {
        while front.freeRequests > 0 && sent < 200 {
            _ = try front.enqueue(ToyRequest(id: sent, value: UInt32(sent) * 3))
            sent += 1
        }
        _ = try front.pushRequests()
        try sync(toFrames: true)
        while let r = try back.nextRequest() {
            #expect(r.value == UInt32(r.id) * 3)
            try back.pushResponse(ToyResponse(id: r.id))
        }
        _ = try back.pushResponses()
        try sync(toFrames: false)
        for r in try front.takeResponses() {
            #expect(r.id == answered)
            answered += 1
        }
    }
}

@Test func ringOutsideGuestMemoryIsAnError() {
    let memory = MockGuestMemory(size: 8192)
    #expect(throws: XenRingError.self) {
        _ = try SharedRing<ToyRequest, ToyResponse>(memory: memory, frames: [GuestFrameNumber(2)])
    }
    #expect(throws: XenRingError.self) {
        _ = try SharedRing<ToyRequest, ToyResponse>(memory: memory, frames: [GuestFrameNumber(UInt64.max)])
    }
    #expect(throws: XenRingError.self) {
        _ = try ByteRing(layout: .console, memory: memory, base: GuestPhysicalAddress(8192 - 100))
    }
}

/// Waiting for several requests (netback's RX needs one buffer per page of
/// a frame): the event is asked at req_prod + 1, so each request posted
/// while too few are there notifies, however far req_cons lags.
@Test func requestEventOnNextRequestFollowsTheProducer() throws {
    let (front, back) = try makeRing()
    _ = try front.enqueue(ToyRequest(id: 1))
    _ = try front.pushRequests()
    // One request there, three wanted: ask at req_prod + 1 = 2; nothing moved.
    #expect(try back.unconsumedRequests() == 1)
    #expect(try back.requestEventOnNextRequest() == false)
    #expect(try front.raw(.requestEvent) == RingIndex(2))
    _ = try front.enqueue(ToyRequest(id: 2))
    #expect(try front.pushRequests() == true)
    // Still too few: asked again at 3 (req_cons + 1 would be 1, passed already).
    #expect(try back.requestEventOnNextRequest() == false)
    #expect(try front.raw(.requestEvent) == RingIndex(3))
    _ = try front.enqueue(ToyRequest(id: 3))
    #expect(try front.pushRequests() == true)
    #expect(try back.unconsumedRequests() == 3)
    // An impossible producer is hostile here too.
    try front.setRaw(.requestProducer, RingIndex(1000))
    #expect(throws: XenRingError.self) { _ = try back.requestEventOnNextRequest() }
}
