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
/// How a ring's completions that the kernel posts as task_work reach the
/// submitting task (io_uring_setup(2)); PVH_URING_TASKRUN_SIGNAL is 0.
enum {
    /// The kernel interrupts the task (an IPI when it is running) to run
    /// the work at once: io_uring_queue_init's default.
    PVH_URING_TASKRUN_SIGNAL = 0,
    /// IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG: no
    /// interruption; the work runs at the task's next system call, and the
    /// SQ ring's IORING_SQ_TASKRUN flag says some is waiting.
    PVH_URING_TASKRUN_COOPERATIVE = 1,
    /// IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SINGLE_ISSUER |
    /// IORING_SETUP_TASKRUN_FLAG, created disabled (IORING_SETUP_R_DISABLED):
    /// the work waits until the one issuing task (the one that calls
    /// pvh_uring_enable) asks for completions (io_uring_enter with
    /// IORING_ENTER_GETEVENTS); any other task's submit or wait is EEXIST.
    PVH_URING_TASKRUN_DEFERRED = 2,
};
/// pvh_uring_create with a PVH_URING_TASKRUN_* mode.
struct io_uring *pvh_uring_create_taskrun(unsigned entries, int taskrun, int *error);
/// io_uring_enable_rings: a PVH_URING_TASKRUN_DEFERRED ring starts taking
/// submissions, from the calling task only. 0 or -errno.
int pvh_uring_enable(struct io_uring *ring);
/// 1 when task_work for this ring waits for the task to enter the kernel
/// (IORING_SQ_TASKRUN; never set in PVH_URING_TASKRUN_SIGNAL mode).
int pvh_uring_work_pending(const struct io_uring *ring);
/// io_uring_submit_and_get_events: submits what is prepared and runs the
/// ring's waiting task_work (so posts the completions ready) in one
/// io_uring_enter. Entries the kernel took, or -errno.
int pvh_uring_submit_and_get_events(struct io_uring *ring);
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
/// pvh_uring_reap without the wait: copies up to `max` of the completions
/// ready now (possibly none) and marks them seen; their count. When none
/// is posted but IORING_SQ_TASKRUN says task_work waits, it is run first
/// (io_uring_get_events), so those completions count as ready.
int pvh_uring_peek(struct io_uring *ring, uint64_t *user_data, int32_t *result, unsigned max);
/// Waits until a completion is ready or `milliseconds` passed
/// (io_uring_wait_cqe_timeout), consuming nothing: 0, or -errno (-EINTR).
int pvh_uring_wait_timeout(struct io_uring *ring, unsigned milliseconds);
/// Completions ready and not yet seen (io_uring_cq_ready).
unsigned pvh_uring_cq_ready(const struct io_uring *ring);
/// io_uring_register_eventfd: the kernel adds 1 to eventfd `fd` for every
/// completion it posts to the ring. 0 or -errno.
int pvh_uring_register_eventfd(struct io_uring *ring, int fd);

/// Writes `frames` frames to `fd` through `ring`, in order, in one
/// io_uring_enter: frame k is IORING_OP_WRITEV of `counts[k]` vectors
/// starting at `iov + sum(counts[0..<k])`, user data k. Returns once every
/// frame has its completion, its result (bytes written or -errno) in
/// `results[k]`: 0, or -errno when the ring could not take them all (then
/// the frames with `results[k]` == -ECANCELED were not submitted). A
/// completion is waited for in 100 ms slices: the kernel reads the vectors
/// until it posts it, so the function cannot return before. The ring must
/// have room for `frames` entries and nothing else in flight.
int pvh_uring_write_frames(struct io_uring *ring, int fd, const struct iovec *iov, const unsigned *counts,
                           unsigned frames, int32_t *results);

/// eventfd(0, EFD_CLOEXEC), blocking: the fd, or -errno.
int pvh_blocking_eventfd(void);
/// eventfd_read on a blocking eventfd: waits until its counter is non-zero,
/// then resets it (EINTR retried). 0 or -errno.
int pvh_eventfd_wait(int fd);
/// eventfd_write(fd, 1): wakes a waiter, or the next one. 0 or -errno.
int pvh_eventfd_signal(int fd);

// Network links (TAP, passt). The kernel's structures (struct ifreq,
// struct virtio_net_hdr) stay in shim.c: Swift sees plain fields only.

/// What one virtio-net header (include/uapi/linux/virtio_net.h) says, as
/// plain fields; pvh_vnet_header_* convert to and from the kernel's layout.
struct pvh_vnet_offload {
    /// VIRTIO_NET_HDR_F_NEEDS_CSUM: csum_start/csum_offset are meaningful.
    uint8_t needs_checksum;
    /// VIRTIO_NET_HDR_F_DATA_VALID.
    uint8_t data_valid;
    /// PVH_GSO_*.
    uint8_t gso;
    /// VIRTIO_NET_HDR_GSO_ECN was set with a TCP segmentation type.
    uint8_t gso_ecn;
    uint16_t header_length;
    uint16_t segment_size;
    uint16_t checksum_start;
    uint16_t checksum_offset;
};

