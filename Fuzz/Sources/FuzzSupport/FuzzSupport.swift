// What every fuzz target shares: libFuzzer's input as bytes, the process's
// main, and a reader that turns the input into choices. A target file is
// then its two C entry points (names libFuzzer and SwiftPM fix, so they
// cannot live here) and its one-input function.
import BlockFrontend
import CFuzzerDriver
#if canImport(Glibc)
import Glibc
#endif
import GrantTables
import GuestMemory
import XenABI

/// libFuzzer's input for one call, copied into an array: the only pointer a
/// target sees.
public func fuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data, size > 0 else { return [] }
    // SAFETY: libFuzzer passes `size` readable bytes at `data`, valid for this call.
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// A target's `LLVMFuzzerTestOneInput`: runs `body` on the input's bytes.
public func fuzzBytes(_ data: UnsafePointer<UInt8>?, _ size: Int, _ body: ([UInt8]) -> Void) -> CInt {
    body(fuzzInput(data, size))
    return 0
}

/// The same, with the input as a `FuzzReader`.
public func fuzzChoices(_ data: UnsafePointer<UInt8>?, _ size: Int, _ body: (inout FuzzReader) -> Void) -> CInt {
    var reader = FuzzReader(fuzzInput(data, size))
    body(&reader)
    return 0
}

/// A target's `main`: libFuzzer's driver with the process's arguments.
public func fuzzDriverMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    pvh_fuzz_main(argc, argv)
}

/// Reads choices off the input; past its end every read is zero, so every
/// input is a complete case.
public struct FuzzReader {
    public var bytes: ArraySlice<UInt8>
    public init(_ bytes: [UInt8]) { self.bytes = bytes[...] }
    public var isEmpty: Bool { bytes.isEmpty }
    public mutating func byte() -> UInt8 { bytes.popFirst() ?? 0 }
    public mutating func bool() -> Bool { byte() & 1 == 1 }
    public mutating func u16() -> UInt16 { UInt16(byte()) | UInt16(byte()) << 8 }
    public mutating func u32() -> UInt32 { UInt32(u16()) | UInt32(u16()) << 16 }
    public mutating func u64() -> UInt64 { UInt64(u32()) | UInt64(u32()) << 32 }
    /// A number below `bound` (bound > 0) from one or two bytes.
    public mutating func below(_ bound: Int) -> Int {
        bound <= 256 ? Int(byte()) % bound : Int(u16()) % bound
    }
    /// The next `count` bytes (fewer at the end of the input).
    public mutating func take(_ count: Int) -> [UInt8] {
        let n = min(max(count, 0), bytes.count)
        defer { bytes.removeFirst(n) }
        return Array(bytes.prefix(n))
    }
    /// The next `count` bytes, zero-padded to exactly `count`.
    public mutating func exactly(_ count: Int) -> [UInt8] {
        let b = take(count)
        return b + [UInt8](repeating: 0, count: count - b.count)
    }
    /// What is left.
    public mutating func rest() -> [UInt8] { take(bytes.count) }
}

/// A fake frontend's guest as the device fuzzers drive it: data pages
/// granted to the backend, a canary page nothing grants, and the grant
/// table's first frame, whose v1 entries (grant_table.h grant_entry_v1:
/// flags, domid, frame) the input rewrites.
public struct FuzzedGuest {
    public let guest: FrontendGuest
    public let first: GuestFrameNumber
    public let refs: [GrantReference]
    public let canary: GuestFrameNumber
    public let table: GuestFrameNumber
    public static let canaryByte: UInt8 = 0xa5

    /// `pages` data pages, every `readOnlyEvery`-th granted read-only (0: none).
    public init(_ guest: FrontendGuest, pages: Int, readOnlyEvery: Int = 0) throws {
        self.guest = guest
        let first = guest.allocatePages(pages)
        self.first = first
        canary = guest.allocatePages(1)
        refs = try (0..<pages).map {
            try guest.grant(GuestFrameNumber(first.rawValue + UInt64($0)), readOnly: readOnlyEvery > 0 && $0 % readOnlyEvery == 0)
        }
        try guest.memory.fill(at: guest.address(canary), count: 4096, with: Self.canaryByte)
        table = try guest.grants.setupTable(domain: .`self`, frames: 1)[0]
    }

    private func entryAddress(_ ref: Int) -> GuestPhysicalAddress { GuestPhysicalAddress(table.rawValue << 12 + UInt64(ref) * 8) }

    /// Rewrites up to 7 entries among the first `span` after the reserved
    /// ones: raw words, or a permit-access entry with fuzzed flags and
    /// domid for a data page, the canary, `extraFrames` or an absent frame.
    public func rewriteGrants(_ r: inout FuzzReader, span: Int, extraFrames: [GuestFrameNumber] = []) throws {
        let frames = [canary.rawValue, table.rawValue, 0, 0xffff_ffff] + extraFrames.map(\.rawValue)
        for _ in 0..<r.below(8) {
            let ref = 8 + r.below(span)
            let entry: UInt64
            if r.bool() {
                entry = r.u64()
            } else {
                let f = r.byte()
                let frame = f < 0x80 ? first.rawValue + UInt64(f) % UInt64(refs.count) : frames[Int(f) % frames.count]
                entry = UInt64(r.u16() & 0x3f | 1) | UInt64(r.below(3)) << 16 | frame << 32
            }
            try guest.memory.store(entry, at: entryAddress(ref))
        }
    }

