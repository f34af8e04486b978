import DeviceSpecs
import Testing

/// A generator that returns the numbers it was given, in turn.
struct FixedGenerator: RandomNumberGenerator {
    var values: [UInt64]
    var index = 0
    mutating func next() -> UInt64 {
        defer { index = (index + 1) % values.count }
        return values[index]
    }
}

func vif(_ spec: String) throws -> NetworkInterfaceSpecification { try NetworkInterfaceSpecification(parsing: spec) }

func vifError(_ spec: String) -> NetworkInterfaceSpecificationError? {
    do {
        _ = try NetworkInterfaceSpecification(parsing: spec)
        return nil
    } catch {
        return error
    }
}

@Suite("vif specifications (xl-network-configuration(5))")
struct NetworkInterfaceSpecificationTests {
    // MARK: Defaults

    @Test("an empty specification is user networking with every default", arguments: ["", "  ", ",", " , "])
    func empty(_ spec: String) throws {
        let v = try vif(spec)
        #expect(v.type == .user)
        #expect(v.mac == nil)
        #expect(v.bridge == nil)
        #expect(v.vifname == nil)
        #expect(v.mtu == nil)
        #expect(v.rate == nil)
        #expect(v.devid == nil)
        #expect(v.ip == nil)
        #expect(v.warnings.isEmpty)
        #expect(v.spec == spec)
    }

    @Test("the man page's examples")
    func manPage() throws {
        let a = try vif("mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0")
        #expect(a.mac?.description == "00:16:3e:74:3d:76")
        #expect(a.bridge == "xenbr0")
        #expect(a.type == .tap)
        #expect(a.warnings.count == 1 && a.warnings[0].hasPrefix("model=rtl8139: ignored"))
        let b = try vif("mac=00:16:3E:74:34:32")
        #expect(b.type == .user)
        #expect(b.mac == MACAddress(octets: [0x00, 0x16, 0x3e, 0x74, 0x34, 0x32]))
    }

    @Test("type: given, or tap with bridge= or vifname=, else user")
    func typeInference() throws {
        #expect(try vif("bridge=br0").type == .tap)
        #expect(try vif("vifname=vif1.0").type == .tap)
        #expect(try vif("mac=00:16:3e:00:00:01").type == .user)
        #expect(try vif("type=tap").type == .tap)
        #expect(try vif("type=user").type == .user)
        #expect(try vif("type=none").type == .none)
        #expect(try vif("type=vif,bridge=br0").type == .tap)
        #expect(try vif("type=vif").type == .user)
        let ioemu = try vif("type=ioemu")
        #expect(ioemu.type == .user)
        #expect(ioemu.warnings.count == 1)
        #expect(try vif("type=tap,vifname=pvh0,bridge=br0").vifname == "pvh0")
    }

    // MARK: Keys

    @Test("mac: six octets of one or two hex digits, either case")
    func mac() throws {
        #expect(try vif("mac=0:16:3e:a:B:cD").mac?.description == "00:16:3e:0a:0b:cd")
        #expect(try vif("mac=02:00:00:00:00:01").mac?.isLocallyAdministered == true)
    }

    @Test("bridge and vifname are interface names")
    func names() throws {
        #expect(try vif("bridge=xenbr0,vifname=vif7.0").bridge == "xenbr0")
        #expect(try vif("vifname=a23456789012345").vifname == "a23456789012345")
    }

    @Test("mtu: 68 to 65535", arguments: [68, 1500, 9000, 65535])
    func mtu(_ value: Int) throws {
        #expect(try vif("mtu=\(value)").mtu == value)
    }

    @Test("rate: xl's units and intervals", arguments: [
        ("10Mb/s", 62_500, 50_000),  // 10e6 / 8 B/s over 50 ms
        ("1Gb/s@20ms", 2_500_000, 20_000),  // 125e6 B/s over 20 ms
        ("100KB/s", 5000, 50_000),
        ("1000B/s@1s", 1000, 1_000_000),
        ("1000B/s@2", 2000, 2_000_000),  // no unit: seconds
        ("8b/s@500us", 0, 500),  // 1 B/s for 500 us: rounded down, as libxl
        ("1MB/s@5m", 5000, 5000),
        ("3GB/s@1u", 3000, 1),
    ] as [(String, UInt64, UInt32)])
    func rate(_ text: String, _ bytes: UInt64, _ interval: UInt32) throws {
        let r = try #require(try vif("rate=\(text)").rate)
        #expect(r.bytesPerInterval == bytes)
        #expect(r.intervalMicroseconds == interval)
        #expect(r.interval == .microseconds(Int64(interval)))
        #expect(r.description == "\(bytes),\(interval)")
    }

    @Test("devid: a decimal number")
    func devid() throws {
        #expect(try vif("devid=3").devid == 3)
        #expect(try vif("devid=0").devid == 0)
    }

    @Test("ip: kept for user networking, ignored with a warning for a TAP")
    func ip() throws {
        let user = try vif("ip=10.0.2.15")
        #expect(user.ip == "10.0.2.15")
        #expect(user.warnings.isEmpty)
        let tap = try vif("bridge=br0,ip=192.0.2.7")
        #expect(tap.ip == "192.0.2.7")
        #expect(tap.warnings.count == 1 && tap.warnings[0].hasPrefix("ip=192.0.2.7: ignored"))
    }

