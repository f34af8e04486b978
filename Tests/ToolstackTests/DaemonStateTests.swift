import Foundation
import Testing
import Toolstack
import XLConfig
import XenABI

/// The daemon's state file (DaemonState.swift): what a restarted daemon
/// reads to find its running guests again.
@Suite struct DaemonStateTests {
    func sample() throws -> (DaemonState, DomainRecord) {
        var registry = DomainRegistry()
        _ = try registry.create(try configuration("web"), now: 10)
        var record = try #require(registry.update(DomainID(rawValue: 1)) { $0.processID = 4242; $0.restarts = 2; $0.quickEnds = 1 })
        record.state = .shutdown(.reboot)
        let nodes = [SavedNode(path: "/local/domain/1", value: [], permissions: ["n0", "r1"]),
                     SavedNode(path: "/local/domain/1/name", value: Array("web".utf8), permissions: ["n0", "r1"]),
                     SavedNode(path: "/bin", value: [0, 0xff, 10], permissions: ["b0"])]
        return (DaemonState(domains: [SavedDomain(record, overrides: ["vcpus=1"], processStartTime: 987654)], store: nodes), record)
    }

    @Test func roundTrip() throws {
        let (state, record) = try sample()
        let decoded = try DaemonState.decode(state.encoded())
        #expect(decoded == state)
        #expect(decoded.store[2].bytes == [0, 0xff, 10])
        let saved = try #require(decoded.domains.first)
        #expect(saved.processID == 4242 && saved.processStartTime == 987654 && saved.overrides == ["vcpus=1"])
        // The record comes back whole (its config resolved anew by the daemon).
        #expect(saved.record(configuration: record.configuration) == record)
        // The same state, the same bytes.
        #expect(state.encoded() == decoded.encoded())
    }

    @Test func writtenAtomicallyAndReadBack() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-state-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/" + DaemonState.fileName
        #expect(DaemonState.read(from: path) == nil)
        let (state, _) = try sample()
        try state.write(to: path)
        #expect(try DaemonState.read(from: path)?.get() == state)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        // Written again: replaced, nothing left beside it.
        try DaemonState(domains: [], store: []).write(to: path)
        #expect(try DaemonState.read(from: path)?.get().domains.isEmpty == true)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == [DaemonState.fileName])
    }

    /// A corrupt or partial file is refused with one line, never a crash.
    @Test(arguments: [
        ("", "not a pvh daemon state file"),
        ("{\"version\":1,\"domains\":[],\"sto", "not a pvh daemon state file"),
        ("[1,2,3]", "not a pvh daemon state file"),
        ("{\"version\":2,\"domains\":[],\"store\":[]}", "version 2"),
        ("{\"version\":1,\"domains\":[{\"id\":0}],\"store\":[]}", "not a pvh daemon state file"),
    ])
    func refusesGarbage(text: String, expected: String) {
        #expect(throws: DaemonStateError.self) { try DaemonState.decode(Array(text.utf8)) }
        do {
            _ = try DaemonState.decode(Array(text.utf8))
        } catch {
            #expect(error.description.contains(expected), "\(error)")
            #expect(!error.description.contains("\n"))
        }
    }

    /// Every rule `validate` keeps, broken once each.
    @Test func refusesBrokenRules() throws {
        let (good, _) = try sample()
        var cases: [(DaemonState, String)] = []
        func broken(_ why: String, _ change: (inout DaemonState) -> Void) {
            var s = good
            change(&s)
            cases.append((s, why))
        }
        broken("not an ordinary") { $0.domains[0].id = 0 }
        broken("not an ordinary") { $0.domains[0].id = 0x7ff0 }
        broken("twice") { $0.domains.append($0.domains[0]) }
        broken("name") { $0.domains[0].name = "" }
        broken("name") { $0.domains[0].name = "a/b" }
        broken("uuid") { $0.domains[0].uuid = "not-a-uuid" }
        broken("state") { $0.domains[0].state = "shutdown:nap" }
        broken("pid") { $0.domains[0].processID = 1 }
        broken("start time") { $0.domains[0].processStartTime = nil }
        broken("counters") { $0.domains[0].restarts = -1 }
        broken("counters") { $0.domains[0].startTime = -1 }
        broken("store path") { $0.store[0].path = "local/domain" }
        broken("twice") { $0.store.append($0.store[0]) }
        broken("base64") { $0.store[0].value = "%%%" }
        broken("too long") { $0.store[0].value = Data(count: 4097).base64EncodedString() }
        broken("permissions") { $0.store[0].permissions = [] }
        for (state, why) in cases {
            #expect(throws: DaemonStateError.self) { try DaemonState.decode(state.encoded()) }
            do {
                _ = try DaemonState.decode(state.encoded())
            } catch {
                #expect(error.description.contains(why), "\(error) should say \(why)")
            }
        }
    }

    @Test func registryRestoresUnderTheSameIDs() throws {
        var old = DomainRegistry()
        let a = try old.create(try configuration("a"), now: 1)
        let b = try old.create(try configuration("b"), now: 1)
        var fresh = DomainRegistry()
        try fresh.restore(b)
        #expect(throws: RegistryError.idInUse(b.id)) { try fresh.restore(b) }
        var renamed = a
        renamed.name = "b"
        #expect(throws: RegistryError.nameInUse("b")) { try fresh.restore(renamed) }
        try fresh.restore(a)
        #expect(fresh.all.map(\.id) == [a.id, b.id])
        // A new domain takes an id past the restored ones.
        let c = try fresh.create(try configuration("c"), now: 1)
        #expect(c.id == DomainID(rawValue: 3))
    }

    @Test func launchWithAStateDirectoryListensAndRecords() {
        let launch = GuestLaunch(executable: "/usr/bin/pvh", configPath: "/s/7.cfg", logPath: "/s/web.log", overrides: ["vcpus=1"],
                                 domain: DomainID(rawValue: 7), stateDirectory: "/s")
        #expect(launch.reattachSocket == "/s/7.guest" && launch.exitRecord == "/s/7.exit")
        #expect(launch.arguments == ["/usr/bin/pvh", "create", "-F", "--store-fd", "3", "--guest-store-fd", "4", "--domid", "7",
                                     "--reattach-socket", "/s/7.guest", "--exit-record", "/s/7.exit", "/s/7.cfg", "vcpus=1",
                                     "on_reboot=\"destroy\""])
    }
}
