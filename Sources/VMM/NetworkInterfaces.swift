import DeviceRuntime
import DeviceSpecs
import EventChannels
import GrantTables
import GuestMemory
import HostIO
import Logging
import NetBackend
import Synchronization
import XenABI
import XenBus
import XenStore

/// The guest's network interfaces (`--net`), their host sides made before
/// anything else of the domain is built: a TAP that cannot be created, a
/// missing bridge or a missing passt is the user's error (exit 2), found
/// before a byte of guest memory exists.
struct NetworkLinks {
    struct Interface {
        let specification: NetworkInterfaceSpecification
        /// The index under `device/vif/` (xl's devid: its position unless given).
        let devid: Int
        let mac: MACAddress
        let link: any NetworkLink
        /// The TAP's name, nil for user networking and none.
        let vifname: String?
    }
    let interfaces: [Interface]

    init(_ configuration: GuestConfiguration, logger: Logger) throws(DomainError) {
        var made: [Interface] = []
        var random = SystemRandomNumberGenerator()
        let report = { (line: String) in logger.warning("\(line)") }
        for (position, spec) in configuration.networks.enumerated() {
            let option = "--net '\(spec.spec)'"
            let devid = spec.devid ?? position
            for warning in spec.warnings { report("\(option): \(warning)") }
            let mac = spec.mac ?? MACAddress.xenRandom(using: &random)
            do {
                switch spec.type {
                case .user:
                    let link = try PasstLink(mtu: spec.mtu ?? PasstLink.defaultMTU, addresses: spec.ip.map { [$0] } ?? [])
                    made.append(Interface(specification: spec, devid: devid, mac: mac, link: link, vifname: nil))
                case .tap:
                    // libxl's default name: vif<domid>.<devid>.
                    let name = spec.vifname ?? "vif\(configuration.domainID.rawValue).\(devid)"
                    let link = try TapLink(name: name, mtu: spec.mtu ?? 1500, bridge: spec.bridge)
                    made.append(Interface(specification: spec, devid: devid, mac: mac, link: link, vifname: name))
                case .none:
                    made.append(Interface(specification: spec, devid: devid, mac: mac,
                                          link: NullLink(mtu: spec.mtu ?? 1500), vifname: nil))
                }
            } catch {
                made.forEach { $0.link.stop() }
                throw .badConfiguration(option: option, reason: "\(error)")
            }
        }
        interfaces = made
    }

    /// Releases the host sides (a domain that failed before its backends existed).
    func release() { interfaces.forEach { $0.link.stop() } }
}

/// The network backends of one domain: one `NetBackend` per interface, at
/// its devid under the domain's `device/vif`, with the nodes libxl writes
/// for a vif beside the backend's own.
final class NetworkBackends: Sendable {
    /// Emptied by `tearDown`.
    private let backends: Mutex<[NetBackend]>
    /// Each interface's per-queue counters, kept after `tearDown`.
    let metrics: [[NetMetrics]]

    init(_ links: NetworkLinks, domain: DomainID, vcpus: Int, memory: MappedGuestMemory, grants: GrantTable,
         events: EventChannelTable, runtime: DeviceRuntime, store: any XenStoreService, logger: Logger) throws(DomainError) {
        var backends: [NetBackend] = []
        for interface in links.interfaces {
            let spec = interface.specification
            let address = XenbusDeviceAddress(type: "vif", frontend: domain, index: interface.devid)
            let configuration = NetDeviceConfiguration(
                link: interface.link, mac: interface.mac.description,
                maximumQueues: NetDeviceConfiguration.defaultMaximumQueues(vcpus: vcpus),
                rate: spec.rate.map {
                    NetTransmitRate(bytesPerInterval: $0.bytesPerInterval, interval: $0.interval)
                })
            do {
                let backend = try NetBackend(
                    store: store, address: address, configuration: configuration, memory: memory, grants: grants,
                    events: events, runtime: runtime, startHandshake: false,
                    log: { line in logger.backendLine(line) })
                // What libxl writes for a vif (tools/libs/light/libxl_nic.c):
                // for the toolstack's and the user's eyes.
                let be = address.backendPath
                var nodes = [("mac", interface.mac.description), ("handle", String(interface.devid)), ("type", "vif"),
                             ("mtu", String(interface.link.mtu)), ("link", interface.link.description)]
                if let bridge = spec.bridge { nodes.append(("bridge", bridge)) }
                if let name = interface.vifname { nodes.append(("vifname", name)) }
                for (key, value) in nodes { try? store.write("\(be)/\(key)", value) }
                try backend.startHandshake()
                backends.append(backend)
            } catch {
                backends.forEach { $0.destroy() }
                links.release()
                throw .badConfiguration(option: "--net '\(spec.spec)'", reason: "\(error)")
            }
        }
        metrics = backends.map(\.metrics)
        self.backends = Mutex(backends)
    }

    /// The backends while the domain lives (empty after `tearDown`).
    var all: [NetBackend] { backends.withLock { $0 } }

    /// Stops the links and removes the devices (before the device threads
    /// stop and the domain's tree goes).
    func tearDown() {
        let all = backends.withLock { b in defer { b = [] }; return b }
        all.forEach { $0.destroy() }
    }
}
