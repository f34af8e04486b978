#if canImport(Glibc)
import Glibc
#endif
import CHostIO
import GuestMemory
import Locking

/// A guest interface's host side as a Linux TAP device (Documentation/
/// networking/tuntap.rst), opened with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR:
/// each read and write is one Ethernet frame behind a 10-byte struct
/// virtio_net_hdr, and TUNSETOFFLOAD (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
/// lets partial checksums and TCP segmentation travel both ways untouched.
///
/// The interface exists while the link is open (it is not made persistent):
/// it is gone when `stop` closes the descriptor, or the process exits.
public final class TapLink: DirectReceiveNetworkLink, BatchTransmitNetworkLink, @unchecked Sendable {
    // SAFETY (Sendable): the lets are immutable; `fd` is read under
    // `transmitLock` (transmit) or by the reader thread, which `stop` joins
    // before it closes the descriptor.

    /// The interface name the kernel gave (the one asked for).
    public let name: String
    /// The bridge the interface was added to, if any.
    public let bridge: String?
    /// The interface MTU set at creation (SIOCSIFMTU).
    public let mtu: Int
    /// Everything the contract can say: TUNSETOFFLOAD took TUN_F_CSUM, TUN_F_TSO4 and TUN_F_TSO6.
    public let capabilities: NetworkLinkCapabilities = [.partialChecksum, .tcpv4Segmentation, .tcpv6Segmentation]
    /// `tap NAME`, or `tap NAME (bridge BRIDGE)`.
    public var description: String { bridge.map { "tap \(name) (bridge \($0))" } ?? "tap \(name)" }

    /// The TAP's descriptor (non-blocking); -1 once stopped.
    private let fd: Int32
    private let transmitLock = Lock(TransmitState())
    /// What transmits reuse, under `transmitLock`: one frame's gather list
    /// and virtio header, rewritten for each frame rather than allocated
    /// (perf showed the allocations beside every writev of `pvh-bench net`).
    private struct TransmitState {
        var stopped = false
        let vectors = IOVectorList(capacity: 20)
        // SAFETY: the closure writes nothing (the bytes start zeroed).
        let header = unsafe LinkHeaderBuffer(count: Int(pvh_vnet_header_size())) { _ in }
        /// Batches' io_uring and vectors, made at the first batch; nil
        /// before, or for good once io_uring failed (then frames go one
        /// writev each).
        var batchWriter: TapBatchWriter?
        var batchUnavailable = false
        /// Each frame's parts for the one-writev-each fall-back.
        var scratch: [HostMemoryRange] = []
    }
    private let reader: LinkThread
    /// What direct receives use (`receive(into:)`, on the backend's
    /// context): their own gather list and header, and whether `stop` has
    /// begun, so no read starts on a descriptor being closed.
    private let receiveLock = Lock(TransmitState())
    /// The eventfd `watch` signals: the reader, waiting while the backend
    /// reads for itself, watches the TAP again.
    private let resume: Int32
    /// Whether the reader lets the backend read the next frames (the last
    /// one was large) or reads them itself (`DirectReceiveNetworkLink.watch`).
    /// pvh-bench net: reading 64-byte frames on the queue's thread halved
    /// rx-64 (the reads no longer beside the ring work on a second core),
    /// while reading TSO frames into the posted buffers sped rx-bulk.
    private let preferDirect = LinkFlag()
    /// Frames the reader dropped: a segmentation type links do not take (UDP GSO).
    private let droppedReceives = LinkCounter()

    /// The largest frame read: a 64 KiB TSO frame, or the largest IP packet
    /// plus an Ethernet header and a VLAN tag.
    static let maximumFrameLength = 65550

