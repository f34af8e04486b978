import Foundation
import PVHAPI
import Locking
import Toolstack
import VMM

#if canImport(Glibc)
import Glibc
#endif

/// One domain's PV console in the daemon: xenconsoled's part for `xl
/// console`. The guest process's stdin and stdout are one end of a
/// socketpair (Supervisor.start); the daemon reads the other end all the
/// time into a bounded `ConsoleBuffer`, and serves one client at a time on
/// a Unix socket of its own, `<runtime>/.daemon/<domid>.console` (mode
/// 0600 in a 0700 directory: the daemon's user only, as xenconsoled's pty
/// is root's), which `GET /v1/domains/{name}` reports as `console`.
///
/// A socketpair rather than a pty: the guest process already treats a
/// stdin that is not a terminal as a plain byte stream (HostTerminal), so
/// no line discipline can rewrite or swallow the guest's bytes, and the
/// client's own terminal is the one put in raw mode.
///
/// The wire, after connecting: one line from the daemon, either
/// `pvh-console attached DROPPED` (then the buffered output, oldest
/// first, then live output; what the client sends goes to the guest) or
/// `pvh-console busy` (then the end: one client at a time, as `xl
/// console` refuses a console in use). The daemon ends the stream when
/// the domain goes away; the client detaches by closing its end.
///
/// Nothing is dropped while a client is attached: output is written to it
/// before more is read from the guest process, whose console backend then
/// waits for room (the guest is held back). A client that takes no bytes
/// for `clientStall` seconds is detached, so the guest is never held for
/// longer; later output is buffered again.
///
/// The same console over HTTP (`GET`/`POST /v1/domains/{name}/console`,
/// ConsoleAPI.swift): `streams` gets every chunk as the buffer does, and
/// `send` writes to the same guest input as an attached client.
public final class DomainConsole: Sendable {
    /// How long a write to an attached client may wait for room, unless
    /// the initializer is told otherwise (tests).
    public static let defaultClientStall = 30.0

    public let name: String
    private let clientStall: Double
    /// Where clients connect: `<domid>.console`, renamed when a restart
    /// gives the domain a new id (`move(to:)`).
    public var socketPath: String { state.withLock { $0.socketPath } }
    private let listener: UnixSocket
    /// The HTTP readers of the output.
    public let streams = ConsoleStreams()

    private struct State {
        var buffer: ConsoleBuffer
        var client: UnixSocket?
        var guest: UnixSocket?
        var closed = false
        var socketPath: String
    }
    private let state: Lock<State>
    /// Held while bytes go to the client, so the replay and live output
    /// reach it in order and its descriptor is closed by nobody mid-write.
    private let output = Lock(())
    /// Held while typed bytes go to the guest process, likewise.
    private let input = Lock(())

    public init(name: String, socketPath: String, capacity: Int = ConsoleBuffer.defaultCapacity,
                clientStall: Double = DomainConsole.defaultClientStall) throws(UnixSocketError) {
        self.name = name
        self.clientStall = clientStall
        listener = try UnixSocket.listen(at: socketPath, backlog: 4)
        chmod(socketPath, 0o600)
        state = Lock(State(buffer: ConsoleBuffer(capacity: capacity), socketPath: socketPath))
        let thread = Thread { [self] in acceptClients() }
        thread.name = "pvh-console-\(name)"
        thread.start()
    }

    /// The buffer's state now (tests, diagnostics).
    public var buffered: (count: Int, dropped: UInt64) { state.withLock { ($0.buffer.count, $0.buffer.dropped) } }

    /// A new guest process's end of the stream (its first start or a
    /// restart's): read on a thread of its own until the process closes it.
    public func connect(_ guest: UnixSocket) {
        let accepted = state.withLock { s -> Bool in
            guard !s.closed else { return false }
            s.guest = guest
            return true
        }
        guard accepted else {
            guest.close()
            return
        }
        // A stopped (paused) guest process takes no input: typed bytes
        // wait at most this long for room, then are dropped.
        guest.setSendTimeout(seconds: clientStall)
        let thread = Thread { [self] in relayOutput(from: guest) }
        thread.name = "pvh-console-out"
        thread.start()
    }

    /// The domain restarted under a new id: the listening socket's file is
    /// renamed (rename(2) keeps the bound socket; an attached client stays
    /// attached and its buffer is kept), so that the old id's name is free
    /// for whichever domain takes that id next. False when it cannot be.
    public func move(to path: String) -> Bool {
        state.withLock { s in
            guard !s.closed, rename(s.socketPath, path) == 0 else { return false }
            s.socketPath = path
            return true
        }
    }

