#if canImport(Glibc)
import Glibc
#endif
import CHostIO
import Foundation

/// Why a disk's backing could not be opened. Each `description` is one line
/// that names the path and says what to do where there is something to do.
public enum BackingFileError: Error, Hashable, Sendable, CustomStringConvertible {
    /// No such file (ENOENT, or ENOTDIR on the way).
    case missing(path: String)
    /// Neither a regular file nor a block device.
    case notFileOrBlockDevice(path: String, kind: NodeKind)
    /// EACCES or EPERM (an immutable file opened for writing, say).
    case permissionDenied(path: String)
    /// Opened for writing on a read-only file system (EROFS).
    case readOnlyFileSystem(path: String)
    /// Another open file description holds a conflicting flock(2) lock:
    /// another pvh using it (writable: anyone; read-only: a writer).
    case locked(path: String)
    /// A block device the kernel holds (mounted, a device-mapper or md
    /// member): a writable block device is opened with O_EXCL, which says
    /// EBUSY then (open(2), "O_EXCL ... block device").
    case inUse(path: String)
    /// An image format pvh does not read.
    case notRaw(path: String, format: ImageFormat)
    /// O_DIRECT was asked for and the file system refuses it (EINVAL).
    case directIOUnsupported(path: String)
    /// Any other failure of `call`.
    case system(path: String, call: BackingFileCall, errno: Int32)

    public var description: String {
        switch self {
        case .missing(let p): "\(p): no such file or directory"
        case .notFileOrBlockDevice(let p, let k): "\(p): is \(k), not a regular file or block device"
        case .permissionDenied(let p): "\(p): permission denied"
        case .readOnlyFileSystem(let p): "\(p): on a read-only file system; use it read-only"
        case .locked(let p): "\(p): locked by another process (flock); is another VM using it?"
        case .inUse(let p): "\(p): block device in use by the system (mounted or held by another driver)"
        case .notRaw(let p, let f):
            "\(p): a \(f) image, not a raw disk; convert it with `qemu-img convert -O raw \(Self.quoted(p)) \(Self.quoted(p + ".raw"))`"
        case .directIOUnsupported(let p): "\(p): the file system does not support O_DIRECT; use it without direct I/O"
        // SAFETY: strerror returns a NUL-terminated string, copied at once.
        case .system(let p, let c, let e): "\(p): \(c) failed: \(unsafe String(cString: strerror(e))) (errno \(e))"
        }
    }

    /// `path` as one shell word (single quotes unless it needs none).
    static func quoted(_ path: String) -> String {
        let plain = path.unicodeScalars.allSatisfy { $0.isASCII && (CharacterSet.alphanumerics.contains($0) || "/._-+,:@".unicodeScalars.contains($0)) }
        return plain && !path.isEmpty ? path : "'" + path.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}

/// What a path names when it is not a disk (stat(2), st_mode's S_IFMT).
public enum NodeKind: Hashable, Sendable, CustomStringConvertible {
    case directory, characterDevice, fifo, socket, other

    init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFDIR: self = .directory
        case S_IFCHR: self = .characterDevice
        case S_IFIFO: self = .fifo
        case S_IFSOCK: self = .socket
        default: self = .other
        }
    }

    public var description: String {
        switch self {
        case .directory: "a directory"
        case .characterDevice: "a character device"
        case .fifo: "a FIFO"
        case .socket: "a socket"
        case .other: "of an unknown file type"
        }
    }
}

/// The system call a `BackingFileError.system` names.
public enum BackingFileCall: String, Hashable, Sendable, CustomStringConvertible {
    case stat, open, fstat, flock, pread, fcntl, ioctl
    public var description: String { rawValue }
}

