#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A first-in first-out queue: requests waiting for an engine's capacity.
/// An array and a head index; the consumed prefix is dropped once it is at
/// least half the storage, so each element is moved O(1) times on average.
struct FIFO<Element> {
    private var storage: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }

    mutating func append(_ e: Element) { storage.append(e) }
    mutating func append(contentsOf s: some Sequence<Element>) { storage.append(contentsOf: s) }

    mutating func popFirst() -> Element? {
        guard head < storage.count else { return nil }
        let e = storage[head]
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64, head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return e
    }
}

/// The threads the engines run on (the io_uring reaper, the pool's workers).
enum EngineThread {
    /// Engine threads only wait in the kernel and call the completion
    /// handler, which must not block: 1 MiB, as the device runtime's.
    static let stackSize = 1 << 20

    /// Starts a thread running `body`, named `name` (at most 15 bytes, what
    /// Linux keeps). Foundation's Thread, as the device runtime's contexts;
    /// a name set after start() is the one that sticks (see
    /// ExecutionContext.init).
    static func start(name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.stackSize = stackSize
        thread.start()
        thread.name = String(decoding: name.utf8.prefix(15), as: UTF8.self)
    }

    /// The calling thread, to tell an engine's own threads (where waiting
    /// for the engine would deadlock) from its users'.
    static var current: pthread_t { pthread_self() }
}
