// Whole-buffer decompression for the PVH loader. Each decoder runs the
// library's streaming API into a growing malloc'd buffer with a hard cap, so
// a hostile or corrupt payload costs at most `max_output` bytes of host
// memory and never reads outside `input`.
#include "CDecompress.h"

#include <bzlib.h>
#include <limits.h>
#include <lz4.h>
#include <lzma.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

struct pvh_decompress_output {
    uint8_t *data;
    size_t len;   // bytes produced
    size_t cap;   // bytes allocated
    size_t max;   // caller's cap on `len`
    size_t limit; // never allocate more than this
};

static const size_t initial_capacity = (size_t)1 << 20;
/// liblzma's memory limit: generous for any kernel (xz_wrap.sh uses a
/// 32 MiB dictionary at most), bounded for hostile headers.
static const uint64_t lzma_memory_limit = (uint64_t)512 << 20;
/// Linux's LZ4 legacy blocks decompress to at most 8 MiB
/// (lib/decompress_unlz4.c, LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE).
static const size_t lz4_block_size = (size_t)8 << 20;
static const uint32_t lz4_legacy_magic = 0x184C2102;

static size_t sat_add(size_t a, size_t b) { return a > SIZE_MAX - b ? SIZE_MAX : a + b; }

/// Makes at least `want` free bytes available, or as many as `limit` allows
/// (returns the free byte count; 0 means the limit is reached or malloc failed).
static size_t out_reserve(struct pvh_decompress_output *o, size_t want) {
    size_t free_now = o->cap - o->len;
    if (free_now >= want || o->cap == o->limit) return free_now;
    size_t target = o->cap < initial_capacity ? initial_capacity : o->cap;
    while (target - o->len < want && target < o->limit) target = sat_add(target, target);
    if (target > o->limit) target = o->limit;
    uint8_t *grown = realloc(o->data, target);
    if (!grown) return 0;
    o->data = grown;
    o->cap = target;
    return o->cap - o->len;
}

/// Status after an allocation came back empty.
static int out_full_status(const struct pvh_decompress_output *o) {
    return o->cap == o->limit ? PVH_DECOMPRESS_TOO_LARGE : PVH_DECOMPRESS_NO_MEMORY;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// MARK: gzip (RFC 1952)

static int run_gzip(struct pvh_decompress_output *o, const uint8_t *in, size_t in_len) {
    z_stream z;
    memset(&z, 0, sizeof z);
    // 16 + MAX_WBITS: gzip wrapper only (zlib.h, inflateInit2).
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) return PVH_DECOMPRESS_NO_MEMORY;
    size_t consumed = 0;
    int status = PVH_DECOMPRESS_OK;
    for (;;) {
        size_t room = out_reserve(o, initial_capacity);
        if (room == 0) { status = out_full_status(o); break; }
        size_t in_chunk = in_len - consumed > UINT_MAX ? UINT_MAX : in_len - consumed;
        z.next_in = (Bytef *)(in + consumed);
        z.avail_in = (uInt)in_chunk;
        z.next_out = o->data + o->len;
        z.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
        uInt out_before = z.avail_out;
        int rc = inflate(&z, Z_NO_FLUSH);
        consumed += in_chunk - z.avail_in;
        o->len += out_before - z.avail_out;
        if (rc == Z_STREAM_END) break;
        if (rc == Z_MEM_ERROR) { status = PVH_DECOMPRESS_NO_MEMORY; break; }
        if (rc == Z_BUF_ERROR || (rc == Z_OK && consumed == in_len && z.avail_out != 0)) {
            // No progress possible: out of input (output room was offered).
            if (consumed == in_len) { status = PVH_DECOMPRESS_TRUNCATED; break; }
            continue;
        }
        if (rc != Z_OK) { status = PVH_DECOMPRESS_CORRUPT; break; }
    }
    inflateEnd(&z);
    return status;
}

// MARK: xz and legacy lzma (liblzma)

