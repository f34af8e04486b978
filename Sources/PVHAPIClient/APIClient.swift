import NIOCore
import NIOHTTP1
import NIOPosix

/// Why a request to the daemon's API got no answer.
public enum APIClientError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The socket could not be connected (no daemon, no permission).
    case connect(String)
    /// The connection failed or closed before the answer was whole.
    case transport(String)
    /// No whole answer within the time bound.
    case timedOut(Double)

    public var description: String {
        switch self {
        case .connect(let why): "cannot connect: \(why)"
        case .transport(let why): why
        case .timedOut(let seconds): "no answer within \(seconds) s"
        }
    }
}

/// An answer: the status and the whole body.
public struct APIResponse: Sendable {
    public let status: Int
    public let body: [UInt8]
    public var text: String { String(decoding: body, as: UTF8.self) }
}

/// A client of the daemon's API: HTTP/1.1 over its Unix socket through
/// SwiftNIO's HTTP/1 client codec, one connection per request (the
/// daemon's socket is local; a CLI verb makes one or two requests).
/// Synchronous, for the CLI: every call is bounded by its timeout.
public struct APIClient: Sendable {
    public let socketPath: String

    public init(socketPath: String) { self.socketPath = socketPath }

    /// `method path` with an optional body (JSON unless `contentType`
    /// says otherwise: console input is `application/octet-stream`); the
    /// whole answer.
    public func request(_ method: String, _ path: String, json body: [UInt8]? = nil, contentType: String = "application/json",
                        timeout: Double = 30) throws(APIClientError) -> APIResponse {
        var collected: [UInt8] = []
        let status = try exchange(method, path, body: body, contentType: contentType, timeout: timeout) { chunk in
            collected += chunk
            return true
        }
        return APIResponse(status: status, body: collected)
    }

    /// Reads a streamed answer (`GET /v1/events`) chunk by chunk until
    /// `chunk` returns false, the server ends it, or `timeout` passes
    /// (then `.timedOut`). Returns the status. `head` is called with the
    /// status once the answer's head arrived (the stream is open then:
    /// `pvh events` says it is listening).
    public func stream(_ path: String, timeout: Double, head: (@Sendable (Int) -> Void)? = nil,
                       chunk: @escaping ([UInt8]) -> Bool) throws(APIClientError) -> Int {
        try exchange("GET", path, body: nil, timeout: timeout, onHead: head, onBody: chunk)
    }

    private func exchange(_ method: String, _ path: String, body: [UInt8]?, contentType: String = "application/json", timeout: Double,
                          onHead: (@Sendable (Int) -> Void)? = nil,
                          onBody: @escaping ([UInt8]) -> Bool) throws(APIClientError) -> Int {
        let group = MultiThreadedEventLoopGroup.singleton
        let loop = group.next()
        let promise = loop.makePromise(of: Int.self)
        let box = BodySink(onBody, head: onHead)
        let bootstrap = ClientBootstrap(group: loop).channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(ResponseHandler(promise: promise, sink: box))
            }
        }
        let channel: Channel
        do {
            channel = try bootstrap.connect(unixDomainSocketPath: socketPath).wait()
        } catch {
            promise.fail(error)
            throw .connect("\(socketPath): \(error)")
        }
        let deadline = loop.scheduleTask(in: .milliseconds(Int64(timeout * 1000))) {
            promise.fail(APIClientError.timedOut(timeout))
            channel.close(promise: nil)
        }
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path)
        head.headers.add(name: "Host", value: "localhost")
        head.headers.add(name: "Connection", value: "close")
        if let body {
            head.headers.add(name: "Content-Type", value: contentType)
            head.headers.add(name: "Content-Length", value: String(body.count))
        }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        defer {
            deadline.cancel()
            channel.close(promise: nil)
        }
        do {
            return try promise.futureResult.wait()
        } catch let error as APIClientError {
            throw error
        } catch {
            throw .transport("\(socketPath): \(error)")
        }
    }
}

/// The caller's body callback, called on the channel's event loop only
/// (the caller waits meanwhile).
private final class BodySink: @unchecked Sendable {
    // SAFETY (Sendable): called only from the one channel's event loop.
    let body: ([UInt8]) -> Bool
    let head: (@Sendable (Int) -> Void)?
    init(_ body: @escaping ([UInt8]) -> Bool, head: (@Sendable (Int) -> Void)? = nil) {
        self.body = body
        self.head = head
    }
}

private final class ResponseHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<Int>
    let sink: BodySink
    var status: Int?

    init(promise: EventLoopPromise<Int>, sink: BodySink) {
        self.promise = promise
        self.sink = sink
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = Int(head.status.code)
            sink.head?(Int(head.status.code))
        case .body(let buffer):
            if !sink.body(Array(buffer.readableBytesView)) {
                promise.succeed(status ?? 0)
                context.close(promise: nil)
            }
        case .end:
            promise.succeed(status ?? 0)
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(APIClientError.transport("the daemon closed the connection before its answer was whole"))
    }
}
