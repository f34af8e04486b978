import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Hot-plug through the daemon's store (issue 12): a test guest runs under
/// `pvh daemon` with one disk; `pvh block-attach` adds a second raw image
/// holding the pattern blk_rw writes, the guest's blkfront (scenario
/// blk_hotplug) connects it and reads the pattern, `pvh block-list` shows it
/// Connected, `pvh block-detach` closes it with the guest and removes it, and
/// the same image attaches again (its lock was released). A vif with
/// `type=none` is connected by the guest's netfront (net_hotplug), listed
/// Connected and detached with the guest; another, which no netfront
/// serves, is detached at once (no frontend driver would answer), and a
/// third removed with `--force`. Every wait is bounded.
@Suite("pvh hot-plug", .enabled(if: Env.hasKVM && Env.hasPVHBinary, "needs /dev/kvm and .build/debug/pvh"))
struct HotplugTests {
    let directory: String
    var environment: [String: String] { ["PVH_RUNTIME_DIR": directory, "PVH_LOG_DIR": directory] }
    var api: String { "\(directory)/api.sock" }

    /// The daemon's /metrics text.
    func metrics() throws -> String {
        let r = try runCommand("/usr/bin/curl", ["-s", "--max-time", "20", "--unix-socket", api, "http://localhost/metrics"], timeout: .seconds(30))
        #expect(r.status == 0, "\(r)")
        return r.stdout
    }
    var store: String { "\(directory)/xenstored.sock" }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-hotplug-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    func pvh(_ arguments: [String], timeout: Duration = .seconds(200)) throws -> CommandResult {
        try runCommand(Env.pvhBinary, arguments, environment: environment, timeout: timeout)
    }

    func guestLog(_ name: String) -> String {
        (try? String(contentsOfFile: "\(directory)/\(name).log", encoding: .utf8)) ?? ""
    }

