import GuestMemory
import Testing
import TestSupport
import XenRing

private let page = GuestPhysicalAddress(0x5000)

@Test func layoutsMatchXenHeaders() {
    // io/console.h: in[1024], out[2048], in_cons, in_prod, out_cons, out_prod.
    let c = ByteRingLayout.console
    #expect(c.toGuest.dataOffset == 0 && c.toGuest.size == 1024)
    #expect(c.fromGuest.dataOffset == 1024 && c.fromGuest.size == 2048)
    #expect(c.toGuest.consumerOffset == 3072 && c.toGuest.producerOffset == 3076)
    #expect(c.fromGuest.consumerOffset == 3080 && c.fromGuest.producerOffset == 3084)
    #expect(c.size == 3088)
    // io/xs_wire.h: req[1024], rsp[1024], req_cons, req_prod, rsp_cons, rsp_prod, ...
    let x = ByteRingLayout.xenStore
    #expect(x.fromGuest.dataOffset == 0 && x.fromGuest.size == 1024)
    #expect(x.toGuest.dataOffset == 1024 && x.toGuest.size == 1024)
    #expect(x.fromGuest.consumerOffset == 2048 && x.fromGuest.producerOffset == 2052)
    #expect(x.toGuest.consumerOffset == 2056 && x.toGuest.producerOffset == 2060)
}

private func bytes(_ n: Int, seed: Int = 0) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 * 7 + seed) } }

@Test(arguments: [ByteRingLayout.console, ByteRingLayout.xenStore])
func bothDirectionsWrapNearUInt32Max(layout: ByteRingLayout) throws {
    let memory = MockGuestMemory(size: 64 << 10)
    let front = try FakeByteRingFrontend(memory: memory, base: page, layout: layout, startingAt: RingIndex(UInt32.max - 700))
    let back = try ByteRing(layout: layout, memory: memory, base: page)
    var sentOut: [UInt8] = [], gotOut: [UInt8] = []
    var sentIn: [UInt8] = [], gotIn: [UInt8] = []
    for round in 0..<40 {
        let chunk = bytes(37 * round % 1500 + 1, seed: round)
        var rest = chunk[...]
        while !rest.isEmpty {
            let n = try front.write(Array(rest))
            rest = rest.dropFirst(n)
            gotOut += try back.consumeFromGuest(max: 999)
        }
        sentOut += chunk
        var pending = bytes(53 * round % 1300 + 1, seed: round + 1)
        sentIn += pending
        while !pending.isEmpty {
            let n = try back.produceToGuest(pending)
            pending.removeFirst(n)
            gotIn += try front.read()
        }
    }
    gotOut += try back.consumeFromGuest()
    #expect(gotOut == sentOut)
    #expect(gotIn == sentIn)
    #expect(try front.load(layout.fromGuest.producerOffset).rawValue < 100_000)  // wrapped past 2^32
}

@Test func partialProduceWhenTheGuestRingIsFull() throws {
    let memory = MockGuestMemory(size: 64 << 10)
    let front = try FakeByteRingFrontend(memory: memory, base: page)
    let back = try ByteRing(layout: .console, memory: memory, base: page)
    let input = bytes(1500)
    #expect(try back.produceToGuest(input) == 1024)
    #expect(try back.freeToGuest() == 0)
    #expect(try back.produceToGuest(input[1024...]) == 0)
    let first = try front.read()
    #expect(first == Array(input[..<1024]))
    #expect(try back.produceToGuest(input[1024...]) == 476)
    #expect(try front.read() == Array(input[1024...]))
    #expect(try back.produceToGuest([]) == 0)
}

@Test func consumeHonoursMax() throws {
    let memory = MockGuestMemory(size: 64 << 10)
    let front = try FakeByteRingFrontend(memory: memory, base: page)
    let back = try ByteRing(layout: .console, memory: memory, base: page)
    #expect(try front.write(bytes(3000)) == 2048)
    #expect(try back.availableFromGuest() == 2048)
    #expect(try back.consumeFromGuest(max: 10) == bytes(10))
    #expect(try back.consumeFromGuest(max: 0) == [])
    #expect(try back.consumeFromGuest(max: -1) == [])
    #expect(try back.consumeFromGuest().count == 2038)
    #expect(try back.consumeFromGuest() == [])
}

