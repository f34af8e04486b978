// C shim for the host-I/O layer: the Linux file APIs Swift's Glibc module
// does not export without _GNU_SOURCE (fallocate's hole punching, O_DIRECT),
// the block-device ioctls (variadic ioctl(2) cannot be called from Swift,
// and their numbers are _IO macros), and liburing's static inline helpers.
// The ring is opaque here: only shim.c sees liburing's structures, so Swift
// never touches a submission or completion queue entry.
#ifndef PVH_CHOSTIO_H
#define PVH_CHOSTIO_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): 0, or -errno.
int pvh_punch_hole(int fd, int64_t offset, int64_t length);

/// The most iovecs one preadv/pwritev takes (IOV_MAX, limits.h).
int pvh_iov_max(void);

/// O_DIRECT (fcntl.h, _GNU_SOURCE only).
int pvh_o_direct(void);

/// major(3)/minor(3) of a device number (sys/sysmacros.h).
unsigned pvh_dev_major(dev_t dev);
unsigned pvh_dev_minor(dev_t dev);

/// statx(STATX_DIOALIGN) (Linux 6.1): the file offset alignment O_DIRECT
/// needs, in *offset_align (0 when the file system does not say). 0 or -errno.
int pvh_dio_offset_alignment(int fd, uint32_t *offset_align);

// Block devices (linux/fs.h). Each returns 0 or -errno.

/// BLKGETSIZE64: the device's size in bytes.
int pvh_block_size_bytes(int fd, uint64_t *size);
/// BLKSSZGET: the logical sector size (the unit of addressing and O_DIRECT).
int pvh_block_logical_sector_size(int fd, int *size);
/// BLKPBSZGET: the physical sector size (the unit the device writes atomically).
int pvh_block_physical_sector_size(int fd, unsigned *size);
/// BLKDISCARD on [offset, offset + length): both multiples of 512.
int pvh_block_discard(int fd, uint64_t offset, uint64_t length);

// io_uring through liburing (io_uring(7), io_uring_enter(2)).

struct io_uring;

/// io_uring_queue_init(entries, 0) into a new ring: the ring, or NULL with
/// *error set to the (positive) errno: ENOSYS without io_uring, EPERM when
/// kernel.io_uring_disabled or a seccomp filter refuses it, ENOMEM.
struct io_uring *pvh_uring_create(unsigned entries, int *error);
/// io_uring_queue_exit and free. Outstanding requests are the caller's.
void pvh_uring_destroy(struct io_uring *ring);
/// The submission queue's size (entries rounded up to a power of two).
unsigned pvh_uring_sq_entries(const struct io_uring *ring);
/// The completion queue's size (twice the submission queue's by default).
unsigned pvh_uring_cq_entries(const struct io_uring *ring);
/// 1 when the kernel supports every opcode the block engine uses (READV,
/// WRITEV, FSYNC, FALLOCATE, NOP), else 0 (io_uring_get_probe_ring).
int pvh_uring_supports_block_ops(struct io_uring *ring);
/// Entries prepared but not yet taken by the kernel (io_uring_sq_ready).
unsigned pvh_uring_sq_unconsumed(const struct io_uring *ring);

/// Each prep gets an entry (io_uring_get_sqe), prepares it and sets its
/// user data (io_uring_sqe_set_data64): 0, or -EBUSY when the submission
/// queue is full. `iov` must stay valid until the request's completion.
int pvh_uring_prep_readv(struct io_uring *ring, int fd, const struct iovec *iov, unsigned count, uint64_t offset, uint64_t user_data);
int pvh_uring_prep_writev(struct io_uring *ring, int fd, const struct iovec *iov, unsigned count, uint64_t offset, uint64_t user_data);
/// IORING_OP_FSYNC with IORING_FSYNC_DATASYNC: fdatasync(2).
int pvh_uring_prep_fdatasync(struct io_uring *ring, int fd, uint64_t user_data);
/// IORING_OP_FALLOCATE with FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE.
int pvh_uring_prep_punch_hole(struct io_uring *ring, int fd, uint64_t offset, uint64_t length, uint64_t user_data);
/// IORING_OP_NOP: a completion with result 0, to wake the reaper.
int pvh_uring_prep_nop(struct io_uring *ring, uint64_t user_data);

/// io_uring_submit: entries the kernel took, or -errno.
int pvh_uring_submit(struct io_uring *ring);

/// Waits for at least one completion (io_uring_wait_cqe), then copies up to
/// `max` of the ready ones into `user_data`/`result` (result: the byte count
/// or -errno, as io_uring_enter(2) says) and marks them seen
/// (io_uring_cq_advance): their count, or -errno (-EINTR on a signal).
int pvh_uring_reap(struct io_uring *ring, uint64_t *user_data, int32_t *result, unsigned max);

#endif
