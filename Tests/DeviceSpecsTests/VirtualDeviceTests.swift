import DeviceSpecs
import Testing

/// xen-vbd-interface(7) "Concrete encoding in the VBD interface", written
/// out here from the man page with arithmetic (the implementation shifts):
///   xvd, disks and partitions up to 15:  202 << 8 | disk << 4 | partition
///   xvd, disks or partitions 16 onwards: 1 << 28 | disk << 8 | partition
///   sd: 8 << 8 | disk << 4 | partition
///   hd: 3 << 8 | disk << 6 | partition (disks 0, 1), 22 << 8 | (disk - 2) << 6 | partition (2, 3)
enum Spec {
    static func xvd(_ disk: Int, _ partition: Int = 0) -> UInt32 {
        if disk < 16 && partition < 16 { return UInt32(202 * 256 + disk * 16 + partition) }
        return UInt32(268_435_456 + disk * 256 + partition)
    }
    static func sd(_ disk: Int, _ partition: Int = 0) -> UInt32 { UInt32(8 * 256 + disk * 16 + partition) }
    static func hd(_ disk: Int, _ partition: Int = 0) -> UInt32 {
        disk < 2 ? UInt32(3 * 256 + disk * 64 + partition) : UInt32(22 * 256 + (disk - 2) * 64 + partition)
    }

    /// A disk's letters the way Linux and libxl name it: a, ..., z, aa, ..., az, ba, ...
    static func letters(_ disk: Int) -> String {
        var n = disk + 1
        var out = ""
        while n > 0 {
            n -= 1
            out = String(UnicodeScalar(UInt8(97 + n % 26))) + out
            n /= 26
        }
        return out
    }
}

@Suite("Virtual device numbers (xen-vbd-interface(7))")
struct VirtualDeviceTests {
    func number(_ name: String) throws -> UInt32 { try VirtualDevice(parsing: name).number.rawValue }

    @Test("the well-known numbers: xvda, xvdb, hda, sda, xvdq")
    func wellKnown() throws {
        #expect(try number("xvda") == 51712)
        #expect(try number("xvdb") == 51728)
        #expect(try number("hda") == 768)
        #expect(try number("sda") == 2048)
        #expect(try number("xvdq") == 268_439_552)  // disk 16: the extended form
    }

    @Test("the letters count in bijective base 26", arguments: [
        ("a", 0), ("b", 1), ("p", 15), ("q", 16), ("z", 25), ("aa", 26), ("az", 51), ("ba", 52), ("tq", 536), ("zz", 701), ("aaa", 702),
    ])
    func letters(_ letters: String, _ disk: Int) throws {
        #expect(Spec.letters(disk) == letters)  // the test's own namer agrees with the table
        let device = try VirtualDevice(parsing: "xvd" + letters)
        #expect(device.disk == disk)
        #expect(device.partition == 0)
        #expect(device.kind == .xen)
        #expect(device.number.rawValue == Spec.xvd(disk))
    }

    @Test("xvd: every disk of the compact form and a spread of the extended one, whole and partitioned")
    func xvd() throws {
        let disks = Array(0...40) + [51, 52, 255, 256, 536, 701, 702, 4095, 18_277, 18_278, 65_535, 1_048_575]
        for disk in disks {
            for partition in [0, 1, 9, 15, 16, 37, 255] {
                let name = "xvd" + Spec.letters(disk) + (partition == 0 ? "" : String(partition))
                let device = try VirtualDevice(parsing: name)
                #expect(device.number.rawValue == Spec.xvd(disk, partition), "\(name)")
                #expect(device.disk == disk && device.partition == partition, "\(name)")
                #expect(device.name == name)
            }
        }
    }

    @Test("xvd: the compact form ends at disk 15 partition 15; partition 16 of disk 0 is extended")
    func xvdBoundary() throws {
        #expect(try number("xvdp15") == UInt32(202 * 256 + 15 * 16 + 15))
        #expect(try number("xvda16") == UInt32(268_435_456 + 16))
        #expect(try number("xvdq") >= 268_435_456)
        #expect(try number("xvdp") < 268_435_456)
    }

    @Test("dDpP and dD name the same Xen disks (the man page's examples)")
    func diskPartitionForm() throws {
        #expect(try number("d0") == Spec.xvd(0))
        #expect(try number("d0p0") == Spec.xvd(0))
        #expect(try number("d1p2") == Spec.xvd(1, 2))
        #expect(try number("d1p2") == number("xvdb2"))
        #expect(try number("d536p37") == Spec.xvd(536, 37))
        #expect(try number("d536p37") == number("xvdtq37"))
        #expect(try number("d16") == Spec.xvd(16))
        #expect(try number("d1048575p255") == Spec.xvd(1_048_575, 255))
        #expect(try VirtualDevice(parsing: "d3p4").kind == .xen)
    }

    @Test("sd: disks a to p, partitions to 15")
    func scsi() throws {
        for disk in 0...15 {
            for partition in [0, 1, 15] {
                let name = "sd" + Spec.letters(disk) + (partition == 0 ? "" : String(partition))
                let device = try VirtualDevice(parsing: name)
                #expect(device.number.rawValue == Spec.sd(disk, partition), "\(name)")
                #expect(device.kind == .scsi)
            }
        }
        #expect(try number("sdb3") == Spec.sd(1, 3))  // the man page's "SCSI disk 1 partition 3"
    }

