import Foundation
import Hummingbird
import PVHAPIModels
import Locking
import XenStore

/// The daemon's XenStore over the API: read, write, remove, watch.
///
/// The API acts as the control domain: the daemon's XenStoreServer calls
/// are a privileged dom0 connection, past every node's permissions (as C
/// xenstored treats its privileged socket), which is why the API socket is
/// its owner's only (mode 0600).
/// Paths are absolute (`/v1/xenstore/local/domain/1` is
/// `/local/domain/1`); a watch may also name `@introduceDomain` or
/// `@releaseDomain`. The store validates every path and value itself
/// (XenStoreCore: length, characters, quota) and its errno becomes the
/// answer: ENOENT 404 `not_found`, a malformed request 400
/// `xenstore_invalid`, a refusal 409 `xenstore_refused`.
public struct XenStoreAccess: Sendable {
    public let store: any XenStoreService
    private let watches: WatchCount

    /// At most this many watch streams at once (a further one is 409).
    public static let maximumWatches = 64
    /// Events held for one watch stream whose client has not read them;
    /// one more and the stream ends (the client is dropped, its watch removed).
    public static let watchBuffer = 256
    /// The largest PUT body read (a value is at most 4096 bytes, xs_wire.h's
    /// XENSTORE_PAYLOAD_MAX, path included; the store refuses the rest).
    public static let maximumBody = 64 << 10

    public init(_ store: any XenStoreService) {
        self.store = store
        watches = WatchCount()
    }

    /// Watch streams open now.
    public var activeWatches: Int { watches.count.withLock { $0 } }

    /// A node: its value (absent when it is not UTF-8) and its children.
    public func node(_ path: String) throws(APIError) -> XenStoreNode {
        do {
            let children = try self.children(path)
            let bytes = try store.readBytes(path)
            return XenStoreNode(path: path, value: String(validating: bytes, as: UTF8.self), children: children)
        } catch {
            throw Self.apiError(error, path)
        }
    }

    /// `path`'s children: DIRECTORY, or when their names pass one reply's
    /// 4096 bytes (E2BIG) DIRECTORY_PART from offset 0 on (xenstore.txt:
    /// each reply is the node's generation, then whole names; an extra NUL
    /// ends the last), started again if the generation changes between
    /// parts, at most 8 times.
    func children(_ path: String) throws(XenStoreError) -> [String] {
        do {
            return try store.directory(path)
        } catch .e2big {
            for _ in 0..<8 {
                var names: [UInt8] = []
                var generation: ArraySlice<UInt8>?
                var complete = false
                while !complete {
                    let reply = try store.call(.directoryPart, XenStoreWire.nulTerminated([path, String(names.count)]))
                    guard let nul = reply.firstIndex(of: 0) else { throw .eio }
                    let part = reply[(nul + 1)...]
                    if generation == nil { generation = reply[..<nul] }
                    guard generation == reply[..<nul] else { break }
                    complete = part.isEmpty || part.last == 0 && (part.count == 1 || part.dropLast().last == 0)
                    names += complete ? part.dropLast() : part
                    if !complete && part.isEmpty { throw .eio }
                }
                if complete { return names.split(separator: 0).map { String(decoding: $0, as: UTF8.self) } }
            }
            throw .eagain
        }
    }

    /// Writes `value` at `path` (XS_WRITE, missing parents made); the node after.
    public func write(_ path: String, _ value: String) throws(APIError) -> XenStoreNode {
        do {
            try store.write(path, value)
        } catch {
            throw Self.apiError(error, path)
        }
        return try node(path)
    }

    /// Removes `path` and everything below it (XS_RM).
    public func remove(_ path: String) throws(APIError) {
        do {
            try store.remove(path)
        } catch {
            throw Self.apiError(error, path)
        }
    }

    /// Watches `path` (XS_WATCH as dom0): its events, the initial one
    /// first (xenstore.txt), until the consumer stops (the watch is then
    /// removed) or falls `watchBuffer` events behind (the stream ends).
    public func watch(_ path: String, token: String) throws(APIError) -> AsyncStream<XenStoreWatchEvent> {
        let admitted = watches.count.withLock { n in
            guard n < Self.maximumWatches else { return false }
            n += 1
            return true
        }
        guard admitted else {
            throw APIError(.xenStoreRefused, "\(path): \(Self.maximumWatches) watch streams are open already")
        }
        let (stream, continuation) = AsyncStream<XenStoreWatchEvent>.makeStream(bufferingPolicy: .bufferingOldest(Self.watchBuffer))
        let registration = WatchRegistration()
        let store = self.store
        let watches = self.watches
        continuation.onTermination = { _ in
            if let id = registration.end() { store.unwatch(id) }
            watches.count.withLock { $0 -= 1 }
        }
        let id: XenStoreWatchID
        do {
            id = try store.watch(path, token: token) { path, token in
                // A full buffer: this client does not read; drop it rather than grow.
                if case .dropped = continuation.yield(XenStoreWatchEvent(path: path, token: token)) { continuation.finish() }
            }
        } catch {
            continuation.finish()
            throw Self.apiError(error, path)
        }
        if !registration.start(id) { store.unwatch(id) }
        return stream
    }

    /// A store errno as the API's error (the errno named in the message).
    static func apiError(_ error: XenStoreError, _ path: String) -> APIError {
        switch error {
        case .enoent: APIError(.notFound, "\(path): no such node (ENOENT)")
        case .einval, .e2big, .eisdir, .enosys: APIError(.xenStoreInvalid, "\(path): \(error.wireName)")
        default: APIError(.xenStoreRefused, "\(path): \(error.wireName)")
        }
    }

    private final class WatchCount: Sendable {
        let count = Lock(0)
    }

