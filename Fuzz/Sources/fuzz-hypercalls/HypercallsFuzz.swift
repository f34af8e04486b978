// Fuzz target: the hypercall decoder and its handlers (Hypercalls) over mock
// guest memory, with event channels and a grant table behind them, no KVM.
// Input: byte 0 the number of calls (at most 16); per call one byte for the
// hypercall number (its top bit: 32-bit mode), one for the vCPU, and six
// arguments of one selector byte and eight value bytes; what remains is
// copied into guest memory at 0x1000, where arguments often point. Checks:
// every call returns, and every negative return value is one of Xen's errnos
// (xen/include/public/errno.h).
import FuzzSupport
import EventChannels
import GrantTables
import GuestMemory
import Hypercalls
import XenABI

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt { fuzzBytes(data, size, fuzzOne) }

@_cdecl("fuzz_hypercalls_main")
func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { fuzzDriverMain(argc, argv) }

private final class NullConsole: ConsoleService {
    func write(_ bytes: [UInt8], from vcpu: VCPUID) {}
    func read(max: Int) -> [UInt8] { Array(repeating: 0x41, count: min(max, 64)) }
}

private final class NullPhysmap: PhysmapService {
    func mapSharedInfo(at frame: GuestFrameNumber) throws(XenErrno) {}
    func backFrame(at frame: GuestFrameNumber) throws(XenErrno) { throw .enomem }
}

private final class NullNotifier: EventChannelNotifier {
    func upcall(vcpu: VCPUID) {}
}

// The conformances the VMM target declares for the dispatcher's services.
extension EventChannelTable: @retroactive EventChannelService {}
extension GrantTable: @retroactive GrantTableService {}

/// 40 KiB of guest RAM, zeroed per input: frame 0, the data area (frames
/// 1-4, below), a spare frame, and the grant table's default area (its 4
/// frames, 6-9). Small on purpose: a batched op with a huge count
/// (GNTTABOP_copy, map, unmap; CONSOLEIO_write) walks everything up to the
/// end of RAM in one call, so an input's cost grows with RAM while the
/// paths it takes do not; 1 MiB held the run near 600 inputs/s.
private let ramSize = 40 << 10
/// Where the input's tail is copied and where "address" arguments point.
private let dataArea = (start: UInt64(0x1000), length: UInt64(0x4000))
private let domid = DomainID(rawValue: 5)
private let known = Set(XenErrno.allCases.map(\.negated))
/// One mapping for the whole run, zeroed per input (below).
private let memory = guestRAM(ramSize)

private struct Reader {
    var bytes: ArraySlice<UInt8>
    mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }
    mutating func u64() -> UInt64 { (0..<8).reduce(0) { v, i in v | UInt64(byte()) << (8 * UInt64(i)) } }
    /// Small numbers, addresses in the data area, near-maximal and raw values.
    mutating func argument() -> UInt64 {
        let selector = byte()
        let value = u64()
        switch selector % 5 {
        case 0: return value % 16
        case 1: return dataArea.start + value % dataArea.length
        case 2: return UInt64.max - value % 4096
        case 3: return UInt64(UInt32.max) - value % 64
        default: return value
        }
    }
}

private func fuzzOne(_ input: [UInt8]) {
    var reader = Reader(bytes: input[...])
    let count = Int(reader.byte() % 17)
    var calls: [(number: UInt8, vcpu: UInt8, args: [UInt64])] = []
    for _ in 0..<count {
        let number = reader.byte()
        let vcpu = reader.byte()
        calls.append((number, vcpu, (0..<6).map { _ in reader.argument() }))
    }
    // Zero again (MADV_DONTNEED: only the pages the last input touched
    // cost anything), so every input starts from the same RAM.
    do { try memory.discard(GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(ramSize))) } catch {
        preconditionFailure("fuzz-hypercalls: cannot zero guest RAM: \(error)")
    }
    try? memory.write(Array(reader.bytes.prefix(Int(dataArea.length))), at: GuestPhysicalAddress(dataArea.start))

    let vcpuCount = 2
    let state = DomainState()
    let grants = GrantTable(configuration: .init(domainID: domid, maximumFrames: 4, defaultArea: GuestFrameNumber(UInt64(ramSize / 4096 - 4))),
                            memory: memory)
    let channels = EventChannelTable(configuration: .init(domainID: domid, vcpuCount: vcpuCount), memory: memory,
                                     locator: state, notifier: NullNotifier())
    let configuration = DomainConfiguration(
        domainID: domid, vcpuCount: vcpuCount,
        memoryMap: [MemoryMapEntry(start: 0, length: UInt64(ramSize), type: .ram)],
        totalPages: UInt64(ramSize / 4096), maxPages: UInt64(ramSize / 4096), handle: Array(1...16))
    let dispatcher = HypercallDispatcher(configuration: configuration, memory: memory, console: NullConsole(),
                                         physmap: NullPhysmap(), state: state, eventChannels: channels,
                                         grantTables: grants)
    for call in calls {
        let a = call.args
        let number = UInt64(call.number & 0x7f)
        let registers = call.number & 0x80 == 0
            ? HypercallRegisters(mode: .long64, rax: number, rdx: a[2], rsi: a[1], rdi: a[0], r8: a[4], r10: a[3], r9: a[5], cpl: 0)
            : HypercallRegisters(mode: .protected32, rax: number, rbx: a[0], rcx: a[1], rdx: a[2], rsi: a[3], rdi: a[4], rbp: a[5], cpl: 0)
        let outcome = dispatcher.handle(registers, vcpu: VCPUID(UInt32(call.vcpu % 3)), paging: .pagingDisabled)
        if case .returnToGuest(let rax) = outcome, rax < 0 {
            precondition(known.contains(rax), "hypercall \(number) returned \(rax), not a Xen errno")
        }
    }
}
