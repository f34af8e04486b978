import CKVM

/// The host's time-stamp counter. With KVM's TSC offset (see
/// `VCPU.guestTSCOffset()`) it gives the guest's TSC without a vCPU ioctl.
public func hostTSC() -> UInt64 { pvh_rdtsc() }

extension VCPU {
    /// The guest TSC minus the host TSC (mod 2^64), measured by reading the
    /// guest's IA32_TSC (KVM_GET_MSRS) between two host reads. Call on a vCPU
    /// that is not running.
    public func guestTSCOffset() throws(KVMError) -> UInt64 {
        let before = hostTSC()
        let guest = try getMSRs([MSRIndex(0x10)]).first ?? before
        let after = hostTSC()
        return guest &- (before / 2 &+ after / 2)
    }
}
