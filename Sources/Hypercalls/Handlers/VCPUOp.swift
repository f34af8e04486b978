import GuestMemory
import XenABI

// vcpu_op, after Xen 4.17 xen/arch/x86/domain.c do_vcpu_op,
// xen/common/domain.c common_vcpu_op / map_vcpu_info, and for 32-bit callers
// xen/arch/x86/x86_64/domain.c compat_vcpu_op and xen/common/compat/domain.c
// compat_common_vcpu_op (HVM32 callers get the compat entry,
// xen/include/hypercall-defs.c).
extension HypercallDispatcher {
    func vcpuOp(_ command: VCPUOpCommand, _ target: VCPUID, _ arg: GuestVirtualAddress, _ c: CallContext) -> HypercallOutcome {
        // domain_vcpu() first, for every sub-op: -ENOENT.
        guard isValid(target) else { return .returnToGuest(XenErrno.enoent.negated) }
        if command == .down {
            do {
                return try vcpuDown(target)
            } catch {
                return .returnToGuest(error.negated)
            }
        }
        return result { () throws(XenErrno) in try vcpuOpValue(command, target, arg, c) }
    }

    private func vcpuOpValue(_ command: VCPUOpCommand, _ target: VCPUID, _ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        switch command {
        case .registerVCPUInfo:
            let r = try registerVCPUInfo(target, arg, c)
            time?.vcpuInfoRegistered(vcpu: target)
            return r
        case .setSingleshotTimer:
            guard let time else { throw .enosys }
            // Native: `v != current` is checked before the copy; the compat
            // entry copies (and translates) the 12-byte struct first.
            if c.mode == .long64 { guard target == c.vcpu else { throw .einval } }
            let bytes = try c.guest.readVirtual(at: arg, count: XenWire.VCPUSetSingleshotTimer.size(c.mode))
            guard target == c.vcpu else { throw .einval }
            try time.setSingleshot(vcpu: target,
                                   deadline: bytes.wireValue(XenWire.VCPUSetSingleshotTimer.timeoutAbsoluteNanoseconds),
                                   flags: bytes.wireValue(XenWire.VCPUSetSingleshotTimer.flags))
            return 0
        case .stopSingleshotTimer:
            guard let time else { throw .enosys }
            guard target == c.vcpu else { throw .einval }
            time.stopSingleshot(vcpu: target)
            return 0
        case .setPeriodicTimer:
            // Any vCPU of the domain may set another's periodic timer.
            guard let time else { throw .enosys }
            let bytes = try c.guest.readVirtual(at: arg, count: XenWire.VCPUSetPeriodicTimer.size)
            try time.setPeriodic(vcpu: target, period: bytes.wireValue(XenWire.VCPUSetPeriodicTimer.period))
            return 0
        case .stopPeriodicTimer:
            guard let time else { throw .enosys }
            time.stopPeriodic(vcpu: target)
            return 0
        case .registerVCPUTimeMemoryArea:
            guard let time else { throw .enosys }
            let address = try memoryAreaArgument(arg, c)
            // guest_handle_okay() is always true for an HVM caller, so Xen
            // accepts any address and its later copies fail silently.
            time.registerTimeMemoryArea(vcpu: target, address: contiguousPhysical(address, count: XenWire.VCPUTimeInfo.size, c))
            return 0
        case .registerRunstateMemoryArea:
            let address = try memoryAreaArgument(arg, c)
            let compat = state.sharedInfoIs32Bit
            let size = XenWire.VCPURunstateInfo.size(compat: compat)
            let physical = contiguousPhysical(address, count: size, c)
            state.storage.withLock { $0.runstateAreas[target] = physical }
            if let physical {
                // __copy_to_guest: a failure is ignored.
                try? memory.write(runstateInfo(target, c).bytes(compat: compat), at: physical)
            }
            return 0
        case .getRunstateInfo:
            try c.guest.writeVirtual(runstateInfo(target, c).bytes(compat: c.mode != .long64), at: arg)
            return 0
        case .initialise:
            return try vcpuInitialise(target, arg, c)
        case .up:
            guard let lifecycle else { throw .enosys }
            try lifecycle.up(vcpu: target)
            return 0
        case .down:
            return 0  // handled by vcpuOp (it may shut the domain down)
        case .isUp:
            if let lifecycle { return lifecycle.isUp(vcpu: target) ? 1 : 0 }
            guard target == VCPUID(0) else { throw .enosys }
            return 1
        case .getPhysID:
            // Only for the hardware domain's pinned vCPUs (is_hwdom_pinned_vcpu).
            throw .einval
        case .sendNMI:
            // NMIs are not delivered yet.
            throw .enosys
        }
    }

    /// VCPUOP_down (common_vcpu_op): if no *other* vCPU is up, the domain
    /// powers off (domain_shutdown(SHUTDOWN_poweroff), returning 0);
    /// otherwise the target goes down.
    private func vcpuDown(_ target: VCPUID) throws(XenErrno) -> HypercallOutcome {
        guard let lifecycle else { throw .enosys }
        let othersUp = (0..<configuration.vcpuCount).contains { i in
            let v = VCPUID(UInt32(i))
            return v != target && lifecycle.isUp(vcpu: v)
        }
        guard othersUp else { return .shutdown(.poweroff) }
        try lifecycle.down(vcpu: target)
        return .returnToGuest(0)
    }