    /// Creates TAP interface `name` with `mtu`, brings it up, and adds it to
    /// the existing Linux bridge `bridge` when given. Needs CAP_NET_ADMIN.
    public init(name: String, mtu: Int = 1500, bridge: String? = nil) throws(NetworkLinkError) {
        guard Self.isValidInterfaceName(name) else { throw .invalidInterfaceName(name) }
        if let bridge, !Self.isValidInterfaceName(bridge) { throw .invalidInterfaceName(bridge) }
        guard (68...65535).contains(mtu) else { throw .invalidMTU(mtu, maximum: 65535) }
        var actual = [CChar](repeating: 0, count: Int(pvh_interface_name_size()))
        // SAFETY: `actual` has IFNAMSIZ bytes, what pvh_tap_open writes at most.
        let fd = unsafe pvh_tap_open(name, &actual)
        guard fd >= 0 else { throw .tapCreation(name: name, errno: -fd) }
        let given = String(decoding: actual.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        func fail(_ error: NetworkLinkError) -> NetworkLinkError {
            close(fd)
            return error
        }
        var r = pvh_tap_set_vnet_header_size(fd)
        guard r == 0 else { throw fail(.tapConfiguration(name: given, step: "TUNSETVNETHDRSZ", errno: -r)) }
        r = pvh_tap_set_offload(fd)
        guard r == 0 else { throw fail(.tapConfiguration(name: given, step: "TUNSETOFFLOAD", errno: -r)) }
        // SAFETY (the String arguments here and below): Swift passes a
        // NUL-terminated copy that lives for the call; the C side copies at
        // most IFNAMSIZ - 1 bytes of it into its ifreq.
        r = unsafe pvh_interface_set_mtu(given, Int32(mtu))
        guard r == 0 else { throw fail(.tapConfiguration(name: given, step: "MTU \(mtu) (SIOCSIFMTU)", errno: -r)) }
        if let bridge {
            r = unsafe pvh_bridge_add_interface(bridge, given)
            if r == -ENODEV { throw fail(.bridgeNotFound(bridge: bridge, interface: given)) }
            guard r == 0 else { throw fail(.bridgeAttach(bridge: bridge, interface: given, errno: -r)) }
        }
        r = unsafe pvh_interface_set_up(given)
        guard r == 0 else { throw fail(.tapConfiguration(name: given, step: "bringing it up (SIOCSIFFLAGS)", errno: -r)) }
        do {
            reader = try LinkThread()
        } catch {
            throw fail(error)
        }
        let resume = pvh_eventfd()
        guard resume >= 0 else { throw fail(.system(call: "eventfd", errno: -resume)) }
        self.resume = resume
        self.fd = fd
        self.name = given
        self.bridge = bridge
        self.mtu = mtu
    }

    deinit { stop() }

    /// Linux's dev_valid_name: 1 to IFNAMSIZ - 1 bytes, not "." or "..",
    /// no '/', ':' or whitespace.
    public static func isValidInterfaceName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count < Int(pvh_interface_name_size()), name != ".", name != ".." else { return false }
        return !bytes.contains { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 0x20 || $0 == 0x7f }
    }

    /// Frames dropped on receive because they carried an offload the
    /// contract cannot say (UDP segmentation).
    public var receiveDrops: Int { droppedReceives.value }

    /// One writev of the virtio header and `parts`: a TAP takes a frame
    /// whole or not at all. EAGAIN is `.busy`, EIO (interface down) `.linkDown`.
    public func transmit(_ parts: [HostMemoryRange], offload: NetworkOffload) -> Result<Void, NetworkTransmitDrop> {
        guard fits(parts, offload) else { return .failure(.tooLarge) }
        return transmitLock.withLock { s -> Result<Void, NetworkTransmitDrop> in
            guard !s.stopped else { return .failure(.linkDown) }
            return writeOne(parts, offload: offload, &s)
        }
    }

    /// Whether a frame of `parts` with `offload` is one this TAP takes:
    /// not empty, within the MTU (a TSO frame: 64 KiB), few enough parts
    /// for one writev with the header.
    private func fits(_ parts: some Collection<HostMemoryRange>, _ offload: NetworkOffload) -> Bool {
        let length = parts.reduce(0) { $0 + $1.count }
        let limit = offload.segmentation == .none ? mtu + 18 : Self.maximumFrameLength
        return length > 0 && length <= limit && parts.count + 1 < Int(pvh_iov_max())
    }

    /// Frames a batch takes in one io_uring_enter: pvh-bench net tx-64
    /// measured a TAP's 64-byte frames at 1.54 µs each by writev and 1.07
    /// µs each 32 to an io_uring_enter (1.29 µs 16 to one), the kernel
    /// writing them in the call as it does a writev (tun_chr_write_iter
    /// does not block).
    public var transmitBatchLimit: Int { TapBatchWriter.frames }

