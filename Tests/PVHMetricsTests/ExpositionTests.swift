import PVHMetrics
import Testing
import VMM
import XenABI

@Suite("PVHMetrics: merging guests' expositions")
struct ExpositionMergeTests {
    let guest = """
        # HELP pvh_exits_total KVM exits, all vCPUs.
        # TYPE pvh_exits_total counter
        pvh_exits_total{domain="web",domid="1"} 120
        # HELP pvh_domain_vcpus Virtual CPUs of the domain.
        # TYPE pvh_domain_vcpus gauge
        pvh_domain_vcpus{domain="web",domid="1"} 2
        # TYPE pvh_metrics_scrapes_total counter
        pvh_metrics_scrapes_total 4
        # TYPE pvh_latency_seconds histogram
        pvh_latency_seconds_bucket{le="+Inf"} 3
        pvh_latency_seconds_sum 0.5
        pvh_latency_seconds_count 3

        """

    @Test func parsesFamiliesAndSamples() throws {
        let e = try Exposition(parsing: guest)
        #expect(e.families.map(\.name) == ["pvh_exits_total", "pvh_domain_vcpus", "pvh_metrics_scrapes_total", "pvh_latency_seconds"])
        #expect(e.families[0].help == "KVM exits, all vCPUs." && e.families[0].type == "counter")
        #expect(e.families[3].samples.count == 3)
        #expect(e.sum("pvh_exits_total") == 120)
        // Text out is text in.
        #expect(try Exposition(parsing: e.text) == e)
    }

    @Test func relabelReplacesTheGuestsOwnLabels() throws {
        let e = try Exposition(parsing: guest).labelled([.init("domain", "web2"), .init("domid", "9")])
        #expect(e.text.contains("pvh_exits_total{domain=\"web2\",domid=\"9\"} 120\n"))
        #expect(e.text.contains("pvh_metrics_scrapes_total{domain=\"web2\",domid=\"9\"} 4\n"))
        #expect(!e.text.contains("\"web\""))
    }

    /// Two guests and the daemon's own: one HELP and one TYPE per family,
    /// each before the family's samples, every series once.
    @Test func mergedTextIsValidExposition() throws {
        var merged = try Exposition(parsing: "# HELP pvh_metrics_scrapes_total Scrapes of /metrics served.\n# TYPE pvh_metrics_scrapes_total counter\npvh_metrics_scrapes_total 7\n")
        for (name, id) in [("alpha", "1"), ("beta", "2")] {
            merged.merge(try Exposition(parsing: guest).labelled([.init("domain", name), .init("domid", id)]))
        }
        let text = merged.text
        let lines = text.split(separator: "\n")
        for family in ["pvh_exits_total", "pvh_domain_vcpus", "pvh_metrics_scrapes_total", "pvh_latency_seconds"] {
            #expect(lines.filter { $0.hasPrefix("# TYPE \(family) ") }.count == 1, "\(family)")
            #expect(lines.filter { $0.hasPrefix("# HELP \(family) ") }.count <= 1, "\(family)")
            // HELP/TYPE come before the family's first sample, the samples together.
            let typeLine = try #require(lines.firstIndex { $0.hasPrefix("# TYPE \(family) ") })
            let sampleLines = lines.indices.filter { lines[$0].hasPrefix(family + "{") || lines[$0].hasPrefix(family + " ") || lines[$0].hasPrefix(family + "_") }
            #expect(sampleLines.allSatisfy { $0 > typeLine })
            #expect(sampleLines.last.map { $0 - sampleLines[0] + 1 } == sampleLines.count)
        }
        #expect(lines.filter { $0.hasPrefix("pvh_exits_total{") } == [
            "pvh_exits_total{domain=\"alpha\",domid=\"1\"} 120", "pvh_exits_total{domain=\"beta\",domid=\"2\"} 120",
        ])
        #expect(merged.sum("pvh_metrics_scrapes_total") == 15)
        #expect(merged.sum("pvh_exits_total", where: ["domain": "beta"]) == 120)
        #expect(merged.distinct("domain", of: "pvh_domain_vcpus") == 2)
        // A series twice (the same guest merged again) stays once.
        merged.merge(try Exposition(parsing: guest).labelled([.init("domain", "alpha"), .init("domid", "1")]))
        #expect(merged.text == text)
        // A family whose type differs is left out rather than mixed.
        merged.merge(try Exposition(parsing: "# TYPE pvh_exits_total gauge\npvh_exits_total{domain=\"gamma\"} 1\n"))
        #expect(!merged.text.contains("gamma"))
    }

    @Test func labelValuesEscaped() throws {
        let e = try Exposition(parsing: #"m{a="x\"y\\z\nw"} 1"# + "\n")
        #expect(e.samples[0].labels == [.init("a", "x\"y\\z\nw")])
        #expect(e.text == #"m{a="x\"y\\z\nw"} 1"# + "\n")
    }

    @Test("a guest's text that is not the format is refused", arguments: [
        "pvh_x{a=\"1\" 2\n", "pvh_x{a=1} 2\n", "pvh_x two\n", "9bad 1\n", "pvh_x 1 2 3\n", "# TYPE pvh_x bogus\n",
        "pvh_x{a=\"1\"} 1 notatime\n", "pvh_x{a=\"\\q\"} 1\n",
    ])
    func malformed(_ text: String) {
        #expect(throws: Exposition.ParseError.self) { try Exposition(parsing: text) }
    }

    /// The new per-domain counters: hypercalls by Xen's name, exits by
    /// reason, EVTCHNOP_send; only numbers and reasons seen are listed.
    @Test func perDomainCounters() throws {
        let metrics = DomainMetrics()
        metrics.hypercallsByNumber[32].value.wrappingAdd(3, ordering: .relaxed)   // event_channel_op
        metrics.hypercallsByNumber[12].value.wrappingAdd(1, ordering: .relaxed)   // memory_op
        metrics.hypercallsByNumber[DomainMetrics.hypercallSlots].value.wrappingAdd(2, ordering: .relaxed)
        metrics.exitsByReason[ExitReason.io.rawValue].value.wrappingAdd(5, ordering: .relaxed)
        metrics.eventChannelSends.wrappingAdd(3, ordering: .relaxed)
        let registry = PVHMetricsRegistry()
        registry.add(DomainMetricSource(name: "web", domainID: DomainID(rawValue: 1), vcpus: 1, memoryBytes: 1 << 25, domain: metrics))
        let e = try Exposition(parsing: String(decoding: registry.exposition(), as: UTF8.self))
        #expect(e.sum("pvh_hypercalls_by_number_total", where: ["hypercall": "event_channel_op"]) == 3)
        #expect(e.sum("pvh_hypercalls_by_number_total", where: ["hypercall": "memory_op"]) == 1)
        #expect(e.sum("pvh_hypercalls_by_number_total", where: ["hypercall": "other"]) == 2)
        #expect(e.distinct("hypercall", of: "pvh_hypercalls_by_number_total") == 3)
        #expect(e.sum("pvh_exits_by_reason_total", where: ["reason": "io"]) == 5)
        #expect(e.distinct("reason", of: "pvh_exits_by_reason_total") == 1)
        #expect(e.sum("pvh_event_channel_sends_total", where: ["domain": "web", "domid": "1"]) == 3)
    }
}
