/// What carries a vif's frames on the host. Our own `type=` values (xl's
/// `type=` says vif or ioemu, which pvh also takes, see below).
public enum NetworkBackendType: String, Hashable, Sendable, CaseIterable {
    /// User-mode networking through passt: no privileges needed.
    case user
    /// A Linux TAP device, optionally on a bridge (needs CAP_NET_ADMIN).
    case tap
    /// No host side: the guest sees an interface without a link.
    case none
}

/// One guest network interface as xl's `vif=[ 'VIFSPEC', ... ]` (and
/// `pvh run --net`) describes it: comma-separated `key=value` pairs, every
/// key optional (xl-network-configuration(5); xl's parser is
/// `parse_nic_config` in tools/xl/xl_parse.c). An empty specification is
/// one interface with user networking and a generated MAC address.
///
/// Keys:
/// - `mac=`: the guest's address; not multicast, not all zeroes. Without
///   it, one is made in Xen's OUI (`MACAddress.xenRandom`).
/// - `bridge=`: a Linux bridge to add the TAP to.
/// - `vifname=`: the host interface's name (the TAP's).
/// - `type=`: pvh's `user`, `tap` or `none`; xl's `vif` and `ioemu` mean
///   the default (pvh has no emulated NIC: `ioemu` gets a warning).
///   Without a type: `tap` when `bridge=` or `vifname=` is given, else `user`.
/// - `mtu=`: 68...65535 (xl 4.17 and later); nil: the link's default.
/// - `rate=`: xl's `RATE[@INTERVAL]` (`NetworkRateLimit`).
/// - `devid=`: the device ID (the index under `device/vif/`), default its position.
/// - `ip=`: for `type=user`, the address passt hands the guest; ignored,
///   with a warning, for a TAP (xl gives it to its hotplug scripts, which
///   pvh does not run).
/// - `backend=`: must name the control domain.
/// - `model=`, `script=`, `gatewaydev=`, `netdev=` (xl's old name of
///   gatewaydev), `accel=`: accepted and ignored, with a warning each.
/// - `forwarddev=`, `colo_*=`: refused (COLO is not implemented).
///
/// Whitespace around each parameter is ignored; empty parameters (`a=1,,`)
/// are skipped. A key given twice must have the same value both times.
public struct NetworkInterfaceSpecification: Hashable, Sendable {
    /// The specification as the user wrote it, for error messages.
    public let spec: String
    /// What carries the frames: given by `type=`, or inferred.
    public let type: NetworkBackendType
    /// The guest's MAC address; nil: generate one (`resolvedMAC`).
    public let mac: MACAddress?
    /// The Linux bridge the TAP joins (`bridge=`).
    public let bridge: String?
    /// The host interface name; nil: the caller's default (`vif<domid>.<devid>`).
    public let vifname: String?
    /// nil: the link's default (1500 for a TAP, passt's 65520 for user).
    public let mtu: Int?
    /// The transmit credit (`rate=`); nil: unlimited.
    public let rate: NetworkRateLimit?
    /// nil: the interface's position among the domain's vifs.
    public let devid: Int?
    /// `ip=` as written (addresses separated by spaces, as xl takes them).
    public let ip: String?
    /// One line per key accepted but ignored, for the CLI to print.
    public let warnings: [String]

    /// The lowest and highest MTU taken: IPv4's minimum datagram, and the
    /// largest IP packet.
    public static let mtuRange = 68...65535

