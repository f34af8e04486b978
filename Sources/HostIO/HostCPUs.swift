import CHostIO
import DeviceSpecs
import Foundation

/// The host's CPUs and NUMA nodes as sysfs lists them
/// (Documentation/ABI/stable/sysfs-devices-system-cpu, sysfs-devices-node),
/// and a thread's CPU affinity (sched_setaffinity(2)): what vCPU pinning
/// (xl's `cpus=`) is resolved against and applied with.
public struct HostCPUs: Sendable, Equatable {
    /// The CPUs online now.
    public let online: Set<Int>
    /// One more than the highest CPU number the host could ever have
    /// (`possible`): CPU numbers run 0 to `count - 1`.
    public let count: Int
    /// Each NUMA node's CPUs (none on a kernel without NUMA: node 0 is then
    /// every possible CPU, as libxl treats a host without NUMA information).
    public let nodes: [Int: [Int]]

    public init(online: Set<Int>, count: Int, nodes: [Int: [Int]]) {
        self.online = online
        self.count = count
        self.nodes = nodes
    }

    /// This host's as first read (`current()`), in this process: read
    /// before the guest process's jail, whose root has no /sys, so a guest
    /// rebuilt there (a reboot) is pinned as at its first boot.
    public static let atStart: HostCPUs = current()

    /// This host's, read from /sys/devices/system now.
    public static func current() -> HostCPUs {
        let base = "/sys/devices/system"
        let possible = read("\(base)/cpu/possible").flatMap(parseList) ?? []
        let online = read("\(base)/cpu/online").flatMap(parseList) ?? []
        let count = (possible.max() ?? online.max() ?? 0) + 1
        var nodes: [Int: [Int]] = [:]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "\(base)/node")) ?? []
        for entry in entries where entry.hasPrefix("node") {
            guard let n = Int(entry.dropFirst(4)), let cpus = read("\(base)/node/\(entry)/cpulist").flatMap(parseList) else { continue }
            nodes[n] = cpus.sorted()
        }
        if nodes.isEmpty { nodes[0] = Array(0..<count) }
        return HostCPUs(online: Set(online), count: count, nodes: nodes)
    }

    private static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }

    /// The kernel's CPU list format (`0-3,8-11`, bitmap_parselist; empty
    /// for an empty set); nil if it is not one. Each item is what xl's
    /// CPU lists also take (`CPUList.range`).
    public static func parseList(_ text: String) -> [Int]? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !trimmed.isEmpty else { return [] }
        var cpus: [Int] = []
        for item in trimmed.split(separator: ",", omittingEmptySubsequences: false) {
            guard let range = CPUList.range(item) else { return nil }
            cpus.append(contentsOf: range)
        }
        return cpus
    }

    /// Binds the calling thread to `cpus` (sched_setaffinity on itself);
    /// the errno on failure (EINVAL: none of them is online).
    public static func pinCurrentThread(to cpus: [Int]) -> Int32? { pin(thread: 0, to: cpus) }

    /// Binds thread `tid` (0: the caller) to `cpus`; the errno on failure
    /// (EPERM: another user's thread, without CAP_SYS_NICE; ESRCH: gone).
    public static func pin(thread tid: Int32, to cpus: [Int]) -> Int32? {
        let values = cpus.map { CInt(clamping: $0) }
        // SAFETY: the shim reads exactly `values.count` ints from the buffer.
        let result = unsafe values.withUnsafeBufferPointer { unsafe pvh_set_thread_affinity(tid, $0.baseAddress, CInt($0.count)) }
        return result == 0 ? nil : -result
    }

    /// The CPUs thread `tid` may run on (0: the caller), or nil when it
    /// cannot be read (no such thread, or not allowed).
    public static func affinity(ofThread tid: Int32) -> [Int]? {
        var cpus = [CInt](repeating: 0, count: 8192)
        // SAFETY: the shim writes at most `cpus.count` entries into the buffer.
        let n = unsafe cpus.withUnsafeMutableBufferPointer { unsafe pvh_get_thread_affinity(tid, $0.baseAddress, CInt($0.count)) }
        guard n >= 0 else { return nil }
        return cpus.prefix(Int(min(n, 8192))).map(Int.init)
    }
}
