import Locking
import Synchronization
import XenABI
import XenStore

/// The guest's connection to the store (what its XenStore ring would
/// carry): requests as the unprivileged frontend domain, each answered
/// before `write`/`read` return (the server answers on the caller's thread).
/// After a write, `settle` runs: with backends on a remote store it waits
/// for their watch handlers, as the in-process store's have run by then.
public final class GuestStoreConnection: Sendable {
    /// The store it talks to.
    public let server: XenStoreServer
    /// Its connection there.
    public let id: XenStoreConnectionID
    private final class Inbox: Sendable { let bytes = Lock<[UInt8]>([]) }
    private let received = Inbox()
    private let framer = Lock(XenStoreFramer())
    private let nextID = Atomic<UInt32>(1)
    private let settle: @Sendable () -> Void

    /// Connects as `domain`.
    public init(_ server: XenStoreServer, domain: DomainID, settle: @escaping @Sendable () -> Void = {}) {
        self.server = server
        self.settle = settle
        let box = received
        id = server.connect(domain: domain, privileged: false) { bytes in box.bytes.withLock { $0 += bytes } }
    }

    private func request(_ type: XenStoreMessageType, _ payload: [UInt8]) -> Result<[UInt8], XenStoreError> {
        let rid = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        _ = server.receive(XenStoreMessage(type: type, requestID: rid, payload: payload).bytes, from: id)
        let bytes = received.bytes.withLock { b in
            defer { b = [] }
            return b
        }
        let frames = (try? framer.withLock { try $0.feed(bytes) }) ?? []
        for case .message(let m) in frames where m.requestID == rid && m.type != .watchEvent {
            if m.type == .error { return .failure(XenStoreError(wireName: XenStoreWire.oneArgument(m.payload) ?? "") ?? .eio) }
            return .success(m.payload)
        }
        return .failure(.eio)
    }

    /// XS_WRITE.
    public func write(_ path: String, _ value: String) throws(XenStoreError) {
        defer { settle() }
        if case .failure(let e) = request(.write, XenStoreWire.nulTerminated([path]) + Array(value.utf8)) { throw e }
    }

    /// XS_READ; nil for any error.
    public func read(_ path: String) -> String? {
        try? request(.read, XenStoreWire.nulTerminated([path])).map { String(decoding: $0, as: UTF8.self) }.get()
    }
}
