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
#include <sched.h>
#include <liburing.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <linux/virtio_net.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
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
    return pvh_uring_create_taskrun(entries, PVH_URING_TASKRUN_SIGNAL, error);
}

struct io_uring *pvh_uring_create_taskrun(unsigned entries, int taskrun, int *error) {
    unsigned flags = 0;
    switch (taskrun) {
    case PVH_URING_TASKRUN_COOPERATIVE: flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG; break;
    case PVH_URING_TASKRUN_DEFERRED:
        flags = IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_TASKRUN_FLAG | IORING_SETUP_R_DISABLED;
        break;
    default: break;
    }
    struct io_uring *ring = calloc(1, sizeof *ring);
    if (!ring) {
        *error = ENOMEM;
        return NULL;
    }
    int r = io_uring_queue_init(entries, ring, flags);
    if (r < 0) {
        free(ring);
        *error = -r;
        return NULL;
    }
    return ring;
}

int pvh_uring_enable(struct io_uring *ring) {
    // io_uring_register(2) IORING_REGISTER_ENABLE_RINGS directly: Debian 12's
    // liburing 2.3 declares io_uring_enable_rings but does not export it.
    long r = syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return r < 0 ? -errno : 0;
}

int pvh_uring_work_pending(const struct io_uring *ring) {
    return (IO_URING_READ_ONCE(*ring->sq.kflags) & IORING_SQ_TASKRUN) != 0;
}

int pvh_uring_submit_and_get_events(struct io_uring *ring) { return io_uring_submit_and_get_events(ring); }

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
    return pvh_uring_peek(ring, user_data, result, max);
}

int pvh_uring_peek(struct io_uring *ring, uint64_t *user_data, int32_t *result, unsigned max) {
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    // Cooperative or deferred task_work: completions the kernel has not
    // posted yet are posted by a trip into it (an error, EEXIST from a task
    // that is not a deferred ring's issuer, leaves them for the issuer).
    if (io_uring_cq_ready(ring) == 0 && pvh_uring_work_pending(ring)) (void)io_uring_get_events(ring);
    io_uring_for_each_cqe(ring, head, cqe) {
        if (n == max) break;
        user_data[n] = io_uring_cqe_get_data64(cqe);
        result[n] = cqe->res;
        n++;
    }
    io_uring_cq_advance(ring, n);
    return (int)n;
}

int pvh_uring_wait_timeout(struct io_uring *ring, unsigned milliseconds) {
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts = {.tv_sec = milliseconds / 1000, .tv_nsec = (long long)(milliseconds % 1000) * 1000000};
    int r = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
    return r == -ETIME ? 0 : r;
}

int pvh_uring_write_frames(struct io_uring *ring, int fd, const struct iovec *iov, const unsigned *counts,
                           unsigned frames, int32_t *results) {
    unsigned prepared = 0, at = 0;
    for (unsigned k = 0; k < frames; k++) results[k] = -ECANCELED;
    for (; prepared < frames; prepared++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (!sqe) break;
        io_uring_prep_writev(sqe, fd, iov + at, counts[prepared], 0);
        io_uring_sqe_set_data64(sqe, prepared);
        at += counts[prepared];
    }
    int status = prepared == frames ? 0 : -EBUSY;
    unsigned submitted = 0;
    while (submitted < prepared) {
        int r = io_uring_submit(ring);
        if (r == -EINTR) continue;
        if (r <= 0) {
            if (status == 0) status = r < 0 ? r : -EBUSY;
            break;
        }
        submitted += (unsigned)r;
    }
    // SQEs prepared but not taken stay in the SQ ring for a later submit:
    // none is left behind here unless io_uring_enter failed, and then the
    // ring is not used again (the caller falls back to writev).
    unsigned done = 0;
    while (done < submitted) {
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(ring, head, cqe) {
            uint64_t k = io_uring_cqe_get_data64(cqe);
            if (k < frames) results[k] = cqe->res;
            n++;
        }
        io_uring_cq_advance(ring, n);
        done += n;
        if (done < submitted) {
            struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 100000000};
            (void)io_uring_wait_cqe_timeout(ring, &cqe, &ts);
        }
    }
    return status;
}

