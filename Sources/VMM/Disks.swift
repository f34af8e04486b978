import BlockBackend
import DeviceRuntime
import DeviceSpecs
import EventChannels
import GrantTables
import GuestMemory
import HostIO
import Logging
import Locking
import XenABI
import XenBus
import XenStore

#if canImport(Glibc)
import Glibc
#endif

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
        for spec in configuration.disks { disks.append(try Self.open(spec, option: "--disk '\(spec.spec)'")) }
        self.disks = disks
    }

    /// One disk's backing, opened and locked (a boot-time disk's and a
    /// hot-plugged one's alike); `option` names it in the error.
    /// `passed`: a descriptor for it the daemon opened (PassedImages),
    /// taken over instead of opening `target`.
    static func open(_ spec: DiskSpecification, option: String, passed: Int32? = nil) throws(DomainError) -> Disk {
        var passed = passed
        defer { passed.map { _ = Glibc.close($0) } }  // not taken over: a check below failed
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
            let file: BlockBackingFile
            if let descriptor = passed {
                passed = nil  // adopt owns it from the call on
                file = try BlockBackingFile.adopt(descriptor: descriptor, path: target, writable: !spec.isReadOnly, direct: spec.directIOSafe)
            } else {
                file = try BlockBackingFile.open(path: target, writable: !spec.isReadOnly, direct: spec.directIOSafe)
            }
            return Disk(specification: spec, file: file)
        } catch {
            throw .badConfiguration(option: option, reason: "\(error)")
        }
    }
}

/// Hot-plugged disks' images the daemon opened, locked and passed to this
/// process (SCM_RIGHTS over its reattach socket: a jailed guest process has
/// no path to them, docs/ARCHITECTURE.md: Sandbox), by vdev number, until
/// the hot-plug watcher makes the disk's backend from the descriptor
/// instead of the store's `params` path. A descriptor refused or replaced
/// is closed (its lock with it); one never used stays until the process
/// ends. At most `maximumHeld`.
public final class PassedImages: Sendable {
    private let descriptors = Lock<[Int: Int32]>([:])
    /// More than any hot-plug in flight needs (one per vdev).
    public static let maximumHeld = 64

    public init() {}

    /// Keeps `descriptor` (now this object's) for vdev number `index`;
    /// false, and it is closed, when `maximumHeld` are held.
    public func deposit(_ descriptor: Int32, index: Int) -> Bool {
        let (kept, replaced) = descriptors.withLock { d -> (Bool, Int32?) in
            guard d[index] != nil || d.count < Self.maximumHeld else { return (false, nil) }
            return (true, d.updateValue(descriptor, forKey: index))
        }
        if let replaced { _ = Glibc.close(replaced) }
        if !kept { _ = Glibc.close(descriptor) }
        return kept
    }

    /// The descriptor for vdev `index`, now the caller's.
    func take(_ index: Int) -> Int32? { descriptors.withLock { $0.removeValue(forKey: index) } }

    /// Closes the descriptor for vdev `index`, if one waits.
    func discard(_ index: Int) { take(index).map { _ = Glibc.close($0) } }

    /// How many wait.
    public var count: Int { descriptors.withLock { $0.count } }

    deinit { descriptors.withLock { $0.values.forEach { _ = Glibc.close($0) } } }
}

/// The block backends of one domain: one `BlockBackend` per disk, at the
/// vdev's number under the domain's `device/vbd` (xen-vbd-interface(7)),
/// with the nodes libxl writes for a disk beside the backend's own.
final class DiskBackends: Sendable {
    /// Emptied by `tearDown`: with the backends go the last references to
    /// the backing files, so a domain that ended releases its images'
    /// locks (another guest may use them) even while its `Domain` lives.
    /// A hot-unplugged disk's backend leaves it the same way (`remove`).
    private let backends: ServedBackends<BlockBackend>
    /// Each served disk's counters by its device name (`vbd-51712`),
    /// boot-time and hot-plugged, kept after `tearDown` (ServedBackends).
    var metrics: [(device: String, metrics: BlockMetrics)] { backends.counters }
    /// What a hot-plugged disk's backend is made with.
    private let context: BackendContext

