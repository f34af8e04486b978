/*
 * pvh test guest: a XenStore client over the shared ring (issue 4), and the
 * scenarios that use it. Run only when named:
 *
 *   pvh.scenarios=xenstore                 protocol checks, one line each
 *   pvh.scenarios=control                  waits for control/shutdown, then shuts down
 *   pvh.scenarios=balloon                  waits for memory/target, releases pages,
 *                                          then waits for control/shutdown
 *   pvh.scenarios=bench_xenstore pvh.bench=N   N XS_READ round trips
 *
 * The ring is xen/io/xs_wire.h's struct xenstore_domain_interface at
 * HVM_PARAM_STORE_PFN, the event channel HVM_PARAM_STORE_EVTCHN. Messages
 * are struct xsd_sockmsg + payload (NUL-terminated strings; XS_WRITE's value
 * without a NUL). The ring protocol follows Linux's
 * drivers/xen/xenbus/xenbus_comms.c:
 *  - indices are free-running 32-bit counters, masked with
 *    MASK_XENSTORE_IDX; prod - cons (unsigned) is the fill, > RING_SIZE
 *    means the other side is broken;
 *  - write: read req_cons, mb, copy, wmb, publish req_prod, notify (always:
 *    a superset of Linux, which notifies only when the ring was empty);
 *  - read: read rsp_prod, rmb, copy, mb, publish rsp_cons, notify only if
 *    the ring was full (the server may be waiting for space), as Linux;
 *  - a message may be longer than the ring (XENSTORE_PAYLOAD_MAX 4096 >
 *    1024): both directions stream, a header may be split across the wrap
 *    or across two fills;
 *  - replies and XS_WATCH_EVENT messages arrive interleaved on `rsp`: one
 *    incremental reader assembles messages and queues watch events while a
 *    request waits for its reply, or while a writer waits for `req` space.
 * One request is outstanding at a time; req_id increases and the reply must
 * echo it (Linux matches replies by req_id).
 *
 * Waits block in `hlt` (the store port's upcall, or the 50 ms LAPIC
 * watchdog, wakes us: events.c wait_until) and are bounded: 5 s per request.
 * A transport failure (timeout, bad index, wrong req_id or reply type,
 * oversized message) marks the connection broken: every later call fails
 * at once with the same reason.
 */
#include "testguest.h"

#include <xen/event_channel.h>
#include <xen/io/xs_wire.h>

#define evtchn_op(cmd, arg)  HC2(__HYPERVISOR_event_channel_op, cmd, arg)

#define XS_TIMEOUT_MS	5000
#define HDR		((uint32_t)sizeof(struct xsd_sockmsg))

static volatile struct xenstore_domain_interface *intf;
static evtchn_port_t xs_port;
static int xs_use_hlt;
static uint32_t xs_req_id;

/* Sticky transport failure (the reason), or empty. */
static char xs_broken[160];
/* Result of the last call: 0 OK, 1 XS_ERROR (xs_err = its string), -1 transport failure. */
static int xs_status;
static char xs_err[160];

