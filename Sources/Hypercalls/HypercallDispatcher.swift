import GuestMemory
import Locking
import XenABI

/// What the vCPU does after a hypercall.
public enum HypercallOutcome: Hashable, Sendable {
    /// Put the value in RAX and resume the guest.
    case returnToGuest(Int64)
    /// The domain shut down (SCHEDOP_shutdown, or a fatal guest error Xen
    /// answers with domain_crash). The VMM stops all vCPUs.
    case shutdown(ShutdownReason)
    /// SCHEDOP_yield: RAX = 0, and the vCPU thread should yield its CPU.
    case yield
    /// SCHEDOP_block: RAX = 0, then block the vCPU until an event is
    /// deliverable to it (xen/common/sched/core.c `vcpu_block`): its
    /// `evtchn_upcall_pending` is set (the handler has already cleared
    /// `evtchn_upcall_mask`, Xen's `local_event_delivery_enable`), an upcall
    /// is injected (`EventChannelNotifier.upcall`), or any other interrupt
    /// is pending for it. If one already is, do not block at all: Xen checks
    /// again *after* marking the vCPU blocked, so no wake-up is lost.
    case block
    /// SCHEDOP_poll: RAX = 0, then block the vCPU until one of `ports`
    /// becomes pending (`EventChannelNotifier.portBecamePending`; with no
    /// ports, until any event), an interrupt is deliverable to it (Xen's
    /// `local_events_need_delivery`: pending and not blocked by the vCPU's
    /// interrupt flag), or system time reaches `deadline` (nil: no timeout;
    /// a deadline in the past wakes at once). Always RAX = 0 when it wakes.
    /// The handler has validated every port and returned 0 itself if one
    /// was pending; the VMM must re-check `isPending` after registering as a
    /// poller, since a port may have become pending in between
    /// (xen/common/sched/core.c `do_poll`).
    case poll(ports: [EventChannelPort], deadline: SystemTime?)
}

/// The static facts about the domain the dispatcher answers from.
public struct DomainConfiguration: Sendable {
    public var domainID: DomainID
    public var vcpuCount: Int
    /// What XENMEM_memory_map reports (empty: -ENOSYS, as Xen without an e820).
    public var memoryMap: [MemoryMapEntry]
    /// The domain's pages at creation, as the toolstack counted them. Not
    /// read by the dispatcher: XENMEM_current_reservation reports the live
    /// `HypercallDispatcher.reservation.currentPages`, which starts at the
    /// number of frames in the memory's regions (the same figure for a VMM
    /// whose RAM is exactly those regions).
    public var totalPages: UInt64
    /// XENMEM_maximum_reservation and the limit populate_physmap /
    /// increase_reservation respect (`d->max_pages`), in pages.
    public var maxPages: UInt64
    /// The guest kernel's command line (not Xen's; XENVER_commandline does not report it).
    public var guestCommandLine: String
    public var version: XenVersionInfo
    /// XENVER_get_features submap 0.
    public var features: XenFeatures
    /// XENVER_guest_handle: the domain's UUID (16 bytes; shorter is zero-padded).
    public var handle: [UInt8]
    /// The CR4/EFER bits VCPUOP_initialise accepts (Xen: from the CPUID policy).
    public var bootStateLimits: VCPUBootState.Limits

    public init(domainID: DomainID, vcpuCount: Int, memoryMap: [MemoryMapEntry], totalPages: UInt64,
                maxPages: UInt64, guestCommandLine: String = "", version: XenVersionInfo = .xen417,
                features: XenFeatures = .pvhDefault, handle: [UInt8] = [],
                bootStateLimits: VCPUBootState.Limits = .architectural) {
        self.bootStateLimits = bootStateLimits
        self.domainID = domainID
        self.vcpuCount = vcpuCount
        self.memoryMap = memoryMap
        self.totalPages = totalPages
        self.maxPages = maxPages
        self.guestCommandLine = guestCommandLine
        self.version = version
        self.features = features
        self.handle = handle
    }
}

/// The guest's console (Xen's emergency console, CONSOLEIO_*).
public protocol ConsoleService: Sendable {
    /// Bytes a vCPU wrote (raw: Xen strips non-printables for domUs; the
    /// service decides what to do with control characters).
    func write(_ bytes: [UInt8], from vcpu: VCPUID)
    /// Up to `max` bytes of pending input; may be empty.
    func read(max: Int) -> [UInt8]
}

