import CKVM
#if canImport(Glibc)
import Glibc
#endif
#if DEBUG
import Locking
import Synchronization
#endif

/// The single path by which the KVM target calls `ioctl(2)`.
///
/// In debug builds every call can be recorded (`KVMSyscallRecorder`), which
/// lets tests assert e.g. that the exit round trip issues exactly one
/// KVM_RUN and no register ioctls.
enum Syscall {
    /// ioctl with a pointer argument. Returns the non-negative result or throws
    /// `.ioctl(name, errno)`.
    @inline(__always)
    static func ioctl(_ fd: Int32, _ request: UInt, _ name: StaticString, _ arg: UnsafeMutableRawPointer?) throws(KVMError) -> Int32 {
        #if DEBUG
        KVMSyscallRecorder.record(name)
        #endif
        // SAFETY: `arg` points to the struct the request's _IOW/_IOR/_IOWR
        // encoding names, sized as linux/kvm.h defines it (callers allocate it
        // as that C type), or is nil for requests that take none.
        let r = pvh_ioctl_ptr(fd, request, arg)
        if r < 0 { throw .ioctl(name: name.description, errno: pvh_errno()) }
        return r
    }

    /// ioctl with an integer argument (KVM_CHECK_EXTENSION, KVM_CREATE_VCPU, ...).
    @inline(__always)
    static func ioctl(_ fd: Int32, _ request: UInt, _ name: StaticString, value: UInt) throws(KVMError) -> Int32 {
        #if DEBUG
        KVMSyscallRecorder.record(name)
        #endif
        let r = pvh_ioctl(fd, request, value)
        if r < 0 { throw .ioctl(name: name.description, errno: pvh_errno()) }
        return r
    }
}

#if DEBUG
/// Debug-only recording seam: while `start()`ed, the name of every ioctl the
/// KVM target issues from the thread that called `start()` is appended to a
/// log (other threads, e.g. other tests' vCPUs, are not recorded). Cheap when
/// off (one atomic load).
public enum KVMSyscallRecorder {
    private static let enabled = Atomic<Bool>(false)
    private static let thread = Atomic<UInt>(0)
    private static let log = Lock<[String]>([])

    /// Clears the log and starts recording this thread's ioctls.
    public static func start() {
        log.withLock { $0.removeAll() }
        thread.store(pvh_pthread_self(), ordering: .sequentiallyConsistent)
        enabled.store(true, ordering: .sequentiallyConsistent)
    }

    /// Stops recording and returns the ioctl names recorded since `start()`.
    public static func stop() -> [String] {
        enabled.store(false, ordering: .sequentiallyConsistent)
        return log.withLock { $0 }
    }

    static func record(_ name: StaticString) {
        guard enabled.load(ordering: .relaxed), thread.load(ordering: .relaxed) == pvh_pthread_self() else { return }
        log.withLock { $0.append(name.description) }
    }
}
#endif

/// Reads a small text file (/proc, /sys) whole; nil if it cannot be opened.
func readTextFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        // SAFETY: the buffer is `chunk.count` bytes long.
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}
