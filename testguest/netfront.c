/*
 * pvh test guest: a minimal Xen network frontend (netfront) and the
 * scenarios that drive a vif backend with it, with netstack.c on top.
 * Run only when named:
 *
 *   pvh.scenarios=net_info    handshake, backend features, one TX (an ARP probe)
 *   pvh.scenarios=net_echo    answer ARP and ping, echo UDP (pvh.netip, pvh.netudp)
 *   pvh.scenarios=net_dhcp    DHCP DISCOVER/OFFER/REQUEST/ACK
 *   pvh.scenarios=net_tcp     DHCP, then a TCP echo exchange with the gateway
 *
 * Knobs (testguest/README.md): pvh.netdev, pvh.netqueues, pvh.netsplit,
 * pvh.netip, pvh.netgw, pvh.netudp, pvh.netechoms, pvh.netechocount,
 * pvh.netpeer, pvh.netport, pvh.netkib, pvh.nettxsplit, pvh.nettimeout,
 * pvh.netdebug.
 *
 * The protocol is Linux's drivers/net/xen-netfront.c (function names in
 * the comments) with the ABI from Xen's xen/io/netif.h only: the TX and
 * RX rings (DEFINE_RING_TYPES(netif_tx/netif_rx)), NETTXF_* and NETRXF_*
 * flags, netif_extra_info slots, and the XenStore keys it documents.
 *
 * XenStore (libxl's layout; <fe> = device/vif/<id>, <be> its `backend`):
 *   we read   <fe>/backend, backend-id, mac, handle; <be>/state; at
 *             InitWait <be>/feature-rx-copy (must be 1), feature-sg,
 *             feature-gso-tcpv4, feature-gso-tcpv6,
 *             feature-split-event-channels, multi-queue-max-queues
 *   we write  (one transaction) tx-ring-ref, rx-ring-ref, event-channel
 *             or event-channel-tx + event-channel-rx (pvh.netsplit=1),
 *             or multi-queue-num-queues + queue-<n>/... (pvh.netqueues=N),
 *             request-rx-copy = 1, feature-rx-notify = 1, feature-sg = 1,
 *             feature-gso-tcpv4/6 = 1 when offered; then state = Connected
 *             (Linux's netfront skips Initialised).
 *
 * Memory: net_pages (NOLOAD) holds per queue a TX and an RX ring page,
 * NET_RX_BUFS receive buffers and NET_TX_BUFS transmit buffers, each granted
 * (v1, to backend-id) at ref NET_REF_BASE + its index (after blkfront's).
 * RX buffers are granted when posted and revoked when their response is
 * taken (request-rx-copy: the backend copies into them); TX buffers are
 * granted read-only per slot and revoked at the response. A grant the
 * backend still holds then is a failure (as Linux's xennet_tx_buf_gc).
 *
 * Waiting: the backend's state through a XenStore watch (xenbus_front.c);
 * frames by halting until a ring has responses (events.c wait_until; the
 * event channel's upcall wakes us, the LAPIC watchdog bounds each halt).
 * Every wait is bounded by pvh.nettimeout (default 10000 ms; net_tcp's
 * exchange 6 times that).
 */
#include "testguest.h"
#include "xenbus_front.h"
#include "netstack.h"

#include <xen/event_channel.h>
#include <xen/grant_table.h>

/* As blkfront.c: ring.h's barriers from us; x86 is TSO. */
#define xen_mb()  __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/io/netif.h>

#define evtchn_op(cmd, arg)  HC2(__HYPERVISOR_event_channel_op, cmd, arg)

/* ------------------------------------------------------------------ */
/* Sizes, pages, grant references                                       */

#define NET_MAX_QUEUES	4
#define NET_RX_BUFS	32		/* posted per queue (of 256 ring slots) */
#define NET_TX_BUFS	16		/* TX slots in flight per queue */
#define NET_QPAGES	(2 + NET_RX_BUFS + NET_TX_BUFS)
#define NET_PAGES	(NET_MAX_QUEUES * NET_QPAGES)
#define NET_PAGES_LIT	200
/* After blkfront's refs 32..175 (and grants.c's 10..20): frame 0. */
#define NET_REF_BASE	200

#define STR_(x) #x
#define STR(x) STR_(x)

_Static_assert(NET_PAGES == NET_PAGES_LIT, "NET_PAGES_LIT");
_Static_assert(NET_REF_BASE + NET_PAGES <= PAGE_SIZE / sizeof(grant_entry_v1_t),
	       "netfront's grant refs must lie in grant frame 0");
_Static_assert(__CONST_RING_SIZE(netif_tx, PAGE_SIZE) == 256, "netif TX ring: 256 slots");
_Static_assert(__CONST_RING_SIZE(netif_rx, PAGE_SIZE) == 256, "netif RX ring: 256 slots");
_Static_assert(sizeof(netif_extra_info_t) <= sizeof(netif_rx_response_t), "extra info fits an RX slot");
_Static_assert((NET_RX_BUFS & (NET_RX_BUFS - 1)) == 0, "NET_RX_BUFS a power of two");

__asm__(".pushsection .pages, \"aw\", @nobits\n"
	".balign 4096\n"
	".globl net_pages\n"
	"net_pages: .skip " STR(NET_PAGES_LIT) " * 4096\n"
	".popsection\n");
extern uint8_t net_pages[];

static uint8_t *net_page(unsigned i) { return net_pages + (size_t)i * PAGE_SIZE; }
static uint32_t page_ref(unsigned i) { return NET_REF_BASE + i; }
static uint64_t page_gfn(unsigned i) { return (uint64_t)(uintptr_t)net_page(i) >> 12; }

/* Queue q's pages: TX ring, RX ring, RX buffers, TX buffers. */
static unsigned q_txring(unsigned q) { return q * NET_QPAGES; }
static unsigned q_rxring(unsigned q) { return q * NET_QPAGES + 1; }
static unsigned q_rxbuf(unsigned q, unsigned i) { return q * NET_QPAGES + 2 + i; }
static unsigned q_txbuf(unsigned q, unsigned i) { return q * NET_QPAGES + 2 + NET_RX_BUFS + i; }

/* ------------------------------------------------------------------ */
/* The device and its connection                                        */

struct net_queue {
	netif_tx_front_ring_t tx;
	netif_rx_front_ring_t rx;
	evtchn_port_t port_tx, port_rx;	/* the same port unless split */
	uint8_t rx_posted[NET_RX_BUFS];	/* granted and in the ring */
	uint16_t rx_id_at[256];		/* id of the request at each ring index (extra slots) */
	uint8_t tx_busy[NET_TX_BUFS];
	/* counters */
	uint32_t tx_frames, tx_slots, tx_errors, tx_notified, rx_frames, rx_slots, rx_errors, rx_extras;
	uint32_t rx_notified, hits0_tx, hits0_rx;
};

struct net_dev {
	struct xenbus_front xb;		/* fe = "device/vif/<id>" */
	unsigned id;
	uint8_t mac[6];
	char mac_str[24];
	uint64_t handle;
	int known;			/* xb.fe_state is ours (prepared once this boot) */
	/* read at InitWait */
	uint64_t rx_copy, sg, gso4, gso6, split, max_queues, ctrl_ring;
	/* this connection */
	unsigned nq, use_split;
	int rings, connected;
	struct net_queue q[NET_MAX_QUEUES];
	char err[160];
};

static struct net_dev dev;

/* Per-scenario settings. */
static unsigned net_dbg;
static uint64_t net_timeout;
static int net_hlt;
static unsigned net_txsplit;		/* pvh.nettxsplit: bytes per TX slot (0: a page) */

#define DBG(lvl, ...) do { if (net_dbg >= (lvl)) printk(__VA_ARGS__); } while (0)

static char reason_buf[160];
static const char *keep(const char *r)
{
	if (r && r != reason_buf)
		snprintf(reason_buf, sizeof(reason_buf), "%s", r);
	return r ? reason_buf : NULL;
}

