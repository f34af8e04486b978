/// Why a disk specification was refused. Each case carries the whole
/// specification as the user wrote it; `description` is one line,
/// `--disk 'SPEC': REASON`, ready for the CLI to print.
public enum DiskSpecificationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Nothing but whitespace.
    case emptySpecification(spec: String)
    /// `name=value` with a name xl-disk-configuration(5) does not define.
    case unknownParameter(spec: String, parameter: String)
    /// A known parameter with a value outside its set (`access=x`, `format=vmdk`).
    case invalidValue(spec: String, parameter: String, value: String, expected: String)
    /// A parameter given twice with different values (positionally or by name).
    case respecified(spec: String, parameter: String)
    /// A positional parameter after target, format, vdev and access were all given.
    case tooManyPositionalParameters(spec: String, value: String)
    /// `target=` followed by what reads as more parameters: `target=` takes
    /// the rest of the specification, so it must come last.
    case targetNotLast(spec: String, following: String)
    /// A positional parameter containing `=` whose name is not a parameter
    /// (a target with `=` in it must be given as `target=`, last).
    case equalsInPositionalParameter(spec: String, value: String)
    /// A `name:` prefix xl does not know (`foo:/path`).
    case unknownPrefix(spec: String, prefix: String)
    /// No target, or an empty one, for a device that is not a CD-ROM.
    case missingTarget(spec: String)
    /// No vdev, or an empty one.
    case missingVirtualDevice(spec: String)
    /// A vdev that is not a virtual device name.
    case invalidVirtualDevice(spec: String, VirtualDeviceError)
    /// `backend=` naming a domain other than the control domain, which
    /// serves every device here.
    case unsupportedBackendDomain(spec: String, domain: String)
    /// A parameter xl knows that pvh does not implement (COLO, virtio, tap).
    case unsupported(spec: String, parameter: String, reason: String)
    /// A CD-ROM given read-write access (a CD-ROM is always read-only).
    case writableCDROM(spec: String)
    /// Two specifications with the same virtual device number.
    case duplicateVirtualDevice(spec: String, vdev: VirtualDevice, firstSpec: String)

    /// The specification at fault, as the user wrote it.
    public var spec: String {
        switch self {
        case .emptySpecification(let s), .unknownParameter(let s, _), .invalidValue(let s, _, _, _), .respecified(let s, _),
             .tooManyPositionalParameters(let s, _), .targetNotLast(let s, _), .equalsInPositionalParameter(let s, _),
             .unknownPrefix(let s, _), .missingTarget(let s), .missingVirtualDevice(let s), .invalidVirtualDevice(let s, _),
             .unsupportedBackendDomain(let s, _), .unsupported(let s, _, _), .writableCDROM(let s),
             .duplicateVirtualDevice(let s, _, _):
            s
        }
    }

    /// The option and specification at fault: `--disk 'SPEC'` (one line).
    public var option: String { "--disk '\(Self.oneLine(spec))'" }

    /// Why it was refused (one line).
    public var reason: String {
        let text: String = switch self {
        case .emptySpecification:
            "empty disk specification"
        case .unknownParameter(_, let parameter):
            "unknown parameter '\(parameter)'"
        case .invalidValue(_, let parameter, let value, let expected):
            "\(parameter) '\(value)': \(expected)"
        case .respecified(_, let parameter):
            "\(parameter) given twice"
        case .tooManyPositionalParameters(_, let value):
            "too many positional parameters at '\(value)' (the order is target,format,vdev,access)"
        case .targetNotLast(_, let following):
            "target= must come last: it takes the rest of the specification, so '\(following)' would be part of the target"
        case .equalsInPositionalParameter(_, let value):
            "'\(value)' is not a parameter (a target containing '=' must be given as target=, last)"
        case .unknownPrefix(_, let prefix):
            "unknown prefix '\(prefix)' (known: phy:, file:, aio:, tap:, tap2:, tapdisk:, ioemu:, raw:, qcow:, qcow2:, vhd:, iscsi:, nbd:, enbd:, drbd:)"
        case .missingTarget:
            "no target (only a CD-ROM may be empty)"
        case .missingVirtualDevice:
            "no vdev (the virtual device the guest sees, e.g. xvda)"
        case .invalidVirtualDevice(_, let error):
            error.description
        case .unsupportedBackendDomain(_, let domain):
            "backend '\(domain)': only the control domain (0, dom0, Domain-0) serves disks"
        case .unsupported(_, let parameter, let reason):
            "\(parameter): \(reason)"
        case .writableCDROM:
            "a CD-ROM is read-only: read-write access was asked for"
        case .duplicateVirtualDevice(_, let vdev, let firstSpec):
            "vdev '\(vdev.name)' (device \(vdev.number)) is already used by --disk '\(firstSpec)'"
        }
        return Self.oneLine(text)
    }

    /// `--disk 'SPEC': REASON`.
    public var description: String { "\(option): \(reason)" }

    /// The text with line breaks and other control characters escaped, so a
    /// specification holding a newline (xl takes one as whitespace) still
    /// makes one line.
    public static func oneLine(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                switch scalar.properties.generalCategory {
                case .control, .lineSeparator, .paragraphSeparator:
                    out += "\\u{" + String(scalar.value, radix: 16) + "}"
                default:
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