    init(_ images: DiskImages, context: BackendContext) throws(DomainError) {
        self.context = context
        backends = try ServedBackends(making: images.disks) { disk throws(DomainError) in
            try Self.make(disk, context: context, adoptingExisting: false)
        }
    }

    /// One disk's backend at the vdev's number, its nodes written and the
    /// device offered (InitWait): the boot-time disks' path and the
    /// hot-plugged ones' (`adoptingExisting`: the toolstack wrote the
    /// directories).
    private static func make(_ disk: DiskImages.Disk, context: BackendContext,
                             adoptingExisting: Bool) throws(DomainError) -> BlockBackend {
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
            discard: discard, maximumQueues: BlockDeviceConfiguration.defaultMaximumQueues(vcpus: context.vcpus),
            // io_uring where the host has it, else the thread pool; SQEs
            // handed over unplugged (docs/ARCHITECTURE.md, Host I/O).
            makeEngine: { _, done in try file.makeEngine(.automatic, reaping: .caller, submission: .unplugged, onComplete: done) })
        let address = XenbusDeviceAddress(type: "vbd", frontend: context.domain, index: Int(spec.vdev.number.rawValue))
        let store = context.store, guestLog = context.guestLog
        do {
            let backend = try BlockBackend(
                store: store, address: address, configuration: configuration, memory: context.memory,
                grants: context.grants, events: context.events, runtime: context.runtime, startHandshake: false,
                adoptingExisting: adoptingExisting, log: { line in guestLog.backendLine(line) })
            try backend.offer(nodes: [
                ("params", file.path), ("mode", spec.isReadOnly ? "r" : "w"),
                ("type", file.isBlockDevice ? "phy" : "file"), ("dev", spec.vdev.name),
                ("device-type", spec.isCDROM ? "cdrom" : "disk"), ("removable", "0"), ("bootable", "1"),
                ("discard-enable", spec.discardEnabled ? "1" : "0"),
            ], store: store)
            return backend
        } catch {
            throw .badConfiguration(option: "--disk '\(spec.spec)'", reason: "\(error)")
        }
    }

    /// The vdev numbers served now.
    var indices: [Int] { backends.indices }

    /// The backend at vdev number `index`, if one serves it.
    func backend(_ index: Int) -> BlockBackend? { backends.backend(index) }

    /// Hot-plugs a disk the toolstack described in the store: its image
    /// opened and locked, its backend made on the directories the toolstack
    /// wrote, exactly as a boot-time disk's.
    func add(_ spec: DiskSpecification) throws(DomainError) {
        let disk = try DiskImages.open(spec, option: "disk '\(spec.spec)'",
                                       passed: context.passedImages.take(Int(spec.vdev.number.rawValue)))
        let backend = try Self.make(disk, context: context, adoptingExisting: true)
        backends.append(backend)
    }

    /// Closes an image passed for vdev `index` that will not be used (its
    /// device refused).
    func discardPassed(_ index: Int) { context.passedImages.discard(index) }

    /// Hot-unplugs vdev number `index`: its backend destroyed (both
    /// directories removed) and dropped, so its image's lock is released.
    func remove(_ index: Int) { backends.remove(index) }

    /// Answers in-flight I/O, then removes the devices (before the device
    /// threads stop and the domain's tree goes).
    func tearDown() { backends.removeAll() }
}

/// What a domain's device backends are made with, boot-time and
/// hot-plugged alike.
struct BackendContext: Sendable {
    let domain: DomainID
    let vcpus: Int
    let memory: MappedGuestMemory
    let grants: GrantTable
    let events: EventChannelTable
    let runtime: DeviceRuntime
    /// Hot-plugged images the daemon passed (PassedImages).
    let passedImages: PassedImages
    let store: any XenStoreService
    let logger: Logger
    /// The backends' lines go through it (a guest provokes them).
    let guestLog: GuestTriggeredLog
}
