/// A FIFO of bytes with amortised O(1) removal from the front.
struct ByteQueue: Sendable {
    private var storage: [UInt8] = []
    private var head = 0

    var count: Int { storage.count - head }
    var isEmpty: Bool { count == 0 }

    mutating func append(contentsOf bytes: some Sequence<UInt8>) { storage.append(contentsOf: bytes) }

    /// Up to `max` bytes from the front, without removing them.
    func peek(max: Int) -> ArraySlice<UInt8> { storage[head..<(head + min(max, count))] }

    mutating func removeFirst(_ n: Int) {
        head += min(n, count)
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 4096, head * 2 > storage.count {
            storage.removeFirst(head)
            head = 0
        }
    }
}
