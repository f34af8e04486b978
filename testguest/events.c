/*
 * pvh test guest: event channels, PV time and timers, SMP, the PV console
 * ring (issue 3). Run only when named, e.g.
 *
 *   pvh.scenarios=evtchn,timer,pvclock,console_ring,smp
 *   pvh.scenarios=halt_cli   every vCPU halts with interrupts off (never returns)
 *
 * Knobs: pvh.console_input=1 (console_ring waits for one typed line and
 * echoes it), pvh.console_timeout=<ms> (that wait, default 30000),
 * pvh.console_later=<ms> (console_ring writes one more line that long
 * after its hello), pvh.upcall=callback (use only HVM_PARAM_CALLBACK_IRQ, not
 * HVMOP_set_evtchn_upcall_vector).
 *
 * Every wait is bounded by a TSC deadline (TSC kHz from Xen's time leaf,
 * xen/arch-x86/cpuid.h leaf base+3); `hlt` is used only while the local
 * APIC timer runs as a watchdog (and only if it was seen to fire), so a
 * missing hypervisor feature gives "FAIL <reason>", never a hang.
 *
 * Event delivery follows the 2-level ABI as Linux's
 * drivers/xen/events/events_2l.c consumes it; the PV clock follows
 * xen/include/public/xen.h (struct vcpu_time_info) as Linux's pvclock does.
 */
#include "testguest.h"

#include <xen/event_channel.h>
#include <xen/io/console.h>
#include <xen/hvm/hvm_vcpu.h>

#define evtchn_op(cmd, arg)  HC2(__HYPERVISOR_event_channel_op, cmd, arg)
#define set_timer_op(t)      hypercall(__HYPERVISOR_set_timer_op, (unsigned long)(t), 0, 0, 0, 0)

#define MS 1000000ULL		/* nanoseconds */


/* ------------------------------------------------------------------ */
/* TSC and the Xen time leaf                                           */

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* Leaf base+3 sub-leaf 0, ECX: guest TSC frequency in kHz. */
uint64_t tsc_khz(void)
{
	static uint64_t khz;
	if (!khz) {
		uint32_t a, b, c = 0, d, base = xen_cpuid_base();
		if (base)
			__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d)
					 : "a"(base + 3), "c"(0));
		khz = c;
		if (!khz) {
			khz = 3000000;	/* unknown: assume 3 GHz (longer waits if slower) */
			printk("PVHINFO no TSC kHz in Xen CPUID leaf 3; assuming %lu\n",
			       (unsigned long)khz);
		}
	}
	return khz;
}

uint64_t tsc_deadline_ms(uint64_t ms)
{
	return rdtsc() + ms * tsc_khz();
}

static void tsc_delay_us(uint64_t us)
{
	uint64_t end = rdtsc() + us * tsc_khz() / 1000;
	while (rdtsc() < end)
		cpu_relax();
}

/* Leaf base+4 sub-leaf 0: ECX = domain id if EAX has DOMID_PRESENT. */
int xen_domid(void)
{
	uint32_t a, b, c, d, base = xen_cpuid_base();
	if (!base)
		return -1;
	cpuid(base, &a, &b, &c, &d);
	if (a < base + 4)
		return -1;
	__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(base + 4), "c"(0));
	return (a & XEN_HVM_CPUID_DOMID_PRESENT) ? (int)(c & 0xffff) : -1;
}

/* ------------------------------------------------------------------ */
/* Local APIC: EOI and a timer used as the watchdog of bounded hlt     */

#define MSR_APIC_BASE	0x1b
#define APIC_BASE_EXTD	(1u << 10)
#define APIC_BASE_EN	(1u << 11)
#define APIC_EOI	0x0b0
#define APIC_SVR	0x0f0
#define APIC_LVTT	0x320
#define APIC_TMICT	0x380
#define APIC_TDCR	0x3e0
#define APIC_SVR_ENABLE	0x100
#define APIC_LVT_MASKED	0x10000
#define APIC_LVTT_PERIODIC 0x20000

static int lapic_mode;		/* 0 none/disabled, 1 xAPIC (MMIO), 2 x2APIC */
static uintptr_t lapic_mmio;
static int lapic_watchdog_ok;	/* the timer was seen to fire */
static volatile uint32_t lapic_ticks;

static uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((uint64_t)hi << 32) | lo;
}

static void lapic_write(uint32_t reg, uint32_t v)
{
	if (lapic_mode == 2)
		__asm__ volatile("wrmsr" : : "c"(0x800 + (reg >> 4)), "a"(v), "d"(0) : "memory");
	else if (lapic_mode == 1)
		*(volatile uint32_t *)(lapic_mmio + reg) = v;
}

static void lapic_eoi(void)
{
	lapic_write(APIC_EOI, 0);
}

/*
 * KVM's local APIC timer counts at the APIC bus rate, 1 GHz unless the VMM
 * changed it (KVM_CAP_X86_APIC_BUS_CYCLES_NS); with divide-by-1 a count is
 * then a nanosecond. Only a watchdog: its exact rate does not matter.
 */
static void lapic_timer_start(uint32_t ns, int periodic)
{
	lapic_write(APIC_TDCR, 0xb);	/* divide by 1 */
	lapic_write(APIC_LVTT, LAPIC_TIMER_VECTOR | (periodic ? APIC_LVTT_PERIODIC : 0));
	lapic_write(APIC_TMICT, ns);
}

static void lapic_timer_stop(void)
{
	lapic_write(APIC_TMICT, 0);
	lapic_write(APIC_LVTT, LAPIC_TIMER_VECTOR | APIC_LVT_MASKED);
}

void lapic_timer_tick(void)
{
	lapic_ticks++;
	lapic_eoi();
}

static void lapic_init(void);

/* usermode.c: a periodic LAPIC timer at LAPIC_TIMER_VECTOR; 0 if there is no LAPIC. */
int lapic_periodic_start(uint32_t ns)
{
	lapic_init();
	if (!lapic_mode)
		return 0;
	lapic_timer_start(ns, 1);
	return 1;
}

void lapic_periodic_stop(void)
{
	lapic_timer_stop();
}

void lapic_ack(void)
{
	lapic_eoi();
}

/*
 * Software-enable the LAPIC through SVR (KVM drops fixed interrupts while
 * it is disabled); from here on lapic_eoi() EOIs. -1 when the LAPIC is
 * globally disabled (APIC_BASE).
 */
static int lapic_software_enable(void)
{
	uint64_t base = rdmsr(MSR_APIC_BASE);
	if (!(base & APIC_BASE_EN))
		return -1;
	if (base & APIC_BASE_EXTD) {
		lapic_mode = 2;
	} else {
		lapic_mode = 1;
		lapic_mmio = base & 0xfffff000UL;	/* identity mapped (< 4 GiB) */
	}
	lapic_write(APIC_SVR, APIC_SVR_ENABLE | SPURIOUS_VECTOR);
	return 0;
}

/*
 * Software-enable the LAPIC and check once that its timer interrupts us: a 1 ms one-shot,
 * awaited with interrupts on for at most 200 ms of TSC time.
 */
static void lapic_init(void)
{
	static int done;
	if (done++)
		return;
	size_t len;
	const char *opt = cmdline_opt("pvh.lapic=", &len);
	if (opt && len == 3 && strncmp(opt, "off", 3) == 0) {
		/* Scenario upcall_bare: the LAPIC stays as the VMM made it. */
		printk("PVHINFO LAPIC left software-disabled (pvh.lapic=off): no EOI, no watchdog\n");
		return;
	}
	uint64_t base = rdmsr(MSR_APIC_BASE);
	if (lapic_software_enable()) {
		printk("PVHINFO LAPIC disabled (APIC_BASE 0x%lx): no EOI, no watchdog\n",
		       (unsigned long)base);
		return;
	}

	uint32_t t0 = lapic_ticks;
	uint64_t end = tsc_deadline_ms(200);
	lapic_timer_start(1000000, 0);
	while (lapic_ticks == t0 && rdtsc() < end)
		__asm__ volatile("sti; nop; nop; cli" ::: "memory");
	lapic_timer_stop();
	lapic_watchdog_ok = lapic_ticks != t0;
	printk("PVHINFO LAPIC %s at 0x%lx, timer watchdog %s\n",
	       lapic_mode == 2 ? "x2APIC" : "xAPIC", (unsigned long)(base & ~0xfffUL),
	       lapic_watchdog_ok ? "works (hlt allowed)" : "silent (spinning instead of hlt)");
}

/*
 * Wait, interrupts enabled, until cond(arg) holds or timeout_ms of TSC time
 * passed. With use_hlt (and a working watchdog) the vCPU halts between
 * checks — `sti; hlt` with the condition tested under cli, so no wake-up is
 * lost — and the LAPIC timer (every 50 ms) bounds each halt; otherwise it
 * spins. Returns cond's final value; *wd_ticks (if given) counts watchdog
 * wake-ups during the wait. Interrupts are off again on return.
 */
#define WATCHDOG_NS 50000000u

