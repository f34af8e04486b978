import GuestMemory
import PVHBoot
import Testing
import TestSupport
import XenABI

func bootError(_ body: () throws(BootError) -> Void) -> BootError? {
    do {
        try body()
        return nil
    } catch {
        return error
    }
}

@Suite("start_info wire encoding")
struct StartInfoTests {
    @Test("field offsets and sizes come from start_info.h")
    func layout() {
        // Golden values for x86 (start_info.h: "all fields naturally aligned").
        #expect(HVMStartInfo.size == 56)
        #expect(HVMStartInfo.offset(of: \.magic) == 0)
        #expect(HVMStartInfo.offset(of: \.version) == 4)
        #expect(HVMStartInfo.offset(of: \.flags) == 8)
        #expect(HVMStartInfo.offset(of: \.nr_modules) == 12)
        #expect(HVMStartInfo.offset(of: \.modlist_paddr) == 16)
        #expect(HVMStartInfo.offset(of: \.cmdline_paddr) == 24)
        #expect(HVMStartInfo.offset(of: \.rsdp_paddr) == 32)
        #expect(HVMStartInfo.offset(of: \.memmap_paddr) == 40)
        #expect(HVMStartInfo.offset(of: \.memmap_entries) == 48)
        #expect(HVMModule.size == 32)
        #expect(HVMModule.offset(of: \.cmdline_paddr) == 16)
        #expect(MemoryMapEntry.startInfoEntrySize == 24)
        #expect(MemoryMapEntry.startInfoOffset(of: \.type) == 16)
    }

    @Test("encoding: magic, version, fields little-endian")
    func encode() {
        let s = HVMStartInfo(moduleCount: 1, moduleListAddress: GuestPhysicalAddress(0x1122_3344_5566_7788),
                             commandLineAddress: GuestPhysicalAddress(0x2000), rsdpAddress: GuestPhysicalAddress(0xE0000),
                             memoryMapAddress: GuestPhysicalAddress(0x3000), memoryMapEntryCount: 5)
        let b = s.encoded()
        #expect(Array(b[0..<4]) == [0x78, 0xc5, 0x6e, 0x33]) // 0x336ec578
        #expect(Array(b[4..<8]) == [1, 0, 0, 0])
        #expect(Array(b[16..<24]) == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
        #expect(Array(b[48..<56]) == [5, 0, 0, 0, 0, 0, 0, 0])
        #expect(HVMStartInfo(decoding: b) == s)
        var badMagic = b
        badMagic[0] ^= 1
        #expect(HVMStartInfo(decoding: badMagic) == nil)
        let e = MemoryMapEntry(start: 0x10_0000, length: 0x20_0000, type: .reserved)
        #expect(e.encodedForStartInfo() == ELFBuilder.le(UInt64(0x10_0000)) + ELFBuilder.le(UInt64(0x20_0000)) + [2, 0, 0, 0, 0, 0, 0, 0])
        #expect(MemoryMapEntry(decodingStartInfoEntry: e.encodedForStartInfo()) == e)
    }
}

@Suite("PVH loader")
struct LoaderTests {
    static let mib: UInt64 = 1 << 20

    func readStartInfo(_ m: MockGuestMemory, _ info: BootInfo) throws -> HVMStartInfo {
        try #require(HVMStartInfo(decoding: try m.read(at: info.startInfo, count: HVMStartInfo.size)))
    }

