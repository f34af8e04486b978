/// A connected byte stream XenStore's wire protocol (io/xs_wire.h) runs
/// over: in a guest process of the toolstack, a Unix socket the host daemon
/// handed it (issue 12, process model). This target makes no system calls:
/// VMM's `UnixSocket` implements it over a descriptor.
public protocol XenStoreByteStream: Sendable {
    /// Blocks until bytes arrive; nil at end of stream or on error.
    func read(max: Int) -> [UInt8]?
    /// Writes all of `bytes`, blocking; false if the peer went away.
    func writeAll(_ bytes: [UInt8]) -> Bool
    /// Ends both directions: a `read` blocked in another thread returns nil,
    /// later writes fail. The descriptor stays open until `close`.
    func shutdown()
    /// Releases the descriptor; called once, after the last `read`/`writeAll`.
    func close()
}
