@testable import GrantTables
import GuestMemory
import VMM
import XenABI

/// One grant the host test holds: the VMM's `GrantMapping` (~Copyable) in
/// a box, so that it can wait between console lines; unmapping drops it.
final class HeldGrantMapping: @unchecked Sendable {
    let ref: UInt32
    // Touched only from the test's line queue.
    var mapping: GrantMapping?
    init(ref: UInt32, mapping: consuming GrantMapping) {
        self.ref = ref
        self.mapping = consume mapping
    }
}

/// The backend-side grant operations GrantTableScenarioTests needs, over
/// the VMM's `GrantTable` (`Domain.grants`): map (a hold: GTF_reading, and
/// GTF_writing for write access, until released), access through it, a
/// one-shot copy into a grant, unmap, and the GTF_reading/GTF_writing bits
/// as they are in guest memory (v1: the entry's flags, v2: its status word).
struct HeldGrantBackend {
    let table: GrantTable

    init(domain: Domain) throws { table = domain.grants }

    func map(_ ref: UInt32, writable: Bool) throws -> HeldGrantMapping {
        let m = try table.map(GrantReference(rawValue: ref), access: writable ? .write : .read)
        return HeldGrantMapping(ref: ref, mapping: m)
    }

    func unmap(_ held: HeldGrantMapping) throws {
        guard let m = held.mapping.take() else { throw GrantHostError("grant \(held.ref) unmapped twice") }
        m.release()
    }

    func write(_ held: HeldGrantMapping, _ bytes: [UInt8], at offset: Int) throws {
        guard (try held.mapping?.write(bytes, at: offset)) != nil else { throw GrantHostError("grant \(held.ref) not mapped") }
    }

    func read(_ held: HeldGrantMapping, count: Int, at offset: Int) throws -> [UInt8] {
        guard let bytes = try held.mapping?.read(offset: offset, count: count) else {
            throw GrantHostError("grant \(held.ref) not mapped")
        }
        return bytes
    }

    /// The granted bytes of `ref` as (offset in its page)..<(+ length), from a short read hold.
    func window(of ref: UInt32) throws -> Range<Int> {
        let m = try table.map(GrantReference(rawValue: ref), access: .read)
        let start = Int(m.region.start.rawValue & 0xfff)
        let range = start..<(start + m.count)
        m.release()
        return range
    }

    /// Writes `bytes` at `offset` of the granted bytes (a one-shot write hold).
    func copy(_ bytes: [UInt8], to ref: UInt32, at offset: Int) throws {
        try table.copy(to: GrantReference(rawValue: ref), bytes, at: offset)
    }

    /// GTF_reading | GTF_writing of `ref` in guest memory now.
    func usage(of ref: UInt32) throws -> UInt16 {
        let address = table.state.withLock { table.statusWord(ref, $0) }
        let word = try table.memory.load(UInt16.self, at: address)
        return word & (GrantEntryFlags.reading.rawValue | GrantEntryFlags.writing.rawValue)
    }
}
