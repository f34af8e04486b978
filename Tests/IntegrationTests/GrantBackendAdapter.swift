import VMM

/// One grant the host test has mapped.
struct HeldGrantMapping: Sendable {
    let ref: UInt32
    let writable: Bool
}

/// The backend-side grant operations GrantTableScenarioTests needs, as a Xen
/// backend in domain 0 uses them: map (GNTTABOP_map_grant_ref), access through
/// the mapping, copy (GNTTABOP_copy with a destination gref), unmap, and the
/// GTF_reading/GTF_writing bits Xen keeps for a ref (v1: the entry's flags,
/// v2: its status entry).
///
/// Here on main the VMM has no such API yet: every call throws, the host
/// writes `error ...` and the guest fails at once.
struct HeldGrantBackend {
    init(domain: Domain) throws { throw GrantHostError("this VMM has no backend grant-table API (Domain.grants)") }
    func map(_ ref: UInt32, writable: Bool) throws -> HeldGrantMapping { throw GrantHostError("no grant API") }
    func unmap(_ mapping: HeldGrantMapping) throws { throw GrantHostError("no grant API") }
    func write(_ mapping: HeldGrantMapping, _ bytes: [UInt8], at offset: Int) throws { throw GrantHostError("no grant API") }
    func read(_ mapping: HeldGrantMapping, count: Int, at offset: Int) throws -> [UInt8] { throw GrantHostError("no grant API") }
    func copy(_ bytes: [UInt8], to ref: UInt32, at offset: Int) throws { throw GrantHostError("no grant API") }
    func usage(of ref: UInt32) throws -> UInt16 { throw GrantHostError("no grant API") }
}
