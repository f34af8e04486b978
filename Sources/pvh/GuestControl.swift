import Foundation
import PVHAPI
import PVHAPIClient
import PVHMetrics
import Toolstack
import VMM
import XenABI
import XenStore

#if canImport(Glibc)
import Glibc
#endif

/// xl's guest-control verbs through the daemon: `mem-set`, `mem-max`,
/// `vcpu-set` write the guest's XenStore nodes as libxl does, and `top`'s
/// stats come from the guest process's metrics socket.
extension Supervisor: GuestControlService {
    /// xl mem-set / mem-max (libxl_set_memory_target, libxl_domain_setmaxmem
    /// in tools/libs/light/libxl_mem.c): the target is `memory/target`
    /// (KiB), which the guest's balloon driver watches; the maximum is
    /// `memory/static-max`, which the guest process watches and applies as
    /// the domain's page limit (VMM's MemoryLimit.swift). As libxl, a target
    /// above the maximum and a maximum below the target are refused.
    func setMemory(on name: String, _ request: MemoryRequest) async throws(APIError) -> DomainInfo {
        guard let record = record(named: name) else { throw .notFound(name) }
        try await awaitIntroduced(record)
        let configured = Int64(record.configuration.memoryMiB) * 1024
        let live = liveControls(record.id)
        let target = request.targetKiB ?? live.target ?? configured
        let maximum = request.maxKiB ?? live.max ?? configured
        let ceiling = Int64(GuestConfiguration.maximumMemoryMiB) * 1024
        guard maximum <= ceiling else {
            throw APIError(.badRequest, "\(name): \(maximum) KiB: above pvh's largest guest (\(ceiling) KiB)", key: "max_kib")
        }
        guard target <= maximum else {
            throw request.maxKiB != nil
                ? APIError(.badRequest, "\(name): memory_static_max (\(maximum) KiB) must be at least the memory target (\(target) KiB)", key: "max_kib")
                : APIError(.badRequest, "\(name): memory target \(target) KiB is above its maximum (\(maximum) KiB; pvh mem-max raises it)", key: "target_kib")
        }
        let home = "/local/domain/\(record.id.rawValue)/memory"
        var writes: [(String, Int64)] = []
        if let max = request.maxKiB { writes.append(("static-max", max)) }
        if let t = request.targetKiB { writes.append(("target", t)) }
        // Never a moment with the target above the maximum: a lower
        // maximum goes after the target, a higher one before.
        if let max = request.maxKiB, max < (live.target ?? configured) { writes.reverse() }
        for (node, value) in writes {
            do {
                try store.write("\(home)/\(node)", String(value))
            } catch {
                throw APIError(.conflict, "\(name): memory/\(node): \(error)")
            }
        }
        let reason = [request.targetKiB.map { "target_kib=\($0)" }, request.maxKiB.map { "max_kib=\($0)" }]
            .compactMap { $0 }.joined(separator: " ")
        publish(DomainEvent(type: .memoryChanged, record: record, reason: reason, time: Self.now))
        return info(self.record(named: name) ?? record)
    }

    /// xl vcpu-set (libxl_set_vcpuonline): `cpu/<n>/availability` is
    /// `online` for n below `online` and `offline` up to the domain's vCPUs,
    /// for the guest's xenbus cpu hotplug watch. More than the domain has,
    /// or fewer than 1, is refused (xl: "cannot set vcpus greater than max
    /// vcpus on running domain or lesser than 1").
    func setVCPUs(on name: String, online: Int) async throws(APIError) -> DomainInfo {
        guard let record = record(named: name) else { throw .notFound(name) }
        let maximum = record.configuration.vcpus
        guard (1...maximum).contains(online) else {
            throw APIError(.badRequest, "\(name): \(online) vCPUs: must be 1 to \(maximum) (its vcpus; pvh runs no more than that)", key: "online")
        }
        try await awaitIntroduced(record)
        for cpu in 0..<maximum {
            do {
                try store.write("/local/domain/\(record.id.rawValue)/cpu/\(cpu)/availability", cpu < online ? "online" : "offline")
            } catch {
                throw APIError(.conflict, "\(name): cpu/\(cpu)/availability: \(error)")
            }
        }
        publish(DomainEvent(type: .vcpusChanged, record: record, reason: "online=\(online)", time: Self.now))
        return info(self.record(named: name) ?? record)
    }

