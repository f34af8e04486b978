import Foundation
import Locking
import Testing
import VMM

/// The test guest's grant-table scenarios (testguest/grants.c) under KVM,
/// with the host playing the backend domain 0 for the held-grant part:
///
/// 1. the guest grants pages to domain 0, writes `data/grant-test/refs`
///    (`v1 rw=<ref> ro=<ref>`, `v2 rw=<ref> sub=<ref> off=<o> len=<l>`) and
///    prints `PVHTEST <scenario> WAITING refs=...`;
/// 2. the host (here, on that line) reads the refs from the domain's store,
///    maps them through the VMM's backend grant API, writes its pattern
///    through the rw mapping, checks a writable map of the ro grant is
///    refused (v2: copies into the sub-page window; past it is refused),
///    sees GTF_reading/GTF_writing set, and writes
///    `data/grant-test/host` = `held`;
/// 3. the guest's revoke (Linux's end_foreign_access) must fail; it writes
///    `data/grant-test/guest` = `revoke-refused` and prints
///    `PVHTEST <scenario> WAITING revoke-refused`;
/// 4. the host unmaps, sees the bits cleared (v2: the rw entry, whose flags
///    the guest's revoke attempt cleared, no longer maps), writes `host` =
///    `released`;
///    the guest's revoke now succeeds and it reports PASS or FAIL.
///
/// A host-side failure is written as `host` = `error <reason>` so the guest
/// fails at once instead of waiting out `pvh.grant_timeout`. No sleeps: the
/// host acts on console lines, the guest on a XenStore watch.
@Suite("Grant-table scenarios under KVM", .serialized, .enabled(if: Env.hasKVM, "needs /dev/kvm (read-write)"))
struct GrantTableScenarioTests {
    func boot(_ scenarios: String, host: GrantHost? = nil, extra: String = "") throws -> GuestRun {
        let elf = try Env.testGuest.get()
        let cmdline = "pvh.scenarios=\(scenarios)" + (extra.isEmpty ? "" : " \(extra)")
        var onLine: (@Sendable (String, Domain) -> Void)?
        if let host { onLine = { line, domain in host.onLine(line, domain) } }
        return try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: cmdline, memoryMiB: 32),
                                 onLine: onLine, limit: .seconds(180))
    }

    @Test("grant_v1 without a host: query_size, frames mapped highest first at a ballooned page and a hole, growth, remap keeps contents, Xen's errors")
    func v1TableOnly() throws {
        let run = try boot("grant_v1", extra: "pvh.grant_host=0")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        let result = run.results()["grant_v1"] ?? "missing"
        #expect(result.hasPrefix("PASS frames=4 "), "\(run.console.text)")
        #expect(result.contains("(ballooned)"), "\(result)")
    }

    @Test("grant_v1 with the host holding an rw and an ro grant: revoke refused while held, allowed after release")
    func v1Held() throws {
        let host = GrantHost()
        let run = try boot("grant_v1", host: host)
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.results()["grant_v1"]?.hasPrefix("PASS") == true, "\(run.console.text)\n\(host.report)")
        #expect(run.results()["grant_v1"]?.contains("held-grants=ok") == true)
        host.expectHeldAndReleased(scenario: "grant_v1", refs: ["rw", "ro"])
        // The guest revoked both (flags 0): they no longer map.
        let backend = try HeldGrantBackend(domain: run.domain)
        for ref: UInt32 in [10, 1547] {
            #expect((try? backend.map(ref, writable: false)) == nil, "ref \(ref) still maps after the guest revoked it")
        }
        print(run.lines.filter { $0.contains("grant") }.joined(separator: "\n") + "\n" + host.report)
    }

    @Test("grant_v2: set_version, status frames mapped with XENMAPIDX_grant_table_status, a held full-page grant, a sub-page grant copied into, back to v1")
    func v2Held() throws {
        let host = GrantHost()
        let run = try boot("grant_v2", host: host)
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.results()["grant_v2"]?.hasPrefix("PASS status_frames=1 ") == true, "\(run.console.text)\n\(host.report)")
        host.expectHeldAndReleased(scenario: "grant_v2", refs: ["rw"])
        print(run.lines.filter { $0.contains("grant") }.joined(separator: "\n") + "\n" + host.report)
        let o = host.observations
        #expect(o.subWindow["grant_v2 sub"] == 256..<768, "\(host.report)")
        #expect(o.refused["grant_v2 sub copy outside"] == true, "\(host.report)")
        #expect(o.refused["grant_v2 rw map after release"] == true, "\(host.report)")
    }

    @Test("grant_setup_table: the guest writes its entry into the frames setup_table gave; the host maps it read-only")
    func setupTableHeld() throws {
        let host = GrantHost()
        let run = try boot("grant_setup_table", host: host)
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.results()["grant_setup_table"]?.hasPrefix("PASS frames=2 ") == true, "\(run.console.text)\n\(host.report)")
        host.expectHeldAndReleased(scenario: "grant_setup_table", refs: ["ro"])
    }

    @Test("all grant scenarios in one boot, each twice (state carried over: mapped frames, versions, the status frame, revoked entries)",
          arguments: ["page", "vmcall"])
    func allInOneBoot(_ transport: String) throws {
        let host = GrantHost()
        let run = try boot("grant_v1,grant_v2,grant_setup_table,grant_v2,grant_v1,grant_setup_table", host: host,
                           extra: "pvh.transport=\(transport)")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.lines.contains("PVHTEST SUMMARY 6 passed, 0 failed"), "\(run.console.text)\n\(host.report)")
        #expect(host.observations.errors.isEmpty, "\(host.report)")
    }

    @Test("no host: the guest's wait for \"held\" is bounded (pvh.grant_timeout) and it fails with the reason")
    func noHostTimesOut() throws {
        let run = try boot("grant_setup_table", extra: "pvh.grant_timeout=300")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        let result = run.results()["grant_setup_table"] ?? "missing"
        #expect(result.hasPrefix("FAIL no \"held\" from the host in data/grant-test/host within 300 ms"), "\(result)")
    }

    @Test("a host-side error (host = \"error <reason>\") fails the guest at once with that reason")
    func hostError() throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(
            GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=grant_v1 pvh.grant_timeout=60000", memoryMiB: 32),
            onLine: { line, domain in
                if line.hasPrefix("PVHTEST grant_v1 WAITING refs=") {
                    try? domain.store.write(GrantHost.path("host", in: domain), "error refused by the test")
                }
            },
            limit: .seconds(60))
        #expect(run.results()["grant_v1"] == "FAIL host: error refused by the test", "\(run.console.text)")
    }
}

