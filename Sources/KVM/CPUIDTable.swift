import CKVM

/// One CPUID leaf as KVM describes it (`struct kvm_cpuid_entry2`).
public struct CPUIDEntry: Equatable, Hashable, Sendable {
    /// EAX input (the leaf).
    public var function: UInt32
    /// ECX input (the subleaf); meaningful only with `.significantIndex`.
    public var index: UInt32
    /// KVM_CPUID_FLAG_* bits.
    public var flags: Flags
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    /// `kvm_cpuid_entry2.flags`.
    public struct Flags: OptionSet, Hashable, Sendable {
        public var rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the leaf has subleaves selected by ECX.
        public static let significantIndex = Flags(rawValue: UInt32(KVM_CPUID_FLAG_SIGNIFCANT_INDEX))
    }

    public init(function: UInt32, index: UInt32 = 0, flags: Flags = [], eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    /// True when this entry answers CPUID(function, index).
    public func matches(function f: UInt32, index i: UInt32) -> Bool {
        function == f && (!flags.contains(.significantIndex) || index == i)
    }
}

/// A CPUID table for KVM_SET_CPUID2 / from KVM_GET_SUPPORTED_CPUID.
/// Entries keep their order; at most one entry answers each (function, index).
public struct CPUIDTable: Equatable, Sendable {
    public private(set) var entries: [CPUIDEntry]

    public init(_ entries: [CPUIDEntry] = []) {
        self.entries = []
        for e in entries { set(e) }
    }

    /// The entry answering CPUID(function, index), if any.
    public func lookup(function: UInt32, index: UInt32 = 0) -> CPUIDEntry? {
        entries.first { $0.matches(function: function, index: index) }
    }

    /// Inserts `entry`, replacing the entry with the same function (and the
    /// same index when either is index-significant).
    public mutating func set(_ entry: CPUIDEntry) {
        if let i = entries.firstIndex(where: { CPUIDTable.sameSlot($0, entry) }) {
            entries[i] = entry
        } else {
            entries.append(entry)
        }
    }

    /// Edits the entry answering (function, index) in place; no-op if absent.
    public mutating func modify(function: UInt32, index: UInt32 = 0, _ body: (inout CPUIDEntry) -> Void) {
        if let i = entries.firstIndex(where: { $0.matches(function: function, index: index) }) {
            body(&entries[i])
        }
    }

    /// Removes the entry answering (function, index). With `index` nil,
    /// removes every entry of `function` (all subleaves).
    public mutating func remove(function: UInt32, index: UInt32? = nil) {
        entries.removeAll { e in
            guard e.function == function else { return false }
            guard let index else { return true }
            return e.matches(function: function, index: index)
        }
    }

    public var count: Int { entries.count }

    static func sameSlot(_ a: CPUIDEntry, _ b: CPUIDEntry) -> Bool {
        guard a.function == b.function else { return false }
        let indexed = a.flags.contains(.significantIndex) || b.flags.contains(.significantIndex)
        return !indexed || a.index == b.index
    }
}

/// A heap `struct kvm_cpuid2` with room for `capacity` entries (the
/// struct ends in a flexible array, so Swift cannot declare it by value).
final class CPUIDBuffer {
    let raw: UnsafeMutableRawPointer
    let capacity: Int
    static let headerSize = MemoryLayout<kvm_cpuid2>.size
    static let entrySize = MemoryLayout<kvm_cpuid_entry2>.stride

    init(capacity: Int) {
        self.capacity = capacity
        let bytes = CPUIDBuffer.headerSize + capacity * CPUIDBuffer.entrySize
        raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 8)
        // SAFETY: freshly allocated `bytes` bytes.
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        raw.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent = UInt32(capacity)
    }

    convenience init(_ table: CPUIDTable) {
        self.init(capacity: table.entries.count)
        for (i, e) in table.entries.enumerated() {
            var c = kvm_cpuid_entry2()
            c.function = e.function
            c.index = e.index
            c.flags = e.flags.rawValue
            c.eax = e.eax
            c.ebx = e.ebx
            c.ecx = e.ecx
            c.edx = e.edx
            // SAFETY: i < capacity; entries start right after the header.
            (raw + CPUIDBuffer.headerSize + i * CPUIDBuffer.entrySize).storeBytes(of: c, as: kvm_cpuid_entry2.self)
        }
    }

    deinit { raw.deallocate() }

    /// The entries the kernel filled in (nent was updated by the ioctl).
    func table() -> CPUIDTable {
        let n = min(Int(raw.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent), capacity)
        var t = CPUIDTable()
        for i in 0..<n {
            // SAFETY: i < min(nent, capacity); entries are in the allocation.
            let c = (raw + CPUIDBuffer.headerSize + i * CPUIDBuffer.entrySize).load(as: kvm_cpuid_entry2.self)
            t.set(CPUIDEntry(function: c.function, index: c.index, flags: .init(rawValue: c.flags),
                             eax: c.eax, ebx: c.ebx, ecx: c.ecx, edx: c.edx))
        }
        return t
    }
}
