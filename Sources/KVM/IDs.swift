/// A vCPU index as given to KVM_CREATE_VCPU (also the initial APIC ID).
public struct KVMVCPUID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "vcpu\(rawValue)" }
}

/// An x86 I/O port number (KVM_EXIT_IO `port`).
public struct IOPort: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }
    public var description: String { "port 0x" + String(rawValue, radix: 16) }
}

/// A model-specific register index (the ECX operand of RDMSR/WRMSR).
public struct MSRIndex: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "MSR 0x" + String(rawValue, radix: 16) }
}

/// A guest linear address (after segmentation, before paging): what RIP+CS.base,
/// hardware breakpoints (DR0–DR3) and KVM_EXIT_DEBUG's `pc` hold.
public struct GuestLinearAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// A KVM memory slot number (kvm_userspace_memory_region.slot).
public struct MemorySlot: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    public var description: String { "slot \(rawValue)" }
}
