// The disk specification grammar, scanned the way xl's flex scanner
// (tools/libs/util/libxlu_disk_l.l) does: at each parameter's start, in
// this order of precedence,
//   1. `target=` takes the rest of the specification;
//   2. a deprecated prefix (`phy:`, `raw:`, `tap:`, ...) is taken alone,
//      and scanning goes on right after its colon (`tap:aio:/x`);
//   3. any other `name:` followed by a non-alphanumeric is an unknown prefix;
//   4. otherwise the text up to the next comma is one parameter:
//      `name=value`, a flag, or a positional value.
// Bytes, not Characters: xl's grammar is over bytes, and the delimiters are
// ASCII, which never occurs inside a multibyte UTF-8 sequence.

/// `name=value` parameters (xl-disk-configuration(5) "Positional
/// Parameters" by name, "Other Parameters And Flags", "COLO Parameters").
enum DiskParameter: String, CaseIterable {
    case target, format, vdev, access, devtype, backend, backendtype, script, specification
    /// pvh's synonym of `access`.
    case mode
    case coloHost = "colo-host", coloPort = "colo-port", coloExport = "colo-export"
    case activeDisk = "active-disk", hiddenDisk = "hidden-disk"
    case grantUsage = "grant_usage"
}

/// Bare-keyword parameters.
enum DiskFlag: String, CaseIterable {
    case cdrom
    case directIOSafe = "direct-io-safe"
    case discard
    case noDiscard = "no-discard"
    case trusted, untrusted
    case colo
    case noColo = "no-colo"
}

/// The deprecated `name:` prefixes xl still takes (xl-disk-configuration(5)
/// "Deprecated Parameters, Prefixes And Syntaxes").
enum DeprecatedPrefix: String, CaseIterable {
    /// Formats: the same as `format=`.
    case raw, qcow, qcow2, vhd
    /// Scripts: the same as `script=block-<name>`.
    case iscsi, nbd, enbd, drbd
    /// Ignored (xend needed them; libxl strips them).
    case tapdisk, tap, tap2, aio, ioemu, file, phy
}

/// The parameters seen so far; `finish()` applies xl's defaults.
struct DiskSpecificationScanner {
    let spec: String
    private let bytes: [UInt8]
    /// nil: not given; "": given empty (it still fills its positional slot).
    private var target: String?
    private var format: DiskFormat?
    private var vdev: String?
    /// The access slot is filled, even by an empty value.
    private var accessGiven = false
    /// The access asked for; nil: the default.
    private var readOnly: Bool?
    private var isCDROM = false
    /// After a deprecated prefix the positional format slot is skipped.
    private var hadDeprecatedPrefix = false
    private var directIOSafe = false
    private var discardEnabled = true
    private var script: String?

    init(spec: String) {
        self.spec = spec
        bytes = Array(spec.utf8)
    }

    mutating func scan() throws(DiskSpecificationError) {
        guard bytes.contains(where: { !Self.isWhitespace($0) }) else { throw .emptySpecification(spec: spec) }
        var position = 0
        while true {
            while position < bytes.count, Self.isWhitespace(bytes[position]) { position += 1 }
            guard position < bytes.count else { break }
            let rest = bytes[position...]
            if let prefix = DeprecatedPrefix.allCases.first(where: { rest.starts(with: Array($0.rawValue.utf8) + [Self.colon]) }) {
                try apply(prefix)
                position += prefix.rawValue.utf8.count + 1
                continue
            }
            if let unknown = Self.unknownPrefix(rest) { throw .unknownPrefix(spec: spec, prefix: unknown) }
            let end = rest.firstIndex(of: Self.comma) ?? bytes.endIndex
            let token = bytes[position..<end]
            position = end + 1
            if let equals = token.firstIndex(of: Self.equals) {
                let name = Self.string(token[..<equals])
                if name == DiskParameter.target.rawValue {
                    try namedTarget(bytes[(equals + 1)...])
                    break
                }
                try named(name, Self.string(token[(equals + 1)...]), token: Self.string(token))
            } else if let flag = DiskFlag(rawValue: Self.string(token)) {
                try apply(flag)
            } else {
                try positional(Self.string(token))
            }
        }
    }

