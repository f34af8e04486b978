import Testing
import Toolstack
import XLConfig
import XenABI

/// A resolved config named `name` (and `extra` lines), as pvh create makes one.
func configuration(_ name: String, _ extra: String = "") throws -> XLDomainConfiguration {
    let text = "type = \"pvh\"\nname = \"\(name)\"\nkernel = \"/k\"\nmemory = 64\nvcpus = 2\n\(extra)"
    return try XLDomainConfiguration.resolve(try ConfigSettings(source: "t.cfg", bytes: Array(text.utf8))).configuration
}

@Suite struct RegistryTests {
    @Test func idsAreUniqueAndNotReusedWhileAlive() throws {
        var registry = DomainRegistry(highestID: 4)
        let a = try registry.create(try configuration("a"), now: 1)
        let b = try registry.create(try configuration("b"), now: 1)
        #expect(a.id == DomainID(rawValue: 1) && b.id == DomainID(rawValue: 2))
        registry.remove(a.id)
        // The rover moves on: a freed id comes back only after the others.
        let c = try registry.create(try configuration("c"), now: 1)
        let d = try registry.create(try configuration("d"), now: 1)
        #expect(c.id == DomainID(rawValue: 3) && d.id == DomainID(rawValue: 4))
        // Round again: 1 is free, 2 lives (b) and is skipped.
        let e = try registry.create(try configuration("e"), now: 1)
        #expect(e.id == DomainID(rawValue: 1))
        #expect(throws: RegistryError.noFreeID) { try registry.create(try configuration("f"), now: 1) }
        let live = registry.all.map(\.id.rawValue)
        #expect(live == [1, 2, 3, 4])
        #expect(Set(live).count == live.count)
    }

    @Test func restartTakesAFreshIDKeepingNameAndUUID() throws {
        var registry = DomainRegistry(highestID: 3)
        let web = try registry.create(try configuration("web"), now: 1)
        let db = try registry.create(try configuration("db"), now: 1)
        registry.update(web.id) { $0.quickEnds = 2 }
        let again = try registry.renumber(web.id) { $0.restarts += 1; $0.startTime = 9 }
        // The rover's next id (3), not the old one; name, UUID and config kept.
        #expect(again.id == DomainID(rawValue: 3))
        #expect(again.name == "web" && again.uuid == web.uuid && again.configuration == web.configuration)
        #expect(again.restarts == 1 && again.quickEnds == 2 && again.startTime == 9 && again.processID == nil)
        #expect(registry[web.id] == nil && registry.named("web")?.id == again.id)
        // Round again: 1 (web's old id) is free, 2 lives (db) and is skipped.
        let third = try registry.renumber(again.id)
        #expect(third.id == DomainID(rawValue: 1))
        // Every id taken: a restart needs one more while the old is held.
        _ = try registry.create(try configuration("x"), now: 1)
        #expect(throws: RegistryError.noFreeID) { try registry.renumber(db.id) }
        #expect(registry[db.id] == db)
        #expect(throws: RegistryError.noSuchDomain("7")) { try registry.renumber(DomainID(rawValue: 7)) }
    }

    @Test func namesAndUUIDsAreUnique() throws {
        var registry = DomainRegistry()
        let web = try registry.create(try configuration("web", "uuid = \"12345678-1234-1234-1234-123456789abc\"\n"), now: 5)
        #expect(web.uuid.description == "12345678-1234-1234-1234-123456789abc")
        #expect(throws: RegistryError.nameInUse("web")) { try registry.create(try configuration("web"), now: 1) }
        let sameUUID = try configuration("other", "uuid = \"12345678-1234-1234-1234-123456789ABC\"\n")
        #expect(throws: RegistryError.uuidInUse(web.uuid)) { try registry.create(sameUUID, now: 1) }
        // A generated UUID is version 4 and differs from the next.
        let db = try registry.create(try configuration("db"), now: 1)
        let text = db.uuid.description
        #expect(Array(text)[14] == "4")
        #expect(db.uuid != (try registry.create(try configuration("db2"), now: 1)).uuid)
        // Gone: its name is free again; a rename to a live name is refused.
        registry.remove(web.id)
        let again = try registry.create(try configuration("web"), now: 2)
        #expect(throws: RegistryError.nameInUse("db")) { try registry.rename(again.id, to: "db") }
        try registry.rename(again.id, to: "web-old")
        #expect(registry.named("web") == nil && registry.named("web-old")?.id == again.id)
    }
}

@Suite struct StateAndListingTests {
    @Test func xlFlags() {
        #expect(DomainState.running.flags == "r-----")
        #expect(DomainState.paused.flags == "--p---")
        #expect(DomainState.shutdown(.poweroff).flags == "---s--")
        #expect(DomainState.crashed.flags == "---sc-")
        #expect(DomainState.dying.flags == "-----d")
    }

