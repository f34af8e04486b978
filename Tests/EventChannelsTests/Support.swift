import EventChannels
import GuestMemory
import Locking
import TestSupport
import XenABI

final class FakeLocator: SharedInfoLocator {
    struct S {
        var frame: GuestFrameNumber? = GuestFrameNumber(Fixture.sharedInfoFrame)
        var is32 = false
        var registered: [VCPUID: GuestPhysicalAddress] = [:]
    }
    let s = Lock(S())
    var sharedInfoFrame: GuestFrameNumber? { s.withLock { $0.frame } }
    var sharedInfoIs32Bit: Bool { s.withLock { $0.is32 } }
    func registeredVCPUInfo(for vcpu: VCPUID) -> GuestPhysicalAddress? { s.withLock { $0.registered[vcpu] } }
}

final class RecordingNotifier: EventChannelNotifier {
    let upcalls = Lock<[UInt32]>([])
    let pending = Lock<[UInt32]>([])
    func upcall(vcpu: VCPUID) { upcalls.withLock { $0.append(vcpu.rawValue) } }
    func portBecamePending(_ port: EventChannelPort) { pending.withLock { $0.append(port.rawValue) } }
    var upcallList: [UInt32] { upcalls.withLock { $0 } }
    var pendingList: [UInt32] { pending.withLock { $0 } }
}

final class RecordingPeer: EventChannelPeer {
    let notified = Lock<[UInt32]>([])
    func notify(_ port: EventChannelPort) { notified.withLock { $0.append(port.rawValue) } }
    var list: [UInt32] { notified.withLock { $0 } }
}

/// A guest d7 with 4 vCPUs, 1 MiB of RAM and shared_info at 0x10000.
struct Fixture {
    static let sharedInfoFrame: UInt64 = 0x10
    static let shinfo: UInt64 = 0x10000
    static let domid = DomainID(rawValue: 7)
    static let backend = DomainID(rawValue: 0)
    // 64-bit layout: evtchn_pending at 2048, evtchn_mask at 2560 (xen.h).
    static let pending64: UInt64 = shinfo + 2048
    static let mask64: UInt64 = shinfo + 2560
    // 32-bit layout: 32 words of 4 bytes each.
    static let pending32: UInt64 = shinfo + 2048
    static let mask32: UInt64 = shinfo + 2048 + 128

    let memory: any GuestMemory
    let locator = FakeLocator()
    let notifier = RecordingNotifier()
    let table: EventChannelTable

    init(vcpus: Int = 4, maximumPort: UInt32 = 4095, memory: (any GuestMemory)? = nil) {
        self.memory = memory ?? MockGuestMemory(size: 1 << 20)
        table = EventChannelTable(
            configuration: .init(domainID: Self.domid, vcpuCount: vcpus, maximumPort: maximumPort),
            memory: self.memory, locator: locator, notifier: notifier)
    }

    /// The legacy vcpu_info slot of `vcpu` in shared_info.
    static func legacyVCPUInfo(_ vcpu: UInt64) -> UInt64 { shinfo + vcpu * 64 }

    func u64(_ a: UInt64) -> UInt64 { (try? memory.load(UInt64.self, at: GuestPhysicalAddress(a))) ?? 0xdead }
    func u32(_ a: UInt64) -> UInt32 { (try? memory.load(UInt32.self, at: GuestPhysicalAddress(a))) ?? 0xdead }
    func u8(_ a: UInt64) -> UInt8 { (try? memory.load(UInt8.self, at: GuestPhysicalAddress(a))) ?? 0xde }
    func set<T: FixedWidthInteger & UnsignedInteger>(_ v: T, _ a: UInt64) { try? memory.store(v, at: GuestPhysicalAddress(a)) }

    /// 64-bit layout: pending word `w`, mask word `w`, vCPU's selector and upcall flag.
    func pendingWord(_ w: UInt64) -> UInt64 { u64(Self.pending64 + 8 * w) }
    func maskPort(_ port: UInt32) {
        let a = Self.mask64 + 8 * UInt64(port / 64)
        set(u64(a) | 1 << UInt64(port % 64), a)
    }
    func selector(_ vcpuInfo: UInt64) -> UInt64 { u64(vcpuInfo + 8) }
    func upcallFlag(_ vcpuInfo: UInt64) -> UInt8 { u8(vcpuInfo) }

    var guest: DomainID { Self.domid }
}

func port(_ n: UInt32) -> EventChannelPort { EventChannelPort(n) }
func vcpu(_ n: UInt32) -> VCPUID { VCPUID(n) }