/// Segmentation types pvh_vnet_offload.gso takes.
enum {
    PVH_GSO_NONE = 0,
    PVH_GSO_TCPV4 = 1,
    PVH_GSO_TCPV6 = 2,
    /// Any other VIRTIO_NET_HDR_GSO_* (UDP, UDP_L4): links do not take it.
    PVH_GSO_OTHER = 3,
};

/// sizeof(struct virtio_net_hdr): 10.
int pvh_vnet_header_size(void);
/// Writes `offload` as a struct virtio_net_hdr into `header`
/// (pvh_vnet_header_size() bytes, native byte order as a legacy TAP reads it).
void pvh_vnet_header_write(void *header, const struct pvh_vnet_offload *offload);
/// Reads a struct virtio_net_hdr from `header` into `offload`.
void pvh_vnet_header_read(const void *header, struct pvh_vnet_offload *offload);

/// Largest interface name, terminator included (IFNAMSIZ).
int pvh_interface_name_size(void);

/// Opens /dev/net/tun (O_RDWR | O_NONBLOCK | O_CLOEXEC) and attaches a TAP
/// named `name` (empty: the kernel picks tapN) with IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR (TUNSETIFF). The name the kernel gave goes into
/// `actual_name` (pvh_interface_name_size() bytes). The fd, or -errno.
int pvh_tap_open(const char *name, char *actual_name);
/// TUNSETVNETHDRSZ to sizeof(struct virtio_net_hdr). 0 or -errno.
int pvh_tap_set_vnet_header_size(int fd);
/// TUNSETOFFLOAD with TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6: the kernel may
/// hand us partial checksums and TCP segmentation (and takes them from us). 0 or -errno.
int pvh_tap_set_offload(int fd);
/// SIOCSIFMTU on interface `name`. 0 or -errno.
int pvh_interface_set_mtu(const char *name, int mtu);
/// SIOCGIFFLAGS then SIOCSIFFLAGS with IFF_UP on interface `name`. 0 or -errno.
int pvh_interface_set_up(const char *name);
/// SIOCBRADDIF: adds interface `name` to the Linux bridge `bridge`. 0 or
/// -errno: -ENODEV when no interface is called `bridge`.
int pvh_bridge_add_interface(const char *bridge, const char *name);

/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK): the fd, or -errno.
int pvh_eventfd(void);

/// mallopt(M_TRIM_THRESHOLD, bytes): glibc keeps up to `bytes` of free
/// memory at the top of an arena instead of giving it back to the kernel
/// (MADV_DONTNEED) and faulting it in again. 0, or -EINVAL when refused.
int pvh_malloc_set_trim_threshold(long bytes);

/// For benchmarks: moves the calling thread into the network namespace
/// named by `namespace_path` (setns(2), CLONE_NEWNET; it stays there) and
/// returns an AF_PACKET raw socket bound to `interface` there for sending
/// IPv4 frames (packet(7)), with PACKET_VNET_HDR when `vnet_header` (a
/// struct virtio_net_hdr before each frame) and PACKET_QDISC_BYPASS.
/// -errno on failure.
int pvh_packet_socket_in_namespace(const char *namespace_path, const char *interface, int vnet_header);

/// sendmsg(fd, iov, MSG_DONTWAIT | MSG_NOSIGNAL): bytes sent, or -errno
/// (-EAGAIN when the socket buffer is full, -EPIPE when the peer is gone,
/// without SIGPIPE).
long pvh_send_vectors(int fd, const struct iovec *iov, int count);

/// posix_spawn(path, argv) with the environment of this process, stdin and
/// stdout on /dev/null, stderr inherited, `child_fd` as the child's
/// `target_fd` (dup2; `child_fd` != `target_fd`), the default disposition
/// of SIGPIPE and an empty signal mask. argv ends with NULL. The pid in
/// *pid: 0, or the (positive) errno, ENOENT when `path` does not exist.
int pvh_spawn_with_fd(const char *path, char *const argv[], int child_fd, int target_fd, pid_t *pid);