/// A disk's backing, a raw image file or a block device, opened the way the
/// block backend serves it, with the geometry the backend advertises
/// (xenstore `sectors`, `sector-size`, `physical-sector-size`,
/// `feature-discard`, `discard-granularity`: Xen's io/blkif.h).
///
/// Opening checks, in order: the path names a regular file or block device
/// (stat, and fstat again on the descriptor, so a path swapped in between
/// is caught); the open itself (O_CLOEXEC; O_NONBLOCK until checked, so a
/// FIFO put there cannot hang it; O_EXCL for a writable block device, so
/// one the kernel is using is refused); the lock; the image format; then
/// O_DIRECT (fcntl F_SETFL, which says EINVAL where the file system has no
/// direct I/O, as open(2) would).
///
/// Locking (flock(2), non-blocking): writable opens take LOCK_EX, read-only
/// ones LOCK_SH. So any number of VMs may share an image read-only, but
/// never while one writes it; a writer is refused while anyone has it open
/// read-only too, because a reader would see the disk change under its
/// cache. flock locks belong to the open file description, so two opens in
/// one process conflict as two processes do. They are advisory and are not
/// QEMU's (which takes OFD byte-range locks, fcntl(2)): they keep pvh from
/// pvh and from `flock(1)` users. On a block device they are per device
/// node.
///
/// Ownership: the descriptor closes when the last reference goes. Engines
/// (`makeEngine`) hold a strong reference to their file, so it stays open
/// until every engine made from it has been shut down and released; the
/// backend need not order the two.
public final class BlockBackingFile: @unchecked Sendable {
    // SAFETY (Sendable): every stored property is immutable.

    /// Which engine `makeEngine` makes.
    public enum EngineKind: Hashable, Sendable {
        /// `IOUringEngine`; `makeEngine` throws when io_uring is unavailable.
        case ioUring
        /// `ThreadPoolEngine` with its default thread count.
        case threadPool
        /// `SynchronousEngine`: I/O on the submitting thread (tests, tools).
        case synchronous
        /// io_uring where the host has it, else the thread pool.
        case automatic
    }

    /// The path as given to `open`.
    public let path: String
    public let isWritable: Bool
    /// Opened with O_DIRECT: no host page cache, and every transfer must be
    /// aligned to `logicalSectorSize` in offset and length.
    public let isDirect: Bool
    public let isBlockDevice: Bool
    /// The size when opened: st_size, or BLKGETSIZE64 for a block device.
    public let sizeInBytes: UInt64
    /// The unit of addressing: BLKSSZGET for a block device; for a file 512,
    /// or with O_DIRECT the file system's direct-I/O offset alignment
    /// (statx STATX_DIOALIGN, Linux 6.1) when it is larger.
    public let logicalSectorSize: Int
    /// The unit written without read-modify-write: BLKPBSZGET for a block
    /// device; for a file st_blksize rounded down to a power of two and
    /// kept within 512...4096 (blkif's physical-sector-size is a hint to the
    /// guest's alignment, not a promise).
    public let physicalSectorSize: Int
    /// Whether discard is worth advertising. Block devices: sysfs
    /// `queue/discard_max_bytes` > 0. Files: true; a file system without hole
    /// punching makes each discard complete `.unsupported` (EOPNOTSUPP), which
    /// the backend reports as such. (There is no harmless probe: fallocate of
    /// an empty range is EINVAL everywhere.)
    public let supportsDiscard: Bool
    /// The discard unit: sysfs `queue/discard_granularity` for a block
    /// device, st_blksize for a file (holes are whole file-system blocks).
    public let discardGranularity: Int
    /// Always false: the engines do not issue BLKSECDISCARD, and Linux
    /// exports no sysfs attribute that says whether a device has secure
    /// erase (Documentation/ABI/stable/sysfs-block lists discard limits
    /// only), so `discard-secure` is not offered.
    public let supportsSecureDiscard: Bool

    /// The open descriptor, for the engines.
    let fileDescriptor: Int32

    /// How the engines discard on this backing.
    var discardMethod: DiscardMethod { isBlockDevice ? .blockDiscard : .punchHole }