    @Test("keys meaningless here are accepted with a warning each")
    func ignoredKeys() throws {
        let v = try vif("model=e1000, script=vif-bridge, gatewaydev=eth0, netdev=eth1, accel=x, backend=dom0")
        #expect(v.warnings.count == 5)
        #expect(v.warnings.map { String($0.prefix(while: { $0 != "=" })) } == ["model", "script", "gatewaydev", "netdev", "accel"])
        for backend in ["0", "dom0", "Domain-0", ""] { #expect(try vif("backend=\(backend)").warnings.isEmpty) }
    }

    @Test("whitespace around parameters and empty parameters are ignored; a repeat with the same value is taken")
    func lexical() throws {
        let v = try vif(" mac = 00:16:3e:00:00:01 ,, bridge=br0 ,bridge=br0,")
        #expect(v.mac?.description == "00:16:3e:00:00:01")
        #expect(v.bridge == "br0")
    }

    // MARK: Errors

    @Test("each error names the specification and the reason, on one line", arguments: [
        ("mac=00:16:3e:00:00", "--net 'mac=00:16:3e:00:00': mac '00:16:3e:00:00': must be six hexadecimal octets separated by ':' (00:16:3e:12:34:56)"),
        ("mac=01:00:5e:00:00:01", "--net 'mac=01:00:5e:00:00:01': mac '01:00:5e:00:00:01': a multicast address cannot be an interface's (clear bit 0 of the first octet)"),
        ("mac=ff:ff:ff:ff:ff:ff", "--net 'mac=ff:ff:ff:ff:ff:ff': mac 'ff:ff:ff:ff:ff:ff': a multicast address cannot be an interface's (clear bit 0 of the first octet)"),
        ("mac=00:00:00:00:00:00", "--net 'mac=00:00:00:00:00:00': mac '00:00:00:00:00:00': the all-zero address is not valid"),
        ("mac=00:16:3e:00:00:1g", "--net 'mac=00:16:3e:00:00:1g': mac '00:16:3e:00:00:1g': must be six hexadecimal octets separated by ':' (00:16:3e:12:34:56)"),
        ("mac=00-16-3e-00-00-01", "--net 'mac=00-16-3e-00-00-01': mac '00-16-3e-00-00-01': must be six hexadecimal octets separated by ':' (00:16:3e:12:34:56)"),
        ("mtu=67", "--net 'mtu=67': mtu '67': must be a whole number from 68 to 65535"),
        ("mtu=65536", "--net 'mtu=65536': mtu '65536': must be a whole number from 68 to 65535"),
        ("mtu=1500b", "--net 'mtu=1500b': mtu '1500b': must be a whole number from 68 to 65535"),
        ("mtu=", "--net 'mtu=': mtu '': must be a whole number from 68 to 65535"),
        ("rate=10Mb", "--net 'rate=10Mb': rate '10Mb': rate '10Mb' is not <number>[K|M|G](B|b)/s, e.g. 10Mb/s or 100KB/s"),
        ("rate=10kb/s", "--net 'rate=10kb/s': rate '10kb/s': rate '10kb/s' is not <number>[K|M|G](B|b)/s, e.g. 10Mb/s or 100KB/s"),
        ("rate=@20ms", "--net 'rate=@20ms': rate '@20ms': no rate before '@'"),
        ("rate=10Mb/s@20h", "--net 'rate=10Mb/s@20h': rate '10Mb/s@20h': interval '20h' is not <number>[ms|us|s], e.g. 20ms"),
        ("rate=0Mb/s", "--net 'rate=0Mb/s': rate '0Mb/s': '0Mb/s' is out of range (1 to 4294967295, in its unit)"),
        ("rate=1B/s@5000s", "--net 'rate=1B/s@5000s': rate '1B/s@5000s': '5000s' is out of range (1 to 4294967295, in its unit)"),
        ("type=bridge", "--net 'type=bridge': type 'bridge': must be user, tap or none (or xl's vif, ioemu)"),
        ("type=user,bridge=br0", "--net 'type=user,bridge=br0': bridge= needs a TAP (type=tap), not type=user"),
        ("type=none,vifname=x0", "--net 'type=none,vifname=x0': vifname= names a TAP (type=tap), not type=none"),
        ("bridge=a234567890123456", "--net 'bridge=a234567890123456': bridge 'a234567890123456': an interface name is 1 to 15 bytes, without '/', ':' or whitespace"),
        ("vifname=a/b", "--net 'vifname=a/b': vifname 'a/b': an interface name is 1 to 15 bytes, without '/', ':' or whitespace"),
        ("bridge=", "--net 'bridge=': bridge '': an interface name is 1 to 15 bytes, without '/', ':' or whitespace"),
        ("devid=-1", "--net 'devid=-1': devid '-1': must be a whole number from 0 to 2147483647"),
        ("colour=red", "--net 'colour=red': unknown key 'colour'"),
        ("xenbr0", "--net 'xenbr0': 'xenbr0' is not key=value"),
        ("bridge=br0,bridge=br1", "--net 'bridge=br0,bridge=br1': bridge given twice"),
        ("backend=driverdomain", "--net 'backend=driverdomain': backend 'driverdomain': only the control domain (0, dom0, Domain-0) serves network interfaces"),
        ("forwarddev=eth0", "--net 'forwarddev=eth0': forwarddev: COLO replication is not implemented"),
        ("colo_compare_out=x", "--net 'colo_compare_out=x': colo_compare_out: COLO replication is not implemented"),
        ("mac=zz\n", "--net 'mac=zz\\n': mac 'zz': must be six hexadecimal octets separated by ':' (00:16:3e:12:34:56)"),
    ])
    func errors(_ spec: String, _ message: String) throws {
        let error = try #require(vifError(spec))
        #expect(error.description == message)
        #expect(error.spec == spec)
        #expect(!error.description.contains("\n"))
    }

    @Test("error cases carry their payloads")
    func errorCases() {
        #expect(vifError("a") == .notKeyValue(spec: "a", token: "a"))
        #expect(vifError("x=1") == .unknownKey(spec: "x=1", key: "x"))
        #expect(vifError("rate=1") == .invalidRate(spec: "rate=1", value: "1", .invalidRate("1")))
        #expect(vifError("mtu=1,mtu=2") == .respecified(spec: "mtu=1,mtu=2", key: "mtu"))
    }

    // MARK: Several interfaces

    @Test("a guest's interfaces: unique MACs, vifnames and device IDs")
    func validation() throws {
        let ok = try NetworkInterfaceSpecification.parse(["", "bridge=br0", "mac=00:16:3e:00:00:01,devid=5"])
        #expect(ok.count == 3)
        #expect(throws: NetworkInterfaceSpecificationError.duplicateMAC(spec: "mac=00:16:3e:00:00:01,type=none", mac: try #require(MACAddress(parsing: "00:16:3e:00:00:01")), firstSpec: "mac=00:16:3e:00:00:01")) {
            try NetworkInterfaceSpecification.parse(["mac=00:16:3e:00:00:01", "mac=00:16:3e:00:00:01,type=none"])
        }
        #expect(throws: NetworkInterfaceSpecificationError.duplicateInterfaceName(spec: "vifname=v0,bridge=b", name: "v0", firstSpec: "vifname=v0")) {
            try NetworkInterfaceSpecification.parse(["vifname=v0", "vifname=v0,bridge=b"])
        }
        // The second interface's position (1) is the first's explicit devid.
        #expect(throws: NetworkInterfaceSpecificationError.duplicateDeviceID(spec: "", devid: 1, firstSpec: "devid=1")) {
            try NetworkInterfaceSpecification.parse(["devid=1", ""])
        }
        let message = NetworkInterfaceSpecificationError.duplicateMAC(spec: "b", mac: try #require(MACAddress(rawValue: 0x00163e000001)), firstSpec: "a").description
        #expect(message == "--net 'b': mac 00:16:3e:00:00:01 is already used by --net 'a'")
    }

    // MARK: MAC addresses

    @Test("Xen's generator: 00:16:3e, then three random octets, the first below 0x80")
    func xenRandomMAC() throws {
        var generator = FixedGenerator(values: [0xffff_ffff_ffff_ffff, 0x0000_0000_0012_3456])
        let a = MACAddress.xenRandom(using: &generator)
        #expect(a.description == "00:16:3e:7f:ff:ff")
        let b = MACAddress.xenRandom(using: &generator)
        #expect(b.description == "00:16:3e:56:34:12")
        #expect(!a.isMulticast && !a.isLocallyAdministered)
        var system = SystemRandomNumberGenerator()
        for _ in 0 ..< 100 {
            let m = MACAddress.xenRandom(using: &system)
            #expect(Array(m.octets.prefix(3)) == MACAddress.xenOUI)
            #expect(m.octets[3] < 0x80)
        }
        // A spec without mac= takes the generated one; with mac=, its own.
        var g = FixedGenerator(values: [0x0102_03])
        #expect(try vif("").resolvedMAC(using: &g).description == "00:16:3e:03:02:01")
        #expect(try vif("mac=02:00:00:00:00:09").resolvedMAC(using: &g).description == "02:00:00:00:00:09")
    }

    @Test("MAC address raw values and octets")
    func macRaw() throws {
        #expect(MACAddress(rawValue: 1 << 48) == nil)
        #expect(MACAddress(octets: [1, 2, 3]) == nil)
        let m = try #require(MACAddress(rawValue: 0x0016_3e12_3456))
        #expect(m.octets == [0x00, 0x16, 0x3e, 0x12, 0x34, 0x56])
        #expect(MACAddress(parsing: "00:16:3e:12:34:56") == m)
        #expect(MACAddress(parsing: "00:16:3e:12:34:567") == nil)
        #expect(MACAddress(parsing: "00:16:3e:12:34:") == nil)
        #expect(MACAddress(parsing: "00:16:3e:12:34:56:78") == nil)
    }
}