    @Test("hd: disks a to d on majors 3 and 22, partitions to 63")
    func ide() throws {
        for disk in 0...3 {
            for partition in [0, 1, 2, 63] {
                let name = "hd" + Spec.letters(disk) + (partition == 0 ? "" : String(partition))
                let device = try VirtualDevice(parsing: name)
                #expect(device.number.rawValue == Spec.hd(disk, partition), "\(name)")
                #expect(device.kind == .ide)
            }
        }
        #expect(try number("hdc2") == Spec.hd(2, 2))  // the man page's "IDE disk 2 partition 2"
    }

    @Test("a number is taken as it is: decimal, 0x hex, 0 octal", arguments: [
        ("51712", UInt32(51712)), ("0xca00", 51712), ("0XCA00", 51712), ("0145000", 51712), ("0", 0), ("268439552", 268_439_552),
        ("2147483647", 2_147_483_647),
    ])
    func numbers(_ text: String, _ value: UInt32) throws {
        let device = try VirtualDevice(parsing: text)
        #expect(device.number.rawValue == value)
        #expect(device.kind == .number)
        #expect(device.disk == nil && device.partition == nil)
    }

    @Test("invalid names are refused with the reason", arguments: [
        ("", VirtualDeviceError.empty),
        ("xvd", .noDiskLetter(name: "xvd", bus: "xvd")),
        ("sd1", .noDiskLetter(name: "sd1", bus: "sd")),
        ("hd", .noDiskLetter(name: "hd", bus: "hd")),
        ("sdq", .diskOutOfRange(name: "sdq", bus: "sd", maximum: 15)),
        ("hde", .diskOutOfRange(name: "hde", bus: "hd", maximum: 3)),
        ("d1048576", .diskOutOfRange(name: "d1048576", bus: "d", maximum: 1_048_575)),
        ("d99999999999999999999", .diskOutOfRange(name: "d99999999999999999999", bus: "d", maximum: 1_048_575)),
        ("sda16", .partitionOutOfRange(name: "sda16", bus: "sd", maximum: 15)),
        ("hda64", .partitionOutOfRange(name: "hda64", bus: "hd", maximum: 63)),
        ("xvda256", .partitionOutOfRange(name: "xvda256", bus: "xvd", maximum: 255)),
        ("d0p256", .partitionOutOfRange(name: "d0p256", bus: "d", maximum: 255)),
        ("xvda01", .leadingZero(name: "xvda01")),
        ("xvda0", .leadingZero(name: "xvda0")),
        ("xvda1x", .badPartition(name: "xvda1x")),
        ("xvdA", .noDiskLetter(name: "xvdA", bus: "xvd")),
        ("d1p01", .leadingZero(name: "d1p01")),
        ("d1p", .badPartition(name: "d1p")),
        ("08", .badNumber(name: "08", radix: 8)),
        ("0x", .badNumber(name: "0x", radix: 16)),
        ("0xg", .badNumber(name: "0xg", radix: 16)),
        ("12a", .badNumber(name: "12a", radix: 10)),
        ("2147483648", .numberTooLarge(name: "2147483648")),
        ("vda", .unrecognised(name: "vda")),
        ("nvme0n1", .unrecognised(name: "nvme0n1")),
        ("d1x", .unrecognised(name: "d1x")),
        ("-1", .unrecognised(name: "-1")),
        (" xvda", .unrecognised(name: " xvda")),
    ])
    func invalid(_ name: String, _ expected: VirtualDeviceError) {
        #expect(throws: expected) { try VirtualDevice(parsing: name) }
    }

    @Test("the largest xvd disk is accepted, the next refused")
    func largestXenDisk() throws {
        let last = "xvd" + Spec.letters(1_048_575)
        #expect(try number(last) == Spec.xvd(1_048_575))
        let beyond = "xvd" + Spec.letters(1_048_576)
        #expect(throws: VirtualDeviceError.diskOutOfRange(name: beyond, bus: "xvd", maximum: 1_048_575)) {
            try VirtualDevice(parsing: beyond)
        }
    }

    @Test("the reasons name the vdev and what is wrong, on one line")
    func reasons() {
        #expect(VirtualDeviceError.diskOutOfRange(name: "sdq", bus: "sd", maximum: 15).description
            == "vdev 'sdq': sd disks go up to sdp (disk 15)")
        #expect(VirtualDeviceError.diskOutOfRange(name: "hde", bus: "hd", maximum: 3).description
            == "vdev 'hde': hd disks go up to hdd (disk 3)")
        #expect(VirtualDeviceError.partitionOutOfRange(name: "sda16", bus: "sd", maximum: 15).description
            == "vdev 'sda16': sd partitions go up to 15")
        #expect(VirtualDeviceError.unrecognised(name: "vda").description.hasPrefix("vdev 'vda': not a virtual device: expected xvdX[N]"))
        #expect(VirtualDeviceError.noDiskLetter(name: "xvd", bus: "xvd").description == "vdev 'xvd': no disk letter after 'xvd'")
    }

    @Test("equal numbers from different spellings")
    func sameDevice() throws {
        let spellings = ["xvda", "d0", "d0p0", "51712", "0xca00", "0145000"]
        let numbers = try Set(spellings.map { try VirtualDevice(parsing: $0).number })
        #expect(numbers.count == 1)
    }
}
