import GuestMemory

/// Offload metadata that travels with one Ethernet frame between a network
/// backend and the host side, with the meaning of Linux's virtio-net header
/// (include/uapi/linux/virtio_net.h), which is what a TAP opened with
/// IFF_VNET_HDR reads and writes. netif's own flags map onto it: TX
/// `NETTXF_csum_blank` is a partial checksum, `XEN_NETIF_GSO_TYPE_TCPV4/6`
/// with its size is segmentation; RX `NETRXF_data_validated` is
/// `checksumValidated`.
public struct NetworkOffload: Sendable, Hashable {
    /// TCP segmentation the receiver (or the host stack) still has to do.
    public enum Segmentation: Sendable, Hashable {
        case none
        /// TCP over IPv4, cut into segments of `segmentSize` payload bytes.
        case tcpv4(segmentSize: UInt16)
        /// TCP over IPv6, cut into segments of `segmentSize` payload bytes.
        case tcpv6(segmentSize: UInt16)
    }

    /// Where a partial checksum is to be completed (VIRTIO_NET_HDR_F_NEEDS_CSUM):
    /// the one's-complement sum from `start` to the end of the frame goes in
    /// at `start + offset`; the field holds the pseudo-header sum meanwhile.
    public struct PartialChecksum: Sendable, Hashable {
        public var start: UInt16
        public var offset: UInt16
        public init(start: UInt16, offset: UInt16) {
            self.start = start
            self.offset = offset
        }
    }

    public var segmentation: Segmentation
    /// Set: the checksum is partial and must be completed before the frame
    /// leaves the host (or by the host stack that takes offloads).
    public var partialChecksum: PartialChecksum?
    /// The frame's checksums were verified (VIRTIO_NET_HDR_F_DATA_VALID).
    public var checksumValidated: Bool

    public init(segmentation: Segmentation = .none, partialChecksum: PartialChecksum? = nil,
                checksumValidated: Bool = false) {
        self.segmentation = segmentation
        self.partialChecksum = partialChecksum
        self.checksumValidated = checksumValidated
    }

    /// A complete frame with nothing left to do.
    public static let none = NetworkOffload()
}

/// One frame received from the host side, with its offload metadata. The
/// bytes are the link's own copy: the backend copies them into the guest's
/// granted RX pages.
public struct NetworkFrame: Sendable {
    public var bytes: [UInt8]
    public var offload: NetworkOffload
    public init(bytes: [UInt8], offload: NetworkOffload = .none) {
        self.bytes = bytes
        self.offload = offload
    }
}

/// What a link can take on transmit. A backend completes partial checksums
/// itself, and drops (counting) segmentation frames, for a link that lacks
/// the corresponding capability.
public struct NetworkLinkCapabilities: OptionSet, Sendable, Hashable {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Frames may carry a partial checksum (`NetworkOffload.partialChecksum`).
    public static let partialChecksum = NetworkLinkCapabilities(rawValue: 1 << 0)
    /// TCPv4 segmentation frames are taken (TSO, up to 64 KiB).
    public static let tcpv4Segmentation = NetworkLinkCapabilities(rawValue: 1 << 1)
    /// TCPv6 segmentation frames are taken.
    public static let tcpv6Segmentation = NetworkLinkCapabilities(rawValue: 1 << 2)
}

/// Why a frame was not sent.
public enum NetworkTransmitDrop: Error, Sendable, Hashable {
    /// The host side is down (no carrier, the helper process gone).
    case linkDown
    /// The host side cannot take more now (its queue or socket buffer is full).
    case busy
    /// Larger than the link's maximum frame.
    case tooLarge
    /// Carries an offload the link does not take.
    case unsupportedOffload
    /// The host refused it (errno).
    case hostError(Int32)
}

