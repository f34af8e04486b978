import ConsoleRelay
import Foundation
import PVHAPI
import Testing
import VMM

/// `DomainConsole`, the daemon's relay, driven directly: the guest process
/// is the far end of a socketpair, clients connect to its Unix socket.
/// Every wait is bounded (`Relay.within`); nothing sleeps to synchronise.
@Suite("the daemon's console relay (DomainConsole)")
struct DomainConsoleTests {
    /// A relay on a fresh socket path, its guest end, and a bound for waits.
    final class Relay: Sendable {
        let directory: String
        let console: DomainConsole
        /// What the guest process would hold: its stdin and stdout.
        let guest: UnixSocket
        static let within = 20.0

        init(capacity: Int = 4096, clientStall: Double = DomainConsole.defaultClientStall) throws {
            directory = NSTemporaryDirectory() + "pvh-console-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            console = try DomainConsole(name: "t", socketPath: "\(directory)/1.console", capacity: capacity,
                                        clientStall: clientStall)
            let (daemonEnd, guestEnd) = try UnixSocket.pair()
            guest = guestEnd
            console.connect(daemonEnd)
        }

        deinit {
            console.close()
            guest.close()
            try? FileManager.default.removeItem(atPath: directory)
        }

        func client() throws -> UnixSocket { try UnixSocket.connect(to: console.socketPath) }

