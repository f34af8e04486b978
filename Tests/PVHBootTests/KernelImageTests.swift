import GuestMemory
import PVHBoot
import Testing
import TestSupport
import XenABI

/// A plain PVH ELF: one text segment at `base` with a PHYS32_ENTRY note.
func simpleELF(_ cls: ELFBuilder.Class = .elf64, base: UInt64 = 0x100_0000, size: Int = 0x3000,
               bss: UInt64 = 0x1000, notes: [UInt8]? = nil) -> ELFBuilder {
    var data = [UInt8](repeating: 0, count: size)
    for i in data.indices { data[i] = UInt8(truncatingIfNeeded: i &* 7 &+ 3) }
    return ELFBuilder(
        elfClass: cls, entry: base,
        segments: [.init(virtualAddress: base, physicalAddress: base, data: data,
                         memorySize: UInt64(size) + bss)],
        noteSegment: notes ?? ELFBuilder.pvhEntryNote(base + 0x10))
}

func parseError(_ bytes: [UInt8]) -> KernelImageError? {
    do {
        _ = try KernelImage.parse(bytes)
        return nil
    } catch {
        return error
    }
}

@Suite("ELF and PVH notes")
struct ELFNoteTests {
    @Test("ELF64 PHYS32_ENTRY (.long and _ASM_PTR widths)", arguments: [4, 8])
    func entry64(width: Int) throws {
        let elf = simpleELF(notes: ELFBuilder.pvhEntryNote(0x100_0010, width: width)).build()
        let k = try KernelImage.parse(elf)
        #expect(k.container == .elf)
        #expect(k.is64Bit)
        #expect(k.entry == GuestPhysicalAddress(0x100_0010))
        #expect(k.relocation == nil)
        #expect(k.physicalRange == GuestPhysicalRange(start: GuestPhysicalAddress(0x100_0000), length: 0x4000))
        #expect(k.segments.count == 1)
        #expect(k.segments[0].memorySize == 0x4000)
        #expect(k.hypercallSites.isEmpty)
    }

    @Test("ELF32 PHYS32_ENTRY")
    func entry32() throws {
        let k = try KernelImage.parse(simpleELF(.elf32, base: 0x10_0000, notes: ELFBuilder.pvhEntryNote(0x10_0000)).build())
        #expect(!k.is64Bit)
        #expect(k.entry == GuestPhysicalAddress(0x10_0000))
    }

    @Test("other notes are skipped; a note in an SHT_NOTE section is found")
    func noteInSection() throws {
        var b = simpleELF(notes: ELFBuilder.note(name: "GNU", type: 3, descriptor: [1, 2, 3, 4, 5])
                          + ELFBuilder.note(name: "Linux", type: 18, descriptor: [0, 0, 0, 0]))
        #expect(parseError(b.build()) == .noPVHEntry)
        b.sections = [.init(name: ".note.Xen", type: ELFBuilder.SHT_NOTE, data: ELFBuilder.pvhEntryNote(0x100_0020))]
        #expect(try KernelImage.parse(b.build()).entry == GuestPhysicalAddress(0x100_0020))
    }

    @Test("missing PHYS32_ENTRY")
    func missing() {
        let error = parseError(simpleELF(notes: []).build())
        #expect(error == .noPVHEntry)
        #expect(error?.description == "no XEN_ELFNOTE_PHYS32_ENTRY: not a PVH-capable kernel")
    }

