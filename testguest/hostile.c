/*
 * pvh test guest: scenario hostile_storm (issue 13 item 2), run only when named
 * (scenarios.c's hostile, in the default list, is a quick one-pass check).
 *
 * A guest that throws garbage at the VMM as fast as it can for a bounded
 * time, then checks that the VMM still answers correctly:
 *   - every hypercall number 0..63 and the page's entries 64, 100 and 127,
 *     with random arguments;
 *   - every sub-op of the hypercalls pvh implements (xen_version,
 *     console_io, sched_op, memory_op, vcpu_op, hvm_op, event_channel_op,
 *     grant_table_op, set_timer_op) with random argument structs, placed in
 *     our memory (aligned, misaligned, crossing a page), on the hypercall
 *     page, in the PCI hole (no RAM), above 4 GiB (not mapped by our page
 *     tables) and at non-canonical addresses; huge counts; other domains'
 *     ids, event-channel ports we do not own, frames outside our memory;
 *   - grant entries naming other domains, with bad flags;
 *   - XenStore requests of every type (and unknown ones) with garbage
 *     payloads, transaction ids and lengths up to the payload maximum;
 *   - with two disks (pvh.blkdev, pvh.blkdev2 as blk_scribble): malformed
 *     block requests on the first (blk_hostile_batch in blkfront.c), and at
 *     the end its ring scribbled over (the backend may rightly close it);
 *   - with a vif (pvh.hostile_net=0 to leave it alone): malformed TX packets
 *     and RX requests with bad grants and ids (net_hostile_batch in
 *     netfront.c), each of which netback drops with an error; after the
 *     rounds the fatal cases (over 20 slots, an unknown extra type, a
 *     request producer far past the ring), each of which must close the vif,
 *     which must then connect again and carry a DHCP exchange.
 * Each negative result must be one of Xen's errors (xen/errno.h), some must
 * be exactly the one Xen gives (-ENOSYS for a hypercall Xen has no handler
 * for, -EFAULT for an unmapped buffer, -EINVAL for a port past the 2-level
 * ABI's 4096); nothing may hang (each wait is bounded).
 *
 * What a guest must not do to itself is left out, since it would only test
 * the guest: SCHEDOP_shutdown/shutdown_code/block, VCPUOP_down,
 * VCPUOP_initialise or VCPUOP_send_nmi on vCPU 0, closing or resetting its
 * own event channels, changing its own upcall vector or HVM params,
 * switching to grant v2, mapping pages over its own RAM (every GFN field of
 * ours gets bit 40), MSIs to itself, and console writes that are not one
 * whole line (the result lines share the console). The hypercall page is
 * given as an argument, in entries 64..94 (none of them is called while
 * it is: a write to the page through an output argument is legal, as on
 * Xen, and would change the code under the caller), and filled again
 * (the MSR written) after each such call. Hypercalls go through the page:
 * once a guest used it, pvh no longer breaks on the vmcall sites (a guest
 * uses one transport; VCPURunner's HypercallTransports), so numbers past
 * the page's 128 entries cannot be made here.
 *
 * Then: xen_version as before, an event-channel loopback (alloc_unbound,
 * bind_interdomain, send, upcall), a XenStore write and read-back, (with
 * disks) disk B's pattern read back after disk A's ring was scribbled, and
 * (with a vif) its three closes and a DHCP exchange after them.
 *
 * Command line: pvh.hostile_seed=N (default from the TSC; printed),
 * pvh.hostile_ms=N guest time of the rounds (default 20000),
 * pvh.hostile_rounds=N at most (default unbounded), pvh.hostile_blk=0 to
 * leave the disks alone, pvh.hostile_net=0 the vif, pvh.blkseed (disk B's
 * pattern).
 * PASS note: "seed=S rounds=R calls=C ms=T ..." (see the end).
 */
#include "testguest.h"
#include <xen/event_channel.h>
#include <xen/grant_table.h>
#include <xen/io/xs_wire.h>
#include <xen/io/blkif.h>

#define evtchn_op(cmd, arg)        HC2(__HYPERVISOR_event_channel_op, cmd, arg)
#define gnttab_op(cmd, uop, count) HC3(__HYPERVISOR_grant_table_op, cmd, uop, count)

/* Bit 40 in a frame number: far outside any test guest's memory. */
#define FAR_GFN (1ULL << 40)

/* ------------------------------------------------------------------ */
/* Randomness and where arguments live                                  */

static uint64_t rng;

/* xorshift64*: small, and the same sequence for the same seed. */
static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dULL;
}

static uint32_t below(uint32_t n)
{
	return (uint32_t)(rnd() % n);
}

/*
 * Four pages the VMM may write anything into: page 0 and its border with
 * page 1 hold argument structs, page 2 frame and port arrays, page 3 the
 * runstate/time areas we register (the VMM keeps writing those).
 */
static uint8_t scratch[4 * PAGE_SIZE] __attribute__((aligned(4096)));
#define ARRAYS  (scratch + 2 * PAGE_SIZE)
#define AREAS   (scratch + 3 * PAGE_SIZE)

static int own_domid;
static unsigned dbg;	/* pvh.hostile_debug: 1 each step of a round, 2 each call */

/* A domain id: ours, DOMID_SELF, dom0, a neighbour's, a reserved one, anything. */
static domid_t some_domid(void)
{
	switch (below(7)) {
	case 0: return DOMID_SELF;
	case 1: return (domid_t)own_domid;
	case 2: return 0;
	case 3: return (domid_t)(1 + below(4));
	case 4: return (domid_t)(DOMID_FIRST_RESERVED + below(16));
	default: return (domid_t)rnd();
	}
}

static int is_self(domid_t d)
{
	return d == DOMID_SELF || d == (domid_t)own_domid;
}

/* A domain id that is not ours. */
static domid_t other_domid(void)
{
	domid_t d;
	do
		d = some_domid();
	while (is_self(d));
	return d;
}

static int hc_dirty;

enum where { W_ALIGNED, W_MISALIGNED, W_CROSSING, W_HCPAGE, W_HOLE, W_HIGH, W_NONCANONICAL, W_KINDS };