static int streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static void set_broken(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_broken(const char *fmt, ...)
{
	va_list ap;
	if (xs_broken[0])
		return;
	va_start(ap, fmt);
	vsnprintf(xs_broken, sizeof(xs_broken), fmt, ap);
	va_end(ap);
	printk("PVHINFO xenstore connection broken: %s\n", xs_broken);
}

static inline void rmb(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void wmb(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
static inline void mb(void)  { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

static void notify(void)
{
	long rc = evtchn_send(xs_port);
	if (rc != 0)
		set_broken("EVTCHNOP_send(store port %u) rc %ld", xs_port, rc);
}

/* ------------------------------------------------------------------ */
/* Receiving: one incremental reader for replies and watch events      */

static union {
	struct xsd_sockmsg msg;
	char b[sizeof(struct xsd_sockmsg)];
} rx_hdr;
static char rx_body[XENSTORE_PAYLOAD_MAX + 1];
static uint32_t rx_got;			/* bytes of the current message so far */

/* The reply to the outstanding request, once complete. */
static int reply_ready;
static struct xsd_sockmsg reply_hdr;
static char reply_body[XENSTORE_PAYLOAD_MAX + 1];

/* Watch events not consumed yet (payload "path\0token\0"). */
#define WQ_LEN 16
#define WQ_BODY 256
static struct {
	uint32_t len;
	char body[WQ_BODY];
} wq[WQ_LEN];
static uint32_t wq_head, wq_tail;	/* free-running */
static uint32_t wq_dropped;

static void dispatch(void)
{
	uint32_t len = rx_hdr.msg.len;
	rx_body[len] = 0;
	if (rx_hdr.msg.type == XS_WATCH_EVENT) {
		if (wq_tail - wq_head >= WQ_LEN) {
			wq_dropped++;
			printk("PVHINFO xenstore watch queue full: event dropped (%u so far)\n", wq_dropped);
			return;
		}
		uint32_t n = len < WQ_BODY - 2 ? len : WQ_BODY - 2;
		char *d = wq[wq_tail % WQ_LEN].body;
		memcpy(d, rx_body, n);
		d[n] = d[n + 1] = 0;	/* path and token stay terminated if cut short */
		wq[wq_tail % WQ_LEN].len = n;
		wq_tail++;
		return;
	}
	if (reply_ready) {
		set_broken("second reply (type %u req_id %u) before the first was taken",
			   rx_hdr.msg.type, rx_hdr.msg.req_id);
		return;
	}
	reply_hdr = rx_hdr.msg;
	memcpy(reply_body, rx_body, len + 1);
	reply_ready = 1;
}

/* Consume what `rsp` holds now; complete messages are dispatched. */
static void rx_pump(void)
{
	while (!xs_broken[0]) {
		XENSTORE_RING_IDX cons = intf->rsp_cons, prod = intf->rsp_prod;
		rmb();			/* read the data after the producer index */
		uint32_t avail = prod - cons;
		if (avail > XENSTORE_RING_SIZE) {
			set_broken("rsp indices cons %u prod %u", cons, prod);
			return;
		}
		if (!avail)
			return;
		uint32_t need = rx_got < HDR ? HDR - rx_got : HDR + rx_hdr.msg.len - rx_got;
		uint32_t n = avail < need ? avail : need;
		for (uint32_t i = 0; i < n; i++) {
			char c = intf->rsp[MASK_XENSTORE_IDX(cons + i)];
			if (rx_got + i < HDR)
				rx_hdr.b[rx_got + i] = c;
			else
				rx_body[rx_got + i - HDR] = c;
		}
		mb();			/* copied out before the space is seen free */
		intf->rsp_cons = cons + n;
		if (intf->rsp_prod - cons >= XENSTORE_RING_SIZE)
			notify();	/* it was full: the server may wait for space */
		rx_got += n;
		if (rx_got == HDR && rx_hdr.msg.len > XENSTORE_PAYLOAD_MAX) {
			set_broken("message type %u with len %u > %u", rx_hdr.msg.type,
				   rx_hdr.msg.len, XENSTORE_PAYLOAD_MAX);
			return;
		}
		if (rx_got >= HDR && rx_got == HDR + rx_hdr.msg.len) {
			rx_got = 0;
			dispatch();
		}
	}
}

/* ------------------------------------------------------------------ */
/* Waiting                                                             */

enum { WAIT_RSP, WAIT_REQ_SPACE };

static int ring_cond(const void *arg)
{
	int want_space = *(const int *)arg == WAIT_REQ_SPACE;
	if (intf->rsp_prod != intf->rsp_cons)
		return 1;
	return want_space && intf->req_prod - intf->req_cons < XENSTORE_RING_SIZE;
}

/* Until `rsp` has data (or, for WAIT_REQ_SPACE, `req` has room) or the TSC deadline. */
static int ring_wait(int what, uint64_t end)
{
	if (ring_cond(&what))
		return 1;
	uint64_t now = rdtsc();
	if (now >= end)
		return 0;
	return wait_until(ring_cond, &what, (end - now) / tsc_khz() + 1, xs_use_hlt, NULL);
}

/* ------------------------------------------------------------------ */
/* Sending                                                             */

static void tx_write(const void *data, uint32_t len, uint64_t end)
{
	const char *p = data;
	while (len && !xs_broken[0]) {
		XENSTORE_RING_IDX cons = intf->req_cons, prod = intf->req_prod;
		mb();			/* write the data after reading the consumer index */
		if (prod - cons > XENSTORE_RING_SIZE) {
			set_broken("req indices cons %u prod %u", cons, prod);
			return;
		}
		uint32_t space = XENSTORE_RING_SIZE - (prod - cons);
		if (!space && rdtsc() >= end) {
			set_broken("req ring full for %u ms (cons %u prod %u)", XS_TIMEOUT_MS, cons, prod);
			return;
		}
		if (!space) {
			/* Full: the server drains it; meanwhile take replies/events. */
			rx_pump();
			if (!ring_wait(WAIT_REQ_SPACE, end))
				set_broken("req ring full for %u ms (cons %u prod %u)", XS_TIMEOUT_MS,
					   intf->req_cons, intf->req_prod);
			continue;
		}
		uint32_t n = len < space ? len : space;
		for (uint32_t i = 0; i < n; i++)
			intf->req[MASK_XENSTORE_IDX(prod + i)] = p[i];
		wmb();			/* the data before the new producer index */
		intf->req_prod = prod + n;
		notify();
		p += n;
		len -= n;
	}
}

static const char *type_name(uint32_t t)
{
	static const char *const names[] = {
		[XS_CONTROL] = "CONTROL", [XS_DIRECTORY] = "DIRECTORY", [XS_READ] = "READ",
		[XS_GET_PERMS] = "GET_PERMS", [XS_WATCH] = "WATCH", [XS_UNWATCH] = "UNWATCH",
		[XS_TRANSACTION_START] = "TRANSACTION_START",
		[XS_TRANSACTION_END] = "TRANSACTION_END", [XS_WRITE] = "WRITE",
		[XS_MKDIR] = "MKDIR", [XS_RM] = "RM", [XS_SET_PERMS] = "SET_PERMS",
		[XS_WATCH_EVENT] = "WATCH_EVENT", [XS_ERROR] = "ERROR",
	};
	return t < ARRAY_SIZE(names) && names[t] ? names[t] : "?";
}

/*
 * One request (payload a[0..alen) b[0..blen)) and its reply, which lands in
 * reply_hdr/reply_body. Sets and returns xs_status.
 */
static int xs_talk(uint32_t type, uint32_t tx, const char *a, uint32_t alen,
		   const char *b, uint32_t blen)
{
	if (!intf && !xs_broken[0])
		set_broken("not connected");
	if (xs_broken[0]) {
		snprintf(xs_err, sizeof(xs_err), "broken: %s", xs_broken);
		return xs_status = -1;
	}
	if (alen + blen > XENSTORE_PAYLOAD_MAX) {
		snprintf(xs_err, sizeof(xs_err), "client: payload %u > %u", alen + blen,
			 XENSTORE_PAYLOAD_MAX);
		return xs_status = -1;
	}
	struct xsd_sockmsg h = { .type = type, .req_id = ++xs_req_id, .tx_id = tx, .len = alen + blen };
	uint64_t end = tsc_deadline_ms(XS_TIMEOUT_MS);
	tx_write(&h, HDR, end);
	tx_write(a, alen, end);
	tx_write(b, blen, end);
	while (!xs_broken[0] && !reply_ready) {
		rx_pump();
		if (reply_ready || xs_broken[0])
			break;
		if (rdtsc() >= end || !ring_wait(WAIT_RSP, end))
			set_broken("no reply to %s (req_id %u) in %u ms (req %u/%u rsp %u/%u, partial %u)",
				   type_name(type), h.req_id, XS_TIMEOUT_MS, intf->req_cons,
				   intf->req_prod, intf->rsp_cons, intf->rsp_prod, rx_got);
	}
	if (xs_broken[0]) {
		snprintf(xs_err, sizeof(xs_err), "broken: %s", xs_broken);
		return xs_status = -1;
	}
	reply_ready = 0;
	if (reply_hdr.req_id != h.req_id) {
		set_broken("reply req_id %u (type %s) to %s req_id %u", reply_hdr.req_id,
			   type_name(reply_hdr.type), type_name(type), h.req_id);
		snprintf(xs_err, sizeof(xs_err), "broken: %s", xs_broken);
		return xs_status = -1;
	}
	if (reply_hdr.type == XS_ERROR) {
		snprintf(xs_err, sizeof(xs_err), "%.*s", 40, reply_body);
		return xs_status = 1;
	}
	if (reply_hdr.type != type) {
		set_broken("reply type %u (%s) to %s", reply_hdr.type, type_name(reply_hdr.type),
			   type_name(type));
		snprintf(xs_err, sizeof(xs_err), "broken: %s", xs_broken);
		return xs_status = -1;
	}
	xs_err[0] = 0;
	return xs_status = 0;
}

static uint32_t slen(const char *s)
{
	return (uint32_t)strlen(s) + 1;		/* with the NUL */
}

/* ------------------------------------------------------------------ */
/* The client API: 0/1/-1 as xs_status; strings valid until the next call */

/* Value of `path` (NUL-terminated; *len without it), or NULL. */
static const char *xs_read(uint32_t tx, const char *path, uint32_t *len)
{
	if (xs_talk(XS_READ, tx, path, slen(path), NULL, 0))
		return NULL;
	if (len)
		*len = reply_hdr.len;
	return reply_body;
}

static int xs_write(uint32_t tx, const char *path, const char *value)
{
	return xs_talk(XS_WRITE, tx, path, slen(path), value, (uint32_t)strlen(value));
}

static int xs_mkdir(uint32_t tx, const char *path)
{
	return xs_talk(XS_MKDIR, tx, path, slen(path), NULL, 0);
}

static int xs_rm(uint32_t tx, const char *path)
{
	return xs_talk(XS_RM, tx, path, slen(path), NULL, 0);
}

/* Children as NUL-separated names, *len bytes in all, or NULL. */
static const char *xs_directory(uint32_t tx, const char *path, uint32_t *len)
{
	if (xs_talk(XS_DIRECTORY, tx, path, slen(path), NULL, 0))
		return NULL;
	*len = reply_hdr.len;
	return reply_body;
}

/* Permissions as NUL-separated "<n|r|w|b><domid>" entries, owner first. */
static const char *xs_get_perms(uint32_t tx, const char *path, uint32_t *len)
{
	if (xs_talk(XS_GET_PERMS, tx, path, slen(path), NULL, 0))
		return NULL;
	*len = reply_hdr.len;
	return reply_body;
}

static int xs_watch(const char *path, const char *token)
{
	return xs_talk(XS_WATCH, 0, path, slen(path), token, slen(token));
}

/* Unwatch; queued events for this token are dropped (as Linux does). */
static int xs_unwatch(const char *path, const char *token)
{
	int r = xs_talk(XS_UNWATCH, 0, path, slen(path), token, slen(token));
	uint32_t keep = wq_head;
	for (uint32_t i = wq_head; i != wq_tail; i++) {
		const char *b = wq[i % WQ_LEN].body;
		if (streq(b + strlen(b) + 1, token))
			continue;
		if (keep != i)
			wq[keep % WQ_LEN] = wq[i % WQ_LEN];
		keep++;
	}
	wq_tail = keep;
	return r;
}

static int xs_transaction_start(uint32_t *tx)
{
	if (xs_talk(XS_TRANSACTION_START, 0, "", 1, NULL, 0))
		return xs_status;
	uint32_t id = 0;
	const char *p = reply_body;
	while (*p >= '0' && *p <= '9')
		id = id * 10 + (uint32_t)(*p++ - '0');
	if (*p || p == reply_body || !id) {
		snprintf(xs_err, sizeof(xs_err), "bad transaction id \"%.*s\"", 20, reply_body);
		return xs_status = -1;
	}
	*tx = id;
	return 0;
}

static int xs_transaction_end(uint32_t tx, int commit)
{
	return xs_talk(XS_TRANSACTION_END, tx, commit ? "T" : "F", 2, NULL, 0);
}

/* The next watch event within `ms`: 1 (path/token point at a static copy), 0 timeout, -1 broken. */
static int xs_wait_watch(const char **path, const char **token, uint64_t ms)
{
	static char ev[WQ_BODY];
	uint64_t end = tsc_deadline_ms(ms);
	for (;;) {
		if (!intf || xs_broken[0])
			return -1;
		rx_pump();
		if (wq_head != wq_tail) {
			memcpy(ev, wq[wq_head % WQ_LEN].body, WQ_BODY);
			wq_head++;
			*path = ev;
			*token = ev + strlen(ev) + 1;
			return 1;
		}
		if (xs_broken[0])
			return -1;
		if (rdtsc() >= end || !ring_wait(WAIT_RSP, end))
			return 0;
	}
}

/* ------------------------------------------------------------------ */
/* Connecting (once per boot)                                          */

static const char *xs_connect_once(void);

/* Once per boot; the reason is kept (fail()'s buffer is reused by others). */
static const char *xs_connect(void)
{
	static char reason[160];
	static int done;
	if (!done) {
		done = 1;
		const char *r = xs_connect_once();
		if (r)
			snprintf(reason, sizeof(reason), "%s", r);
	}
	return reason[0] ? reason : NULL;
}

static const char *xs_connect_once(void)
{
	const char *result;

	uint64_t pfn, port;
	const char *r;
	if ((r = hvm_get_param(HVM_PARAM_STORE_PFN, &pfn)) ||
	    (r = hvm_get_param(HVM_PARAM_STORE_EVTCHN, &port)))
		return result = fail("no store: %s", r);
	printk("PVHINFO xenstore ring pfn 0x%lx port %lu\n", (unsigned long)pfn, (unsigned long)port);
	if (!pfn)
		return result = "no store";
	if (!phys_ok(pfn << 12, PAGE_SIZE))
		return result = fail("no store: pfn 0x%lx not below 4 GiB", (unsigned long)pfn);
	if (!port || port >= EVTCHN_2L_NR_CHANNELS)
		return result = fail("no store: HVM_PARAM_STORE_EVTCHN %lu", (unsigned long)port);

	/* Upcalls only wake us; without them the waits spin instead of halting. */
	if ((r = xen_setup()))
		printk("PVHINFO xenstore without upcalls (spinning): %s\n", r);
	else
		xs_use_hlt = 1;
	xs_port = (evtchn_port_t)port;
	struct evtchn_unmask um = { .port = xs_port };
	long rc = evtchn_op(EVTCHNOP_unmask, &um);
	if (rc != 0)
		printk("PVHINFO xenstore EVTCHNOP_unmask(%u) rc %ld\n", xs_port, rc);

	volatile struct xenstore_domain_interface *x = PHYS(pfn << 12);
	printk("PVHINFO xenstore req %u/%u rsp %u/%u server_features 0x%x connection %u error %u\n",
	       x->req_cons, x->req_prod, x->rsp_cons, x->rsp_prod, x->server_features,
	       x->connection, x->error);
	if (x->req_prod - x->req_cons > XENSTORE_RING_SIZE ||
	    x->rsp_prod - x->rsp_cons > XENSTORE_RING_SIZE)
		return result = fail("ring indices broken: req %u/%u rsp %u/%u", x->req_cons,
				     x->req_prod, x->rsp_cons, x->rsp_prod);
	if (x->rsp_prod != x->rsp_cons) {
		/* Linux (xb_init_comms) discards stale responses the same way. */
		printk("PVHINFO xenstore discarding %u stale response bytes\n",
		       x->rsp_prod - x->rsp_cons);
		x->rsp_cons = x->rsp_prod;
	}
	intf = x;
	return result = NULL;
}

/* ------------------------------------------------------------------ */
/* Scenario helpers                                                    */

static unsigned nchecks, nfailed;
static char first_failure[160];

/* Printable, short copy of a reply for "got=". */
static const char *shown(const char *s, uint32_t len)
{
	static char buf[4][72];
	static unsigned which;
	char *b = buf[which++ % 4];
	uint32_t n = 0;
	if (!s)
		return snprintf(b, sizeof(buf[0]), "<%s>", xs_err), b;
	for (uint32_t i = 0; i < len && n < sizeof(buf[0]) - 4; i++)
		b[n++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : (s[i] ? '?' : ',');
	if (n < len)
		b[n++] = '.', b[n++] = '.';
	b[n] = 0;
	return b;
}

static void check(const char *name, int ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void check(const char *name, int ok, const char *fmt, ...)
{
	char got[120];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(got, sizeof(got), fmt, ap);
	va_end(ap);
	nchecks++;
	if (ok) {
		printk("PVHTEST xenstore.%s PASS\n", name);
		return;
	}
	printk("PVHTEST xenstore.%s FAIL got=%s\n", name, got);
	if (!nfailed++)
		snprintf(first_failure, sizeof(first_failure), "%s got=%s", name, got);
}

/* The read of `path` equals `want` (or fails with error `want_err`). */
static void check_read(const char *name, uint32_t tx, const char *path, const char *want,
		       const char *want_err)
{
	uint32_t len = 0;
	const char *v = xs_read(tx, path, &len);
	if (want_err)
		check(name, !v && xs_status == 1 && streq(xs_err, want_err), "%s", shown(v, len));
	else
		check(name, v && len == strlen(want) && streq(v, want), "%s", shown(v, len));
}

static void check_ok(const char *name, int status)
{
	check(name, status == 0, "<%s>", xs_err);
}

static void check_err(const char *name, int status, const char *want_err)
{
	check(name, status == 1 && streq(xs_err, want_err), "%s",
	      status == 0 ? "OK" : xs_err);
}

static void check_event(const char *name, const char *want_path, const char *want_token,
			uint64_t ms)
{
	const char *p = "", *t = "";
	int r = xs_wait_watch(&p, &t, ms);
	if (r == 1)
		check(name, streq(p, want_path) && streq(t, want_token), "path=%s token=%s",
		      shown(p, (uint32_t)strlen(p)), shown(t, (uint32_t)strlen(t)));
	else
		check(name, 0, "%s", r == 0 ? "<no event>" : xs_err);
}

/* ------------------------------------------------------------------ */
/* xenstore                                                            */

static char long_path[2200];
static char big_value[3000];

static const char *scen_xenstore(void)
{
	const char *r;
	if ((r = xs_connect()))
		return r;
	nchecks = nfailed = 0;
	first_failure[0] = 0;

	uint32_t f = intf->server_features;
	uint32_t want_f = XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR;
	check("features", (f & want_f) == want_f, "0x%x", f);
	check("connected", intf->connection == XENSTORE_CONNECTED && intf->error == XENSTORE_ERROR_NONE,
	      "connection=%u error=%u", intf->connection, intf->error);

	int d = xen_domid();
	char domid[12];
	snprintf(domid, sizeof(domid), "%d", d > 0 ? d : 1);
	check_read("domid", 0, "domid", domid, NULL);

	uint32_t len = 0;
	const char *v = xs_read(0, "name", &len);
	check("name", v && len > 0, "%s", shown(v, len));
	if (v)
		printk("PVHINFO xenstore name \"%s\"\n", shown(v, len));

	check_ok("write", xs_write(0, "data/pvhtest", "hello"));
	check_read("read_back", 0, "data/pvhtest", "hello", NULL);

	/* A value larger than the ring: both directions stream across the wrap. */
	for (size_t i = 0; i < sizeof(big_value) - 1; i++)
		big_value[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[i % 36];
	check_ok("write_big", xs_write(0, "data/big", big_value));
	v = xs_read(0, "data/big", &len);
	check("read_big", v && len == sizeof(big_value) - 1 && streq(v, big_value), "len=%u %s",
	      v ? len : 0, shown(v, len));
	check_ok("rm_big", xs_rm(0, "data/big"));

	check_ok("mkdir", xs_mkdir(0, "data/dir"));
	check_ok("write_a", xs_write(0, "data/dir/a", "1"));
	check_ok("write_b", xs_write(0, "data/dir/b", "2"));
	v = xs_directory(0, "data/dir", &len);
	int ok = v && (len == 4 && ((v[0] == 'a' && v[2] == 'b') || (v[0] == 'b' && v[2] == 'a')) &&
		       !v[1] && !v[3]);
	check("directory", ok, "%s", shown(v, len));
	check_ok("rm_dir", xs_rm(0, "data/dir"));
	check_read("rm_recursive", 0, "data/dir/a", NULL, "ENOENT");

	check_err("eacces", xs_write(0, "/local/domain/0/pvhtest", "x"), "EACCES");

	v = xs_get_perms(0, "data/pvhtest", &len);
	char owner_n[16], owner_b[16];
	snprintf(owner_n, sizeof(owner_n), "n%s", domid);
	snprintf(owner_b, sizeof(owner_b), "b%s", domid);
	check("perms", v && (streq(v, owner_n) || streq(v, owner_b)), "%s", shown(v, len));
	if (v)
		printk("PVHINFO xenstore perms of data/pvhtest: %s\n", shown(v, len));

	/* Watches: the initial event, a change, none after unwatch. */
	uint32_t dropped0 = wq_dropped;
	xs_rm(0, "data/w");
	check_ok("watch", xs_watch("data/w", "tok"));
	check_event("watch_initial", "data/w", "tok", 2000);
	check_ok("watch_write", xs_write(0, "data/w", "x"));
	check_event("watch_event", "data/w", "tok", 2000);
	check_ok("unwatch", xs_unwatch("data/w", "tok"));
	xs_write(0, "data/w", "y");
	const char *p, *t;
	int ev = xs_wait_watch(&p, &t, 100);
	check("unwatch_quiet", ev == 0, "%s", ev == 1 ? p : xs_err);
	check("watch_queue", wq_dropped == dropped0, "%u dropped", wq_dropped - dropped0);

	/* Transactions: isolation, commit, conflict. */
	xs_rm(0, "data/t");
	uint32_t tx = 0, tx2 = 0;
	int st = xs_transaction_start(&tx);
	check_ok("tx_start", st);
	if (st == 0) {
		check_ok("tx_write", xs_write(tx, "data/t", "1"));
		check_read("tx_read_inside", tx, "data/t", "1", NULL);
		check_read("tx_isolated", 0, "data/t", NULL, "ENOENT");
		check_ok("tx_commit", xs_transaction_end(tx, 1));
		check_read("tx_committed", 0, "data/t", "1", NULL);
	}
	st = xs_transaction_start(&tx2);
	check_ok("tx2_start", st);
	if (st == 0) {
		check_read("tx2_read", tx2, "data/t", "1", NULL);
		check_ok("tx2_outside_write", xs_write(0, "data/t", "2"));
		check_ok("tx2_write", xs_write(tx2, "data/t", "3"));
		check_err("tx2_conflict", xs_transaction_end(tx2, 1), "EAGAIN");
		check_read("tx2_kept", 0, "data/t", "2", NULL);
	}
	/* An abandoned transaction leaves nothing behind. */
	st = xs_transaction_start(&tx);
	if (st == 0) {
		xs_write(tx, "data/t", "4");
		check_ok("tx_abort", xs_transaction_end(tx, 0));
		check_read("tx_aborted", 0, "data/t", "2", NULL);
	} else {
		check_ok("tx_abort", st);
	}

	check_read("enoent", 0, "data/nonexistent", NULL, "ENOENT");

	/* Relative path longer than XENSTORE_REL_PATH_MAX (2048) after the domain prefix. */
	memcpy(long_path, "data/", 5);
	for (size_t i = 5; i < 2100; i++)
		long_path[i] = 'x';
	long_path[2100] = 0;
	check_read("einval_long_path", 0, long_path, NULL, "EINVAL");

	/* The connection still works after all the errors. */
	check_read("still_alive", 0, "domid", domid, NULL);

	if (nfailed)
		return fail("%u of %u checks failed, first: %s", nfailed, nchecks, first_failure);
	pass_note("checks=%u", nchecks);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* control: the shutdown watch, as Linux's drivers/xen/manage.c         */

/*
 * Read control/shutdown and acknowledge a known request in one transaction
 * (manage.c shutdown_handler; retried on EAGAIN). Returns NULL and sets
 * *reason when a request was taken, "" when there is none (absent, empty or
 * unknown: ignored), else a failure.
 */
static const char *control_take(char *value, size_t size, unsigned *reason)
{
	for (int attempt = 0; attempt < 10; attempt++) {
		uint32_t tx, len;
		int known = 1;
		if (xs_transaction_start(&tx))
			return fail("transaction_start: %s", xs_err);
		const char *v = xs_read(tx, "control/shutdown", &len);
		if (!v || !len) {
			xs_transaction_end(tx, 0);
			return "";
		}
		snprintf(value, size, "%s", shown(v, len));
		if (streq(value, "poweroff") || streq(value, "halt"))
			*reason = SHUTDOWN_poweroff;
		else if (streq(value, "reboot"))
			*reason = SHUTDOWN_reboot;
		else if (streq(value, "suspend"))
			*reason = SHUTDOWN_suspend;
		else
			known = 0;
		/* Only acknowledge what we handle (as Linux). */
		if (known && xs_write(tx, "control/shutdown", ""))
			return fail("ack write: %s", xs_err);
		int e = xs_transaction_end(tx, 1);
		if (e == 1 && streq(xs_err, "EAGAIN"))
			continue;
		if (e)
			return fail("transaction_end: %s", xs_err);
		if (!known) {
			printk("PVHINFO control: ignoring shutdown request \"%s\"\n", value);
			return "";
		}
		return NULL;
	}
	return "transaction_end EAGAIN 10 times";
}

/*
 * Watch control/shutdown and wait (60 s guest time at most) for a known
 * request: NULL with *reason and value set, else a failure. `waiting` is
 * the scenario name for a "PVHTEST <name> WAITING" line once the watch is
 * armed and nothing is pending yet, or NULL for none.
 */
static const char *control_wait(const char *waiting, char *value, size_t size, unsigned *reason)
{
	const char *r;
	if (xs_watch("control/shutdown", "pvh-control"))
		return fail("watch control/shutdown: %s", xs_err);
	const char *p, *t;
	int ev = xs_wait_watch(&p, &t, XS_TIMEOUT_MS);
	if (ev != 1)
		return fail("no initial watch event: %s", ev ? xs_err : "timeout");

	*reason = SHUTDOWN_poweroff;
	/* A request written before the watch is seen at the initial event, as in Linux. */
	r = control_take(value, size, reason);
	if (r && r[0])
		return r;
	if (r && waiting)
		printk("PVHTEST %s WAITING\n", waiting);
	uint64_t end = tsc_deadline_ms(60000);
	while (r) {
		uint64_t now = rdtsc();
		if (now >= end)
			return "no shutdown request within 60 s";
		ev = xs_wait_watch(&p, &t, (end - now) / tsc_khz() + 1);
		if (ev < 0)
			return fail("%s", xs_err);
		if (ev == 0 || !streq(t, "pvh-control"))
			continue;
		r = control_take(value, size, reason);
		if (r && r[0])
			return r;
	}
	xs_unwatch("control/shutdown", "pvh-control");
	return NULL;
}

static const char *scen_control(void)
{
	const char *r;
	if ((r = xs_connect()))
		return r;
	static char value[32];
	unsigned reason;
	if ((r = control_wait("control", value, sizeof(value), &reason)))
		return r;
	pass_note("got=%s", value);
	finish_now("control", NULL, reason);
}

/* ------------------------------------------------------------------ */
/* balloon: memory/target, XENMEM_decrease_reservation                  */

#define BATCH 512
static xen_pfn_t batch[BATCH];

extern uint8_t _end[];

static long current_reservation(void)
{
	domid_t self = DOMID_SELF;
	return memory_op(XENMEM_current_reservation, &self);
}

/* Page frames the guest must keep: its image and what the loader/VMM handed over. */
static int pfn_in_use(uint64_t pfn, const uint64_t *keep, size_t nkeep)
{
	if (pfn < (((uintptr_t)_end + PAGE_SIZE - 1) >> 12))
		return 1;	/* low memory, the image, its stacks and scratch pages */
	for (size_t i = 0; i < nkeep; i += 2)
		if (pfn >= keep[i] && pfn < keep[i + 1])
			return 1;
	return 0;
}

static void keep_range(uint64_t *keep, size_t *n, size_t max, uint64_t pa, uint64_t len)
{
	if (*n + 2 > max || !len)
		return;
	keep[(*n)++] = pa >> 12;
	keep[(*n)++] = (pa + len + PAGE_SIZE - 1) >> 12;
}

static const char *parse_kib(const char *v, uint32_t len, uint64_t *kib)
{
	uint64_t n = 0;
	uint32_t i = 0;
	for (; i < len && v[i] >= '0' && v[i] <= '9'; i++)
		n = n * 10 + (uint64_t)(v[i] - '0');
	if (!i || i != len)
		return fail("memory/target \"%s\" is not a number", shown(v, len));
	*kib = n;
	return NULL;
}

/*
 * The page frames the balloon may give back, in the order it gives them:
 * from the top of RAM down (highest e820 RAM entry first, each from its
 * end), skipping everything pfn_in_use() keeps.
 */
struct free_pages {
	uint64_t keep[2 * 16];
	size_t nkeep;
	const struct hvm_memmap_table_entry *mm;
	uint32_t entries;
	uint64_t below;		/* the next entry must start below this */
	uint64_t first, next;	/* current entry: frames [first, next) not visited yet */
};

static const char *free_pages_start(struct free_pages *w)
{
	const struct hvm_start_info *si = start_info;
	uint64_t v;

	memset(w, 0, sizeof(*w));
	w->below = ~0ULL;
	keep_range(w->keep, &w->nkeep, ARRAY_SIZE(w->keep), pvh_start_info_pa, sizeof(*si));
	keep_range(w->keep, &w->nkeep, ARRAY_SIZE(w->keep), si->cmdline_paddr, 4096);
	keep_range(w->keep, &w->nkeep, ARRAY_SIZE(w->keep), si->memmap_paddr,
		   si->memmap_entries * sizeof(struct hvm_memmap_table_entry));
	keep_range(w->keep, &w->nkeep, ARRAY_SIZE(w->keep), si->rsdp_paddr, 36);
	if (si->nr_modules && phys_ok(si->modlist_paddr, sizeof(struct hvm_modlist_entry))) {
		const struct hvm_modlist_entry *m = PHYS(si->modlist_paddr);
		keep_range(w->keep, &w->nkeep, ARRAY_SIZE(w->keep), si->modlist_paddr,
			   si->nr_modules * sizeof(*m));
		for (uint32_t i = 0; i < si->nr_modules && i < 4; i++)
			keep_range(w->keep, &w->nkeep, ARRAY_SIZE(w->keep), m[i].paddr, m[i].size);
	}
	if (!hvm_get_param(HVM_PARAM_STORE_PFN, &v) && v)
		keep_range(w->keep, &w->nkeep, ARRAY_SIZE(w->keep), v << 12, PAGE_SIZE);
	if (!hvm_get_param(HVM_PARAM_CONSOLE_PFN, &v) && v)
		keep_range(w->keep, &w->nkeep, ARRAY_SIZE(w->keep), v << 12, PAGE_SIZE);

	if (si->version < 1 || !si->memmap_entries ||
	    !phys_ok(si->memmap_paddr, si->memmap_entries * sizeof(struct hvm_memmap_table_entry)))
		return "no memory map in start_info";
	w->mm = PHYS(si->memmap_paddr);
	w->entries = si->memmap_entries;
	return NULL;
}

/* The next frame the balloon may give back: 1 and *pfn, or 0 when none is left. */
static int free_pages_next(struct free_pages *w, uint64_t *pfn)
{
	for (;;) {
		while (w->next > w->first) {
			uint64_t p = --w->next;
			if (!pfn_in_use(p, w->keep, w->nkeep)) {
				*pfn = p;
				return 1;
			}
		}
		const struct hvm_memmap_table_entry *e = NULL;
		for (uint32_t i = 0; i < w->entries; i++)
			if (w->mm[i].type == XEN_HVM_MEMMAP_TYPE_RAM && w->mm[i].addr < w->below &&
			    (!e || w->mm[i].addr > e->addr))
				e = &w->mm[i];
		if (!e)
			return 0;
		w->below = e->addr;
		w->first = (e->addr + PAGE_SIZE - 1) >> 12;
		w->next = (e->addr + e->size) >> 12;
	}
}

static struct free_pages walk;

/*
 * Write every page the balloon may later give back (one store per page is
 * enough for the host to back it), so that a release shows in the VMM's
 * resident set. Pages above what head.S maps (4 GiB) are left alone.
 */
static const char *balloon_touch(uint64_t *touched)
{
	const char *r;
	uint64_t pfn;
	if ((r = free_pages_start(&walk)))
		return r;
	*touched = 0;
	while (free_pages_next(&walk, &pfn)) {
		if (!phys_ok(pfn << 12, PAGE_SIZE))
			continue;
		*(volatile uint64_t *)PHYS(pfn << 12) = pfn;
		(*touched)++;
	}
	return NULL;
}

static const char *balloon_release(uint64_t pages, uint64_t *released)
{
	const char *r;
	uint64_t pfn;
	uint32_t n = 0;

	if ((r = free_pages_start(&walk)))
		return r;
	*released = 0;
	while (*released + n < pages && free_pages_next(&walk, &pfn)) {
		batch[n++] = pfn;
		if (n == BATCH || *released + n == pages) {
			struct xen_memory_reservation res = {
				.nr_extents = n, .extent_order = 0, .domid = DOMID_SELF,
			};
			set_xen_guest_handle(res.extent_start, batch);
			long rc = memory_op(XENMEM_decrease_reservation, &res);
			if (rc != (long)n)
				return fail("decrease_reservation of %u pages (0x%lx..0x%lx) rc %ld",
					    n, (unsigned long)batch[n - 1],
					    (unsigned long)batch[0], rc);
			*released += n;
			n = 0;
		}
	}
	if (*released < pages)
		return fail("only %lu free pages to release, target needs %lu",
			    (unsigned long)*released, (unsigned long)pages);
	return NULL;
}

static const char *scen_balloon(void)
{
	const char *r;
	if ((r = xs_connect()))
		return r;
	if (xs_watch("memory/target", "pvh-balloon"))
		return fail("watch memory/target: %s", xs_err);
	const char *p, *t;
	int ev = xs_wait_watch(&p, &t, XS_TIMEOUT_MS);
	if (ev != 1)
		return fail("no initial watch event: %s", ev ? xs_err : "timeout");
	uint64_t touched = 0;
	if ((r = balloon_touch(&touched)))
		return r;
	printk("PVHINFO balloon wrote %lu releasable pages\n", (unsigned long)touched);
	uint32_t len;
	const char *v = xs_read(0, "memory/target", &len);
	printk("PVHTEST balloon WAITING target=%s\n", v ? shown(v, len) : "none");

	uint64_t end = tsc_deadline_ms(60000);
	for (;;) {
		uint64_t now = rdtsc();
		if (now >= end)
			return "no lower memory/target within 60 s";
		ev = xs_wait_watch(&p, &t, (end - now) / tsc_khz() + 1);
		if (ev < 0)
			return fail("%s", xs_err);
		if (ev == 0 || !streq(t, "pvh-balloon"))
			continue;
		v = xs_read(0, "memory/target", &len);
		if (!v)
			continue;
		uint64_t kib = 0;
		if ((r = parse_kib(v, len, &kib)))
			return r;
		long cur = current_reservation();
		if (cur <= 0)
			return fail("XENMEM_current_reservation rc %ld", cur);
		uint64_t target_pages = kib / 4;
		if (target_pages >= (uint64_t)cur) {
			printk("PVHINFO balloon target %lu KiB, current %ld pages: nothing to release\n",
			       (unsigned long)kib, cur);
			continue;
		}
		uint64_t want = (uint64_t)cur - target_pages, released = 0;
		printk("PVHINFO balloon target %lu KiB, current %ld pages: releasing %lu\n",
		       (unsigned long)kib, cur, (unsigned long)want);
		r = balloon_release(want, &released);
		xs_unwatch("memory/target", "pvh-balloon");
		if (r)
			return r;
		long after = current_reservation();
		if (after != cur - (long)released)
			return fail("released %lu pages but current_reservation %ld -> %ld",
				    (unsigned long)released, cur, after);
		pass_note("released=%lu", (unsigned long)released);
		scenario_result("balloon", NULL);
		/* Then stay up for the host to look (its RSS), until control/shutdown. */
		static char value[32];
		unsigned reason;
		if ((r = control_wait(NULL, value, sizeof(value), &reason)))
			return r;
		printk("PVHINFO balloon shutdown got=%s\n", value);
		finish_now(NULL, NULL, reason);
	}
}

/* ------------------------------------------------------------------ */
/* bench_xenstore                                                      */

static const char *scen_bench_xenstore(void)
{
	const char *r;
	if ((r = xs_connect()))
		return r;
	unsigned long n = opt_num("pvh.bench=", 1000);
	if (!n)
		n = 1000;
	if (!xs_read(0, "domid", NULL))		/* warm-up, and a clear failure */
		return fail("read domid: %s", xs_err);
	uint64_t t0 = rdtsc();
	for (unsigned long i = 0; i < n; i++)
		if (!xs_read(0, "domid", NULL))
			return fail("read %lu of %lu: %s", i, n, xs_err);
	uint64_t cycles = rdtsc() - t0, khz = tsc_khz();
	printk("PVHBENCH bench_xenstore iterations=%lu cycles=%lu tsc_khz=%lu\n", n,
	       (unsigned long)cycles, (unsigned long)khz);
	/* ns = cycles * 1e6 / kHz, per op; split to stay within 64 bits. */
	uint64_t ns = cycles / khz * 1000000 + cycles % khz * 1000000 / khz;
	pass_note("n=%lu ns_per_op=%lu", n, (unsigned long)(ns / n));
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The client for other files (grants.c, blkfront.c)                   */

/*
 * For hostile.c: one request of any type, transaction and payload (the
 * header's len is the payload's, so the stream stays framed); 0 a reply of
 * that type, 1 XS_ERROR, -1 broken. The reply's type in *rtype.
 */
int xenstore_raw(uint32_t type, uint32_t tx, const void *payload, uint32_t len, uint32_t *rtype)
{
	int st = xs_talk(type, tx, payload, len, NULL, 0);
	*rtype = reply_hdr.type;
	return st;
}
const char *xenstore_connect(void) { return xs_connect(); }
const char *xenstore_read(const char *path, uint32_t *len) { return xs_read(0, path, len); }
int xenstore_write(const char *path, const char *value) { return xs_write(0, path, value); }
int xenstore_rm(const char *path) { return xs_rm(0, path); }
int xenstore_watch(const char *path, const char *token) { return xs_watch(path, token); }
int xenstore_unwatch(const char *path, const char *token) { return xs_unwatch(path, token); }
int xenstore_wait_watch(const char **path, const char **token, uint64_t ms)
{
	return xs_wait_watch(path, token, ms);
}
const char *xenstore_error(void) { return xs_err; }
/* For blkfront.c: device discovery and Linux's transactional node writes. */
const char *xenstore_directory(const char *path, uint32_t *len) { return xs_directory(0, path, len); }
int xenstore_transaction_start(uint32_t *tx) { return xs_transaction_start(tx); }
int xenstore_transaction_end(uint32_t tx, int commit) { return xs_transaction_end(tx, commit); }
int xenstore_write_tx(uint32_t tx, const char *path, const char *value) { return xs_write(tx, path, value); }

/* Run only when named (see testguest/README.md). */
const struct scenario xenstore_scenarios[] = {
	{ "xenstore", scen_xenstore },
	{ "control", scen_control },
	{ "balloon", scen_balloon },
	{ "bench_xenstore", scen_bench_xenstore },
};
const size_t nr_xenstore_scenarios = ARRAY_SIZE(xenstore_scenarios);
