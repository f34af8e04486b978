import GuestMemory

/// A minimal hardware-reduced ACPI 6.x table set for a PVH guest: RSDP (2.0+)
/// → XSDT → {FADT → DSDT, MADT}. Offsets follow the ACPI 6.5 specification
/// (§5.2.5.3 RSDP, §5.2.6 system description table header, §5.2.8 XSDT,
/// §5.2.9 FADT, §5.2.12 MADT); ACPI is not Xen ABI, so there is no C header to
/// take them from. Xen's own PVH domU tables likewise have only local APICs.
public struct ACPITables: Sendable, Hashable {
    /// Where the tables are placed; every pointer inside is absolute.
    public var base: GuestPhysicalAddress
    /// The tables as one blob, to copy to `base`.
    public var bytes: [UInt8]
    /// The RSDP (at `base`), for `hvm_start_info.rsdp_paddr`.
    public var rsdp: GuestPhysicalAddress { base }
    /// Addresses of the individual tables.
    public var xsdt, fadt, madt, dsdt: GuestPhysicalAddress

    /// Local interrupt controller address in the MADT (the xAPIC default).
    public static let localAPICAddress: UInt32 = 0xFEE0_0000
    /// FADT flags bit 20: HW_REDUCED_ACPI (ACPI 6.5 Table 5.10).
    public static let hardwareReducedFlag: UInt32 = 1 << 20
    static let oemID = Array("PVHVMM".utf8)
    static let oemTableID = Array("PVHGUEST".utf8)
    static let creatorID = Array("PVH ".utf8)

    /// The hardware-reduced sleep registers (FADT SLEEP_CONTROL_REG /
    /// SLEEP_STATUS_REG) live at these I/O ports; the VMM traps them. PVH
    /// has no legacy devices, so no port is taken from anything.
    public static let sleepControlPort: UInt16 = 0x600
    public static let sleepStatusPort: UInt16 = 0x601
    /// SLP_TYP for S5 in the DSDT's \_S5 package (any value works; the
    /// VMM compares with this one).
    public static let s5SleepType: UInt8 = 5

    /// `Name (\_S5, Package (4) { 5, 0, 0, 0 })` in AML (§19.6.90 Name,
    /// §20.2.5.4 DefPackage: PackageOp 0x12, PkgLength 7, NumElements 4,
    /// BytePrefix 0x0A 5, ZeroOp ×3). Without \_S5, and a sleep control
    /// register, Linux finds no way to power off and halts instead
    /// ("Power off not available"): Xen powers such a domain off when all
    /// its vCPUs halt with interrupts off (hvm_hlt → hvm_vcpu_down), which
    /// KVM's in-kernel HLT never tells userspace about.
    static let dsdtBody: [UInt8] = [0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x07, 0x04, 0x0A, s5SleepType, 0x00, 0x00, 0x00]

    /// A Generic Address Structure (§5.2.3.2) for one byte at an I/O port:
    /// space 1 (System I/O), width 8, offset 0, access size 1 (byte).
    static func ioPortRegister(_ port: UInt16) -> [UInt8] {
        [1, 8, 0, 1] + LittleEndianBytes.encode(UInt64(port))
    }

    static let rsdpSize = 36
    static let headerSize = 36
    /// ACPI 6.x FADT (revision 6, through Hypervisor Vendor Identity).
    static let fadtSize = 276

