import Testing
@testable import XenABI

// Checked mirrors: the values below are typed from Xen 4.17's public headers
// and compared with what the code takes from them through CKVM.

@Test func hypercallNumbersAreTheCurrentInterface() {
    #expect(HypercallNumber.schedOp.rawValue == 29)  // not the legacy sched_op_compat (6)
    #expect(HypercallNumber.eventChannelOp.rawValue == 32)
    #expect(HypercallNumber.physdevOp.rawValue == 33)
    #expect(HypercallNumber.memoryOp.rawValue == 12)
    #expect(HypercallNumber.xenVersion.rawValue == 17)
    #expect(HypercallNumber.consoleIO.rawValue == 18)
    #expect(HypercallNumber.vcpuOp.rawValue == 24)
    #expect(HypercallNumber.hvmOp.rawValue == 34)
    #expect(HypercallNumber(rawValue: 29) == .schedOp)
    #expect(HypercallNumber(rawValue: 11) == nil)
    #expect(HypercallNumber(rawValue: 1 << 32 | 17) == nil)
    #expect(Set(HypercallNumber.allCases.map(\.rawValue)).count == HypercallNumber.allCases.count)
}

@Test func subOperations() {
    #expect(XenVersionCommand(rawValue: 6) == .getFeatures)
    #expect(XenVersionCommand.buildID.rawValue == 10)
    #expect(SchedOpCommand.shutdownCode.rawValue == 5)
    #expect(ShutdownReason.allCases.map(\.rawValue) == [0, 1, 2, 3, 4, 5])
    #expect(MemoryOpCommand.memoryMap.rawValue == 9)
    #expect(MemoryOpCommand.addToPhysmap.rawValue == 7)
    #expect(VCPUOpCommand.registerVCPUInfo.rawValue == 10)
    #expect(HVMOpCommand.getParam.rawValue == 1)
    #expect(PhysmapSpace.sharedInfo.rawValue == 0)
    #expect(HVMParam.count == 39)
    #expect(HVMParam.storePFN.rawValue == 1 && HVMParam.consoleEvtchn.rawValue == 18)
    #expect(HVMParam.deprecated.contains(.pae) && HVMParam.pae.rawValue == 4)
}

@Test func errnoValues() {
    #expect(XenErrno.eperm.rawValue == 1)
    #expect(XenErrno.efault.rawValue == 14)
    #expect(XenErrno.einval.rawValue == 22)
    #expect(XenErrno.enosys.rawValue == 38)
    #expect(XenErrno.enodata.rawValue == 61)
    #expect(XenErrno.enosys.negated == -38)
    #expect(XenErrno(rawValue: 14) == .efault)
    #expect(XenErrno(rawValue: 4) == nil)  // EINTR never reaches a guest
}

