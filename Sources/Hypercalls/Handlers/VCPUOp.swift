import GuestMemory
import XenABI

// vcpu_op, after Xen 4.17 xen/arch/x86/domain.c do_vcpu_op and
// xen/common/domain.c common_vcpu_op / map_vcpu_info.
extension HypercallDispatcher {
    func vcpuOp(_ command: VCPUOpCommand, _ target: VCPUID, _ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        guard isValid(target) else { throw .enoent }
        switch command {
        case .registerVCPUInfo:
            return try registerVCPUInfo(target, arg, c)
        default:
            // Timers, runstate areas, up/down, NMIs: not implemented yet.
            throw .enosys
        }
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
        if let shinfo = sharedInfoFrame?.address, Int(target.rawValue) < XenWire.SharedInfo.legacyMaxVCPUs,
           let slot = shinfo.advanced(by: UInt64(XenWire.SharedInfo.vcpuInfo.offset + Int(target.rawValue) * size)),
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
