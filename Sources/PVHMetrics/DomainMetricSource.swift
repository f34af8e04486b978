import BlockBackend
import ConsoleBackend
import DeviceRuntime
import Foundation
import NetBackend
import VMM
import XenABI

/// The counter objects of one domain the registry reads at scrape time:
/// the domain's own, its console's, every runtime device's, each disk's and
/// each network queue's. `init(domain:)` takes them from a running
/// `Domain`; the memberwise form lets a test (or the coming daemon, for a
/// domain in another process) hand in the objects themselves.
public struct DomainMetricSource: Sendable {
    /// A network interface: its device name (`vif-0`) and per-queue counters.
    public struct NetworkInterface: Sendable {
        public let device: String
        public let queues: [NetMetrics]
        public init(device: String, queues: [NetMetrics]) {
            self.device = device
            self.queues = queues
        }
    }

    /// A disk: its device name (`vbd-51712`) and counters.
    public struct Disk: Sendable {
        public let device: String
        public let metrics: BlockMetrics
        public init(device: String, metrics: BlockMetrics) {
            self.device = device
            self.metrics = metrics
        }
    }

    public let name: String
    public let domainID: DomainID
    public let vcpus: Int
    public let memoryBytes: UInt64
    public let domain: DomainMetrics
    public let console: ConsoleMetrics?
    /// Its devices are listed at each scrape: a block device's runtime
    /// device is made per connection.
    public let runtime: DeviceRuntime?
    /// Its disks and network interfaces now: read at each scrape, so a
    /// hot-plugged device's counters appear with it and a detached one's
    /// go.
    public var disks: [Disk] { currentDisks() }
    public var networks: [NetworkInterface] { currentNetworks() }
    private let currentDisks: @Sendable () -> [Disk]
    private let currentNetworks: @Sendable () -> [NetworkInterface]

    public init(name: String, domainID: DomainID, vcpus: Int, memoryBytes: UInt64, domain: DomainMetrics,
                console: ConsoleMetrics? = nil, runtime: DeviceRuntime? = nil, disks: [Disk] = [],
                networks: [NetworkInterface] = []) {
        self.init(name: name, domainID: domainID, vcpus: vcpus, memoryBytes: memoryBytes, domain: domain, console: console,
                  runtime: runtime, disks: { disks }, networks: { networks })
    }

    /// `disks` and `networks` are asked at each scrape.
    public init(name: String, domainID: DomainID, vcpus: Int, memoryBytes: UInt64, domain: DomainMetrics,
                console: ConsoleMetrics? = nil, runtime: DeviceRuntime? = nil, disks: @escaping @Sendable () -> [Disk],
                networks: @escaping @Sendable () -> [NetworkInterface]) {
        self.name = name
        self.domainID = domainID
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
        self.domain = domain
        self.console = console
        self.runtime = runtime
        currentDisks = disks
        currentNetworks = networks
    }

    /// The counters of a built (running or ended) domain.
    public init(domain: Domain) {
        let configuration = domain.configuration
        self.init(
            name: configuration.name, domainID: domain.domainID, vcpus: configuration.vcpus,
            memoryBytes: UInt64(configuration.memoryMiB) << 20, domain: domain.metrics,
            console: domain.consoleBackend.metrics, runtime: domain.devices,
            disks: { domain.diskMetrics.map { Disk(device: $0.device, metrics: $0.metrics) } },
            networks: { domain.networkInterfaceMetrics.map { NetworkInterface(device: $0.device, queues: $0.queues) } })
    }
}

/// One reading: a metric, its labels beyond the domain's, the object the
/// value was read from (a counter's identity across scrapes) and the value.
struct Sample {
    enum Value {
        /// A counter's running total in its source object.
        case total(UInt64)
        /// A gauge's level.
        case level(Double)
    }
    let metric: PVHMetric
    let labels: [(String, String)]
    let source: AnyObject
    let value: Value
}

