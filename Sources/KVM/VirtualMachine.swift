import CKVM
import GuestMemory
import Locking
#if canImport(Glibc)
import Glibc
#endif

/// A KVM virtual machine (the fd from KVM_CREATE_VM). Thread-safe: memory may
/// be added while vCPUs run; mutable bookkeeping is behind a mutex.
public final class VirtualMachine: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `fd` and the capability snapshot are
    // immutable; all mutable state is inside `state`'s Lock; the ioctls used
    // are safe to issue concurrently with KVM_RUN on other threads.
    let fd: Int32
    let vcpuMmapSize: Int
    /// The host's capabilities (from the KVMSystem that created this VM).
    public let capabilities: KVMCapabilities

    private struct State {
        /// Registered mappings, indexed by slot; kept alive while registered.
        var slots: [GuestMemoryMapping] = []
        var userSpaceMSREnabled = false
        var trappedWrites: Set<MSRIndex> = []
        var trappedReads: Set<MSRIndex> = []
    }
    private let state = Lock(State())

    init(fd: Int32, vcpuMmapSize: Int, capabilities: KVMCapabilities) {
        self.fd = fd
        self.vcpuMmapSize = vcpuMmapSize
        self.capabilities = capabilities
    }

    deinit { close(fd) }

    /// KVM_ENABLE_CAP on the VM fd.
    func enableCap(_ cap: Int32, _ args: [UInt64], name: String) throws(KVMError) {
        var ec = kvm_enable_cap()
        ec.cap = UInt32(cap)
        withUnsafeMutableBytes(of: &ec.args) { raw in
            for (i, a) in args.prefix(4).enumerated() { raw.storeBytes(of: a, toByteOffset: i * 8, as: UInt64.self) }
        }
        do throws(KVMError) {
            _ = try Syscall.ioctl(fd, PVH_KVM_ENABLE_CAP, "KVM_ENABLE_CAP", &ec)
        } catch {
            if case .ioctl(_, let e) = error { throw .ioctl(name: "KVM_ENABLE_CAP(\(name))", errno: e) }
            throw error
        }
    }

    /// KVM_CAP_SPLIT_IRQCHIP: local APICs in the kernel, no in-kernel PIC,
    /// IOAPIC or PIT (the PIT starves guests on software backends). Must be
    /// called before the first `createVCPU`. (api.rst §7.15)
    public func enableSplitIRQChip(ioapicPins: Int = 24) throws(KVMError) {
        guard capabilities.splitIRQChip else { throw .unsupported("KVM_CAP_SPLIT_IRQCHIP") }
        try enableCap(KVM_CAP_SPLIT_IRQCHIP, [UInt64(ioapicPins)], name: "KVM_CAP_SPLIT_IRQCHIP")
    }

    /// KVM_CAP_EXIT_ON_EMULATION_FAILURE: emulation failures exit with the
    /// failing instruction's bytes (api.rst §7.29), which `EmulationFailure` needs.
    public func enableEmulationFailureExits() throws(KVMError) {
        guard capabilities.exitOnEmulationFailure else { throw .unsupported("KVM_CAP_EXIT_ON_EMULATION_FAILURE") }
        try enableCap(KVM_CAP_EXIT_ON_EMULATION_FAILURE, [1], name: "KVM_CAP_EXIT_ON_EMULATION_FAILURE")
    }

    /// Registers `mapping` as guest RAM in a new slot (KVM_SET_USER_MEMORY_REGION).
    /// The VM keeps the mapping alive while it is registered.
    @discardableResult
    public func addMemory(_ mapping: GuestMemoryMapping) throws(KVMError) -> MemorySlot {
        try state.withLock { (s: inout State) throws(KVMError) -> MemorySlot in
            if s.slots.contains(where: { $0 === mapping }) { throw .invalidArgument("mapping \(mapping.range.start) already registered") }
            if capabilities.memorySlots > 0, s.slots.count >= capabilities.memorySlots {
                throw .unsupported("more than \(capabilities.memorySlots) memory slots")
            }
            let slot = UInt32(s.slots.count)
            var region = kvm_userspace_memory_region()
            region.slot = slot
            region.flags = 0
            region.guest_phys_addr = mapping.range.start.rawValue
            region.memory_size = mapping.range.length
            region.userspace_addr = mapping.hostAddress
            // SAFETY: the mapping is a live mmap of `range.length` bytes and is
            // retained in `slots` for as long as the VM exists, so KVM never
            // sees a dangling userspace_addr.
            _ = try Syscall.ioctl(fd, PVH_KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &region)
            s.slots.append(mapping)
            return MemorySlot(slot)
        }
    }

    /// Makes WRMSR to each of `indices` exit to userspace as KVM_EXIT_X86_WRMSR
    /// (`VCPUExit.wrmsr`): enables KVM_CAP_X86_USER_SPACE_MSR with
    /// KVM_MSR_EXIT_REASON_FILTER and installs a default-allow MSR filter
    /// whose ranges deny writes to these MSRs (api.rst §4.126, §7.21).
    /// Accumulates across calls (the kernel filter is replaced each time).
    public func trapMSRWrites(_ indices: [MSRIndex]) throws(KVMError) {
        try updateMSRFilter { $0.trappedWrites.formUnion(indices) }
    }

    /// As `trapMSRWrites`, for RDMSR (KVM_EXIT_X86_RDMSR, `VCPUExit.rdmsr`).
    public func trapMSRReads(_ indices: [MSRIndex]) throws(KVMError) {
        try updateMSRFilter { $0.trappedReads.formUnion(indices) }
    }

    private func updateMSRFilter(_ change: (inout State) -> Void) throws(KVMError) {
        guard capabilities.userSpaceMSR, capabilities.msrFilter else {
            throw .unsupported("KVM_CAP_X86_USER_SPACE_MSR / KVM_CAP_X86_MSR_FILTER")
        }
        try state.withLock { (s: inout State) throws(KVMError) in
            var next = s
            change(&next)
            let ranges = MSRFilterPlan.ranges(reads: next.trappedReads, writes: next.trappedWrites)
            guard ranges.count <= Int(KVM_MSR_FILTER_MAX_RANGES) else {
                throw .unsupported("more than \(KVM_MSR_FILTER_MAX_RANGES) MSR filter ranges")
            }
            if !s.userSpaceMSREnabled {
                try enableCap(KVM_CAP_X86_USER_SPACE_MSR, [UInt64(KVM_MSR_EXIT_REASON_FILTER)], name: "KVM_CAP_X86_USER_SPACE_MSR")
                next.userSpaceMSREnabled = true
                s.userSpaceMSREnabled = true
            }
            var filter = kvm_msr_filter()
            filter.flags = UInt32(KVM_MSR_FILTER_DEFAULT_ALLOW)
            // KVM copies the bitmaps during the ioctl; they live until `defer`.
            var pointers: [UnsafeMutablePointer<UInt8>] = []
            defer { for p in pointers { p.deallocate() } }
            withUnsafeMutableBytes(of: &filter.ranges) { rawRanges in
                let out = rawRanges.bindMemory(to: kvm_msr_filter_range.self)
                for (i, r) in ranges.enumerated() {
                    let p = UnsafeMutablePointer<UInt8>.allocate(capacity: r.bitmap.count)
                    // SAFETY: p has room for exactly r.bitmap.count bytes.
                    r.bitmap.withUnsafeBufferPointer { src in
                        if let b = src.baseAddress { p.initialize(from: b, count: r.bitmap.count) }
                    }
                    pointers.append(p)
                    out[i].flags = r.write ? UInt32(KVM_MSR_FILTER_WRITE) : UInt32(KVM_MSR_FILTER_READ)
                    out[i].nmsrs = r.count
                    out[i].base = r.base
                    out[i].bitmap = p
                }
            }
            // SAFETY: `filter` is a complete kvm_msr_filter (unused ranges are
            // zero = end of list); each bitmap holds ceil(nmsrs/8) live bytes.
            _ = try Syscall.ioctl(fd, PVH_KVM_X86_SET_MSR_FILTER, "KVM_X86_SET_MSR_FILTER", &filter)
            s = next
        }
    }

    /// KVM_XEN_HVM_CONFIG with KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL: KVM itself
    /// turns Xen hypercalls (vmcall/vmmcall, and writes of the hypercall-page
    /// MSR) into KVM_EXIT_XEN. Only where KVM_CAP_XEN_HVM advertises it;
    /// otherwise throws `.unsupported` and pvh traps hypercalls itself.
    public func configureXenHVM(hypercallMSR: MSRIndex) throws(KVMError) {
        guard capabilities.xenHypercallIntercept else {
            throw .unsupported("KVM_CAP_XEN_HVM with KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL")
        }
        var cfg = kvm_xen_hvm_config()
        cfg.flags = UInt32(KVM_XEN_HVM_CONFIG_INTERCEPT_HCALL)
        cfg.msr = hypercallMSR.rawValue
        _ = try Syscall.ioctl(fd, PVH_KVM_XEN_HVM_CONFIG, "KVM_XEN_HVM_CONFIG", &cfg)
    }

    /// Delivers a fixed, edge-triggered interrupt `vector` to the local APIC
    /// `apicID` as an MSI would (KVM_SIGNAL_MSI, api.rst §4.71: address
    /// 0xFEE00000 | dest << 12, data = vector; Intel SDM Vol. 3 §11.11). With
    /// the split irqchip this is how userspace raises an interrupt in a vCPU;
    /// thread-safe, and a halted target wakes up. Returns false when the
    /// LAPIC refused it (the ioctl returns 0: "blocked by the guest", e.g. a
    /// software-disabled LAPIC drops fixed interrupts), true when delivered.
    @discardableResult
    public func signalMSI(apicID: UInt32, vector: UInt8) throws(KVMError) -> Bool {
        var msi = kvm_msi()
        msi.address_lo = 0xFEE0_0000 | ((apicID & 0xff) << 12)
        msi.address_hi = 0
        msi.data = UInt32(vector)
        return try Syscall.ioctl(fd, PVH_KVM_SIGNAL_MSI, "KVM_SIGNAL_MSI", &msi) > 0
    }

    /// The guest TSC frequency in kHz (KVM_GET_TSC_KHZ on the VM fd, which
    /// needs KVM_CAP_VM_TSC_CONTROL; otherwise ask a vCPU: `VCPU.tscKHz`).
    public var tscKHz: UInt32 {
        get throws(KVMError) {
            guard capabilities.vmTSCControl else { throw .unsupported("KVM_CAP_VM_TSC_CONTROL (use VCPU.tscKHz)") }
            return UInt32(try Syscall.ioctl(fd, PVH_KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ", value: 0))
        }
    }

    /// Creates vCPU `id` (KVM_CREATE_VCPU), maps its kvm_run and enables
    /// sync registers.
    public func createVCPU(id: KVMVCPUID) throws(KVMError) -> VCPU {
        let vcpufd = try Syscall.ioctl(fd, PVH_KVM_CREATE_VCPU, "KVM_CREATE_VCPU", value: UInt(id.rawValue))
        do throws(KVMError) {
            return try VCPU(id: id, fd: vcpufd, mmapSize: vcpuMmapSize, capabilities: capabilities)
        } catch {
            close(vcpufd)
            throw error
        }
    }
}

/// How a set of trapped MSRs becomes kvm_msr_filter ranges. Pure, for tests.
enum MSRFilterPlan {
    struct Range: Equatable {
        var write: Bool
        var base: UInt32
        var count: UInt32
        /// One bit per MSR from `base`: 1 allows, 0 denies (traps).
        var bitmap: [UInt8]
    }

    /// MSRs within this distance of a range's base share the range.
    static let span: UInt32 = 64

    static func ranges(reads: Set<MSRIndex>, writes: Set<MSRIndex>) -> [Range] {
        group(writes, write: true) + group(reads, write: false)
    }

    static func group(_ set: Set<MSRIndex>, write: Bool) -> [Range] {
        var out: [Range] = []
        var current: [UInt32] = []
        func flush() {
            guard let base = current.first, let last = current.last else { return }
            let count = last - base + 1
            var bitmap = [UInt8](repeating: 0xFF, count: Int((count + 7) / 8))
            for m in current {
                let bit = Int(m - base)
                bitmap[bit / 8] &= ~(1 << UInt8(bit % 8))
            }
            out.append(Range(write: write, base: base, count: count, bitmap: bitmap))
            current = []
        }
        for m in set.map(\.rawValue).sorted() {
            if let base = current.first, m - base >= span { flush() }
            current.append(m)
        }
        flush()
        return out
    }
}
