import Foundation
import XLConfig
import XenABI

/// What a pvh daemon leaves in its state directory for the next one, so a
/// daemon stopped or restarted while guests run finds them again
/// (docs/ARCHITECTURE.md: the process model, a daemon restart): the
/// registry, one `SavedDomain` per live domain with its guest process's
/// pid and start time, and the host store's nodes.
///
/// The format is pvh's own JSON, versioned; xenstored's live update
/// (docs/designs/xenstore-migration.md) inspired the content (the nodes
/// with their permissions, and each domain), not the encoding. Written
/// whole to a temporary file, flushed and renamed over the last one
/// (`write(to:)`), so a reader sees the old state or the new, never a
/// part; written on each registry change and on a clean stop.
///
/// Everything read back is checked (`decode`): a file that is not this
/// format, or breaks a rule, is refused with one line saying why, and the
/// daemon starts empty instead of crashing.
public struct DaemonState: Codable, Equatable, Sendable {
    /// The format this pvh writes and reads.
    public static let currentVersion = 1
    /// The largest state file read (a store at its quotas stays far below).
    public static let maximumFileSize = 64 << 20
    /// The file's name in the daemon's state directory.
    public static let fileName = "daemon-state.json"

    public var version: Int
    /// Live domains, by id.
    public var domains: [SavedDomain]
    /// The host store's nodes, each parent before its children.
    public var store: [SavedNode]

    public init(domains: [SavedDomain], store: [SavedNode]) {
        version = Self.currentVersion
        self.domains = domains
        self.store = store
    }

    /// The bytes written (sorted keys: the same state, the same file).
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Strings, numbers and arrays of them only: encoding cannot fail.
        return Array((try? encoder.encode(self)) ?? Data())
    }

    /// Reads and checks a state file's bytes.
    public static func decode(_ bytes: [UInt8]) throws(DaemonStateError) -> DaemonState {
        guard bytes.count <= maximumFileSize else { throw .invalid("larger than \(maximumFileSize >> 20) MiB") }
        let state: DaemonState
        do {
            state = try JSONDecoder().decode(DaemonState.self, from: Data(bytes))
        } catch {
            throw .invalid("not a pvh daemon state file (\(Self.describe(error)))")
        }
        try state.validate()
        return state
    }

    /// The rules a state must keep: this version, ids of ordinary domains
    /// and unique, unique names and UUIDs, sane pids and times, absolute
    /// store paths of bounded length with bounded values.
    public func validate() throws(DaemonStateError) {
        guard version == Self.currentVersion else { throw .invalid("version \(version), this pvh reads \(Self.currentVersion)") }
        var ids = Set<UInt16>(), names = Set<String>(), uuids = Set<String>()
        for d in domains {
            guard (1..<DomainID.firstReserved).contains(d.id) else { throw .invalid("domain id \(d.id): not an ordinary domain's") }
            guard ids.insert(d.id).inserted else { throw .invalid("domain id \(d.id) twice") }
            guard !d.name.isEmpty, d.name.utf8.count <= 64, !d.name.contains("/") else { throw .invalid("domain \(d.id): name \"\(d.name)\"") }
            guard names.insert(d.name).inserted else { throw .invalid("domain name \(d.name) twice") }
            guard let uuid = DomainUUID(parsing: d.uuid) else { throw .invalid("domain \(d.id): uuid \"\(d.uuid)\"") }
            guard uuids.insert(uuid.description).inserted else { throw .invalid("domain uuid \(d.uuid) twice") }
            guard SavedDomain.State.parse(d.state) != nil else { throw .invalid("domain \(d.id): state \"\(d.state)\"") }
            if let pid = d.processID, pid <= 1 { throw .invalid("domain \(d.id): pid \(pid)") }
            guard (d.processID == nil) == (d.processStartTime == nil) else {
                throw .invalid("domain \(d.id): a pid needs its start time and a start time its pid")
            }
            guard d.startTime.isFinite, d.startTime >= 0, d.restarts >= 0, d.quickEnds >= 0 else {
                throw .invalid("domain \(d.id): start time or counters out of range")
            }
            guard d.overrides.count <= 256, d.overrides.allSatisfy({ $0.utf8.count <= 4096 }) else {
                throw .invalid("domain \(d.id): too many or too long overrides")
            }
        }
        var paths = Set<String>()
        for node in store {
            // xs_wire.h's XENSTORE_ABS_PATH_MAX (3072) and a payload's 4096.
            guard node.path.hasPrefix("/"), node.path.utf8.count <= 3072, !node.path.contains("\0") else {
                throw .invalid("store path \"\(node.path.prefix(80))\"")
            }
            guard paths.insert(node.path).inserted else { throw .invalid("store path \(node.path) twice") }
            guard let value = node.bytes, value.count <= 4096 else { throw .invalid("store node \(node.path): value not base64 or too long") }
            guard !node.permissions.isEmpty, node.permissions.count <= 1024 else { throw .invalid("store node \(node.path): permissions") }
        }
    }

    /// Writes the state to `path` atomically (Foundation's `.atomic`: a
    /// temporary file beside it, renamed over `path`), mode 0600. A daemon
    /// killed mid-write leaves the last state whole. Not flushed to disk:
    /// after a host crash no guest process runs to be found anyway.
    public func write(to path: String) throws(DaemonStateError) {
        do {
            try Data(encoded()).write(to: URL(fileURLWithPath: path), options: .atomic)
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        } catch {
            throw .io("\(path): \(error.localizedDescription)")
        }
    }

    /// Reads the state at `path`: nil when there is none, or why it was refused.
    public static func read(from path: String) -> Result<DaemonState, DaemonStateError>? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let handle = FileHandle(forReadingAtPath: path) else { return .failure(.io("cannot open \(path)")) }
        defer { try? handle.close() }
        let data: Data
        do {
            data = try handle.read(upToCount: maximumFileSize + 1) ?? Data()
        } catch {
            return .failure(.io("\(path): \(error.localizedDescription)"))
        }
        do { return .success(try decode(Array(data))) } catch { return .failure(error) }
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.dataCorrupted(let c): c.debugDescription
        case DecodingError.keyNotFound(let key, _): "no \(key.stringValue)"
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            "\(c.codingPath.map(\.stringValue).joined(separator: ".")): \(c.debugDescription)"
        default: "\(error)"
        }
    }
}

