/*
 * Host-side test of the test guest's block frontend (blkfront.c): the
 * frontend code is included as is and talks to an in-process toy backend
 * that follows Linux's xen-blkback (xenbus states, BACK_RING macros from
 * the same xen/io/ring.h, requests per xen/io/blkif.h), a toy XenStore
 * with watches and a toy v1 grant table that tracks what the backend has
 * mapped. The backend is strict about what the frontend writes (node
 * names, protocol, segments, handles, grants) and records the first
 * violation; faults can be switched on to check the frontend's failure
 * reasons. Not a backend implementation: a RAM disk, one process.
 *
 *   make -C testguest hosttest
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../xenbus_front.c"
#include "../blkfront.c"

/* ------------------------------------------------------------------ */
/* The toy backend (Linux xen-blkback's frontend_changed and dispatch)  */

/*
 * Two toy devices: toys[0] is xvda (51712), the disk every scenario uses;
 * toys[1], xvdb (51728), is a cdrom without a backend unless
 * toy_create_pair() makes it a second disk (blk_scribble). `toy` is the
 * current one: main's configuration, and each device in turn in
 * backend_step.
 */
#define FE (toy.fe)
#define BE (toy.be)
#define VDEV (toy.vdev)

struct toy_dev {
	char fe[64], be[64];
	unsigned vdev;
	int present;			/* a backend serves it */
	/* configuration */
	unsigned max_order, max_queues, max_indirect, sector_size, flush, discard, discard_gran;
	uint64_t sectors;
	unsigned info;
	/* faults */
	int strict_closed;		/* from Closed, ignore Initialised (wants Initialising first) */
	int slow_initwait;		/* start Initialising; InitWait only after this many steps */
	int echo_indirect;		/* respond to indirect requests with BLKIF_OP_INDIRECT */
	int no_notify;			/* never send events */
	int no_req_event;		/* never re-arm req_event (no RING_FINAL_CHECK_FOR_REQUESTS) */
	int leak_grant;			/* keep data pages mapped after responding */
	int wrong_id;			/* answer the first request with a wrong id */
	int discard_noop;		/* discard answers OKAY but leaves the data */
	int ignore_overflow;		/* an overflowing req_prod: stop serving, say nothing */
	int fatal_all;			/* an overflowing req_prod fails every device */
	uint64_t err_sector;		/* writes covering it fail ... */
	int err_status;			/* ... with this status (0: off) */
	/* state */
	unsigned state;
	int fe_changed;
	unsigned order, nq;
	blkif_back_ring_t ring[BLK_MAX_QUEUES];
	evtchn_port_t port[BLK_MAX_QUEUES];
	uint32_t ring_refs[BLK_MAX_QUEUES][1u << BLK_MAX_ORDER];
	uint8_t *disk;
	unsigned long requests, ops[8], max_segs, faults;
};
static struct toy_dev toys[2];
static struct toy_dev *toyp = &toys[0];
#define toy (*toyp)

/* The frontend wrote a state node: which device's. */
#define TOY_ON_WRITE(path) do { \
		for (unsigned k_ = 0; k_ < 2; k_++) \
			if (toys[k_].fe[0] && !strncmp(path, toys[k_].fe, strlen(toys[k_].fe)) && \
			    !strcmp(path + strlen(toys[k_].fe), "/state")) \
				toys[k_].fe_changed = 1; \
	} while (0)

#define SCENARIOS blk_scenarios
#define NR_SCENARIOS nr_blk_scenarios
#include "toy_xen.h"

static void be_write(const char *key, unsigned long v)
{
	char s[32];
	snprintf(s, sizeof(s), "%lu", v);
	kv_set(be_path(key), s);
}

static void disconnect(void)
{
	for (unsigned q = 0; q < toy.nq; q++)
		for (unsigned i = 0; i < (1u << toy.order); i++)
			unmap(toy.ring_refs[q][i]);
	toy.nq = 0;
}

