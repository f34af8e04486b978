import XLConfig
import XenABI

/// Why the registry refused a change (the API's 409 and 404).
public enum RegistryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A live domain already has this name (xl: "domain with name X already exists").
    case nameInUse(String)
    /// A live domain already has this UUID.
    case uuidInUse(DomainUUID)
    /// Every ordinary domain id is taken.
    case noFreeID
    /// No live domain of that name.
    case noSuchDomain(String)
    /// A live domain already has this id (a state file restored twice).
    case idInUse(DomainID)

    public var description: String {
        switch self {
        case .nameInUse(let name): "a domain named \(name) already exists"
        case .uuidInUse(let uuid): "a domain with UUID \(uuid) already exists"
        case .noFreeID: "no free domain id"
        case .noSuchDomain(let name): "\(name) is an invalid domain identifier"
        case .idInUse(let id): "domain id \(id.rawValue) is in use"
        }
    }
}

/// The host's domains: ids, names and UUIDs handed out uniquely, pure
/// (the daemon keeps it under its lock).
///
/// Ids go round from 1 to `DOMID_FIRST_RESERVED - 1` as Xen's
/// `domain_create` hands them out (a rover that moves on past the last id
/// given, xen/common/domain.c), skipping the ids of live domains: an id is
/// never given twice while its domain lives, and a freed one comes back
/// only after the rover went all the way round. Domain 0 is the daemon's.
public struct DomainRegistry: Sendable {
    private var domains: [DomainID: DomainRecord] = [:]
    private var rover: UInt16

    /// The highest ordinary id (`DOMID_FIRST_RESERVED - 1`), or less for tests.
    public let highestID: UInt16

    public init(highestID: UInt16 = DomainID.firstReserved - 1) {
        self.highestID = max(1, min(highestID, DomainID.firstReserved - 1))
        rover = 0
    }

    /// Every live domain, by id.
    public var all: [DomainRecord] { domains.values.sorted { $0.id.rawValue < $1.id.rawValue } }

    public subscript(id: DomainID) -> DomainRecord? { domains[id] }

    /// The live domain named `name`.
    public func named(_ name: String) -> DomainRecord? { domains.values.first { $0.name == name } }

    /// Records a new domain: a fresh id, the configuration's UUID or a new
    /// random one. `now`: its start time.
    public mutating func create(_ configuration: XLDomainConfiguration, now: Double,
                                uuid generate: () -> DomainUUID = DomainUUID.random) throws(RegistryError) -> DomainRecord {
        guard named(configuration.name) == nil else { throw .nameInUse(configuration.name) }
        let uuid = configuration.uuid ?? generate()
        guard !domains.values.contains(where: { $0.uuid == uuid }) else { throw .uuidInUse(uuid) }
        let id = try nextID()
        let record = DomainRecord(id: id, name: configuration.name, uuid: uuid, configuration: configuration, startTime: now)
        domains[id] = record
        return record
    }

    /// Puts back a domain a previous daemon registered (`DaemonState`),
    /// under its own id, name and UUID; the rover moves on past the highest
    /// id restored, so a new domain never takes one a running guest keeps.
    public mutating func restore(_ record: DomainRecord) throws(RegistryError) {
        guard record.id.rawValue >= 1, record.id.rawValue <= highestID else { throw .noFreeID }
        guard domains[record.id] == nil else { throw .idInUse(record.id) }
        guard named(record.name) == nil else { throw .nameInUse(record.name) }
        guard !domains.values.contains(where: { $0.uuid == record.uuid }) else { throw .uuidInUse(record.uuid) }
        domains[record.id] = record
        rover = max(rover, record.id.rawValue)
    }

    /// Changes a live domain's record with `body` (its id stays).
    @discardableResult
    public mutating func update(_ id: DomainID, _ body: (inout DomainRecord) -> Void) -> DomainRecord? {
        guard var record = domains[id] else { return nil }
        body(&record)  // `id` is a let: the record stays under its id
        domains[id] = record
        return record
    }

    /// Renames a live domain (rename-restart keeps the old one under a new name).
    public mutating func rename(_ id: DomainID, to name: String) throws(RegistryError) {
        guard domains[id] != nil else { throw .noSuchDomain(name) }
        if let other = named(name), other.id != id { throw .nameInUse(name) }
        update(id) { $0.name = name }
    }

    /// A restart (`restart` on reboot, poweroff or crash; `pvh reboot`):
    /// the domain is recreated under a fresh id, keeping its name, UUID,
    /// configuration and counters, as xl does (it destroys the domain and
    /// creates it again: libxl__domain_make hands the new one whatever id
    /// Xen's `domain_create` gives, tools/xl/xl_vmcontrol.c `start:`).
    /// The new id is taken while the old one is still held, so it is
    /// never the old one; the old id is free afterwards (the rover comes
    /// back to it only after going round). `body` sets the new
    /// incarnation's state.
    public mutating func renumber(_ id: DomainID, _ body: (inout DomainRecord) -> Void = { _ in }) throws(RegistryError) -> DomainRecord {
        guard let old = domains[id] else { throw .noSuchDomain(String(id.rawValue)) }
        let newID = try nextID()
        var record = DomainRecord(id: newID, name: old.name, uuid: old.uuid, configuration: old.configuration, state: old.state,
                                  startTime: old.startTime, processID: nil, restarts: old.restarts)
        record.quickEnds = old.quickEnds
        body(&record)
        domains[id] = nil
        domains[newID] = record
        return record
    }

    /// Forgets a domain: its id, name and UUID are free again.
    @discardableResult
    public mutating func remove(_ id: DomainID) -> DomainRecord? { domains.removeValue(forKey: id) }

    private mutating func nextID() throws(RegistryError) -> DomainID {
        guard domains.count < Int(highestID) else { throw .noFreeID }
        var candidate = rover
        repeat {
            candidate = candidate >= highestID ? 1 : candidate + 1
        } while domains[DomainID(rawValue: candidate)] != nil
        rover = candidate
        return DomainID(rawValue: candidate)
    }
}

extension DomainUUID {
    /// A random (version 4, RFC 9562 §5.4) UUID, as libxl generates one
    /// when the config has none (`libxl_uuid_generate`).
    public static func random() -> DomainUUID {
        var generator = SystemRandomNumberGenerator()
        // The text is 8-4-4-4-12 hex digits by construction: one round.
        while true {
            if let uuid = DomainUUID(parsing: randomText(&generator)) { return uuid }
        }
    }

    private static func randomText(_ generator: inout SystemRandomNumberGenerator) -> String {
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = bytes[6] & 0x0f | 0x40
        bytes[8] = bytes[8] & 0x3f | 0x80
        let hex = bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        let chars = Array(hex)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(chars[$0]) }.joined(separator: "-")
    }
}