    /// Applies xl's defaults (`xlu_disk_parse`) and the checks that need the
    /// whole specification.
    func finish() throws(DiskSpecificationError) -> DiskSpecification {
        guard let vdevName = vdev, !vdevName.isEmpty else { throw .missingVirtualDevice(spec: spec) }
        let device: VirtualDevice
        do {
            device = try VirtualDevice(parsing: vdevName)
        } catch {
            throw .invalidVirtualDevice(spec: spec, error)
        }
        var format = format ?? .raw
        let target = target.flatMap { $0.isEmpty ? nil : $0 }
        if isCDROM {
            // A CD-ROM is removable and read-only; with no target it is an
            // empty drive, whatever format was named.
            if readOnly == false { throw .writableCDROM(spec: spec) }
            if target == nil { format = .empty }
        } else if target == nil {
            throw .missingTarget(spec: spec)
        }
        return DiskSpecification(spec: spec, target: target, format: format, vdev: device, isReadOnly: isCDROM || readOnly == true,
                                 isCDROM: isCDROM, directIOSafe: directIOSafe, discardEnabled: discardEnabled, script: script)
    }

    // MARK: Parameters

    /// `target=`: everything after it, less one trailing comma.
    private mutating func namedTarget(_ value: ArraySlice<UInt8>) throws(DiskSpecificationError) {
        let value = value.last == Self.comma ? value.dropLast() : value
        // What follows a comma and reads as a parameter was almost surely
        // meant as one: xl would take it into the path silently.
        for piece in value.split(separator: Self.comma, omittingEmptySubsequences: false).dropFirst() {
            let trimmed = piece.drop(while: Self.isWhitespace)
            let name = Self.string(trimmed.prefix(while: { $0 != Self.equals }))
            if DiskFlag(rawValue: Self.string(trimmed)) != nil || (trimmed.contains(Self.equals) && DiskParameter(rawValue: name) != nil) {
                throw .targetNotLast(spec: spec, following: Self.string(trimmed))
            }
        }
        try set(&target, Self.string(value), parameter: "target")
    }

    private mutating func named(_ name: String, _ value: String, token: String) throws(DiskSpecificationError) {
        guard let parameter = DiskParameter(rawValue: name) else {
            if Self.isParameterName(name) { throw .unknownParameter(spec: spec, parameter: name) }
            throw .equalsInPositionalParameter(spec: spec, value: token)
        }
        switch parameter {
        case .target:
            try set(&target, value, parameter: name)
        case .format:
            try setFormat(value, positional: false)
        case .vdev:
            try set(&vdev, value, parameter: name)
        case .access, .mode:
            try setAccess(value, parameter: name)
        case .devtype:
            try setDeviceType(value)
        case .backend:
            // xl names the backend domain; every device here is served by
            // the VMM, which plays domain 0.
            guard ["", "0", "dom0", "Domain-0"].contains(value) else {
                throw .unsupportedBackendDomain(spec: spec, domain: value)
            }
        case .backendtype:
            switch value {
            case "phy", "qdisk": break  // pvh's own backend serves either: nothing to choose
            case "tap", "standalone":
                throw .unsupported(spec: spec, parameter: "backendtype=\(value)", reason: "not implemented (phy and qdisk are)")
            default:
                throw .invalidValue(spec: spec, parameter: name, value: value, expected: "must be phy or qdisk")
            }
        case .script:
            try set(&script, value, parameter: name)
        case .specification:
            switch value {
            case "", "xen": break
            case "virtio":
                throw .unsupported(spec: spec, parameter: "specification=virtio", reason: "not implemented (Xen PV block devices only)")
            default:
                throw .invalidValue(spec: spec, parameter: name, value: value, expected: "must be xen")
            }
        case .coloHost, .coloPort, .coloExport, .activeDisk, .hiddenDisk:
            throw .unsupported(spec: spec, parameter: name, reason: "COLO replication is not implemented")
        case .grantUsage:
            throw .unsupported(spec: spec, parameter: name, reason: "not implemented (it applies to virtio disks)")
        }
    }

    private mutating func apply(_ flag: DiskFlag) throws(DiskSpecificationError) {
        switch flag {
        case .cdrom: isCDROM = true
        case .directIOSafe: directIOSafe = true
        case .discard: discardEnabled = true
        case .noDiscard: discardEnabled = false
        case .trusted, .untrusted, .noColo: break  // accepted: they change nothing here
        case .colo: throw .unsupported(spec: spec, parameter: flag.rawValue, reason: "COLO replication is not implemented")
        }
    }

    private mutating func apply(_ prefix: DeprecatedPrefix) throws(DiskSpecificationError) {
        hadDeprecatedPrefix = true
        switch prefix {
        case .raw, .qcow, .qcow2, .vhd:
            try setFormat(prefix.rawValue, positional: false)
        case .iscsi, .nbd, .enbd, .drbd:
            try set(&script, "block-\(prefix.rawValue)", parameter: "script")
        case .tapdisk, .tap, .tap2, .aio, .ioemu, .file, .phy:
            break
        }
    }

