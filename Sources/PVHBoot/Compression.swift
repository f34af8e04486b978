/// A compressed-payload format the Linux kernel can use for its bzImage
/// payload (arch/x86/boot/compressed/Makefile, `CONFIG_KERNEL_*`), detected by
/// its leading magic bytes.
public enum CompressionFormat: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// RFC 1952: `1f 8b`.
    case gzip
    /// The .xz container: `fd 37 7a 58 5a 00`.
    case xz
    /// The legacy .lzma ("LZMA alone") format: properties byte `5d`, then a
    /// little-endian dictionary size whose low bytes are `00 00` for the
    /// power-of-two sizes `lzma` writes.
    case lzma
    /// bzip2: `BZh`.
    case bzip2
    /// LZ4 legacy frame (`lz4 -l`), magic 0x184C2102 little-endian: `02 21 4c 18`.
    case lz4Legacy = "lz4"
    /// zstd frame, magic 0xFD2FB528 little-endian: `28 b5 2f fd`.
    case zstd

    /// The leading bytes that identify the format.
    public var magic: [UInt8] {
        switch self {
        case .gzip: [0x1f, 0x8b]
        case .xz: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]
        case .lzma: [0x5d, 0x00, 0x00]
        case .bzip2: [0x42, 0x5a, 0x68]
        case .lz4Legacy: [0x02, 0x21, 0x4c, 0x18]
        case .zstd: [0x28, 0xb5, 0x2f, 0xfd]
        }
    }

    /// The format whose magic `bytes` start with, if any.
    public static func detect(_ bytes: some Collection<UInt8>) -> CompressionFormat? {
        allCases.first { bytes.starts(with: $0.magic) }
    }

    public var description: String { rawValue }
}

/// Why a compressed payload could not be decompressed.
public enum DecompressionFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// The library rejected the data.
    case corrupt
    /// The input ended before the compressed stream did.
    case truncated
    /// The output would exceed the limit (bytes).
    case tooLarge(limit: Int)
    /// The host could not allocate memory.
    case outOfMemory

    public var description: String {
        switch self {
        case .corrupt: "corrupt data"
        case .truncated: "truncated data"
        case .tooLarge(let limit): "decompresses to more than \(limit) bytes"
        case .outOfMemory: "out of host memory"
        }
    }
}