/// Changes to the guest-physical map that need the VMM (memory slots).
public protocol PhysmapService: Sendable {
    /// Back guest frame `frame` with the domain's shared_info page (RAM or a
    /// hole; a previous placement is moved). Errors go back to the guest.
    func mapSharedInfo(at frame: GuestFrameNumber) throws(XenErrno)
    /// Make guest frame `frame`, a hole in the guest-physical map (no guest
    /// memory there), guest memory: a fresh zero page the VMM registers with
    /// KVM, for a grant frame the guest places there
    /// (XENMEM_add_to_physmap(XENMAPSPACE_grant_table)). The VMM bounds how
    /// many hole pages a domain gets (-ENOMEM beyond); -EINVAL for a frame it
    /// cannot back.
    func backFrame(at frame: GuestFrameNumber) throws(XenErrno)
}

/// Grant tables (`grant_table_op`, XENMEM_add_to_physmap(XENMAPSPACE_grant_table)),
/// with the calling guest's authority. The handler copies each argument in
/// once, calls one of these, and copies results back. Per-operation failures
/// are `GrantStatus` values (the `status` field), whole-call failures
/// `XenErrno`, as in Xen. `GrantTable` (GrantTables) is the implementation;
/// the VMM supplies the conformance.
public protocol GrantTableService: Sendable {
    /// GNTTABOP_query_size: the table's frames and its limit.
    func querySize(domain: DomainID) throws(GrantStatus) -> (frames: UInt32, maximumFrames: UInt32)
    /// GNTTABOP_setup_table: grow to `frames` frames and say where each is;
    /// `limit` is the caller's frame-list capacity.
    func setupTable(domain: DomainID, frames: UInt32, limit: UInt32) throws(GrantStatus) -> [GuestFrameNumber]
    /// GNTTABOP_get_status_frames: where the first `count` status frames are.
    func statusFrames(domain: DomainID, count: UInt32, limit: UInt32) throws(GrantStatus) -> [GuestFrameNumber]
    /// GNTTABOP_set_version.
    func setVersion(_ version: UInt32) throws(XenErrno)
    /// The table's version now (what set_version writes back).
    var version: UInt32 { get }
    /// GNTTABOP_get_version.
    func version(domain: DomainID) throws(XenErrno) -> UInt32
    /// GNTTABOP_swap_grant_ref, one operation.
    func swap(_ a: GrantReference, _ b: GrantReference) -> GrantStatus
    /// GNTTABOP_copy, one operation.
    func copy(_ op: GrantCopyOperation) -> GrantStatus
    /// GNTTABOP_map_grant_ref, one operation.
    func mapForeign(domain: DomainID, reference: GrantReference, flags: GrantMapFlags) -> GrantStatus
    /// GNTTABOP_unmap_grant_ref, one operation.
    func unmapForeign(handle: UInt32) -> GrantStatus
    /// Whether add_to_physmap may place frame `index` at `gfn` (nothing changes).
    func checkFrameIndex(_ index: UInt64, at gfn: GuestFrameNumber) throws(XenErrno)
    /// XENMEM_add_to_physmap(XENMAPSPACE_grant_table): place frame `index` at
    /// `gfn` (guest memory), its contents with it.
    func mapFrame(_ index: UInt64, at gfn: GuestFrameNumber) throws(XenErrno)
    /// Something else takes `range`: grant frames there go back to their
    /// default slots. False when the range meets the default area.
    func vacate(_ range: ClosedRange<GuestFrameNumber>) -> Bool
    /// Where frames the guest has not placed live (reserved, not the domain's RAM).
    var defaultAreaRange: GuestPhysicalRange { get }
    /// The VMM's backend domain (grantee of the backends' mappings).
    var backendDomain: DomainID { get }
}

/// Where a vCPU registered its vcpu_info (VCPUOP_register_vcpu_info).
public struct VCPUInfoRegistration: Hashable, Sendable {
    public var frame: GuestFrameNumber
    public var offset: UInt32
    public init(frame: GuestFrameNumber, offset: UInt32) {
        self.frame = frame
        self.offset = offset
    }
    /// The guest physical address of the vcpu_info.
    public var address: GuestPhysicalAddress? { frame.address?.advanced(by: UInt64(offset)) }
}

/// Domain state hypercalls change and other parts of the VMM read (event
/// channels, the time keeper, the toolstack). Thread-safe.
public final class DomainState: Sendable {
    struct Storage {
        var vcpuInfo: [VCPUID: VCPUInfoRegistration] = [:]
        var sharedInfoFrame: GuestFrameNumber?
        var sharedInfo32Bit = false
        var parameters = [UInt64](repeating: 0, count: Int(HVMParam.count))
        var shutdownCode: UInt32?
        var upcallVectors: [VCPUID: UInt8] = [:]
        var runstateAreas: [VCPUID: GuestPhysicalAddress] = [:]
    }
    let storage = Lock(Storage())

