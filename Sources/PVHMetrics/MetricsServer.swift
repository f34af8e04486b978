import Dispatch
import Foundation
import Hummingbird
import Logging
import PVHLogging
import ServiceLifecycle
import Locking
import VMM

/// Where `/metrics` is served (`pvh run --metrics ADDRESS`): `HOST:PORT`
/// over TCP, or a path (anything with a `/`) for a Unix socket.
public enum MetricsAddress: Sendable, Equatable, CustomStringConvertible {
    case tcp(host: String, port: Int)
    case unix(path: String)

    /// Parses `text`, or says what is wrong with it in one phrase.
    public init(parsing text: String) throws(MetricsServerError) {
        if text.contains("/") {
            // sockaddr_un's sun_path holds 108 bytes with the terminating NUL (unix(7)).
            guard text.utf8.count <= 107 else { throw .badAddress("a socket path is at most 107 bytes") }
            self = .unix(path: text)
            return
        }
        guard let colon = text.lastIndex(of: ":") else {
            throw .badAddress("expected HOST:PORT, or a Unix socket path (one with a '/')")
        }
        var host = String(text[..<colon])
        // An IPv6 literal in brackets ([::1]:9100), as in a URL.
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw .badAddress("no host before the ':' (0.0.0.0 for every interface)") }
        guard let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            throw .badAddress("the port must be a number from 1 to 65535")
        }
        self = .tcp(host: host, port: port)
    }

    public var description: String {
        switch self {
        case .tcp(let host, let port): host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        case .unix(let path): path
        }
    }

    var bindAddress: BindAddress {
        switch self {
        case .tcp(let host, let port): .hostname(host, port: port)
        case .unix(let path): .unixDomainSocket(path: path)
        }
    }
}

/// Why the metrics server could not start.
public enum MetricsServerError: Error, Equatable, CustomStringConvertible {
    /// The address does not parse.
    case badAddress(String)
    /// The address parses but could not be bound (in use, no such
    /// directory, no permission, unknown host).
    case bind(String)
    /// The server neither ran nor failed in time.
    case timedOut

    public var description: String {
        switch self {
        case .badAddress(let reason): reason
        case .bind(let reason): reason
        case .timedOut: "the server did not start in time"
        }
    }
}

/// `GET /metrics` over HTTP/1.1 with Hummingbird, from a registry.
///
/// It runs on Hummingbird's event loops (SwiftNIO's threads) and Swift's
/// concurrency pool, never on a vCPU thread: a scrape reads the domains'
/// atomics from there. `start` returns once the socket is bound (a Unix
/// socket then has mode 0600: the owner only), `stop` ends it and waits,
/// bounded.
public final class MetricsServer: Sendable {
    public let address: MetricsAddress
    private let task: Task<Void, any Error>
    private let group: ServiceGroup

    private init(address: MetricsAddress, task: Task<Void, any Error>, group: ServiceGroup) {
        self.address = address
        self.task = task
        self.group = group
    }

