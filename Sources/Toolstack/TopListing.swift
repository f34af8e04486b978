/// One domain's counters at one moment, as `pvh top` shows them (the API's
/// `GET /v1/stats`, read by the daemon from the guest's metrics).
public struct DomainSample: Hashable, Sendable {
    public var name: String
    /// The API's state name (`running`, `paused`, ...).
    public var state: String
    /// Host CPU time of the guest's vCPUs, seconds.
    public var cpuSeconds: Double
    public var memoryKiB: Int64
    /// nil: no limit.
    public var maximumMemoryKiB: Int64?
    public var vcpus: Int
    public var networks: Int
    public var networkTXBytes: UInt64
    public var networkRXBytes: UInt64
    public var disks: Int
    /// Requests that waited for a free ring slot (xentop's VBD_OO); pvh
    /// counts none, so 0.
    public var diskOutOfRequests: UInt64
    public var diskReads: UInt64
    public var diskWrites: UInt64
    public var diskBytesRead: UInt64
    public var diskBytesWritten: UInt64

    public init(name: String, state: String, cpuSeconds: Double, memoryKiB: Int64, maximumMemoryKiB: Int64?, vcpus: Int,
                networks: Int = 0, networkTXBytes: UInt64 = 0, networkRXBytes: UInt64 = 0, disks: Int = 0,
                diskOutOfRequests: UInt64 = 0, diskReads: UInt64 = 0, diskWrites: UInt64 = 0,
                diskBytesRead: UInt64 = 0, diskBytesWritten: UInt64 = 0) {
        self.name = name
        self.state = state
        self.cpuSeconds = cpuSeconds
        self.memoryKiB = memoryKiB
        self.maximumMemoryKiB = maximumMemoryKiB
        self.vcpus = vcpus
        self.networks = networks
        self.networkTXBytes = networkTXBytes
        self.networkRXBytes = networkRXBytes
        self.disks = disks
        self.diskOutOfRequests = diskOutOfRequests
        self.diskReads = diskReads
        self.diskWrites = diskWrites
        self.diskBytesRead = diskBytesRead
        self.diskBytesWritten = diskBytesWritten
    }
}

/// `pvh top`'s table in the shape of xentop's batch output (xentop(1),
/// tools/xentop/xentop.c's field table): each column right-aligned in
/// xentop's width, one space between, the name cut to 10 characters
/// unless `fullNames` (xentop -f).
public enum TopListing {
    /// xentop's columns and widths.
    static let columns: [(String, Int)] = [
        ("NAME", 10), ("STATE", 6), ("CPU(sec)", 10), ("CPU(%)", 6), ("MEM(k)", 10), ("MEM(%)", 6), ("MAXMEM(k)", 10),
        ("MAXMEM(%)", 9), ("VCPUS", 5), ("NETS", 4), ("NETTX(k)", 8), ("NETRX(k)", 8), ("VBDS", 4), ("VBD_OO", 8),
        ("VBD_RD", 8), ("VBD_WR", 8), ("VBD_RSECT", 10), ("VBD_WSECT", 10), ("SSID", 4),
    ]

    public static func header(nameWidth: Int = 10) -> String {
        columns.enumerated().map { i, c in right(c.0, i == 0 ? nameWidth : c.1) }.joined(separator: " ")
    }

    /// xentop's STATE: `d s b c p r` (dying, shutdown, blocked, crashed,
    /// paused, running), a dash where clear; the order differs from xl list's.
    public static func flags(_ state: String) -> String {
        let set: Set<Character> = switch state {
        case "running": ["r"]
        case "paused": ["p"]
        case "shutdown": ["s"]
        case "crashed": ["s", "c"]
        case "dying": ["d"]
        default: []
        }
        return String("dsbcpr".map { set.contains($0) ? $0 : "-" })
    }

    /// One row. `cpuPercent`: CPU time over the interval since the last
    /// sample (xentop's CPU(%)); `hostMemoryKiB`: the host's total, for MEM(%).
    public static func row(_ s: DomainSample, cpuPercent: Double, hostMemoryKiB: Int64, nameWidth: Int = 10) -> String {
        let name = s.name.count > nameWidth ? String(s.name.prefix(nameWidth)) : s.name
        func percent(_ kib: Int64) -> String { hostMemoryKiB > 0 ? fixed1(Double(kib) * 100 / Double(hostMemoryKiB)) : "n/a" }
        // Sectors of 512 bytes (xentop's VBD_RSECT/VBD_WSECT).
        let values: [String] = [
            name, flags(s.state), String(Int64(max(0, s.cpuSeconds))), fixed1(cpuPercent), String(s.memoryKiB),
            percent(s.memoryKiB), s.maximumMemoryKiB.map(String.init) ?? "no limit", s.maximumMemoryKiB.map(percent) ?? "n/a",
            String(s.vcpus), String(s.networks), String(s.networkTXBytes / 1024), String(s.networkRXBytes / 1024),
            String(s.disks), String(s.diskOutOfRequests), String(s.diskReads), String(s.diskWrites),
            String(s.diskBytesRead / 512), String(s.diskBytesWritten / 512), "0",
        ]
        return zip(values, columns).enumerated().map { i, pair in right(pair.0, i == 0 ? nameWidth : pair.1.1) }
            .joined(separator: " ")
    }