    /// Parses one specification (see the type's description).
    public init(parsing spec: String) throws(NetworkInterfaceSpecificationError) {
        var values: [String: String] = [:]
        var order: [String] = []
        for piece in spec.split(separator: ",", omittingEmptySubsequences: false) {
            let token = Self.trimmed(piece)
            if token.isEmpty { continue }
            guard let equals = token.firstIndex(of: "=") else { throw .notKeyValue(spec: spec, token: token) }
            let key = Self.trimmed(token[..<equals])
            let value = Self.trimmed(token[token.index(after: equals)...])
            guard Self.knownKeys.contains(key) || key.hasPrefix("colo_") else { throw .unknownKey(spec: spec, key: key) }
            if let previous = values[key] {
                guard previous == value else { throw .respecified(spec: spec, key: key) }
                continue
            }
            values[key] = value
            order.append(key)
        }

        var warnings: [String] = []
        for key in order {
            guard let value = values[key] else { continue }
            switch key {
            case "forwarddev":
                throw .unsupported(spec: spec, key: key, reason: "COLO replication is not implemented")
            case _ where key.hasPrefix("colo_"):
                throw .unsupported(spec: spec, key: key, reason: "COLO replication is not implemented")
            case "model":
                warnings.append("model=\(value): ignored (a PVH guest has no emulated network card)")
            case "script":
                warnings.append("script=\(value): ignored (pvh runs no hotplug scripts; it sets up the TAP itself)")
            case "gatewaydev", "netdev":
                warnings.append("\(key)=\(value): ignored (used by xl's vif-route/vif-nat scripts, which pvh does not run)")
            case "accel":
                warnings.append("accel=\(value): ignored (xl does not support it either)")
            case "backend":
                guard ["", "0", "dom0", "Domain-0"].contains(value) else { throw .unsupportedBackendDomain(spec: spec, domain: value) }
            default:
                break
            }
        }

        var mac: MACAddress?
        if let text = values["mac"] {
            guard let parsed = MACAddress(parsing: text) else {
                throw .invalidValue(spec: spec, key: "mac", value: text, expected: "must be six hexadecimal octets separated by ':' (00:16:3e:12:34:56)")
            }
            guard !parsed.isMulticast else {
                throw .invalidValue(spec: spec, key: "mac", value: text, expected: "a multicast address cannot be an interface's (clear bit 0 of the first octet)")
            }
            guard !parsed.isZero else { throw .invalidValue(spec: spec, key: "mac", value: text, expected: "the all-zero address is not valid") }
            mac = parsed
        }

        let bridge = try values["bridge"].map { (name: String) throws(NetworkInterfaceSpecificationError) -> String in
            guard Self.isValidInterfaceName(name) else {
                throw .invalidValue(spec: spec, key: "bridge", value: name, expected: Self.interfaceNameRule)
            }
            return name
        }
        let vifname = try values["vifname"].map { (name: String) throws(NetworkInterfaceSpecificationError) -> String in
            guard Self.isValidInterfaceName(name) else {
                throw .invalidValue(spec: spec, key: "vifname", value: name, expected: Self.interfaceNameRule)
            }
            return name
        }

        var mtu: Int?
        if let text = values["mtu"] {
            guard Self.isDecimal(text), let value = Int(text), Self.mtuRange.contains(value) else {
                throw .invalidValue(spec: spec, key: "mtu", value: text, expected: "must be a whole number from 68 to 65535")
            }
            mtu = value
        }

        var rate: NetworkRateLimit?
        if let text = values["rate"] {
            do {
                rate = try NetworkRateLimit(parsing: text)
            } catch {
                throw .invalidRate(spec: spec, value: text, error)
            }
        }

        var devid: Int?
        if let text = values["devid"] {
            guard Self.isDecimal(text), let value = Int(text), value <= Int(Int32.max) else {
                throw .invalidValue(spec: spec, key: "devid", value: text, expected: "must be a whole number from 0 to 2147483647")
            }
            devid = value
        }

        var type: NetworkBackendType?
        if let text = values["type"] {
            switch text {
            case "vif": break
            case "ioemu": warnings.append("type=ioemu: taken as type=vif (a PVH guest has no emulated network card)")
            default:
                guard let given = NetworkBackendType(rawValue: text) else {
                    throw .invalidValue(spec: spec, key: "type", value: text, expected: "must be user, tap or none (or xl's vif, ioemu)")
                }
                type = given
            }
        }
        let resolved = type ?? (bridge != nil || vifname != nil ? .tap : .user)
        if resolved != .tap {
            if bridge != nil { throw .conflict(spec: spec, reason: "bridge= needs a TAP (type=tap), not type=\(resolved.rawValue)") }
            if vifname != nil { throw .conflict(spec: spec, reason: "vifname= names a TAP (type=tap), not type=\(resolved.rawValue)") }
        }

        let ip = values["ip"]
        if let ip, resolved != .user {
            warnings.append("ip=\(ip): ignored for type=\(resolved.rawValue) (only user networking assigns the guest an address)")
        }

        self.spec = spec
        self.type = resolved
        self.mac = mac
        self.bridge = bridge
        self.vifname = vifname
        self.mtu = mtu
        self.rate = rate
        self.devid = devid
        self.ip = ip
        self.warnings = warnings
    }

