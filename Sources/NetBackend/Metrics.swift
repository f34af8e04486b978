import Locking
import Synchronization

/// Why a packet or frame was dropped, for the metrics (the guest sees
/// NETIF_RSP_ERROR on TX, nothing on RX).
public enum NetDropReason: Error, Hashable, Sendable, CaseIterable {
    // TX, the frontend's packet was bad (answered NETIF_RSP_ERROR).
    /// A first slot of size 0 or shorter than an Ethernet header.
    case txBadSize
    /// A slot's `offset + size` passes its page.
    case txCrossesPage
    /// The slots' sizes do not add up to the first slot's.
    case txSizeMismatch
    /// More than XEN_NETBK_LEGACY_SLOTS_MAX data slots.
    case txTooManySlots
    /// A grant could not be mapped.
    case txBadGrant
    /// A GSO extra the backend cannot use (bad type, size 0), or a GSO
    /// packet it had to segment whose headers are not IP and TCP.
    case txBadGSO
    /// The partial checksum's headers could not be parsed.
    case txBadChecksumHeaders
    // TX, the host side did not take it (the guest sees NETIF_RSP_OKAY).
    /// The link is down (no carrier).
    case txLinkDown
    /// The link was busy.
    case txLinkBusy
    /// The link refused it (too large, an offload it lacks, a host error).
    case txLinkRefused
    // RX.
    /// The queue's backlog was full.
    case rxBacklogFull
    /// Larger than a page and the frontend has no feature-sg, or larger
    /// than the ring can ever hold.
    case rxTooLarge
    /// A segmentation frame for a frontend that did not negotiate GSO.
    case rxUnsupportedOffload
    /// A posted buffer's grant could not be written.
    case rxBadGrant
    /// Not connected (no queue to take it).
    case rxNotConnected
}

/// What one queue of a network device did (over all connections). Relaxed
/// atomics, as `BlockMetrics`: read by tests, `pvh` and benchmarks, never
/// used for synchronisation.
public final class NetMetrics: Sendable {
    /// Packets the frontend sent that went to the link.
    public let txPackets = Atomic<UInt64>(0)
    public let txBytes = Atomic<UInt64>(0)
    /// Of `txPackets`, those with a GSO extra.
    public let txGSOPackets = Atomic<UInt64>(0)
    /// Of `txGSOPackets`, those the backend cut into segments (a link
    /// without the segmentation capability).
    public let txSegmentedPackets = Atomic<UInt64>(0)
    /// Times a TX queue stopped for transmit credit (the vif's `rate`).
    public let txCreditWaits = Atomic<UInt64>(0)
    /// Partial checksums the backend completed (link without `.partialChecksum`).
    public let txChecksumsCompleted = Atomic<UInt64>(0)
    /// Partial checksums of received frames the backend completed (a
    /// frontend without the offload for them).
    public let rxChecksumsCompleted = Atomic<UInt64>(0)
    /// Frames copied to the frontend.
    public let rxPackets = Atomic<UInt64>(0)
    public let rxBytes = Atomic<UInt64>(0)
    /// Of `rxPackets`, those with a GSO extra.
    public let rxGSOPackets = Atomic<UInt64>(0)
    /// Of `rxPackets`, those the link read straight into the posted
    /// buffers (no copy by the backend).
    public let rxDirectPackets = Atomic<UInt64>(0)
    /// Times RX found too few posted buffers for the next frame.
    public let rxRingFull = Atomic<UInt64>(0)
    /// Drops by reason (a lock: drops are off the fast path).
    private let drops = Lock<[NetDropReason: UInt64]>([:])

    public init() {}

    /// Drops for `reason`.
    public func dropped(_ reason: NetDropReason) -> UInt64 { drops.withLock { $0[reason] ?? 0 } }

    /// Every drop, TX and RX.
    public var totalDrops: UInt64 { NetDropReason.allCases.reduce(0) { $0 &+ dropped($1) } }

    func drop(_ reason: NetDropReason) { drops.withLock { $0[reason, default: 0] &+= 1 } }

    static func bump(_ counter: borrowing Atomic<UInt64>, by n: Int = 1) {
        counter.wrappingAdd(UInt64(n), ordering: .relaxed)
    }
}
