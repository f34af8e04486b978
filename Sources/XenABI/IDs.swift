/// Typed identifiers of Xen objects. A bare integer never crosses a target boundary.

/// A domain ID (`domid_t`). `DOMID_SELF` is 0x7ff0.
public struct DomainID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// `DOMID_SELF` (xen.h).
    public static let `self` = DomainID(rawValue: 0x7ff0)
    /// Domain 0: the control domain, which the VMM plays for every guest:
    /// it runs the toolstack, xenstored and every device backend, so its id
    /// owns the store's root, backends' nodes and their event-channel ends.
    public static let controlDomain = DomainID(rawValue: 0)
    /// `DOMID_FIRST_RESERVED` (xen.h): ids from here up name no ordinary
    /// domain (DOMID_SELF, DOMID_IO, DOMID_XEN, ...).
    public static let firstReserved: UInt16 = 0x7ff0
    public var description: String { "d\(rawValue)" }
}

/// A virtual CPU index inside one domain (Xen's `vcpu_id`).
public struct VCPUID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "vcpu\(rawValue)" }
}

/// A guest virtual (linear) address, as hypercall arguments carry them in PVH:
/// they are translated through the guest's own page tables before use.
public struct GuestVirtualAddress: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public func advanced(by n: UInt64) -> GuestVirtualAddress { GuestVirtualAddress(rawValue &+ n) }
    public var description: String { "gva 0x" + String(rawValue, radix: 16) }
}

/// An event-channel port (`evtchn_port_t`, event_channel.h). Port 0 is never
/// allocated: Xen reserves it at domain creation (event_channel.c evtchn_init).
public struct EventChannelPort: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "port \(rawValue)" }
}

/// A grant reference (`grant_ref_t`, grant_table.h): an index into a
/// domain's grant table. References 0..<8 are reserved for the toolstack
/// (`GNTTAB_NR_RESERVED_ENTRIES`: console and XenStore).
public struct GrantReference: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "gref \(rawValue)" }
}