/* "00:16:3e:12:34:56" -> bytes: 0 ok. */
static int parse_mac(const char *s, uint8_t *mac)
{
	for (int i = 0; i < 6; i++) {
		unsigned v = 0;
		for (int k = 0; k < 2; k++) {
			char c = *s++;
			v <<= 4;
			if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
			else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
			else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
			else return -1;
		}
		mac[i] = (uint8_t)v;
		if (i < 5 && *s++ != ':')
			return -1;
	}
	return *s ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* Finding the device (netfront_probe, xen_net_read_mac)                */

static const char *net_find(struct net_dev *d)
{
	const char *r;
	uint32_t len;
	if ((r = xenstore_connect()))
		return r;
	const char *names = xenstore_directory("device/vif", &len);
	if (!names)
		return xb_streq(xenstore_error(), "ENOENT") ? "no device/vif in XenStore (no --net?)"
							    : fail("directory device/vif: %s", xenstore_error());
	uint64_t want = opt_num("pvh.netdev=", ~0ul), pick = ~0ull;
	for (uint32_t i = 0; i < len; i += (uint32_t)strnlen(names + i, len - i) + 1) {
		uint64_t v;
		char nm[16];
		size_t l = strnlen(names + i, len - i);
		if (l == 0 || l >= sizeof(nm))
			continue;
		memcpy(nm, names + i, l);
		nm[l] = 0;
		if (xb_parse_u64(nm, &v))
			continue;
		if (want != ~0ul ? v == want : v < pick)
			pick = v;
	}
	if (pick == ~0ull)
		return want != ~0ul ? fail("pvh.netdev=%lu: no such vif", (unsigned long)want) : "device/vif has no devices";
	d->id = (unsigned)pick;
	snprintf(d->xb.fe, sizeof(d->xb.fe), "device/vif/%u", d->id);
	if ((r = xb_read_otherend(&d->xb)))
		return r;
	int got = xb_get(d->xb.fe, "mac");
	if (got != 1)
		return fail("no %s/mac: %s", d->xb.fe, got < 0 ? xenstore_error() : "absent");
	if (parse_mac(xb_val, d->mac))
		return fail("%s/mac = \"%.32s\" is not a MAC address", d->xb.fe, xb_val);
	snprintf(d->mac_str, sizeof(d->mac_str), "%s", xb_val);
	if ((r = xb_num(d->xb.fe, "handle", d->id, &d->handle)))
		return r;
	DBG(1, "PVHINFO net: using %s (mac %s handle %lu), backend %s (domain %u)\n", d->xb.fe, d->mac_str,
	    (unsigned long)d->handle, d->xb.be, d->xb.beid);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Rings, buffers, event channels (setup_netfront, xennet_alloc_rx_buffers) */

static void zero_page(unsigned i)
{
	uint64_t *w = (uint64_t *)net_page(i);
	for (size_t k = 0; k < PAGE_SIZE / 8; k++)
		w[k] = 0;
}

static const char *alloc_port(struct net_dev *d, evtchn_port_t *port)
{
	struct evtchn_alloc_unbound au = { .dom = DOMID_SELF, .remote_dom = d->xb.beid };
	long rc = evtchn_op(EVTCHNOP_alloc_unbound, &au);
	if (rc != 0)
		return fail("EVTCHNOP_alloc_unbound(remote d%u) rc %ld", d->xb.beid, rc);
	*port = au.port;
	struct evtchn_unmask um = { .port = au.port };
	evtchn_op(EVTCHNOP_unmask, &um);
	return NULL;
}

/* Post every free RX buffer (granted for the backend to copy into); notify if rsp says so. */
static const char *rx_refill(struct net_dev *d, unsigned q)
{
	struct net_queue *Q = &d->q[q];
	unsigned n = 0;
	for (unsigned i = 0; i < NET_RX_BUFS; i++) {
		if (Q->rx_posted[i])
			continue;
		unsigned pg = q_rxbuf(q, i);
		gnttab_grant_ref(page_ref(pg), d->xb.beid, page_gfn(pg), 0);
		RING_IDX idx = Q->rx.req_prod_pvt++;
		netif_rx_request_t *req = RING_GET_REQUEST(&Q->rx, idx);
		req->id = (uint16_t)i;
		req->gref = page_ref(pg);
		Q->rx_id_at[idx & 255] = (uint16_t)i;
		Q->rx_posted[i] = 1;
		n++;
	}
	if (!n)
		return NULL;
	int notify;
	RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&Q->rx, notify);
	if (notify) {
		long rc = evtchn_send(Q->port_rx);
		if (rc)
			return fail("EVTCHNOP_send(rx port %u) rc %ld", Q->port_rx, rc);
		Q->rx_notified++;
	}
	return NULL;
}

static const char *rings_setup(struct net_dev *d, unsigned nq, int split)
{
	const char *r;
	d->nq = nq;
	d->use_split = (unsigned)split;
	for (unsigned q = 0; q < nq; q++) {
		struct net_queue *Q = &d->q[q];
		memset(Q, 0, sizeof(*Q));
		zero_page(q_txring(q));
		zero_page(q_rxring(q));
		netif_tx_sring_t *ts = (netif_tx_sring_t *)net_page(q_txring(q));
		netif_rx_sring_t *rs = (netif_rx_sring_t *)net_page(q_rxring(q));
		SHARED_RING_INIT(ts);
		SHARED_RING_INIT(rs);
		FRONT_RING_INIT(&Q->tx, ts, PAGE_SIZE);
		FRONT_RING_INIT(&Q->rx, rs, PAGE_SIZE);
		gnttab_grant_ref(page_ref(q_txring(q)), d->xb.beid, page_gfn(q_txring(q)), 0);
		gnttab_grant_ref(page_ref(q_rxring(q)), d->xb.beid, page_gfn(q_rxring(q)), 0);
		d->rings = 1;
		/* setup_netfront_single / setup_netfront_split */
		if ((r = alloc_port(d, &Q->port_tx)))
			return r;
		Q->port_rx = Q->port_tx;
		if (split && (r = alloc_port(d, &Q->port_rx)))
			return r;
		DBG(1, "PVHINFO net: queue %u: tx-ring-ref %u rx-ring-ref %u, port%s %u%s%.0u\n", q,
		    page_ref(q_txring(q)), page_ref(q_rxring(q)), split ? "s tx" : "", Q->port_tx,
		    split ? " rx " : "", split ? Q->port_rx : 0);
	}
	return NULL;
}

/* The backend is Closed (or never connected): take every grant back, close the ports. */
static const char *rings_release(struct net_dev *d)
{
	const char *r = NULL;
	uint16_t f;
	if (!d->rings)
		return NULL;
	for (unsigned q = 0; q < d->nq; q++) {
		struct net_queue *Q = &d->q[q];
		for (unsigned i = 0; i < NET_RX_BUFS; i++)
			if (Q->rx_posted[i]) {
				if (!gnttab_end_ref(page_ref(q_rxbuf(q, i)), &f) && !r)
					r = fail("backend still maps RX buffer %u of queue %u (ref %u, flags 0x%x) after Closed",
						 i, q, page_ref(q_rxbuf(q, i)), f);
				Q->rx_posted[i] = 0;
			}
		for (unsigned i = 0; i < NET_TX_BUFS; i++)
			if (Q->tx_busy[i]) {
				gnttab_end_ref(page_ref(q_txbuf(q, i)), &f);
				Q->tx_busy[i] = 0;
			}
		unsigned rp[2] = { q_txring(q), q_rxring(q) };
		for (unsigned k = 0; k < 2; k++)
			if (!gnttab_end_ref(page_ref(rp[k]), &f) && !r)
				r = fail("backend still maps the %s ring page of queue %u (ref %u, flags 0x%x) after Closed",
					 k ? "RX" : "TX", q, page_ref(rp[k]), f);
		struct evtchn_close c = { .port = Q->port_tx };
		evtchn_op(EVTCHNOP_close, &c);
		if (Q->port_rx != Q->port_tx) {
			c.port = Q->port_rx;
			evtchn_op(EVTCHNOP_close, &c);
		}
	}
	d->rings = 0;
	return r;
}

/* ------------------------------------------------------------------ */
/* The handshake (netback_changed, talk_to_netback, xennet_connect)     */

/* Transport nodes an earlier connection may have left (another queue count or split). */
static void remove_ring_nodes(struct net_dev *d)
{
	static const char *const keys[] = {
		"tx-ring-ref", "rx-ring-ref", "event-channel", "event-channel-tx", "event-channel-rx",
		"multi-queue-num-queues", "queue-0", "queue-1", "queue-2", "queue-3",
	};
	_Static_assert(NET_MAX_QUEUES == 4, "keys[] covers what we write");
	char path[96];
	for (unsigned i = 0; i < ARRAY_SIZE(keys); i++) {
		snprintf(path, sizeof(path), "%s/%s", d->xb.fe, keys[i]);
		xenstore_rm(path);	/* ENOENT: fine */
	}
}

/* write_queue_xenstore_keys and talk_to_netback's feature keys, inside transaction tx. */
static const char *fill_nodes(struct xenbus_front *f, uint32_t tx, void *arg)
{
	struct net_dev *d = arg;
	const char *r = NULL;
	if (d->nq > 1)
		r = xb_put(f, tx, "multi-queue-num-queues", "%u", d->nq);
	for (unsigned q = 0; q < d->nq && !r; q++) {
		/* One queue: the plain keys; more: under queue-<n>/ (netif.h "Multi-queue"). */
		char dir[16] = "", k[48];
		struct net_queue *Q = &d->q[q];
		if (d->nq > 1)
			snprintf(dir, sizeof(dir), "queue-%u/", q);
		snprintf(k, sizeof(k), "%stx-ring-ref", dir);
		r = xb_put(f, tx, k, "%u", page_ref(q_txring(q)));
		if (!r) {
			snprintf(k, sizeof(k), "%srx-ring-ref", dir);
			r = xb_put(f, tx, k, "%u", page_ref(q_rxring(q)));
		}
		if (!r && d->use_split) {
			snprintf(k, sizeof(k), "%sevent-channel-tx", dir);
			r = xb_put(f, tx, k, "%u", Q->port_tx);
			if (!r) {
				snprintf(k, sizeof(k), "%sevent-channel-rx", dir);
				r = xb_put(f, tx, k, "%u", Q->port_rx);
			}
		} else if (!r) {
			snprintf(k, sizeof(k), "%sevent-channel", dir);
			r = xb_put(f, tx, k, "%u", Q->port_tx);
		}
	}
	/* talk_to_netback: rx-copy is the only receive mode netback still has. */
	if (!r)
		r = xb_put(f, tx, "request-rx-copy", "%u", 1);
	if (!r)
		r = xb_put(f, tx, "feature-rx-notify", "%u", 1);
	if (!r)
		r = xb_put(f, tx, "feature-sg", "%u", 1);
	if (!r && d->gso4)
		r = xb_put(f, tx, "feature-gso-tcpv4", "%u", 1);
	if (!r && d->gso6)
		r = xb_put(f, tx, "feature-gso-tcpv6", "%u", 1);
	return r;
}

static const char *net_connect(struct net_dev *d)
{
	const char *r;
	unsigned st;
	unsigned want_q = (unsigned)opt_num("pvh.netqueues=", 1);
	int split = opt_num("pvh.netsplit=", 0) != 0;
	if (want_q < 1 || want_q > NET_MAX_QUEUES)
		return fail("pvh.netqueues=%u: 1..%u", want_q, NET_MAX_QUEUES);
	/* netback_changed(InitWait) -> xennet_connect -> talk_to_netback */
	if ((r = xb_wait_be(&d->xb, 1u << XenbusStateInitWait, 1u << XenbusStateClosing, "InitWait", &st)))
		return r;
	if ((r = xb_num(d->xb.be, "feature-rx-copy", 0, &d->rx_copy)) ||
	    (r = xb_num(d->xb.be, "feature-sg", 0, &d->sg)) ||
	    (r = xb_num(d->xb.be, "feature-gso-tcpv4", 0, &d->gso4)) ||
	    (r = xb_num(d->xb.be, "feature-gso-tcpv6", 0, &d->gso6)) ||
	    (r = xb_num(d->xb.be, "feature-split-event-channels", 0, &d->split)) ||
	    (r = xb_num(d->xb.be, "feature-ctrl-ring", 0, &d->ctrl_ring)) ||
	    (r = xb_num(d->xb.be, "multi-queue-max-queues", 1, &d->max_queues)))
		return r;
	DBG(1, "PVHINFO net: backend feature-rx-copy %lu feature-sg %lu feature-gso-tcpv4 %lu feature-gso-tcpv6 %lu "
	    "feature-split-event-channels %lu multi-queue-max-queues %lu\n", (unsigned long)d->rx_copy,
	    (unsigned long)d->sg, (unsigned long)d->gso4, (unsigned long)d->gso6, (unsigned long)d->split,
	    (unsigned long)d->max_queues);
	/* xennet_connect: "backend does not support copying receive path" */
	if (!d->rx_copy)
		return "backend does not offer feature-rx-copy (the only receive mode we speak)";
	if (want_q > d->max_queues)
		return fail("backend offers multi-queue-max-queues %lu, pvh.netqueues=%u", (unsigned long)d->max_queues,
			    want_q);
	if (split && !d->split)
		return "backend does not offer feature-split-event-channels (pvh.netsplit=1)";
	if (net_txsplit && !d->sg)
		return "backend does not offer feature-sg (pvh.nettxsplit needs multi-slot frames)";
	if ((r = rings_setup(d, want_q, split)))
		return r;
	remove_ring_nodes(d);
	if ((r = xb_transaction(&d->xb, fill_nodes, d)))
		return r;
	/* xennet_connect posts the RX buffers before Connected; so do we. */
	for (unsigned q = 0; q < d->nq; q++)
		if ((r = rx_refill(d, q)))
			return r;
	/*
	 * netback_changed(InitWait): xennet_connect, then straight to
	 * Connected — Linux's netfront never writes Initialised, and
	 * netback's frontend_changed connects on the frontend's Connected
	 * (it ignores Initialised). Linux does not wait for the backend's
	 * Connected; we do (bounded), so that traffic starts on mapped rings.
	 */
	if ((r = xb_switch_state(&d->xb, XenbusStateConnected)))
		return r;
	if ((r = xb_wait_be(&d->xb, 1u << XenbusStateConnected,
			    (1u << XenbusStateClosing) | (1u << XenbusStateClosed), "Connected", &st)))
		return r;
	d->connected = 1;
	for (unsigned q = 0; q < d->nq; q++) {
		d->q[q].hits0_tx = evtchn_port_hits(d->q[q].port_tx);
		d->q[q].hits0_rx = evtchn_port_hits(d->q[q].port_rx);
	}
	return NULL;
}

/* Close as xenbus_reset_frontend (see blkfront.c's blk_teardown). */
static const char *net_teardown(struct net_dev *d, int reinit)
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

static const char *net_prepare(struct net_dev *d)
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
	DBG(1, "PVHINFO net: frontend state %lu (%s), backend %u (%s)\n", (unsigned long)fs,
	    xb_state_name((unsigned)fs), bs, xb_state_name(bs));
	if (fs == XenbusStateInitialising && bs != XenbusStateConnected && !d->rings)
		return NULL;
	return net_teardown(d, 1);
}