    /// The domain is gone: no more clients, the attached one's stream ends.
    ///
    /// Descriptors are only shut down here; each is closed by the thread
    /// that blocks on it (the accept thread, the client's input thread),
    /// after its call returned. Closing one here could let the number be
    /// reused (another domain's new console, say) while that thread is
    /// still about to call accept or read on it, and it would then serve
    /// the other socket: DomainConsoleTests saw a closed relay answer
    /// "busy" to a newer relay's client that way.
    public func close() {
        let path = state.withLock { s -> String in
            s.closed = true
            // Under the lock: the input thread clears `client` under it
            // before closing the descriptor, so this one is still open.
            s.client?.shutdown()
            return s.socketPath
        }
        listener.shutdown()
        unlink(path)
        streams.finish()
    }

    private func relayOutput(from guest: UnixSocket) {
        while let bytes = guest.read(max: 4096) {
            output.withLock { _ in
                let client = state.withLock { s -> UnixSocket? in
                    s.buffer.append(bytes)
                    streams.publish(bytes)
                    return s.client
                }
                if let client, !client.writeAll(bytes) {
                    // Gone or stalled: detach it; its input thread closes it.
                    client.shutdown()
                }
            }
        }
        input.withLock { _ in
            state.withLock { s in
                if s.guest?.fd == guest.fd { s.guest = nil }
            }
            guest.close()
        }
    }

    /// An HTTP reader: the buffer now (and the count dropped before it),
    /// then, with `follow`, every chunk after it; taken under the lock the
    /// relay appends under, so nothing falls between the two.
    public func openStream(follow: Bool) throws(APIError) -> ConsoleOutput {
        try state.withLock { s throws(APIError) -> ConsoleOutput in
            ConsoleOutput(dropped: s.buffer.dropped, chunks: try streams.open(backlog: s.buffer.contents, follow: follow))
        }
    }

    /// Input from the HTTP API to the guest process's stdin, as a client's
    /// typed bytes go: what fits is written at once, the rest as the
    /// process takes it (its console backend reads stdin as the guest's
    /// ring has room), for at most `timeout` seconds. Returns how many
    /// bytes went, in order from the first, or nil when there is no
    /// guest process to take them.
    public func send(_ bytes: [UInt8], timeout: Double) async -> Int? {
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        var offset = 0
        while true {
            // Non-blocking under the input lock: the descriptor stays open
            // for the write, and an attached client's typing waits for no
            // more than one write.
            let written = input.withLock { _ -> Int? in
                guard let guest = state.withLock({ $0.guest }) else { return nil }
                return guest.writeNonBlocking(bytes[offset...])
            }
            guard let written, written >= 0 else { return offset == 0 ? nil : offset }
            offset += written
            if offset == bytes.count || ContinuousClock.now >= deadline { return offset }
            if written == 0 { try? await Task.sleep(for: .milliseconds(20)) }
        }
    }

    private func acceptClients() {
        // The listener is closed here, once accept has returned for good
        // (close() only shuts it down; see there).
        defer { listener.close() }
        while let client = listener.accept() {
            client.setSendTimeout(seconds: clientStall)
            // Checked before waiting for the output lock, which a write to
            // a slow attached client may hold for up to `clientStall`: a
            // second client hears "busy" at once.
            let taken = state.withLock { $0.closed || $0.client != nil }
            let attached = !taken && output.withLock { _ -> Bool in
                let replay = state.withLock { s -> (ConsoleBuffer)? in
                    guard !s.closed, s.client == nil else { return nil }
                    s.client = client
                    return s.buffer
                }
                guard let replay else { return false }
                _ = client.writeAll(Array("pvh-console attached \(replay.dropped)\n".utf8)) && client.writeAll(replay.contents)
                return true
            }
            guard attached else {
                _ = client.writeAll(Array("pvh-console busy\n".utf8))
                client.close()
                continue
            }
            let thread = Thread { [self] in relayInput(from: client) }
            thread.name = "pvh-console-in"
            thread.start()
        }
    }

    /// What the client types, to the guest process's stdin, until it detaches.
    private func relayInput(from client: UnixSocket) {
        while let bytes = client.read(max: 4096) {
            // Between a guest process's end and its restart there is no
            // stdin: typed bytes go nowhere, as on a console whose guest is down.
            input.withLock { _ in
                if let guest = state.withLock({ $0.guest }) { _ = guest.writeAll(bytes) }
            }
        }
        client.shutdown()
        output.withLock { _ in
            state.withLock { s in
                if s.client?.fd == client.fd { s.client = nil }
            }
            client.close()
        }
    }
}
