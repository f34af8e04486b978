import Dispatch
import Foundation
import Locking
import XenStore

/// Why a client request failed.
public enum XenStoreClientError: Error, CustomStringConvertible, Sendable {
    /// The store answered XS_ERROR with this error.
    case store(XenStoreError)
    /// The socket failed or closed, or the store broke the protocol.
    case connection(String)

    public var description: String {
        switch self {
        case .store(let e): e.wireName
        case .connection(let why): "connection: \(why)"
        }
    }

    init(_ error: XenStoreRemoteError) {
        switch error {
        case .store(let e): self = .store(e)
        case .connectionLost(let why): self = .connection(why)
        case .timedOut: self = .connection("no reply from the store")
        }
    }
}

/// The `pvh` CLI's XenStore client over xenstored's Unix socket (what
/// libxenstore is to xl): `XenStoreRemote`, the one wire client, plus the
/// CLI's way of taking watch events (kept until asked for, with a bound on
/// the wait). Used by the `pvh` CLI and the tests.
public final class XenStoreClient {
    private let remote: XenStoreRemote
    /// Watch events not yet taken, and whether the connection ended.
    private final class Inbox: Sendable {
        struct Events: Sendable {
            var queue: [(path: String, token: String)] = []
            var closed = false
        }
        let events = Lock(Events())
        let arrived = DispatchSemaphore(value: 0)

        func add(_ path: String, _ token: String) {
            events.withLock { $0.queue.append((path, token)) }
            arrived.signal()
        }

        func close() {
            events.withLock { $0.closed = true }
            arrived.signal()
        }
    }
    private let inbox = Inbox()

    public init(socketPath: String) throws(XenStoreClientError) {
        let socket: UnixSocket
        do { socket = try UnixSocket.connect(to: socketPath) } catch { throw .connection(error.description) }
        let inbox = inbox
        remote = XenStoreRemote(stream: socket) { _ in inbox.close() }
    }

    deinit { remote.close() }

    private func call<T>(_ body: () throws(XenStoreRemoteError) -> T) throws(XenStoreClientError) -> T {
        do { return try body() } catch { throw XenStoreClientError(error) }
    }

    public func read(_ path: String) throws(XenStoreClientError) -> String {
        String(decoding: try call { () throws(XenStoreRemoteError) in try remote.request(.read, XenStoreWire.nulTerminated([path])) },
               as: UTF8.self)
    }

    public func write(_ path: String, _ value: String) throws(XenStoreClientError) {
        // XS_WRITE: the path NUL-terminated, the value not (xs_write in libxenstore).
        _ = try call { () throws(XenStoreRemoteError) in
            try remote.request(.write, XenStoreWire.nulTerminated([path]) + Array(value.utf8))
        }
    }

    public func mkdir(_ path: String) throws(XenStoreClientError) { _ = try strings(.mkdir, [path]) }

    public func remove(_ path: String) throws(XenStoreClientError) { _ = try strings(.remove, [path]) }

    public func directory(_ path: String) throws(XenStoreClientError) -> [String] { try strings(.directory, [path]) }

    /// The node's permissions in Xen's text form ("n0", "r1", ...).
    public func permissions(_ path: String) throws(XenStoreClientError) -> [String] { try strings(.getPermissions, [path]) }

    /// Watches `path`; its events (the initial one included) wait for `waitForWatchEvent`.
    public func watch(_ path: String, token: String) throws(XenStoreClientError) {
        let inbox = inbox
        do {
            _ = try remote.watch(path, token: token) { p, t in inbox.add(p, t) }
        } catch {
            if let lost = remote.lostReason { throw .connection(lost) }
            throw .store(error)
        }
    }

    public enum WatchWait: Equatable {
        case event(path: String, token: String)
        case timedOut
        case closed
    }

    /// The next watch event (the initial one included), waiting up to `timeout` seconds.
    public func waitForWatchEvent(timeout: Double) -> WatchWait {
        let deadline = DispatchTime.now() + .milliseconds(Int(max(0, min(timeout, 86_400)) * 1000))
        while true {
            let next: WatchWait? = inbox.events.withLock { e in
                if !e.queue.isEmpty {
                    let first = e.queue.removeFirst()
                    return .event(path: first.path, token: first.token)
                }
                return e.closed ? .closed : nil
            }
            if let next { return next }
            if inbox.arrived.wait(timeout: deadline) == .timedOut { return .timedOut }
        }
    }

    private func strings(_ type: XenStoreMessageType, _ args: [String]) throws(XenStoreClientError) -> [String] {
        XenStoreWire.strings(try call { () throws(XenStoreRemoteError) in try remote.request(type, XenStoreWire.nulTerminated(args)) })
    }
}