    public init() {}

    /// The vcpu_info location `vcpu` registered, if any.
    public func vcpuInfo(for vcpu: VCPUID) -> VCPUInfoRegistration? { storage.withLock { $0.vcpuInfo[vcpu] } }
    /// All registrations.
    public var vcpuInfoRegistrations: [VCPUID: VCPUInfoRegistration] { storage.withLock { $0.vcpuInfo } }
    /// The gfn the guest placed shared_info at (XENMEM_add_to_physmap), if any.
    public var sharedInfoFrame: GuestFrameNumber? { storage.withLock { $0.sharedInfoFrame } }
    /// Whether shared_info / vcpu_info use the 32-bit layout: latched from the
    /// vCPU mode when the guest sets HVM_PARAM_CALLBACK_IRQ, as Xen does
    /// (xen/arch/x86/hvm/hvm.c hvm_latch_shinfo_size).
    public var sharedInfoIs32Bit: Bool { storage.withLock { $0.sharedInfo32Bit } }
    /// An HVM parameter's value (0 when never set, as in Xen). Invalid indices read 0.
    public func parameter(_ p: HVMParam) -> UInt64 {
        storage.withLock { p.isValid ? $0.parameters[Int(p.rawValue)] : 0 }
    }
    /// Sets a parameter with toolstack authority (no guest permission checks),
    /// e.g. HVM_PARAM_STORE_PFN. Invalid indices are ignored.
    public func setParameter(_ p: HVMParam, to value: UInt64) {
        storage.withLock { if p.isValid { $0.parameters[Int(p.rawValue)] = value } }
    }
    /// The event-channel upcall the guest asked for (HVM_PARAM_CALLBACK_IRQ).
    public var callbackVia: HVMCallbackVia { HVMCallbackVia(parameterValue: parameter(.callbackIRQ)) }
    /// The code recorded by SCHEDOP_shutdown_code / the first SCHEDOP_shutdown (raw: may be unknown).
    public var shutdownCode: UInt32? { storage.withLock { $0.shutdownCode } }
    /// The vector `vcpu` asked its event-channel upcalls on
    /// (HVMOP_set_evtchn_upcall_vector), if any. When set it is used in
    /// preference to `callbackVia` (hvm_op.h; hvm/irq.c hvm_assert_evtchn_irq).
    public func upcallVector(for vcpu: VCPUID) -> UInt8? { storage.withLock { $0.upcallVectors[vcpu] } }
    /// The HVM_PARAM_CALLBACK_IRQ vector that serves `vcpu`'s upcalls: set
    /// when the callback is a vector and `vcpu` has no vector of its own
    /// (hvm_assert_evtchn_irq prefers the per-vCPU one). One lock, for the
    /// vCPU loop that asks before every entry.
    public func callbackVector(for vcpu: VCPUID) -> UInt8? {
        storage.withLock { s in
            guard s.upcallVectors[vcpu] == nil else { return nil }
            if case .vector(let v) = HVMCallbackVia(parameterValue: s.parameters[Int(HVMParam.callbackIRQ.rawValue)]) { return v }
            return nil
        }
    }
    /// Where `vcpu` registered its `vcpu_runstate_info`
    /// (VCPUOP_register_runstate_memory_area, translated when registered), if
    /// anywhere. Its layout is compat when `sharedInfoIs32Bit`.
    public func runstateArea(for vcpu: VCPUID) -> GuestPhysicalAddress? { storage.withLock { $0.runstateAreas[vcpu] } }
}

/// The event-channel state machine reads the guest's shared_info and
/// vcpu_info placement from here.
extension DomainState: SharedInfoLocator {
    public func registeredVCPUInfo(for vcpu: VCPUID) -> GuestPhysicalAddress? { vcpuInfo(for: vcpu)?.address }
}

