import Testing
import Toolstack
import XenABI

@Suite struct MemorySizeTests {
    /// xl's parse_mem_size_kb: no unit is MiB; t, g, m, k, b in either case.
    @Test("sizes as xl mem-set takes them", arguments: [
        ("512", 512 * 1024), ("512m", 512 * 1024), ("512M", 512 * 1024), ("1g", 1 << 20), ("2G", 2 << 20),
        ("1t", 1 << 30), ("262144k", 262_144), ("262144K", 262_144), ("1048576b", 1024), ("1023b", 0), ("0", 0),
    ] as [(String, Int64)])
    func good(_ text: String, _ kib: Int64) {
        #expect(MemorySize.kibibytes(text) == kib)
    }

    @Test("what xl refuses, and what would overflow", arguments: [
        "", "m", "-5", "+5", "1.5g", "12mb", "1x", " 5", "5 ", "0x10", "99999999999999999999", "9999999999t", "１２",
    ])
    func bad(_ text: String) {
        #expect(MemorySize.kibibytes(text) == nil)
    }
}

@Suite struct TopListingTests {
    let web = DomainSample(name: "web", state: "running", cpuSeconds: 12.7, memoryKiB: 262_144, maximumMemoryKiB: 524_288, vcpus: 2,
                           networks: 1, networkTXBytes: 10_240, networkRXBytes: 2047, disks: 2, diskReads: 30, diskWrites: 7,
                           diskBytesRead: 1_048_576, diskBytesWritten: 4096)

    @Test func headerIsXentops() {
        #expect(TopListing.header() == "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID")
    }

    @Test func rowInXentopsWidths() {
        let row = TopListing.row(web, cpuPercent: 25.04, hostMemoryKiB: 2_097_152)
        #expect(row == "       web -----r         12   25.0     262144   12.5     524288      25.0     2    1       10        1    2        0       30        7       2048          8    0")
        // Every column under its header: the same length, right-aligned.
        #expect(row.count == TopListing.header().count)
    }

    @Test func namesCutOrWidenedAndStateFlagsInXentopsOrder() {
        var long = web
        long.name = "a-very-long-guest-name"
        long.state = "crashed"
        long.maximumMemoryKiB = nil
        let row = TopListing.row(long, cpuPercent: 0, hostMemoryKiB: 0)
        #expect(row.hasPrefix("a-very-lon -s-c--"))
        #expect(row.contains("no limit       n/a"))
        #expect(row.contains("    n/a ") || row.contains(" n/a "))
        let full = TopListing.row(long, cpuPercent: 0, hostMemoryKiB: 0, nameWidth: 22)
        #expect(full.hasPrefix("a-very-long-guest-name -s-c--"))
        #expect(TopListing.flags("paused") == "----p-" && TopListing.flags("dying") == "d-----")
    }

    @Test func cpuPercentOverTheInterval() {
        var later = web
        later.cpuSeconds += 1.5
        #expect(TopListing.cpuPercent(now: later, before: web, seconds: 3) == 50)
        #expect(TopListing.cpuPercent(now: web, before: nil, seconds: 3) == 0)
        // A restarted guest's counter starts again: never negative.
        #expect(TopListing.cpuPercent(now: web, before: later, seconds: 3) == 0)
    }

    @Test func uptimeAsXlPrintsIt() {
        #expect(UptimeListing.header == "Name                                ID Uptime")
        #expect(UptimeListing.row(name: "web", id: 3, seconds: 65) == "web                                  3  0:01:05")
        #expect(UptimeListing.duration(86_400 + 3600 * 10 + 59) == "1 day, 10:00:59")
        #expect(UptimeListing.duration(3 * 86_400) == "3 days,  0:00:00")
        #expect(UptimeListing.duration(-5) == " 0:00:00")
    }

    @Test("vcpu-list's table as xl vcpu-list prints it; CPU sets as xl prints a cpumap")
    func vcpuListAsXlPrintsIt() {
        #expect(VCPUListing.header == "Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)")
        #expect(VCPUListing.row(name: "Domain-0", id: 0, vcpu: 0, cpu: 1, state: "-b-", seconds: 271.14, hard: "all", soft: "all")
            == "Domain-0                             0     0    1   -b-     271.1  all / all")
        #expect(VCPUListing.row(name: "web", id: 7, vcpu: 12, cpu: nil, state: "--p", seconds: 0, hard: "0-1", soft: "all")
            == "web                                  7    12    -   --p       0.0  0-1 / all")
        let online: Set<Int> = [0, 1, 2, 3, 4, 5, 6, 7]
        #expect(VCPUListing.cpus([0, 1, 2, 3, 4, 5, 6, 7], all: online) == "all")
        #expect(VCPUListing.cpus([3, 0, 1, 2, 5, 7, 6], all: online) == "0-3,5-7")
        #expect(VCPUListing.cpus([4], all: online) == "4")
        #expect(VCPUListing.cpus([0, 2, 4], all: online) == "0,2,4")
        #expect(VCPUListing.cpus([], all: online) == "none")
    }

    @Test func guestLaunchPassesItsMetricsSocket() {
        var launch = GuestLaunch(executable: "/usr/bin/pvh", configPath: "/run/pvh/.daemon/7.cfg", logPath: "/l", domain: DomainID(rawValue: 7))
        launch.metricsSocket = "/run/pvh/.daemon/7.metrics"
        #expect(launch.arguments == ["/usr/bin/pvh", "create", "-F", "--store-fd", "3", "--guest-store-fd", "4", "--domid", "7",
                                     "--metrics", "/run/pvh/.daemon/7.metrics", "/run/pvh/.daemon/7.cfg", "on_reboot=\"destroy\""])
    }
}
