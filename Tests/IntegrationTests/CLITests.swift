import Foundation
import Testing

/// The `pvh` command-line contract: exit statuses and one-line errors.
@Suite("pvh CLI", .enabled(if: Env.hasPVHBinary, "needs .build/debug/pvh: run `swift build` first (scripts/test.sh does)"))
struct CLITests {
    /// pvh with `args`, bounded (`Env.runPVH`: killed after 300 s).
    func pvh(_ args: [String]) throws -> PVHResult { try Env.runPVH(args) }

    func tempFile(_ bytes: [UInt8]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-cli-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    @Test("a missing kernel file: one line naming it, exit 2")
    func missingKernel() throws {
        let r = try pvh(["run", "--kernel", "/nonexistent/vmlinuz"])
        #expect(r.status == 2)
        #expect(r.stderr == "pvh: /nonexistent/vmlinuz: no such file\n")
    }

    @Test("not a kernel / an ELF without the PVH note: one line, exit 2", .enabled(if: Env.hasKVM, "needs /dev/kvm"))
    func badKernels() throws {
        let junk = try tempFile(Array("this is not a kernel".utf8))
        let r = try pvh(["run", "--kernel", junk])
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("pvh: \(junk): "))
        #expect(r.stderr.split(separator: "\n").count == 1)

        let noNote = try tempFile(Array(try Data(contentsOf: URL(fileURLWithPath: "/bin/true"))))
        let r2 = try pvh(["run", "--kernel", noNote])
        #expect(r2.status == 2)
        #expect(r2.stderr.contains("PVH"), "\(r2.stderr)")
        #expect(r2.stderr.split(separator: "\n").count == 1)
    }

    @Test("--cpus that does not parse, or leaves a vCPU no online CPU of this host: one line naming it, exit 2")
    func badCPUs() throws {
        let elf = try Env.testGuest.get()
        let r = try pvh(["run", "--kernel", elf, "--cpus", "3-1"])
        #expect(r.status == 2)
        #expect(r.stderr.contains("--cpus '3-1': invalid CPU range '3-1'"), "\(r.stderr)")
        let beyond = ProcessInfo.processInfo.activeProcessorCount + 100
        let r2 = try pvh(["run", "--kernel", elf, "--vcpus", "2", "--cpus", "0", "--cpus", String(beyond)])
        #expect(r2.status == 2)
        #expect(r2.stderr.hasPrefix("pvh: cpus '\(beyond)': vCPU 1 would have no online CPU (this host's: "), "\(r2.stderr)")
        #expect(r2.stderr.split(separator: "\n").count == 1, "\(r2.stderr)")
    }

