#if canImport(Glibc)
import Glibc
#endif
import CHostIO
import Foundation
import GuestMemory
import Locking
import Synchronization

/// A few bytes of host memory a link puts in front of a frame (the virtio
/// header, passt's length prefix), owned so a `HostMemoryRange` can name
/// them in the same gather list as the frame's parts.
@safe final class LinkHeaderBuffer: @unchecked Sendable {
    // SAFETY (Sendable): the bytes are written in init, before the buffer
    // is shared, or by `rewrite`, which its link calls only under the lock
    // its transmits hold; otherwise they are only read (by the kernel,
    // during a transmit under that lock).
    private let storage: UnsafeMutableRawBufferPointer

    init(_ bytes: [UInt8]) {
        unsafe storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 8)
        // SAFETY: the allocation holds at least bytes.count bytes.
        unsafe storage.copyBytes(from: bytes)
        count = bytes.count
    }

    /// Fills `count` bytes through `body` (e.g. a C function writing a struct).
    init(count: Int, _ body: (UnsafeMutableRawPointer) -> Void) {
        unsafe storage = UnsafeMutableRawBufferPointer.allocate(byteCount: max(count, 1), alignment: 8)
        // SAFETY: the allocation is `count` bytes; `body` writes at most that
        // (the callers pass the size of what they write).
        guard let base = unsafe storage.baseAddress else { preconditionFailure("allocation without an address") }
        unsafe memset(base, 0, max(count, 1))
        unsafe body(base)
        self.count = count
    }

    let count: Int

    /// Writes the bytes again through `body` (`count` bytes at most): for a
    /// link's own header buffer, reused for every frame under the link's
    /// transmit lock, never while a transfer may read it.
    func rewrite(_ body: (UnsafeMutableRawPointer) -> Void) {
        // SAFETY: the allocation holds at least `count` bytes, what `body`
        // writes (as in init); the caller's lock keeps readers away.
        guard let base = unsafe storage.baseAddress else { return }
        unsafe body(base)
    }

    /// Reads the bytes through `body` (`count` bytes at most): a header a
    /// link's read filled, under the lock its reads hold.
    func read<T>(_ body: (UnsafeRawPointer) -> T) -> T {
        // SAFETY: the allocation holds at least `count` bytes, what `body`
        // reads; the caller's lock keeps writers away.
        guard let base = unsafe storage.baseAddress else { preconditionFailure("allocation without an address") }
        return unsafe body(UnsafeRawPointer(base))
    }

    deinit {
        // SAFETY: allocated in init; nothing refers to it once this buffer
        // (and every HostMemoryRange naming it) is gone.
        unsafe storage.deallocate()
    }

    /// The bytes as a range for a gather list; the range keeps this buffer alive.
    var range: HostMemoryRange {
        // SAFETY: `self` owns the allocation and is the range's owner, so
        // the memory stays valid while the range lives.
        unsafe HostMemoryRange(owner: self, address: UInt(bitPattern: storage.baseAddress), count: count)
    }
}

/// The C library's handling of the frames' memory. A link's reader
/// allocates each received frame (up to 64 KiB) on its own thread and a
/// backend frees it on its queue's; glibc trims the arena on such a free
/// (a free of 64 KiB or more consolidates and trims the top, malloc.c's
/// FASTBIN_CONSOLIDATION_THRESHOLD), handing the pages back to the kernel
/// only to fault them in again for the next frame: perf showed
/// do_anonymous_page and madvise on the queue's thread under TSO-sized RX.
/// Keeping up to 16 MiB free (the largest RX backlog, 256 such frames)
/// stops that; memory beyond it is still given back.
enum FrameMemory {
    /// Sets the policy once per process, when the first link starts.
    static let retainFreedFrames: Void = {
        _ = pvh_malloc_set_trim_threshold(16 << 20)
    }()
}

/// What `LinkPoll.wait` saw.
enum LinkPollResult {
    /// Some descriptor has something (bytes, room, end of file or an
    /// error): each one's revents, in the order given.
    case ready([Int16])
    /// The wake event was signalled: the link is stopping.
    case woken
    /// The timeout passed.
    case timedOut
    /// poll failed (not EINTR, which is retried).
    case failed(Int32)
}

