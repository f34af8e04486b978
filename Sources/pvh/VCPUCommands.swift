import ArgumentParser
import DeviceSpecs
import Foundation
import HostIO
import PVHAPI
import PVHAPIClient
import Toolstack

#if canImport(Glibc)
import Glibc
#endif

// `pvh vcpu-list` and `pvh vcpu-pin` (xl's, tools/xl/xl_vcpu.c). A pvh
// vCPU is a thread of its guest's process, named `pvh-vcpuN`: the daemon's
// API gives each guest's process, and the threads are read and bound
// through proc(5) and sched_setaffinity(2) here, as `taskset` would, so
// the API needs no route of its own for them. Binding a jailed guest's
// thread (another uid) needs root, as xl needs it.

/// A running guest's vCPU threads, found by name under /proc/PID/task.
struct VCPUThreads {
    struct Thread {
        let tid: Int32
        /// proc(5) stat's state: R running, S/D sleeping, T stopped, ...
        let state: Character
        /// The CPU it last ran on (stat's `processor`).
        let cpu: Int?
        /// user + system time, seconds.
        let seconds: Double
        /// Its hard affinity (sched_getaffinity), nil if unreadable.
        let affinity: [Int]?
    }

    /// By vCPU number.
    let threads: [Int: Thread]

    init(pid: Int) {
        var found: [Int: Thread] = [:]
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        let ticks = Double(max(1, sysconf(Int32(_SC_CLK_TCK))))
        for entry in tasks {
            guard let tid = Int32(entry),
                  let comm = try? String(contentsOfFile: "/proc/\(pid)/task/\(entry)/comm", encoding: .utf8),
                  comm.hasPrefix("pvh-vcpu"),
                  let vcpu = Int(comm.dropFirst("pvh-vcpu".count).trimmingCharacters(in: .whitespacesAndNewlines)),
                  let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // Fields after "(comm)": 3 state, 14 utime, 15 stime, 39 processor.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 36, let state = fields[0].first else { continue }
            let seconds = (Double(fields[11]) ?? 0) / ticks + (Double(fields[12]) ?? 0) / ticks
            found[vcpu] = Thread(tid: tid, state: state, cpu: Int(fields[36]), seconds: seconds,
                                 affinity: HostCPUs.affinity(ofThread: tid))
        }
        threads = found
    }
}

struct VCPUList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vcpu-list",
        abstract: "List each guest's vCPUs: the host CPU each last ran on, its state, CPU time and affinity (xl vcpu-list).")

    @Argument(help: "Only these guests (each must exist).") var names: [String] = []

    func run() throws {
        try reportingAPIErrors {
            let domains = try namedDomains(names)
            let online = HostCPUs.current().online
            print(VCPUListing.header)
            for d in domains.sorted(by: { $0.domid < $1.domid }) where names.isEmpty || names.contains(d.name) {
                let threads = d.pid.map { VCPUThreads(pid: $0).threads } ?? [:]
                for vcpu in 0..<d.vcpus {
                    let t = threads[vcpu]
                    // xl's flags: r running, b blocked, p paused (or offline: no thread).
                    let state = d.state == "paused" || t == nil || t?.state == "T" ? "--p" : t?.state == "R" ? "r--" : "-b-"
                    print(VCPUListing.row(name: d.name, id: d.domid, vcpu: vcpu, cpu: t?.cpu, state: state,
                                          seconds: t?.seconds ?? 0,
                                          hard: t?.affinity.map { VCPUListing.cpus($0, all: online) } ?? "-", soft: "all"))
                }
            }
        }
    }
}

struct VCPUPin: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vcpu-pin",
        abstract: "Bind a guest's vCPU (or all) to host CPUs while it runs (xl vcpu-pin; cpus= sets it at boot).",
        discussion: """
            HARD is a CPU list in xl's syntax (0-3,^1, nodes:0, all) or - to leave it. SOFT may only be - or all: \
            Linux has no soft affinity for a thread. The binding lasts until the guest's process ends or the guest \
            restarts (its config's cpus= applies again). Binding a jailed guest (another uid) needs root.
            """)

    @Argument(help: "The guest's name.") var name: String
    @Argument(help: ArgumentHelp("A vCPU number, or all.", valueName: "vcpu")) var vcpu: String
    @Argument(help: ArgumentHelp("Host CPUs, or - to leave them.", valueName: "hard")) var hard: String
    @Argument(help: ArgumentHelp("- or all (no soft affinity on Linux).", valueName: "soft")) var soft: String?

    func run() throws {
        if let soft, soft != "-", soft != "all" {
            usageFailure("vcpu-pin: soft affinity '\(soft)': Linux has no soft affinity for a thread (give - or all)")
        }
        guard hard != "-" else { return }
        let list: CPUList
        do { list = try CPUList(parsing: hard) } catch { usageFailure("vcpu-pin: \(error)") }
        let host = HostCPUs.current()
        let cpus: [Int]
        do {
            cpus = try list.resolve(cpuCount: host.count, nodeCPUs: { host.nodes[$0] }).intersection(host.online).sorted()
        } catch {
            usageFailure("vcpu-pin: \(error)")
        }
        guard !cpus.isEmpty else { usageFailure("vcpu-pin: '\(hard)': no online CPU of this host") }
        try reportingAPIErrors {
            let client = try daemon(for: name)
            guard let domain = try namedDomains([name]).first(where: { $0.name == name }) else {
                throw client.fail("\(name) is an invalid domain identifier")
            }
            let vcpus: [Int]
            if vcpu == "all" {
                vcpus = Array(0..<domain.vcpus)
            } else if let n = Int(vcpu), (0..<domain.vcpus).contains(n) {
                vcpus = [n]
            } else {
                usageFailure("vcpu-pin: vCPU '\(vcpu)': \(name) has vCPUs 0 to \(domain.vcpus - 1) (or give all)")
            }
            guard let pid = domain.pid else { throw client.fail("\(name): its process is not running (state \(domain.state))") }
            let threads = VCPUThreads(pid: pid).threads
            for n in vcpus {
                guard let thread = threads[n] else { throw client.fail("\(name): vCPU \(n) has no thread (not started yet)") }
                if let errno = HostCPUs.pin(thread: thread.tid, to: cpus) {
                    let why = String(cString: strerror(errno))
                    throw client.fail("\(name): vCPU \(n) (thread \(thread.tid)): \(why)"
                        + (errno == EPERM ? " (binding another user's thread needs root)" : ""))
                }
            }
        }
    }
}