    @Test("truncated and malformed notes")
    func badNotes() {
        let good = ELFBuilder.pvhEntryNote(0x100_0010)
        // Cut inside the descriptor; cut inside the header.
        #expect(parseError(simpleELF(notes: Array(good.prefix(good.count - 2))).build()) == .truncated(.note))
        #expect(parseError(simpleELF(notes: Array(good.prefix(7))).build()) == .truncated(.note))
        // descsz claims more than there is.
        var huge = good
        huge.replaceSubrange(4..<8, with: ELFBuilder.le(UInt32.max))
        #expect(parseError(simpleELF(notes: huge).build()) == .truncated(.note))
        var namesz = good
        namesz.replaceSubrange(0..<4, with: ELFBuilder.le(UInt32.max - 1))
        #expect(parseError(simpleELF(notes: namesz).build()) == .truncated(.note))
        // A 2-byte entry descriptor; a 64-bit value above 4 GiB.
        #expect(parseError(simpleELF(notes: ELFBuilder.note(name: "Xen", type: 18, descriptor: [1, 2])).build())
                == .badXenNote(type: 18, descriptorSize: 2))
        #expect(parseError(simpleELF(notes: ELFBuilder.pvhEntryNote(0x1_0000_0000, width: 8)).build())
                == .badXenNote(type: 18, descriptorSize: 8))
        // Entry outside the image.
        #expect(parseError(simpleELF(notes: ELFBuilder.pvhEntryNote(0x200_0000)).build())
                == .entryOutsideImage(GuestPhysicalAddress(0x200_0000)))
    }

    @Test("PHYS32_RELOC: all three values, defaults, bad alignment")
    func relocation() throws {
        let full = simpleELF(notes: ELFBuilder.pvhEntryNote(0x100_0010) + ELFBuilder.relocationNote([0x20_0000, 0x100_0000, 0x3fff_ffff]))
        let r = try #require(try KernelImage.parse(full.build()).relocation)
        #expect(r == PhysicalRelocation(alignment: 0x20_0000, minimum: GuestPhysicalAddress(0x100_0000),
                                        maximum: GuestPhysicalAddress(0x3fff_ffff)))
        let one = simpleELF(notes: ELFBuilder.pvhEntryNote(0x100_0010) + ELFBuilder.relocationNote([0x1000]))
        #expect(try KernelImage.parse(one.build()).relocation
                == PhysicalRelocation(alignment: 0x1000, minimum: GuestPhysicalAddress(0), maximum: GuestPhysicalAddress(0xffff_ffff)))
        let empty = simpleELF(notes: ELFBuilder.pvhEntryNote(0x100_0010) + ELFBuilder.relocationNote([]))
        #expect(try KernelImage.parse(empty.build()).relocation == PhysicalRelocation())
        let bad = simpleELF(notes: ELFBuilder.pvhEntryNote(0x100_0010) + ELFBuilder.relocationNote([0x3000]))
        #expect(parseError(bad.build()) == .badXenNote(type: 19, descriptorSize: 4))
    }

    @Test("corrupt headers and segments")
    func corruptHeaders() {
        #expect(parseError([]) == .notAKernel)
        #expect(parseError(Array("#!/bin/sh\necho hi\n".utf8)) == .notAKernel)
        #expect(parseError([0x7f, 0x45, 0x4c, 0x46, 2]) == .truncated(.elfHeader))
        var bigEndian = simpleELF().build()
        bigEndian[5] = 2
        #expect(parseError(bigEndian) == .unsupportedELF(class: 2, data: 2, machine: 62))
        #expect(parseError(ELFBuilder(machine: 183, segments: simpleELF().segments).build())
                == .unsupportedELF(class: 2, data: 1, machine: 183))
        var phent = simpleELF()
        phent.programHeaderEntrySizeOverride = 40
        #expect(parseError(phent.build()) == .badHeaderEntrySize(.programHeaderTable, size: 40))
        var fileBig = simpleELF()
        fileBig.segments[0].fileSizeOverride = 0x5000
        fileBig.segments[0].memorySize = 0x4000
        #expect(parseError(fileBig.build()) == .badSegment(index: 0))
        var outside = simpleELF()
        outside.segments[0].offsetOverride = 0xffff_ffff_ffff_f000
        #expect(parseError(outside.build()) == .truncated(.segment(index: 0)))
        var wraps = simpleELF()
        wraps.segments[0].physicalAddress = UInt64.max - 0x100
        #expect(parseError(wraps.build()) == .badSegment(index: 0))
        #expect(parseError(ELFBuilder(noteSegment: ELFBuilder.pvhEntryNote(0)).build()) == .noLoadableSegments)
    }

    @Test("every prefix of a valid file parses or throws, never crashes")
    func prefixes() {
        let elf = FakeLinuxKernel(shape: .ksymtabLea).bytes
        for n in stride(from: 0, to: elf.count, by: 7) { _ = parseError(Array(elf.prefix(n))) }
    }

    @Test("random byte corruption parses or throws, never crashes")
    func mutations() {
        let elf = FakeLinuxKernel(shape: .ksymtabLea).bytes
        var rng = SplitMix(seed: 0x5eed)
        for _ in 0..<3000 {
            var m = elf
            for _ in 0..<(1 + Int(rng.next() % 4)) {
                // Mostly hit the headers, where the offsets live.
                let limit = rng.next() % 2 == 0 ? min(m.count, 0x200) : m.count
                m[Int(rng.next() % UInt64(limit))] = UInt8(truncatingIfNeeded: rng.next())
            }
            _ = parseError(m)
        }
    }
}

/// Deterministic PRNG for the mutation test (SplitMix64).
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

@Suite("Hypercall sites")
struct HypercallSiteTests {
    @Test("found through __ksymtab / __ksymtab_gpl and .symtab",
          arguments: [FakeLinuxKernel.Shape.ksymtabLea, .ksymtabGplCompare, .symtab])
    func found(shape: FakeLinuxKernel.Shape) throws {
        let fake = FakeLinuxKernel(shape: shape)
        let k = try KernelImage.parse(fake.bytes)
        let amd = try #require(k.hypercallSites.amd)
        let intel = try #require(k.hypercallSites.intel)
        #expect(amd.virtualAddress == GuestVirtualAddress(fake.amdSite))
        #expect(intel.virtualAddress == GuestVirtualAddress(fake.intelSite))
        // p_vaddr → p_paddr
        #expect(amd.physicalAddress == GuestPhysicalAddress(fake.amdSite - FakeLinuxKernel.textVirtual + 0x100_0000))
        #expect(intel.physicalAddress == GuestPhysicalAddress(fake.intelSite - FakeLinuxKernel.textVirtual + 0x100_0000))
    }

    @Test("absent on a kernel without exports or symbols")
    func absent() throws {
        #expect(try KernelImage.parse(FakeLinuxKernel(shape: .none).bytes).hypercallSites.isEmpty)
    }

    @Test("a trampoline that is not a jmp yields nothing")
    func brokenTrampoline() throws {
        var bytes = FakeLinuxKernel(shape: .ksymtabLea).bytes
        // The text segment's data starts at the first 16-aligned offset after
        // the headers; find the trampoline's e9 by pattern and break it.
        let i = try #require(bytes.indices.first { bytes[$0] == 0xe9 && bytes[$0 &+ 5] == 0xcc && $0 > 0x100 })
        bytes[i] = 0xc3
        #expect(try KernelImage.parse(bytes).hypercallSites.isEmpty)
    }
}
