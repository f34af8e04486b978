/// The two hot-pluggable device classes as the API names them.
public enum DeviceKind: String, Codable, Hashable, Sendable, CaseIterable {
    /// vbd: `xl block-attach`'s disks.
    case disks
    /// vif: `xl network-attach`'s interfaces.
    case nics

    /// The xenbus device class: "vbd" or "vif".
    public var xenbusType: String { self == .disks ? "vbd" : "vif" }
}

/// `POST /v1/domains/{name}/disks` and `/nics`: one device, in xl's spec
/// syntax (xl-disk-configuration(5), xl-network-configuration(5)).
public struct AttachDeviceRequest: Codable, Hashable, Sendable {
    public var spec: String
    public init(spec: String) { self.spec = spec }
}

/// `PUT /v1/domains/{name}/memory`: xl mem-set's target and/or xl
/// mem-max's maximum, KiB (`memory/target`, `memory/static-max`).
public struct MemoryRequest: Codable, Hashable, Sendable {
    public var targetKiB: Int64?
    public var maxKiB: Int64?

    public init(targetKiB: Int64? = nil, maxKiB: Int64? = nil) {
        self.targetKiB = targetKiB
        self.maxKiB = maxKiB
    }

    enum CodingKeys: String, CodingKey {
        case targetKiB = "target_kib"
        case maxKiB = "max_kib"
    }
}

/// `PUT /v1/domains/{name}/vcpus`: how many vCPUs are online (xl vcpu-set).
public struct VCPURequest: Codable, Hashable, Sendable {
    public var online: Int
    public init(online: Int) { self.online = online }
}

/// One domain's counters for `pvh top` (`GET /v1/stats`,
/// `GET /v1/domains/{name}/stats`), read by the daemon from the guest
/// process's metrics at the request.
public struct DomainStats: Codable, Hashable, Sendable {
    public var name: String
    public var domid: Int
    public var state: String
    /// Host CPU time of its vCPU threads, seconds.
    public var cpuSeconds: Double
    public var memoryKiB: Int64
    public var maxMemoryKiB: Int64
    public var vcpus: Int
    public var nets: Int
    public var netTXBytes: UInt64
    public var netRXBytes: UInt64
    public var vbds: Int
    public var vbdReads: UInt64
    public var vbdWrites: UInt64
    public var vbdBytesRead: UInt64
    public var vbdBytesWritten: UInt64
    /// False when the guest process's metrics did not answer: the counters
    /// are zero and `cpu_seconds` is its process's CPU time.
    public var metrics: Bool

    public init(name: String, domid: Int, state: String, cpuSeconds: Double, memoryKiB: Int64, maxMemoryKiB: Int64, vcpus: Int,
                nets: Int = 0, netTXBytes: UInt64 = 0, netRXBytes: UInt64 = 0, vbds: Int = 0, vbdReads: UInt64 = 0,
                vbdWrites: UInt64 = 0, vbdBytesRead: UInt64 = 0, vbdBytesWritten: UInt64 = 0, metrics: Bool) {
        self.name = name
        self.domid = domid
        self.state = state
        self.cpuSeconds = cpuSeconds
        self.memoryKiB = memoryKiB
        self.maxMemoryKiB = maxMemoryKiB
        self.vcpus = vcpus
        self.nets = nets
        self.netTXBytes = netTXBytes
        self.netRXBytes = netRXBytes
        self.vbds = vbds
        self.vbdReads = vbdReads
        self.vbdWrites = vbdWrites
        self.vbdBytesRead = vbdBytesRead
        self.vbdBytesWritten = vbdBytesWritten
        self.metrics = metrics
    }

    enum CodingKeys: String, CodingKey {
        case name, domid, state, vcpus, nets, vbds, metrics
        case cpuSeconds = "cpu_seconds"
        case memoryKiB = "memory_kib"
        case maxMemoryKiB = "max_memory_kib"
        case netTXBytes = "net_tx_bytes"
        case netRXBytes = "net_rx_bytes"
        case vbdReads = "vbd_reads"
        case vbdWrites = "vbd_writes"
        case vbdBytesRead = "vbd_bytes_read"
        case vbdBytesWritten = "vbd_bytes_written"
    }
}

/// `POST /v1/domains/{name}/console`'s answer: every byte of the body
/// reached the guest process's console input.
public struct ConsoleInputAnswer: Codable, Hashable, Sendable {
    public var accepted: Int
    public init(accepted: Int) { self.accepted = accepted }
}