@Test func wireLayoutsMatchTheCABI() {
    // struct xen_memory_map: 64-bit {u32 nr_entries; pad; void *buffer}, compat {u32; u32}.
    #expect(XenWire.MemoryMap.size(.long64) == 16)
    #expect(XenWire.MemoryMap.buffer(.long64) == WireField(offset: 8, size: 8))
    #expect(XenWire.MemoryMap.size(.protected32) == 8)
    #expect(XenWire.MemoryMap.buffer(.protected32) == WireField(offset: 4, size: 4))
    // struct xen_add_to_physmap.
    #expect(XenWire.AddToPhysmap.size(.long64) == 24)
    #expect(XenWire.AddToPhysmap.space == WireField(offset: 4, size: 4))
    #expect(XenWire.AddToPhysmap.index(.long64) == WireField(offset: 8, size: 8))
    #expect(XenWire.AddToPhysmap.gpfn(.long64) == WireField(offset: 16, size: 8))
    // struct xen_hvm_param {domid_t; u32 index @4; u64 value @8}.
    #expect(XenWire.HVMParamArgument.size == 16)
    #expect(XenWire.HVMParamArgument.index == WireField(offset: 4, size: 4))
    #expect(XenWire.HVMParamArgument.value == WireField(offset: 8, size: 8))
    // struct vcpu_register_vcpu_info {u64 mfn; u32 offset; u32 rsvd}.
    #expect(XenWire.RegisterVCPUInfo.size == 16)
    #expect(XenWire.RegisterVCPUInfo.offset == WireField(offset: 8, size: 4))
    #expect(XenWire.VCPUInfo.size == 64)
    #expect(XenWire.VCPUInfo.upcallMask == WireField(offset: 1, size: 1))
    #expect(XenWire.SharedInfo.vcpuInfo.offset == 0)
    #expect(XenWire.SharedInfo.legacyMaxVCPUs == 32)
    #expect(XenWire.CompileInfo.size == 144)
    #expect(XenWire.CompileInfo.compileDate == WireField(offset: 112, size: 32))
    #expect(XenWire.extraversionLength == 16 && XenWire.capabilitiesLength == 1024)
    #expect(XenWire.changesetLength == 64 && XenWire.domainHandleLength == 16)
    #expect(XenWire.SchedRemoteShutdown.reason == WireField(offset: 4, size: 4))
}

@Test func wireValuesAndCStrings() {
    var b = [UInt8](repeating: 0, count: 8)
    b.setWireValue(UInt32(0x1122_3344), in: WireField(offset: 2, size: 4))
    #expect(b == [0, 0, 0x44, 0x33, 0x22, 0x11, 0, 0])
    #expect(b.wireValue(WireField(offset: 2, size: 4), as: UInt32.self) == 0x1122_3344)
    #expect(b.wireValue(WireField(offset: 6, size: 8), as: UInt64.self) == 0)  // past the end reads zero
    #expect([UInt8].cString("abc", length: 5) == [0x61, 0x62, 0x63, 0, 0])
    #expect([UInt8].cString("abcdef", length: 4) == [0x61, 0x62, 0x63, 0])
}

@Test func cpuidLeaves() {
    let time = XenCPUIDTime(tscKHz: 2_000_000)
    let leaves = XenCPUIDLeaves.make(vcpu: VCPUID(3), domain: DomainID(rawValue: 7), time: time)
    let base = leaves.first { $0.function == 0x4000_0000 }
    #expect(base?.eax == 0x4000_0005)
    let signature = [base?.ebx, base?.ecx, base?.edx].flatMap { r in
        (0..<4).map { UInt8(truncatingIfNeeded: (r ?? 0) >> ($0 * 8)) }
    }
    #expect(String(decoding: signature, as: UTF8.self) == "XenVMMXenVMM")
    #expect(leaves.first { $0.function == 0x4000_0001 }?.eax == UInt32(0x0004_0011))
    let l2 = leaves.first { $0.function == 0x4000_0002 }
    #expect(l2?.eax == 1 && l2?.ebx == 0x4000_0000)
    let hvm = leaves.first { $0.function == 0x4000_0004 }
    #expect(hvm?.ebx == 3 && hvm?.ecx == 7)
    #expect((hvm?.eax ?? 0) & (1 << 3 | 1 << 4) == 1 << 3 | 1 << 4)
    // XEN_HVM_CPUID_UPCALL_VECTOR: per-vCPU upcall vectors are offered (Linux uses them then).
    #expect((hvm?.eax ?? 0) & UInt32(1 << 6) != 0)
    #expect(hvm?.significantIndex == true)
    let t0 = leaves.first { $0.function == 0x4000_0003 && $0.index == 0 }
    #expect(t0?.ecx == 2_000_000 && t0?.eax == 0b110)

    // Per vCPU: only leaf 4 EBX differs.
    let all = XenCPUIDLeaves.make(vcpuCount: 4, domain: DomainID(rawValue: 1), time: time)
    #expect(all.count == 4)
    #expect(all.map { $0.first { $0.function == 0x4000_0004 }?.ebx } == [0, 1, 2, 3])
    #expect(all[0].filter { $0.function != 0x4000_0004 } == all[3].filter { $0.function != 0x4000_0004 })
}

