import DeviceSpecs
import Testing

/// xl's CPU lists (xl.cfg(5) `cpus=`; xl_parse.c parse_cpurange) parsed
/// and resolved against a made-up host.
struct CPUListTests {
    /// 8 CPUs in two NUMA nodes of 4.
    let nodes = [0: [0, 1, 2, 3], 1: [4, 5, 6, 7]]
    func resolve(_ text: String, cpus: Int = 8) throws -> [Int] {
        try CPUList(parsing: text).resolve(cpuCount: cpus, nodeCPUs: { nodes[$0] }).sorted()
    }

    @Test("CPUs, ranges, exclusions, all and nodes, applied in order from an empty set")
    func lists() throws {
        #expect(try resolve("3") == [3])
        #expect(try resolve("0-3,5") == [0, 1, 2, 3, 5])
        #expect(try resolve("0-7,^3") == [0, 1, 2, 4, 5, 6, 7])
        #expect(try resolve("^3,0-7") == Array(0...7))  // the exclusion came first
        #expect(try resolve("all") == Array(0...7))
        #expect(try resolve("all,^0-1") == Array(2...7))
        #expect(try resolve("nodes:1") == [4, 5, 6, 7])
        #expect(try resolve("node:0-1,^node:1,6") == [0, 1, 2, 3, 6])
        #expect(try resolve("nodes:all") == Array(0...7))
        #expect(try resolve(",2,,") == [2])  // strtok_r skips empty items
        // CPUs past the host's are dropped (the caller refuses an empty result).
        #expect(try resolve("6-40", cpus: 8) == [6, 7])
        #expect(try resolve("9-12", cpus: 8) == [])
        #expect(try CPUList(parsing: "0-3,^1").text == "0-3,^1")
    }

    @Test("refused: empty, ^all, bad ranges, numbers past any host, unknown nodes; each names the list")
    func errors() throws {
        for (text, reason) in [
            ("", "empty: name CPUs (\"0-3\"), nodes (\"nodes:0\") or \"all\""),
            (",", "no CPU named"),
            ("^all", "\"^\" and \"all\" cannot be combined"),
            ("3-1", "invalid CPU range '3-1': want N or N-M (M >= N, at most 8191)"),
            ("1-", "invalid CPU range '1-': want N or N-M (M >= N, at most 8191)"),
            ("x", "invalid CPU range 'x': want N or N-M (M >= N, at most 8191)"),
            ("-1", "invalid CPU range '-1': want N or N-M (M >= N, at most 8191)"),
            ("+1", "invalid CPU range '+1': want N or N-M (M >= N, at most 8191)"),
            ("8192", "invalid CPU range '8192': want N or N-M (M >= N, at most 8191)"),
            ("nodes:x", "invalid node range 'nodes:x': want N or N-M (M >= N, at most 8191)"),
            ("0 ", "invalid CPU range '0 ': want N or N-M (M >= N, at most 8191)"),
        ] {
            #expect(throws: CPUListError(text: text, reason: reason)) { try CPUList(parsing: text) }
        }
        #expect(throws: CPUListError(text: "nodes:2", reason: "NUMA node 2: the host has no such node")) { try resolve("nodes:2") }
        #expect(CPUListError(text: "9-1", reason: "r").description == "'9-1': r")
    }
}
