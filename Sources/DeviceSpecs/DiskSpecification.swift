/// An image format xl-disk-configuration(5) names (`format=`). All parse;
/// which ones can be served is the block backend's check (raw only, for now).
public enum DiskFormat: String, Hashable, Sendable, CaseIterable {
    /// The bytes as they are: an image file or a block device. The default.
    case raw
    /// QEMU copy-on-write images, versions 1 and 2.
    case qcow, qcow2
    /// Virtual Hard Disk.
    case vhd
    /// QEMU enhanced disk.
    case qed
    /// No medium: what an empty CD-ROM drive has.
    case empty
}

/// One disk as xl's `disk=[ 'DISKSPEC', ... ]` (and `pvh run --disk`)
/// describes it, parsed by the grammar of xl-disk-configuration(5) as xl's
/// own parser (`libxlu_disk_l.l`, `xlu_disk_parse`) reads it.
///
/// The value says what was asked for; whether the host can give it (the
/// target exists, the format is one pvh can serve) is the block backend's
/// check, made when the disk is opened.
public struct DiskSpecification: Hashable, Sendable {
    /// The specification as the user wrote it, for error messages.
    public let spec: String
    /// The block device or image file path, nil for an empty CD-ROM drive.
    /// Kept as written (xl's deprecated prefixes such as `phy:` removed): a
    /// relative path is not made absolute here.
    public let target: String?
    /// The image format: raw unless given; `empty` for an empty CD-ROM.
    public let format: DiskFormat
    /// The virtual device the guest sees, and its number.
    public let vdev: VirtualDevice
    /// Read-only (`access=r`/`ro`, or a CD-ROM); xl's default is read-write.
    public let isReadOnly: Bool
    /// A CD-ROM (`devtype=cdrom`, the `cdrom` flag, `vdev:cdrom`): removable
    /// and always read-only.
    public let isCDROM: Bool
    /// `direct-io-safe`: the backend may use O_DIRECT on the target.
    public let directIOSafe: Bool
    /// Discard (TRIM/UNMAP) advertised to the frontend: on unless `no-discard`.
    public let discardEnabled: Bool
    /// `script=` (or a deprecated `iscsi:`, `nbd:`, `enbd:`, `drbd:` prefix,
    /// as `block-<name>`): the target is input to that hotplug script rather
    /// than a host path. pvh runs no hotplug scripts: the backend refuses it.
    public let script: String?

    /// Parses one specification.
    ///
    /// The grammar (xl-disk-configuration(5)): comma-separated parameters,
    /// whitespace before each ignored. `name=value` and flags may come in any
    /// order; anything else fills the positional parameters not yet given,
    /// in the order target, format, vdev, access (after a deprecated format
    /// or ignored prefix such as `raw:` or `phy:`, the order is target,
    /// vdev, access, as in xend's `phy:/dev/vg/x,xvda,w`). `target=` takes
    /// the rest of the specification, commas included, so it must be last.
    /// A parameter is given at most once; an empty value means its default.
    ///
    /// Beyond xl: `mode=` is taken as a synonym of `access=`; a `target=`
    /// followed by what reads as another parameter (`,vdev=xvda`, `,cdrom`)
    /// is refused rather than taken into the path; an explicit read-write
    /// access on a CD-ROM is refused rather than ignored; an empty target
    /// counts as none; `backend=` must name the control domain;
    /// `backendtype=tap`/`standalone`, `specification=virtio`, COLO and
    /// `grant_usage=` are refused as not implemented.
    public init(parsing spec: String) throws(DiskSpecificationError) {
        var scanner = DiskSpecificationScanner(spec: spec)
        try scanner.scan()
        self = try scanner.finish()
    }

    init(spec: String, target: String?, format: DiskFormat, vdev: VirtualDevice, isReadOnly: Bool, isCDROM: Bool,
         directIOSafe: Bool, discardEnabled: Bool, script: String?) {
        self.spec = spec
        self.target = target
        self.format = format
        self.vdev = vdev
        self.isReadOnly = isReadOnly
        self.isCDROM = isCDROM
        self.directIOSafe = directIOSafe
        self.discardEnabled = discardEnabled
        self.script = script
    }

    /// Parses each specification (the `--disk` options, in order) and
    /// checks them together (`validate`).
    public static func parse(_ specs: [String]) throws(DiskSpecificationError) -> [DiskSpecification] {
        var disks: [DiskSpecification] = []
        for spec in specs { disks.append(try DiskSpecification(parsing: spec)) }
        try validate(disks)
        return disks
    }

    /// Checks one guest's disks together: no two may have the same virtual
    /// device number (`xvda`, `d0p0` and `51712` are one device). The error
    /// names the later specification and the one it clashes with.
    public static func validate(_ disks: [DiskSpecification]) throws(DiskSpecificationError) {
        var seen: [VirtualDeviceNumber: DiskSpecification] = [:]
        for disk in disks {
            if let first = seen[disk.vdev.number] {
                throw .duplicateVirtualDevice(spec: disk.spec, vdev: disk.vdev, firstSpec: first.spec)
            }
            seen[disk.vdev.number] = disk
        }
    }
}
