import GuestMemory
import XenABI

// grant_table_op, after Xen 4.17 xen/arch/x86/hvm/hypercall.c
// hvm_grant_table_op and xen/common/grant_table.c do_grant_table_op (compat:
// xen/common/compat/grant_table.c). Each operation's structure is copied in
// once (-EFAULT), run, and its status or outputs copied back (-EFAULT).
// Multi-operation calls run to completion (no continuations); `count` is
// bounded by the guest's own memory, since every operation is a structure
// of its array.
extension HypercallDispatcher {
    /// `COMPAT_ARG_XLAT_SIZE` (Xen-internal, xen/arch/x86/include/asm/x86_64/uaccess.h:
    /// two pages): the compat setup_table's frame list is translated through
    /// it, which bounds the frames one call may ask for.
    static let compatTranslationArea = 2 * Int(GuestFrameNumber.pageSize)

    func grantTableOp(_ command: GrantTableOpCommand, _ arg: GuestVirtualAddress, count: UInt32,
                      _ c: CallContext) throws(XenErrno) -> Int64 {
        guard let grants = grantTables else { throw .enosys }
        switch command {
        case .dumpTable, .transfer, .unmapAndReplace, .getStatusFrames, .cacheFlush:
            // hvm_grant_table_op: "All other commands need auditing": HVM
            // (and so PVH) guests get -ENOSYS for these in Xen 4.17. A v2
            // guest places its status frames with XENMAPIDX_grant_table_status.
            throw .enosys
        default:
            break
        }
        // do_grant_table_op: `(int)count < 0`.
        guard Int32(bitPattern: count) >= 0 else { throw .einval }
        switch command {
        case .querySize:
            typealias W = XenWire.GrantQuerySize
            guard count == 1 else { throw .einval }
            var bytes = try c.guest.readVirtual(at: arg, count: W.size)
            do {
                let size = try grants.querySize(domain: DomainID(rawValue: bytes.wireValue(W.dom)))
                bytes.setWireValue(size.frames, in: W.nrFrames)
                bytes.setWireValue(size.maximumFrames, in: W.maxNrFrames)
                bytes.setWireValue(GrantStatus.okay.rawValue, in: W.status)
            } catch {
                bytes.setWireValue(error.rawValue, in: W.status)
            }
            try c.guest.writeVirtual(bytes, at: arg)

        case .setupTable:
            typealias W = XenWire.GrantSetupTable
            if c.mode == .long64 {
                guard count == 1 else { throw .einval }
            } else {
                // compat_grant_table_op: more than one is -EINVAL, none is a no-op.
                guard count <= 1 else { throw .einval }
                if count == 0 { return 0 }
            }
            var bytes = try c.guest.readVirtual(at: arg, count: W.size(c.mode))
            let limit = c.mode == .long64
                ? UInt32.max
                : UInt32((Self.compatTranslationArea - W.size(.long64)) / W.pfnSize(.long64))
            var status = GrantStatus.okay
            do {
                let frames = try grants.setupTable(domain: DomainID(rawValue: bytes.wireValue(W.dom)),
                                                   frames: bytes.wireValue(W.nrFrames), limit: limit)
                let size = W.pfnSize(c.mode)
                var list = [UInt8](repeating: 0, count: frames.count * size)
                for (i, f) in frames.enumerated() {
                    list.setWireValue(f.rawValue, in: WireField(offset: i * size, size: size))
                }
                let handle = GuestVirtualAddress(bytes.wireValue(W.frameList(c.mode), as: UInt64.self))
                if !list.isEmpty {
                    do { try c.guest.writeVirtual(list, at: handle) } catch { status = .badVirtualAddress }
                }
            } catch {
                status = error
            }
            // Only the status goes back (__copy_field_to_guest).
            bytes.setWireValue(status.rawValue, in: W.status)
            try c.guest.writeVirtual(Array(bytes[W.status.offset..<W.status.offset + W.status.size]),
                                     at: arg.advanced(by: UInt64(W.status.offset)))

        case .setVersion:
            typealias W = XenWire.GrantSetVersion
            var bytes = try c.guest.readVirtual(at: arg, count: W.size)
            var failure: XenErrno?
            do { try grants.setVersion(bytes.wireValue(W.version)) } catch { failure = error }
            // The version in force goes back whatever happened.
            bytes.setWireValue(grants.version, in: W.version)
            try c.guest.writeVirtual(bytes, at: arg)
            if let failure { throw failure }

        case .getVersion:
            typealias W = XenWire.GrantGetVersion
            let bytes = try c.guest.readVirtual(at: arg, count: W.size)
            let version = try grants.version(domain: DomainID(rawValue: bytes.wireValue(W.dom)))
            try c.guest.writeVirtual(LittleEndianBytes.encode(version), at: arg.advanced(by: UInt64(W.version.offset)))

        case .copy:
            typealias W = XenWire.GrantCopy
            let size = W.size(c.mode)
            for i in 0..<UInt64(count) {
                let at = arg.advanced(by: i * UInt64(size))
                let bytes = try c.guest.readVirtual(at: at, count: size)
                let flags = GrantCopyFlags(rawValue: bytes.wireValue(W.flags(c.mode)))
                func pointer(_ destination: Bool) -> GrantCopyPointer {
                    let isGrant = flags.contains(destination ? .destinationGrant : .sourceGrant)
                    let target: GrantCopyPointer.Target = isGrant
                        ? .grant(GrantReference(bytes.wireValue(W.reference(destination: destination, c.mode))))
                        : .frame(GuestFrameNumber(bytes.wireValue(W.gmfn(destination: destination, c.mode), as: UInt64.self)))
                    return GrantCopyPointer(target: target,
                                            domain: DomainID(rawValue: bytes.wireValue(W.domid(destination: destination, c.mode))),
                                            offset: bytes.wireValue(W.offset(destination: destination, c.mode)))
                }
                let op = GrantCopyOperation(source: pointer(false), destination: pointer(true),
                                            length: bytes.wireValue(W.length(c.mode)))
                let status = grants.copy(op)
                try c.guest.writeVirtual(LittleEndianBytes.encode(UInt16(bitPattern: status.rawValue)),
                                         at: at.advanced(by: UInt64(W.status(c.mode).offset)))
            }

        case .mapGrantRef:
            typealias W = XenWire.GrantMapGrantRef
            for i in 0..<UInt64(count) {
                let at = arg.advanced(by: i * UInt64(W.size))
                var bytes = try c.guest.readVirtual(at: at, count: W.size)
                let status = grants.mapForeign(domain: DomainID(rawValue: bytes.wireValue(W.dom)),
                                               reference: GrantReference(bytes.wireValue(W.ref)),
                                               flags: GrantMapFlags(rawValue: bytes.wireValue(W.flags)))
                bytes.setWireValue(status.rawValue, in: W.status)
                // gnttab_map_grant_ref copies the whole operation back.
                try c.guest.writeVirtual(bytes, at: at)
            }

        case .unmapGrantRef:
            typealias W = XenWire.GrantUnmapGrantRef
            for i in 0..<UInt64(count) {
                let at = arg.advanced(by: i * UInt64(W.size))
                let bytes = try c.guest.readVirtual(at: at, count: W.size)
                let status = grants.unmapForeign(handle: bytes.wireValue(W.handle))
                // gnttab_unmap_grant_ref copies the status field back.
                try c.guest.writeVirtual(LittleEndianBytes.encode(UInt16(bitPattern: status.rawValue)),
                                         at: at.advanced(by: UInt64(W.status.offset)))
            }

        case .swapGrantRef:
            typealias W = XenWire.GrantSwapGrantRef
            for i in 0..<UInt64(count) {
                let at = arg.advanced(by: i * UInt64(W.size))
                let bytes = try c.guest.readVirtual(at: at, count: W.size)
                let status = grants.swap(GrantReference(bytes.wireValue(W.refA)), GrantReference(bytes.wireValue(W.refB)))
                try c.guest.writeVirtual(LittleEndianBytes.encode(UInt16(bitPattern: status.rawValue)),
                                         at: at.advanced(by: UInt64(W.status.offset)))
            }

        case .dumpTable, .transfer, .unmapAndReplace, .getStatusFrames, .cacheFlush:
            throw .enosys
        }
        return 0
    }
}