static const char *net_begin(struct net_dev *d)
{
	const char *r;
	net_dbg = (unsigned)opt_num("pvh.netdebug=", 0);
	net_timeout = opt_num("pvh.nettimeout=", 10000);
	if (!net_timeout)
		net_timeout = 10000;
	net_txsplit = (unsigned)opt_num("pvh.nettxsplit=", 0);
	if (net_txsplit > PAGE_SIZE)
		net_txsplit = PAGE_SIZE;
	d->xb.tag = "net";
	d->xb.dbg = net_dbg;
	d->xb.timeout_ms = net_timeout;
	if ((r = net_find(d)))
		return r;
	if ((r = gnttab_frontend_ready()))
		return r;
	if ((r = xen_setup())) {
		printk("PVHINFO net: no upcalls (%s): spinning\n", r);
		net_hlt = 0;
	} else {
		net_hlt = 1;
	}
	if ((r = net_prepare(d)))
		return r;
	return net_connect(d);
}

static const char *tx_gc(struct net_dev *d, unsigned q);
static unsigned tx_free(const struct net_queue *Q);

static int tx_all_back(const void *arg)
{
	const struct net_dev *d = arg;
	for (unsigned q = 0; q < d->nq; q++)
		if (d->q[q].tx.rsp_cons != d->q[q].tx.req_prod_pvt &&
		    *(volatile RING_IDX *)&d->q[q].tx.sring->rsp_prod == d->q[q].tx.rsp_cons)
			return 0;
	return 1;
}

/* Every frame sent is answered before we close (the last echo must not be lost with the rings). */
static const char *tx_drain(struct net_dev *d)
{
	const char *r;
	uint64_t end = tsc_deadline_ms(net_timeout);
	for (;;) {
		int busy = 0;
		for (unsigned q = 0; q < d->nq; q++) {
			if ((r = tx_gc(d, q)))
				return r;
			busy |= tx_free(&d->q[q]) != NET_TX_BUFS;
		}
		if (!busy)
			return NULL;
		uint64_t now = rdtsc();
		if (now >= end)
			return fail("TX not answered in %lu ms before closing", (unsigned long)net_timeout);
		wait_until(tx_all_back, d, (end - now) / tsc_khz() + 1, net_hlt, NULL);
	}
}

static const char *net_end(struct net_dev *d, const char *r)
{
	r = keep(r);
	if (!d->known)
		return r;
	if (d->connected) {
		const char *t = tx_drain(d);
		if (t && !r)
			r = keep(t);
	}
	const char *t = net_teardown(d, 1);
	if (t && r)
		printk("PVHINFO net: teardown after the failure: %s\n", t);
	return r ? r : keep(t);
}

/* ------------------------------------------------------------------ */
/* TX (xennet_start_xmit, xennet_tx_buf_gc)                             */

/* Take TX responses: revoke each slot's grant and free its buffer. */
static const char *tx_gc(struct net_dev *d, unsigned q)
{
	struct net_queue *Q = &d->q[q];
	uint16_t f;
	for (;;) {
		RING_IDX rp = *(volatile RING_IDX *)&Q->tx.sring->rsp_prod, i;
		xen_rmb();
		if (RING_RESPONSE_PROD_OVERFLOW(&Q->tx, rp))
			return fail("q%u: TX rsp_prod %u is %u past rsp_cons %u", q, rp, rp - Q->tx.rsp_cons,
				    Q->tx.rsp_cons);
		for (i = Q->tx.rsp_cons; i != rp; i++) {
			netif_tx_response_t rsp;
			RING_COPY_RESPONSE(&Q->tx, i, &rsp);
			if (rsp.status == NETIF_RSP_NULL)
				continue;	/* an extra-info slot's; we send none */
			if (rsp.id >= NET_TX_BUFS || !Q->tx_busy[rsp.id]) {
				Q->tx.rsp_cons = i + 1;
				return fail("q%u: TX response id %u (status %d) matches no slot in flight", q, rsp.id,
					    rsp.status);
			}
			if (rsp.status != NETIF_RSP_OKAY) {
				Q->tx_errors++;
				DBG(1, "PVHINFO net: q%u TX slot %u status %d\n", q, rsp.id, rsp.status);
			}
			Q->tx_busy[rsp.id] = 0;
			if (!gnttab_end_ref(page_ref(q_txbuf(q, rsp.id)), &f)) {
				Q->tx.rsp_cons = i + 1;
				return fail("q%u: backend still maps TX buffer ref %u (flags 0x%x) after its response", q,
					    page_ref(q_txbuf(q, rsp.id)), f);
			}
		}
		Q->tx.rsp_cons = i;
		int more;
		RING_FINAL_CHECK_FOR_RESPONSES(&Q->tx, more);
		if (!more)
			return NULL;
	}
}

