import GuestMemory
import XenABI

/// One hypercall instruction in the guest kernel, by both of its addresses:
/// the virtual address it was linked at and the physical address it is loaded
/// at (the guest may execute either alias: early PVH code runs identity-mapped).
public struct HypercallSite: Sendable, Hashable, CustomStringConvertible {
    public var virtualAddress: GuestVirtualAddress
    public var physicalAddress: GuestPhysicalAddress

    public init(virtualAddress: GuestVirtualAddress, physicalAddress: GuestPhysicalAddress) {
        self.virtualAddress = virtualAddress
        self.physicalAddress = physicalAddress
    }

    public var description: String { "\(virtualAddress) / \(physicalAddress)" }
}

/// Where a Linux kernel issues hypercalls since XSA-466: `vmmcall` in
/// `xen_hypercall_amd` and `vmcall` in `xen_hypercall_intel`
/// (arch/x86/xen/xen-head.S). Each site is exactly one 3-byte instruction;
/// the VMM traps it and advances RIP by 3.
public struct HypercallSites: Sendable, Hashable {
    /// `vmmcall` (0f 01 d9).
    public var amd: HypercallSite?
    /// `vmcall` (0f 01 c1).
    public var intel: HypercallSite?

    public init(amd: HypercallSite? = nil, intel: HypercallSite? = nil) {
        self.amd = amd
        self.intel = intel
    }

    /// No site found (an older kernel that uses the hypercall page, or not Linux).
    public var isEmpty: Bool { amd == nil && intel == nil }

    /// The sites with their physical addresses moved by a relocation `delta`.
    public func relocated(by delta: Int64) -> HypercallSites {
        func shift(_ s: HypercallSite?) -> HypercallSite? {
            s.map { HypercallSite(virtualAddress: $0.virtualAddress,
                                  physicalAddress: GuestPhysicalAddress($0.physicalAddress.rawValue &+ UInt64(bitPattern: delta))) }
        }
        return HypercallSites(amd: shift(amd), intel: shift(intel))
    }
}

/// Finds `xen_hypercall_amd` / `xen_hypercall_intel` in a kernel ELF.
///
/// 1. From `.symtab` when the image has one.
/// 2. Otherwise from the export table: `__ksymtab`/`__ksymtab_gpl` hold
///    `struct kernel_symbol { int value_offset, name_offset, namespace_offset; }`
///    (include/linux/export-internal.h, PREL32: target = field address +
///    offset). The entry named `__SCT__xen_hypercall` is the static-call
///    trampoline, a `jmp rel32` to `xen_hypercall_hvm`; that function picks
///    the vendor routine with `lea xen_hypercall_amd(%rip)` + `cmp` + `jz`
///    + `jmp` (or a `cmp $imm32` on older variants). Every branch/lea/imm32
///    target in its first bytes is a candidate; a candidate is a site when it
///    is `[endbr64] vmmcall|vmcall` followed by `ret` or `jmp` (the return thunk).
enum HypercallSiteFinder {
    static let vmmcall: [UInt8] = [0x0f, 0x01, 0xd9]
    static let vmcall: [UInt8] = [0x0f, 0x01, 0xc1]
    static let endbr64: [UInt8] = [0xf3, 0x0f, 0x1e, 0xfa]
    /// How far into `xen_hypercall_hvm` to look for branches.
    static let scanWindow: UInt64 = 512
    static let trampolineSymbol = Array("__SCT__xen_hypercall".utf8)

    static func find(in elf: ELFFile) -> HypercallSites {
        var sites = fromSymbolTable(elf)
        if sites.amd == nil || sites.intel == nil, let hvm = hypercallHVMAddress(elf) {
            let found = scan(elf, from: hvm)
            sites.amd = sites.amd ?? found.amd
            sites.intel = sites.intel ?? found.intel
        }
        return sites
    }

    /// The site at `address` if the code there is `[endbr64] vmmcall|vmcall; ret|jmp`.
    static func site(_ elf: ELFFile, at address: UInt64) -> (isAMD: Bool, site: HypercallSite)? {
        guard var code = elf.bytes(atVirtual: address, count: 8).map(Array.init) else { return nil }
        var at = address
        if code.starts(with: endbr64) {
            code.removeFirst(4)
            at &+= 4
        }
        guard code.count >= 4, code[3] == 0xc3 || code[3] == 0xe9 else { return nil }
        let isAMD: Bool
        if code.starts(with: vmmcall) { isAMD = true } else if code.starts(with: vmcall) { isAMD = false } else { return nil }
        guard let physical = elf.physicalAddress(ofVirtual: at) else { return nil }
        return (isAMD, HypercallSite(virtualAddress: GuestVirtualAddress(at), physicalAddress: GuestPhysicalAddress(physical)))
    }

    private static func fromSymbolTable(_ elf: ELFFile) -> HypercallSites {
        var sites = HypercallSites()
        guard let symtab = elf.sections.first(where: { $0.type == ELFFile.SHT_SYMTAB }),
              Int(symtab.link) < elf.sections.count,
              let symbols = elf.contents(of: symtab),
              let strings = elf.contents(of: elf.sections[Int(symtab.link)])
        else { return sites }
        let names = ByteView(Array(strings))
        let table = ByteView(Array(symbols))
        let entrySize: UInt64 = elf.elfClass == .elf64 ? 24 : 16
        let amdName = Array("xen_hypercall_amd".utf8), intelName = Array("xen_hypercall_intel".utf8)
        var offset: UInt64 = 0
        while offset + entrySize <= UInt64(table.count) {
            defer { offset += entrySize }
            // Elf64_Sym: st_name@0, st_value@8; Elf32_Sym: st_name@0, st_value@4.
            guard let nameOffset = table.u32(offset),
                  let value = elf.elfClass == .elf64 ? table.u64(offset + 8) : table.u32(offset + 4).map(UInt64.init),
                  let name = names.cString(at: UInt64(nameOffset), limit: 64),
                  name == amdName || name == intelName,
                  let found = site(elf, at: value)
            else { continue }
            if found.isAMD { sites.amd = sites.amd ?? found.site } else { sites.intel = sites.intel ?? found.site }
        }
        return sites
    }