/* connect_ring + connect: read and check the frontend's nodes, map the rings, publish the disk. */
static void connect(void)
{
	const char *v;
	unsigned order = 0, nq = 1;
	if ((v = fe_node("ring-page-order")))
		order = (unsigned)atoi(v);
	if ((v = fe_node("multi-queue-num-queues")))
		nq = (unsigned)atoi(v);
	if (order > toy.max_order || nq > toy.max_queues || !nq) {
		TOY_ERR("frontend wants order %u queues %u", order, nq);
		return;
	}
	if (fe_node("ring-page-order") && order == 0)
		TOY_ERR("ring-page-order 0 written (Linux writes it only for more than one page)");
	if (nq == 1 && fe_node("multi-queue-num-queues"))
		TOY_ERR("multi-queue-num-queues 1 written (Linux writes it only for more queues)");
	if (!(v = fe_node("protocol")) || strcmp(v, "x86_64-abi"))
		TOY_ERR("protocol \"%s\"", v ? v : "(none)");
	if (!(v = fe_node("feature-persistent")) || strcmp(v, "0"))
		TOY_ERR("feature-persistent \"%s\"", v ? v : "(none)");
	if (nq > 1 && (fe_node("ring-ref") || fe_node("event-channel") || fe_node("ring-ref0")))
		TOY_ERR("top-level ring-ref/event-channel with %u queues", nq);
	toy.order = order;
	toy.nq = nq;
	for (unsigned q = 0; q < nq; q++) {
		char dir[16], k[48];
		snprintf(dir, sizeof(dir), nq > 1 ? "queue-%u/" : "", q);
		uint8_t *first = NULL;
		for (unsigned i = 0; i < (1u << order); i++) {
			if (order == 0)
				snprintf(k, sizeof(k), "%sring-ref", dir);
			else
				snprintf(k, sizeof(k), "%sring-ref%u", dir, i);
			if (!(v = fe_node(k))) {
				TOY_ERR("no %s", k);
				return;
			}
			toy.ring_refs[q][i] = (uint32_t)atoi(v);
			uint8_t *p = map(toy.ring_refs[q][i], 1);
			if (!p)
				return;
			if (!first)
				first = p;
			else if (p != first + i * PAGE_SIZE)
				TOY_ERR("toy limitation: ring pages not contiguous");
		}
		if (order > 0) {
			snprintf(k, sizeof(k), "%sring-ref", dir);
			if (fe_node(k))
				TOY_ERR("both ring-ref and ring-ref0.. written");
		}
		snprintf(k, sizeof(k), "%sevent-channel", dir);
		if (!(v = fe_node(k))) {
			TOY_ERR("no %s", k);
			return;
		}
		toy.port[q] = (evtchn_port_t)atoi(v);
		if (toy.port[q] >= NPORTS || !port_used[toy.port[q]])
			TOY_ERR("event-channel %u is not an allocated port", toy.port[q]);
		BACK_RING_INIT(&toy.ring[q], (blkif_sring_t *)first, PAGE_SIZE << order);
	}
	/* Linux blkback's connect(): the features and the disk, then Connected. */
	be_write("feature-flush-cache", toy.flush);
	be_write("feature-discard", toy.discard);
	if (toy.discard) {
		be_write("discard-granularity", toy.discard_gran);
		be_write("discard-alignment", 0);
	}
	be_write("feature-barrier", 0);
	be_write("feature-persistent", 0);
	be_write("sectors", (unsigned long)toy.sectors);
	be_write("info", toy.info);
	be_write("sector-size", toy.sector_size);
	be_write("physical-sector-size", toy.sector_size);
	be_set_state(XenbusStateConnected);
}

/* frontend_changed (xen-blkback/xenbus.c, in toy_xen.h), tolerant of skipped states unless strict_closed. */
static int connects_on(unsigned fe)
{
	(void)fe;	/* Initialised or Connected */
	return !(toy.state == XenbusStateClosed && toy.strict_closed);
}