    /// `pvh top`'s numbers: each guest process's metrics scraped at once
    /// (each bounded by `GuestScrape.timeout`), the memory and vCPUs from
    /// the store; a guest whose metrics do not answer shows its process's
    /// CPU time and zeros.
    func stats(named name: String?) async throws(APIError) -> [DomainStats] {
        var targets = records()
        if let name {
            targets = targets.filter { $0.record.name == name }
            guard !targets.isEmpty else { throw .notFound(name) }
        }
        let scraped = await GuestScrape.all(targets.filter(GuestScrape.answers).map { ($0.record.id, metricsSocket($0.record.id)) })
        return targets.map { target in
            let record = target.record
            let live = liveControls(record.id)
            let configured = Int64(record.configuration.memoryMiB) * 1024
            var stats = DomainStats(name: record.name, domid: Int(record.id.rawValue), state: record.state.name,
                                    cpuSeconds: record.processID.map(Self.cpuSeconds) ?? 0,
                                    memoryKiB: live.target ?? configured, maxMemoryKiB: live.max ?? configured,
                                    vcpus: live.online ?? record.configuration.vcpus, metrics: false)
            guard let metrics = scraped[record.id] ?? nil else { return stats }
            stats.metrics = true
            stats.cpuSeconds = metrics.sum(PVHMetric.vcpuSeconds.rawValue)
            stats.nets = metrics.distinct("device", of: PVHMetric.netBytes.rawValue)
            stats.netTXBytes = UInt64(metrics.sum(PVHMetric.netBytes.rawValue, where: ["direction": "tx"]))
            stats.netRXBytes = UInt64(metrics.sum(PVHMetric.netBytes.rawValue, where: ["direction": "rx"]))
            stats.vbds = metrics.distinct("device", of: PVHMetric.blockRequests.rawValue)
            stats.vbdReads = UInt64(metrics.sum(PVHMetric.blockRequests.rawValue, where: ["op": "read"]))
            stats.vbdWrites = UInt64(metrics.sum(PVHMetric.blockRequests.rawValue, where: ["op": "write"]))
            stats.vbdBytesRead = UInt64(metrics.sum(PVHMetric.blockBytes.rawValue, where: ["direction": "read"]))
            stats.vbdBytesWritten = UInt64(metrics.sum(PVHMetric.blockBytes.rawValue, where: ["direction": "write"]))
            return stats
        }
    }

    /// The memory and vCPU nodes as the guest's store holds them now
    /// (nil before its guest process wrote them).
    func liveControls(_ id: DomainID) -> (target: Int64?, max: Int64?, online: Int?) {
        let home = "/local/domain/\(id.rawValue)"
        let target = (try? store.read("\(home)/memory/target")).flatMap { Int64($0) }
        let maximum = (try? store.read("\(home)/memory/static-max")).flatMap { Int64($0) }
        let cpus = (try? store.directory("\(home)/cpu")) ?? []
        let online = cpus.isEmpty ? nil : cpus.filter { (try? store.read("\(home)/cpu/\($0)/availability")) == "online" }.count
        return (target, maximum, online)
    }

    func addLiveControls(to info: inout DomainInfo, _ record: DomainRecord) {
        let live = liveControls(record.id)
        info.memoryTargetKiB = live.target
        info.maxMemoryKiB = live.max
        info.onlineVCPUs = live.online
    }
}

/// Reading a guest process's `/metrics` from its socket: off Swift's
/// concurrency pool (the client blocks its thread), bounded in time and
/// size; nil for a guest that does not answer in time, answers something
/// else than 200, too much, or text that is not the exposition format.
enum GuestScrape {
    /// How long one guest may take to answer.
    static let timeout = 2.0
    /// The largest answer read (a guest with many devices writes tens of KiB).
    static let maximumSize = 4 << 20