    /// Builds the tables for `vcpuCount` processors with APIC IDs 0..<count,
    /// to be placed at `base` (must be below 4 GiB: the DSDT's 32-bit
    /// pointer and the RSDT-less RSDP assume it).
    public init(base: GuestPhysicalAddress, vcpuCount: Int) {
        self.base = base
        // Layout: RSDP | XSDT | FADT | MADT | DSDT, each 16-byte aligned.
        func align16(_ n: Int) -> Int { (n + 15) & ~15 }
        let madtBody = Self.madtEntries(vcpuCount: vcpuCount)
        let xsdtOff = align16(Self.rsdpSize)
        let xsdtLen = Self.headerSize + 2 * 8
        let fadtOff = align16(xsdtOff + xsdtLen)
        let madtOff = align16(fadtOff + Self.fadtSize)
        let madtLen = Self.headerSize + 8 + madtBody.count
        let dsdtOff = align16(madtOff + madtLen)
        let total = dsdtOff + Self.headerSize + Self.dsdtBody.count
        let b = base.rawValue
        xsdt = GuestPhysicalAddress(b + UInt64(xsdtOff))
        fadt = GuestPhysicalAddress(b + UInt64(fadtOff))
        madt = GuestPhysicalAddress(b + UInt64(madtOff))
        dsdt = GuestPhysicalAddress(b + UInt64(dsdtOff))

        var blob = [UInt8](repeating: 0, count: total)
        func put(_ bytes: [UInt8], at offset: Int) { blob.replaceSubrange(offset..<offset + bytes.count, with: bytes) }
        func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { LittleEndianBytes.encode(v) }

        // RSDP (§5.2.5.3): signature, checksum over the first 20 bytes, OEMID,
        // revision 2, RsdtAddress 0 (XSDT only), length, XsdtAddress,
        // extended checksum over all 36 bytes.
        var rsdp = [UInt8](repeating: 0, count: Self.rsdpSize)
        rsdp.replaceSubrange(0..<8, with: Array("RSD PTR ".utf8))
        rsdp.replaceSubrange(9..<15, with: Self.oemID)
        rsdp[15] = 2
        rsdp.replaceSubrange(20..<24, with: le(UInt32(Self.rsdpSize)))
        rsdp.replaceSubrange(24..<32, with: le(xsdt.rawValue))
        rsdp[8] = Self.checksum(rsdp[0..<20])
        rsdp[32] = Self.checksum(rsdp[0..<36])
        put(rsdp, at: 0)

        // XSDT (§5.2.8): 64-bit pointers to the FADT and MADT.
        put(Self.table("XSDT", revision: 1, body: le(fadt.rawValue) + le(madt.rawValue)), at: xsdtOff)

        // FADT (§5.2.9), hardware-reduced: no PM blocks, no SCI, no FACS.
        var fadtBody = [UInt8](repeating: 0, count: Self.fadtSize - Self.headerSize)
        func fadtPut(_ bytes: [UInt8], _ tableOffset: Int) {
            let o = tableOffset - Self.headerSize
            fadtBody.replaceSubrange(o..<o + bytes.count, with: bytes)
        }
        fadtPut(le(UInt32(truncatingIfNeeded: dsdt.rawValue)), 40) // DSDT
        fadtPut(le(Self.hardwareReducedFlag), 112)                 // Flags
        fadtPut([5], 131)                                          // FADT minor version (6.5)
        fadtPut(le(dsdt.rawValue), 140)                            // X_DSDT
        // SLEEP_CONTROL_REG and SLEEP_STATUS_REG (ACPI 5.0+, §4.8.3.7):
        // what a hardware-reduced platform powers off through (S5).
        fadtPut(Self.ioPortRegister(Self.sleepControlPort), 244)
        fadtPut(Self.ioPortRegister(Self.sleepStatusPort), 256)
        put(Self.table("FACP", revision: 6, body: fadtBody), at: fadtOff)

        // MADT (§5.2.12): local interrupt controller address, flags 0 (no
        // dual 8259), then one processor entry per vCPU.
        put(Self.table("APIC", revision: 5, body: le(Self.localAPICAddress) + le(UInt32(0)) + madtBody), at: madtOff)

        // DSDT (§5.2.11.1): the \_S5 sleep-type package, nothing else.
        put(Self.table("DSDT", revision: 2, body: Self.dsdtBody), at: dsdtOff)
        bytes = blob
    }

    /// The span the tables occupy.
    public var range: GuestPhysicalRange { GuestPhysicalRange(start: base, length: UInt64(bytes.count)) }

    /// Processor Local APIC (type 0, 8 bytes: UID, APIC ID, flags bit 0
    /// Enabled) for APIC IDs below 255; Processor Local x2APIC (type 9, 16
    /// bytes) above, where the 8-bit ID field cannot hold the ID.
    static func madtEntries(vcpuCount: Int) -> [UInt8] {
        var out: [UInt8] = []
        for id in 0..<max(0, vcpuCount) {
            if id < 255 {
                out += [0, 8, UInt8(id), UInt8(id)] + LittleEndianBytes.encode(UInt32(1))
            } else {
                out += [9, 16, 0, 0] + LittleEndianBytes.encode(UInt32(id)) + LittleEndianBytes.encode(UInt32(1))
                    + LittleEndianBytes.encode(UInt32(id))
            }
        }
        return out
    }

    /// Size of the blob `init(base:vcpuCount:)` produces.
    public static func size(vcpuCount: Int) -> Int {
        ACPITables(base: GuestPhysicalAddress(0), vcpuCount: vcpuCount).bytes.count
    }

    /// A system description table: the 36-byte header (§5.2.6) with the
    /// checksum making all bytes sum to zero, then `body`.
    static func table(_ signature: String, revision: UInt8, body: [UInt8]) -> [UInt8] {
        var t = [UInt8](repeating: 0, count: headerSize)
        t.replaceSubrange(0..<4, with: Array(signature.utf8.prefix(4)))
        t.replaceSubrange(4..<8, with: LittleEndianBytes.encode(UInt32(headerSize + body.count)))
        t[8] = revision
        t.replaceSubrange(10..<16, with: oemID)
        t.replaceSubrange(16..<24, with: oemTableID)
        t.replaceSubrange(24..<28, with: LittleEndianBytes.encode(UInt32(1)))
        t.replaceSubrange(28..<32, with: creatorID)
        t.replaceSubrange(32..<36, with: LittleEndianBytes.encode(UInt32(1)))
        t += body
        t[9] = checksum(t[...])
        return t
    }

    /// The byte that makes `bytes` (with that byte counted as zero) sum to 0 mod 256.
    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt8 {
        0 &- bytes.reduce(0, &+)
    }
}

/// A write to the hardware-reduced sleep control register (ACPI 6.5
/// §4.8.3.7: bits 2-4 SLP_TYPx, bit 5 SLP_EN). Pure, for the VMM.
public enum ACPISleepControl: Equatable, Sendable {
    /// SLP_EN with the \_S5 sleep type: power off.
    case powerOff
    /// SLP_EN with another sleep type (none is offered): ignored.
    case unsupportedSleep(type: UInt8)
    /// No SLP_EN: nothing happens.
    case none

    public init(written value: UInt8) {
        guard value & 0x20 != 0 else { self = .none; return }
        let type = (value >> 2) & 0x7
        self = type == ACPITables.s5SleepType ? .powerOff : .unsupportedSleep(type: type)
    }
}
