import DeviceSpecs
import Foundation
import Testing
import VMM

/// The test guest's blkfront (testguest/blkfront.c) against pvh's block
/// backend under KVM, on raw image files: every scenario, data that
/// survives a reboot and a `kill -9` after its flush, a host I/O error the
/// guest sees as BLKIF_RSP_ERROR, a ring the guest scribbles over (that
/// disk fails, the other goes on), and the backing-file errors of `--disk`.
@Suite("Block devices under KVM", .serialized, .enabled(if: Env.hasKVM, "needs /dev/kvm (read-write)"))
struct BlockDeviceScenarioTests {
    /// A sparse raw image in the temporary directory, removed by `remove()`.
    struct Image {
        let path: String
        init(megabytes: Int, directory: String = FileManager.default.temporaryDirectory.path) throws {
            path = "\(directory)/pvh-blk-\(UUID().uuidString.prefix(8)).img"
            FileManager.default.createFile(atPath: path, contents: nil)
            let h = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            try h.truncate(atOffset: UInt64(megabytes) << 20)
            try h.close()
        }
        func remove() { try? FileManager.default.removeItem(atPath: path) }
        func bytes() throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
    }

    func boot(_ scenarios: String, disk: Image, vcpus: Int = 1, extra: String = "") throws -> GuestRun {
        var config = GuestConfiguration(kernelPath: try Env.testGuest.get(),
                                        commandLine: "pvh.scenarios=\(scenarios)" + (extra.isEmpty ? "" : " \(extra)"),
                                        memoryMiB: 32, vcpus: vcpus)
        config.disks = [try DiskSpecification(parsing: "\(disk.path),raw,xvda,w")]
        return try GuestRun.boot(config, limit: .seconds(240))
    }

    /// Sectors `range` of `bytes` hold blkfront's pattern for `seed`: each
    /// 512-byte sector's header says which sector and seed it was written
    /// for, and its last word is the sum of the 63 before it.
    static func checkPattern(_ bytes: [UInt8], sectors range: Range<Int>, seed: UInt64) -> String? {
        func word(_ sector: Int, _ i: Int) -> UInt64 {
            var v: UInt64 = 0
            for b in 0..<8 { v |= UInt64(bytes[sector * 512 + i * 8 + b]) << (8 * b) }
            return v
        }
        for s in range {
            guard (s + 1) * 512 <= bytes.count else { return "sector \(s) is past the end of the file" }
            guard word(s, 0) == 0x0000_4b4c_4248_5650, word(s, 1) == UInt64(s), word(s, 2) == seed else {
                return "sector \(s): header \(String(word(s, 0), radix: 16)) lba \(word(s, 1)) seed \(word(s, 2))"
            }
            var sum: UInt64 = 0
            for i in 0..<63 { sum &+= word(s, i) }
            guard sum == word(s, 63) else { return "sector \(s): checksum" }
        }
        return nil
    }

    @Test("every blkfront scenario on one vCPU: handshake and reconnect, read/write/flush, multi-page ring, indirect, discard, Initialised before InitWait, then a second boot reads the data back")
    func scenarios() throws {
        let disk = try Image(megabytes: 64)
        defer { disk.remove() }
        let names = ["blk_info", "blk_rw", "blk_verify", "blk_multipage", "blk_indirect", "blk_discard", "blk_early_init"]
        let run = try boot(names.joined(separator: ","), disk: disk, extra: "pvh.blkseed=5")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        let results = run.results()
        for name in names {
            #expect(results[name]?.hasPrefix("PASS") == true, "\(name): \(results[name] ?? "missing")\n\(run.console.text)")
        }
        #expect(Self.checkPattern(try disk.bytes(), sectors: 0..<1024, seed: 5) == nil)
        let again = try boot("blk_verify", disk: disk, extra: "pvh.blkseed=5")
        #expect(again.results()["blk_verify"]?.hasPrefix("PASS") == true, "\(again.console.text)")
    }

    @Test("two queues with --vcpus 2 (multi-queue-num-queues=2), each with its own ring, port and thread")
    func multiQueue() throws {
        let disk = try Image(megabytes: 16)
        defer { disk.remove() }
        let run = try boot("blk_mq", disk: disk, vcpus: 2)
        #expect(run.results()["blk_mq"]?.hasPrefix("PASS queues=2") == true, "\(run.console.text)")
    }

    @Test("data written and flushed survives kill -9 of pvh (checked from the host), and the image is free again afterwards")
    func killAfterFlush() throws {
        let disk = try Image(megabytes: 16)
        defer { disk.remove() }
        // console_ring with input keeps the guest running after blk_rw.
        let guest = try RunningGuest(
            cmdline: "pvh.scenarios=blk_rw,console_ring pvh.console_input=1 pvh.console_timeout=120000 pvh.blkseed=9",
            arguments: ["--disk", "\(disk.path),raw,xvda,w"])
        defer { guest.stop() }
        let line = guest.child.waitForLine(timeout: .seconds(120)) { $0.hasPrefix("PVHTEST blk_rw ") }
        #expect(line?.hasPrefix("PVHTEST blk_rw PASS") == true, "\(guest.child.output)\n\(guest.child.errors)")
        kill(guest.child.process.processIdentifier, SIGKILL)
        #expect(guest.child.waitForExit(timeout: .seconds(30)) != nil)
        #expect(Self.checkPattern(try disk.bytes(), sectors: 0..<1024, seed: 9) == nil)
        // The kernel dropped the dead process's flock: a new guest may use it.
        let again = try boot("blk_verify", disk: disk, extra: "pvh.blkseed=9")
        #expect(again.results()["blk_verify"]?.hasPrefix("PASS") == true, "\(again.console.text)")
    }