// MARK: - The host side

/// Byte i of a test page: `(i & 0xff) ^ (i >> 8) ^ seed` (grants.c `pat()`).
func grantTestPattern(_ seed: UInt8, _ range: Range<Int> = 0..<4096) -> [UInt8] {
    range.map { UInt8(truncatingIfNeeded: ($0 & 0xff) ^ ($0 >> 8)) ^ seed }
}

/// grants.c's pattern seeds.
enum GrantTestSeed {
    static let guestRO: UInt8 = 0x22
    static let host: UInt8 = 0x33
    static let hostSubPage: UInt8 = 0x55
}

/// `data/grant-test/refs` as the guest writes it: `v1 rw=10 ro=1547`,
/// `v2 rw=12 sub=269 off=256 len=512`, `v1 ro=20`.
struct PublishedGrants: Equatable {
    var version = 0
    var refs: [String: UInt32] = [:]
    var subOffset = 0
    var subLength = 0

    init?(_ text: String) {
        let words = text.split(separator: " ")
        guard let first = words.first, first == "v1" || first == "v2" else { return nil }
        version = first == "v1" ? 1 : 2
        for word in words.dropFirst() {
            let kv = word.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, let n = UInt32(kv[1]) else { return nil }
            switch kv[0] {
            case "off": subOffset = Int(n)
            case "len": subLength = Int(n)
            default: refs[kv[0]] = n
            }
        }
    }
}

/// Plays domain 0 for the guest's held-grant handshake, acting on console
/// lines (`GuestRun.boot`'s `onLine`, one serial queue). Records what it saw.
final class GrantHost: Sendable {
    struct Observations {
        /// GTF_reading|GTF_writing per "<scenario> <kind>" while held / after release.
        var held: [String: UInt16] = [:]
        var released: [String: UInt16] = [:]
        /// "<scenario> <what>": whether the VMM refused it.
        var refused: [String: Bool] = [:]
        /// "<scenario> sub": the sub-page grant's bytes as the backend sees them (offset in the page, length).
        var subWindow: [String: Range<Int>] = [:]
        var stages: [String] = []
        var errors: [String] = []
    }

    private struct Held {
        var scenario: String
        var grants: PublishedGrants
        var mappings: [(kind: String, ref: UInt32, mapping: HeldGrantMapping)]
    }

    private let state = Lock<(observations: Observations, held: Held?)>((Observations(), nil))

    var observations: Observations { state.withLock { $0.observations } }
    var report: String {
        let o = observations
        return "host stages \(o.stages), held \(o.held), released \(o.released), refused \(o.refused), errors \(o.errors)"
    }

    static let reading: UInt16 = 1 << 3  // GTF_reading
    static let writing: UInt16 = 1 << 4  // GTF_writing

    /// Checks what the host saw for `scenario`'s grants of the given kinds.
    func expectHeldAndReleased(scenario: String, refs kinds: [String]) {
        let o = observations
        #expect(o.errors.isEmpty, "\(report)")
        #expect(o.stages.contains("\(scenario) held") && o.stages.contains("\(scenario) released"), "\(report)")
        for kind in kinds {
            let want = kind == "rw" ? Self.reading | Self.writing : Self.reading
            #expect(o.held["\(scenario) \(kind)"] == want, "\(kind) while held: \(report)")
            #expect(o.released["\(scenario) \(kind)"] == 0, "\(kind) after release: \(report)")
        }
        if kinds.contains("ro") {
            #expect(o.refused["\(scenario) ro writable map"] == true, "\(report)")
            #expect(o.refused["\(scenario) ro write through read mapping"] == true, "\(report)")
        }
    }