int wait_until(int (*cond)(const void *), const void *arg, uint64_t timeout_ms,
	       int use_hlt, uint32_t *wd_ticks)
{
	uint64_t end = tsc_deadline_ms(timeout_ms);
	/* use_hlt 2: halt even without a watchdog (benchmarks: the event is
	 * already on its way, and a VMM that loses it hangs the run). */
	int hlt = use_hlt == 2 || (use_hlt && lapic_watchdog_ok);
	uint32_t t0 = lapic_ticks;
	int ok;

	if (hlt)
		lapic_timer_start(WATCHDOG_NS, 1);
	for (;;) {
		__asm__ volatile("cli" ::: "memory");
		if ((ok = cond(arg)) || rdtsc() >= end)
			break;
		if (hlt)
			__asm__ volatile("sti; hlt" ::: "memory");
		else
			__asm__ volatile("sti; nop; pause; nop" ::: "memory");
	}
	__asm__ volatile("cli" ::: "memory");
	if (hlt)
		lapic_timer_stop();
	if (wd_ticks)
		*wd_ticks = lapic_ticks - t0;
	return ok;
}

/* ------------------------------------------------------------------ */
/* shared_info, vcpu_info, the upcall                                  */

struct vcpu_info *vcpu0_info;
int vcpu0_info_registered;
static volatile struct shared_info *shinfo;
static const char *upcall_via;	/* "upcall_vector" or "callback_irq" */

static volatile uint32_t upcall_count;
/* Scenario upcall_bare: the next upcall leaves evtchn_upcall_pending set. */
static volatile int upcall_leave_pending;
static volatile uint16_t port_hits[EVTCHN_2L_NR_CHANNELS];

#define BITS_PER_XEN_ULONG (sizeof(xen_ulong_t) * 8)

/*
 * The upcall (vector UPCALL_VECTOR), as events_2l.c scans: clear
 * evtchn_upcall_pending, take the selector with xchg, for each selected
 * word take pending & ~mask, clear each pending bit atomically, handle the
 * port; again while upcall_pending was set meanwhile. Then the LAPIC EOI
 * (needed for HVMOP_set_evtchn_upcall_vector, harmless otherwise).
 * Bit scans are plain loops: no bsf/tzcnt for the host's emulator.
 */
void evtchn_upcall(void)
{
	volatile struct vcpu_info *vi = vcpu0_info;

	upcall_count++;
	if (!vi || !shinfo) {
		lapic_eoi();
		return;
	}
	do {
		vi->evtchn_upcall_pending = 0;
		xen_ulong_t sel = __atomic_exchange_n(&vi->evtchn_pending_sel, 0, __ATOMIC_SEQ_CST);
		for (unsigned w = 0; sel && w < BITS_PER_XEN_ULONG; w++) {
			if (!((sel >> w) & 1))
				continue;
			sel &= ~((xen_ulong_t)1 << w);
			xen_ulong_t bits = shinfo->evtchn_pending[w] & ~shinfo->evtchn_mask[w];
			for (unsigned b = 0; bits && b < BITS_PER_XEN_ULONG; b++) {
				xen_ulong_t m = (xen_ulong_t)1 << b;
				if (!(bits & m))
					continue;
				bits &= ~m;
				__atomic_fetch_and(&shinfo->evtchn_pending[w], ~m, __ATOMIC_SEQ_CST);
				port_hits[w * BITS_PER_XEN_ULONG + b]++;
			}
		}
	} while (vi->evtchn_upcall_pending);
	if (upcall_leave_pending) {
		upcall_leave_pending = 0;
		vi->evtchn_upcall_pending = 1;
	}
	lapic_eoi();
}

static int port_pending(evtchn_port_t p)
{
	return (shinfo->evtchn_pending[p / BITS_PER_XEN_ULONG] >> (p % BITS_PER_XEN_ULONG)) & 1;
}

static int port_masked(evtchn_port_t p)
{
	return (shinfo->evtchn_mask[p / BITS_PER_XEN_ULONG] >> (p % BITS_PER_XEN_ULONG)) & 1;
}

static void mask_port(evtchn_port_t p)
{
	__atomic_fetch_or(&shinfo->evtchn_mask[p / BITS_PER_XEN_ULONG],
			  (xen_ulong_t)1 << (p % BITS_PER_XEN_ULONG), __ATOMIC_SEQ_CST);
}

/* Upcalls seen for `port` so far (blkfront.c: did the backend notify?). */
uint32_t evtchn_port_hits(uint32_t port)
{
	return port < EVTCHN_2L_NR_CHANNELS ? port_hits[port] : 0;
}

/* Condition for wait_until: port_hits[w->port] reached w->want. */
struct hits_wait {
	evtchn_port_t port;
	uint32_t want;
};

static int hits_reached(const void *arg)
{
	const struct hits_wait *w = arg;
	return port_hits[w->port] >= w->want;
}

static int wait_port(evtchn_port_t port, uint32_t want, uint64_t ms, int use_hlt,
		     uint32_t *wd)
{
	struct hits_wait w = { port, want };
	return wait_until(hits_reached, &w, ms, use_hlt, wd);
}

int evtchn_wait_port_hits(evtchn_port_t port, uint32_t want, uint64_t ms)
{
	if (port >= EVTCHN_2L_NR_CHANNELS)
		return 0;
	return wait_port(port, want, ms, 1, NULL);
}

/*
 * Everything the event scenarios need, each step done once per boot and
 * independent of the older scenarios (which may have run first):
 *  1. shared_info mapped at xen_shared_info_page (XENMEM_add_to_physmap;
 *     mapping again moves it there, so scenario sharedinfo_hole run in
 *     between is harmless);
 *  2. vcpu_info of vCPU 0 registered in vcpu_info_page at offset 64 (the
 *     same place as scenario vcpuinfo; registration is once only), else the
 *     legacy slot shared_info.vcpu_info[0];
 *  3. the LAPIC enabled, its timer checked;
 *  4. the upcall: HVMOP_set_evtchn_upcall_vector(vCPU 0, UPCALL_VECTOR) as
 *     Linux does first, else HVM_PARAM_CALLBACK_IRQ =
 *     HVM_PARAM_CALLBACK_TYPE_VECTOR << 56 | UPCALL_VECTOR.
 */
extern uint8_t vcpu_info_page[];

