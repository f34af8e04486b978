import ArgumentParser
import DeviceSpecs
import Foundation
import PVHAPI
import Toolstack

/// xl's hot-plug verbs (xl(1) "DEVICES"), clients of the API's
/// `/v1/domains/{name}/disks` and `/nics` (pvh/Hotplug.swift serves them).

/// The wait a hot-plug verb allows, and the HTTP request's bound beyond it.
struct HotplugWaitOptions: ParsableArguments {
    @Option(help: "Seconds to wait for the guest's backend (and, on detach, its frontend), at most 600.")
    var timeout: Double = 60

    func validate() throws {
        guard timeout > 0, timeout <= 600 else { throw ValidationError("--timeout: more than 0 and at most 600 seconds") }
    }

    var query: String { "timeout=\(timeout)" }
}

/// Says on stderr what the verb waits for (the answer may take a while on
/// a software-KVM guest).
func hotplugNote(_ line: String) {
    FileHandle.standardError.write(Data("pvh: \(line)\n".utf8))
}

/// A disk spec's target made absolute against the current directory (the
/// daemon opens the image, from its own directory): the spec rewritten in
/// xl's keyword form, `target=` last.
func absoluteDiskSpec(_ spec: String) throws -> String {
    let disk: DiskSpecification
    do { disk = try DiskSpecification(parsing: spec) } catch { throw ValidationError("\(spec): \(error)") }
    guard let target = disk.target, !target.isEmpty, !target.hasPrefix("/") else { return spec }
    let absolute = FileManager.default.currentDirectoryPath + "/" + target
    return "format=\(disk.format.rawValue),vdev=\(disk.vdev.name),access=\(disk.isReadOnly ? "ro" : "rw"),"
        + (disk.isCDROM ? "devtype=cdrom," : "") + (disk.discardEnabled ? "discard," : "no-discard,")
        + (disk.directIOSafe ? "direct-io-safe," : "") + "target=\(absolute)"
}

func attachDevice(_ kind: DeviceKind, _ name: String, spec: String, wait: HotplugWaitOptions) throws {
    try reportingAPIErrors {
        let client = DaemonClient()
        guard client.isRunning else { throw client.fail("\(name) is an invalid domain identifier (no pvh daemon)") }
        let body = try JSONEncoder().encode(AttachDeviceRequest(spec: spec))
        hotplugNote("\(name): waiting up to \(Int(wait.timeout)) s for the guest's backend to offer the \(kind == .disks ? "disk" : "interface")")
        _ = try client.send("POST", "/v1/domains/\(pathSegment(name))/\(kind.rawValue)?\(wait.query)", body: Array(body),
                            timeout: wait.timeout + 10)
    }
}

func detachDevice(_ kind: DeviceKind, _ name: String, device: String, force: Bool, wait: HotplugWaitOptions) throws {
    try reportingAPIErrors {
        let client = DaemonClient()
        guard client.isRunning else { throw client.fail("\(name) is an invalid domain identifier (no pvh daemon)") }
        if !force {
            hotplugNote("\(name): waiting up to \(Int(wait.timeout)) s for the guest to close \(device)")
        }
        _ = try client.send("DELETE", "/v1/domains/\(pathSegment(name))/\(kind.rawValue)/\(pathSegment(device))?\(wait.query)&force=\(force)",
                            timeout: wait.timeout + 10)
    }
}

func listDevices(_ kind: DeviceKind, _ names: [String]) throws {
    try reportingAPIErrors {
        let client = DaemonClient()
        guard client.isRunning else { throw client.fail("\(names.first ?? "") is an invalid domain identifier (no pvh daemon)") }
        print(kind == .disks ? DeviceListing.blockHeader : DeviceListing.networkHeader)
        for name in names {
            let entries = try client.call("GET", "/v1/domains/\(pathSegment(name))/\(kind.rawValue)", as: [DeviceListingEntry].self)
            for e in entries { print(kind == .disks ? DeviceListing.blockRow(e) : DeviceListing.networkRow(e)) }
        }
    }
}

struct BlockAttach: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block-attach",
        abstract: "Hot-plug a disk into a running guest (xl block-attach): DISKSPEC as in a config's disk=[...].",
        discussion: "Waits until the guest's backend offers the disk (InitWait); the guest's blkfront then connects it.")
    @Argument(help: "The guest's name.") var name: String
    @Argument(help: "The disk spec (xl-disk-configuration(5)); several words are joined with commas, as xl does.")
    var spec: [String]
    @OptionGroup var wait: HotplugWaitOptions
    func run() throws { try attachDevice(.disks, name, spec: try absoluteDiskSpec(spec.joined(separator: ",")), wait: wait) }
}

struct BlockDetach: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block-detach",
        abstract: "Hot-unplug a disk (xl block-detach): the guest closes it, then it is removed.")
    @Argument(help: "The guest's name.") var name: String
    @Argument(help: "The disk: its vdev (xvdb) or number (51728).") var device: String
    @Flag(name: [.short, .long], help: "Remove it without waiting for the guest to close it.") var force = false
    @OptionGroup var wait: HotplugWaitOptions
    func run() throws { try detachDevice(.disks, name, device: device, force: force, wait: wait) }
}

struct BlockList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "block-list", abstract: "List a guest's disks in xl's columns (xl block-list).")
    @Argument(help: "The guests' names.") var names: [String]
    func run() throws { try listDevices(.disks, names) }
}

struct NetworkAttach: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network-attach",
        abstract: "Hot-plug a network interface into a running guest (xl network-attach): VIFSPEC as in a config's vif=[...].",
        discussion: "Waits until the guest's backend offers the interface (InitWait).")
    @Argument(help: "The guest's name.") var name: String
    @Argument(help: "The vif spec's parameters (xl-network-configuration(5)), joined with commas.") var spec: [String] = []
    @OptionGroup var wait: HotplugWaitOptions
    func run() throws { try attachDevice(.nics, name, spec: spec.joined(separator: ","), wait: wait) }
}

struct NetworkDetach: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network-detach",
        abstract: "Hot-unplug a network interface (xl network-detach): the guest closes it, then it is removed.")
    @Argument(help: "The guest's name.") var name: String
    @Argument(help: "The interface: its devid or MAC address.") var device: String
    @Flag(name: [.short, .long], help: "Remove it without waiting for the guest to close it.") var force = false
    @OptionGroup var wait: HotplugWaitOptions
    func run() throws { try detachDevice(.nics, name, device: device, force: force, wait: wait) }
}

struct NetworkList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "network-list", abstract: "List a guest's network interfaces in xl's columns (xl network-list).")
    @Argument(help: "The guests' names.") var names: [String]
    func run() throws { try listDevices(.nics, names) }
}
