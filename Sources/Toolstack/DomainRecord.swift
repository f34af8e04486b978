import XLConfig
import XenABI

/// Where a domain is in its life, as the daemon knows it from its guest
/// process. xl reads the same from the hypervisor (`libxl_dominfo`'s
/// running/blocked/paused/shutdown/dying flags); here the process is the
/// domain.
public enum DomainState: Hashable, Sendable {
    /// The guest process is up and its vCPUs run (or wait to).
    case running
    /// Paused by the toolstack (`pvh pause`).
    case paused
    /// The guest shut itself down for a reason and is kept (`preserve`).
    case shutdown(ShutdownEvent)
    /// The guest or its process crashed and the domain is kept (`on_crash="preserve"`),
    /// or the crash is being handled.
    case crashed
    /// Being destroyed: the process was told to stop and is being reaped.
    case dying

    /// The name the API and events use.
    public var name: String {
        switch self {
        case .running: "running"
        case .paused: "paused"
        case .shutdown: "shutdown"
        case .crashed: "crashed"
        case .dying: "dying"
        }
    }

    /// xl's six flags (`r b p s c d`, xl(1) "list"): running, blocked,
    /// paused, shutdown, crashed, dying; a dash where a flag is clear.
    /// xl shows a running domain whose vCPUs all wait as `-b----`; the
    /// daemon does not see inside the process, so a live guest is `r`.
    public var flags: String {
        let set: (Bool, Bool, Bool, Bool, Bool, Bool) = switch self {
        case .running: (true, false, false, false, false, false)
        case .paused: (false, false, true, false, false, false)
        case .shutdown: (false, false, false, true, false, false)
        case .crashed: (false, false, false, true, true, false)
        case .dying: (false, false, false, false, false, true)
        }
        let letters: [(Bool, Character)] = [(set.0, "r"), (set.1, "b"), (set.2, "p"), (set.3, "s"), (set.4, "c"), (set.5, "d")]
        return String(letters.map { $0.0 ? $0.1 : "-" })
    }
}

/// One domain the daemon knows: what it was created from and how it runs.
public struct DomainRecord: Sendable, Equatable {
    public let id: DomainID
    /// Unique among live domains; changes only by rename-restart.
    public var name: String
    public let uuid: DomainUUID
    public var configuration: XLDomainConfiguration
    public var state: DomainState
    /// When the current incarnation started, seconds since the epoch.
    public var startTime: Double
    /// The guest process, while one runs.
    public var processID: Int32?
    /// How many times the domain was restarted by its actions.
    public var restarts: Int
    /// Incarnations in a row that ended within `ShutdownPolicy.minimumRun`.
    public var quickEnds = 0
    /// How its last guest process ended, as the events said it (`killed by
    /// the sandbox (seccomp): ...`, `crash`, `poweroff`); nil until one
    /// ended. Not saved across a daemon restart.
    public var lastEnd: String?

    public init(id: DomainID, name: String, uuid: DomainUUID, configuration: XLDomainConfiguration,
                state: DomainState = .running, startTime: Double, processID: Int32? = nil, restarts: Int = 0) {
        self.id = id
        self.name = name
        self.uuid = uuid
        self.configuration = configuration
        self.state = state
        self.startTime = startTime
        self.processID = processID
        self.restarts = restarts
    }

    public static func == (a: DomainRecord, b: DomainRecord) -> Bool {
        a.id == b.id && a.name == b.name && a.uuid == b.uuid && a.configuration == b.configuration && a.state == b.state
            && a.startTime == b.startTime && a.processID == b.processID && a.restarts == b.restarts && a.quickEnds == b.quickEnds
    }
}
