import Foundation
import Testing

/// `pvh create` from xl config files: the dry run's JSON, xl's exit status
/// for a bad config, and Xen's own PVH example (Debian's xen-utils-common
/// installs it) resolved and booted with only its paths changed.
@Suite("pvh create (xl configs)", .enabled(if: Env.hasPVHBinary, "needs .build/debug/pvh: run `swift build` first (scripts/test.sh does)"))
struct XLConfigCreateTests {
    func pvh(_ args: [String], limit: Double = 60, environment: [String: String] = [:]) throws -> PVHResult {
        try Env.runPVH(args, limit: limit, environment: environment)
    }

    func tempFile(_ text: String, suffix: String = ".cfg") -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-xl-\(UUID().uuidString.prefix(8))\(suffix)").path
        _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    func json(_ text: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "not a JSON object: \(text)")
    }

    @Test("-n prints the resolved config as JSON, keys in a fixed order; overrides win; exit 0")
    func dryRun() throws {
        let cfg = tempFile("type = \"pvh\"\nname = \"web\"\nkernel = \"/k\"\nmemory = 64\nvif = [ 'type=none' ]\nseclabel = 'x'\n")
        defer { try? FileManager.default.removeItem(atPath: cfg) }
        let r = try pvh(["create", "-n", cfg, "memory=128", "extra=\"console=hvc0\""])
        #expect(r.status == 0, "\(r.stderr)")
        let j = try json(r.stdout)
        #expect(j["name"] as? String == "web")
        #expect(j["memory"] as? Int == 128)
        #expect(j["cmdline"] as? String == "console=hvc0")
        #expect((j["vif"] as? [[String: Any]])?.first?["type"] as? String == "none")
        let keys = r.stdout.split(separator: "\n").filter { $0.hasPrefix("  \"") }.map { $0.dropFirst(3).prefix { $0 != "\"" } }
        #expect(keys.prefix(4) == ["name", "type", "uuid", "memory"])
        #expect(keys.last == "max_event_channels")
        #expect(r.stderr == "Parsing config from \(cfg)\n\(cfg):6: warning: `seclabel' ignored: pvh has no XSM/FLASK security labels\n")
        // The same with --dry-run, and twice: the output is stable.
        #expect(try pvh(["create", "--dry-run", cfg, "memory=128", "extra=\"console=hvc0\""]).stdout == r.stdout)
    }

    @Test("a bad config: xl's messages on stderr, exit 1; bad arguments exit 2")
    func badConfigs() throws {
        let cfg = tempFile("name = \"web\"\nmemory = lots\n")
        defer { try? FileManager.default.removeItem(atPath: cfg) }
        let r = try pvh(["create", "-n", cfg])
        #expect(r.status == 1)
        #expect(r.stdout.isEmpty)
        #expect(r.stderr == """
            Parsing config from \(cfg)
            \(cfg):2: config parsing error near `lots': syntax error, unexpected IDENT, expecting STRING or NUMBER or '['

            """)
        let typed = tempFile("type = \"pvh\"\nname = \"web\"\nkernel = \"/k\"\nvcpus = \"two\"\n")
        defer { try? FileManager.default.removeItem(atPath: typed) }
        let t = try pvh(["create", "-n", typed])
        #expect(t.status == 1)
        #expect(t.stderr.hasSuffix("\(typed):4: parameter `vcpus' is not a valid number\n"), "\(t.stderr)")
        let missing = try pvh(["create", "-n", "/nonexistent/web.cfg"])
        #expect(missing.status == 1)
        #expect(missing.stderr == "/nonexistent/web.cfg: unable to open configuration file: No such file or directory\n")
        let endless = try pvh(["create", "-n", "/dev/zero"])
        #expect(endless.status == 1)
        #expect(endless.stderr == "/dev/zero: larger than 16 MiB: not a configuration file\n")
        let tooSmall = try pvh(["create", "-n", typed, "vcpus=1", "memory=8"])
        #expect(tooSmall.status == 1)
        #expect(tooSmall.stderr.hasSuffix("\(typed): memory = 8: must be 16 to 1048576 MiB\n"), "\(tooSmall.stderr)")
        let usage = try pvh(["create", "-n", typed, "notanoverride"])
        #expect(usage.status == 2)
    }

    /// Xen's tools/examples/xlexample.pvhlinux as Debian installs it, with
    /// only its kernel and disk paths changed.
    func xenExample(kernel: String, disk: String) throws -> String {
        let installed = "/etc/xen/xlexample.pvhlinux"
        let text = try #require(try? String(contentsOfFile: installed, encoding: .utf8),
                                "\(installed) is missing: install xen-utils-common (scripts/deps.txt)")
        // Each path must be there once: a changed example fails here, loudly.
        #expect(text.components(separatedBy: "\"/boot/vmlinuz\"").count == 2)
        #expect(text.components(separatedBy: "'/dev/zvol/tank/guest-volume,").count == 2)
        return text.replacingOccurrences(of: "\"/boot/vmlinuz\"", with: "\"\(kernel)\"")
            .replacingOccurrences(of: "'/dev/zvol/tank/guest-volume,", with: "'\(disk),")
    }

    @Test("Xen's xlexample.pvhlinux, paths changed, resolves as xl reads it")
    func xenExampleResolves() throws {
        let cfg = tempFile(try xenExample(kernel: "/srv/vmlinuz", disk: "/srv/guest.img"))
        defer { try? FileManager.default.removeItem(atPath: cfg) }
        let r = try pvh(["create", "-n", cfg])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr == "Parsing config from \(cfg)\n")
        let j = try json(r.stdout)
        #expect(j["name"] as? String == "example.pvhlinux")
        #expect(j["type"] as? String == "pvh")
        #expect(j["kernel"] as? String == "/srv/vmlinuz")
        #expect(j["cmdline"] as? String == "root=/dev/xvda1")
        #expect(j["memory"] as? Int == 512)
        #expect(j["vcpus"] as? Int == 4)
        let disks = try #require(j["disk"] as? [[String: Any]])
        #expect(disks.count == 1)
        #expect(disks.first?["target"] as? String == "/srv/guest.img")
        #expect(disks.first?["vdev"] as? String == "xvda")
        #expect(disks.first?["access"] as? String == "rw")
        let vifs = try #require(j["vif"] as? [[String: Any]])
        #expect(vifs.count == 1)
        #expect(vifs.first?["type"] as? String == "user")
        #expect(j["on_reboot"] as? String == "restart")
    }

    @Test("the test guest boots from xlexample.pvhlinux: its blkfront reads the disk, then it powers off (status 0)",
          .enabled(if: Env.hasKVM, "needs /dev/kvm"))
    func xenExampleBoots() throws {
        let image = tempFile("", suffix: ".img")
        defer { try? FileManager.default.removeItem(atPath: image) }
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: image))
        try h.truncate(atOffset: 16 << 20)
        try h.close()
        let cfg = tempFile(try xenExample(kernel: try Env.testGuest.get(), disk: image))
        defer { try? FileManager.default.removeItem(atPath: cfg) }
        // The scenario comes as an override (xl create's KEY=VALUE): the file
        // keeps everything but its paths.
        // Its log and runtime directory (the dmesg file a named guest leaves) in a directory of the test's own.
        let dir = tempFile("", suffix: ".d")
        try FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try pvh(["create", "-F", "--hypervisor-console", "stdout", cfg, "extra=\"pvh.scenarios=blk_info pvh.exit=poweroff\""],
                        limit: 300, environment: ["PVH_RUNTIME_DIR": dir, "PVH_LOG_DIR": dir])
        #expect(r.status == 0, "\(r.stderr)\n\(r.stdout)")
        #expect(r.stdout.contains("PVHTEST blk_info PASS"), "\(r.stdout)")
    }
}