const char *xen_setup(void)
{
	long rc;

	struct xen_add_to_physmap xatp = {
		.domid = DOMID_SELF,
		.space = XENMAPSPACE_shared_info,
		.idx = 0,
		.gpfn = (uintptr_t)xen_shared_info_page >> 12,
	};
	if ((rc = memory_op(XENMEM_add_to_physmap, &xatp)) != 0)
		return fail("add_to_physmap(shared_info) rc %ld", rc);
	shinfo = (volatile struct shared_info *)xen_shared_info_page;

	if (!vcpu0_info) {
		struct vcpu_register_vcpu_info r = {
			.mfn = (uintptr_t)vcpu_info_page >> 12,
			.offset = 64,
		};
		rc = vcpu_op(VCPUOP_register_vcpu_info, 0, &r);
		if (rc == 0) {
			vcpu0_info = (struct vcpu_info *)(vcpu_info_page + r.offset);
			vcpu0_info_registered = 1;
		} else {
			printk("PVHINFO register_vcpu_info rc %ld: using shared_info.vcpu_info[0]\n", rc);
			vcpu0_info = (struct vcpu_info *)&shinfo->vcpu_info[0];
		}
	}
	/* Events are delivered only while upcall_mask is clear. */
	vcpu0_info->evtchn_upcall_mask = 0;

	lapic_init();

	if (!upcall_via) {
		/* pvh.upcall=callback skips the per-vCPU vector (tests the VMM's other path). */
		size_t len;
		const char *how = cmdline_opt("pvh.upcall=", &len);
		int callback_only = how && len == 8 && strncmp(how, "callback", 8) == 0;
		struct xen_hvm_evtchn_upcall_vector uv = { .vcpu = 0, .vector = UPCALL_VECTOR };
		rc = callback_only ? -XEN_ENOSYS : hvm_op(HVMOP_set_evtchn_upcall_vector, &uv);
		if (rc == 0) {
			upcall_via = "upcall_vector";
		} else {
			struct xen_hvm_param p = {
				.domid = DOMID_SELF,
				.index = HVM_PARAM_CALLBACK_IRQ,
				.value = ((uint64_t)HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | UPCALL_VECTOR,
			};
			long rc2 = hvm_op(HVMOP_set_param, &p);
			if (rc2 != 0)
				return fail("set_evtchn_upcall_vector rc %ld, set_param(CALLBACK_IRQ) rc %ld",
					    rc, rc2);
			upcall_via = "callback_irq";
		}
		printk("PVHINFO upcall vector 0x%x via %s\n", UPCALL_VECTOR, upcall_via);
	}
	return NULL;
}

/* VIRQ_TIMER of vCPU 0, bound once per boot (a second bind is -EEXIST). */
static evtchn_port_t timer_port;

static const char *bind_timer_virq(void)
{
	if (timer_port)
		return NULL;
	struct evtchn_bind_virq bv = { .virq = VIRQ_TIMER, .vcpu = 0 };
	long rc = evtchn_op(EVTCHNOP_bind_virq, &bv);
	if (rc != 0)
		return fail("bind_virq(VIRQ_TIMER, vcpu 0) rc %ld", rc);
	timer_port = bv.port;
	return NULL;
}

/*
 * usermode_syscall_irq with pvh.usys_irq=upcall: vCPU 0's VIRQ_TIMER as a
 * one-shot that its own upcall re-arms, so that the interrupts come the
 * way a Xen guest's do (the per-vCPU upcall vector pvh raises in the LAPIC
 * from its timer thread, or with pvh.upcall=callback the callback vector
 * it queues before an entry), not from the LAPIC's own timer.
 */
static uint64_t pvclock_ns(void);
static uint64_t upcall_timer_period;

const char *upcall_timer_start(uint64_t period_ns)
{
	const char *r;
	if ((r = xen_setup()) || (r = bind_timer_virq()))
		return r;
	upcall_timer_period = period_ns;
	upcall_timer_rearm();
	return NULL;
}

void upcall_timer_rearm(void)
{
	if (!upcall_timer_period)
		return;
	struct vcpu_set_singleshot_timer ss = { .timeout_abs_ns = pvclock_ns() + upcall_timer_period, .flags = 0 };
	vcpu_op(VCPUOP_set_singleshot_timer, 0, &ss);
}

void upcall_timer_stop(void)
{
	upcall_timer_period = 0;
	vcpu_op(VCPUOP_stop_singleshot_timer, 0, NULL);
}

static long evtchn_status(evtchn_port_t port, struct evtchn_status *st)
{
	*st = (struct evtchn_status){ .dom = DOMID_SELF, .port = port };
	return evtchn_op(EVTCHNOP_status, st);
}

long evtchn_send(evtchn_port_t port)
{
	struct evtchn_send s = { .port = port };
	return evtchn_op(EVTCHNOP_send, &s);
}

static long evtchn_close(evtchn_port_t port)
{
	struct evtchn_close c = { .port = port };
	return evtchn_op(EVTCHNOP_close, &c);
}

/* ------------------------------------------------------------------ */
/* evtchn                                                              */

static const char *evtchn_loopback(evtchn_port_t a, evtchn_port_t b, int domid)
{
	struct evtchn_status st;
	long rc;

	/* Status of both ends: interdomain, to each other, in our own domain. */
	for (int i = 0; i < 2; i++) {
		evtchn_port_t p = i ? b : a, other = i ? a : b;
		if ((rc = evtchn_status(p, &st)) != 0)
			return fail("status(%u) rc %ld", p, rc);
		if (st.status != EVTCHNSTAT_interdomain || st.u.interdomain.port != other ||
		    (domid >= 0 && st.u.interdomain.dom != domid))
			return fail("status(%u): status %u dom %u port %u, want interdomain d%d port %u",
				    p, st.status, st.u.interdomain.dom, st.u.interdomain.port,
				    domid, other);
	}

	/* Send on B: A's upcall. (Counts are relative: ports get reused.) */
	uint32_t h = port_hits[a], u;
	if ((rc = evtchn_send(b)) != 0)
		return fail("send(B=%u) rc %ld", b, rc);
	if (!wait_port(a, h + 1, 500, 1, NULL))
		return fail("no upcall for port A=%u within 500 ms of send(B) (upcalls %u, "
			    "pending %d, upcall_pending %u, sel 0x%lx)", a, upcall_count,
			    port_pending(a), vcpu0_info->evtchn_upcall_pending,
			    (unsigned long)vcpu0_info->evtchn_pending_sel);
	if (port_pending(a))
		return fail("port A=%u still pending after the upcall", a);

	/* Masked: the send sets pending but raises no upcall ... */
	mask_port(a);
	h = port_hits[a];
	u = upcall_count;
	if ((rc = evtchn_send(b)) != 0)
		return fail("masked send(B) rc %ld", rc);
	wait_port(a, h + 1, 60, 1, NULL);	/* halts; the LAPIC watchdog ends it */
	if (port_hits[a] != h || upcall_count != u)
		return fail("upcall for masked port A=%u", a);
	if (!port_pending(a))
		return fail("masked port A=%u not pending after send(B)", a);
	/* ... until EVTCHNOP_unmask, which clears the mask and delivers it. */
	struct evtchn_unmask um = { .port = a };
	if ((rc = evtchn_op(EVTCHNOP_unmask, &um)) != 0)
		return fail("unmask(A=%u) rc %ld", a, rc);
	if (port_masked(a))
		return fail("unmask(A=%u) left the mask bit set", a);
	if (!wait_port(a, h + 1, 500, 0, NULL))
		return fail("no upcall for pending port A=%u after EVTCHNOP_unmask", a);

	/* And the other direction: send on A reaches B. */
	h = port_hits[b];
	if ((rc = evtchn_send(a)) != 0)
		return fail("send(A=%u) rc %ld", a, rc);
	if (!wait_port(b, h + 1, 500, 0, NULL))
		return fail("no upcall for port B=%u after send(A)", b);

	/* Closing B leaves A unbound, waiting for our own domain again. */
	if ((rc = evtchn_close(b)) != 0)
		return fail("close(B=%u) rc %ld", b, rc);
	if ((rc = evtchn_status(a, &st)) != 0)
		return fail("status(A) after close(B) rc %ld", rc);
	if (st.status != EVTCHNSTAT_unbound || (domid >= 0 && st.u.unbound.dom != domid))
		return fail("status(A) after close(B): status %u dom %u, want unbound d%d",
			    st.status, st.u.unbound.dom, domid);
	if ((rc = evtchn_status(b, &st)) != 0 || st.status != EVTCHNSTAT_closed)
		return fail("status(B) after close: rc %ld status %u, want closed", rc, st.status);
	/* Sending on an unbound port is silently dropped (Xen evtchn_send). */
	if ((rc = evtchn_send(a)) != 0)
		return fail("send(unbound A) rc %ld, want 0", rc);
	return NULL;
}

static const char *scen_evtchn(void)
{
	const char *r;
	long rc;

	if ((r = xen_setup()))
		return r;
	int domid = xen_domid();

	struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = DOMID_SELF };
	if ((rc = evtchn_op(EVTCHNOP_alloc_unbound, &au)) != 0)
		return fail("alloc_unbound(self, self) rc %ld", rc);
	evtchn_port_t a = au.port;

	struct evtchn_status st;
	if ((rc = evtchn_status(a, &st)) != 0 || st.status != EVTCHNSTAT_unbound)
		return fail("status(A=%u) after alloc_unbound: rc %ld status %u", a, rc, st.status);

	struct evtchn_bind_interdomain bi = { .remote_dom = DOMID_SELF, .remote_port = a };
	if ((rc = evtchn_op(EVTCHNOP_bind_interdomain, &bi)) != 0) {
		evtchn_close(a);
		return fail("bind_interdomain(self, A=%u) rc %ld", a, rc);
	}
	evtchn_port_t b = bi.local_port;
	printk("PVHINFO evtchn loopback A=%u B=%u (domid %d)\n", a, b, domid);

	r = evtchn_loopback(a, b, domid);
	evtchn_close(b);	/* maybe closed already: -EINVAL then, fine */
	evtchn_close(a);
	if (r)
		return r;

	/* Errors (Xen evtchn_send): port 0 is reserved, 5000 beyond the table. */
	if ((rc = evtchn_send(0)) != -XEN_EINVAL)
		return fail("send(port 0) rc %ld, want %d", rc, -XEN_EINVAL);
	if ((rc = evtchn_send(5000)) != -XEN_EINVAL)
		return fail("send(port 5000) rc %ld, want %d", rc, -XEN_EINVAL);
	if ((rc = evtchn_close(5000)) != -XEN_EINVAL)
		return fail("close(port 5000) rc %ld, want %d", rc, -XEN_EINVAL);

	/* A VIRQ binds once per vCPU. */
	if ((r = bind_timer_virq()))
		return r;
	struct evtchn_bind_virq bv = { .virq = VIRQ_TIMER, .vcpu = 0 };
	if ((rc = evtchn_op(EVTCHNOP_bind_virq, &bv)) != -XEN_EEXIST)
		return fail("second bind_virq(VIRQ_TIMER) rc %ld, want %d", rc, -XEN_EEXIST);
	if ((rc = evtchn_status(timer_port, &st)) != 0 || st.status != EVTCHNSTAT_virq ||
	    st.u.virq != VIRQ_TIMER || st.vcpu != 0)
		return fail("status(VIRQ_TIMER port %u): rc %ld status %u virq %u vcpu %u",
			    timer_port, rc, st.status, st.u.virq, st.vcpu);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* PV clock                                                            */

struct pvclock_snap {
	uint32_t version;
	uint64_t tsc_timestamp, system_time;
	uint32_t mul;
	int8_t shift;
	uint8_t flags;
};

/*
 * Consistent copy of vcpu_info.time: retry while the version is odd or
 * changed (xen.h vcpu_time_info). 0 on success, -1 if it never settled.
 */
static int pvclock_read(struct pvclock_snap *s, uint64_t *tsc)
{
	volatile struct vcpu_time_info *t = &vcpu0_info->time;
	for (int tries = 0; tries < 1000; tries++) {
		uint32_t v = t->version;
		__asm__ volatile("" ::: "memory");	/* x86: loads are not reordered */
		s->tsc_timestamp = t->tsc_timestamp;
		s->system_time = t->system_time;
		s->mul = t->tsc_to_system_mul;
		s->shift = t->tsc_shift;
		s->flags = t->flags;
		if (tsc)
			*tsc = rdtsc();
		__asm__ volatile("" ::: "memory");
		if (!(v & 1) && t->version == v) {
			s->version = v;
			return 0;
		}
		cpu_relax();
	}
	return -1;
}

/* Xen's formula: ((delta << shift) * mul) >> 32, shift negative = right. */
static uint64_t pvclock_scale(uint64_t delta, uint32_t mul, int8_t shift)
{
	if (shift < 0)
		delta >>= -shift;
	else
		delta <<= shift;
	return (uint64_t)(((unsigned __int128)delta * mul) >> 32);
}

/* System time now (ns since boot), or 0 if the clock is not published. */
static uint64_t pvclock_ns(void)
{
	struct pvclock_snap s;
	uint64_t tsc;
	if (pvclock_read(&s, &tsc) || !s.mul)
		return 0;
	return s.system_time + pvclock_scale(tsc - s.tsc_timestamp, s.mul, s.shift);
}

static const char *scen_pvclock(void)
{
	const char *r;
	if ((r = xen_setup()))
		return r;

	struct pvclock_snap s;
	if (pvclock_read(&s, NULL))
		return fail("vcpu_time_info version stays odd (0x%x)", vcpu0_info->time.version);
	printk("PVHINFO pvclock version %u tsc_timestamp %lu system_time %lu mul 0x%x shift %d "
	       "flags 0x%x tsc_khz %lu\n", s.version, (unsigned long)s.tsc_timestamp,
	       (unsigned long)s.system_time, s.mul, s.shift, s.flags, (unsigned long)tsc_khz());
	if (!s.mul)
		return fail("tsc_to_system_mul is 0 (PV clock not published)");
	if (!(s.flags & XEN_PVCLOCK_TSC_STABLE_BIT))
		return fail("XEN_PVCLOCK_TSC_STABLE_BIT not set (flags 0x%x)", s.flags);

	/* mul/shift agree with the TSC kHz of the CPUID time leaf (±0.1%). */
	uint64_t one_s = pvclock_scale(tsc_khz() * 1000, s.mul, s.shift);
	if (one_s < 999000000 || one_s > 1001000000)
		return fail("1 s of TSC (%lu kHz) scales to %lu ns", (unsigned long)tsc_khz(),
			    (unsigned long)one_s);

	uint64_t t1 = pvclock_ns();
	tsc_delay_us(1000);
	uint64_t t2 = pvclock_ns();
	if (t2 <= t1)
		return fail("system time not monotonic: %lu then %lu", (unsigned long)t1,
			    (unsigned long)t2);
	if (t2 - t1 < 900000 || t2 - t1 > 1000 * MS)
		return fail("1 ms of TSC measured %lu ns by the PV clock", (unsigned long)(t2 - t1));

	/* Wallclock (shared_info wc_*): version protocol as for vcpu_time_info. */
	uint32_t v, sec, nsec, hi;
	int tries = 0;
	do {
		v = shinfo->wc_version;
		__asm__ volatile("" ::: "memory");
		sec = shinfo->wc_sec;
		nsec = shinfo->wc_nsec;
		hi = shinfo->wc_sec_hi;
		__asm__ volatile("" ::: "memory");
	} while (((v & 1) || shinfo->wc_version != v) && ++tries < 1000);
	uint64_t wc = ((uint64_t)hi << 32) | sec;
	printk("PVHINFO wallclock version %u sec %lu nsec %u (boot time; now + %lu s)\n", v,
	       (unsigned long)wc, nsec, (unsigned long)(t2 / 1000000000));
	if (v & 1)
		return fail("wc_version stays odd (%u)", v);
	if (wc + t2 / 1000000000 < 1700000000ULL)
		return fail("wallclock %lu s is before 2023", (unsigned long)wc);
	if (nsec >= 1000000000)
		return fail("wc_nsec %u >= 1e9", nsec);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* upcall_bare                                                         */

static int upcalls_reached(const void *arg)
{
	return upcall_count >= *(const uint32_t *)arg;
}

/*
 * Run with pvh.upcall=callback pvh.lapic=off: the callback is a bare vector
 * (HVM_PARAM_CALLBACK_IRQ type 2) and the local APIC stays software-
 * disabled, as in a small Xen guest that never touches it. Xen injects that
 * vector itself, with no LAPIC and no EOI, whenever evtchn_upcall_pending is
 * set and the vCPU can take interrupts (hvm_vcpu_has_pending_irq).
 *  1. the LAPIC really is off (SVR bit 8 clear);
 *  2. a loopback send is delivered (spinning with interrupts on);
 *  3. the vector is a level: an upcall that leaves evtchn_upcall_pending set
 *     is delivered again, with no new event;
 *  4. `sti; hlt` is woken by an event (a Xen single-shot timer). Nothing
 *     else can wake this vCPU: a lost event halts it for good, and the
 *     host's time limit fails the run.
 */
static const char *scen_upcall_bare(void)
{
	const char *r;
	long rc;

	if ((r = xen_setup()))
		return r;
	if (strncmp(upcall_via, "callback_irq", 13) != 0 || lapic_mode != 0)
		return fail("needs pvh.upcall=callback pvh.lapic=off (upcall via %s, LAPIC mode %d)",
			    upcall_via, lapic_mode);
	uint64_t base = rdmsr(MSR_APIC_BASE);
	if ((base & APIC_BASE_EN) && !(base & APIC_BASE_EXTD)) {
		uint32_t svr = *(volatile uint32_t *)((base & 0xfffff000UL) + APIC_SVR);
		if (svr & APIC_SVR_ENABLE)
			return fail("LAPIC software-enabled (SVR 0x%x)", svr);
	}

	/* 2. A loopback channel. */
	struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = DOMID_SELF };
	if ((rc = evtchn_op(EVTCHNOP_alloc_unbound, &au)) != 0)
		return fail("alloc_unbound rc %ld", rc);
	struct evtchn_bind_interdomain bi = { .remote_dom = DOMID_SELF, .remote_port = au.port };
	if ((rc = evtchn_op(EVTCHNOP_bind_interdomain, &bi)) != 0) {
		evtchn_close(au.port);
		return fail("bind_interdomain rc %ld", rc);
	}
	evtchn_port_t a = au.port, b = bi.local_port;
	wait_port(a, ~0u, 10, 0, NULL);	/* the bind's own event lands */
	uint32_t h = port_hits[a];
	if ((rc = evtchn_send(b)) != 0)
		r = fail("send(B=%u) rc %ld", b, rc);
	else if (!wait_port(a, h + 1, 500, 0, NULL))
		r = fail("no upcall within 500 ms of send (upcalls %u, upcall_pending %u)",
			 upcall_count, vcpu0_info->evtchn_upcall_pending);

	/* 3. Level: the handler leaves upcall_pending set once; it comes again. */
	if (!r) {
		uint32_t want = upcall_count + 2;
		upcall_leave_pending = 1;
		h = port_hits[a];
		if ((rc = evtchn_send(b)) != 0)
			r = fail("send(B) rc %ld", rc);
		else if (!wait_until(upcalls_reached, &want, 500, 0, NULL))
			r = fail("upcall_pending left set: %u upcalls, want %u (not re-injected)",
				 upcall_count, want);
		else if (port_hits[a] != h + 1)
			r = fail("port A hit %u times, want 1", port_hits[a] - h);
	}
	evtchn_close(b);
	evtchn_close(a);
	if (r)
		return r;

	/* 4. `sti; hlt`, woken only by VIRQ_TIMER. */
	if ((r = bind_timer_virq()))
		return r;
	vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL);
	h = port_hits[timer_port];
	struct vcpu_set_singleshot_timer ss = { .timeout_abs_ns = pvclock_ns() + 2 * MS, .flags = 0 };
	if ((rc = vcpu_op(VCPUOP_set_singleshot_timer, 0, &ss)) != 0)
		return fail("set_singleshot_timer rc %ld", rc);
	uint32_t halts = 0;
	for (;;) {
		__asm__ volatile("cli" ::: "memory");
		if (port_hits[timer_port] != h)
			break;
		halts++;
		__asm__ volatile("sti; hlt" ::: "memory");
	}
	printk("PVHINFO upcall_bare: %u upcalls, timer woke a halted vCPU after %u hlt\n",
	       upcall_count, halts);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* upcall_owed                                                         */

/*
 * Run with pvh.lapic=off (and the per-vCPU vector, the default): the
 * upcall vector is bound while the LAPIC is software-disabled, as Linux
 * binds its boot CPU's vector before setup_local_APIC enables the LAPIC.
 * Xen's vlapic keeps such a vector pending in IRR; KVM's LAPIC refuses the
 * MSI, so the VMM must keep it owed and raise it again.
 *  1. the upcall goes through HVMOP_set_evtchn_upcall_vector and the LAPIC
 *     is off;
 *  2. a loopback send while the LAPIC is off (the upcall is owed);
 *  3. the LAPIC is enabled through SVR, with no new event: the owed upcall
 *     arrives within 500 ms, the port is handled once, and it is EOIed.
 */
static const char *scen_upcall_owed(void)
{
	const char *r;
	long rc;

	if ((r = xen_setup()))
		return r;
	if (strncmp(upcall_via, "upcall_vector", 14) != 0 || lapic_mode != 0)
		return fail("needs the per-vCPU vector and pvh.lapic=off (upcall via %s, LAPIC mode %d)",
			    upcall_via, lapic_mode);

	struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = DOMID_SELF };
	if ((rc = evtchn_op(EVTCHNOP_alloc_unbound, &au)) != 0)
		return fail("alloc_unbound rc %ld", rc);
	struct evtchn_bind_interdomain bi = { .remote_dom = DOMID_SELF, .remote_port = au.port };
	if ((rc = evtchn_op(EVTCHNOP_bind_interdomain, &bi)) != 0) {
		evtchn_close(au.port);
		return fail("bind_interdomain rc %ld", rc);
	}
	evtchn_port_t a = au.port, b = bi.local_port;
	uint32_t h = port_hits[a], before = upcall_count;
	if ((rc = evtchn_send(b)) != 0) {
		r = fail("send(B=%u) rc %ld", b, rc);
	} else {
		/* 2. With interrupts on for a moment the disabled LAPIC takes nothing. */
		wait_port(a, h + 1, 20, 0, NULL);
		uint32_t early = upcall_count - before;
		if (lapic_software_enable())
			r = fail("LAPIC globally disabled (APIC_BASE 0x%lx)", (unsigned long)rdmsr(MSR_APIC_BASE));
		else if (!wait_port(a, h + 1, 500, 0, NULL))
			r = fail("no upcall within 500 ms of enabling the LAPIC (upcalls %u, upcall_pending %u)",
				 upcall_count, vcpu0_info->evtchn_upcall_pending);
		else if (port_hits[a] != h + 1)
			r = fail("port A hit %u times, want 1", port_hits[a] - h);
		else
			printk("PVHINFO upcall_owed: %u upcall(s) before the LAPIC was enabled, "
			       "the owed one after it\n", early);
	}
	evtchn_close(b);
	evtchn_close(a);
	return r;
}

