import GuestMemory
import XenABI

// xen_version, mirroring Xen 4.17 xen/common/kernel.c do_xen_version for an
// unprivileged domain under the default XSM policy (xen/include/xsm/dummy.h
// xsm_xen_version): version/platform_parameters/get_features and the
// "always accessible" sub-ops answer normally; commandline and build_id are
// denied (commandline copies "<denied>", build_id is -EPERM).
extension HypercallDispatcher {
    /// What Xen reports in place of denied information (xen/common/version.c xen_deny).
    static let denied = "<denied>"

    func xenVersion(_ command: XenVersionCommand, _ arg: GuestVirtualAddress, _ c: CallContext) throws(XenErrno) -> Int64 {
        let info = configuration.version
        switch command {
        case .version:
            return Int64(info.packed)
        case .extraversion:
            try c.guest.writeVirtual(.cString(info.extraversion, length: XenWire.extraversionLength), at: arg)
        case .compileInfo:
            var bytes = [UInt8](repeating: 0, count: XenWire.CompileInfo.size)
            for (field, text) in [(XenWire.CompileInfo.compiler, info.compiler),
                                  (XenWire.CompileInfo.compileBy, info.compileBy),
                                  (XenWire.CompileInfo.compileDomain, info.compileDomain),
                                  (XenWire.CompileInfo.compileDate, info.compileDate)] {
                bytes.replaceSubrange(field.offset..<field.offset + field.size, with: [UInt8].cString(text, length: field.size))
            }
            try c.guest.writeVirtual(bytes, at: arg)
        case .capabilities:
            try c.guest.writeVirtual(.cString(info.capabilities, length: XenWire.capabilitiesLength), at: arg)
        case .changeset:
            try c.guest.writeVirtual(.cString(info.changeset, length: XenWire.changesetLength), at: arg)
        case .platformParameters:
            // virt_start is 0 for HVM/PVH vCPUs (no Xen hole in their address space).
            try c.guest.writeVirtual([UInt8](repeating: 0, count: XenWire.PlatformParameters.size(c.mode)), at: arg)
        case .getFeatures:
            var fi = try c.guest.readVirtual(at: arg, count: XenWire.FeatureInfo.size)
            // Only submap 0 exists (XENFEAT_NR_SUBMAPS); others are -EINVAL.
            guard fi.wireValue(XenWire.FeatureInfo.submapIndex, as: UInt32.self) == 0 else { throw .einval }
            fi.setWireValue(configuration.features.rawValue, in: XenWire.FeatureInfo.submap)
            try c.guest.writeVirtual(fi, at: arg)
        case .pagesize:
            // The argument must be NULL.
            guard arg.rawValue == 0 else { throw .einval }
            return Int64(GuestFrameNumber.pageSize)
        case .guestHandle:
            let handle = configuration.handle.prefix(XenWire.domainHandleLength)
            try c.guest.writeVirtual(Array(handle) + [UInt8](repeating: 0, count: XenWire.domainHandleLength - handle.count), at: arg)
        case .commandline:
            // Denied to domUs: Xen copies "<denied>" and its NUL only.
            try c.guest.writeVirtual(Array(Self.denied.utf8) + [0], at: arg)
        case .buildID:
            throw .eperm
        }
        return 0
    }
}
