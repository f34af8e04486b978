import Foundation
import GuestMemory
import HostIO
import Testing

/// A file in the temporary directory with the given bytes; removed with the value.
final class TemporaryFile {
    let path: String
    init(_ bytes: [UInt8], directory: String = NSTemporaryDirectory()) {
        path = (directory as NSString).appendingPathComponent("pvh-backing-\(UUID().uuidString).img")
        precondition(FileManager.default.createFile(atPath: path, contents: Data(bytes)), "cannot create \(path)")
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// What `open` threw, or nil when it opened.
func openError(_ path: String, writable: Bool, direct: Bool = false) -> BackingFileError? {
    do {
        _ = try BlockBackingFile.open(path: path, writable: writable, direct: direct)
        return nil
    } catch {
        return error
    }
}

@Suite("Backing files")
struct BlockBackingFileTests {
    /// A disk of `size` zero bytes with `signature` written at `offset`
    /// (negative: from the end).
    static func image(size: Int = 64 << 10, _ signature: [UInt8], at offset: Int = 0) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: size)
        let at = offset >= 0 ? offset : size + offset
        bytes.replaceSubrange(at..<at + signature.count, with: signature)
        return bytes
    }

    static var vdiHeader: [UInt8] {
        var h = Array("<<< Oracle VM VirtualBox Disk Image >>>\n".utf8)
        h += [UInt8](repeating: 0, count: 0x40 - h.count)
        return h + [0x7f, 0x10, 0xda, 0xbe]  // VDI_IMAGE_SIGNATURE, little-endian
    }

    static let images: [(String, [UInt8], ImageFormat)] = [
        ("qcow2", image([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]), .qcow2),
        ("QED", image(Array("QED\0".utf8)), .qed),
        ("VMDK sparse extent", image(Array("KDMV".utf8) + [1, 0, 0, 0]), .vmdk),
        ("VMDK ESX sparse extent", image(Array("COWD".utf8)), .vmdk),
        ("VMDK descriptor", Array("# Disk DescriptorFile\nversion=1\n".utf8), .vmdk),
        ("VHDX", image(Array("vhdxfile".utf8)), .vhdx),
        ("VDI", image(vdiHeader), .vdi),
        ("VHD, dynamic (footer copy at the start)", image(Array("conectix".utf8)), .vhd),
        ("VHD, fixed (footer in the last 512 bytes)", image(Array("conectix".utf8) + [0, 0, 0, 2], at: -512), .vhd),
        ("VHD, fixed, pre-2004 (511-byte footer)", image(Array("conectix".utf8), at: -511), .vhd),
    ]

    @Test("an image in another format is refused, naming the format and the qemu-img command that converts it",
          arguments: images.map { ($0.0, $0.1, $0.2) })
    func notRaw(name: String, bytes: [UInt8], format: ImageFormat) {
        let file = TemporaryFile(bytes)
        for writable in [false, true] {
            let error = openError(file.path, writable: writable)
            #expect(error == .notRaw(path: file.path, format: format), "\(name)")
            let message = error?.description ?? ""
            #expect(message.contains(file.path) && message.contains("\(format) image, not a raw disk"))
            #expect(message.contains("qemu-img convert -O raw \(file.path) \(file.path).raw"))
            #expect(!message.contains("\n"))
        }
    }

    @Test("raw disks that merely resemble an image are raw: zeros, a VDI's text without its signature, a signature not at its place")
    func rawLookalikes() throws {
        for bytes in [Self.image([]), Self.image(Array(Self.vdiHeader.prefix(0x40))), Self.image(Array("conectix".utf8), at: 512),
                      Self.image(Array("QFI".utf8) + [0xfa]), [UInt8](repeating: 0x51, count: 3)] {
            let file = TemporaryFile(bytes)
            let backing = try BlockBackingFile.open(path: file.path, writable: true)
            #expect(backing.sizeInBytes == UInt64(bytes.count))
        }
    }

    @Test("a file's geometry: its size, 512-byte logical sectors, a physical size and discard unit from st_blksize")
    func fileGeometry() throws {
        let file = TemporaryFile(Self.image(size: 3 << 20, []))
        let backing = try BlockBackingFile.open(path: file.path, writable: false)
        var st = stat()
        #expect(stat(file.path, &st) == 0)
        let power = 1 << (Int.bitWidth - 1 - Int(st.st_blksize).leadingZeroBitCount)
        #expect(backing.sizeInBytes == 3 << 20)
        #expect(!backing.isBlockDevice && !backing.isWritable && !backing.isDirect)
        #expect(backing.logicalSectorSize == 512)
        #expect(backing.physicalSectorSize == min(max(power, 512), 4096))
        #expect(backing.physicalSectorSize.nonzeroBitCount == 1)
        #expect(backing.supportsDiscard && !backing.supportsSecureDiscard)
        #expect(backing.discardGranularity == Int(st.st_blksize))
    }