@Test(arguments: [1_000_000 as UInt32, 2_400_000, 3_000_000, 100_000, 32])
func cpuidTimeScaleConvertsOneSecond(khz: UInt32) {
    let (mul, shift) = XenCPUIDTime(tscKHz: khz).scale
    let ticks = UInt64(khz) * 1000
    let shifted = shift >= 0 ? ticks << UInt64(shift) : ticks >> UInt64(-Int(shift))
    let ns = (shifted.multipliedFullWidth(by: UInt64(mul)))
    let result = ns.high << 32 | ns.low >> 32
    #expect(mul >= 1 << 31)
    #expect(result > 999_999_000 && result <= 1_000_000_000)
}

@Test func callbackViaDecoding() {
    #expect(HVMCallbackVia(parameterValue: 0) == .none)
    #expect(HVMCallbackVia(parameterValue: 2 << 56 | 0xf3) == .vector(0xf3))
    #expect(HVMCallbackVia(parameterValue: 28) == .gsi(28))
    #expect(HVMCallbackVia(parameterValue: 9 << 56) == .unknown(9 << 56))
}

@Test func grantTableConstants() {
    #expect(HypercallNumber.grantTableOp.rawValue == 20)
    #expect(GrantTableOpCommand.mapGrantRef.rawValue == 0 && GrantTableOpCommand.copy.rawValue == 5)
    #expect(GrantTableOpCommand.querySize.rawValue == 6 && GrantTableOpCommand.cacheFlush.rawValue == 12)
    #expect(GrantTableOpCommand(rawValue: UInt64(13)) == nil)
    #expect(GrantStatus.okay.rawValue == 0 && GrantStatus.generalError.rawValue == -1)
    #expect(GrantStatus.badGrantReference.rawValue == -3 && GrantStatus.badCopyArgument.rawValue == -10)
    #expect(GrantStatus.noSpace.rawValue == -13 && GrantStatus(rawValue: -12) == .again)
    #expect(GrantEntryFlags.permitAccess.rawValue == 1 && GrantEntryFlags.transitive.rawValue == 3)
    #expect(GrantEntryFlags.readonly.rawValue == 4 && GrantEntryFlags.reading.rawValue == 8)
    #expect(GrantEntryFlags.writing.rawValue == 16 && GrantEntryFlags.subPage.rawValue == 0x100)
    #expect(GrantEntryFlags(rawValue: 0xff01).type == .permitAccess)
    #expect(GrantEntryFlags(rawValue: 0xfffc).type == .invalid)
    #expect(GrantMapFlags.hostMap.rawValue == 2 && GrantCopyFlags.destinationGrant.rawValue == 2)
    #expect(GrantTableConstants.reservedEntries == 8 && GrantTableConstants.statusFrameIndexBit == 0x8000_0000)
}

