import Foundation
import PVHAPI
import Testing

/// `DomainInfo.sandbox` (`pvh list -l`): what the daemon makes of a guest
/// process's /proc/PID/status, and that the answer fits the API document.
struct ProcessConfinementTests {
    /// The lines of a jailed, filtered guest process's status that matter,
    /// among others as proc(5) prints them (tab-separated ids).
    static let jailed = """
        Name:\tpvh
        Umask:\t0022
        State:\tS (sleeping)
        Uid:\t1879048193\t1879048193\t1879048193\t1879048193
        Gid:\t1879048193\t1879048193\t1879048193\t1879048193
        Groups:\t1879048193
        CapInh:\t0000000000000000
        CapPrm:\t0000000000000000
        CapEff:\t0000000000000000
        CapBnd:\t0000000000000000
        NoNewPrivs:\t1
        Seccomp:\t2
        Seccomp_filters:\t1
        """

    @Test("a jailed, filtered process: its effective ids, filter, no_new_privs and no capability")
    func jailedProcess() throws {
        let confinement = try #require(ProcessConfinement(status: Self.jailed, jailed: true))
        #expect(confinement == ProcessConfinement(jailed: true, uid: 1_879_048_193, gid: 1_879_048_193, seccomp: "filter",
                                                  noNewPrivs: true, effectiveCapabilities: "0000000000000000"))
    }

    @Test("an unconfined root process: uid 0, seccomp disabled; the effective id is the second of four")
    func unconfinedProcess() throws {
        let status = """
            Uid:\t1000\t0\t0\t0
            Gid:\t1000\t5\t0\t0
            CapEff:\t000001ffffffffff
            NoNewPrivs:\t0
            Seccomp:\t0
            """
        let confinement = try #require(ProcessConfinement(status: status, jailed: false))
        #expect(confinement.uid == 0 && confinement.gid == 5)
        #expect(confinement.seccomp == "disabled" && !confinement.noNewPrivs && !confinement.jailed)
        #expect(confinement.effectiveCapabilities == "000001ffffffffff")
    }

    @Test("a status missing a field or with one malformed is no answer, not a guess",
          arguments: ["Seccomp:\t2", "Seccomp:\t7", "NoNewPrivs:\t1", "Uid:\t1\t2\t3", "CapEff:\t00", "CapEff:\tzzzzzzzzzzzzzzzz"])
    func malformed(_ bad: String) {
        let key = bad.prefix { $0 != ":" }
        var lines = Self.jailed.split(separator: "\n").filter { !$0.hasPrefix(key + ":") }.map(String.init)
        // The field left out, or replaced by the bad one.
        if bad != "Seccomp:\t2" && bad != "NoNewPrivs:\t1" { lines.append(bad) }
        #expect(ProcessConfinement(status: lines.joined(separator: "\n"), jailed: true) == nil)
    }

    @Test("its JSON fits DomainInfo.sandbox in docs/api/openapi.json")
    func fitsTheDocument() throws {
        let document = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/api/openapi.json").path
        let checker = try SchemaChecker(documentAt: document)
        var confinement = try #require(ProcessConfinement(status: Self.jailed, jailed: true))
        confinement.namespaces = ["mnt", "ipc", "uts"]
        let value = try JSONDecoder().decode(JSON.self, from: JSONEncoder().encode(confinement))
        let schema = try #require(checker.schema(named: "DomainInfo")?["properties"]?["sandbox"])
        #expect(checker.check(value, against: schema).isEmpty, "\(checker.check(value, against: schema))")
        #expect(value["no_new_privs"] == .bool(true) && value["effective_capabilities"] == .string("0000000000000000"))
        #expect(value["namespaces"] == .array([.string("mnt"), .string("ipc"), .string("uts")]))
        // A namespace name /proc does not have does not fit.
        let bad = try JSONDecoder().decode(JSON.self, from: JSONEncoder().encode(
            ProcessConfinement(jailed: true, uid: 1, gid: 1, seccomp: "filter", noNewPrivs: true,
                               effectiveCapabilities: "0000000000000000", namespaces: ["mount"])))
        #expect(!checker.check(bad, against: schema).isEmpty)
    }
}