    @Test("locks: a second writable open is refused as locked, so is a reader beside a writer and a writer beside a reader; readers share; closing frees it")
    func locking() throws {
        let file = TemporaryFile(Self.image([]))
        var writer: BlockBackingFile? = try BlockBackingFile.open(path: file.path, writable: true)
        #expect(writer != nil)
        #expect(openError(file.path, writable: true) == .locked(path: file.path))
        #expect(openError(file.path, writable: false) == .locked(path: file.path))
        #expect(openError(file.path, writable: true)?.description.contains("\(file.path): locked by another process") == true)
        writer = nil  // closes the descriptor, which drops the lock
        let reader1 = try BlockBackingFile.open(path: file.path, writable: false)
        let reader2 = try BlockBackingFile.open(path: file.path, writable: false)
        #expect(openError(file.path, writable: true) == .locked(path: file.path))
        withExtendedLifetime((reader1, reader2)) {}
    }

    @Test("the file stays open while an engine made from it lives, after the caller let it go")
    func engineKeepsFileOpen() throws {
        let scratch = try ScratchFile(size: 4096)
        let guest = try GuestPages(pages: 1)
        let log = CompletionLog()
        var file: BlockBackingFile? = try BlockBackingFile.open(path: scratch.url.path, writable: true)
        let engine = try file?.makeEngine(.automatic, onComplete: log.add)
        file = nil
        #expect(openError(scratch.url.path, writable: true) == .locked(path: scratch.url.path))
        engine?.submit([BlockIORequest(tag: 1, operation: .read(offset: 0, into: [try guest.range(0)]))])
        #expect(log.wait(for: 1))
        #expect(log.result(1) == .success(4096))
        engine?.shutdown()
    }

    @Test("what is not a disk is refused, saying what it is: a missing path, a directory, a character device, a FIFO (without hanging)")
    func notADisk() throws {
        let missing = NSTemporaryDirectory() + "pvh-no-such-\(UUID().uuidString).img"
        #expect(openError(missing, writable: false) == .missing(path: missing))
        #expect(openError(missing, writable: false)?.description == "\(missing): no such file or directory")
        let directory = NSTemporaryDirectory()
        #expect(openError(directory, writable: true) == .notFileOrBlockDevice(path: directory, kind: .directory))
        #expect(openError(directory, writable: false)?.description == "\(directory): is a directory, not a regular file or block device")
        #expect(openError("/dev/null", writable: false) == .notFileOrBlockDevice(path: "/dev/null", kind: .characterDevice))
        let fifo = NSTemporaryDirectory() + "pvh-fifo-\(UUID().uuidString)"
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        #expect(openError(fifo, writable: false) == .notFileOrBlockDevice(path: fifo, kind: .fifo))
    }

    @Test("a file the caller may not open is refused as permission denied", .enabled(if: !isRoot, "root opens any file"))
    func permissionDenied() throws {
        let file = TemporaryFile(Self.image([]))
        #expect(chmod(file.path, 0o400) == 0)
        #expect(openError(file.path, writable: true) == .permissionDenied(path: file.path))
    }

