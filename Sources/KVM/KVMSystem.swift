import CKVM
#if canImport(Glibc)
import Glibc
#endif

/// What this host's KVM offers pvh, from KVM_CHECK_EXTENSION on /dev/kvm
/// (Documentation/virt/kvm/api.rst §4.4 and §8 "Other capabilities").
public struct KVMCapabilities: Equatable, Sendable {
    /// KVM_CAP_XEN_HVM: bitmask of KVM_XEN_HVM_CONFIG_* flags (0: no in-kernel Xen support).
    public var xenHVM: UInt32
    /// KVM_CAP_X86_USER_SPACE_MSR: MSR accesses can exit to userspace.
    public var userSpaceMSR: Bool
    /// KVM_CAP_X86_MSR_FILTER: KVM_X86_SET_MSR_FILTER exists.
    public var msrFilter: Bool
    /// KVM_CAP_EXIT_ON_EMULATION_FAILURE: emulation failures carry instruction bytes.
    public var exitOnEmulationFailure: Bool
    /// KVM_CAP_SYNC_REGS: mask of KVM_SYNC_X86_* blocks kvm_run can carry.
    public var syncRegs: UInt32
    /// KVM_CAP_SPLIT_IRQCHIP: local APIC in kernel, IOAPIC/PIC in userspace.
    public var splitIRQChip: Bool
    /// KVM_CAP_SET_GUEST_DEBUG: hardware breakpoints via KVM_SET_GUEST_DEBUG.
    public var setGuestDebug: Bool
    /// KVM_CAP_IMMEDIATE_EXIT: kvm_run.immediate_exit is honoured.
    public var immediateExit: Bool
    /// KVM_CAP_GET_TSC_KHZ.
    public var getTSCKHz: Bool
    /// KVM_CAP_VM_TSC_CONTROL: KVM_GET_TSC_KHZ also works on the VM fd.
    public var vmTSCControl: Bool
    /// KVM_CAP_NR_VCPUS: recommended maximum vCPUs.
    public var recommendedVCPUs: Int
    /// KVM_CAP_MAX_VCPUS: hard maximum vCPUs.
    public var maxVCPUs: Int
    /// KVM_CAP_NR_MEMSLOTS: memory slots per VM.
    public var memorySlots: Int

    public init(xenHVM: UInt32 = 0, userSpaceMSR: Bool = false, msrFilter: Bool = false,
                exitOnEmulationFailure: Bool = false, syncRegs: UInt32 = 0, splitIRQChip: Bool = false,
                setGuestDebug: Bool = false, immediateExit: Bool = false, getTSCKHz: Bool = false,
                vmTSCControl: Bool = false, recommendedVCPUs: Int = 0, maxVCPUs: Int = 0, memorySlots: Int = 0) {
        self.xenHVM = xenHVM
        self.userSpaceMSR = userSpaceMSR
        self.msrFilter = msrFilter
        self.exitOnEmulationFailure = exitOnEmulationFailure
        self.syncRegs = syncRegs
        self.splitIRQChip = splitIRQChip
        self.setGuestDebug = setGuestDebug
        self.immediateExit = immediateExit
        self.getTSCKHz = getTSCKHz
        self.vmTSCControl = vmTSCControl
        self.recommendedVCPUs = recommendedVCPUs
        self.maxVCPUs = maxVCPUs
        self.memorySlots = memorySlots
    }

    /// True when KVM can intercept Xen hypercalls itself (KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL).
    public var xenHypercallIntercept: Bool { xenHVM & UInt32(KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL) != 0 }

    /// True when kvm_run carries REGS, SREGS and EVENTS (what `VCPU` uses).
    public var fullSyncRegs: Bool { syncRegs & 7 == 7 }
}

/// The KVM subsystem: an open /dev/kvm (Documentation/virt/kvm/api.rst §4.1–4.4).
/// Thread-safe: its state is immutable after init.
public final class KVMSystem: Sendable {
    /// The /dev/kvm file descriptor.
    let fd: Int32
    /// What the host offers.
    public let capabilities: KVMCapabilities
    /// Size of the per-vCPU `struct kvm_run` mapping (KVM_GET_VCPU_MMAP_SIZE).
    public let vcpuMmapSize: Int

