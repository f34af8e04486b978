import Foundation
import GuestMemory
import HostIO
import Testing

/// A stand-in for passt: a shell script that PasstLink starts exactly as it
/// starts passt (`-f -q --fd N --mtu M`), doing `body` with the socket as
/// descriptor `$4`. The file goes away with the value.
final class FakePasst {
    let path: String

    init(_ body: String) throws {
        path = NSTemporaryDirectory() + "pvh-fake-passt-\(getpid())-\(UUID().uuidString)"
        // O_CLOEXEC: a process other tests spawn meanwhile must not keep the
        // file open for writing, or executing it fails with ETXTBSY.
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o755)
        try #require(fd >= 0)
        let text = Array(("#!/bin/sh\n" + body + "\n").utf8)
        let written = text.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        try #require(written == text.count)
    }

    /// A link running this script. A child another test forks at the very
    /// moment the file was open may still hold it (ETXTBSY until its exec):
    /// tried again then.
    func link(mtu: Int = PasstLink.defaultMTU) throws -> PasstLink {
        var attempts = 0
        while true {
            do {
                return try PasstLink(mtu: mtu, executable: path)
            } catch {
                guard error == .passtStart(path: path, errno: ETXTBSY), attempts < 100 else { throw error }
                attempts += 1
            }
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

@Suite("PasstLink's stream, against stand-ins for passt", .serialized)
struct PasstLinkStreamTests {
    @Test("frames gathered from several parts come back whole from an echoing peer, in order")
    func echo() throws {
        let fake = try FakePasst("eval \"exec cat <&$4 >&$4\"")
        let link = try fake.link(mtu: 9000)
        defer { link.stop() }
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        let frames = try FrameMemory()
        let sizes = [60, 1514, 9014, 14, 333]
        for (i, size) in sizes.enumerated() {
            let frame = (0 ..< size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
            try link.transmit(frames.ranges(frame, parts: i + 1), offload: .none).get()
            let back = inbox.waitForFrame { $0.bytes == frame }
            #expect(back != nil, "frame \(i) of \(size) bytes did not come back")
        }
        #expect(inbox.carrierHistory.isEmpty)
    }

    @Test("large frames into a full socket: .busy, none torn; every frame sent arrives whole and in order")
    func fullSocket() throws {
        // The peer reads nothing until it is told to (a byte in a FIFO), then echoes.
        let fifo = NSTemporaryDirectory() + "pvh-fake-passt-go-\(getpid())-\(UUID().uuidString)"
        try #require(mkfifo(fifo, 0o600) == 0)
        defer { try? FileManager.default.removeItem(atPath: fifo) }
        let fake = try FakePasst("read go < \(fifo)\neval \"exec cat <&$4 >&$4\"")
        let link = try fake.link()
        defer { link.stop() }
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        let memory = try FrameMemory()
        var sent: [[UInt8]] = []
        var busy = false
        for i in 0 ..< 200 {
            let frame = (0 ..< 60_000).map { UInt8(truncatingIfNeeded: $0 &+ i &* 7) }
            switch link.transmit(try memory.ranges(frame, parts: 4), offload: .none) {
            case .success: sent.append(frame)
            case .failure(let drop):
                #expect(drop == .busy)
                busy = true
            }
            if busy { break }
        }
        #expect(busy, "the socket never filled")
        #expect(sent.count >= 1)
        try "go\n".write(toFile: fifo, atomically: false, encoding: .utf8)
        for (i, frame) in sent.enumerated() {
            #expect(inbox.waitForFrame { $0.bytes == frame } != nil, "frame \(i) of \(sent.count) did not come back whole")
        }
        #expect(inbox.carrierHistory.isEmpty)
    }

    @Test("an oversized length: carrier down, the peer restarted, carrier up")
    func oversizedRestarts() throws {
        // The first run writes a bad length and waits; later runs echo.
        let marker = NSTemporaryDirectory() + "pvh-fake-passt-ran-\(getpid())-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: marker) }
        let fake = try FakePasst("""
            if [ ! -e \(marker) ]; then
                : > \(marker)
                eval "printf '\\377\\377\\377\\377' >&$4"
                eval "exec cat <&$4 >/dev/null"
            fi
            eval "exec cat <&$4 >&$4"
            """)
        let link = try fake.link()
        defer { link.stop() }
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        #expect(inbox.waitForCarrier { $0 == [false, true] }, "carrier history: \(inbox.carrierHistory)")
        #expect(link.restarts == 1)
        let frame = [UInt8](repeating: 0x5a, count: 64)
        try link.transmit(FrameMemory().ranges(frame), offload: .none).get()
        #expect(inbox.waitForFrame { $0.bytes == frame } != nil)
    }

    @Test("a frontend without scatter-gather: passt restarted at once with --mtu 1500; with it again: the MTU asked for")
    func mtuForFrontend() throws {
        // Each run appends its arguments to a file, then echoes.
        let runs = NSTemporaryDirectory() + "pvh-fake-passt-args-\(getpid())-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: runs) }
        let fake = try FakePasst("echo \"$@\" >> \(runs)\neval \"exec cat <&$4 >&$4\"")
        let link = try fake.link()
        defer { link.stop() }
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        func lines() -> [String] {
            ((try? String(contentsOfFile: runs, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }
        func echoes(_ seed: UInt8) throws -> Bool {
            let frame = [UInt8](repeating: seed, count: 64)
            try link.transmit(FrameMemory().ranges(frame), offload: .none).get()
            return inbox.waitForFrame { $0.bytes == frame } != nil
        }
        #expect(try echoes(1))
        #expect(link.runningMTU == PasstLink.defaultMTU)

        link.frontendConnected(scatterGather: false)
        #expect(inbox.waitForCarrier { $0 == [false, true] }, "carrier history: \(inbox.carrierHistory)")
        #expect(link.runningMTU == PasstLink.pageFrameMTU)
        #expect(link.restarts == 1)
        #expect(try echoes(2))
        #expect(lines().last?.contains("--mtu 1500") == true, "\(lines())")

        // The same frontend again (a reconnection): nothing to change.
        link.frontendConnected(scatterGather: false)
        #expect(try echoes(3))
        #expect(link.restarts == 1)

        link.frontendConnected(scatterGather: true)
        #expect(inbox.waitForCarrier { $0 == [false, true, false, true] }, "carrier history: \(inbox.carrierHistory)")
        #expect(link.runningMTU == PasstLink.defaultMTU)
        #expect(try echoes(4))
        #expect(lines().count == 3)
        #expect(lines().last?.contains("--mtu \(PasstLink.defaultMTU)") == true, "\(lines())")
    }

    @Test("a peer that keeps dying is restarted with growing back-off; stop interrupts the wait")
    func keepsDying() throws {
        let fake = try FakePasst("exit 1")
        let link = try fake.link()
        let inbox = LinkInbox()
        try link.start(receive: inbox.receive, carrier: inbox.carrier)
        // 100 + 200 + 400 ms of back-off: three restarts, each down then up.
        #expect(inbox.waitForCarrier { $0.count >= 6 }, "carrier history: \(inbox.carrierHistory)")
        #expect(inbox.carrierHistory.prefix(6) == [false, true, false, true, false, true])
        let started = ContinuousClock.now
        link.stop()
        #expect(ContinuousClock.now - started < .seconds(2))
        let history = inbox.carrierHistory
        // No callback after stop returned.
        #expect(inbox.carrierHistory == history)
    }
}