/* An address of kind w: in scratch page 0/1 (for a struct of at most 1 KiB), or none of our RAM. */
static uintptr_t address(enum where w)
{
	switch (w) {
	case W_ALIGNED: return (uintptr_t)scratch;
	case W_MISALIGNED: return (uintptr_t)scratch + 1 + below(7);
	case W_CROSSING: return (uintptr_t)scratch + PAGE_SIZE - 1 - below(24);
	case W_HCPAGE:
		hc_dirty = 1;	/* room for a 1 KiB output before the page's end */
		return (uintptr_t)hypercall_page + 64 * 32 + below(960);
	case W_HOLE: return 0xc0000000UL + (rnd() & 0x1fffffffUL);	/* the PCI hole: never RAM */
	case W_HIGH: return (1UL << 32) + (rnd() & ((1UL << 39) - 1));	/* head.S maps only 4 GiB */
	default: return (1UL << 47) | (rnd() & ((1UL << 47) - 1));	/* bits 48..63 clear: not canonical */
	}
}

/* The hypercall page was an argument: fill it again (hypercall.c, CPUID leaf 3's MSR). */
static void hc_restore(void)
{
	if (hc_dirty)
		hypercall_init(xen_cpuid_base());
	hc_dirty = 0;
}

static int in_ram(enum where w)
{
	return w <= W_CROSSING;
}

/*
 * Where the argument struct s (len bytes, at most 1 KiB) goes: copied to an
 * address in scratch, or an address where nothing of ours is; the hypercall
 * page only if hc_ok. Returns the address to pass.
 */
static uintptr_t place(const void *s, size_t len, int hc_ok)
{
	enum where w;
	do
		w = (enum where)below(W_KINDS);
	while (w == W_HCPAGE && !hc_ok);
	uintptr_t p = address(w);
	if (in_ram(w))
		memmove((void *)p, s, len);
	return p;
}

static void fill(void *p, size_t len)
{
	uint64_t *w = p;
	for (size_t i = 0; i < len / 8; i++)
		w[i] = rnd();
}

/* A count: small, zero, or huge (huge only where no RAM is behind it). */
static uint32_t count(int huge_ok, uint32_t small)
{
	switch (below(huge_ok ? 4 : 2)) {
	case 0: return 0;
	case 1: return 1 + below(small);
	case 2: return 0xffffffffu - below(4);
	default: return (uint32_t)rnd() | 0x10000;
	}
}

/* ------------------------------------------------------------------ */
/* Results                                                              */

static struct {
	uint32_t calls, ok, enosys, efault, einval, eperm, other;
	uint32_t xs, xs_err, blk;
	struct net_hostile_counts net;
	unsigned net_closed;
	char bad[120];		/* the first result that was not one of Xen's */
} st;

static int xen_errno(long e)
{
	/* xen/errno.h's list (some values have two names). */
	static const long known[] = {
#define XEN_ERRNO(name, value) value,
#include <xen/errno.h>
	};
	for (unsigned i = 0; i < ARRAY_SIZE(known); i++)
		if (known[i] == e)
			return 1;
	return 0;
}

/* Any result: >= 0, or a Xen errno. */
static long seen(long rc, const char *what, unsigned sub)
{
	if (dbg >= 2)
		printk("PVHINFO hostile: %s %u rc %ld\n", what, sub, rc);
	st.calls++;
	if (rc >= 0)
		st.ok++;
	else if (rc == -XEN_ENOSYS)
		st.enosys++;
	else if (rc == -XEN_EFAULT)
		st.efault++;
	else if (rc == -XEN_EINVAL)
		st.einval++;
	else if (rc == -XEN_EPERM)
		st.eperm++;
	else
		st.other++;
	if (rc < 0 && !xen_errno(-rc) && !st.bad[0])
		snprintf(st.bad, sizeof(st.bad), "%s %u: rc %ld is no Xen errno", what, sub, rc);
	return rc;
}

/* A result Xen gives exactly (cited at the call). */
static void want(long rc, long expect, const char *what, unsigned sub)
{
	seen(rc, what, sub);
	if (rc != expect && !st.bad[0])
		snprintf(st.bad, sizeof(st.bad), "%s %u: rc %ld, Xen gives %ld", what, sub, rc, expect);
}

/* ------------------------------------------------------------------ */
/* Hypercall numbers                                                    */

/*
 * The numbers Xen's hvm_hypercall_table has a handler for (x86/hvm/hypercall.c,
 * xen/include/public/xen.h): pvh serves some (their sub-ops are driven
 * below), the others it may refuse as it likes; any other is -ENOSYS.
 */
static int xen_handled(unsigned nr)
{
	switch (nr) {
	case __HYPERVISOR_xsm_op:
	case __HYPERVISOR_physdev_op:
	case __HYPERVISOR_sysctl:
	case __HYPERVISOR_domctl:
	case __HYPERVISOR_kexec_op:
	case __HYPERVISOR_argo_op:
	case __HYPERVISOR_xenpmu_op:
	case __HYPERVISOR_dm_op:
	case __HYPERVISOR_hypfs_op:
	case __HYPERVISOR_arch_0:
	case __HYPERVISOR_arch_1:
	case __HYPERVISOR_memory_op:
	case __HYPERVISOR_set_timer_op:
	case __HYPERVISOR_xen_version:
	case __HYPERVISOR_console_io:
	case __HYPERVISOR_grant_table_op:
	case __HYPERVISOR_vcpu_op:
	case __HYPERVISOR_sched_op:
	case __HYPERVISOR_event_channel_op:
	case __HYPERVISOR_hvm_op:
		return 1;
	}
	return 0;
}

/*
 * Every number 0..63, then some of the page's other entries (64..127).
 * For those Xen's hvm_hypercall_table has no handler for a PVH guest (and
 * pvh serves none of) the answer is -ENOSYS whatever the arguments
 * (xen/arch/x86/hvm/hypercall.c). The handled ones get a sub-op far past any
 * defined (bit 20; memory_op's is its low 6 bits, MEMOP_CMD_MASK, so 63;
 * grant_table_op's an undefined one and a count of 1).
 */
