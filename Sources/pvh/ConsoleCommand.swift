import ArgumentParser
import Foundation
import PVHAPI
import Locking
import VMM

#if canImport(Glibc)
import Glibc
#endif

/// `xl console NAME` for a daemon's guest: attach to its PV console
/// through the socket the daemon serves (ConsoleRelay/DomainConsole.swift).
struct ConsoleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "console",
        abstract: "Attach to a guest's PV console (xl console); Ctrl-] detaches.",
        discussion: """
            Shows what the guest wrote while nobody was attached (the daemon keeps the newest 64 KiB), \
            then its live output; what you type goes to the guest, in raw mode on a terminal. Ctrl-] \
            detaches (exit 0) and the guest keeps running; the guest going away ends the session with \
            one line. One client at a time: a console in use is refused (exit 1), as is an unknown guest.
            """)

    @Argument(help: "The guest's name.") var name: String

    func run() throws {
        try reportingAPIErrors {
            let client = DaemonClient()
            guard client.isRunning else { throw client.fail("no pvh daemon answers on \(client.client.socketPath) (pvh daemon starts one)") }
            let domain = try client.call("GET", "/v1/domains/\(pathSegment(name))", as: DomainInfo.self)
            try ConsoleSession.attach(name: domain.name, socket: domain.console)
        }
    }
}

/// One attachment to a console socket: its wire (docs/api/openapi.json,
/// DomainInfo.console), the terminal in raw mode and restored on every way
/// out, Ctrl-] to detach.
enum ConsoleSession {
    private enum End: Sendable { case detached, signaled }

    /// How long the daemon's first line may take.
    static let greetingTimeout = 10.0

    /// Runs the session to its end; returns on detach and when the guest
    /// goes away, throws exit 1 when it cannot attach and 130 on a signal.
    static func attach(name: String, socket path: String?) throws {
        func fail(_ message: String) -> ExitCode {
            FileDescriptorConsoleSink(fd: 2).emit(Array("pvh: \(name): \(message)\n".utf8))
            return ExitCode(1)
        }
        guard let path else { throw fail("the guest has no console") }
        let socket: UnixSocket
        do {
            socket = try UnixSocket.connect(to: path)
        } catch {
            throw fail("its console (\(path)): \(error)")
        }
        // The greeting, a byte at a time so no console output is taken
        // with it; bounded in length and time.
        var greeting: [UInt8] = []
        let deadline = Date().addingTimeInterval(greetingTimeout)
        while greeting.last != UInt8(ascii: "\n") {
            let left = deadline.timeIntervalSinceNow
            guard greeting.count < 128, left > 0, socket.waitReadable(timeout: left), let byte = socket.read(max: 1) else {
                socket.close()
                throw fail("its console (\(path)) did not answer")
            }
            greeting += byte
        }
        let words = String(decoding: greeting.dropLast(), as: UTF8.self).split(separator: " ")
        guard words.count >= 2, words[0] == "pvh-console", words[1] == "attached" else {
            socket.close()
            if words.count >= 2, words[1] == "busy" { throw fail("the console is in use by another client") }
            throw fail("its console (\(path)) answered \(String(decoding: greeting.dropLast(), as: UTF8.self).debugDescription)")
        }
        let stderr = FileDescriptorConsoleSink(fd: 2)
        if words.count >= 3, let dropped = UInt64(words[2]), dropped > 0 {
            stderr.emit(Array("pvh: \(name): \(dropped) older bytes of console output were dropped\n".utf8))
        }
        let end = Lock<End?>(nil)
        let terminal = HostTerminal()
        terminal.start(notice: "pvh: attached to \(name)'s console (Ctrl-] detaches)", escapeAlways: true,
                       input: { _ = socket.writeAll($0) },
                       escape: {
                           end.withLock { $0 = $0 ?? .detached }
                           socket.shutdown()
                       })
        let sources = signalSources([SIGINT, SIGTERM, SIGHUP]) {
            end.withLock { $0 = $0 ?? .signaled }
            socket.shutdown()
        }
        let stdout = FileDescriptorConsoleSink(fd: 1)
        while let bytes = socket.read() { stdout.emit(bytes) }
        terminal.restore()
        sources.forEach { $0.cancel() }
        socket.close()
        switch end.withLock({ $0 }) {
        case .detached:
            stderr.emit(Array("\npvh: detached from \(name)'s console\n".utf8))
        case .signaled:
            throw ExitCode(130)
        case nil:
            stderr.emit(Array("\npvh: \(name): the guest has gone (its console closed)\n".utf8))
        }
    }
}