static unsigned tx_free(const struct net_queue *Q)
{
	unsigned n = 0;
	for (unsigned i = 0; i < NET_TX_BUFS; i++)
		n += !Q->tx_busy[i];
	return n;
}

static int tx_responses(const void *arg)
{
	const struct net_queue *Q = arg;
	return *(volatile RING_IDX *)&Q->tx.sring->rsp_prod != Q->tx.rsp_cons;
}

/*
 * One frame on queue q: slots of at most pvh.nettxsplit bytes (default a
 * page), each from its own buffer page (netif.h: the first request's size
 * is the whole frame, NETTXF_more_data on all but the last, later sizes
 * their own). Checksums are complete: flags carry no csum_blank.
 */
static const char *net_xmit(struct net_dev *d, unsigned q, const uint8_t *frame, size_t len)
{
	struct net_queue *Q = &d->q[q];
	const char *r;
	size_t chunk = net_txsplit ? net_txsplit : PAGE_SIZE;
	unsigned slots = (unsigned)((len + chunk - 1) / chunk);
	if (!len || len > XEN_NETIF_MAX_TX_SIZE)
		return fail("internal: TX frame of %lu bytes", (unsigned long)len);
	if (slots > NET_TX_BUFS || (slots > 1 && !d->sg))
		return fail("TX frame of %lu bytes needs %u slots (feature-sg %lu)", (unsigned long)len, slots,
			    (unsigned long)d->sg);
	uint64_t end = tsc_deadline_ms(net_timeout);
	for (;;) {
		if ((r = tx_gc(d, q)))
			return r;
		if (tx_free(Q) >= slots && RING_FREE_REQUESTS(&Q->tx) >= slots)
			break;
		uint64_t now = rdtsc();
		if (now >= end)
			return fail("q%u: no TX slot free in %lu ms: req_prod %u rsp_prod %u rsp_event %u", q,
				    (unsigned long)net_timeout, Q->tx.sring->req_prod, Q->tx.sring->rsp_prod,
				    Q->tx.sring->rsp_event);
		wait_until(tx_responses, Q, (end - now) / tsc_khz() + 1, net_hlt, NULL);
	}
	size_t off = 0;
	for (unsigned s = 0; s < slots; s++) {
		unsigned b = 0;
		while (Q->tx_busy[b])
			b++;
		size_t n = len - off < chunk ? len - off : chunk;
		unsigned pg = q_txbuf(q, b);
		memcpy(net_page(pg), frame + off, n);
		Q->tx_busy[b] = 1;
		/* Linux grants TX pages read-only (gnttab_grant_foreign_access_ref(..., GNTMAP_readonly)). */
		gnttab_grant_ref(page_ref(pg), d->xb.beid, page_gfn(pg), 1);
		netif_tx_request_t *req = RING_GET_REQUEST(&Q->tx, Q->tx.req_prod_pvt);
		req->gref = page_ref(pg);
		req->offset = 0;
		req->id = (uint16_t)b;
		req->size = (uint16_t)(s == 0 ? len : n);
		req->flags = (uint16_t)(s + 1 < slots ? NETTXF_more_data : 0);
		Q->tx.req_prod_pvt++;
		off += n;
	}
	Q->tx_frames++;
	Q->tx_slots += slots;
	int notify;
	RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&Q->tx, notify);
	if (notify) {
		long rc = evtchn_send(Q->port_tx);
		if (rc)
			return fail("EVTCHNOP_send(tx port %u) rc %ld", Q->port_tx, rc);
		Q->tx_notified++;
	}
	DBG(2, "PVHINFO net: q%u TX %lu bytes in %u slot(s)%s\n", q, (unsigned long)len, slots,
	    notify ? ", notified" : "");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* RX (xennet_poll, xennet_get_responses, xennet_get_extras)            */

/*
 * Slots of the first complete frame available on queue q, walking the
 * responses without taking them: 0 none complete yet.
 */
static unsigned rx_frame_slots(struct net_queue *Q, RING_IDX rp)
{
	RING_IDX i = Q->rx.rsp_cons;
	int extra = 0, more = 1;
	unsigned n = 0;
	while (i != rp) {
		const netif_rx_response_t *rsp = RING_GET_RESPONSE(&Q->rx, i);
		n++;
		i++;
		if (extra) {
			const netif_extra_info_t *x = (const void *)rsp;
			extra = x->flags & XEN_NETIF_EXTRA_FLAG_MORE;
		} else {
			if (n == 1)
				extra = rsp->flags & NETRXF_extra_info;
			more = rsp->status > 0 && (rsp->flags & NETRXF_more_data);
		}
		if (!extra && !more)
			return n;
	}
	return 0;
}

static int rx_ready(const void *arg)
{
	const struct net_dev *d = arg;
	for (unsigned q = 0; q < d->nq; q++)
		if (*(volatile RING_IDX *)&d->q[q].rx.sring->rsp_prod != d->q[q].rx.rsp_cons)
			return 1;
	return 0;
}

/*
 * Take one frame from queue q into buf: its length, 0 none complete, -1
 * a protocol violation (d->err). The buffers go back into the ring.
 */
static int rx_take(struct net_dev *d, unsigned q, uint8_t *buf, size_t max, int *validated)
{
	struct net_queue *Q = &d->q[q];
	uint16_t f;
	RING_IDX rp = *(volatile RING_IDX *)&Q->rx.sring->rsp_prod;
	xen_rmb();
	if (RING_RESPONSE_PROD_OVERFLOW(&Q->rx, rp)) {
		snprintf(d->err, sizeof(d->err), "q%u: RX rsp_prod %u is %u past rsp_cons %u", q, rp,
			 rp - Q->rx.rsp_cons, Q->rx.rsp_cons);
		return -1;
	}
	unsigned slots = rx_frame_slots(Q, rp);
	if (!slots) {
		int more;
		RING_FINAL_CHECK_FOR_RESPONSES(&Q->rx, more);	/* re-arm rsp_event */
		return 0;
	}
	size_t len = 0;
	int bad = 0, extra = 0, first_flags = 0;
	for (unsigned s = 0; s < slots; s++) {
		RING_IDX i = Q->rx.rsp_cons++;
		netif_rx_response_t rsp;
		RING_COPY_RESPONSE(&Q->rx, i, &rsp);
		/* The buffer of this slot: the request's id at this index (an extra slot echoes none). */
		unsigned id = extra ? Q->rx_id_at[i & 255] : rsp.id;
		if (id >= NET_RX_BUFS || !Q->rx_posted[id]) {
			snprintf(d->err, sizeof(d->err), "q%u: RX response id %u at %u matches no posted buffer", q, id, i);
			return -1;
		}
		Q->rx_posted[id] = 0;
		Q->rx_slots++;
		if (!gnttab_end_ref(page_ref(q_rxbuf(q, id)), &f)) {
			snprintf(d->err, sizeof(d->err), "q%u: backend still maps RX buffer ref %u (flags 0x%x) after its response",
				 q, page_ref(q_rxbuf(q, id)), f);
			return -1;
		}
		if (extra) {
			const netif_extra_info_t *x = (const void *)&rsp;
			Q->rx_extras++;
			extra = x->flags & XEN_NETIF_EXTRA_FLAG_MORE;
			continue;
		}
		if (s == 0) {
			first_flags = rsp.flags;
			extra = rsp.flags & NETRXF_extra_info;
		}
		if (rsp.status < 0) {	/* NETIF_RSP_ERROR/DROPPED: the frame is lost */
			bad = 1;
			continue;
		}
		if ((size_t)rsp.offset + (size_t)rsp.status > PAGE_SIZE) {
			snprintf(d->err, sizeof(d->err), "q%u: RX slot offset %u + size %d beyond the page", q, rsp.offset,
				 rsp.status);
			return -1;
		}
		if (len + (size_t)rsp.status > max) {
			bad = 1;
			continue;
		}
		memcpy(buf + len, net_page(q_rxbuf(q, id)) + rsp.offset, (size_t)rsp.status);
		len += (size_t)rsp.status;
	}
	Q->rx_frames++;
	const char *r = rx_refill(d, q);
	if (r) {
		snprintf(d->err, sizeof(d->err), "%s", r);
		return -1;
	}
	if (bad || !len) {
		Q->rx_errors++;
		return 0;
	}
	/* NETRXF_csum_blank: the checksum is to be completed (a local sender); the data is good. */
	*validated = (first_flags & (NETRXF_data_validated | NETRXF_csum_blank)) != 0;
	return (int)len;
}

