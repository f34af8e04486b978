import Foundation
import Testing
import VMM

/// Issue 4 end to end: the test guest's XenStore client against the store,
/// `pvh run --name` with its xenstored socket, the control commands
/// (`pvh shutdown/reboot/mem-set/xenstore/list`) and Debian's xenstore-*
/// tools. Each `pvh run` gets its own name and runtime directory
/// (`RunningGuest`) and is killed if a test fails halfway. Waits are for
/// console lines and process exits, each with a bound; none is a sleep.
@Suite("XenStore under KVM", .serialized, .enabled(if: Env.hasKVM, "needs /dev/kvm (read-write)"))
struct XenStoreTests {
    static let needsPVH = Testing.ConditionTrait.enabled(if: Env.hasPVHBinary, "needs .build/debug/pvh: run `swift build` first")
    static let hasDebianTools = FileManager.default.isExecutableFile(atPath: "/usr/bin/xenstore-ls")

    /// A guest in the `control` scenario, waiting for control/shutdown.
    func controlGuest() throws -> RunningGuest {
        let guest = try RunningGuest(cmdline: "pvh.scenarios=control")
        let waiting = guest.child.waitForLine(startingWith: "PVHTEST control ", timeout: .seconds(30))
        #expect(waiting == "PVHTEST control WAITING", "\(guest.child.output)")
        return guest
    }

    /// Asks the guest to power off (pvh shutdown -w) and checks it did so by itself.
    func powerOff(_ guest: RunningGuest, scenario: String = "control") throws {
        let r = try guest.pvh(["shutdown", "-w", guest.name])
        #expect(r.status == 0, "\(r)")
        #expect(guest.child.waitForExit(timeout: .seconds(10)) == 0, "\(guest.child.output)\n\(guest.child.errors)")
        if scenario == "control" {
            #expect(guest.child.outputLines.contains("PVHTEST control PASS got=poweroff"), "\(guest.child.output)")
        }
    }