    func readCString(_ m: MockGuestMemory, _ a: GuestPhysicalAddress) throws -> String {
        var bytes: [UInt8] = []
        var p = a
        while true {
            let b = try m.load(UInt8.self, at: p)
            if b == 0 { break }
            bytes.append(b)
            p = GuestPhysicalAddress(p.rawValue + 1)
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test("image at its p_paddr, start_info, memmap, cmdline, initrd module")
    func fullBoot() throws {
        let fake = FakeLinuxKernel(shape: .ksymtabLea)
        let kernel = try KernelImage.parse(fake.bytes)
        let m = MockGuestMemory(size: Int(64 * Self.mib))
        let initrd = (0..<10000).map { UInt8(truncatingIfNeeded: $0 * 31) }
        let config = BootConfiguration(commandLine: "console=hvc0 root=/dev/xvda1", initrd: initrd, vcpuCount: 3)
        let info = try PVHLoader.load(kernel, configuration: config, into: m)

        #expect(info.relocationDelta == 0)
        #expect(info.entry == GuestPhysicalAddress(0x100_0000))
        #expect(info.kernelRange.start == GuestPhysicalAddress(0x100_0000))
        // Segment bytes and zeroed bss.
        #expect(try m.read(at: GuestPhysicalAddress(0x100_0000 + 0x280), count: 3) == [0x0f, 0x01, 0xd9])
        #expect(try m.read(at: info.hypercallSites.amd?.physicalAddress ?? GuestPhysicalAddress(0), count: 3) == [0x0f, 0x01, 0xd9])

        let si = try readStartInfo(m, info)
        #expect(si.version == 1)
        #expect(try m.load(UInt32.self, at: info.startInfo) == 0x336e_c578)
        #expect(si.rsdpAddress == info.rsdp)
        #expect(si.rsdpAddress == GuestPhysicalAddress(0xE0000))
        #expect(try readCString(m, si.commandLineAddress) == "console=hvc0 root=/dev/xvda1")

        // Module list → initrd bytes, page-aligned, below 4 GiB, high in RAM.
        #expect(si.moduleCount == 1)
        let mod = try #require(HVMModule(decoding: try m.read(at: si.moduleListAddress, count: HVMModule.size)))
        #expect(mod.length == UInt64(initrd.count))
        #expect(mod.address.rawValue % 4096 == 0)
        #expect(mod.address.rawValue > 32 * Self.mib)
        #expect(mod.commandLineAddress == GuestPhysicalAddress(0))
        #expect(try m.read(at: mod.address, count: initrd.count) == initrd)

        // Memory map as written = as returned; covers RAM; ACPI carved out.
        let entries = try (0..<Int(si.memoryMapEntryCount)).map { i in
            try #require(MemoryMapEntry(decodingStartInfoEntry: try m.read(
                at: GuestPhysicalAddress(si.memoryMapAddress.rawValue + UInt64(i * MemoryMapEntry.startInfoEntrySize)),
                count: MemoryMapEntry.startInfoEntrySize)))
        }
        #expect(entries == info.memoryMap)
        #expect(entries.reduce(0) { $0 + $1.range.length } == 64 * Self.mib)
        #expect(entries.contains { $0.type == .acpiReclaimable && $0.range.start == GuestPhysicalAddress(0xE0000) })
        for (a, b) in zip(entries, entries.dropFirst()) { #expect(a.range.end <= b.range.start.rawValue) }

        // Nothing overlaps.
        var placed = [info.kernelRange, info.bootDataRange]
        placed += [info.initrd, info.acpiRange].compactMap { $0 }
        for (i, a) in placed.enumerated() { for b in placed[(i + 1)...] { #expect(!a.overlaps(b), "\(a) vs \(b)") } }
    }

    @Test("ACPI tables: checksums, pointers, MADT processors, HW-reduced FADT", arguments: [1, 4, 300])
    func acpi(vcpus: Int) throws {
        let kernel = try KernelImage.parse(simpleELF().build())
        let m = MockGuestMemory(size: Int(64 * Self.mib))
        let info = try PVHLoader.load(kernel, configuration: BootConfiguration(vcpuCount: vcpus), into: m)
        let rsdpAddr = try #require(info.rsdp)
        let rsdp = try m.read(at: rsdpAddr, count: 36)
        #expect(Array(rsdp[0..<8]) == Array("RSD PTR ".utf8))
        #expect(rsdp[0..<20].reduce(0, &+) == 0)
        #expect(rsdp.reduce(0, &+) == 0)
        #expect(rsdp[15] == 2)
        func table(_ a: UInt64) throws -> [UInt8] {
            let len = try m.load(UInt32.self, at: GuestPhysicalAddress(a + 4))
            let t = try m.read(at: GuestPhysicalAddress(a), count: Int(len))
            #expect(t.reduce(0, &+) == 0, "checksum of \(String(decoding: t[0..<4], as: UTF8.self))")
            return t
        }
        func u32(_ t: [UInt8], _ o: Int) -> UInt32 { LittleEndianBytes.decode(UInt32.self, from: t[o..<o + 4]) }
        func u64(_ t: [UInt8], _ o: Int) -> UInt64 { LittleEndianBytes.decode(UInt64.self, from: t[o..<o + 8]) }
        let xsdt = try table(LittleEndianBytes.decode(UInt64.self, from: rsdp[24..<32]))
        #expect(Array(xsdt[0..<4]) == Array("XSDT".utf8))
        #expect(xsdt.count == 36 + 16)
        let fadt = try table(u64(xsdt, 36))
        let madt = try table(u64(xsdt, 44))
        #expect(Array(fadt[0..<4]) == Array("FACP".utf8))
        #expect(fadt.count == 276)
        #expect(fadt[8] == 6)
        #expect(u32(fadt, 112) & (1 << 20) != 0)
        #expect(UInt64(u32(fadt, 40)) == u64(fadt, 140))
        let dsdt = try table(u64(fadt, 140))
        #expect(Array(dsdt[0..<4]) == Array("DSDT".utf8))
        // The AML body is exactly Name (\_S5, Package (4) { 5, 0, 0, 0 }).
        #expect(Array(dsdt[36...]) == [0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00])
        // SLEEP_CONTROL_REG / SLEEP_STATUS_REG: System I/O, 8 bits, byte access, at the VMM's ports.
        #expect(Array(fadt[244..<248]) == [1, 8, 0, 1])
        #expect(u64(fadt, 248) == UInt64(ACPITables.sleepControlPort))
        #expect(Array(fadt[256..<260]) == [1, 8, 0, 1])
        #expect(u64(fadt, 260) == UInt64(ACPITables.sleepStatusPort))
        #expect(Array(madt[0..<4]) == Array("APIC".utf8))
        #expect(u32(madt, 36) == 0xFEE0_0000)
        // Walk the MADT's interrupt controller structures.
        var ids: [UInt32] = []
        var o = 44
        while o < madt.count {
            let type = madt[o], len = Int(madt[o + 1])
            #expect(len > 0)
            if type == 0 {
                #expect(len == 8)
                #expect(u32(madt, o + 4) & 1 == 1)
                ids.append(UInt32(madt[o + 3]))
            } else if type == 9 {
                #expect(len == 16)
                ids.append(u32(madt, o + 4))
            }
            o += max(len, 1)
        }
        #expect(ids == (0..<UInt32(vcpus)).map { $0 })
        #expect(madt[44...].filter { _ in true }.count > 0)
        #expect(info.memoryMap.contains { $0.type == .acpiReclaimable && $0.range.contains(rsdpAddr) })
    }

    @Test("an image at physical 0: boot data and ACPI above it")
    func imageAtZero() throws {
        let b = simpleELF(base: 0, size: 0x12_0000, bss: 0x1000, notes: ELFBuilder.pvhEntryNote(0x100))
        let kernel = try KernelImage.parse(b.build())
        let m = MockGuestMemory(size: Int(8 * Self.mib))
        let info = try PVHLoader.load(kernel, configuration: BootConfiguration(commandLine: "x", initrd: [1, 2, 3]), into: m)
        #expect(info.kernelRange == GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 0x12_1000))
        #expect(info.entry == GuestPhysicalAddress(0x100))
        #expect(info.startInfo.rawValue >= 0x12_1000)
        #expect(try #require(info.rsdp).rawValue >= 0x12_1000)
        #expect(try #require(info.initrd).start.rawValue >= 0x12_1000)
        #expect(try m.read(at: GuestPhysicalAddress(0), count: 4) == Array(b.segments[0].data.prefix(4)))
        #expect(try readStartInfo(m, info).memoryMapEntryCount == UInt32(info.memoryMap.count))
    }

    @Test("relocation within PHYS32_RELOC bounds; entry and sites shift together")
    func relocation() throws {
        // Preferred at 16 MiB, but the guest has RAM only at [0, 12 MiB) and [32, 64) MiB.
        let fake = FakeLinuxKernel(shape: .ksymtabLea, relocation: [0x20_0000, 0x20_0000, 0x3fff_ffff])
        let kernel = try KernelImage.parse(fake.bytes)
        let m = MockGuestMemory(ranges: [
            GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 12 * Self.mib),
            GuestPhysicalRange(start: GuestPhysicalAddress(32 * Self.mib), length: 32 * Self.mib),
        ])
        let info = try PVHLoader.load(kernel, configuration: BootConfiguration(), into: m)
        #expect(info.kernelRange.start == GuestPhysicalAddress(0x20_0000)) // lowest 2 MiB-aligned ≥ min
        #expect(info.relocationDelta == Int64(0x20_0000) - Int64(0x100_0000))
        #expect(info.entry == GuestPhysicalAddress(0x20_0000))
        let amd = try #require(info.hypercallSites.amd)
        #expect(amd.physicalAddress == GuestPhysicalAddress(0x20_0000 + 0x280))
        #expect(amd.virtualAddress == GuestVirtualAddress(fake.amdSite))
        #expect(try m.read(at: amd.physicalAddress, count: 3) == [0x0f, 0x01, 0xd9])

        // min above all RAM → impossible.
        let high = try KernelImage.parse(FakeLinuxKernel(shape: .none, relocation: [0x1000, 0x8000_0000]).bytes)
        #expect(bootError { () throws(BootError) in _ = try PVHLoader.load(high, configuration: BootConfiguration(), into: m) }
                == .relocationImpossible(imageSize: high.physicalRange.length, try #require(high.relocation)))
    }

    @Test("images that do not fit")
    func doesNotFit() throws {
        let kernel = try KernelImage.parse(simpleELF().build()) // at 16 MiB, no reloc note
        let small = MockGuestMemory(size: Int(8 * Self.mib))
        let e = bootError { () throws(BootError) in _ = try PVHLoader.load(kernel, configuration: BootConfiguration(), into: small) }
        #expect(e == .imageDoesNotFit(kernel.physicalRange))
        let tiny = MockGuestMemory(size: 0x2000)
        let e2 = bootError { () throws(BootError) in _ = try PVHLoader.load(kernel, configuration: BootConfiguration(), into: tiny) }
        #expect(e2 == .imageLargerThanMemory(imageSize: 0x4000, memorySize: 0x2000))
        #expect(e2?.description.contains("RAM") == true)
    }

    @Test("initrd too large; bad vCPU count; NUL in the command line")
    func otherErrors() throws {
        let kernel = try KernelImage.parse(simpleELF().build())
        let m = MockGuestMemory(size: Int(20 * Self.mib))
        let big = [UInt8](repeating: 1, count: Int(17 * Self.mib)) // more than either side of the image
        #expect(bootError { () throws(BootError) in
            _ = try PVHLoader.plan(kernel, configuration: BootConfiguration(initrd: big), ram: m.regions)
        } == .initrdDoesNotFit(size: 17 * Self.mib))
        #expect(bootError { () throws(BootError) in
            _ = try PVHLoader.plan(kernel, configuration: BootConfiguration(vcpuCount: 0), ram: m.regions)
        } == .badVCPUCount(0))
        #expect(bootError { () throws(BootError) in
            _ = try PVHLoader.plan(kernel, configuration: BootConfiguration(commandLine: "a\u{0}b"), ram: m.regions)
        } == .commandLineContainsNUL)
    }

    @Test("VMM reservations are avoided and listed")
    func reservations() throws {
        let kernel = try KernelImage.parse(simpleELF().build())
        let reserved = MemoryMapEntry(start: 0xE0000, length: 0x20000, type: .reserved)
        let plan = try PVHLoader.plan(kernel, configuration: BootConfiguration(reservedRanges: [reserved]),
                                      ram: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 64 * Self.mib)])
        #expect(plan.memoryMap.contains(reserved))
        let acpi = try #require(plan.acpiRange)
        #expect(!acpi.overlaps(reserved.range))
        #expect(!plan.bootDataRange.overlaps(reserved.range))
        #expect(plan.memoryMap.filter { $0.type == .ram }.allSatisfy { !$0.range.overlaps(reserved.range) && !$0.range.overlaps(acpi) })
    }
}

@Suite("ACPI sleep control writes")
struct ACPISleepControlTests {
    @Test("SLP_EN with \\_S5's type powers off; another type or no SLP_EN does nothing")
    func decode() {
        #expect(ACPISleepControl(written: 5 << 2 | 0x20) == .powerOff)   // what Linux's acpi_hw_extended_sleep writes
        #expect(ACPISleepControl(written: 5 << 2) == .none)
        #expect(ACPISleepControl(written: 3 << 2 | 0x20) == .unsupportedSleep(type: 3))
        #expect(ACPISleepControl(written: 0x80) == .none)                // WAK_STS-style bits alone
        #expect(ACPISleepControl(written: 0xFF) == .unsupportedSleep(type: 7))
    }
}
