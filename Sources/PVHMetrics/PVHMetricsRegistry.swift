import Metrics
import Prometheus
import Locking

/// The domains' counters as Prometheus metrics, read at scrape time.
///
/// Why at scrape time: every counter already lives in the domain as a
/// relaxed atomic, bumped on the hot path (each exit, each hypercall, each
/// ring request) by the thread doing the work. Incrementing a second,
/// Prometheus-side counter there would double the cost of every event and
/// put a lock or a second atomic (and the label lookup) on vCPU and device
/// threads. Instead `exposition()` loads each atomic once per scrape and
/// advances the registry's counter by the difference since the last scrape
/// of the same source object; nothing runs between scrapes.
///
/// A counter's source object is held until a scrape no longer sees it, so
/// its identity cannot be reused by a new object while its last value is
/// remembered: a block device's runtime device made anew on reconnection
/// starts from its own zero and only adds to the series (no reset seen).
///
/// Labels: `domain` (the name) and `domid` on every series of a domain;
/// `device`, `queue` and the metric's own on device series (README:
/// Metrics). The `factory` feeds swift-metrics users into the same
/// registry (`MetricsSystem.bootstrap(registry.factory)` for the coming
/// daemon); the server's own scrape count goes through it.
public final class PVHMetricsRegistry: Sendable {
    /// The registry the exposition is written from.
    public let prometheus: PrometheusCollectorRegistry
    /// swift-metrics' view of `prometheus`.
    public let factory: PrometheusMetricsFactory
    private let scrapes: Metrics.Counter
    private let state = Lock(State())

    /// Identifies one counter series fed from one source object.
    private struct FeedKey: Hashable {
        let name: String
        let labels: [String]
        let source: ObjectIdentifier
    }

    private struct Feed {
        /// Held so that `FeedKey.source` stays this object's while remembered.
        let source: AnyObject
        let last: UInt64
    }

    private struct State {
        var sources: [String: DomainMetricSource] = [:]
        var feeds: [FeedKey: Feed] = [:]
        /// Each domain's series, for `remove`, and whether each is a
        /// device's (has a `device` label), for `collect`.
        var counters: [String: [ObjectIdentifier: (series: Prometheus.Counter, device: Bool)]] = [:]
        var gauges: [String: [ObjectIdentifier: (series: Prometheus.Gauge, device: Bool)]] = [:]
    }

    public init() {
        let prometheus = PrometheusCollectorRegistry()
        self.prometheus = prometheus
        factory = PrometheusMetricsFactory(registry: prometheus)
        scrapes = Metrics.Counter(label: PVHMetric.scrapes.rawValue, dimensions: [], factory: factory)
    }

    /// Adds a domain's counters, or replaces those of a domain of the same
    /// name (a guest restarted with `--on-reboot restart`: its series go on).
    public func add(_ source: DomainMetricSource) {
        state.withLock { $0.sources[source.name] = source }
    }

    /// Removes the domain called `name` and its series.
    public func remove(domain name: String) {
        let (counters, gauges) = state.withLock { s in
            s.sources[name] = nil
            defer {
                s.counters[name] = nil
                s.gauges[name] = nil
            }
            return ((s.counters[name] ?? [:]).values.map(\.series), (s.gauges[name] ?? [:]).values.map(\.series))
        }
        counters.forEach { prometheus.unregisterCounter($0) }
        gauges.forEach { prometheus.unregisterGauge($0) }
    }

    /// Adds one to a counter of the process's own, without domain labels
    /// (the daemon's `pvh_daemon_guest_scrape_failures_total`).
    public func increment(_ metric: PVHMetric, by amount: Int64 = 1) {
        prometheus.makeCounter(descriptor: metric.descriptor).increment(by: amount)
    }

    /// Reads every domain's counters into the registry and returns the text
    /// exposition format 0.0.4
    /// (https://prometheus.io/docs/instrumenting/exposition_formats/).
    public func exposition() -> [UInt8] {
        scrapes.increment()
        collect()
        return prometheus.emitToBuffer()
    }

    /// The scrape-time read: one pass over every source, under the lock so
    /// that two concurrent scrapes do not both add the same difference.
    ///
    /// A device's series (those with a `device` label) that a scrape no
    /// longer sees are unregistered: a hot-unplugged disk or interface
    /// leaves the exposition with its device, as a hot-plugged one enters
    /// it. (A block device's runtime device between two connections is
    /// such a gap too: its series start again from zero afterwards, which
    /// Prometheus' `rate` reads as a counter reset.) The domain's own
    /// series stay, so a restarted domain's go on.
    func collect() {
        state.withLock { s in
            var feeds: [FeedKey: Feed] = [:]
            for (domainName, source) in s.sources {
                var seen: Set<ObjectIdentifier> = []
                let base = [("domain", domainName), ("domid", String(source.domainID.rawValue))]
                var levels: [[String]: (labels: [(String, String)], metric: PVHMetric, value: Double)] = [:]
                for sample in source.samples() {
                    let labels = base + sample.labels
                    let flat = [sample.metric.rawValue] + labels.map { "\($0.0)=\($0.1)" }
                    switch sample.value {
                    case .total(let now):
                        let counter = prometheus.makeCounter(descriptor: sample.metric.descriptor, labels: labels)
                        let device = sample.labels.contains { $0.0 == "device" }
                        s.counters[domainName, default: [:]][ObjectIdentifier(counter)] = (counter, device)
                        seen.insert(ObjectIdentifier(counter))
                        let key = FeedKey(name: sample.metric.rawValue, labels: flat,
                                          source: ObjectIdentifier(sample.source))
                        let last = s.feeds[key]?.last ?? 0
                        // A total below the last one only if it wrapped.
                        let delta = now >= last ? now - last : now
                        feeds[key] = Feed(source: sample.source, last: now)
                        guard delta > 0 else { continue }
                        if sample.metric == .vcpuSeconds {
                            counter.increment(by: Double(delta) / ThreadCPUTime.ticksPerSecond)
                        } else {
                            counter.increment(by: Int64(clamping: delta))
                        }
                    case .level(let value):
                        // Sources with the same labels (two runtime devices
                        // of one name) add up.
                        levels[flat, default: (labels, sample.metric, 0)].value += value
                    }
                }
                for level in levels.values {
                    let gauge = prometheus.makeGauge(descriptor: level.metric.descriptor, labels: level.labels)
                    s.gauges[domainName, default: [:]][ObjectIdentifier(gauge)] = (gauge, level.labels.contains { $0.0 == "device" })
                    seen.insert(ObjectIdentifier(gauge))
                    gauge.set(level.value)
                }
                for (id, entry) in s.counters[domainName] ?? [:] where entry.device && !seen.contains(id) {
                    prometheus.unregisterCounter(entry.series)
                    s.counters[domainName]?[id] = nil
                }
                for (id, entry) in s.gauges[domainName] ?? [:] where entry.device && !seen.contains(id) {
                    prometheus.unregisterGauge(entry.series)
                    s.gauges[domainName]?[id] = nil
                }
            }
            // Sources no scrape sees any more are let go.
            s.feeds = feeds
        }
    }
}

extension PVHMetric {
    var descriptor: MetricNameDescriptor {
        MetricNameDescriptor(metricName: rawValue, unitName: "", helpText: help)
    }
}
