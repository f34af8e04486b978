import Foundation
import XenStore

/// Why a client request failed.
public enum XenStoreClientError: Error, CustomStringConvertible, Sendable {
    /// The store answered XS_ERROR with this error.
    case store(XenStoreError)
    /// The socket failed or closed.
    case connection(String)
    /// The reply was not what the protocol allows.
    case protocolViolation(String)

    public var description: String {
        switch self {
        case .store(let e): e.wireName
        case .connection(let why): "connection: \(why)"
        case .protocolViolation(let why): "protocol: \(why)"
        }
    }
}

/// A XenStore client over the Unix socket (what libxenstore is to xl): one
/// request at a time, replies matched by type and request id, watch events
/// kept aside until asked for. Used by the `pvh` CLI and the tests.
public final class XenStoreClient {
    private let socket: UnixSocket
    private var framer = XenStoreFramer()
    private var events: [(path: String, token: String)] = []
    /// Replies read together with earlier ones, not yet returned.
    private var replies: [XenStoreMessage] = []
    private var nextRequestID: UInt32 = 1
    private var closed = false

    public init(socketPath: String) throws(XenStoreClientError) {
        do { socket = try UnixSocket.connect(to: socketPath) } catch { throw .connection(error.description) }
    }

    deinit { socket.close() }

    public func read(_ path: String) throws(XenStoreClientError) -> String {
        String(decoding: try request(.read, [path]), as: UTF8.self)
    }

    public func write(_ path: String, _ value: String) throws(XenStoreClientError) {
        // XS_WRITE: the path NUL-terminated, the value not (xs_write in libxenstore).
        _ = try request(.write, XenStoreWire.nulTerminated([path]) + Array(value.utf8))
    }

    public func mkdir(_ path: String) throws(XenStoreClientError) { _ = try request(.mkdir, [path]) }

    public func remove(_ path: String) throws(XenStoreClientError) { _ = try request(.remove, [path]) }

    public func directory(_ path: String) throws(XenStoreClientError) -> [String] {
        XenStoreWire.strings(try request(.directory, [path]))
    }

    /// The node's permissions in Xen's text form ("n0", "r1", ...).
    public func permissions(_ path: String) throws(XenStoreClientError) -> [String] {
        XenStoreWire.strings(try request(.getPermissions, [path]))
    }

    public func watch(_ path: String, token: String) throws(XenStoreClientError) {
        _ = try request(.watch, [path, token])
    }

    public enum WatchWait: Equatable {
        case event(path: String, token: String)
        case timedOut
        case closed
    }

    /// The next watch event (the initial one included), waiting up to `timeout` seconds.
    public func waitForWatchEvent(timeout: Double) -> WatchWait {
        let deadline = Date().addingTimeInterval(timeout)
        while events.isEmpty {
            if closed { return .closed }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return .timedOut }
            guard socket.waitReadable(timeout: left) else { continue }
            do { _ = try receive() } catch { return .closed }
        }
        let e = events.removeFirst()
        return .event(path: e.path, token: e.token)
    }

    private func request(_ type: XenStoreMessageType, _ strings: [String]) throws(XenStoreClientError) -> [UInt8] {
        try request(type, XenStoreWire.nulTerminated(strings))
    }

    private func request(_ type: XenStoreMessageType, _ payload: [UInt8]) throws(XenStoreClientError) -> [UInt8] {
        guard !closed else { throw .connection("closed") }
        guard payload.count <= XenStoreLimits.payloadMax else { throw .store(.e2big) }
        let id = nextRequestID
        nextRequestID &+= 1
        guard socket.writeAll(XenStoreMessage(type: type, requestID: id, payload: payload).bytes) else {
            closed = true
            throw .connection("write failed")
        }
        while true {
            let reply = try receive()
            guard let reply else { continue }
            guard reply.requestID == id else { throw .protocolViolation("reply to request \(reply.requestID), expected \(id)") }
            if reply.type == .error {
                let name = XenStoreWire.oneArgument(reply.payload) ?? ""
                throw .store(XenStoreError(wireName: name) ?? .eio)
            }
            guard reply.type == type else { throw .protocolViolation("\(reply.type) reply to \(type)") }
            return reply.payload
        }
    }

    /// Reads once (unless a reply is already queued); watch events go to
    /// `events`, and the first reply, if one completed, is returned.
    private func receive() throws(XenStoreClientError) -> XenStoreMessage? {
        if !replies.isEmpty { return replies.removeFirst() }
        guard let bytes = socket.read() else {
            closed = true
            throw .connection("the store closed the connection")
        }
        let frames: [XenStoreFrame]
        do { frames = try framer.feed(bytes) } catch {
            closed = true
            throw .protocolViolation("\(error)")
        }
        for frame in frames {
            guard case .message(let m) = frame else { throw .protocolViolation("unknown message type") }
            if m.type == .watchEvent {
                let parts = XenStoreWire.strings(m.payload)
                if parts.count >= 2 { events.append((parts[0], parts[1])) }
            } else {
                replies.append(m)
            }
        }
        return replies.isEmpty ? nil : replies.removeFirst()
    }
}
