import HostIO
import Testing

/// The kernel's CPU lists as sysfs writes them
/// (Documentation/admin-guide/cputopology.rst: `0-3,8-11`; an empty line
/// for an empty set, as a CPU-less node's `cpulist`).
@Suite("HostCPUs")
struct HostCPUsTests {
    @Test("CPU lists: single CPUs, ranges, the empty set; anything else is not a list")
    func lists() {
        #expect(HostCPUs.parseList("0-3,8-11\n") == [0, 1, 2, 3, 8, 9, 10, 11])
        #expect(HostCPUs.parseList("5") == [5])
        #expect(HostCPUs.parseList("0,2,4-5") == [0, 2, 4, 5])
        #expect(HostCPUs.parseList("\n") == [])
        #expect(HostCPUs.parseList("") == [])
        for bad in ["3-1", "x", "0-", "-1", "1,,2", "0-3,", "0-8192", "^1", "all", "1 2"] {
            #expect(HostCPUs.parseList(bad) == nil, "\(bad)")
        }
    }

    @Test("this host: every online CPU is below the possible count and in some NUMA node's list")
    func thisHost() {
        let host = HostCPUs.current()
        #expect(!host.online.isEmpty)
        #expect(host.online.allSatisfy { $0 < host.count })
        let inNodes = Set(host.nodes.values.joined())
        #expect(host.online.isSubset(of: inNodes))
        #expect(host.count >= host.online.count)
    }
}
