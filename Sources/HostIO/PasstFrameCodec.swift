/// The stream format passt speaks on its socket, qemu's `-netdev socket`
/// (and `-netdev stream`) framing: each Ethernet frame is preceded by its
/// length as a 32-bit big-endian integer (passt's tap.c, `tap_send` and
/// `tap_handler_passt`). Pure: the links feed it what they read.
public struct PasstFrameCodec: Sendable {
    /// The longest frame accepted: the largest IP packet plus an Ethernet
    /// header. A length beyond it means the stream is out of step (or not
    /// passt's); there is no marker to find the next frame by.
    public static let maximumFrameLength = 65535 + 14
    /// Bytes of the length prefix.
    public static let prefixLength = 4

    /// Why the stream cannot be decoded further.
    public enum DecodeError: Error, Hashable, Sendable, CustomStringConvertible {
        /// A length prefix above `maximumFrameLength`.
        case oversizedFrame(length: UInt32)

        /// One line, for logs.
        public var description: String {
            switch self {
            case .oversizedFrame(let length):
                "frame length \(length) exceeds \(PasstFrameCodec.maximumFrameLength): the stream is out of step"
            }
        }
    }

    /// Bytes received but not yet returned as frames; `head` marks the
    /// consumed prefix.
    private var pending: [UInt8] = []
    private var head = 0

    /// A codec at the start of a stream.
    public init() {}

    /// Bytes held for an incomplete frame.
    public var bufferedByteCount: Int { pending.count - head }

    /// The length prefix of a frame of `length` bytes.
    public static func prefix(length: Int) -> [UInt8] {
        precondition(length >= 0 && length <= Int(UInt32.max), "frame length out of range")
        let l = UInt32(length)
        return [UInt8(l >> 24), UInt8(truncatingIfNeeded: l >> 16), UInt8(truncatingIfNeeded: l >> 8), UInt8(truncatingIfNeeded: l)]
    }

    /// One frame as it goes on the stream: prefix and bytes.
    public static func encode(_ frame: [UInt8]) -> [UInt8] { prefix(length: frame.count) + frame }

    /// Takes the next bytes of the stream (any split: part of a prefix,
    /// several frames) and returns the frames they complete, in order.
    /// Zero-length frames are skipped. After an error the codec holds
    /// nothing: the caller must start a new stream (`reset`) — the bytes
    /// after a bad length cannot be trusted.
    public mutating func feed(_ bytes: some Collection<UInt8>) throws(DecodeError) -> [[UInt8]] {
        pending.append(contentsOf: bytes)
        var frames: [[UInt8]] = []
        while pending.count - head >= Self.prefixLength {
            let length = pending[head ..< head + Self.prefixLength].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            guard length <= UInt32(Self.maximumFrameLength) else {
                reset()
                throw .oversizedFrame(length: length)
            }
            let start = head + Self.prefixLength
            guard pending.count - start >= Int(length) else { break }
            if length > 0 { frames.append(Array(pending[start ..< start + Int(length)])) }
            head = start + Int(length)
        }
        if head == pending.count {
            pending.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 0 {
            pending.removeFirst(head)
            head = 0
        }
        return frames
    }

    /// Forgets everything buffered: a new stream starts.
    public mutating func reset() {
        pending.removeAll(keepingCapacity: true)
        head = 0
    }
}
