import Dispatch
import Logging
import Locking

/// The lines a guest can make pvh log, rate-limited per domain and per
/// category, so that a guest that repeats what provokes them (reconnects a
/// device in a loop, breaks each new ring at once) neither fills the host's
/// disk nor buries pvh's own records: a token bucket per category
/// (`LineRateLimit`), and one notice counting the lines left out before the
/// next one allowed, as Linux's printk_ratelimit and Xen's guest-printk
/// limit (xen/drivers/char/console.c, `printk_ratelimit_ms` and
/// `printk_ratelimit_burst`) do. The counters (metrics) see every event;
/// only the log lines are limited. The hypervisor console has its own,
/// larger bucket (`HypervisorConsole`).
public final class GuestTriggeredLog: Sendable {
    /// What a guest provokes, each with its own bucket (one category's
    /// flood does not silence another's first line).
    public enum Category: String, CaseIterable, Sendable {
        /// PV backends' lines: a connect, a device disabled, I/O abandoned.
        case devices
        /// An event upcall a vCPU's local APIC refused.
        case upcalls
    }

    /// Lines each category may log at once, then `perSecond` a second.
    public static let burst = 20
    public static let perSecond = 1

    public let logger: Logger
    private let now: @Sendable () -> Double
    private let burst: Int
    private let perSecond: Int
    private let limits: Lock<[Category: LineRateLimit]>

    /// `now`: seconds on any monotonic clock (a test's own).
    public init(logger: Logger, burst: Int = GuestTriggeredLog.burst, perSecond: Int = GuestTriggeredLog.perSecond,
                now: @escaping @Sendable () -> Double = { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }) {
        self.logger = logger
        self.now = now
        self.burst = burst
        self.perSecond = perSecond
        limits = Lock([:])
    }

    /// Logs `message` at `level` if `category`'s bucket allows it, after a
    /// notice of how many of its lines were left out since the last one.
    public func log(_ category: Category, _ level: Logger.Level, _ message: @autoclosure () -> String) {
        let t = now()
        let (allowed, refused) = limits.withLock { l in
            l[category, default: LineRateLimit(burst: burst, perSecond: perSecond)].admit(at: t)
        }
        guard allowed else { return }
        if refused > 0 { logger.notice("\(suppressed(refused, category))") }
        logger.log(level: level, "\(message())")
    }

    /// A PV backend's line, at the level `Logger.backendLine` gives it.
    public func backendLine(_ line: String) {
        log(.devices, Logger.backendLevel(line), line)
    }

    /// At the domain's end: a notice for each category with lines left out
    /// since its last one (none would follow to report them).
    public func reportSuppressed() {
        let counts = limits.withLock { l in
            Category.allCases.compactMap { c -> (Category, UInt64)? in
                guard let n = l[c]?.takeRefused(), n > 0 else { return nil }
                return (c, n)
            }
        }
        for (category, n) in counts { logger.notice("\(suppressed(n, category))") }
    }

    private func suppressed(_ n: UInt64, _ category: Category) -> String {
        "\(n) guest-triggered \(category.rawValue) messages suppressed (more than \(burst) at once, then \(perSecond) a second)"
    }
}