extension DomainMetricSource {
    /// Every value, read once each (relaxed loads: the counters are
    /// statistics, never used for synchronisation).
    func samples() -> [Sample] {
        var out: [Sample] = []
        func total(_ metric: PVHMetric, _ labels: [(String, String)], _ source: AnyObject, _ value: UInt64) {
            out.append(Sample(metric: metric, labels: labels, source: source, value: .total(value)))
        }
        func level(_ metric: PVHMetric, _ labels: [(String, String)], _ source: AnyObject, _ value: Double) {
            out.append(Sample(metric: metric, labels: labels, source: source, value: .level(value)))
        }

        let d = domain
        level(.domainVCPUs, [], d, Double(vcpus))
        level(.domainMemoryBytes, [], d, Double(memoryBytes))
        total(.hypercalls, [("transport", "page")], d, d.pageHypercalls.load(ordering: .relaxed))
        total(.hypercalls, [("transport", "breakpoint")], d, d.breakpointHypercalls.load(ordering: .relaxed))
        total(.hypercalls, [("transport", "kvm")], d, d.kvmXenHypercalls.load(ordering: .relaxed))
        total(.hypercallPageInstalls, [], d, d.hypercallPageInstalls.load(ordering: .relaxed))
        total(.exits, [], d, d.exits.load(ordering: .relaxed))
        total(.upcalls, [("outcome", "injected")], d, d.upcallsInjected.load(ordering: .relaxed))
        total(.upcalls, [("outcome", "refused")], d, d.upcallsRefused.load(ordering: .relaxed))
        total(.upcalls, [("outcome", "owed_delivered")], d, d.upcallsOwedDelivered.load(ordering: .relaxed))
        total(.callbackVectorsQueued, [], d, d.callbackVectorsQueued.load(ordering: .relaxed))
        total(.vcpuBlocks, [], d, d.blocks.load(ordering: .relaxed))
        total(.emulationFailuresDelivered, [], d, d.emulationFailuresDelivered.load(ordering: .relaxed))
        total(.syscallsCompleted, [], d, d.syscallsCompleted.load(ordering: .relaxed))
        total(.userTrapsCompleted, [], d, d.userTrapsCompleted.load(ordering: .relaxed))
        for (number, cell) in d.hypercallsByNumber.enumerated() {
            let count = cell.current
            // Only numbers the guest used: most of the 65 never are.
            if count > 0 { total(.hypercallsByNumber, [("hypercall", Self.hypercallLabels[number])], cell, count) }
        }
        for reason in ExitReason.allCases {
            let cell = d.exitsByReason[reason.rawValue]
            let count = cell.current
            if count > 0 { total(.exitsByReason, [("reason", reason.label)], cell, count) }
        }
        total(.eventChannelSends, [], d, d.eventChannelSends.load(ordering: .relaxed))
        for (vcpu, tid) in d.vcpuThreadIDs.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            guard let time = ThreadCPUTime(threadID: tid) else { continue }
            // Ticks, not seconds, as the counter's running total: whole
            // increments, converted on the way out by the registry.
            total(.vcpuSeconds, [("vcpu", String(vcpu)), ("mode", "user")], d, time.userTicks)
            total(.vcpuSeconds, [("vcpu", String(vcpu)), ("mode", "system")], d, time.systemTicks)
        }

        if let console {
            total(.consoleBytes, [("direction", "output")], console, console.outputWritten.load(ordering: .relaxed))
            total(.consoleBytes, [("direction", "input")], console, console.inputQueued.load(ordering: .relaxed))
        }

        for device in runtime?.devices ?? [] {
            let m = device.metrics, labels = [("device", device.name)]
            total(.deviceGuestNotifications, labels, m, m.guestNotifications.load(ordering: .relaxed))
            total(.deviceHostRequests, labels, m, m.hostRequests.load(ordering: .relaxed))
            total(.devicePumps, labels, m, m.pumps.load(ordering: .relaxed))
            total(.devicePumpsOnForbiddenThreads, labels, m, m.pumpsOnForbiddenThreads.load(ordering: .relaxed))
            total(.deviceNotificationsToGuest, labels, m, m.notificationsToGuest.load(ordering: .relaxed))
            total(.deviceFaults, labels + [("kind", "any")], m, m.faults.load(ordering: .relaxed))
            total(.deviceFaults, labels + [("kind", "hostile_guest")], m, m.hostileGuestFaults.load(ordering: .relaxed))
            total(.deviceIgnoredAfterFault, labels, m, m.ignoredAfterFault.load(ordering: .relaxed))
        }

