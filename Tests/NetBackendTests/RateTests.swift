import NetBackend
import Locking
import Testing
import TestSupport
import XenABI

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let time = Lock<Duration>(.zero)
    func advance(_ d: Duration) { time.withLock { $0 += d } }
    var now: @Sendable () -> Duration { { [self] in time.withLock { $0 } } }
}

@Suite("net backend transmit rate (xl's rate=, netback's credit scheduler)")
struct RateTests {
    @Test("credit: one interval's bytes to start, a wait until the next window, refilled per interval")
    func creditWindows() {
        let clock = ManualClock()
        let credit = NetTransmitCredit(NetTransmitRate(bytesPerInterval: 1000, interval: .milliseconds(50)), clock: clock.now)
        #expect(credit.take(600) == .send)
        #expect(credit.take(600) == .wait(.milliseconds(50)))
        clock.advance(.milliseconds(20))
        #expect(credit.take(600) == .wait(.milliseconds(30)))
        clock.advance(.milliseconds(30))
        // 400 left + 1000 new.
        #expect(credit.take(1400) == .send)
        #expect(credit.take(1) == .wait(.milliseconds(50)))
    }

    @Test("credit: idle time adds at most the burst (128 KiB, or one interval's bytes if larger)")
    func burstCap() {
        let clock = ManualClock()
        let small = NetTransmitCredit(NetTransmitRate(bytesPerInterval: 100_000, interval: .milliseconds(10)), clock: clock.now)
        clock.advance(.seconds(10))
        #expect(small.take(Int(NetTransmitCredit.minimumBurst)) == .send)
        #expect(small.take(1) != .send)
        let large = NetTransmitCredit(NetTransmitRate(bytesPerInterval: 1 << 20, interval: .milliseconds(10)), clock: clock.now)
        clock.advance(.seconds(10))
        #expect(large.take(1 << 20) == .send)
        #expect(large.take(1) != .send)
    }

    @Test("credit: a 64 KiB GSO packet over a 1000-byte credit goes once 66 intervals' credit has built up")
    func largePacketEventuallyFits() {
        let clock = ManualClock()
        let credit = NetTransmitCredit(NetTransmitRate(bytesPerInterval: 1000, interval: .milliseconds(50)), clock: clock.now)
        var waits = 0
        while credit.take(65_536) != .send {
            guard case .wait(let d) = credit.take(65_536), waits < 1000 else { break }
            clock.advance(d)
            waits += 1
        }
        #expect(waits == 65, "waited \(waits) intervals")
    }

    @Test("the rate node as libxl writes it: bytes,usecs")
    func node() throws {
        let guest = try Guest()
        let vif = try Vif(guest: guest, rate: NetTransmitRate(bytesPerInterval: 62_500, interval: .milliseconds(50)))
        #expect(vif.backendNode("rate") == "62500,50000")
        let unlimited = try Vif(guest: guest, index: 1)
        #expect(unlimited.backendNode("rate") == nil)
    }

    @Test("over the rate, packets wait for credit (timers on the queue's context) and all go, in order, each answered once")
    func limitedTransmit() throws {
        let guest = try Guest()
        // 10 000 bytes per 50 ms, and 50 packets of 1 000 bytes published at
        // once (one push, one notification): the backend finds them all on
        // the ring, so how fast the sender is (ThreadSanitizer, a loaded
        // host) does not matter. At its first take the credit holds at most
        // 20 000 bytes (one interval's at the start, one more if that take
        // opens a new window: Credit.swift), and each further 10 000 needs a
        // window of its own: three at least, 150 ms after the push.
        let vif = try Vif(guest: guest, rate: NetTransmitRate(bytesPerInterval: 10_000, interval: .milliseconds(50)))
        var packets: [[UInt8]] = []
        for i in 0..<50 {
            let p = Frames.ipv4(Frames.payload(1000 - 54, seed: UInt8(i)))
            packets.append(p)
            #expect(try vif.q.enqueue(vif.q.stage(p)))
        }
        let started = ContinuousClock.now
        try vif.q.pushTx()
        let rsp = try vif.q.waitForTxResponses(50)
        let elapsed = ContinuousClock.now - started
        #expect(rsp.count == 50 && rsp.allSatisfy { $0.status == .okay })
        #expect(vif.link.sent.map(\.bytes) == packets)
        #expect(elapsed >= .milliseconds(150), "50 000 bytes at 10 000 per 50 ms went in \(elapsed)")
        // The backend stopped for credit: only a backend that took 50 ms for
        // every 10 packets would not (the timers, not a slow sender, pace it).
        #expect(vif.metrics.txCreditWaits.load(ordering: .relaxed) >= 1)
        #expect(vif.metrics.totalDrops == 0)
    }
}
