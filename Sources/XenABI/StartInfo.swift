import CXen
import GuestMemory

/// Encodes values into a byte image of the C struct `S`, at the offsets and
/// with the widths of `S`'s fields as Xen's header declares them: the key path
/// supplies both (`MemoryLayout<S>.offset(of:)` and the field's type), so no
/// layout is typed by hand here.
struct CStructEncoder<S> {
    private(set) var bytes = [UInt8](repeating: 0, count: MemoryLayout<S>.size)

    mutating func set<T: FixedWidthInteger & UnsignedInteger>(_ field: KeyPath<S, T>, _ value: T) {
        // A stored field of an imported C struct always has an offset; a
        // computed property would not, and none is used here.
        guard let offset = MemoryLayout<S>.offset(of: field) else {
            preconditionFailure("\(field) is not a stored field of \(S.self)")
        }
        for i in 0..<MemoryLayout<T>.size {
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i))
        }
    }

    static func get<T: FixedWidthInteger & UnsignedInteger>(_ field: KeyPath<S, T>, from bytes: [UInt8]) -> T? {
        guard let offset = MemoryLayout<S>.offset(of: field), offset + MemoryLayout<T>.size <= bytes.count else {
            return nil
        }
        var value: T = 0
        for i in 0..<MemoryLayout<T>.size { value |= T(bytes[offset + i]) << (8 * i) }
        return value
    }
}

/// `struct hvm_start_info` (Xen public/arch-x86/hvm/start_info.h), version 1:
/// what a PVH guest finds at EBX on entry (docs/misc/pvh.pandoc).
public struct HVMStartInfo: Sendable, Hashable {
    /// `XEN_HVM_START_MAGIC_VALUE` ("xEn3" with the 0x80 bit of "E" set).
    public static let magic = UInt32(XEN_HVM_START_MAGIC_VALUE)
    /// Version 1 adds the memory map fields.
    public static let currentVersion: UInt32 = 1
    /// `sizeof(struct hvm_start_info)`.
    public static let size = MemoryLayout<hvm_start_info>.size

    public var version: UInt32
    /// `SIF_*` flags.
    public var flags: UInt32
    /// `nr_modules`.
    public var moduleCount: UInt32
    /// `modlist_paddr`: an array of `hvm_modlist_entry` (0: none).
    public var moduleListAddress: GuestPhysicalAddress
    /// `cmdline_paddr`: a NUL-terminated command line (0: none).
    public var commandLineAddress: GuestPhysicalAddress
    /// `rsdp_paddr`: the ACPI RSDP (0: none).
    public var rsdpAddress: GuestPhysicalAddress
    /// `memmap_paddr`: an array of `hvm_memmap_table_entry` (0: none).
    public var memoryMapAddress: GuestPhysicalAddress
    /// `memmap_entries`.
    public var memoryMapEntryCount: UInt32

    public init(
        version: UInt32 = currentVersion, flags: UInt32 = 0, moduleCount: UInt32 = 0,
        moduleListAddress: GuestPhysicalAddress = GuestPhysicalAddress(0),
        commandLineAddress: GuestPhysicalAddress = GuestPhysicalAddress(0),
        rsdpAddress: GuestPhysicalAddress = GuestPhysicalAddress(0),
        memoryMapAddress: GuestPhysicalAddress = GuestPhysicalAddress(0), memoryMapEntryCount: UInt32 = 0
    ) {
        self.version = version
        self.flags = flags
        self.moduleCount = moduleCount
        self.moduleListAddress = moduleListAddress
        self.commandLineAddress = commandLineAddress
        self.rsdpAddress = rsdpAddress
        self.memoryMapAddress = memoryMapAddress
        self.memoryMapEntryCount = memoryMapEntryCount
    }

    /// The guest-visible bytes (`size` of them, little-endian, reserved zero).
    public func encoded() -> [UInt8] {
        var e = CStructEncoder<hvm_start_info>()
        e.set(\.magic, Self.magic)
        e.set(\.version, version)
        e.set(\.flags, flags)
        e.set(\.nr_modules, moduleCount)
        e.set(\.modlist_paddr, moduleListAddress.rawValue)
        e.set(\.cmdline_paddr, commandLineAddress.rawValue)
        e.set(\.rsdp_paddr, rsdpAddress.rawValue)
        e.set(\.memmap_paddr, memoryMapAddress.rawValue)
        e.set(\.memmap_entries, memoryMapEntryCount)
        return e.bytes
    }

