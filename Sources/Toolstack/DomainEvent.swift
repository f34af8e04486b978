import XenABI

/// One line of the event stream (`GET /v1/events`, NDJSON): what happened
/// to a domain, when.
public struct DomainEvent: Codable, Hashable, Sendable {
    /// The closed set of event types; the API document lists the same.
    public enum Kind: String, Codable, Hashable, Sendable, CaseIterable {
        case created, shutdown, rebooted, crashed, destroyed, paused, unpaused
        /// A hot-plugged device's backend offers it (`reason`: "vbd 51728").
        case deviceConnected = "device_connected"
        /// A device was detached (`reason`: "vif 1").
        case deviceClosed = "device_closed"
        /// The toolstack changed the memory target or maximum (`pvh
        /// mem-set`, `pvh mem-max`); `reason` says which and the value.
        case memoryChanged = "memory_changed"
        /// The toolstack changed the online vCPUs (`pvh vcpu-set`).
        case vcpusChanged = "vcpus_changed"
    }

    public let type: Kind
    public let name: String
    public let domid: Int
    public let uuid: String
    /// For `shutdown` and `crashed`: why (`poweroff`, `reboot`, `crash`,
    /// `watchdog`, `soft_reset`, or how the process died); for the device
    /// events, the device ("vbd 51728"); for `memory_changed` and
    /// `vcpus_changed`: what was set (`target_kib=N`, `max_kib=N`, `online=N`).
    public let reason: String?
    /// The action applied afterwards (`destroy`, `restart`, ...), if any.
    public let action: String?
    /// Seconds since the epoch.
    public let time: Double

    public init(type: Kind, record: DomainRecord, reason: String? = nil, action: String? = nil, time: Double) {
        self.type = type
        name = record.name
        domid = Int(record.id.rawValue)
        uuid = record.uuid.description
        self.reason = reason
        self.action = action
        self.time = time
    }
}