    private init(path: String, fd: Int32, writable: Bool, direct: Bool, blockDevice: Bool, size: UInt64, logical: Int, physical: Int,
                 discard: Bool, granularity: Int) {
        self.path = path
        fileDescriptor = fd
        isWritable = writable
        isDirect = direct
        isBlockDevice = blockDevice
        sizeInBytes = size
        logicalSectorSize = logical
        physicalSectorSize = physical
        supportsDiscard = discard
        discardGranularity = granularity
        supportsSecureDiscard = false
    }

    deinit { close(fileDescriptor) }

    /// Opens the raw image or block device at `path` for reading, or for
    /// reading and writing, optionally with O_DIRECT; see the type for the
    /// checks and the locking.
    public static func open(path: String, writable: Bool, direct: Bool = false) throws(BackingFileError) -> BlockBackingFile {
        var st = stat()
        // SAFETY: `st` is a valid stat buffer for the call.
        guard unsafe stat(path, &st) == 0 else { throw openError(errno, path: path, call: .stat) }
        let mode = st.st_mode & S_IFMT
        guard mode == S_IFREG || mode == S_IFBLK else { throw .notFileOrBlockDevice(path: path, kind: NodeKind(mode: st.st_mode)) }
        let blockDevice = mode == S_IFBLK

        var flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK
        if writable && blockDevice { flags |= O_EXCL }
        // SAFETY (this and the other calls given `path`): Swift passes a
        // NUL-terminated copy of the string, valid for the call.
        let fd = unsafe Glibc.open(path, flags)
        guard fd >= 0 else { throw openError(errno, path: path, call: .open) }
        return try finishOpening(fd: fd, path: path, writable: writable, direct: direct, expecting: mode)
    }

    /// Takes over `descriptor`, an image another process opened and passed
    /// (a hot-plugged disk the daemon opened for a jailed guest process:
    /// docs/ARCHITECTURE.md, Sandbox), with the same checks and lock as
    /// `open`: a regular file or block device, open for writing when
    /// `writable` (fcntl F_GETFL), flock'ed (the sender's lock, on the same
    /// open file description, is this one), raw. The descriptor is this
    /// object's from the call on, closed on any failure. `path` names it in
    /// messages and the store.
    public static func adopt(descriptor fd: Int32, path: String, writable: Bool, direct: Bool = false) throws(BackingFileError) -> BlockBackingFile {
        var st = stat()
        // SAFETY: `st` is a valid stat buffer for the call.
        guard unsafe fstat(fd, &st) == 0 else {
            let e = errno
            close(fd)
            throw .system(path: path, call: .fstat, errno: e)
        }
        let access = fcntl(fd, F_GETFL) & O_ACCMODE
        guard access == (writable ? O_RDWR : O_RDONLY) || (!writable && access == O_RDWR) else {
            close(fd)
            throw .permissionDenied(path: path)
        }
        return try finishOpening(fd: fd, path: path, writable: writable, direct: direct, expecting: st.st_mode & S_IFMT)
    }