    /// `xen_hypercall_hvm`, reached through the exported static-call trampoline.
    static func hypercallHVMAddress(_ elf: ELFFile) -> UInt64? {
        guard let strings = elf.section(named: "__ksymtab_strings"), let stringBytes = elf.contents(of: strings)
        else { return nil }
        // The trampoline's name inside __ksymtab_strings (NUL-separated).
        let wanted = trampolineSymbol + [0]
        var nameAddress: UInt64?
        var start = stringBytes.startIndex
        while start < stringBytes.endIndex {
            let end = stringBytes[start...].firstIndex(of: 0) ?? stringBytes.endIndex
            if stringBytes[start..<min(end + 1, stringBytes.endIndex)].elementsEqual(wanted) {
                nameAddress = strings.address &+ UInt64(start - stringBytes.startIndex)
                break
            }
            start = end + 1
        }
        guard let nameAddress else { return nil }
        for tableName in ["__ksymtab_gpl", "__ksymtab"] {
            guard let table = elf.section(named: tableName), let bytes = elf.contents(of: table) else { continue }
            let v = ByteView(Array(bytes))
            var offset: UInt64 = 0
            while offset + 12 <= UInt64(v.count) {
                defer { offset += 12 }
                guard let valueOffset = v.u32(offset), let nameOffset = v.u32(offset + 4) else { break }
                let entryAddress = table.address &+ offset
                let name = (entryAddress &+ 4) &+ UInt64(bitPattern: Int64(Int32(bitPattern: nameOffset)))
                guard name == nameAddress else { continue }
                let trampoline = entryAddress &+ UInt64(bitPattern: Int64(Int32(bitPattern: valueOffset)))
                return jumpTarget(elf, at: trampoline)
            }
        }
        return nil
    }

    /// The target of the `[endbr64] jmp rel32` at `address`.
    static func jumpTarget(_ elf: ELFFile, at address: UInt64) -> UInt64? {
        guard var code = elf.bytes(atVirtual: address, count: 9).map(Array.init) else { return nil }
        var at = address
        if code.starts(with: endbr64) {
            code.removeFirst(4)
            at &+= 4
        }
        guard code.count >= 5, code[0] == 0xe9 else { return nil }
        return at &+ 5 &+ rel32(code, 1)
    }

    /// Candidate targets in `xen_hypercall_hvm`: jcc/jmp rel8/rel32 targets,
    /// RIP-relative `lea` targets and `cmp $imm32, %rax` immediates. A byte
    /// scan, not a decoder: false candidates are filtered by `site(_:at:)`.
    static func scan(_ elf: ELFFile, from start: UInt64) -> HypercallSites {
        var window: UInt64 = scanWindow
        var code: [UInt8] = []
        while window >= 16 {
            if let c = elf.bytes(atVirtual: start, count: window) { code = Array(c); break }
            window /= 2
        }
        var candidates: [UInt64] = []
        let n = code.count
        for i in 0..<n {
            let here = start &+ UInt64(i)
            let b = code[i]
            if (b == 0xeb || (0x70...0x7f).contains(b)), i + 2 <= n {
                candidates.append(here &+ 2 &+ UInt64(bitPattern: Int64(Int8(bitPattern: code[i + 1]))))
            }
            if b == 0xe9, i + 5 <= n { candidates.append(here &+ 5 &+ rel32(code, i + 1)) }
            if b == 0x0f, i + 6 <= n, (0x80...0x8f).contains(code[i + 1]) {
                candidates.append(here &+ 6 &+ rel32(code, i + 2))
            }
            // REX.W lea disp32(%rip), %reg: 48/4c 8d, ModRM mod=00 rm=101.
            if b & 0xfb == 0x48, i + 7 <= n, code[i + 1] == 0x8d, code[i + 2] & 0xc7 == 0x05 {
                candidates.append(here &+ 7 &+ rel32(code, i + 3))
            }
            // cmp $imm32, %rax (48 3d): the immediate, sign-extended.
            if b == 0x48, i + 6 <= n, code[i + 1] == 0x3d { candidates.append(rel32(code, i + 2)) }
        }
        // Nearest candidates first: the vendor routines follow xen_hypercall_hvm.
        candidates.sort { distance($0, start) < distance($1, start) }
        var sites = HypercallSites()
        for c in candidates {
            guard let found = site(elf, at: c) else { continue }
            if found.isAMD { sites.amd = sites.amd ?? found.site } else { sites.intel = sites.intel ?? found.site }
            if sites.amd != nil && sites.intel != nil { break }
        }
        return sites
    }

    private static func rel32(_ code: [UInt8], _ at: Int) -> UInt64 {
        let raw = UInt32(code[at]) | UInt32(code[at + 1]) << 8 | UInt32(code[at + 2]) << 16 | UInt32(code[at + 3]) << 24
        return UInt64(bitPattern: Int64(Int32(bitPattern: raw)))
    }

    private static func distance(_ a: UInt64, _ b: UInt64) -> UInt64 { a > b ? a - b : b - a }
}