/// Event channels (`event_channel_op`), with the calling guest's authority.
/// The handler copies the argument in once, calls one of these, and copies
/// outputs back. Each throws the `XenErrno` Xen returns; `EventChannelTable`
/// is the implementation.
public protocol EventChannelService: Sendable {
    /// EVTCHNOP_alloc_unbound.
    func allocateUnbound(domain: DomainID, remote: DomainID) throws(XenErrno) -> EventChannelPort
    /// EVTCHNOP_bind_interdomain.
    func bindInterdomain(remoteDomain: DomainID, remotePort: EventChannelPort) throws(XenErrno) -> EventChannelPort
    /// EVTCHNOP_bind_virq.
    func bindVIRQ(_ virq: VIRQ, vcpu: VCPUID) throws(XenErrno) -> EventChannelPort
    /// EVTCHNOP_bind_ipi.
    func bindIPI(vcpu: VCPUID) throws(XenErrno) -> EventChannelPort
    /// EVTCHNOP_close.
    func close(_ port: EventChannelPort) throws(XenErrno)
    /// EVTCHNOP_send.
    func send(_ port: EventChannelPort) throws(XenErrno)
    /// EVTCHNOP_status.
    func status(domain: DomainID, port: EventChannelPort) throws(XenErrno) -> EventChannelStatus
    /// EVTCHNOP_bind_vcpu.
    func bindVCPU(_ port: EventChannelPort, vcpu: VCPUID) throws(XenErrno)
    /// EVTCHNOP_unmask.
    func unmask(_ port: EventChannelPort) throws(XenErrno)
    /// EVTCHNOP_reset (`resuming`: EVTCHNOP_reset_cont).
    func reset(domain: DomainID, resuming: Bool) throws(XenErrno)
    /// Asserts `vcpu`'s upcall once, pending or not (hvm_assert_evtchn_irq):
    /// after HVMOP_set_evtchn_upcall_vector recorded its vector, and on every
    /// vCPU when HVM_PARAM_CALLBACK_IRQ is set (hvm_set_callback_via).
    func assertUpcall(vcpu: VCPUID)
    /// A guest port's state with toolstack authority; nil for a port beyond
    /// the domain's ports (`port_is_valid` false). For SCHEDOP_poll.
    func guestPortStatus(_ port: EventChannelPort) -> EventChannelStatus?
    /// Whether a guest port is in use and pending (`evtchn_port_is_pending`). For SCHEDOP_poll.
    func isPending(_ port: EventChannelPort) -> Bool
}


/// Which domains exist besides the caller, for the answers that depend on
/// it (-EPERM for a domain the guest has no authority over, -ESRCH for none:
/// `checkSelf`). The toolstack that runs several guests answers for all of
/// them.
public protocol DomainDirectory: Sendable {
    func exists(_ domain: DomainID) -> Bool
}

/// Only the control domain, which the VMM plays, exists besides the guest.
public struct ControlDomainOnly: DomainDirectory {
    public init() {}
    public func exists(_ domain: DomainID) -> Bool { domain == .controlDomain }
}

/// Decodes hypercalls and runs them against the domain's state and services.
/// One instance per domain, shared by all vCPU threads.
public final class HypercallDispatcher: Sendable {
    public let configuration: DomainConfiguration
    public let memory: any GuestMemory
    public let console: any ConsoleService
    public let physmap: any PhysmapService
    public let state: DomainState
    /// Event channels; nil: `event_channel_op`, SCHEDOP_block and SCHEDOP_poll answer -ENOSYS.
    public let eventChannels: (any EventChannelService)?
    /// Xen time and timers; nil: the timer operations of `vcpu_op`,
    /// `set_timer_op` and the time memory area answer -ENOSYS.
    public let time: (any TimeService)?
    /// Secondary vCPU start and stop; nil: VCPUOP_initialise/up/down answer
    /// -ENOSYS, and VCPUOP_is_up reports vCPU 0 up (others -ENOSYS).
    public let lifecycle: (any VCPULifecycle)?
    /// Releases guest RAM to the host; nil: XENMEM_increase_reservation,
    /// decrease_reservation and populate_physmap answer -ENOSYS.
    public let reservationService: (any ReservationService)?
    /// Grant tables; nil: `grant_table_op` and XENMAPSPACE_grant_table answer -ENOSYS.
    public let grantTables: (any GrantTableService)?
    /// The domain's populated frames and page count (XENMEM_current_reservation),
    /// over the memory's regions at creation, limited to `configuration.maxPages`.
    public let reservation: MemoryReservation
    /// The other domains that exist (`checkSelf`).
    public let domains: any DomainDirectory

    /// Most bytes one CONSOLEIO_read returns.
    public static let maximumConsoleRead = 4096

    public init(configuration: DomainConfiguration, memory: any GuestMemory, console: any ConsoleService,
                physmap: any PhysmapService, state: DomainState = DomainState(),
                eventChannels: (any EventChannelService)? = nil, time: (any TimeService)? = nil,
                lifecycle: (any VCPULifecycle)? = nil, reservationService: (any ReservationService)? = nil,
                grantTables: (any GrantTableService)? = nil, domains: any DomainDirectory = ControlDomainOnly()) {
        self.domains = domains
        self.configuration = configuration
        self.memory = memory
        self.console = console
        self.physmap = physmap
        self.state = state
        self.eventChannels = eventChannels
        self.time = time
        self.lifecycle = lifecycle
        self.reservationService = reservationService
        self.grantTables = grantTables
        // The grant table's default area is not the domain's RAM (Xen does
        // not charge grant frames to the domain): the reservation leaves it out.
        let ram = grantTables.map { memory.regions.subtracting($0.defaultAreaRange) } ?? memory.regions
        reservation = MemoryReservation(ram: ram, maximumPages: configuration.maxPages)
    }