    /// A parameter that is neither `name=value` nor a flag fills the first
    /// positional slot not yet given (xl's positional rule).
    private mutating func positional(_ value: String) throws(DiskSpecificationError) {
        if target == nil {
            target = value
        } else if !hadDeprecatedPrefix && format == nil {
            // xend's empty CD-ROM, `,hdc:cdrom,r`: the vdev where the format would be.
            if target == "", try vdevAndDeviceType(value) {
                format = .empty
            } else {
                try setFormat(value, positional: true)
            }
        } else if vdev == nil {
            if try !vdevAndDeviceType(value) { try set(&vdev, value, parameter: "vdev") }
        } else if !accessGiven {
            try setAccess(value, parameter: "access")
        } else {
            throw .tooManyPositionalParameters(spec: spec, value: value)
        }
    }

    // MARK: Setters

    /// A string parameter: a second value is an error unless the first was
    /// empty or the same.
    private func set(_ field: inout String?, _ value: String, parameter: String) throws(DiskSpecificationError) {
        if let existing = field, !existing.isEmpty, existing != value { throw .respecified(spec: spec, parameter: parameter) }
        field = value
    }

    private mutating func setFormat(_ value: String, positional: Bool) throws(DiskSpecificationError) {
        guard let new = value.isEmpty ? .raw : DiskFormat(rawValue: value) else {
            var expected = "must be raw, qcow, qcow2, vhd, qed or empty"
            if positional, (try? VirtualDevice(parsing: value)) != nil {
                expected += " (positional order is target,format,vdev,access: leave format empty, as in 'TARGET,,\(value)')"
            }
            throw .invalidValue(spec: spec, parameter: "format", value: value, expected: expected)
        }
        if let format, format != new { throw .respecified(spec: spec, parameter: "format") }
        format = new
    }

    private mutating func setAccess(_ value: String, parameter: String) throws(DiskSpecificationError) {
        let new: Bool?
        switch value {
        case "r", "ro": new = true
        case "w", "rw": new = false
        case "": new = nil  // the default
        default: throw .invalidValue(spec: spec, parameter: parameter, value: value, expected: "must be r, ro, w or rw")
        }
        if let readOnly, let new, readOnly != new { throw .respecified(spec: spec, parameter: "access") }
        accessGiven = true
        if let new { readOnly = new }
    }

    private mutating func setDeviceType(_ value: String) throws(DiskSpecificationError) {
        switch value {
        case "cdrom": isCDROM = true
        case "disk": isCDROM = false
        default: throw .invalidValue(spec: spec, parameter: "devtype", value: value, expected: "must be cdrom or disk")
        }
    }

    /// xend's `<vdev>:<devtype>` (deprecated): false, doing nothing, without a colon.
    private mutating func vdevAndDeviceType(_ value: String) throws(DiskSpecificationError) -> Bool {
        let utf8 = Array(value.utf8)
        guard let colon = utf8.lastIndex(of: Self.colon) else { return false }
        try set(&vdev, Self.string(utf8[..<colon]), parameter: "vdev")
        try setDeviceType(Self.string(utf8[(colon + 1)...]))
        return true
    }

    // MARK: Lexical

    private static let comma = UInt8(ascii: ",")
    private static let equals = UInt8(ascii: "=")
    private static let colon = UInt8(ascii: ":")

    /// xl skips blanks, tabs and newlines before each parameter.
    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n")
    }

    private static func isLowercaseLetter(_ byte: UInt8) -> Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) }
    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    /// `[a-z][a-z0-9]*:` followed by the end or a character that is not
    /// alphanumeric (so `hdc:cdrom` is a vdev, `foo:/x` an unknown prefix).
    private static func unknownPrefix(_ rest: ArraySlice<UInt8>) -> String? {
        guard let first = rest.first, isLowercaseLetter(first) else { return nil }
        let name = rest.prefix(while: { isLowercaseLetter($0) || isDigit($0) })
        guard name.endIndex < rest.endIndex, rest[name.endIndex] == colon else { return nil }
        let after = name.endIndex + 1
        guard after == rest.endIndex || !(isLowercaseLetter(rest[after]) || isDigit(rest[after])) else { return nil }
        return string(rest[...name.endIndex])
    }

    /// What a parameter's name looks like (xl: `[a-z][-a-z0-9]*`, and `_` for `grant_usage`).
    private static func isParameterName(_ name: String) -> Bool {
        guard let first = name.utf8.first, isLowercaseLetter(first) else { return false }
        return name.utf8.allSatisfy { isLowercaseLetter($0) || isDigit($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") }
    }

    private static func string(_ bytes: ArraySlice<UInt8>) -> String { String(decoding: bytes, as: UTF8.self) }
}
