import Dispatch
import Locking

/// The one place a domain's end is decided: the first `finish` wins, every
/// vCPU is kicked out of KVM_RUN, and `wait()` returns it. vCPU threads and
/// outside callers (tests, signal handlers) share it.
public final class DomainLifecycle: Sendable {
    private let state = Lock<DomainExit?>(nil)
    private let kicks = Lock<[@Sendable () -> Void]>([])
    private let done = DispatchSemaphore(value: 0)

    public init() {}

    /// Registers how to interrupt one vCPU (called once per vCPU thread).
    func onStop(_ kick: @escaping @Sendable () -> Void) {
        kicks.withLock { $0.append(kick) }
        // A domain that ended before this vCPU registered still stops it.
        if exit != nil { kick() }
    }

    /// Ends the domain with `exit` unless it has already ended.
    public func finish(_ exit: DomainExit) {
        let first = state.withLock { s -> Bool in
            guard s == nil else { return false }
            s = exit
            return true
        }
        guard first else { return }
        for k in kicks.withLock({ $0 }) { k() }
        done.signal()
    }

    /// How the domain ended, or nil while it runs.
    public var exit: DomainExit? { state.withLock { $0 } }

    /// Blocks until the domain ends.
    public func wait() -> DomainExit {
        done.wait()
        done.signal()  // let any other waiter through too
        return exit ?? .stopped
    }
}