        /// Polls `condition` until it holds, at most `within` seconds.
        func eventually(_ condition: () -> Bool) -> Bool {
            let deadline = Date().addingTimeInterval(Self.within)
            while !condition() {
                if Date() > deadline { return false }
                usleep(2000)
            }
            return true
        }
    }

    /// Reads exactly `count` bytes (nil on end of stream or after `within` s).
    static func read(_ socket: UnixSocket, _ count: Int) -> [UInt8]? {
        var got: [UInt8] = []
        let deadline = Date().addingTimeInterval(Relay.within)
        while got.count < count {
            let left = deadline.timeIntervalSinceNow
            guard left > 0, socket.waitReadable(timeout: left), let bytes = socket.read(max: count - got.count) else {
                return nil
            }
            got += bytes
        }
        return got
    }

    /// The greeting line, without its newline.
    static func greeting(_ socket: UnixSocket) -> String? {
        var line: [UInt8] = []
        while line.last != UInt8(ascii: "\n") {
            guard line.count < 64, let byte = read(socket, 1) else { return nil }
            line += byte
        }
        return String(decoding: line.dropLast(), as: UTF8.self)
    }

    @Test("a client gets the buffered output, then live output; what it types reaches the guest")
    func replayThenLive() throws {
        let r = try Relay()
        #expect(r.guest.writeAll(Array("booted\n".utf8)))
        #expect(r.eventually { r.console.buffered.count == 7 })
        let client = try r.client()
        defer { client.close() }
        #expect(Self.greeting(client) == "pvh-console attached 0")
        #expect(Self.read(client, 7) == Array("booted\n".utf8))
        #expect(r.guest.writeAll(Array("live".utf8)))
        #expect(Self.read(client, 4) == Array("live".utf8))
        #expect(client.writeAll(Array("typed".utf8)))
        #expect(Self.read(r.guest, 5) == Array("typed".utf8))
    }

    @Test("a second client hears busy and the end, the first stays attached")
    func oneClientAtATime() throws {
        let r = try Relay()
        let first = try r.client()
        defer { first.close() }
        #expect(Self.greeting(first) == "pvh-console attached 0")
        let second = try r.client()
        defer { second.close() }
        #expect(Self.greeting(second) == "pvh-console busy")
        #expect(second.waitReadable(timeout: Relay.within) && second.read() == nil)
        #expect(r.guest.writeAll(Array("x".utf8)))
        #expect(Self.read(first, 1) == Array("x".utf8))
    }

    @Test("output past the buffer's capacity drops the oldest bytes, and the next client is told how many")
    func droppedCount() throws {
        let r = try Relay(capacity: 16)
        let bytes = (0..<40).map { UInt8(ascii: "a") + UInt8($0 % 26) }
        #expect(r.guest.writeAll(bytes))
        #expect(r.eventually { r.console.buffered.dropped == 24 })
        let client = try r.client()
        defer { client.close() }
        #expect(Self.greeting(client) == "pvh-console attached 24")
        #expect(Self.read(client, 16) == Array(bytes.suffix(16)))
    }

    @Test("nothing is dropped while a client is attached: 1 MiB reaches it whole and in order")
    func nothingLostWhileAttached() throws {
        let r = try Relay(capacity: 1024)
        let client = try r.client()
        defer { client.close() }
        #expect(Self.greeting(client) == "pvh-console attached 0")
        let flood = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) }
        let writer = Thread { [guest = r.guest] in _ = guest.writeAll(flood) }
        writer.start()
        let whole = Self.read(client, flood.count) == flood
        #expect(whole, "the client did not get the guest's 1 MiB whole and in order")
        #expect(r.console.buffered.dropped == UInt64(flood.count - 1024))
    }

    @Test("a client that takes nothing is detached after the stall bound: the guest goes on, a new client attaches")
    func stalledClientDetached() throws {
        let r = try Relay(capacity: 1024, clientStall: 0.3)
        let stalled = try r.client()
        defer { stalled.close() }
        #expect(Self.greeting(stalled) == "pvh-console attached 0")
        // More than both sockets' buffers hold: the relay's write to the
        // stalled client runs out of room, waits its 0.3 s, and detaches it.
        let flood = [UInt8](repeating: 0x2e, count: 8 << 20)
        let done = DispatchSemaphore(value: 0)
        let writer = Thread { [guest = r.guest] in
            _ = guest.writeAll(flood)
            done.signal()
        }
        writer.start()
        #expect(done.wait(timeout: .now() + Relay.within) == .success, "the guest was held by a client that takes nothing")
        var greeting: String?
        #expect(r.eventually {
            guard let next = try? r.client() else { return false }
            defer { next.close() }
            greeting = Self.greeting(next)
            return greeting?.hasPrefix("pvh-console attached") == true
        }, "last greeting: \(greeting ?? "none")")
    }

    @Test("close ends the attached client's stream and removes the socket")
    func closeEndsClient() throws {
        let r = try Relay()
        let client = try r.client()
        defer { client.close() }
        #expect(Self.greeting(client) == "pvh-console attached 0")
        let path = r.console.socketPath
        r.console.close()
        #expect(client.waitReadable(timeout: Relay.within) && client.read() == nil)
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(throws: UnixSocketError.self) { try UnixSocket.connect(to: path) }
    }

    @Test("move renames the socket: clients connect at the new path, the old one is free")
    func move() throws {
        let r = try Relay()
        let old = r.console.socketPath
        let new = "\(r.directory)/2.console"
        #expect(r.console.move(to: new))
        #expect(r.console.socketPath == new)
        #expect(!FileManager.default.fileExists(atPath: old))
        let client = try UnixSocket.connect(to: new)
        defer { client.close() }
        #expect(Self.greeting(client) == "pvh-console attached 0")
        #expect(!r.console.move(to: "\(r.directory)/missing/3.console"))
        #expect(r.console.socketPath == new)
    }

    @Test("HTTP input goes to the guest; with no guest process it is refused (nil); the HTTP backlog is the buffer")
    func httpSide() async throws {
        let r = try Relay()
        #expect(await r.console.send(Array("over http".utf8), timeout: 5) == 9)
        #expect(Self.read(r.guest, 9) == Array("over http".utf8))
        #expect(r.guest.writeAll(Array("out".utf8)))
        #expect(r.eventually { r.console.buffered.count == 3 })
        var backlog: [UInt8] = []
        for await chunk in try r.console.openStream(follow: false).chunks { backlog += chunk }
        #expect(backlog == Array("out".utf8))
        // The guest process goes: its end closes, input has nowhere to go.
        r.guest.shutdown()
        let deadline = ContinuousClock.now + .seconds(Relay.within)
        var answer: Int? = 0
        while ContinuousClock.now < deadline {
            answer = await r.console.send([1], timeout: 0.1)
            if answer == nil { break }
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(answer == nil)
    }
}
