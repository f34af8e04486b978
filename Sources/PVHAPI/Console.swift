import Foundation
import Hummingbird
import PVHAPIModels
import Locking

/// A domain's console output as one HTTP stream reads it: what the
/// daemon's buffer had dropped before the stream began (oldest bytes, as
/// `pvh console`'s greeting says), then the chunks.
public struct ConsoleOutput: Sendable {
    public let dropped: UInt64
    public let chunks: AsyncStream<[UInt8]>
    public init(dropped: UInt64, chunks: AsyncStream<[UInt8]>) {
        self.dropped = dropped
        self.chunks = chunks
    }
}

/// The console over HTTP, as a protocol the daemon adopts on top of
/// `DomainService` (the router looks for it at run time; without it both
/// routes answer 501). The daemon serves it from the same relay as `pvh
/// console` (ConsoleRelay/DomainConsole.swift): one buffer, one input path.
public protocol ConsoleService: DomainService {
    /// The buffered backlog, then (with `follow`) live output until the
    /// domain goes away. 404 unknown domain, 409 no console, 429 past
    /// `ConsoleStreams.maximum` streams.
    func consoleOutput(of name: String, follow: Bool) async throws(APIError) -> ConsoleOutput
    /// Writes `bytes` to the guest process's console input as `pvh
    /// console` does, waiting at most `timeout` seconds for it to take
    /// them: all taken is the answer; fewer is 503 `unavailable` with
    /// `accepted`; 409 when it has no guest process (between a crash and
    /// its restart, or shut down).
    func consoleInput(_ bytes: [UInt8], to name: String, timeout: Double) async throws(APIError) -> ConsoleInputAnswer
}

/// One domain's HTTP console readers: each gets the backlog it was opened
/// with, then every chunk published after, in order. Bounded twice: at
/// most `maximum` readers (more is 429), and a reader that falls
/// `backlogChunks` chunks behind is ended (the guest is never held back
/// for an HTTP reader, and its stream has no silent gap: it ends, and the
/// client reconnects to the buffer). A reader whose client went is
/// removed when its writer stops, which is at the next output (a write
/// is how the server learns a client went).
public final class ConsoleStreams: Sendable {
    /// Concurrent follow streams per domain.
    public static let maximum = 4
    /// Chunks (up to 4 KiB each as the relay reads them) a reader may lag.
    public static let backlogChunks = 256

    private struct State {
        var readers: [Int: AsyncStream<[UInt8]>.Continuation] = [:]
        var next = 0
        var finished = false
    }
    private let state = Lock(State())

    public init() {}

    /// Readers now (tests, diagnostics).
    public var count: Int { state.withLock { $0.readers.count } }

    /// A reader starting with `backlog`. Without `follow` it ends after the
    /// backlog and takes no slot. Call it under the same lock as `publish`
    /// so no chunk falls between the backlog and the live output.
    public func open(backlog: [UInt8], follow: Bool) throws(APIError) -> AsyncStream<[UInt8]> {
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream(bufferingPolicy: .bufferingOldest(Self.backlogChunks + 1))
        if !backlog.isEmpty { continuation.yield(backlog) }
        guard follow else {
            continuation.finish()
            return stream
        }
        let id = try state.withLock { s throws(APIError) -> Int in
            guard !s.finished else { throw APIError(.conflict, "the domain's console has closed") }
            guard s.readers.count < Self.maximum else {
                throw APIError(.tooManyStreams, "the console already has \(Self.maximum) streams open")
            }
            let id = s.next
            s.next += 1
            s.readers[id] = continuation
            return id
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { _ = $0.readers.removeValue(forKey: id) }
        }
        return stream
    }

    /// `bytes` to every reader; a reader with no room left is ended.
    public func publish(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        for (id, reader) in state.withLock({ $0.readers }) {
            switch reader.yield(bytes) {
            case .enqueued: continue
            case .dropped, .terminated:
                reader.finish()
                state.withLock { _ = $0.readers.removeValue(forKey: id) }
            @unknown default:
                reader.finish()
            }
        }
    }

    /// The domain is gone: every stream ends, no new one opens.
    public func finish() {
        let readers = state.withLock { s -> [AsyncStream<[UInt8]>.Continuation] in
            s.finished = true
            defer { s.readers = [:] }
            return Array(s.readers.values)
        }
        for reader in readers { reader.finish() }
    }
}

extension APIRoutes {
    /// The largest console input one request carries (a paste, not a file transfer).
    public static let maximumConsoleInput = 64 << 10
    /// How long console input waits for the guest by default, seconds.
    public static let defaultConsoleInputWait = 10.0
    /// The header that carries `ConsoleOutput.dropped`.
    public static let consoleDroppedHeader = "X-PVH-Console-Dropped"
}

extension APIRouter {
    /// `GET` and `POST /v1/domains/{name}/console`.
    static func registerConsole(on router: Router<BasicRequestContext>, service: any DomainService) {
        let console = service as? any ConsoleService
        router.get("/v1/domains/{name}/console") { request, context in
            let output: ConsoleOutput
            do throws(APIError) {
                guard let console else { throw APIError(.notImplemented, "GET /v1/domains/{name}/console is not implemented here") }
                let follow = try flag(request, "follow", default: true)
                output = try await console.consoleOutput(of: try name(context), follow: follow)
            } catch {
                return try errorResponse(error)
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/octet-stream"
            if let dropped = HTTPFields.Element.Name(APIRoutes.consoleDroppedHeader) { headers[dropped] = String(output.dropped) }
            let body = output.chunks.map { ByteBuffer(bytes: $0) }
            return Response(status: .ok, headers: headers, body: ResponseBody(asyncSequence: body))
        }
        router.post("/v1/domains/{name}/console") { request, context in
            try await answer {
                let domain = try name(context)
                // The query first: a bad one is 400 whatever the body (api-check).
                let timeout = try timeoutParameter(request, default: APIRoutes.defaultConsoleInputWait)
                let body: ByteBuffer
                do {
                    body = try await request.body.collect(upTo: APIRoutes.maximumConsoleInput)
                } catch {
                    throw APIError(.tooLarge, "console input is at most \(APIRoutes.maximumConsoleInput >> 10) KiB a request")
                }
                guard let console else { throw APIError(.notImplemented, "POST /v1/domains/{name}/console is not implemented here") }
                return try await console.consoleInput(Array(buffer: body), to: domain, timeout: timeout)
            }
        }
    }

    /// A `true`/`false` (or 1/0) query parameter.
    static func flag(_ request: Request, _ key: String, default value: Bool) throws(APIError) -> Bool {
        switch request.uri.queryParameters.get(key).map({ String($0) }) {
        case nil: value
        case "true", "1": true
        case "false", "0": false
        case let other?: throw APIError(.badRequest, "\(key)=\(other): true or false")
        }
    }
}
