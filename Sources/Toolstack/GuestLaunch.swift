import XLConfig
import XenABI

/// How the daemon starts one guest's process: the one seam between the
/// supervisor and what runs the guest. The child is `pvh create -F` on the
/// daemon's store: two connected stream sockets it inherits as descriptors
/// `storeDescriptor` (the privileged connection its toolstack code and
/// backends use) and `guestStoreDescriptor` (the one the daemon serves as
/// the guest's domain, that the guest's ring is relayed over), and the
/// registry's domain id (docs/ARCHITECTURE.md: the process model).
public struct GuestLaunch: Hashable, Sendable {
    /// The child's number for the daemon's privileged store connection.
    public static let storeDescriptor: Int32 = 3
    /// The child's number for the connection served as the guest's domain.
    public static let guestStoreDescriptor: Int32 = 4

    /// The pvh executable.
    public var executable: String
    /// The resolved config the child reads (written by the daemon, 0600).
    public var configPath: String
    /// Where the child's stderr goes (its stdin and stdout are the
    /// console's socketpair with the daemon: Supervisor.start).
    public var logPath: String
    /// More `KEY=VALUE` config lines after the file's.
    public var overrides: [String]
    /// The registry's id for the domain (`--domid`): a rename-restart's new
    /// domain launches with its own.
    public var domain: DomainID
    /// The daemon's state directory, where the child listens for a later
    /// daemon (`reattachSocket`) and leaves its exit status
    /// (`exitRecord`); nil: it neither listens nor records.
    public var stateDirectory: String?
    /// Where the child serves its counters (`--metrics`, a Unix socket of
    /// mode 0600 in the daemon's state directory) for the daemon's
    /// `/metrics` and `pvh top`; nil: nowhere.
    public var metricsSocket: String?
    /// xl create -p: the child stops itself (SIGSTOP) once the domain is
    /// built, before any vCPU runs (`--start-paused`); for its first start
    /// only, a restart runs at once.
    public var startPaused = false

    public init(executable: String, configPath: String, logPath: String, overrides: [String] = [], domain: DomainID,
                stateDirectory: String? = nil) {
        self.executable = executable
        self.configPath = configPath
        self.logPath = logPath
        self.overrides = overrides
        self.domain = domain
        self.stateDirectory = stateDirectory
    }

    /// `<state>/<domid>.guest`: the socket the child listens on for a new
    /// daemon's connections after a restart.
    public var reattachSocket: String? { stateDirectory.map { "\($0)/\(domain.rawValue).guest" } }
    /// `<state>/<domid>.exit`: the exit status the child records before it exits.
    public var exitRecord: String? { stateDirectory.map { "\($0)/\(domain.rawValue).exit" } }

    /// `pvh create -F --store-fd 3 --guest-store-fd 4 --domid N
    /// [--reattach-socket PATH --exit-record PATH] [--metrics SOCKET] [--start-paused] CONFIG
    /// KEY=VALUE...`;
    /// `on_reboot="destroy"` comes last so the child ends with status 3 on
    /// a reboot and the daemon applies the domain's real `on_reboot`
    /// (DomainEnd's contract).
    public var arguments: [String] {
        var arguments = [executable, "create", "-F",
                         "--store-fd", String(Self.storeDescriptor), "--guest-store-fd", String(Self.guestStoreDescriptor),
                         "--domid", String(domain.rawValue)]
        if let reattachSocket, let exitRecord {
            arguments += ["--reattach-socket", reattachSocket, "--exit-record", exitRecord]
        }
        if let metricsSocket { arguments += ["--metrics", metricsSocket] }
        if startPaused { arguments.append("--start-paused") }
        return arguments + [configPath] + overrides + ["on_reboot=\"destroy\""]
    }
}

/// Who writes which part of a domain's XenStore tree in the daemon's store
/// (libxl's split, tools/libs/light/libxl_create.c libxl__domain_make and
/// libxl_dom.c libxl__build_post; docs/misc/xenstore-paths.pandoc).
///
/// - The daemon (the toolstack): `/vm/<uuid>` with `name` and `uuid`, and
///   the home `/local/domain/<id>` itself (its permissions: dom0's, readable
///   by the domain) with `name`, `vm` and `domid`, before it starts the
///   guest process and again before each restart. When it reaps the guest
///   process, however it ended, it removes the whole home and the domain's
///   backend directories (`backendDirectories`) and releases the domain
///   (`@releaseDomain`) if it is still introduced; `/vm/<uuid>` goes when
///   the domain is forgotten.
/// - The guest process (the domain builder and backends): everything else
///   under the home (`DomainStoreLayout.builderSubtrees`: cpu, memory,
///   device, control, store, console, ...) and its backends' nodes under
///   `/local/domain/0/backend`, the domain's introduction and, on a clean
///   end, the removal of those subtrees and the release.
public struct DomainStoreNodes: Hashable, Sendable {
    public let domain: DomainID
    public let name: String
    public let uuid: DomainUUID

    public init(domain: DomainID, name: String, uuid: DomainUUID) {
        self.domain = domain
        self.name = name
        self.uuid = uuid
    }

    /// `/local/domain/<id>`.
    public var home: String { "/local/domain/\(domain.rawValue)" }
    /// `/vm/<uuid>`.
    public var vm: String { "/vm/\(uuid)" }

    /// The daemon's writes, in order (each parent before its children).
    public var writes: [(path: String, value: String)] {
        [("\(vm)/name", name), ("\(vm)/uuid", uuid.description),
         ("\(home)/name", name), ("\(home)/vm", vm), ("\(home)/domid", String(domain.rawValue))]
    }

    /// Where the domain's backends live, one directory per device type
    /// listed under `/local/domain/0/backend` (xenstore-paths.pandoc:
    /// `backend/<type>/<frontend domid>`).
    public func backendDirectories(types: [String]) -> [String] {
        types.map { "/local/domain/0/backend/\($0)/\(domain.rawValue)" }
    }
}
