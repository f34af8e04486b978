import Testing
import Toolstack

/// Which events end `pvh shutdown -w` / `pvh reboot -w` (the API's
/// `?wait=true`), over the event sequences the daemon's supervisor
/// publishes for each end of a domain (Supervisor.swift: `ended`,
/// `restartUnderNewID`).
@Suite struct ActionWaitTests {
    struct Domains {
        var registry = DomainRegistry(highestID: 8)
        let old: DomainRecord
        let other: DomainRecord
        init() throws {
            old = try registry.create(try configuration("web"), now: 1)
            other = try registry.create(try configuration("db"), now: 1)
        }
        /// The same domain restarted under a new id (its UUID kept).
        mutating func restarted() throws -> DomainRecord { try registry.renumber(old.id) }
    }

    /// The index of the first event that ends the wait, if any.
    static func end(_ events: [DomainEvent], reboot: Bool, of record: DomainRecord) -> Int? {
        events.firstIndex { $0.endsWait(forReboot: reboot, domid: Int(record.id.rawValue), uuid: record.uuid.description) }
    }

    @Test("a reboot wait ends at the restarted domain's rebooted event, not at the old id's destroyed (restart)")
    func rebootRestart() throws {
        var d = try Domains()
        let fresh = try d.restarted()
        let events = [DomainEvent(type: .destroyed, record: d.old, reason: "reboot", action: "restart", time: 2),
                      DomainEvent(type: .rebooted, record: fresh, reason: "reboot", action: "restart", time: 2)]
        #expect(Self.end(events, reboot: true, of: d.old) == 1)
        // Another domain's reboot does not end it.
        #expect(Self.end([DomainEvent(type: .rebooted, record: d.other, action: "restart", time: 2)], reboot: true, of: d.old) == nil)
    }

    @Test("a reboot asked while a poweroff (on_poweroff = restart) was under way ends at the restart's created event")
    func rebootAfterPoweroffRestart() throws {
        var d = try Domains()
        let fresh = try d.restarted()
        let events = [DomainEvent(type: .shutdown, record: d.old, reason: "poweroff", action: "restart", time: 2),
                      DomainEvent(type: .destroyed, record: d.old, reason: "poweroff", action: "restart", time: 2),
                      DomainEvent(type: .created, record: fresh, reason: "poweroff", action: "restart", time: 2)]
        #expect(Self.end(events, reboot: true, of: d.old) == 2)
        // A domain created afresh under the same UUID by `pvh create` is not a restart.
        #expect(Self.end([DomainEvent(type: .created, record: fresh, time: 3)], reboot: true, of: d.old) == nil)
    }

    @Test("a reboot wait ends when the domain will not come back: at destroyed (not the shutdown before it), preserved, renamed away")
    func rebootNoReturn() throws {
        let d = try Domains()
        let destroy = [DomainEvent(type: .shutdown, record: d.old, reason: "reboot", action: "destroy", time: 2),
                       DomainEvent(type: .destroyed, record: d.old, reason: "reboot", time: 2)]
        #expect(Self.end(destroy, reboot: true, of: d.old) == 1)
        #expect(Self.end([DomainEvent(type: .destroyed, record: d.old, reason: "destroyed", time: 2)], reboot: true, of: d.old) == 0)
        #expect(Self.end([DomainEvent(type: .crashed, record: d.old, reason: "crash", action: "preserve", time: 2)], reboot: true, of: d.old) == 0)
        #expect(Self.end([DomainEvent(type: .shutdown, record: d.old, reason: "reboot", action: "rename-restart", time: 2)], reboot: true, of: d.old) == 0)
        // Pausing, devices and memory are not ends.
        let unrelated = [DomainEvent(type: .paused, record: d.old, time: 2), DomainEvent(type: .unpaused, record: d.old, time: 2),
                         DomainEvent(type: .deviceClosed, record: d.old, reason: "vif 0", time: 2),
                         DomainEvent(type: .memoryChanged, record: d.old, reason: "target_kib=1024", time: 2)]
        #expect(Self.end(unrelated, reboot: true, of: d.old) == nil)
    }

    @Test("a shutdown wait ends at the domain id's shutdown, crash or destruction, restarted or not, and at no other domain's")
    func shutdown() throws {
        var d = try Domains()
        let fresh = try d.restarted()
        #expect(Self.end([DomainEvent(type: .shutdown, record: d.old, reason: "poweroff", action: "restart", time: 2)], reboot: false, of: d.old) == 0)
        #expect(Self.end([DomainEvent(type: .crashed, record: d.old, reason: "crash", action: "destroy", time: 2)], reboot: false, of: d.old) == 0)
        #expect(Self.end([DomainEvent(type: .destroyed, record: d.old, reason: "destroyed", time: 2)], reboot: false, of: d.old) == 0)
        #expect(Self.end([DomainEvent(type: .shutdown, record: d.other, reason: "poweroff", time: 2),
                          DomainEvent(type: .rebooted, record: fresh, action: "restart", time: 2),
                          DomainEvent(type: .paused, record: d.old, time: 2)], reboot: false, of: d.old) == nil)
    }
}