    /// The frames of `batch` in one io_uring_enter, an IORING_OP_WRITEV of
    /// its header and parts each, in the batch's order (the kernel issues
    /// a submission's entries in order, each to completion here: a TAP's
    /// write never waits); a batch of one, or a link whose io_uring failed,
    /// one writev each. Each frame's result is what `transmit` would say.
    public func transmit(_ batch: inout NetworkTransmitBatch) {
        transmitLock.withLock { s in
            if s.stopped {
                batch.results = Array(repeating: .failure(.linkDown), count: batch.count)
                return
            }
            if batch.count > 1, s.batchWriter == nil, !s.batchUnavailable {
                s.batchWriter = TapBatchWriter()
                s.batchUnavailable = s.batchWriter == nil
            }
            batch.results.removeAll(keepingCapacity: true)
            var start = 0
            while start < batch.count {
                guard batch.count > 1, let writer = s.batchWriter else {
                    for k in start..<batch.count { batch.results.append(writeChecked(batch, k, &s)) }
                    return
                }
                let end = min(batch.count, start + TapBatchWriter.frames)
                if !writer.write(batch, frames: start..<end, fd: fd, fits: fits) {
                    // io_uring refused: the frames it did not take and every
                    // later one go by writev (in order: those it took went first).
                    s.batchWriter = nil
                    s.batchUnavailable = true
                }
                for k in start..<end {
                    switch writer.result(k - start) {
                    case .sent(let n) where n == writer.expected(k - start): batch.results.append(.success(()))
                    // A TAP takes a frame whole or not at all (tun_get_user).
                    case .sent: batch.results.append(.failure(.hostError(EIO)))
                    case .refused: batch.results.append(.failure(.tooLarge))
                    case .failed(let e): batch.results.append(.failure(Self.drop(errno: e)))
                    case .notSubmitted: batch.results.append(writeChecked(batch, k, &s))
                    }
                }
                start = end
            }
        }
    }

    /// Frame `k` of `batch` by `writeOne`, if it `fits`.
    private func writeChecked(_ batch: NetworkTransmitBatch, _ k: Int, _ s: inout TransmitState)
        -> Result<Void, NetworkTransmitDrop> {
        let parts = batch.parts(of: k), offload = batch.offloads[k]
        guard fits(parts, offload) else { return .failure(.tooLarge) }
        s.scratch.removeAll(keepingCapacity: true)
        s.scratch.append(contentsOf: parts)
        defer { s.scratch.removeAll(keepingCapacity: true) }
        return writeOne(s.scratch, offload: offload, &s)
    }

    /// Why a write failed with `errno` (not EINTR).
    private static func drop(errno e: Int32) -> NetworkTransmitDrop {
        switch e {
        case EAGAIN: .busy
        case EIO: .linkDown  // the interface is down
        default: .hostError(e)
        }
    }

    /// `transmit`'s writev, under `transmitLock` (`s`), the link running.
    private func writeOne(_ parts: [HostMemoryRange], offload: NetworkOffload, _ s: inout TransmitState)
        -> Result<Void, NetworkTransmitDrop> {
        var plain = Self.vnetOffload(offload)
        unsafe s.header.rewrite { base in
            // SAFETY: `base` has pvh_vnet_header_size() bytes, what it writes.
            unsafe pvh_vnet_header_write(base, &plain)
        }
        let list = s.vectors
        list.reload(head: s.header.range, parts)
        defer { list.reload(head: nil, []) }  // the caller's pages are not kept
        // SAFETY: the vectors name the header buffer and the caller's
        // parts, which `list` keeps mapped during the call.
        let (vectors, count) = unsafe list.remaining
        while true {
            let n = unsafe writev(fd, vectors, count)
            if n >= 0 {
                // A TAP takes a frame whole or not at all (tun_get_user).
                return n == list.expected ? .success(()) : .failure(.hostError(EIO))
            }
            let e = errno
            if e == EINTR { continue }
            return .failure(Self.drop(errno: e))
        }
    }