    @Test func xlColumns() throws {
        // xl list's header and a row, column for column (tools/xl/xl_info.c).
        #expect(DomainListing.header
            == "Name                                        ID   Mem VCPUs      State   Time(s)")
        var registry = DomainRegistry()
        let record = try registry.create(try configuration("web"), now: 0)
        #expect(DomainListing.row(record, cpuSeconds: 12.345)
            == "web                                          1    64     2     r-----      12.3")
        #expect(DomainListing.row(name: String(repeating: "n", count: 45), id: 31000, memoryMiB: 123456, vcpus: 64,
                                  flags: "---sc-", cpuSeconds: 0).hasPrefix(String(repeating: "n", count: 45) + " 31000 123456    64"))
    }
}

@Suite struct PolicyTests {
    @Test func exitContract() {
        #expect(DomainEnd(.exited(0)) == .shutdown(.poweroff))
        #expect(DomainEnd(.exited(3)) == .shutdown(.reboot))
        #expect(DomainEnd(.exited(4)) == .shutdown(.crash))
        #expect(DomainEnd(.exited(1)) == .shutdown(.crash))
        #expect(DomainEnd(.signaled(9)) == .shutdown(.crash))
        #expect(DomainEnd(.exited(6)) == .shutdown(.softReset))
        #expect(DomainEnd(.exited(2)) == .refused)
        #expect(DomainEnd(.exited(130)) == .stopped)
    }

    @Test func actions() throws {
        let defaults = try configuration("a")
        #expect(ShutdownPolicy.decide(.shutdown(.poweroff), configuration: defaults).action == .destroy)
        #expect(ShutdownPolicy.decide(.shutdown(.reboot), configuration: defaults).action == .restart)
        #expect(ShutdownPolicy.decide(.shutdown(.crash), configuration: defaults).action == .destroy)
        #expect(ShutdownPolicy.decide(.stopped, configuration: defaults).action == .destroy)
        let custom = try configuration("b", """
            on_crash = "preserve"
            on_poweroff = "rename-restart"
            on_reboot = "coredump-destroy"
            on_watchdog = "coredump-restart"
            """)
        let kept = ShutdownPolicy.decide(.shutdown(.crash), configuration: custom)
        #expect(kept.action == .preserve && kept.warning == nil)
        #expect(ShutdownPolicy.decide(.shutdown(.poweroff), configuration: custom).action == .renameRestart)
        let dump = ShutdownPolicy.decide(.shutdown(.reboot), configuration: custom)
        #expect(dump.action == .destroy && dump.warning?.contains("on_reboot=\"coredump-destroy\"") == true)
        #expect(ShutdownPolicy.decide(.shutdown(.watchdog), configuration: custom).action == .restart)
        // Refused before it ran: never restarted, whatever on_crash says.
        let restartOnCrash = try configuration("c", "on_crash = \"restart\"\n")
        #expect(ShutdownPolicy.decide(.refused, configuration: restartOnCrash).action == .destroy)
        #expect(ShutdownPolicy.decide(.shutdown(.crash), configuration: restartOnCrash).action == .restart)
    }

    @Test func quickRestartsStop() {
        #expect(ShutdownPolicy.allowsRestart(quickEnds: 0))
        #expect(ShutdownPolicy.allowsRestart(quickEnds: 4))
        #expect(!ShutdownPolicy.allowsRestart(quickEnds: 5))
        #expect(!ShutdownPolicy.allowsRestart(quickEnds: 2, limit: 2))
    }

    @Test func launchArgumentsHandTheStoreOverAndEndWithDestroyOnReboot() {
        var launch = GuestLaunch(executable: "/usr/bin/pvh", configPath: "/run/pvh/d/web.cfg", logPath: "/l", overrides: ["memory=64"],
                                 domain: DomainID(rawValue: 7))
        #expect(launch.arguments == ["/usr/bin/pvh", "create", "-F", "--store-fd", "3", "--guest-store-fd", "4", "--domid", "7",
                                     "/run/pvh/d/web.cfg", "memory=64", "on_reboot=\"destroy\""])
        launch.domain = DomainID(rawValue: 12)
        #expect(launch.arguments.contains("12") && !launch.arguments.contains("7"))
        #expect(GuestLaunch.storeDescriptor > 2 && GuestLaunch.guestStoreDescriptor > 2
                && GuestLaunch.storeDescriptor != GuestLaunch.guestStoreDescriptor)
    }

    @Test func storeNodesTheDaemonWrites() throws {
        let uuid = try #require(DomainUUID(parsing: "6b4c5e2a-0d1f-4a3b-9c8d-7e6f5a4b3c2d"))
        let nodes = DomainStoreNodes(domain: DomainID(rawValue: 3), name: "web", uuid: uuid)
        #expect(nodes.home == "/local/domain/3")
        #expect(nodes.vm == "/vm/6b4c5e2a-0d1f-4a3b-9c8d-7e6f5a4b3c2d")
        #expect(nodes.writes.map(\.path) == ["\(nodes.vm)/name", "\(nodes.vm)/uuid", "/local/domain/3/name", "/local/domain/3/vm",
                                            "/local/domain/3/domid"])
        #expect(nodes.writes.map(\.value) == ["web", uuid.description, "web", nodes.vm, "3"])
        // Only the three toolstack nodes under the home: the guest process
        // writes the rest (DomainStoreLayout.builderSubtrees).
        #expect(Set(nodes.writes.map(\.path).filter { $0.hasPrefix(nodes.home + "/") }.map { $0.split(separator: "/").last! })
                == ["name", "vm", "domid"])
        #expect(nodes.backendDirectories(types: ["vbd", "vif"]) == ["/local/domain/0/backend/vbd/3", "/local/domain/0/backend/vif/3"])
    }
}