/* ------------------------------------------------------------------ */
/* timer                                                               */

/* Wait for the next VIRQ_TIMER upcall after arming a timer for `deadline`. */
static const char *expect_tick(const char *what, uint64_t deadline, uint32_t h)
{
	uint32_t wd;
	if (!wait_port(timer_port, h + 1, 1000, 1, &wd))
		return fail("%s: no VIRQ_TIMER upcall within 1 s (upcalls %u, watchdog %u)",
			    what, upcall_count, wd);
	uint64_t now = pvclock_ns();
	if (now < deadline)
		return fail("%s: fired %lu ns before the deadline", what,
			    (unsigned long)(deadline - now));
	if (now > deadline + 500 * MS)
		return fail("%s: fired %lu ms late", what, (unsigned long)((now - deadline) / MS));
	printk("PVHINFO timer %s: upcall %lu us after the deadline (%u watchdog wake-ups)\n",
	       what, (unsigned long)((now - deadline) / 1000), wd);
	/* The watchdog runs every 50 ms: a halted vCPU that only woke with it was not woken. */
	if (wd && now - deadline >= WATCHDOG_NS)
		return fail("%s: halted vCPU woke only by the LAPIC watchdog", what);
	return NULL;
}

static const char *scen_timer(void)
{
	const char *r;
	long rc;

	if ((r = xen_setup()) || (r = bind_timer_virq()))
		return r;
	if (!pvclock_ns())
		return fail("PV clock not published (tsc_to_system_mul 0)");

	/* Nothing else may tick: Xen guests stop the periodic timer (Linux's xen_setup_timer). */
	vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL);
	vcpu_op(VCPUOP_stop_singleshot_timer, 0, NULL);
	wait_port(timer_port, ~0u, 10, 0, NULL);	/* let a stray tick land */

	/* 1. VCPUOP_set_singleshot_timer, now + 2 ms, awaited in hlt. */
	uint32_t h0 = port_hits[timer_port];
	uint64_t deadline = pvclock_ns() + 2 * MS;
	struct vcpu_set_singleshot_timer ss = { .timeout_abs_ns = deadline, .flags = 0 };
	if ((rc = vcpu_op(VCPUOP_set_singleshot_timer, 0, &ss)) != 0)
		return fail("set_singleshot_timer(now + 2 ms) rc %ld", rc);
	if ((r = expect_tick("singleshot", deadline, h0)))
		return r;

	/* 2. In the past with VCPU_SSHOTTMR_future: -ETIME. */
	ss = (struct vcpu_set_singleshot_timer){ .timeout_abs_ns = 1, .flags = VCPU_SSHOTTMR_future };
	if ((rc = vcpu_op(VCPUOP_set_singleshot_timer, 0, &ss)) != -XEN_ETIME)
		return fail("set_singleshot_timer(past, VCPU_SSHOTTMR_future) rc %ld, want %d",
			    rc, -XEN_ETIME);

	/* 3. set_timer_op (hypercall 15): arm, fire; arm, cancel with 0. */
	uint32_t h = port_hits[timer_port];
	deadline = pvclock_ns() + 2 * MS;
	if ((rc = set_timer_op(deadline)) != 0)
		return fail("set_timer_op(now + 2 ms) rc %ld", rc);
	if ((r = expect_tick("set_timer_op", deadline, h)))
		return r;
	/*
	 * Arm and cancel; the timer must not fire. On a loaded host the
	 * vCPU may lose the CPU between the two hypercalls for longer than
	 * the timer's 10 ms: then the timer rightly fired before the cancel,
	 * the try proves nothing and is made again (after its tick drained).
	 */
	int canceled = 0;
	for (int attempt = 0; attempt < 5 && !canceled; attempt++) {
		h = port_hits[timer_port];
		uint64_t armed = pvclock_ns() + 10 * MS;
		if ((rc = set_timer_op(armed)) != 0)
			return fail("set_timer_op(now + 10 ms) rc %ld", rc);
		if ((rc = set_timer_op(0)) != 0)
			return fail("set_timer_op(0) rc %ld", rc);
		int late = pvclock_ns() >= armed;
		wait_port(timer_port, h + 1, 40, 0, NULL);
		if (late)
			continue;
		if (port_hits[timer_port] != h)
			return fail("set_timer_op(0) did not cancel: VIRQ_TIMER fired");
		canceled = 1;
	}
	if (!canceled)
		return fail("set_timer_op(0): 5 tries, each cancel came after the 10 ms deadline");

	/*
	 * 4. VCPUOP_set_periodic_timer 5 ms: 3 ticks, then stop. The first may
	 * come at once: Xen fires a periodic timer whose last event is more than
	 * a period ago (xen/common/sched/core.c vcpu_periodic_timer_work_locked,
	 * last event 0 for a fresh vCPU), so 3 ticks take at least 2 periods.
	 */
	struct vcpu_set_periodic_timer pt = { .period_ns = 5 * MS };
	h = port_hits[timer_port];
	uint64_t t0 = pvclock_ns();
	if ((rc = vcpu_op(VCPUOP_set_periodic_timer, 0, &pt)) != 0)
		return fail("set_periodic_timer(5 ms) rc %ld", rc);
	uint32_t wd;
	int ok = wait_port(timer_port, h + 3, 1000, 1, &wd);
	uint64_t t1 = pvclock_ns();
	if ((rc = vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL)) != 0)
		return fail("stop_periodic_timer rc %ld", rc);
	if (!ok)
		return fail("periodic 5 ms: %u ticks in 1 s", port_hits[timer_port] - h);
	if (t1 - t0 < 9 * MS)
		return fail("periodic 5 ms: 3 ticks after only %lu us", (unsigned long)((t1 - t0) / 1000));
	printk("PVHINFO timer periodic: 3 ticks in %lu us\n", (unsigned long)((t1 - t0) / 1000));
	wait_port(timer_port, ~0u, 10, 0, NULL);	/* a tick in flight */
	h = port_hits[timer_port];
	wait_port(timer_port, h + 1, 30, 0, NULL);
	if (port_hits[timer_port] != h)
		return fail("periodic timer still ticking after stop_periodic_timer");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* console_ring                                                        */

