import DeviceSpecs
import Testing
import XLConfig

/// Resolves `text` (as `t.cfg`) with `overrides`.
func resolve(_ text: String, overrides: [String] = []) throws -> XLDomainConfiguration.Resolution {
    try XLDomainConfiguration.resolve(settings(text, overrides: overrides))
}

/// The one line resolving `text` fails with.
func resolveError(_ text: String) -> String? {
    lookupError { _ = try resolve(text) }
}

let minimal = "type = \"pvh\"\nname = \"g\"\nkernel = \"/k\"\n"

@Suite("xl.cfg resolution (xl_parse.c parse_config_data)")
struct DomainConfigurationTests {
    @Test("a minimal config: libxl's defaults")
    func defaults() throws {
        let r = try resolve(minimal)
        let c = r.configuration
        #expect(r.warnings.isEmpty)
        #expect(c.name == "g")
        #expect(c.uuid == nil)
        #expect(c.memoryMiB == 32 && c.maximumMemoryMiB == 32)
        #expect(c.vcpus == 1 && c.maximumVCPUs == 1)
        #expect(c.kernel == "/k" && c.ramdisk == nil && c.commandLine == nil)
        #expect(c.disks.isEmpty && c.networks.isEmpty)
        #expect(c.action(on: .poweroff) == .destroy)
        #expect(c.action(on: .reboot) == .restart)
        #expect(c.action(on: .watchdog) == .destroy)
        #expect(c.action(on: .crash) == .destroy)
        #expect(c.action(on: .softReset) == .softReset)
        #expect(c.maximumGrantFrames == nil)
        #expect(c.maximumEventChannels == 1023)
    }