static void numbers(void)
{
	static const unsigned long beyond[] = { 64, 100, 127 };
	static unsigned next;	/* a quarter per round: all of them every four rounds */
	for (unsigned k = 0; k < (64 + ARRAY_SIZE(beyond) + 3) / 4; k++) {
		unsigned nr = next++ % (64 + ARRAY_SIZE(beyond));
		unsigned long n = nr < 64 ? nr : beyond[nr - 64];
		unsigned long a1 = rnd(), a2 = address((enum where)below(W_KINDS)), a3 = rnd();
		fill(scratch, 256);
		if (n < 64 && xen_handled((unsigned)n)) {
			if (n == __HYPERVISOR_set_timer_op)
				continue;	/* its argument is a time: set_timer below */
			a1 = n == __HYPERVISOR_memory_op ? 63 : (a1 | (1UL << 20));
			if (n == __HYPERVISOR_grant_table_op) {
				a1 = 13 + below(50);	/* not a defined one: a count could be huge */
				a3 = 1;
			}
			seen(hypercall((unsigned)n, a1, a2, a3, rnd(), rnd()), "hypercall", (unsigned)n);
		} else {
			want(hypercall((unsigned)n, a1, a2, a3, rnd(), rnd()), -XEN_ENOSYS, "hypercall", (unsigned)n);
		}
		hc_restore();
	}
}

/* ------------------------------------------------------------------ */
/* Sub-ops                                                              */

static void op_xen_version(void)
{
	unsigned cmd = below(4) ? below(32) : (unsigned)rnd();
	fill(scratch, 256);
	seen(xen_version(cmd, place(scratch, 0, 1)), "xen_version", cmd);
	/* do_xen_version: copy_to_guest of the 16-byte extraversion faults: -EFAULT. */
	want(xen_version(XENVER_extraversion, address((enum where)(W_HOLE + below(3)))), -XEN_EFAULT,
	     "xen_version(extraversion, no RAM)", 0);
}

/*
 * console_io: writes of one whole "PVHJUNK" line from our memory, or of
 * any count from where nothing is (do_console_io: -EFAULT, as guest_console_write's
 * copy_from_guest fails); reads and unknown commands with anything.
 */
static void op_console_io(void)
{
	static char line[80];
	switch (below(4)) {
	case 0: {
		int n = snprintf(line, sizeof(line), "PVHJUNK %lx\n", (unsigned long)rnd());
		seen(console_io(CONSOLEIO_write, n, line), "console_io write", 0);
		break;
	}
	case 1:
		want(console_io(CONSOLEIO_write, 1 + below(64), address((enum where)(W_HOLE + below(3)))),
		     -XEN_EFAULT, "console_io write (no RAM)", 0);
		break;
	case 2:
		seen(console_io(CONSOLEIO_read, 1 + below(512), address((enum where)below(3))), "console_io read", 1);
		break;
	default: {
		unsigned cmd = 2 + below(1000);
		seen(console_io(cmd, rnd(), address((enum where)below(W_KINDS))), "console_io", cmd);
	}
	}
}

static void op_sched(void)
{
	fill(scratch, 256);
	switch (below(5)) {
	case 0:
		seen(sched_op(SCHEDOP_yield, address((enum where)below(W_KINDS))), "sched_op", SCHEDOP_yield);
		break;
	case 1: {
		/* Anyone, ourselves included: a domain is not its own device model (-EPERM/-ESRCH). */
		struct sched_remote_shutdown r = { .domain_id = some_domid(), .reason = (unsigned)rnd() };
		seen(sched_op(SCHEDOP_remote_shutdown, place(&r, sizeof(r), 1)), "sched_op", SCHEDOP_remote_shutdown);
		break;
	}
	case 2: {
		/* Ports anywhere, counts past the 128 allowed; the timeout already past. */
		evtchn_port_t *ports = (evtchn_port_t *)ARRAYS;
		for (unsigned i = 0; i < 8; i++)
			ports[i] = below(2) ? (evtchn_port_t)rnd() : 64 + below(4000);
		struct sched_poll p = { .nr_ports = count(1, 8), .timeout = below(2) ? 1 : (rnd() | (1ULL << 63)) };
		set_xen_guest_handle(p.ports, below(2) ? ports : (evtchn_port_t *)address((enum where)(W_HOLE + below(3))));
		seen(sched_op(SCHEDOP_poll, place(&p, sizeof(p), 0)), "sched_op", SCHEDOP_poll);
		break;
	}
	case 3:
		seen(sched_op(SCHEDOP_watchdog + below(2), place(scratch, 0, 1)), "sched_op", SCHEDOP_watchdog);
		break;
	default: {
		unsigned cmd = 8 + below(100000);
		seen(sched_op(cmd, address((enum where)below(W_KINDS))), "sched_op", cmd);
	}
	}
}

/* GFN arrays of frames outside our memory, in page 2. */
static uint64_t *far_frames(void)
{
	uint64_t *f = (uint64_t *)ARRAYS;
	for (unsigned i = 0; i < 64; i++)
		f[i] = rnd() | FAR_GFN;
	return f;
}