    /// `open`'s and `adopt`'s common part, from an open descriptor (closed
    /// on any failure).
    private static func finishOpening(fd: Int32, path: String, writable: Bool, direct: Bool,
                                      expecting mode: mode_t) throws(BackingFileError) -> BlockBackingFile {
        var keep = false
        defer { if !keep { close(fd) } }
        var st = stat()

        // SAFETY: as above.
        guard unsafe fstat(fd, &st) == 0 else { throw .system(path: path, call: .fstat, errno: errno) }
        let blockDevice = mode == S_IFBLK
        guard st.st_mode & S_IFMT == mode, mode == S_IFREG || blockDevice else {
            throw st.st_mode & S_IFMT == S_IFREG || st.st_mode & S_IFMT == S_IFBLK
                ? .system(path: path, call: .fstat, errno: ESTALE)  // replaced by another kind of disk while opening
                : .notFileOrBlockDevice(path: path, kind: NodeKind(mode: st.st_mode))
        }

        guard flock(fd, (writable ? LOCK_EX : LOCK_SH) | LOCK_NB) == 0 else {
            throw errno == EWOULDBLOCK ? .locked(path: path) : .system(path: path, call: .flock, errno: errno)
        }

        let size: UInt64
        if blockDevice {
            var bytes: UInt64 = 0
            // SAFETY: `bytes` is the u64 BLKGETSIZE64 writes.
            let r = unsafe pvh_block_size_bytes(fd, &bytes)
            guard r == 0 else { throw .system(path: path, call: .ioctl, errno: -r) }
            size = bytes
        } else {
            size = UInt64(max(st.st_size, 0))
        }

        if let format = try imageFormat(fd: fd, size: size, path: path) { throw .notRaw(path: path, format: format) }

        // F_SETFL sets O_DIRECT and clears the O_NONBLOCK used for opening
        // (fcntl(2): F_SETFL changes O_APPEND, O_ASYNC, O_DIRECT, O_NOATIME
        // and O_NONBLOCK).
        guard fcntl(fd, F_SETFL, direct ? pvh_o_direct() : 0) == 0 else {
            throw errno == EINVAL && direct ? .directIOUnsupported(path: path) : .system(path: path, call: .fcntl, errno: errno)
        }

        let geometry = blockDevice ? try blockGeometry(fd: fd, rdev: st.st_rdev, path: path) : fileGeometry(fd: fd, st: st, direct: direct)
        keep = true
        return BlockBackingFile(path: path, fd: fd, writable: writable, direct: direct, blockDevice: blockDevice, size: size,
                                logical: geometry.logical, physical: geometry.physical, discard: geometry.discard,
                                granularity: geometry.granularity)
    }

    /// Sends this file's descriptor (SCM_RIGHTS with the byte `tag`) over
    /// the connected Unix socket `socket`: the receiver's copy shares the
    /// open file description, and with it the flock (`adopt` on the other
    /// side). 0, or the errno.
    public func sendDescriptor(tag: UInt8, over socket: Int32) -> Int32 {
        DescriptorPassing.send([fileDescriptor], tag: tag, over: socket)
    }

    /// Makes an engine of `kind` for this backing; `depth` is the io_uring
    /// depth or the thread pool's queue bound; with `reaping: .caller` an
    /// io_uring engine is a `CallerReapedBlockIOEngine` (the others ignore
    /// it). Throws only for `.ioUring` when io_uring is unavailable
    /// (`.automatic` falls back instead).
    public func makeEngine(_ kind: EngineKind, depth: Int = IOUringEngine.defaultDepth, reaping: BlockIOCompletionReaping = .engineThread,
                           submission: IOUringSubmission = .batch, taskRun: IOUringTaskRun = .signal,
                           onComplete: @escaping @Sendable ([BlockIOCompletion]) -> Void) throws(IOUringUnavailable) -> any BlockIOEngine {
        func ioUring() throws(IOUringUnavailable) -> any BlockIOEngine {
            switch reaping {
            case .engineThread: try IOUringEngine.make(file: self, depth: depth, submission: submission, onComplete: onComplete)
            case .caller:
                try IOUringEngine.makeCallerReaped(file: self, depth: depth, submission: submission, taskRun: taskRun,
                                                   onComplete: onComplete)
            }
        }
        switch kind {
        case .ioUring:
            return try ioUring()
        case .threadPool:
            return ThreadPoolEngine(file: self, queueDepth: depth, onComplete: onComplete)
        case .synchronous:
            return SynchronousEngine(fileDescriptor: fileDescriptor, discard: discardMethod, owner: self, onComplete: onComplete)
        case .automatic:
            do {
                return try ioUring()
            } catch {
                return ThreadPoolEngine(file: self, queueDepth: depth, onComplete: onComplete)
            }
        }
    }

    // MARK: - Opening, step by step