static int16_t rw(const blkif_request_t *req, uint8_t op, const struct blkif_request_segment *segs, unsigned nseg,
		  uint64_t sector, unsigned long *mapped, unsigned *nmapped)
{
	uint64_t s = sector;
	int16_t status = BLKIF_RSP_OKAY;
	(void)req;
	for (unsigned i = 0; i < nseg; i++) {
		const struct blkif_request_segment *g = &segs[i];
		if (g->first_sect > g->last_sect || g->last_sect > 7) {
			TOY_ERR("segment %u: sectors %u..%u", i, g->first_sect, g->last_sect);
			return BLKIF_RSP_ERROR;
		}
		unsigned n = (unsigned)(g->last_sect - g->first_sect + 1);
		if (s + n > toy.sectors)
			return BLKIF_RSP_ERROR;
		uint8_t *p = map(g->gref, op == BLKIF_OP_READ);
		if (!p)
			return BLKIF_RSP_ERROR;
		mapped[(*nmapped)++] = g->gref;
		if (toy.err_status && op == BLKIF_OP_WRITE && toy.err_sector >= s && toy.err_sector < s + n)
			status = (int16_t)toy.err_status;
		else if (op == BLKIF_OP_READ)
			memcpy(p + g->first_sect * 512, toy.disk + s * 512, n * 512);
		else
			memcpy(toy.disk + s * 512, p + g->first_sect * 512, n * 512);
		s += n;
	}
	return status;
}

/*
 * An overflowing req_prod (Linux's __do_block_io_op: "Frontend provided
 * bogus ring requests"): the device fails as pvh fails it, xenbus_dev_fatal
 * (the error node under error/<nodename>, Closing); the ring is no longer
 * served (not Connected), unmapped when the frontend closes.
 */
static void fail_device(const char *why)
{
	char p[160];
	toy.faults++;
	snprintf(p, sizeof(p), "/local/domain/0/error/backend/vbd/1/%u/error", toy.vdev);
	kv_set(p, why);
	be_set_state(XenbusStateClosing);
}

static void ring_fatal(unsigned q, RING_IDX rp)
{
	char why[96];
	if (toy.ignore_overflow) {
		toy.state = XenbusStateUnknown;	/* stops serving, the store still says Connected */
		return;
	}
	snprintf(why, sizeof(why), "5 q%u: req_prod %u is %u past rsp_prod %u", q, rp, rp - toy.ring[q].rsp_prod_pvt,
		 toy.ring[q].rsp_prod_pvt);
	if (toy.fatal_all) {
		struct toy_dev *cur = toyp;
		for (unsigned k = 0; k < 2; k++)
			if (toys[k].present && toys[k].state == XenbusStateConnected) {
				toyp = &toys[k];
				fail_device(why);
			}
		toyp = cur;
		return;
	}
	fail_device(why);
}

