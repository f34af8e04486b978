import GuestMemory
import XenABI

/// The control registers that decide how a guest linear address is translated.
public struct GuestPagingState: Hashable, Sendable {
    public var cr0: UInt64
    public var cr3: UInt64
    public var cr4: UInt64
    public var efer: UInt64

    public init(cr0: UInt64, cr3: UInt64, cr4: UInt64, efer: UInt64) {
        self.cr0 = cr0
        self.cr3 = cr3
        self.cr4 = cr4
        self.efer = efer
    }

    /// Paging off: linear = physical (the PVH entry state).
    public static let pagingDisabled = GuestPagingState(cr0: 0x11, cr3: 0, cr4: 0, efer: 0)

    static let cr0PG: UInt64 = 1 << 31
    static let cr0WP: UInt64 = 1 << 16
    static let cr4PSE: UInt64 = 1 << 4
    static let cr4PAE: UInt64 = 1 << 5
    static let cr4LA57: UInt64 = 1 << 12
    static let eferLMA: UInt64 = 1 << 10

    /// The translation scheme these registers select (Intel SDM vol. 3, 4.1.1).
    public var pagingMode: PagingMode {
        if cr0 & Self.cr0PG == 0 { return .none }
        if efer & Self.eferLMA != 0 { return cr4 & Self.cr4LA57 != 0 ? .level5 : .level4 }
        if cr4 & Self.cr4PAE != 0 { return .pae }
        return .twoLevel
    }

    public enum PagingMode: Hashable, Sendable {
        /// CR0.PG = 0.
        case none
        /// 32-bit paging (4 KiB pages, 4 MiB pages with CR4.PSE).
        case twoLevel
        /// PAE paging (4 KiB / 2 MiB pages).
        case pae
        /// 4-level paging (4 KiB / 2 MiB / 1 GiB pages).
        case level4
        /// 5-level paging: not supported (translation fails with -EFAULT).
        case level5
    }
}

/// Guest linear → guest physical translation by walking the guest's own page
/// tables in guest memory, plus copy-in/copy-out helpers that split at page
/// boundaries. Hypercall pointers from a PVH guest are linear addresses.
///
/// Every page-table entry is read once. Accesses are supervisor accesses;
/// writes honour R/W bits when CR0.WP is set, as Xen's copy_to_guest does
/// for HVM guests (guest_walk_tables with PFEC_write_access). A translation
/// that fails, or lands outside guest RAM, is -EFAULT.
public struct GuestAddressTranslator: Sendable {
    public let memory: any GuestMemory
    public let paging: GuestPagingState

    /// The most one copy may move (a guard; hypercall handlers copy far less).
    public static let maximumCopy = 1 << 20

    public init(memory: any GuestMemory, paging: GuestPagingState) {
        self.memory = memory
        self.paging = paging
    }

    static let pageSize: UInt64 = 4096
    static let addressMask: UInt64 = 0x000f_ffff_ffff_f000
    static let present: UInt64 = 1 << 0
    static let writable: UInt64 = 1 << 1
    static let pageSizeBit: UInt64 = 1 << 7

