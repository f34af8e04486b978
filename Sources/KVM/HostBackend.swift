#if canImport(Glibc)
import Glibc
#endif

/// Which implementation sits behind /dev/kvm. pvh behaves the same on all of
/// them, but a software backend changes what is fast and what works: guest
/// CPL0 code is run by KVM's instruction emulator, and instructions it cannot
/// emulate end in KVM_EXIT_INTERNAL_ERROR (see `EmulationFailure`).
public enum HostBackend: Equatable, Sendable, CustomStringConvertible {
    /// Intel VT-x (`vmx` in /proc/cpuinfo, module kvm_intel).
    case intelVMX
    /// AMD-V (`svm` in /proc/cpuinfo, module kvm_amd).
    case amdSVM
    /// A software backend with no hardware virtualization, named by its
    /// module (e.g. `kvm_pvm`).
    case software(module: String)
    /// /dev/kvm exists but no known vendor module was found.
    case unknown

    /// Known software-backend modules, in order of preference.
    static let softwareModules = ["kvm_pvm"]

    /// Decides the backend from the CPU flags (the `flags` lines of
    /// /proc/cpuinfo) and the set of loaded modules (/sys/module entries).
    /// Pure, for tests.
    public static func detect(cpuinfo: String, loadedModules: Set<String>) -> HostBackend {
        var flags = Set<Substring>()
        for line in cpuinfo.split(separator: "\n") where line.hasPrefix("flags") {
            if let colon = line.firstIndex(of: ":") {
                flags.formUnion(line[line.index(after: colon)...].split(separator: " "))
            }
            break  // every CPU lists the same flags
        }
        if flags.contains("vmx"), loadedModules.contains("kvm_intel") { return .intelVMX }
        if flags.contains("svm"), loadedModules.contains("kvm_amd") { return .amdSVM }
        if let m = softwareModules.first(where: loadedModules.contains) { return .software(module: m) }
        return .unknown
    }

    /// Detects the backend of this host from /proc/cpuinfo and /sys/module.
    public static func detect() -> HostBackend {
        let modules = ["kvm_intel", "kvm_amd"] + softwareModules
        // /sys/module/<name> exists for loaded and built-in modules alike
        // (built-in ones may have only `parameters`).
        let loaded = Set(modules.filter { access("/sys/module/\($0)", F_OK) == 0 })
        return detect(cpuinfo: readTextFile("/proc/cpuinfo") ?? "", loadedModules: loaded)
    }

    /// True for backends that run guest CPL0 code in KVM's emulator.
    public var isSoftware: Bool {
        if case .software = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .intelVMX: return "hardware: Intel VT-x (kvm_intel)"
        case .amdSVM: return "hardware: AMD-V (kvm_amd)"
        case .software(let m): return "software: \(m) (no VMX/SVM; guest CPL0 code is emulated by KVM)"
        case .unknown: return "unknown (no kvm_intel, kvm_amd or known software module)"
        }
    }
}