    @Test("a host write error (the image's file system is full) reaches the guest as BLKIF_RSP_ERROR; the device and pvh keep working",
          .enabled(if: getuid() == 0, "needs root to mount a 64 KiB tmpfs"))
    func hostWriteError() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-full-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let mount = try runCommand("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir])
        try #require(mount.status == 0, "mount: \(mount.stderr)")
        defer { _ = try? runCommand("/bin/umount", [dir]) }
        let disk = try Image(megabytes: 16, directory: dir)
        // Fill the file system: the sparse image has no room to grow.
        let fill = try runCommand("/bin/dd", ["if=/dev/zero", "of=\(dir)/filler", "bs=4k", "count=64"])
        #expect(fill.stderr.contains("No space left"), "\(fill.stderr)")
        // Sector 8192 (4 MiB in) is far past the 64 KiB the file system holds.
        let run = try boot("blk_err", disk: disk, extra: "pvh.blkexpect=error pvh.blksector=8192 pvh.blkstart=0 pvh.blksectors=8")
        #expect(run.exit == .shutdown(.poweroff), "\(run.console.text)")
        #expect(run.results()["blk_err"]?.hasPrefix("PASS") == true, "\(run.console.text)")
    }

    @Test("a guest that scribbles over one disk's ring (req_prod far past it): that disk fails through xenbus (Closing, error node) and pvh keeps running; the other disk still writes, flushes and reads (its image checked from the host)")
    func scribbledRing() throws {
        let a = try Image(megabytes: 16), b = try Image(megabytes: 16)
        defer {
            a.remove()
            b.remove()
        }
        // blk_scribble writes seed 21 to xvda and 22 to xvdb, scribbles over
        // xvda's ring, then writes 23 to xvdb; then the guest powers off.
        let guest = try RunningGuest(cmdline: "pvh.scenarios=blk_scribble pvh.blkseed=21",
                                     arguments: ["--disk", "\(a.path),raw,xvda,w", "--disk", "\(b.path),raw,xvdb,w"])
        defer { guest.stop() }
        let line = guest.child.waitForLine(timeout: .seconds(180)) { $0.hasPrefix("PVHTEST blk_scribble ") }
        let status = guest.child.waitForExit(timeout: .seconds(60))
        let log = "\(guest.child.output)\n\(guest.child.errors)"
        #expect(line?.hasPrefix("PVHTEST blk_scribble PASS a=51712 ") == true, "\(log)")
        // The guest read xenbus_dev_fatal's node ("5 indexOverrun…") and saw xvdb's new data.
        #expect(line?.contains("error=\"5 indexOverrun") == true, "\(line ?? "no result line")")
        #expect(line?.contains(" reinit=InitWait b=51728 region=0+1024 seed=23 io=ok") == true, "\(line ?? "no result line")")
        #expect(status == 0, "pvh ran on to the guest's poweroff: \(log)")
        #expect(guest.child.errors.contains("vbd-51712: disabled: hostile guest"), "\(guest.child.errors)")
        #expect(!guest.child.errors.contains("vbd-51728: disabled"), "\(guest.child.errors)")
        #expect(Self.checkPattern(try b.bytes(), sectors: 0..<1024, seed: 23) == nil)
        #expect(Self.checkPattern(try a.bytes(), sectors: 0..<1024, seed: 21) == nil)
    }

    @Test("--disk on a missing file, a qcow2 image or an image another pvh holds: one line naming the spec, exit 2")
    func badImages() throws {
        let qcow = try Image(megabytes: 1)
        defer { qcow.remove() }
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: qcow.path))
        try h.write(contentsOf: Data([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]))
        try h.close()
        let kernel = try Env.testGuest.get()
        for (spec, reason) in [("/nonexistent/disk.img,raw,xvda,w", "/nonexistent/disk.img"),
                               ("\(qcow.path),raw,xvda,w", "qemu-img convert -O raw")] {
            let r = try runCommand(Env.pvhBinary, ["run", "--kernel", kernel, "--disk", spec])
            #expect(r.status == 2, "\(spec): \(r.stderr)")
            let lines = r.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines[0].contains("--disk '\(spec)'") && lines[0].contains(reason), "\(r.stderr)")
        }
        let disk = try Image(megabytes: 4)
        defer { disk.remove() }
        let holder = try RunningGuest(cmdline: "pvh.scenarios=console_ring pvh.console_input=1 pvh.console_timeout=60000",
                                      arguments: ["--disk", "\(disk.path),raw,xvda,w"])
        defer { holder.stop() }
        let r = try runCommand(Env.pvhBinary, ["run", "--kernel", kernel, "--disk", "\(disk.path),raw,xvda,r"])
        #expect(r.status == 2 && r.stderr.contains("locked"), "\(r.stderr)")
    }
}
