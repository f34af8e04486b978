import GuestMemory

/// Builds x86 guest page tables in guest memory for tests: 32-bit (2-level,
/// with 4 MiB PSE pages), PAE (3-level, 2 MiB pages) and 4-level (2 MiB and
/// 1 GiB pages). Tables are carved from `tableArea` upwards.
public final class PageTableBuilder {
    public enum Mode: Sendable { case twoLevel, pae, level4 }
    /// Leaf sizes: 4 KiB, the mode's large page (4 MiB / 2 MiB), 1 GiB (4-level only).
    public enum PageSize: Sendable { case small, large, huge }

    public let memory: any GuestMemory
    public let mode: Mode
    public private(set) var root: UInt64
    private var next: UInt64

    public init(memory: any GuestMemory, mode: Mode, tableArea: UInt64) throws {
        self.memory = memory
        self.mode = mode
        next = tableArea
        root = 0
        root = try allocate()
    }

    private func allocate() throws -> UInt64 {
        let page = next
        next += 4096
        try memory.fill(at: GuestPhysicalAddress(page), count: 4096, with: 0)
        return page
    }

    private var shifts: [UInt64] {
        switch mode {
        case .twoLevel: [22, 12]
        case .pae: [30, 21, 12]
        case .level4: [39, 30, 21, 12]
        }
    }
    private var entrySize: UInt64 { mode == .twoLevel ? 4 : 8 }

    private func readEntry(_ address: UInt64) throws -> UInt64 {
        mode == .twoLevel
            ? UInt64(try memory.load(UInt32.self, at: GuestPhysicalAddress(address)))
            : try memory.load(UInt64.self, at: GuestPhysicalAddress(address))
    }
    private func writeEntry(_ value: UInt64, at address: UInt64) throws {
        if mode == .twoLevel {
            try memory.store(UInt32(truncatingIfNeeded: value), at: GuestPhysicalAddress(address))
        } else {
            try memory.store(value, at: GuestPhysicalAddress(address))
        }
    }

    /// Maps `virtual` → `physical` with one leaf of `size`. `present: false`
    /// writes the leaf without its present bit.
    public func map(virtual: UInt64, physical: UInt64, size: PageSize = .small, writable: Bool = true, present: Bool = true) throws {
        let leafShift: UInt64 = switch (size, mode) {
        case (.small, _): 12
        case (.large, .twoLevel): 22
        case (.large, _): 21
        case (.huge, _): 30
        }
        var table = root
        for (level, shift) in shifts.enumerated() {
            let indexBits: UInt64 = (mode == .pae && level == 0) ? 0x3 : (mode == .twoLevel ? 0x3ff : 0x1ff)
            let slot = table + ((virtual >> shift) & indexBits) * entrySize
            // PAE PDPTEs have no R/W bit (it is reserved).
            let flags: UInt64 = (mode == .pae && level == 0) ? 0x1 : (writable ? 0x3 : 0x1)
            if shift == leafShift {
                var entry = physical | flags
                if !present { entry &= ~1 }
                if shift != 12 {
                    entry |= 0x80
                    if mode == .twoLevel {
                        // PSE-36: physical bits 39:32 in entry bits 20:13.
                        entry = (physical & 0xffc0_0000) | ((physical >> 32) & 0xff) << 13 | flags | 0x80
                        if !present { entry &= ~1 }
                    }
                }
                try writeEntry(entry, at: slot)
                return
            }
            var entry = try readEntry(slot)
            if entry & 1 == 0 {
                entry = try allocate() | flags
                try writeEntry(entry, at: slot)
            } else if writable, !(mode == .pae && level == 0) {
                try writeEntry(entry | 0x2, at: slot)
            }
            table = entry & 0x000f_ffff_ffff_f000
        }
    }

    /// Control registers that select these tables (CR0.PG|WP|PE; CR4.PSE for
    /// 2-level, CR4.PAE otherwise; EFER.LME|LMA for 4-level).
    public var controlRegisters: (cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64) {
        let cr0: UInt64 = 0x8001_0001
        switch mode {
        case .twoLevel: return (cr0, root, 0x10, 0)
        case .pae: return (cr0, root, 0x20, 0)
        case .level4: return (cr0, root, 0x20, 0x500)
        }
    }
}
