import Locking
import XenABI

/// What a device backend's xenbus driver keeps between the handshake and
/// its queues: the connection `connect` made (nil when not connected) and,
/// weakly (the device owns the driver), the `XenbusBackendDevice` it
/// belongs to, so that a queue's fault fails the device through xenbus.
/// Block and network backends hold one each.
public final class XenbusDriverLink<Connection: Sendable>: Sendable {
    private struct WeakDevice: Sendable { weak var device: XenbusBackendDevice? }
    private let device = Lock(WeakDevice())
    private let current = Lock<Connection?>(nil)

    public init() {}

    /// Names the device, once it exists (it is made with the driver).
    public func attach(_ device: XenbusBackendDevice) { self.device.withLock { $0.device = device } }

    /// The current connection.
    public var connection: Connection? { current.withLock { $0 } }

    /// Records a new connection (after `take` tore down the old one).
    public func install(_ connection: Connection) { current.withLock { $0 = connection } }

    /// Takes the connection for the caller to tear down; nil if there was
    /// none (so a disconnect from two paths tears down once).
    public func take() -> Connection? {
        current.withLock { c in
            defer { c = nil }
            return c
        }
    }

    /// A queue failed: the device fails through xenbus (`fatal`, which
    /// disconnects the driver), or, when it is already gone, `disconnect`
    /// runs directly.
    public func fail(_ reason: String, error: XenErrno = .eio, otherwise disconnect: () -> Void) {
        if let device = device.withLock({ $0.device }) {
            device.fatal(reason, error: error)
        } else {
            disconnect()
        }
    }
}
