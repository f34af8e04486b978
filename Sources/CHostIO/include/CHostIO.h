// C shim for the host-I/O layer: the Linux file APIs Swift's Glibc module
// does not export without _GNU_SOURCE (fallocate's hole punching), and, in
// the io_uring engine, liburing's static inline helpers.
#ifndef PVH_CHOSTIO_H
#define PVH_CHOSTIO_H

#include <stdint.h>
#include <sys/types.h>

/// fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE): 0, or -errno.
int pvh_punch_hole(int fd, int64_t offset, int64_t length);

/// The most iovecs one preadv/pwritev takes (IOV_MAX, limits.h).
int pvh_iov_max(void);

#endif
