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

/// Makes `name` fail with `error` (an errno) instead of killing: clone3,
/// whose flags sit behind a pointer a filter cannot read, answers ENOSYS so
/// glibc falls back to clone, whose flags it can.
int pvh_seccomp_fail(const char *name, int error);

/// Loads the filter into every thread of the process (SECCOMP_FILTER_FLAG_TSYNC)
/// after PR_SET_NO_NEW_PRIVS, and releases it. 0 or -errno.
int pvh_seccomp_load(void);

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

/// SIGSYS (signal.h): the signal the kernel kills a process with for a
/// filtered system call under SCMP_ACT_KILL_PROCESS.
int pvh_sigsys(void);

#endif