        for disk in disks {
            let m = disk.metrics, device = ("device", disk.device)
            total(.blockRequests, [device, ("op", "read")], m, m.readRequests.load(ordering: .relaxed))
            total(.blockRequests, [device, ("op", "write")], m, m.writeRequests.load(ordering: .relaxed))
            total(.blockRequests, [device, ("op", "flush")], m, m.flushRequests.load(ordering: .relaxed))
            total(.blockRequests, [device, ("op", "barrier")], m, m.barrierRequests.load(ordering: .relaxed))
            total(.blockRequests, [device, ("op", "discard")], m, m.discardRequests.load(ordering: .relaxed))
            total(.blockRequests, [device, ("op", "indirect")], m, m.indirectRequests.load(ordering: .relaxed))
            total(.blockRequests, [device, ("op", "unknown")], m, m.unknownRequests.load(ordering: .relaxed))
            total(.blockBytes, [device, ("direction", "read")], m, m.bytesRead.load(ordering: .relaxed))
            total(.blockBytes, [device, ("direction", "write")], m, m.bytesWritten.load(ordering: .relaxed))
            total(.blockResponses, [device, ("status", "error")], m, m.errorResponses.load(ordering: .relaxed))
            total(.blockResponses, [device, ("status", "not_supported")], m,
                  m.notSupportedResponses.load(ordering: .relaxed))
            total(.blockErrors, [device, ("cause", "rejected")], m, m.rejectedRequests.load(ordering: .relaxed))
            total(.blockErrors, [device, ("cause", "host")], m, m.hostErrors.load(ordering: .relaxed))
            level(.blockRequestsInFlight, [device], m, Double(max(0, m.requestsInFlight.load(ordering: .relaxed))))
            total(.blockInlineOperations, [device], m, m.inlineOperations.load(ordering: .relaxed))
        }

        for interface in networks {
            for (index, m) in interface.queues.enumerated() {
                let queue = [("device", interface.device), ("queue", String(index))]
                total(.netPackets, queue + [("direction", "tx")], m, m.txPackets.load(ordering: .relaxed))
                total(.netPackets, queue + [("direction", "rx")], m, m.rxPackets.load(ordering: .relaxed))
                total(.netBytes, queue + [("direction", "tx")], m, m.txBytes.load(ordering: .relaxed))
                total(.netBytes, queue + [("direction", "rx")], m, m.rxBytes.load(ordering: .relaxed))
                total(.netGSOPackets, queue + [("direction", "tx")], m, m.txGSOPackets.load(ordering: .relaxed))
                total(.netGSOPackets, queue + [("direction", "rx")], m, m.rxGSOPackets.load(ordering: .relaxed))
                total(.netSegmentedPackets, queue, m, m.txSegmentedPackets.load(ordering: .relaxed))
                total(.netChecksumsCompleted, queue + [("direction", "tx")], m,
                      m.txChecksumsCompleted.load(ordering: .relaxed))
                total(.netChecksumsCompleted, queue + [("direction", "rx")], m,
                      m.rxChecksumsCompleted.load(ordering: .relaxed))
                total(.netRXRingFull, queue, m, m.rxRingFull.load(ordering: .relaxed))
                total(.netTXCreditWaits, queue, m, m.txCreditWaits.load(ordering: .relaxed))
                for reason in NetDropReason.allCases {
                    total(.netDrops, queue + [("reason", reason.metricLabel)], m, m.dropped(reason))
                }
            }
        }
        return out
    }
}

extension DomainMetricSource {
    /// The `hypercall` label of each of `DomainMetrics.hypercallsByNumber`'s
    /// cells: Xen's name without `__HYPERVISOR_` (xen.h), the number for
    /// one Xen does not define, `other` for the last cell.
    static let hypercallLabels: [String] = (0...DomainMetrics.hypercallSlots).map { n in
        guard n < DomainMetrics.hypercallSlots else { return "other" }
        guard let known = HypercallNumber(rawValue: UInt64(n)) else { return String(n) }
        return label(known)
    }

