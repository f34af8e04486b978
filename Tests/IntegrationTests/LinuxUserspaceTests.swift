import DeviceSpecs
import Foundation
import Locking
import Synchronization
import Testing
import VMM

/// Debian's 6.12 cloud kernel with two vCPUs, all the way to its busybox
/// /init (scripts/guest-kit.sh), which prints what the host checks from
/// inside: the hypervisor as Linux sees it, the clocksource, the CPUs and
/// the interrupt lines. Then the host asks for a poweroff through XenStore
/// (control/shutdown, Linux's xenbus shutdown watch → orderly_poweroff →
/// busybox poweroff → the /init's trap → poweroff -f → SCHEDOP_shutdown).
///
/// On hardware virtualization this is an ordinary test. On the software
/// backend here (`kvm_pvm`) Linux's own code is emulated (~1.2 M
/// instructions/s): with the command line below it reaches "Run /init as
/// init process" after about 1093 s of guest time and prints its checks
/// after about 26 minutes of wall time, beyond the 15 minutes the issue
/// allows in CI. init's SYSCALLs work there only because pvh finishes the
/// ones the backend leaves at CPL3 (FastSystemCall). So there it runs only
/// with PVH_SLOW_TESTS=1, as a measurement.
@Suite("Debian Linux to userspace", .serialized,
       .enabled(if: Env.hasKVM, "needs /dev/kvm (read-write)"),
       .enabled(if: Env.hardwareKVM || Env.slowTestsWanted,
                "software KVM backend: Linux needs ~26 min to reach its shell here; set PVH_SLOW_TESTS=1 to run it"))
struct LinuxUserspaceTests {
    /// The fastest command line found for the software backend (every
    /// feature its emulator cannot run switched off, no zeroing of
    /// allocations, no mitigations, calibration skipped, and none of the
    /// boot-time work `kill -USR1` showed the emulated vCPUs spending minutes
    /// in: the jitter entropy source's start-up measurement, the crypto
    /// self-tests, the trace-event format rewrite (tracefs, whose lock also
    /// held up init), the read-only remap with its W+X scan, and loading the
    /// PV frontends' modules, which issue 3 does not need); harmless on
    /// hardware. The initramfs is uncompressed (guest kit).
    static let cmdline = "console=hvc0 earlyprintk=xen noxsave clearcpuid=xsave,cx16,popcnt,bmi1,bmi2,abm,movbe,fsgsbase,rdrand,rdseed,sha_ni,aes,pclmulqdq,avx,avx2,fma,f16c,sse4_1,sse4_2,ssse3,smap,smep,pcid,invpcid,umip nosmap nosmep init_on_alloc=0 mitigations=off lpj=2000000 tsc=reliable rdinit=/init ftrace=nop nowatchdog nosoftlockup initcall_blacklist=jent_mod_init,tracer_init_tracefs cryptomgr.notests rodata=off pvh.modules=0 pvh.wait=1"

    /// How long a run with a PV frontend module may take before the test
    /// stops it. On hardware these runs take seconds. On the software
    /// backend the emulator's speed varies between runs on a shared host:
    /// the --disk run took 2,663 s, then 3,114 s, then passed 3,600 s while
    /// mounting (December 4 2026), so 3,600 s stopped runs that were still
    /// going.
    static let frontendRunLimit: Duration = .seconds(5400)

    /// Debian 6.12 with the guest kit's initramfs and `cmdline`, its
    /// `pvh.modules=0 pvh.wait=1` (no PV frontend modules, wait for
    /// control/shutdown) replaced by `initOptions` when given.
    static func config(name: String, memoryMiB: Int, vcpus: Int, initOptions: String? = nil) -> GuestConfiguration {
        let line = initOptions.map { cmdline.replacingOccurrences(of: "pvh.modules=0 pvh.wait=1", with: $0) } ?? cmdline
        return GuestConfiguration(kernelPath: Env.kernel("6.12"),
                                  initrdPath: Env.kit.appendingPathComponent("initramfs-6.12.cpio").path,
                                  commandLine: line, memoryMiB: memoryMiB, vcpus: vcpus, name: name)
    }