unsigned pvh_uring_cq_ready(const struct io_uring *ring) { return io_uring_cq_ready(ring); }

int pvh_uring_register_eventfd(struct io_uring *ring, int fd) { return io_uring_register_eventfd(ring, fd); }

int pvh_blocking_eventfd(void) {
    int fd = eventfd(0, EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int pvh_eventfd_wait(int fd) {
    eventfd_t value;
    while (eventfd_read(fd, &value) != 0) {
        if (errno != EINTR) return -errno;
    }
    return 0;
}

int pvh_eventfd_signal(int fd) { return eventfd_write(fd, 1) == 0 ? 0 : -errno; }

int pvh_vnet_header_size(void) { return (int)sizeof(struct virtio_net_hdr); }

void pvh_vnet_header_write(void *header, const struct pvh_vnet_offload *offload) {
    struct virtio_net_hdr h;
    memset(&h, 0, sizeof h);
    if (offload->needs_checksum) h.flags |= VIRTIO_NET_HDR_F_NEEDS_CSUM;
    if (offload->data_valid) h.flags |= VIRTIO_NET_HDR_F_DATA_VALID;
    switch (offload->gso) {
    case PVH_GSO_TCPV4: h.gso_type = VIRTIO_NET_HDR_GSO_TCPV4; break;
    case PVH_GSO_TCPV6: h.gso_type = VIRTIO_NET_HDR_GSO_TCPV6; break;
    default: h.gso_type = VIRTIO_NET_HDR_GSO_NONE; break;
    }
    if (offload->gso_ecn && h.gso_type != VIRTIO_NET_HDR_GSO_NONE) h.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
    h.hdr_len = offload->header_length;
    h.gso_size = offload->segment_size;
    h.csum_start = offload->checksum_start;
    h.csum_offset = offload->checksum_offset;
    memcpy(header, &h, sizeof h);
}

void pvh_vnet_header_read(const void *header, struct pvh_vnet_offload *offload) {
    struct virtio_net_hdr h;
    memcpy(&h, header, sizeof h);
    memset(offload, 0, sizeof *offload);
    offload->needs_checksum = (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) != 0;
    offload->data_valid = (h.flags & VIRTIO_NET_HDR_F_DATA_VALID) != 0;
    switch (h.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) {
    case VIRTIO_NET_HDR_GSO_NONE: offload->gso = PVH_GSO_NONE; break;
    case VIRTIO_NET_HDR_GSO_TCPV4: offload->gso = PVH_GSO_TCPV4; break;
    case VIRTIO_NET_HDR_GSO_TCPV6: offload->gso = PVH_GSO_TCPV6; break;
    default: offload->gso = PVH_GSO_OTHER; break;
    }
    offload->gso_ecn = (h.gso_type & VIRTIO_NET_HDR_GSO_ECN) != 0;
    offload->header_length = h.hdr_len;
    offload->segment_size = h.gso_size;
    offload->checksum_start = h.csum_start;
    offload->checksum_offset = h.csum_offset;
}

int pvh_interface_name_size(void) { return IFNAMSIZ; }

int pvh_tap_open(const char *name, char *actual_name) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    memcpy(actual_name, ifr.ifr_name, IFNAMSIZ);
    actual_name[IFNAMSIZ - 1] = 0;
    return fd;
}

int pvh_tap_set_vnet_header_size(int fd) {
    int size = (int)sizeof(struct virtio_net_hdr);
    return ioctl(fd, TUNSETVNETHDRSZ, &size) == 0 ? 0 : -errno;
}

int pvh_tap_set_offload(int fd) {
    return ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)) == 0 ? 0 : -errno;
}

/// An AF_INET datagram socket: what the SIOC*IF* requests are made on.
static int control_socket(void) { return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); }

