import DeviceSpecs
import GrantTables
import GuestMemory
import XenABI

/// What one guest is made of: everything `pvh run` takes on its command line.
public struct GuestConfiguration: Sendable, Equatable {
    /// Kernel image: ELF vmlinux (PVH note) or bzImage.
    public var kernelPath: String
    /// Optional initial ramdisk, passed as the first start_info module.
    public var initrdPath: String?
    /// Guest kernel command line.
    public var commandLine: String
    /// Guest RAM in MiB.
    public var memoryMiB: Int
    /// Virtual CPUs.
    public var vcpus: Int
    /// The guest's name (xl's `name=`): /local/domain/<id>/name.
    public var name: String
    /// The domain id the guest sees (CPUID leaf 4, XenStore home, event
    /// channels): the toolstack gives each domain its own, 1 up to
    /// DOMID_FIRST_RESERVED - 1 (0 is the control domain, which the VMM plays).
    public var domainID: DomainID = DomainID(rawValue: 1)
    /// The grant table's frame limit (xl's `max_grant_frames`): 1 to
    /// `maximumGrantFrames`, default 64 as Xen's `gnttab_max_frames`.
    public var maxGrantFrames: Int
    /// The guest's disks (xl's `disk=`, `pvh run --disk`), in the order given,
    /// each served by a block backend.
    public var disks: [DiskSpecification]
    /// The guest's network interfaces (xl's `vif=`, `pvh run --net`), in
    /// the order given, each served by a network backend.
    public var networks: [NetworkInterfaceSpecification]
    /// The highest event channel port the guest may use (Xen's
    /// `max_evtchn_port`, xl's `max_event_channels`); the 2-level ABI caps
    /// it further. `pvh run` leaves it at the 64-bit 2-level ABI's last port.
    public var maximumEventChannelPort: UInt32 = 4095
    /// Each vCPU's hard affinity by vCPU number (xl's `cpus=`, `pvh run
    /// --cpus`): its thread runs only on those host CPUs. A vCPU past the
    /// end runs anywhere; empty: no pinning.
    public var vcpuAffinity: [CPUList] = []

    public init(kernelPath: String, initrdPath: String? = nil, commandLine: String = "", memoryMiB: Int = 256, vcpus: Int = 1,
                name: String = "pvh", maxGrantFrames: Int = GrantTable.defaultMaximumFrames, disks: [DiskSpecification] = [],
                networks: [NetworkInterfaceSpecification] = []) {
        self.name = name
        self.networks = networks
        self.maxGrantFrames = maxGrantFrames
        self.disks = disks
        self.kernelPath = kernelPath
        self.initrdPath = initrdPath
        self.commandLine = commandLine
        self.memoryMiB = memoryMiB
        self.vcpus = vcpus
    }

    /// Largest guest pvh accepts (bounded by what one host can give).
    public static let maximumMemoryMiB = 1 << 20
    /// Xen's HVM limit is far higher; one KVM VM here allows KVM_CAP_MAX_VCPUS.
    public static let maximumVCPUs = 128

    /// The PV console ring's page: the last page of low RAM, reserved in the
    /// memory map (Xen's toolstack keeps its "special pages" out of the
    /// guest's RAM the same way).
    public var consolePage: GuestPhysicalRange {
        let lowEnd = ramRanges[0].end
        return GuestPhysicalRange(start: GuestPhysicalAddress(lowEnd - GuestFrameNumber.pageSize), length: GuestFrameNumber.pageSize)
    }

    /// The XenStore ring's page (HVM_PARAM_STORE_PFN): the page below the
    /// console's, reserved likewise.
    public var storePage: GuestPhysicalRange {
        GuestPhysicalRange(start: GuestPhysicalAddress(consolePage.start.rawValue - GuestFrameNumber.pageSize),
                           length: GuestFrameNumber.pageSize)
    }

    /// Pages the toolstack keeps for itself at the top of low RAM (Xen's
    /// "special pages"): reserved in the guest's memory map.
    public var specialPages: GuestPhysicalRange {
        GuestPhysicalRange(start: storePage.start, length: 2 * GuestFrameNumber.pageSize)
    }

    /// Largest `maxGrantFrames` (Xen takes up to its `gnttab_max_frames`;
    /// pvh's limit keeps the reserved area below 5 MiB).
    public static let maximumGrantFrames = GrantTable.maximumFramesLimit
    /// The default `maxGrantFrames`.
    public static let defaultGrantFrames = GrantTable.defaultMaximumFrames

    /// Where grant frames live until the guest places them
    /// (XENMEM_add_to_physmap) and what GNTTABOP_setup_table reports for the
    /// ones it has not: one page per shared frame and then one per v2 status
    /// frame, in the 32-bit MMIO hole (`grantAreaBase`), reserved in the
    /// memory map. It is not RAM: the guest keeps every MiB it was given, and
    /// the area's anonymous mapping costs host memory only for pages that are
    /// touched (a guest that places its frames itself, as Linux does, touches
    /// one: frame 0's slot, where the toolstack seeds the console and
    /// XenStore grants).
    public var grantArea: GuestPhysicalRange {
        let frames = UInt64(GrantTable.defaultAreaFrameCount(maximumFrames: maxGrantFrames))
        return GuestPhysicalRange(start: GuestPhysicalAddress(Self.grantAreaBase), length: frames * GuestFrameNumber.pageSize)
    }

    /// The grant area's start: in the hole between low RAM (which ends by
    /// 0xE0000000) and the local APIC at 0xFEE00000, with room for the
    /// largest area (`maximumGrantFrames` plus their status frames, under 5 MiB).
    public static let grantAreaBase: UInt64 = 0xFD00_0000

    /// Guest RAM ranges: low memory up to the 32-bit MMIO hole (which holds
    /// the local APIC at 0xFEE00000), the rest above 4 GiB, as Xen's HVM
    /// domain builder lays it out.
    public var ramRanges: [GuestPhysicalRange] {
        let total = UInt64(memoryMiB) << 20
        let holeStart: UInt64 = 0xE000_0000
        let low = min(total, holeStart)
        var ranges = [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: low)]
        if total > low {
            ranges.append(GuestPhysicalRange(start: GuestPhysicalAddress(0x1_0000_0000), length: total - low))
        }
        return ranges
    }
}