static void op_memory(void)
{
	static const unsigned cmds[] = {
		XENMEM_increase_reservation, XENMEM_decrease_reservation, XENMEM_populate_physmap,
		XENMEM_maximum_ram_page, XENMEM_current_reservation, XENMEM_maximum_reservation,
		XENMEM_add_to_physmap, XENMEM_add_to_physmap_batch, XENMEM_memory_map,
		XENMEM_machine_memory_map, XENMEM_exchange, XENMEM_remove_from_physmap,
		XENMEM_acquire_resource, 18 /* XENMEM_get_sharing_freed_pages */, 63,
	};
	unsigned cmd = cmds[below(ARRAY_SIZE(cmds))];
	fill(scratch, 256);
	uintptr_t arg;
	switch (cmd) {
	case XENMEM_increase_reservation:
	case XENMEM_decrease_reservation:
	case XENMEM_populate_physmap: {
		struct xen_memory_reservation r = {
			.extent_order = below(2) ? below(10) : (unsigned)rnd(),
			.mem_flags = below(2) ? 0 : (unsigned)rnd(), .domid = some_domid(),
		};
		/* Frames far outside our memory (at most 64), or a huge count of them where nothing is. */
		if (below(2)) {
			set_xen_guest_handle(r.extent_start, far_frames());
			r.nr_extents = count(0, 64);
		} else {
			set_xen_guest_handle(r.extent_start, (uint64_t *)address((enum where)(W_HOLE + below(3))));
			r.nr_extents = count(1, 64);
		}
		arg = place(&r, sizeof(r), 0);
		break;
	}
	case XENMEM_maximum_ram_page:
	case XENMEM_current_reservation:
	case XENMEM_maximum_reservation: {
		domid_t d = some_domid();
		arg = place(&d, sizeof(d), 1);
		break;
	}
	case XENMEM_add_to_physmap: {
		struct xen_add_to_physmap x = {
			.domid = some_domid(), .size = (uint16_t)rnd(), .space = below(2) ? below(8) : (unsigned)rnd(),
			.idx = rnd(), .gpfn = below(2) ? (rnd() | FAR_GFN) : rnd(),
		};
		if (is_self(x.domid)) {
			/* Never a real page of ours (moved) or frame (shared_info is idx 0, grant frames are few). */
			if (x.space == XENMAPSPACE_shared_info)
				x.idx |= 1;
			else if (x.space == XENMAPSPACE_grant_table)
				x.idx |= 0x10000;
			else
				x.idx |= FAR_GFN;
		}
		arg = place(&x, sizeof(x), 0);
		break;
	}
	case XENMEM_add_to_physmap_batch: {
		struct xen_add_to_physmap_batch b = {
			.domid = some_domid(), .space = (uint16_t)below(8), .size = (uint16_t)count(0, 8),
		};
		b.u.foreign_domid = other_domid();
		set_xen_guest_handle(b.idxs, far_frames());
		set_xen_guest_handle(b.gpfns, far_frames() + 32);
		set_xen_guest_handle(b.errs, (int *)(ARRAYS + 1024));
		if (below(2))
			set_xen_guest_handle(b.gpfns, (xen_pfn_t *)address((enum where)(W_HOLE + below(3))));
		arg = place(&b, sizeof(b), 0);
		break;
	}
	case XENMEM_memory_map:
	case XENMEM_machine_memory_map: {
		struct xen_memory_map m = { .nr_entries = below(2) ? below(8) : (unsigned)rnd() };
		set_xen_guest_handle(m.buffer, (void *)address(m.nr_entries < 8 ? (enum where)below(W_KINDS)
							       : (enum where)(W_HOLE + below(3))));
		if (m.buffer.p == (void *)hypercall_page)
			m.nr_entries = 1;
		arg = place(&m, sizeof(m), 0);
		break;
	}
	case XENMEM_remove_from_physmap: {
		struct xen_remove_from_physmap x = { .domid = some_domid(), .gpfn = rnd() | FAR_GFN };
		arg = place(&x, sizeof(x), 0);
		break;
	}
	case XENMEM_acquire_resource: {
		struct xen_mem_acquire_resource a = {
			.domid = some_domid(), .type = (uint16_t)below(4), .id = (uint32_t)rnd(),
			.nr_frames = count(0, 8), .frame = rnd(),
		};
		set_xen_guest_handle(a.frame_list, far_frames());
		arg = place(&a, sizeof(a), 0);
		break;
	}
	default:
		/* exchange and the rest: garbage all through (its GFN fields are random 64-bit). */
		arg = place(scratch, 0, 0);
		if (below(2))
			arg = address(W_ALIGNED);
		break;
	}
	long rc = seen(memory_op(cmd, arg), "memory_op", cmd);
	/* do_memory_op's default: -ENOSYS for a command it does not know. */
	if (cmd == 63 && rc != -XEN_ENOSYS && !st.bad[0])
		snprintf(st.bad, sizeof(st.bad), "memory_op 63: rc %ld, Xen gives -ENOSYS", rc);
}

static void op_vcpu(void)
{
	unsigned cmd = below(16) ? below(14) : 14 + (unsigned)(rnd() & 0xfffff);
	unsigned vcpu = below(3) ? 0 : (below(2) ? 1 + below(200) : (unsigned)rnd());
	uintptr_t arg;
	fill(scratch, 256);
	switch (cmd) {
	case VCPUOP_initialise:
	case VCPUOP_down:
	case VCPUOP_send_nmi:
		if (vcpu == 0)
			vcpu = 1 + below(1000);	/* not our only vCPU */
		arg = place(scratch, 0, 1);
		break;
	case VCPUOP_register_runstate_memory_area:
	case VCPUOP_register_vcpu_time_memory_area: {
		/* Kept: updated by the VMM from now on, so never the hypercall page. */
		struct vcpu_register_runstate_memory_area a;
		enum where w = (enum where)below(W_KINDS);
		a.addr.p = w == W_HCPAGE || w == W_CROSSING ? (uint64_t)(uintptr_t)AREAS - 8 - below(32)
			 : in_ram(w) ? (uint64_t)(uintptr_t)AREAS + below(64) : address(w);
		arg = place(&a, sizeof(a), 0);
		break;
	}
	case VCPUOP_register_vcpu_info: {
		struct vcpu_register_vcpu_info r = { .mfn = rnd() | FAR_GFN, .offset = (uint32_t)rnd() };
		if (below(2))
			r.mfn = (uintptr_t)AREAS >> 12;	/* ours, but vCPU 0's is taken (-EINVAL) */
		arg = place(&r, sizeof(r), 0);
		break;
	}
	default:
		arg = place(scratch, 0, 1);
		break;
	}
	seen(vcpu_op(cmd, vcpu, arg), "vcpu_op", cmd);
}

