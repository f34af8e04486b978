import ConsoleRelay
import PVHAPI
import Toolstack

/// The console over HTTP (PVHAPI/Console.swift) from each domain's one
/// relay (ConsoleRelay/DomainConsole.swift): the same buffer `pvh console` replays and
/// the same guest input its typed bytes go to.
extension Supervisor: ConsoleService {
    func consoleOutput(of name: String, follow: Bool) async throws(APIError) -> ConsoleOutput {
        try console(named: name).openStream(follow: follow)
    }

    func consoleInput(_ bytes: [UInt8], to name: String, timeout: Double) async throws(APIError) -> ConsoleInputAnswer {
        let console = try console(named: name)
        guard let accepted = await console.send(bytes, timeout: timeout) else {
            throw APIError(.conflict, "\(name): no guest process takes console input now")
        }
        guard accepted == bytes.count else {
            throw APIError(.unavailable, "\(name): the guest took \(accepted) of \(bytes.count) bytes within \(timeout) s",
                           accepted: accepted)
        }
        return ConsoleInputAnswer(accepted: accepted)
    }

    /// The relay of the domain of that name: 404 unknown, 409 without one.
    private func console(named name: String) throws(APIError) -> DomainConsole {
        let (record, console) = state.withLock { s in
            let record = s.registry.named(name)
            return (record, record.flatMap { s.consoles[$0.id] })
        }
        guard record != nil else { throw .notFound(name) }
        guard let console else { throw APIError(.conflict, "\(name) has no console") }
        return console
    }
}
