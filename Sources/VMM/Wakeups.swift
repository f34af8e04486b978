import Dispatch
import EventChannels
import Locking
import XenABI

/// Where a vCPU thread sleeps outside KVM_RUN (SCHEDOP_block, SCHEDOP_poll,
/// a vCPU that is down) and what wakes it: an upcall for it, a polled port
/// becoming pending, VCPUOP_up, the domain ending. A wake that comes before
/// the sleep is kept (a semaphore), so none is lost; a stale one only makes
/// the guest re-check, which Xen's block and poll allow.
final class VCPUWakeups: Sendable {
    private let semaphores: [DispatchSemaphore]
    /// vCPUs in SCHEDOP_poll and their ports (empty: any port).
    private let pollers = Lock<[VCPUID: Set<EventChannelPort>]>([:])

    init(vcpuCount: Int) {
        semaphores = (0..<max(vcpuCount, 1)).map { _ in DispatchSemaphore(value: 0) }
    }

    func wake(_ vcpu: VCPUID) {
        guard Int(vcpu.rawValue) < semaphores.count else { return }
        semaphores[Int(vcpu.rawValue)].signal()
    }

    func wakeAll() { semaphores.forEach { $0.signal() } }

    /// Sleeps until woken or until `deadline` (nil: no deadline). Returns false on timeout.
    @discardableResult
    func sleep(_ vcpu: VCPUID, until deadline: DispatchTime? = nil) -> Bool {
        guard Int(vcpu.rawValue) < semaphores.count else { return false }
        let s = semaphores[Int(vcpu.rawValue)]
        guard let deadline else {
            s.wait()
            return true
        }
        return s.wait(timeout: deadline) == .success
    }

    func startPolling(_ vcpu: VCPUID, ports: [EventChannelPort]) { pollers.withLock { $0[vcpu] = Set(ports) } }
    func stopPolling(_ vcpu: VCPUID) { _ = pollers.withLock { $0.removeValue(forKey: vcpu) } }

    /// An event channel port became pending: wake whoever polls it.
    func portBecamePending(_ port: EventChannelPort) {
        let waiting = pollers.withLock { p in p.filter { $0.value.isEmpty || $0.value.contains(port) }.map(\.key) }
        waiting.forEach(wake)
    }
}
