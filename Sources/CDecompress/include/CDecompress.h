// C shim over the system decompressors (zlib, liblzma, libbz2, liblz4,
// libzstd). It does all pointer work for the loader: Swift hands in a byte
// buffer, gets back an opaque result, asks its size and copies it out into
// a Swift array. Nothing here trusts the input: every library is driven in
// streaming mode with an output cap.
#ifndef PVH_CDECOMPRESS_H
#define PVH_CDECOMPRESS_H
#include <stdint.h>
#include <stddef.h>

/// Compressed formats the Linux kernel uses for its bzImage payload
/// (arch/x86/boot/compressed/Makefile) and for initrds.
enum pvh_compression {
    PVH_COMPRESSION_GZIP = 1,       // RFC 1952 (zlib inflate, gzip wrapper)
    PVH_COMPRESSION_XZ = 2,         // .xz container (liblzma stream decoder)
    PVH_COMPRESSION_LZMA = 3,       // legacy .lzma "alone" format (liblzma)
    PVH_COMPRESSION_BZIP2 = 4,      // bzip2 (libbz2)
    PVH_COMPRESSION_LZ4_LEGACY = 5, // LZ4 legacy frame, magic 0x184C2102 (lz4 -l)
    PVH_COMPRESSION_ZSTD = 6,       // zstd frames (libzstd streaming)
};

/// Outcome of one decompression.
enum pvh_decompress_status {
    PVH_DECOMPRESS_OK = 0,
    PVH_DECOMPRESS_UNSUPPORTED = 1, // unknown format code
    PVH_DECOMPRESS_CORRUPT = 2,     // the library rejected the data
    PVH_DECOMPRESS_TRUNCATED = 3,   // the input ended before the stream did
    PVH_DECOMPRESS_TOO_LARGE = 4,   // the output would exceed the cap
    PVH_DECOMPRESS_NO_MEMORY = 5,   // host allocation failed
};

/// Opaque decompressed output, owned by the shim until freed.
typedef struct pvh_decompress_output pvh_decompress_output;

/// Decompresses the whole of `input[0, input_len)` as `format` (one
/// `enum pvh_compression`). At most `max_output` bytes are produced; more is
/// `PVH_DECOMPRESS_TOO_LARGE`. Bytes after the end of the compressed stream
/// (the kernel build appends a 4-byte size) are ignored. On success `*result`
/// receives an output to read with the two functions below and release with
/// `pvh_decompress_output_free`; on failure `*result` is NULL.
int pvh_decompress(int format, const uint8_t *input, size_t input_len, size_t max_output,
                   pvh_decompress_output **result);

/// Number of decompressed bytes.
size_t pvh_decompress_output_size(const pvh_decompress_output *output);

/// Copies `min(dst_len, size)` decompressed bytes into `dst`.
void pvh_decompress_output_copy(const pvh_decompress_output *output, uint8_t *dst, size_t dst_len);

/// Releases an output (NULL is allowed).
void pvh_decompress_output_free(pvh_decompress_output *output);

#endif
