import BlockBackend
import DeviceRuntime
import DeviceSpecs
import EventChannels
import GrantTables
import GuestMemory
import HostIO
import Logging
import Synchronization
import XenABI
import XenBus
import XenStore

/// The guest's disks (`--disk`), their backing files opened and locked
/// before anything else of the domain is built: a missing, unreadable,
/// locked or non-raw image is the user's error (exit 2), found before a
/// byte of guest memory exists.
struct DiskImages {
    struct Disk {
        let specification: DiskSpecification
        let file: BlockBackingFile
    }
    let disks: [Disk]

    init(_ configuration: GuestConfiguration) throws(DomainError) {
        var disks: [Disk] = []
        for spec in configuration.disks {
            let option = "--disk '\(spec.spec)'"
            guard spec.script == nil else {
                throw .badConfiguration(option: option, reason: "block scripts (\(spec.script ?? "")) are not supported: name a raw image file or a block device")
            }
            guard let target = spec.target, !target.isEmpty else {
                throw .badConfiguration(option: option, reason: "an empty CD-ROM drive is not supported: name an ISO image")
            }
            guard spec.format == .raw else {
                throw .badConfiguration(option: option, reason: "format \(spec.format.rawValue): pvh serves raw images only; convert it with qemu-img convert -O raw \(target) \(target).raw")
            }
            do {
                let file = try BlockBackingFile.open(path: target, writable: !spec.isReadOnly, direct: spec.directIOSafe)
                disks.append(Disk(specification: spec, file: file))
            } catch {
                throw .badConfiguration(option: option, reason: "\(error)")
            }
        }
        self.disks = disks
    }
}

/// The block backends of one domain: one `BlockBackend` per disk, at the
/// vdev's number under the domain's `device/vbd` (xen-vbd-interface(7)),
/// with the nodes libxl writes for a disk beside the backend's own.
final class DiskBackends: Sendable {
    /// Emptied by `tearDown`: with the backends go the last references to
    /// the backing files, so a domain that ended releases its images'
    /// locks (another guest may use them) even while its `Domain` lives.
    private let backends: Mutex<[BlockBackend]>
    /// Each disk's counters by its device name (`vbd-51712`), kept after
    /// `tearDown` as the network interfaces' are.
    let metrics: [(device: String, metrics: BlockMetrics)]

    init(_ images: DiskImages, domain: DomainID, vcpus: Int, memory: MappedGuestMemory, grants: GrantTable,
         events: EventChannelTable, runtime: DeviceRuntime, store: any XenStoreService, logger: Logger) throws(DomainError) {
        var backends: [BlockBackend] = []
        for disk in images.disks {
            let spec = disk.specification, file = disk.file
            let sectorSize = UInt32(file.logicalSectorSize)
            // Discard is offered when the spec allows it (xl's default) and
            // the backing can free blocks; never on a read-only disk.
            let discard = spec.discardEnabled && file.supportsDiscard && !spec.isReadOnly
                ? BlockDiscardGeometry(granularity: UInt32(max(file.discardGranularity, Int(sectorSize))))
                : nil
            let configuration = BlockDeviceConfiguration(
                sectors: file.sizeInBytes / UInt64(sectorSize), sectorSize: sectorSize,
                physicalSectorSize: UInt32(file.physicalSectorSize), readOnly: spec.isReadOnly, cdrom: spec.isCDROM,
                discard: discard, maximumQueues: BlockDeviceConfiguration.defaultMaximumQueues(vcpus: vcpus),
                // io_uring where the host has it, else the thread pool.
                makeEngine: { _, done in try file.makeEngine(.automatic, reaping: .caller, onComplete: done) })
            let address = XenbusDeviceAddress(type: "vbd", frontend: domain, index: Int(spec.vdev.number.rawValue))
            do {
                let backend = try BlockBackend(
                    store: store, address: address, configuration: configuration, memory: memory, grants: grants,
                    events: events, runtime: runtime, startHandshake: false,
                    log: { line in logger.backendLine(line) })
                // What libxl writes for a disk (tools/libs/light/libxl_disk.c):
                // for the toolstack's and the user's eyes, not the frontend's.
                let be = address.backendPath
                for (key, value) in [("params", file.path), ("mode", spec.isReadOnly ? "r" : "w"),
                                     ("type", file.isBlockDevice ? "phy" : "file"), ("dev", spec.vdev.name),
                                     ("device-type", spec.isCDROM ? "cdrom" : "disk"), ("removable", "0"),
                                     ("bootable", "1"), ("discard-enable", spec.discardEnabled ? "1" : "0")] {
                    try? store.write("\(be)/\(key)", value)
                }
                try backend.startHandshake()
                backends.append(backend)
            } catch {
                backends.forEach { $0.destroy() }
                throw .badConfiguration(option: "--disk '\(spec.spec)'", reason: "\(error)")
            }
        }
        metrics = backends.map { ("\($0.address.type)-\($0.address.index)", $0.metrics) }
        self.backends = Mutex(backends)
    }

    /// Answers in-flight I/O, then removes the devices (before the device
    /// threads stop and the domain's tree goes).
    func tearDown() {
        let all = backends.withLock { b in defer { b = [] }; return b }
        all.forEach { $0.destroy() }
    }
}
