import DeviceSpecs
import Testing

/// What a specification means, without the text it was written as: two
/// spellings of one disk compare equal.
struct Meaning: Equatable, CustomStringConvertible {
    var target: String?
    var format: DiskFormat = .raw
    var vdev: String
    var readOnly = false
    var cdrom = false
    var directIOSafe = false
    var discard = true
    var script: String?

    init(target: String?, format: DiskFormat = .raw, vdev: String, readOnly: Bool = false, cdrom: Bool = false,
         directIOSafe: Bool = false, discard: Bool = true, script: String? = nil) {
        self.target = target
        self.format = format
        self.vdev = vdev
        self.readOnly = readOnly
        self.cdrom = cdrom
        self.directIOSafe = directIOSafe
        self.discard = discard
        self.script = script
    }

    init(_ d: DiskSpecification) {
        self.init(target: d.target, format: d.format, vdev: d.vdev.name, readOnly: d.isReadOnly, cdrom: d.isCDROM,
                  directIOSafe: d.directIOSafe, discard: d.discardEnabled, script: d.script)
    }

    var description: String {
        "target=\(target ?? "nil") format=\(format) vdev=\(vdev) ro=\(readOnly) cdrom=\(cdrom) dio=\(directIOSafe) discard=\(discard) script=\(script ?? "nil")"
    }
}

func meaning(_ spec: String) throws -> Meaning { Meaning(try DiskSpecification(parsing: spec)) }

@Suite("Disk specifications (xl-disk-configuration(5))")
struct DiskSpecificationTests {
    // MARK: The man page's examples

    @Test("the man page's first four equivalent specifications", arguments: [
        "/dev/vg/guest-volume,,hda",
        "/dev/vg/guest-volume,raw,hda,rw",
        "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
        "raw:/dev/vg/guest-volume,hda,w",
    ])
    func manPageDisk(_ spec: String) throws {
        #expect(try meaning(spec) == Meaning(target: "/dev/vg/guest-volume", vdev: "hda"))
        let disk = try DiskSpecification(parsing: spec)
        #expect(disk.spec == spec)
        #expect(disk.vdev.number.rawValue == UInt32(3 * 256))
    }

    @Test("the man page's five equivalent CD-ROM specifications", arguments: [
        "/root/image.iso,,hdc,cdrom",
        "/root/image.iso,,hdc,,cdrom",
        "/root/image.iso,raw,hdc,devtype=cdrom",
        "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
        "raw:/root/image.iso,hdc:cdrom,ro",
    ])
    func manPageCDROM(_ spec: String) throws {
        #expect(try meaning(spec) == Meaning(target: "/root/image.iso", vdev: "hdc", readOnly: true, cdrom: true))
        #expect(try DiskSpecification(parsing: spec).vdev.number.rawValue == UInt32(22 * 256))
    }

    @Test("the man page's empty CD-ROM, xend's ',hdc:cdrom,r', and the other ways to write one", arguments: [
        ",hdc:cdrom,r",
        ",,hdc,,cdrom",
        "vdev=hdc,devtype=cdrom",
        "cdrom,vdev=hdc",
        ",raw,hdc,ro,cdrom",
        "vdev=hdc,cdrom,target=",
    ])
    func emptyCDROM(_ spec: String) throws {
        #expect(try meaning(spec) == Meaning(target: nil, format: .empty, vdev: "hdc", readOnly: true, cdrom: true))
    }

    @Test("the man page's domain config line, as two --disk options")
    func manPageConfigLine() throws {
        let disks = try DiskSpecification.parse(["/dev/vg/guest-volume,,hda", "/root/image.iso,,hdc,cdrom"])
        #expect(disks.map(\.vdev.name) == ["hda", "hdc"])
        #expect(disks.map(\.isCDROM) == [false, true])
    }

    // MARK: Positional parameters

    @Test("positional target, format, vdev, access; empty values take the defaults")
    func positional() throws {
        #expect(try meaning("/img,qcow2,xvdb,ro") == Meaning(target: "/img", format: .qcow2, vdev: "xvdb", readOnly: true))
        #expect(try meaning("/img,,xvdb,") == Meaning(target: "/img", vdev: "xvdb"))
        #expect(try meaning("/img,,xvdb") == Meaning(target: "/img", vdev: "xvdb"))
        #expect(try meaning("/img,,xvdb,,") == Meaning(target: "/img", vdev: "xvdb"))
    }