    /// The carrier never changes: a TAP's is up while its descriptor is
    /// open, so `carrier` is not called.
    public func start(receive: @escaping @Sendable (NetworkFrame) -> Void,
                      carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {
        startReader(receive: receive, readable: nil)
    }

    /// As `start(receive:carrier:)`, the backend reading for itself
    /// whenever `readable` says so (`DirectReceiveNetworkLink`).
    public func start(receive: @escaping @Sendable (NetworkFrame) -> Void,
                      readable: @escaping @Sendable () -> Bool,
                      carrier: @escaping @Sendable (Bool) -> Void) throws(HostIOError) {
        startReader(receive: receive, readable: readable)
    }

    /// The reader thread: waits for frames (or, while the user reads for
    /// itself, for `watch`), and reads those nobody else does.
    private func startReader(receive: @escaping @Sendable (NetworkFrame) -> Void, readable: (@Sendable () -> Bool)?) {
        FrameMemory.retainFreedFrames
        let (fd, wake, resume) = (self.fd, reader.wake, self.resume)
        let drops = droppedReceives
        let preferDirect = self.preferDirect
        reader.start(name: "pvh-tap-\(name)") {
            let headerSize = Int(pvh_vnet_header_size())
            var reader = FrameReader(fd: fd, headerSize: headerSize)
            while true {
                switch LinkPoll.waitReadable(fd, wake: wake) {
                case .woken, .failed: return
                case .timedOut: continue
                case .ready: break
                }
                if let readable, preferDirect.value, readable() {
                    // The user reads until EAGAIN, then `watch` signals `resume`.
                    switch LinkPoll.waitReadable(resume, wake: wake) {
                    case .woken, .failed: return
                    case .timedOut, .ready: EventCounter.drain(resume)
                    }
                    continue
                }
                // Everything queued, one frame per read, until EAGAIN.
                readLoop: while true {
                    switch reader.next() {
                    case .frame(let bytes, let plain):
                        guard let offload = Self.offload(plain) else {
                            drops.increment()
                            continue
                        }
                        receive(NetworkFrame(bytes: bytes, offload: offload))
                        if readable != nil, bytes.count > FrameReader.copyLimit {
                            // Large frames: the backend reads the next ones itself.
                            preferDirect.set(true)
                            break readLoop
                        }
                    case .runt: break readLoop
                    case .interrupted: continue
                    case .empty: break readLoop
                    case .gone: return  // EBADFD and the like: the device is gone
                    }
                }
            }
        }
    }

    /// The largest frame a TAP with TSO hands over.
    public var maximumReceiveLength: Int { Self.maximumFrameLength }

    /// One readv of the virtio header (into the link's own buffer) and the
    /// frame (into `parts`). A TAP reads one frame per call and returns its
    /// whole length even when the buffers were shorter (tun_put_user), so a
    /// longer return is a frame cut short: `.dropped`.
    public func receive(into parts: [HostMemoryRange]) -> NetworkDirectReceive {
        guard parts.count < Int(pvh_iov_max()) else { return .dropped(length: 0) }
        return receiveLock.withLock { s -> NetworkDirectReceive in
            guard !s.stopped else { return .gone }
            let list = s.vectors
            list.reload(head: s.header.range, parts)
            defer { list.reload(head: nil, []) }  // the caller's pages are not kept
            let capacity = list.expected
            // SAFETY: the vectors name the header buffer and the caller's
            // parts, which `list` keeps mapped during the call; readv writes
            // within them only.
            let (vectors, count) = unsafe list.remaining
            while true {
                let n = unsafe readv(fd, vectors, count)
                if n < 0 {
                    switch errno {
                    case EINTR: continue
                    case EAGAIN: return .empty
                    default: return .gone
                    }
                }
                let headerSize = s.header.count
                guard n > headerSize else { return .dropped(length: 0) }  // a runt: nothing to deliver
                guard n <= capacity else { return .dropped(length: n - headerSize) }
                var plain = pvh_vnet_offload()
                // SAFETY: the header buffer holds pvh_vnet_header_size() bytes, what is read.
                unsafe s.header.read { unsafe pvh_vnet_header_read($0, &plain) }
                guard let offload = Self.offload(plain) else {
                    droppedReceives.increment()
                    return .dropped(length: 0)
                }
                return .frame(length: n - headerSize, offload: offload)
            }
        }
    }

    /// The reader thread watches the TAP again (the backend read it empty,
    /// or read a small frame).
    public func watch(lastFrameLarge: Bool) {
        preferDirect.set(lastFrameLarge)
        EventCounter.signal(resume)
    }

    /// The reader thread's reads: one frame per readv, the virtio header
    /// into a buffer of its own and the frame into the array handed on, so
    /// a TSO frame (up to 64 KiB) is not copied once more on its way to the
    /// backend (perf, pvh-bench net rx-bulk: that copy was a fifth of the
    /// reader's time). A fresh array holds room for the largest frame, so
    /// for small frames, which the copy costs little, the reader reads into
    /// one kept buffer and copies what came; it switches on the size of the
    /// frame before.
    struct FrameReader {
        enum Next {
            /// The frame's bytes and its virtio header's fields.
            case frame([UInt8], pvh_vnet_offload)
            /// No more than a header: skipped.
            case runt
            case interrupted
            /// EAGAIN: nothing queued.
            case empty
            /// Any other error: the descriptor is unusable.
            case gone
        }

        /// Frames up to this many bytes are copied out of the kept buffer.
        static let copyLimit = 4096
        let fd: Int32
        let headerSize: Int
        private var header: [UInt8]
        private var kept: [UInt8]
        /// The last frame was larger than `copyLimit`: read the next into an array of its own.
        private var large = false

        init(fd: Int32, headerSize: Int) {
            self.fd = fd
            self.headerSize = headerSize
            header = [UInt8](repeating: 0, count: headerSize)
            kept = [UInt8](repeating: 0, count: headerSize + TapLink.maximumFrameLength)
        }

        mutating func next() -> Next {
            if large {
                var n = 0
                var failure: Int32 = 0
                let capacity = TapLink.maximumFrameLength
                let headerSize = self.headerSize
                let fd = self.fd
                let frame = unsafe header.withUnsafeMutableBytes { head in
                    unsafe [UInt8](unsafeUninitializedCapacity: capacity) { storage, initialized in
                        // SAFETY: two vectors: the header array's `headerSize`
                        // bytes and the new array's `capacity` bytes of
                        // storage, both live for the call; readv writes
                        // within them only.
                        var vectors = unsafe [iovec(iov_base: head.baseAddress, iov_len: headerSize),
                                              iovec(iov_base: UnsafeMutableRawPointer(storage.baseAddress), iov_len: capacity)]
                        n = unsafe readv(fd, &vectors, 2)
                        failure = n < 0 ? errno : 0
                        // What readv wrote past the header, and nothing more.
                        initialized = max(0, n - headerSize)
                    }
                }
                if n < 0 { return Self.failed(failure) }
                guard n > headerSize else { return .runt }
                large = frame.count > Self.copyLimit
                var plain = pvh_vnet_offload()
                // SAFETY: `header` holds headerSize bytes, what is read.
                unsafe header.withUnsafeBytes { unsafe pvh_vnet_header_read($0.baseAddress, &plain) }
                return .frame(frame, plain)
            }
            let capacity = kept.count
            // SAFETY: reads at most `capacity` bytes into the buffer's own storage.
            let n = unsafe kept.withUnsafeMutableBytes { unsafe read(fd, $0.baseAddress, capacity) }
            if n < 0 { return Self.failed(errno) }
            guard n > headerSize else { return .runt }
            large = n - headerSize > Self.copyLimit
            var plain = pvh_vnet_offload()
            // SAFETY: the buffer holds at least headerSize bytes, what is read.
            unsafe kept.withUnsafeBytes { unsafe pvh_vnet_header_read($0.baseAddress, &plain) }
            return .frame(Array(kept[headerSize ..< n]), plain)
        }

        private static func failed(_ error: Int32) -> Next {
            switch error {
            case EINTR: .interrupted
            case EAGAIN: .empty
            default: .gone
            }
        }
    }

    /// Wakes the reader (its eventfd), waits for it to return, and closes
    /// the descriptor, which removes the interface.
    public func stop() {
        let first = transmitLock.withLock { s in
            defer { s.stopped = true }
            return !s.stopped
        }
        guard first else { return }
        // A direct receive in progress ends before the descriptor closes.
        receiveLock.withLock { $0.stopped = true }
        reader.signal()
        reader.join()
        close(fd)
        close(resume)
    }

    /// The struct virtio_net_hdr a TAP reads in front of a frame carrying
    /// `offload` (native byte order, as a legacy TAP uses it).
    public static func virtioHeader(for offload: NetworkOffload) -> [UInt8] {
        var plain = vnetOffload(offload)
        var bytes = [UInt8](repeating: 0, count: Int(pvh_vnet_header_size()))
        // SAFETY: `bytes` has pvh_vnet_header_size() bytes, what is written.
        unsafe bytes.withUnsafeMutableBytes { unsafe pvh_vnet_header_write($0.baseAddress, &plain) }
        return bytes
    }

    /// The offload a struct virtio_net_hdr from a TAP describes; nil for a
    /// segmentation type the contract cannot say (UDP), or too few bytes.
    public static func offload(virtioHeader bytes: [UInt8]) -> NetworkOffload? {
        guard bytes.count >= Int(pvh_vnet_header_size()) else { return nil }
        var plain = pvh_vnet_offload()
        // SAFETY: `bytes` holds at least pvh_vnet_header_size() bytes, what is read.
        unsafe bytes.withUnsafeBytes { unsafe pvh_vnet_header_read($0.baseAddress, &plain) }
        return offload(plain)
    }

    /// The contract's offload as the C side's plain fields.
    static func vnetOffload(_ offload: NetworkOffload) -> pvh_vnet_offload {
        var plain = pvh_vnet_offload()
        if let partial = offload.partialChecksum {
            plain.needs_checksum = 1
            plain.checksum_start = partial.start
            plain.checksum_offset = partial.offset
            // What tun_get_user would make it anyway: the headers up to the
            // checksum field's end.
            plain.header_length = partial.start &+ partial.offset &+ 2
        }
        plain.data_valid = offload.checksumValidated ? 1 : 0
        switch offload.segmentation {
        case .none: plain.gso = UInt8(PVH_GSO_NONE)
        case .tcpv4(let size):
            plain.gso = UInt8(PVH_GSO_TCPV4)
            plain.segment_size = size
        case .tcpv6(let size):
            plain.gso = UInt8(PVH_GSO_TCPV6)
            plain.segment_size = size
        }
        return plain
    }

    /// The C side's plain fields as the contract's offload; nil for a
    /// segmentation type the contract cannot say.
    static func offload(_ plain: pvh_vnet_offload) -> NetworkOffload? {
        var offload = NetworkOffload(checksumValidated: plain.data_valid != 0)
        if plain.needs_checksum != 0 {
            offload.partialChecksum = .init(start: plain.checksum_start, offset: plain.checksum_offset)
        }
        switch Int(plain.gso) {
        case PVH_GSO_NONE: offload.segmentation = .none
        case PVH_GSO_TCPV4: offload.segmentation = .tcpv4(segmentSize: plain.segment_size)
        case PVH_GSO_TCPV6: offload.segmentation = .tcpv6(segmentSize: plain.segment_size)
        default: return nil
        }
        return offload
    }
}


/// What a TAP's batched transmits use, kept from batch to batch under the
/// link's transmit lock: an io_uring of `frames` entries, and for each
/// frame of a batch its virtio header and iovecs in memory of their own
/// (the kernel reads them until it posts the frame's completion, which
/// `write` waits for).
@safe final class TapBatchWriter {
    /// Frames per io_uring_enter (`TapLink.transmitBatchLimit`).
    static let frames = 32
    /// What became of one frame of the last `write`.
    enum Outcome {
        /// Written: this many bytes, header included.
        case sent(Int)
        /// Not a frame the TAP takes (`TapLink.fits`): not submitted.
        case refused
        /// The write failed with this errno.
        case failed(Int32)
        /// io_uring did not take it: not written.
        case notSubmitted
    }

