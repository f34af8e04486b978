import GuestMemory
import Hypercalls
import KVM
import Locking
import XenABI

/// "Where is the guest?": each vCPU's registers and the top of its stack,
/// on request (SIGUSR1 to `pvh run`), like Xen's `xl debug-keys` / xenctx.
/// The request kicks every vCPU out of KVM_RUN; each prints its own line
/// from its thread, with no effect on the guest beyond the kick. Map the
/// addresses with the kernel's System.map.
final class VCPUStateDump: Sendable {
    private let pending = Lock<Set<UInt32>>([])

    func request(_ vcpus: some Sequence<VCPUID>) { pending.withLock { $0.formUnion(vcpus.map(\.rawValue)) } }

    func take(_ id: VCPUID) -> Bool { pending.withLock { $0.remove(id.rawValue) != nil } }

    /// One line: rip, rsp, rbp, rflags, cr3, the paging mode, and up to 16
    /// stack words (only those that look like kernel text addresses, which
    /// is what a call chain is made of).
    static func describe(_ id: VCPUID, vcpu: VCPU, memory: any GuestMemory) -> String {
        let r = vcpu.registers, s = vcpu.specialRegisters
        var line = "pvh: d1v\(id.rawValue) rip=\(hex(r.rip)) rsp=\(hex(r.rsp)) rbp=\(hex(r.rbp)) rflags=\(hex(r.rflags)) cr3=\(hex(s.cr3)) mode=\(vcpu.cpuMode) mp_state=\((try? vcpu.mpState) ?? 0)"
        let paging = GuestPagingState(cr0: s.cr0, cr3: s.cr3, cr4: s.cr4, efer: s.efer)
        let translator = GuestAddressTranslator(memory: memory, paging: paging)
        if let bytes = try? translator.readVirtual(at: GuestVirtualAddress(r.rsp), count: 8 * 64) {
            var words: [String] = []
            for i in 0..<64 {
                var w: UInt64 = 0
                for b in 0..<8 { w |= UInt64(bytes[i * 8 + b]) << (8 * b) }
                if w >> 40 == 0xff_ffff { words.append(hex(w)) }
                if words.count == 16 { break }
            }
            line += " stack: " + words.joined(separator: " ")
        }
        return line + "\n"
    }

    private static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
}
