import EventChannels
import GuestMemory
import Synchronization
import XenABI

/// shared_info at a fixed frame, no registered vcpu_info (every vCPU uses
/// its legacy slot), the 64-bit layout: what a backend test's guest needs
/// for 2-level events in mock memory.
public final class FixedSharedInfo: SharedInfoLocator {
    public let sharedInfoFrame: GuestFrameNumber?
    public init(frame: GuestFrameNumber = GuestFrameNumber(0x10)) { sharedInfoFrame = frame }
    public var sharedInfoIs32Bit: Bool { false }
    public func registeredVCPUInfo(for vcpu: VCPUID) -> GuestPhysicalAddress? { nil }
}

/// Counts upcalls instead of injecting them.
public final class CountingUpcalls: EventChannelNotifier {
    public let count = Atomic<Int>(0)
    public init() {}
    public func upcall(vcpu: VCPUID) { count.wrappingAdd(1, ordering: .relaxed) }
}