    @Test("writable on a read-only file system is refused as such (a tmpfs remounted read-only for the test)",
          .enabled(if: isRoot, "mounting a tmpfs needs root"))
    func readOnlyFileSystem() throws {
        let dir = NSTemporaryDirectory() + "pvh-hostio-ro-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        guard run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "pvh-hostio-test", dir]).status == 0 else {
            try Test.cancel("mount -t tmpfs failed (no CAP_SYS_ADMIN in this namespace?)")
        }
        defer { run("/bin/umount", [dir]) }
        let path = dir + "/disk.img"
        #expect(FileManager.default.createFile(atPath: path, contents: Data(count: 4096)))
        #expect(run("/bin/mount", ["-o", "remount,ro", dir]).status == 0)
        #expect(openError(path, writable: true) == .readOnlyFileSystem(path: path))
        #expect(openError(path, writable: false) == nil)
    }

    @Test("O_DIRECT: a file in /var/tmp opens with it and aligned I/O round-trips; a file system without it is named in the refusal")
    func directIO() throws {
        let file = TemporaryFile(Self.image(size: 1 << 20, []), directory: "/var/tmp")
        if openError(file.path, writable: false, direct: true) == .directIOUnsupported(path: file.path) {
            try Test.cancel("/var/tmp's file system refuses O_DIRECT")
        }
        let backing = try BlockBackingFile.open(path: file.path, writable: true, direct: true)
        #expect(backing.isDirect)
        #expect(backing.logicalSectorSize >= 512 && backing.logicalSectorSize.nonzeroBitCount == 1)
        let guest = try GuestPages(pages: 4)
        var rng = SplitMix64(seed: 0xd1)
        let data = rng.bytes(8192)
        try guest.memory.write(data, at: guest.address(0))
        let log = CompletionLog()
        let engine = try backing.makeEngine(.automatic, onComplete: log.add)
        defer { engine.shutdown() }
        engine.submit([BlockIORequest(tag: 1, operation: .write(offset: 0x10000, from: [try guest.range(0), try guest.range(1)]))])
        #expect(log.wait(for: 1))
        engine.submit([BlockIORequest(tag: 2, operation: .read(offset: 0x10000, into: [try guest.range(2), try guest.range(3)]))])
        #expect(log.wait(for: 2))
        #expect(log.result(1) == .success(8192) && log.result(2) == .success(8192))
        #expect(try guest.memory.read(at: guest.address(2), count: 8192) == data)

        // procfs files are regular files without direct I/O.
        let error = openError("/proc/version", writable: false, direct: true)
        #expect(error == .directIOUnsupported(path: "/proc/version"))
        #expect(error?.description == "/proc/version: the file system does not support O_DIRECT; use it without direct I/O")
    }

    @Test("a block device (a loop device set up for the test): its size and sectors, BLKDISCARD through every engine, exclusive while writable",
          .enabled(if: isRoot && FileManager.default.fileExists(atPath: "/dev/loop-control"), "loop devices need root"),
          .serialized, arguments: EngineUnderTest.allCases)
    func loopDevice(engine kind: EngineUnderTest) throws {
        let size = 4 << 20
        let image = TemporaryFile([UInt8](repeating: 0xab, count: size), directory: "/var/tmp")
        let setup = run("/sbin/losetup", ["--find", "--show", image.path])
        let device = setup.output.trimmingCharacters(in: .whitespacesAndNewlines)
        guard setup.status == 0, device.hasPrefix("/dev/loop") else { try Test.cancel("losetup failed") }
        defer { run("/sbin/losetup", ["-d", device]) }

        let backing = try BlockBackingFile.open(path: device, writable: true)
        #expect(backing.isBlockDevice)
        #expect(backing.sizeInBytes == UInt64(size))
        #expect(backing.logicalSectorSize == 512)
        #expect(backing.physicalSectorSize >= 512)
        // The loop driver passes discard on as hole punching when the file
        // system can, and says so in sysfs.
        let name = (device as NSString).lastPathComponent
        let sysfs = (try? String(contentsOfFile: "/sys/block/\(name)/queue/discard_max_bytes", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(backing.supportsDiscard == ((Int(sysfs ?? "0") ?? 0) > 0))
        #expect(openError(device, writable: true) == .inUse(path: device))
        #expect(openError(device, writable: false) == .locked(path: device))

        let guest = try GuestPages(pages: 1)
        try guest.memory.fill(at: guest.address(0), count: 4096, with: 0x11)
        let log = CompletionLog()
        let engine = try kind.make(backing, log: log)
        defer { engine.shutdown() }
        engine.submit([BlockIORequest(tag: 1, operation: .write(offset: 0, from: [try guest.range(0)])),
                       BlockIORequest(tag: 2, operation: .discard(offset: 0x10000, length: 0x8000))])
        #expect(log.wait(for: 2))
        engine.submit([BlockIORequest(tag: 3, operation: .flush)])
        #expect(log.wait(for: 3))
        #expect(log.result(1) == .success(4096))
        #expect(log.result(3) == .success(0))
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: image.path)))
        #expect(bytes[0..<4096].allSatisfy { $0 == 0x11 })
        if backing.supportsDiscard {
            #expect(log.result(2) == .success(0))
            #expect(bytes[0x10000..<0x18000].allSatisfy { $0 == 0 })
            #expect(bytes[0xffff] == 0xab && bytes[0x18000] == 0xab)
        } else {
            #expect(log.result(2) == .failure(.unsupported))
        }
    }
}
