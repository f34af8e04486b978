import ArgumentParser
import Foundation
import HostIO
import PVHAPI
import PVHAPIClient
import VMM

#if canImport(Glibc)
import Glibc
#endif

/// The CLI's side of the API: one request, its JSON answer decoded, an
/// error answer turned into xl's one line and exit status 1.
struct DaemonClient {
    let client: APIClient

    init(socket: String = DaemonDefaults.apiSocket) { client = APIClient(socketPath: socket) }

    /// True if the daemon's socket accepts a connection.
    var isRunning: Bool {
        guard let probe = try? UnixSocket.connect(to: client.socketPath) else { return false }
        probe.close()
        return true
    }

    /// Starts the daemon when its socket is absent (detached, its own
    /// process group), waiting at most 30 s for its socket.
    func ensureRunning() throws {
        guard !isRunning else { return }
        _ = try DaemonConnection.startDetached(api: client.socketPath, storeSocket: nil)
    }

    /// The answer's body decoded as `T`, or exit 1 with the error's message.
    func call<T: Decodable>(_ method: String, _ path: String, body: [UInt8]? = nil, timeout: Double = 30, as: T.Type) throws -> T {
        let response = try send(method, path, body: body, timeout: timeout)
        do {
            return try JSONDecoder().decode(T.self, from: Data(response.body))
        } catch {
            throw fail("\(method) \(path): an answer that is not what the API documents: \(error)")
        }
    }

    /// The whole answer of a 2xx; exit 1 with the error JSON's message otherwise.
    func send(_ method: String, _ path: String, body: [UInt8]? = nil, timeout: Double = 30) throws -> APIResponse {
        let response: APIResponse
        do {
            response = try client.request(method, path, json: body, timeout: timeout)
        } catch {
            throw fail("the pvh daemon (\(client.socketPath)): \(error)")
        }
        guard (200..<300).contains(response.status) else {
            if let error = try? JSONDecoder().decode(APIError.self, from: Data(response.body)) {
                throw APIFailure(error: error)
            }
            throw fail("\(method) \(path): HTTP \(response.status)")
        }
        return response
    }

    func fail(_ message: String) -> ExitCode {
        FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(message)\n".utf8))
        return ExitCode(1)
    }
}

/// An error answer: what the CLI prints (xl's one line, with pvh's
/// `pvh: ` prefix as every other pvh message), and exit 1.
struct APIFailure: Error {
    let error: APIError

    var exit: ExitCode {
        FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(error.message)\n".utf8))
        return ExitCode(1)
    }
}

/// Runs a CLI verb's body; an API error answer becomes its line and status 1.
func reportingAPIErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let failure as APIFailure {
        throw failure.exit
    }
}

/// A path segment for a name (names are [A-Za-z0-9._-], but a user may type anything).
func pathSegment(_ name: String) -> String {
    name.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "._-"))) ?? name
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Describe the host as the pvh daemon sees it: KVM backend, memory, pvh version, XenStore socket (xl info).")

    func run() throws {
        try reportingAPIErrors {
            let client = DaemonClient()
            guard client.isRunning else { throw client.fail("no pvh daemon answers on \(client.client.socketPath) (pvh daemon starts one)") }
            let host = try client.call("GET", "/v1/host", as: HostInfo.self)
            let lines = [
                ("host", ProcessInfo.processInfo.hostName), ("pvh_version", host.version), ("kvm_backend", host.backend),
                ("nr_cpus", String(host.cpus)), ("total_memory", String(host.totalMemoryMiB)),
                ("free_memory", String(host.freeMemoryMiB)), ("nr_domains", String(host.domains)),
                ("xenstore_socket", host.xenstoreSocket), ("api_socket", host.apiSocket),
            ]
            for (key, value) in lines { print(key.padding(toLength: 23, withPad: " ", startingAt: 0) + ": " + value) }
            for line in host.backendReport.split(separator: "\n") { print("  " + line) }
        }
    }
}

struct Destroy: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Destroy a guest at once, whatever it is doing (xl destroy).")

    @Argument(help: "The guest's name.") var name: String

    func run() throws {
        try reportingAPIErrors {
            let client = DaemonClient()
            guard client.isRunning else { throw client.fail("\(name) is an invalid domain identifier (no pvh daemon)") }
            _ = try client.send("DELETE", "/v1/domains/\(pathSegment(name))", timeout: 60)
        }
    }
}

struct Pause: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause a guest: its process group stopped (xl pause).")
    @Argument(help: "The guest's name.") var name: String
    func run() throws { try domainAction("pause", name) }
}

struct Unpause: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Let a paused guest run again (xl unpause).")
    @Argument(help: "The guest's name.") var name: String
    func run() throws { try domainAction("unpause", name) }
}

func domainAction(_ action: String, _ name: String) throws {
    try reportingAPIErrors {
        let client = DaemonClient()
        guard client.isRunning else { throw client.fail("\(name) is an invalid domain identifier (no pvh daemon)") }
        _ = try client.send("POST", "/v1/domains/\(pathSegment(name))/\(action)")
    }
}