    @Test("access: r and ro read-only, w and rw read-write, rw by default; mode= is a synonym", arguments: [
        ("/i,,xvda,r", true), ("/i,,xvda,ro", true), ("/i,,xvda,w", false), ("/i,,xvda,rw", false), ("/i,,xvda", false),
        ("access=r,/i,,xvda", true), ("access=ro,/i,,xvda", true), ("access=w,/i,,xvda", false), ("access=rw,/i,,xvda", false),
        ("mode=ro,/i,,xvda", true), ("/i,,xvda,mode=r", true), ("mode=rw,/i,,xvda", false), ("access=,/i,,xvda", false),
    ])
    func access(_ spec: String, _ readOnly: Bool) throws {
        #expect(try DiskSpecification(parsing: spec).isReadOnly == readOnly)
    }

    @Test("every format parses, positionally and by name", arguments: DiskFormat.allCases)
    func formats(_ format: DiskFormat) throws {
        #expect(try DiskSpecification(parsing: "/img,\(format.rawValue),xvda").format == format)
        #expect(try DiskSpecification(parsing: "format=\(format.rawValue),vdev=xvda,target=/img").format == format)
    }

    @Test("key=value parameters in any order, target= last")
    func keyValueOrder() throws {
        let expected = Meaning(target: "/img", vdev: "xvdb", readOnly: true)
        #expect(try meaning("vdev=xvdb,access=ro,format=raw,target=/img") == expected)
        #expect(try meaning("access=ro,format=raw,vdev=xvdb,target=/img") == expected)
        #expect(try meaning("/img,access=ro,vdev=xvdb") == expected)
        #expect(try meaning("access=ro,/img,raw,xvdb") == expected)
    }

    @Test("named parameters fill their positional slot: what follows goes to the next one")
    func namedFillsSlot() throws {
        // format given by name: the second positional is the vdev.
        #expect(try meaning("format=raw,/img,xvdc") == Meaning(target: "/img", vdev: "xvdc"))
        // vdev given by name: the second positional is still the format.
        #expect(try meaning("vdev=xvdc,/img,qcow2") == Meaning(target: "/img", format: .qcow2, vdev: "xvdc"))
    }

    @Test("target= takes the rest, commas and equals included, less one trailing comma; trailing blanks stay")
    func namedTarget() throws {
        #expect(try meaning("vdev=xvda,target=/srv/a,b=c.img").target == "/srv/a,b=c.img")
        #expect(try meaning("vdev=xvda,target=/srv/x:y,z").target == "/srv/x:y,z")
        #expect(try meaning("vdev=xvda,target=/img,").target == "/img")
        #expect(try meaning("vdev=xvda,target=/img ").target == "/img ")
        // An empty positional target may be given again by name.
        #expect(try meaning(",,xvda,target=/img") == Meaning(target: "/img", vdev: "xvda"))
    }

    @Test("blanks, tabs and newlines before a parameter are ignored")
    func whitespace() throws {
        #expect(try meaning("  /img, raw,\txvda,\n ro") == Meaning(target: "/img", vdev: "xvda", readOnly: true))
        #expect(try meaning("format=raw,\n vdev=xvda,  target=/img") == Meaning(target: "/img", vdev: "xvda"))
    }

    // MARK: Deprecated prefixes

    @Test("ignored prefixes: phy:, file:, aio:, tap:aio:, tap2:, tapdisk:, ioemu:; then target, vdev, access", arguments: [
        "phy:/dev/vg/x,xvda,w", "file:/dev/vg/x,xvda,w", "aio:/dev/vg/x,xvda,w", "tap:aio:/dev/vg/x,xvda,w",
        "tap2:aio:/dev/vg/x,xvda,w", "tapdisk:aio:/dev/vg/x,xvda,w", "ioemu:/dev/vg/x,xvda,w", "phy:/dev/vg/x,xvda",
    ])
    func ignoredPrefixes(_ spec: String) throws {
        #expect(try meaning(spec) == Meaning(target: "/dev/vg/x", vdev: "xvda"))
    }

    @Test("file: with read-only access; tap:qcow2: sets the format")
    func prefixCombinations() throws {
        #expect(try meaning("file:/img,xvdb,r") == Meaning(target: "/img", vdev: "xvdb", readOnly: true))
        #expect(try meaning("tap:qcow2:/img,xvdb,w") == Meaning(target: "/img", format: .qcow2, vdev: "xvdb"))
        #expect(try meaning("vhd:/img,xvdb,w").format == .vhd)
        #expect(try meaning("qcow:/img,xvdb,w").format == .qcow)
    }