    /// Whether any entry of the table's first frame names `frame` (the
    /// frame word of grant_entry_v1, at offset 4 of each 8 bytes). One read
    /// of the page, not 512 loads: this runs for every input.
    public func granted(_ frame: GuestFrameNumber) -> Bool {
        guard let page = try? guest.page(table) else { return false }
        let want = UInt32(truncatingIfNeeded: frame.rawValue)
        return stride(from: 4, to: 4096, by: 8).contains { at in
            UInt32(page[at]) | UInt32(page[at + 1]) << 8 | UInt32(page[at + 2]) << 16 | UInt32(page[at + 3]) << 24 == want
        }
    }

    /// Fails unless the canary page is intact (or some entry named it).
    public func checkCanary(_ target: String) throws {
        guard !granted(canary) else { return }
        let page = try guest.page(canary)
        precondition(sameBytes(page, Self.canaryPage), "fuzz-\(target): a page nothing granted was written")
    }

    private static let canaryPage = [UInt8](repeating: canaryByte, count: 4096)
}

/// The guest as a device fuzzer left it once its device connected, put
/// back after every input, so that a target can keep one connection (the
/// xenbus handshake, the grant table, the ring mappings) for many inputs
/// and each input still starts from the same guest: the pages saved here
/// (the rings, data pages, canary, grant table, shared_info: every page the
/// set-up wrote) get their bytes back; any other page an entry of the grant
/// table's first frame names (the input's entries may grant any frame, and
/// the backend may write it) was all zeros then and is zeroed again.
public struct GuestCheckpoint {
    private let fuzzed: FuzzedGuest
    private let pageCount: UInt64
    private let saved: [UInt64: [UInt8]]
    private static let zeroPage = [UInt8](repeating: 0, count: 4096)

    /// Saves `frames`. With `checkingTheRest`, fails unless every other
    /// page of the guest's `memoryBytes` is zero (else putting back only
    /// these would not restore the guest); that look at every page costs
    /// more than many inputs, so only PVH_FUZZ_VERIFY runs take it.
    public init(_ fuzzed: FuzzedGuest, memoryBytes: Int, frames: [GuestFrameNumber], checkingTheRest: Bool) throws {
        self.fuzzed = fuzzed
        pageCount = UInt64(memoryBytes / 4096)
        var saved: [UInt64: [UInt8]] = [:]
        for f in frames + [fuzzed.table, fuzzed.canary] { saved[f.rawValue] = try fuzzed.guest.page(f) }
        self.saved = saved
        for f in 0..<pageCount where checkingTheRest && saved[f] == nil {
            let page = try fuzzed.guest.page(GuestFrameNumber(f))
            precondition(sameBytes(page, Self.zeroPage), "fuzz: guest frame \(f) was written during set-up but is not checkpointed")
        }
    }

    /// After an input: when the device was `rewound`, checks that only
    /// the connection's `connectionHolds` grant holds are left and puts the
    /// guest back (true); otherwise destroys the device and checks that no
    /// hold is left (false: the caller makes a new device).
    public func keepOrDestroy(_ target: String, rewound: Bool, connectionHolds: Int, destroy: () -> Void) throws -> Bool {
        let grants = fuzzed.guest.grants
        if rewound {
            precondition(grants.holdCount == connectionHolds,
                         "fuzz-\(target): \(grants.holdCount - connectionHolds) grant holds left after the input")
            try restore()
            return true
        }
        destroy()
        precondition(grants.holdCount == 0, "fuzz-\(target): \(grants.holdCount) grant holds left after destroy")
        return false
    }

    /// Puts the guest back: the frames the table names first (read before
    /// the table itself is put back), then the saved pages.
    public func restore() throws {
        let table = try fuzzed.guest.page(fuzzed.table)
        var named = Set<UInt64>()
        for at in stride(from: 4, to: 4096, by: 8) {
            let frame = UInt64(table[at]) | UInt64(table[at + 1]) << 8 | UInt64(table[at + 2]) << 16 | UInt64(table[at + 3]) << 24
            if frame < pageCount, saved[frame] == nil { named.insert(frame) }
        }
        for f in named { try fuzzed.guest.fill(GuestFrameNumber(f), Self.zeroPage) }
        for (f, bytes) in saved { try fuzzed.guest.fill(GuestFrameNumber(f), bytes) }
    }
}

/// Whether `a` and `b` hold the same bytes: memcmp, which libFuzzer's
/// instrumentation does not see, where comparing in Swift would call its
/// comparison hook once a byte (most of a target's time, for a page).
public func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    return a.withUnsafeBytes { x in
        b.withUnsafeBytes { y in
            // SAFETY: both buffers are valid for `count` bytes for the
            // closures' duration (nil only when empty, then count is 0).
            guard let p = x.baseAddress, let q = y.baseAddress else { return true }
            return memcmp(p, q, x.count) == 0
        }
    }
}

/// `bytes` of fresh guest RAM from address 0, host-mapped as a domain's is
/// (so no target needs TestSupport's mock memory).
public func guestRAM(_ bytes: Int) -> MappedGuestMemory {
    do {
        return try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: UInt64(bytes))])
    } catch {
        preconditionFailure("fuzz: cannot map \(bytes) bytes of guest RAM: \(error)")
    }
}