    /// The watch's id once made, and whether the stream ended: whichever of
    /// the two comes second removes the watch.
    private final class WatchRegistration: Sendable {
        private let state = Lock<(id: XenStoreWatchID?, ended: Bool)>((nil, false))

        /// Records `id`; false when the stream already ended (remove it now).
        func start(_ id: XenStoreWatchID) -> Bool {
            state.withLock { s in
                guard !s.ended else { return false }
                s.id = id
                return true
            }
        }

        /// Marks the stream ended; the watch to remove, if it was made.
        func end() -> XenStoreWatchID? {
            state.withLock { s in
                s.ended = true
                defer { s.id = nil }
                return s.id
            }
        }
    }
}

/// One line of a watch stream: the path that changed and the watch's token.
public struct XenStoreWatchEvent: Codable, Hashable, Sendable {
    public var path: String
    public var token: String

    public init(path: String, token: String) {
        self.path = path
        self.token = token
    }
}

/// The XenStore routes (docs/api/openapi.json: /v1/xenstore...).
public enum XenStoreRoutes {
    /// How often an idle watch stream writes a keepalive (an empty line):
    /// the server learns that a client went only when a write to it fails.
    public static let keepalive = Duration.seconds(10)

    public static func register(on router: Router<BasicRequestContext>, store: XenStoreAccess,
                                keepalive: Duration = XenStoreRoutes.keepalive) {
        router.get("/v1/xenstore") { _, _ in try await APIRouter.answer { try store.node("/") } }
        router.get("/v1/xenstore/**") { _, context in
            try await APIRouter.answer { try store.node(path(context)) }
        }
        router.put("/v1/xenstore/**") { request, context in
            try await APIRouter.answer {
                let path = path(context)
                let body: ByteBuffer
                do {
                    body = try await request.body.collect(upTo: XenStoreAccess.maximumBody)
                } catch {
                    throw APIError(.badRequest, "the body is larger than \(XenStoreAccess.maximumBody >> 10) KiB")
                }
                // Exactly {"value": string}: the document's additionalProperties: false.
                let object = try? JSONDecoder().decode([String: JSON].self, from: Data(buffer: body))
                guard let object, object.count == 1, case .string(let value)? = object["value"] else {
                    throw APIError(.badRequest, "the body is not {\"value\": \"...\"} (a string, no other member)")
                }
                return try store.write(path, value)
            }
        }
        router.delete("/v1/xenstore/**") { _, context in
            try await APIRouter.answer {
                let path = path(context)
                try store.remove(path)
                return XenStoreRemoved(path: path, removed: true)
            }
        }
        router.get("/v1/xenstore-watch/**") { request, context in
            let token = request.uri.queryParameters.get("token").map { String($0) } ?? "pvh-api"
            let events: AsyncStream<XenStoreWatchEvent>
            do throws(APIError) {
                events = try store.watch(path(context), token: token)
            } catch {
                return try APIRouter.errorResponse(error)
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/x-ndjson"
            return Response(status: .ok, headers: headers, body: ResponseBody(asyncSequence: lines(events, keepalive: keepalive)))
        }
    }

    /// A watch's answer: one JSON line per event, and an empty line after
    /// each `keepalive` (so a client that went is found by the failed
    /// write and its watch removed even while its path is quiet). At most
    /// `XenStoreAccess.watchBuffer` lines wait for a client; one more and
    /// the answer ends. When the answer's writer stops, both tasks stop and
    /// the watch goes with `events`.
    static func lines(_ events: AsyncStream<XenStoreWatchEvent>, keepalive: Duration) -> AsyncStream<ByteBuffer> {
        let (lines, out) = AsyncStream<ByteBuffer>.makeStream(bufferingPolicy: .bufferingOldest(XenStoreAccess.watchBuffer))
        let send: @Sendable (ByteBuffer) -> Bool = { line in
            switch out.yield(line) {
            case .enqueued: return true
            case .dropped:
                out.finish()
                return false
            case .terminated: return false
            @unknown default: return false
            }
        }
        let pump = Task {
            for await event in events {
                var data = (try? JSONEncoder.api.encode(event)) ?? Data()
                data.append(0x0a)
                guard send(ByteBuffer(data: data)) else { break }
            }
            out.finish()
        }
        let beat = Task {
            while (try? await Task.sleep(for: keepalive)) != nil {
                guard send(ByteBuffer(bytes: [0x0a])) else { break }
            }
        }
        out.onTermination = { _ in
            pump.cancel()
            beat.cancel()
        }
        return lines
    }

    /// The catch-all as an absolute path; `@introduceDomain` and
    /// `@releaseDomain` (watches only; the store refuses them elsewhere) as they are.
    static func path(_ context: BasicRequestContext) -> String {
        let joined = context.parameters.getCatchAll().joined(separator: "/")
        return joined.hasPrefix("@") ? joined : "/" + joined
    }

    /// `DELETE /v1/xenstore/{path}`'s answer.
    struct XenStoreRemoved: Codable {
        let path: String
        let removed: Bool
    }
}

extension APIRouter {
    /// An endless answer: one JSON line per element (application/x-ndjson),
    /// ended when the sequence ends.
    static func ndjson<Events: AsyncSequence & Sendable>(_ events: Events) -> Response
    where Events.Element: Encodable & Sendable {
        let lines = events.map { @Sendable event -> ByteBuffer in
            var data = (try? JSONEncoder.api.encode(event)) ?? Data()
            data.append(0x0a)
            return ByteBuffer(data: data)
        }
        var headers = HTTPFields()
        headers[.contentType] = "application/x-ndjson"
        return Response(status: .ok, headers: headers, body: ResponseBody(asyncSequence: lines))
    }
}