static int run_lzma(struct pvh_decompress_output *o, const uint8_t *in, size_t in_len, int alone) {
    lzma_stream s = LZMA_STREAM_INIT;
    // No LZMA_CONCATENATED: stop at the end of the first stream, so the
    // kernel build's appended size field is ignored.
    lzma_ret rc = alone ? lzma_alone_decoder(&s, lzma_memory_limit)
                        : lzma_stream_decoder(&s, lzma_memory_limit, 0);
    if (rc != LZMA_OK) return PVH_DECOMPRESS_NO_MEMORY;
    s.next_in = in;
    s.avail_in = in_len;
    int status = PVH_DECOMPRESS_OK;
    for (;;) {
        size_t room = out_reserve(o, initial_capacity);
        if (room == 0) { status = out_full_status(o); break; }
        s.next_out = o->data + o->len;
        s.avail_out = room;
        rc = lzma_code(&s, s.avail_in == 0 ? LZMA_FINISH : LZMA_RUN);
        o->len += room - s.avail_out;
        if (rc == LZMA_STREAM_END) break;
        if (rc == LZMA_OK) continue;
        if (rc == LZMA_BUF_ERROR) { status = PVH_DECOMPRESS_TRUNCATED; break; }
        if (rc == LZMA_MEM_ERROR) { status = PVH_DECOMPRESS_NO_MEMORY; break; }
        status = PVH_DECOMPRESS_CORRUPT; // DATA/FORMAT/OPTIONS/MEMLIMIT errors
        break;
    }
    lzma_end(&s);
    return status;
}

// MARK: bzip2

static int run_bzip2(struct pvh_decompress_output *o, const uint8_t *in, size_t in_len) {
    bz_stream s;
    memset(&s, 0, sizeof s);
    if (BZ2_bzDecompressInit(&s, 0, 0) != BZ_OK) return PVH_DECOMPRESS_NO_MEMORY;
    size_t consumed = 0;
    int status = PVH_DECOMPRESS_OK;
    for (;;) {
        size_t room = out_reserve(o, initial_capacity);
        if (room == 0) { status = out_full_status(o); break; }
        size_t in_chunk = in_len - consumed > UINT_MAX ? UINT_MAX : in_len - consumed;
        s.next_in = (char *)(in + consumed);
        s.avail_in = (unsigned)in_chunk;
        s.next_out = (char *)(o->data + o->len);
        s.avail_out = room > UINT_MAX ? UINT_MAX : (unsigned)room;
        unsigned out_before = s.avail_out;
        int rc = BZ2_bzDecompress(&s);
        consumed += in_chunk - s.avail_in;
        size_t produced = out_before - s.avail_out;
        o->len += produced;
        if (rc == BZ_STREAM_END) break;
        if (rc == BZ_OK) {
            if (consumed == in_len && s.avail_out != 0) { status = PVH_DECOMPRESS_TRUNCATED; break; }
            continue;
        }
        status = rc == BZ_MEM_ERROR ? PVH_DECOMPRESS_NO_MEMORY : PVH_DECOMPRESS_CORRUPT;
        break;
    }
    BZ2_bzDecompressEnd(&s);
    return status;
}

// MARK: LZ4 legacy frame (lz4 -l; Linux lib/decompress_unlz4.c)
//
// magic 0x184C2102, then blocks: LE32 compressed size + data, each block
// decompressing to at most 8 MiB. A size field equal to the magic starts
// another legacy frame. The stream ends at end of input, or at a size field
// that cannot be a block (larger than LZ4_COMPRESSBOUND(8 MiB): another
// format's magic, or the 4-byte uncompressed size the kernel build appends),
// or at a lone trailing size field with no data after it.

static int run_lz4_legacy(struct pvh_decompress_output *o, const uint8_t *in, size_t in_len) {
    if (in_len < 4 || le32(in) != lz4_legacy_magic) return PVH_DECOMPRESS_CORRUPT;
    const size_t bound = (size_t)LZ4_COMPRESSBOUND(lz4_block_size);
    size_t pos = 4;
    size_t blocks = 0;
    while (in_len - pos >= 4) {
        uint32_t chunk = le32(in + pos);
        if (chunk == lz4_legacy_magic) { pos += 4; continue; }
        size_t after = in_len - pos - 4;
        if (chunk > bound) {
            if (blocks > 0) break; // trailing size field or another format
            return PVH_DECOMPRESS_CORRUPT;
        }
        if (chunk > after) {
            if (blocks > 0 && after == 0) break; // appended size field
            return PVH_DECOMPRESS_TRUNCATED;
        }
        if (chunk == 0) return PVH_DECOMPRESS_CORRUPT;
        // Room for a whole block; `limit` has 8 MiB of slack over `max` so a
        // block is never cut short by the cap (the cap is checked after).
        if (out_reserve(o, lz4_block_size) < lz4_block_size) return out_full_status(o);
        int n = LZ4_decompress_safe((const char *)(in + pos + 4), (char *)(o->data + o->len),
                                    (int)chunk, (int)lz4_block_size);
        if (n < 0) return PVH_DECOMPRESS_CORRUPT;
        o->len += (size_t)n;
        if (o->len > o->max) return PVH_DECOMPRESS_TOO_LARGE;
        pos += 4 + chunk;
        blocks++;
    }
    return PVH_DECOMPRESS_OK;
}

// MARK: zstd