static void op_hvm(void)
{
	static const unsigned cmds[] = {
		/* 2..4: set_pci_intx_level, set_isa_irq_level, set_pci_link_route (tools-only names) */
		HVMOP_set_param, HVMOP_get_param, 2, 3, 4, HVMOP_flush_tlbs, HVMOP_pagetable_dying, HVMOP_get_time,
		HVMOP_xentrace, 12, 13, 14, HVMOP_get_mem_type, 16, HVMOP_set_evtchn_upcall_vector,
		HVMOP_guest_request_vm_event, HVMOP_altp2m, 26, 0x10000,
	};
	unsigned cmd = cmds[below(ARRAY_SIZE(cmds))];
	fill(scratch, 256);
	uintptr_t arg;
	switch (cmd) {
	case HVMOP_set_param:
	case HVMOP_get_param: {
		struct xen_hvm_param p = { .domid = some_domid(), .index = below(2) ? below(HVM_NR_PARAMS) : (uint32_t)rnd(),
					   .value = rnd() };
		/* Our own parameters stay ours: only indices past HVM_NR_PARAMS (-EINVAL). */
		if (cmd == HVMOP_set_param && is_self(p.domid) && p.index < HVM_NR_PARAMS)
			p.index += HVM_NR_PARAMS + below(100000);
		arg = place(&p, sizeof(p), 0);
		break;
	}
	case HVMOP_set_evtchn_upcall_vector: {
		struct xen_hvm_evtchn_upcall_vector u = { .vcpu = (uint32_t)rnd(), .vector = (uint8_t)rnd() };
		if (u.vcpu == 0 || below(2))
			u.vector = (uint8_t)below(0x10);	/* hvm_set_evtchn_upcall_vector: below 0x10 is -EINVAL */
		arg = place(&u, sizeof(u), 0);
		break;
	}
	case HVMOP_get_time:
		arg = place(scratch, 0, 1);
		break;
	default:
		/* Most of these structs start with the domid: never ours (no MSI or trap to ourselves). */
		*(domid_t *)scratch = other_domid();
		arg = below(2) ? (uintptr_t)scratch : place(scratch, 64, 0);
		break;
	}
	seen(hvm_op(cmd, arg), "hvm_op", cmd);
}

/* Ports we bound in the rounds (closed as more come, and at the end). */
#define LIVE 16
static evtchn_port_t live[LIVE];
static unsigned nlive;

static void keep_port(evtchn_port_t p)
{
	if (nlive == LIVE) {
		struct evtchn_close c = { .port = live[0] };
		seen(evtchn_op(EVTCHNOP_close, &c), "evtchn close(ours)", live[0]);
		memmove(live, live + 1, sizeof(live[0]) * (LIVE - 1));
		nlive--;
	}
	live[nlive++] = p;
}

/* A port we do not own: unused, past the 2-level ABI, anything; or one we bound here. */
static evtchn_port_t not_ours(void)
{
	switch (below(4)) {
	case 0: return 512 + below(3584);
	case 1: return EVTCHN_2L_NR_CHANNELS + below(1u << 20);
	case 2: return (evtchn_port_t)rnd();
	default: return nlive ? live[below(nlive)] : (evtchn_port_t)rnd();
	}
}

static void op_evtchn(void)
{
	unsigned cmd = below(16) ? below(15) : 15 + (unsigned)(rnd() & 0xfffff);
	union {
		struct evtchn_alloc_unbound au;
		struct evtchn_bind_interdomain bi;
		struct evtchn_bind_virq bv;
		struct evtchn_bind_ipi bp;
		struct evtchn_close c;
		struct evtchn_send s;
		struct evtchn_status s2;
		struct evtchn_bind_vcpu bc;
		struct evtchn_unmask u;
		struct evtchn_reset r;
		struct evtchn_init_control ic;
		uint8_t raw[64];
	} a;
	fill(&a, sizeof(a));
	switch (cmd) {
	case EVTCHNOP_alloc_unbound: a.au.dom = some_domid(); a.au.remote_dom = some_domid(); break;
	case EVTCHNOP_bind_interdomain: a.bi.remote_dom = some_domid(); a.bi.remote_port = not_ours(); break;
	case EVTCHNOP_bind_virq: a.bv.virq = below(2) ? below(NR_VIRQS) : (uint32_t)rnd(); a.bv.vcpu = below(3); break;
	case EVTCHNOP_bind_ipi: a.bp.vcpu = below(2) ? 0 : (uint32_t)rnd(); break;
	case EVTCHNOP_close:
	case EVTCHNOP_send:
	case EVTCHNOP_unmask: a.c.port = not_ours(); break;
	case EVTCHNOP_status: a.s2.dom = some_domid(); a.s2.port = below(2) ? below(64) : not_ours(); break;
	case EVTCHNOP_bind_vcpu: a.bc.port = not_ours(); a.bc.vcpu = (uint32_t)rnd(); break;
	case EVTCHNOP_reset:
	case 14: /* EVTCHNOP_reset_cont */ a.r.dom = other_domid(); break;
	case EVTCHNOP_init_control: a.ic.control_gfn = rnd() | FAR_GFN; break;
	}
	uintptr_t arg = place(&a, sizeof(a), 0);
	long rc = seen(evtchn_op(cmd, arg), "evtchn", cmd);
	if (rc == 0 && arg >= (uintptr_t)scratch && arg < (uintptr_t)scratch + 2 * PAGE_SIZE) {
		static union { struct evtchn_alloc_unbound au; uint8_t raw[64]; } o;
		memcpy(&o, (const void *)arg, sizeof(o));
		const void *out = &o;
		if (cmd == EVTCHNOP_alloc_unbound)
			keep_port(((const struct evtchn_alloc_unbound *)out)->port);
		else if (cmd == EVTCHNOP_bind_interdomain)
			keep_port(((const struct evtchn_bind_interdomain *)out)->local_port);
		else if (cmd == EVTCHNOP_bind_virq)
			keep_port(((const struct evtchn_bind_virq *)out)->port);
		else if (cmd == EVTCHNOP_bind_ipi)
			keep_port(((const struct evtchn_bind_ipi *)out)->port);
	}
	/* evtchn_send: a port past the domain's is -EINVAL (port_is_valid). */
	struct evtchn_send s = { .port = EVTCHN_2L_NR_CHANNELS + below(1u << 20) };
	want(evtchn_op(EVTCHNOP_send, &s), -XEN_EINVAL, "evtchn send(past 4096)", s.port);
}

