#if canImport(Glibc)
import Glibc
#endif

/// Host-side failures of the KVM layer. Guest behaviour never throws these:
/// it arrives as a `VCPUExit`. Every case carries what is needed to report it.
public enum KVMError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `open(2)` of a device or file failed.
    case open(path: String, errno: Int32)
    /// An `ioctl(2)` failed; `name` is the kernel's request name (e.g. "KVM_RUN").
    case ioctl(name: String, errno: Int32)
    /// `mmap(2)` of the vCPU's `struct kvm_run` failed.
    case mmap(errno: Int32)
    /// KVM_GET_API_VERSION returned something other than 12 (KVM_API_VERSION).
    case apiVersion(Int32)
    /// The host kernel lacks a capability this operation needs.
    case unsupported(String)
    /// A caller-supplied argument is out of range (too many breakpoints,
    /// a completion that does not match the last exit, ...).
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .open(let path, let e): return "open(\(path)): \(KVMError.errnoName(e))"
        case .ioctl(let name, let e): return "\(name): \(KVMError.errnoName(e))"
        case .mmap(let e): return "mmap(kvm_run): \(KVMError.errnoName(e))"
        case .apiVersion(let v): return "KVM API version \(v), expected \(KVM_API_VERSION_EXPECTED)"
        case .unsupported(let what): return "unsupported by this host's KVM: \(what)"
        case .invalidArgument(let what): return "invalid argument: \(what)"
        }
    }

    static func errnoName(_ e: Int32) -> String {
        // SAFETY: strerror returns a pointer to a static or thread-local string.
        if let s = strerror(e) { return "\(String(cString: s)) (errno \(e))" }
        return "errno \(e)"
    }
}

/// The only KVM API version there has ever been (KVM_API_VERSION in linux/kvm.h).
let KVM_API_VERSION_EXPECTED: Int32 = 12
