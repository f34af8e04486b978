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
    }

    public let type: Kind
    public let name: String
    public let domid: Int
    public let uuid: String
    /// For `shutdown` and `crashed`: why (`poweroff`, `reboot`, `crash`,
    /// `watchdog`, `soft_reset`, or how the process died); for the device
    /// events, the device ("vbd 51728").
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
