import DeviceRuntime
import Locking
import XenRing

// The console's protocol: the xencons_interface byte rings (io/console.h),
// served by `ConsoleRing` (XenRing), and what one pump does with them. A
// console has no requests: it moves a byte stream each way.

/// The ring and the host-side queues. The pump (on the console's
/// context) and `input` (on the host's reader thread) share it under
/// its lock; the host sink is written outside the lock.
final class ConsoleEngine: Sendable {
    let ring: Lock<ConsoleRing>
    let output: @Sendable ([UInt8]) -> Void
    let metrics = ConsoleMetrics()

    init(ring: ConsoleRing, output: @escaping @Sendable ([UInt8]) -> Void) {
        self.ring = Lock(ring)
        self.output = output
    }

    /// One pump: ring ↔ queues, then the queued output to the host. Only
    /// the console's context runs it, so output leaves in guest order.
    func pump() throws(DeviceFault) -> BackendChannel.PumpResult {
        let (moved, out) = try ring.withLock { (r: inout ConsoleRing) throws(DeviceFault) -> (ConsolePumpResult, [UInt8]) in
            do throws(XenRingError) { return (try r.pump(), r.pendingOutput()) } catch { throw DeviceFault(error) }
        }
        if !out.isEmpty {
            output(out)
            ring.withLock { $0.outputWritten(out.count) }
            ConsoleMetrics.add(metrics.outputWritten, out.count)
        }
        return moved.notifyGuest ? .notifyGuest : .quiet
    }
}