static volatile struct xencons_interface *cons;
static evtchn_port_t cons_port;

const char *hvm_get_param(uint32_t index, uint64_t *value)
{
	struct xen_hvm_param p = { .domid = DOMID_SELF, .index = index };
	long rc = hvm_op(HVMOP_get_param, &p);
	if (rc != 0)
		return fail("hvm_get_param(%u) rc %ld", index, rc);
	*value = p.value;
	return NULL;
}

static int out_drained(const void *arg)
{
	(void)arg;
	return cons->out_cons == cons->out_prod;
}

/* Into `out` (hvc_xen.c's protocol): copy, wmb, publish out_prod, notify. */
/* hlt: halt while the ring is full (upcalls work: the backend's event wakes us), else spin. */
static const char *cons_write_hlt(const char *s, size_t len, int hlt)
{
	size_t sent = 0;
	while (sent < len) {
		XENCONS_RING_IDX c = cons->out_cons, p = cons->out_prod;
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (p - c > sizeof(cons->out))
			return fail("out ring indices broken: cons %u prod %u", c, p);
		size_t n = 0;
		while (sent < len && p - c < sizeof(cons->out)) {
			cons->out[MASK_XENCONS_IDX(p, cons->out)] = s[sent++];
			p++;
			n++;
		}
		__atomic_thread_fence(__ATOMIC_RELEASE);	/* wmb */
		cons->out_prod = p;
		long rc = evtchn_send(cons_port);
		if (rc != 0)
			return fail("send(console port %u) rc %ld", cons_port, rc);
		if (!n && !wait_until(out_drained, NULL, 1000, hlt, NULL))
			return fail("output ring full for 1 s (cons %u prod %u)", cons->out_cons,
				    cons->out_prod);
	}
	return NULL;
}