    private static func openError(_ e: Int32, path: String, call: BackingFileCall) -> BackingFileError {
        switch e {
        case ENOENT, ENOTDIR: .missing(path: path)
        case EACCES, EPERM: .permissionDenied(path: path)
        case EROFS: .readOnlyFileSystem(path: path)
        case EISDIR: .notFileOrBlockDevice(path: path, kind: .directory)
        case EBUSY: .inUse(path: path)
        default: .system(path: path, call: call, errno: e)
        }
    }

    /// Reads the first and last `ImageFormat.probeSize` bytes and looks for
    /// a format's signature.
    private static func imageFormat(fd: Int32, size: UInt64, path: String) throws(BackingFileError) -> ImageFormat? {
        let n = UInt64(ImageFormat.probeSize)
        let head = try read(fd: fd, count: Int(min(n, size)), at: 0, path: path)
        let tail = size >= n ? try read(fd: fd, count: Int(n), at: size - n, path: path) : []
        return ImageFormat.detect(head: head, tail: tail)
    }

    /// Up to `count` bytes at `offset` (fewer at end of file).
    private static func read(fd: Int32, count: Int, at offset: UInt64, path: String) throws(BackingFileError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            // SAFETY: the pointer and length stay inside `bytes`, which the
            // closure borrows.
            let r = unsafe bytes.withUnsafeMutableBytes { unsafe pread(fd, $0.baseAddress.map { unsafe $0 + done }, count - done, off_t(offset) + off_t(done)) }
            if r < 0 {
                if errno == EINTR { continue }
                throw .system(path: path, call: .pread, errno: errno)
            }
            if r == 0 { break }
            done += r
        }
        return Array(bytes.prefix(done))
    }

    private struct Geometry {
        var logical: Int
        var physical: Int
        var discard: Bool
        var granularity: Int
    }

    private static func fileGeometry(fd: Int32, st: stat, direct: Bool) -> Geometry {
        let blockSize = Int(st.st_blksize)
        var logical = 512
        if direct {
            var alignment: UInt32 = 0
            // SAFETY: `alignment` is the u32 the call writes.
            if unsafe pvh_dio_offset_alignment(fd, &alignment) == 0, Int(alignment) > logical { logical = Int(alignment) }
        }
        // The largest power of two not above st_blksize, within 512...4096.
        let power = blockSize > 0 ? 1 << (Int.bitWidth - 1 - blockSize.leadingZeroBitCount) : 512
        return Geometry(logical: logical, physical: max(logical, min(max(power, 512), 4096)), discard: true, granularity: max(blockSize, logical))
    }

    private static func blockGeometry(fd: Int32, rdev: dev_t, path: String) throws(BackingFileError) -> Geometry {
        var logical: Int32 = 0
        var physical: UInt32 = 0
        // SAFETY: each pointer is the int / unsigned int the ioctl writes.
        var r = unsafe pvh_block_logical_sector_size(fd, &logical)
        if r == 0 { r = unsafe pvh_block_physical_sector_size(fd, &physical) }
        guard r == 0 else { throw .system(path: path, call: .ioctl, errno: -r) }
        let queue = queueDirectory(rdev: rdev)
        let maxDiscard = queue.flatMap { sysfsNumber($0 + "/discard_max_bytes") } ?? 0
        let granularity = queue.flatMap { sysfsNumber($0 + "/discard_granularity") } ?? 0
        return Geometry(logical: Int(logical), physical: max(Int(physical), Int(logical)), discard: maxDiscard > 0,
                        granularity: granularity > 0 ? granularity : Int(logical))
    }

    /// The sysfs queue directory of a block device: /sys/dev/block/MAJ:MIN/queue,
    /// or for a partition its disk's (the partition's directory has none;
    /// `..` resolves from the symlink's target).
    private static func queueDirectory(rdev: dev_t) -> String? {
        let device = "/sys/dev/block/\(pvh_dev_major(rdev)):\(pvh_dev_minor(rdev))"
        for candidate in [device + "/queue", device + "/../queue"] where unsafe access(candidate, F_OK) == 0 {
            return candidate
        }
        return nil
    }

    private static func sysfsNumber(_ path: String) -> Int? {
        (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }
}
