import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The guest process's jail (docs/ARCHITECTURE.md: Sandbox) on a real
/// daemon started as root: seen from the host, the process runs as the
/// jail's user with no capability, no_new_privs and its seccomp filter,
/// its root is a tmpfs holding only the jail's few paths (no kernel, no
/// image, no /etc); the guest still boots and uses its boot disk, and a
/// disk hot-plugged through the daemon, which opens the image and passes
/// its descriptor, connects in the guest. Root only (CI runs as root).
extension HotplugTests {
    /// `Key:` lines of /proc/PID/status.
    static func status(_ pid: Int) -> [String: String] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    static let passtInstalled = ["/usr/bin/passt", "/usr/sbin/passt"].contains { FileManager.default.isExecutableFile(atPath: $0) }

    /// The passt processes the guest process `pid`'s spawner (its child) runs.
    static func passts(under pid: Int) -> [Int] {
        func children(_ parent: Int) -> [Int] {
            let text = (try? String(contentsOfFile: "/proc/\(parent)/task/\(parent)/children", encoding: .utf8)) ?? ""
            return text.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        return children(pid).flatMap(children).filter { child in
            ((try? String(contentsOfFile: "/proc/\(child)/comm", encoding: .utf8)) ?? "").hasPrefix("passt")
        }
    }

    /// Every path under `root` (relative, sorted), at most `limit` of them.
    static func tree(_ root: String, limit: Int = 200) -> [String] {
        var paths: [String] = []
        var pending = [""]
        while let next = pending.popLast(), paths.count < limit {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: root + next)) ?? []
            for entry in entries.sorted() {
                let path = next + "/" + entry
                paths.append(path)
                var isDirectory: ObjCBool = false
                // Not into /proc: its own processes' directories, not the jail's files.
                if path != "/proc", FileManager.default.fileExists(atPath: root + path, isDirectory: &isDirectory), isDirectory.boolValue {
                    pending.append(path)
                }
            }
        }
        return paths.sorted()
    }

    /// The paths of a jail's tree (`tree`) that are none of the jail's own:
    /// /dev/null, /dev/urandom, /dev/net/tun where the host has it, /proc,
    /// the guest's directory with what is in it and its parents.
    static func outsideJail(_ paths: [String], guestDirectory: String) -> [String] {
        let expected = Set(["/dev", "/dev/null", "/dev/urandom", "/proc"]
                           + (FileManager.default.fileExists(atPath: "/dev/net/tun") ? ["/dev/net", "/dev/net/tun"] : []))
        return paths.filter { path in
            !expected.contains(path) && !guestDirectory.hasPrefix(path + "/") && path != guestDirectory
                && !path.hasPrefix(guestDirectory + "/")
        }
    }

    @Test("as root, a daemon's guest process is jailed: --jail-user nobody's uid and gid for it, CapEff 0, NoNewPrivs 1, Seccomp 2, a root of only the jail's paths; its boot disk works and a hot-plugged disk's passed image connects",
          .enabled(if: geteuid() == 0, "the jail is entered only by a process started as root"))
    func jailedGuest() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let daemon = try ChildProcess(Env.pvhBinary, ["daemon", "--foreground", "--api-socket", api, "--xenstore-socket", store,
                                                      "--destroy-on-exit", "--jail-user", "nobody"],
                                      environment: environment)
        defer { daemon.stop() }
        #expect(daemon.waitForLine(startingWith: "pvh daemon: ready", timeout: .seconds(60)) != nil, "\(daemon.errors)")
        let boot = "\(directory)/boot.img", second = "\(directory)/second.img"
        #expect(FileManager.default.createFile(atPath: boot, contents: nil))
        try FileHandle(forWritingTo: URL(fileURLWithPath: boot)).truncate(atOffset: 4 << 20)
        var image = Self.pattern(sectors: 1024, seed: 7)
        image += [UInt8](repeating: 0, count: (8 << 20) - image.count)
        #expect(FileManager.default.createFile(atPath: second, contents: Data(image)))
        let cfg = "\(directory)/jailed.cfg"
        let text = """
            type = "pvh"
            name = "jailed"
            kernel = "\(try Env.testGuest.get())"
            memory = 32
            disk = [ '\(boot),raw,xvda,rw' ]
            \(Self.passtInstalled ? "vif = [ '' ]" : "")
            extra = "pvh.scenarios=\(Self.passtInstalled ? "net_dhcp," : "")blk_hotplug,control pvh.blkseed=7 pvh.hotplug_timeout=400000"
            on_crash = "destroy"
            """
        _ = FileManager.default.createFile(atPath: cfg, contents: Data(text.utf8))
        #expect(try pvh(["create", cfg]).status == 0)
        // The guest boots and finds its boot disk through the jailed process's blkback.
        #expect(until(240, daemon: daemon) { guestLog("jailed").contains("blk_hotplug: 1 vbd(s) at boot") }, "\(guestLog("jailed"))")
        #expect(guestLog("jailed").contains("jail: jailed: nobody (uid 65534, gid 65534)"), "\(guestLog("jailed"))")

        let long = try pvh(["list", "-l", "jailed"])
        let listed = try #require(try JSONSerialization.jsonObject(with: Data(long.stdout.utf8)) as? [[String: Any]], "\(long)")
        let pid = try #require(listed.first?["pid"] as? Int, "\(long)")
        let status = Self.status(pid)
        #expect(status["Uid"]?.split(separator: "\t").allSatisfy { $0 == "65534" } == true, "\(status)")
        #expect(status["Gid"]?.split(separator: "\t").allSatisfy { $0 == "65534" } == true, "\(status)")
        #expect(status["Groups"] == "65534", "\(status)")
        #expect(status["CapEff"] == "0000000000000000" && status["CapPrm"] == "0000000000000000", "\(status)")
        #expect(status["CapBnd"] == "0000000000000000", "\(status)")
        #expect(status["NoNewPrivs"] == "1" && status["Seccomp"] == "2", "\(status)")
        // `pvh list -l` says the same, from the daemon's read of /proc.
        let sandbox = listed.first?["sandbox"] as? [String: Any]
        #expect(sandbox?["jailed"] as? Bool == true && sandbox?["uid"] as? Int == 65534 && sandbox?["gid"] as? Int == 65534, "\(long)")
        #expect(sandbox?["seccomp"] as? String == "filter" && sandbox?["no_new_privs"] as? Bool == true, "\(long)")
        // Its own mount, IPC and UTS namespaces (the daemon's are the
        // host's), seen from the host and in `pvh list -l`; its host name
        // is its domid's, not the host's.
        for kind in ["mnt", "ipc", "uts"] {
            let daemons = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(daemon.pid)/ns/\(kind)")
            let guests = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(kind)")
            #expect(daemons != guests, "\(kind): \(daemons)")
        }
        #expect(sandbox?["namespaces"] as? [String] == ["mnt", "ipc", "uts"], "\(long)")
        #expect(guestLog("jailed").contains("own namespaces mnt,ipc,uts (host name pvh-1)"), "\(guestLog("jailed"))")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/nsenter") {
            let name = try runCommand("/usr/bin/nsenter", ["--uts=/proc/\(pid)/ns/uts", "hostname"], environment: [:], timeout: .seconds(30))
            #expect(name.status == 0 && name.stdout == "pvh-1\n", "\(name)")
        }

        // Its root, seen from the host: the jail's paths only.
        let root = "/proc/\(pid)/root"
        let paths = Self.tree(root)
        let guestDirectory = "\(directory)/jailed"
        #expect(Self.outsideJail(paths, guestDirectory: guestDirectory).isEmpty, "\(paths)")
        #expect(paths.contains(guestDirectory) && paths.contains("/proc"), "\(paths)")
        for absent in ["/etc", "/usr", "/bin", boot, second, try Env.testGuest.get(), "/dev/kvm"] {
            #expect(!FileManager.default.fileExists(atPath: root + absent), "\(absent) is visible in the jail")
        }
        // Its own directory is the jail user's: the hypervisor console's file is rewritten there.
        let owner = try FileManager.default.attributesOfItem(atPath: guestDirectory)[.ownerAccountID] as? Int
        #expect(owner == 65534)

        if Self.passtInstalled {
            // User networking: passt (the spawner's child, outside the jail)
            // is the jail's user, answered the guest's DHCP, and once killed
            // is restarted as that user by the jailed process.
            #expect(guestLog("jailed").contains("PVHTEST net_dhcp PASS"), "\(guestLog("jailed"))")
            let first = try #require(Self.passts(under: pid).first, "no passt under \(pid)")
            #expect(Self.status(first)["Uid"]?.hasPrefix("65534") == true, "\(Self.status(first))")
            #expect(kill(pid_t(first), SIGKILL) == 0)
            var restarted: Int?
            #expect(until(60, daemon: daemon) {
                restarted = Self.passts(under: pid).first { $0 != first }
                return restarted != nil
            }, "passt not restarted: \(guestLog("jailed"))")
            if let restarted { #expect(Self.status(restarted)["Uid"]?.hasPrefix("65534") == true, "\(Self.status(restarted))") }
        }

        // Hot-plug: the daemon opens the image; the jailed process could not.
        let attach = try pvh(["block-attach", "jailed", "\(second),raw,xvdb,rw", "--timeout", "60"])
        #expect(attach.status == 0, "\(attach)")
        #expect(until(240, daemon: daemon) { guestLog("jailed").contains("blk_hotplug: round 1: vbd 51728 connected") },
                "\(guestLog("jailed"))")
        // Its lock is the guest process's: another writer is refused.
        let locked = try pvh(["block-attach", "jailed", "\(second),raw,xvdc,rw", "--timeout", "10"])
        #expect(locked.status == 1 && locked.stderr.contains("locked"), "\(locked)")
        let detach = try pvh(["block-detach", "jailed", "xvdb", "--timeout", "120"])
        #expect(detach.status == 0, "\(detach)")

        if Self.passtInstalled {
            // A user vif hot-plugged into the jailed process: its passt comes
            // from the spawner (the jail's root has no passt to find).
            let nic = try pvh(["network-attach", "jailed", "type=user", "--timeout", "60"])
            #expect(nic.status == 0, "\(nic)")
            #expect(until(30, daemon: daemon) { Self.passts(under: pid).count == 2 }, "\(guestLog("jailed"))")
            let gone = try pvh(["network-detach", "jailed", "1", "--timeout", "60"])
            #expect(gone.status == 0, "\(gone)")
        }

        let destroyed = try pvh(["destroy", "jailed"])
        #expect(destroyed.status == 0, "\(destroyed)")
        kill(daemon.pid, SIGTERM)
        #expect(daemon.waitForExit(timeout: .seconds(60)) == 0, "\(daemon.errors)")
    }
}
