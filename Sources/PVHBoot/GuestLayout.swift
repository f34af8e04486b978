import GuestMemory
import XenABI

/// Free-space search over guest RAM: RAM regions minus ranges already taken.
/// All arithmetic is overflow-checked; nothing returned crosses a region edge.
struct GuestLayout: Sendable {
    /// RAM regions, sorted.
    let ram: [GuestPhysicalRange]
    /// Ranges nothing else may overlap.
    private(set) var taken: [GuestPhysicalRange] = []

    init(ram: [GuestPhysicalRange]) {
        self.ram = ram.filter { $0.length > 0 }.sorted { $0.start < $1.start }
    }

    mutating func take(_ r: GuestPhysicalRange) {
        if r.length > 0 { taken.append(r) }
    }

    /// True when `r` lies inside one RAM region and overlaps nothing taken.
    func isFree(_ r: GuestPhysicalRange) -> Bool {
        guard r.start.advanced(by: r.length) != nil else { return false }
        return ram.contains { $0.contains(r.start, count: r.length) } && !taken.contains { $0.overlaps(r) }
    }

    /// The lowest free `size`-byte range with start ≥ `from`, start aligned to
    /// `alignment`, and last byte ≤ `lastByte`.
    func lowest(size: UInt64, alignment: UInt64, from: UInt64 = 0, lastByte: UInt64 = 0xffff_ffff) -> GuestPhysicalAddress? {
        guard size > 0 else { return nil }
        for region in ram {
            guard var start = max(region.start.rawValue, from).alignedUp(alignment) else { continue }
            while true {
                let (end, o) = start.addingReportingOverflow(size)
                guard !o, end <= region.end, end - 1 <= lastByte else { break }
                let candidate = GuestPhysicalRange(start: GuestPhysicalAddress(start), length: size)
                guard let blocker = taken.filter({ $0.overlaps(candidate) }).max(by: { $0.end < $1.end }) else {
                    return candidate.start
                }
                guard let next = blocker.end.alignedUp(alignment), next > start else { break }
                start = next
            }
        }
        return nil
    }

    /// The highest free `size`-byte range, start aligned to `alignment`, last
    /// byte ≤ `lastByte`.
    func highest(size: UInt64, alignment: UInt64, lastByte: UInt64 = 0xffff_ffff) -> GuestPhysicalAddress? {
        guard size > 0 else { return nil }
        for region in ram.reversed() {
            let top = min(region.end, lastByte == .max ? .max : lastByte + 1)
            guard top >= size, top - size >= region.start.rawValue else { continue }
            var start = (top - size).alignedDown(alignment)
            while start >= region.start.rawValue {
                let candidate = GuestPhysicalRange(start: GuestPhysicalAddress(start), length: size)
                guard let blocker = taken.filter({ $0.overlaps(candidate) }).min(by: { $0.start < $1.start }) else {
                    return candidate.start
                }
                guard blocker.start.rawValue >= size else { break }
                let next = (blocker.start.rawValue - size).alignedDown(alignment)
                guard next < start else { break }
                start = next
            }
        }
        return nil
    }
}

/// Builds the guest memory map: RAM from the regions, with each special
/// range (ACPI tables, the VMM's reservations) carved out of the RAM entries
/// and listed with its own type. Sorted by address; RAM never overlaps a
/// special range.
enum MemoryMapBuilder {
    static func build(ram: [GuestPhysicalRange], special: [MemoryMapEntry]) -> [MemoryMapEntry] {
        var entries = ram.filter { $0.length > 0 }.map { MemoryMapEntry(range: $0, type: .ram) }
        for s in special where s.range.length > 0 {
            entries = entries.flatMap { e -> [MemoryMapEntry] in
                guard e.type == .ram, e.range.overlaps(s.range) else { return [e] }
                var pieces: [MemoryMapEntry] = []
                if e.range.start < s.range.start {
                    pieces.append(MemoryMapEntry(start: e.range.start.rawValue,
                                                 length: s.range.start.rawValue - e.range.start.rawValue, type: .ram))
                }
                if s.range.end < e.range.end {
                    pieces.append(MemoryMapEntry(start: s.range.end, length: e.range.end - s.range.end, type: .ram))
                }
                return pieces
            }
            entries.append(s)
        }
        return entries.sorted { ($0.range.start, $0.range.length) < ($1.range.start, $1.range.length) }
    }
}
