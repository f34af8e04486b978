/*
 * pvh test guest: a minimal Xen block frontend (blkfront) and the scenarios
 * that drive a block backend with it. Run only when named:
 *
 *   pvh.scenarios=blk_info        handshake, backend nodes, reconnect, one read
 *   pvh.scenarios=blk_rw          pattern write/flush/read-back, 1- and 11-segment
 *                                 requests, sub-page segments, a full ring
 *   pvh.scenarios=blk_verify      read-back only (data written by an earlier boot)
 *   pvh.scenarios=blk_multipage   ring-page-order 2 (4 ring pages, 128 slots)
 *   pvh.scenarios=blk_indirect    BLKIF_OP_INDIRECT requests (32 segments)
 *   pvh.scenarios=blk_discard     BLKIF_OP_DISCARD, the range reads back as zeros
 *   pvh.scenarios=blk_mq          two queues (multi-queue-num-queues = 2)
 *   pvh.scenarios=blk_early_init  Initialised written before the backend's InitWait
 *   pvh.scenarios=blk_err         the status of one write (pvh.blkexpect), then a read
 *   pvh.scenarios=blk_scribble    two disks; garbage over one's ring: the backend fails
 *                                 that device (xenbus Closing, error node), the other works
 *   pvh.scenarios=blk_kill9       numbered rounds of writes, each flushed and then reported,
 *                                 until the host kills pvh (kill -9) and checks the disk
 *
 * Knobs (testguest/README.md): pvh.blkdev, pvh.blkdev2, pvh.blkseed, pvh.blkstart,
 * pvh.blksectors, pvh.blkindirect, pvh.blkexpect, pvh.blksector,
 * pvh.blkearly, pvh.blktimeout, pvh.blkdebug, pvh.blknotify, pvh.blkrogrant.
 *
 * Everything follows Linux's drivers/block/xen-blkfront.c and
 * drivers/xen/xenbus/ (the names of the Linux functions are in the
 * comments), with the ABI from Xen's public headers only: xen/io/blkif.h
 * (requests, DEFINE_RING_TYPES(blkif, ...)), xen/io/ring.h (the ring
 * macros), xen/io/xenbus.h (states), xen/grant_table.h, xen/event_channel.h.
 *
 * XenStore layout (libxl's, for a PV disk; <fe> = device/vbd/<vdev> in our
 * home, <be> = the frontend's `backend` node, normally
 * /local/domain/0/backend/vbd/<domid>/<vdev>):
 *   we read   <fe>/backend, backend-id, virtual-device, device-type, state;
 *             <be>/state; at InitWait <be>/max-ring-page-order,
 *             multi-queue-max-queues; at Connected <be>/sectors, info,
 *             sector-size, physical-sector-size, feature-barrier,
 *             feature-flush-cache, feature-discard, discard-granularity,
 *             discard-alignment, discard-secure, feature-persistent,
 *             feature-max-indirect-segments
 *   we write  (one transaction) [ring-page-order], ring-ref | ring-ref<i>,
 *             event-channel, or multi-queue-num-queues + queue-<n>/...,
 *             protocol = x86_64-abi, feature-persistent = 0; then state.
 *
 * Sizes: sector numbers, first_sect/last_sect and `sectors` are in 512-byte
 * units, as Linux's blkfront uses them (it does not write
 * feature-large-sector-size). All I/O here is in whole 4 KiB pages at
 * 8-sector boundaries except blk_rw's sub-page part (512-byte disks only).
 *
 * Memory: blk_pages (NOLOAD) holds 16 ring pages (2 devices x 2 queues x 4),
 * 8 indirect segment pages and 128 data pages, each granted (v1, to backend-id) at
 * ref BLK_REF_BASE + its index: ring pages for the connection, data and
 * indirect pages per request (granted at submission, revoked at the
 * response; a grant the backend still maps then is a failure, as Linux's
 * blkif_completion treats it since XSA-396).
 *
 * Waiting: the backend's state through a XenStore watch on <be>/state;
 * responses by halting until the ring has some (events.c wait_until: the
 * event channel's upcall wakes us, the LAPIC watchdog bounds each halt).
 * Every wait is bounded by pvh.blktimeout (default 10000 ms) and ends in
 * "FAIL <reason>" with the ring indices or states seen.
 */
#include "testguest.h"
#include "xenbus_front.h"

#include <xen/event_channel.h>
#include <xen/grant_table.h>
#include <xen/io/xenbus.h>
#include <xen/io/protocols.h>

/*
 * xen/io/ring.h takes its barriers from us (interface version >= 0x00030208).
 * x86 is TSO: read and write barriers only order the compiler (Linux's
 * virt_rmb/virt_wmb); the full barrier is an mfence (virt_mb).
 */
#define xen_mb()  __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/io/blkif.h>

#define evtchn_op(cmd, arg)  HC2(__HYPERVISOR_event_channel_op, cmd, arg)

/* ------------------------------------------------------------------ */
/* Sizes, pages, grant references                                       */

#define BLK_MAX_QUEUES	2
#define BLK_MAX_ORDER	2				/* ring pages per queue: up to 4 */
#define BLK_DEVS	2				/* devices served at once (blk_scribble) */
#define BLK_DEV_RING_PAGES (BLK_MAX_QUEUES << BLK_MAX_ORDER)	/* 8 per device */
#define BLK_RING_PAGES	(BLK_DEVS * BLK_DEV_RING_PAGES)	/* 16 */
#define BLK_IND_PAGES	8				/* indirect segment pages */
#define BLK_DATA_PAGES	128				/* 512 KiB of I/O buffers */
#define BLK_PAGES	(BLK_RING_PAGES + BLK_IND_PAGES + BLK_DATA_PAGES)
#define BLK_PAGES_LIT	152				/* the same, for the assembler */
#define BLK_IND0	BLK_RING_PAGES			/* first indirect page */
#define BLK_DATA0	(BLK_RING_PAGES + BLK_IND_PAGES)	/* first data page */
/* Grant refs BLK_REF_BASE + page index: frame 0, past grants.c's refs 10-20. */
#define BLK_REF_BASE	32
/* Slots of the largest ring (4 pages): 128; one page: 32. */
#define BLK_RING_MAX	__CONST_RING_SIZE(blkif, PAGE_SIZE << BLK_MAX_ORDER)
#define BLK_MAX_SEGS	BLK_DATA_PAGES			/* per (indirect) request */
#define SEGS_PER_IND_PAGE (PAGE_SIZE / sizeof(struct blkif_request_segment))
#define SECT		512				/* blkif's sector unit */
#define SECTS_PER_PAGE	(PAGE_SIZE / SECT)		/* 8 */
#define BLK_MAX_REQS	(BLK_DATA_PAGES + 8)		/* one batch */

#define STR_(x) #x
#define STR(x) STR_(x)

_Static_assert(BLK_PAGES == BLK_PAGES_LIT, "BLK_PAGES_LIT");
_Static_assert(BLK_REF_BASE + BLK_PAGES <= PAGE_SIZE / sizeof(grant_entry_v1_t),
	       "blkfront's grant refs must lie in grant frame 0");
_Static_assert(__CONST_RING_SIZE(blkif, PAGE_SIZE) == 32, "one-page blkif ring: 32 slots");
_Static_assert(BLK_RING_MAX == 128, "four-page blkif ring: 128 slots");
_Static_assert(sizeof(blkif_request_indirect_t) <= sizeof(blkif_request_t), "indirect fits a slot");
_Static_assert(sizeof(blkif_request_discard_t) <= sizeof(blkif_request_t), "discard fits a slot");
_Static_assert(BLK_MAX_SEGS <= SEGS_PER_IND_PAGE, "one indirect page per request");

__asm__(".pushsection .pages, \"aw\", @nobits\n"
	".balign 4096\n"
	".globl blk_pages\n"
	"blk_pages: .skip " STR(BLK_PAGES_LIT) " * 4096\n"
	".popsection\n");
extern uint8_t blk_pages[];

static uint8_t *blk_page(unsigned i) { return blk_pages + (size_t)i * PAGE_SIZE; }
static uint8_t *data_page(unsigned i) { return blk_page(BLK_DATA0 + i); }
static uint32_t page_ref(unsigned i) { return BLK_REF_BASE + i; }
static uint64_t page_gfn(unsigned i) { return (uint64_t)(uintptr_t)blk_page(i) >> 12; }

/* ------------------------------------------------------------------ */
/* The device and its connection                                        */

/* One request as a scenario builds it; blk_run() fills in the result. */
struct blk_seg {
	uint16_t page;			/* data page index (0..BLK_DATA_PAGES-1) */
	uint8_t first, last;		/* sectors within the page, inclusive */
};

struct blk_req {
	uint8_t op;			/* BLKIF_OP_READ/WRITE/FLUSH_DISKCACHE/WRITE_BARRIER/DISCARD */
	uint8_t queue;
	uint8_t indirect;		/* send READ/WRITE as BLKIF_OP_INDIRECT */
	uint8_t discard_flag;
	uint16_t nseg;
	uint64_t sector;		/* 512-byte units */
	uint64_t nr_sectors;		/* BLKIF_OP_DISCARD */
	struct blk_seg seg[BLK_MAX_SEGS];
	/* results */
	uint8_t state;			/* REQ_NEW, REQ_SENT, REQ_DONE */
	int16_t ind_page;		/* the indirect page used, or -1 */
	int16_t status;			/* BLKIF_RSP_* from the response */
};
enum { REQ_NEW, REQ_SENT, REQ_DONE };

struct blk_shadow {			/* Linux's blk_shadow: a request in flight */
	struct blk_req *req;		/* NULL: slot free */
	uint64_t id;
};

struct blk_queue {
	blkif_front_ring_t ring;
	evtchn_port_t port;
	unsigned page0;			/* its first ring page in blk_pages */
	struct blk_shadow sh[BLK_RING_MAX];
	/* counters for the current scenario */
	uint32_t requests, responses, notified, not_notified, max_in_flight;
	uint32_t hits0;			/* evtchn_port_hits at the start of blk_run */
};

struct blk_dev {
	/* found in XenStore */
	unsigned vdev;
	/* fe = "device/vbd/<vdev>", be, beid, fe_state, and the backend's
	 * states during the last wait (trail, e.g. "6>2>4") */
	struct xenbus_front xb;
	char type[16];			/* device-type */
	int known;			/* fe_state is ours (prepared once this boot) */
	/* read at InitWait */
	uint64_t max_order, max_queues;
	/* read at Connected */
	uint64_t sectors, info, sector_size, phys_sector_size;
	uint64_t barrier, flush, discard, discard_gran, discard_align, discard_secure;
	uint64_t persistent, max_indirect;
	/* this connection */
	unsigned order, nq;
	unsigned ring0;			/* its first ring page in blk_pages (BLK_DEV_RING_PAGES each) */
	int rings;			/* ring pages granted and ports allocated */
	int connected;
	struct blk_queue q[BLK_MAX_QUEUES];
	uint32_t next_id;
};

/*
 * The devices: every scenario drives `dev`; blk_scribble also `dev_b`, the
 * other disk. Each has its own ring pages (ring0); the indirect and data
 * pages are shared, a page in one request at a time (page_busy): a
 * scenario runs one device's batch to its end before the other's.
 */
static struct blk_dev dev = { .ring0 = 0 };
static struct blk_dev dev_b = { .ring0 = BLK_DEV_RING_PAGES };
static uint8_t page_busy[BLK_PAGES];

/* Per-scenario settings (read from the command line once per scenario). */
static unsigned blk_dbg;		/* pvh.blkdebug: 1 handshake, 2 every request */
static uint64_t blk_timeout;		/* pvh.blktimeout, ms */
static int blk_hlt;			/* upcalls work: wait halted */
static int blk_notify_always;		/* pvh.blknotify=always */
static int blk_rogrant;			/* pvh.blkrogrant=1 */

#define DBG(lvl, ...) do { if (blk_dbg >= (lvl)) printk(__VA_ARGS__); } while (0)

static struct blk_req reqs[BLK_MAX_REQS];