static void serve(unsigned q)
{
	blkif_back_ring_t *ring = &toy.ring[q];
	for (;;) {
		RING_IDX rc = ring->req_cons, rp = ring->sring->req_prod;
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (RING_REQUEST_PROD_OVERFLOW(ring, rp)) {
			ring_fatal(q, rp);
			return;
		}
		while (rc != rp) {
			blkif_request_t req;
			RING_COPY_REQUEST(ring, rc, &req);
			ring->req_cons = ++rc;
			toy.requests++;
			toy.ops[req.operation & 7]++;
			unsigned long mapped[BLK_MAX_SEGS + 1];
			unsigned nmapped = 0;
			uint64_t id = req.id;
			uint8_t rop = req.operation;
			int16_t st = BLKIF_RSP_OKAY;
			switch (req.operation) {
			case BLKIF_OP_READ:
			case BLKIF_OP_WRITE:
				if (req.handle != VDEV)
					TOY_ERR("handle %u", req.handle);
				if (!req.nr_segments || req.nr_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST) {
					TOY_ERR("nr_segments %u", req.nr_segments);
					st = BLKIF_RSP_ERROR;
					break;
				}
				if (req.nr_segments > toy.max_segs)
					toy.max_segs = req.nr_segments;
				st = rw(&req, req.operation, req.seg, req.nr_segments, req.sector_number, mapped, &nmapped);
				break;
			case BLKIF_OP_INDIRECT: {
				blkif_request_indirect_t ind;
				memcpy(&ind, &req, sizeof(ind));
				id = ind.id;
				rop = toy.echo_indirect ? BLKIF_OP_INDIRECT : ind.indirect_op;
				if (!toy.max_indirect || ind.nr_segments > toy.max_indirect || !ind.nr_segments ||
				    (ind.indirect_op != BLKIF_OP_READ && ind.indirect_op != BLKIF_OP_WRITE) ||
				    ind.handle != VDEV) {
					TOY_ERR("indirect: op %u segs %u handle %u", ind.indirect_op, ind.nr_segments,
						ind.handle);
					st = BLKIF_RSP_ERROR;
					break;
				}
				if (ind.nr_segments > toy.max_segs)
					toy.max_segs = ind.nr_segments;
				struct blkif_request_segment *segs = map(ind.indirect_grefs[0], 0);
				if (!segs) {
					st = BLKIF_RSP_ERROR;
					break;
				}
				mapped[nmapped++] = ind.indirect_grefs[0];
				st = rw(&req, ind.indirect_op, segs, ind.nr_segments, ind.sector_number, mapped, &nmapped);
				break;
			}
			case BLKIF_OP_FLUSH_DISKCACHE:
				st = toy.flush ? BLKIF_RSP_OKAY : BLKIF_RSP_EOPNOTSUPP;
				break;
			case BLKIF_OP_DISCARD: {
				blkif_request_discard_t dis;
				memcpy(&dis, &req, sizeof(dis));
				id = dis.id;
				uint64_t g = toy.discard_gran / 512;
				if (!toy.discard) {
					st = BLKIF_RSP_EOPNOTSUPP;
				} else if (dis.sector_number % g || dis.nr_sectors % g ||
					   dis.sector_number + dis.nr_sectors > toy.sectors || dis.handle != VDEV) {
					TOY_ERR("discard %lu+%lu (granularity %lu) handle %u",
						(unsigned long)dis.sector_number, (unsigned long)dis.nr_sectors,
						(unsigned long)g, dis.handle);
					st = BLKIF_RSP_ERROR;
				} else if (!toy.discard_noop) {
					memset(toy.disk + dis.sector_number * 512, 0, dis.nr_sectors * 512);
				}
				break;
			}
			default:
				st = BLKIF_RSP_EOPNOTSUPP;
			}
			/* xen_blkbk_unmap_and_respond: unmap, then the response. */
			if (!toy.leak_grant)
				for (unsigned i = 0; i < nmapped; i++)
					unmap((uint32_t)mapped[i]);
			blkif_response_t *rsp = RING_GET_RESPONSE(ring, ring->rsp_prod_pvt);
			rsp->id = toy.wrong_id ? id ^ 0x40 : id;
			toy.wrong_id = 0;
			rsp->operation = rop;
			rsp->status = st;
			ring->rsp_prod_pvt++;
		}
		int notify, more = 0;
		RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(ring, notify);
		if (notify && !toy.no_notify)
			hits[toy.port[q]]++;
		if (toy.no_req_event)
			return;
		RING_FINAL_CHECK_FOR_REQUESTS(ring, more);
		if (!more)
			return;
	}
}

static unsigned long steps;

static void device_step(void)
{
	if (toy.slow_initwait && toy.state == XenbusStateInitialising && !--toy.slow_initwait) {
		be_set_state(XenbusStateInitWait);
		toy.fe_changed = 1;	/* look at the frontend again, as blkback does on its own change */
	}
	if (toy.fe_changed) {
		toy.fe_changed = 0;
		frontend_changed();
	}
	/* Serve a queue when notified (or, with no_req_event, only then). */
	for (unsigned q = 0; q < toy.nq && toy.state == XenbusStateConnected; q++)
		if (kicked[toy.port[q]]) {
			kicked[toy.port[q]] = 0;
			serve(q);
		}
}

static void backend_step(void)
{
	struct toy_dev *cur = toyp;
	steps++;
	for (unsigned k = 0; k < 2; k++)
		if (toys[k].present) {
			toyp = &toys[k];
			device_step();
		}
	toyp = cur;
}