    /// Decodes the bytes of a start_info; nil if too short or the magic is wrong.
    public init?(decoding bytes: [UInt8]) {
        typealias D = CStructEncoder<hvm_start_info>
        guard bytes.count >= Self.size, D.get(\.magic, from: bytes) == Self.magic,
              let version = D.get(\.version, from: bytes), let flags = D.get(\.flags, from: bytes),
              let modules = D.get(\.nr_modules, from: bytes), let modlist = D.get(\.modlist_paddr, from: bytes),
              let cmdline = D.get(\.cmdline_paddr, from: bytes), let rsdp = D.get(\.rsdp_paddr, from: bytes),
              let memmap = D.get(\.memmap_paddr, from: bytes), let entries = D.get(\.memmap_entries, from: bytes)
        else { return nil }
        self.init(version: version, flags: flags, moduleCount: modules,
                  moduleListAddress: GuestPhysicalAddress(modlist), commandLineAddress: GuestPhysicalAddress(cmdline),
                  rsdpAddress: GuestPhysicalAddress(rsdp), memoryMapAddress: GuestPhysicalAddress(memmap),
                  memoryMapEntryCount: entries)
    }

    /// Byte offset of a field of `struct hvm_start_info`, for tests and
    /// debuggers (nil for a non-field key path).
    public static func offset<T>(of field: KeyPath<hvm_start_info, T>) -> Int? {
        MemoryLayout<hvm_start_info>.offset(of: field)
    }
}

/// `struct hvm_modlist_entry`: one module (the initrd) passed to the guest.
public struct HVMModule: Sendable, Hashable {
    /// `sizeof(struct hvm_modlist_entry)`.
    public static let size = MemoryLayout<hvm_modlist_entry>.size

    /// `paddr`.
    public var address: GuestPhysicalAddress
    /// `size` in bytes.
    public var length: UInt64
    /// `cmdline_paddr`: the module's NUL-terminated command line (0: none).
    public var commandLineAddress: GuestPhysicalAddress

    public init(address: GuestPhysicalAddress, length: UInt64,
                commandLineAddress: GuestPhysicalAddress = GuestPhysicalAddress(0)) {
        self.address = address
        self.length = length
        self.commandLineAddress = commandLineAddress
    }

    public func encoded() -> [UInt8] {
        var e = CStructEncoder<hvm_modlist_entry>()
        e.set(\.paddr, address.rawValue)
        e.set(\.size, length)
        e.set(\.cmdline_paddr, commandLineAddress.rawValue)
        return e.bytes
    }

    public init?(decoding bytes: [UInt8]) {
        typealias D = CStructEncoder<hvm_modlist_entry>
        guard let a = D.get(\.paddr, from: bytes), let s = D.get(\.size, from: bytes),
              let c = D.get(\.cmdline_paddr, from: bytes) else { return nil }
        self.init(address: GuestPhysicalAddress(a), length: s, commandLineAddress: GuestPhysicalAddress(c))
    }

    public static func offset<T>(of field: KeyPath<hvm_modlist_entry, T>) -> Int? {
        MemoryLayout<hvm_modlist_entry>.offset(of: field)
    }
}

extension MemoryMapEntry {
    /// `sizeof(struct hvm_memmap_table_entry)`.
    public static let startInfoEntrySize = MemoryLayout<hvm_memmap_table_entry>.size

    /// The entry as `struct hvm_memmap_table_entry` (start_info.h); the
    /// `XEN_HVM_MEMMAP_TYPE_*` values equal `MemoryMapEntryType`'s raw values.
    public func encodedForStartInfo() -> [UInt8] {
        var e = CStructEncoder<hvm_memmap_table_entry>()
        e.set(\.addr, range.start.rawValue)
        e.set(\.size, range.length)
        e.set(\.type, type.rawValue)
        return e.bytes
    }

    /// Decodes a `struct hvm_memmap_table_entry`; nil if short or of unknown type.
    public init?(decodingStartInfoEntry bytes: [UInt8]) {
        typealias D = CStructEncoder<hvm_memmap_table_entry>
        guard let a = D.get(\.addr, from: bytes), let s = D.get(\.size, from: bytes),
              let t = D.get(\.type, from: bytes), let type = MemoryMapEntryType(rawValue: t) else { return nil }
        self.init(start: a, length: s, type: type)
    }

    public static func startInfoOffset<T>(of field: KeyPath<hvm_memmap_table_entry, T>) -> Int? {
        MemoryLayout<hvm_memmap_table_entry>.offset(of: field)
    }

    /// A table of entries, back to back.
    public static func encodeStartInfoTable(_ entries: [MemoryMapEntry]) -> [UInt8] {
        entries.flatMap { $0.encodedForStartInfo() }
    }
}