    /// VCPUOP_initialise for an HVM vCPU (common_vcpu_op, arch_initialise_vcpu):
    /// -EINVAL if the vCPU has no vcpu_info (Xen's `dummy_vcpu_info`: ids at
    /// or above XEN_LEGACY_MAX_VCPUS that registered none), -EFAULT copying
    /// the context, -EEXIST if already initialised, then the context's checks.
    private func vcpuInitialise(_ target: VCPUID, _ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        guard let lifecycle else { throw .enosys }
        guard VCPUInfoPlacement.hasLegacySlot(target) || state.vcpuInfo(for: target) != nil else {
            throw .einval
        }
        let bytes = try c.guest.readVirtual(at: arg, count: XenWire.VCPUHVMContext.size)
        guard !lifecycle.isInitialised(vcpu: target) else { throw .eexist }
        let boot = try VCPUBootState(decoding: bytes, limits: configuration.bootStateLimits)
        try lifecycle.initialise(vcpu: target, state: boot)
        return 0
    }

    /// The guest handle of vcpu_register_{time,runstate}_memory_area: 8
    /// bytes natively, the 4-byte compat handle from a 32-bit caller.
    private func memoryAreaArgument(_ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> GuestVirtualAddress {
        let bytes = try c.guest.readVirtual(at: arg, count: XenWire.VCPURegisterMemoryArea.size(c.mode))
        return GuestVirtualAddress(bytes.wireValue(XenWire.VCPURegisterMemoryArea.address(c.mode), as: UInt64.self))
    }

    /// `address` through the caller's page tables, for writing, if all
    /// `count` bytes are guest RAM contiguous in guest-physical memory (Xen
    /// re-walks the handle on every update; we translate once, at
    /// registration, and a structure straddling two unrelated frames is
    /// treated as unusable).
    private func contiguousPhysical(_ address: GuestVirtualAddress, count: Int, _ c: CallContext) -> GuestPhysicalAddress? {
        guard let first = try? c.guest.translate(address, write: true),
              let last = try? c.guest.translate(address.advanced(by: UInt64(count - 1)), write: true),
              last.rawValue == first.rawValue &+ UInt64(count - 1),
              memory.contains(first, count: UInt64(count))
        else { return nil }
        return first
    }

    /// `vcpu_runstate_get`, as far as we know it: a vCPU that is up is
    /// running (the caller always is), one that is down is offline, and all
    /// of system time so far is counted in that state (we do not account
    /// runnable/blocked time, so a guest sees no steal time).
    func runstateInfo(_ vcpu: VCPUID, _ c: CallContext) -> VCPURunstateInfo {
        let now = UInt64(max(time?.systemTime().rawValue ?? 0, 0))
        let up = vcpu == c.vcpu || (lifecycle?.isUp(vcpu: vcpu) ?? true)
        let runstate: VCPURunstate = up ? .running : .offline
        var times: [UInt64] = [0, 0, 0, 0]
        times[Int(runstate.rawValue)] = now
        return VCPURunstateInfo(state: runstate, stateEntryTime: now, time: times)
    }

    /// VCPUOP_register_vcpu_info: `offset` must leave the whole vcpu_info in the
    /// page and be aligned (-ENXIO), a vCPU registers once (-EINVAL), and the
    /// frame must be guest RAM (-EINVAL). Like Xen, the new vcpu_info starts as
    /// a copy of the vCPU's legacy slot in shared_info when there is one, and
    /// otherwise zeroed with events masked.
    ///
    /// Xen also refuses to register for another vCPU that is running; we do
    /// not track vCPU run state here, so that check is left out (Linux
    /// registers for APs from the boot CPU before starting them).
    private func registerVCPUInfo(_ target: VCPUID, _ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        let bytes = try c.guest.readVirtual(at: arg, count: XenWire.RegisterVCPUInfo.size)
        let frame = GuestFrameNumber(bytes.wireValue(XenWire.RegisterVCPUInfo.mfn, as: UInt64.self))
        let offset = bytes.wireValue(XenWire.RegisterVCPUInfo.offset, as: UInt32.self)
        let size = XenWire.VCPUInfo.size
        guard UInt64(offset) <= GuestFrameNumber.pageSize - UInt64(size) else { throw .enxio }
        let alignment = XenWire.VCPUInfo.alignment(sharedInfo32Bit: state.sharedInfoIs32Bit)
        guard Int(offset) % alignment == 0 else { throw .enxio }
        guard let page = frame.address, memory.contains(page, count: GuestFrameNumber.pageSize),
              let address = page.advanced(by: UInt64(offset))
        else { throw .einval }

        // Decide and record under the lock, so two vCPUs cannot both register.
        let sharedInfo: GuestFrameNumber?? = state.storage.withLock { s in
            guard s.vcpuInfo[target] == nil else { return .none }
            s.vcpuInfo[target] = VCPUInfoRegistration(frame: frame, offset: offset)
            return .some(s.sharedInfoFrame)
        }
        guard case .some(let sharedInfoFrame) = sharedInfo else { throw .einval }

        var initial = [UInt8](repeating: 0, count: size)
        if let slot = VCPUInfoPlacement.legacySlot(of: target, sharedInfo: sharedInfoFrame?.address),
           let legacy = try? memory.read(at: slot, count: size) {
            initial = legacy
        } else {
            initial.setWireValue(UInt8(1), in: XenWire.VCPUInfo.upcallMask)
        }
        do {
            try memory.write(initial, at: address)
        } catch {
            state.storage.withLock { _ = $0.vcpuInfo.removeValue(forKey: target) }
            throw .einval
        }
        return 0
    }
}