static void toy_names(struct toy_dev *t, unsigned vdev)
{
	t->vdev = vdev;
	snprintf(t->fe, sizeof(t->fe), HOME "/device/vbd/%u", vdev);
	snprintf(t->be, sizeof(t->be), "/local/domain/0/backend/vbd/1/%u", vdev);
}

/* The current toy device made anew (configuration and disk kept), its backend at InitWait. */
static void toy_device_fresh(unsigned vdev)
{
	uint8_t *disk = toy.disk;
	struct toy_dev keep = toy;
	memset(&toy, 0, sizeof(toy));
	toy_names(&toy, vdev);
	toy.present = 1;
	toy.max_order = keep.max_order;
	toy.max_queues = keep.max_queues;
	toy.max_indirect = keep.max_indirect;
	toy.sector_size = keep.sector_size;
	toy.flush = keep.flush;
	toy.discard = keep.discard;
	toy.discard_gran = keep.discard_gran;
	toy.sectors = keep.sectors;
	toy.disk = disk ? disk : calloc(toy.sectors, 512);
	char v[16];
	snprintf(v, sizeof(v), "%u", vdev);
	kv_set(fe_path("backend"), BE);
	kv_set(fe_path("backend-id"), "0");
	kv_set(fe_path("virtual-device"), v);
	kv_set(fe_path("device-type"), "disk");
	kv_set(fe_path("state"), "1");
	kv_set(be_path("frontend"), FE);
	be_write("max-ring-page-order", toy.max_order);
	be_write("multi-queue-max-queues", toy.max_queues);
	if (toy.max_indirect)
		be_write("feature-max-indirect-segments", toy.max_indirect);
	be_set_state(XenbusStateInitWait);
}

/* A new boot's grant table, event channels, XenStore and frontend view. */
static void toy_boot(void)
{
	memset(gt, 0, sizeof(gt));
	memset(port_used, 0, sizeof(port_used));
	memset(kicked, 0, sizeof(kicked));
	nkv = 0;
	nev = 0;
	memset(watches, 0, sizeof(watches));
	dev.known = dev_b.known = 0;
	dev.rings = dev_b.rings = 0;
	dev.connected = dev_b.connected = 0;
	toyp = &toys[0];
}

/* A fresh xvda as the toolstack creates it, the backend at InitWait (or Initialising); xvdb a cdrom without a backend. */
static void toy_create(void)
{
	toy_boot();
	toy_device_fresh(51712);
	toys[1].present = 0;
	toys[1].fe[0] = 0;
	kv_set(HOME "/device/vbd/51728/device-type", "cdrom");
	kv_set(HOME "/device/vbd/51728/backend", "/local/domain/0/backend/vbd/1/51728");
	kv_set(HOME "/device/vbd/51728/backend-id", "0");
}

/* Two disks, xvda and xvdb, with xvda's configuration (each its own data). */
static void toy_create_pair(void)
{
	toy_boot();
	toy_device_fresh(51712);
	struct toy_dev *a = &toys[0], *b = &toys[1];
	uint8_t *bdisk = b->disk && b->sectors == a->sectors ? b->disk : NULL;
	if (!bdisk)
		free(b->disk);
	*b = *a;
	b->disk = bdisk;
	toyp = b;
	toy_device_fresh(51728);
	toyp = a;
}

static void toy_defaults(uint64_t sectors, unsigned sector_size)
{
	free(toy.disk);
	memset(&toy, 0, sizeof(toy));
	toy_names(&toy, 51712);
	toy.max_order = 4;
	toy.max_queues = 4;
	toy.max_indirect = 256;
	toy.sector_size = sector_size;
	toy.flush = 1;
	toy.discard = 1;
	toy.discard_gran = 4096;
	toy.sectors = sectors;
}

/* ------------------------------------------------------------------ */
/* Running scenarios                                                   */