/* Grant refs for garbage: 400..469 random entries, 470 empty, 471 another domain's. */
#define G_FIRST 400
#define G_N     70
#define G_EMPTY 470
#define G_OTHER 471

static void grant_garbage(void)
{
	for (unsigned i = 0; i < 4; i++) {
		uint16_t flags = (uint16_t)rnd();
		if (below(2))
			flags = GTF_permit_access | (below(2) ? GTF_readonly : 0) | (below(4) ? 0 : GTF_sub_page) |
				(below(4) ? 0 : GTF_transitive);
		gnttab_raw_v1(G_FIRST + below(G_N), flags, some_domid(),
			      below(2) ? (uint32_t)((uintptr_t)AREAS >> 12) : (uint32_t)rnd());
	}
}

static void op_grant(void)
{
	unsigned cmd = below(16) ? below(13) : 13 + below(50);
	union {
		struct gnttab_map_grant_ref map[4];
		struct gnttab_unmap_grant_ref unmap[4];
		struct gnttab_setup_table setup;
		struct gnttab_copy copy[4];
		struct gnttab_transfer xfer[4];
		struct gnttab_query_size qs;
		struct gnttab_unmap_and_replace uar[4];
		struct gnttab_set_version sv;
		struct gnttab_get_status_frames gs;
		struct gnttab_swap_grant_ref swap[4];
		uint8_t raw[256];
	} a;
	fill(&a, sizeof(a));
	unsigned n = 1 + below(4);
	for (unsigned i = 0; i < 4; i++) {
		switch (cmd) {
		case GNTTABOP_map_grant_ref:
			a.map[i].dom = some_domid();
			a.map[i].host_addr |= FAR_GFN << 12;
			a.map[i].ref = below(2) ? G_FIRST + below(G_N + 2) : (grant_ref_t)rnd();
			break;
		case GNTTABOP_unmap_grant_ref:
			a.unmap[i].host_addr |= FAR_GFN << 12;
			a.unmap[i].dev_bus_addr |= FAR_GFN << 12;
			break;
		case GNTTABOP_copy:
			for (int side = 0; side < 2; side++) {
				struct gnttab_copy_ptr *p = side ? &a.copy[i].dest : &a.copy[i].source;
				p->domid = some_domid();
				if (!(a.copy[i].flags & (side ? GNTCOPY_dest_gref : GNTCOPY_source_gref)))
					p->u.gmfn |= FAR_GFN;
				else if (below(2))
					p->u.ref = G_FIRST + below(G_N + 2);
			}
			break;
		case GNTTABOP_transfer:
			a.xfer[i].mfn |= FAR_GFN;
			a.xfer[i].domid = some_domid();
			break;
		case GNTTABOP_unmap_and_replace:
			a.uar[i].host_addr |= FAR_GFN << 12;
			a.uar[i].new_addr |= FAR_GFN << 12;
			break;
		case GNTTABOP_swap_grant_ref:
			a.swap[i].ref_a = G_FIRST + below(G_N + 2);
			a.swap[i].ref_b = below(2) ? G_FIRST + below(G_N + 2) : (grant_ref_t)rnd();
			break;
		}
	}
	/* Frame lists: at most 64 in page 2, or anything where nothing is. */
	uintptr_t frames = below(2) ? (uintptr_t)ARRAYS : address((enum where)(W_HOLE + below(3)));
	if (cmd == GNTTABOP_setup_table) {
		a.setup.dom = some_domid();
		a.setup.nr_frames = frames == (uintptr_t)ARRAYS ? count(0, 64) : count(1, 64);
		set_xen_guest_handle(a.setup.frame_list, (xen_pfn_t *)frames);
		n = 1;
	} else if (cmd == GNTTABOP_get_status_frames) {
		a.gs.dom = some_domid();
		a.gs.nr_frames = frames == (uintptr_t)ARRAYS ? count(0, 64) : count(1, 64);
		set_xen_guest_handle(a.gs.frame_list, (uint64_t *)frames);
		n = 1;
	} else if (cmd == GNTTABOP_query_size || cmd == GNTTABOP_dump_table) {
		a.qs.dom = some_domid();
		n = 1;
	} else if (cmd == GNTTABOP_set_version) {
		a.sv.version = below(2) ? below(2) : 3 + (uint32_t)(rnd() & 0xffffff);	/* never 2: ours stays v1 */
		n = 1;
	}
	uintptr_t arg = place(&a, sizeof(a), 0);
	/* Huge counts only where nothing is: Xen would write a status into each. */
	if (!below(4) || arg >= 0xc0000000UL)
		n = count(1, 4);
	if ((arg < 0xc0000000UL && n > 4) || cmd >= 13)
		n = 1 + below(4);	/* unknown commands: a count do_grant_table_op takes */
	long rc = seen(gnttab_op(cmd, arg, n), "grant_table_op", cmd);
	if (cmd >= 13 && rc != -XEN_ENOSYS && !st.bad[0])
		snprintf(st.bad, sizeof(st.bad), "grant_table_op %u: rc %ld, Xen gives -ENOSYS", cmd, rc);
	/* A map that worked (our own grant to ourselves): take it back. */
	if (cmd == GNTTABOP_map_grant_ref && arg == (uintptr_t)scratch && rc == 0) {
		const struct gnttab_map_grant_ref *m = (const void *)scratch;
		for (unsigned i = 0; i < n && i < 4; i++) {
			if (m[i].status != GNTST_okay)
				continue;
			struct gnttab_unmap_grant_ref u = { .host_addr = m[i].host_addr, .handle = m[i].handle };
			seen(gnttab_op(GNTTABOP_unmap_grant_ref, &u, 1), "grant unmap(ours)", 0);
		}
	}
}