/* The failure reason of a scenario, kept apart from fail()'s buffer (cleanup reuses that). */
static char reason_buf[160];
static const char *keep(const char *r)
{
	if (r && r != reason_buf)
		snprintf(reason_buf, sizeof(reason_buf), "%s", r);
	return r ? reason_buf : NULL;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                        */

static int opt_word(const char *key, const char *word)
{
	size_t len;
	const char *v = cmdline_opt(key, &len);
	return v && len == strlen(word) && !strncmp(v, word, len);
}

static const char *op_name(unsigned op)
{
	switch (op) {
	case BLKIF_OP_READ: return "read";
	case BLKIF_OP_WRITE: return "write";
	case BLKIF_OP_WRITE_BARRIER: return "barrier";
	case BLKIF_OP_FLUSH_DISKCACHE: return "flush";
	case BLKIF_OP_DISCARD: return "discard";
	case BLKIF_OP_INDIRECT: return "indirect";
	default: return "op?";
	}
}

static const char *status_name(int s)
{
	switch (s) {
	case BLKIF_RSP_OKAY: return "BLKIF_RSP_OKAY";
	case BLKIF_RSP_ERROR: return "BLKIF_RSP_ERROR";
	case BLKIF_RSP_EOPNOTSUPP: return "BLKIF_RSP_EOPNOTSUPP";
	default: return "unknown status";
	}
}

/* "write 1024+88 11 segs q0": what a request was, for failure reasons. */
static const char *req_desc(const struct blk_req *x)
{
	static char b[64];
	if (x->op == BLKIF_OP_DISCARD)
		snprintf(b, sizeof(b), "discard %lu+%lu q%u", (unsigned long)x->sector,
			 (unsigned long)x->nr_sectors, x->queue);
	else if (x->op == BLKIF_OP_FLUSH_DISKCACHE || x->op == BLKIF_OP_WRITE_BARRIER)
		snprintf(b, sizeof(b), "%s (%u segs) q%u", op_name(x->op), x->nseg, x->queue);
	else {
		unsigned n = 0;
		for (unsigned i = 0; i < x->nseg; i++)
			n += (unsigned)(x->seg[i].last - x->seg[i].first + 1);
		snprintf(b, sizeof(b), "%s%s %lu+%u %u segs q%u", x->indirect ? "indirect " : "",
			 op_name(x->op), (unsigned long)x->sector, n, x->nseg, x->queue);
	}
	return b;
}

/* ------------------------------------------------------------------ */
/* Finding the device                                                   */

/*
 * The vbds under device/vbd: `list` gets "51712:disk,51728:cdrom". The
 * device used is `want` (a vdev), else the lowest-numbered one whose
 * device-type is "disk" (Linux in a PVH/HVM guest ignores cdroms,
 * blkfront_probe) other than `skip`. Reads its frontend nodes into *d.
 */
static const char *blk_find(struct blk_dev *d, char *list, size_t listlen, uint64_t want, unsigned skip)
{
	const char *r;
	uint32_t len;
	if ((r = xenstore_connect()))
		return r;
	const char *names = xenstore_directory("device/vbd", &len);
	if (!names)
		return xb_streq(xenstore_error(), "ENOENT") ? "no device/vbd in XenStore (no --disk?)"
							 : fail("directory device/vbd: %s", xenstore_error());
	static char copy[256];
	if (len >= sizeof(copy))
		len = sizeof(copy) - 1;
	memcpy(copy, names, len);
	copy[len] = 0;

	unsigned vdevs[8], n = 0, pick = ~0u;
	char types[8][12];
	for (uint32_t i = 0; i < len && n < 8; i += (uint32_t)strlen(copy + i) + 1) {
		uint64_t v;
		if (!copy[i] || xb_parse_u64(copy + i, &v) || v > 0xffffffffu)
			continue;	/* not a vdev number */
		vdevs[n] = (unsigned)v;
		char dir[48];
		snprintf(dir, sizeof(dir), "device/vbd/%u", vdevs[n]);
		int t = xb_get(dir, "device-type");
		snprintf(types[n], sizeof(types[n]), "%s", t == 1 ? xb_val : t == 0 ? "disk" : "?");
		n++;
	}
	if (!n)
		return "device/vbd has no devices";
	size_t ln = 0;
	list[0] = 0;
	for (unsigned i = 0; i < n && ln < listlen; i++)
		ln += (size_t)snprintf(list + ln, listlen - ln, "%s%u:%s", i ? "," : "", vdevs[i], types[i]);

	for (unsigned i = 0; i < n; i++) {
		if (want ? vdevs[i] == want
			 : xb_streq(types[i], "disk") && vdevs[i] != skip && (pick == ~0u || vdevs[i] < vdevs[pick]))
			pick = i;
	}
	if (pick == ~0u)
		return want ? fail("vbd %lu: no such vbd (have %s)", (unsigned long)want, list)
			    : fail("no %svbd with device-type disk (have %s)", skip ? "second " : "", list);

	d->vdev = vdevs[pick];
	snprintf(d->xb.fe, sizeof(d->xb.fe), "device/vbd/%u", d->vdev);
	snprintf(d->type, sizeof(d->type), "%s", types[pick]);
	/* xenbus_read_otherend_details: backend-id, backend. */
	if ((r = xb_read_otherend(&d->xb)))
		return r;
	DBG(1, "PVHINFO blk: vbds %s; using %s (%s), backend %s (domain %u)\n", list, d->xb.fe, d->type,
	    d->xb.be, d->xb.beid);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Rings and event channels (setup_blkring, xenbus_setup_ring)          */

static void zero_pages(unsigned first, unsigned n)
{
	uint64_t *w = (uint64_t *)blk_page(first);
	for (size_t i = 0; i < (size_t)n * PAGE_SIZE / 8; i++)
		w[i] = 0;
}

static const char *rings_setup(struct blk_dev *d, unsigned order, unsigned nq)
{
	long rc;
	d->order = order;
	d->nq = nq;
	for (unsigned q = 0; q < nq; q++) {
		struct blk_queue *Q = &d->q[q];
		memset(Q, 0, sizeof(*Q));
		Q->page0 = d->ring0 + (q << BLK_MAX_ORDER);
		zero_pages(Q->page0, 1u << order);
		blkif_sring_t *s = (blkif_sring_t *)blk_page(Q->page0);
		XEN_FRONT_RING_INIT(&Q->ring, s, PAGE_SIZE << order);
		for (unsigned i = 0; i < (1u << order); i++)
			gnttab_grant_ref(page_ref(Q->page0 + i), d->xb.beid, page_gfn(Q->page0 + i), 0);
		/* xenbus_alloc_evtchn: an unbound port the backend binds to. */
		struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = d->xb.beid };
		if ((rc = evtchn_op(EVTCHNOP_alloc_unbound, &au)) != 0)
			return fail("EVTCHNOP_alloc_unbound(remote d%u) rc %ld", d->xb.beid, rc);
		Q->port = au.port;
		struct evtchn_unmask um = { .port = Q->port };
		evtchn_op(EVTCHNOP_unmask, &um);
		d->rings = 1;
		DBG(1, "PVHINFO blk: queue %u: %u ring page(s) refs %u.., %u slots, port %u\n", q,
		    1u << order, page_ref(Q->page0), RING_SIZE(&Q->ring), Q->port);
	}
	return NULL;
}

/* The backend is Closed (or never connected): take everything back. */
static const char *rings_release(struct blk_dev *d)
{
	const char *r = NULL;
	uint16_t f;
	if (!d->rings)
		return NULL;
	for (unsigned q = 0; q < d->nq; q++) {
		struct blk_queue *Q = &d->q[q];
		/* Requests that never got a response: their grants too. */
		for (unsigned s = 0; s < BLK_RING_MAX; s++) {
			struct blk_req *x = Q->sh[s].req;
			if (!x)
				continue;
			for (unsigned i = 0; i < x->nseg; i++) {
				gnttab_end_ref(page_ref(BLK_DATA0 + x->seg[i].page), &f);
				page_busy[BLK_DATA0 + x->seg[i].page] = 0;
			}
			if (x->ind_page >= 0) {
				gnttab_end_ref(page_ref((unsigned)x->ind_page), &f);
				page_busy[x->ind_page] = 0;
			}
			Q->sh[s].req = NULL;
		}
		for (unsigned i = 0; i < (1u << d->order); i++)
			if (!gnttab_end_ref(page_ref(Q->page0 + i), &f) && !r)
				r = fail("backend still maps ring page %u of queue %u (ref %u, flags 0x%x) after Closed",
					 i, q, page_ref(Q->page0 + i), f);
		struct evtchn_close c = { .port = Q->port };
		evtchn_op(EVTCHNOP_close, &c);
	}
	d->rings = 0;
	/* Nothing in flight on any device now: every page is free (whatever a failure left marked). */
	if (!dev.rings && !dev_b.rings)
		memset(page_busy, 0, sizeof(page_busy));
	return r;
}

/* ------------------------------------------------------------------ */
/* The handshake (blkback_changed, talk_to_blkback, blkfront_connect)   */

/*
 * Transport nodes an earlier connection of this frontend may have left
 * (another ring size or queue count). Linux leaves them, and Linux's
 * blkback reads ring-page-order and multi-queue-num-queues first, so they
 * do not matter there; a backend reading `ring-ref` whenever it exists
 * would take a stale one. Removed so that no scenario depends on the one
 * before it.
 */
static void remove_ring_nodes(struct blk_dev *d)
{
	static const char *const keys[] = {
		"ring-ref", "event-channel", "ring-page-order", "multi-queue-num-queues",
		"ring-ref0", "ring-ref1", "ring-ref2", "ring-ref3", "queue-0", "queue-1",
	};
	_Static_assert(BLK_MAX_ORDER == 2 && BLK_MAX_QUEUES == 2, "keys[] covers what we write");
	char path[96];
	for (unsigned i = 0; i < ARRAY_SIZE(keys); i++) {
		snprintf(path, sizeof(path), "%s/%s", d->xb.fe, keys[i]);
		xenstore_rm(path);	/* ENOENT: fine */
	}
}

/* The nodes talk_to_blkback writes (write_per_ring_nodes etc.), inside transaction tx. */
static const char *fill_ring_nodes(struct xenbus_front *f, uint32_t tx, void *arg)
{
	struct blk_dev *d = arg;
	const char *r = NULL;
	if (d->order > 0)
		r = xb_put(&d->xb, tx, "ring-page-order", "%u", d->order);
	if (!r && d->nq > 1)
		r = xb_put(&d->xb, tx, "multi-queue-num-queues", "%u", d->nq);
	for (unsigned q = 0; q < d->nq && !r; q++) {
		/* One queue: the plain keys; more: under queue-<n>/ (blkif.h). */
		char dir[16] = "", k[48];
		if (d->nq > 1)
			snprintf(dir, sizeof(dir), "queue-%u/", q);
		if (d->order == 0) {
			snprintf(k, sizeof(k), "%sring-ref", dir);
			r = xb_put(&d->xb, tx, k, "%u", page_ref(d->q[q].page0));
		}
		for (unsigned i = 0; d->order > 0 && i < (1u << d->order) && !r; i++) {
			snprintf(k, sizeof(k), "%sring-ref%u", dir, i);
			r = xb_put(&d->xb, tx, k, "%u", page_ref(d->q[q].page0 + i));
		}
		if (!r) {
			snprintf(k, sizeof(k), "%sevent-channel", dir);
			r = xb_put(&d->xb, tx, k, "%u", d->q[q].port);
		}
	}
	if (!r)
		r = xb_put(f, tx, "protocol", "%s", XEN_IO_PROTO_ABI_X86_64);
	if (!r)
		r = xb_put(f, tx, "feature-persistent", "%u", 0);
	return r;
}

/* Publish the rings in one transaction (retried on EAGAIN), as talk_to_blkback. */
static const char *write_ring_nodes(struct blk_dev *d)
{
	remove_ring_nodes(d);
	return xb_transaction(&d->xb, fill_ring_nodes, d);
}

/* blkfront_connect / blkfront_gather_backend_features: what the backend published. */
static const char *read_connected(struct blk_dev *d)
{
	const char *r;
	if ((r = xb_need(d->xb.be, "sectors", &d->sectors)) || (r = xb_need(d->xb.be, "info", &d->info)) ||
	    (r = xb_need(d->xb.be, "sector-size", &d->sector_size)))
		return fail("backend Connected, but %s", keep(r));
	if ((r = xb_num(d->xb.be, "physical-sector-size", d->sector_size, &d->phys_sector_size)) ||
	    (r = xb_num(d->xb.be, "feature-barrier", 0, &d->barrier)) ||
	    (r = xb_num(d->xb.be, "feature-flush-cache", 0, &d->flush)) ||
	    (r = xb_num(d->xb.be, "feature-discard", 0, &d->discard)) ||
	    (r = xb_num(d->xb.be, "discard-granularity", d->sector_size, &d->discard_gran)) ||
	    (r = xb_num(d->xb.be, "discard-alignment", 0, &d->discard_align)) ||
	    (r = xb_num(d->xb.be, "discard-secure", 0, &d->discard_secure)) ||
	    (r = xb_num(d->xb.be, "feature-persistent", 0, &d->persistent)) ||
	    (r = xb_num(d->xb.be, "feature-max-indirect-segments", 0, &d->max_indirect)))
		return r;
	DBG(1, "PVHINFO blk: connected: sectors %lu sector-size %lu physical-sector-size %lu info 0x%lx "
	    "barrier %lu flush %lu discard %lu (granularity %lu alignment %lu secure %lu) persistent %lu "
	    "max-indirect %lu\n", (unsigned long)d->sectors, (unsigned long)d->sector_size,
	    (unsigned long)d->phys_sector_size, (unsigned long)d->info, (unsigned long)d->barrier,
	    (unsigned long)d->flush, (unsigned long)d->discard, (unsigned long)d->discard_gran,
	    (unsigned long)d->discard_align, (unsigned long)d->discard_secure,
	    (unsigned long)d->persistent, (unsigned long)d->max_indirect);
	return NULL;
}

/*
 * Connect with `order` (ring pages 1 << order per queue) and `nq` queues.
 * Linux's order (early == 0): wait for InitWait, read max-ring-page-order
 * and multi-queue-max-queues, set up the rings, write the nodes, state
 * Initialised, wait for Connected, read the disk's nodes, state Connected.
 * early != 0: skip the wait for InitWait (one page, one queue: the defaults
 * in effect then, blkif.h); the backend's state at that moment is returned
 * in *early_state.
 */
static const char *blk_connect(struct blk_dev *d, unsigned order, unsigned nq, int early,
			       unsigned *early_state)
{
	const char *r;
	unsigned st;
	if (!early) {
		/* blkback_changed(InitWait) -> talk_to_blkback */
		if ((r = xb_wait_be(&d->xb, 1u << XenbusStateInitWait, 1u << XenbusStateClosing, "InitWait", &st)))
			return r;
		if ((r = xb_num(d->xb.be, "max-ring-page-order", 0, &d->max_order)) ||
		    (r = xb_num(d->xb.be, "multi-queue-max-queues", 1, &d->max_queues)))
			return r;
		DBG(1, "PVHINFO blk: backend max-ring-page-order %lu multi-queue-max-queues %lu\n",
		    (unsigned long)d->max_order, (unsigned long)d->max_queues);
		if (order > d->max_order)
			return fail("backend offers max-ring-page-order %lu, need %u", (unsigned long)d->max_order,
				    order);
		if (nq > d->max_queues)
			return fail("backend offers multi-queue-max-queues %lu, need %u",
				    (unsigned long)d->max_queues, nq);
	} else {
		order = 0;
		nq = 1;
		if ((r = xb_be_state(&d->xb, &st)))
			return r;
		*early_state = st;
		DBG(1, "PVHINFO blk: early: backend state %u (%s), not waiting for InitWait\n", st,
		    xb_state_name(st));
	}
	if ((r = rings_setup(d, order, nq)) || (r = write_ring_nodes(d)) ||
	    (r = xb_switch_state(&d->xb, XenbusStateInitialised)))
		return r;
	/* blkback_changed(Connected) -> blkfront_connect */
	unsigned stop = early ? 0 : (1u << XenbusStateClosing) | (1u << XenbusStateClosed);
	if ((r = xb_wait_be(&d->xb, 1u << XenbusStateConnected, stop, "Connected", &st)))
		return r;
	if ((r = read_connected(d)) || (r = xb_switch_state(&d->xb, XenbusStateConnected)))
		return r;
	d->connected = 1;
	return NULL;
}

/*
 * Close, as Linux's xenbus_reset_frontend (and blkfront on unplug): Closing,
 * wait for the backend's Closing (or Closed), Closed, wait for its Closed;
 * then the rings come back (every grant revocable, ports closed), and with
 * `reinit` the frontend goes to Initialising and waits for the backend's
 * InitWait (the reset's last step: the next connect starts from there).
 */
static const char *blk_teardown(struct blk_dev *d, int reinit)
{
	const char *r = NULL, *r2;
	d->connected = 0;
	if ((r = xb_switch_state(&d->xb, XenbusStateClosing)) ||
	    (r = xb_wait_be(&d->xb, (1u << XenbusStateClosing) | (1u << XenbusStateClosed), 0, "Closing", NULL)) ||
	    (r = xb_switch_state(&d->xb, XenbusStateClosed)) ||
	    (r = xb_wait_be(&d->xb, 1u << XenbusStateClosed, 0, "Closed", NULL)))
		r = keep(r);
	r2 = rings_release(d);
	if (!r && r2)
		r = r2;
	if (!r && reinit && !(r = xb_switch_state(&d->xb, XenbusStateInitialising)))
		r = xb_wait_be(&d->xb, 1u << XenbusStateInitWait, 0, "InitWait after Initialising", NULL);
	return r;
}

/*
 * Ready to connect: our frontend Initialising. The first time in a boot the
 * frontend state is read; anything but Initialising (a previous scenario's
 * leftover, a backend Connected to someone) is reset first.
 */
static const char *blk_prepare(struct blk_dev *d)
{
	const char *r;
	uint64_t fs;
	unsigned bs;
	if (d->known && d->xb.fe_state == XenbusStateInitialising && !d->rings)
		return NULL;
	if ((r = xb_num(d->xb.fe, "state", XenbusStateUnknown, &fs)) || (r = xb_be_state(&d->xb, &bs)))
		return r;
	d->xb.fe_state = (unsigned)fs;
	d->known = 1;
	DBG(1, "PVHINFO blk: frontend state %lu (%s), backend %u (%s)\n", (unsigned long)fs,
	    xb_state_name((unsigned)fs), bs, xb_state_name(bs));
	if (fs == XenbusStateInitialising && bs != XenbusStateConnected && !d->rings)
		return NULL;
	return blk_teardown(d, 1);
}

static void blk_settings(void)
{
	blk_dbg = (unsigned)opt_num("pvh.blkdebug=", 0);
	blk_timeout = opt_num("pvh.blktimeout=", 10000);
	if (!blk_timeout)
		blk_timeout = 10000;
	blk_notify_always = opt_word("pvh.blknotify=", "always");
	blk_rogrant = opt_num("pvh.blkrogrant=", 0) != 0;
	dev.xb.tag = "blk";
	dev_b.xb.tag = "blkb";	/* its own watch token: "pvh-blkb" */
	dev.xb.dbg = dev_b.xb.dbg = blk_dbg;
	dev.xb.timeout_ms = dev_b.xb.timeout_ms = blk_timeout;
}

/*
 * Find the device (pvh.blkdev, else the lowest disk), grants and upcalls
 * ready, frontend Initialising.
 */
static const char *blk_begin(struct blk_dev *d, char *list, size_t listlen)
{
	const char *r;
	char dummy[8];
	blk_settings();
	if ((r = blk_find(d, list ? list : dummy, list ? listlen : sizeof(dummy), opt_num("pvh.blkdev=", 0), 0)))
		return r;
	if ((r = gnttab_frontend_ready()))
		return r;
	/* Upcalls only wake us (the ring is polled); without them waits spin. */
	if ((r = xen_setup())) {
		printk("PVHINFO blk: no upcalls (%s): spinning, notifications not checked\n", r);
		blk_hlt = 0;
	} else {
		blk_hlt = 1;
	}
	return blk_prepare(d);
}

/* The scenario's end: disconnect, keeping the first failure. */
static const char *blk_end(struct blk_dev *d, const char *r)
{
	r = keep(r);
	if (!d->known)
		return r;
	const char *t = blk_teardown(d, 1);
	if (t && r)
		printk("PVHINFO blk: teardown after the failure: %s\n", t);
	return r ? r : keep(t);
}

/* ------------------------------------------------------------------ */
/* Requests (blkif_queue_request, blkif_interrupt, blkif_completion)    */

static int ind_page_free(void)
{
	for (unsigned i = 0; i < BLK_IND_PAGES; i++)
		if (!page_busy[BLK_IND0 + i])
			return (int)(BLK_IND0 + i);
	return -1;
}

/* Build x into the next slot of its queue's ring (not yet pushed). */
static const char *submit(struct blk_dev *d, struct blk_req *x)
{
	struct blk_queue *Q = &d->q[x->queue];
	unsigned slot = 0;
	while (slot < RING_SIZE(&Q->ring) && Q->sh[slot].req)
		slot++;
	if (slot >= RING_SIZE(&Q->ring))
		return "internal: no free shadow slot";
	uint64_t id = 0xb10c000000000000ULL | (uint64_t)(d->next_id++ & 0xffffff) << 24 |
		      (uint64_t)x->queue << 16 | slot;
	int ro = blk_rogrant && x->op == BLKIF_OP_WRITE;

	union {
		blkif_request_t rw;
		blkif_request_indirect_t ind;
		blkif_request_discard_t dis;
	} u;
	memset(&u, 0, sizeof(u));
	x->ind_page = -1;

	for (unsigned i = 0; i < x->nseg; i++) {
		unsigned p = BLK_DATA0 + x->seg[i].page;
		if (x->seg[i].page >= BLK_DATA_PAGES || x->seg[i].first > x->seg[i].last ||
		    x->seg[i].last >= SECTS_PER_PAGE)
			return fail("internal: bad segment %u of %s", i, req_desc(x));
		if (page_busy[p])
			return fail("internal: data page %u in two requests at once", x->seg[i].page);
	}
	switch (x->op) {
	case BLKIF_OP_READ:
	case BLKIF_OP_WRITE:
		if (x->indirect) {
			int ip = ind_page_free();
			if (ip < 0 || x->nseg > SEGS_PER_IND_PAGE)
				return "internal: no indirect page";
			struct blkif_request_segment *segs = (void *)blk_page((unsigned)ip);
			for (unsigned i = 0; i < x->nseg; i++)
				segs[i] = (struct blkif_request_segment){
					.gref = page_ref(BLK_DATA0 + x->seg[i].page),
					.first_sect = x->seg[i].first, .last_sect = x->seg[i].last,
				};
			x->ind_page = (int16_t)ip;
			page_busy[ip] = 1;
			/* Linux grants the indirect pages like the data (rw). */
			gnttab_grant_ref(page_ref((unsigned)ip), d->xb.beid, page_gfn((unsigned)ip), blk_rogrant);
			u.ind.operation = BLKIF_OP_INDIRECT;
			u.ind.indirect_op = x->op;
			u.ind.nr_segments = x->nseg;
			u.ind.id = id;
			u.ind.sector_number = x->sector;
			u.ind.handle = (blkif_vdev_t)d->vdev;
			u.ind.indirect_grefs[0] = page_ref((unsigned)ip);
		} else {
			if (x->nseg > BLKIF_MAX_SEGMENTS_PER_REQUEST)
				return fail("internal: %u segments without indirect", x->nseg);
			u.rw.operation = x->op;
			u.rw.nr_segments = (uint8_t)x->nseg;
			u.rw.handle = (blkif_vdev_t)d->vdev;
			u.rw.id = id;
			u.rw.sector_number = x->sector;
			for (unsigned i = 0; i < x->nseg; i++)
				u.rw.seg[i] = (struct blkif_request_segment){
					.gref = page_ref(BLK_DATA0 + x->seg[i].page),
					.first_sect = x->seg[i].first, .last_sect = x->seg[i].last,
				};
		}
		for (unsigned i = 0; i < x->nseg; i++) {
			unsigned p = BLK_DATA0 + x->seg[i].page;
			page_busy[p] = 1;
			gnttab_grant_ref(page_ref(p), d->xb.beid, page_gfn(p), ro);
		}
		break;
	case BLKIF_OP_FLUSH_DISKCACHE:
	case BLKIF_OP_WRITE_BARRIER:
		/* An empty flush/barrier as Linux sends for REQ_PREFLUSH: no segments. */
		u.rw.operation = x->op;
		u.rw.nr_segments = 0;
		u.rw.handle = (blkif_vdev_t)d->vdev;
		u.rw.id = id;
		u.rw.sector_number = x->sector;
		x->nseg = 0;
		break;
	case BLKIF_OP_DISCARD:
		/* blkif_queue_discard_req */
		u.dis.operation = BLKIF_OP_DISCARD;
		u.dis.flag = x->discard_flag;
		u.dis.handle = (blkif_vdev_t)d->vdev;
		u.dis.id = id;
		u.dis.sector_number = x->sector;
		u.dis.nr_sectors = x->nr_sectors;
		x->nseg = 0;
		break;
	default:
		return fail("internal: op %u", x->op);
	}
	*RING_GET_REQUEST(&Q->ring, Q->ring.req_prod_pvt) = u.rw;
	Q->ring.req_prod_pvt++;
	Q->sh[slot].req = x;
	Q->sh[slot].id = id;
	Q->requests++;
	x->state = REQ_SENT;
	DBG(2, "PVHINFO blk: q%u slot %u id 0x%lx: %s\n", x->queue, slot, (unsigned long)id, req_desc(x));
	return NULL;
}

/* Publish what submit() built; notify if req_event says so (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY). */
static const char *push(struct blk_dev *d, unsigned q)
{
	struct blk_queue *Q = &d->q[q];
	int notify;
	RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&Q->ring, notify);
	uint32_t in_flight = Q->ring.req_prod_pvt - Q->ring.rsp_cons;
	if (in_flight > Q->max_in_flight)
		Q->max_in_flight = in_flight;
	DBG(2, "PVHINFO blk: q%u push req_prod %u (req_event %u, %u in flight): %s\n", q,
	    Q->ring.req_prod_pvt, Q->ring.sring->req_event, in_flight,
	    notify ? "notify" : blk_notify_always ? "notify (pvh.blknotify=always)" : "no notify");
	if (!notify && !blk_notify_always) {
		Q->not_notified++;
		return NULL;
	}
	long rc = evtchn_send(Q->port);
	if (rc != 0)
		return fail("EVTCHNOP_send(port %u) rc %ld", Q->port, rc);
	Q->notified++;
	return NULL;
}

