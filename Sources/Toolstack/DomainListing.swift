/// `pvh list`'s table, in xl's columns (`list_domains` in tools/xl/xl_info.c):
/// `Name ID Mem VCPUs State Time(s)`, the name left-aligned in 40, the
/// numbers right-aligned in 5, the six state flags, CPU time in seconds
/// with one decimal.
public enum DomainListing {
    public static let header = pad("Name", 40) + " " + right("ID", 5) + " " + right("Mem", 5) + " " + right("VCPUs", 5) + " "
        + right("State", 10) + " " + right("Time(s)", 9)

    /// One row: `memoryMiB` and `vcpus` as configured, `cpuSeconds` the
    /// guest process's CPU time.
    public static func row(name: String, id: Int, memoryMiB: Int, vcpus: Int, flags: String, cpuSeconds: Double) -> String {
        pad(name, 40) + " " + right(String(id), 5) + " " + right(String(memoryMiB), 5) + " " + right(String(vcpus), 5)
            + "     " + flags + "  " + right(tenths(cpuSeconds), 8)
    }

    public static func row(_ record: DomainRecord, cpuSeconds: Double) -> String {
        row(name: record.name, id: Int(record.id.rawValue), memoryMiB: record.configuration.memoryMiB,
            vcpus: record.configuration.vcpus, flags: record.state.flags, cpuSeconds: cpuSeconds)
    }

    /// `%8.1f` without Foundation.
    static func tenths(_ seconds: Double) -> String {
        let t = Int((max(0, seconds) * 10).rounded())
        return "\(t / 10).\(t % 10)"
    }

    static func pad(_ s: String, _ width: Int) -> String { s.count >= width ? s : s + String(repeating: " ", count: width - s.count) }
    static func right(_ s: String, _ width: Int) -> String { s.count >= width ? s : String(repeating: " ", count: width - s.count) + s }
}
