import Foundation
import GuestMemory
import Hypercalls
import KVM
import PVHBoot
import XenABI

/// Why a domain could not be built. Usage errors (a bad file or option) are
/// told apart so the CLI can exit 2 with one line naming the culprit.
public enum DomainError: Error, CustomStringConvertible, Sendable {
    case unreadableFile(path: String, reason: String)
    case badKernel(path: String, reason: String)
    case badInitrd(path: String, reason: String)
    case badConfiguration(option: String, reason: String)
    case kvm(String)
    case memory(String)

    public var isUsageError: Bool {
        switch self {
        case .unreadableFile, .badKernel, .badInitrd, .badConfiguration: true
        case .kvm, .memory: false
        }
    }

    public var description: String {
        switch self {
        case .unreadableFile(let p, let r): "\(p): \(r)"
        case .badKernel(let p, let r): "\(p): \(r)"
        case .badInitrd(let p, let r): "\(p): \(r)"
        case .badConfiguration(let o, let r): "\(o): \(r)"
        case .kvm(let r): "KVM: \(r)"
        case .memory(let r): "guest memory: \(r)"
        }
    }
}

/// Reads a whole file, or says why not in words a user can act on.
func readFile(_ path: String) throws(DomainError) -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        var isDirectory: ObjCBool = false
        if !FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            throw .unreadableFile(path: path, reason: "no such file")
        }
        throw .unreadableFile(path: path, reason: isDirectory.boolValue ? "is a directory" : "cannot be read")
    }
    return [UInt8](data)
}
