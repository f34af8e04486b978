/// A virtual block device's number: the integer the toolstack writes as the
/// frontend's device id (`device/vbd/<number>`) and its `virtual-device`
/// node, encoded as xen-vbd-interface(7) "Concrete encoding" says.
public struct VirtualDeviceNumber: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    /// The canonical decimal form XenStore holds.
    public var description: String { String(rawValue) }
}

/// A virtual device name from a disk specification's `vdev` (xl's
/// `libxl__device_disk_dev_number`), with the number it encodes.
///
/// Accepted, per xen-vbd-interface(7) "Configuration file syntax":
/// - `xvdX[N]`: Xen virtual disk X (`a`, ..., `z`, `aa`, ...: letters in
///   bijective base 26) partition N; disks up to 2^20 - 1, partitions up to 255.
/// - `dD[pP]`: the same disk and partition written as decimal numbers (the
///   man page lists `d0`; libxl wants the `p`: both are taken).
/// - `sdX[N]`: SCSI disk `a` to `p`, partitions up to 15.
/// - `hdX[N]`: IDE disk `a` to `d`, partitions up to 63.
/// - a number (decimal, `0x` hex or `0` octal, as `strtoul` base 0 reads it)
///   up to 2^31 - 1, written to XenStore as it is.
///
/// A partition number has no leading zero (`xvda01` and `xvda0` are refused,
/// as libxl does), except `p0` in the `dDpP` form.
public struct VirtualDevice: Hashable, Sendable, CustomStringConvertible {
    /// The nominal disk type the name was written for (xen-vbd-interface(7)).
    public enum Kind: Hashable, Sendable {
        /// `xvd*` or `dNpN`: a Xen virtual disk.
        case xen
        /// `sd*`: a SCSI disk.
        case scsi
        /// `hd*`: an IDE disk.
        case ide
        /// A number given directly: its disk and partition are not decoded.
        case number
    }

    /// The name as written in the specification.
    public let name: String
    /// The number the guest sees.
    public let number: VirtualDeviceNumber
    /// The disk type the name was written for.
    public let kind: Kind
    /// The disk index (0 for `xvda`), nil for a number given directly.
    public let disk: Int?
    /// The partition (0: the whole disk), nil for a number given directly.
    public let partition: Int?

    /// Parses a `vdev` and computes its number.
    public init(parsing name: String) throws(VirtualDeviceError) {
        self.name = name
        let (kind, disk, partition, number) = try Self.decode(Array(name.utf8), name: name)
        self.kind = kind
        self.disk = disk
        self.partition = partition
        self.number = VirtualDeviceNumber(rawValue: number)
    }

    /// `xvda (51712)`.
    public var description: String { "\(name) (\(number))" }

    /// The largest Xen disk index: the extended encoding has 20 bits for it.
    public static let maximumXenDisk = (1 << 20) - 1
    /// The largest Xen partition: the extended encoding has 8 bits for it.
    public static let maximumXenPartition = 255
    /// The largest number accepted when given directly (libxl: `INT_MAX`).
    public static let maximumNumber = UInt32(Int32.max)

    /// One named bus: its prefix, its limits and its xen-vbd-interface(7) encoding.
    private struct Bus: Sendable {
        let kind: Kind
        let prefix: String
        let maximumDisk: Int
        let maximumPartition: Int
        let encode: @Sendable (_ disk: Int, _ partition: Int) -> UInt32
    }

    /// `xvd`: 202 << 8 while disk and partition fit in 4 bits each, else the
    /// extended 1 << 28 form (libxl uses it only then).
    private static let xen = Bus(kind: .xen, prefix: "xvd", maximumDisk: maximumXenDisk, maximumPartition: maximumXenPartition) {
        disk, partition in
        disk <= 15 && partition <= 15 ? UInt32(202 << 8 | disk << 4 | partition) : UInt32(1 << 28 | disk << 8 | partition)
    }
    /// `hd`: disks 0 and 1 on major 3, disks 2 and 3 on major 22, 64 minors each.
    private static let ide = Bus(kind: .ide, prefix: "hd", maximumDisk: 3, maximumPartition: 63) { disk, partition in
        UInt32((disk < 2 ? 3 : 22) << 8 | (disk & 1) << 6 | partition)
    }
    /// `sd`: major 8, 16 minors each.
    private static let scsi = Bus(kind: .scsi, prefix: "sd", maximumDisk: 15, maximumPartition: 15) { disk, partition in
        UInt32(8 << 8 | disk << 4 | partition)
    }