/// The host side of one guest network interface: a TAP device, user-mode
/// networking through passt, or nothing. A backend transmits from its own
/// execution context; the link delivers received frames from a thread of its
/// own. Implementations live in this target (the one host-I/O layer).
public protocol NetworkLink: AnyObject, Sendable {
    /// What the host side is, for logs and `pvh` (e.g. "tap vif1.0", "user (passt pid 1234)").
    var description: String { get }
    /// Largest frame the link passes without segmentation, Ethernet header
    /// excluded (the interface MTU).
    var mtu: Int { get }
    /// Offloads `transmit` takes.
    var capabilities: NetworkLinkCapabilities { get }
    /// Sends one frame, gathered from `parts` in order (host memory that
    /// stays mapped during the call: granted guest pages or the backend's
    /// own buffers). Never blocks for long; a frame the host side cannot
    /// take now is dropped and the reason returned.
    func transmit(_ parts: [HostMemoryRange], offload: NetworkOffload) -> Result<Void, NetworkTransmitDrop>
    /// Starts delivering: `receive` is called for each frame from the host
    /// side, in order, on the link's own thread; `carrier` when the link
    /// goes down or comes back (passt restarted). Called once.
    func start(receive: @escaping @Sendable (NetworkFrame) -> Void,
               carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError)
    /// Stops delivering and releases the host side; no callback runs after
    /// it returns. Idempotent.
    func stop()
    /// A frontend connected, with or without scatter-gather
    /// (`feature-sg`). Without it the guest takes no frame larger than a
    /// page, so a link that hands out a larger MTU lowers it (passt is
    /// restarted with 1500); with it, the MTU asked for is restored.
    func frontendConnected(scatterGather: Bool)
}

extension NetworkLink {
    /// Most links' MTU is the user's and fits any frontend: nothing to do.
    public func frontendConnected(scatterGather: Bool) {}
}

/// What one `DirectReceiveNetworkLink.receive(into:)` did.
public enum NetworkDirectReceive: Sendable, Hashable {
    /// One frame of `length` bytes is in the parts, from the first byte of
    /// the first part on, in order; `offload` is its metadata.
    case frame(length: Int, offload: NetworkOffload)
    /// One frame was taken off the host side and dropped: longer than the
    /// parts (`length`, its whole length), or (`length` 0) nothing to
    /// deliver, as a frame with an offload the contract cannot say, which
    /// the link counts itself.
    case dropped(length: Int)
    /// No frame is queued now.
    case empty
    /// The link is stopped or its host side is gone.
    case gone
}

/// A link whose received frames its user can read itself, on its own
/// execution context, straight into memory it names (a guest's posted RX
/// buffers), rather than taking a copy the link's thread made: a TAP, whose
/// every read is one frame. The user reads while frames are large; the
/// link's thread reads small ones (see `watch`).
///
/// Started with `start(receive:readable:carrier:)`, the link's thread reads
/// nothing while its user holds the right to read: it waits until frames
/// are queued and calls `readable`. True: the user took that right and
/// reads (`receive(into:)`) until `.empty`, then hands it back with
/// `watch()`; false: the link reads and delivers through `receive`, as
/// `start(receive:carrier:)` does.
public protocol DirectReceiveNetworkLink: NetworkLink {
    /// The most bytes one received frame can have; parts holding fewer may
    /// see it `.dropped`.
    var maximumReceiveLength: Int { get }
    /// `start(receive:carrier:)` with the user reading for itself whenever
    /// `readable` says so. Called once, instead of that.
    func start(receive: @escaping @Sendable (NetworkFrame) -> Void,
               readable: @escaping @Sendable () -> Bool,
               carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError)
    /// Reads one frame into `parts` (host memory mapped for the call),
    /// without blocking. Only while the user holds the right to read.
    func receive(into parts: [HostMemoryRange]) -> NetworkDirectReceive
    /// Hands the right to read back: the link's thread watches again. It
    /// calls `readable` once more frames are queued if `lastFrameLarge`
    /// (the user's reads save a copy of a large frame), else reads them
    /// itself until it reads a large one (small frames go faster read on
    /// a thread beside the user's).
    func watch(lastFrameLarge: Bool)
}
