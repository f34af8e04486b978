#include "pvh_kvm.h"
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <errno.h>

void pvh_kvm_run_set_immediate_exit(struct kvm_run *run, uint8_t value) {
    __atomic_store_n(&run->immediate_exit, value, __ATOMIC_SEQ_CST);
}

uint8_t pvh_kvm_run_emulation_insn(const struct kvm_run *run, uint8_t out[15]) {
    if (run->exit_reason != KVM_EXIT_INTERNAL_ERROR) return 0;
    if (run->emulation_failure.suberror != KVM_INTERNAL_ERROR_EMULATION) return 0;
    // ndata counts u64 words after suberror/ndata: flags, then insn_size+bytes (2 words).
    if (run->emulation_failure.ndata < 3) return 0;
    if (!(run->emulation_failure.flags & KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES)) return 0;
    uint8_t n = run->emulation_failure.insn_size;
    if (n > 15) n = 15;
    memcpy(out, run->emulation_failure.insn_bytes, n);
    return n;
}

static void pvh_kick_noop(int signo) { (void)signo; }

int pvh_vcpu_kick_signal(void) { return SIGRTMIN; }

int pvh_install_kick_handler(int signo) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = pvh_kick_noop;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART: KVM_RUN must return EINTR
    return sigaction(signo, &sa, NULL);
}

unsigned long pvh_pthread_self(void) { return (unsigned long)pthread_self(); }
int pvh_pthread_kill(unsigned long thread, int signo) { return pthread_kill((pthread_t)thread, signo); }

int pvh_prepare_kick_thread(int signo, uint64_t *kernel_mask) {
    sigset_t block, current;
    sigemptyset(&block);
    sigaddset(&block, signo);
    int r = pthread_sigmask(SIG_BLOCK, &block, &current);
    if (r != 0) return r;
    sigdelset(&current, signo);
    // glibc's sigset_t starts with the kernel's 64-bit mask (signal n is bit n-1).
    uint64_t mask = 0;
    memcpy(&mask, &current, sizeof mask);
    *kernel_mask = mask;
    return 0;
}

void pvh_consume_kick_signal(int signo) {
    sigset_t pending, only;
    for (;;) {
        if (sigpending(&pending) != 0 || !sigismember(&pending, signo)) return;
        sigemptyset(&only);
        sigaddset(&only, signo);
        struct timespec zero = {0, 0};
        if (sigtimedwait(&only, NULL, &zero) < 0 && errno != EINTR) return;
    }
}