@Test func grantTableWireLayouts() {
    // Entries: v1 8 bytes, v2 16, status 2.
    #expect(XenWire.GrantEntryV1.size == 8 && XenWire.GrantEntryV1.frame == WireField(offset: 4, size: 4))
    #expect(XenWire.GrantEntryV1.domid == WireField(offset: 2, size: 2))
    #expect(XenWire.GrantEntryV2.size == 16 && XenWire.GrantEntryV2.fullPageFrame == WireField(offset: 8, size: 8))
    #expect(XenWire.GrantEntryV2.subPageOffset == WireField(offset: 4, size: 2))
    #expect(XenWire.GrantEntryV2.subPageLength == WireField(offset: 6, size: 2))
    #expect(XenWire.GrantEntryV2.subPageFrame == WireField(offset: 8, size: 8))
    #expect(XenWire.GrantEntryV2.transitiveDomain == WireField(offset: 4, size: 2))
    #expect(XenWire.GrantEntryV2.transitiveReference == WireField(offset: 8, size: 4))
    #expect(XenWire.GrantStatusEntry.size == 2)
    // setup_table: native 24 (handle at 16), compat 16 (handle at 12).
    #expect(XenWire.GrantSetupTable.size(.long64) == 24 && XenWire.GrantSetupTable.frameList(.long64) == WireField(offset: 16, size: 8))
    #expect(XenWire.GrantSetupTable.size(.protected32) == 16 && XenWire.GrantSetupTable.frameList(.protected32) == WireField(offset: 12, size: 4))
    #expect(XenWire.GrantSetupTable.status == WireField(offset: 8, size: 2))
    // get_status_frames: native 16, compat 12.
    #expect(XenWire.GrantGetStatusFrames.size(.long64) == 16 && XenWire.GrantGetStatusFrames.size(.protected32) == 12)
    #expect(XenWire.GrantGetStatusFrames.dom == WireField(offset: 4, size: 2) && XenWire.GrantGetStatusFrames.status == WireField(offset: 6, size: 2))
    // copy: native 40 (pointers of 16), compat 24 (pointers of 8).
    #expect(XenWire.GrantCopy.size(.long64) == 40 && XenWire.GrantCopy.size(.protected32) == 24)
    #expect(XenWire.GrantCopy.gmfn(destination: true, .long64) == WireField(offset: 16, size: 8))
    #expect(XenWire.GrantCopy.domid(destination: true, .long64) == WireField(offset: 24, size: 2))
    #expect(XenWire.GrantCopy.offset(destination: false, .long64) == WireField(offset: 10, size: 2))
    #expect(XenWire.GrantCopy.status(.long64) == WireField(offset: 36, size: 2))
    #expect(XenWire.GrantCopy.gmfn(destination: true, .protected32) == WireField(offset: 8, size: 4))
    #expect(XenWire.GrantCopy.domid(destination: true, .protected32) == WireField(offset: 12, size: 2))
    #expect(XenWire.GrantCopy.length(.protected32) == WireField(offset: 16, size: 2))
    #expect(XenWire.GrantCopy.status(.protected32) == WireField(offset: 20, size: 2))
    // Same in both ABIs.
    #expect(XenWire.GrantQuerySize.size == 16 && XenWire.GrantQuerySize.status == WireField(offset: 12, size: 2))
    #expect(XenWire.GrantMapGrantRef.size == 32 && XenWire.GrantMapGrantRef.status == WireField(offset: 18, size: 2))
    #expect(XenWire.GrantMapGrantRef.handle == WireField(offset: 20, size: 4))
    #expect(XenWire.GrantUnmapGrantRef.size == 24 && XenWire.GrantUnmapGrantRef.status == WireField(offset: 20, size: 2))
    #expect(XenWire.GrantSwapGrantRef.size == 12 && XenWire.GrantGetVersion.size == 8 && XenWire.GrantCacheFlush.size == 16)
    #expect(XenWire.GrantTransfer.size(.long64) == 24 && XenWire.GrantTransfer.size(.protected32) == 16)
    // add_to_physmap_batch: native 32, compat 20.
    #expect(XenWire.AddToPhysmapBatch.size(.long64) == 32 && XenWire.AddToPhysmapBatch.size(.protected32) == 20)
    #expect(XenWire.AddToPhysmapBatch.extra == WireField(offset: 6, size: 2))
    #expect(XenWire.AddToPhysmapBatch.errors(.long64) == WireField(offset: 24, size: 8))
    #expect(XenWire.AddToPhysmapBatch.gpfns(.protected32) == WireField(offset: 12, size: 4))
    #expect(XenWire.AddToPhysmapBatch.indexSize(.protected32) == 4 && XenWire.AddToPhysmapBatch.gpfnSize(.long64) == 8)
}