int pvh_interface_set_mtu(const char *name, int mtu) {
    int s = control_socket();
    if (s < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    ifr.ifr_mtu = mtu;
    int r = ioctl(s, SIOCSIFMTU, &ifr) == 0 ? 0 : -errno;
    close(s);
    return r;
}

int pvh_interface_set_up(const char *name) {
    int s = control_socket();
    if (s < 0) return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    int r = ioctl(s, SIOCGIFFLAGS, &ifr) == 0 ? 0 : -errno;
    if (r == 0) {
        ifr.ifr_flags |= IFF_UP;
        r = ioctl(s, SIOCSIFFLAGS, &ifr) == 0 ? 0 : -errno;
    }
    close(s);
    return r;
}

/// SIOCGIFINDEX: the index of interface `name` in *index. 0 or -errno.
static int interface_index(int s, const char *name, int *index) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFINDEX, &ifr) != 0) return -errno;
    *index = ifr.ifr_ifindex;
    return 0;
}

int pvh_bridge_add_interface(const char *bridge, const char *name) {
    int s = control_socket();
    if (s < 0) return -errno;
    int index = 0, bridge_index = 0;
    int r = interface_index(s, name, &index);
    if (r == 0 && interface_index(s, bridge, &bridge_index) != 0) r = -ENODEV;
    if (r == 0) {
        struct ifreq ifr;
        memset(&ifr, 0, sizeof ifr);
        strncpy(ifr.ifr_name, bridge, IFNAMSIZ - 1);
        ifr.ifr_ifindex = index;
        r = ioctl(s, SIOCBRADDIF, &ifr) == 0 ? 0 : -errno;
    }
    close(s);
    return r;
}

int pvh_eventfd(void) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

long pvh_send_vectors(int fd, const struct iovec *iov, int count) {
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = (struct iovec *)iov;
    m.msg_iovlen = (size_t)count;
    ssize_t n = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    return n < 0 ? -errno : (long)n;
}

/* The spawn its callers share: stdin on /dev/null and stdout on `out_fd`
 * (-1: /dev/null), or both on `console_fd` when it is >= 0; stderr on
 * `err_fd` (-1: inherited); each `child_fds[i]` as the child's
 * `target_fds[i]` (`nr_fds` of them); the default disposition of the
 * `reset` signals; an empty signal mask; a process group of its own when
 * `own_group` is 1, a session of its own (no controlling terminal) when 2;
 * with `close_others` every descriptor above the targets closed in the
 * child (posix_spawn_file_actions_addclosefrom_np, glibc 2.34), close-on-exec or not. */
