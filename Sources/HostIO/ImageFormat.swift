/// Disk image formats that are not raw, recognised by their signatures so
/// that pvh refuses them instead of showing the guest a disk full of
/// metadata (or, worse, letting it write over the metadata). pvh serves raw
/// images only; `qemu-img convert -O raw` turns any of these into one.
///
/// The signatures are the formats' own: each case cites where its is defined.
/// A guest that writes one of them at the start of its own raw disk makes
/// the next open refuse that disk. It is never interpreted, so unlike a
/// format probe (CVE-2008-2004) this gives the guest nothing but a refusal.
public enum ImageFormat: Hashable, Sendable, CustomStringConvertible {
    /// "QFI\xfb" at 0 (QEMU's docs/interop/qcow2.txt, `magic`; qcow version
    /// 1 has the same magic).
    case qcow2
    /// "QED\0" at 0 (QEMU's docs/interop/qed_spec.txt, `magic`).
    case qed
    /// "KDMV" (a hosted sparse extent) or "COWD" (an ESX sparse extent) at 0,
    /// or a text descriptor starting "# Disk DescriptorFile" (VMware's
    /// Virtual Disk Format 5.0, "Hosted Sparse Extent Header", "The
    /// Descriptor File").
    case vmdk
    /// "vhdxfile" at 0 (MS-VHDX §2.2.1, the file type identifier).
    case vhdx
    /// "<<< " (the start of the text "<<< Oracle VM VirtualBox Disk Image
    /// >>>") at 0 and the signature 0xbeda107f, little-endian, at 0x40
    /// (VirtualBox's VDICore.h, VDI_IMAGE_SIGNATURE).
    case vdi
    /// The cookie "conectix" at the start of the footer, the last 512 bytes
    /// (511 in images made before Virtual PC 2004), or of its copy at 0 in a
    /// dynamic disk (Microsoft's Virtual Hard Disk Image Format
    /// Specification, "Hard Disk Footer Format").
    case vhd

    public var description: String {
        switch self {
        case .qcow2: "qcow2"
        case .qed: "QED"
        case .vmdk: "VMDK"
        case .vhdx: "VHDX"
        case .vdi: "VDI"
        case .vhd: "VHD"
        }
    }

    /// The bytes of the file `detect` needs: this many from the start, and
    /// as many from the end.
    static let probeSize = 512

    /// The format whose signature `head` (the file's first bytes) or `tail`
    /// (its last bytes, up to `probeSize`) carries; nil for none: a raw disk.
    static func detect(head: [UInt8], tail: [UInt8]) -> ImageFormat? {
        func at(_ bytes: [UInt8], _ offset: Int, _ signature: [UInt8]) -> Bool {
            bytes.count >= offset + signature.count && Array(bytes[offset..<offset + signature.count]) == signature
        }
        if at(head, 0, [0x51, 0x46, 0x49, 0xfb]) { return .qcow2 }
        if at(head, 0, Array("QED\0".utf8)) { return .qed }
        if at(head, 0, Array("KDMV".utf8)) || at(head, 0, Array("COWD".utf8)) || at(head, 0, Array("# Disk DescriptorFile".utf8)) {
            return .vmdk
        }
        if at(head, 0, Array("vhdxfile".utf8)) { return .vhdx }
        if at(head, 0, Array("<<< ".utf8)), at(head, 0x40, [0x7f, 0x10, 0xda, 0xbe]) { return .vdi }
        let cookie = Array("conectix".utf8)
        if at(head, 0, cookie) { return .vhd }
        if tail.count == probeSize, at(tail, 0, cookie) || at(tail, 1, cookie) { return .vhd }
        return nil
    }
}