    static func label(_ hypercall: HypercallNumber) -> String {
        switch hypercall {
        case .setTrapTable: "set_trap_table"
        case .mmuUpdate: "mmu_update"
        case .setGDT: "set_gdt"
        case .stackSwitch: "stack_switch"
        case .setCallbacks: "set_callbacks"
        case .fpuTaskswitch: "fpu_taskswitch"
        case .schedOpCompat: "sched_op_compat"
        case .platformOp: "platform_op"
        case .setDebugreg: "set_debugreg"
        case .getDebugreg: "get_debugreg"
        case .updateDescriptor: "update_descriptor"
        case .memoryOp: "memory_op"
        case .multicall: "multicall"
        case .updateVAMapping: "update_va_mapping"
        case .setTimerOp: "set_timer_op"
        case .eventChannelOpCompat: "event_channel_op_compat"
        case .xenVersion: "xen_version"
        case .consoleIO: "console_io"
        case .physdevOpCompat: "physdev_op_compat"
        case .grantTableOp: "grant_table_op"
        case .vmAssist: "vm_assist"
        case .updateVAMappingOtherdomain: "update_va_mapping_otherdomain"
        case .iret: "iret"
        case .vcpuOp: "vcpu_op"
        case .setSegmentBase: "set_segment_base"
        case .mmuextOp: "mmuext_op"
        case .xsmOp: "xsm_op"
        case .nmiOp: "nmi_op"
        case .schedOp: "sched_op"
        case .callbackOp: "callback_op"
        case .xenoprofOp: "xenoprof_op"
        case .eventChannelOp: "event_channel_op"
        case .physdevOp: "physdev_op"
        case .hvmOp: "hvm_op"
        case .sysctl: "sysctl"
        case .domctl: "domctl"
        case .kexecOp: "kexec_op"
        case .tmemOp: "tmem_op"
        case .argoOp: "argo_op"
        case .xenpmuOp: "xenpmu_op"
        case .dmOp: "dm_op"
        case .hypfsOp: "hypfs_op"
        }
    }
}

extension NetDropReason {
    /// The `reason` label: the case name in snake case.
    var metricLabel: String {
        switch self {
        case .txBadSize: "tx_bad_size"
        case .txCrossesPage: "tx_crosses_page"
        case .txSizeMismatch: "tx_size_mismatch"
        case .txTooManySlots: "tx_too_many_slots"
        case .txBadGrant: "tx_bad_grant"
        case .txBadGSO: "tx_bad_gso"
        case .txBadChecksumHeaders: "tx_bad_checksum_headers"
        case .txLinkDown: "tx_link_down"
        case .txLinkBusy: "tx_link_busy"
        case .txLinkRefused: "tx_link_refused"
        case .rxBacklogFull: "rx_backlog_full"
        case .rxTooLarge: "rx_too_large"
        case .rxUnsupportedOffload: "rx_unsupported_offload"
        case .rxBadGrant: "rx_bad_grant"
        case .rxNotConnected: "rx_not_connected"
        }
    }
}

/// A thread's CPU time as Linux accounts it, from `/proc/self/task/TID/stat`
/// (proc(5): fields 14 `utime` and 15 `stime`, in clock ticks).
struct ThreadCPUTime {
    let userTicks: UInt64
    let systemTicks: UInt64

    /// Nil when the thread is gone or the file does not parse.
    init?(threadID: Int32) {
        guard let stat = try? String(contentsOfFile: "/proc/self/task/\(threadID)/stat", encoding: .utf8),
              // The command name (field 2) is in parentheses and may hold
              // spaces: the fields after it start past the last ')'.
              let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // fields[0] is field 3 (state): utime is field 14, stime field 15.
        guard fields.count > 12, let user = UInt64(fields[11]), let system = UInt64(fields[12]) else { return nil }
        userTicks = user
        systemTicks = system
    }

    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
    static let ticksPerSecond: Double = {
        let ticks = sysconf(Int32(_SC_CLK_TCK))
        return ticks > 0 ? Double(ticks) : 100
    }()
}