enum LinkPoll {
    /// poll(2) for any of `descriptors` to become ready for its events, or
    /// `wake` readable, at most `timeout` milliseconds (-1: no limit). The
    /// wake event wins when several are ready.
    static func wait(_ descriptors: [(fd: Int32, events: Int16)], wake: Int32, timeout: Int32) -> LinkPollResult {
        var fds = [pollfd(fd: wake, events: Int16(POLLIN), revents: 0)]
        fds += descriptors.map { pollfd(fd: $0.fd, events: $0.events, revents: 0) }
        while true {
            // SAFETY: `fds` is a live array of `fds.count` pollfds for the call.
            let r = unsafe poll(&fds, nfds_t(fds.count), timeout)
            if r < 0 {
                if errno == EINTR { continue }
                return .failed(errno)
            }
            if r == 0 { return .timedOut }
            if fds[0].revents != 0 { return .woken }
            return .ready(fds.dropFirst().map(\.revents))
        }
    }

    /// `wait` for one descriptor to be readable.
    static func waitReadable(_ fd: Int32, wake: Int32) -> LinkPollResult {
        wait([(fd, Int16(POLLIN))], wake: wake, timeout: -1)
    }
}

/// The thread a link delivers from, and the eventfd that wakes it when the
/// link stops: `stop` signals the event, the thread's poll returns, its
/// body returns, and `join` sees it finished. No timeouts involved.
final class LinkThread: Sendable {
    /// The eventfd the body's poll waits on beside its data descriptor.
    let wake: Int32
    private struct State {
        var started = false
        var finished = false
        var thread: pthread_t?
    }
    private let state = Lock(State())
    private let done = NSCondition()

    init() throws(NetworkLinkError) {
        let fd = pvh_eventfd()
        guard fd >= 0 else { throw .system(call: "eventfd", errno: -fd) }
        wake = fd
    }

    deinit { close(wake) }

    /// Runs `body` on a new thread named `name` (15 bytes kept). Once.
    func start(name: String, _ body: @escaping @Sendable () -> Void) {
        state.withLock {
            precondition(!$0.started, "a link thread starts once")
            $0.started = true
        }
        let thread = Thread { [self] in
            state.withLock { $0.thread = pthread_self() }
            body()
            done.lock()
            state.withLock { $0.finished = true }
            done.broadcast()
            done.unlock()
        }
        thread.stackSize = 1 << 20
        thread.start()
        thread.name = String(decoding: name.utf8.prefix(15), as: UTF8.self)
    }

    /// Signals the wake event: the body's next (or current) poll returns `.woken`.
    func signal() { EventCounter.signal(wake) }

    /// Waits until the body has returned; at once when it never started or
    /// when called from the thread itself (a callback that stops its link).
    func join() {
        let (started, thread): (Bool, pthread_t?) = state.withLock { ($0.started, $0.thread) }
        var mine = false
        if let thread { mine = pthread_equal(thread, pthread_self()) != 0 }
        guard started, !mine else { return }
        done.lock()
        while !state.withLock({ $0.finished }) { done.wait() }
        done.unlock()
    }
}

/// A count a link's thread keeps and its users read (frames dropped, restarts).
final class LinkCounter: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .relaxed) }
    func increment() { count.add(1, ordering: .relaxed) }
}

/// A flag a link's thread and its users share.
final class LinkFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var value: Bool { flag.load(ordering: .relaxed) }
    func set(_ value: Bool) { flag.store(value, ordering: .relaxed) }
}

/// eventfd(2) counters.
enum EventCounter {
    /// Adds one: a poll for the descriptor's readability returns.
    static func signal(_ fd: Int32) {
        var one: UInt64 = 1
        // SAFETY: writes the 8 bytes of `one`, a live local, as eventfd(2) asks.
        _ = unsafe write(fd, &one, 8)
    }

    /// Resets the counter to 0 (the descriptor is non-blocking).
    static func drain(_ fd: Int32) {
        var value: UInt64 = 0
        // SAFETY: reads 8 bytes into `value`, a live local, as eventfd(2) asks.
        _ = unsafe read(fd, &value, 8)
    }
}
