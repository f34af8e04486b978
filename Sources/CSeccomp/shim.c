#define _GNU_SOURCE
#include "CSeccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <linux/sockios.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
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

int pvh_seccomp_allow_masked2(const char *name, unsigned arg_a, uint64_t mask_a, uint64_t value_a,
                              unsigned arg_b, uint64_t mask_b, uint64_t value_b) {
    int nr = resolve(name);
    if (!building) return -EINVAL;
    if (nr < 0) return nr;
    if (arg_a > 5 || arg_b > 5 || arg_a == arg_b) return -EINVAL;
    return seccomp_rule_add(building, SCMP_ACT_ALLOW, nr, 2, SCMP_CMP(arg_a, SCMP_CMP_MASKED_EQ, mask_a, value_a),
                            SCMP_CMP(arg_b, SCMP_CMP_MASKED_EQ, mask_b, value_b));
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

// The vCPU threads' filter as a finished BPF program: built and exported
// by the set-up thread before the process filter (which forbids the
// memfd_create used here), written once, then only read by the vCPU
// threads, each started after it is written (pthread_create orders them).
static struct sock_filter *thread_program;
static unsigned short thread_program_length;

int pvh_seccomp_keep_for_threads(void) {
    if (!building) return -EINVAL;
    int r = 0;
    // libseccomp 2.5 exports a program only to a descriptor
    // (seccomp_export_bpf); a memfd holds it while it is read back.
    int fd = memfd_create("pvh-vcpu-filter", MFD_CLOEXEC);
    if (fd < 0) r = -errno;
    if (!r) r = seccomp_export_bpf(building, fd);
    off_t size = r ? 0 : lseek(fd, 0, SEEK_END);
    if (!r && (size <= 0 || size % sizeof(struct sock_filter) != 0 || size / sizeof(struct sock_filter) > BPF_MAXINSNS)) r = -EINVAL;
    struct sock_filter *program = NULL;
    if (!r && !(program = malloc((size_t)size))) r = -ENOMEM;
    if (!r && pread(fd, program, (size_t)size, 0) != size) r = -EIO;
    if (fd >= 0) close(fd);
    seccomp_release(building);
    building = NULL;
    if (r) {
        free(program);
        return r;
    }
    free(thread_program);
    thread_program = program;
    thread_program_length = (unsigned short)(size / sizeof(struct sock_filter));
    return 0;
}

int pvh_seccomp_load_kept_into_thread(void) {
    if (!thread_program) return -ENOENT;
    struct sock_fprog program = { .len = thread_program_length, .filter = thread_program };
    // seccomp(2) without SECCOMP_FILTER_FLAG_TSYNC: this thread only (and
    // any it would make). no_new_privs is already set for every thread by
    // the process filter's load (TSYNC sets it on each), so this needs no
    // prctl, which the process filter forbids.
    return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &program) == 0 ? 0 : -errno;
}

int pvh_seccomp_has_kept_program(void) { return thread_program != NULL; }

// The KVM requests a vCPU thread makes once its guest runs (docs/
// ARCHITECTURE.md: Sandbox, measured with strace over the KVM scenarios):
// its own vCPU's run and state (and another's, for VCPUOP_initialise and
// the SIGUSR1 dump), the VM's MSI injection and memory slots (shared_info
// and grant frames placed by XENMEM_add_to_physmap), the TSC rate. Not
// here: creating VMs and vCPUs, CPUID, capabilities, the MSR filter and
// the Xen HVM config, all set up before the first vCPU runs.
static const unsigned long vcpu_ioctls[] = {
    KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_GET_MSRS, KVM_SET_MSRS,
    KVM_GET_MP_STATE, KVM_SET_MP_STATE, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_GET_LAPIC, KVM_SET_LAPIC,
    KVM_GET_FPU, KVM_GET_DEBUGREGS, KVM_SET_GUEST_DEBUG, KVM_INTERRUPT, KVM_SET_SIGNAL_MASK, KVM_SIGNAL_MSI,
    KVM_SET_USER_MEMORY_REGION, KVM_GET_TSC_KHZ,
};

unsigned pvh_vcpu_ioctl_count(void) { return sizeof vcpu_ioctls / sizeof vcpu_ioctls[0]; }
uint64_t pvh_vcpu_ioctl_request(unsigned index) { return index < pvh_vcpu_ioctl_count() ? vcpu_ioctls[index] : 0; }
unsigned pvh_seccomp_set_mode_filter(void) { return SECCOMP_SET_MODE_FILTER; }
uint64_t pvh_prot_exec(void) { return PROT_EXEC; }
uint64_t pvh_at_empty_path(void) { return AT_EMPTY_PATH; }

int pvh_issue_vcpu_forbidden_syscall(void) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    close(fd);
    return 0;
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

int pvh_process_id(void) { return getpid(); }