int main(int argc, char **argv)
{
	verbose = argc > 1 && !strcmp(argv[1], "-v");

	/* The good backend: every scenario passes, in one "boot" and across boots. */
	toy_defaults(8192, 512);
	toy_create();
	expect("blk_info", "pvh.blkdebug=1", NULL);
	expect("blk_rw", "pvh.blkseed=7", NULL);
	printf("     toy: %lu requests, max segments %lu, flushes %lu\n", toy.requests, toy.max_segs,
	       toy.ops[BLKIF_OP_FLUSH_DISKCACHE]);
	expect("blk_verify", "pvh.blkseed=7", NULL);
	expect("blk_verify", "pvh.blkseed=8", "seed 7's data, not seed 8's");
	expect("blk_multipage", "pvh.blkseed=7", NULL);
	expect("blk_indirect", "pvh.blkseed=7", NULL);
	expect("blk_indirect", "pvh.blkseed=7 pvh.blkindirect=100", NULL);
	expect("blk_discard", "pvh.blkseed=7", NULL);
	expect("blk_mq", "pvh.blkseed=7", NULL);
	expect("blk_early_init", "pvh.blkseed=7", NULL);
	expect("blk_early_init", "pvh.blkseed=7 pvh.blkearly=restart", NULL);
	expect("blk_err", "pvh.blkexpect=okay pvh.blksector=2000 pvh.blkseed=7", NULL);
	expect("blk_verify", "pvh.blkseed=7", NULL);
	/* Second boot: the data is still there, the handshake starts afresh. */
	toy_create();
	expect("blk_verify", "pvh.blkseed=7", NULL);
	expect("blk_rw", "pvh.blkseed=9 pvh.blkstart=4096 pvh.blksectors=2048 pvh.blkrogrant=1", NULL);
	expect("blk_verify", "pvh.blkseed=9 pvh.blkstart=4096 pvh.blksectors=2048", NULL);
	expect("blk_verify", "pvh.blkseed=7 pvh.blkstart=4096 pvh.blksectors=8",
	       "sector 4096 holds seed 9's data, not seed 7's");
	/* What the data check reports: a misplaced sector, a damaged one. */
	memcpy(toy.disk + 4100 * 512, toy.disk + 4104 * 512, 512);
	expect("blk_verify", "pvh.blkseed=9 pvh.blkstart=4096 pvh.blksectors=2048",
	       "sector 4100 holds sector 4104's data (seed 9) (1 of 2048");
	toy.disk[4097 * 512 + 100] ^= 1;
	expect("blk_verify", "pvh.blkseed=9 pvh.blkstart=4096 pvh.blksectors=2048", "sector 4097 holds a damaged pattern (checksum");
	/* A boot that finds the backend Connected to a stale frontend: reset first. */
	toy_create();
	kv_set(fe_path("state"), "4");
	toy.state = XenbusStateConnected;
	kv_set(be_path("state"), "4");
	expect("blk_info", "", NULL);

	/* Host errors and statuses. */
	toy_create();
	toy.err_sector = 5000;
	toy.err_status = BLKIF_RSP_ERROR;
	expect("blk_err", "pvh.blkexpect=error pvh.blksector=4996", NULL);
	expect("blk_err", "pvh.blksector=4996", NULL);
	expect("blk_err", "pvh.blkexpect=okay pvh.blksector=4996", "status -1 (BLKIF_RSP_ERROR), want 0");
	expect("blk_err", "pvh.blkexpect=maybe", "pvh.blkexpect: want");
	toy.err_status = BLKIF_RSP_EOPNOTSUPP;
	expect("blk_err", "pvh.blkexpect=eopnotsupp pvh.blksector=4996", NULL);
	toy.err_status = 0;

	/* 4096-byte sectors: no sub-page segments. */
	toy_defaults(8192, 4096);
	toy_create();
	expect("blk_info", "", NULL);
	expect("blk_rw", "", NULL);

	/* What a backend may lack. */
	toy_defaults(8192, 512);
	toy.max_order = 0;
	toy.max_queues = 1;
	toy.max_indirect = 0;
	toy.discard = 0;
	toy.flush = 0;
	toy_create();
	expect("blk_multipage", "", "max-ring-page-order 0, need 2");
	expect("blk_mq", "", "multi-queue-max-queues 1, need 2");
	expect("blk_indirect", "", "does not offer feature-max-indirect-segments");
	expect("blk_discard", "", "does not offer feature-discard");
	expect("blk_rw", "", "does not offer feature-flush-cache");
	expect("blk_info", "", NULL);
	toy_defaults(1024, 512);
	toy_create();
	expect("blk_discard", "", "too small");
	expect("blk_rw", "pvh.blksectors=2048", "beyond the disk");

	/* Backend bugs the frontend must name. */
	toy_defaults(8192, 512);
	toy_create();
	toy.discard_noop = 1;
	expect("blk_discard", "pvh.blktimeout=300", "holds its old pattern, not zeros (discarded)");
	toy_create();
	toy.echo_indirect = 1;
	expect("blk_indirect", "pvh.blktimeout=300", "the indirect_op");
	toy_create();
	toy.no_notify = 1;
	expect("blk_verify", "pvh.blktimeout=300", "no event on port");
	toy_create();
	toy.leak_grant = 1;
	expect("blk_verify", "pvh.blktimeout=300", "still maps data ref");
	toy_create();
	toy.no_req_event = 1;
	expect("blk_verify", "pvh.blktimeout=300", "no response in 300 ms");
	toy_create();
	toy.no_req_event = 1;
	expect("blk_rw", "pvh.blktimeout=300 pvh.blknotify=always", NULL);
	toy_create();
	toy.wrong_id = 1;
	expect("blk_verify", "pvh.blktimeout=300", "matches no request in flight");
	toy_create();
	toy.state = XenbusStateInitialising;
	kv_set(be_path("state"), "1");
	expect("blk_info", "pvh.blktimeout=300", "waiting for InitWait");
	/* A backend reaching InitWait late: Linux's order waits; an early frontend does not. */
	toy_create();
	toy.state = XenbusStateInitialising;
	kv_set(be_path("state"), "1");
	toy.slow_initwait = 2000;
	expect("blk_early_init", "pvh.blkseed=7", NULL);
	toy_create();
	toy.state = XenbusStateInitialising;
	kv_set(be_path("state"), "1");
	toy.slow_initwait = 2000;
	expect("blk_info", "", NULL);
	/* A backend that wants Initialising after Closed (pvh's XenbusHandshake today). */
	toy_create();
	toy.strict_closed = 1;
	expect("blk_early_init", "pvh.blkearly=restart pvh.blktimeout=300", "waiting for Connected (seen 6)");

	/* Two disks: a ring scribbled over fails that device alone (xenbus fatal), the other goes on. */
	toy_defaults(8192, 512);
	toy_create_pair();
	expect("blk_scribble", "pvh.blkseed=3", NULL);
	CHECK(toys[0].faults == 1 && toys[1].faults == 0, "blk_scribble: xvda failed once (%lu), xvdb never (%lu)",
	      toys[0].faults, toys[1].faults);
	CHECK(toys[1].ops[BLKIF_OP_FLUSH_DISKCACHE] == 2, "blk_scribble: xvdb flushed before and after (%lu)",
	      toys[1].ops[BLKIF_OP_FLUSH_DISKCACHE]);
	/* xvdb holds seed 5 (blkseed + 2, after the fault), xvda seed 3 and connects again. */
	expect("blk_verify", "pvh.blkdev=51728 pvh.blkseed=5", NULL);
	expect("blk_verify", "pvh.blkseed=3", NULL);
	expect("blk_scribble", "pvh.blkseed=3 pvh.blkdev=51728 pvh.blkdev2=51712", NULL);
	CHECK(toys[1].faults == 1, "blk_scribble with the disks swapped: xvdb failed (%lu)", toys[1].faults);
	/* What the scenario must catch. */
	toy_create_pair();
	toys[0].ignore_overflow = 1;
	expect("blk_scribble", "pvh.blktimeout=300", "waiting for Closing after the scribble");
	toy_create_pair();
	toys[0].fatal_all = 1;
	expect("blk_scribble", "pvh.blktimeout=300", "after disk A's fault, want Connected");
	toy_create();
	expect("blk_scribble", "", "no second vbd with device-type disk");

	return check_summary();
}
