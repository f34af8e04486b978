import HostIO
import Testing

@Suite("passt frame codec (qemu stream framing)")
struct PasstFrameCodecTests {
    @Test("the prefix is the length, 32-bit big-endian")
    func prefixBigEndian() {
        #expect(PasstFrameCodec.prefix(length: 0x0102_0304) == [0x01, 0x02, 0x03, 0x04])
        #expect(PasstFrameCodec.encode([0xaa, 0xbb]) == [0, 0, 0, 2, 0xaa, 0xbb])
    }

    @Test("one frame in one read")
    func oneFrame() throws {
        var codec = PasstFrameCodec()
        let frame = Array(0 ..< 60).map(UInt8.init)
        #expect(try codec.feed(PasstFrameCodec.encode(frame)) == [frame])
        #expect(codec.bufferedByteCount == 0)
    }

    @Test("a frame split at every byte, the prefix included")
    func byteByByte() throws {
        var codec = PasstFrameCodec()
        let frame = Array(0 ..< 100).map { UInt8($0 * 3 & 0xff) }
        var got: [[UInt8]] = []
        for byte in PasstFrameCodec.encode(frame) { got += try codec.feed([byte]) }
        #expect(got == [frame])
    }

    @Test("split reads at every position between two frames", arguments: [1, 2, 3, 4, 5, 17, 63, 64, 65, 66, 67, 68])
    func splitAt(_ split: Int) throws {
        var codec = PasstFrameCodec()
        let a = [UInt8](repeating: 0x11, count: 60), b = [UInt8](repeating: 0x22, count: 1)
        let stream = PasstFrameCodec.encode(a) + PasstFrameCodec.encode(b)
        var got = try codec.feed(stream[..<split])
        got += try codec.feed(stream[split...])
        #expect(got == [a, b])
        #expect(codec.bufferedByteCount == 0)
    }

    @Test("several frames and part of the next in one read")
    func severalInOneRead() throws {
        var codec = PasstFrameCodec()
        let frames = (1 ... 5).map { [UInt8](repeating: UInt8($0), count: 14 * $0) }
        let next = [UInt8](repeating: 9, count: 42)
        let encodedNext = PasstFrameCodec.encode(next)
        let stream = frames.flatMap(PasstFrameCodec.encode) + encodedNext[..<10]
        #expect(try codec.feed(stream) == frames)
        #expect(codec.bufferedByteCount == 10)
        #expect(try codec.feed(encodedNext[10...]) == [next])
    }

    @Test("the largest frame passes; a longer length is refused and the codec emptied")
    func oversized() throws {
        var codec = PasstFrameCodec()
        let largest = [UInt8](repeating: 7, count: PasstFrameCodec.maximumFrameLength)
        #expect(try codec.feed(PasstFrameCodec.encode(largest)) == [largest])
        let bad = PasstFrameCodec.prefix(length: PasstFrameCodec.maximumFrameLength + 1) + [1, 2, 3]
        #expect(throws: PasstFrameCodec.DecodeError.oversizedFrame(length: UInt32(PasstFrameCodec.maximumFrameLength + 1))) {
            try codec.feed(bad)
        }
        #expect(codec.bufferedByteCount == 0)
        // A new stream after reset decodes normally.
        codec.reset()
        #expect(try codec.feed(PasstFrameCodec.encode([1, 2, 3])) == [[1, 2, 3]])
    }

    @Test("an oversized length after good frames: the good frames were returned before")
    func oversizedAfterGood() throws {
        var codec = PasstFrameCodec()
        #expect(try codec.feed(PasstFrameCodec.encode([5, 5])) == [[5, 5]])
        #expect(throws: PasstFrameCodec.DecodeError.self) { try codec.feed([0xff, 0xff, 0xff, 0xff]) }
    }

    @Test("a zero-length frame is skipped")
    func zeroLength() throws {
        var codec = PasstFrameCodec()
        #expect(try codec.feed([0, 0, 0, 0] + PasstFrameCodec.encode([1])) == [[1]])
    }
}