    private static func decode(_ bytes: [UInt8], name: String) throws(VirtualDeviceError) -> (Kind, Int?, Int?, UInt32) {
        guard let first = bytes.first else { throw .empty }
        for bus in [xen, ide, scsi] where bytes.starts(with: bus.prefix.utf8) {
            let (disk, partition) = try decodeLetters(bytes.dropFirst(bus.prefix.utf8.count), bus: bus, name: name)
            return (bus.kind, disk, partition, bus.encode(disk, partition))
        }
        if first == UInt8(ascii: "d"), bytes.count > 1, isDigit(bytes[1]) {
            let (disk, partition) = try decodeDiskPartition(bytes.dropFirst(), name: name)
            return (.xen, disk, partition, xen.encode(disk, partition))
        }
        if isDigit(first) { return (.number, nil, nil, try decodeNumber(bytes, name: name)) }
        throw .unrecognised(name: name)
    }

    /// `<letters>[<partition>]` after a bus prefix.
    private static func decodeLetters(_ rest: ArraySlice<UInt8>, bus: Bus, name: String) throws(VirtualDeviceError) -> (Int, Int) {
        // Bijective base 26: a = 0, z = 25, aa = 26, az = 51, ba = 52.
        var disk = -1
        var index = rest.startIndex
        while index < rest.endIndex, let letter = lowercaseLetter(rest[index]) {
            disk = (disk + 1) * 26 + letter
            guard disk <= bus.maximumDisk else {
                throw .diskOutOfRange(name: name, bus: bus.prefix, maximum: bus.maximumDisk)
            }
            index += 1
        }
        guard disk >= 0 else { throw .noDiskLetter(name: name, bus: bus.prefix) }
        let partition = try decodePartition(rest[index...], maximum: bus.maximumPartition, bus: bus.prefix, name: name)
        return (disk, partition)
    }

    /// `<disk>[p<partition>]` after the `d`, both decimal.
    private static func decodeDiskPartition(_ rest: ArraySlice<UInt8>, name: String) throws(VirtualDeviceError) -> (Int, Int) {
        let p = rest.firstIndex(of: UInt8(ascii: "p")) ?? rest.endIndex
        guard let disk = decimal(rest[..<p]) else { throw .unrecognised(name: name) }
        guard disk <= maximumXenDisk else { throw .diskOutOfRange(name: name, bus: "d", maximum: maximumXenDisk) }
        guard p < rest.endIndex else { return (disk, 0) }
        let digits = rest[(p + 1)...]
        guard !digits.isEmpty else { throw .badPartition(name: name) }
        // Here partition 0 is written out (the man page's `d0p0`).
        if digits.elementsEqual("0".utf8) { return (disk, 0) }
        return (disk, try decodePartition(digits, maximum: maximumXenPartition, bus: "d", name: name))
    }

    /// A partition number: empty (the whole disk, 0), or decimal with no leading zero.
    private static func decodePartition(_ digits: ArraySlice<UInt8>, maximum: Int, bus: String, name: String) throws(VirtualDeviceError) -> Int {
        guard let first = digits.first else { return 0 }
        guard let value = decimal(digits) else { throw .badPartition(name: name) }
        guard first != UInt8(ascii: "0") else { throw .leadingZero(name: name) }
        guard value <= maximum else { throw .partitionOutOfRange(name: name, bus: bus, maximum: maximum) }
        return value
    }

