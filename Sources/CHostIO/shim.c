#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <liburing.h>
#include "CHostIO.h"

int pvh_punch_hole(int fd, int64_t offset, int64_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0 ? 0 : -errno;
}

int pvh_iov_max(void) { return IOV_MAX; }

int pvh_o_direct(void) { return O_DIRECT; }

unsigned pvh_dev_major(dev_t dev) { return major(dev); }
unsigned pvh_dev_minor(dev_t dev) { return minor(dev); }

int pvh_dio_offset_alignment(int fd, uint32_t *offset_align) {
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) != 0) return -errno;
    *offset_align = (stx.stx_mask & STATX_DIOALIGN) ? stx.stx_dio_offset_align : 0;
    return 0;
}

int pvh_block_size_bytes(int fd, uint64_t *size) {
    return ioctl(fd, BLKGETSIZE64, size) == 0 ? 0 : -errno;
}

int pvh_block_logical_sector_size(int fd, int *size) {
    return ioctl(fd, BLKSSZGET, size) == 0 ? 0 : -errno;
}

int pvh_block_physical_sector_size(int fd, unsigned *size) {
    return ioctl(fd, BLKPBSZGET, size) == 0 ? 0 : -errno;
}

int pvh_block_discard(int fd, uint64_t offset, uint64_t length) {
    uint64_t range[2] = {offset, length};
    return ioctl(fd, BLKDISCARD, range) == 0 ? 0 : -errno;
}

struct io_uring *pvh_uring_create(unsigned entries, int *error) {
    struct io_uring *ring = calloc(1, sizeof *ring);
    if (!ring) {
        *error = ENOMEM;
        return NULL;
    }
    int r = io_uring_queue_init(entries, ring, 0);
    if (r < 0) {
        free(ring);
        *error = -r;
        return NULL;
    }
    return ring;
}

void pvh_uring_destroy(struct io_uring *ring) {
    io_uring_queue_exit(ring);
    free(ring);
}

unsigned pvh_uring_sq_entries(const struct io_uring *ring) { return ring->sq.ring_entries; }
unsigned pvh_uring_cq_entries(const struct io_uring *ring) { return ring->cq.ring_entries; }

int pvh_uring_supports_block_ops(struct io_uring *ring) {
    // The probe itself needs Linux 5.6, as IORING_OP_FALLOCATE does.
    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
    if (!probe) return 0;
    int ok = io_uring_opcode_supported(probe, IORING_OP_READV) && io_uring_opcode_supported(probe, IORING_OP_WRITEV)
        && io_uring_opcode_supported(probe, IORING_OP_FSYNC) && io_uring_opcode_supported(probe, IORING_OP_FALLOCATE)
        && io_uring_opcode_supported(probe, IORING_OP_NOP);
    io_uring_free_probe(probe);
    return ok;
}

unsigned pvh_uring_sq_unconsumed(const struct io_uring *ring) { return io_uring_sq_ready(ring); }

int pvh_uring_prep_readv(struct io_uring *ring, int fd, const struct iovec *iov, unsigned count, uint64_t offset, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_readv(sqe, fd, iov, count, offset);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int pvh_uring_prep_writev(struct io_uring *ring, int fd, const struct iovec *iov, unsigned count, uint64_t offset, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_writev(sqe, fd, iov, count, offset);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int pvh_uring_prep_fdatasync(struct io_uring *ring, int fd, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int pvh_uring_prep_punch_hole(struct io_uring *ring, int fd, uint64_t offset, uint64_t length, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int pvh_uring_prep_nop(struct io_uring *ring, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return -EBUSY;
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, user_data);
    return 0;
}

int pvh_uring_submit(struct io_uring *ring) { return io_uring_submit(ring); }

int pvh_uring_reap(struct io_uring *ring, uint64_t *user_data, int32_t *result, unsigned max) {
    struct io_uring_cqe *cqe;
    int r = io_uring_wait_cqe(ring, &cqe);
    if (r < 0) return r;
    unsigned head, n = 0;
    io_uring_for_each_cqe(ring, head, cqe) {
        if (n == max) break;
        user_data[n] = io_uring_cqe_get_data64(cqe);
        result[n] = cqe->res;
        n++;
    }
    io_uring_cq_advance(ring, n);
    return (int)n;
}