    /// Waits (up to `seconds`, every 200 ms while the daemon runs) until `condition` holds.
    func until(_ seconds: Double, daemon: ChildProcess, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            if daemon.waitForExit(timeout: .milliseconds(200)) != nil { return false }
        }
        return try condition()
    }

    /// The test guest's block pattern (testguest/blkfront.c `pat_fill`):
    /// per 512-byte sector, 64 little-endian words: a magic, the LBA, the
    /// seed, 60 words of a splitmix64-seeded sequence, their sum.
    static func pattern(sectors: Int, seed: UInt64) -> [UInt8] {
        let magic: UInt64 = 0x0000_4b4c_4248_5650, k: UInt64 = 0x9e37_79b9_7f4a_7c15
        var bytes: [UInt8] = []
        bytes.reserveCapacity(sectors * 512)
        for lba in 0..<UInt64(sectors) {
            var z = lba &* k &+ seed
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            var v = z ^ (z >> 31)
            var words = [magic, lba, seed]
            var sum = magic &+ lba &+ seed
            for _ in 3..<63 {
                v = v &+ k
                words.append(v)
                sum = sum &+ v
            }
            words.append(sum)
            for w in words { withUnsafeBytes(of: w.littleEndian) { bytes.append(contentsOf: $0) } }
        }
        return bytes
    }

    @Test("block-attach: the guest's blkfront connects the second disk and reads its pattern; block-list shows it Connected; block-detach closes it; the image attaches again; a vif connected by the guest's netfront, listed, detached; one no netfront serves detached at once; another force-detached")
    func hotplugDiskAndNic() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try ChildProcess(Env.pvhBinary, ["daemon", "--foreground", "--api-socket", api, "--xenstore-socket", store],
                                      environment: environment)
        defer { daemon.stop() }
        #expect(daemon.waitForLine(startingWith: "pvh daemon: ready", timeout: .seconds(60)) != nil, "\(daemon.errors)")

        let boot = "\(directory)/boot.img", second = "\(directory)/second.img"
        #expect(FileManager.default.createFile(atPath: boot, contents: nil))
        try FileHandle(forWritingTo: URL(fileURLWithPath: boot)).truncate(atOffset: 4 << 20)
        var image = Self.pattern(sectors: 1024, seed: 7)
        image += [UInt8](repeating: 0, count: (8 << 20) - image.count)
        #expect(FileManager.default.createFile(atPath: second, contents: Data(image)))

        let cfg = "\(directory)/hp.cfg"
        let text = """
            type = "pvh"
            name = "hp"
            kernel = "\(try Env.testGuest.get())"
            memory = 32
            disk = [ '\(boot),raw,xvda,rw' ]
            extra = "pvh.scenarios=blk_hotplug,net_hotplug,control pvh.blkseed=7 pvh.hotplug_timeout=400000"
            on_crash = "destroy"
            """
        _ = FileManager.default.createFile(atPath: cfg, contents: Data(text.utf8))
        #expect(try pvh(["create", cfg]).status == 0)
        let ready = until(240, daemon: daemon) { guestLog("hp").contains("blk_hotplug: 1 vbd(s) at boot") }
        #expect(ready, "\(guestLog("hp"))")

        // A bad spec is refused naming it; an unknown guest is one line.
        let bad = try pvh(["block-attach", "hp", "\(second),qcow2,xvdb"])
        #expect(bad.status == 1 && bad.stderr.contains("raw"), "\(bad)")
        let unknown = try pvh(["block-list", "nosuch"])
        #expect(unknown.status == 1 && unknown.stderr.contains("nosuch"), "\(unknown)")

        for round in 1...2 {
            let attach = try pvh(["block-attach", "hp", "\(second),raw,xvdb,rw", "--timeout", "60"])
            #expect(attach.status == 0, "round \(round): \(attach)")
            // xvdb is in use now: a second attach is refused.
            if round == 1 {
                let again = try pvh(["block-attach", "hp", "\(second),raw,xvdb,rw"])
                #expect(again.status == 1 && again.stderr.contains("in use"), "\(again)")
            }
            let connected = until(240, daemon: daemon) {
                guestLog("hp").contains("blk_hotplug: round \(round): vbd 51728 connected")
            }
            #expect(connected, "round \(round): \(guestLog("hp"))")
            let list = try pvh(["block-list", "hp"])
            #expect(list.status == 0, "\(list)")
            let rows = list.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
            #expect(rows.first?.first == "Vdev", "\(list.stdout)")
            let row = rows.first { $0.first == "51728" }
            #expect(row?.count == 7 && row?[3] == "4" && row?[6] == "/local/domain/0/backend/vbd/1/51728", "\(list.stdout)")
            #expect(rows.contains { $0.first == "51712" }, "the boot disk is listed too: \(list.stdout)")
            // The hot-plugged disk's counters in the daemon's /metrics
            // (the guest's blkfront read its pattern), beside the boot disk's.
            let reads = "pvh_block_requests_total{domain=\"hp\",domid=\"1\",device=\"vbd-51728\",op=\"read\"} "
            let plugged = try metrics()
            #expect(plugged.contains(reads) && !plugged.contains(reads + "0\n"), "\(plugged.split(separator: "\n").filter { $0.contains("vbd") })")
            #expect(plugged.contains("device=\"vbd-51712\""))

            let detach = try pvh(["block-detach", "hp", "xvdb", "--timeout", "120"])
            #expect(detach.status == 0, "round \(round): \(detach)")
            let after = try pvh(["block-list", "hp"])
            #expect(!after.stdout.contains("51728"), "\(after.stdout)")
            // Detached: its series gone from the next scrape, the boot disk's kept.
            let unplugged = try metrics()
            #expect(!unplugged.contains("vbd-51728") && unplugged.contains("device=\"vbd-51712\""),
                    "\(unplugged.split(separator: "\n").filter { $0.contains("vbd") })")
        }
        #expect(until(120, daemon: daemon) { guestLog("hp").contains("PVHTEST blk_hotplug PASS") }, "\(guestLog("hp"))")

        // A vif with no host side: the guest's netfront (net_hotplug)
        // connects it; network-detach by MAC closes it with the guest.
        let nic = try pvh(["network-attach", "hp", "type=none", "mac=00:16:3e:00:00:42"])
        #expect(nic.status == 0, "\(nic)")
        #expect(until(240, daemon: daemon) { guestLog("hp").contains("net_hotplug: vif 0 connected") }, "\(guestLog("hp"))")
        let nics = try pvh(["network-list", "hp"])
        #expect(nics.stdout.hasPrefix("Idx BE Mac Addr."), "\(nics.stdout)")
        let nicRow = nics.stdout.split(separator: "\n").dropFirst().first?.split(separator: " ", omittingEmptySubsequences: true)
        #expect(nicRow?.first == "0" && nicRow?[2] == "00:16:3e:00:00:42" && nicRow?[4] == "4", "\(nics.stdout)")
        let detachNic = try pvh(["network-detach", "hp", "00:16:3e:00:00:42", "--timeout", "120"])
        #expect(detachNic.status == 0, "\(detachNic)")
        #expect(until(120, daemon: daemon) { guestLog("hp").contains("PVHTEST net_hotplug PASS") }, "\(guestLog("hp"))")

        // A second vif while no netfront runs (the control scenario): the
        // backend offers it (InitWait); no frontend driver takes it (its
        // state stays Initialising), so none would answer a Closing, and the
        // detach closes it at once (libxl would force it after its own
        // wait). A third is removed with --force.
        #expect(try pvh(["network-attach", "hp", "type=none"]).status == 0)
        let unserved = try pvh(["network-detach", "hp", "0", "--timeout", "30"])
        #expect(unserved.status == 0, "\(unserved)")
        #expect(try pvh(["network-list", "hp"]).stdout.split(separator: "\n").count == 1)
        #expect(try pvh(["network-attach", "hp", "type=none"]).status == 0)
        let forced = try pvh(["network-detach", "hp", "0", "--force"])
        #expect(forced.status == 0, "\(forced)")
        #expect(try pvh(["network-list", "hp"]).stdout.split(separator: "\n").count == 1)

        let shutdown = try pvh(["shutdown", "-w", "--timeout", "120", "hp"])
        #expect(shutdown.status == 0, "\(shutdown)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0)
        #expect(daemon.errors.contains("event: device_connected hp (domain 1): vbd 51728"), "\(daemon.errors)")
    }
}
