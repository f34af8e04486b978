/*
 * pvh test guest: shared declarations.
 *
 * Xen's public headers define the ABI; we include them rather than re-type
 * anything. They need <stdint.h> types and __XEN_INTERFACE_VERSION__ (set on
 * the compiler command line, see Makefile).
 */
#ifndef PVH_TESTGUEST_H
#define PVH_TESTGUEST_H

#include <stdint.h>
#include <stddef.h>
#include <stdarg.h>

#include <xen/xen.h>
#include <xen/errno.h>
#include <xen/version.h>
#include <xen/sched.h>
#include <xen/memory.h>
#include <xen/vcpu.h>
#include <xen/hvm/hvm_op.h>
#include <xen/hvm/params.h>
#include <xen/arch-x86/cpuid.h>
#include <xen/arch-x86/hvm/start_info.h>

#include "asm.h"

#define PAGE_SIZE 4096UL
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- lib.c: string and formatting helpers (no libc) ---- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strncmp(const char *a, const char *b, size_t n);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Formats a scenario failure reason (returned to the runner). */
const char *fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- hypercall.c: transports, console, CPU helpers ---- */
enum transport { TRANSPORT_PAGE, TRANSPORT_VMCALL };
extern enum transport transport;

uint32_t xen_cpuid_base(void);
void hypercall_init(uint32_t cpuid_base);
long hypercall(unsigned int nr, unsigned long a1, unsigned long a2,
	       unsigned long a3, unsigned long a4, unsigned long a5);

#define HC2(nr, a1, a2)     hypercall(nr, (unsigned long)(a1), (unsigned long)(a2), 0, 0, 0)
#define HC3(nr, a1, a2, a3) hypercall(nr, (unsigned long)(a1), (unsigned long)(a2), \
				      (unsigned long)(a3), 0, 0)
#define xen_version(cmd, arg)       HC2(__HYPERVISOR_xen_version, cmd, arg)
#define console_io(cmd, len, buf)   HC3(__HYPERVISOR_console_io, cmd, len, buf)
#define memory_op(cmd, arg)         HC2(__HYPERVISOR_memory_op, cmd, arg)
#define sched_op(cmd, arg)          HC2(__HYPERVISOR_sched_op, cmd, arg)
#define vcpu_op(cmd, vcpu, arg)     HC3(__HYPERVISOR_vcpu_op, cmd, vcpu, arg)
#define hvm_op(cmd, arg)            HC2(__HYPERVISOR_hvm_op, cmd, arg)

void console_write(const char *s, size_t len);
void printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void e9_write(const char *s, size_t len);
void shutdown(unsigned int reason) __attribute__((noreturn));

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void cpuid(uint32_t leaf, uint32_t *a, uint32_t *b,
			 uint32_t *c, uint32_t *d)
{
	__asm__ volatile("cpuid"
			 : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d)
			 : "a"(leaf), "c"(0));
}

/* ---- main.c ---- */
struct exc_frame;
void pvh_main(uint32_t start_info_pa);			/* from head.S */
void exception_fatal(const struct exc_frame *f);	/* from head.S */
extern const struct hvm_start_info *start_info;
/* Physical memory below 4 GiB is identity mapped (head.S). */
static inline int phys_ok(uint64_t pa, uint64_t len)
{
	return pa != 0 && pa < (1ULL << 32) && len <= (1ULL << 32) - pa;
}
#define PHYS(pa) ((void *)(uintptr_t)(pa))

/* ---- scenarios.c ---- */
struct scenario {
	const char *name;
	/* NULL on success, else a short reason (may be a static buffer). */
	const char *(*run)(void);
};
extern const struct scenario scenarios[];
extern const size_t nr_scenarios;
/* Run only when named (pvh.scenarios=bench_...): timing loops for benchmarks. */
extern const struct scenario bench_scenarios[];
extern const size_t nr_bench_scenarios;
extern const struct scenario acpi_scenarios[];
extern const size_t nr_acpi_scenarios;
void acpi_poweroff(void);
/* Xen event/time/SMP/console scenarios (events.c), also run only when named. */
extern const struct scenario xen_scenarios[];
extern const size_t nr_xen_scenarios;
const char *cmdline_opt(const char *key, size_t *len);
/* main.c: text appended to the scenario's next PASS line ("PVHTEST <name> PASS <note>"). */
void pass_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* main.c: report <name>'s result now (with the pending pass_note); counted in the summary. */
void scenario_result(const char *name, const char *reason);
/* main.c: report <name>'s result (none if name is NULL) and the summary now, then SCHEDOP_shutdown(reason). */
void finish_now(const char *name, const char *reason, unsigned int shutdown_reason)
	__attribute__((noreturn));
void idt_init(void);
void idt_load(void);
void idt_set_gate(unsigned vec, uint64_t handler);

/* ---- usermode.c: scenario usermode_syscall, run only when named ---- */
extern const struct scenario user_scenarios[];
extern const size_t nr_user_scenarios;