/* One response: match it to its request, check the operation, take the grants back. */
static const char *complete(struct blk_dev *d, unsigned q, const blkif_response_t *rsp)
{
	struct blk_queue *Q = &d->q[q];
	unsigned slot = (unsigned)(rsp->id & 0xffff);
	uint16_t f;
	if (slot >= RING_SIZE(&Q->ring) || !Q->sh[slot].req || Q->sh[slot].id != rsp->id)
		return fail("q%u: response id 0x%lx (op %u status %d) matches no request in flight", q,
			    (unsigned long)rsp->id, rsp->operation, rsp->status);
	struct blk_req *x = Q->sh[slot].req;
	/* Linux checks bret.operation against the request's (the indirect_op for BLKIF_OP_INDIRECT). */
	if (rsp->operation != x->op)
		return fail("q%u: response to %s has operation %u, want %u%s", q, req_desc(x),
			    rsp->operation, x->op, x->indirect ? " (the indirect_op, as Linux checks)" : "");
	x->status = rsp->status;
	x->state = REQ_DONE;
	Q->sh[slot].req = NULL;
	Q->responses++;
	DBG(2, "PVHINFO blk: q%u slot %u id 0x%lx done: status %d\n", q, slot, (unsigned long)rsp->id,
	    rsp->status);
	/* blkif_completion: without persistent grants every grant must be free again now. */
	for (unsigned i = 0; i < x->nseg; i++) {
		unsigned p = BLK_DATA0 + x->seg[i].page;
		page_busy[p] = 0;
		if (!gnttab_end_ref(page_ref(p), &f))
			return fail("backend still maps data ref %u (flags 0x%x) after answering %s", page_ref(p), f,
				    req_desc(x));
	}
	if (x->ind_page >= 0) {
		page_busy[x->ind_page] = 0;
		if (!gnttab_end_ref(page_ref((unsigned)x->ind_page), &f))
			return fail("backend still maps indirect page ref %u (flags 0x%x) after answering %s",
				    page_ref((unsigned)x->ind_page), f, req_desc(x));
	}
	return NULL;
}