    /// Opens `path` (normally /dev/kvm), checks KVM_GET_API_VERSION == 12 and
    /// queries the capabilities pvh uses.
    public init(path: String = "/dev/kvm") throws(KVMError) {
        let fd = open(path, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { throw .open(path: path, errno: errno) }
        do throws(KVMError) {
            let version = try Syscall.ioctl(fd, PVH_KVM_GET_API_VERSION, "KVM_GET_API_VERSION", value: 0)
            guard version == KVM_API_VERSION_EXPECTED else { throw KVMError.apiVersion(version) }
            self.vcpuMmapSize = Int(try Syscall.ioctl(fd, PVH_KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE", value: 0))
            self.capabilities = KVMSystem.queryCapabilities(fd)
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
    }

    deinit { close(fd) }

    /// KVM_CHECK_EXTENSION: the capability's value (0 when absent or on error).
    public func checkExtension(_ capability: Int32) -> Int32 {
        KVMSystem.check(fd, capability)
    }

    static func check(_ fd: Int32, _ capability: Int32) -> Int32 {
        (try? Syscall.ioctl(fd, PVH_KVM_CHECK_EXTENSION, "KVM_CHECK_EXTENSION", value: UInt(capability))) ?? 0
    }

    static func queryCapabilities(_ fd: Int32) -> KVMCapabilities {
        func c(_ cap: Int32) -> Int32 { check(fd, cap) }
        return KVMCapabilities(
            xenHVM: UInt32(bitPattern: c(KVM_CAP_XEN_HVM)),
            userSpaceMSR: c(KVM_CAP_X86_USER_SPACE_MSR) != 0,
            msrFilter: c(KVM_CAP_X86_MSR_FILTER) != 0,
            exitOnEmulationFailure: c(KVM_CAP_EXIT_ON_EMULATION_FAILURE) != 0,
            syncRegs: UInt32(bitPattern: c(KVM_CAP_SYNC_REGS)),
            splitIRQChip: c(KVM_CAP_SPLIT_IRQCHIP) != 0,
            setGuestDebug: c(KVM_CAP_SET_GUEST_DEBUG) != 0,
            immediateExit: c(KVM_CAP_IMMEDIATE_EXIT) != 0,
            getTSCKHz: c(KVM_CAP_GET_TSC_KHZ) != 0,
            vmTSCControl: c(KVM_CAP_VM_TSC_CONTROL) != 0,
            recommendedVCPUs: Int(c(KVM_CAP_NR_VCPUS)),
            maxVCPUs: Int(c(KVM_CAP_MAX_VCPUS)),
            memorySlots: Int(c(KVM_CAP_NR_MEMSLOTS)))
    }

    /// KVM_GET_SUPPORTED_CPUID: the CPUID leaves KVM can present to a guest.
    public func supportedCPUID() throws(KVMError) -> CPUIDTable {
        var capacity = 128
        while true {
            let buffer = CPUIDBuffer(capacity: capacity)
            do throws(KVMError) {
                _ = try Syscall.ioctl(fd, PVH_KVM_GET_SUPPORTED_CPUID, "KVM_GET_SUPPORTED_CPUID", buffer.raw)
                return buffer.table()
            } catch {
                guard case .ioctl(_, let e) = error, e == E2BIG, capacity < 4096 else { throw error }
                capacity *= 2
            }
        }
    }

    /// Creates a VM (KVM_CREATE_VM, machine type 0).
    public func createVM() throws(KVMError) -> VirtualMachine {
        let vmfd = try Syscall.ioctl(fd, PVH_KVM_CREATE_VM, "KVM_CREATE_VM", value: 0)
        return VirtualMachine(fd: vmfd, vcpuMmapSize: vcpuMmapSize, capabilities: capabilities)
    }

    /// The backend behind /dev/kvm on this host.
    public var backend: HostBackend { HostBackend.detect() }

    /// `pvh host`: a multi-line report of the backend and capabilities and
    /// what each means for pvh.
    public var hostReport: String { KVMSystem.hostReport(backend: backend, capabilities: capabilities) }

    /// The report for a given backend and capability set (pure, for tests).
    public static func hostReport(backend: HostBackend, capabilities c: KVMCapabilities) -> String {
        func yes(_ b: Bool) -> String { b ? "yes" : "no " }
        var lines: [String] = []
        lines.append("KVM backend: \(backend)")
        if backend.isSoftware {
            lines.append("  guest CPL3 runs natively; guest CPL0 runs in KVM's instruction emulator (slow);")
            lines.append("  int3/int n/icebp at CPL0 are delivered by pvh after an emulation failure;")
            lines.append("  user-mode SYSCALL, int n and int1 are finished by pvh at the guest's #PF/#UD/#DB handlers")
        }
        if c.xenHypercallIntercept {
            lines.append("Xen hypercalls: intercepted by KVM (KVM_CAP_XEN_HVM, KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL)")
        } else {
            lines.append("Xen hypercalls: trapped in userspace (no KVM_CAP_XEN_HVM): hypercall page via port 0xEA, vmcall sites via hardware breakpoints")
        }
        lines.append("  [\(yes(c.userSpaceMSR && c.msrFilter))] MSR filter + userspace MSR exits: hypercall-page MSR writes reach pvh (KVM_CAP_X86_USER_SPACE_MSR, KVM_CAP_X86_MSR_FILTER)")
        lines.append("  [\(yes(c.setGuestDebug))] guest debug: hardware breakpoints on vmcall/vmmcall sites (KVM_CAP_SET_GUEST_DEBUG)")
        lines.append("  [\(yes(c.exitOnEmulationFailure))] exit on emulation failure: failed instructions come with their bytes (KVM_CAP_EXIT_ON_EMULATION_FAILURE)")
        lines.append("  [\(yes(c.fullSyncRegs))] sync regs (mask \(c.syncRegs)): registers travel in kvm_run, no GET/SET_REGS per exit (KVM_CAP_SYNC_REGS)")
        lines.append("  [\(yes(c.splitIRQChip))] split irqchip: in-kernel local APIC, no in-kernel PIC/IOAPIC/PIT (KVM_CAP_SPLIT_IRQCHIP)")
        lines.append("  [\(yes(c.immediateExit))] immediate exit: vCPU threads can be kicked out of KVM_RUN (KVM_CAP_IMMEDIATE_EXIT)")
        lines.append("  [\(yes(c.getTSCKHz))] TSC frequency query (KVM_CAP_GET_TSC_KHZ)")
        lines.append("vCPUs: \(c.recommendedVCPUs) recommended, \(c.maxVCPUs) maximum; memory slots: \(c.memorySlots)")
        return lines.joined(separator: "\n")
    }
}
