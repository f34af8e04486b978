import GuestMemory
import XenABI

/// The 2-level ABI's guest-memory side, after xen/common/event_2l.c: the
/// pending and mask bitmaps in shared_info, the per-vCPU selector word and
/// upcall flag in vcpu_info. Every read-modify-write is one locked atomic on
/// the guest's word (the guest's vCPUs update the same words concurrently
/// with locked bit operations), in the order event_2l.c uses.
///
/// A snapshot of where things are: made per operation, so a guest that moves
/// shared_info or registers a vcpu_info is seen by the next event.
struct TwoLevel {
    let memory: any GuestMemory
    let sharedInfo: GuestPhysicalAddress
    let is32Bit: Bool
    let locator: any SharedInfoLocator

    /// nil while the guest has not mapped shared_info: events are then lost
    /// (Xen keeps them in its own page; Linux maps shared_info before it binds
    /// any port, so nothing is pending yet at that point).
    init?(memory: any GuestMemory, locator: any SharedInfoLocator) {
        guard let shinfo = locator.sharedInfoFrame?.address else { return nil }
        self.memory = memory
        self.sharedInfo = shinfo
        self.is32Bit = locator.sharedInfoIs32Bit
        self.locator = locator
    }

    /// `BITS_PER_EVTCHN_WORD(d)`.
    var wordBits: Int { XenWire.SharedInfo.bitsPerEventWord(sharedInfo32Bit: is32Bit) }
    /// Ports the 2-level ABI can name: `BITS_PER_EVTCHN_WORD(d)²` (4096 or 1024).
    var portCount: Int { wordBits * wordBits }

    /// The guest's vcpu_info for `vcpu` (`VCPUInfoPlacement`): with none,
    /// its events are lost until it registers one, as in Xen.
    func vcpuInfo(_ vcpu: VCPUID) -> GuestPhysicalAddress? {
        VCPUInfoPlacement.address(of: vcpu, registered: locator.registeredVCPUInfo(for: vcpu), sharedInfo: sharedInfo)
    }

    // MARK: bit operations on xen_ulong_t arrays

    private func word(_ base: GuestPhysicalAddress, _ index: Int) -> (GuestPhysicalAddress, Int)? {
        guard let a = base.advanced(by: UInt64(index / wordBits * (wordBits / 8))) else { return nil }
        return (a, index % wordBits)
    }

    /// `test_and_set_bit`; nil when the memory is gone.
    private func testAndSet(_ index: Int, in base: GuestPhysicalAddress) -> Bool? {
        guard let (a, bit) = word(base, index) else { return nil }
        return is32Bit
            ? try? memory.testAndSetBit(bit, of: UInt32.self, at: a)
            : try? memory.testAndSetBit(bit, of: UInt64.self, at: a)
    }

    /// `test_and_clear_bit`; nil when the memory is gone.
    private func testAndClear(_ index: Int, in base: GuestPhysicalAddress) -> Bool? {
        guard let (a, bit) = word(base, index) else { return nil }
        return is32Bit
            ? try? memory.testAndClearBit(bit, of: UInt32.self, at: a)
            : try? memory.testAndClearBit(bit, of: UInt64.self, at: a)
    }

    /// `test_bit` (a plain load); nil when the memory is gone.
    private func test(_ index: Int, in base: GuestPhysicalAddress) -> Bool? {
        guard let (a, bit) = word(base, index) else { return nil }
        if is32Bit {
            guard let w = try? memory.load(UInt32.self, at: a) else { return nil }
            return w & (1 << UInt32(bit)) != 0
        }
        guard let w = try? memory.load(UInt64.self, at: a) else { return nil }
        return w & (1 << UInt64(bit)) != 0
    }