    @Test("memory, maxmem, vcpus, maxvcpus and their defaults from each other")
    func sizes() throws {
        var c = try resolve(minimal + "memory = 512\nvcpus = 4\n").configuration
        #expect(c.memoryMiB == 512 && c.maximumMemoryMiB == 512 && c.vcpus == 4 && c.maximumVCPUs == 4)
        c = try resolve(minimal + "maxmem = 256\n").configuration
        #expect(c.memoryMiB == 256 && c.maximumMemoryMiB == 256)
        // xl makes fewer than one vCPU one.
        #expect(try resolve(minimal + "vcpus = 0\n").configuration.vcpus == 1)
        let r = try resolve(minimal + "memory = 128\nmaxmem = 512\nvcpus = 2\nmaxvcpus = 4\n")
        #expect(r.configuration.maximumMemoryMiB == 512 && r.configuration.maximumVCPUs == 4)
        #expect(r.warnings == [
            "t.cfg:5: warning: maxmem (512 MiB) above memory (128 MiB): the guest gets 128 MiB and cannot balloon above it (not implemented yet)",
            "t.cfg:7: warning: maxvcpus (4) above vcpus (2): vCPU hot-plug is not implemented, the guest gets 2",
        ])
        #expect(resolveError(minimal + "vcpus = 4\nmaxvcpus = 2\n") == "xl: maxvcpus < vcpus")
        #expect(resolveError(minimal + "memory = 512\nmaxmem = 256\n") == "t.cfg:5: maxmem (256 MiB) is below memory (512 MiB)")
    }

    @Test("a wrong value type names the key and its line", arguments: [
        ("memory = \"lots\"\n", "t.cfg:4: parameter `memory' is not a valid number"),
        ("memory = [512]\n", "t.cfg:4: parameter `memory' is a list but should be a single value"),
        ("memory = 0\n", "t.cfg:4: parameter `memory': value `0' is smaller than minimum bound '1'"),
        ("vcpus = 2\nvcpus += 2\n", "t.cfg:5: can't use += with numbers for parameter `vcpus'"),
        ("kernel = [\"/k\"]\n", "t.cfg:4: parameter `kernel' is a list but should be a single value"),
        ("disk = '/x,raw,xvda,rw'\n", "t.cfg:4: parameter `disk' is a single value but should be a list"),
        ("max_grant_frames = '-1'\n", "t.cfg:4: parameter `max_grant_frames': value `-1' is smaller than minimum bound '0'"),
        ("max_event_channels = 'x'\n", "t.cfg:4: parameter `max_event_channels' is not a valid number"),
        ("on_crash = [\"destroy\"]\n", "t.cfg:4: parameter `on_crash' is a list but should be a single value"),
    ])
    func wrongTypes(_ extra: String, _ message: String) {
        #expect(resolveError(minimal + extra) == message)
    }

    @Test("xl's own fatal messages")
    func xlMessages() {
        #expect(resolveError("type = \"pvh\"\nkernel = \"/k\"\n") == "Domain name must be specified.")
        #expect(resolveError(minimal + "uuid = \"not-a-uuid\"\n") == "Failed to parse UUID: not-a-uuid")
        #expect(resolveError(minimal + "on_reboot = \"reboot\"\n") == "Unknown on_reboot action \"reboot\" specified")
        #expect(resolveError("type = \"pvhx\"\nname = \"g\"\n") == "Invalid domain type pvhx.")
        #expect(resolveError("type = \"pvh\"\nbuilder = \"generic\"\nname = \"g\"\n") == "Contradicting \"builder\" and \"type\" options specified.")
    }

    @Test("type=: PVH only; xl's prefix matching; the legacy builder=\"hvm\" + device_model_version=\"none\"")
    func types() throws {
        #expect(resolveError("type = \"hvm\"\nname = \"g\"\nkernel = \"/k\"\n") == "t.cfg:1: an HVM guest: pvh runs PVH guests only (type=\"pvh\")")
        #expect(resolveError("type = \"pv\"\nname = \"g\"\nkernel = \"/k\"\n") == "t.cfg:1: a PV guest: pvh runs PVH guests only (type=\"pvh\")")
        // "p" is a prefix of "pv", tried before "pvh", as xl's strncmp does.
        #expect(resolveError("type = \"p\"\nname = \"g\"\n") == "t.cfg:1: a PV guest: pvh runs PVH guests only (type=\"pvh\")")
        #expect(resolveError("builder = \"hvm\"\nname = \"g\"\n") == "t.cfg:1: an HVM guest: pvh runs PVH guests only (type=\"pvh\")")
        let legacy = try resolve("builder = \"hvm\"\ndevice_model_version = \"none\"\nname = \"g\"\nkernel = \"/k\"\n")
        #expect(legacy.warnings.isEmpty)
        #expect(legacy.configuration.name == "g")
        let both = try resolve("type = \"pvh\"\nbuilder = \"hvm\"\ndevice_model_version = \"none\"\nname = \"g\"\nkernel = \"/k\"\n")
        #expect(both.warnings.isEmpty)
        let untyped = try resolve("name = \"g\"\nkernel = \"/k\"\n")
        #expect(untyped.warnings == ["t.cfg: warning: no type= given (xl would make a PV guest): pvh makes PVH guests only, type=\"pvh\" assumed"])
        #expect(resolveError("type = \"pvh\"\nname = \"g\"\n")
            == "t.cfg: no kernel= given: pvh boots the guest's kernel directly (bootloader= and firmware= are not supported)")
    }

    @Test("uuid: 8-4-4-4-12 hex, either case, printed lower-case")
    func uuid() throws {
        let c = try resolve(minimal + "uuid = \"6F9619FF-8B86-D011-B42D-00C04FC964FF\"\n").configuration
        #expect(c.uuid?.description == "6f9619ff-8b86-d011-b42d-00c04fc964ff")
        #expect(resolveError(minimal + "uuid = \"6f9619ff8b86d011b42d00c04fc964ff\"\n") == "Failed to parse UUID: 6f9619ff8b86d011b42d00c04fc964ff")
    }

    @Test("cmdline wins over root/extra with xl's warning; root and extra join as xl joins them", arguments: [
        ("cmdline = \"a b\"\n", "a b", false),
        ("cmdline = \"a b\"\nroot = \"/dev/xvda1\"\n", "a b", true),
        ("cmdline = \"a b\"\nextra = \"quiet\"\n", "a b", true),
        ("root = \"/dev/xvda1\"\nextra = \"ro quiet\"\n", "root=/dev/xvda1 ro quiet", false),
        ("root = \"/dev/xvda1\"\n", "root=/dev/xvda1", false),
        ("extra = \"console=hvc0\"\n", "console=hvc0", false),
    ])
    func commandLine(_ extra: String, _ expected: String, _ warned: Bool) throws {
        let r = try resolve(minimal + extra)
        #expect(r.configuration.commandLine == expected)
        #expect(r.warnings == (warned ? ["Warning: ignoring root= and extra= in favour of cmdline="] : []))
    }

    @Test("on_* take xl's seven actions", arguments: ShutdownAction.allCases)
    func actions(_ action: ShutdownAction) throws {
        var text = minimal
        for event in ShutdownEvent.allCases { text += "\(event.key) = \"\(action.rawValue)\"\n" }
        let c = try resolve(text).configuration
        for event in ShutdownEvent.allCases { #expect(c.action(on: event) == action) }
    }

    @Test("max_grant_frames and max_event_channels; 0 event channels means libxl's default")
    func limits() throws {
        let c = try resolve(minimal + "max_grant_frames = 32\nmax_event_channels = 0x7ff\n").configuration
        #expect(c.maximumGrantFrames == 32)
        #expect(c.maximumEventChannels == 2047)
        #expect(try resolve(minimal + "max_event_channels = 0\n").configuration.maximumEventChannels == 1023)
    }

    @Test("disk=[...] and vif=[...] go to DeviceSpecs' parsers, in order")
    func devices() throws {
        let c = try resolve(minimal + """
            disk = [ '/srv/a.img,raw,xvda,rw',
                     'format=raw, vdev=xvdb, access=ro, target=/srv/b.img', ]
            vif = [ '', 'mac=00:16:3e:01:02:03,bridge=br0' ]

            """).configuration
        #expect(c.disks.map(\.target) == ["/srv/a.img", "/srv/b.img"])
        #expect(c.disks.map(\.vdev.name) == ["xvda", "xvdb"])
        #expect(c.disks.map(\.isReadOnly) == [false, true])
        #expect(c.disks == [try DiskSpecification(parsing: "/srv/a.img,raw,xvda,rw"),
                            try DiskSpecification(parsing: "format=raw, vdev=xvdb, access=ro, target=/srv/b.img")])
        #expect(c.networks.map(\.type) == [.user, .tap])
        #expect(c.networks[1].mac?.description == "00:16:3e:01:02:03")
        #expect(c.networks[1].bridge == "br0")
    }

    @Test("a bad disk or vif names the key's line and the specification")
    func deviceErrors() {
        #expect(resolveError(minimal + "disk = [ '/a,raw,xvda,rw', '/b,vmdk,xvdb' ]\n")
            == "t.cfg:4: disk '/b,vmdk,xvdb': format 'vmdk': must be raw, qcow, qcow2, vhd, qed or empty")
        #expect(resolveError(minimal + "disk = [ '/a,raw,xvda', '/b,raw,xvda' ]\n")?.hasPrefix("t.cfg:4: disk '/b,raw,xvda': vdev 'xvda'") == true)
        #expect(resolveError(minimal + "vif = [ 'colour=blue' ]\n")?.hasPrefix("t.cfg:4: vif 'colour=blue': ") == true)
        #expect(resolveError(minimal + "vif = [ 'mac=00:16:3e:00:00:01', 'mac=00:16:3e:00:00:01' ]\n")?
            .hasPrefix("t.cfg:4: vif 'mac=00:16:3e:00:00:01': ") == true)
        #expect(resolveError(minimal + "disk = [ [ '/a,raw,xvda' ] ]\n") == "t.cfg:4: disk: item 1 is a list, not a DISKSPEC string")
    }

    @Test("keys xl knows that mean nothing here: one warning each, in file order; unknown keys: silence")
    func ignoredKeys() throws {
        let r = try resolve(minimal + """
            seclabel = 'system_u:system_r:domU_t'
            cpus_soft = "0-1"
            device_model_args = [ '-x' ]
            cpus_soft = "2"
            pci = []
            no_such_key = 1
            sdl = 0

            """)
        #expect(r.warnings == [
            "t.cfg:4: warning: `seclabel' ignored: pvh has no XSM/FLASK security labels",
            "t.cfg:7: warning: `cpus_soft' ignored: soft affinity (a preferred CPU set) has no Linux counterpart for a thread: pin with cpus=",
            "t.cfg:6: warning: `device_model_args' ignored: a PVH guest has no device model",
            "t.cfg:8: warning: `pci' ignored: no meaning for a PVH guest under pvh",
            "t.cfg:10: warning: `sdl' ignored: no meaning for a PVH guest under pvh",
        ])
    }

    @Test("cpus=: a string pins every vCPU alike, a list vCPU by vCPU (items past maxvcpus ignored, as xl); a bad list names its line")
    func vcpuAffinity() throws {
        var c = try resolve(minimal + "vcpus = 3\ncpus = \"0-3,^1\"\n").configuration
        #expect(c.vcpuAffinity.map(\.text) == ["0-3,^1", "0-3,^1", "0-3,^1"])
        c = try resolve(minimal + "vcpus = 2\ncpus = [ \"1\", \"nodes:0\", \"7\" ]\n").configuration
        #expect(c.vcpuAffinity.map(\.text) == ["1", "nodes:0"])
        #expect(c.json.rendered().contains("\"cpus\": [\n    \"1\",\n    \"nodes:0\"\n  ],"), "\(c.json.rendered())")
        c = try resolve(minimal + "vcpus = 4\ncpus = [ \"2\" ]\n").configuration
        #expect(c.vcpuAffinity.map(\.text) == ["2"])  // vCPUs 1-3 unpinned
        #expect(try resolve(minimal).configuration.vcpuAffinity.isEmpty)
        #expect(resolveError(minimal + "cpus = \"^all\"\n") == "t.cfg:4: cpus '^all': \"^\" and \"all\" cannot be combined")
        #expect(resolveError(minimal + "cpus = [ \"0\", \"2-1\" ]\nvcpus = 2\n")
            == "t.cfg:4: cpus '2-1': invalid CPU range '2-1': want N or N-M (M >= N, at most 8191)")
        #expect(resolveError(minimal + "cpus = [ [ \"0\" ] ]\n") == "t.cfg:4: cpus: item 1 is a list, not a CPU list string")
        #expect(try resolve(minimal + "cpus = \"1\"\n").warnings.isEmpty)
    }

    @Test("overrides reach the resolution: xl create FILE memory=1024 'name=\"b\"'")
    func overrides() throws {
        let c = try resolve(minimal + "memory = 512\n", overrides: ["memory=1024", "name=\"b\"", "disk=['/x,raw,xvda,rw']"]).configuration
        #expect(c.memoryMiB == 1024)
        #expect(c.name == "b")
        #expect(c.disks.map(\.target) == ["/x"])
    }

    @Test("the dry run's JSON: xl's key names in a fixed order")
    func json() throws {
        let c = try resolve(minimal + """
            uuid = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
            memory = 64
            extra = "console=hvc0 \\"q\\""
            disk = [ '/srv/a.img,raw,xvda,ro' ]
            vif = [ 'type=none,mac=00:16:3e:00:00:01,mtu=1500' ]
            on_crash = "preserve"

            """).configuration
        #expect(c.json.rendered() == #"""
            {
              "name": "g",
              "type": "pvh",
              "uuid": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
              "memory": 64,
              "maxmem": 64,
              "vcpus": 1,
              "maxvcpus": 1,
              "cpus": null,
              "kernel": "/k",
              "ramdisk": null,
              "cmdline": "console=hvc0 \"q\"",
              "disk": [
                {
                  "spec": "/srv/a.img,raw,xvda,ro",
                  "target": "/srv/a.img",
                  "format": "raw",
                  "vdev": "xvda",
                  "devid": 51712,
                  "access": "ro",
                  "devtype": "disk",
                  "direct_io_safe": false,
                  "discard": true,
                  "script": null
                }
              ],
              "vif": [
                {
                  "spec": "type=none,mac=00:16:3e:00:00:01,mtu=1500",
                  "type": "none",
                  "mac": "00:16:3e:00:00:01",
                  "bridge": null,
                  "vifname": null,
                  "mtu": 1500,
                  "rate": null,
                  "devid": null,
                  "ip": null
                }
              ],
              "on_poweroff": "destroy",
              "on_reboot": "restart",
              "on_watchdog": "destroy",
              "on_crash": "preserve",
              "on_soft_reset": "soft-reset",
              "max_grant_frames": null,
              "max_event_channels": 1023
            }
            """#)
    }

    @Test("JSON strings escape quotes, backslashes and control characters")
    func jsonEscapes() {
        #expect(JSONValue.string("a\"b\\c\n\u{1}").rendered() == #""a\"b\\c\n\u0001""#)
        #expect(JSONValue.array([]).rendered() == "[]")
    }
}
