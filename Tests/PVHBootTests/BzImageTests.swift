import Foundation
import GuestMemory
import PVHBoot
import Testing
import TestSupport

/// Compresses with the format's command-line tool (the same tools the kernel
/// build uses), or nil when the tool is not installed.
enum CompressorTool {
    static func command(_ format: CompressionFormat) -> (String, [String]) {
        switch format {
        case .gzip: ("gzip", ["-c", "-n", "-9"])
        case .xz: ("xz", ["-c", "--check=crc32"])
        case .lzma: ("lzma", ["-c"])
        case .bzip2: ("bzip2", ["-c"])
        case .lz4Legacy: ("lz4", ["-l", "-c"])
        case .zstd: ("zstd", ["-c", "-q"])
        }
    }

    static func path(_ format: CompressionFormat) -> String? {
        let tool = command(format).0
        return ["/usr/bin", "/bin", "/usr/local/bin"].map { "\($0)/\(tool)" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func compress(_ data: [UInt8], _ format: CompressionFormat) throws -> [UInt8]? {
        guard let path = path(format) else { return nil }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("pvhboot-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in"), output = dir.appendingPathComponent("out")
        try Data(data).write(to: input)
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = command(format).1 + [input.path]
        p.standardOutput = try FileHandle(forWritingTo: output)
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { return nil }
        return [UInt8](try Data(contentsOf: output))
    }
}

@Suite("bzImage and decompression")
struct BzImageTests {
    static let formats = CompressionFormat.allCases

    /// The kernel build appends the uncompressed size (LE32) to most payloads.
    static func payload(_ elf: [UInt8], _ format: CompressionFormat) throws -> [UInt8]? {
        try CompressorTool.compress(elf, format).map { $0 + ELFBuilder.le(UInt32(elf.count)) }
    }

    @Test("magic detection")
    func detect() {
        #expect(CompressionFormat.detect([0x1f, 0x8b, 8]) == .gzip)
        #expect(CompressionFormat.detect([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0]) == .xz)
        #expect(CompressionFormat.detect([0x5d, 0, 0, 0x80, 0]) == .lzma)
        #expect(CompressionFormat.detect(Array("BZh9".utf8)) == .bzip2)
        #expect(CompressionFormat.detect([0x02, 0x21, 0x4c, 0x18]) == .lz4Legacy)
        #expect(CompressionFormat.detect([0x28, 0xb5, 0x2f, 0xfd]) == .zstd)
        #expect(CompressionFormat.detect([0x7f, 0x45]) == nil)
    }

    @Test("bzImage around each compressed format", arguments: formats)
    func wrapped(format: CompressionFormat) throws {
        let fake = FakeLinuxKernel(shape: .ksymtabLea)
        guard let payload = try Self.payload(fake.bytes, format) else {
            print("skipping \(format): \(CompressorTool.command(format).0) not installed")
            return
        }
        #expect(CompressionFormat.detect(payload) == format)
        let k = try KernelImage.parse(BzImageBuilder.wrap(payload))
        #expect(k.container == .bzImage(format))
        #expect(k.entry == GuestPhysicalAddress(0x100_0000))
        #expect(k.hypercallSites.amd?.virtualAddress.rawValue == fake.amdSite)
        // The same payload as a bare compressed file (vmlinux.gz style).
        #expect(try KernelImage.parse(payload).container == .compressed(format))
    }

    @Test("uncompressed payload, setup_sects 0 meaning 4")
    func uncompressed() throws {
        let k = try KernelImage.parse(BzImageBuilder.wrap(FakeLinuxKernel(shape: .symtab).bytes, setupSectors: 0))
        #expect(k.container == .bzImage(nil))
    }

    @Test("corrupt payloads name their format", arguments: formats)
    func corrupt(format: CompressionFormat) throws {
        let elf = FakeLinuxKernel(shape: .ksymtabLea).bytes
        guard let good = try CompressorTool.compress(elf, format) else { return }
        // Damage the compressed body (past the format header).
        var damaged = good
        for i in stride(from: min(12, damaged.count - 1), to: damaged.count - 1, by: 3) { damaged[i] ^= 0x5a }
        let error = parseError(BzImageBuilder.wrap(damaged))
        // A damaged stream is either rejected or decodes to something that is not the kernel.
        switch error {
        case .decompressionFailed(let f, _)?:
            #expect(f == format)
            #expect(error?.description.contains("\(format) payload") == true)
        case .some: break
        case nil: Issue.record("damaged \(format) payload accepted")
        }
        // Cut in half: the stream ends early.
        let half = Array(good.prefix(good.count / 2))
        let cut = parseError(BzImageBuilder.wrap(half))
        if case .decompressionFailed(let f, let why)? = cut {
            #expect(f == format)
            #expect(why == .truncated || why == .corrupt)
        } else {
            Issue.record("truncated \(format) payload gave \(String(describing: cut))")
        }
    }

    @Test("output cap")
    func cap() throws {
        let big = [UInt8](repeating: 0x41, count: 3 << 20)
        for format in Self.formats {
            guard let z = try CompressorTool.compress(big, format) else { continue }
            #expect(Decompressor.decompress(z, format: format, limit: 1 << 20) == .failure(.tooLarge(limit: 1 << 20)),
                    "\(format)")
            #expect(try Decompressor.decompress(z, format: format, limit: 3 << 20).get() == big, "\(format)")
        }
    }

    @Test("setup header errors")
    func header() {
        let elf = FakeLinuxKernel(shape: .none).bytes
        #expect(parseError(BzImageBuilder.wrap(elf, protocolVersion: 0x0206)) == .bootProtocolTooOld(version: 0x0206))
        #expect(parseError(BzImageBuilder.wrap(elf, lengthOverride: UInt32.max)) == .truncated(.payload))
        #expect(parseError(BzImageBuilder.wrap(Array("not compressed at all".utf8))) == .unknownPayloadFormat)
        #expect(parseError(Array(BzImageBuilder.wrap(elf).prefix(0x220))) == .truncated(.setupHeader))
    }
}
