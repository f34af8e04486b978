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

extension DomainEvent {
    /// Whether this event ends a `?wait` (`pvh shutdown -w`, `pvh reboot
    /// -w`) on the domain that had `domid` and `uuid` when it was asked.
    ///
    /// A shutdown wait ends when that domain id shuts down, crashes or is
    /// destroyed, whatever is done next. A reboot wait ends when the domain
    /// comes back: `rebooted` under its UUID (a restart takes a new id), or
    /// `created` under its UUID by any other restart (a poweroff or crash,
    /// with on_poweroff/on_crash = restart, that came before the reboot
    /// request was acted on). It also ends when the domain will not come
    /// back: destroyed, kept shut down (`preserve`), or renamed away
    /// (`rename-restart`, whose new domain has a new UUID). Without these
    /// last cases such a wait ran to its timeout: a reboot asked while a
    /// poweroff was already under way saw only `shutdown`, `destroyed`
    /// (both `restart`) and `created`.
    public func endsWait(forReboot reboot: Bool, domid: Int, uuid: String) -> Bool {
        guard reboot else {
            return domid == self.domid && (type == .destroyed || type == .shutdown || type == .crashed)
        }
        switch type {
        case .rebooted:
            return uuid == self.uuid
        case .created:
            return uuid == self.uuid && action == "restart"
        case .destroyed:
            // `restart`: the old id's part of a restart, whose `rebooted`
            // or `created` comes next.
            return domid == self.domid && action != "restart"
        case .shutdown, .crashed:
            // `destroy` is followed by `destroyed`, which ends the wait once
            // the domain is gone; `restart` by the new id's event.
            return domid == self.domid && (action == "preserve" || action == "rename-restart")
        case .paused, .unpaused, .deviceConnected, .deviceClosed, .memoryChanged, .vcpusChanged:
            return false
        }
    }
}