    /// CPU(%) between two samples `seconds` apart: xentop's
    /// `(cpu_ns - prev_cpu_ns) / (interval_ns) * 100`; 0 for the first.
    public static func cpuPercent(now: DomainSample, before: DomainSample?, seconds: Double) -> Double {
        guard let before, seconds > 0 else { return 0 }
        return max(0, now.cpuSeconds - before.cpuSeconds) * 100 / seconds
    }

    /// `%.1f` without Foundation.
    static func fixed1(_ value: Double) -> String {
        let t = Int((max(0, value) * 10).rounded())
        return "\(t / 10).\(t % 10)"
    }

    static func right(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }
}

/// `pvh uptime`'s table (`print_uptime` and `uptime_to_string` in
/// tools/xl/xl_misc.c): the name left-aligned in 33, a space, the id
/// right-aligned in 4, a space, the uptime as `H:MM:SS` with the hour in
/// two places, after `1 day, ` or `N days, ` when there are any.
public enum UptimeListing {
    public static let header = pad("Name", 33) + " " + right("ID", 4) + " Uptime"

    public static func row(name: String, id: Int, seconds: Double) -> String {
        pad(name, 33) + " " + right(String(id), 4) + " " + duration(seconds)
    }

    public static func duration(_ seconds: Double) -> String {
        let total = Int(max(0, seconds))
        let days = total / 86400, hours = total / 3600 % 24, minutes = total / 60 % 60, secs = total % 60
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        let clock = right(String(hours), 2) + ":" + two(minutes) + ":" + two(secs)
        return days == 0 ? clock : "\(days) day\(days == 1 ? "" : "s"), \(clock)"
    }

    static func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
    static func right(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }
}

/// `pvh vcpu-list`'s table, as `xl vcpu-list` prints it
/// (tools/xl/xl_vcpu.c): the name left-aligned in 32, then the domain id
/// and the vCPU right-aligned in 5, the host CPU in 5 (`-` when it has
/// none), the state as three flags (`r` running, `b` blocked, `p` paused
/// or offline), the CPU time in seconds to one place, and the hard and
/// soft affinity as CPU lists (`all` for every CPU).
public enum VCPUListing {
    public static let header = UptimeListing.pad("Name", 32) + " " + right("ID", 5) + " " + right("VCPU", 5) + " "
        + right("CPU", 5) + " State " + right("Time(s)", 9) + " Affinity (Hard / Soft)"

    /// One vCPU's row. `cpu`: the host CPU its thread last ran on (nil: none).
    public static func row(name: String, id: Int, vcpu: Int, cpu: Int?, state: String, seconds: Double,
                           hard: String, soft: String) -> String {
        let tenths = Int((max(0, seconds) * 10).rounded())
        let time = "\(tenths / 10).\(tenths % 10)"
        return UptimeListing.pad(name, 32) + " " + right(String(id), 5) + " " + right(String(vcpu), 5)
            + right(cpu.map(String.init) ?? "-", 5) + "   " + state + "  " + right(time, 8) + "  " + hard + " / " + soft
    }

    /// A set of CPUs as xl prints a cpumap: `all` when it holds every CPU
    /// in `all`, else ascending ranges (`0-3,5`), `none` when empty.
    public static func cpus(_ set: [Int], all: Set<Int>) -> String {
        let sorted = Array(Set(set)).sorted()
        if !all.isEmpty, all.isSubset(of: Set(sorted)) { return "all" }
        guard var start = sorted.first else { return "none" }
        var parts: [String] = [], previous = start
        for cpu in sorted.dropFirst() + [Int.min] {
            if cpu == previous + 1 { previous = cpu; continue }
            parts.append(start == previous ? "\(start)" : "\(start)-\(previous)")
            start = cpu
            previous = cpu
        }
        return parts.joined(separator: ",")
    }

    static func right(_ s: String, _ width: Int) -> String { UptimeListing.right(s, width) }
}