static int spawn_child(const char *path, char *const argv[], int console_fd, int out_fd, int err_fd, const int *child_fds,
                       const int *target_fds, unsigned nr_fds, const int *reset, unsigned nr_reset, int own_group,
                       int close_others, pid_t *pid) {
    extern char **environ;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    int r = posix_spawn_file_actions_init(&actions);
    if (r != 0) return r;
    r = posix_spawnattr_init(&attributes);
    if (r != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return r;
    }
    sigset_t defaults, empty;
    sigemptyset(&defaults);
    for (unsigned i = 0; i < nr_reset; i++) sigaddset(&defaults, reset[i]);
    sigemptyset(&empty);
    short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    if (console_fd >= 0) {
        // File actions run in order: these come before the extra
        // descriptors' dup2s, so a console numbered like a target is read
        // before it is replaced.
        if (!r) r = posix_spawn_file_actions_adddup2(&actions, console_fd, 0);
        if (!r) r = posix_spawn_file_actions_adddup2(&actions, console_fd, 1);
    } else {
        if (!r) r = posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        if (!r) r = out_fd < 0 ? posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
                               : posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
    }
    if (!r && err_fd >= 0) r = posix_spawn_file_actions_adddup2(&actions, err_fd, 2);
    // dup2 to another number clears FD_CLOEXEC on the copy only. A source
    // is first copied (close-on-exec) above every target, so that no dup2
    // overwrites a source a later one reads and none is its own target
    // (where dup2 would leave FD_CLOEXEC set).
    int copies[8];
    unsigned nr_copies = 0;
    int highest = 2;
    for (unsigned i = 0; i < nr_fds; i++) highest = target_fds[i] > highest ? target_fds[i] : highest;
    if (nr_fds > sizeof copies / sizeof copies[0]) r = EINVAL;
    for (unsigned i = 0; !r && i < nr_fds; i++) {
        int copy = fcntl(child_fds[i], F_DUPFD_CLOEXEC, highest + 1);
        if (copy < 0) {
            r = errno;
            break;
        }
        copies[nr_copies++] = copy;
        r = posix_spawn_file_actions_adddup2(&actions, copy, target_fds[i]);
    }
    // A supervised child keeps nothing else: it outlives its parent (a
    // daemon restart), and a listening socket of the parent's it held
    // would take the next daemon's connections and never answer them.
    if (!r && close_others) r = posix_spawn_file_actions_addclosefrom_np(&actions, highest + 1);
    if (!r) r = posix_spawnattr_setsigdefault(&attributes, &defaults);
    if (!r) r = posix_spawnattr_setsigmask(&attributes, &empty);
    if (!r && own_group == 2) {
        flags |= POSIX_SPAWN_SETSID;
    } else if (!r && own_group) {
        r = posix_spawnattr_setpgroup(&attributes, 0);
        flags |= POSIX_SPAWN_SETPGROUP;
    }
    if (!r) r = posix_spawnattr_setflags(&attributes, flags);
    if (!r) r = posix_spawn(pid, path, &actions, &attributes, argv, environ);
    posix_spawnattr_destroy(&attributes);
    posix_spawn_file_actions_destroy(&actions);
    for (unsigned i = 0; i < nr_copies; i++) close(copies[i]);
    return r;
}

int pvh_spawn_with_fd(const char *path, char *const argv[], int child_fd, int target_fd, pid_t *pid) {
    static const int reset[] = { SIGPIPE };
    return spawn_child(path, argv, -1, -1, -1, &child_fd, &target_fd, child_fd >= 0 ? 1 : 0, reset, 1, 0, 0, pid);
}

int pvh_spawn_supervised(const char *path, char *const argv[], int log_fd, int new_session, int console_fd,
                         const int *child_fds, const int *target_fds, unsigned nr_fds, pid_t *pid) {
    static const int reset[] = { SIGPIPE, SIGINT, SIGTERM, SIGUSR1, SIGHUP };
    return spawn_child(path, argv, console_fd, log_fd, log_fd, child_fds, target_fds, nr_fds, reset,
                       sizeof reset / sizeof reset[0], new_session ? 2 : 1, 1, pid);
}

int pvh_pidfd_open(pid_t pid) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : (int)fd;
}

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sched.h>

int pvh_packet_socket_in_namespace(const char *namespace_path, const char *interface, int vnet_header) {
    int ns = open(namespace_path, O_RDONLY | O_CLOEXEC);
    if (ns < 0) return -errno;
    int r = setns(ns, CLONE_NEWNET);
    int e = errno;
    close(ns);
    if (r != 0) return -e;
    int s = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_IP));
    if (s < 0) return -errno;
    int one = 1;
    if (vnet_header && setsockopt(s, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) != 0) goto fail;
    /* Best effort: without it the frames only pass the TAP's qdisc first. */
    (void)setsockopt(s, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof one);
    struct sockaddr_ll address = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP) };
    struct ifreq request = {0};
    strncpy(request.ifr_name, interface, IFNAMSIZ - 1);
    if (ioctl(s, SIOCGIFINDEX, &request) != 0) goto fail;
    address.sll_ifindex = request.ifr_ifindex;
    if (bind(s, (struct sockaddr *)&address, sizeof address) != 0) goto fail;
    return s;
fail:
    e = errno;
    close(s);
    return -e;
}

#include <malloc.h>

int pvh_malloc_set_trim_threshold(long bytes) {
    return mallopt(M_TRIM_THRESHOLD, (int)bytes) == 1 ? 0 : -EINVAL;
}

int pvh_pidfd_send_signal(int pidfd, int signal) {
    return syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0) == 0 ? 0 : -errno;
}

