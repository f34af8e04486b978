import XenABI

/// One domain's ports, allocated as Xen does (xen/common/event_channel.c
/// evtchn_allocate_port, get_free_port): lowest free port first, storage
/// grown a bucket at a time and never shrunk, port 0 reserved at creation.
/// A port beyond the allocated buckets is invalid (`port_is_valid` is false:
/// -EINVAL); one inside them but never used is a valid, free port (status
/// "closed", unmask a no-op).
struct PortTable {
    struct Entry {
        var binding = EventChannelBinding.free
        /// `notify_vcpu_id`: back to 0 whenever the port is freed (evtchn_free).
        var vcpu = VCPUID(0)
    }

    /// `EVTCHNS_PER_BUCKET` on x86-64: a page of 64-byte `struct evtchn`
    /// (`__attribute__((aligned(64)))`, xen/include/xen/sched.h).
    static let portsPerBucket = 64

    private(set) var entries: [Entry]

    init() {
        entries = [Entry](repeating: Entry(), count: Self.portsPerBucket)
        entries[0].binding = .reserved
    }

    /// `valid_evtchns`: ports below this are valid.
    var validCount: Int { entries.count }

    /// The entry, or nil when `port` is not valid.
    func entry(_ port: EventChannelPort) -> Entry? {
        Int(port.rawValue) < entries.count ? entries[Int(port.rawValue)] : nil
    }

    /// Only for ports `entry(_:)` returned non-nil for.
    subscript(port: EventChannelPort) -> Entry {
        get { entries[Int(port.rawValue)] }
        set { entries[Int(port.rawValue)] = newValue }
    }

    /// `get_free_port`: the lowest free port below `limit`, growing storage
    /// to hold it; -ENOSPC when there is none. The port stays free until the
    /// caller binds it (a failed bind leaves it free, as check_free_port does).
    mutating func allocate(below limit: Int) throws(XenErrno) -> EventChannelPort {
        var port = 0
        while port < limit {
            if port >= entries.count {
                let buckets = port / Self.portsPerBucket + 1
                entries.append(contentsOf: repeatElement(Entry(), count: buckets * Self.portsPerBucket - entries.count))
                return EventChannelPort(UInt32(port))
            }
            if case .free = entries[port].binding { return EventChannelPort(UInt32(port)) }
            port += 1
        }
        throw .enospc
    }

    /// Ports in use (not free, not reserved).
    var activeCount: Int { entries.count { $0.binding.isUsable } }
}