    private var pendingBase: GuestPhysicalAddress? {
        sharedInfo.advanced(by: UInt64(XenWire.SharedInfo.eventPending(sharedInfo32Bit: is32Bit).offset))
    }
    private var maskBase: GuestPhysicalAddress? {
        sharedInfo.advanced(by: UInt64(XenWire.SharedInfo.eventMask(sharedInfo32Bit: is32Bit).offset))
    }
    private func selectorBase(_ vcpu: VCPUID) -> GuestPhysicalAddress? {
        vcpuInfo(vcpu)?.advanced(by: UInt64(XenWire.VCPUInfo.pendingSelector(sharedInfo32Bit: is32Bit).offset))
    }

    // MARK: event_2l.c

    /// What one delivery did.
    struct Outcome {
        /// The pending bit was newly set (pollers may wake).
        var newlyPending = false
        /// The vCPU's upcall flag was newly set (it must take an upcall).
        var upcall = false
    }

    /// `evtchn_2l_set_pending` for `port` notifying `vcpu`: set the pending
    /// bit; if it was clear and the port is unmasked, set the selector bit and,
    /// if that was clear, the vCPU's upcall flag (`vcpu_mark_events_pending`).
    func setPending(_ port: EventChannelPort, vcpu: VCPUID) -> Outcome {
        var out = Outcome()
        let p = Int(port.rawValue)
        guard p < portCount, let pending = pendingBase, let mask = maskBase,
              testAndSet(p, in: pending) == false
        else { return out }
        out.newlyPending = true
        if test(p, in: mask) == false, let selector = selectorBase(vcpu),
           testAndSet(p / wordBits, in: selector) == false {
            out.upcall = markEventsPending(vcpu)
        }
        return out
    }

    /// `evtchn_2l_clear_pending`.
    func clearPending(_ port: EventChannelPort) {
        let p = Int(port.rawValue)
        guard p < portCount, let pending = pendingBase else { return }
        _ = testAndClear(p, in: pending)
    }

    /// `evtchn_2l_unmask`: clear the mask bit; if it was set and the port is
    /// pending, set the selector bit and, if newly, the upcall flag. True when
    /// the vCPU must take an upcall.
    func unmask(_ port: EventChannelPort, vcpu: VCPUID) -> Bool {
        let p = Int(port.rawValue)
        guard p < portCount, let pending = pendingBase, let mask = maskBase,
              testAndClear(p, in: mask) == true,
              test(p, in: pending) == true,
              let selector = selectorBase(vcpu),
              testAndSet(p / wordBits, in: selector) == false
        else { return false }
        return markEventsPending(vcpu)
    }

    /// `vcpu_mark_events_pending` (xen/arch/x86/domain.c): test-and-set the
    /// upcall flag; true when it was clear.
    private func markEventsPending(_ vcpu: VCPUID) -> Bool {
        guard let info = vcpuInfo(vcpu),
              let flag = info.advanced(by: UInt64(XenWire.VCPUInfo.upcallPending.offset)),
              let old = try? memory.atomicOr(UInt8(1), at: flag)
        else { return false }
        return old & 1 == 0
    }

    /// `evtchn_2l_is_pending`.
    func isPending(_ port: EventChannelPort) -> Bool {
        let p = Int(port.rawValue)
        guard p < portCount, let pending = pendingBase else { return false }
        return test(p, in: pending) == true
    }

    /// `evtchn_2l_is_masked` (ports the ABI cannot name count as masked).
    func isMasked(_ port: EventChannelPort) -> Bool {
        let p = Int(port.rawValue)
        guard p < portCount, let mask = maskBase else { return true }
        return test(p, in: mask) != false
    }

    /// `vcpu_info.evtchn_upcall_pending` of `vcpu`.
    func upcallPending(_ vcpu: VCPUID) -> Bool {
        guard let info = vcpuInfo(vcpu),
              let flag = info.advanced(by: UInt64(XenWire.VCPUInfo.upcallPending.offset)),
              let value = try? memory.load(UInt8.self, at: flag)
        else { return false }
        return value != 0
    }
}
