import CDecompress

/// Whole-buffer decompression through the `CDecompress` shim. This is the only
/// file in PVHBoot that touches pointers: it lends the shim a Swift array to
/// read and another to fill.
public enum Decompressor {
    /// Decompresses all of `input` as `format`, producing at most `limit` bytes.
    /// Data after the end of the compressed stream (the kernel build's appended
    /// 4-byte size) is ignored.
    public static func decompress(
        _ input: [UInt8], format: CompressionFormat, limit: Int
    ) -> Result<[UInt8], DecompressionFailure> {
        var output: OpaquePointer?
        // SAFETY: the buffer pointer is valid for `buf.count` bytes for the
        // duration of the closure; the shim reads only `[0, count)` and keeps
        // no reference to it after returning.
        let status = unsafe input.withUnsafeBufferPointer { buf in
            unsafe pvh_decompress(format.shimCode, buf.baseAddress, buf.count, max(0, limit), &output)
        }
        defer { unsafe pvh_decompress_output_free(output) }
        switch status {
        case Int32(PVH_DECOMPRESS_OK.rawValue): break
        case Int32(PVH_DECOMPRESS_TRUNCATED.rawValue): return .failure(.truncated)
        case Int32(PVH_DECOMPRESS_TOO_LARGE.rawValue): return .failure(.tooLarge(limit: limit))
        case Int32(PVH_DECOMPRESS_NO_MEMORY.rawValue): return .failure(.outOfMemory)
        default: return .failure(.corrupt)
        }
        let size = unsafe pvh_decompress_output_size(output)
        // SAFETY: the shim copies exactly `size` bytes (the output's size) into
        // the new array's storage of capacity `size`, initialising all of it;
        // no zero-fill pass first (a kernel is ~50 MiB).
        let bytes = unsafe [UInt8](unsafeUninitializedCapacity: size) { dst, initialized in
            unsafe pvh_decompress_output_copy(output, dst.baseAddress, dst.count)
            initialized = size
        }
        return .success(bytes)
    }
}

extension CompressionFormat {
    /// The shim's `enum pvh_compression` value.
    fileprivate var shimCode: Int32 {
        let code: pvh_compression = switch self {
        case .gzip: PVH_COMPRESSION_GZIP
        case .xz: PVH_COMPRESSION_XZ
        case .lzma: PVH_COMPRESSION_LZMA
        case .bzip2: PVH_COMPRESSION_BZIP2
        case .lz4Legacy: PVH_COMPRESSION_LZ4_LEGACY
        case .zstd: PVH_COMPRESSION_ZSTD
        }
        return Int32(code.rawValue)
    }
}