    /// The guest physical address `address` names, for a read or a write.
    public func translate(_ address: GuestVirtualAddress, write: Bool = false) throws(XenErrno) -> GuestPhysicalAddress {
        let va = address.rawValue
        let checkWrite = write && paging.cr0 & GuestPagingState.cr0WP != 0
        switch paging.pagingMode {
        case .none:
            return GuestPhysicalAddress(va)
        case .level5:
            throw .efault
        case .twoLevel:
            guard va <= 0xffff_ffff else { throw .efault }
            let pde = try loadEntry(UInt32.self, table: paging.cr3 & 0xffff_f000, index: (va >> 22) & 0x3ff)
            guard pde & Self.present != 0, !checkWrite || pde & Self.writable != 0 else { throw .efault }
            if pde & Self.pageSizeBit != 0, paging.cr4 & GuestPagingState.cr4PSE != 0 {
                // 4 MiB page; PSE-36 puts physical bits 39:32 in PDE bits 20:13.
                let base = (pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32
                return GuestPhysicalAddress(base | (va & 0x3f_ffff))
            }
            let pte = try loadEntry(UInt32.self, table: pde & 0xffff_f000, index: (va >> 12) & 0x3ff)
            guard pte & Self.present != 0, !checkWrite || pte & Self.writable != 0 else { throw .efault }
            return GuestPhysicalAddress((pte & 0xffff_f000) | (va & 0xfff))
        case .pae:
            guard va <= 0xffff_ffff else { throw .efault }
            // PDPTEs have no R/W bit in PAE mode.
            let pdpte = try loadEntry(UInt64.self, table: paging.cr3 & 0xffff_ffe0, index: (va >> 30) & 0x3)
            guard pdpte & Self.present != 0 else { throw .efault }
            return try walkFromDirectory(pdpte & Self.addressMask, va: va, checkWrite: checkWrite)
        case .level4:
            // Canonical: bits 63:47 all equal.
            let upper = va >> 47
            guard upper == 0 || upper == 0x1_ffff else { throw .efault }
            let pml4e = try loadEntry(UInt64.self, table: paging.cr3 & Self.addressMask, index: (va >> 39) & 0x1ff)
            guard pml4e & Self.present != 0, !checkWrite || pml4e & Self.writable != 0 else { throw .efault }
            let pdpte = try loadEntry(UInt64.self, table: pml4e & Self.addressMask, index: (va >> 30) & 0x1ff)
            guard pdpte & Self.present != 0, !checkWrite || pdpte & Self.writable != 0 else { throw .efault }
            if pdpte & Self.pageSizeBit != 0 {
                return GuestPhysicalAddress((pdpte & 0x000f_ffff_c000_0000) | (va & 0x3fff_ffff))
            }
            return try walkFromDirectory(pdpte & Self.addressMask, va: va, checkWrite: checkWrite)
        }
    }

    /// The page-directory and page-table levels shared by PAE and 4-level paging.
    private func walkFromDirectory(_ directory: UInt64, va: UInt64, checkWrite: Bool) throws(XenErrno) -> GuestPhysicalAddress {
        let pde = try loadEntry(UInt64.self, table: directory, index: (va >> 21) & 0x1ff)
        guard pde & Self.present != 0, !checkWrite || pde & Self.writable != 0 else { throw .efault }
        if pde & Self.pageSizeBit != 0 {
            return GuestPhysicalAddress((pde & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff))
        }
        let pte = try loadEntry(UInt64.self, table: pde & Self.addressMask, index: (va >> 12) & 0x1ff)
        guard pte & Self.present != 0, !checkWrite || pte & Self.writable != 0 else { throw .efault }
        return GuestPhysicalAddress((pte & Self.addressMask) | (va & 0xfff))
    }

    private func loadEntry<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, table: UInt64, index: UInt64) throws(XenErrno) -> UInt64 {
        // table is masked to <= 52 bits and index * 8 < 4096: no overflow.
        let address = GuestPhysicalAddress(table | index * UInt64(MemoryLayout<T>.size))
        do {
            return UInt64(try memory.load(T.self, at: address))
        } catch {
            throw .efault
        }
    }

    /// The physical pieces `[address, address + count)` occupies, one per page,
    /// all translated before anything is copied.
    private func pieces(_ address: GuestVirtualAddress, count: Int, write: Bool) throws(XenErrno) -> [(GuestPhysicalAddress, Int)] {
        guard count >= 0, count <= Self.maximumCopy else { throw .efault }
        let start = address.rawValue
        let (end, overflow) = start.addingReportingOverflow(UInt64(count))
        guard !overflow else { throw .efault }
        if paging.pagingMode != .level4 {
            // Outside long mode linear addresses are 32 bits wide (no wrap-around).
            guard end <= 0x1_0000_0000 else { throw .efault }
        }
        var result: [(GuestPhysicalAddress, Int)] = []
        var va = start
        while va < end {
            let inPage = Self.pageSize - (va & (Self.pageSize - 1))
            let n = min(inPage, end - va)
            result.append((try translate(GuestVirtualAddress(va), write: write), Int(n)))
            va += n
        }
        return result
    }

    /// Copies `count` bytes in from guest linear address `address`.
    public func readVirtual(at address: GuestVirtualAddress, count: Int) throws(XenErrno) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(max(0, min(count, Self.maximumCopy)))
        for (physical, n) in try pieces(address, count: count, write: false) {
            do {
                bytes += try memory.read(at: physical, count: n)
            } catch {
                throw .efault
            }
        }
        return bytes
    }

    /// Copies `bytes` out to guest linear address `address`. Every page is
    /// translated and checked before the first byte is written.
    public func writeVirtual(_ bytes: [UInt8], at address: GuestVirtualAddress) throws(XenErrno) {
        let parts = try pieces(address, count: bytes.count, write: true)
        for (physical, n) in parts where !memory.contains(physical, count: UInt64(n)) {
            throw .efault
        }
        var offset = 0
        for (physical, n) in parts {
            do {
                try memory.write(Array(bytes[offset..<offset + n]), at: physical)
            } catch {
                throw .efault
            }
            offset += n
        }
    }

    /// Reads a NUL-terminated string of at most `max` bytes (the NUL excluded)
    /// from `address`, a page at a time, never touching bytes past the NUL.
    public func readString(at address: GuestVirtualAddress, max: Int) throws(XenErrno) -> [UInt8] {
        var result: [UInt8] = []
        var va = address.rawValue
        let limit = min(Swift.max(0, max), Self.maximumCopy)
        while result.count < limit {
            let inPage = Int(Self.pageSize - (va & (Self.pageSize - 1)))
            let chunk = try readVirtual(at: GuestVirtualAddress(va), count: min(inPage, limit - result.count))
            if let nul = chunk.firstIndex(of: 0) {
                result += chunk[..<nul]
                return result
            }
            result += chunk
            let (next, overflow) = va.addingReportingOverflow(UInt64(chunk.count))
            guard !overflow else { throw .efault }
            va = next
        }
        return result
    }
}