/* Room for 8 descriptors in one control message (CMSG_SPACE is a constant
 * expression only for a constant argument). */
#define PVH_MAX_PASSED_FDS 8

int pvh_send_descriptors(int socket, const int *fds, unsigned count, uint8_t tag) {
    if (count > PVH_MAX_PASSED_FDS) return -EINVAL;
    union {
        char buffer[CMSG_SPACE(sizeof(int) * PVH_MAX_PASSED_FDS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {.iov_base = &tag, .iov_len = 1};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (count > 0) {
        m.msg_control = control.buffer;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * count);
    }
    ssize_t n;
    do n = sendmsg(socket, &m, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : (n < 0 ? -errno : -EIO);
}

int pvh_receive_descriptors(int socket, int *fds, unsigned max, uint8_t *tag) {
    if (max > PVH_MAX_PASSED_FDS) max = PVH_MAX_PASSED_FDS;
    union {
        char buffer[CMSG_SPACE(sizeof(int) * PVH_MAX_PASSED_FDS)];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = tag, .iov_len = 1};
    struct msghdr m;
    memset(&m, 0, sizeof m);
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control.buffer;
    m.msg_controllen = sizeof control.buffer;
    ssize_t n;
    do n = recvmsg(socket, &m, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
    if (n < 0) return -errno;
    if (n == 0) return -EPIPE;
    unsigned got = 0;
    int overflow = (m.msg_flags & MSG_CTRUNC) != 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        unsigned k = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int received[PVH_MAX_PASSED_FDS];
        if (k > PVH_MAX_PASSED_FDS) k = PVH_MAX_PASSED_FDS;
        memcpy(received, CMSG_DATA(c), sizeof(int) * k);
        for (unsigned i = 0; i < k; i++) {
            if (got < max) fds[got++] = received[i];
            else {
                close(received[i]);
                overflow = 1;
            }
        }
    }
    if (overflow) {
        for (unsigned i = 0; i < got; i++) close(fds[i]);
        return -EMSGSIZE;
    }
    return (int)got;
}

int pvh_peer_credentials(int socket, pid_t *pid, uid_t *uid) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -errno;
    *pid = credentials.pid;
    *uid = credentials.uid;
    return 0;
}

// The passt spawner (CHostIO.h). Everything the forked helper runs is
// async-signal-safe (fork(2) in a multi-threaded process): no malloc, no
// stdio, only system calls and hand-written string checks.
#include <pthread.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>

enum { spawner_request_max = 4096, spawner_argv_max = 32 };

static int spawner_streq(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

static int spawner_all_in(const char *s, const char *allowed) {
    if (!*s) return 0;
    for (; *s; s++) {
        const char *a = allowed;
        while (*a && *a != *s) a++;
        if (!*a) return 0;
    }
    return 1;
}

/// passt's options a guest process may ask for: nothing that names a file,
/// a user other than nobody, or a descriptor other than 3.
static int spawner_arguments_allowed(char *const argv[], int argc, const char *program) {
    if (argc < 1 || !spawner_streq(argv[0], program)) return 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (spawner_streq(a, "-f") || spawner_streq(a, "-q")) continue;
        if (i + 1 >= argc) return 0;
        const char *v = argv[++i];
        if (spawner_streq(a, "--fd") && spawner_streq(v, "3")) continue;
        if (spawner_streq(a, "--mtu") && spawner_all_in(v, "0123456789")) continue;
        if (spawner_streq(a, "--runas") && spawner_streq(v, "nobody")) continue;
        if (spawner_streq(a, "--address") && spawner_all_in(v, "0123456789abcdefABCDEF.:")) continue;
        return 0;
    }
    return 1;
}

static void spawner_default_signals(int keep_hup_ignored) {
    struct sigaction dfl = { .sa_handler = SIG_DFL };
    struct sigaction ign = { .sa_handler = SIG_IGN };
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sigaction(sig, sig == SIGHUP && keep_hup_ignored ? &ign : &dfl, NULL);
    }
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, &empty, NULL);
}

