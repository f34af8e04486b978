import Foundation
import GuestMemory
import HostIO
import Locking
import Testing

/// A scratch backing file that goes away with the value.
final class ScratchFile {
    let url: URL
    let handle: FileHandle
    init(size: Int) throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("pvh-hostio-\(UUID().uuidString).img")
        FileManager.default.createFile(atPath: url.path, contents: nil)
        handle = try FileHandle(forUpdating: url)
        try handle.truncate(atOffset: UInt64(size))
    }
    var fd: Int32 { handle.fileDescriptor }
    func bytes() throws -> [UInt8] { [UInt8](try Data(contentsOf: url)) }
    deinit {
        try? handle.close()
        try? FileManager.default.removeItem(at: url)
    }
}

/// Completions, collected.
final class Completions: Sendable {
    let all = Lock<[BlockIOCompletion]>([])
    func add(_ c: [BlockIOCompletion]) { all.withLock { $0 += c } }
    func result(_ tag: UInt64) -> Result<Int, HostIOError>? { all.withLock { $0.first { $0.tag == tag }?.result } }
}

@Suite("Synchronous engine")
struct SynchronousEngineTests {
    let memory: MappedGuestMemory
    init() throws {
        memory = try MappedGuestMemory(ranges: [GuestPhysicalRange(start: GuestPhysicalAddress(0), length: 0x10000)])
    }
    func page(_ n: UInt64, count: UInt64 = 4096) throws -> HostMemoryRange {
        try memory.hostRange(GuestPhysicalRange(start: GuestPhysicalAddress(n * 4096), length: count))
    }

    @Test("write from two guest pages, flush, read back into a third and fourth: the file and guest memory hold the bytes")
    func roundTrip() throws {
        let file = try ScratchFile(size: 1 << 20)
        let done = Completions()
        let engine = SynchronousEngine(fileDescriptor: file.fd, onComplete: done.add)
        let pattern = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        try memory.write(pattern, at: GuestPhysicalAddress(0x1000))
        engine.submit([BlockIORequest(tag: 1, operation: .write(offset: 0x3000, from: [try page(1), try page(2)])),
                       BlockIORequest(tag: 2, operation: .flush),
                       BlockIORequest(tag: 3, operation: .read(offset: 0x3000, into: [try page(5), try page(6)]))])
        #expect(done.result(1) == .success(8192))
        #expect(done.result(2) == .success(0))
        #expect(done.result(3) == .success(8192))
        #expect(try memory.read(at: GuestPhysicalAddress(0x5000), count: 8192) == pattern)
        #expect(Array(try file.bytes()[0x3000..<0x5000]) == pattern)
    }

    @Test("a read past the end of the file is short, not a success; after shutdown requests fail with shutDown")
    func shortAndShutdown() throws {
        let file = try ScratchFile(size: 4096)
        let done = Completions()
        let engine = SynchronousEngine(fileDescriptor: file.fd, onComplete: done.add)
        engine.submit([BlockIORequest(tag: 1, operation: .read(offset: 2048, into: [try page(0)]))])
        #expect(done.result(1) == .failure(.short(transferred: 2048, expected: 4096)))
        engine.shutdown()
        engine.submit([BlockIORequest(tag: 2, operation: .flush)])
        #expect(done.result(2) == .failure(.shutDown))
    }

    @Test("discard punches a hole: the range reads as zeros and the size stays")
    func discard() throws {
        let file = try ScratchFile(size: 0x10000)
        try file.handle.seek(toOffset: 0)
        try file.handle.write(contentsOf: Data(repeating: 0xab, count: 0x10000))
        let done = Completions()
        let engine = SynchronousEngine(fileDescriptor: file.fd, onComplete: done.add)
        engine.submit([BlockIORequest(tag: 1, operation: .discard(offset: 0x4000, length: 0x2000))])
        guard done.result(1) != .failure(.unsupported) else { return }  // e.g. a file system without holes
        #expect(done.result(1) == .success(0))
        let bytes = try file.bytes()
        #expect(bytes.count == 0x10000)
        #expect(bytes[0x4000..<0x6000].allSatisfy { $0 == 0 })
        #expect(bytes[0x3fff] == 0xab && bytes[0x6000] == 0xab)
    }
}
