import Foundation
@testable import HostIO
import Testing

// TapLink's reader over a SOCK_SEQPACKET socketpair, which keeps message
// boundaries as a TAP keeps frames: each message is a virtio header and a
// frame. No root, no TAP.

@Suite("TAP frame reader")
struct TapFrameReaderTests {
    /// Runs `body` with a connected pair (reading end, writing end), the
    /// reading end non-blocking (as the TAP's is); closes both after.
    static func withPair(_ body: (Int32, Int32) throws -> Void) throws {
        var fds: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0, &fds) == 0, "socketpair: errno \(errno)")
        defer {
            close(fds[0])
            close(fds[1])
        }
        var size: Int32 = 4 << 20
        _ = setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &size, 4)
        _ = setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &size, 4)
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        try body(fds[0], fds[1])
    }

    static func frame(_ count: Int, seed: UInt8) -> [UInt8] { (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ Int(seed)) } }

    @Test("small and TSO-sized frames in any order: each read whole, bytes and offload exact; then EAGAIN")
    func mixedSizes() throws { try Self.withPair(readMixed) }

    func readMixed(_ r: Int32, _ w: Int32) throws {
        let tso = NetworkOffload(segmentation: .tcpv4(segmentSize: 1448), partialChecksum: .init(start: 34, offset: 16))
        let partial = NetworkOffload(partialChecksum: .init(start: 34, offset: 6))
        let valid = NetworkOffload(checksumValidated: true)
        // Sizes around the copy limit and the largest frame, switching
        // between the kept buffer and a fresh array both ways.
        let limit = TapLink.FrameReader.copyLimit
        let sent: [(bytes: [UInt8], offload: NetworkOffload)] = [
            (Self.frame(100, seed: 1), partial), (Self.frame(60000, seed: 2), tso), (Self.frame(limit + 1, seed: 3), valid),
            (Self.frame(limit, seed: 4), .none), (Self.frame(64, seed: 5), valid),
            (Self.frame(TapLink.maximumFrameLength, seed: 6), tso), (Self.frame(15, seed: 7), .none),
        ]
        let header = TapLink.virtioHeader(for: .none).count
        for f in sent {
            let message = TapLink.virtioHeader(for: f.offload) + f.bytes
            try #require(send(w, message, message.count, 0) == message.count, "send: errno \(errno)")
        }
        var reader = TapLink.FrameReader(fd: r, headerSize: header)
        var got: [(bytes: [UInt8], offload: NetworkOffload?)] = []
        for _ in sent {
            guard case .frame(let bytes, let plain) = reader.next() else {
                Issue.record("no frame")
                return
            }
            got.append((bytes, TapLink.offload(plain)))
        }
        #expect(got.map(\.bytes) == sent.map(\.bytes))
        #expect(got.map(\.offload) == sent.map(\.offload))
        guard case .empty = reader.next() else {
            Issue.record("expected EAGAIN")
            return
        }
    }

    @Test("a message of a header alone (or less) is a runt, and the next frame still comes whole")
    func runts() throws { try Self.withPair(readRunts) }

    func readRunts(_ r: Int32, _ w: Int32) throws {
        let header = TapLink.virtioHeader(for: .none)
        let big = Self.frame(9000, seed: 9)
        for message in [header + big, header, Array(header.prefix(3)), header + big, header + [1, 2, 3]] {
            try #require(send(w, message, message.count, 0) == message.count)
        }
        var reader = TapLink.FrameReader(fd: r, headerSize: header.count)
        var kinds: [String] = []
        var frames: [[UInt8]] = []
        for _ in 0..<5 {
            switch reader.next() {
            case .frame(let bytes, _):
                kinds.append("frame")
                frames.append(bytes)
            case .runt: kinds.append("runt")
            case .interrupted, .empty, .gone: kinds.append("other")
            }
        }
        #expect(kinds == ["frame", "runt", "runt", "frame", "frame"])
        #expect(frames == [big, big, [1, 2, 3]])
    }
}