/* ------------------------------------------------------------------ */
/* net_dev_ops for netstack.c                                           */

static int ops_tx(void *ctx, const uint8_t *frame, size_t len)
{
	struct net_dev *d = ctx;
	extern struct netstack net_ns;
	unsigned q = net_ns.txq < d->nq ? net_ns.txq : 0;
	const char *r = net_xmit(d, q, frame, len);
	if (r) {
		snprintf(d->err, sizeof(d->err), "%s", r);
		return -1;
	}
	return 0;
}

static int ops_rx(void *ctx, uint8_t *buf, size_t max, uint64_t wait_ms, int *validated)
{
	struct net_dev *d = ctx;
	extern struct netstack net_ns;
	uint64_t end = tsc_deadline_ms(wait_ms);
	for (;;) {
		for (unsigned q = 0; q < d->nq; q++) {
			const char *r = tx_gc(d, q);
			if (r) {
				snprintf(d->err, sizeof(d->err), "%s", r);
				return -1;
			}
			int n = rx_take(d, q, buf, max, validated);
			if (n < 0)
				return -1;
			if (n > 0) {
				net_ns.txq = q;		/* answers go out where the request came in */
				return n;
			}
		}
		uint64_t now = rdtsc();
		if (now >= end)
			return 0;
		wait_until(rx_ready, d, (end - now) / tsc_khz() + 1, net_hlt, NULL);
	}
}

static uint64_t ops_now(void *ctx)
{
	(void)ctx;
	return rdtsc() / tsc_khz();
}

static const char *ops_err(void *ctx)
{
	struct net_dev *d = ctx;
	return d->err[0] ? d->err : "?";
}

struct netstack net_ns;

static void stack_init(struct net_dev *d)
{
	static const struct net_dev_ops ops = { ops_tx, ops_rx, ops_now, ops_err, &dev };
	d->err[0] = 0;
	ns_init(&net_ns, &ops, d->mac);
}

/* Totals over the queues, for the PASS notes. */
static void totals(struct net_dev *d, uint32_t *txf, uint32_t *rxf, uint32_t *txe, uint32_t *rxe)
{
	*txf = *rxf = *txe = *rxe = 0;
	for (unsigned q = 0; q < d->nq; q++) {
		*txf += d->q[q].tx_frames;
		*rxf += d->q[q].rx_frames;
		*txe += d->q[q].tx_errors;
		*rxe += d->q[q].rx_errors;
	}
}

/*
 * The backend must have sent an event on a port it had work for (it notifies
 * past rsp_event). Polling may have taken every frame before that event was
 * delivered (the backend publishes responses, then sends; the upcall comes
 * once this vCPU enables interrupts), so it is waited for, bounded.
 */
static const char *check_events(struct net_dev *d)
{
	for (unsigned q = 0; q < d->nq && net_hlt; q++) {
		struct net_queue *Q = &d->q[q];
		if (Q->rx_frames && !evtchn_wait_port_hits(Q->port_rx, Q->hits0_rx + 1, 1000))
			return fail("q%u: %u frames received but no event on RX port %u", q, Q->rx_frames, Q->port_rx);
	}
	return NULL;
}

