// KVM additions to the C shim: ioctl request numbers as plain constants (the
// _IO/_IOW macros use sizeof and casts, which Swift cannot import), and a few
// helpers for parts of struct kvm_run that Swift imports awkwardly
// (anonymous unions, fixed arrays) or that are shared with another thread.
// Values come from <linux/kvm.h>; nothing is re-typed by hand.
#ifndef PVH_KVM_H
#define PVH_KVM_H

#include <stdint.h>
#include <linux/kvm.h>

// System ioctls (on the /dev/kvm fd).
static const unsigned long PVH_KVM_GET_API_VERSION = KVM_GET_API_VERSION;
static const unsigned long PVH_KVM_CREATE_VM = KVM_CREATE_VM;
static const unsigned long PVH_KVM_CHECK_EXTENSION = KVM_CHECK_EXTENSION;
static const unsigned long PVH_KVM_GET_VCPU_MMAP_SIZE = KVM_GET_VCPU_MMAP_SIZE;
static const unsigned long PVH_KVM_GET_SUPPORTED_CPUID = KVM_GET_SUPPORTED_CPUID;

// VM ioctls.
static const unsigned long PVH_KVM_CREATE_VCPU = KVM_CREATE_VCPU;
static const unsigned long PVH_KVM_SET_USER_MEMORY_REGION = KVM_SET_USER_MEMORY_REGION;
static const unsigned long PVH_KVM_ENABLE_CAP = KVM_ENABLE_CAP;
static const unsigned long PVH_KVM_X86_SET_MSR_FILTER = KVM_X86_SET_MSR_FILTER;
static const unsigned long PVH_KVM_XEN_HVM_CONFIG = KVM_XEN_HVM_CONFIG;
static const unsigned long PVH_KVM_GET_TSC_KHZ = KVM_GET_TSC_KHZ;
static const unsigned long PVH_KVM_SIGNAL_MSI = KVM_SIGNAL_MSI;

// vCPU ioctls.
static const unsigned long PVH_KVM_RUN = KVM_RUN;
static const unsigned long PVH_KVM_GET_REGS = KVM_GET_REGS;
static const unsigned long PVH_KVM_SET_REGS = KVM_SET_REGS;
static const unsigned long PVH_KVM_GET_SREGS = KVM_GET_SREGS;
static const unsigned long PVH_KVM_SET_SREGS = KVM_SET_SREGS;
static const unsigned long PVH_KVM_SET_CPUID2 = KVM_SET_CPUID2;
static const unsigned long PVH_KVM_SET_GUEST_DEBUG = KVM_SET_GUEST_DEBUG;
static const unsigned long PVH_KVM_GET_DEBUGREGS = KVM_GET_DEBUGREGS;
static const unsigned long PVH_KVM_SET_MSRS = KVM_SET_MSRS;
static const unsigned long PVH_KVM_GET_MSRS = KVM_GET_MSRS;
static const unsigned long PVH_KVM_GET_VCPU_EVENTS = KVM_GET_VCPU_EVENTS;
static const unsigned long PVH_KVM_SET_VCPU_EVENTS = KVM_SET_VCPU_EVENTS;
static const unsigned long PVH_KVM_SET_SIGNAL_MASK = KVM_SET_SIGNAL_MASK;
static const unsigned long PVH_KVM_GET_MP_STATE = KVM_GET_MP_STATE;
static const unsigned long PVH_KVM_GET_FPU = KVM_GET_FPU;
static const unsigned long PVH_KVM_SET_MP_STATE = KVM_SET_MP_STATE;
static const unsigned long PVH_KVM_INTERRUPT = KVM_INTERRUPT;
static const unsigned long PVH_KVM_GET_LAPIC = KVM_GET_LAPIC;
static const unsigned long PVH_KVM_SET_LAPIC = KVM_SET_LAPIC;

/// Local APIC register offsets and bits the VMM reads or sets through
/// KVM_GET_LAPIC/KVM_SET_LAPIC (Intel SDM Vol. 3 §11.4.1 table 11-1, §11.5.1).
enum {
    PVH_APIC_LVT0_OFFSET = 0x350,
    PVH_APIC_LVT_MASKED = 1 << 16,
    PVH_APIC_LVT_DELIVERY_MODE_MASK = 7 << 8,
    PVH_APIC_DM_EXTINT = 7 << 8,
    PVH_MSR_APIC_BASE_ENABLE = 1 << 11,
};

/// Stores `value` into run->immediate_exit with a real atomic store: another
/// thread (VCPU.kick) writes it while the vCPU thread may be entering KVM_RUN.
void pvh_kvm_run_set_immediate_exit(struct kvm_run *run, uint8_t value);

/// For KVM_EXIT_INTERNAL_ERROR / KVM_INTERNAL_ERROR_EMULATION with
/// KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES: copies up to 15
/// instruction bytes into `out` and returns how many; 0 when the exit
/// carries none.
uint8_t pvh_kvm_run_emulation_insn(const struct kvm_run *run, uint8_t out[15]);

/// The signal that kicks a vCPU thread out of KVM_RUN: the first real-time
/// signal glibc leaves to applications (SIGRTMIN is a function of the C
/// library, not a constant). Not SIGUSR1, which `pvh run` leaves to the
/// user (`kill -USR1` dumps the vCPUs): a process-directed SIGUSR1 reached
/// whichever vCPU thread sat in KVM_RUN with it unblocked and was taken for
/// a kick, so dumps were lost.
int pvh_vcpu_kick_signal(void);

/// Installs a no-op handler for `signo` without SA_RESTART (so a blocked
/// KVM_RUN returns EINTR). Returns 0 or -1 with errno.
int pvh_install_kick_handler(int signo);

/// Prepares the calling thread for kicks: blocks `signo` in the thread's
/// own mask (so the kick signal cannot interrupt its ordinary syscalls) and
/// stores in `*kernel_mask` that mask with `signo` removed, in the kernel's
/// 64-bit sigset layout, for KVM_SET_SIGNAL_MASK (the mask in force only
/// while inside KVM_RUN). Returns 0 or an errno value.
int pvh_prepare_kick_thread(int signo, uint64_t *kernel_mask);

/// Consumes a pending `signo` of the calling thread, if any (sigtimedwait
/// with a zero timeout). KVM_RUN unblocks the kick signal only while it
/// runs and restores the mask before returning, so a kick that made it
/// return EINTR stays pending and would interrupt every later KVM_RUN.
void pvh_consume_kick_signal(int signo);

/// pthread_self() / pthread_kill(), as plain integers (pthread_t is an
/// unsigned long on Linux/glibc).
unsigned long pvh_pthread_self(void);
int pvh_pthread_kill(unsigned long thread, int signo);

/// Byte offset of the sync-register block (kvm_run.s.regs) inside kvm_run.
static const unsigned long PVH_KVM_RUN_SYNC_REGS_OFFSET = __builtin_offsetof(struct kvm_run, s);

/// The host's time-stamp counter (RDTSC). The guest's TSC is this plus the
/// offset KVM applies, which the VMM measures once per domain.
static inline uint64_t pvh_rdtsc(void) { return __builtin_ia32_rdtsc(); }

#endif
