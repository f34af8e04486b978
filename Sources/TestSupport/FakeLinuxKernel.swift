/// A tiny ELF64 shaped like a post-XSA-466 Linux kernel, for the
/// hypercall-site finder: a text segment with a static-call trampoline
/// (`jmp rel32`), `xen_hypercall_hvm` (branches to the vendor routines), and
/// `xen_hypercall_amd` (`vmmcall; ret`) / `xen_hypercall_intel` (`vmcall;
/// ret`); a rodata segment with `__ksymtab`/`__ksymtab_strings`
/// (PREL32 `struct kernel_symbol`), or a `.symtab` instead.
public struct FakeLinuxKernel: Sendable {
    /// How the hypercall routines can be found.
    public enum Shape: Sendable {
        /// `__ksymtab` exports `__SCT__xen_hypercall`; `xen_hypercall_hvm` uses
        /// `lea amd(%rip)`, `jz rel8`, `jmp rel8` (arch/x86/xen/xen-head.S).
        case ksymtabLea
        /// As above but via `__ksymtab_gpl`, with `cmp $imm32, %rax`, `jz rel32`, `jmp rel32`,
        /// and `endbr64` at each vendor routine.
        case ksymtabGplCompare
        /// Only `.symtab` entries for `xen_hypercall_amd`/`xen_hypercall_intel`.
        case symtab
        /// No way to find them (a pre-XSA-466 kernel).
        case none
    }

    public static let textVirtual: UInt64 = 0xffff_ffff_8100_0000
    public static let trampolineOffset = 0x100
    public static let hvmOffset = 0x200
    public static let amdOffset = 0x280
    public static let intelOffset = 0x2a0

    /// Bytes of the ELF file.
    public let bytes: [UInt8]
    /// Where the vmmcall/vmcall instructions are (virtual), given the shape
    /// (past an `endbr64` where there is one).
    public let amdSite: UInt64
    public let intelSite: UInt64

