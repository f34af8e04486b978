import XLConfig

/// A JSON value for what has no fixed shape (a domain's resolved config).
public indirect enum JSON: Codable, Hashable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSON])
    case object([String: JSON])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null } else if let b = try? c.decode(Bool.self) { self = .bool(b) } else if let n = try? c.decode(Double.self) {
            self = .number(n)
        } else if let s = try? c.decode(String.self) { self = .string(s) } else if let a = try? c.decode([JSON].self) {
            self = .array(a)
        } else { self = .object(try c.decode([String: JSON].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let n): if n == n.rounded(), abs(n) < 1e15 { try c.encode(Int(n)) } else { try c.encode(n) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    /// XLConfig's ordered value (the dry run's), as API JSON.
    public init(_ value: JSONValue) {
        switch value {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .integer(let n): self = .number(Double(n))
        case .string(let s): self = .string(s)
        case .array(let items): self = .array(items.map(JSON.init))
        case .object(let members): self = .object(Dictionary(members.map { ($0.key, JSON($0.value)) }, uniquingKeysWith: { _, last in last }))
        }
    }
}

/// `GET /v1/host`.
public struct HostInfo: Codable, Hashable, Sendable {
    /// `hardware` or `software` (`pvh host`'s finding), or `none` without /dev/kvm.
    public var backend: String
    /// `pvh host`'s report, one line per fact.
    public var backendReport: String
    public var version: String
    /// MemAvailable from /proc/meminfo, MiB.
    public var freeMemoryMiB: Int
    public var totalMemoryMiB: Int
    public var cpus: Int
    /// The daemon's XenStore socket (xenstored's: what `xenstore-*` use).
    public var xenstoreSocket: String
    public var apiSocket: String
    public var domains: Int

    public init(backend: String, backendReport: String, version: String, freeMemoryMiB: Int, totalMemoryMiB: Int, cpus: Int,
                xenstoreSocket: String, apiSocket: String, domains: Int) {
        self.backend = backend
        self.backendReport = backendReport
        self.version = version
        self.freeMemoryMiB = freeMemoryMiB
        self.totalMemoryMiB = totalMemoryMiB
        self.cpus = cpus
        self.xenstoreSocket = xenstoreSocket
        self.apiSocket = apiSocket
        self.domains = domains
    }

    enum CodingKeys: String, CodingKey {
        case backend, version, cpus, domains
        case backendReport = "backend_report"
        case freeMemoryMiB = "free_memory_mib"
        case totalMemoryMiB = "total_memory_mib"
        case xenstoreSocket = "xenstore_socket"
        case apiSocket = "api_socket"
    }
}

/// One domain, as `GET /v1/domains` lists it (`pvh list -l`'s JSON).
public struct DomainInfo: Codable, Hashable, Sendable {
    public var name: String
    public var domid: Int
    public var uuid: String
    /// `running`, `paused`, `shutdown`, `crashed`, `dying`.
    public var state: String
    /// xl's six flags, `r-----`.
    public var flags: String
    public var memoryMiB: Int
    public var vcpus: Int
    public var cpuTime: Double
    public var startTime: Double
    public var pid: Int?
    public var restarts: Int
    /// How the domain's last guest process ended (the events' reason:
    /// `killed by the sandbox (seccomp): ...` for a forbidden system
    /// call); absent until one ended.
    public var lastEnd: String?
    /// The resolved config, as `pvh create -n` prints it.
    public var config: JSON
    /// The Unix socket of the domain's PV console (`pvh console`'s way in;
    /// README: Toolstack), absent when it has none.
    public var console: String?
    /// `memory/target` in its store now, KiB (pvh mem-set changes it);
    /// absent until its guest process laid out its tree.
    public var memoryTargetKiB: Int64?
    /// `memory/static-max`, KiB (pvh mem-max).
    public var maxMemoryKiB: Int64?
    /// vCPUs whose `cpu/<n>/availability` is `online` (pvh vcpu-set).
    public var onlineVCPUs: Int?
    /// How its guest process is confined now, as the daemon sees it in
    /// /proc; absent without a live process.
    public var sandbox: ProcessConfinement?

    public init(name: String, domid: Int, uuid: String, state: String, flags: String, memoryMiB: Int, vcpus: Int, cpuTime: Double,
                startTime: Double, pid: Int?, restarts: Int, lastEnd: String? = nil, config: JSON, console: String? = nil) {
        self.name = name
        self.domid = domid
        self.uuid = uuid
        self.state = state
        self.flags = flags
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
        self.cpuTime = cpuTime
        self.startTime = startTime
        self.pid = pid
        self.restarts = restarts
        self.lastEnd = lastEnd
        self.config = config
        self.console = console
    }

    enum CodingKeys: String, CodingKey {
        case name, domid, uuid, state, flags, vcpus, pid, restarts, config, console, sandbox
        case lastEnd = "last_end"
        case memoryMiB = "memory_mib"
        case memoryTargetKiB = "memory_target_kib"
        case maxMemoryKiB = "max_memory_kib"
        case onlineVCPUs = "online_vcpus"
        case cpuTime = "cpu_time"
        case startTime = "start_time"
    }
}

/// A guest process's confinement (README: Security), read by the daemon
/// from /proc/PID/status (proc(5): Uid, Gid, CapEff, NoNewPrivs, Seccomp)
/// and the process's root, not from what the process says of itself: a
/// guest that took over its process could say anything.
public struct ProcessConfinement: Codable, Hashable, Sendable {
    /// Its root directory is not the host's (the jail's tmpfs).
    public var jailed: Bool
    /// The effective uid and gid.
    public var uid: Int
    public var gid: Int
    /// proc(5)'s Seccomp mode: `disabled` (0), `strict` (1), `filter` (2).
    public var seccomp: String
    /// PR_SET_NO_NEW_PRIVS.
    public var noNewPrivs: Bool
    /// CapEff: the effective capabilities, 16 hex digits as /proc shows them.
    public var effectiveCapabilities: String
    /// The namespaces it has of its own: those of /proc/PID/ns whose inode
    /// differs from the daemon's (`mnt`, `ipc`, `uts` for a jailed guest),
    /// in `namespaceKinds` order; nil when they could not be read.
    public var namespaces: [String]?

    /// The namespaces compared, as /proc/PID/ns names them (namespaces(7)).
    public static let namespaceKinds = ["mnt", "ipc", "uts", "net", "pid", "user", "cgroup"]

    public init(jailed: Bool, uid: Int, gid: Int, seccomp: String, noNewPrivs: Bool, effectiveCapabilities: String,
                namespaces: [String]? = nil) {
        self.jailed = jailed
        self.uid = uid
        self.gid = gid
        self.seccomp = seccomp
        self.noNewPrivs = noNewPrivs
        self.effectiveCapabilities = effectiveCapabilities
        self.namespaces = namespaces
    }

    /// From the text of /proc/PID/status; nil when a field it needs is
    /// missing or malformed (a process gone while it was read, or a kernel
    /// without seccomp).
    public init?(status: String, jailed: Bool) {
        var fields: [Substring: Substring] = [:]
        for line in status.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[line[..<colon]] = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
        }
        // Uid: real, effective, saved, filesystem (proc(5)).
        func effective(_ key: Substring) -> Int? {
            guard let ids = fields[key]?.split(whereSeparator: { $0 == "\t" || $0 == " " }), ids.count == 4 else { return nil }
            return Int(ids[1])
        }
        let modes = ["0": "disabled", "1": "strict", "2": "filter"]
        guard let uid = effective("Uid"), let gid = effective("Gid"),
              let seccomp = fields["Seccomp"].flatMap({ modes[String($0)] }),
              let noNewPrivs = fields["NoNewPrivs"].flatMap({ $0 == "1" ? true : $0 == "0" ? false : nil }),
              let capabilities = fields["CapEff"], capabilities.count == 16,
              capabilities.allSatisfy(\.isHexDigit) else { return nil }
        self.init(jailed: jailed, uid: uid, gid: gid, seccomp: seccomp, noNewPrivs: noNewPrivs,
                  effectiveCapabilities: String(capabilities))
    }

    enum CodingKeys: String, CodingKey {
        case jailed, uid, gid, seccomp
        case noNewPrivs = "no_new_privs"
        case effectiveCapabilities = "effective_capabilities"
        case namespaces
    }
}

/// `POST /v1/domains`: either xl.cfg text (`xl_config`, with `source`
/// naming it in messages and `overrides`, xl create's KEY=VALUE lines) or
/// a JSON object of xl keys (`config`), which is written out as xl.cfg
/// lines and resolved the same way.
public struct CreateDomainRequest: Codable, Hashable, Sendable {
    public var xlConfig: String?
    public var source: String?
    public var overrides: [String]?
    public var config: [String: JSON]?
    /// xl create -p: the domain is left paused, its vCPUs not started,
    /// until `unpause`.
    public var paused: Bool?

    public init(xlConfig: String? = nil, source: String? = nil, overrides: [String]? = nil, config: [String: JSON]? = nil,
                paused: Bool? = nil) {
        self.xlConfig = xlConfig
        self.source = source
        self.overrides = overrides
        self.config = config
        self.paused = paused
    }

    enum CodingKeys: String, CodingKey {
        case source, overrides, config, paused
        case xlConfig = "xl_config"
    }
}

/// `POST /v1/domains`' answer: the domain and the config's warnings.
public struct CreatedDomain: Codable, Hashable, Sendable {
    public var domain: DomainInfo
    public var warnings: [String]

    public init(domain: DomainInfo, warnings: [String]) {
        self.domain = domain
        self.warnings = warnings
    }
}

/// `GET /v1/xenstore/{path}`: a node's value (null when it has none that
/// is text) and its children's names.
public struct XenStoreNode: Codable, Hashable, Sendable {
    public var path: String
    public var value: String?
    public var children: [String]

    public init(path: String, value: String?, children: [String]) {
        self.path = path
        self.value = value
        self.children = children
    }
}

/// The actions of `POST /v1/domains/{name}/{action}`.
public enum DomainAction: String, CaseIterable, Sendable {
    case shutdown, reboot, pause, unpause
}
