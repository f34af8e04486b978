import XenABI

// hvm_op, after Xen 4.17 xen/arch/x86/hvm/hvm.c do_hvm_op, hvmop_{get,set}_param,
// hvm_allow_{get,set}_param and hvm_set_param.
extension HypercallDispatcher {
    /// Parameters a guest may read about itself (hvm_allow_get_param).
    static let guestReadable: Set<HVMParam> = [
        .callbackIRQ, .vm86TSS, .vm86TSSSized, .acpiIOPortsLocation, .vmGenerationIDAddr,
        .storePFN, .storeEvtchn, .consolePFN, .consoleEvtchn, .altp2m, .x87FIPWidth,
    ]
    /// Parameters a guest may set on itself (hvm_allow_set_param).
    static let guestWritable: Set<HVMParam> = [
        .callbackIRQ, .vm86TSS, .vm86TSSSized, .acpiIOPortsLocation, .vmGenerationIDAddr,
        .storeEvtchn, .consoleEvtchn, .x87FIPWidth,
    ]

    func hvmOp(_ command: HVMOpCommand, _ arg: GuestVirtualAddress, _ c: CallContext) -> HypercallOutcome {
        switch command {
        case .getParam:
            return result { () throws(XenErrno) in try getParam(arg, c) }
        case .setParam:
            do {
                return try setParam(arg, c)
            } catch {
                return .returnToGuest(error.negated)
            }
        case .setEvtchnUpcallVector:
            return result { () throws(XenErrno) in try setEventChannelUpcallVector(arg, c) }
        default:
            // TLB flush, pagetable_dying, ...: not implemented yet.
            return .returnToGuest(XenErrno.enosys.negated)
        }
    }

    /// HVMOP_set_evtchn_upcall_vector (hvm.c hvmop_set_evtchn_upcall_vector):
    /// copy in (-EFAULT), vector < 0x10 (-EINVAL), then the vCPU (-ENOENT).
    /// The vector is recorded per vCPU (`DomainState.upcallVector(for:)`) and,
    /// like Xen's hvm_assert_evtchn_irq, asserted once right away.
    private func setEventChannelUpcallVector(_ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        typealias W = XenWire.HVMEventChannelUpcallVector
        let bytes = try c.guest.readVirtual(at: arg, count: W.size)
        let vector = bytes.wireValue(W.vector, as: UInt8.self)
        let vcpu = VCPUID(bytes.wireValue(W.vcpu, as: UInt32.self))
        guard vector >= 0x10 else { throw .einval }
        guard isValid(vcpu) else { throw .enoent }
        state.storage.withLock { $0.upcallVectors[vcpu] = vector }
        eventChannels?.assertUpcall(vcpu: vcpu)
        return 0
    }

    /// Copies the argument in, then validates in Xen's order: index range
    /// (-EINVAL), domain (-ESRCH), permission (-EINVAL deprecated, -EPERM not the guest's).
    private func paramArgument(_ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> (bytes: [UInt8], param: HVMParam, value: UInt64) {
        let bytes = try c.guest.readVirtual(at: arg, count: XenWire.HVMParamArgument.size)
        let param = HVMParam(rawValue: bytes.wireValue(XenWire.HVMParamArgument.index, as: UInt32.self))
        guard param.isValid else { throw .einval }
        try checkSelf(bytes.wireValue(XenWire.HVMParamArgument.domid, as: UInt16.self))
        if HVMParam.deprecated.contains(param) { throw .einval }
        return (bytes, param, bytes.wireValue(XenWire.HVMParamArgument.value, as: UInt64.self))
    }

    /// HVMOP_get_param. A parameter nobody set reads as 0 with success, as in
    /// Xen (the params array starts zeroed): STORE_PFN, CONSOLE_PFN and the event
    /// channels read 0 until the toolstack side sets them via `DomainState.setParameter`.
    private func getParam(_ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        var (bytes, param, _) = try paramArgument(arg, c)
        guard Self.guestReadable.contains(param) else { throw .eperm }
        let value = param == .vm86TSS
            ? state.parameter(.vm86TSSSized) & 0xffff_ffff
            : state.parameter(param)
        bytes.setWireValue(value, in: XenWire.HVMParamArgument.value)
        try c.guest.writeVirtual(bytes, at: arg)
        return 0
    }

    /// HVMOP_set_param, for the parameters a guest may set.
    private func setParam(_ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> HypercallOutcome {
        let (_, param, value) = try paramArgument(arg, c)
        guard Self.guestWritable.contains(param) else { throw .eperm }
        switch param {
        case .callbackIRQ:
            state.storage.withLock { s in
                s.parameters[Int(param.rawValue)] = value
                s.sharedInfo32Bit = c.mode != .long64
            }
            // hvm_latch_shinfo_size rewrites the wallclock in the latched layout.
            time?.sharedInfoMapped()
            // hvm_set_callback_via asserts the upcall on every vCPU, so an
            // event that is already pending reaches the new callback.
            for v in 0..<configuration.vcpuCount { eventChannels?.assertUpcall(vcpu: VCPUID(UInt32(v))) }
        case .x87FIPWidth:
            guard value == 0 || value == 4 || value == 8 else { throw .einval }
            state.setParameter(param, to: value)
        case .acpiIOPortsLocation:
            // PVH has no emulated PM timer to move (pmtimer_change_ioport: !has_vpm).
            throw .enodev
        case .vm86TSS:
            // Hardware would truncate; Xen crashes the domain that asks.
            guard value <= UInt64(UInt32.max) else { return .shutdown(.crash) }
            // Stored as the sized form with the 128-byte default size old
            // hvmloaders assume (Xen's internal "updated" flag is not kept).
            state.setParameter(.vm86TSSSized, to: value == 0 ? 0 : value | 128 << 32)
        default:
            state.setParameter(param, to: value)
        }
        return .returnToGuest(0)
    }
}