    func onLine(_ line: String, _ domain: Domain) {
        let parts = line.split(separator: " ", maxSplits: 3).map(String.init)
        guard parts.count == 4, parts[0] == "PVHTEST", parts[2] == "WAITING" else { return }
        let scenario = parts[1]
        do {
            if parts[3].hasPrefix("refs=") {
                try hold(scenario, domain)
            } else if parts[3].hasPrefix("revoke-") {
                try release(scenario, domain, guestSays: parts[3])
            }
        } catch {
            let reason = "\(error)"
            state.withLock { $0.observations.errors.append("\(scenario): \(reason)") }
            try? domain.store.write(Self.path("host", in: domain), "error \(reason)")
        }
    }

    static func path(_ leaf: String, in domain: Domain) -> String {
        "/local/domain/\(domain.domainID.rawValue)/data/grant-test/\(leaf)"
    }

    private func note(_ body: (inout Observations) -> Void) { state.withLock { body(&$0.observations) } }

    /// Step 2: map the published grants, use them, say "held".
    private func hold(_ scenario: String, _ domain: Domain) throws {
        let text = try domain.store.read(Self.path("refs", in: domain))
        guard let grants = PublishedGrants(text) else { throw GrantHostError("unparsable refs \"\(text)\"") }
        let backend = try HeldGrantBackend(domain: domain)
        var mappings: [(kind: String, ref: UInt32, mapping: HeldGrantMapping)] = []
        if let rw = grants.refs["rw"] {
            let m = try backend.map(rw, writable: true)
            mappings.append(("rw", rw, m))
            try backend.write(m, grantTestPattern(GrantTestSeed.host), at: 0)
            let back = try backend.read(m, count: 4096, at: 0)
            if back != grantTestPattern(GrantTestSeed.host) { throw GrantHostError("rw mapping of \(rw) does not read back") }
        }
        if let ro = grants.refs["ro"] {
            // A writable map of a GTF_readonly grant is refused (_set_status_v1/_v2).
            let refused = (try? backend.map(ro, writable: true)).map { m in try? backend.unmap(m); return false } ?? true
            note { $0.refused["\(scenario) ro writable map"] = refused }
            let m = try backend.map(ro, writable: false)
            mappings.append(("ro", ro, m))
            // And a write through the read mapping is refused.
            let writeRefused = (try? backend.write(m, [0xee], at: 0)) == nil
            note { $0.refused["\(scenario) ro write through read mapping"] = writeRefused }
            let content = try backend.read(m, count: 4096, at: 0)
            if content != grantTestPattern(GrantTestSeed.guestRO) { throw GrantHostError("ro grant \(ro) does not hold the guest's pattern") }
        }
        if let sub = grants.refs["sub"] {
            // The backend reaches a sub-page grant's window only (Xen: copies
            // only; acquire_grant_for_copy bounds them by page_off/length).
            let window = grants.subOffset..<(grants.subOffset + grants.subLength)
            let region = try backend.window(of: sub)
            note { $0.subWindow["\(scenario) sub"] = region }
            try backend.copy(grantTestPattern(GrantTestSeed.hostSubPage, window), to: sub, at: 0)
            // One byte past the window is refused.
            let outsideRefused = (try? backend.copy([0xee], to: sub, at: grants.subLength)) == nil
            note { $0.refused["\(scenario) sub copy outside"] = outsideRefused }
        }
        for (kind, ref, _) in mappings {
            let usage = try backend.usage(of: ref)
            note { $0.held["\(scenario) \(kind)"] = usage }
        }
        state.withLock { $0.held = Held(scenario: scenario, grants: grants, mappings: mappings) }
        note { $0.stages.append("\(scenario) held") }
        try domain.store.write(Self.path("host", in: domain), "held")
    }

    /// Step 4: the guest tried to revoke; unmap, check the bits, say "released".
    private func release(_ scenario: String, _ domain: Domain, guestSays: String) throws {
        guard let held = state.withLock({ s -> Held? in defer { s.held = nil }; return s.held }), held.scenario == scenario else {
            throw GrantHostError("nothing held for \(scenario)")
        }
        let guestValue = try domain.store.read(Self.path("guest", in: domain))
        if guestValue != guestSays { throw GrantHostError("console says \(guestSays), data/grant-test/guest says \(guestValue)") }
        let backend = try HeldGrantBackend(domain: domain)
        for (_, _, mapping) in held.mappings { try backend.unmap(mapping) }
        for (kind, ref, _) in held.mappings {
            let usage = try backend.usage(of: ref)
            note { $0.released["\(scenario) \(kind)"] = usage }
        }
        if held.grants.version == 2, let rw = held.grants.refs["rw"] {
            // v2's revoke attempt cleared the flags (the hold outlived it):
            // once the last hold is gone, the entry grants nothing.
            let refused = (try? backend.map(rw, writable: true)).map { m in try? backend.unmap(m); return false } ?? true
            note { $0.refused["\(scenario) rw map after release"] = refused }
        }
        note { $0.stages.append("\(scenario) released") }
        try domain.store.write(Self.path("host", in: domain), "released")
    }
}

struct GrantHostError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
