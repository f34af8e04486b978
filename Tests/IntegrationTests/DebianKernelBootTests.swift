import Foundation
import Testing
import VMM

/// Debian's cloud kernels, as shipped (bzImage: LZ4 for 6.1, zstd for 6.12),
/// entered at their PVH entry point. On a software KVM backend Linux runs at
/// ~1M instructions/s, so the test stops the guest once it has printed, through
/// console_io (earlyprintk=xen), that it found Xen and is booting as PVH.
@Suite("Debian kernels under KVM", .serialized, .enabled(if: Env.hasKVM, "needs /dev/kvm (read-write)"))
struct DebianKernelBootTests {
    static let wanted = ["Hypervisor detected: Xen HVM", "Booting kernel on Xen PVH"]
    /// Instructions the software emulator cannot run, switched off on the
    /// command line (KVM_SET_CPUID2 cannot hide them on kvm_pvm).
    static let cmdline = "earlyprintk=xen console=hvc0 noxsave clearcpuid=xsave,cx16"

    @Test("Debian kernel boots from its PVH entry to the Xen PVH banner", arguments: ["6.1", "6.12"])
    func debianKernel(_ version: String) throws {
        try #require(Env.hasKernel(version), "guest kit missing \(Env.kernel(version)): run scripts/guest-kit.sh")
        let started = ContinuousClock.now
        let run = try GuestRun.boot(
            GuestConfiguration(kernelPath: Env.kernel(version), commandLine: Self.cmdline, memoryMiB: 512),
            stopWhen: { lines in Self.wanted.allSatisfy { w in lines.contains { $0.contains(w) } } },
            limit: .seconds(600))
        let elapsed = ContinuousClock.now - started
        for w in Self.wanted {
            #expect(run.lines.contains { $0.contains(w) }, "\(version): no \"\(w)\"; exit \(run.exit); tail:\n\(run.lines.suffix(15).joined(separator: "\n"))")
        }
        #expect(run.exit == .stopped, "\(version): \(run.exit)")
        // Linux since XSA-466 makes hypercalls from vmcall/vmmcall sites found in its ELF.
        #expect(run.domain.metrics.breakpointHypercalls.load(ordering: .relaxed) > 0)
        print("pvh: Debian \(version) reached the Xen PVH banner in \(elapsed) (backend: \(run.domain.backend))")
    }
}
