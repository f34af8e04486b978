import XenStore

/// Where a domain's XenStore is, for the toolstack code and backends of
/// this process (`access`, acting as dom0) and for the guest's ring (the
/// peer each boot's `XenStoreRingConnection` hands its bytes to).
///
/// - `embedded`: `pvh run`'s default, a `XenStoreServer` in this process
///   (the ring is one of its unprivileged connections).
/// - `remote`: a guest process of the toolstack (issue 12): the host
///   daemon's store over two connected streams it handed this process, one
///   privileged (`XenStoreRemote`: the domain's tree, introduce/release,
///   the xenbus backends) and one the daemon serves as the guest's domain,
///   unprivileged (`XenStoreRelay`: the guest's ring, relayed byte for byte).
public struct DomainStore: Sendable {
    /// The store as the toolstack and the backends use it.
    public let access: any XenStoreService
    /// The peer of the guest's ring, asked once per boot.
    let ringPeer: @Sendable () -> any XenStoreRingPeer
    /// Whether this process writes the toolstack's nodes of the domain's
    /// tree (`DomainStoreLayout.writesToolstackNodes`): with its own store
    /// it does; on a daemon's store the daemon does.
    let writesToolstackNodes: Bool

    /// The store in this process.
    public static func embedded(_ server: XenStoreServer) -> DomainStore {
        DomainStore(access: server, ringPeer: { XenStoreServerRingPeer(server: server) }, writesToolstackNodes: true)
    }

    /// The host daemon's store: `access` privileged (a `XenStoreRemote`, or
    /// a `ReattachableXenStore` around one), the guest's ring through
    /// `relay` (a `XenStoreRelay` or a `ReattachableRingPeer` around one;
    /// each boot reattaches it; its reset drops the last boot's watches and
    /// transactions in the daemon's store).
    public static func remote(_ access: any XenStoreService, guestRing relay: any XenStoreRingPeer) -> DomainStore {
        DomainStore(access: access, ringPeer: { relay }, writesToolstackNodes: false)
    }
}