static int is_zstd_frame(const uint8_t *p) {
    uint32_t m = le32(p);
    // ZSTD_MAGICNUMBER, or a skippable frame (ZSTD_MAGIC_SKIPPABLE_START..+15).
    return m == ZSTD_MAGICNUMBER || (m & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START;
}

static int run_zstd(struct pvh_decompress_output *o, const uint8_t *in, size_t in_len) {
    ZSTD_DStream *ds = ZSTD_createDStream();
    if (!ds) return PVH_DECOMPRESS_NO_MEMORY;
    if (ZSTD_isError(ZSTD_initDStream(ds))) { ZSTD_freeDStream(ds); return PVH_DECOMPRESS_NO_MEMORY; }
    ZSTD_inBuffer src = {in, in_len, 0};
    int status = PVH_DECOMPRESS_OK;
    for (;;) {
        size_t room = out_reserve(o, initial_capacity);
        if (room == 0) { status = out_full_status(o); break; }
        ZSTD_outBuffer dst = {o->data + o->len, room, 0};
        size_t rc = ZSTD_decompressStream(ds, &dst, &src);
        o->len += dst.pos;
        if (ZSTD_isError(rc)) {
            status = ZSTD_getErrorCode(rc) == ZSTD_error_memory_allocation ? PVH_DECOMPRESS_NO_MEMORY
                                                                            : PVH_DECOMPRESS_CORRUPT;
            break;
        }
        if (rc == 0) {
            // A frame is complete and flushed: continue only into another frame;
            // anything else (the kernel's appended size) is trailing data.
            if (src.size - src.pos >= 4 && is_zstd_frame(in + src.pos)) continue;
            break;
        }
        if (src.pos == src.size && dst.pos < dst.size) { status = PVH_DECOMPRESS_TRUNCATED; break; }
    }
    ZSTD_freeDStream(ds);
    return status;
}

// MARK: API

int pvh_decompress(int format, const uint8_t *input, size_t input_len, size_t max_output,
                   pvh_decompress_output **result) {
    if (!result) return PVH_DECOMPRESS_UNSUPPORTED;
    *result = NULL;
    if (!input && input_len) return PVH_DECOMPRESS_CORRUPT;
    struct pvh_decompress_output *o = calloc(1, sizeof *o);
    if (!o) return PVH_DECOMPRESS_NO_MEMORY;
    o->max = max_output;
    o->limit = sat_add(max_output, format == PVH_COMPRESSION_LZ4_LEGACY ? lz4_block_size : 1);
    // The kernel build appends the uncompressed size (4 bytes LE) to every
    // payload (arch/x86/boot/compressed/Makefile, size_append). Used only as
    // a first allocation, so the output is not grown and copied ~log2(n)
    // times; believed only within 64x the input and the output limit.
    if (input_len >= 4) {
        size_t hint = le32(input + input_len - 4);
        if (hint >= input_len && hint / 64 <= input_len && hint <= max_output) {
            size_t slack = format == PVH_COMPRESSION_LZ4_LEGACY ? lz4_block_size : initial_capacity;
            (void)out_reserve(o, sat_add(hint, slack));
        }
    }
    int status;
    switch (format) {
    case PVH_COMPRESSION_GZIP: status = run_gzip(o, input, input_len); break;
    case PVH_COMPRESSION_XZ: status = run_lzma(o, input, input_len, 0); break;
    case PVH_COMPRESSION_LZMA: status = run_lzma(o, input, input_len, 1); break;
    case PVH_COMPRESSION_BZIP2: status = run_bzip2(o, input, input_len); break;
    case PVH_COMPRESSION_LZ4_LEGACY: status = run_lz4_legacy(o, input, input_len); break;
    case PVH_COMPRESSION_ZSTD: status = run_zstd(o, input, input_len); break;
    default: status = PVH_DECOMPRESS_UNSUPPORTED; break;
    }
    if (status == PVH_DECOMPRESS_OK && o->len > o->max) status = PVH_DECOMPRESS_TOO_LARGE;
    if (status != PVH_DECOMPRESS_OK) {
        pvh_decompress_output_free(o);
        return status;
    }
    *result = o;
    return PVH_DECOMPRESS_OK;
}

size_t pvh_decompress_output_size(const pvh_decompress_output *output) {
    return output ? output->len : 0;
}

void pvh_decompress_output_copy(const pvh_decompress_output *output, uint8_t *dst, size_t dst_len) {
    if (!output || !dst) return;
    size_t n = dst_len < output->len ? dst_len : output->len;
    if (n) memcpy(dst, output->data, n);
}

void pvh_decompress_output_free(pvh_decompress_output *output) {
    if (!output) return;
    free(output->data);
    free(output);
}