/* blkif_interrupt: take every response, then re-arm rsp_event (RING_FINAL_CHECK_FOR_RESPONSES). */
static const char *reap(struct blk_dev *d, unsigned q, unsigned *got)
{
	struct blk_queue *Q = &d->q[q];
	const char *r;
	for (;;) {
		RING_IDX rp = *(volatile RING_IDX *)&Q->ring.sring->rsp_prod, i;
		xen_rmb();	/* the responses after the index */
		if (RING_RESPONSE_PROD_OVERFLOW(&Q->ring, rp))
			return fail("q%u: rsp_prod %u is %u past rsp_cons %u (ring of %u)", q, rp,
				    rp - Q->ring.rsp_cons, Q->ring.rsp_cons, RING_SIZE(&Q->ring));
		for (i = Q->ring.rsp_cons; i != rp; i++) {
			blkif_response_t rsp;
			RING_COPY_RESPONSE(&Q->ring, i, &rsp);
			if ((r = complete(d, q, &rsp))) {
				Q->ring.rsp_cons = i + 1;
				return r;
			}
			(*got)++;
		}
		Q->ring.rsp_cons = i;
		if (i != Q->ring.req_prod_pvt) {
			int more;
			RING_FINAL_CHECK_FOR_RESPONSES(&Q->ring, more);
			if (!more)
				return NULL;
		} else {
			Q->ring.sring->rsp_event = i + 1;
			return NULL;
		}
	}
}

static int responses_ready(const void *arg)
{
	const struct blk_dev *d = arg;
	for (unsigned q = 0; q < d->nq; q++)
		if (*(volatile RING_IDX *)&d->q[q].ring.sring->rsp_prod != d->q[q].ring.rsp_cons)
			return 1;
	return 0;
}

struct hit_wait {
	uint32_t port, hits0;
};

static int port_hit(const void *arg)
{
	const struct hit_wait *w = arg;
	return evtchn_port_hits(w->port) != w->hits0;
}

/* Why nothing came back: the first queue with requests in flight. */
static const char *stuck(struct blk_dev *d)
{
	for (unsigned q = 0; q < d->nq; q++) {
		struct blk_queue *Q = &d->q[q];
		blkif_sring_t *s = Q->ring.sring;
		uint32_t in_flight = Q->ring.req_prod_pvt - Q->ring.rsp_cons;
		if (!in_flight)
			continue;
		printk("PVHINFO blk: stuck q%u: %u in flight, req_prod %u req_event %u rsp_prod %u rsp_event %u "
		       "rsp_cons %u; pushes notified %u, not notified %u (req_event); port %u upcalls %u\n", q,
		       in_flight, s->req_prod, s->req_event, s->rsp_prod, s->rsp_event, Q->ring.rsp_cons,
		       Q->notified, Q->not_notified, Q->port, evtchn_port_hits(Q->port) - Q->hits0);
		return fail("no response in %lu ms: q%u %u in flight, req_prod %u req_event %u rsp_prod %u, "
			    "notified %u/%u", (unsigned long)blk_timeout, q, in_flight, s->req_prod, s->req_event,
			    s->rsp_prod, Q->notified, Q->notified + Q->not_notified);
	}
	return "no response, nothing in flight (internal)";
}

/*
 * Runs requests r[0..n): each queue's ring is kept as full as it goes
 * (submitted in array order per queue), responses are taken as they come.
 * Returns a failure for a timeout (pvh.blktimeout without any response) or a
 * protocol violation; a response's status is only recorded (x->status).
 * Afterwards every queue used must have seen an event (upcall): the
 * backend notifies when rsp_prod passes rsp_event.
 */
static const char *blk_run(struct blk_dev *d, struct blk_req *r, unsigned n)
{
	const char *e;
	unsigned cursor[BLK_MAX_QUEUES] = { 0 }, done = 0, used = 0;
	if (!d->connected)
		return "internal: not connected";
	for (unsigned i = 0; i < n; i++) {
		r[i].state = REQ_NEW;
		r[i].status = 0x7fff;
		if (r[i].queue >= d->nq)
			return fail("internal: request %u on queue %u of %u", i, r[i].queue, d->nq);
	}
	for (unsigned q = 0; q < d->nq; q++)
		d->q[q].hits0 = evtchn_port_hits(d->q[q].port);
	uint64_t end = tsc_deadline_ms(blk_timeout);
	while (done < n) {
		for (unsigned q = 0; q < d->nq; q++) {
			struct blk_queue *Q = &d->q[q];
			unsigned built = 0;
			while (cursor[q] < n) {
				struct blk_req *x = &r[cursor[q]];
				if (x->queue != q || x->state != REQ_NEW) {
					cursor[q]++;
					continue;
				}
				if (RING_FULL(&Q->ring) || (x->indirect && ind_page_free() < 0))
					break;
				if ((e = submit(d, x)))
					return e;
				cursor[q]++;
				built++;
			}
			if (built) {
				used |= 1u << q;
				if ((e = push(d, q)))
					return e;
			}
		}
		unsigned got = 0;
		for (unsigned q = 0; q < d->nq; q++)
			if ((e = reap(d, q, &got)))
				return e;
		done += got;
		if (done >= n)
			break;
		uint64_t now = rdtsc();
		if (got) {
			end = now + blk_timeout * tsc_khz();	/* progress: a new deadline */
			continue;
		}
		if (now >= end || !wait_until(responses_ready, d, (end - now) / tsc_khz() + 1, blk_hlt, NULL)) {
			if (responses_ready(d))
				continue;
			return stuck(d);
		}
	}
	/* Every queue used must have been notified at least once. */
	for (unsigned q = 0; q < d->nq && blk_hlt; q++) {
		struct blk_queue *Q = &d->q[q];
		struct hit_wait w = { Q->port, Q->hits0 };
		if (!((used >> q) & 1) || port_hit(&w))
			continue;
		if (!wait_until(port_hit, &w, 500, blk_hlt, NULL))
			return fail("q%u: responses but no event on port %u in 500 ms (the backend must "
				    "notify when rsp_prod passes rsp_event)", q, Q->port);
	}
	return NULL;
}

/* The first request whose status is not OKAY, as a failure. */
static const char *all_okay(const struct blk_req *r, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (r[i].status != BLKIF_RSP_OKAY)
			return fail("%s: status %d (%s)", req_desc(&r[i]), r[i].status, status_name(r[i].status));
	return NULL;
}

