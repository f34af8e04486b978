import Foundation
import HostIO
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// SCM_RIGHTS over a socketpair (DescriptorPassing, the daemon's hand-over
/// and a hot-plugged image's passing), and an image taken over from a
/// passed descriptor with its lock (BlockBackingFile.adopt;
/// docs/ARCHITECTURE.md: Sandbox).
@Suite("Descriptor passing")
struct DescriptorPassingTests {
    /// A connected AF_UNIX stream pair, closed by the caller.
    static func pair() throws -> (Int32, Int32) {
        var fds: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0)
        return (fds[0], fds[1])
    }

    static func inode(_ fd: Int32) -> UInt64 {
        var st = stat()
        return fstat(fd, &st) == 0 ? UInt64(st.st_ino) : 0
    }

    @Test("the tag and every descriptor arrive; each names the sender's file; a ninth is refused; the end of stream is EPIPE")
    func codec() throws {
        let (a, b) = try Self.pair()
        defer { close(b) }
        let files = (0..<3).map { TemporaryFile(Array("file \($0)".utf8)) }
        let sent = files.map { open($0.path, O_RDONLY | O_CLOEXEC) }
        defer { sent.forEach { close($0) } }
        #expect(DescriptorPassing.send(sent, tag: 7, over: a) == 0)
        let received = try DescriptorPassing.receive(over: b).get()
        defer { received.descriptors.forEach { close($0) } }
        #expect(received.tag == 7)
        #expect(received.descriptors.count == 3)
        #expect(received.descriptors.map(Self.inode) == sent.map(Self.inode))
        #expect(!received.descriptors.contains { sent.contains($0) })  // new numbers, this process's
        // Close-on-exec, as the receiver's own.
        #expect(received.descriptors.allSatisfy { fcntl($0, F_GETFD) & FD_CLOEXEC != 0 })
        // The bytes read through a received copy are the file's.
        var byte = [UInt8](repeating: 0, count: 6)
        #expect(pread(received.descriptors[2], &byte, 6, 0) == 6 && byte == Array("file 2".utf8))
        // More than one message may carry: refused before sending.
        #expect(DescriptorPassing.send([Int32](repeating: sent[0], count: DescriptorPassing.maximumCount + 1), tag: 1, over: a) == EINVAL)
        // A message with none: the tag alone.
        #expect(DescriptorPassing.send([], tag: 9, over: a) == 0)
        let bare = try DescriptorPassing.receive(over: b).get()
        #expect(bare.tag == 9 && bare.descriptors.isEmpty)
        close(a)
        guard case .failure(let end) = DescriptorPassing.receive(over: b) else {
            Issue.record("a closed peer's stream gave a message")
            return
        }
        #expect(end.errno == EPIPE)
    }

    @Test("an image passed as its descriptor is taken over with its lock: writers and readers are refused until it goes")
    func adoptedImageKeepsTheLock() throws {
        let image = TemporaryFile([UInt8](repeating: 0xA5, count: 64 << 10))
        let (a, b) = try Self.pair()
        defer { close(a); close(b) }
        do {
            // The daemon's side: opened and locked as the spec asks, sent, dropped.
            let opened = try BlockBackingFile.open(path: image.path, writable: true)
            #expect(opened.sendDescriptor(tag: 2, over: a) == 0)
        }
        let received = try DescriptorPassing.receive(over: b).get()
        #expect(received.tag == 2 && received.descriptors.count == 1)
        let adopted = try BlockBackingFile.adopt(descriptor: try #require(received.descriptors.first), path: image.path, writable: true)
        #expect(adopted.sizeInBytes == 64 << 10 && adopted.isWritable && adopted.path == image.path)
        // The sender's copy is gone; the lock lives on with the taken-over one.
        #expect(openError(image.path, writable: false) == .locked(path: image.path))
        #expect(openError(image.path, writable: true) == .locked(path: image.path))
        _ = consume adopted
        #expect(openError(image.path, writable: true) == nil)
    }

    @Test("a descriptor opened read-only is refused for a writable disk; a socket is not an image")
    func adoptChecks() throws {
        let image = TemporaryFile([UInt8](repeating: 0, count: 4096))
        let readOnly = open(image.path, O_RDONLY | O_CLOEXEC)
        try #require(readOnly >= 0)
        #expect(throws: BackingFileError.permissionDenied(path: image.path)) {
            _ = try BlockBackingFile.adopt(descriptor: readOnly, path: image.path, writable: true)
        }
        // adopt closed it on the failure: the number is free again, or, if
        // a test running beside this one has opened something since and got
        // the number, it names another file than the image.
        var imageStat = stat(), numberStat = stat()
        try #require(stat(image.path, &imageStat) == 0)
        if fstat(readOnly, &numberStat) == 0 {
            #expect(numberStat.st_ino != imageStat.st_ino || numberStat.st_dev != imageStat.st_dev)
        } else {
            #expect(errno == EBADF)
        }
        let (a, b) = try Self.pair()
        defer { close(b) }
        #expect(throws: BackingFileError.self) {
            _ = try BlockBackingFile.adopt(descriptor: a, path: "socket", writable: false)
        }
        // Read-only from a read-write descriptor: allowed (a read-only disk's image opened for both is still the image).
        let both = open(image.path, O_RDWR | O_CLOEXEC)
        let file = try BlockBackingFile.adopt(descriptor: both, path: image.path, writable: false)
        #expect(!file.isWritable && file.sizeInBytes == 4096)
    }
}
