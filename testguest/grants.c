/*
 * pvh test guest: grant tables (xen/grant_table.h), the guest side as Linux
 * drives it (drivers/xen/grant-table.c). Run only when named:
 *
 *   pvh.scenarios=grant_v1             table set-up, growth, errors, held grants
 *   pvh.scenarios=grant_v2             v2: status frames, full-page and sub-page grants
 *   pvh.scenarios=grant_setup_table    GNTTABOP_setup_table as small loaders use it
 *
 * Expected values are Xen 4.17's (xen/common/grant_table.c, memory.c,
 * arch/x86/mm/p2m.c xenmem_add_to_physmap_one); the comments name the
 * function each one comes from.
 *
 * Frames. The guest maps the shared frames with XENMEM_add_to_physmap
 * (XENMAPSPACE_grant_table), from the highest index down as Linux's
 * gnttab_map() does (the first call grows the table to that size):
 *   frame 0  at a page of this image first given back with
 *            XENMEM_decrease_reservation (a ballooned-out page),
 *   frame i  (i >= 1) at gfn hole + i, where `hole` is the first 2 MiB
 *            boundary past the end of the memory map (no RAM, nothing
 *            reserved: like Linux's unpopulated pages);
 * later frame 1 moves to hole + 8 (its contents must follow) and v2's
 * status frame 0 goes to hole + 16.
 *
 * Held grants. The guest grants pages to domain 0 (the backend), publishes
 * the references in XenStore and waits, bounded, for the host test to hold
 * them (see held_grants() and testguest/README.md for the handshake).
 * Waits are bounded by pvh.grant_timeout=MS (default 30000);
 * pvh.grant_host=0 skips the held-grant part (no host side).
 */
#include "testguest.h"

#include <xen/grant_table.h>

#define gnttab_op(cmd, uop, count) HC3(__HYPERVISOR_grant_table_op, cmd, uop, count)

#define V1_PER_FRAME	(PAGE_SIZE / sizeof(grant_entry_v1_t))	/* 512 */
#define V2_PER_FRAME	(PAGE_SIZE / sizeof(grant_entry_v2_t))	/* 256 */
#define ST_PER_FRAME	(PAGE_SIZE / sizeof(grant_status_t))	/* 2048 */

/* At most this many shared frames are mapped (the table grows to this). */
#define GT_FRAMES	4
#define HOLE_PAGES	32
#define REMAP_GFN_OFF	8
#define STATUS_GFN_OFF	16

/* Grant references used (Linux leaves 0..GNTTAB_NR_RESERVED_ENTRIES-1 alone). */
#define V1_REF_RW	10			/* frame 0: the ballooned page */
#define V1_MARK_REF	((grant_ref_t)V1_PER_FRAME + 5)	/* frame 1: the remap marker */
#define V2_REF_RW	12			/* frame 0 */
#define V2_REF_SUB	((grant_ref_t)V2_PER_FRAME + 13)	/* frame 1 */
#define ST_REF_RO	20			/* grant_setup_table */
#define SUB_OFF		256
#define SUB_LEN		512

/* Pattern seeds (byte i of a page = (i & 0xff) ^ (i >> 8) ^ seed). */
#define SEED_GUEST_RW	0x11
#define SEED_GUEST_RO	0x22
#define SEED_HOST	0x33
#define SEED_GUEST_SUB	0x44
#define SEED_HOST_SUB	0x55

/* DOMID of no domain (below DOMID_FIRST_RESERVED, never created here). */
#define BAD_DOMID	((domid_t)0x1234)
/* A backend domain: the host side is domain 0. */
#define BACKEND_DOMID	((domid_t)0)

/*
 * Scratch pages of this image (NOLOAD, like hypercall.S's): [0] given back
 * and replaced by grant frame 0, [1] the rw grant, [2] the ro grant, [3]
 * the v2 sub-page grant, [4] a populated RAM page grant frame 1 finally
 * moves onto (Xen frees the RAM page).
 */
__asm__(".pushsection .pages, \"aw\", @nobits\n"
	".balign 4096\n"
	".globl grant_pages\n"
	"grant_pages: .skip 5 * 4096\n"
	".popsection\n");
extern uint8_t grant_pages[];
#define BALLOON_PAGE	(grant_pages)
#define RW_PAGE		(grant_pages + 1 * PAGE_SIZE)
#define RO_PAGE		(grant_pages + 2 * PAGE_SIZE)
#define SUB_PAGE	(grant_pages + 3 * PAGE_SIZE)
#define RAM_PAGE	(grant_pages + 4 * PAGE_SIZE)
#define GFN_OF(p)	((uint64_t)(uintptr_t)(p) >> 12)

