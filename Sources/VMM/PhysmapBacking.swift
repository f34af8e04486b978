import GuestMemory
import Hypercalls
import KVM
import Locking
import XenABI

/// Routes console_io to the domain's hypervisor console.
struct ConsoleAdapter: ConsoleService {
    let console: HypervisorConsole
    func write(_ bytes: [UInt8], from: VCPUID) { console.write(bytes) }
    func read(max: Int) -> [UInt8] { [] }  // console input arrives with the PV console ring (next issue)
}

/// Guest-physical pages the VMM backs on the guest's request while vCPUs
/// run. XENMEM_add_to_physmap(XENMAPSPACE_shared_info): Xen moves its
/// shared_info page to the frame the guest names; where that frame is RAM the
/// guest's page becomes shared_info (zeroed), where it is a hole a fresh page
/// is mapped there and registered with KVM. XENMAPSPACE_grant_table in a hole
/// (`backFrame`) gets a fresh page the same way. A guest cannot make us map
/// unbounded memory: at most `holeLimit` hole pages per domain (one for
/// shared_info plus one per grant frame, shared and status); naming a backed
/// hole again is fine, a new one past the limit is -ENOMEM.
final class PhysmapBacking: PhysmapService, @unchecked Sendable {
    // SAFETY (Sendable): VirtualMachine and MappedGuestMemory are thread-safe.
    let vm: VirtualMachine
    let memory: MappedGuestMemory
    let holeLimit: Int
    private let holes = Lock<Set<GuestFrameNumber>>([])
    init(vm: VirtualMachine, memory: MappedGuestMemory, holeLimit: Int = 1) {
        self.vm = vm
        self.memory = memory
        self.holeLimit = holeLimit
    }

    func mapSharedInfo(at frame: GuestFrameNumber) throws(XenErrno) {
        guard let address = frame.address else { throw .einval }
        if !memory.contains(address, count: GuestFrameNumber.pageSize) { try backFrame(at: frame) }
        do { try memory.fill(at: address, count: Int(GuestFrameNumber.pageSize), with: 0) } catch { throw .efault }
    }

    func backFrame(at frame: GuestFrameNumber) throws(XenErrno) {
        guard let address = frame.address, address.rawValue < (1 << 46) else { throw .einval }
        try holes.withLock { (backed: inout Set<GuestFrameNumber>) throws(XenErrno) in
            if backed.contains(frame) || memory.contains(address, count: GuestFrameNumber.pageSize) { return }
            guard backed.count < holeLimit else { throw .enomem }
            do {
                let mapping = try memory.addRegion(GuestPhysicalRange(start: address, length: GuestFrameNumber.pageSize))
                _ = try vm.addMemory(mapping)
            } catch {
                throw .enomem
            }
            backed.insert(frame)
        }
    }
}

/// XENMEM_decrease_reservation's host side: a page the guest gives back is
/// returned to the host (madvise MADV_DONTNEED), so `pvh mem-set` really
/// shrinks the VMM's resident memory.
struct GuestRAMRelease: ReservationService {
    let memory: MappedGuestMemory
    func discard(_ range: GuestPhysicalRange) throws(GuestMemoryError) { try memory.discard(range) }
}
