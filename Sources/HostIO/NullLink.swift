import GuestMemory

/// No host side (`type=none`): the guest's interface exists, and every frame
/// it sends is dropped as `.linkDown`; nothing is ever received.
public final class NullLink: NetworkLink, Sendable {
    /// Reported to the guest as given (1500 unless told).
    public let mtu: Int
    /// Everything: dropping a frame needs no checksum completed first.
    public let capabilities: NetworkLinkCapabilities = [.partialChecksum, .tcpv4Segmentation, .tcpv6Segmentation]
    /// `none`.
    public var description: String { "none" }

    /// A link that is never up.
    public init(mtu: Int = 1500) { self.mtu = mtu }

    /// Always `.linkDown`.
    public func transmit(_ parts: [HostMemoryRange], offload: NetworkOffload) -> Result<Void, NetworkTransmitDrop> {
        .failure(.linkDown)
    }

    /// Reports no carrier: there is nothing behind the interface.
    public func start(receive: @escaping @Sendable (NetworkFrame) -> Void,
                      carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {}

    /// Nothing to release.
    public func stop() {}
}
