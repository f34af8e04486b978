import Foundation
import Hummingbird
import PVHAPIModels
import Locking

/// The newest lines a daemon logged, bounded in count and line length,
/// for `GET /v1/dmesg` (as `xl dmesg` reads the hypervisor's ring buffer
/// rather than a file: the daemon's stderr may be a terminal or a pipe).
public final class LogLines: Sendable {
    /// Lines kept; older ones go first.
    public static let capacity = 4096
    /// A longer line is cut to this many bytes.
    public static let maximumLineLength = 4096

    private struct State {
        var lines: [String] = []
        var start = 0
        var dropped = 0
    }
    private let state = Lock(State())

    public init() {}

    public func append(_ line: String) {
        let kept = line.utf8.count > Self.maximumLineLength ? String(decoding: line.utf8.prefix(Self.maximumLineLength), as: UTF8.self) : line
        state.withLock { s in
            if s.lines.count < Self.capacity {
                s.lines.append(kept)
            } else {
                s.lines[s.start] = kept
                s.start = (s.start + 1) % Self.capacity
                s.dropped += 1
            }
        }
    }

    /// The newest `count` lines, oldest first.
    public func last(_ count: Int) -> [String] {
        state.withLock { s in
            let ordered = s.lines[s.start...] + s.lines[..<s.start]
            return Array(ordered.suffix(count))
        }
    }
}

/// The logs over HTTP, as a protocol the daemon adopts on top of
/// `DomainService` (without it both routes answer 501).
public protocol LogService: DomainService {
    /// The daemon's newest `lines` log lines, oldest first.
    func daemonLog(lines: Int) async -> [String]
    /// The newest `lines` lines of the domain's guest process log (its
    /// xl-NAME.log); 404 unknown domain, 409 no log file yet.
    func domainLog(named name: String, lines: Int) async throws(APIError) -> [String]
}

extension APIRoutes {
    /// The most lines one log request returns, and the default.
    public static let maximumLogLines = 10_000
    public static let defaultLogLines = 1000
    /// The most bytes read from the end of a guest's log file for one request.
    public static let maximumLogTail = 1 << 20
}

/// The last lines of a file, reading no more than `APIRoutes.maximumLogTail`
/// bytes from its end (a first line cut by that bound is left out).
public enum LogTail {
    public static func lines(ofFile path: String, count: Int) -> [String]? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let size = try? handle.seekToEnd() else { return nil }
        let start = size > UInt64(APIRoutes.maximumLogTail) ? size - UInt64(APIRoutes.maximumLogTail) : 0
        guard (try? handle.seek(toOffset: start)) != nil, let data = try? handle.readToEnd() else { return start == size ? [] : nil }
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        if start > 0, !lines.isEmpty { lines.removeFirst() }
        return Array(lines.suffix(count))
    }
}

extension APIRouter {
    /// `GET /v1/dmesg` and `GET /v1/domains/{name}/log`, `?lines=N`.
    static func registerLogs(on router: Router<BasicRequestContext>, service: any DomainService) {
        let logs = service as? any LogService
        router.get("/v1/dmesg") { request, _ in
            do throws(APIError) {
                let count = try lineCount(request)
                guard let logs else { throw APIError(.notImplemented, "GET /v1/dmesg is not implemented here") }
                return text(await logs.daemonLog(lines: count))
            } catch {
                return try errorResponse(error)
            }
        }
        router.get("/v1/domains/{name}/log") { request, context in
            do throws(APIError) {
                let count = try lineCount(request)
                guard let logs else { throw APIError(.notImplemented, "GET /v1/domains/{name}/log is not implemented here") }
                return text(try await logs.domainLog(named: try name(context), lines: count))
            } catch {
                return try errorResponse(error)
            }
        }
    }

    static func lineCount(_ request: Request) throws(APIError) -> Int {
        guard let text = request.uri.queryParameters.get("lines") else { return APIRoutes.defaultLogLines }
        guard let n = Int(String(text)), n >= 1, n <= APIRoutes.maximumLogLines else {
            throw APIError(.badRequest, "lines=\(text): a count from 1 to \(APIRoutes.maximumLogLines)")
        }
        return n
    }

    /// Lines as `text/plain`, each ended by a newline.
    static func text(_ lines: [String]) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        let body = lines.map { $0 + "\n" }.joined()
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }
}