/// Why a state file was not read or written: one line.
public enum DaemonStateError: Error, Hashable, Sendable, CustomStringConvertible {
    case invalid(String)
    case io(String)

    public var description: String {
        switch self {
        case .invalid(let why): why
        case .io(let why): why
        }
    }
}

/// One domain as the state file keeps it: its record's fields, the
/// `KEY=VALUE` overrides it was created with (its config is the daemon's
/// copy `<state>/<id>.cfg`), and its guest process as pid and start time
/// (proc(5) `starttime`, so a reused pid is never taken for the guest).
public struct SavedDomain: Codable, Equatable, Sendable {
    public var id: UInt16
    public var name: String
    public var uuid: String
    /// `DomainState` as text: running, paused, shutdown:EVENT, crashed, dying.
    public var state: String
    public var startTime: Double
    public var restarts: Int
    public var quickEnds: Int
    public var overrides: [String]
    public var processID: Int32?
    public var processStartTime: UInt64?

    public init(_ record: DomainRecord, overrides: [String], processStartTime: UInt64?) {
        id = record.id.rawValue
        name = record.name
        uuid = record.uuid.description
        state = State.text(record.state)
        startTime = record.startTime
        restarts = record.restarts
        quickEnds = record.quickEnds
        self.overrides = overrides
        processID = processStartTime == nil ? nil : record.processID
        self.processStartTime = processID == nil ? nil : processStartTime
    }

    /// The record again, with `configuration` (resolved anew from the
    /// daemon's copy of its config and `overrides`). Nil if a field does
    /// not parse (`DaemonState.validate` refuses such a file first).
    public func record(configuration: XLDomainConfiguration) -> DomainRecord? {
        guard let uuid = DomainUUID(parsing: uuid), let state = State.parse(state) else { return nil }
        var record = DomainRecord(id: DomainID(rawValue: id), name: name, uuid: uuid, configuration: configuration,
                                  state: state, startTime: startTime, processID: processID, restarts: restarts)
        record.quickEnds = quickEnds
        return record
    }

    /// `DomainState` to and from its text.
    enum State {
        static func text(_ state: DomainState) -> String {
            if case .shutdown(let event) = state { return "shutdown:\(event.rawValue)" }
            return state.name
        }

        static func parse(_ text: String) -> DomainState? {
            switch text {
            case "running": return .running
            case "paused": return .paused
            case "crashed": return .crashed
            case "dying": return .dying
            default:
                guard text.hasPrefix("shutdown:"), let event = ShutdownEvent(rawValue: String(text.dropFirst(9))) else { return nil }
                return .shutdown(event)
            }
        }
    }
}

/// One store node: its path, value (base64: values are bytes) and
/// permissions in xs_wire.h's text form (`XS_GET_PERMS`: `n0`, `r5`, ...).
public struct SavedNode: Codable, Equatable, Sendable {
    public var path: String
    public var value: String
    public var permissions: [String]

    public init(path: String, value: [UInt8], permissions: [String]) {
        self.path = path
        self.value = Data(value).base64EncodedString()
        self.permissions = permissions
    }

    /// The value's bytes, nil if `value` is not base64.
    public var bytes: [UInt8]? { Data(base64Encoded: value).map(Array.init) }
}
