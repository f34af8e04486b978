#define _GNU_SOURCE
#include "CSeccomp.h"

#include <errno.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/sockios.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

// One filter at a time, built by the one thread that sets the process up
// (runInForeground, before the first vCPU runs).
static scmp_filter_ctx building;

int pvh_seccomp_begin(int log_only) {
    if (building) seccomp_release(building);
    building = seccomp_init(log_only ? SCMP_ACT_LOG : SCMP_ACT_KILL_PROCESS);
    return building ? 0 : -ENOMEM;
}

static int resolve(const char *name) {
    int nr = seccomp_syscall_resolve_name(name);
    return nr == __NR_SCMP_ERROR ? -EDOM : nr;
}

int pvh_seccomp_allow(const char *name) {
    int nr = resolve(name);
    if (!building) return -EINVAL;
    if (nr < 0) return nr;
    return seccomp_rule_add(building, SCMP_ACT_ALLOW, nr, 0);
}

int pvh_seccomp_allow_masked(const char *name, unsigned arg, uint64_t mask, uint64_t value) {
    int nr = resolve(name);
    if (!building) return -EINVAL;
    if (nr < 0) return nr;
    if (arg > 5) return -EINVAL;
    return seccomp_rule_add(building, SCMP_ACT_ALLOW, nr, 1, SCMP_CMP(arg, SCMP_CMP_MASKED_EQ, mask, value));
}

int pvh_seccomp_fail(const char *name, int error) {
    int nr = resolve(name);
    if (!building) return -EINVAL;
    if (nr < 0) return nr;
    return seccomp_rule_add(building, SCMP_ACT_ERRNO(error), nr, 0);
}

int pvh_seccomp_load(void) {
    if (!building) return -EINVAL;
    // libseccomp sets PR_SET_NO_NEW_PRIVS itself (SCMP_FLTATR_CTL_NNP is on
    // by default); set here too so the order is explicit and checked.
    int r = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 ? 0 : -errno;
    if (!r) r = seccomp_attr_set(building, SCMP_FLTATR_CTL_TSYNC, 1);
    if (!r) r = seccomp_load(building);
    seccomp_release(building);
    building = NULL;
    return r;
}

unsigned pvh_ioctl_type_kvm(void) { return _IOC_TYPE(KVM_RUN); }
unsigned pvh_ioctl_type_tty_tun(void) { return _IOC_TYPE(TUNSETIFF); }
unsigned pvh_ioctl_type_block(void) { return _IOC_TYPE(BLKGETSIZE64); }
// SIOC* numbers are plain constants (0x89xx), not _IOC-encoded: the same byte.
unsigned pvh_ioctl_type_socket(void) { return (SIOCSIFMTU >> 8) & 0xff; }
uint64_t pvh_clone_thread_flag(void) { return CLONE_THREAD; }
int pvh_af_unix(void) { return AF_UNIX; }
int pvh_af_inet(void) { return AF_INET; }
int pvh_af_inet6(void) { return AF_INET6; }

int pvh_drop_capabilities(void) {
    for (int cap = 0; cap <= 63; cap++) {
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EINVAL) break;  // past the kernel's last capability
            if (errno != EPERM) return -errno;  // EPERM: no CAP_SETPCAP (not root): nothing to drop there
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL) return -errno;
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {{0}};
    return syscall(SYS_capset, &header, data) == 0 ? 0 : -errno;
}

int pvh_effective_capability_count(void) {
    struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {{0}};
    if (syscall(SYS_capget, &header, data) != 0) return -errno;
    int count = 0;
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) count += __builtin_popcount(data[i].effective);
    return count;
}

int pvh_issue_forbidden_syscall(void) {
    char *const argv[] = { NULL };
    char *const envp[] = { NULL };
    return syscall(SYS_execve, "/nonexistent/pvh-sandbox-selftest", argv, envp) == 0 ? 0 : -errno;
}

int pvh_sigsys(void) { return SIGSYS; }