@Test func hostileIndicesAreErrorsNotLoops() throws {
    let memory = MockGuestMemory(size: 64 << 10)
    let front = try FakeByteRingFrontend(memory: memory, base: page, startingAt: RingIndex(10))
    let back = try ByteRing(layout: .console, memory: memory, base: page)
    let out = ByteRingLayout.console.fromGuest
    let inn = ByteRingLayout.console.toGuest
    // out_prod 2049 ahead of out_cons.
    try front.store(RingIndex(10 + 2049), out.producerOffset)
    #expect(throws: XenRingError.indexOverrun(.fromGuest, producer: RingIndex(2059), consumer: RingIndex(10), size: 2048)) {
        _ = try back.consumeFromGuest()
    }
    #expect(try front.load(out.consumerOffset) == RingIndex(10))  // untouched
    // out_prod behind out_cons.
    try front.store(RingIndex(9), out.producerOffset)
    #expect(throws: XenRingError.self) { _ = try back.consumeFromGuest() }
    try front.store(RingIndex(UInt32.max), out.producerOffset)
    #expect(throws: XenRingError.self) { _ = try back.availableFromGuest() }
    // in_cons moved beyond in_prod: the used count is impossible, nothing is written.
    try front.store(RingIndex(11), inn.consumerOffset)
    do {
        _ = try back.produceToGuest([1, 2, 3])
        Issue.record("expected an error")
    } catch {
        #expect(error.isHostileGuest)
    }
    #expect(try front.load(inn.producerOffset) == RingIndex(10))
}

@Test func consoleRingQueuesBothWaysWithoutDropping() throws {
    let memory = MockGuestMemory(size: 64 << 10)
    let front = try FakeByteRingFrontend(memory: memory, base: page)
    var console = try ConsoleRing(memory: memory, frame: page.frameNumber, outputLimit: 1000, inputLimit: 1500)

    // Guest output: the guest fills its ring; the host side holds at most 1000.
    let text = bytes(5000, seed: 3)
    var written = try front.write(text)
    #expect(written == 2048)
    var r = try console.pump()
    #expect(r.bytesFromGuest == 1000 && r.notifyGuest)
    #expect(console.pendingOutputCount == 1000)
    // Host is stuck: nothing more leaves the guest ring, nothing is lost.
    r = try console.pump()
    #expect(r.bytesFromGuest == 0 && !r.notifyGuest)
    var host: [UInt8] = []
    while host.count < text.count {
        let chunk = console.pendingOutput(max: 333)  // a slow terminal
        host += chunk
        console.outputWritten(chunk.count)
        _ = try console.pump()
        if written < text.count { written += try front.write(Array(text[written...])) }
    }
    #expect(host == text)
    #expect(console.pendingOutputCount == 0)

    // Host input: the guest reads slowly; the queue bounds what the host reads.
    let keys = bytes(3000, seed: 9)
    console.queueInput(keys[..<1500])
    #expect(!console.acceptsInput)
    r = try console.pump()
    #expect(r.bytesToGuest == 1024 && r.notifyGuest)
    #expect(console.pendingInputCount == 476 && console.acceptsInput)
    console.queueInput(keys[1500...])
    var guest = try front.read()
    while guest.count < keys.count {
        _ = try console.pump()
        guest += try front.read()
    }
    #expect(guest == keys)
}

@Test func consolePumpSurfacesAHostileGuestAndKeepsItsQueues() throws {
    let memory = MockGuestMemory(size: 64 << 10)
    let front = try FakeByteRingFrontend(memory: memory, base: page)
    var console = try ConsoleRing(memory: memory, frame: page.frameNumber)
    console.queueInput([1, 2, 3])
    try front.store(RingIndex(5000), ByteRingLayout.console.fromGuest.producerOffset)
    #expect(throws: XenRingError.self) { _ = try console.pump() }
    #expect(console.pendingInputCount == 3)
}