static inline void mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void wmb(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void rmb(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }

/* ------------------------------------------------------------------ */
/* The table as mapped (once per boot; later scenarios reuse it)       */

static struct {
	uint64_t hole;			/* first gfn of the hole, 0 until found */
	uint32_t nr_mapped;		/* frames 0..nr_mapped-1 are mapped */
	uint64_t gfn[GT_FRAMES];	/* where */
	uint32_t max_frames;		/* query_size's max_nr_frames */
	int ballooned;			/* BALLOON_PAGE given back */
	int remapped;			/* frame 1 moved to hole + REMAP_GFN_OFF, then RAM_PAGE */
	uint64_t status_gfn;		/* v2 status frame 0, 0 if not mapped */
} gt;

static long physmap_grant(unsigned long idx, uint64_t gfn, domid_t dom)
{
	struct xen_add_to_physmap x = {
		.domid = dom, .space = XENMAPSPACE_grant_table, .idx = idx, .gpfn = gfn,
	};
	return memory_op(XENMEM_add_to_physmap, &x);
}

static long query_size(domid_t dom, struct gnttab_query_size *q, unsigned count)
{
	*q = (struct gnttab_query_size){ .dom = dom, .status = 99 };
	return gnttab_op(GNTTABOP_query_size, q, count);
}

static long get_version(domid_t dom, uint32_t *version)
{
	struct gnttab_get_version v = { .dom = dom, .version = 99 };
	long rc = gnttab_op(GNTTABOP_get_version, &v, 1);
	*version = v.version;
	return rc;
}

static long set_version(uint32_t version, uint32_t *now)
{
	struct gnttab_set_version v = { .version = version };
	long rc = gnttab_op(GNTTABOP_set_version, &v, 1);
	*now = v.version;
	return rc;
}

/* The first 2 MiB boundary past every memory-map entry below 4 GiB. */
static const char *find_hole(void)
{
	const struct hvm_start_info *si = start_info;
	if (gt.hole)
		return NULL;
	if (si->version < 1 || !si->memmap_entries ||
	    !phys_ok(si->memmap_paddr, si->memmap_entries * sizeof(struct hvm_memmap_table_entry)))
		return "no memory map in start_info";
	const struct hvm_memmap_table_entry *mm = PHYS(si->memmap_paddr);
	uint64_t end = 0;
	for (uint32_t i = 0; i < si->memmap_entries; i++) {
		uint64_t e = mm[i].addr + mm[i].size;
		if (mm[i].addr < (1ULL << 32) && e > end && mm[i].addr < 0xfec00000ULL)
			end = e;
	}
	uint64_t base = (end + 0x1fffff) & ~0x1fffffULL;
	uint64_t top = base + HOLE_PAGES * PAGE_SIZE;
	if (!phys_ok(base, HOLE_PAGES * PAGE_SIZE) || top > 0xfec00000ULL)
		return fail("no hole below 4 GiB past the memory map (end 0x%lx)", (unsigned long)end);
	for (uint32_t i = 0; i < si->memmap_entries; i++)
		if (mm[i].addr < top && mm[i].addr + mm[i].size > base)
			return fail("hole 0x%lx overlaps memmap[%u]", (unsigned long)base, i);
	gt.hole = base >> 12;
	printk("PVHINFO grant: hole at gfn 0x%lx (memory map ends at 0x%lx)\n",
	       (unsigned long)gt.hole, (unsigned long)end);
	return NULL;
}

static long reservation(void)
{
	domid_t self = DOMID_SELF;
	return memory_op(XENMEM_current_reservation, &self);
}

/* Give BALLOON_PAGE back (XENMEM_decrease_reservation, one order-0 extent). */
static const char *balloon_out(void)
{
	if (gt.ballooned)
		return NULL;
	static xen_pfn_t pfn;
	long before = reservation();
	pfn = GFN_OF(BALLOON_PAGE);
	struct xen_memory_reservation res = { .nr_extents = 1, .extent_order = 0, .domid = DOMID_SELF };
	set_xen_guest_handle(res.extent_start, &pfn);
	long rc = memory_op(XENMEM_decrease_reservation, &res);
	if (rc != 1)
		return fail("decrease_reservation(gfn 0x%lx) rc %ld", (unsigned long)pfn, rc);
	long after = reservation();
	if (before > 0 && after != before - 1)
		return fail("current_reservation %ld -> %ld after giving back one page", before, after);
	gt.ballooned = 1;
	return NULL;
}

/* Maps frames [from, to) at their gfns, the highest index first (Linux's gnttab_map). */
static const char *map_frames(uint32_t from, uint32_t to)
{
	for (uint32_t i = to; i-- > from;) {
		uint64_t gfn = i == 0 ? GFN_OF(BALLOON_PAGE) : gt.hole + i;
		long rc = physmap_grant(i, gfn, DOMID_SELF);
		if (rc != 0)
			return fail("add_to_physmap(grant_table, idx %u, gfn 0x%lx) rc %ld", i,
				    (unsigned long)gfn, rc);
		gt.gfn[i] = gfn;
		if (i + 1 > gt.nr_mapped)
			gt.nr_mapped = i + 1;
	}
	return NULL;
}

/* query_size(DOMID_SELF): rc 0, status okay, the current size. */
static const char *query_self(uint32_t *nr, uint32_t *max)
{
	struct gnttab_query_size q;
	long rc = query_size(DOMID_SELF, &q, 1);
	if (rc != 0 || q.status != GNTST_okay)
		return fail("query_size(self) rc %ld status %d", rc, q.status);
	*nr = q.nr_frames;
	*max = q.max_nr_frames;
	return NULL;
}

/*
 * The Linux-style set-up, once per boot: frame 0 at the ballooned page,
 * frame 1 at the hole (idx 1 first). Also used by grant_v2 if it runs first.
 */
static const char *ensure_mapped(void)
{
	const char *r;
	uint32_t nr, max;
	if ((r = find_hole()))
		return r;
	if (gt.ballooned)
		return NULL;	/* placed by us already (frames setup_table reported get moved here) */
	if ((r = query_self(&nr, &max)))
		return r;
	if (max < 2)
		return fail("max_nr_frames %u: cannot grow past one frame", max);
	gt.max_frames = max;
	if ((r = balloon_out()))
		return r;
	long before = reservation();
	if ((r = map_frames(0, 2)))
		return r;
	/* Grant frames are Xen's pages: placing them at a ballooned page or a hole charges nothing. */
	long after = reservation();
	if (after != before)
		return fail("current_reservation %ld -> %ld placing frames at a ballooned page and a hole",
			    before, after);
	return NULL;
}

static volatile grant_entry_v1_t *v1_entry(grant_ref_t ref)
{
	return (volatile grant_entry_v1_t *)PHYS(gt.gfn[ref / V1_PER_FRAME] << 12) + ref % V1_PER_FRAME;
}

static volatile grant_entry_v2_t *v2_entry(grant_ref_t ref)
{
	return (volatile grant_entry_v2_t *)PHYS(gt.gfn[ref / V2_PER_FRAME] << 12) + ref % V2_PER_FRAME;
}

static volatile grant_status_t *status_entry(grant_ref_t ref)
{
	return (volatile grant_status_t *)PHYS(gt.status_gfn << 12) + ref;
}

/* ------------------------------------------------------------------ */
/* Granting and revoking, as Linux's grant-table.c                      */

static uint8_t pat(uint32_t i, uint8_t seed)
{
	return (uint8_t)((i & 0xff) ^ (i >> 8) ^ seed);
}

static void fill(uint8_t *p, uint32_t from, uint32_t to, uint8_t seed)
{
	for (uint32_t i = from; i < to; i++)
		p[i] = pat(i, seed);
}

/* Offset of the first byte in [from, to) not matching `seed`, or -1. */
static long mismatch(const uint8_t *p, uint32_t from, uint32_t to, uint8_t seed)
{
	for (uint32_t i = from; i < to; i++)
		if (p[i] != pat(i, seed))
			return (long)i;
	return -1;
}

/* gnttab_update_entry_v1: frame and domid, wmb, then the flags. */
static void grant_v1(grant_ref_t ref, domid_t dom, uint64_t gfn, uint16_t flags)
{
	volatile grant_entry_v1_t *e = v1_entry(ref);
	e->frame = (uint32_t)gfn;
	e->domid = dom;
	wmb();
	e->flags = flags;
}

/*
 * gnttab_end_foreign_access_ref_v1: clear the flags with cmpxchg unless
 * GTF_reading or GTF_writing is set. 1 if revoked; *seen = the flags found.
 */
static int end_access_v1(grant_ref_t ref, uint16_t *seen)
{
	volatile uint16_t *pf = &v1_entry(ref)->flags;
	uint16_t flags, nflags = *pf;
	do {
		flags = nflags;
		*seen = flags;
		if (flags & (GTF_reading | GTF_writing))
			return 0;
	} while ((nflags = __sync_val_compare_and_swap(pf, flags, 0)) != flags);
	return 1;
}

/* gnttab_update_entry_v2 (full page): domid, frame, wmb, flags. */
static void grant_v2_full(grant_ref_t ref, domid_t dom, uint64_t gfn, uint16_t flags)
{
	volatile grant_entry_v2_t *e = v2_entry(ref);
	e->hdr.domid = dom;
	e->full_page.frame = gfn;
	wmb();
	e->hdr.flags = GTF_permit_access | flags;
}

/* gnttab_grant_foreign_access_subpage_ref_v2. */
static void grant_v2_sub(grant_ref_t ref, domid_t dom, uint64_t gfn, uint16_t off, uint16_t len,
			 uint16_t flags)
{
	volatile grant_entry_v2_t *e = v2_entry(ref);
	e->sub_page.frame = gfn;
	e->sub_page.page_off = off;
	e->sub_page.length = len;
	e->hdr.domid = dom;
	wmb();
	e->hdr.flags = GTF_permit_access | GTF_sub_page | flags;
}

/*
 * gnttab_end_foreign_access_ref_v2: clear the flags, mb, then the entry is
 * ours only once the status has neither GTF_reading nor GTF_writing (a
 * mapping taken before stays until it is unmapped). 1 if revoked.
 */
static int end_access_v2(grant_ref_t ref, uint16_t *seen)
{
	v2_entry(ref)->hdr.flags = 0;
	mb();
	*seen = *status_entry(ref);
	if (*seen & (GTF_reading | GTF_writing))
		return 0;
	rmb();
	return 1;
}

/* ------------------------------------------------------------------ */
/* The XenStore handshake with the host test                           */

#define GT_DIR		"data/grant-test"
#define GT_HOST		GT_DIR "/host"
#define GT_REFS		GT_DIR "/refs"
#define GT_GUEST	GT_DIR "/guest"
#define GT_TOKEN	"pvh-grant"

static int want_host(void)
{
	return opt_num("pvh.grant_host=", 1) != 0;
}

/*
 * Waits (bounded) until data/grant-test/host reads `want`. The host may
 * write "error <reason>" instead: that is the failure. The watch on it is
 * already set.
 */
static const char *host_says(const char *scen, const char *want)
{
	uint64_t ms = opt_num("pvh.grant_timeout=", 30000);
	uint64_t end = tsc_deadline_ms(ms);
	static char value[128];
	for (;;) {
		uint32_t len = 0;
		const char *v = xenstore_read(GT_HOST, &len);
		if (v) {
			snprintf(value, sizeof(value), "%.*s", (int)(len < 120 ? len : 120), v);
			if (strlen(value) == strlen(want) && !strncmp(value, want, strlen(want)))
				return NULL;
			if (!strncmp(value, "error", 5))
				return fail("host: %s", value);
		}
		uint64_t now = rdtsc();
		if (now >= end)
			return fail("no \"%s\" from the host in %s within %lu ms (it reads \"%s\")", want,
				    GT_HOST, (unsigned long)ms, v ? value : xenstore_error());
		const char *p, *t;
		int ev = xenstore_wait_watch(&p, &t, (end - now) / tsc_khz() + 1);
		if (ev < 0)
			return fail("%s: %s", scen, xenstore_error());
	}
}

/* Clean data/grant-test, pre-create host = "waiting" (ours), watch it. */
static const char *handshake_start(void)
{
	const char *r;
	if ((r = xenstore_connect()))
		return r;
	xenstore_rm(GT_DIR);
	if (xenstore_write(GT_HOST, "waiting") || xenstore_write(GT_GUEST, "granting"))
		return fail("write %s: %s", GT_HOST, xenstore_error());
	if (xenstore_watch(GT_HOST, GT_TOKEN))
		return fail("watch %s: %s", GT_HOST, xenstore_error());
	const char *p, *t;
	if (xenstore_wait_watch(&p, &t, 5000) != 1)
		return fail("no initial watch event on %s", GT_HOST);
	return NULL;
}

static void handshake_end(void)
{
	xenstore_unwatch(GT_HOST, GT_TOKEN);
}

/* "PVHTEST <scen> WAITING <what>" and data/grant-test/guest = <what>. */
static const char *tell_host(const char *scen, const char *key, const char *what)
{
	if (xenstore_write(key, what))
		return fail("write %s: %s", key, xenstore_error());
	printk("PVHTEST %s WAITING %s\n", scen, what);
	return NULL;
}

/* First failure of a multi-step check (the rest still runs, the host is released). */
static char first_fail[160];
static void note_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note_fail(const char *fmt, ...)
{
	va_list ap;
	char buf[160];
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	printk("PVHINFO grant check failed: %s\n", buf);
	if (!first_fail[0])
		snprintf(first_fail, sizeof(first_fail), "%s", buf);
}

/* ------------------------------------------------------------------ */
/* grant_v1                                                             */

static const char *v1_errors(uint32_t max)
{
	long rc;
	struct gnttab_query_size q;
	uint32_t v;

	/* gnttab_get_shared_frame_mfn: idx + 1 > max_grant_frames, no growth -> -EINVAL. */
	if ((rc = physmap_grant(max, gt.hole + 20, DOMID_SELF)) != -XEN_EINVAL)
		return fail("add_to_physmap(grant_table, idx %u = max) rc %ld, want -EINVAL", max, rc);
	/* gnttab_map_frame_begin: the status bit is only looked at under v2. */
	if ((rc = physmap_grant(XENMAPIDX_grant_table_status | 0, gt.hole + 20, DOMID_SELF)) != -XEN_EINVAL)
		return fail("add_to_physmap(grant_table, status idx 0) under v1 rc %ld, want -EINVAL", rc);
	/* do_memory_op XENMEM_add_to_physmap: rcu_lock_domain_by_any_id fails -> -ESRCH. */
	if ((rc = physmap_grant(0, gt.hole + 20, BAD_DOMID)) != -XEN_ESRCH)
		return fail("add_to_physmap(grant_table) for d%u rc %ld, want -ESRCH", BAD_DOMID, rc);
	/* gnttab_query_size: no such domain -> rc 0, status GNTST_bad_domain; count != 1 -> -EINVAL. */
	if ((rc = query_size(BAD_DOMID, &q, 1)) != 0 || q.status != GNTST_bad_domain)
		return fail("query_size(d%u) rc %ld status %d, want 0/GNTST_bad_domain", BAD_DOMID, rc, q.status);
	if ((rc = query_size(DOMID_SELF, &q, 2)) != -XEN_EINVAL)
		return fail("query_size count 2 rc %ld, want -EINVAL", rc);
	/* gnttab_get_version: no such domain -> -ESRCH. */
	if ((rc = get_version(BAD_DOMID, &v)) != -XEN_ESRCH)
		return fail("get_version(d%u) rc %ld, want -ESRCH", BAD_DOMID, rc);
	/* gnttab_setup_table: nr_frames > max -> rc 0, GNTST_general_error; count != 1 -> -EINVAL. */
	static xen_pfn_t frames[GT_FRAMES + 1];
	struct gnttab_setup_table st = { .dom = DOMID_SELF, .nr_frames = max + 1, .status = 99 };
	set_xen_guest_handle(st.frame_list, frames);
	if ((rc = gnttab_op(GNTTABOP_setup_table, &st, 1)) != 0 || st.status != GNTST_general_error)
		return fail("setup_table(nr_frames %u > max) rc %ld status %d, want 0/GNTST_general_error",
			    max + 1, rc, st.status);
	st = (struct gnttab_setup_table){ .dom = BAD_DOMID, .nr_frames = 1, .status = 99 };
	set_xen_guest_handle(st.frame_list, frames);
	if ((rc = gnttab_op(GNTTABOP_setup_table, &st, 1)) != 0 || st.status != GNTST_bad_domain)
		return fail("setup_table(d%u) rc %ld status %d, want 0/GNTST_bad_domain", BAD_DOMID, rc, st.status);
	st = (struct gnttab_setup_table){ .dom = DOMID_SELF, .nr_frames = 1 };
	set_xen_guest_handle(st.frame_list, frames);
	if ((rc = gnttab_op(GNTTABOP_setup_table, &st, 2)) != -XEN_EINVAL)
		return fail("setup_table count 2 rc %ld, want -EINVAL", rc);
	/*
	 * GNTTABOP_get_status_frames: hvm_grant_table_op (arch/x86/hvm/hypercall.c)
	 * lets only query_size, setup_table, set/get_version, copy, map/unmap
	 * and swap through; an HVM/PVH guest gets -ENOSYS for the rest.
	 */
	static uint64_t sframes[1];
	struct gnttab_get_status_frames gs = { .dom = DOMID_SELF, .nr_frames = 1, .status = 99 };
	set_xen_guest_handle(gs.frame_list, sframes);
	if ((rc = gnttab_op(GNTTABOP_get_status_frames, &gs, 1)) != -XEN_ENOSYS)
		return fail("get_status_frames rc %ld status %d, want -ENOSYS (hvm_grant_table_op)", rc, gs.status);
	/* gnttab_set_version: only 1 and 2 -> -EINVAL, the version written back. */
	if ((rc = set_version(3, &v)) != -XEN_EINVAL || v != 1)
		return fail("set_version(3) rc %ld version %u, want -EINVAL/1", rc, v);
	/* do_grant_table_op: unknown command -> -ENOSYS. */
	if ((rc = gnttab_op(99, &q, 1)) != -XEN_ENOSYS)
		return fail("grant_table_op(99) rc %ld, want -ENOSYS", rc);
	return NULL;
}

/*
 * The held-grant part of grant_v1: rw grant of RW_PAGE in frame 0, ro grant
 * of RO_PAGE in the last (grown) frame; host holds both, writes its pattern
 * through rw; the guest's revoke must fail until the host lets go.
 */
static const char *v1_held(grant_ref_t ro_ref)
{
	const char *r;
	char refs[96];
	uint16_t f_rw, f_ro;

	fill(RW_PAGE, 0, PAGE_SIZE, SEED_GUEST_RW);
	fill(RO_PAGE, 0, PAGE_SIZE, SEED_GUEST_RO);
	if ((r = handshake_start()))
		return r;
	grant_v1(V1_REF_RW, BACKEND_DOMID, GFN_OF(RW_PAGE), GTF_permit_access);
	grant_v1(ro_ref, BACKEND_DOMID, GFN_OF(RO_PAGE), GTF_permit_access | GTF_readonly);
	snprintf(refs, sizeof(refs), "v1 rw=%u ro=%u", V1_REF_RW, ro_ref);
	if (xenstore_write(GT_REFS, refs))
		return fail("write %s: %s", GT_REFS, xenstore_error());
	printk("PVHTEST grant_v1 WAITING refs=%s\n", refs);
	if ((r = host_says("grant_v1", "held")))
		return r;

	/* Held: Xen's _set_status_v1 set GTF_reading (and GTF_writing for rw). */
	first_fail[0] = 0;
	f_rw = v1_entry(V1_REF_RW)->flags;
	f_ro = v1_entry(ro_ref)->flags;
	printk("PVHINFO grant_v1 held: rw flags 0x%x ro flags 0x%x\n", f_rw, f_ro);
	if (f_rw != (GTF_permit_access | GTF_reading | GTF_writing))
		note_fail("rw flags 0x%x while held, want 0x%x", f_rw,
			  GTF_permit_access | GTF_reading | GTF_writing);
	if (f_ro != (GTF_permit_access | GTF_readonly | GTF_reading))
		note_fail("ro flags 0x%x while held, want 0x%x", f_ro,
			  GTF_permit_access | GTF_readonly | GTF_reading);
	int rev_rw = end_access_v1(V1_REF_RW, &f_rw);
	int rev_ro = end_access_v1(ro_ref, &f_ro);
	if (rev_rw || rev_ro)
		note_fail("revoke while held succeeded (rw %d ro %d)", rev_rw, rev_ro);
	long off;
	if ((off = mismatch(RW_PAGE, 0, PAGE_SIZE, SEED_HOST)) >= 0)
		note_fail("rw page byte %ld = 0x%x, not the host's pattern", off, RW_PAGE[off]);
	if ((off = mismatch(RO_PAGE, 0, PAGE_SIZE, SEED_GUEST_RO)) >= 0)
		note_fail("ro page byte %ld = 0x%x changed while read-only", off, RO_PAGE[off]);
	if ((r = tell_host("grant_v1", GT_GUEST, rev_rw || rev_ro ? "revoke-succeeded" : "revoke-refused")))
		return r;
	if ((r = host_says("grant_v1", "released")))
		return r;

	/* Released: the status bits are gone and the revoke goes through. */
	f_rw = v1_entry(V1_REF_RW)->flags;
	f_ro = v1_entry(ro_ref)->flags;
	printk("PVHINFO grant_v1 released: rw flags 0x%x ro flags 0x%x\n", f_rw, f_ro);
	if (!rev_rw && !end_access_v1(V1_REF_RW, &f_rw))
		note_fail("rw revoke after release refused (flags 0x%x)", f_rw);
	if (!rev_ro && !end_access_v1(ro_ref, &f_ro))
		note_fail("ro revoke after release refused (flags 0x%x)", f_ro);
	if (v1_entry(V1_REF_RW)->flags || v1_entry(ro_ref)->flags)
		note_fail("flags after revoke rw 0x%x ro 0x%x", v1_entry(V1_REF_RW)->flags,
			  v1_entry(ro_ref)->flags);
	xenstore_write(GT_GUEST, "revoked");
	handshake_end();
	return first_fail[0] ? fail("%s", first_fail) : NULL;
}

static const char *scen_grant_v1(void)
{
	const char *r;
	uint32_t nr, max, v;
	long rc;

	if ((rc = get_version(DOMID_SELF, &v)) != 0)
		return fail("get_version(self) rc %ld", rc);
	if (v != 1)
		return fail("get_version %u, want 1 (Xen's grant_table_init default)", v);
	if ((r = query_self(&nr, &max)))
		return r;
	printk("PVHINFO grant_v1 query_size: nr_frames %u max_nr_frames %u\n", nr, max);
	if (!gt.nr_mapped && nr < 1)
		return fail("nr_frames %u before any mapping, want >= 1 (INITIAL_NR_GRANT_FRAMES)", nr);
	if ((r = ensure_mapped()))
		return r;
	if ((r = query_self(&nr, &max)))
		return r;
	if (nr < 2)
		return fail("nr_frames %u after mapping idx 1, want >= 2 (add_to_physmap grows)", nr);

	/* Contents follow a frame to its new gfn (xenmem_add_to_physmap_one removes the old). */
	if (!gt.remapped) {
		volatile grant_entry_v1_t *m = v1_entry(V1_MARK_REF);
		m->frame = 0x5eed1;
		m->domid = 0x7ff0;
		m->flags = 0;
		uint64_t to = gt.hole + REMAP_GFN_OFF;
		if ((rc = physmap_grant(1, to, DOMID_SELF)) != 0)
			return fail("remap frame 1 to gfn 0x%lx rc %ld", (unsigned long)to, rc);
		gt.gfn[1] = to;
		gt.remapped = 1;
		m = v1_entry(V1_MARK_REF);
		if (m->frame != 0x5eed1 || m->domid != 0x7ff0)
			return fail("frame 1 remapped to gfn 0x%lx lost its contents (frame 0x%x domid 0x%x)",
				    (unsigned long)to, m->frame, m->domid);
		/*
		 * Onto a populated RAM page: xenmem_add_to_physmap_one frees it
		 * (guest_remove_page), so the reservation drops by one.
		 */
		*(volatile uint64_t *)RAM_PAGE = 0x52414d;
		long before = reservation();
		to = GFN_OF(RAM_PAGE);
		if ((rc = physmap_grant(1, to, DOMID_SELF)) != 0)
			return fail("remap frame 1 onto RAM gfn 0x%lx rc %ld", (unsigned long)to, rc);
		gt.gfn[1] = to;
		long after = reservation();
		m = v1_entry(V1_MARK_REF);
		if (m->frame != 0x5eed1 || m->domid != 0x7ff0)
			return fail("frame 1 moved onto RAM gfn 0x%lx lost its contents (frame 0x%x domid 0x%x)",
				    (unsigned long)to, m->frame, m->domid);
		if (after != before - 1)
			return fail("current_reservation %ld -> %ld, want one less: the RAM page under frame 1 is freed",
				    before, after);
		m->frame = 0;
		m->domid = 0;
	}

	/* Grow (Linux's gnttab_expand: map the new frames, highest first). */
	uint32_t want = max < GT_FRAMES ? max : GT_FRAMES;
	uint32_t before = nr;
	if (gt.nr_mapped < want && (r = map_frames(gt.nr_mapped, want)))
		return r;
	if ((r = query_self(&nr, &max)))
		return r;
	if (nr < want)
		return fail("nr_frames %u after mapping up to idx %u", nr, want - 1);
	/* A frame the table grew by starts zeroed (gnttab_grow_table clears it). */
	if (before < want) {
		volatile uint64_t *newf = PHYS(gt.gfn[want - 1] << 12);
		for (uint32_t i = 0; i < PAGE_SIZE / 8; i++)
			if (newf[i] != 0)
				return fail("new frame %u (gfn 0x%lx) word %u = 0x%lx", want - 1,
					    (unsigned long)gt.gfn[want - 1], i, (unsigned long)newf[i]);
	}

	if ((r = v1_errors(max)))
		return r;
	if ((rc = get_version(DOMID_SELF, &v)) != 0 || v != 1)
		return fail("get_version after the errors rc %ld version %u", rc, v);

	grant_ref_t ro_ref = (want - 1) * V1_PER_FRAME + 11;
	if (want_host() && (r = v1_held(ro_ref)))
		return r;
	char gfns[64];
	int n = snprintf(gfns, sizeof(gfns), "0x%lx(ballooned)", (unsigned long)gt.gfn[0]);
	for (uint32_t i = 1; i < want && n < (int)sizeof(gfns); i++)
		n += snprintf(gfns + n, sizeof(gfns) - (size_t)n, ",0x%lx", (unsigned long)gt.gfn[i]);
	pass_note("frames=%u max=%u gfns=%s%s", nr, max, gfns,
		  want_host() ? " held-grants=ok" : " (no host part)");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* grant_v2                                                             */

static const char *v2_held(void)
{
	const char *r;
	char refs[96];
	uint16_t s_rw, s_sub;
	uint32_t v;
	long rc, off;

	fill(RW_PAGE, 0, PAGE_SIZE, SEED_GUEST_RW);
	fill(SUB_PAGE, 0, PAGE_SIZE, SEED_GUEST_SUB);
	if ((r = handshake_start()))
		return r;
	grant_v2_full(V2_REF_RW, BACKEND_DOMID, GFN_OF(RW_PAGE), 0);
	grant_v2_sub(V2_REF_SUB, BACKEND_DOMID, GFN_OF(SUB_PAGE), SUB_OFF, SUB_LEN, 0);
	snprintf(refs, sizeof(refs), "v2 rw=%u sub=%u off=%u len=%u", V2_REF_RW, V2_REF_SUB, SUB_OFF, SUB_LEN);
	if (xenstore_write(GT_REFS, refs))
		return fail("write %s: %s", GT_REFS, xenstore_error());
	printk("PVHTEST grant_v2 WAITING refs=%s\n", refs);
	if ((r = host_says("grant_v2", "held")))
		return r;

	first_fail[0] = 0;
	s_rw = *status_entry(V2_REF_RW);
	s_sub = *status_entry(V2_REF_SUB);
	printk("PVHINFO grant_v2 held: rw status 0x%x flags 0x%x, sub status 0x%x flags 0x%x\n", s_rw,
	       v2_entry(V2_REF_RW)->hdr.flags, s_sub, v2_entry(V2_REF_SUB)->hdr.flags);
	/* _set_status_v2: the bits go to the status frame, the flags stay as granted. */
	if (s_rw != (GTF_reading | GTF_writing))
		note_fail("rw status 0x%x while held, want 0x%x", s_rw, GTF_reading | GTF_writing);
	if (v2_entry(V2_REF_RW)->hdr.flags != GTF_permit_access)
		note_fail("rw flags 0x%x while held, want 0x%x (bits are in the status frame)",
			  v2_entry(V2_REF_RW)->hdr.flags, GTF_permit_access);
	/* A sub-page grant is only copied (never mapped): nothing stays pinned. */
	if (s_sub != 0)
		note_fail("sub-page status 0x%x after the host's copies, want 0", s_sub);
	/* gnttab_set_version: an entry past the reserved ones is pinned -> -EBUSY. */
	if ((rc = set_version(1, &v)) != -XEN_EBUSY || v != 2)
		note_fail("set_version(1) while held rc %ld version %u, want -EBUSY/2", rc, v);
	int rev_rw = end_access_v2(V2_REF_RW, &s_rw);
	if (rev_rw)
		note_fail("revoke while held succeeded (status 0x%x)", s_rw);
	if ((off = mismatch(RW_PAGE, 0, PAGE_SIZE, SEED_HOST)) >= 0)
		note_fail("rw page byte %ld = 0x%x, not the host's pattern", off, RW_PAGE[off]);
	if ((off = mismatch(SUB_PAGE, 0, SUB_OFF, SEED_GUEST_SUB)) >= 0 ||
	    (off = mismatch(SUB_PAGE, SUB_OFF + SUB_LEN, PAGE_SIZE, SEED_GUEST_SUB)) >= 0)
		note_fail("sub-page byte %ld = 0x%x changed outside [%u, %u)", off, SUB_PAGE[off], SUB_OFF,
			  SUB_OFF + SUB_LEN);
	if ((off = mismatch(SUB_PAGE, SUB_OFF, SUB_OFF + SUB_LEN, SEED_HOST_SUB)) >= 0)
		note_fail("sub-page byte %ld = 0x%x, not the host's copy", off, SUB_PAGE[off]);
	if ((r = tell_host("grant_v2", GT_GUEST, rev_rw ? "revoke-succeeded" : "revoke-refused")))
		return r;
	if ((r = host_says("grant_v2", "released")))
		return r;

	s_rw = *status_entry(V2_REF_RW);
	printk("PVHINFO grant_v2 released: rw status 0x%x\n", s_rw);
	if (!rev_rw && !end_access_v2(V2_REF_RW, &s_rw))
		note_fail("rw revoke after release refused (status 0x%x)", s_rw);
	if (!end_access_v2(V2_REF_SUB, &s_sub))
		note_fail("sub-page revoke refused (status 0x%x)", s_sub);
	xenstore_write(GT_GUEST, "revoked");
	handshake_end();
	return first_fail[0] ? fail("%s", first_fail) : NULL;
}

static const char *scen_grant_v2(void)
{
	const char *r;
	uint32_t v, nr, max;
	long rc;

	if ((rc = get_version(DOMID_SELF, &v)) != 0 || v != 1)
		return fail("get_version rc %ld version %u, want 0/1 before set_version(2)", rc, v);
	if ((r = ensure_mapped()))
		return r;
	/* Something in frame 1 that the switch must clear. */
	v1_entry(V1_MARK_REF)->frame = 0x5eed2;
	if ((rc = set_version(2, &v)) != 0 || v != 2)
		return fail("set_version(2) rc %ld version %u%s", rc, v,
			    rc == -XEN_ENOSYS ? " (v2 not offered: max_version 1)" : "");
	if ((rc = get_version(DOMID_SELF, &v)) != 0 || v != 2)
		return fail("get_version after set_version(2) rc %ld version %u", rc, v);
	/* gnttab_set_version clears every shared frame (reserved entries kept). */
	volatile uint64_t *f1 = PHYS(gt.gfn[1] << 12);
	for (uint32_t i = 0; i < PAGE_SIZE / 8; i++)
		if (f1[i] != 0)
			return fail("frame 1 word %u = 0x%lx after set_version(2), want cleared", i,
				    (unsigned long)f1[i]);
	if ((r = query_self(&nr, &max)))
		return r;
	/* grant_to_status_frames: 2-byte status per 16-byte v2 entry. */
	uint32_t nst = (nr * V2_PER_FRAME + ST_PER_FRAME - 1) / ST_PER_FRAME;
	uint32_t max_st = (max * V2_PER_FRAME + ST_PER_FRAME - 1) / ST_PER_FRAME;

	/*
	 * GNTTABOP_get_status_frames is not for HVM/PVH guests in Xen 4.17
	 * (hvm_grant_table_op: -ENOSYS); they place the status frames with
	 * XENMAPIDX_grant_table_status, as below.
	 */
	static uint64_t sframes[8];
	struct gnttab_get_status_frames gs = { .dom = DOMID_SELF, .nr_frames = nst, .status = 99 };
	set_xen_guest_handle(gs.frame_list, sframes);
	if ((rc = gnttab_op(GNTTABOP_get_status_frames, &gs, 1)) != -XEN_ENOSYS)
		return fail("get_status_frames(%u) rc %ld status %d, want -ENOSYS (hvm_grant_table_op)", nst, rc,
			    gs.status);

	/* Status frame 0 into the hole (Linux: XENMAPIDX_grant_table_status | idx). */
	uint64_t sgfn = gt.hole + STATUS_GFN_OFF;
	if ((rc = physmap_grant(XENMAPIDX_grant_table_status | 0, sgfn, DOMID_SELF)) != 0)
		return fail("add_to_physmap(grant_table, status idx 0, gfn 0x%lx) rc %ld", (unsigned long)sgfn, rc);
	gt.status_gfn = sgfn;
	/* Mapping status frame 0 again where it is changes nothing. */
	if ((rc = physmap_grant(XENMAPIDX_grant_table_status | 0, sgfn, DOMID_SELF)) != 0)
		return fail("add_to_physmap(status idx 0) again at gfn 0x%lx rc %ld", (unsigned long)sgfn, rc);
	/* gnttab_get_status_frame_mfn: beyond what max_grant_frames allows -> -EINVAL. */
	if ((rc = physmap_grant(XENMAPIDX_grant_table_status | max_st, gt.hole + 20, DOMID_SELF)) != -XEN_EINVAL)
		return fail("add_to_physmap(status idx %u >= %u) rc %ld, want -EINVAL", max_st, max_st, rc);
	if (*status_entry(V2_REF_RW) || *status_entry(V2_REF_SUB))
		return fail("status of unused refs 0x%x 0x%x", *status_entry(V2_REF_RW),
			    *status_entry(V2_REF_SUB));

	if (want_host() && (r = v2_held()))
		return r;

	/* Nothing in use: back to v1 (gnttab_set_version unpopulates the status frames). */
	if ((rc = set_version(1, &v)) != 0 || v != 1)
		return fail("set_version(1) with nothing in use rc %ld version %u", rc, v);
	gt.status_gfn = 0;	/* Xen takes it out of the p2m: a hole again */
	if ((rc = get_version(DOMID_SELF, &v)) != 0 || v != 1)
		return fail("get_version after set_version(1) rc %ld version %u", rc, v);
	if (v1_entry(V1_REF_RW)->flags)
		return fail("v1 entry %u flags 0x%x after the switch back, want cleared", V1_REF_RW,
			    v1_entry(V1_REF_RW)->flags);
	pass_note("status_frames=%u status_gfn=0x%lx%s", nst, (unsigned long)sgfn,
		  want_host() ? " held-grants=ok" : " (no host part)");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* grant_setup_table                                                    */

static const char *scen_grant_setup_table(void)
{
	const char *r;
	uint32_t nr, max, v;
	long rc;
	static xen_pfn_t frames[GT_FRAMES];

	if ((rc = get_version(DOMID_SELF, &v)) != 0 || v != 1)
		return fail("get_version rc %ld version %u, want 0/1", rc, v);
	if ((r = query_self(&nr, &max)))
		return r;
	/* Ask for one frame more than there is (if allowed): setup_table grows the table. */
	uint32_t n = nr < max && nr < GT_FRAMES ? nr + 1 : nr;
	if (n > GT_FRAMES)
		n = GT_FRAMES;
	for (uint32_t i = 0; i < GT_FRAMES; i++)
		frames[i] = ~(xen_pfn_t)0;
	struct gnttab_setup_table st = { .dom = DOMID_SELF, .nr_frames = n, .status = 99 };
	set_xen_guest_handle(st.frame_list, frames);
	if ((rc = gnttab_op(GNTTABOP_setup_table, &st, 1)) != 0 || st.status != GNTST_okay)
		return fail("setup_table(%u) rc %ld status %d", n, rc, st.status);
	uint32_t nr2, max2;
	if ((r = query_self(&nr2, &max2)))
		return r;
	if (nr2 < n)
		return fail("nr_frames %u after setup_table(%u)", nr2, n);
	for (uint32_t i = 0; i < n; i++) {
		printk("PVHINFO grant_setup_table frame %u at gfn 0x%lx\n", i, (unsigned long)frames[i]);
		if (!phys_ok((uint64_t)frames[i] << 12, PAGE_SIZE) || frames[i] < 0x100)
			return fail("setup_table frame %u: gfn 0x%lx is not a usable guest frame", i,
				    (unsigned long)frames[i]);
		/* Frames this boot already mapped stay where they are (gnttab_shared_gfn). */
		if (i < gt.nr_mapped && frames[i] != gt.gfn[i])
			return fail("setup_table frame %u at gfn 0x%lx, but it is mapped at 0x%lx", i,
				    (unsigned long)frames[i], (unsigned long)gt.gfn[i]);
	}
	/* From here on the entries go where setup_table said. */
	for (uint32_t i = 0; i < n; i++) {
		gt.gfn[i] = frames[i];
		if (i + 1 > gt.nr_mapped)
			gt.nr_mapped = i + 1;
	}

	/*
	 * GNTTABOP_dump_table: Xen 4.17 has no handler (gone from
	 * do_grant_table_op since 2006) and hvm_grant_table_op filters it:
	 * -ENOSYS. A VMM that dumps the table may answer 0 + GNTST_okay.
	 */
	struct gnttab_dump_table dt = { .dom = DOMID_SELF, .status = 99 };
	long drc = gnttab_op(GNTTABOP_dump_table, &dt, 1);
	const char *dump;
	if (drc == 0 && dt.status == GNTST_okay)
		dump = "ok";
	else if (drc == -XEN_ENOSYS)
		dump = "ENOSYS";
	else
		return fail("dump_table rc %ld status %d, want 0/GNTST_okay (or Xen 4.17's -ENOSYS)", drc,
			    dt.status);

	if (want_host()) {
		/* One read-only grant, written into the frame setup_table gave. */
		char refs[64];
		uint16_t f;
		fill(RO_PAGE, 0, PAGE_SIZE, SEED_GUEST_RO);
		if ((r = handshake_start()))
			return r;
		grant_v1(ST_REF_RO, BACKEND_DOMID, GFN_OF(RO_PAGE), GTF_permit_access | GTF_readonly);
		snprintf(refs, sizeof(refs), "v1 ro=%u", ST_REF_RO);
		if (xenstore_write(GT_REFS, refs))
			return fail("write %s: %s", GT_REFS, xenstore_error());
		printk("PVHTEST grant_setup_table WAITING refs=%s\n", refs);
		if ((r = host_says("grant_setup_table", "held")))
			return r;
		first_fail[0] = 0;
		f = v1_entry(ST_REF_RO)->flags;
		if (f != (GTF_permit_access | GTF_readonly | GTF_reading))
			note_fail("ro flags 0x%x while held, want 0x%x", f,
				  GTF_permit_access | GTF_readonly | GTF_reading);
		int rev = end_access_v1(ST_REF_RO, &f);
		if (rev)
			note_fail("revoke while held succeeded");
		if ((r = tell_host("grant_setup_table", GT_GUEST, rev ? "revoke-succeeded" : "revoke-refused")))
			return r;
		if ((r = host_says("grant_setup_table", "released")))
			return r;
		if (!rev && !end_access_v1(ST_REF_RO, &f))
			note_fail("revoke after release refused (flags 0x%x)", f);
		xenstore_write(GT_GUEST, "revoked");
		handshake_end();
		if (first_fail[0])
			return fail("%s", first_fail);
	} else {
		/* Without a host: the entry lands in the frame and reads back. */
		grant_v1(ST_REF_RO, BACKEND_DOMID, GFN_OF(RO_PAGE), GTF_permit_access | GTF_readonly);
		uint16_t f;
		if (v1_entry(ST_REF_RO)->frame != GFN_OF(RO_PAGE) || !end_access_v1(ST_REF_RO, &f))
			return "entry did not read back";
	}
	pass_note("frames=%u gfn0=0x%lx dump_table=%s%s", n, (unsigned long)frames[0], dump,
		  want_host() ? " held-grants=ok" : " (no host part)");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* For other files (blkfront.c): v1 grants as Linux's frontends use them */

/*
 * The table as Linux's gnttab_init leaves it (v1; frames 0 and 1 placed as
 * ensure_mapped() does, or where earlier scenarios of this boot put them).
 * Refs below V1_PER_FRAME (frame 0) are usable afterwards.
 */
const char *gnttab_frontend_ready(void)
{
	uint32_t v;
	long rc = get_version(DOMID_SELF, &v);
	if (rc != 0)
		return fail("grant get_version rc %ld", rc);
	if (v != 1)
		return fail("grant table is v%u, want v1 (grant_v2 failed before switching back?)", v);
	return ensure_mapped();
}

/* gnttab_grant_foreign_access_ref: frame and domid, wmb, flags. */
void gnttab_grant_ref(uint32_t ref, domid_t dom, uint64_t gfn, int readonly)
{
	grant_v1(ref, dom, gfn, GTF_permit_access | (readonly ? GTF_readonly : 0));
}

/* gnttab_try_end_foreign_access: 1 revoked, 0 still in use (*flags as found). */
int gnttab_end_ref(uint32_t ref, uint16_t *flags)
{
	return end_access_v1(ref, flags);
}

/* For hostile.c: any v1 entry as a hostile guest writes it (flags last, as grant_v1). */
void gnttab_raw_v1(uint32_t ref, uint16_t flags, domid_t dom, uint32_t frame)
{
	grant_v1(ref, dom, frame, flags);
}

/* Run only when named (see testguest/README.md). */
const struct scenario grant_scenarios[] = {
	{ "grant_v1", scen_grant_v1 },
	{ "grant_v2", scen_grant_v2 },
	{ "grant_setup_table", scen_grant_setup_table },
};
const size_t nr_grant_scenarios = ARRAY_SIZE(grant_scenarios);