    @Test("script prefixes: iscsi:, nbd:, enbd:, drbd: mean script=block-NAME")
    func scriptPrefixes() throws {
        #expect(try meaning("iscsi:iqn.2001-04.com.example:storage,xvda,w")
            == Meaning(target: "iqn.2001-04.com.example:storage", vdev: "xvda", script: "block-iscsi"))
        #expect(try meaning("nbd:host:1234,xvda,w") == Meaning(target: "host:1234", vdev: "xvda", script: "block-nbd"))
        #expect(try meaning("enbd:x,xvda").script == "block-enbd")
        #expect(try meaning("drbd:r0,xvda").script == "block-drbd")
        #expect(try meaning("script=block-foo,/img,,xvda").script == "block-foo")
    }

    // MARK: Flags and other parameters

    @Test("flags: direct-io-safe, discard (the default), no-discard, trusted, untrusted, no-colo")
    func flags() throws {
        #expect(try meaning("/img,,xvda,direct-io-safe").directIOSafe)
        #expect(try !meaning("/img,,xvda").directIOSafe)
        #expect(try meaning("/img,,xvda").discard)
        #expect(try meaning("/img,,xvda,discard").discard)
        #expect(try !meaning("/img,,xvda,no-discard").discard)
        #expect(try meaning("no-discard,discard,/img,,xvda").discard)  // the last one counts, as in xl
        #expect(try meaning("/img,,xvda,trusted") == Meaning(target: "/img", vdev: "xvda"))
        #expect(try meaning("/img,,xvda,untrusted") == Meaning(target: "/img", vdev: "xvda"))
        #expect(try meaning("/img,,xvda,no-colo") == Meaning(target: "/img", vdev: "xvda"))
    }

    @Test("devtype=disk undoes cdrom; backendtype=phy|qdisk, backend=dom0, specification=xen change nothing", arguments: [
        "cdrom,devtype=disk,/img,,xvda", "backendtype=phy,/img,,xvda", "backendtype=qdisk,/img,,xvda", "backend=0,/img,,xvda",
        "backend=dom0,/img,,xvda", "backend=Domain-0,/img,,xvda", "backend=,/img,,xvda", "specification=xen,/img,,xvda",
    ])
    func acceptedAndIgnored(_ spec: String) throws {
        #expect(try meaning(spec) == Meaning(target: "/img", vdev: "xvda"))
    }

    @Test("the vdev carries its number; d0p0 and numbers are vdevs too")
    func vdevForms() throws {
        #expect(try DiskSpecification(parsing: "/img,,xvdq").vdev.number.rawValue == UInt32(268_435_456 + 16 * 256))
        #expect(try DiskSpecification(parsing: "/img,,d0p0").vdev.number.rawValue == UInt32(202 * 256))
        #expect(try DiskSpecification(parsing: "/img,,51728").vdev.number.rawValue == 51728)
        #expect(try DiskSpecification(parsing: "/img,,sda").vdev.number.rawValue == UInt32(8 * 256))
    }

    // MARK: Errors

    @Test("bad specifications are refused with the reason", arguments: [
        ("", DiskSpecificationError.emptySpecification(spec: "")),
        ("  \t", .emptySpecification(spec: "  \t")),
        ("/img,,xvda,foo=bar", .unknownParameter(spec: "/img,,xvda,foo=bar", parameter: "foo")),
        ("colour=red,/img,,xvda", .unknownParameter(spec: "colour=red,/img,,xvda", parameter: "colour")),
        ("/img,,xvda,x", .invalidValue(spec: "/img,,xvda,x", parameter: "access", value: "x", expected: "must be r, ro, w or rw")),
        ("access=rx,/img,,xvda",
         .invalidValue(spec: "access=rx,/img,,xvda", parameter: "access", value: "rx", expected: "must be r, ro, w or rw")),
        ("mode=yes,/img,,xvda",
         .invalidValue(spec: "mode=yes,/img,,xvda", parameter: "mode", value: "yes", expected: "must be r, ro, w or rw")),
        ("/img,vmdk,xvda", .invalidValue(spec: "/img,vmdk,xvda", parameter: "format", value: "vmdk",
                                          expected: "must be raw, qcow, qcow2, vhd, qed or empty")),
        ("devtype=floppy,/img,,xvda",
         .invalidValue(spec: "devtype=floppy,/img,,xvda", parameter: "devtype", value: "floppy", expected: "must be cdrom or disk")),
        ("/img,,hdc:floppy", .invalidValue(spec: "/img,,hdc:floppy", parameter: "devtype", value: "floppy", expected: "must be cdrom or disk")),
        ("backendtype=nvme,/img,,xvda",
         .invalidValue(spec: "backendtype=nvme,/img,,xvda", parameter: "backendtype", value: "nvme", expected: "must be phy or qdisk")),
        ("vdev=xvda", .missingTarget(spec: "vdev=xvda")),
        (",,xvda", .missingTarget(spec: ",,xvda")),
        ("/img", .missingVirtualDevice(spec: "/img")),
        ("/img,raw", .missingVirtualDevice(spec: "/img,raw")),
        ("/img,,", .missingVirtualDevice(spec: "/img,,")),
        ("/img,,vda", .invalidVirtualDevice(spec: "/img,,vda", .unrecognised(name: "vda"))),
        ("/img,,xvda01", .invalidVirtualDevice(spec: "/img,,xvda01", .leadingZero(name: "xvda01"))),
        ("target=/img,vdev=xvda", .targetNotLast(spec: "target=/img,vdev=xvda", following: "vdev=xvda")),
        ("vdev=xvda,target=/img, access=ro", .targetNotLast(spec: "vdev=xvda,target=/img, access=ro", following: "access=ro")),
        ("vdev=hdc,target=/x.iso,cdrom", .targetNotLast(spec: "vdev=hdc,target=/x.iso,cdrom", following: "cdrom")),
        ("backend=1,/img,,xvda", .unsupportedBackendDomain(spec: "backend=1,/img,,xvda", domain: "1")),
        ("backend=driver-dom,/img,,xvda", .unsupportedBackendDomain(spec: "backend=driver-dom,/img,,xvda", domain: "driver-dom")),
        ("/img,raw,xvda,rw,extra", .tooManyPositionalParameters(spec: "/img,raw,xvda,rw,extra", value: "extra")),
        ("access=ro,/img,raw,xvda,r", .tooManyPositionalParameters(spec: "access=ro,/img,raw,xvda,r", value: "r")),
        ("/i=j,,xvda", .equalsInPositionalParameter(spec: "/i=j,,xvda", value: "/i=j")),
        ("foo:/img,,xvda", .unknownPrefix(spec: "foo:/img,,xvda", prefix: "foo:")),
        ("format=raw,format=qcow2,/img,,xvda", .respecified(spec: "format=raw,format=qcow2,/img,,xvda", parameter: "format")),
        ("raw:/img,format=vhd,xvda", .respecified(spec: "raw:/img,format=vhd,xvda", parameter: "format")),
        ("/img,,xvda,vdev=xvdb", .respecified(spec: "/img,,xvda,vdev=xvdb", parameter: "vdev")),
        ("/a,,xvda,target=/b", .respecified(spec: "/a,,xvda,target=/b", parameter: "target")),
        ("access=ro,mode=rw,/img,,xvda", .respecified(spec: "access=ro,mode=rw,/img,,xvda", parameter: "access")),
        ("nbd:x,script=block-y,xvda", .respecified(spec: "nbd:x,script=block-y,xvda", parameter: "script")),
        ("/x.iso,,hdc,w,cdrom", .writableCDROM(spec: "/x.iso,,hdc,w,cdrom")),
        ("access=rw,devtype=cdrom,/x.iso,,hdc", .writableCDROM(spec: "access=rw,devtype=cdrom,/x.iso,,hdc")),
        ("backendtype=tap,/img,,xvda", .unsupported(spec: "backendtype=tap,/img,,xvda", parameter: "backendtype=tap",
                                                     reason: "not implemented (phy and qdisk are)")),
        ("specification=virtio,/img,,xvda", .unsupported(spec: "specification=virtio,/img,,xvda", parameter: "specification=virtio",
                                                          reason: "not implemented (Xen PV block devices only)")),
        ("colo,/img,,xvda", .unsupported(spec: "colo,/img,,xvda", parameter: "colo", reason: "COLO replication is not implemented")),
        ("colo-host=h,/img,,xvda",
         .unsupported(spec: "colo-host=h,/img,,xvda", parameter: "colo-host", reason: "COLO replication is not implemented")),
        ("grant_usage=1,/img,,xvda", .unsupported(spec: "grant_usage=1,/img,,xvda", parameter: "grant_usage",
                                                   reason: "not implemented (it applies to virtio disks)")),
    ])
    func refused(_ spec: String, _ expected: DiskSpecificationError) {
        #expect(throws: expected) { try DiskSpecification(parsing: spec) }
    }

    @Test("a vdev where the format goes gets a hint about the positional order")
    func formatSlotHint() {
        do {
            _ = try DiskSpecification(parsing: "/img,xvda")
            Issue.record("accepted")
        } catch {
            #expect(error.description
                == "--disk '/img,xvda': format 'xvda': must be raw, qcow, qcow2, vhd, qed or empty (positional order is target,format,vdev,access: leave format empty, as in 'TARGET,,xvda')")
        }
    }

    @Test("hdc:cdrom is a vdev and devtype, not an unknown prefix; foo: at the end is one")
    func colonForms() throws {
        #expect(try meaning("/x.iso,,hdc:cdrom") == Meaning(target: "/x.iso", vdev: "hdc", readOnly: true, cdrom: true))
        #expect(try meaning("/img,,xvda:disk") == Meaning(target: "/img", vdev: "xvda"))
        #expect(throws: DiskSpecificationError.unknownPrefix(spec: "/img,,hdc:", prefix: "hdc:")) {
            try DiskSpecification(parsing: "/img,,hdc:")
        }
    }

    // MARK: Messages

    @Test("the message is one line: --disk 'SPEC': REASON")
    func messages() throws {
        let cases: [(String, String)] = [
            ("/img,,xvda,x", "--disk '/img,,xvda,x': access 'x': must be r, ro, w or rw"),
            ("foo=1,/img,,xvda", "--disk 'foo=1,/img,,xvda': unknown parameter 'foo'"),
            ("vdev=xvda", "--disk 'vdev=xvda': no target (only a CD-ROM may be empty)"),
            ("/img,,sdq", "--disk '/img,,sdq': vdev 'sdq': sd disks go up to sdp (disk 15)"),
            ("backend=2,/img,,xvda", "--disk 'backend=2,/img,,xvda': backend '2': only the control domain (0, dom0, Domain-0) serves disks"),
            ("target=/img,vdev=xvda",
             "--disk 'target=/img,vdev=xvda': target= must come last: it takes the rest of the specification, so 'vdev=xvda' would be part of the target"),
            ("", "--disk '': empty disk specification"),
        ]
        for (spec, message) in cases {
            do {
                _ = try DiskSpecification(parsing: spec)
                Issue.record("accepted \(spec)")
            } catch {
                #expect(error.description == message)
                #expect(error.option == "--disk '\(spec)'")
            }
        }
    }

    @Test("a newline in the specification is escaped: the message stays one line")
    func newlineEscaped() {
        do {
            _ = try DiskSpecification(parsing: "/img,\n,vda\n")
            Issue.record("accepted")
        } catch {
            #expect(!error.description.contains("\n"))
            #expect(error.description.hasPrefix("--disk '/img,\\n,vda\\n': vdev 'vda\\n'"))
        }
    }

    // MARK: Several disks

    @Test("duplicate vdevs across disks: the later one is refused, naming the first")
    func duplicates() throws {
        let a = try DiskSpecification(parsing: "/a,,xvda")
        let b = try DiskSpecification(parsing: "/b,,d0p0")
        let c = try DiskSpecification(parsing: "/c,,xvdb")
        #expect(throws: DiskSpecificationError.duplicateVirtualDevice(spec: "/b,,d0p0", vdev: b.vdev, firstSpec: "/a,,xvda")) {
            try DiskSpecification.validate([a, c, b])
        }
        do {
            _ = try DiskSpecification.parse(["/a,,xvda", "/c,,xvdb", "/d,,51728"])
            Issue.record("accepted a duplicate")
        } catch {
            #expect(error.description == "--disk '/d,,51728': vdev '51728' (device 51728) is already used by --disk '/c,,xvdb'")
        }
    }

    @Test("distinct vdevs pass: a disk and its partitions, other buses, none at all")
    func distinct() throws {
        let disks = try DiskSpecification.parse(["/a,,xvda", "/b,,xvda1", "/c,,hda", "/d,,sda", "/e,,xvdq", ",hdc:cdrom,r"])
        #expect(disks.count == 6)
        #expect(Set(disks.map(\.vdev.number)).count == 6)
        #expect(try DiskSpecification.parse([]).isEmpty)
        try DiskSpecification.validate([])
    }
}
