import Dispatch
import EventChannels
import GuestMemory
import Locking
import Synchronization
import XenABI

/// The guest's side of its event channels: shared_info at a fixed frame
/// (64-bit layout, vCPU 0 in its legacy vcpu_info slot), and, in place of
/// an upcall handler, a wait per port. The table calls `portBecamePending`
/// when a port's pending bit goes from 0 to 1; a waiter clears the bit
/// (`evtchn_2l` handlers do `test_and_clear_bit` on `evtchn_pending` before
/// calling the driver) and then looks at its ring, so an event sent after
/// the look sets the bit again and wakes it: no lost wake-up.
public final class GuestNotifications: EventChannelNotifier {
    /// shared_info at `FrontendGuest.sharedInfoFrame`, no registered vcpu_info.
    struct Locator: SharedInfoLocator {
        var sharedInfoFrame: GuestFrameNumber? { FrontendGuest.sharedInfoFrame }
        var sharedInfoIs32Bit: Bool { false }
        func registeredVCPUInfo(for vcpu: VCPUID) -> GuestPhysicalAddress? { nil }
    }

    let locator = Locator()
    private let memory: any GuestMemory
    private let waiters = Lock<[EventChannelPort: DispatchSemaphore]>([:])
    /// Upcalls the table asked for (vCPU 0's upcall flag went from 0 to 1).
    public let upcalls = Atomic<Int>(0)

    init(memory: any GuestMemory) { self.memory = memory }

    /// Counts the upcall (nothing runs in the guest without a VM).
    public func upcall(vcpu: VCPUID) { upcalls.wrappingAdd(1, ordering: .relaxed) }

    /// Wakes whoever waits on `port`.
    public func portBecamePending(_ port: EventChannelPort) {
        waiters.withLock { $0[port] }?.signal()
    }

    /// Starts hearing `port` (a port this guest allocated).
    public func listen(_ port: EventChannelPort) { waiters.withLock { $0[port] = $0[port] ?? DispatchSemaphore(value: 0) } }

    /// `test_and_clear_bit(port, evtchn_pending)`: true if it was set.
    @discardableResult
    public func clearPending(_ port: EventChannelPort) -> Bool {
        let bits = 64
        let field = XenWire.SharedInfo.eventPending(sharedInfo32Bit: false)
        let word = GuestPhysicalAddress(FrontendGuest.sharedInfoFrame.rawValue << 12 + UInt64(field.offset)
            + UInt64(Int(port.rawValue) / bits * 8))
        return (try? memory.testAndClearBit(Int(port.rawValue) % bits, of: UInt64.self, at: word)) ?? false
    }

    /// Waits until `port` becomes pending again (or was, since the last
    /// wait); false on timeout.
    public func wait(_ port: EventChannelPort, timeout: Duration) -> Bool {
        guard let semaphore = waiters.withLock({ $0[port] }) else { return false }
        let (seconds, attoseconds) = timeout.components
        let nanoseconds = Int(clamping: seconds) &* 1_000_000_000 &+ Int(attoseconds / 1_000_000_000)
        return semaphore.wait(timeout: .now() + .nanoseconds(nanoseconds)) == .success
    }
}