    private let ring: OpaquePointer
    private let headerSize = Int(pvh_vnet_header_size())
    private let headers: UnsafeMutableRawBufferPointer
    private var vectors: UnsafeMutableBufferPointer<iovec>
    private let counts: UnsafeMutableBufferPointer<UInt32>
    private let results: UnsafeMutableBufferPointer<Int32>
    /// Per frame of the last write: its submission's index (-1: refused)
    /// and the bytes it should write.
    private var submission = [Int](repeating: -1, count: TapBatchWriter.frames)
    private var expectedBytes = [Int](repeating: 0, count: TapBatchWriter.frames)
    private var submitted = 0

    /// Nil when io_uring is not to be had (ENOSYS, EPERM, ENOMEM).
    init?() {
        var error: Int32 = 0
        // SAFETY: `error` is a valid Int32 for the call.
        guard let ring = unsafe pvh_uring_create(UInt32(Self.frames), &error) else { return nil }
        unsafe self.ring = ring
        unsafe headers = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.frames * max(headerSize, 1), alignment: 8)
        unsafe vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: Self.frames * 20)
        unsafe counts = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: Self.frames)
        unsafe results = UnsafeMutableBufferPointer<Int32>.allocate(capacity: Self.frames)
    }

    deinit {
        // SAFETY: no write is in flight (`write` returns only after every
        // completion, and the writer is used under the link's lock).
        unsafe pvh_uring_destroy(ring)
        unsafe headers.deallocate()
        unsafe vectors.deallocate()
        unsafe counts.deallocate()
        unsafe results.deallocate()
    }

    /// Writes frames `range` of `batch` (at most `frames` of them) to `fd`
    /// in one io_uring_enter, in order, and waits for every completion;
    /// `result` then says what became of each. False when io_uring failed
    /// (the frames it did not take are `.notSubmitted`): the writer is not
    /// to be used again.
    func write(_ batch: NetworkTransmitBatch, frames range: Range<Int>, fd: Int32,
               fits: (ArraySlice<HostMemoryRange>, NetworkOffload) -> Bool) -> Bool {
        precondition(range.count <= Self.frames, "a TAP batch of more frames than its ring")
        var needed = 0
        for k in range { needed += batch.parts(of: k).count + 1 }
        if unsafe needed > vectors.count {
            // SAFETY: no write is in flight: the last `write` waited for its
            // completions. iovec is trivial.
            unsafe vectors.deallocate()
            unsafe vectors = UnsafeMutableBufferPointer<iovec>.allocate(capacity: needed)
        }
        var vector = 0
        submitted = 0
        for (i, k) in range.enumerated() {
            let parts = batch.parts(of: k)
            guard fits(parts, batch.offloads[k]) else {
                submission[i] = -1
                continue
            }
            var plain = TapLink.vnetOffload(batch.offloads[k])
            // SAFETY (the accesses below): frame slot `submitted` is below
            // `frames`, so its header lies in `headers`; `vector` plus this
            // frame's vectors is at most `needed`, within `vectors`. Each
            // vector names the slot's header or a part, host memory its
            // owner keeps mapped while `batch` (the caller's) lives, which
            // is past the last completion.
            let header = unsafe headers.baseAddress.map { unsafe $0 + submitted * headerSize }
            unsafe pvh_vnet_header_write(header, &plain)
            unsafe vectors.initializeElement(at: vector, to: iovec(iov_base: header, iov_len: headerSize))
            var bytes = headerSize
            var at = vector + 1
            for part in parts {
                unsafe vectors.initializeElement(at: at, to: iovec(iov_base: UnsafeMutableRawPointer(bitPattern: part.address), iov_len: part.count))
                bytes += part.count
                at += 1
            }
            unsafe counts[submitted] = UInt32(at - vector)
            vector = at
            submission[i] = submitted
            expectedBytes[i] = bytes
            submitted += 1
        }
        guard submitted > 0 else { return true }
        // SAFETY: `vectors` holds the `counts` of the `submitted` frames in
        // order, `results` has room for `submitted`; the function returns
        // once the kernel has posted every completion (it reads the vectors
        // until then).
        let status = unsafe pvh_uring_write_frames(ring, fd, vectors.baseAddress, counts.baseAddress, UInt32(submitted),
                                                   results.baseAddress)
        return status == 0
    }

    /// What became of frame `index` (from 0) of the last `write`'s range.
    func result(_ index: Int) -> Outcome {
        let j = submission[index]
        guard j >= 0 else { return .refused }
        // SAFETY: `j` is below `submitted`, within `results`.
        let r = unsafe results[j]
        if r == -ECANCELED { return .notSubmitted }
        return r >= 0 ? .sent(Int(r)) : .failed(-r)
    }

    /// The bytes frame `index` of the last `write` should have written.
    func expected(_ index: Int) -> Int { expectedBytes[index] }
}