    /// Runs the hypercall in `registers` for `vcpu`, whose paging registers are `paging`.
    public func handle(_ registers: HypercallRegisters, vcpu: VCPUID, paging: GuestPagingState) -> HypercallOutcome {
        // Xen refuses hypercalls from user mode (hvm_hypercall: hvm_get_cpl() != 0 → -EPERM).
        guard registers.cpl == 0 else { return .returnToGuest(XenErrno.eperm.negated) }
        let context = CallContext(vcpu: vcpu, mode: registers.mode,
                                  guest: GuestAddressTranslator(memory: memory, paging: paging))
        return execute(Hypercall(decoding: registers), context)
    }

    /// The caller of one hypercall.
    struct CallContext {
        let vcpu: VCPUID
        let mode: GuestCPUMode
        let guest: GuestAddressTranslator
    }

    func execute(_ call: Hypercall, _ c: CallContext) -> HypercallOutcome {
        switch call {
        case .xenVersion(let command, let arg):
            return result { () throws(XenErrno) in try xenVersion(command, arg, c) }
        case .consoleIO(let io):
            return result { () throws(XenErrno) in try consoleIO(io, c) }
        case .schedOp(let command, let arg):
            return schedOp(command, arg, c)
        case .memoryOp(let command, let startExtent, let arg):
            return result { () throws(XenErrno) in try memoryOp(command, startExtent: startExtent, arg, c) }
        case .vcpuOp(let command, let target, let arg):
            return vcpuOp(command, target, arg, c)
        case .setTimerOp(let timeout):
            return result { () throws(XenErrno) in try setTimerOp(timeout, c) }
        case .hvmOp(let command, let arg):
            return hvmOp(command, arg, c)
        case .eventChannelOp(let command, let arg):
            return result { () throws(XenErrno) in try eventChannelOp(command, arg, c) }
        case .grantTableOp(let command, let arg, let count):
            return result { () throws(XenErrno) in try grantTableOp(command, arg, count: count, c) }
        case .unknownSubOperation(.vcpuOp, _, let args):
            // do_vcpu_op checks the vCPU id before the sub-op (xen/arch/x86/domain.c).
            return .returnToGuest(isValid(VCPUID(UInt32(truncatingIfNeeded: args[1])))
                ? XenErrno.enosys.negated : XenErrno.enoent.negated)
        case .unknownSubOperation, .unimplemented, .unknown:
            // Every handled hypercall's default case in Xen is -ENOSYS; so is an unknown number.
            return .returnToGuest(XenErrno.enosys.negated)
        }
    }

    func result(_ body: () throws(XenErrno) -> Int64) -> HypercallOutcome {
        do {
            return .returnToGuest(try body())
        } catch {
            return .returnToGuest(error.negated)
        }
    }

    func isValid(_ vcpu: VCPUID) -> Bool { Int(vcpu.rawValue) < configuration.vcpuCount }

    /// A domain id a guest names for an operation on itself only: DOMID_SELF
    /// or its own id pass; another domain that exists (`domains`) is -EPERM,
    /// as Xen's default XSM policy answers a domU acting on a domain it has
    /// no authority over (XSM_TARGET); any other id is -ESRCH
    /// (`rcu_lock_domain_by_any_id` found nothing).
    func checkSelf(_ domid: UInt16) throws(XenErrno) {
        let domain = DomainID(rawValue: domid)
        if domain == .`self` || domain == configuration.domainID { return }
        throw domains.exists(domain) ? .eperm : .esrch
    }
}

extension [GuestPhysicalRange] {
    /// These ranges without the bytes of `hole`.
    func subtracting(_ hole: GuestPhysicalRange) -> [GuestPhysicalRange] {
        flatMap { r -> [GuestPhysicalRange] in
            guard r.overlaps(hole) else { return [r] }
            var out: [GuestPhysicalRange] = []
            if r.start < hole.start {
                out.append(GuestPhysicalRange(start: r.start, length: hole.start.rawValue - r.start.rawValue))
            }
            if hole.end < r.end {
                out.append(GuestPhysicalRange(start: GuestPhysicalAddress(hole.end), length: r.end - hole.end))
            }
            return out
        }
    }
}
