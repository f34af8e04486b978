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
        for (position, spec) in configuration.networks.enumerated() {
            do {
                made.append(try Self.make(spec, devid: spec.devid ?? position, domain: configuration.domainID,
                                          option: "--net '\(spec.spec)'", logger: logger))
            } catch {
                made.forEach { $0.link.stop() }
                throw error
            }
        }
        interfaces = made
    }

    /// One interface's host side (a boot-time interface's and a
    /// hot-plugged one's alike); `option` names it in the error.
    static func make(_ spec: NetworkInterfaceSpecification, devid: Int, domain: DomainID, option: String,
                     logger: Logger) throws(DomainError) -> Interface {
        var random = SystemRandomNumberGenerator()
        for warning in spec.warnings { logger.warning("\(option): \(warning)") }
        let mac = spec.mac ?? MACAddress.xenRandom(using: &random)
        do {
            switch spec.type {
            case .user:
                let link = try PasstLink(mtu: spec.mtu ?? PasstLink.defaultMTU, addresses: spec.ip.map { [$0] } ?? [])
                return Interface(specification: spec, devid: devid, mac: mac, link: link, vifname: nil)
            case .tap:
                // libxl's default name: vif<domid>.<devid>.
                let name = spec.vifname ?? "vif\(domain.rawValue).\(devid)"
                let link = try TapLink(name: name, mtu: spec.mtu ?? 1500, bridge: spec.bridge)
                return Interface(specification: spec, devid: devid, mac: mac, link: link, vifname: name)
            case .none:
                return Interface(specification: spec, devid: devid, mac: mac, link: NullLink(mtu: spec.mtu ?? 1500), vifname: nil)
            }
        } catch {
            throw .badConfiguration(option: option, reason: "\(error)")
        }
    }

    /// Releases the host sides (a domain that failed before its backends existed).
    func release() { interfaces.forEach { $0.link.stop() } }
}

/// The network backends of one domain: one `NetBackend` per interface, at
/// its devid under the domain's `device/vif`, with the nodes libxl writes
/// for a vif beside the backend's own.
final class NetworkBackends: Sendable {
    /// Emptied by `tearDown`.
    private let backends: ServedBackends<NetBackend>
    /// Each served interface's device name (`vif-0`) and per-queue
    /// counters, boot-time and hot-plugged, kept after `tearDown`.
    var metrics: [(device: String, queues: [NetMetrics])] { backends.counters.map { ($0.device, $0.metrics) } }
    /// What a hot-plugged interface's backend is made with.
    private let context: BackendContext

    init(_ links: NetworkLinks, context: BackendContext) throws(DomainError) {
        self.context = context
        do {
            backends = try ServedBackends(making: links.interfaces) { interface throws(DomainError) in
                try Self.make(interface, context: context, adoptingExisting: false)
            }
        } catch {
            links.release()
            throw error
        }
    }

    /// One interface's backend at its devid, its nodes written and the
    /// device offered (InitWait): the boot-time interfaces' path and the
    /// hot-plugged ones' (`adoptingExisting`: the toolstack wrote the
    /// directories). On failure the backend is gone (its link stopped).
    private static func make(_ interface: NetworkLinks.Interface, context: BackendContext,
                             adoptingExisting: Bool) throws(DomainError) -> NetBackend {
        let spec = interface.specification
        let address = XenbusDeviceAddress(type: "vif", frontend: context.domain, index: interface.devid)
        let configuration = NetDeviceConfiguration(
            link: interface.link, mac: interface.mac.description,
            maximumQueues: NetDeviceConfiguration.defaultMaximumQueues(vcpus: context.vcpus),
            rate: spec.rate.map {
                NetTransmitRate(bytesPerInterval: $0.bytesPerInterval, interval: $0.interval)
            })
        let store = context.store, guestLog = context.guestLog
        do {
            let backend = try NetBackend(
                store: store, address: address, configuration: configuration, memory: context.memory,
                grants: context.grants, events: context.events, runtime: context.runtime, startHandshake: false,
                adoptingExisting: adoptingExisting, log: { line in guestLog.backendLine(line) })
            var nodes = [("mac", interface.mac.description), ("handle", String(interface.devid)), ("type", "vif"),
                         ("mtu", String(interface.link.mtu)), ("link", interface.link.description)]
            if let bridge = spec.bridge { nodes.append(("bridge", bridge)) }
            if let name = interface.vifname { nodes.append(("vifname", name)) }
            try backend.offer(nodes: nodes, store: store)
            return backend
        } catch {
            interface.link.stop()
            throw .badConfiguration(option: "--net '\(spec.spec)'", reason: "\(error)")
        }
    }

    /// The backends while the domain lives (empty after `tearDown`).
    var all: [NetBackend] { backends.all }

    /// The devids served now.
    var indices: [Int] { backends.indices }

    /// The backend at devid `index`, if one serves it.
    func backend(_ index: Int) -> NetBackend? { backends.backend(index) }

    /// Hot-plugs an interface the toolstack described in the store: its
    /// host side made, its backend on the directories the toolstack wrote,
    /// exactly as a boot-time interface's.
    func add(_ spec: NetworkInterfaceSpecification, devid: Int) throws(DomainError) {
        let interface = try NetworkLinks.make(spec, devid: devid, domain: context.domain, option: "vif '\(spec.spec)'",
                                              logger: context.logger)
        let backend = try Self.make(interface, context: context, adoptingExisting: true)
        backends.append(backend)
    }

    /// Hot-unplugs devid `index`: its link stopped, its backend destroyed.
    func remove(_ index: Int) { backends.remove(index) }

    /// Stops the links and removes the devices (before the device threads
    /// stop and the domain's tree goes).
    func tearDown() { backends.removeAll() }
}