/* One request that needs no data (flush, barrier, discard) on queue 0: its status. */
static const char *blk_simple(struct blk_dev *d, uint8_t op, uint64_t sector, uint64_t nr, int16_t *status)
{
	struct blk_req *x = &reqs[0];
	const char *r;
	memset(x, 0, sizeof(*x));
	x->op = op;
	x->sector = sector;
	x->nr_sectors = nr;
	if ((r = blk_run(d, x, 1)))
		return r;
	*status = x->status;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The data pattern                                                     */

/*
 * Every 512-byte sector holds 64 little-endian words: "PVHBLK\0\0", its
 * sector number, the seed, 60 words derived from both (base + i * K),
 * and the sum of the 63 words before. A sector therefore says which
 * sector and seed it was written for; pat_check() names what it found.
 */
#define PAT_MAGIC	0x00004b4c42485650ULL		/* "PVHBLK" */
#define POISON		0x00004e4f53494f50ULL		/* "POISON": read buffers before a read */
#define PAT_K		0x9e3779b97f4a7c15ULL

static uint64_t pat_base(uint64_t lba, uint32_t seed)
{
	uint64_t z = lba * PAT_K + seed;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void pat_fill(uint64_t *w, uint64_t lba, uint32_t seed)
{
	uint64_t v = pat_base(lba, seed), sum;
	w[0] = PAT_MAGIC;
	w[1] = lba;
	w[2] = seed;
	sum = PAT_MAGIC + lba + seed;
	for (unsigned i = 3; i < 63; i++) {
		v += PAT_K;
		w[i] = v;
		sum += v;
	}
	w[63] = sum;
}

static void poison_sector(uint64_t *w)
{
	for (unsigned i = 0; i < 64; i++)
		w[i] = POISON;
}

/*
 * NULL if the sector holds (lba, seed)'s pattern (or zeros, with
 * want_zero); else what it holds. The common case is one pass comparing
 * with the generator (the emulator on the test host makes every guest
 * instruction count); the description is worked out only on a mismatch.
 */
static const char *pat_check(const uint64_t *w, uint64_t lba, uint32_t seed, int want_zero)
{
	static char b[96];
	unsigned k, zero = 1, poison = 1;
	if (want_zero) {
		for (k = 0; k < 64 && !w[k]; k++)
			;
		if (k == 64)
			return NULL;
	} else if (w[0] == PAT_MAGIC && w[1] == lba && w[2] == seed) {
		uint64_t v = pat_base(lba, seed), sum = PAT_MAGIC + lba + seed;
		for (k = 3; k < 63; k++) {
			v += PAT_K;
			if (w[k] != v)
				break;
			sum += v;
		}
		if (k == 63 && w[63] == sum)
			return NULL;
	}
	uint64_t sum = 0;
	for (k = 0; k < 64; k++) {
		zero &= w[k] == 0;
		poison &= w[k] == POISON;
		if (k < 63)
			sum += w[k];
	}
	if (poison)
		return "the poison: nothing was read into it";
	if (want_zero)
		return w[0] == PAT_MAGIC ? "its old pattern, not zeros" : "data, not zeros";
	if (zero)
		return "zeros";
	if (w[0] == PAT_MAGIC && w[63] == sum) {
		if (w[1] != lba)
			snprintf(b, sizeof(b), "sector %lu's data (seed %lu)", (unsigned long)w[1], (unsigned long)w[2]);
		else if (w[2] != seed)
			snprintf(b, sizeof(b), "seed %lu's data, not seed %u's", (unsigned long)w[2], seed);
		else
			snprintf(b, sizeof(b), "a pattern with the right header but other words");
		return b;
	}
	if (w[0] == PAT_MAGIC)
		snprintf(b, sizeof(b), "a damaged pattern (checksum 0x%lx, want 0x%lx)", (unsigned long)w[63],
			 (unsigned long)sum);
	else
		snprintf(b, sizeof(b), "other data (first word 0x%lx)", (unsigned long)w[0]);
	return b;
}

static uint32_t blk_seed(void)
{
	return (uint32_t)opt_num("pvh.blkseed=", 1);
}

/* The region blk_rw writes and blk_verify reads: pvh.blkstart, pvh.blksectors. */
static const char *blk_region(struct blk_dev *d, uint64_t *start, uint64_t *count)
{
	*start = opt_num("pvh.blkstart=", 0);
	*count = opt_num("pvh.blksectors=", 1024);
	if (*start % SECTS_PER_PAGE || *count % SECTS_PER_PAGE || !*count)
		return fail("pvh.blkstart=%lu pvh.blksectors=%lu: want multiples of 8, count > 0",
			    (unsigned long)*start, (unsigned long)*count);
	if (*start + *count > d->sectors)
		return fail("region %lu+%lu beyond the disk's %lu sectors", (unsigned long)*start,
			    (unsigned long)*count, (unsigned long)d->sectors);
	return NULL;
}

static const char *need_writable(struct blk_dev *d)
{
	if (d->info & VDISK_READONLY)
		return fail("vbd %u is read-only (info 0x%lx)", d->vdev, (unsigned long)d->info);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Moving ranges of the disk through the data pages                    */

struct xfer {
	unsigned segs;		/* pages per request */
	int indirect;		/* as BLKIF_OP_INDIRECT */
	int spread;		/* request k on queue (k + rot) % nq, else queue 0 */
	unsigned rot;
};

/* Requests for `pages` data pages 0.. at lba (x->segs pages each); returns how many. */
static unsigned build_rw(struct blk_dev *d, uint8_t op, uint64_t lba, unsigned pages, const struct xfer *x)
{
	unsigned n = 0;
	for (unsigned p = 0; p < pages; n++) {
		struct blk_req *q = &reqs[n];
		unsigned k = pages - p < x->segs ? pages - p : x->segs;
		q->op = op;
		q->queue = x->spread ? (uint8_t)((n + x->rot) % d->nq) : 0;
		q->indirect = (uint8_t)x->indirect;
		q->nseg = (uint16_t)k;
		q->sector = lba + (uint64_t)p * SECTS_PER_PAGE;
		for (unsigned j = 0; j < k; j++)
			q->seg[j] = (struct blk_seg){ .page = (uint16_t)(p + j), .first = 0, .last = 7 };
		p += k;
	}
	return n;
}

static unsigned chunk_pages(const struct xfer *x)
{
	return BLK_DATA_PAGES / x->segs * x->segs;
}

/* Write seed's pattern over [lba, lba + nsect), nsect a multiple of 8. */
static const char *write_range(struct blk_dev *d, uint64_t lba, uint64_t nsect, uint32_t seed,
			       const struct xfer *x)
{
	const char *r;
	uint64_t pages = nsect / SECTS_PER_PAGE;
	for (uint64_t p0 = 0; p0 < pages; p0 += chunk_pages(x)) {
		unsigned np = (unsigned)(pages - p0 < chunk_pages(x) ? pages - p0 : chunk_pages(x));
		uint64_t l0 = lba + p0 * SECTS_PER_PAGE;
		for (unsigned i = 0; i < np; i++)
			for (unsigned s = 0; s < SECTS_PER_PAGE; s++)
				pat_fill((uint64_t *)(data_page(i) + s * SECT), l0 + i * SECTS_PER_PAGE + s, seed);
		unsigned n = build_rw(d, BLKIF_OP_WRITE, l0, np, x);
		if ((r = blk_run(d, reqs, n)) || (r = all_okay(reqs, n)))
			return r;
	}
	return NULL;
}

/*
 * Read [lba, lba + nsect) into poisoned pages and check every sector: seed's
 * pattern, or zeros inside [zero0, zero1). *bad counts wrong sectors; the
 * first is the failure.
 */
static const char *read_range(struct blk_dev *d, uint64_t lba, uint64_t nsect, uint32_t seed,
			      uint64_t zero0, uint64_t zero1, const struct xfer *x, uint64_t *bad)
{
	const char *r;
	static char first[150];
	uint64_t pages = nsect / SECTS_PER_PAGE;
	*bad = 0;
	first[0] = 0;
	for (uint64_t p0 = 0; p0 < pages; p0 += chunk_pages(x)) {
		unsigned np = (unsigned)(pages - p0 < chunk_pages(x) ? pages - p0 : chunk_pages(x));
		uint64_t l0 = lba + p0 * SECTS_PER_PAGE;
		for (unsigned i = 0; i < np; i++)
			for (unsigned s = 0; s < SECTS_PER_PAGE; s++)
				poison_sector((uint64_t *)(data_page(i) + s * SECT));
		unsigned n = build_rw(d, BLKIF_OP_READ, l0, np, x);
		if ((r = blk_run(d, reqs, n)) || (r = all_okay(reqs, n)))
			return r;
		for (unsigned i = 0; i < np; i++)
			for (unsigned s = 0; s < SECTS_PER_PAGE; s++) {
				uint64_t l = l0 + i * SECTS_PER_PAGE + s;
				const char *what = pat_check((const uint64_t *)(data_page(i) + s * SECT), l, seed,
							     l >= zero0 && l < zero1);
				if (!what)
					continue;
				if (!(*bad)++)
					snprintf(first, sizeof(first), "sector %lu holds %s%s", (unsigned long)l, what,
						 l >= zero0 && l < zero1 ? " (discarded)" : "");
			}
	}
	if (*bad) {
		printk("PVHINFO blk: %lu of %lu sectors wrong; first: %s\n", (unsigned long)*bad,
		       (unsigned long)nsect, first);
		return fail("%s (%lu of %lu sectors wrong)", first, (unsigned long)*bad, (unsigned long)nsect);
	}
	return NULL;
}

static void reset_counters(struct blk_dev *d)
{
	for (unsigned q = 0; q < d->nq; q++) {
		struct blk_queue *Q = &d->q[q];
		Q->requests = Q->responses = Q->notified = Q->not_notified = Q->max_in_flight = 0;
	}
}

/* ------------------------------------------------------------------ */
/* blk_info                                                             */

static const char *info_checks(struct blk_dev *d)
{
	const char *r;
	uint64_t vd;
	int dom = xen_domid();
	char want[96];
	if ((r = xb_num(d->xb.fe, "virtual-device", d->vdev, &vd)))
		return r;
	if (vd != d->vdev)
		return fail("%s/virtual-device = %lu", d->xb.fe, (unsigned long)vd);
	if (!xb_streq(d->type, "disk") && !xb_streq(d->type, "cdrom"))
		return fail("%s/device-type = \"%s\"", d->xb.fe, d->type);
	if (dom >= 0) {
		snprintf(want, sizeof(want), "/local/domain/%u/backend/vbd/%d/%u", d->xb.beid, dom, d->vdev);
		if (!xb_streq(d->xb.be, want))
			return fail("%s/backend = \"%.60s\", want %s", d->xb.fe, d->xb.be, want);
	}
	return NULL;
}

static const char *disk_checks(struct blk_dev *d)
{
	if (!d->sectors)
		return "sectors = 0";
	if (d->sector_size != 512 && d->sector_size != 4096)
		return fail("sector-size %lu, want 512 or 4096", (unsigned long)d->sector_size);
	if (!d->phys_sector_size || d->phys_sector_size % d->sector_size)
		return fail("physical-sector-size %lu is not a multiple of sector-size %lu",
			    (unsigned long)d->phys_sector_size, (unsigned long)d->sector_size);
	if (d->info & ~(uint64_t)(VDISK_CDROM | VDISK_REMOVABLE | VDISK_READONLY))
		return fail("info 0x%lx has bits beyond VDISK_CDROM|REMOVABLE|READONLY", (unsigned long)d->info);
	uint64_t b[] = { d->barrier, d->flush, d->discard, d->discard_secure, d->persistent };
	for (unsigned i = 0; i < ARRAY_SIZE(b); i++)
		if (b[i] > 1)
			return fail("a boolean feature node reads %lu", (unsigned long)b[i]);
	if (d->discard && (!d->discard_gran || d->discard_gran % 512))
		return fail("discard-granularity %lu", (unsigned long)d->discard_gran);
	return NULL;
}

/* One page at sector 0: status OKAY (contents not checked). */
static const char *one_read(struct blk_dev *d)
{
	const char *r;
	struct xfer x = { .segs = 1 };
	unsigned n = build_rw(d, BLKIF_OP_READ, 0, 1, &x);
	if ((r = blk_run(d, reqs, n)) || (r = all_okay(reqs, n)))
		return r;
	return NULL;
}

static const char *scen_blk_info(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	static char list[96];
	if ((r = blk_begin(d, list, sizeof(list))))
		return blk_end(d, r);
	if ((r = info_checks(d)) || (r = blk_connect(d, 0, 1, 0, NULL)) || (r = disk_checks(d)) ||
	    (r = one_read(d)))
		return blk_end(d, r);
	uint64_t sectors = d->sectors;
	printk("PVHINFO blk_info: vbds %s; %u (%s) backend %s: sectors %lu sector-size %lu "
	       "physical-sector-size %lu info 0x%lx; feature-barrier %lu feature-flush-cache %lu "
	       "feature-discard %lu (granularity %lu alignment %lu secure %lu) feature-persistent %lu "
	       "feature-max-indirect-segments %lu max-ring-page-order %lu multi-queue-max-queues %lu\n",
	       list, d->vdev, d->type, d->xb.be, (unsigned long)d->sectors, (unsigned long)d->sector_size,
	       (unsigned long)d->phys_sector_size, (unsigned long)d->info, (unsigned long)d->barrier,
	       (unsigned long)d->flush, (unsigned long)d->discard, (unsigned long)d->discard_gran,
	       (unsigned long)d->discard_align, (unsigned long)d->discard_secure, (unsigned long)d->persistent,
	       (unsigned long)d->max_indirect, (unsigned long)d->max_order, (unsigned long)d->max_queues);

	/* Reconnect: Closing/Closed, the backend Closed, Initialising, the whole handshake again. */
	DBG(1, "PVHINFO blk: reconnect check\n");
	if ((r = blk_teardown(d, 1)))
		return blk_end(d, fail("close: %s", keep(r)));
	if ((r = blk_connect(d, 0, 1, 0, NULL)))
		return blk_end(d, fail("reconnect: %s", keep(r)));
	if (d->sectors != sectors)
		return blk_end(d, fail("sectors %lu after reconnecting, %lu before", (unsigned long)d->sectors,
				       (unsigned long)sectors));
	if ((r = one_read(d)))
		return blk_end(d, fail("after reconnect: %s", keep(r)));
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("vbd=%u sectors=%lu sector-size=%lu info=0x%lx flush=%lu discard=%lu indirect=%lu "
		  "ring-order=%lu queues=%lu reconnect=ok", d->vdev, (unsigned long)d->sectors,
		  (unsigned long)d->sector_size, (unsigned long)d->info, (unsigned long)d->flush,
		  (unsigned long)d->discard, (unsigned long)d->max_indirect, (unsigned long)d->max_order,
		  (unsigned long)d->max_queues);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_rw                                                               */

/*
 * Sub-page segments (512-byte sectors only): one read and one write of 18
 * sectors from start + 2 in three segments, [2..7] of page 0, [0..7] of
 * page 1, [0..3] of page 2. The read must land at those offsets only (the
 * rest stays poisoned); the write (seed2) must change exactly those
 * sectors. Then the three pages are restored to seed.
 */
static const char *subpage(struct blk_dev *d, uint64_t start, uint32_t seed, uint32_t seed2)
{
	const char *r;
	static const struct blk_seg segs[3] = { { 0, 2, 7 }, { 1, 0, 7 }, { 2, 0, 3 } };
	struct blk_req *x = &reqs[0];
	const uint64_t l = start + 2;

	for (unsigned round = 0; round < 2; round++) {
		for (unsigned p = 0; p < 3; p++)
			for (unsigned s = 0; s < SECTS_PER_PAGE; s++) {
				uint64_t *w = (uint64_t *)(data_page(p) + s * SECT);
				unsigned k = p * SECTS_PER_PAGE + s;	/* sector start + k */
				if (round == 1 && k >= 2 && k < 20)
					pat_fill(w, start + k, seed2);
				else
					poison_sector(w);
			}
		memset(x, 0, sizeof(*x));
		x->op = round == 0 ? BLKIF_OP_READ : BLKIF_OP_WRITE;
		x->sector = l;
		x->nseg = 3;
		for (unsigned i = 0; i < 3; i++)
			x->seg[i] = segs[i];
		if ((r = blk_run(d, x, 1)) || (r = all_okay(x, 1)))
			return r;
		if (round == 0) {
			for (unsigned k = 0; k < 24; k++) {
				const uint64_t *w = (const uint64_t *)(data_page(k / 8) + (k % 8) * SECT);
				int in = k >= 2 && k < 20;
				const char *what = in ? pat_check(w, start + k, seed, 0)
						      : (w[0] == POISON && w[63] == POISON ? NULL : "not our poison");
				if (what)
					return fail("sub-page read %lu+18: page %u sector slot %u (%s) holds %s",
						    (unsigned long)l, k / 8, k % 8, in ? "read into" : "outside", what);
			}
		}
	}
	/* The write changed sectors [start + 2, start + 20) only. */
	struct xfer one = { .segs = 1 };
	for (unsigned p = 0; p < 3; p++)
		for (unsigned s = 0; s < SECTS_PER_PAGE; s++)
			poison_sector((uint64_t *)(data_page(p) + s * SECT));
	unsigned n = build_rw(d, BLKIF_OP_READ, start, 3, &one);
	if ((r = blk_run(d, reqs, n)) || (r = all_okay(reqs, n)))
		return r;
	for (unsigned k = 0; k < 24; k++) {
		const uint64_t *w = (const uint64_t *)(data_page(k / 8) + (k % 8) * SECT);
		const char *what = pat_check(w, start + k, k >= 2 && k < 20 ? seed2 : seed, 0);
		if (what)
			return fail("after the sub-page write %lu+18: sector %lu holds %s", (unsigned long)l,
				    (unsigned long)(start + k), what);
	}
	return write_range(d, start, 24, seed, &one);
}

static const char *scen_blk_rw(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	uint64_t start, count, bad;
	uint32_t seed = blk_seed(), seed2 = seed ^ 0x80000000u;
	int16_t st;
	const struct xfer one = { .segs = 1 }, eleven = { .segs = BLKIF_MAX_SEGMENTS_PER_REQUEST };

	if ((r = blk_begin(d, NULL, 0)) || (r = blk_connect(d, 0, 1, 0, NULL)) || (r = need_writable(d)) ||
	    (r = blk_region(d, &start, &count)))
		return blk_end(d, r);
	if (!d->flush)
		return blk_end(d, "backend does not offer feature-flush-cache");
	reset_counters(d);
	/* 1. seed2 with one request per page (nr_segments 1): the ring stays full. */
	if ((r = write_range(d, start, count, seed2, &one)))
		return blk_end(d, fail("1-segment write: %s", keep(r)));
	uint32_t in_flight_1 = d->q[0].max_in_flight;
	if ((r = read_range(d, start, count, seed2, 0, 0, &one, &bad)))
		return blk_end(d, fail("1-segment read-back: %s", keep(r)));
	/* 2. seed with 11-segment requests, flush, read back with 11-segment requests. */
	if ((r = write_range(d, start, count, seed, &eleven)))
		return blk_end(d, fail("11-segment write: %s", keep(r)));
	if ((r = blk_simple(d, BLKIF_OP_FLUSH_DISKCACHE, 0, 0, &st)))
		return blk_end(d, r);
	if (st != BLKIF_RSP_OKAY)
		return blk_end(d, fail("flush: status %d (%s)", st, status_name(st)));
	if ((r = read_range(d, start, count, seed, 0, 0, &eleven, &bad)))
		return blk_end(d, fail("11-segment read-back: %s", keep(r)));
	/* 3. Segments that are parts of pages. */
	const char *sub = "skipped (sector-size 4096)";
	if (d->sector_size == 512 && count >= 24) {
		if ((r = subpage(d, start, seed, seed2)))
			return blk_end(d, r);
		if ((r = blk_simple(d, BLKIF_OP_FLUSH_DISKCACHE, 0, 0, &st)))
			return blk_end(d, r);
		if (st != BLKIF_RSP_OKAY)
			return blk_end(d, fail("second flush: status %d (%s)", st, status_name(st)));
		sub = "ok";
	}
	uint32_t reqs_total = d->q[0].requests, ring = RING_SIZE(&d->q[0].ring);
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("region=%lu+%lu seed=%u ring=%u in_flight=%u requests=%u flush=ok subpage=%s",
		  (unsigned long)start, (unsigned long)count, seed, ring, in_flight_1, reqs_total, sub);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_verify                                                           */

static const char *scen_blk_verify(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	uint64_t start, count, bad;
	uint32_t seed = blk_seed();
	const struct xfer eleven = { .segs = BLKIF_MAX_SEGMENTS_PER_REQUEST };
	if ((r = blk_begin(d, NULL, 0)) || (r = blk_connect(d, 0, 1, 0, NULL)) ||
	    (r = blk_region(d, &start, &count)) || (r = read_range(d, start, count, seed, 0, 0, &eleven, &bad)))
		return blk_end(d, r);
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("region=%lu+%lu seed=%u verified", (unsigned long)start, (unsigned long)count, seed);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_multipage                                                        */

static const char *scen_blk_multipage(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	uint64_t start, count, bad;
	uint32_t seed = blk_seed();
	const struct xfer one = { .segs = 1 };
	if ((r = blk_begin(d, NULL, 0)) || (r = blk_connect(d, 2, 1, 0, NULL)) || (r = need_writable(d)) ||
	    (r = blk_region(d, &start, &count)))
		return blk_end(d, r);
	reset_counters(d);
	if ((r = write_range(d, start, count, seed, &one)) ||
	    (r = read_range(d, start, count, seed, 0, 0, &one, &bad)))
		return blk_end(d, r);
	uint32_t ring = RING_SIZE(&d->q[0].ring), in_flight = d->q[0].max_in_flight;
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("ring-page-order=2 ring=%u in_flight=%u region=%lu+%lu", ring, in_flight,
		  (unsigned long)start, (unsigned long)count);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_indirect                                                         */

static const char *scen_blk_indirect(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	uint64_t start, count, bad;
	uint32_t seed = blk_seed();
	if ((r = blk_begin(d, NULL, 0)) || (r = blk_connect(d, 0, 1, 0, NULL)) || (r = need_writable(d)) ||
	    (r = blk_region(d, &start, &count)))
		return blk_end(d, r);
	if (!d->max_indirect)
		return blk_end(d, "backend does not offer feature-max-indirect-segments");
	uint64_t segs = opt_num("pvh.blkindirect=", 32);
	if (segs > d->max_indirect)
		segs = d->max_indirect;
	if (segs > BLK_MAX_SEGS)
		segs = BLK_MAX_SEGS;
	if (!segs)
		segs = 1;
	struct xfer ind = { .segs = (unsigned)segs, .indirect = 1 };
	reset_counters(d);
	if ((r = write_range(d, start, count, seed, &ind)))
		return blk_end(d, fail("indirect write: %s", keep(r)));
	if ((r = read_range(d, start, count, seed, 0, 0, &ind, &bad)))
		return blk_end(d, fail("indirect read-back: %s", keep(r)));
	uint32_t n = d->q[0].requests, in_flight = d->q[0].max_in_flight;
	uint64_t max = d->max_indirect;
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("segments=%lu max-indirect=%lu requests=%u in_flight=%u region=%lu+%lu", (unsigned long)segs,
		  (unsigned long)max, n, in_flight, (unsigned long)start, (unsigned long)count);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_discard                                                          */

static const char *scen_blk_discard(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	uint64_t start, count, bad;
	uint32_t seed = blk_seed();
	int16_t st;
	const struct xfer eleven = { .segs = BLKIF_MAX_SEGMENTS_PER_REQUEST };
	if ((r = blk_begin(d, NULL, 0)) || (r = blk_connect(d, 0, 1, 0, NULL)) || (r = need_writable(d)) ||
	    (r = blk_region(d, &start, &count)))
		return blk_end(d, r);
	if (!d->discard)
		return blk_end(d, "backend does not offer feature-discard");
	if (!d->discard_gran || d->discard_gran % SECT || d->discard_align % SECT)
		return blk_end(d, fail("discard-granularity %lu / discard-alignment %lu: not in whole sectors",
				       (unsigned long)d->discard_gran, (unsigned long)d->discard_align));
	/*
	 * After the region, one guard page on, the first sector on the
	 * granularity grid (offset by the alignment): at least 64 KiB, whole
	 * granules. Written first (guard pages included), then discarded.
	 */
	uint64_t g = d->discard_gran / SECT, a = (d->discard_align / SECT) % g;
	uint64_t base = start + count + SECTS_PER_PAGE;
	uint64_t d0 = base + (a + g - base % g) % g;
	uint64_t dl = (128 + g - 1) / g * g;
	uint64_t w0 = d0 / SECTS_PER_PAGE * SECTS_PER_PAGE - SECTS_PER_PAGE;
	uint64_t w1 = (d0 + dl + SECTS_PER_PAGE - 1) / SECTS_PER_PAGE * SECTS_PER_PAGE + SECTS_PER_PAGE;
	if (w1 > d->sectors)
		return blk_end(d, fail("disk of %lu sectors too small: discard test needs %lu..%lu",
				       (unsigned long)d->sectors, (unsigned long)w0, (unsigned long)w1));
	DBG(1, "PVHINFO blk: discard %lu+%lu (granularity %lu alignment %lu), written %lu..%lu\n",
	    (unsigned long)d0, (unsigned long)dl, (unsigned long)d->discard_gran,
	    (unsigned long)d->discard_align, (unsigned long)w0, (unsigned long)w1);
	if ((r = write_range(d, w0, w1 - w0, seed, &eleven)) ||
	    (r = read_range(d, w0, w1 - w0, seed, 0, 0, &eleven, &bad)))
		return blk_end(d, fail("before the discard: %s", keep(r)));
	if ((r = blk_simple(d, BLKIF_OP_DISCARD, d0, dl, &st)))
		return blk_end(d, r);
	if (st != BLKIF_RSP_OKAY)
		return blk_end(d, fail("discard %lu+%lu: status %d (%s)", (unsigned long)d0, (unsigned long)dl, st,
				       status_name(st)));
	if ((r = read_range(d, w0, w1 - w0, seed, d0, d0 + dl, &eleven, &bad)))
		return blk_end(d, fail("after the discard: %s", keep(r)));
	uint64_t gran = d->discard_gran, align = d->discard_align;
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("discarded=%lu+%lu granularity=%lu alignment=%lu zeros=ok neighbours=ok", (unsigned long)d0,
		  (unsigned long)dl, (unsigned long)gran, (unsigned long)align);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_mq                                                               */

static const char *scen_blk_mq(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	uint64_t start, count, bad;
	uint32_t seed = blk_seed();
	if ((r = blk_begin(d, NULL, 0)) || (r = blk_connect(d, 0, 2, 0, NULL)) || (r = need_writable(d)) ||
	    (r = blk_region(d, &start, &count)))
		return blk_end(d, r);
	if (vcpu_op(VCPUOP_is_up, 1, NULL) == -XEN_ENOENT)
		printk("PVHINFO blk_mq: one vCPU (Linux would use one queue; both are driven from vCPU 0)\n");
	reset_counters(d);
	/* Page k written through queue k % 2, read back through the other one. */
	struct xfer wr = { .segs = 1, .spread = 1, .rot = 0 }, rd = { .segs = 1, .spread = 1, .rot = 1 };
	if ((r = write_range(d, start, count, seed, &wr)))
		return blk_end(d, fail("write on both queues: %s", keep(r)));
	if ((r = read_range(d, start, count, seed, 0, 0, &rd, &bad)))
		return blk_end(d, fail("read-back through the other queue: %s", keep(r)));
	uint32_t n0 = d->q[0].requests, n1 = d->q[1].requests;
	uint32_t f0 = d->q[0].max_in_flight, f1 = d->q[1].max_in_flight;
	uint32_t p0 = d->q[0].port, p1 = d->q[1].port;
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("queues=2 requests=%u,%u in_flight=%u,%u ports=%u,%u region=%lu+%lu", n0, n1, f0, f1, p0, p1,
		  (unsigned long)start, (unsigned long)count);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_early_init                                                       */

static const char *scen_blk_early_init(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	uint64_t start, count, bad;
	uint32_t seed = blk_seed();
	unsigned st = 0;
	const struct xfer one = { .segs = 1 };
	int restart = opt_word("pvh.blkearly=", "restart");
	if ((r = blk_begin(d, NULL, 0)))
		return blk_end(d, r);
	if (restart) {
		/* Backend Closed first; then Initialising and at once Initialised. */
		if ((r = blk_teardown(d, 0)))
			return blk_end(d, fail("close first: %s", keep(r)));
		if ((r = xb_switch_state(&d->xb, XenbusStateInitialising)))
			return blk_end(d, r);
	}
	if ((r = blk_connect(d, 0, 1, 1, &st)))
		return blk_end(d, fail("%s (backend was %u when we wrote Initialised)", keep(r), st));
	char trail[48];
	snprintf(trail, sizeof(trail), "%s", d->xb.trail);
	/* Then proceeds: 8 pages written and read back. */
	if ((r = need_writable(d)) || (r = blk_region(d, &start, &count)))
		return blk_end(d, r);
	uint64_t n = count < 64 ? count : 64;
	if ((r = write_range(d, start, n, seed, &one)) || (r = read_range(d, start, n, seed, 0, 0, &one, &bad)))
		return blk_end(d, r);
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("backend_state_at_initialised=%u (%s) then %s%s io=ok", st, xb_state_name(st), trail,
		  restart ? " (after a close)" : "");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_err                                                              */

static const char *scen_blk_err(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	uint64_t start, count, bad;
	uint32_t seed = blk_seed();
	int want;
	const struct xfer one = { .segs = 1 };
	size_t len;
	if (!cmdline_opt("pvh.blkexpect=", &len) || opt_word("pvh.blkexpect=", "error"))
		want = BLKIF_RSP_ERROR;
	else if (opt_word("pvh.blkexpect=", "eopnotsupp"))
		want = BLKIF_RSP_EOPNOTSUPP;
	else if (opt_word("pvh.blkexpect=", "okay"))
		want = BLKIF_RSP_OKAY;
	else
		return "pvh.blkexpect: want error, eopnotsupp or okay";
	if ((r = blk_begin(d, NULL, 0)) || (r = blk_connect(d, 0, 1, 0, NULL)) ||
	    (r = blk_region(d, &start, &count)))
		return blk_end(d, r);
	uint64_t sector = opt_num("pvh.blksector=", start);
	if (sector + SECTS_PER_PAGE > d->sectors)
		return blk_end(d, fail("pvh.blksector=%lu: beyond the disk's %lu sectors", (unsigned long)sector,
				       (unsigned long)d->sectors));
	/* One page of seed's pattern at `sector`. */
	for (unsigned s = 0; s < SECTS_PER_PAGE; s++)
		pat_fill((uint64_t *)(data_page(0) + s * SECT), sector + s, seed);
	unsigned n = build_rw(d, BLKIF_OP_WRITE, sector, 1, &one);
	if ((r = blk_run(d, reqs, n)))
		return blk_end(d, r);
	int got = reqs[0].status;
	if (got != want)
		return blk_end(d, fail("write at sector %lu: status %d (%s), want %d (%s)", (unsigned long)sector, got,
				       status_name(got), want, status_name(want)));
	/* Still working: a read of the region's first page; after an OKAY write, the page itself. */
	n = build_rw(d, BLKIF_OP_READ, start, 1, &one);
	if ((r = blk_run(d, reqs, n)) || (r = all_okay(reqs, n)))
		return blk_end(d, fail("after the write: %s", keep(r)));
	if (want == BLKIF_RSP_OKAY && (r = read_range(d, sector, SECTS_PER_PAGE, seed, 0, 0, &one, &bad)))
		return blk_end(d, r);
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("write at %lu: status %d (%s) as expected, then read ok", (unsigned long)sector, got,
		  status_name(got));
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_scribble                                                         */

/*
 * The report of the backend's xenbus_dev_fatal: "<errno> <reason>" at
 * error/<its nodename>/error in the backend domain's home (Linux's
 * xenbus_client.c error_path and xenbus_va_dev_error; the nodename is <be>
 * after /local/domain/<id>/), e.g. /local/domain/0/error/backend/vbd/1/51712/error.
 * Into out; "" if there is none (or we may not read it).
 */
static void be_fatal_error(const struct blk_dev *d, char *out, size_t n)
{
	char dir[192];
	const char *nodename = NULL;
	out[0] = 0;
	for (const char *p = d->xb.be; *p && !nodename; p++)
		if (!strncmp(p, "/backend/", 9))
			nodename = p;
	if (!nodename)
		return;
	snprintf(dir, sizeof(dir), "%.*s/error%s", (int)(nodename - d->xb.be), d->xb.be, nodename);
	if (xb_get(dir, "error") == 1)
		snprintf(out, n, "%s", xb_val);
}

/*
 * Garbage over queue 0's shared ring: every request slot 0xa5, and req_prod
 * 0x10000 past what we produced, far more than the ring holds. Linux's
 * blkback checks RING_REQUEST_PROD_OVERFLOW before it reads a slot
 * (__do_block_io_op, "Frontend provided bogus ring requests"): a fatal
 * ring error, not a bad request it could answer. Then the notification.
 */
static const char *scribble(struct blk_dev *d, RING_IDX *bogus)
{
	struct blk_queue *Q = &d->q[0];
	blkif_sring_t *s = Q->ring.sring;
	for (unsigned i = 0; i < RING_SIZE(&Q->ring); i++)
		memset((void *)&s->ring[i], 0xa5, sizeof(s->ring[i]));
	xen_wmb();	/* the slots before the index, as a real producer would */
	*bogus = Q->ring.req_prod_pvt + 0x10000;
	*(volatile RING_IDX *)&s->req_prod = *bogus;
	xen_mb();
	long rc = evtchn_send(Q->port);
	if (rc != 0)
		return fail("EVTCHNOP_send(port %u) rc %ld", Q->port, rc);
	return NULL;
}

/* A checksummed write of `seed` over the region, a flush, the read-back. */
static const char *write_flush_read(struct blk_dev *d, uint64_t start, uint64_t count, uint32_t seed)
{
	const char *r;
	uint64_t bad;
	int16_t st;
	const struct xfer eleven = { .segs = BLKIF_MAX_SEGMENTS_PER_REQUEST };
	if ((r = write_range(d, start, count, seed, &eleven)))
		return fail("write: %s", keep(r));
	if ((r = blk_simple(d, BLKIF_OP_FLUSH_DISKCACHE, 0, 0, &st)))
		return fail("flush: %s", keep(r));
	if (st != BLKIF_RSP_OKAY)
		return fail("flush: status %d (%s)", st, status_name(st));
	if ((r = read_range(d, start, count, seed, 0, 0, &eleven, &bad)))
		return fail("read-back: %s", keep(r));
	return NULL;
}

/* Both devices' ends, keeping the first failure. */
static const char *scribble_end(struct blk_dev *a, struct blk_dev *b, const char *r)
{
	r = blk_end(b, r);
	return blk_end(a, r);
}

/*
 * Two disks, A (pvh.blkdev, else the lowest) and B (pvh.blkdev2, else the
 * next): both connected, each written, flushed and read back (A seed, B
 * seed + 1); then A's ring scribbled over (see scribble()). The backend
 * must fail A through xenbus (its state Closing or Closed within
 * pvh.blktimeout, with an error node) and leave B Connected; A is closed
 * (its ring grants revocable: unmapped) and set Initialising again (the
 * backend offers InitWait, a reconnection Linux allows); B then writes
 * seed + 2, flushes and reads it back.
 */
static const char *scen_blk_scribble(void)
{
	struct blk_dev *a = &dev, *b = &dev_b;
	const char *r;
	uint64_t start, count;
	uint32_t seed = blk_seed();
	unsigned st, bst;
	RING_IDX bogus = 0;
	static char err[96], list[96], trail[48];

	b->known = 0;
	if ((r = blk_begin(a, list, sizeof(list))))
		return blk_end(a, r);
	if ((r = blk_find(b, list, sizeof(list), opt_num("pvh.blkdev2=", 0), a->vdev)) || (r = blk_prepare(b)))
		return scribble_end(a, b, fail("disk B: %s", keep(r)));
	if ((r = blk_connect(a, 0, 1, 0, NULL)) || (r = need_writable(a)) || (r = blk_region(a, &start, &count)))
		return scribble_end(a, b, fail("disk A (%u): %s", a->vdev, keep(r)));
	if ((r = blk_connect(b, 0, 1, 0, NULL)) || (r = need_writable(b)) || (r = blk_region(b, &start, &count)))
		return scribble_end(a, b, fail("disk B (%u): %s", b->vdev, keep(r)));
	if (!a->flush || !b->flush)
		return scribble_end(a, b, "backend does not offer feature-flush-cache");
	if ((r = write_flush_read(a, start, count, seed)))
		return scribble_end(a, b, fail("disk A (%u) before: %s", a->vdev, keep(r)));
	if ((r = write_flush_read(b, start, count, seed + 1)))
		return scribble_end(a, b, fail("disk B (%u) before: %s", b->vdev, keep(r)));

	if ((r = scribble(a, &bogus)))
		return scribble_end(a, b, r);
	a->connected = 0;	/* the ring is garbage now: no more requests on it */
	if ((r = xb_wait_be(&a->xb, (1u << XenbusStateClosing) | (1u << XenbusStateClosed), 0,
			    "Closing after the scribble", &st)))
		return scribble_end(a, b, fail("disk A (%u) req_prod %u: %s", a->vdev, bogus, keep(r)));
	snprintf(trail, sizeof(trail), "%s", a->xb.trail);
	be_fatal_error(a, err, sizeof(err));
	if (!err[0])
		return scribble_end(a, b, fail("disk A (%u): backend %s but no error node under error/", a->vdev,
					       xb_state_name(st)));
	if ((r = xb_be_state(&b->xb, &bst)))
		return scribble_end(a, b, r);
	if (bst != XenbusStateConnected)
		return scribble_end(a, b, fail("disk B (%u): backend state %u (%s) after disk A's fault, want Connected",
					       b->vdev, bst, xb_state_name(bst)));
	/* A: Closing, Closed (the backend's Closed; its ring pages back), Initialising, InitWait. */
	if ((r = blk_teardown(a, 1)))
		return scribble_end(a, b, fail("disk A (%u) close after the fault: %s", a->vdev, keep(r)));

	if ((r = write_flush_read(b, start, count, seed + 2)))
		return scribble_end(a, b, fail("disk B (%u) after disk A's fault: %s", b->vdev, keep(r)));
	unsigned avdev = a->vdev, bvdev = b->vdev;
	if ((r = scribble_end(a, b, NULL)))
		return r;
	/* One line of at most 160 bytes (main.c's note): the error node's start. */
	pass_note("a=%u req_prod=%u backend=%s (seen %s) error=\"%.24s\" reinit=InitWait b=%u region=%lu+%lu "
		  "seed=%u io=ok", avdev, bogus, xb_state_name(st), trail, err, bvdev, (unsigned long)start,
		  (unsigned long)count, seed + 2);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_kill9 (issue 13 item 5): the host kills pvh in the middle of it  */

/*
 * Round s = 1, 2, ...: pvh.blkkill9pages pages (default 8) of sequence s's
 * pattern (seed s: every sector says it belongs to round s) at slot
 * (s - 1) % slots of the region (pvh.blkstart, pvh.blksectors; slots =
 * region pages / pages per round), as one-page requests (the ring keeps
 * several in flight), "PVHKILL9 written <s>" once they are answered, then
 * BLKIF_OP_FLUSH_DISKCACHE; once the flush is answered OKAY, "PVHKILL9
 * flushed <s>" on the console (the test kills pvh after a random one of
 * these lines, so in a flush or in a round's writes). blkif.h: a flush
 * answered OKAY means every write completed before it is on stable storage;
 * so the host, having killed pvh with SIGKILL at any moment, must find
 * every sector of every reported round's slot holding that round's pattern
 * (or a later round's in the same slot: written, not yet reported).
 * Wrapping round the region overwrites old rounds, so a stale page shows.
 * Stops after pvh.blkkill9rounds rounds (default 1000000) and passes: the
 * test kills it long before.
 */
static const char *scen_blk_kill9(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	uint64_t start, count;
	int16_t st;
	const struct xfer one = { .segs = 1 };
	uint64_t pages = opt_num("pvh.blkkill9pages=", 8), rounds = opt_num("pvh.blkkill9rounds=", 1000000);
	if (!pages || pages > BLK_DATA_PAGES)
		return fail("pvh.blkkill9pages=%lu: want 1..%u", (unsigned long)pages, BLK_DATA_PAGES);
	if ((r = blk_begin(d, NULL, 0)) || (r = blk_connect(d, 0, 1, 0, NULL)) || (r = need_writable(d)) ||
	    (r = blk_region(d, &start, &count)))
		return blk_end(d, r);
	if (!d->flush)
		return blk_end(d, "backend does not offer feature-flush-cache");
	/*
	 * Waits spin: what this scenario checks is the disk, from the host, not
	 * the events' timing (blk_run's 500 ms bound on the upcall after the
	 * responses fails spuriously on a heavily loaded host).
	 */
	blk_hlt = 0;
	uint64_t slots = count / SECTS_PER_PAGE / pages;
	if (!slots)
		return blk_end(d, fail("region of %lu sectors holds no round of %lu pages", (unsigned long)count,
				       (unsigned long)pages));
	printk("PVHKILL9 start region=%lu+%lu pages=%lu slots=%lu\n", (unsigned long)start, (unsigned long)count,
	       (unsigned long)pages, (unsigned long)slots);
	for (uint64_t s = 1; s <= rounds; s++) {
		uint64_t lba = start + (s - 1) % slots * pages * SECTS_PER_PAGE;
		for (unsigned i = 0; i < pages; i++)
			for (unsigned k = 0; k < SECTS_PER_PAGE; k++)
				pat_fill((uint64_t *)(data_page(i) + k * SECT), lba + i * SECTS_PER_PAGE + k, (uint32_t)s);
		unsigned n = build_rw(d, BLKIF_OP_WRITE, lba, (unsigned)pages, &one);
		if ((r = blk_run(d, reqs, n)) || (r = all_okay(reqs, n)))
			return blk_end(d, fail("round %lu write: %s", (unsigned long)s, keep(r)));
		/* Not durable yet: the host may kill pvh during the flush that follows. */
		printk("PVHKILL9 written %lu\n", (unsigned long)s);
		if ((r = blk_simple(d, BLKIF_OP_FLUSH_DISKCACHE, 0, 0, &st)))
			return blk_end(d, fail("round %lu flush: %s", (unsigned long)s, keep(r)));
		if (st != BLKIF_RSP_OKAY)
			return blk_end(d, fail("round %lu flush: status %d (%s)", (unsigned long)s, st, status_name(st)));
		printk("PVHKILL9 flushed %lu\n", (unsigned long)s);
	}
	if ((r = blk_end(d, NULL)))
		return r;
	pass_note("rounds=%lu pages=%lu slots=%lu", (unsigned long)rounds, (unsigned long)pages, (unsigned long)slots);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* blk_hotplug (issue 12): vbds the toolstack adds while we run         */

/* The vbd numbers in device/vbd now (none if it is absent): how many. */
static unsigned hp_list(unsigned *out, unsigned max)
{
	uint32_t len;
	const char *names = xenstore_directory("device/vbd", &len);
	if (!names)
		return 0;
	static char copy[256];
	if (len >= sizeof(copy))
		len = sizeof(copy) - 1;
	memcpy(copy, names, len);
	copy[len] = 0;
	unsigned n = 0;
	for (uint32_t i = 0; i < len && n < max; i += (uint32_t)strlen(copy + i) + 1) {
		uint64_t v;
		if (copy[i] && !xb_parse_u64(copy + i, &v) && v <= 0xffffffffu)
			out[n++] = (unsigned)v;
	}
	return n;
}

/*
 * Waits (until the TSC deadline `end`) for a vbd that was not there at boot
 * and is new, its frontend at Initialising (Linux's xenbus_probe_frontend
 * sees the directory appear through its watch on "device"): its number.
 */
static const char *hp_wait_new(const unsigned *boot, unsigned nboot, uint64_t end, unsigned *vdev)
{
	const char *r = NULL, *p, *t;
	if ((r = xenstore_connect()))
		return r;
	if (xenstore_watch("device/vbd", "pvh-hotplug"))
		return fail("watch device/vbd: %s", xenstore_error());
	for (;;) {
		unsigned now[8], n = hp_list(now, 8), found = 0;
		for (unsigned i = 0; i < n && !found; i++) {
			int old = 0;
			for (unsigned j = 0; j < nboot; j++)
				old |= boot[j] == now[i];
			char dir[48];
			uint64_t st;
			snprintf(dir, sizeof(dir), "device/vbd/%u", now[i]);
			if (old || xb_get(dir, "state") != 1 || xb_parse_u64(xb_val, &st) || st != XenbusStateInitialising ||
			    xb_get(dir, "backend") != 1)
				continue;
			*vdev = now[i];
			found = 1;
		}
		if (found)
			break;
		uint64_t tnow = rdtsc();
		if (tnow >= end) {
			r = "no new vbd appeared in device/vbd before the deadline (pvh.hotplug_timeout)";
			break;
		}
		uint64_t left = (end - tnow) / tsc_khz() + 1;
		if (xenstore_wait_watch(&p, &t, left < 250 ? left : 250) < 0) {
			r = fail("xenstore: %s", xenstore_error());
			break;
		}
	}
	xenstore_unwatch("device/vbd", "pvh-hotplug");
	return r;
}

/*
 * The toolstack detaches the vbd: the backend goes to Closing (or, if it
 * gave up, Closed or away). Close as Linux's blkfront does on a backend's
 * Closing (blkback_changed -> blkfront_closing -> xenbus_frontend_closed):
 * straight to Closed; once the backend is Closed (or its directory gone)
 * the rings come back.
 */
/*
 * Waits (pvh.blktimeout) until the backend is Closed or its directory is
 * gone: once Closed and offline, the backend driver removes it, and a node
 * under dom0's backend tree that does not exist reads as EACCES to us (its
 * nearest existing parent is not ours to read), or ENOENT.
 */
static const char *hp_wait_closed(struct blk_dev *d)
{
	char path[160];
	const char *r = NULL, *p, *t;
	snprintf(path, sizeof(path), "%s/state", d->xb.be);
	if (xenstore_watch(path, "pvh-hotplug-be"))
		return fail("watch %s: %s", path, xenstore_error());
	uint64_t end = tsc_deadline_ms(blk_timeout);
	for (;;) {
		int got = xb_get(d->xb.be, "state");
		uint64_t st;
		if (got == 0 || (got < 0 && xb_streq(xenstore_error(), "EACCES")))
			break;
		if (got < 0) {
			r = fail("read %s: %s", path, xenstore_error());
			break;
		}
		if (!xb_parse_u64(xb_val, &st) && st == XenbusStateClosed)
			break;
		uint64_t now = rdtsc();
		if (now >= end) {
			r = fail("backend state %s after %lu ms waiting for Closed", xb_val, (unsigned long)blk_timeout);
			break;
		}
		uint64_t left = (end - now) / tsc_khz() + 1;
		if (xenstore_wait_watch(&p, &t, left < 250 ? left : 250) < 0) {
			r = fail("xenstore: %s", xenstore_error());
			break;
		}
	}
	xenstore_unwatch(path, "pvh-hotplug-be");
	return r;
}

static const char *hp_close(struct blk_dev *d, uint64_t end)
{
	const char *r, *r2;
	unsigned gone = (1u << XenbusStateClosing) | (1u << XenbusStateClosed) | (1u << XenbusStateUnknown);
	uint64_t now = rdtsc();
	d->xb.timeout_ms = now < end ? (end - now) / tsc_khz() + 1 : 1;
	r = xb_wait_be(&d->xb, gone, 0, "the toolstack's Closing", NULL);
	d->xb.timeout_ms = blk_timeout;
	if (r)
		return keep(r);
	d->connected = 0;
	r = xb_switch_state(&d->xb, XenbusStateClosed);
	if (!r)
		r = hp_wait_closed(d);
	r = keep(r);
	r2 = rings_release(d);
	return r ? r : r2;
}

/*
 * blk_hotplug: the vbds present at boot noted; then, pvh.hotplug_rounds
 * times (default 2): wait for a new vbd (pvh.hotplug_timeout ms in all,
 * default 300000), connect it, read the pattern blk_rw writes (pvh.blkseed,
 * pvh.blkstart, pvh.blksectors), wait for the toolstack to detach it and
 * close it. PASS once every round did.
 */
static const char *scen_blk_hotplug(void)
{
	struct blk_dev *d = &dev;
	const char *r;
	unsigned boot[8], nboot, vdev = 0, rounds = (unsigned)opt_num("pvh.hotplug_rounds=", 2);
	uint64_t start = 0, count = 0, bad;
	uint32_t seed = blk_seed();
	const struct xfer eleven = { .segs = BLKIF_MAX_SEGMENTS_PER_REQUEST };
	uint64_t end = tsc_deadline_ms(opt_num("pvh.hotplug_timeout=", 300000));
	blk_settings();
	if ((r = xenstore_connect()) || (r = gnttab_frontend_ready()))
		return r;
	blk_hlt = !xen_setup();
	nboot = hp_list(boot, 8);
	printk("PVHINFO blk_hotplug: %u vbd(s) at boot; waiting for the toolstack to add one\n", nboot);
	for (unsigned round = 1; round <= rounds; round++) {
		unsigned ring0 = d->ring0;
		memset(d, 0, sizeof(*d));
		d->ring0 = ring0;
		blk_settings();
		char list[96];
		if ((r = hp_wait_new(boot, nboot, end, &vdev)) || (r = blk_find(d, list, sizeof(list), vdev, 0)) ||
		    (r = blk_prepare(d)) || (r = blk_connect(d, 0, 1, 0, NULL)) || (r = blk_region(d, &start, &count)) ||
		    (r = read_range(d, start, count, seed, 0, 0, &eleven, &bad)))
			return fail("round %u: %s", round, keep(r));
		printk("PVHINFO blk_hotplug: round %u: vbd %u connected, %lu sectors, pattern seed %u verified\n", round,
		       vdev, (unsigned long)d->sectors, seed);
		if ((r = hp_close(d, end)))
			return fail("round %u: vbd %u: %s", round, vdev, keep(r));
		printk("PVHINFO blk_hotplug: round %u: vbd %u closed (backend trail %s)\n", round, vdev, d->xb.trail);
	}
	pass_note("rounds=%u vdev=%u region=%lu+%lu seed=%u", rounds, vdev, (unsigned long)start, (unsigned long)count, seed);
	return NULL;
}

/* Run only when named (see testguest/README.md). */
const struct scenario blk_scenarios[] = {
	{ "blk_info", scen_blk_info },
	{ "blk_rw", scen_blk_rw },
	{ "blk_verify", scen_blk_verify },
	{ "blk_multipage", scen_blk_multipage },
	{ "blk_indirect", scen_blk_indirect },
	{ "blk_discard", scen_blk_discard },
	{ "blk_mq", scen_blk_mq },
	{ "blk_early_init", scen_blk_early_init },
	{ "blk_err", scen_blk_err },
	{ "blk_scribble", scen_blk_scribble },
	{ "blk_kill9", scen_blk_kill9 },
	{ "blk_hotplug", scen_blk_hotplug },
};
const size_t nr_blk_scenarios = ARRAY_SIZE(blk_scenarios);

/* ------------------------------------------------------------------ */
/* For hostile.c: disk A takes malformed requests, disk B stays healthy */

static uint64_t hb_start, hb_count;

/*
 * Disks A and B as blk_scribble finds them, both connected (one queue, a
 * one-page ring); B written, flushed and read back with `seed`'s pattern.
 * Returns a failure, or NULL; *vdev_a and *vdev_b name them.
 */
const char *blk_hostile_open(uint32_t seed, unsigned *vdev_a, unsigned *vdev_b)
{
	struct blk_dev *a = &dev, *b = &dev_b;
	const char *r;
	static char list[96];
	b->known = 0;
	if ((r = blk_begin(a, list, sizeof(list))))
		return blk_end(a, r);
	if ((r = blk_find(b, list, sizeof(list), opt_num("pvh.blkdev2=", 0), a->vdev)) || (r = blk_prepare(b)))
		return scribble_end(a, b, fail("disk B: %s", keep(r)));
	if ((r = blk_connect(a, 0, 1, 0, NULL)))
		return scribble_end(a, b, fail("disk A (%u): %s", a->vdev, keep(r)));
	if ((r = blk_connect(b, 0, 1, 0, NULL)) || (r = need_writable(b)) || (r = blk_region(b, &hb_start, &hb_count)))
		return scribble_end(a, b, fail("disk B (%u): %s", b->vdev, keep(r)));
	if (!b->flush)
		return scribble_end(a, b, "disk B: backend does not offer feature-flush-cache");
	if ((r = write_flush_read(b, hb_start, hb_count, seed)))
		return scribble_end(a, b, fail("disk B (%u) before: %s", b->vdev, keep(r)));
	*vdev_a = a->vdev;
	*vdev_b = b->vdev;
	return NULL;
}

static int hb_answered(const void *arg)
{
	const struct blk_queue *Q = arg;
	return *(volatile RING_IDX *)&Q->ring.sring->rsp_prod == Q->ring.req_prod_pvt;
}

/*
 * One batch of malformed requests on disk A's ring, built slot by slot as a
 * hostile frontend would (none goes through submit()), each kind one that
 * Linux's blkback answers with an error rather than treating as a broken
 * ring (dispatch_rw_block_io, xen_blkbk_parse_indirect, dispatch_other_io):
 * no segments, more than BLKIF_MAX_SEGMENTS_PER_REQUEST, first_sect past
 * last_sect, last_sect past the page, overlapping segments of one granted
 * page, grant references not granted to the backend (huge, empty, granted to
 * another domain), unknown operations, indirect requests with too many
 * segments or a garbage indirect page, discards past the disk. Each must be
 * answered exactly once, with its id, and status OKAY, ERROR or EOPNOTSUPP
 * (blkif.h BLKIF_RSP_*), within pvh.blktimeout. rnd() gives random words;
 * *sent counts the requests.
 */
const char *blk_hostile_batch(uint64_t (*rnd)(void), unsigned *sent)
{
	struct blk_dev *a = &dev;
	struct blk_queue *Q = &a->q[0];
	static uint8_t seen[16];
	unsigned n = 1 + (unsigned)(rnd() % 16);
	uint64_t id0 = 0x4057000000000000ULL | (uint64_t)(a->next_id & 0xffff) << 8;
	if (!a->connected)
		return "internal: disk A not connected";
	uint64_t tb = rdtsc();
	a->next_id++;
	/* Data pages 0..3, writable grants the backend may map (and must unmap). */
	for (unsigned p = 0; p < 4; p++)
		gnttab_grant_ref(page_ref(BLK_DATA0 + p), a->xb.beid, page_gfn(BLK_DATA0 + p), 0);
	/* An indirect page of garbage (the descriptors a request of up to 64 segments reads), granted too. */
	for (unsigned i = 0; i < 64; i++)
		((uint64_t *)blk_page(BLK_IND0))[i] = rnd();
	gnttab_grant_ref(page_ref(BLK_IND0), a->xb.beid, page_gfn(BLK_IND0), 1);
	for (unsigned k = 0; k < n; k++) {
		union {
			blkif_request_t rw;
			blkif_request_indirect_t ind;
			blkif_request_discard_t dis;
		} u;
		uint64_t w = rnd();
		memset(&u, 0, sizeof(u));
		u.rw.operation = (w & 1) ? BLKIF_OP_WRITE : BLKIF_OP_READ;
		u.rw.handle = (blkif_vdev_t)a->vdev;
		u.rw.id = id0 | k;
		u.rw.sector_number = (w >> 8) & 1 ? rnd() : (w >> 16) % 64;
		unsigned nseg = 1 + (unsigned)((w >> 24) % BLKIF_MAX_SEGMENTS_PER_REQUEST);
		for (unsigned s = 0; s < BLKIF_MAX_SEGMENTS_PER_REQUEST; s++)
			u.rw.seg[s] = (struct blkif_request_segment){
				.gref = page_ref(BLK_DATA0 + (unsigned)((w >> 32) + s) % 4), .first_sect = 0, .last_sect = 7,
			};
		switch ((w >> 4) % 9) {
		case 0:	/* no segments for a read or write */
			nseg = 0;
			break;
		case 1:	/* more than a direct request holds: the count is a uint8_t */
			nseg = BLKIF_MAX_SEGMENTS_PER_REQUEST + 1 + (unsigned)((w >> 40) % 244);
			break;
		case 2:	/* first_sect after last_sect */
			u.rw.seg[(w >> 40) % nseg].first_sect = 5;
			u.rw.seg[(w >> 40) % nseg].last_sect = 2;
			break;
		case 3:	/* a sector past the page */
			u.rw.seg[(w >> 40) % nseg].last_sect = (uint8_t)(8 + (w >> 48) % 248);
			break;
		case 4:	/* overlapping segments: one page, the same sectors, several times */
			for (unsigned s = 0; s < nseg; s++)
				u.rw.seg[s] = (struct blkif_request_segment){
					.gref = page_ref(BLK_DATA0), .first_sect = 2, .last_sect = 6 };
			break;
		case 5:	/* references the backend was not granted */
			switch ((w >> 40) % 3) {
			case 0: u.rw.seg[0].gref = (grant_ref_t)rnd() | 0x10000000u; break;	/* past any table */
			case 1: u.rw.seg[0].gref = 470; break;	/* an empty entry (hostile.c keeps 470 free) */
			default: u.rw.seg[0].gref = 471; break;	/* granted to another domain (hostile.c) */
			}
			break;
		case 6:	/* an operation blkif.h does not define */
			u.rw.operation = (uint8_t)(9 + (w >> 40) % 247);
			break;
		case 7:	/* indirect: too many segments, or garbage segment descriptors */
			u.ind.operation = BLKIF_OP_INDIRECT;
			u.ind.indirect_op = (w & 1) ? BLKIF_OP_WRITE : BLKIF_OP_READ;
			u.ind.nr_segments = (w >> 40) & 1 ? (uint16_t)(4096 + (w >> 41) % 60000) : (uint16_t)(1 + (w >> 41) % 8);
			u.ind.id = id0 | k;
			u.ind.handle = (blkif_vdev_t)a->vdev;
			u.ind.sector_number = (w >> 16) % 64;
			u.ind.indirect_grefs[0] = page_ref(BLK_IND0);
			u.ind.indirect_grefs[1] = (grant_ref_t)rnd();
			break;
		default: /* a discard past the end of the disk (A need not offer discard) */
			u.dis.operation = BLKIF_OP_DISCARD;
			u.dis.sector_number = a->sectors + (w >> 40);
			u.dis.nr_sectors = rnd();
			u.dis.id = id0 | k;
			u.dis.handle = (blkif_vdev_t)a->vdev;
			break;
		}
		if (u.rw.operation != BLKIF_OP_INDIRECT && u.rw.operation != BLKIF_OP_DISCARD)
			u.rw.nr_segments = (uint8_t)nseg;
		*RING_GET_REQUEST(&Q->ring, Q->ring.req_prod_pvt) = u.rw;
		Q->ring.req_prod_pvt++;
	}
	memset(seen, 0, sizeof(seen));
	xen_wmb();
	Q->ring.sring->req_prod = Q->ring.req_prod_pvt;
	xen_mb();
	long rc = evtchn_send(Q->port);
	if (rc != 0)
		return fail("EVTCHNOP_send(port %u) rc %ld", Q->port, rc);
	*sent += n;
	uint64_t t0 = rdtsc();
	DBG(1, "PVHINFO blk: %u malformed requests built in %lu ms\n", n, (unsigned long)((t0 - tb) / tsc_khz()));
	if (!hb_answered(Q) && !wait_until(hb_answered, Q, blk_timeout, blk_hlt, NULL) && !hb_answered(Q))
		return fail("disk A: %u of %u malformed requests unanswered after %lu ms (rsp_prod %u, req_prod %u)",
			    Q->ring.req_prod_pvt - *(volatile RING_IDX *)&Q->ring.sring->rsp_prod, n,
			    (unsigned long)blk_timeout, Q->ring.sring->rsp_prod, Q->ring.req_prod_pvt);
	DBG(1, "PVHINFO blk: %u malformed requests answered in %lu ms\n", n, (unsigned long)((rdtsc() - t0) / tsc_khz()));
	xen_rmb();
	for (RING_IDX i = Q->ring.rsp_cons; i != Q->ring.req_prod_pvt; i++) {
		blkif_response_t rsp;
		RING_COPY_RESPONSE(&Q->ring, i, &rsp);
		uint64_t k = rsp.id - id0;
		if (k >= n || seen[k]++)
			return fail("disk A: response id 0x%lx is no request of the batch, or a second answer",
				    (unsigned long)rsp.id);
		if (rsp.status != BLKIF_RSP_OKAY && rsp.status != BLKIF_RSP_ERROR && rsp.status != BLKIF_RSP_EOPNOTSUPP)
			return fail("disk A: status %d for a malformed request", rsp.status);
	}
	Q->ring.rsp_cons = Q->ring.req_prod_pvt;
	Q->ring.sring->rsp_event = Q->ring.rsp_cons + 1;
	/* Answered: nothing of ours may still be mapped (blkif_completion). */
	uint16_t f;
	for (unsigned p = 0; p < 4; p++)
		if (!gnttab_end_ref(page_ref(BLK_DATA0 + p), &f))
			return fail("disk A: backend still maps data ref %u after answering", page_ref(BLK_DATA0 + p));
	if (!gnttab_end_ref(page_ref(BLK_IND0), &f))
		return fail("disk A: backend still maps the indirect page after answering");
	return NULL;
}

/*
 * The end: A's ring scribbled over (see scribble(); its backend must close
 * it through xenbus), then B's pattern read back; both disconnected.
 */
const char *blk_hostile_close(uint32_t seed, unsigned *a_state)
{
	struct blk_dev *a = &dev, *b = &dev_b;
	const char *r;
	RING_IDX bogus;
	uint64_t bad;
	const struct xfer eleven = { .segs = BLKIF_MAX_SEGMENTS_PER_REQUEST };
	if ((r = scribble(a, &bogus)))
		return scribble_end(a, b, r);
	a->connected = 0;
	if ((r = xb_wait_be(&a->xb, (1u << XenbusStateClosing) | (1u << XenbusStateClosed), 0,
			    "Closing after the scribble", a_state)))
		return scribble_end(a, b, fail("disk A (%u) req_prod %u: %s", a->vdev, bogus, keep(r)));
	if ((r = read_range(b, hb_start, hb_count, seed, 0, 0, &eleven, &bad)))
		return scribble_end(a, b, fail("disk B (%u) read-back: %s", b->vdev, keep(r)));
	return scribble_end(a, b, NULL);
}