/* ---- events.c ---- */
/* vCPU 0's registered vcpu_info (set once VCPUOP_register_vcpu_info succeeds). */
extern struct vcpu_info *vcpu0_info;
extern int vcpu0_info_registered;
void evtchn_upcall(void);		/* from upcall_entry (head.S) */
void lapic_timer_tick(void);
int lapic_periodic_start(uint32_t ns);	/* usermode_syscall_irq */
void lapic_periodic_stop(void);
void lapic_ack(void);		/* from lapic_timer_entry */
/* usermode_syscall_irq with pvh.usys_irq=upcall: VIRQ_TIMER re-armed from its upcall. */
const char *upcall_timer_start(uint64_t period_ns);
void upcall_timer_rearm(void);
void upcall_timer_stop(void);
void ap_main(void) __attribute__((noreturn));	/* from ap_start64 */
void sipi_ap_main(void) __attribute__((noreturn));	/* from ap_sipi64 (smp_sipi) */
/* Shared with xenstore.c (see events.c for what each does). */
const char *xen_setup(void);
int wait_until(int (*cond)(const void *), const void *arg, uint64_t timeout_ms,
	       int use_hlt, uint32_t *wd_ticks);
uint64_t tsc_khz(void);
uint64_t tsc_deadline_ms(uint64_t ms);
int xen_domid(void);
long evtchn_send(uint32_t port);
const char *hvm_get_param(uint32_t index, uint64_t *value);
unsigned long opt_num(const char *key, unsigned long def);
uint32_t evtchn_port_hits(uint32_t port);
/* Waits (hlt, upcalls on) up to ms for the port's hits to reach want; 1 if they did. */
int evtchn_wait_port_hits(uint32_t port, uint32_t want, uint64_t ms);

/* ---- xenstore.c ---- */
extern const struct scenario xenstore_scenarios[];
extern const size_t nr_xenstore_scenarios;
/*
 * The XenStore client for other files: paths relative to the domain's home
 * unless absolute; 0 OK, 1 XS_ERROR, -1 transport failure (xenstore_error()
 * says which); strings valid until the next call. Connects once per boot.
 */
const char *xenstore_connect(void);
const char *xenstore_read(const char *path, uint32_t *len);
int xenstore_write(const char *path, const char *value);
int xenstore_rm(const char *path);
int xenstore_watch(const char *path, const char *token);
int xenstore_unwatch(const char *path, const char *token);
/* The next watch event within ms: 1 (path/token set), 0 timeout, -1 broken. */
int xenstore_wait_watch(const char **path, const char **token, uint64_t ms);
const char *xenstore_error(void);
const char *xenstore_directory(const char *path, uint32_t *len);	/* NUL-separated names */
int xenstore_transaction_start(uint32_t *tx);
int xenstore_transaction_end(uint32_t tx, int commit);	/* 1 + xenstore_error() "EAGAIN": retry */
int xenstore_write_tx(uint32_t tx, const char *path, const char *value);
int xenstore_raw(uint32_t type, uint32_t tx, const void *payload, uint32_t len, uint32_t *rtype);

/* ---- grants.c: grant-table scenarios, run only when named ---- */
extern const struct scenario grant_scenarios[];
extern const size_t nr_grant_scenarios;
/* v1 grants for blkfront.c (grant_ref_t is uint32_t). */
const char *gnttab_frontend_ready(void);
void gnttab_grant_ref(uint32_t ref, domid_t dom, uint64_t gfn, int readonly);
int gnttab_end_ref(uint32_t ref, uint16_t *flags);
void gnttab_raw_v1(uint32_t ref, uint16_t flags, domid_t dom, uint32_t frame);

/* ---- blkfront.c: block frontend scenarios, run only when named ---- */
extern const struct scenario blk_scenarios[];
extern const size_t nr_blk_scenarios;

/* ---- netfront.c: network frontend scenarios, run only when named ---- */
extern const struct scenario net_scenarios[];
extern const size_t nr_net_scenarios;

/* ---- hostile.c: scenario hostile_storm, run only when named ---- */
extern const struct scenario hostile_scenarios[];
extern const size_t nr_hostile_scenarios;
/* blkfront.c's part of it: disk A takes malformed requests, disk B stays healthy. */
const char *blk_hostile_open(uint32_t seed, unsigned *vdev_a, unsigned *vdev_b);
const char *blk_hostile_batch(uint64_t (*rnd)(void), unsigned *sent);
const char *blk_hostile_close(uint32_t seed, unsigned *a_state);
/* netfront.c, for hostile.c: garbage on the first vif, then the fatal cases. */
struct net_hostile_counts {
	uint32_t tx_packets, tx_errors, tx_okay;	/* garbage TX packets; their slots' statuses */
	uint32_t rx_garbage, rx_refused, rx_other, rx_good;	/* garbage RX requests; responses */
};
const char *net_hostile_open(void);
const char *net_hostile_batch(uint64_t (*rnd)(void), struct net_hostile_counts *c);
const char *net_hostile_close(uint64_t (*rnd)(void), unsigned *closed);

/* ---- head.S / hypercall.S ---- */
extern uint8_t hypercall_page[];
extern uint32_t pvh_start_info_pa;
extern uint32_t hc32_ran, hc32_result, hc32_clobbered;
extern volatile uint32_t bp_count, int80_count;
extern volatile uint64_t bp_rip, int80_rip;
extern const uint64_t exc_stubs[32];
void bp_handler(void);
void int80_handler(void);
void xen_hypercall_amd(void);
void xen_hypercall_intel(void);
void *xen_hypercall_setfunc(void);
void upcall_entry(void), lapic_timer_entry(void), spurious_entry(void);
void ap_start32(void);
extern uint8_t ap_stack_top[], xen_shared_info_page[];

#endif
