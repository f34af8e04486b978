import BlockBackend
import DeviceSpecs
import Logging
import NetBackend
import Locking
import XenABI
import XenBus
import XenStore

/// Hot-plug, the backend driver's half (what Linux's xenbus backend probe
/// and xen-blkback/xen-netback do in dom0; the toolstack's half is the
/// daemon's, pvh/Hotplug.swift): this process serves its guest's devices,
/// so it watches the guest's backend directories,
/// `/local/domain/0/backend/{vbd,vif}/<domid>`, and
///
/// - a device directory it does not serve, at `state` 1 (Initialising):
///   its nodes are read once and checked (`HotplugDevice`; the store is
///   written by others, so they are input), and the device's backend is
///   made exactly as a boot-time device's (`DiskBackends.add`,
///   `NetworkBackends.add`) on the directories the toolstack wrote. A bad
///   node, an image that cannot be opened or is locked: one line in the
///   backend's `hotplug-error` and `state` 6 (Closed), nothing served;
/// - a served device whose `online` went to 0 (libxl's detach writes it
///   with `state` 5): the backend closes (`XenbusBackendDevice.close`), and
///   once it is Closed it is destroyed: both directories removed, the image
///   released (its lock with it), so the toolstack, which waits for the
///   backend directory to go, may attach the same image again at once;
/// - a served device whose directory went (a forced detach): destroyed.
///
/// Everything runs from the store's ordered watch callbacks, one at a time,
/// as the boot-time devices' handshakes do; never on a vCPU thread.
final class HotplugWatcher: Sendable {
    private let domain: DomainID
    private let store: any XenStoreService
    private let disks: DiskBackends
    private let networks: NetworkBackends
    private let logger: Logger

    private struct State {
        var watches: [XenStoreWatchID] = []
        /// Devices refused (`hotplug-error` written) whose directories
        /// are still there: not looked at again until they go.
        var refused: Set<XenbusDeviceAddress> = []
        var stopped = false
    }
    private let state = Lock(State())

    /// The most device directories looked at per class on a full rescan.
    static let maximumDevices = 256

    init(domain: DomainID, store: any XenStoreService, disks: DiskBackends, networks: NetworkBackends, logger: Logger) {
        self.domain = domain
        self.store = store
        self.disks = disks
        self.networks = networks
        self.logger = logger
    }

    /// `/local/domain/0/backend/<type>/<domid>`.
    private func base(_ type: String) -> String {
        "/local/domain/\(DomainID.controlDomain.rawValue)/backend/\(type)/\(domain.rawValue)"
    }

    /// Starts watching both classes (a watch on a path that does not exist
    /// yet is allowed: xenstore.txt, WATCH). The initial event rescans.
    func start() {
        for type in ["vbd", "vif"] {
            let base = base(type)
            do {
                let id = try store.watch(base, token: "pvh-hotplug-\(type)") { [weak self] path, _ in
                    self?.changed(type: type, path: path)
                }
                let keep = state.withLock { s in
                    if !s.stopped { s.watches.append(id) }
                    return !s.stopped
                }
                if !keep { store.unwatch(id) }
            } catch {
                logger.warning("hot-plug: cannot watch \(base): \(error); \(type) devices cannot be hot-plugged")
            }
        }
    }

    /// Stops watching (before the backends are torn down).
    func stop() {
        let ids = state.withLock { s in
            s.stopped = true
            defer { s.watches = [] }
            return s.watches
        }
        ids.forEach { store.unwatch($0) }
    }

    /// A node under `base(type)` changed: the device it belongs to is
    /// looked at, or every one on the base's own event.
    private func changed(type: String, path: String) {
        guard !state.withLock({ $0.stopped }) else { return }
        let base = base(type)
        var indices: [Int] = []
        if path.hasPrefix(base + "/") {
            let first = path.dropFirst(base.count + 1).prefix { $0 != "/" }
            guard let index = Self.index(first) else { return }
            indices = [index]
        } else if path == base {
            let listed = ((try? store.directory(base)) ?? []).prefix(Self.maximumDevices).compactMap { Self.index($0[...]) }
            let served = type == "vbd" ? disks.indices : networks.indices
            indices = Array(Set(listed).union(served)).sorted()
        }
        for index in indices { look(at: XenbusDeviceAddress(type: type, frontend: domain, index: index)) }
    }

    /// A device index as the store names it: decimal, 0 to Int32.max.
    static func index(_ text: Substring) -> Int? {
        guard (1...10).contains(text.count), text.allSatisfy({ $0.isASCII && $0.isNumber }),
              let n = Int(text), n <= Int(Int32.max) else { return nil }
        return n
    }

    private func look(at address: XenbusDeviceAddress) {
        let be = address.backendPath
        let xenbus = address.type == "vbd" ? disks.backend(address.index)?.xenbus : networks.backend(address.index)?.xenbus
        let present = (try? store.directory(be)) != nil
        if let xenbus {
            guard present else {
                logger.info("hot-plug: \(address.type) \(address.index): its directory was removed: backend destroyed")
                remove(address)
                return
            }
            guard (try? store.read("\(be)/online")) == "0" else { return }
            if xenbus.backendState != .closed { xenbus.close() }
            if xenbus.backendState == .closed {
                logger.info("hot-plug: \(address.type) \(address.index): closed and offline: backend destroyed")
                remove(address)
            }
            return
        }
        guard present else {
            _ = state.withLock { $0.refused.remove(address) }
            return
        }
        guard !state.withLock({ $0.refused.contains(address) }) else { return }
        // A new device's directory comes whole (libxl writes it in one
        // transaction); `state` 1 says nobody serves it yet.
        guard (try? store.read("\(be)/state")) == XenbusState.initialising.storeValue else { return }
        var nodes: [String: String] = [:]
        for name in ((try? store.directory(be)) ?? []).prefix(HotplugDevice.maximumNodes + 1) {
            nodes[name] = (try? store.read("\(be)/\(name)")) ?? ""
        }
        do {
            switch try HotplugDevice(backend: nodes, address: address) {
            case .disk(let disk):
                let spec = try DiskSpecification(parsing: disk.specification)
                guard Int(spec.vdev.number.rawValue) == address.index else {
                    throw HotplugNodeError.invalid("dev", "\(disk.virtualDevice) is vdev \(spec.vdev.number.rawValue), not \(address.index)")
                }
                try disks.add(spec)
            case .nic(let nic):
                try networks.add(try NetworkInterfaceSpecification(parsing: nic.specification(devid: address.index)),
                                 devid: address.index)
            }
            logger.info("hot-plug: \(address.type) \(address.index) added")
        } catch {
            refuse(address, "\(error)")
        }
    }

    /// One line in the backend's `hotplug-error` (where libxl's hotplug
    /// scripts report, tools/hotplug/Linux/xen-hotplug-common.sh), then
    /// Closed: the toolstack, waiting for the device, reads both.
    private func refuse(_ address: XenbusDeviceAddress, _ why: String) {
        state.withLock { _ = $0.refused.insert(address) }
        if address.type == "vbd" { disks.discardPassed(address.index) }
        let line = String((why.split(separator: "\n").first ?? "refused").prefix(512))
        logger.warning("hot-plug: \(address.type) \(address.index) refused: \(line)")
        let be = address.backendPath
        guard (try? store.directory(be)) != nil else { return }
        try? store.write("\(be)/hotplug-error", line)
        try? store.write("\(be)/state", XenbusState.closed.storeValue)
    }

    private func remove(_ address: XenbusDeviceAddress) {
        if address.type == "vbd" { disks.remove(address.index) } else { networks.remove(address.index) }
    }
}