/// The user the spawner's passts run as (pvh_spawner_start), and its
/// `UID:GID` for passt's --runas; run_uid (uid_t)-1: passt's own drop.
static uid_t spawner_run_uid = (uid_t)-1;
static gid_t spawner_run_gid = (gid_t)-1;
static char spawner_runas[32];

static void spawner_main(int sock, const char *program) {
    extern char **environ;
    // The guest process ignores SIGHUP when it outlives its daemon; so does
    // its spawner (an orphaned process group with a stopped member gets one).
    spawner_default_signals(1);
    static char buffer[spawner_request_max + 1];
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
        union { struct cmsghdr header; char space[CMSG_SPACE(sizeof(int))]; } control;
        struct iovec vector = { .iov_base = buffer, .iov_len = spawner_request_max };
        struct msghdr message = { .msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.space,
                                  .msg_controllen = sizeof control.space };
        ssize_t n = recvmsg(sock, &message, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) _exit(0);
        int fd = -1;
        struct cmsghdr *c = CMSG_FIRSTHDR(&message);
        if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int))) {
            memcpy(&fd, CMSG_DATA(c), sizeof fd);
        }
        int32_t answer = -EPERM;
        char *argv[spawner_argv_max + 1];
        int argc = 0;
        buffer[n] = 0;
        int well_formed = n > 0 && buffer[n - 1] == 0 && !(message.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
        for (ssize_t i = 0; well_formed && i < n;) {
            if (argc == spawner_argv_max) { well_formed = 0; break; }
            argv[argc++] = buffer + i;
            while (buffer[i]) i++;
            i++;
        }
        argv[argc] = NULL;
        if (fd >= 0 && well_formed && spawner_arguments_allowed(argv, argc, program)) {
            pid_t child = fork();
            if (child == 0) {
                spawner_default_signals(0);
                // dup2 onto 3 replaces the spawner's socket in the child and
                // clears close-on-exec on the copy.
                if (dup2(fd, 3) < 0) _exit(127);
                if (spawner_run_uid != (uid_t)-1) {
                    // The jail's user from the start (raw system calls: this
                    // child has one thread): passt never holds root, and the
                    // jailed guest process, the same user, may signal it.
                    // passt refuses a --runas other than its own user when
                    // it is not root, so the allowed `nobody` becomes it.
                    gid_t groups[1] = { spawner_run_gid };
                    if (syscall(SYS_setgroups, 1, groups) != 0) _exit(126);
                    if (syscall(SYS_setresgid, spawner_run_gid, spawner_run_gid, spawner_run_gid) != 0) _exit(126);
                    if (syscall(SYS_setresuid, spawner_run_uid, spawner_run_uid, spawner_run_uid) != 0) _exit(126);
                    for (int i = 1; i + 1 < argc; i++) {
                        if (spawner_streq(argv[i], "--runas")) argv[i + 1] = spawner_runas;
                    }
                }
                execve(program, argv, environ);
                _exit(127);
            }
            answer = child > 0 ? child : -errno;
        }
        if (fd >= 0) close(fd);
        while (send(sock, &answer, sizeof answer, MSG_NOSIGNAL) < 0 && errno == EINTR) {}
    }
}

int pvh_spawner_start(const char *program, uint32_t run_uid, uint32_t run_gid, int *socket_out, pid_t *pid) {
    static char path[PATH_MAX];
    size_t length = strlen(program);
    if (program[0] != '/' || length >= sizeof path) return EINVAL;
    memcpy(path, program, length + 1);
    if (run_uid != UINT32_MAX) {
        if (run_uid == 0 || run_gid == 0 || run_gid == UINT32_MAX) return EINVAL;
        spawner_run_uid = run_uid;
        spawner_run_gid = run_gid;
        snprintf(spawner_runas, sizeof spawner_runas, "%u:%u", run_uid, run_gid);
    }
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) return errno;
    pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        return e;
    }
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(0);
        // Only the socket (as 3) and stderr stay: an image's descriptor held
        // here would keep its flock after a detach, a console's would keep
        // the daemon from seeing the guest process's end.
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0) _exit(1);
        if (fds[1] != 3 && dup2(fds[1], 3) < 0) _exit(1);
        if (fcntl(3, F_SETFD, FD_CLOEXEC) != 0) _exit(1);
        if (syscall(SYS_close_range, 4, ~0U, 0) != 0) _exit(1);
        spawner_main(3, path);
    }
    close(fds[1]);
    *socket_out = fds[0];
    *pid = child;
    return 0;
}