/* pvh.netip=a.b.c.d/nn (default 10.0.2.15/24) or dhcp. */
static const char *static_or_dhcp(struct net_dev *d)
{
	size_t len;
	const char *v = cmdline_opt("pvh.netip=", &len);
	(void)d;
	if (v && len == 4 && !strncmp(v, "dhcp", 4))
		return ns_dhcp(&net_ns, net_timeout);
	uint32_t ip = 0x0a00020f;
	unsigned prefix = 24;
	if (v && ns_parse_cidr(v, len, &ip, &prefix))
		return fail("pvh.netip=%.*s: want a.b.c.d[/nn] or dhcp", (int)(len < 20 ? len : 20), v);
	net_ns.ip = ip;
	net_ns.prefix = prefix;
	v = cmdline_opt("pvh.netgw=", &len);
	uint32_t gw;
	unsigned p2;
	if (v && ns_parse_cidr(v, len, &gw, &p2))
		return "pvh.netgw: want a.b.c.d";
	net_ns.gw = v ? gw : (ip & ~0xffu) | 2;	/* passt's and QEMU's default: .2 */
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Scenarios                                                            */

static const char *scen_net_info(void)
{
	struct net_dev *d = &dev;
	const char *r;
	if ((r = net_begin(d)))
		return net_end(d, r);
	stack_init(d);
	/* One TX: an ARP probe (RFC 5227: sender 0.0.0.0) for 10.0.2.2; its response must come back OK. */
	uint8_t f[64];
	static const uint8_t bc[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }, z[6];
	size_t n = ns_build_arp(f, 1, d->mac, 0, z, 0x0a000202, bc);
	if ((r = net_xmit(d, 0, f, n)))
		return net_end(d, r);
	uint64_t end = tsc_deadline_ms(net_timeout);
	while (!r && tx_free(&d->q[0]) < NET_TX_BUFS) {
		uint64_t now = rdtsc();
		if (now >= end) {
			r = fail("no TX response in %lu ms: req_prod %u rsp_prod %u", (unsigned long)net_timeout,
				 d->q[0].tx.sring->req_prod, d->q[0].tx.sring->rsp_prod);
			break;
		}
		wait_until(tx_responses, &d->q[0], (end - now) / tsc_khz() + 1, net_hlt, NULL);
		r = tx_gc(d, 0);
	}
	if (!r && d->q[0].tx_errors)
		r = "the backend answered our ARP probe with an error status";
	if (r)
		return net_end(d, r);
	printk("PVHINFO net device %s backend %s (domain %u) handle %lu split %u\n", d->xb.fe, d->xb.be, d->xb.beid,
	       (unsigned long)d->handle, d->use_split);
	printk("PVHINFO net mac %s queues %u backend features rx-copy=%lu sg=%lu gso-tcpv4=%lu gso-tcpv6=%lu "
	       "split-event-channels=%lu multi-queue-max-queues=%lu ctrl-ring=%lu\n",
	       d->mac_str, d->nq, (unsigned long)d->rx_copy, (unsigned long)d->sg, (unsigned long)d->gso4,
	       (unsigned long)d->gso6, (unsigned long)d->split, (unsigned long)d->max_queues,
	       (unsigned long)d->ctrl_ring);
	pass_note("mac=%s queues=%u split=%u rx-bufs=%u tx=ok", d->mac_str, d->nq, d->use_split, NET_RX_BUFS);
	return net_end(d, NULL);
}

static const char *scen_net_echo(void)
{
	struct net_dev *d = &dev;
	const char *r;
	char b[16];
	if ((r = net_begin(d)))
		return net_end(d, r);
	stack_init(d);
	if ((r = static_or_dhcp(d)))
		return net_end(d, r);
	net_ns.udp_echo_port = (uint16_t)opt_num("pvh.netudp=", 7);
	uint64_t ms = opt_num("pvh.netechoms=", 10000);
	uint32_t count = (uint32_t)opt_num("pvh.netechocount=", 0);
	/* Announce the address (RFC 5227): a host side that learns the guest from its
	 * frames (passt, a bridge) knows where to send before the first request. */
	if (ns_announce(&net_ns))
		return net_end(d, net_ns.errbuf);
	printk("PVHTEST net_echo WAITING ip=%s/%u udp=%u mac=%s\n", ns_ip_str(net_ns.ip, b), net_ns.prefix,
	       net_ns.udp_echo_port, d->mac_str);
	if ((r = ns_echo_serve(&net_ns, ms, count)))
		return net_end(d, r);
	uint32_t txf, rxf, txe, rxe;
	totals(d, &txf, &rxf, &txe, &rxe);
	printk("PVHINFO net echo: rx %u frames (%u validated, %u bad checksum, %u dropped, %u errors), tx %u (%u errors); "
	       "arp %u icmp %u udp %u\n", rxf, net_ns.validated, net_ns.bad_csum, net_ns.dropped, rxe, txf, txe,
	       net_ns.arp_replies, net_ns.icmp_echoes, net_ns.udp_echoes);
	if (count && net_ns.udp_echoes < count)
		return net_end(d, fail("echoed %u of %u UDP datagrams in %lu ms (icmp %u arp %u, rx %u frames)",
				       net_ns.udp_echoes, count, (unsigned long)ms, net_ns.icmp_echoes,
				       net_ns.arp_replies, rxf));
	if (txe)
		return net_end(d, fail("%u TX slots answered with an error status", txe));
	if ((r = check_events(d)))
		return net_end(d, r);
	pass_note("arp=%u icmp=%u udp=%u rx=%u tx=%u", net_ns.arp_replies, net_ns.icmp_echoes, net_ns.udp_echoes, rxf,
		  txf);
	return net_end(d, NULL);
}

static const char *scen_net_dhcp(void)
{
	struct net_dev *d = &dev;
	const char *r;
	char a[16], g[16], s[16];
	if ((r = net_begin(d)))
		return net_end(d, r);
	stack_init(d);
	if ((r = ns_dhcp(&net_ns, net_timeout)))
		return net_end(d, r);
	printk("PVHINFO net dhcp address %s/%u gateway %s dns %s\n", ns_ip_str(net_ns.ip, a), net_ns.prefix,
	       ns_ip_str(net_ns.gw, g), ns_ip_str(net_ns.dns, s));
	printk("PVHINFO net dhcp server %s lease %u mtu %u\n", ns_ip_str(net_ns.server, s), net_ns.lease, net_ns.mtu);
	if ((r = check_events(d)))
		return net_end(d, r);
	pass_note("address=%s/%u gateway=%s dns=%s", a, net_ns.prefix, g, ns_ip_str(net_ns.dns, s));
	return net_end(d, NULL);
}

static const char *scen_net_tcp(void)
{
	struct net_dev *d = &dev;
	const char *r;
	char a[16], g[16];
	static struct ns_tcp t;
	if ((r = net_begin(d)))
		return net_end(d, r);
	stack_init(d);
	size_t len;
	const char *v = cmdline_opt("pvh.netip=", &len);
	if (v && !(len == 4 && !strncmp(v, "dhcp", 4)))
		r = static_or_dhcp(d);
	else
		r = ns_dhcp(&net_ns, net_timeout);
	if (r)
		return net_end(d, r);
	uint32_t peer = net_ns.gw;
	v = cmdline_opt("pvh.netpeer=", &len);
	unsigned pfx;
	if (v && ns_parse_cidr(v, len, &peer, &pfx))
		return net_end(d, "pvh.netpeer: want a.b.c.d");
	uint16_t port = (uint16_t)opt_num("pvh.netport=", 5001);
	uint64_t kib = opt_num("pvh.netkib=", 64);
	printk("PVHINFO net tcp: %s/%u connecting to %s:%u, %lu KiB\n", ns_ip_str(net_ns.ip, a), net_ns.prefix,
	       ns_ip_str(peer, g), port, (unsigned long)kib);
	r = ns_tcp_echo(&net_ns, &t, peer, port, kib * 1024, net_timeout * 6);
	uint64_t got = t.rcv_nxt ? t.rcv_nxt - 1 - (uint32_t)t.peer_fin : 0;
	if (r)
		return net_end(d, r);
	printk("PVHINFO net tcp sent %lu received %lu crc32 0x%08x (%u segments out, %u in, %u retransmits, "
	       "%u out of order dropped, %u duplicate ACKs)\n", (unsigned long)(kib * 1024), (unsigned long)got,
	       t.crc_recv, t.segs_sent, t.segs_recv, t.retransmits, t.ooo_dropped, t.dup_acks_total);
	pass_note("sent=%lu received=%lu crc32=0x%08x retransmits=%u", (unsigned long)(kib * 1024), (unsigned long)got,
		  t.crc_recv, t.retransmits);
	return net_end(d, NULL);
}

/* Run only when named (see testguest/README.md). */
/* ------------------------------------------------------------------ */
/* net_hotplug (issue 12): a vif the toolstack adds while we run        */

/*
 * Waits (until the TSC deadline `end`) for a vif in device/vif whose
 * frontend is Initialising (none at boot: the toolstack's network-attach).
 */
static const char *nhp_wait_new(uint64_t end)
{
	const char *r = NULL, *p, *t;
	if ((r = xenstore_connect()))
		return r;
	if (xenstore_watch("device/vif", "pvh-nethotplug"))
		return fail("watch device/vif: %s", xenstore_error());
	for (;;) {
		uint32_t len;
		const char *names = xenstore_directory("device/vif", &len);
		int found = 0;
		for (uint32_t i = 0; names && i < len && !found; i += (uint32_t)strnlen(names + i, len - i) + 1) {
			char dir[48];
			uint64_t st;
			size_t l = strnlen(names + i, len - i);
			if (l == 0 || l >= 16)
				continue;
			snprintf(dir, sizeof(dir), "device/vif/%.*s", (int)l, names + i);
			found = xb_get(dir, "state") == 1 && !xb_parse_u64(xb_val, &st) && st == XenbusStateInitialising;
		}
		if (found)
			break;
		uint64_t now = rdtsc();
		if (now >= end) {
			r = "no vif appeared in device/vif before the deadline (pvh.hotplug_timeout)";
			break;
		}
		uint64_t left = (end - now) / tsc_khz() + 1;
		if (xenstore_wait_watch(&p, &t, left < 250 ? left : 250) < 0) {
			r = fail("xenstore: %s", xenstore_error());
			break;
		}
	}
	xenstore_unwatch("device/vif", "pvh-nethotplug");
	return r;
}

/*
 * net_hotplug: wait (pvh.hotplug_timeout ms, default 300000) for a vif the
 * toolstack adds, connect it (the usual handshake), then wait for its
 * detach: on the backend's Closing, Closed at once (Linux's netfront:
 * netback_changed -> xenbus_frontend_closed), then the backend's Closed or
 * its directory gone (EACCES/ENOENT under dom0's tree), rings returned.
 */
static const char *scen_net_hotplug(void)
{
	struct net_dev *d = &dev;
	const char *r;
	uint64_t end = tsc_deadline_ms(opt_num("pvh.hotplug_timeout=", 300000));
	printk("PVHINFO net_hotplug: waiting for the toolstack to add a vif\n");
	if ((r = nhp_wait_new(end)) || (r = net_begin(d)))
		return net_end(d, r);
	printk("PVHINFO net_hotplug: vif %u connected, mac %s\n", d->id, d->mac_str);
	uint64_t now = rdtsc();
	d->xb.timeout_ms = now < end ? (end - now) / tsc_khz() + 1 : 1;
	r = xb_wait_be(&d->xb, (1u << XenbusStateClosing) | (1u << XenbusStateClosed) | (1u << XenbusStateUnknown), 0,
		       "the toolstack's Closing", NULL);
	d->xb.timeout_ms = net_timeout;
	if (r)
		return net_end(d, r);
	d->connected = 0;
	if ((r = xb_switch_state(&d->xb, XenbusStateClosed)))
		return keep(r);
	uint64_t until = tsc_deadline_ms(net_timeout);
	for (;;) {
		int got = xb_get(d->xb.be, "state");
		uint64_t st;
		if (got == 0 || (got < 0 && xb_streq(xenstore_error(), "EACCES")) ||
		    (got == 1 && !xb_parse_u64(xb_val, &st) && st == XenbusStateClosed))
			break;
		if (got < 0)
			return fail("read %s/state: %s", d->xb.be, xenstore_error());
		if (rdtsc() >= until)
			return fail("backend state %s after %lu ms waiting for Closed", xb_val, (unsigned long)net_timeout);
		const char *p, *t;
		xenstore_watch(d->xb.be, "pvh-nethotplug-be");
		xenstore_wait_watch(&p, &t, 250);
		xenstore_unwatch(d->xb.be, "pvh-nethotplug-be");
	}
	if ((r = rings_release(d)))
		return keep(r);
	pass_note("vif=%u mac=%s closed on detach", d->id, d->mac_str);
	return NULL;
}

const struct scenario net_scenarios[] = {
	{ "net_info", scen_net_info },
	{ "net_echo", scen_net_echo },
	{ "net_dhcp", scen_net_dhcp },
	{ "net_tcp", scen_net_tcp },
	{ "net_hotplug", scen_net_hotplug },
};
const size_t nr_net_scenarios = ARRAY_SIZE(net_scenarios);

/* ------------------------------------------------------------------ */
/* For hostile.c: malformed TX packets and RX requests on one vif        */

/*
 * The TX page the garbage names (the last TX buffer of queue 0: net_xmit
 * takes the first free one, and runs only once the garbage is answered).
 */
#define NH_TXB		(NET_TX_BUFS - 1)
/* RX requests of ours in the ring at most (good and garbage). */
#define NH_RX_MAX	96

static uint8_t nh_garbage_at[256];	/* RX ring index -> 1: a garbage request sits there */
static struct net_hostile_counts *nh_c;
static int nh_warm;			/* a frame met a garbage RX request (or we tried long enough) */

/* A DHCPDISCOVER (passt answers each with an OFFER): traffic for the RX ring. */
static const char *nh_provoke(struct net_dev *d, uint32_t xid)
{
	static uint8_t f[600], payload[400];
	static const uint8_t bc[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	size_t n = ns_build_dhcp(payload, 1, xid, d->mac, 0, 0);
	n = ns_build_udp(f, bc, d->mac, 0, 0xffffffffu, 68, 67, (uint16_t)xid, payload, n);
	const char *r = net_xmit(d, 0, f, n);
	uint64_t end = tsc_deadline_ms(net_timeout);
	while (!r && tx_free(&d->q[0]) < NET_TX_BUFS) {
		uint64_t now = rdtsc();
		if (now >= end)
			return fail("vif: our DHCPDISCOVER unanswered in %lu ms", (unsigned long)net_timeout);
		wait_until(tx_responses, &d->q[0], (end - now) / tsc_khz() + 1, net_hlt, NULL);
		r = tx_gc(d, 0);
	}
	return r;
}

/*
 * RX responses taken by ring index (netback answers requests in order, one
 * response each): a garbage request's response is only checked for shape, a
 * good buffer's is taken back as rx_take would. Then the ring refilled:
 * free good buffers, some garbage requests (bad grants: none, empty,
 * another domain's, one of ours not granted; ids anything) in between.
 */
static const char *nh_rx(struct net_dev *d, uint64_t (*rnd)(void))
{
	struct net_queue *Q = &d->q[0];
	uint16_t f;
	RING_IDX rp = *(volatile RING_IDX *)&Q->rx.sring->rsp_prod;
	xen_rmb();
	if (RING_RESPONSE_PROD_OVERFLOW(&Q->rx, rp))
		return fail("vif: RX rsp_prod %u is %u past rsp_cons %u", rp, rp - Q->rx.rsp_cons, Q->rx.rsp_cons);
	for (RING_IDX i = Q->rx.rsp_cons; i != rp; i++) {
		netif_rx_response_t rsp;
		RING_COPY_RESPONSE(&Q->rx, i, &rsp);
		if (rsp.status > 0 && (size_t)rsp.offset + (size_t)rsp.status > PAGE_SIZE)
			return fail("vif: RX slot %u: offset %u + size %d beyond the page", i, rsp.offset, rsp.status);
		if (nh_garbage_at[i & 255]) {
			nh_garbage_at[i & 255] = 0;
			if (rsp.status == NETIF_RSP_ERROR)
				nh_c->rx_refused++;
			else
				nh_c->rx_other++;
			continue;
		}
		unsigned id = Q->rx_id_at[i & 255];
		if (id >= NET_RX_BUFS || !Q->rx_posted[id])
			return fail("vif: RX index %u holds none of our buffers (id %u)", i, id);
		Q->rx_posted[id] = 0;
		if (!gnttab_end_ref(page_ref(q_rxbuf(0, id)), &f))
			return fail("vif: backend still maps RX buffer ref %u (flags 0x%x) after its response",
				    page_ref(q_rxbuf(0, id)), f);
		nh_c->rx_good++;
	}
	Q->rx.rsp_cons = rp;
	int more;
	RING_FINAL_CHECK_FOR_RESPONSES(&Q->rx, more);
	(void)more;
	/* Garbage behind what is posted (a few requests a round, at most NH_RX_MAX in all). */
	unsigned k = (unsigned)(rnd() % 4);
	while (k-- && Q->rx.req_prod_pvt - Q->rx.rsp_cons < NH_RX_MAX - NET_RX_BUFS) {
		RING_IDX idx = Q->rx.req_prod_pvt++;
		netif_rx_request_t *req = RING_GET_REQUEST(&Q->rx, idx);
		uint64_t w = rnd();
		req->id = (uint16_t)w;
		switch ((w >> 16) % 4) {
		case 0: req->gref = (grant_ref_t)(w >> 32) | 0x10000000u; break;	/* past any table */
		case 1: req->gref = 470; break;		/* an empty entry (hostile.c) */
		case 2: req->gref = 471; break;		/* another domain's (hostile.c) */
		default: req->gref = page_ref(q_txbuf(0, NH_TXB)); break;	/* ours, read-only or not granted */
		}
		nh_garbage_at[idx & 255] = 1;
		nh_c->rx_garbage++;
	}
	/*
	 * Good buffers again only once none is left: garbage posted meanwhile
	 * then lies ahead of them, where the next frames find it.
	 */
	for (unsigned i = 0; i < NET_RX_BUFS; i++)
		if (Q->rx_posted[i])
			return NULL;
	return rx_refill(d, 0);
}

static void nh_slot(struct net_queue *Q, uint16_t id, uint16_t offset, uint16_t size, uint16_t flags, grant_ref_t gref)
{
	netif_tx_request_t *req = RING_GET_REQUEST(&Q->tx, Q->tx.req_prod_pvt);
	req->gref = gref;
	req->offset = offset;
	req->flags = flags;
	req->id = id;
	req->size = size;
	Q->tx.req_prod_pvt++;
}

static void nh_extra(struct net_queue *Q, uint8_t type, uint8_t flags, uint16_t gso_size, uint8_t gso_type)
{
	netif_extra_info_t *x = (netif_extra_info_t *)RING_GET_REQUEST(&Q->tx, Q->tx.req_prod_pvt);
	memset(x, 0, sizeof(*x));
	x->type = type;
	x->flags = flags;
	if (type == XEN_NETIF_EXTRA_TYPE_GSO) {
		x->u.gso.size = gso_size;
		x->u.gso.type = gso_type;
	} else {
		memset(x->u.mcast.addr, 0xa5, sizeof(x->u.mcast.addr));
	}
	Q->tx.req_prod_pvt++;
}

/* A packet of n data slots of the page, the first's size `first`, each later one `each`. */
static void nh_chain(struct net_queue *Q, uint16_t id, grant_ref_t g, unsigned n, uint16_t first, uint16_t each)
{
	for (unsigned s = 0; s < n; s++)
		nh_slot(Q, (uint16_t)(id + s), 0, s ? each : first, s + 1 < n ? NETTXF_more_data : 0, g);
}

static int nh_tx_answered(const void *arg)
{
	const struct net_queue *Q = arg;
	return *(volatile RING_IDX *)&Q->tx.sring->rsp_prod == Q->tx.req_prod_pvt;
}

/*
 * One batch of malformed TX packets, each one Linux's netback drops with
 * NETIF_RSP_ERROR rather than treating as fatal (xenvif_tx_build_gops,
 * xenvif_count_requests, xenvif_set_skb_gso): a slot past its page, size
 * 0 or a runt, a first size below the sum of the slots after it, 19 and 20
 * slots (over XEN_NETBK_LEGACY_SLOTS_MAX, not over the fatal 20), grants not
 * ours to give, 64 KiB packets (0xffff, in 16 slots; and in 18 slots
 * holding more), GSO extras of size 0 or an unknown GSO type, a multicast
 * extra with flag bits netif.h does not define, a partial checksum over
 * garbage headers. Every slot must be answered within pvh.nettimeout, with
 * OKAY, ERROR or NULL (an extra's). Then a DHCPDISCOVER (the answer lands in
 * the RX ring among garbage requests) and the RX side (nh_rx).
 */
const char *net_hostile_batch(uint64_t (*rnd)(void), struct net_hostile_counts *c)
{
	struct net_dev *d = &dev;
	struct net_queue *Q = &d->q[0];
	const char *r;
	uint16_t f;
	nh_c = c;
	if (!d->connected)
		return "internal: vif not connected";
	unsigned pg = q_txbuf(0, NH_TXB);
	grant_ref_t g = page_ref(pg);
	/* Ethernet to nobody (broadcast, an experimental type), then garbage. */
	uint8_t *p = net_page(pg);
	for (unsigned i = 0; i < PAGE_SIZE / 8; i++)
		((uint64_t *)p)[i] = rnd();
	memset(p, 0xff, 6);
	memcpy(p + 6, d->mac, 6);
	p[12] = 0x88;
	p[13] = 0xb5;
	gnttab_grant_ref(g, d->xb.beid, page_gfn(pg), 1);
	unsigned n = 4 + (unsigned)(rnd() % 8);
	RING_IDX first = Q->tx.req_prod_pvt;
	for (unsigned k = 0; k < n && RING_FREE_REQUESTS(&Q->tx) > 24; k++) {
		uint64_t w = rnd();
		uint16_t id = (uint16_t)(0x100 + 32 * k);
		switch ((w >> 8) % 11) {
		case 0:	/* offset + size past the page: one slot, or a later one */
			if (w & 1)
				nh_slot(Q, id, (uint16_t)(PAGE_SIZE - 1 - (w >> 16) % 64), (uint16_t)(64 + (w >> 24) % 1000), 0, g);
			else {
				nh_slot(Q, id, 0, 200, NETTXF_more_data, g);
				nh_slot(Q, id + 1, (uint16_t)(PAGE_SIZE - 50), 100, 0, g);
			}
			break;
		case 1:	/* size 0 or a runt, alone or heading a chain */
			if (w & 1)
				nh_slot(Q, id, 0, (uint16_t)((w >> 16) % 14), 0, g);
			else
				nh_chain(Q, id, g, 3, 0, 0);
			break;
		case 2:	/* the first size below the sum of the later ones */
			nh_chain(Q, id, g, 3, 100, (uint16_t)(200 + (w >> 16) % 3000));
			break;
		case 3:	/* 19 or 20 data slots: dropped, not fatal */
			nh_chain(Q, id, g, 19 + (unsigned)(w & 1), (uint16_t)(60 * (19 + (w & 1))), 60);
			break;
		case 4:	/* a grant not ours to give: past any table, empty, another domain's, never granted */
			switch ((w >> 16) % 4) {
			case 0: nh_slot(Q, id, 0, 60, 0, (grant_ref_t)(w >> 32) | 0x10000000u); break;
			case 1: nh_slot(Q, id, 0, 60, 0, 470); break;
			case 2: nh_slot(Q, id, 0, 60, 0, 471); break;
			default: nh_slot(Q, id, 0, 60, 0, page_ref(q_txbuf(0, NH_TXB - 1))); break;
			}
			break;
		case 5:	/* 64 KiB: 0xffff in 16 slots (a frame no link takes), or 18 slots holding more */
			if (w & 1)
				nh_chain(Q, id, g, 16, 0xffff, PAGE_SIZE);
			else
				nh_chain(Q, id, g, 18, 0xffff, PAGE_SIZE);
			break;
		case 6:	/* a GSO extra of size 0, or of a type netif.h does not define */
			nh_slot(Q, id, 0, 1500, NETTXF_extra_info, g);
			nh_extra(Q, XEN_NETIF_EXTRA_TYPE_GSO, 0, (w & 1) ? 0 : 1448,
				 (w & 1) ? XEN_NETIF_GSO_TYPE_TCPV4 : (uint8_t)(3 + (w >> 16) % 250));
			break;
		case 7:	/* a multicast extra with undefined flag bits (MORE clear: it is the last) */
			nh_slot(Q, id, 0, 60, NETTXF_extra_info, g);
			nh_extra(Q, XEN_NETIF_EXTRA_TYPE_MCAST_ADD + (w & 1), (uint8_t)((w >> 16) & 0xfe), 0, 0);
			break;
		case 8:	/* a partial checksum over headers that are none (NETTXF_csum_blank) */
			nh_slot(Q, id, 0, (uint16_t)(14 + (w >> 16) % 200), NETTXF_csum_blank | NETTXF_data_validated, g);
			break;
		case 9:	/* GSO over a frame that is no TCP */
			nh_slot(Q, id, 0, 3000, NETTXF_extra_info | NETTXF_more_data, g);
			nh_extra(Q, XEN_NETIF_EXTRA_TYPE_GSO, 0, 536, XEN_NETIF_GSO_TYPE_TCPV6);
			nh_slot(Q, id + 1, 0, 3000 - PAGE_SIZE / 2, 0, g);
			break;
		default: /* anything within the page, flags the backend must not trust */
			nh_slot(Q, id, (uint16_t)((w >> 16) % PAGE_SIZE), 0, (uint16_t)((w >> 32) & (NETTXF_csum_blank | NETTXF_data_validated)), g);
			{
				netif_tx_request_t *req = RING_GET_REQUEST(&Q->tx, Q->tx.req_prod_pvt - 1);
				req->size = (uint16_t)(PAGE_SIZE - req->offset);
			}
			break;
		}
		c->tx_packets++;
	}
	/* Always notified: the backend must not depend on our event hold-off. */
	RING_PUSH_REQUESTS(&Q->tx);
	long rc = evtchn_send(Q->port_tx);
	if (rc)
		return fail("EVTCHNOP_send(tx port %u) rc %ld", Q->port_tx, rc);
	if (!nh_tx_answered(Q) && !wait_until(nh_tx_answered, Q, net_timeout, net_hlt, NULL) && !nh_tx_answered(Q))
		return fail("vif: %u of %u garbage TX slots unanswered after %lu ms", Q->tx.req_prod_pvt - Q->tx.sring->rsp_prod,
			    Q->tx.req_prod_pvt - first, (unsigned long)net_timeout);
	xen_rmb();
	for (RING_IDX i = Q->tx.rsp_cons; i != Q->tx.req_prod_pvt; i++) {
		netif_tx_response_t rsp;
		RING_COPY_RESPONSE(&Q->tx, i, &rsp);
		if (rsp.status == NETIF_RSP_ERROR)
			c->tx_errors++;
		else if (rsp.status == NETIF_RSP_OKAY)
			c->tx_okay++;
		else if (rsp.status != NETIF_RSP_NULL)
			return fail("vif: status %d for a garbage TX slot", rsp.status);
	}
	Q->tx.rsp_cons = Q->tx.req_prod_pvt;
	Q->tx.sring->rsp_event = Q->tx.rsp_cons + 1;
	if (!gnttab_end_ref(g, &f))
		return fail("vif: backend still maps the garbage TX page (ref %u, flags 0x%x) after answering", g, f);
	/*
	 * DISCOVERs and their OFFERs; the first batch goes on until a frame met
	 * a garbage request (the good buffers posted at the connect used up),
	 * the others send one. Each OFFER comes within a few ms: a short
	 * bounded wait, then whatever came.
	 */
	unsigned tries = nh_warm ? 1 : 3 * NET_RX_BUFS;
	for (unsigned t = 0; t < tries && (nh_warm || !(c->rx_refused + c->rx_other)); t++) {
		if ((r = nh_provoke(d, (uint32_t)rnd())))
			return r;
		wait_until(rx_ready, d, 50, net_hlt, NULL);
		if ((r = nh_rx(d, rnd)))
			return r;
	}
	nh_warm = 1;
	return NULL;
}

/* The vif connected (pvh.hostile_net's device/vif/0, or the first), RX buffers posted. */
const char *net_hostile_open(void)
{
	memset(nh_garbage_at, 0, sizeof(nh_garbage_at));
	nh_warm = 0;
	const char *r = net_begin(&dev);
	return r ? net_end(&dev, r) : NULL;
}

static int nh_closing(unsigned s)
{
	return s == XenbusStateClosing || s == XenbusStateClosed;
}

/*
 * The end: the cases Linux's netback treats as a broken frontend
 * (xenvif_fatal_tx_err: a packet of more than 20 slots, an extra-info slot
 * of an unknown type; and a request producer far past the ring), each on a
 * fresh connection; each must close the vif through xenbus (the backend
 * Closing) within pvh.nettimeout, and the vif must connect again after it.
 * Last, a DHCPDISCOVER on the new connection must be answered.
 * *closed counts the closes seen.
 */
const char *net_hostile_close(uint64_t (*rnd)(void), unsigned *closed)
{
	struct net_dev *d = &dev;
	const char *r;
	unsigned st;
	for (unsigned kind = 0; kind < 3; kind++) {
		struct net_queue *Q = &d->q[0];
		grant_ref_t g = page_ref(q_txbuf(0, NH_TXB));
		gnttab_grant_ref(g, d->xb.beid, page_gfn(q_txbuf(0, NH_TXB)), 1);
		switch (kind) {
		case 0:	/* 22 slots: past the fatal 20 */
			nh_chain(Q, 0x200, g, 22, 22 * 60, 60);
			RING_PUSH_REQUESTS(&Q->tx);
			break;
		case 1:	/* an extra of a type past XEN_NETIF_EXTRA_TYPE_MAX */
			nh_slot(Q, 0x200, 0, 60, NETTXF_extra_info, g);
			nh_extra(Q, (uint8_t)(XEN_NETIF_EXTRA_TYPE_MAX + rnd() % 200), 0, 0, 0);
			RING_PUSH_REQUESTS(&Q->tx);
			break;
		default: /* req_prod far past the ring */
			xen_wmb();
			Q->tx.sring->req_prod = Q->tx.rsp_cons + 0x10000u + (uint32_t)(rnd() % 0x1000000u);
			break;
		}
		xen_mb();
		evtchn_send(Q->port_tx);
		d->connected = 0;
		if ((r = xb_wait_be(&d->xb, (1u << XenbusStateClosing) | (1u << XenbusStateClosed), 0,
				    "Closing after a fatal TX case", &st)) || !nh_closing(st))
			return net_end(d, fail("vif: fatal case %u: %s", kind, r ? keep(r) : "backend not Closing"));
		(*closed)++;
		/* Our side closes, the grants come back, then a new connection. */
		if ((r = net_teardown(d, 1)) || (r = net_connect(d)))
			return net_end(d, fail("vif: reconnecting after fatal case %u: %s", kind, keep(r)));
		memset(nh_garbage_at, 0, sizeof(nh_garbage_at));
	}
	/* The vif works again: our DHCPDISCOVER answered (an OFFER back). */
	uint8_t buf[1600];
	int validated;
	if ((r = nh_provoke(d, (uint32_t)rnd())))
		return net_end(d, r);
	uint64_t end = tsc_deadline_ms(net_timeout);
	int got = 0;
	while (!got) {
		int n = rx_take(d, 0, buf, sizeof(buf), &validated);
		if (n < 0)
			return net_end(d, fail("vif after reconnecting: %s", d->err));
		if (n > 0)
			got = 1;
		uint64_t now = rdtsc();
		if (!got && now >= end)
			return net_end(d, fail("vif after reconnecting: no frame in %lu ms", (unsigned long)net_timeout));
		if (!got)
			wait_until(rx_ready, d, (end - now) / tsc_khz() + 1, net_hlt, NULL);
	}
	return net_end(d, NULL);
}