    /// - Parameters:
    ///   - physicalBase: `p_paddr` of the text segment (the PVH entry is its first byte).
    ///   - relocation: PHYS32_RELOC values to add, if any.
    public init(shape: Shape, physicalBase: UInt64 = 0x100_0000, bssSize: UInt64 = 0x4000,
                relocation: [UInt32]? = nil) {
        let t = Self.textVirtual
        var text = [UInt8](repeating: 0xcc, count: 0x1000)
        func put(_ b: [UInt8], _ at: Int) { text.replaceSubrange(at..<at + b.count, with: b) }
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { ELFBuilder.le(v) }
        func rel32(from next: Int, to target: Int) -> [UInt8] { le(UInt32(bitPattern: Int32(target - next))) }
        let endbr: [UInt8] = [0xf3, 0x0f, 0x1e, 0xfa]
        let withEndbr = shape == .ksymtabGplCompare
        put([0xf4], 0) // PVH entry: hlt
        // __SCT__xen_hypercall: jmp xen_hypercall_hvm
        put([0xe9] + rel32(from: Self.trampolineOffset + 5, to: Self.hvmOffset), Self.trampolineOffset)
        // xen_hypercall_hvm
        var hvm: [UInt8] = endbr + [0x55, 0x48, 0x89, 0xe5, 0x50, 0x51, 0x52, 0x41, 0x50] // push …
        hvm += [0xe8] + rel32(from: Self.hvmOffset + hvm.count + 5, to: 0x400) // call __xen_hypercall_setfunc
        if shape == .ksymtabGplCompare {
            // cmp $xen_hypercall_amd, %rax (sign-extended imm32)
            hvm += [0x48, 0x3d] + le(UInt32(truncatingIfNeeded: t + UInt64(Self.amdOffset)))
            hvm += [0x41, 0x58, 0x5a, 0x59, 0x58] // pop …
            hvm += [0x0f, 0x84] + rel32(from: Self.hvmOffset + hvm.count + 6, to: Self.amdOffset)
            hvm += [0xe9] + rel32(from: Self.hvmOffset + hvm.count + 5, to: Self.intelOffset)
        } else {
            // lea xen_hypercall_amd(%rip), %rcx; cmp %rax, %rcx
            hvm += [0x48, 0x8d, 0x0d] + rel32(from: Self.hvmOffset + hvm.count + 7, to: Self.amdOffset)
            hvm += [0x48, 0x39, 0xc1, 0x41, 0x58, 0x5a, 0x59, 0x58]
            hvm += [0x74, UInt8(Self.amdOffset - (Self.hvmOffset + hvm.count + 2))]
            hvm += [0xeb, UInt8(Self.intelOffset - (Self.hvmOffset + hvm.count + 2))]
        }
        precondition(hvm.count < Self.amdOffset - Self.hvmOffset)
        put(hvm, Self.hvmOffset)
        put((withEndbr ? endbr : []) + [0x0f, 0x01, 0xd9, 0xc3], Self.amdOffset)
        put((withEndbr ? endbr : []) + [0x0f, 0x01, 0xc1, 0xc3], Self.intelOffset)
        // A decoy: vmmcall not reachable from xen_hypercall_hvm.
        put([0x0f, 0x01, 0xd9, 0xc3], 0x800)
        put([0xc3], 0x400) // __xen_hypercall_setfunc
        amdSite = t + UInt64(Self.amdOffset + (withEndbr ? 4 : 0))
        intelSite = t + UInt64(Self.intelOffset + (withEndbr ? 4 : 0))

        // rodata: __ksymtab (3 entries) then __ksymtab_strings.
        let rodataVirtual = t + 0x1000
        let strings = Array("xen_foo\0__SCT__xen_hypercall\0xen_bar\0".utf8)
        let fooName = 0, sctName = 8, barName = 29
        let ksymtabOffset = 0, stringsOffset = 64
        var rodata = [UInt8](repeating: 0, count: 0x100)
        func entry(_ i: Int, value: Int, name: Int) -> [UInt8] {
            // PREL32: each field holds target - (address of the field).
            let field = ksymtabOffset + 12 * i
            let valueRel = Int64(value) - (Int64(0x1000) + Int64(field))
            let nameRel = Int64(stringsOffset + name) - Int64(field + 4)
            return le(UInt32(bitPattern: Int32(valueRel))) + le(UInt32(bitPattern: Int32(nameRel))) + le(UInt32(0))
        }
        let table = entry(0, value: 0x10, name: fooName) + entry(1, value: Self.trampolineOffset, name: sctName)
            + entry(2, value: 0x20, name: barName)
        rodata.replaceSubrange(ksymtabOffset..<ksymtabOffset + table.count, with: table)
        rodata.replaceSubrange(stringsOffset..<stringsOffset + strings.count, with: strings)

        var notes = ELFBuilder.pvhEntryNote(physicalBase, width: 8)
        if let relocation { notes += ELFBuilder.relocationNote(relocation) }
        var b = ELFBuilder(elfClass: .elf64, entry: t, noteSegment: notes)
        b.segments = [
            .init(virtualAddress: t, physicalAddress: physicalBase, data: text, alignment: 0x20_0000),
            .init(virtualAddress: rodataVirtual, physicalAddress: physicalBase + 0x1000, data: rodata,
                  memorySize: 0x1000 + bssSize),
        ]
        switch shape {
        case .ksymtabLea, .ksymtabGplCompare:
            b.sections = [
                .init(name: ".text", inSegment: (0, 0, text.count)),
                .init(name: shape == .ksymtabLea ? "__ksymtab" : "__ksymtab_gpl",
                      inSegment: (1, ksymtabOffset, table.count)),
                .init(name: "__ksymtab_strings", inSegment: (1, stringsOffset, strings.count)),
            ]
        case .symtab:
            let strtab = Array("\0xen_hypercall_amd\0xen_hypercall_intel\0".utf8)
            func sym(_ name: Int, _ value: UInt64) -> [UInt8] {
                le(UInt32(name)) + [0x12, 0] + le(UInt16(1)) + le(value) + le(UInt64(4))
            }
            let symbols = [UInt8](repeating: 0, count: 24) + sym(1, t + UInt64(Self.amdOffset))
                + sym(19, t + UInt64(Self.intelOffset))
            // Section indices: 0 null, 1 .text, 2 .symtab, 3 .strtab.
            b.sections = [
                .init(name: ".text", inSegment: (0, 0, text.count)),
                .init(name: ".symtab", type: ELFBuilder.SHT_SYMTAB, data: symbols, link: 3, entrySize: 24),
                .init(name: ".strtab", type: ELFBuilder.SHT_STRTAB, data: strtab),
            ]
        case .none:
            b.sections = [.init(name: ".text", inSegment: (0, 0, text.count))]
        }
        bytes = b.build()
    }
}

/// Wraps a payload in a minimal x86 bzImage: a setup header with "HdrS" at
/// 0x202, boot protocol 2.15, `setup_sects` at 0x1f1, `payload_offset` (0x248)
/// and `payload_length` (0x24c) (Linux Documentation/arch/x86/boot.rst).
public enum BzImageBuilder {
    public static func wrap(_ payload: [UInt8], setupSectors: UInt8 = 3, payloadOffset: UInt32 = 0x40,
                            protocolVersion: UInt16 = 0x020f, lengthOverride: UInt32? = nil) -> [UInt8] {
        let sectors = setupSectors == 0 ? 4 : Int(setupSectors)
        var image = [UInt8](repeating: 0, count: (sectors + 1) * 512)
        func put(_ b: [UInt8], _ at: Int) { image.replaceSubrange(at..<at + b.count, with: b) }
        put([setupSectors], 0x1f1)
        put([0x55, 0xaa], 0x1fe)
        put(Array("HdrS".utf8), 0x202)
        put(ELFBuilder.le(protocolVersion), 0x206)
        put(ELFBuilder.le(payloadOffset), 0x248)
        put(ELFBuilder.le(lengthOverride ?? UInt32(payload.count)), 0x24c)
        image += [UInt8](repeating: 0x90, count: Int(payloadOffset)) // "decompressor" code
        image += payload
        image += [UInt8](repeating: 0, count: 64)
        return image
    }
}