static pthread_mutex_t spawner_lock = PTHREAD_MUTEX_INITIALIZER;

int pvh_spawner_request(int sock, char *const argv[], int child_fd, pid_t *pid) {
    char buffer[spawner_request_max];
    size_t used = 0;
    for (int i = 0; argv[i]; i++) {
        size_t length = strlen(argv[i]) + 1;
        if (i >= spawner_argv_max || used + length > sizeof buffer) return E2BIG;
        memcpy(buffer + used, argv[i], length);
        used += length;
    }
    union { struct cmsghdr header; char space[CMSG_SPACE(sizeof(int))]; } control;
    memset(&control, 0, sizeof control);
    struct iovec vector = { .iov_base = buffer, .iov_len = used };
    struct msghdr message = { .msg_iov = &vector, .msg_iovlen = 1, .msg_control = control.space,
                              .msg_controllen = sizeof control.space };
    struct cmsghdr *c = CMSG_FIRSTHDR(&message);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &child_fd, sizeof child_fd);
    struct timeval bound = { .tv_sec = 5 };
    pthread_mutex_lock(&spawner_lock);
    int r = setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &bound, sizeof bound) == 0 ? 0 : errno;
    ssize_t n = -1;
    if (!r) {
        while ((n = sendmsg(sock, &message, MSG_NOSIGNAL)) < 0 && errno == EINTR) {}
        if (n < 0) r = errno;
    }
    int32_t answer = 0;
    if (!r) {
        while ((n = recv(sock, &answer, sizeof answer, 0)) < 0 && errno == EINTR) {}
        r = n == (ssize_t)sizeof answer ? 0 : n < 0 ? errno : EPIPE;
    }
    pthread_mutex_unlock(&spawner_lock);
    if (r) return r;
    if (answer < 0) return -answer;
    *pid = answer;
    return 0;
}

// Big enough for any CPU CPUList accepts (DeviceSpecs: at most 8191).
#define PVH_AFFINITY_CPUS 8192

int pvh_set_thread_affinity(int tid, const int *cpus, int count) {
    if (count < 0) return -EINVAL;
    cpu_set_t *set = CPU_ALLOC(PVH_AFFINITY_CPUS);
    if (set == NULL) return -ENOMEM;
    size_t size = CPU_ALLOC_SIZE(PVH_AFFINITY_CPUS);
    CPU_ZERO_S(size, set);
    for (int i = 0; i < count; i++) {
        if (cpus[i] < 0 || cpus[i] >= PVH_AFFINITY_CPUS) { CPU_FREE(set); return -EINVAL; }
        CPU_SET_S((size_t)cpus[i], size, set);
    }
    int r = sched_setaffinity((pid_t)tid, size, set) == 0 ? 0 : -errno;
    CPU_FREE(set);
    return r;
}

int pvh_get_thread_affinity(int tid, int *cpus, int capacity) {
    cpu_set_t *set = CPU_ALLOC(PVH_AFFINITY_CPUS);
    if (set == NULL) return -ENOMEM;
    size_t size = CPU_ALLOC_SIZE(PVH_AFFINITY_CPUS);
    CPU_ZERO_S(size, set);
    if (sched_getaffinity((pid_t)tid, size, set) != 0) { int e = errno; CPU_FREE(set); return -e; }
    int n = 0;
    for (int cpu = 0; cpu < PVH_AFFINITY_CPUS; cpu++) {
        if (!CPU_ISSET_S((size_t)cpu, size, set)) continue;
        if (n < capacity) cpus[n] = cpu;
        n++;
    }
    CPU_FREE(set);
    return n;
}