static const char *cons_write(const char *s, size_t len)
{
	return cons_write_hlt(s, len, 0);
}

static int in_available(const void *arg)
{
	(void)arg;
	return cons->in_prod != cons->in_cons;
}

unsigned long opt_num(const char *key, unsigned long def)
{
	size_t len;
	const char *v = cmdline_opt(key, &len);
	unsigned long n = 0;
	if (!v || !len)
		return def;
	for (size_t i = 0; i < len && v[i] >= '0' && v[i] <= '9'; i++)
		n = n * 10 + (unsigned long)(v[i] - '0');
	return n;
}

/* The console ring and port from the HVM params, into cons and cons_port;
 * *upcalls (if given) says whether upcalls work. */
static const char *cons_setup(int *upcalls)
{
	const char *r;
	uint64_t pfn, port;

	if ((r = hvm_get_param(HVM_PARAM_CONSOLE_PFN, &pfn)) ||
	    (r = hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN, &port)))
		return r;
	printk("PVHINFO console ring pfn 0x%lx port %lu\n", (unsigned long)pfn, (unsigned long)port);
	if (!pfn)
		return fail("no console ring (HVM_PARAM_CONSOLE_PFN 0)");
	if (!phys_ok(pfn << 12, PAGE_SIZE))
		return fail("console ring pfn 0x%lx not below 4 GiB", (unsigned long)pfn);
	if (!port || port >= EVTCHN_2L_NR_CHANNELS)
		return fail("HVM_PARAM_CONSOLE_EVTCHN %lu", (unsigned long)port);
	cons = PHYS(pfn << 12);
	cons_port = (evtchn_port_t)port;

	/* Upcalls are only a wake-up source here; the ring is polled. */
	r = xen_setup();
	if (r)
		printk("PVHINFO console ring without upcalls: %s\n", r);
	if (upcalls)
		*upcalls = !r;
	return NULL;
}

/*
 * console_flood (issue 13 item 5): pvh.console_flood_kib KiB (default 256)
 * of numbered 64-byte lines "PVHFLOOD <n, 8 digits> <45 characters>\n" on
 * the PV console, 32 lines (2 KiB, the ring's size) a write, each write
 * failing if the ring stays full for 1 s (cons_write): the host side must
 * keep taking output whether or not anyone reads it. The digits are put in
 * by hand: under the software backend every guest instruction counts.
 */
static const char *scen_console_flood(void)
{
	const char *r;
	uint64_t kib = opt_num("pvh.console_flood_kib=", 256), lines = kib * 1024 / 64;
	static const char tmpl[] = "PVHFLOOD 00000000 0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHI\n";
	static char batch[32 * 64];
	_Static_assert(sizeof(tmpl) - 1 == 64, "a flood line is 64 bytes");

	int upcalls;
	if ((r = cons_setup(&upcalls)))
		return r;
	for (unsigned k = 0; k < 32; k++)
		memcpy(batch + k * 64, tmpl, 64);
	for (uint64_t i = 0; i < lines;) {
		unsigned n = 0;
		for (; n < 32 && i < lines; n++, i++) {
			char *d = batch + n * 64 + 9;
			uint64_t v = i;
			for (int j = 7; j >= 0; j--, v /= 10)
				d[j] = (char)('0' + v % 10);
		}
		if ((r = cons_write_hlt(batch, (size_t)n * 64, upcalls)))
			return fail("line %lu: %s", (unsigned long)(i - n), r);
	}
	if (!wait_until(out_drained, NULL, 2000, 0, NULL))
		return fail("VMM did not consume the output ring in 2 s (out_cons %u out_prod %u)",
			    cons->out_cons, cons->out_prod);
	pass_note("lines=%lu bytes=%lu", (unsigned long)lines, (unsigned long)(lines * 64));
	return NULL;
}

static const char *scen_console_ring(void)
{
	const char *r;

	if ((r = cons_setup(NULL)))
		return r;

	static const char hello[] = "PVHTEST-CONSOLE-RING hello\n";
	if ((r = cons_write(hello, sizeof(hello) - 1)))
		return r;
	if (!wait_until(out_drained, NULL, 2000, 0, NULL))
		return fail("VMM did not consume the output ring in 2 s (out_cons %u out_prod %u)",
			    cons->out_cons, cons->out_prod);

	/*
	 * pvh.console_later=<ms>: one more line that long after the hello, so
	 * a test can have it written while no pvh daemon runs (the guest
	 * process holds it for the next daemon). Noted on the hypervisor
	 * console too, which the guest process writes to its log itself.
	 */
	uint64_t later = opt_num("pvh.console_later=", 0);
	if (later) {
		uint64_t until = tsc_deadline_ms(later);
		while (rdtsc() < until)
			wait_until(in_available, NULL, (until - rdtsc()) / tsc_khz() + 1, 1, NULL);
		static const char late[] = "PVHTEST-CONSOLE-RING later\n";
		if ((r = cons_write(late, sizeof(late) - 1)))
			return r;
		if (!wait_until(out_drained, NULL, 2000, 0, NULL))
			return fail("VMM did not consume the later line in 2 s");
		printk("PVHINFO console_ring later line written\n");
	}

	if (opt_num("pvh.console_input=", 0) != 1)
		return NULL;

	/* Read one line from `in` (CR or LF ends it), then echo it back. */
	static char line[128];
	size_t n = 0;
	uint64_t timeout = opt_num("pvh.console_timeout=", 30000);
	uint64_t end = tsc_deadline_ms(timeout);
	printk("PVHINFO console_ring waiting %lu ms for a line\n", (unsigned long)timeout);
	for (;;) {
		uint64_t now = rdtsc();
		if (now >= end)
			return fail("no input line within %lu ms (%lu bytes)", (unsigned long)timeout,
				    (unsigned long)n);
		if (!wait_until(in_available, NULL, (end - now) / tsc_khz() + 1, 1, NULL))
			continue;
		XENCONS_RING_IDX c = cons->in_cons, p = cons->in_prod;
		__atomic_thread_fence(__ATOMIC_ACQUIRE);	/* rmb */
		if (p - c > sizeof(cons->in))
			return fail("in ring indices broken: cons %u prod %u", c, p);
		int eol = 0;
		while (c != p && !eol) {
			char ch = cons->in[MASK_XENCONS_IDX(c, cons->in)];
			c++;
			if (ch == '\r' || ch == '\n')
				eol = n > 0;	/* skip empty lines (CR LF) */
			else if (n < sizeof(line) - 1)
				line[n++] = ch;
		}
		__atomic_thread_fence(__ATOMIC_SEQ_CST);	/* mb */
		cons->in_cons = c;
		evtchn_send(cons_port);
		if (eol)
			break;
	}
	line[n] = 0;
	static char echo[160];
	int len = snprintf(echo, sizeof(echo), "PVHTEST-CONSOLE-ECHO %s\n", line);
	if ((r = cons_write(echo, (size_t)len)))
		return r;
	if (!wait_until(out_drained, NULL, 2000, 0, NULL))
		return fail("VMM did not consume the echo in 2 s");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* smp                                                                 */

static volatile uint32_t ap_ran, ap_vcpu_id = ~0u;
static volatile long ap_send_rc = 1;
static volatile evtchn_port_t ipi_port;

/*
 * vCPU 1 after head.S's ap_start32/ap_start64: record that it ran and its
 * vCPU id (Xen leaf base+4 EBX), then send on the IPI port bound to vCPU 0
 * and halt with interrupts off.
 */
void ap_main(void)
{
	idt_load();
	uint32_t a, b, c, d, base = xen_cpuid_base();
	if (base) {
		__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d)
				 : "a"(base + 4), "c"(0));
		if (a & XEN_HVM_CPUID_VCPU_ID_PRESENT)
			ap_vcpu_id = b;
	}
	__atomic_store_n(&ap_ran, 1, __ATOMIC_SEQ_CST);
	if (ipi_port)
		ap_send_rc = evtchn_send(ipi_port);
	for (;;)
		__asm__ volatile("cli; hlt");
}

static uint32_t ipi_hits0;

static int ap_done(const void *arg)
{
	(void)arg;
	return ap_ran && ap_send_rc != 1 && port_hits[ipi_port] > ipi_hits0;
}

