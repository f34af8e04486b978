#if canImport(Glibc)
import Glibc
#endif
import CHostIO
import GuestMemory

/// The iovecs of one read or write, in memory of their own, and how far the
/// transfer has got. Every engine moves data with vectored I/O straight into
/// or out of guest pages (preadv(2)/pwritev(2), IORING_OP_READV/WRITEV);
/// this is the one place that turns `HostMemoryRange`s into iovecs and
/// continues after a partial transfer.
///
/// The vectors live on the heap, not in a Swift array, because io_uring may
/// read them after io_uring_submit returns (when the request goes to an
/// io-wq worker), so they must stay where they are until its completion
/// (io_uring_enter(2), IORING_OP_READV: "the iovecs ... must remain valid").
/// The list also holds the buffers, which keep the guest mappings alive.
///
/// Not thread-safe: an engine hands a list from thread to thread only under
/// its lock (or, in the thread engines, owns it on one thread).
@safe final class IOVectorList: @unchecked Sendable {
    /// The buffers, in order; kept so the host memory stays mapped.
    private(set) var buffers: [HostMemoryRange]
    /// A buffer in front of `buffers` (a link's header), when reloaded with one.
    private var head: HostMemoryRange?
    /// Bytes the transfer moves in all.
    private(set) var expected = 0
    /// Bytes moved so far.
    private(set) var transferred = 0
    /// The first vector not yet done (earlier ones are finished).
    private var first = 0
    /// The vectors' memory, `count` of them in use.
    private var vectors: UnsafeMutableBufferPointer<iovec>
    private var count = 0

    /// Buffers that follow each other in host memory become one vector (a
    /// guest's 1 MiB request is often 256 adjacent pages): fewer vectors for
    /// the kernel to walk and pin, and the same bytes in the same order.
    init(_ buffers: [HostMemoryRange]) {
        self.buffers = []
        unsafe vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: max(buffers.count, 1))
        reload(head: nil, buffers)
    }

    /// An empty list with room for `capacity` vectors, for `reload`.
    init(capacity: Int) {
        buffers = []
        unsafe vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: max(capacity, 1))
    }

    /// Makes this list describe `head` (if any) and then `buffers`, from
    /// the start, reusing its vectors' memory (grown if too small): a link
    /// that sends one frame at a time, under its lock, with a synchronous
    /// call, allocates nothing per frame. Only when no transfer of the
    /// previous contents can still read the vectors.
    func reload(head: HostMemoryRange?, _ buffers: [HostMemoryRange]) {
        self.head = head
        self.buffers = buffers
        let needed = buffers.count + (head == nil ? 0 : 1)
        if unsafe needed > vectors.count {
            // SAFETY: nothing reads the old vectors any more (the method's
            // precondition); iovec is trivial.
            unsafe vectors.deallocate()
            unsafe vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: needed)
        }
        count = 0
        first = 0
        transferred = 0
        expected = 0
        if let head { append(head) }
        for b in buffers { append(b) }
    }

    /// Appends `b`, merged into the last vector when it follows it in memory.
    private func append(_ b: HostMemoryRange) {
        expected += b.count
        // SAFETY (the accesses below): `count` is below the capacity, which
        // `reload` made at least the number of buffers. The address names
        // host memory its owner keeps mapped while the buffers (held by this
        // list) live: GuestMemory's HostMemoryRange contract; a merged
        // vector spans two or more such ranges that touch, each kept mapped
        // the same way.
        if count > 0 {
            let last = unsafe vectors[count - 1]
            if let base = unsafe last.iov_base, unsafe UInt(bitPattern: base) &+ UInt(last.iov_len) == b.address,
               unsafe last.iov_len <= Int.max - b.count {
                unsafe vectors[count - 1].iov_len += b.count
                return
            }
        }
        unsafe vectors.initializeElement(at: count, to: iovec(iov_base: UnsafeMutableRawPointer(bitPattern: b.address), iov_len: b.count))
        count += 1
    }

    deinit {
        // SAFETY: allocated in init or reload; iovec is trivial, so no
        // deinitialization is needed. Engines drop a list only after the
        // request's last system call or completion.
        unsafe vectors.deallocate()
    }

    /// Every byte moved.
    var isComplete: Bool { transferred == expected }

    /// The vectors not yet done, at most IOV_MAX of them (the most one
    /// preadv/pwritev or IORING_OP_READV/WRITEV takes: UIO_MAXIOV); a longer
    /// list goes in several calls, as after a partial transfer. The pointer
    /// is valid while this list lives, and the vectors stay unchanged until
    /// the next `advance`.
    @unsafe var remaining: (vectors: UnsafePointer<iovec>, count: Int32) {
        precondition(!isComplete, "no bytes left to move")
        let n = min(count - first, Int(pvh_iov_max()))
        // SAFETY: bytes are left, so some vector from `first` on is
        // unfinished: `first` < count, the allocation is not empty,
        // and `n` vectors from `first` are inside it.
        guard let base = unsafe vectors.baseAddress else { preconditionFailure("bytes left, yet no vectors") }
        return (unsafe UnsafePointer(base + first), Int32(n))
    }

    /// Records `n` more bytes moved (a system call's or completion's
    /// positive result): skips the vectors it finished and trims a partly
    /// done one, so `remaining` continues exactly after the last byte.
    func advance(by n: Int) {
        precondition(n >= 0 && n <= expected - transferred, "a transfer moved more than it was asked")
        transferred += n
        var left = n
        // SAFETY (the accesses below): every index is checked against
        // `count` (the vectors' number) before use.
        while first < count {
            let length = unsafe vectors[first].iov_len
            guard left >= length else { break }
            left -= length
            first += 1
        }
        if left > 0 {
            unsafe vectors[first].iov_base = unsafe vectors[first].iov_base.map { unsafe $0 + left }
            unsafe vectors[first].iov_len -= left
        }
    }

    /// The bytes not yet moved, copied: what a stream socket that took part
    /// of a frame still owes its peer.
    func remainingBytes() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(expected - transferred)
        for i in first ..< count {
            // SAFETY: `i` is below `count`; each vector names host memory
            // `buffers` keeps mapped (trimmed by `advance` to what is left).
            let vector = unsafe vectors[i]
            guard let base = unsafe vector.iov_base else { continue }
            unsafe out.append(contentsOf: UnsafeRawBufferPointer(start: base, count: vector.iov_len))
        }
        return out
    }
}