    static func fetch(_ socket: String) async -> Exposition? {
        await withCheckedContinuation { (done: CheckedContinuation<Exposition?, Never>) in
            DispatchQueue.global().async {
                var body: [UInt8] = []
                let status = try? APIClient(socketPath: socket).stream("/metrics", timeout: timeout) { chunk in
                    body += chunk
                    return body.count <= maximumSize
                }
                guard status == 200, body.count <= maximumSize else { return done.resume(returning: nil) }
                done.resume(returning: try? Exposition(parsing: String(decoding: body, as: UTF8.self)))
            }
        }
    }

    /// Whether a domain's process can answer: it runs and is not paused
    /// (a paused guest's whole process group is stopped: asking would only
    /// wait out the timeout; its counters do not move meanwhile).
    static func answers(_ domain: (record: DomainRecord, running: Bool)) -> Bool {
        domain.running && domain.record.state == .running
    }

    /// Every socket's at once.
    static func all(_ sockets: [(DomainID, String)]) async -> [DomainID: Exposition?] {
        await withTaskGroup(of: (DomainID, Exposition?).self) { group in
            for (id, socket) in sockets { group.addTask { (id, await fetch(socket)) } }
            var out: [DomainID: Exposition?] = [:]
            for await (id, exposition) in group { out[id] = exposition }
            return out
        }
    }
}

/// The daemon's `/metrics` (API socket and `pvh daemon --metrics`): its
/// own counters, then every running guest's, each guest's series labelled
/// `domain` and `domid` from the registry, families merged so that each
/// has one HELP and one TYPE. A guest that does not answer is left out
/// and counted in `pvh_daemon_guest_scrape_failures_total`; it never holds
/// the scrape longer than `GuestScrape.timeout`.
struct DaemonMetrics: Sendable {
    let registry: PVHMetricsRegistry
    let supervisor: Supervisor

    func exposition() async -> [UInt8] {
        let guests = supervisor.records().filter(GuestScrape.answers).map(\.record)
        let scraped = await GuestScrape.all(guests.map { ($0.id, supervisor.metricsSocket($0.id)) })
        var parts: [Exposition] = []
        for record in guests {
            guard let exposition = scraped[record.id] ?? nil else {
                registry.increment(.guestScrapeFailures)
                continue
            }
            parts.append(exposition.labelled([.init("domain", record.name), .init("domid", String(record.id.rawValue))]))
        }
        // Its own last, so that this scrape's failures are in it; parsed
        // back only to merge (swift-prometheus writes valid text).
        var merged = (try? Exposition(parsing: String(decoding: registry.exposition(), as: UTF8.self))) ?? Exposition()
        for part in parts { merged.merge(part) }
        merged.merge(xenStoreCounts())
        return Array(merged.text.utf8)
    }

    /// Each live domain's XenStore requests on the daemon's store (its
    /// ring's, relayed under its id), labelled as its guest's series are;
    /// series sorted so that a scrape reads the same order each time.
    func xenStoreCounts() -> Exposition {
        let counts = supervisor.store.requestCounts()
        var out = Exposition()
        for (record, _) in supervisor.records() {
            guard let domain = counts[record.id] else { continue }
            let labels = [Exposition.Label("domain", record.name), Exposition.Label("domid", String(record.id.rawValue))]
            for (type, n) in domain.requests.map({ ($0.key.label, $0.value) }).sorted(by: { $0.0 < $1.0 }) {
                out.add(.xenStoreRequests, labels: labels + [.init("type", type)], value: n)
            }
            for (error, n) in domain.errors.map({ ($0.key.wireName, $0.value) }).sorted(by: { $0.0 < $1.0 }) {
                out.add(.xenStoreErrors, labels: labels + [.init("error", error)], value: n)
            }
        }
        return out
    }
}