@Suite struct ConsoleBufferTests {
    @Test func keepsEverythingWithinTheBoundInOrder() {
        var buffer = ConsoleBuffer(capacity: 8)
        buffer.append(Array("abc".utf8))
        buffer.append(Array("def".utf8))
        #expect(buffer.contents == Array("abcdef".utf8))
        #expect(buffer.dropped == 0 && buffer.count == 6)
    }

    @Test func dropsTheOldestAndCountsThem() {
        var buffer = ConsoleBuffer(capacity: 8)
        buffer.append(Array("abcdef".utf8))
        buffer.append(Array("ghijk".utf8))
        // 11 bytes into 8: the 3 oldest went, the rest replays in order.
        #expect(buffer.contents == Array("defghijk".utf8))
        #expect(buffer.dropped == 3 && buffer.count == 8)
        buffer.append(Array("lm".utf8))
        #expect(buffer.contents == Array("fghijklm".utf8))
        #expect(buffer.dropped == 5)
    }

    @Test func oneWriteLargerThanTheBound() {
        var buffer = ConsoleBuffer(capacity: 4)
        buffer.append(Array("xy".utf8))
        buffer.append(Array("0123456789".utf8))
        #expect(buffer.contents == Array("6789".utf8))
        // The 2 kept before and the 6 oldest of the write.
        #expect(buffer.dropped == 8)
        buffer.append(Array("Z".utf8))
        #expect(buffer.contents == Array("789Z".utf8))
        #expect(buffer.dropped == 9)
    }

    @Test func manyWritesStayBounded() {
        var buffer = ConsoleBuffer(capacity: 1000)
        var all: [UInt8] = []
        for i in 0..<5000 {
            let bytes = Array("line \(i)\n".utf8)
            all += bytes
            buffer.append(bytes)
        }
        #expect(buffer.count == 1000)
        #expect(buffer.contents == Array(all.suffix(1000)))
        #expect(buffer.dropped == UInt64(all.count - 1000))
    }
}

/// `pvh block-list` and `network-list`: xl's headers and printf widths
/// (xl_vbd.c, xl_nic.c), -1 for missing numbers as libxl's getinfo.
@Suite struct DeviceListingTests {
    @Test func blockRows() {
        let e = DeviceListingEntry(devid: 51712, backendDomain: 0, handle: 1, state: 4, backendState: 4, eventChannel: 11,
                                   ringRef: 8, rxRingRef: -1, backendPath: "/local/domain/0/backend/vbd/1/51712", name: "xvda",
                                   target: "/a.img")
        #expect(DeviceListing.blockHeader == "Vdev  BE  handle state evt-ch ring-ref BE-path")
        #expect(DeviceListing.blockRow(e) == "51712 0   1      4     11     8        /local/domain/0/backend/vbd/1/51712")
        var unconnected = e
        unconnected.state = 1
        unconnected.eventChannel = DeviceListingEntry.number(nil)
        unconnected.ringRef = DeviceListingEntry.number("junk")
        #expect(DeviceListing.blockRow(unconnected).hasPrefix("51712 0   1      1     -1     -1       /local"))
    }

    @Test func networkRows() {
        let e = DeviceListingEntry(devid: 1, backendDomain: 0, handle: 1, state: 4, backendState: 4, eventChannel: 15,
                                   ringRef: 1280, rxRingRef: 1281, backendPath: "/local/domain/0/backend/vif/10/1",
                                   name: "00:16:3e:47:7a:dd", target: "user")
        #expect(DeviceListing.networkHeader == "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path")
        #expect(DeviceListing.networkRow(e) == "1   0  00:16:3e:47:7a:dd     1     4     15  1280/1281        /local/domain/0/backend/vif/10/1")
    }

    @Test func numbers() {
        #expect(DeviceListingEntry.number("42") == 42)
        #expect(DeviceListingEntry.number("-1") == -1)
        #expect(DeviceListingEntry.number("-5") == -1)
        #expect(DeviceListingEntry.number("99999999999") == -1)
        #expect(DeviceListingEntry.number("") == -1)
    }
}
