import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The jail's per-guest ids and its chroot fallback (docs/ARCHITECTURE.md:
/// Sandbox) on a real daemon started as root: two guests of one daemon run
/// as two uids, each the range's base plus its domid, both working and both
/// shown by `pvh list -l` as /proc shows them; two `pvh run` guests on
/// their own (both domid 1) take two slots of the upper half; a guest jailed through the
/// chroot fallback (forced: PVH_JAIL_SELFTEST=chroot) still sees only the
/// jail's paths. Root only (CI runs as root).
extension HotplugTests {
    /// A guest of `name` with a 4 MiB disk of its own, running blk_rw (a
    /// pattern written, flushed and read back through its jailed process's
    /// blkback) and then control (it stays up until asked to stop).
    func createDiskGuest(_ name: String, seed: Int) throws {
        let image = "\(directory)/\(name).img"
        #expect(FileManager.default.createFile(atPath: image, contents: Data(count: 4 << 20)))
        let cfg = "\(directory)/\(name).cfg"
        let text = """
            type = "pvh"
            name = "\(name)"
            kernel = "\(try Env.testGuest.get())"
            memory = 32
            disk = [ '\(image),raw,xvda,rw' ]
            extra = "pvh.scenarios=blk_rw,control pvh.blkseed=\(seed)"
            on_crash = "destroy"
            """
        _ = FileManager.default.createFile(atPath: cfg, contents: Data(text.utf8))
        let created = try pvh(["create", cfg])
        #expect(created.status == 0, "\(created)")
    }

