import GuestMemory

/// No host side (`type=none`): the guest's interface exists, and every frame
/// it sends is dropped as `.linkDown`; nothing is ever received.
public final class NullLink: NetworkLink, Sendable {
    public let mtu: Int
    /// Everything: dropping a frame needs no checksum completed first.
    public let capabilities: NetworkLinkCapabilities = [.partialChecksum, .tcpv4Segmentation, .tcpv6Segmentation]
    public var description: String { "none" }

    public init(mtu: Int = 1500) { self.mtu = mtu }

    public func transmit(_ parts: [HostMemoryRange], offload: NetworkOffload) -> Result<Void, NetworkTransmitDrop> {
        .failure(.linkDown)
    }

    /// Reports no carrier: there is nothing behind the interface.
    public func start(receive: @escaping @Sendable (NetworkFrame) -> Void,
                      carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {}

    public func stop() {}
}
