/// A set of host CPUs as xl writes one (xl.cfg(5) `cpus=`, `xl vcpu-pin`;
/// tools/xl/xl_parse.c `parse_cpurange`): comma-separated items, each a
/// CPU `N`, a range `N-M`, `all`, or with `node:`/`nodes:` the CPUs of
/// NUMA nodes; `^` before an item takes its CPUs out again. Items apply in
/// order from an empty set: `"0-7,^3"` is 0-2 and 4-7, `"^3,0-7"` is 0-7.
///
/// Kept as written and resolved against a host's CPUs only when a guest is
/// built (`resolve`), so parsing a config stays pure.
public struct CPUList: Sendable, Equatable, CustomStringConvertible {
    public enum Item: Sendable, Equatable {
        /// `all`: every CPU the host has (`^all` is refused, as xl does).
        case all
        /// `N`, `N-M`, `^N`, `^N-M`.
        case cpus(ClosedRange<Int>, excluded: Bool)
        /// `nodes:N-M`, `^node:N`: the CPUs of those NUMA nodes.
        case nodes(ClosedRange<Int>, excluded: Bool)
    }

    public let items: [Item]
    /// The text it was parsed from.
    public let text: String

    /// Linux's largest `NR_CPUS` (x86 `CONFIG_NR_CPUS_RANGE_END` with
    /// MAXSMP): a CPU or node number above it is a typo, not a host.
    public static let maximumCPU = 8191

    public var description: String { text }

    public init(parsing text: String) throws(CPUListError) {
        guard !text.isEmpty else { throw CPUListError(text: text, reason: "empty: name CPUs (\"0-3\"), nodes (\"nodes:0\") or \"all\"") }
        var items: [Item] = []
        // strtok_r in xl: empty items between commas are skipped.
        for piece in text.split(separator: ",", omittingEmptySubsequences: true) {
            var rest = Substring(piece)
            let excluded = rest.hasPrefix("^")
            if excluded { rest = rest.dropFirst() }
            var nodes = false
            for prefix in ["nodes:", "node:"] where rest.hasPrefix(prefix) {
                rest = rest.dropFirst(prefix.count)
                nodes = true
                break
            }
            if rest == "all" {
                guard !excluded else { throw CPUListError(text: text, reason: "\"^\" and \"all\" cannot be combined") }
                items.append(.all)
                continue
            }
            guard let range = Self.range(rest) else {
                throw CPUListError(text: text, reason: "invalid \(nodes ? "node" : "CPU") range '\(piece)': want N or N-M (M >= N, at most \(Self.maximumCPU))")
            }
            items.append(nodes ? .nodes(range, excluded: excluded) : .cpus(range, excluded: excluded))
        }
        guard !items.isEmpty else { throw CPUListError(text: text, reason: "no CPU named") }
        self.items = items
        self.text = text
    }

    /// `N` or `N-M`, decimal digits only (xl's `parse_range`, without
    /// strtoul's sign and white space), M >= N, both at most `maximumCPU`.
    /// Also an item of the kernel's CPU lists (sysfs `cpulist`,
    /// bitmap_parselist), which `HostCPUs` reads with it.
    public static func range(_ text: Substring) -> ClosedRange<Int>? {
        func number(_ s: Substring) -> Int? {
            guard (1...5).contains(s.count), s.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(s), n <= maximumCPU else { return nil }
            return n
        }
        let parts = text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard let low = number(parts[0]) else { return nil }
        guard parts.count == 2 else { return low...low }
        guard let high = number(parts[1]), high >= low else { return nil }
        return low...high
    }

    /// The CPUs it names on a host with `cpuCount` possible CPUs (0 to
    /// cpuCount - 1) whose NUMA node `n` holds `nodeCPUs(n)` (nil: no such
    /// node). CPUs past the host's are dropped; an unknown node is an
    /// error, as libxl_node_to_cpumap's failure is in xl.
    public func resolve(cpuCount: Int, nodeCPUs: (Int) -> [Int]?) throws(CPUListError) -> Set<Int> {
        var set = Set<Int>()
        let host = 0..<max(0, cpuCount)
        for item in items {
            switch item {
            case .all:
                set.formUnion(host)
            case .cpus(let range, let excluded):
                let low = range.lowerBound, high = min(range.upperBound, cpuCount - 1)
                let cpus = low <= high ? Array(low...high) : []
                if excluded { set.subtract(cpus) } else { set.formUnion(cpus) }
            case .nodes(let range, let excluded):
                for node in range {
                    guard let cpus = nodeCPUs(node) else {
                        throw CPUListError(text: text, reason: "NUMA node \(node): the host has no such node")
                    }
                    let onHost = cpus.filter { host.contains($0) }
                    if excluded { set.subtract(onHost) } else { set.formUnion(onHost) }
                }
            }
        }
        return set
    }
}

/// Why a CPU list was refused: one line with `text`.
public struct CPUListError: Error, Sendable, Equatable, CustomStringConvertible {
    public let text: String
    public let reason: String
    public var description: String { "'\(text)': \(reason)" }

    public init(text: String, reason: String) {
        self.text = text
        self.reason = reason
    }
}
