// Fuzz target: the console and XenStore byte rings (XenRing's ByteRing and
// ConsoleRing; io/console.h xencons_interface, io/xs_wire.h
// xenstore_domain_interface) with every index the guest controls set to
// anything. Input: byte 0 the layout (console or XenStore) and limits, then
// up to 48 operations: raw index words, ring data, a consume, a produce, a
// console pump with queued host input. Checks: a consume returns exactly
// the bytes between the indices, at most the ring's size, and moves the
// consumer by that much; a produce writes at most the free space; an
// impossible pair of indices throws and changes nothing; the console's
// host-side queue stays within its limit; the pages around the ring are
// never written.
import FuzzSupport
import GuestMemory
import XenABI
import XenRing

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzChoices(data, size, fuzzOne) }

@_cdecl("fuzz_byterings_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

/// The ring in frame 1 of three; frames 0 and 2 hold the canary.
private let canary: UInt8 = 0x5a
private let ringBase = GuestPhysicalAddress(0x1000)
/// One mapping for the run: every input starts by filling all of it.
private let memory = guestRAM(3 * 4096)

private func fuzzOne(_ r: inout FuzzReader) {
    let options = r.byte()
    let layout: ByteRingLayout = options & 1 == 0 ? .console : .xenStore
    do {
        try memory.fill(at: GuestPhysicalAddress(0), count: 3 * 4096, with: canary)
        try memory.fill(at: ringBase, count: layout.size, with: 0)
        let ring = try ByteRing(layout: layout, memory: memory, base: ringBase)
        var console = ConsoleRing(ring: ring, outputLimit: 1 + Int(options >> 1) * 64, inputLimit: 1 + Int(options >> 4) * 256)
        let words = [layout.fromGuest.consumerOffset, layout.fromGuest.producerOffset,
                     layout.toGuest.consumerOffset, layout.toGuest.producerOffset]
        func index(_ offset: Int) throws -> RingIndex { RingIndex(try memory.load(UInt32.self, at: GuestPhysicalAddress(ringBase.rawValue + UInt64(offset)))) }
        for _ in 0..<r.below(49) {
            switch r.below(7) {
            case 0:
                let value = r.bool() ? r.u32() : UInt32.max &- UInt32(r.below(64)) &+ UInt32(r.below(128))
                try memory.store(value, at: GuestPhysicalAddress(ringBase.rawValue + UInt64(words[r.below(4)])))
            case 1:
                let data = r.take(r.below(1100))
                try memory.write(data, at: GuestPhysicalAddress(ringBase.rawValue + UInt64(r.below(layout.size - data.count + 1))))
            case 2:
                let c = layout.fromGuest
                let (cons, prod) = (try index(c.consumerOffset), try index(c.producerOffset))
                let max = r.below(3000)
                do {
                    let bytes = try ring.consumeFromGuest(max: max)
                    let used = prod.distance(from: cons)
                    precondition(used <= c.size, "fuzz-byterings: consumed from an overrun ring")
                    precondition(bytes.count == min(Int(used), max), "fuzz-byterings: consumed \(bytes.count) of \(used)")
                    let data = try memory.read(at: GuestPhysicalAddress(ringBase.rawValue + UInt64(c.dataOffset)), count: Int(c.size))
                    let expected = (0..<bytes.count).map { data[Int(cons.advanced(by: UInt32($0)).rawValue & (c.size - 1))] }
                    precondition(bytes == expected, "fuzz-byterings: consumed bytes are not the ring's")
                    let moved = try index(c.consumerOffset)
                    precondition(moved == cons.advanced(by: UInt32(bytes.count)), "fuzz-byterings: consumer not advanced by the count")
                } catch {
                    precondition(prod.distance(from: cons) > c.size, "fuzz-byterings: a valid ring threw \(error)")
                    let kept = try index(c.consumerOffset)
                    precondition(kept == cons, "fuzz-byterings: a refused ring was changed")
                }
            case 3:
                let c = layout.toGuest
                let (cons, prod) = (try index(c.consumerOffset), try index(c.producerOffset))
                let data = r.take(r.below(3000))
                do {
                    let n = try ring.produceToGuest(data)
                    precondition(prod.distance(from: cons) <= c.size && n == min(data.count, Int(c.size - prod.distance(from: cons))),
                                 "fuzz-byterings: produced \(n) into \(prod.distance(from: cons)) used of \(c.size)")
                    let moved = try index(c.producerOffset)
                    precondition(moved == prod.advanced(by: UInt32(n)), "fuzz-byterings: producer not advanced by the count")
                } catch {
                    precondition(prod.distance(from: cons) > c.size, "fuzz-byterings: a valid ring threw \(error)")
                    let kept = try index(c.producerOffset)
                    precondition(kept == prod, "fuzz-byterings: a refused ring was changed")
                }
            case 4:
                if console.acceptsInput { console.queueInput(r.take(r.below(600))) }
            case 5:
                _ = try? console.pump()
                precondition(console.pendingOutputCount <= console.outputLimit, "fuzz-byterings: console output past its limit")
            default:
                console.outputWritten(r.below(2000))
            }
        }
        let outside = try memory.read(at: GuestPhysicalAddress(0), count: 4096)
            + memory.read(at: GuestPhysicalAddress(ringBase.rawValue + UInt64(layout.size)), count: 2 * 4096 - layout.size)
        precondition(sameBytes(outside, [UInt8](repeating: canary, count: outside.count)), "fuzz-byterings: bytes outside the ring were written")
    } catch {
        preconditionFailure("fuzz-byterings: \(error)")
    }
}