static void op_set_timer(void)
{
	/* A deadline anywhere: past, far, now-ish. A VIRQ_TIMER we may not have bound. */
	seen(hypercall(__HYPERVISOR_set_timer_op, rnd() >> below(64), 0, 0, 0, 0), "set_timer_op", 0);
}

/* ------------------------------------------------------------------ */
/* XenStore                                                             */

static int xs_error_name(const char *e)
{
	static const char *const names[] = { "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM",
					     "ENOSPC", "EIO", "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY",
					     "EAGAIN", "EISCONN", "E2BIG", "EPERM" };
	for (unsigned i = 0; i < ARRAY_SIZE(names); i++)
		if (strncmp(e, names[i], strlen(names[i]) + 1) == 0)
			return 1;
	return 0;
}

/*
 * One request of any type (watches and transaction starts apart: they
 * would stay), garbage payload and transaction; anything that writes or
 * removes goes under hostile/ (removed at the end) so our own nodes stay.
 * Lengths up to XENSTORE_PAYLOAD_MAX: longer kills the ring (rightly:
 * xenstore-ring.txt, XENSTORE_ERROR_PROTO), which the rounds do not try.
 */
static const char *op_xenstore(void)
{
	static char payload[XENSTORE_PAYLOAD_MAX];
	uint32_t type, rtype;
	do
		type = below(8) ? below(XS_TYPE_COUNT + 3) : (uint32_t)rnd();
	while (type == XS_WATCH || type == XS_TRANSACTION_START);
	uint32_t tx = below(2) ? 0 : (uint32_t)rnd();
	uint32_t len;
	switch (below(3)) {
	case 0: len = 0; break;
	case 1: len = below(64); break;
	default: len = XENSTORE_PAYLOAD_MAX - below(1200); break;
	}
	for (uint32_t i = 0; i < len; i++) {
		uint8_t c = (uint8_t)rnd();
		payload[i] = (char)(below(2) ? 'a' + c % 26 : c);
	}
	if (type == XS_WRITE || type == XS_MKDIR || type == XS_RM || type == XS_SET_PERMS) {
		memcpy(payload, "hostile/", 8);
		if (len < 9)
			len = 9;
		if (len < 64 || below(2))
			payload[len - 1] = 0;
	}
	st.xs++;
	int r = xenstore_raw(type, tx, payload, len, &rtype);
	if (r < 0)
		return fail("xenstore: type %u len %u: %s", type, len, xenstore_error());
	if (r == 1) {
		st.xs_err++;
		if (!xs_error_name(xenstore_error()))
			return fail("xenstore: type %u len %u: error \"%s\" is none of xs_wire.h's", type, len,
				    xenstore_error());
	}
	/* A transaction opened and ended with garbage in between. */
	if (!below(8)) {
		uint32_t t;
		if (xenstore_transaction_start(&t) == 0) {
			xenstore_write_tx(t, "hostile/tx", payload + 1);
			xenstore_transaction_end(t, (int)below(2));
		}
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* After the rounds: the VMM still answers                              */

static const char *check_loopback(void)
{
	struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = DOMID_SELF };
	long rc = evtchn_op(EVTCHNOP_alloc_unbound, &au);
	if (rc != 0)
		return fail("after: alloc_unbound rc %ld", rc);
	struct evtchn_bind_interdomain bi = { .remote_dom = (domid_t)own_domid, .remote_port = au.port };
	if ((rc = evtchn_op(EVTCHNOP_bind_interdomain, &bi)) != 0)
		return fail("after: bind_interdomain(d%d port %u) rc %ld", own_domid, au.port, rc);
	uint32_t h = evtchn_port_hits(au.port);
	const char *r = NULL;
	if ((rc = evtchn_send(bi.local_port)) != 0)
		r = fail("after: send(%u) rc %ld", bi.local_port, rc);
	else if (!evtchn_wait_port_hits(au.port, h + 1, 2000))
		r = fail("after: no upcall on port %u within 2 s of a loopback send", au.port);
	struct evtchn_close c = { .port = bi.local_port };
	evtchn_op(EVTCHNOP_close, &c);
	c.port = au.port;
	evtchn_op(EVTCHNOP_close, &c);
	return r;
}

static const char *check_xenstore(uint64_t seed)
{
	char want_v[40];
	uint32_t len;
	snprintf(want_v, sizeof(want_v), "after-%lu", (unsigned long)seed);
	xenstore_rm("hostile");	/* the rounds' nodes: off our quota first */
	if (xenstore_write("data/hostile", want_v) != 0)
		return fail("after: xenstore write data/hostile: %s", xenstore_error());
	const char *v = xenstore_read("data/hostile", &len);
	if (!v)
		return fail("after: xenstore read data/hostile: %s", xenstore_error());
	if (len != strlen(want_v) || memcmp(v, want_v, len) != 0)
		return fail("after: data/hostile is \"%.*s\", wrote \"%s\"", (int)(len < 40 ? len : 40), v, want_v);
	return NULL;
}

/* How many devices device/<type> lists (names NUL-separated). */
static unsigned devices(const char *type)
{
	uint32_t len, n = 0;
	const char *names = xenstore_directory(type, &len);
	if (!names)
		return 0;
	for (uint32_t i = 0; i < len; i++)
		if (names[i] == 0)
			n++;
	return n;
}

static const char *scen_hostile_storm(void)
{
	const char *r;
	uint64_t seed = opt_num("pvh.hostile_seed=", 0);
	if (!seed)
		seed = rdtsc() % 1000000007ULL + 1;
	rng = seed * 0x9e3779b97f4a7c15ULL | 1;
	uint64_t ms = opt_num("pvh.hostile_ms=", 20000);
	uint64_t max_rounds = opt_num("pvh.hostile_rounds=", ~0UL);
	uint32_t blkseed = (uint32_t)opt_num("pvh.blkseed=", 1);
	dbg = (unsigned)opt_num("pvh.hostile_debug=", 0);
	printk("PVHINFO hostile: seed %lu, %lu ms, at most %lu rounds\n", (unsigned long)seed, (unsigned long)ms,
	       (unsigned long)max_rounds);

	own_domid = xen_domid();
	if ((r = xen_setup()))
		return fail("set-up: %s", r);
	if ((r = xenstore_connect()))
		return fail("set-up: xenstore: %s", r);
	if ((r = gnttab_frontend_ready()))
		return fail("set-up: grants: %s", r);
	long version = xen_version(XENVER_version, 0);
	unsigned vdev_a = 0, vdev_b = 0, a_state = 0, blk_on = opt_num("pvh.hostile_blk=", 1) && devices("device/vbd") >= 2;
	unsigned net_on = opt_num("pvh.hostile_net=", 1) && devices("device/vif") >= 1;
	if (blk_on && (r = blk_hostile_open(blkseed, &vdev_a, &vdev_b)))
		return fail("set-up: disks: %s", r);
	if (net_on && (r = net_hostile_open()))
		return fail("set-up: vif: %s", r);
	if (dbg)
		printk("PVHINFO hostile: set up (disks %s, vif %s)\n", blk_on ? "on" : "off", net_on ? "on" : "off");
	gnttab_raw_v1(G_EMPTY, 0, 0, 0);
	gnttab_raw_v1(G_OTHER, GTF_permit_access, (domid_t)(own_domid == 1 ? 2 : 1), (uint32_t)((uintptr_t)AREAS >> 12));

	uint64_t t0 = rdtsc(), end = tsc_deadline_ms(ms), rounds = 0;
	while (rounds < max_rounds && rdtsc() < end && !st.bad[0]) {
#define STEP(f) do { if (dbg) printk("PVHINFO hostile: round %lu %s\n", (unsigned long)rounds, #f); f; hc_restore(); } while (0)
		STEP(numbers());
		for (unsigned i = 0; i < 4; i++) {
			STEP(op_xen_version());
			STEP(op_console_io());
			STEP(op_sched());
			STEP(op_memory());
			STEP(op_vcpu());
			STEP(op_hvm());
			STEP(op_evtchn());
			STEP(grant_garbage());
			STEP(op_grant());
			STEP(op_set_timer());
		}
#undef STEP
		if ((r = op_xenstore()))
			break;
		if (blk_on && (r = blk_hostile_batch(rnd, &st.blk)))
			break;
		if (net_on && (r = net_hostile_batch(rnd, &st.net)))
			break;
		rounds++;
		if (rounds % 50 == 0)
			printk("PVHINFO hostile: round %lu, %u calls, %u XenStore requests, %u block requests, "
			       "%u TX packets\n", (unsigned long)rounds, st.calls, st.xs, st.blk, st.net.tx_packets);
	}
	uint64_t took = (rdtsc() - t0) / tsc_khz();
	/* Put back what the rounds may have moved: shared_info, timers, areas. */
	struct vcpu_register_runstate_memory_area none = { .addr.p = 0 };
	vcpu_op(VCPUOP_register_runstate_memory_area, 0, &none);
	vcpu_op(VCPUOP_register_vcpu_time_memory_area, 0, &none);
	vcpu_op(VCPUOP_stop_periodic_timer, 0, NULL);
	vcpu_op(VCPUOP_stop_singleshot_timer, 0, NULL);
	hypercall(__HYPERVISOR_set_timer_op, 0, 0, 0, 0, 0);
	for (unsigned i = 0; i < nlive; i++) {
		struct evtchn_close c = { .port = live[i] };
		evtchn_op(EVTCHNOP_close, &c);
	}
	for (unsigned ref = G_FIRST; ref <= G_OTHER; ref++)
		gnttab_raw_v1(ref, 0, 0, 0);
	printk("PVHINFO hostile: %lu rounds in %lu ms: %u calls (ok %u, ENOSYS %u, EFAULT %u, EINVAL %u, EPERM %u, "
	       "other %u), %u XenStore requests (%u errors), %u block requests\n", (unsigned long)rounds,
	       (unsigned long)took, st.calls, st.ok, st.enosys, st.efault, st.einval, st.eperm, st.other, st.xs,
	       st.xs_err, st.blk);
	if (net_on)
		printk("PVHINFO hostile: vif: %u garbage TX packets (slots: %u ERROR, %u OKAY), %u garbage RX "
		       "requests (%u answered ERROR, %u otherwise), %u good RX buffers filled\n", st.net.tx_packets,
		       st.net.tx_errors, st.net.tx_okay, st.net.rx_garbage, st.net.rx_refused, st.net.rx_other,
		       st.net.rx_good);
	if (r)
		return r;
	if (st.bad[0])
		return fail("seed %lu: %s", (unsigned long)seed, st.bad);

	/* The VMM still answers. */
	long v2 = xen_version(XENVER_version, 0);
	if (v2 != version)
		return fail("after: xen_version %lx, was %lx", (unsigned long)v2, (unsigned long)version);
	if ((r = xen_setup()) || (r = check_loopback()) || (r = check_xenstore(seed)))
		return r;
	if (blk_on && (r = blk_hostile_close(blkseed, &a_state)))
		return fail("after: disks: %s", r);
	if (net_on && (r = net_hostile_close(rnd, &st.net_closed)))
		return fail("after: vif: %s", r);
	char vif[32] = "";
	if (net_on)
		snprintf(vif, sizeof(vif), " vif=closed%u,ok", st.net_closed);
	pass_note("seed=%lu rounds=%lu calls=%u ms=%lu xs=%u blk=%u net=%u%s%s%s", (unsigned long)seed,
		  (unsigned long)rounds, st.calls, (unsigned long)took, st.xs, st.blk, st.net.tx_packets, vif,
		  blk_on ? " a=" : "", blk_on ? "closed b=ok" : "");
	return NULL;
}

const struct scenario hostile_scenarios[] = {
	{ "hostile_storm", scen_hostile_storm },
};
const size_t nr_hostile_scenarios = ARRAY_SIZE(hostile_scenarios);
