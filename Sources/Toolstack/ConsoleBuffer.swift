/// What a guest wrote to its PV console while nobody was attached, as
/// xenconsoled keeps a domain's output for `xl console` (its buffer is
/// bounded by `buffer-size`, tools/console/daemon/io.c, where the oldest
/// bytes go first): the newest `capacity` bytes, in order, and a count of
/// the older bytes dropped to keep within the bound. The daemon replays it
/// to a client when it attaches; while one is attached output goes to it
/// as well (and the guest is held back rather than output dropped).
public struct ConsoleBuffer: Sendable, Equatable {
    /// The most bytes kept.
    public let capacity: Int
    /// Bytes dropped (the oldest first) since the buffer began.
    public private(set) var dropped: UInt64 = 0
    /// The kept bytes, ring-ordered from `start`.
    private var storage: [UInt8] = []
    private var start = 0

    /// The daemon's default bound per guest.
    public static let defaultCapacity = 64 << 10

    public init(capacity: Int = ConsoleBuffer.defaultCapacity) {
        self.capacity = max(1, capacity)
        storage.reserveCapacity(min(self.capacity, 4096))
    }

    /// How many bytes are kept.
    public var count: Int { storage.count }

    /// Appends `bytes`, dropping the oldest beyond the bound.
    public mutating func append<Bytes: Collection<UInt8>>(_ bytes: Bytes) {
        var incoming = bytes[...]
        if incoming.count > capacity {
            let excess = incoming.count - capacity
            dropped += UInt64(storage.count + excess)
            storage.removeAll(keepingCapacity: true)
            start = 0
            incoming = incoming.dropFirst(excess)
        }
        for byte in incoming {
            if storage.count < capacity {
                storage.append(byte)
            } else {
                storage[start] = byte
                start = (start + 1) % capacity
                dropped += 1
            }
        }
    }

    /// The kept bytes, oldest first.
    public var contents: [UInt8] {
        Array(storage[start...] + storage[..<start])
    }
}