    /// A number as `strtoul(s, &end, 0)` reads it, the whole string used:
    /// `0x`/`0X` hex, a leading `0` octal, else decimal.
    private static func decodeNumber(_ bytes: [UInt8], name: String) throws(VirtualDeviceError) -> UInt32 {
        var digits = bytes[...]
        var radix = 10
        if bytes.count > 1, bytes[0] == UInt8(ascii: "0"), bytes[1] | 0x20 == UInt8(ascii: "x") {
            digits = bytes.dropFirst(2)
            radix = 16
        } else if bytes.count > 1, bytes[0] == UInt8(ascii: "0") {
            digits = bytes.dropFirst()
            radix = 8
        }
        guard !digits.isEmpty else { throw .badNumber(name: name, radix: radix) }
        var value: UInt64 = 0
        for byte in digits {
            guard let digit = digitValue(byte), digit < radix else { throw .badNumber(name: name, radix: radix) }
            value = value * UInt64(radix) + UInt64(digit)
            guard value <= UInt64(maximumNumber) else { throw .numberTooLarge(name: name) }
        }
        return UInt32(value)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    private static func lowercaseLetter(_ byte: UInt8) -> Int? {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) ? Int(byte - UInt8(ascii: "a")) : nil
    }

    private static func digitValue(_ byte: UInt8) -> Int? {
        if isDigit(byte) { return Int(byte - UInt8(ascii: "0")) }
        let lower = byte | 0x20
        if (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(lower) { return Int(lower - UInt8(ascii: "a")) + 10 }
        return nil
    }

    /// Decimal digits only, bounded so a long run cannot overflow.
    private static func decimal(_ digits: ArraySlice<UInt8>) -> Int? {
        guard !digits.isEmpty else { return nil }
        var value = 0
        for byte in digits {
            guard isDigit(byte) else { return nil }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            if value > Int(Int32.max) { return Int(Int32.max) }  // beyond every limit: refused by the caller
        }
        return value
    }
}

/// Why a `vdev` is not a virtual device name (xen-vbd-interface(7)).
public enum VirtualDeviceError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The name is empty.
    case empty
    /// A bus prefix with no disk letter after it (`xvd`, `sd1`).
    case noDiskLetter(name: String, bus: String)
    /// The disk is beyond what the bus names (`sdq`, `hde`, or an
    /// `xvd`/`d` disk past 2^20 - 1).
    case diskOutOfRange(name: String, bus: String, maximum: Int)
    /// The partition is beyond what the bus allows.
    case partitionOutOfRange(name: String, bus: String, maximum: Int)
    /// What follows the disk is not a partition number (`xvda1x`, `xvdA`, `d1p`).
    case badPartition(name: String)
    /// A partition number with a leading zero (`xvda01`).
    case leadingZero(name: String)
    /// A number given directly whose digits do not fit its radix (`08`, `0xg`).
    case badNumber(name: String, radix: Int)
    /// A number given directly above 2^31 - 1.
    case numberTooLarge(name: String)
    /// None of the accepted forms.
    case unrecognised(name: String)

    public var description: String {
        switch self {
        case .empty:
            "empty virtual device name"
        case .noDiskLetter(let name, let bus):
            "vdev '\(name)': no disk letter after '\(bus)'"
        case .diskOutOfRange(let name, let bus, let maximum):
            "vdev '\(name)': \(bus) disks go up to \(Self.diskName(bus: bus, maximum)) (disk \(maximum))"
        case .partitionOutOfRange(let name, let bus, let maximum):
            "vdev '\(name)': \(bus) partitions go up to \(maximum)"
        case .badPartition(let name):
            "vdev '\(name)': what follows the disk is not a partition number"
        case .leadingZero(let name):
            "vdev '\(name)': a partition number starts with 1 to 9 (the whole disk has none)"
        case .badNumber(let name, let radix):
            "vdev '\(name)': not a \(radix == 16 ? "hexadecimal" : radix == 8 ? "octal (leading 0)" : "decimal") number"
        case .numberTooLarge(let name):
            "vdev '\(name)': larger than \(VirtualDevice.maximumNumber)"
        case .unrecognised(let name):
            "vdev '\(name)': not a virtual device: expected xvdX[N], hdX[N], sdX[N], dN[pN] or a number (xen-vbd-interface(7))"
        }
    }

    /// The last disk's name on a lettered bus (`sdp`, `hdd`), or its number for `d`.
    private static func diskName(bus: String, _ disk: Int) -> String {
        guard bus != "d" else { return "d\(disk)" }
        var letters: [UInt8] = []
        var n = disk
        repeat {
            letters.insert(UInt8(ascii: "a") + UInt8(n % 26), at: 0)
            n = n / 26 - 1
        } while n >= 0
        return bus + String(decoding: letters, as: UTF8.self)
    }
}