    @Test("a truncated ELF, a missing initrd, a directory: one line, exit 2")
    func badFiles() throws {
        let elf = try Env.testGuest.get()
        let truncated = try tempFile(Array(try Data(contentsOf: URL(fileURLWithPath: elf)).prefix(300)))
        let r = try pvh(["run", "--kernel", truncated])
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("pvh: \(truncated): truncated"), "\(r.stderr)")
        let r2 = try pvh(["run", "--kernel", elf, "--initrd", "/nonexistent/initrd"])
        #expect(r2.status == 2)
        #expect(r2.stderr == "pvh: /nonexistent/initrd: no such file\n")
        let r3 = try pvh(["run", "--kernel", "/tmp"])
        #expect(r3.status == 2)
        #expect(r3.stderr == "pvh: /tmp: is a directory\n")
    }

    @Test("Debian bzImages gone bad: truncated, corrupt LZ4 payload, larger than memory: one line, exit 2",
          .enabled(if: Env.hasKVM && Env.hasKernel("6.1"), "needs /dev/kvm and the guest kit (scripts/guest-kit.sh)"))
    func badBzImages() throws {
        let image = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Env.kernel("6.1"))))
        let truncated = try tempFile(Array(image.prefix(image.count / 2)))
        var corrupt = image
        for i in stride(from: 200_000, to: 400_000, by: 7) { corrupt[i] ^= 0x5a }
        let corruptPath = try tempFile(corrupt)
        let cases: [([String], String)] = [
            (["run", "--kernel", truncated], "pvh: \(truncated): truncated"),
            (["run", "--kernel", corruptPath], "pvh: \(corruptPath): corrupt or unsupported lz4 payload"),
            (["run", "--kernel", Env.kernel("6.1"), "--memory", "16"], "pvh: \(Env.kernel("6.1")): image needs"),
        ]
        for (args, prefix) in cases {
            let r = try pvh(args)
            #expect(r.status == 2, "\(args): \(r.stderr)")
            #expect(r.stderr.hasPrefix(prefix), "\(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
        }
    }

    @Test("bad options: one line naming the option, exit 2", arguments: [
        (["run", "--kernel", "x", "--memory", "0"], "--memory"),
        (["run", "--kernel", "x", "--vcpus", "0"], "--vcpus"),
        (["run", "--kernel", "x", "--memory", "lots"], "--memory"),
        (["run", "--kernel", "x", "--max-grant-frames", "0"], "--max-grant-frames 0: must be 1 to 1024"),
        (["run", "--kernel", "x", "--max-grant-frames", "1025"], "--max-grant-frames 1025: must be 1 to 1024"),
        (["run"], "--kernel"),
        (["run", "--kernel", "x", "--log-level", "loud"], "--log-level"),
        (["run", "--kernel", "x", "--hypervisor-console", "tty"], "--hypervisor-console"),
        (["run", "--kernel", "x", "--log-file", "/proc/pvh-none/x.log"], "--log-file '/proc/pvh-none/x.log': cannot create its directory"),
        (["dmesg", "bad/name"], "bad/name: not a guest name"),
        // The daemon's hand-over options (hidden): both or neither, sockets only, a guest's domain id.
        (["run", "--kernel", "x", "--store-fd", "99"], "--store-fd and --guest-store-fd: give both or neither"),
        (["run", "--kernel", "x", "--store-fd", "99", "--guest-store-fd", "98"], "--store-fd 99: not a connected stream socket"),
        (["run", "--kernel", "x", "--store-fd", "3", "--guest-store-fd", "3"], "the same descriptor"),
        (["run", "--kernel", "x", "--domid", "0"], "--domid 0: must be 1 to 32751"),
        (["create", "-F", "x.cfg", "--domid", "32752"], "--domid 32752: must be 1 to 32751"),
    ])
    func badOptions(_ args: [String], _ option: String) throws {
        let r = try pvh(args)
        #expect(r.status == 2, "\(args): \(r.stderr)")
        #expect(r.stderr.hasPrefix("pvh: "), "\(r.stderr)")
        #expect(r.stderr.contains(option), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }

    @Test("run --help documents every option")
    func help() throws {
        let r = try pvh(["run", "--help"])
        #expect(r.status == 0)
        for o in ["--kernel", "--initrd", "--cmdline", "--memory", "--vcpus", "--max-grant-frames", "--disk", "--log-file", "--log-level", "--hypervisor-console"] { #expect(r.stdout.contains(o)) }
        // The daemon's hand-over options are not for people.
        for o in ["--store-fd", "--guest-store-fd", "--domid"] { #expect(!r.stdout.contains(o)) }
    }

    @Test("a bad --disk: one line, --disk 'SPEC': REASON, exit 2", arguments: [
        (["/img,,xvda,x"], "pvh: --disk '/img,,xvda,x': access 'x': must be r, ro, w or rw\n"),
        (["foo=bar,/img,,xvda"], "pvh: --disk 'foo=bar,/img,,xvda': unknown parameter 'foo'\n"),
        (["vdev=xvda"], "pvh: --disk 'vdev=xvda': no target (only a CD-ROM may be empty)\n"),
        (["/img,,vda"], "pvh: --disk '/img,,vda': vdev 'vda': not a virtual device: expected xvdX[N], hdX[N], sdX[N], dN[pN] or a number (xen-vbd-interface(7))\n"),
        (["target=/img,vdev=xvda"],
         "pvh: --disk 'target=/img,vdev=xvda': target= must come last: it takes the rest of the specification, so 'vdev=xvda' would be part of the target\n"),
        (["backend=1,/img,,xvda"], "pvh: --disk 'backend=1,/img,,xvda': backend '1': only the control domain (0, dom0, Domain-0) serves disks\n"),
        ([""], "pvh: --disk '': empty disk specification\n"),
        (["/img,\n,vda"], "pvh: --disk '/img,\\n,vda': vdev 'vda': not a virtual device: expected xvdX[N], hdX[N], sdX[N], dN[pN] or a number (xen-vbd-interface(7))\n"),
        (["/a,,xvda", "/b,,xvdb", "/c,,d0p0"], "pvh: --disk '/c,,d0p0': vdev 'd0p0' (device 51712) is already used by --disk '/a,,xvda'\n"),
    ])
    func badDisk(_ specs: [String], _ message: String) throws {
        let r = try pvh(["run", "--kernel", "/nonexistent/vmlinuz"] + specs.flatMap { ["--disk", $0] })
        #expect(r.status == 2, "\(specs): \(r.stderr)")
        #expect(r.stderr == message)
        #expect(r.stdout.isEmpty)
    }

    @Test("good --disk options pass: the run goes on to the kernel (missing here), exit 2 naming it")
    func goodDisks() throws {
        let r = try pvh(["run", "--kernel", "/nonexistent/vmlinuz", "--disk", "/srv/a.img,raw,xvda,rw",
                         "--disk", "format=raw, vdev=xvdb, access=ro, target=/srv/b,c.img", "--disk", "phy:/dev/vg/x,xvdc,w",
                         "--disk", ",hdc:cdrom,r"])
        #expect(r.status == 2)
        #expect(r.stderr == "pvh: /nonexistent/vmlinuz: no such file\n")
    }

    @Test("the test guest powers off: exit 0; reboot: exit 3; crash: exit 4", .enabled(if: Env.hasKVM, "needs /dev/kvm"),
          arguments: [("poweroff", Int32(0)), ("reboot", 3), ("crash", 4)])
    func exitStatus(_ how: String, _ status: Int32) throws {
        let elf = try Env.testGuest.get()
        let r = try pvh(["run", "--kernel", elf, "--memory", "32", "--cmdline", "pvh.scenarios=version pvh.exit=\(how)",
                         "--hypervisor-console", "stdout"])
        #expect(r.status == status, "\(r.stderr)")
        #expect(r.stdout.contains("PVHTEST version PASS"))
    }

    /// `pvh run` of the test guest in a benchmark loop long enough to still
    /// be running when a signal comes; returns once its first console bytes
    /// arrived (the guest is running).
    func startLongRunningGuest(vcpus: Int) throws -> (Process, Pipe, Pipe) {
        let elf = try Env.testGuest.get()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Env.pvhBinary)
        p.arguments = ["run", "--kernel", elf, "--memory", "32", "--vcpus", "\(vcpus)", "--hypervisor-console", "stdout",
                       "--cmdline", "pvh.scenarios=bench_exit pvh.bench=100000000"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        #expect(!out.fileHandleForReading.availableData.isEmpty)
        return (p, out, err)
    }

    @Test("SIGTERM stops a running guest: status 130, one line on stderr", .enabled(if: Env.hasKVM, "needs /dev/kvm"))
    func sigterm() throws {
        let (p, out, err) = try startLongRunningGuest(vcpus: 1)
        p.terminate()
        withExtendedLifetime(out) { p.waitUntilExit() }  // the guest's stdout stays open while it runs
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationReason == .exit)
        #expect(p.terminationStatus == 130)
        #expect(e == "pvh: guest stopped by the host\n")
    }

    @Test("kill -USR1 dumps every vCPU, each time it is sent", .enabled(if: Env.hasKVM, "needs /dev/kvm"))
    func usr1DumpsEveryTime() throws {
        let (p, out, err) = try startLongRunningGuest(vcpus: 2)
        // A lost dump must fail the test, not hang it: after 60 s the guest
        // is killed (SIGKILL: a pvh that loses signals loses SIGTERM too).
        let pid = p.processIdentifier
        DispatchQueue.global().asyncAfter(deadline: .now() + 60) { kill(pid, SIGKILL) }
        // Each signal must give one line per vCPU; read until they are all there.
        var text = ""
        for round in 1...3 {
            kill(p.processIdentifier, SIGUSR1)
            while text.components(separatedBy: "\n").filter({ $0.hasPrefix("pvh: d1v") }).count < 2 * round {
                let chunk = err.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
            }
        }
        p.terminate()
        withExtendedLifetime(out) { p.waitUntilExit() }
        let lines = text.components(separatedBy: "\n")
        #expect(lines.filter { $0.hasPrefix("pvh: d1v0 rip=") }.count == 3, "\(text)")
        #expect(lines.filter { $0.hasPrefix("pvh: d1v1 rip=") }.count == 3, "\(text)")
        #expect(p.terminationStatus == 130)
    }

    @Test("--on-reboot restart boots the guest again after each reboot", .enabled(if: Env.hasKVM, "needs /dev/kvm"))
    func onRebootRestart() throws {
        let elf = try Env.testGuest.get()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Env.pvhBinary)
        p.arguments = ["run", "--kernel", elf, "--memory", "32", "--on-reboot", "restart", "--hypervisor-console", "stdout",
                       "--cmdline", "pvh.scenarios=version pvh.exit=reboot"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Read until the guest has completed three boots, then stop pvh.
        var text = ""
        while text.components(separatedBy: "PVHTEST SUMMARY").count - 1 < 3 {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        p.terminate()
        p.waitUntilExit()
        #expect(text.components(separatedBy: "PVHTEST SUMMARY 1 passed, 0 failed").count - 1 >= 3, "\(text)")
        #expect(p.terminationStatus == 130)
        let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(e.contains("restarting it (--on-reboot restart)"))
    }

    @Test("host describes the KVM backend", .enabled(if: Env.hasKVM, "needs /dev/kvm"))
    func host() throws {
        let r = try pvh(["host"])
        #expect(r.status == 0)
        #expect(r.stdout.lowercased().contains("backend"), "\(r.stdout)")
    }
}