    @Test("the xenstore scenario: every check of the guest's ring client passes (a 3000-byte value included)")
    func xenstoreScenario() throws {
        let elf = try Env.testGuest.get()
        let run = try GuestRun.boot(GuestConfiguration(kernelPath: elf, commandLine: "pvh.scenarios=xenstore", memoryMiB: 32),
                                    limit: .seconds(60))
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        let checks = run.lines.filter { $0.hasPrefix("PVHTEST xenstore.") }
        #expect(checks.count >= 30, "\(run.console.text)")
        for line in checks { #expect(line.hasSuffix(" PASS"), "\(line)") }
        #expect(checks.contains("PVHTEST xenstore.write_big PASS"))
        #expect(checks.contains("PVHTEST xenstore.read_big PASS"))
        #expect(run.results()["xenstore"] == "PASS checks=\(checks.count)", "\(run.console.text)")
        #expect(run.lines.contains("PVHTEST SUMMARY 1 passed, 0 failed"))
    }

    @Test("pvh shutdown -w: the guest's watch sees poweroff, pvh run exits 0 within 2 s of the command", needsPVH)
    func shutdownWait() throws {
        let guest = try controlGuest()
        defer { guest.stop() }
        let start = ContinuousClock.now
        let r = try guest.pvh(["shutdown", "-w", guest.name])
        let commandDone = ContinuousClock.now
        #expect(r.status == 0, "\(r)")
        #expect(r.stdout.isEmpty && r.stderr.isEmpty, "\(r)")
        let status = guest.child.waitForExit(timeout: .seconds(10))
        #expect(status == 0, "\(guest.child.output)\n\(guest.child.errors)")
        #expect(guest.child.outputLines.contains("PVHTEST control PASS got=poweroff"), "\(guest.child.output)")
        let exited = try #require(guest.child.exitedAt)
        let latency = exited - start
        print("pvh shutdown -w: pvh run exited \(latency) after the command started; the command returned after \(commandDone - start)")
        #expect(latency < .seconds(2), "shutdown latency \(latency)")
        // -w returns only once the guest is gone.
        #expect(exited <= commandDone + .milliseconds(200), "pvh shutdown -w returned at \(commandDone - start), pvh run exited at \(latency)")
    }

    @Test("pvh reboot: the guest reboots itself, pvh run exits 3", needsPVH)
    func reboot() throws {
        let guest = try controlGuest()
        defer { guest.stop() }
        let r = try guest.pvh(["reboot", guest.name])
        #expect(r.status == 0, "\(r)")
        #expect(guest.child.waitForExit(timeout: .seconds(10)) == 3, "\(guest.child.output)\n\(guest.child.errors)")
        #expect(guest.child.outputLines.contains("PVHTEST control PASS got=reboot"), "\(guest.child.output)")
    }

    @Test("Debian's xenstore-ls/-write/-read/-watch/-rm on a running guest; xenstore-write control/shutdown powers it off",
          needsPVH, .enabled(if: hasDebianTools, "needs Debian's xenstore-utils (/usr/bin/xenstore-ls); scripts/deps.txt lists it"))
    func debianTools() throws {
        let guest = try controlGuest()
        defer { guest.stop() }
        let home = try guest.domainPath()

        let ls = try guest.xenstoreTool("xenstore-ls", ["-p", home])
        #expect(ls.status == 0, "\(ls)")
        #expect(ls.stdout.contains("name = \"\(guest.name)\""), "\(ls.stdout)")
        #expect(ls.stdout.contains("(n0,r1)"), "\(ls.stdout)")

        let w = try guest.xenstoreTool("xenstore-write", ["\(home)/data/debian", "from xenstore-write"])
        #expect(w.status == 0, "\(w)")
        let r = try guest.xenstoreTool("xenstore-read", ["\(home)/data/debian"])
        #expect(r.status == 0 && r.stdout == "from xenstore-write\n", "\(r)")

        // The watch's first line is its initial event: from then on a write is seen.
        let watched = "\(home)/data/watched"
        let watch = try ChildProcess("/usr/bin/xenstore-watch", ["-n", "2", watched], environment: guest.xenstoreEnvironment)
        defer { watch.stop() }
        #expect(watch.waitForLine(timeout: .seconds(10)) { _ in true } == watched, "\(watch.output) \(watch.errors)")
        let w2 = try guest.xenstoreTool("xenstore-write", [watched, "1"])
        #expect(w2.status == 0, "\(w2)")
        #expect(watch.waitForExit(timeout: .seconds(10)) == 0, "\(watch.output) \(watch.errors)")
        #expect(watch.outputLines == [watched, watched], "\(watch.output)")

        let rm = try guest.xenstoreTool("xenstore-rm", ["\(home)/data/debian"])
        #expect(rm.status == 0, "\(rm)")
        let gone = try guest.xenstoreTool("xenstore-read", ["\(home)/data/debian"])
        #expect(gone.status != 0, "\(gone)")
        #expect(gone.stdout.isEmpty, "\(gone)")

        // The guest sees a host write: its control/shutdown watch fires.
        let off = try guest.xenstoreTool("xenstore-write", ["\(home)/control/shutdown", "poweroff"])
        #expect(off.status == 0, "\(off)")
        #expect(guest.child.waitForExit(timeout: .seconds(10)) == 0, "\(guest.child.output)\n\(guest.child.errors)")
        #expect(guest.child.outputLines.contains("PVHTEST control PASS got=poweroff"), "\(guest.child.output)")
    }

    @Test("pvh xenstore read/write/ls/rm/watch --count; ENOENT: exit 1, one line; unknown guest: exit 2, one line", needsPVH)
    func pvhXenstore() throws {
        let guest = try controlGuest()
        defer { guest.stop() }
        let home = try guest.domainPath()

        let w = try guest.pvh(["xenstore", "write", guest.name, "data/cli", "first value"])
        #expect(w.status == 0 && w.stdout.isEmpty && w.stderr.isEmpty, "\(w)")
        let r = try guest.pvh(["xenstore", "read", guest.name, "data/cli"])
        #expect(r.status == 0 && r.stdout == "first value\n", "\(r)")
        let abs = try guest.pvh(["xenstore", "read", guest.name, "\(home)/name"])
        #expect(abs.status == 0 && abs.stdout == "\(guest.name)\n", "\(abs)")

        let ls = try guest.pvh(["xenstore", "ls", guest.name])
        #expect(ls.status == 0, "\(ls)")
        #expect(ls.stdout.contains("name = \"\(guest.name)\""), "\(ls.stdout)")
        #expect(ls.stdout.contains(" cli = \"first value\""), "\(ls.stdout)")
        #expect(ls.stdout.contains("(n0,r1)"), "\(ls.stdout)")

        let watch = try ChildProcess(Env.pvhBinary, ["xenstore", "watch", "--count", "2", guest.name, "data/cli"],
                                     environment: guest.environment)
        defer { watch.stop() }
        #expect(watch.waitForLine(timeout: .seconds(10)) { _ in true } == "\(home)/data/cli", "\(watch.output) \(watch.errors)")
        let w2 = try guest.pvh(["xenstore", "write", guest.name, "data/cli", "second"])
        #expect(w2.status == 0, "\(w2)")
        #expect(watch.waitForExit(timeout: .seconds(10)) == 0, "\(watch.output) \(watch.errors)")
        #expect(watch.outputLines == ["\(home)/data/cli", "\(home)/data/cli"], "\(watch.output)")

        let rm = try guest.pvh(["xenstore", "rm", guest.name, "data/cli"])
        #expect(rm.status == 0, "\(rm)")
        let missing = try guest.pvh(["xenstore", "read", guest.name, "data/cli"])
        #expect(missing.status == 1, "\(missing)")
        #expect(missing.stdout.isEmpty, "\(missing)")
        #expect(missing.stderr.contains("ENOENT"), "\(missing)")
        #expect(missing.stderr.split(separator: "\n").count == 1 && missing.stderr.hasSuffix("\n"), "\(missing)")

        let unknown = try guest.pvh(["xenstore", "read", "no-such-guest", "name"])
        #expect(unknown.status == 2, "\(unknown)")
        #expect(unknown.stderr.hasPrefix("pvh: no-such-guest: "), "\(unknown)")
        #expect(unknown.stderr.split(separator: "\n").count == 1, "\(unknown)")

        try powerOff(guest)
    }

    @Test("pvh mem-set: the balloon gives pages back and pvh run's resident memory falls accordingly", needsPVH)
    func memSetBalloon() throws {
        let guest = try RunningGuest(cmdline: "pvh.scenarios=balloon", memoryMiB: 128)
        defer { guest.stop() }
        // Before WAITING the guest has written every page it may release.
        let waiting = guest.child.waitForLine(startingWith: "PVHTEST balloon ", timeout: .seconds(60))
        #expect(waiting == "PVHTEST balloon WAITING target=131072", "\(guest.child.output)")
        let pid = guest.child.pid
        let rssBefore = try #require(procStatusKiB(pid, "VmRSS"))
        let anonBefore = try #require(procStatusKiB(pid, "RssAnon"))
        let fileBefore = try #require(procStatusKiB(pid, "RssFile"))

        let set = try guest.pvh(["mem-set", guest.name, "64"])
        #expect(set.status == 0 && set.stderr.isEmpty, "\(set)")
        let pass = try #require(guest.child.waitForLine(timeout: .seconds(60)) { $0.hasPrefix("PVHTEST balloon ") && $0 != waiting },
                                "\(guest.child.output)")
        let released = try #require(pass.hasPrefix("PVHTEST balloon PASS released=") ? Int(pass.split(separator: "=").last!) : nil,
                                    "\(guest.child.output)")
        #expect(released == (128 - 64) * 256, "\(pass)")
        let rssAfter = try #require(procStatusKiB(pid, "VmRSS"))
        let anonAfter = try #require(procStatusKiB(pid, "RssAnon"))
        let fileAfter = try #require(procStatusKiB(pid, "RssFile"))
        let releasedKiB = released * 4
        print("""
            pvh mem-set 128 -> 64 MiB: released \(released) pages (\(releasedKiB) KiB); \
            VmRSS \(rssBefore) -> \(rssAfter) KiB (-\(rssBefore - rssAfter)), \
            RssAnon \(anonBefore) -> \(anonAfter) KiB (-\(anonBefore - anonAfter)), RssFile \(fileBefore) -> \(fileAfter) KiB
            """)
        #expect(anonBefore >= releasedKiB, "the guest's touched pages should be resident before the release")
        // VmRSS also counts file pages (the debug binary's code) that pvh run
        // may map for the first time while it handles the release: those
        // are not guest memory coming back, so they are discounted.
        let fileGrowth = max(0, fileAfter - fileBefore)
        #expect((rssBefore - rssAfter) + fileGrowth >= releasedKiB * 8 / 10,
                "VmRSS fell by \(rssBefore - rssAfter) KiB (file pages +\(fileGrowth) KiB), expected >= 80% of \(releasedKiB) KiB")

        let target = try guest.pvh(["xenstore", "read", guest.name, "memory/target"])
        #expect(target.status == 0 && target.stdout == "65536\n", "\(target)")

        // The balloon scenario then waits for control/shutdown.
        let r = try guest.pvh(["shutdown", guest.name])
        #expect(r.status == 0, "\(r)")
        #expect(guest.child.waitForExit(timeout: .seconds(10)) == 0, "\(guest.child.output)\n\(guest.child.errors)")
        #expect(guest.child.outputLines.contains("PVHINFO balloon shutdown got=poweroff"), "\(guest.child.output)")
        #expect(guest.child.outputLines.contains("PVHTEST SUMMARY 1 passed, 0 failed"), "\(guest.child.output)")
    }

    @Test("the socket: an oversized frame closes only that connection; a client that stops reading stalls no one", needsPVH)
    func socketRobustness() throws {
        let guest = try controlGuest()
        defer { guest.stop() }
        let home = try guest.domainPath()

        // xsd_sockmsg: type XS_READ (2), req_id 1, tx_id 0, len 5000 > XENSTORE_PAYLOAD_MAX.
        let raw = try UnixSocket.connect(to: guest.socket)
        defer { raw.close() }
        #expect(raw.writeAll(littleEndian([2, 1, 0, 5000])))
        #expect(raw.waitReadable(timeout: 10), "the server should close the connection")
        #expect(raw.read() == nil, "expected end of stream, not a reply")

        // The store still serves a new client, and the guest still runs.
        let name = try guest.pvh(["xenstore", "read", guest.name, "name"])
        #expect(name.status == 0 && name.stdout == "\(guest.name)\n", "\(name)")
        if Self.hasDebianTools {
            let r = try guest.xenstoreTool("xenstore-read", ["\(home)/name"])
            #expect(r.status == 0 && r.stdout == "\(guest.name)\n", "\(r)")
        }
        #expect(guest.child.exitedAt == nil, "\(guest.child.output)")

        // Client A asks for ~800 KB of replies and reads none of them.
        let big = String(repeating: "0123456789abcdef", count: 250)
        let client = try XenStoreClient(socketPath: guest.socket)
        try client.write("\(home)/data/big", big)
        let a = try UnixSocket.connect(to: guest.socket)
        defer { a.close() }
        let path = Array("\(home)/data/big".utf8) + [0]
        var requests: [UInt8] = []
        let count = 200
        for id in 1...count { requests += littleEndian([2, UInt32(id), 0, UInt32(path.count)]) + path }
        #expect(a.writeAll(requests))

        // Client B goes on working meanwhile.
        let b = try XenStoreClient(socketPath: guest.socket)
        let start = ContinuousClock.now
        for i in 0..<50 {
            try b.write("\(home)/data/b", "value \(i)")
            #expect(try b.read("\(home)/data/b") == "value \(i)")
        }
        let took = ContinuousClock.now - start
        print("socket: 50 write+read round trips of client B while client A had \(count * (16 + big.utf8.count)) bytes of replies unread: \(took)")
        #expect(took < .seconds(10))

        // A's replies were kept for it (well under the per-peer bound): all there, in order.
        var buffer: [UInt8] = []
        var replies = 0
        var bad: [String] = []
        while replies < count, a.waitReadable(timeout: 10), let chunk = a.read() {
            buffer += chunk
            while buffer.count >= 16 {
                let header = (0..<4).map { field in (0..<4).reduce(UInt32(0)) { $0 | UInt32(buffer[field * 4 + $1]) << (8 * $1) } }
                let length = Int(header[3])
                guard buffer.count >= 16 + length else { break }
                let payload = Array(buffer[16..<(16 + length)])
                replies += 1
                if header[0] != 2 || header[1] != UInt32(replies) || payload != Array(big.utf8) {
                    bad.append("reply \(replies): type \(header[0]) req_id \(header[1]) len \(length)")
                }
                buffer.removeFirst(16 + length)
            }
        }
        #expect(replies == count)
        #expect(bad.isEmpty, "\(bad.prefix(5))")

        try powerOff(guest)
    }

    @Test("pvh list shows the running guest; a second pvh run with the same --name: exit 2, one line", needsPVH)
    func listAndDuplicateName() throws {
        let guest = try controlGuest()
        defer { guest.stop() }

        let list = try guest.pvh(["list"])
        #expect(list.status == 0, "\(list)")
        let row = list.stdout.split(separator: "\n").first { $0.hasPrefix(guest.name + " ") }
        #expect(row != nil, "\(list.stdout)")
        #expect(row?.contains(guest.socket) == true, "\(list.stdout)")

        let elf = try Env.testGuest.get()
        let dup = try guest.pvh(["run", "--name", guest.name, "--kernel", elf, "--memory", "32", "--cmdline", "pvh.scenarios=version"])
        #expect(dup.status == 2, "\(dup)")
        #expect(dup.stderr.contains("already running"), "\(dup)")
        #expect(dup.stderr.split(separator: "\n").count == 1, "\(dup)")
        #expect(dup.stdout.isEmpty, "\(dup)")

        // The first guest is untouched: its socket still answers.
        let name = try guest.pvh(["xenstore", "read", guest.name, "name"])
        #expect(name.status == 0 && name.stdout == "\(guest.name)\n", "\(name)")
        try powerOff(guest)
    }
}

/// Little-endian bytes of 32-bit words (xsd_sockmsg's header).
func littleEndian(_ words: [UInt32]) -> [UInt8] {
    words.flatMap { w in (0..<4).map { UInt8(truncatingIfNeeded: w >> (8 * $0)) } }
}
