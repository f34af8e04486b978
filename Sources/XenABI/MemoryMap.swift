import GuestMemory

/// The type of a memory-map entry: the E820 types Xen uses both in
/// `hvm_memmap_table_entry.type` (start_info.h) and in XENMEM_memory_map.
public enum MemoryMapEntryType: UInt32, Sendable, Hashable {
    case ram = 1
    case reserved = 2
    case acpiReclaimable = 3
    case acpiNVS = 4
    case unusable = 5
}

/// One entry of the guest's memory map.
public struct MemoryMapEntry: Hashable, Sendable {
    public var range: GuestPhysicalRange
    public var type: MemoryMapEntryType
    public init(range: GuestPhysicalRange, type: MemoryMapEntryType) {
        self.range = range
        self.type = type
    }
    public init(start: UInt64, length: UInt64, type: MemoryMapEntryType) {
        self.init(range: GuestPhysicalRange(start: GuestPhysicalAddress(start), length: length), type: type)
    }
}
