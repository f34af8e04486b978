import Locking
import PVHLogging
import Synchronization
import Testing
@testable import VMM

/// `GuestTriggeredLog`: the per-domain, per-category cap on the log lines a
/// guest can provoke (issue 13 item 3).
struct GuestTriggeredLogTests {
    /// A clock the test moves.
    final class Clock: Sendable {
        let seconds = Lock<Double>(1000)
        var now: @Sendable () -> Double { { [self] in seconds.withLock { $0 } } }
        func advance(_ by: Double) { seconds.withLock { $0 += by } }
    }

    static func log(_ clock: Clock) -> (GuestTriggeredLog, file: MemoryLogDestination, stderr: MemoryLogDestination) {
        let file = MemoryLogDestination(), stderr = MemoryLogDestination()
        let logger = GuestLog.logger(label: "pvh[1/t]", file: file, standardError: stderr)
        return (GuestTriggeredLog(logger: logger, now: clock.now), file, stderr)
    }

    @Test("100,000 bad requests in 10 s log the burst, one a second after it, and a note of each gap's suppressed count; the counts add up")
    func floodIsCapped() {
        let clock = Clock()
        let (log, file, stderr) = Self.log(clock)
        for i in 0..<100_000 {
            if i % 10_000 == 0 && i > 0 { clock.advance(1) }
            log.backendLine("vif1.0: disabled: hostile guest: TX queue 0: packet of more than 20 slots (\(i))")
        }
        log.reportSuppressed()
        let lines = file.lines
        let messages = lines.filter { $0.contains(": disabled: hostile guest") }
        let notes = lines.filter { $0.contains("guest-triggered devices messages suppressed") }
        // The burst, then one line per second of the 9 that passed.
        #expect(messages.count == GuestTriggeredLog.burst + 9 * GuestTriggeredLog.perSecond, "\(messages.count)")
        // A note before each line after the burst, and the last at the end.
        #expect(notes.count == 10, "\(notes)")
        let suppressed = notes.compactMap { line -> Int? in
            guard let r = line.range(of: ": ") else { return nil }
            return Int(line[r.upperBound...].prefix { $0.isNumber })
        }.reduce(0, +)
        #expect(suppressed + messages.count == 100_000)
        // stderr mirrors the warnings only: the same cap.
        #expect(stderr.lines.count == messages.count, "\(stderr.lines.count)")
        #expect(lines.count <= 2 * (GuestTriggeredLog.burst + 10))
    }

    @Test("each category has its own bucket: a flood of device lines leaves an upcall's first line alone")
    func categoriesApart() {
        let clock = Clock()
        let (log, file, _) = Self.log(clock)
        for _ in 0..<1000 { log.log(.devices, .warning, "vbd-51712: disabled: hostile guest") }
        log.log(.upcalls, .warning, "vcpu0: event upcall refused")
        #expect(file.lines.filter { $0.contains("vcpu0: event upcall refused") }.count == 1)
        #expect(file.lines.filter { $0.contains("vbd-51712") }.count == GuestTriggeredLog.burst)
    }

    @Test("a quiet guest loses nothing: lines below the rate all logged, no note")
    func quietGuest() {
        let clock = Clock()
        let (log, file, _) = Self.log(clock)
        for i in 0..<100 {
            log.backendLine("vif1.0: connected: 1 queue(s), link user (\(i))")
            clock.advance(1.5)
        }
        log.reportSuppressed()
        #expect(file.lines.count == 100)
        #expect(!file.lines.contains { $0.contains("suppressed") })
    }
}
