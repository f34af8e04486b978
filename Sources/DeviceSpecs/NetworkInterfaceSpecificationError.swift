/// Why a vif specification was refused. Each case carries the whole
/// specification as the user wrote it; `description` is one line,
/// `--net 'SPEC': REASON`, ready for the CLI to print.
public enum NetworkInterfaceSpecificationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A parameter without `=` (vif specifications have no flags).
    case notKeyValue(spec: String, token: String)
    /// `key=value` with a key neither xl-network-configuration(5) nor pvh defines.
    case unknownKey(spec: String, key: String)
    /// A known key with a value outside its set.
    case invalidValue(spec: String, key: String, value: String, expected: String)
    /// `rate=` that is not xl's `RATE[@INTERVAL]`.
    case invalidRate(spec: String, value: String, NetworkRateLimit.ParseError)
    /// A key given twice with different values.
    case respecified(spec: String, key: String)
    /// Keys that contradict each other (`type=user` with `bridge=`).
    case conflict(spec: String, reason: String)
    /// `backend=` naming a domain other than the control domain.
    case unsupportedBackendDomain(spec: String, domain: String)
    /// A key xl knows that pvh does not implement (COLO).
    case unsupported(spec: String, key: String, reason: String)
    /// Two interfaces with the same MAC address.
    case duplicateMAC(spec: String, mac: MACAddress, firstSpec: String)
    /// Two interfaces with the same host interface name.
    case duplicateInterfaceName(spec: String, name: String, firstSpec: String)
    /// Two interfaces with the same device ID.
    case duplicateDeviceID(spec: String, devid: Int, firstSpec: String)

    /// The specification at fault, as the user wrote it.
    public var spec: String {
        switch self {
        case .notKeyValue(let s, _), .unknownKey(let s, _), .invalidValue(let s, _, _, _), .invalidRate(let s, _, _),
             .respecified(let s, _), .conflict(let s, _), .unsupportedBackendDomain(let s, _), .unsupported(let s, _, _),
             .duplicateMAC(let s, _, _), .duplicateInterfaceName(let s, _, _), .duplicateDeviceID(let s, _, _):
            s
        }
    }

    /// The option and specification at fault: `--net 'SPEC'` (one line).
    public var option: String { "--net '\(DiskSpecificationError.oneLine(spec))'" }

    /// Why it was refused (one line).
    public var reason: String {
        let text: String = switch self {
        case .notKeyValue(_, let token):
            "'\(token)' is not key=value"
        case .unknownKey(_, let key):
            "unknown key '\(key)'"
        case .invalidValue(_, let key, let value, let expected):
            "\(key) '\(value)': \(expected)"
        case .invalidRate(_, let value, let error):
            "rate '\(value)': \(error)"
        case .respecified(_, let key):
            "\(key) given twice"
        case .conflict(_, let reason):
            reason
        case .unsupportedBackendDomain(_, let domain):
            "backend '\(domain)': only the control domain (0, dom0, Domain-0) serves network interfaces"
        case .unsupported(_, let key, let reason):
            "\(key): \(reason)"
        case .duplicateMAC(_, let mac, let firstSpec):
            "mac \(mac) is already used by --net '\(firstSpec)'"
        case .duplicateInterfaceName(_, let name, let firstSpec):
            "vifname '\(name)' is already used by --net '\(firstSpec)'"
        case .duplicateDeviceID(_, let devid, let firstSpec):
            "devid \(devid) is already used by --net '\(firstSpec)'"
        }
        return DiskSpecificationError.oneLine(text)
    }

    /// `--net 'SPEC': REASON`.
    public var description: String { "\(option): \(reason)" }
}