/* vCPU 1 exists and has not been started yet: what both SMP scenarios need. */
static const char *need_vcpu1_down(void)
{
	long rc = vcpu_op(VCPUOP_is_up, 1, NULL);

	if (rc == -XEN_ENOENT)
		return fail("no vCPU 1 (boot with --vcpus 2)");
	if (rc < 0)
		return fail("is_up(1) rc %ld", rc);
	if (rc != 0)
		return fail("vCPU 1 is already up (one start per boot)");
	return NULL;
}

/*
 * vCPU 1's VCPUOP_initialise state: VCPU_HVM_MODE_32B, flat 4 GiB
 * segments, protected mode without paging, entering head.S's ap_start32.
 */
static struct vcpu_hvm_context *ap_context(void)
{
	static struct vcpu_hvm_context ctx;
	ctx = (struct vcpu_hvm_context){ .mode = VCPU_HVM_MODE_32B };
	struct vcpu_hvm_x86_32 *x = &ctx.cpu_regs.x86_32;
	x->eip = (uint32_t)(uintptr_t)ap_start32;
	x->esp = (uint32_t)(uintptr_t)ap_stack_top;
	x->eflags = 0x2;
	x->cr0 = CR0_PE | 0x10;	/* PE, ET */
	x->cs_limit = x->ds_limit = x->ss_limit = x->es_limit = ~0u;
	x->cs_ar = 0xc9b;	/* G, D, P, S, code exec/read accessed */
	x->ds_ar = x->ss_ar = x->es_ar = 0xc93;	/* G, D, P, S, data read/write accessed */
	x->tr_limit = 0x67;
	x->tr_ar = 0x8b;	/* P, 32-bit busy TSS */
	return &ctx;
}

static const char *scen_smp(void)
{
	const char *r;
	long rc;

	if ((r = need_vcpu1_down()))
		return r;

	if ((r = xen_setup()))
		return r;
	struct evtchn_bind_ipi bi = { .vcpu = 0 };
	if ((rc = evtchn_op(EVTCHNOP_bind_ipi, &bi)) != 0)
		printk("PVHINFO bind_ipi(vcpu 0) rc %ld: the AP will only set a flag\n", rc);
	else
		ipi_port = bi.port;
	ipi_hits0 = port_hits[ipi_port];

	struct vcpu_hvm_context *ctx = ap_context();

	if ((rc = vcpu_op(VCPUOP_initialise, 1, ctx)) != 0)
		return fail("VCPUOP_initialise(1) rc %ld", rc);
	if ((rc = vcpu_op(VCPUOP_initialise, 1, ctx)) != -XEN_EEXIST)
		return fail("second VCPUOP_initialise(1) rc %ld, want %d", rc, -XEN_EEXIST);
	if ((rc = vcpu_op(VCPUOP_up, 1, NULL)) != 0)
		return fail("VCPUOP_up(1) rc %ld", rc);
	if ((rc = vcpu_op(VCPUOP_is_up, 1, NULL)) != 1)
		return fail("is_up(1) after up: rc %ld, want 1", rc);

	int ok = wait_until(ap_done, NULL, 2000, 1, NULL);
	if (!ap_ran)
		return fail("vCPU 1 did not run within 2 s of VCPUOP_up");
	printk("PVHINFO smp: AP ran, vcpu id %d, send rc %ld, IPI upcalls %u\n",
	       (int)ap_vcpu_id, ap_send_rc, ipi_port ? port_hits[ipi_port] - ipi_hits0 : 0);
	if (ap_vcpu_id != 1)
		return fail("AP reports vCPU id %d in CPUID leaf base+4", (int)ap_vcpu_id);
	if (!ipi_port)
		return fail("bind_ipi failed (AP ran)");
	if (ap_send_rc != 0)
		return fail("AP's send on the IPI port rc %ld", ap_send_rc);
	if (!ok)
		return fail("IPI from vCPU 1 did not reach vCPU 0 within 2 s");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* halt_cli                                                            */

static int ap_ran_flag(const void *arg)
{
	(void)arg;
	return ap_ran != 0;
}

/*
 * Every vCPU halts with interrupts off: vCPU 1, when there is one, started
 * as in smp (ap_main ends in cli; hlt), then vCPU 0. Xen's hvm_hlt takes
 * each as going down and powers the domain off when none is left
 * (hvm_vcpu_down, SHUTDOWN_poweroff). Never returns: the host checks the
 * exit.
 */
static const char *scen_halt_cli(void)
{
	long rc = vcpu_op(VCPUOP_is_up, 1, NULL);

	if (rc == 0) {
		if ((rc = vcpu_op(VCPUOP_initialise, 1, ap_context())) != 0)
			return fail("VCPUOP_initialise(1) rc %ld", rc);
		if ((rc = vcpu_op(VCPUOP_up, 1, NULL)) != 0)
			return fail("VCPUOP_up(1) rc %ld", rc);
		if (!wait_until(ap_ran_flag, NULL, 2000, 1, NULL))
			return fail("vCPU 1 did not run within 2 s of VCPUOP_up");
	} else if (rc != -XEN_ENOENT) {
		return fail("is_up(1) rc %ld", rc);
	}
	printk("PVHINFO halt_cli: %s, vCPU 0 halting with interrupts off\n",
	       ap_ran ? "vCPU 1 halted" : "one vCPU");
	for (;;)
		__asm__ volatile("cli; hlt");
}

/* ------------------------------------------------------------------ */
/* smp_sipi: vCPU 1 started the native way (INIT, SIPI, SIPI)           */

#define APIC_ID		0x020
#define APIC_ICR_LO	0x300
#define APIC_ICR_HI	0x310
#define APIC_ICR_BUSY	0x1000		/* delivery status (xAPIC only) */
#define APIC_DM_INIT	0x500
#define APIC_DM_STARTUP	0x600
#define APIC_INT_ASSERT	0x4000
#define APIC_INT_LEVELTRIG 0x8000

extern uint8_t sipi_tramp_start[], sipi_tramp_end[];
extern volatile uint32_t sipi_stage;
static volatile uint32_t sipi_ap_vcpu_id = ~0u;
static volatile long sipi_ap_version = 1;

/* vCPU 1 after the trampoline and head.S's ap_sipi32/ap_sipi64. */
void sipi_ap_main(void)
{
	idt_load();
	uint32_t a, b, c, d, base = xen_cpuid_base();
	if (base) {
		__asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d)
				 : "a"(base + 4), "c"(0));
		if (a & XEN_HVM_CPUID_VCPU_ID_PRESENT)
			sipi_ap_vcpu_id = b;
	}
	sipi_ap_version = xen_version(XENVER_version, NULL);
	__atomic_store_n(&sipi_stage, SIPI_STAGE_C, __ATOMIC_SEQ_CST);
	for (;;)
		__asm__ volatile("cli; hlt");
}

static uint32_t lapic_read(uint32_t reg)
{
	if (lapic_mode == 2)
		return (uint32_t)rdmsr(0x800 + (reg >> 4));
	return *(volatile uint32_t *)(lapic_mmio + reg);
}

/*
 * One IPI through the ICR (Intel SDM vol. 3, 11.6.1): xAPIC writes the
 * destination to ICR high (bits 56-63) first, the low word sends; x2APIC is
 * one 64-bit WRMSR to 0x830 with the x2APIC ID in the high half. Returns 0,
 * or -1 if the xAPIC delivery status stayed busy for 10 ms.
 */
static int send_ipi(uint32_t apic_id, uint32_t icr_lo)
{
	if (lapic_mode == 2) {
		__asm__ volatile("wrmsr" : : "c"(0x830), "a"(icr_lo), "d"(apic_id) : "memory");
		return 0;
	}
	lapic_write(APIC_ICR_HI, apic_id << 24);
	lapic_write(APIC_ICR_LO, icr_lo);
	uint64_t end = tsc_deadline_ms(10);
	while (lapic_read(APIC_ICR_LO) & APIC_ICR_BUSY)
		if (rdtsc() >= end)
			return -1;
	return 0;
}

struct sipi_wait {
	int long_mode;		/* wait for sipi_ap_main, else the real-mode flag */
};

static int sipi_done(const void *arg)
{
	const struct sipi_wait *w = arg;
	volatile uint8_t *page = PHYS(SIPI_TRAMP_PA);
	if (!w->long_mode)
		return *(volatile uint32_t *)(page + SIPI_FLAG_OFF) == SIPI_MAGIC;
	return sipi_stage >= SIPI_STAGE_C;
}

/* The trampoline page is RAM in start_info's memmap and holds none of its data. */
static const char *sipi_page_ok(void)
{
	const struct hvm_start_info *si = start_info;
	const uint64_t lo = SIPI_TRAMP_PA, hi = SIPI_TRAMP_PA + PAGE_SIZE;
	if (si->version < 1 || !si->memmap_entries)
		return fail("no memmap in start_info");
	const struct hvm_memmap_table_entry *mm = PHYS(si->memmap_paddr);
	int ram = 0;
	for (uint32_t i = 0; i < si->memmap_entries; i++)
		if (mm[i].type == XEN_HVM_MEMMAP_TYPE_RAM && mm[i].addr <= lo &&
		    mm[i].addr + mm[i].size >= hi)
			ram = 1;
	if (!ram)
		return fail("trampoline page 0x%x is not RAM in the memmap", SIPI_TRAMP_PA);
	const uint64_t used[][2] = {
		{ pvh_start_info_pa, sizeof(*si) },
		{ si->cmdline_paddr, 4096 },
		{ si->memmap_paddr, si->memmap_entries * sizeof(*mm) },
		{ si->rsdp_paddr, 36 },
		{ si->modlist_paddr, si->nr_modules * sizeof(struct hvm_modlist_entry) },
	};
	for (size_t i = 0; i < ARRAY_SIZE(used); i++)
		if (used[i][1] && used[i][0] < hi && used[i][0] + used[i][1] > lo)
			return fail("trampoline page 0x%x overlaps start_info data at 0x%lx",
				    SIPI_TRAMP_PA, (unsigned long)used[i][0]);
	return NULL;
}