    /// The MAC address: the one given, else a new one in Xen's OUI from `generator`.
    public func resolvedMAC(using generator: inout some RandomNumberGenerator) -> MACAddress {
        mac ?? MACAddress.xenRandom(using: &generator)
    }

    /// Parses each specification (the `--net` options, in order) and checks
    /// them together (`validate`).
    public static func parse(_ specs: [String]) throws(NetworkInterfaceSpecificationError) -> [NetworkInterfaceSpecification] {
        var interfaces: [NetworkInterfaceSpecification] = []
        for spec in specs { interfaces.append(try NetworkInterfaceSpecification(parsing: spec)) }
        try validate(interfaces)
        return interfaces
    }

    /// Checks one guest's interfaces together: no two may share a MAC, a
    /// vifname, or a device ID (an explicit one, or the position of one
    /// without). The error names the later specification and the first.
    public static func validate(_ interfaces: [NetworkInterfaceSpecification]) throws(NetworkInterfaceSpecificationError) {
        var macs: [MACAddress: String] = [:], names: [String: String] = [:], devids: [Int: String] = [:]
        for (position, interface) in interfaces.enumerated() {
            if let mac = interface.mac {
                if let first = macs[mac] { throw .duplicateMAC(spec: interface.spec, mac: mac, firstSpec: first) }
                macs[mac] = interface.spec
            }
            if let name = interface.vifname {
                if let first = names[name] { throw .duplicateInterfaceName(spec: interface.spec, name: name, firstSpec: first) }
                names[name] = interface.spec
            }
            let devid = interface.devid ?? position
            if let first = devids[devid] { throw .duplicateDeviceID(spec: interface.spec, devid: devid, firstSpec: first) }
            devids[devid] = interface.spec
        }
    }

    // MARK: Lexical

    /// Every key xl's parse_nic_config takes (the `colo_*` family aside), and pvh's `type` values.
    static let knownKeys: Set<String> = [
        "mac", "bridge", "vifname", "type", "mtu", "rate", "devid", "ip", "backend", "model", "script",
        "gatewaydev", "netdev", "accel", "forwarddev",
    ]

    static let interfaceNameRule = "an interface name is 1 to 15 bytes, without '/', ':' or whitespace"

    /// Linux's dev_valid_name: 1 to 15 bytes, not "." or "..", no '/', ':' or whitespace.
    static func isValidInterfaceName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 15, name != ".", name != ".." else { return false }
        return !bytes.contains { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: ":") || $0 <= 0x20 || $0 == 0x7f }
    }

    private static func isDecimal(_ text: String) -> Bool { !text.isEmpty && text.allSatisfy(\.isASCIIDigit) }

    /// Without blanks, tabs and newlines at either end.
    private static func trimmed(_ text: Substring) -> String {
        let isBlank: (Character) -> Bool = { $0 == " " || $0 == "\t" || $0 == "\n" || $0 == "\r" }
        // A slice between the first and last non-blank characters: building
        // the result through two reversals cost a Character at a time.
        let start = text.drop(while: isBlank)
        guard let last = start.lastIndex(where: { !isBlank($0) }) else { return "" }
        return String(start[...last])
    }
}
