import GuestMemory
import XenABI

/// What toolstack code and device backends need of a XenStore, whichever
/// store it is: the VMM's own `XenStoreServer` in this process (`pvh run`'s
/// embedded default) or the host daemon's, reached over a stream with
/// `XenStoreRemote` (a guest process of the toolstack, issue 12). Each call
/// is one request of io/xs_wire.h outside any transaction, acting as the
/// connection's domain (the toolstack's: dom0, privileged); errors are the
/// store's `xsd_errors`.
///
/// Watch handlers run in order, never two at once, never on the calling
/// thread's stack while it holds a lock of the store's, and may call back
/// into the store: `XenStoreServer` runs them from its ordered callback
/// queue, `XenStoreRemote` from its delivery queue (not its reader). A call
/// may return before the handlers its own changes triggered have run.
public protocol XenStoreService: AnyObject, Sendable {
    /// One request of `type` with `payload`, outside any transaction; the
    /// reply's payload, or the store's error. The operations below are
    /// made of it.
    func call(_ type: XenStoreMessageType, _ payload: [UInt8]) throws(XenStoreError) -> [UInt8]
    /// Introduces `domain`, whose ring is `ring` with event channel `port`,
    /// and fires `@introduceDomain` (XS_INTRODUCE).
    func introduceDomain(_ domain: DomainID, ring: GuestFrameNumber, port: EventChannelPort) throws(XenStoreError)
    /// Releases `domain` and fires `@releaseDomain` (XS_RELEASE).
    func releaseDomain(_ domain: DomainID) throws(XenStoreError)
    /// Watches `path` (XS_WATCH): `handler(path, token)` runs for the
    /// initial event xenstore.txt promises and every change after it.
    func watch(_ path: String, token: String,
               handler: @escaping @Sendable (String, String) -> Void) throws(XenStoreError) -> XenStoreWatchID
    /// Removes a watch; its handler is not called again (events already
    /// queued for it may still be delivered).
    func unwatch(_ id: XenStoreWatchID)
}

extension XenStoreService {
    private func call(_ type: XenStoreMessageType, _ strings: [String]) throws(XenStoreError) -> [UInt8] {
        try call(type, XenStoreWire.nulTerminated(strings))
    }

    /// Writes raw bytes at `path` (absolute, or relative to the caller's
    /// home), creating missing parents (XS_WRITE: the path NUL-terminated,
    /// the value not, as libxenstore's xs_write sends it).
    public func writeBytes(_ path: String, _ value: [UInt8]) throws(XenStoreError) {
        _ = try call(.write, XenStoreWire.nulTerminated([path]) + value)
    }

    /// Writes `value` at `path` (XS_WRITE).
    public func write(_ path: String, _ value: String) throws(XenStoreError) {
        try writeBytes(path, Array(value.utf8))
    }

    /// The raw value at `path` (XS_READ).
    public func readBytes(_ path: String) throws(XenStoreError) -> [UInt8] { try call(.read, [path]) }

    /// The value at `path`, decoded as UTF-8 (XS_READ).
    public func read(_ path: String) throws(XenStoreError) -> String {
        String(decoding: try readBytes(path), as: UTF8.self)
    }

    /// Creates `path` and missing parents with empty values (XS_MKDIR).
    public func mkdir(_ path: String) throws(XenStoreError) { _ = try call(.mkdir, [path]) }

    /// Removes `path` and everything below it (XS_RM).
    public func remove(_ path: String) throws(XenStoreError) { _ = try call(.remove, [path]) }

    /// Sets `path`'s permissions (XS_SET_PERMS).
    public func setPermissions(_ path: String, _ perms: XenStorePermissions) throws(XenStoreError) {
        _ = try call(.setPermissions, [path] + perms.strings)
    }

    /// `path`'s permissions (XS_GET_PERMS).
    public func permissions(_ path: String) throws(XenStoreError) -> XenStorePermissions {
        try XenStorePermissions(strings: XenStoreWire.strings(try call(.getPermissions, [path])))
    }

    /// The names of `path`'s children (XS_DIRECTORY).
    public func directory(_ path: String) throws(XenStoreError) -> [String] {
        XenStoreWire.strings(try call(.directory, [path]))
    }
}