    /// `pvh list -l`'s objects by name.
    func listLong() throws -> [String: [String: Any]] {
        let long = try pvh(["list", "-l"])
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(long.stdout.utf8)) as? [[String: Any]], "\(long)")
        var byName: [String: [String: Any]] = [:]
        for domain in listed { if let name = domain["name"] as? String { byName[name] = domain } }
        return byName
    }

    /// The effective id of a `Uid:`/`Gid:` line (real, effective, saved, fs).
    static func effectiveID(_ line: String?) -> Int? {
        line.flatMap { $0.split(separator: "\t").dropFirst().first }.flatMap { Int($0) }
    }

    @Test("as root, two guests of one daemon are jailed as two uids of their own (base + domid, gid the same), both work, and pvh list -l shows each one's jail, uid and filter as /proc does",
          .enabled(if: geteuid() == 0, "the jail is entered only by a process started as root"))
    func perGuestUIDs() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try ChildProcess(Env.pvhBinary, ["daemon", "--foreground", "--api-socket", api, "--xenstore-socket", store,
                                                      "--destroy-on-exit"],
                                      environment: environment)
        defer { daemon.stop() }
        #expect(daemon.waitForLine(startingWith: "pvh daemon: ready", timeout: .seconds(60)) != nil, "\(daemon.errors)")
        try createDiskGuest("uida", seed: 3)
        try createDiskGuest("uidb", seed: 4)
        for name in ["uida", "uidb"] {
            #expect(until(300, daemon: daemon) { guestLog(name).contains("PVHTEST control WAITING") }, "\(guestLog(name))")
            #expect(guestLog(name).contains("PVHTEST blk_rw PASS"), "\(guestLog(name))")
        }
        let base = 0x7000_0000
        let listed = try listLong()
        var uids: [Int] = []
        for name in ["uida", "uidb"] {
            let domain = try #require(listed[name], "\(listed.keys)")
            let domid = try #require(domain["domid"] as? Int)
            let pid = try #require(domain["pid"] as? Int)
            let status = Self.status(pid)
            let uid = base + domid
            // Real, effective, saved and filesystem ids: all the guest's own.
            #expect(status["Uid"]?.split(separator: "\t").allSatisfy { $0 == "\(uid)" } == true, "\(name): \(status)")
            #expect(status["Gid"]?.split(separator: "\t").allSatisfy { $0 == "\(uid)" } == true, "\(name): \(status)")
            #expect(status["Groups"] == "\(uid)", "\(name): \(status)")
            #expect(guestLog(name).contains("jail: jailed: its own, \(base)+\(domid) (uid \(uid), gid \(uid))"), "\(guestLog(name))")
            let sandbox = try #require(domain["sandbox"] as? [String: Any], "\(domain)")
            #expect(sandbox["jailed"] as? Bool == true, "\(sandbox)")
            #expect(sandbox["uid"] as? Int == Self.effectiveID(status["Uid"]) && sandbox["gid"] as? Int == Self.effectiveID(status["Gid"]),
                    "\(sandbox) \(status)")
            #expect(sandbox["seccomp"] as? String == "filter" && status["Seccomp"] == "2", "\(sandbox)")
            #expect(sandbox["no_new_privs"] as? Bool == true && sandbox["effective_capabilities"] as? String == "0000000000000000",
                    "\(sandbox)")
            // Its directory is its own uid's (the console file is rewritten there).
            let owner = try FileManager.default.attributesOfItem(atPath: "\(directory)/\(name)")[.ownerAccountID] as? Int
            #expect(owner == uid)
            uids.append(uid)
        }
        #expect(Set(uids).count == 2, "\(uids)")

        // Both still answer: each is asked to power off and does.
        for name in ["uida", "uidb"] {
            let shutdown = try pvh(["shutdown", "-w", "--timeout", "120", name])
            #expect(shutdown.status == 0, "\(shutdown)")
            #expect(guestLog(name).contains("PVHTEST control PASS"), "\(guestLog(name))")
        }
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0, "\(daemon.errors)")
    }

    @Test("as root, a guest jailed through the chroot fallback (forced by PVH_JAIL_SELFTEST=chroot) has a root of only the jail's paths, runs as --jail-uid-base's uid and works",
          .enabled(if: geteuid() == 0, "the jail is entered only by a process started as root"))
    func chrootJail() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let base = 0x7010_0000
        var environment = environment
        environment["PVH_JAIL_SELFTEST"] = "chroot"
        let daemon = try ChildProcess(Env.pvhBinary, ["daemon", "--foreground", "--api-socket", api, "--xenstore-socket", store,
                                                      "--destroy-on-exit", "--jail-uid-base", "\(base)"],
                                      environment: environment)
        defer { daemon.stop() }
        #expect(daemon.waitForLine(startingWith: "pvh daemon: ready", timeout: .seconds(60)) != nil, "\(daemon.errors)")
        try createDiskGuest("chrooted", seed: 5)
        #expect(until(300, daemon: daemon) { guestLog("chrooted").contains("PVHTEST control WAITING") }, "\(guestLog("chrooted"))")
        #expect(guestLog("chrooted").contains("PVHTEST blk_rw PASS"), "\(guestLog("chrooted"))")
        #expect(guestLog("chrooted").contains("root a tmpfs (chroot: pivot_root failed)"), "\(guestLog("chrooted"))")

        let domain = try #require(try listLong()["chrooted"])
        let pid = try #require(domain["pid"] as? Int)
        let domid = try #require(domain["domid"] as? Int)
        let status = Self.status(pid)
        #expect(status["Uid"]?.split(separator: "\t").allSatisfy { $0 == "\(base + domid)" } == true, "\(status)")
        #expect(status["CapEff"] == "0000000000000000" && status["CapBnd"] == "0000000000000000" && status["Seccomp"] == "2",
                "\(status)")
        let sandbox = domain["sandbox"] as? [String: Any]
        #expect(sandbox?["jailed"] as? Bool == true && sandbox?["uid"] as? Int == base + domid, "\(domain)")

        // Its root, seen from the host: the jail's paths only, as with pivot_root.
        let root = "/proc/\(pid)/root"
        let paths = Self.tree(root)
        let guestDirectory = "\(directory)/chrooted"
        #expect(Self.outsideJail(paths, guestDirectory: guestDirectory).isEmpty, "\(paths)")
        #expect(paths.contains(guestDirectory), "\(paths)")
        for absent in ["/etc", "/usr", "/bin", "\(directory)/chrooted.img", try Env.testGuest.get(), "/dev/kvm"] {
            #expect(!FileManager.default.fileExists(atPath: root + absent), "\(absent) is visible in the jail")
        }

        let shutdown = try pvh(["shutdown", "-w", "--timeout", "120", "chrooted"])
        #expect(shutdown.status == 0, "\(shutdown)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0, "\(daemon.errors)")
    }

    @Test("as root, two pvh run guests on their own (both domid 1) are jailed as two uids of the range's upper half",
          .enabled(if: geteuid() == 0, "the jail is entered only by a process started as root"))
    func standaloneUIDs() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let base = 0x7000_0000
        var children: [ChildProcess] = []
        defer { children.forEach { $0.stop() } }
        for name in ["alone1", "alone2"] {
            children.append(try ChildProcess(Env.pvhBinary, ["run", "--name", name, "--kernel", try Env.testGuest.get(), "--memory", "32",
                                                             "--cmdline", "pvh.scenarios=control"],
                                             environment: environment))
        }
        var uids: [Int] = []
        for (name, child) in zip(["alone1", "alone2"], children) {
            #expect(until(120, daemon: child) { guestLog(name).contains("PVHTEST control WAITING") }, "\(guestLog(name)) \(child.errors)")
            // `jail: jailed: its own, BASE+32768+SLOT (uid N, gid N), ...`
            let line = try #require(guestLog(name).split(separator: "\n").first { $0.contains("jail: jailed: its own, \(base)+32768+") },
                                    "\(guestLog(name))")
            let uid = try #require(line.split(separator: "(uid ").dropFirst().first?.split(separator: ",").first.flatMap { Int($0) },
                                   "\(line)")
            #expect(uid >= base + 32768 && uid <= base + 65535, "\(line)")
            let status = Self.status(Int(child.pid))
            #expect(status["Uid"]?.split(separator: "\t").allSatisfy { $0 == "\(uid)" } == true, "\(name): \(status)")
            #expect(status["Seccomp"] == "2", "\(name): \(status)")
            uids.append(uid)
        }
        #expect(Set(uids).count == 2, "\(uids)")
        for child in children {
            kill(child.pid, SIGTERM)
            #expect(child.waitForExit(timeout: .seconds(60)) != nil, "\(child.errors)")
        }
    }
}
