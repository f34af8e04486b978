/// A 48-bit Ethernet (IEEE 802) address, in its low 48 bits, first octet
/// most significant: what a vif's `mac=` gives and netfront reads from the
/// `mac` node of its XenStore directory.
public struct MACAddress: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The address in the low 48 bits, first octet most significant.
    public let rawValue: UInt64

    /// Nil when `rawValue` has bits above the 48th.
    public init?(rawValue: UInt64) {
        guard rawValue >> 48 == 0 else { return nil }
        self.rawValue = rawValue
    }

    /// From six octets, first on the wire first.
    public init?(octets: [UInt8]) {
        guard octets.count == 6 else { return nil }
        rawValue = octets.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// `aa:bb:cc:dd:ee:ff`: six groups of one or two hexadecimal digits
    /// (either case) separated by colons, as xl-network-configuration(5)
    /// writes them. Nil for anything else.
    public init?(parsing text: String) {
        let groups = text.split(separator: ":", omittingEmptySubsequences: false)
        guard groups.count == 6 else { return nil }
        var octets: [UInt8] = []
        for group in groups {
            guard (1...2).contains(group.utf8.count), group.utf8.allSatisfy(Self.isHexDigit), let octet = UInt8(group, radix: 16) else {
                return nil
            }
            octets.append(octet)
        }
        self.init(octets: octets)
    }

    /// The six octets, first on the wire first.
    public var octets: [UInt8] { (0 ..< 6).map { UInt8(truncatingIfNeeded: rawValue >> (40 - 8 * UInt64($0))) } }

    /// The I/G bit (bit 0 of the first octet): a group address, which no
    /// interface may have as its own (broadcast included).
    public var isMulticast: Bool { octets[0] & 1 != 0 }

    /// The U/L bit (bit 1 of the first octet): not from a vendor's OUI.
    public var isLocallyAdministered: Bool { octets[0] & 2 != 0 }

    /// 00:00:00:00:00:00, which Linux refuses as an interface's address
    /// (is_valid_ether_addr).
    public var isZero: Bool { rawValue == 0 }

    /// Lower-case `00:16:3e:12:34:56`, the form XenStore's `mac` node holds.
    public var description: String {
        octets.map { octet in
            let digits = String(octet, radix: 16)
            return digits.count == 1 ? "0" + digits : digits
        }.joined(separator: ":")
    }

    /// Xen's Organizationally Unique Identifier.
    public static let xenOUI: [UInt8] = [0x00, 0x16, 0x3e]

    /// An address in Xen's OUI, as libxl makes one when `mac=` is not given
    /// (libxl_nic.c, libxl__device_nic_setdefault): 00:16:3e, then three
    /// random octets, the first with its top bit clear.
    public static func xenRandom(using generator: inout some RandomNumberGenerator) -> MACAddress {
        let random = generator.next()
        let tail: [UInt8] = [UInt8(truncatingIfNeeded: random) & 0x7f, UInt8(truncatingIfNeeded: random >> 8), UInt8(truncatingIfNeeded: random >> 16)]
        guard let mac = MACAddress(octets: xenOUI + tail) else { preconditionFailure("six octets make an address") }
        return mac
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
    }
}