    /// Binds `address` and serves `registry` until `stop()`. For a
    /// synchronous caller off Swift's concurrency pool (`pvh run`'s main
    /// thread): it blocks until the socket is bound or the bind failed.
    /// `logger` takes the server's records (nil: warnings and worse on
    /// stderr as `pvh: metrics: ...`).
    public static func start(_ address: MetricsAddress, registry: PVHMetricsRegistry,
                             timeout: Duration = .seconds(10), logger: Logger? = nil,
                             routes: @escaping @Sendable (Router<BasicRequestContext>) -> Void = { _ in },
                             exposition: (@Sendable () async -> [UInt8])? = nil) throws(MetricsServerError) -> MetricsServer {
        let outcome = Lock<Result<MetricsServer, MetricsServerError>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            let result: Result<MetricsServer, MetricsServerError>
            do throws(MetricsServerError) {
                result = .success(try await startServing(address, registry: registry, timeout: timeout, logger: logger, routes: routes,
                                                               exposition: exposition))
            } catch {
                result = .failure(error)
            }
            outcome.withLock { $0 = result }
            done.signal()
        }
        // startServing is bounded by `timeout` itself; this only backs it up.
        guard done.wait(timeout: .now() + seconds(timeout) + 5) == .success,
              let result = outcome.withLock({ $0 })
        else { throw .timedOut }
        return try result.get()
    }

    /// `start`, for async callers (it waits without blocking a thread).
    /// `routes` adds more routes beside /metrics (the daemon's API);
    /// `exposition`, when given, makes /metrics' body instead of `registry`.
    public static func startServing(_ address: MetricsAddress, registry: PVHMetricsRegistry,
                                    timeout: Duration = .seconds(10), logger: Logger? = nil,
                                    routes: @Sendable (Router<BasicRequestContext>) -> Void = { _ in },
                                    exposition: (@Sendable () async -> [UInt8])? = nil) async throws(MetricsServerError) -> MetricsServer {
        let router = Router()
        routes(router)
        router.get("/metrics") { _, _ in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            // The daemon's is its own registry's and its guests' (Exposition).
            let bytes: [UInt8] = if let exposition { await exposition() } else { registry.exposition() }
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        }
        // Told once: the bound socket, the error that ended run(), or the time bound.
        let outcome = Lock<(told: Result<Void, MetricsServerError>?, waiter: CheckedContinuation<Void, Never>?)>((nil, nil))
        let tell: @Sendable (Result<Void, MetricsServerError>) -> Void = { result in
            let waiter = outcome.withLock { o -> CheckedContinuation<Void, Never>? in
                guard o.told == nil else { return nil }
                o.told = result
                defer { o.waiter = nil }
                return o.waiter
            }
            waiter?.resume()
        }
        let logger = logger ?? Logger(label: "pvh.metrics", factory: { _ in StandardErrorLogHandler(prefix: "metrics") })
        let app = Application(
            router: router,
            configuration: ApplicationConfiguration(address: address.bindAddress, serverName: nil),
            onServerRunning: { _ in
                if case .unix(let path) = address {
                    // Owner-only, as the XenStore socket: counters tell
                    // what a guest does. Set before `start` returns; NIO
                    // binds with the process umask, so a client could
                    // connect in the instant between bind and this.
                    do {
                        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
                    } catch {
                        tell(.failure(.bind("cannot make the socket owner-only (mode 0600)")))
                        return
                    }
                }
                tell(.success(()))
            },
            logger: logger)
        // In a group of its own, so that `stop` can end it gracefully
        // (the listening socket closed, requests answered) rather than by
        // cancelling it mid-accept.
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task.detached {
            do {
                try await group.run()
                tell(.failure(.bind("the server stopped")))
            } catch {
                tell(.failure(.bind(Self.reason(error))))
                throw error
            }
        }
        let bound = Task.detached {
            try await Task.sleep(for: timeout)
            tell(.failure(.timedOut))
        }
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let already = outcome.withLock { o -> Bool in
                if o.told != nil { return true }
                o.waiter = waiter
                return false
            }
            if already { waiter.resume() }
        }
        bound.cancel()
        switch outcome.withLock({ $0.told }) ?? .failure(.timedOut) {
        case .success:
            return MetricsServer(address: address, task: task, group: group)
        case .failure(let error):
            task.cancel()
            throw error
        }
    }

    /// Stops serving and waits (at most `timeout`) until the server has
    /// closed its socket; a Unix socket's file is removed. For synchronous
    /// callers off the concurrency pool, as `start`.
    public func stop(timeout: Duration = .seconds(5)) {
        let done = DispatchSemaphore(value: 0)
        Task.detached { [self] in
            await stopServing(timeout: timeout)
            done.signal()
        }
        _ = done.wait(timeout: .now() + Self.seconds(timeout) + 1)
    }

    /// `stop`, for async callers.
    public func stopServing(timeout: Duration = .seconds(5)) async {
        await group.triggerGracefulShutdown()
        let task = self.task
        // The server's task ends once its channels closed; bounded by
        // `timeout`, then cancelled.
        await withTaskGroup(of: Void.self) { group in
            group.addTask { _ = await task.result }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            // Cancelled before the group waits for its children: awaiting
            // the task's result is not ended by cancelling the waiter, and
            // a response that never ends (the daemon's event stream)
            // would otherwise hold the server's task, and this, forever.
            task.cancel()
            group.cancelAll()
        }
        if case .unix(let path) = address { try? FileManager.default.removeItem(atPath: path) }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    /// A bind error in words: NIO's IOError carries the errno's text.
    static func reason(_ error: any Error) -> String {
        let text = "\(error)"
        return text.isEmpty ? "cannot bind" : text
    }
}