/*
 * BSP: copy the trampoline to SIPI_TRAMP_PA, then the MP-spec sequence as
 * Linux's wakeup_secondary_cpu_via_init() sends it: INIT level assert,
 * INIT level de-assert, 10 ms, STARTUP (vector = page number), 200 us,
 * STARTUP again. Then wait (halted, bounded by pvh.sipi_timeout=MS, default
 * 2000) for the real-mode flag or, unless pvh.sipi=real, for vCPU 1 to
 * reach sipi_ap_main() in long mode and make a hypercall.
 */
static const char *scen_smp_sipi(void)
{
	const char *r;
	long rc;

	if ((r = need_vcpu1_down()))
		return r;
	if ((r = sipi_page_ok()))
		return r;
	lapic_init();
	if (!lapic_mode)
		return fail("LAPIC disabled: no ICR to send INIT/SIPI with");

	size_t len;
	const char *mode = cmdline_opt("pvh.sipi=", &len);
	struct sipi_wait w = { .long_mode = !(mode && len == 4 && strncmp(mode, "real", 4) == 0) };
	uint64_t timeout = opt_num("pvh.sipi_timeout=", 2000);

	size_t tlen = (size_t)(sipi_tramp_end - sipi_tramp_start);
	if (tlen > SIPI_FLAG_OFF)
		return fail("trampoline is %lu bytes", (unsigned long)tlen);
	volatile uint8_t *page = PHYS(SIPI_TRAMP_PA);
	memset((void *)page, 0xcc, PAGE_SIZE);	/* stray execution: int3 */
	memcpy((void *)page, sipi_tramp_start, tlen);
	*(volatile uint32_t *)(page + SIPI_FLAG_OFF) = 0;
	*(volatile uint16_t *)(page + SIPI_CS_OFF) = 0xffff;
	page[SIPI_GO_OFF] = (uint8_t)w.long_mode;
	sipi_stage = 0;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);

	uint32_t self = lapic_mode == 2 ? lapic_read(APIC_ID) : lapic_read(APIC_ID) >> 24;
	const uint32_t ap = 1;	/* KVM: APIC ID = vCPU index */
	const uint32_t vector = SIPI_TRAMP_PA >> 12;
	printk("PVHINFO smp_sipi: %s, BSP APIC ID %u, INIT/SIPI to APIC ID %u, vector 0x%02x, "
	       "trampoline %lu bytes at 0x%x, %s\n", lapic_mode == 2 ? "x2APIC" : "xAPIC", self, ap,
	       vector, (unsigned long)tlen, SIPI_TRAMP_PA, w.long_mode ? "on to long mode" : "real mode only");

	uint64_t t0 = rdtsc();
	if (send_ipi(ap, APIC_INT_LEVELTRIG | APIC_INT_ASSERT | APIC_DM_INIT))
		return fail("INIT assert: ICR delivery status stuck");
	if (send_ipi(ap, APIC_INT_LEVELTRIG | APIC_DM_INIT))
		return fail("INIT de-assert: ICR delivery status stuck");
	tsc_delay_us(10000);
	for (int i = 0; i < 2; i++) {
		if (send_ipi(ap, APIC_DM_STARTUP | vector))
			return fail("STARTUP %d: ICR delivery status stuck", i + 1);
		tsc_delay_us(200);
	}

	int ok = wait_until(sipi_done, &w, timeout, 1, NULL);
	uint64_t us = (rdtsc() - t0) * 1000 / tsc_khz();
	uint32_t flag = *(volatile uint32_t *)(page + SIPI_FLAG_OFF);
	uint16_t cs = *(volatile uint16_t *)(page + SIPI_CS_OFF);
	printk("PVHINFO smp_sipi: after %lu us: flag 0x%x CS 0x%x stage %u vcpu id %d xen_version %ld\n",
	       (unsigned long)us, flag, cs, sipi_stage, (int)sipi_ap_vcpu_id, sipi_ap_version);
	if (flag != SIPI_MAGIC)
		return fail("no real-mode flag within %lu ms (flag 0x%x stage %u)",
			    (unsigned long)timeout, flag, sipi_stage);
	if (cs != (SIPI_TRAMP_PA >> 4))
		return fail("AP's real-mode CS 0x%x, want 0x%x", cs, SIPI_TRAMP_PA >> 4);
	if (!w.long_mode) {
		pass_note("real mode: flag at 0x%x, CS 0x%x", SIPI_TRAMP_PA + SIPI_FLAG_OFF, cs);
		return NULL;
	}
	if (!ok)
		return fail("real mode ran (CS 0x%x) but vCPU 1 stopped at stage %u within %lu ms",
			    cs, sipi_stage, (unsigned long)timeout);
	if (sipi_ap_vcpu_id != 1)
		return fail("AP reports vCPU id %d in CPUID leaf base+4", (int)sipi_ap_vcpu_id);
	long v = xen_version(XENVER_version, NULL);
	if (sipi_ap_version != v)
		return fail("AP's xen_version 0x%lx, BSP's 0x%lx", sipi_ap_version, v);
	/* Xen marks a vCPU started by SIPI initialised and up (hvm_vcpu_reset_state). */
	if ((rc = vcpu_op(VCPUOP_is_up, 1, NULL)) != 1)
		return fail("VCPUOP_is_up(1) after the native start: rc %ld, want 1", rc);
	pass_note("real mode (CS 0x%x) -> long mode, vcpu id 1, hypercall ok, is_up 1, %lu us", cs,
		  (unsigned long)us);
	return NULL;
}

/*
 * Benchmark: event send -> upcall handled, over a loopback channel
 * (pvh.bench=N round trips, default 1000). Each iteration sends on B and
 * spins with interrupts on until the handler has counted A. Prints
 *   PVHBENCH bench_evtchn iterations=N cycles=C tsc_khz=K
 */
static const char *scen_bench_evtchn(void)
{
	const char *r;
	long rc;
	if ((r = xen_setup()))
		return r;
	size_t len;
	const char *v = cmdline_opt("pvh.bench=", &len);
	unsigned long n = 0;
	for (size_t i = 0; v && i < len && v[i] >= '0' && v[i] <= '9'; i++)
		n = n * 10 + (unsigned long)(v[i] - '0');
	if (!n)
		n = 1000;
	struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = DOMID_SELF };
	if ((rc = evtchn_op(EVTCHNOP_alloc_unbound, &au)) != 0)
		return fail("alloc_unbound rc %ld", rc);
	struct evtchn_bind_interdomain bi = { .remote_dom = DOMID_SELF, .remote_port = au.port };
	if ((rc = evtchn_op(EVTCHNOP_bind_interdomain, &bi)) != 0)
		return fail("bind_interdomain rc %ld", rc);
	evtchn_port_t a = au.port, b = bi.local_port;
	wait_port(a, port_hits[a] + 1, 100, 0, NULL);	/* bind_interdomain marks A pending */
	uint64_t total = 0;
	for (unsigned long i = 0; i < n; i++) {
		uint32_t h = port_hits[a];
		uint64_t t0 = rdtsc();
		if ((rc = evtchn_send(b)) != 0)
			return fail("send rc %ld", rc);
		/* hlt: the upcall ends it (on a software KVM backend a spinning
		 * vCPU only notices a new interrupt at the host's next tick),
		 * also with the LAPIC off (pvh.lapic=off: no watchdog). */
		if (!wait_port(a, h + 1, 1000, 2, NULL))
			return fail("no upcall for send %lu", i);
		total += rdtsc() - t0;
	}
	evtchn_close(b);
	evtchn_close(a);
	printk("PVHBENCH bench_evtchn iterations=%lu cycles=%lu tsc_khz=%lu\n", n, (unsigned long)total,
	       (unsigned long)tsc_khz());
	return NULL;
}

/* Run only when named (see testguest/README.md). */
const struct scenario xen_scenarios[] = {
	{ "bench_evtchn", scen_bench_evtchn },
	{ "evtchn", scen_evtchn },
	{ "upcall_bare", scen_upcall_bare },
	{ "upcall_owed", scen_upcall_owed },
	{ "pvclock", scen_pvclock },
	{ "timer", scen_timer },
	{ "console_ring", scen_console_ring },
	{ "console_flood", scen_console_flood },
	{ "smp", scen_smp },
	{ "smp_sipi", scen_smp_sipi },
	{ "halt_cli", scen_halt_cli },
};
const size_t nr_xen_scenarios = ARRAY_SIZE(xen_scenarios);
