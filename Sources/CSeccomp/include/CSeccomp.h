// C shim for pvh's sandbox (issue 13 item 4, docs/ARCHITECTURE.md: Sandbox):
// libseccomp (Debian's libseccomp-dev) to build and load the guest process's
// system-call filter, and the capability calls (linux/capability.h, no
// libcap). The filter being built lives in this file: Swift adds rules by
// system-call name and plain integers and never holds libseccomp's context,
// so the Swift side touches no pointer.
#ifndef PVH_CSECCOMP_H
#define PVH_CSECCOMP_H

#include <stdint.h>

/// Starts a filter whose default action kills the whole process
/// (SCMP_ACT_KILL_PROCESS), or only logs (SCMP_ACT_LOG) when `log_only`.
/// Any filter begun and not loaded is released first. 0 or -errno.
int pvh_seccomp_begin(int log_only);

/// Allows system call `name` (libseccomp's name for this architecture)
/// with any arguments. 0, or -errno (-EDOM: a name libseccomp does not know).
int pvh_seccomp_allow(const char *name);

/// Allows `name` when (argument `arg` & `mask`) == `value`.
int pvh_seccomp_allow_masked(const char *name, unsigned arg, uint64_t mask, uint64_t value);

/// Allows `name` when both (argument `arg_a` & `mask_a`) == `value_a` and
/// (argument `arg_b` & `mask_b`) == `value_b`.
int pvh_seccomp_allow_masked2(const char *name, unsigned arg_a, uint64_t mask_a, uint64_t value_a,
                              unsigned arg_b, uint64_t mask_b, uint64_t value_b);

/// Makes `name` fail with `error` (an errno) instead of killing: clone3,
/// whose flags sit behind a pointer a filter cannot read, answers ENOSYS so
/// glibc falls back to clone, whose flags it can.
int pvh_seccomp_fail(const char *name, int error);

/// Loads the filter into every thread of the process (SECCOMP_FILTER_FLAG_TSYNC)
/// after PR_SET_NO_NEW_PRIVS, and releases it. 0 or -errno.
int pvh_seccomp_load(void);

/// Finishes the filter being built as a BPF program kept for threads to
/// load later (pvh_seccomp_load_kept_into_thread), instead of loading it
/// now, and releases it. Needs memfd_create: before the process filter.
int pvh_seccomp_keep_for_threads(void);

/// Loads the kept program into the calling thread only (seccomp(2),
/// SECCOMP_SET_MODE_FILTER, no TSYNC), stacked on the process filter: the
/// kernel runs both and takes the stricter verdict. -ENOENT if none kept.
int pvh_seccomp_load_kept_into_thread(void);

/// 1 if a program is kept for threads.
int pvh_seccomp_has_kept_program(void);

/// The KVM ioctl requests a vCPU thread may make (linux/kvm.h), by index.
unsigned pvh_vcpu_ioctl_count(void);
uint64_t pvh_vcpu_ioctl_request(unsigned index);
/// SECCOMP_SET_MODE_FILTER (linux/seccomp.h), PROT_EXEC (sys/mman.h),
/// AT_EMPTY_PATH (fcntl.h).
unsigned pvh_seccomp_set_mode_filter(void);
uint64_t pvh_prot_exec(void);
uint64_t pvh_at_empty_path(void);

/// PVH_SANDBOX_SELFTEST=vcpu-forbidden-syscall: on a vCPU thread, one call
/// the process filter allows and the vCPU filter does not (socket(AF_UNIX)).
/// 0 if it succeeded (no vCPU filter), else -errno.
int pvh_issue_vcpu_forbidden_syscall(void);