/// posix_spawn(path, argv) for a supervised child (the pvh daemon's guest
/// processes): the environment of this process, stdin on /dev/null,
/// stdout and stderr on `log_fd`, every signal's default disposition
/// restored for the ones the parent ignores (SIGPIPE, SIGINT, SIGTERM,
/// SIGUSR1, SIGHUP), an empty signal mask, and a process group of its own
/// (a terminal's ^C to the daemon's group never reaches a guest), or with
/// `new_session` a session of its own (a daemon started on demand: no
/// controlling terminal to lose). Each `child_fds[i]` becomes the child's
/// `target_fds[i]` (`nr_fds` of them, at most 8, targets above 2: the
/// daemon's store connections); every other descriptor is closed in the
/// child, close-on-exec or not (a library's listening socket without the
/// flag would outlive a daemon in its guest processes). With `console_fd` >= 0 the child's stdin and
/// stdout are both on it (one end of the daemon's socketpair: the guest's
/// PV console, xenconsoled's side of it), only stderr on `log_fd`. The pid
/// in *pid: 0, or the (positive) errno.
int pvh_spawn_supervised(const char *path, char *const argv[], int log_fd, int new_session, int console_fd,
                         const int *child_fds, const int *target_fds, unsigned nr_fds, pid_t *pid);

/// pidfd_open(2): a descriptor that polls readable when process `pid` (a
/// child not yet reaped, or any process: a guest process a previous daemon
/// started) exits. The fd, or -errno (-ESRCH: no such process).
int pvh_pidfd_open(pid_t pid);

// The passt spawner (docs/ARCHITECTURE.md: Sandbox). A guest process under
// its seccomp filter may not execve, yet passt must be restarted (it died,
// or a frontend needs another MTU), and a child would inherit the filter.
// So before the filter, the guest process forks a small helper that stays
// outside it: single-threaded, holding no descriptor but its socket and
// stderr, it runs only `program` (fixed at the fork) with passt's options
// from an allow-list (-f, -q, --fd 3, --mtu N, --runas nobody, --address A),
// the request's descriptor as fd 3, and answers the pid. It dies with its
// parent (PR_SET_PDEATHSIG) and when its socket closes, and reaps its
// children, so a passt it started is not the guest process's child: wait4
// answers ECHILD and a pidfd tells its end.

/// Forks the spawner for `program` (an absolute path of at most PATH_MAX-1
/// bytes). *socket: the guest process's end (SOCK_SEQPACKET, close-on-exec).
/// `run_uid`/`run_gid`: the user every passt runs as from its exec (the
/// jail's user: the child sets its groups and ids first, and passt's
/// `--runas` names that user), or UINT32_MAX for passt's own drop from
/// root to nobody. 0 or an errno.
int pvh_spawner_start(const char *program, uint32_t run_uid, uint32_t run_gid, int *socket, pid_t *pid);

/// Asks the spawner at `socket` to run its program with `argv` (argv[0] its
/// path) and `child_fd` as descriptor 3; *pid the new process's. Serialized
/// across threads; the answer is awaited at most 5 s. 0 or an errno (EPERM:
/// the spawner refused the arguments).
int pvh_spawner_request(int socket, char *const argv[], int child_fd, pid_t *pid);

/// pidfd_send_signal(2): `signal` to the process the pidfd names (never to
/// a process that reused its pid). 0 or -errno.
int pvh_pidfd_send_signal(int pidfd, int signal);

/// sendmsg of one byte `tag` with `count` descriptors (at most 8) as
/// SCM_RIGHTS (unix(7)), MSG_NOSIGNAL. 0 or -errno.
int pvh_send_descriptors(int socket, const int *fds, unsigned count, uint8_t tag);

/// recvmsg of one byte into *tag with up to `max` (at most 8) descriptors
/// (SCM_RIGHTS, MSG_CMSG_CLOEXEC) into `fds`: their count (0 if none), or
/// -errno; -EPIPE at end of stream; -EMSGSIZE when more descriptors came
/// than fit (the ones received are closed then).
int pvh_receive_descriptors(int socket, int *fds, unsigned max, uint8_t *tag);

/// SO_PEERCRED of a connected Unix socket: the peer's pid and uid at the
/// time it connected (or the socketpair was made). 0 or -errno.
int pvh_peer_credentials(int socket, pid_t *pid, uid_t *uid);

/// sched_setaffinity(2) of thread `tid` (0: the caller) to the `count`
/// CPUs in `cpus` (each 0 to 8191; a dynamic cpu_set_t, CPU_ALLOC(3),
/// holds them). 0, or -errno (EINVAL: none of them is online; EPERM:
/// another user's thread without CAP_SYS_NICE; ESRCH: no such thread).
int pvh_set_thread_affinity(int tid, const int *cpus, int count);

/// sched_getaffinity(2) of thread `tid` (0: the caller): up to `capacity`
/// CPU numbers into `cpus`, sorted. The number of CPUs, or -errno.
int pvh_get_thread_affinity(int tid, int *cpus, int capacity);

#endif