    @Test("6.12 with --vcpus 2: /sys/hypervisor says Xen PVH, xen clocksource, 2 CPUs, xen event channels and no IO-APIC; control/shutdown powers it off")
    func userspace() throws {
        try #require(Env.hasKernel("6.12"), "guest kit missing: run scripts/guest-kit.sh")
        let started = ContinuousClock.now
        let run = try GuestRun.boot(
            Self.config(name: "linux", memoryMiB: 128, vcpus: 2),
            onLine: { line, domain in
                // The checks are printed; ask for a clean poweroff the way xl does.
                if line.contains("PVH-INIT: waiting for control/shutdown") {
                    try? domain.store.write("/local/domain/1/control/shutdown", "poweroff")
                }
            },
            limit: .seconds(3600))
        let elapsed = ContinuousClock.now - started
        let lines = run.lines
        func value(_ prefix: String) -> String? {
            lines.first { $0.contains(prefix) }.map { String($0[$0.range(of: prefix)!.upperBound...]) }
        }
        let tail = lines.suffix(25).joined(separator: "\n")
        #expect(lines.contains { $0.contains("PVH-INIT: userspace reached") }, "no userspace; exit \(run.exit); tail:\n\(tail)")
        #expect(value("PVH-INIT: hypervisor ") == "type=xen guest_type=PVH", "\(tail)")
        #expect(value("PVH-INIT: clocksource=") == "xen")
        #expect(value("PVH-INIT: cpus online=") == "0-1 count=2")
        let interrupts = value("PVH-INIT: interrupts ") ?? ""
        #expect(interrupts.contains("io-apic=0"), "\(interrupts)")
        #expect(!interrupts.contains("xen-percpu=0"), "\(interrupts)")
        #expect(!interrupts.contains("xen-dyn=0"), "\(interrupts)")
        #expect(lines.contains { $0.contains("PVH-INIT: poweroff requested") }, "control/shutdown did not reach init")
        #expect(run.exit == .shutdown(.poweroff), "exit \(run.exit)")
        // busybox's poweroff -f: Linux's ACPI S5 through the FADT's sleep control register.
        #expect(run.domain.metrics.acpiPowerOffs.load(ordering: .relaxed) == 1)
        // On the software backend init's SYSCALLs went through pvh's fix-up.
        if run.domain.backend.isSoftware { #expect(run.domain.metrics.syscallsCompleted.load(ordering: .relaxed) > 0) }
        print("pvh: Debian 6.12 with 2 vCPUs: userspace, checks and poweroff in \(elapsed) (backend: \(run.domain.backend))")
    }

    /// Issue 10 end to end: xen-blkfront (the guest kit's module) finds the
    /// vbd pvh offers, the guest mounts the ext4 the host made, reads the
    /// host's file, writes its own, syncs, and reads it back after a
    /// read-only remount; the host then finds the guest's file in the image.
    @Test("6.12 with --disk: mounts ext4 from /dev/xvda, reads the host's file, writes, syncs and reads back; the host sees the guest's file")
    func disk() throws {
        try #require(Env.hasKernel("6.12"), "guest kit missing: run scripts/guest-kit.sh")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-linux-disk-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: dir + "/root", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "written by the host".write(toFile: dir + "/root/host.txt", atomically: true, encoding: .utf8)
        let image = dir + "/disk.img"
        let mkfs = try runCommand("/usr/sbin/mkfs.ext4", ["-q", "-F", "-d", dir + "/root", image, "64M"], timeout: .seconds(60))
        try #require(mkfs.status == 0, "mkfs.ext4: \(mkfs.stderr)")
        var config = Self.config(name: "linux-disk", memoryMiB: 128, vcpus: 1, initOptions: "pvh.modules=blk pvh.disk=1")
        config.disks = [try DiskSpecification(parsing: "\(image),raw,xvda,w")]
        let started = ContinuousClock.now
        let run = try GuestRun.boot(config, limit: Self.frontendRunLimit)
        let elapsed = ContinuousClock.now - started
        let lines = run.lines
        let tail = lines.suffix(30).joined(separator: "\n")
        #expect(lines.contains { $0.contains("PVH-INIT: insmod xen-blkfront ok") }, "\(tail)")
        #expect(lines.contains { $0.contains("PVH-INIT: disk xvda sectors=131072") }, "\(tail)")
        #expect(lines.contains { $0.contains("PVH-INIT: disk read host.txt=written by the host") }, "\(tail)")
        #expect(lines.contains { $0.contains("PVH-INIT: disk read back guest.txt=written by the guest") }, "\(tail)")
        #expect(run.exit == .shutdown(.poweroff), "exit \(run.exit)")
        let seen = try runCommand("/usr/sbin/debugfs", ["-R", "cat /guest.txt", image])
        #expect(seen.stdout.contains("written by the guest"), "\(seen.stdout) \(seen.stderr)")
        print("pvh: Debian 6.12 with --disk: mount, write, sync, read back and poweroff in \(elapsed) (backend: \(run.domain.backend))")
    }

    /// Issue 11 end to end: xen-netfront (the guest kit's module) finds the
    /// vif pvh offers over user networking (passt), busybox udhcpc gets an
    /// address, and 64 MiB go to a TCP server on the host (the gateway
    /// address) and come back; the md5s of both directions match.
    @Test("6.12 with --net: DHCP over user networking, 64 MiB to a host TCP server and back with matching md5s",
          .enabled(if: NetworkScenarioTests.passtInstalled, "needs passt (apt-get install passt)"))
    func network() throws {
        try #require(Env.hasKernel("6.12"), "guest kit missing: run scripts/guest-kit.sh")
        let mib = 64
        let server = try TCPEchoServer(closeAfter: mib << 20)
        defer { server.stop() }
        var config = Self.config(name: "linux-net", memoryMiB: 512, vcpus: 1,
                                 initOptions: "pvh.modules=net pvh.net=1 pvh.netport=\(server.port) pvh.netmib=\(mib)")
        config.networks = [try NetworkInterfaceSpecification(parsing: "")]
        let started = ContinuousClock.now
        // When each network step was reached (wall time since the start),
        // and the backend's counters: on this backend a run may stop at the
        // limit, and these say how far it got and at what rate.
        let steps = Lock<[String]>([])
        let run = try GuestRun.boot(config, onLine: { line, _ in
            guard line.contains("PVH-INIT: net") || line.contains("insmod xen-netfront") else { return }
            let step = "\((ContinuousClock.now - started).components.seconds) s: \(line)"
            // Printed as they come too: a run of an hour or more on this
            // backend shows its progress while it runs.
            print("pvh: \(step)")
            steps.withLock { $0.append(step) }
        }, limit: Self.frontendRunLimit)
        let elapsed = ContinuousClock.now - started
        let lines = run.lines
        let tail = (["backend: \(run.networkCounters)"] + steps.withLock { $0 } + lines.suffix(30)).joined(separator: "\n")
        #expect(lines.contains { $0.contains("PVH-INIT: insmod xen-netfront ok") }, "\(tail)")
        #expect(lines.contains { $0.contains("PVH-INIT: net dhcp address ") }, "\(tail)")
        let sent = lines.first { $0.contains("PVH-INIT: net sending") }?.components(separatedBy: "md5 ").last
        let received = lines.first { $0.contains("PVH-INIT: net received \(mib << 20) bytes") }?.components(separatedBy: "md5 ").last
        #expect(sent != nil && sent == received, "\(tail)")
        #expect(server.bytesEchoed == mib << 20, "\(tail)")
        #expect(run.exit == .shutdown(.poweroff), "exit \(run.exit)")
        print("pvh: Debian 6.12 with --net: DHCP, \(mib) MiB each way and poweroff in \(elapsed) (backend: \(run.domain.backend))")
    }
}