/// The ioctl request "types" (_IOC_TYPE, the second byte) the guest
/// process uses: KVM (KVMIO), TUN and terminals ('T': TUNSETIFF, TCGETS,
/// FIONBIO, FIONREAD), block devices (0x12: BLKGETSIZE64, BLKDISCARD) and
/// the socket interface requests (0x89: SIOCSIFMTU, SIOCGIFINDEX,
/// SIOCBRADDIF), from the kernel's headers.
unsigned pvh_ioctl_type_kvm(void);
unsigned pvh_ioctl_type_tty_tun(void);
unsigned pvh_ioctl_type_block(void);
unsigned pvh_ioctl_type_socket(void);
/// CLONE_THREAD (sched.h): the flag every pthread_create's clone has and a fork's has not.
uint64_t pvh_clone_thread_flag(void);
/// Address families (sys/socket.h).
int pvh_af_unix(void);
int pvh_af_inet(void);
int pvh_af_inet6(void);

/// Drops every capability: the bounding set (PR_CAPBSET_DROP up to the
/// kernel's last), the ambient set, then effective, permitted and
/// inheritable (capset, _LINUX_CAPABILITY_VERSION_3). 0 or -errno.
int pvh_drop_capabilities(void);

/// The number of capabilities left in the effective set (capget), or -errno.
int pvh_effective_capability_count(void);

/// PVH_SANDBOX_SELFTEST=forbidden-syscall: one system call no guest
/// process makes (execve of a path that does not exist; harmless if no
/// filter is loaded: it fails with ENOENT). Returns -errno.
int pvh_issue_forbidden_syscall(void);

/// getpid(2): the tgid a vCPU thread's tgkill must name.
int pvh_process_id(void);

/// SIGSYS (signal.h): the signal the kernel kills a process with for a
/// filtered system call under SCMP_ACT_KILL_PROCESS.
int pvh_sigsys(void);

// The jailer (jail.c; docs/ARCHITECTURE.md: Sandbox). Each 0 or -errno.

/// unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS), the host name set
/// to `hostname` (1 to 64 bytes) in the new UTS namespace, and every mount
/// made private (MS_REC): while the process has one thread, so that every
/// thread made later shares them.
int pvh_jail_unshare(const char *hostname);

/// Mounts a small tmpfs (64 KiB, nosuid, nodev, noexec) at `root`, made
/// with its parents if missing: the jail's root to be.
int pvh_jail_mount_root(const char *root);

/// Bind-mounts `source` (a file or a directory) at `target` (inside the
/// jail's root; its mount point and parents made), nosuid and noexec,
/// nodev unless `device`, read-only when `read_only`.
int pvh_jail_bind(const char *source, const char *target, int read_only, int device);

/// A procfs of its own at `target`: hidepid=invisible, subset=pid.
int pvh_jail_mount_proc(const char *target);

/// Makes `root` the root: pivot_root and the old root detached, or when
/// pivot_root fails, MS_MOVE over / and chroot (*used_chroot 1); then the
/// root remounted read-only.
int pvh_jail_pivot(const char *root, int *used_chroot);

/// Drops the whole capability bounding set and the ambient set (needs
/// CAP_SETPCAP: before the ids change).
int pvh_jail_drop_bounding_set(void);

/// setgroups({gid}), setresgid and setresuid to `gid`/`uid`, every thread.
int pvh_jail_set_ids(uint32_t uid, uint32_t gid);

/// The uid and primary gid of user `name` (getpwnam_r); -ENOENT if none.
int pvh_jail_lookup_user(const char *name, uint32_t *uid, uint32_t *gid);

/// Whether `uid` names a user (getpwuid_r: bit 0) and `gid` a group
/// (getgrgid_r: bit 1) in the host's databases, or -errno: a per-guest id
/// must name neither.
int pvh_jail_id_taken(uint32_t uid, uint32_t gid);

/// Makes the next pvh_jail_pivot take its chroot fallback as if
/// pivot_root had failed (PVH_JAIL_SELFTEST=chroot: tests only).
void pvh_jail_force_chroot(int force);

/// open(O_RDONLY), read(2) and close(2), for the Sandbox target, which has
/// no Foundation: the thread count in /proc/self/status.
int pvh_jail_open_read(const char *path);
long pvh_jail_read(int fd, void *buffer, unsigned long count);
void pvh_jail_close(int fd);

#endif
