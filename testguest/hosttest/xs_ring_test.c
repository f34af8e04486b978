/*
 * Host-side test of the test guest's XenStore ring client (xenstore.c):
 * the client code is included as is and talks to a toy in-process server
 * that moves at most 7 bytes per step in each direction (headers split
 * across steps and across the ring's wrap), starts the free-running indices
 * just below 2^32, and sends a watch's initial event *before* the WATCH
 * reply (interleaving). Not a XenStore implementation: only enough
 * semantics for the ring mechanics.
 *
 *   make -C testguest hosttest
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../xenstore.c"

/* ---- stubs for the guest environment ---- */
const struct hvm_start_info *start_info;
uint32_t pvh_start_info_pa;
uint8_t _end[1];
static struct xenstore_domain_interface ring;
static unsigned notifies;

static void server_step(void);

long hypercall(unsigned int nr, unsigned long a1, unsigned long a2, unsigned long a3,
	       unsigned long a4, unsigned long a5)
{
	(void)nr; (void)a1; (void)a2; (void)a3; (void)a4; (void)a5;
	return -XEN_ENOSYS;
}
long evtchn_send(uint32_t port) { (void)port; notifies++; server_step(); return 0; }
int wait_until(int (*cond)(const void *), const void *arg, uint64_t timeout_ms, int use_hlt,
	       uint32_t *wd)
{
	(void)timeout_ms; (void)use_hlt; (void)wd;
	for (int i = 0; i < 100000; i++) {
		if (cond(arg))
			return 1;
		server_step();
	}
	return cond(arg);
}
uint64_t tsc_khz(void) { return 1000000; }
uint64_t tsc_deadline_ms(uint64_t ms) { return rdtsc() + ms * 1000000 * 10; }
const char *xen_setup(void) { return NULL; }
int xen_domid(void) { return 1; }
const char *hvm_get_param(uint32_t index, uint64_t *value)
{
	*value = index == HVM_PARAM_STORE_PFN ? 0x1234 : 7;
	return NULL;
}
unsigned long opt_num(const char *key, unsigned long def) { (void)key; return def; }
void pass_note(const char *fmt, ...) { (void)fmt; }
void finish_now(const char *name, const char *reason, unsigned int r)
{
	printf("finish_now %s %s %u\n", name, reason ? reason : "PASS", r);
	exit(0);
}
void printk(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}
const char *fail(const char *fmt, ...)
{
	static char b[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(b, sizeof(b), fmt, ap);
	va_end(ap);
	return b;
}

/* ---- the toy server ---- */
#define CHUNK 7
static char in[HDR + XENSTORE_PAYLOAD_MAX];
static uint32_t in_got;
static char out[1 << 16];
static uint32_t out_len, out_sent;
static struct { char key[2200]; char val[XENSTORE_PAYLOAD_MAX]; uint32_t len; int used; } kv[16];
static struct { char path[64], token[64]; int used; } watches[4];

static void reply(uint32_t type, uint32_t req_id, uint32_t tx, const char *b, uint32_t len)
{
	struct xsd_sockmsg h = { type, req_id, tx, len };
	if (out_len + HDR + len > sizeof(out)) {
		/* compact */
		memmove(out, out + out_sent, out_len - out_sent);
		out_len -= out_sent;
		out_sent = 0;
	}
	memcpy(out + out_len, &h, HDR);
	memcpy(out + out_len + HDR, b, len);
	out_len += HDR + len;
}

static void event(const char *path, const char *token)
{
	char b[200];
	uint32_t n = (uint32_t)snprintf(b, sizeof(b), "%s%c%s", path, 0, token) + 1;
	reply(XS_WATCH_EVENT, 0, 0, b, n);
}

static void handle(void)
{
	struct xsd_sockmsg h;
	memcpy(&h, in, HDR);
	char *p = in + HDR;
	p[h.len] = 0;
	uint32_t plen = (uint32_t)strlen(p);
#define ERR(s) reply(XS_ERROR, h.req_id, h.tx_id, s, sizeof(s))
#define OK() reply(h.type, h.req_id, h.tx_id, "OK", 3)
	if (plen > 2048 && h.type != XS_TRANSACTION_END) { ERR("EINVAL"); return; }
	int found = -1, free_slot = -1;
	for (int i = 0; i < 16; i++) {
		if (kv[i].used && !strcmp(kv[i].key, p)) found = i;
		if (!kv[i].used && free_slot < 0) free_slot = i;
	}
	switch (h.type) {
	case XS_READ:
		if (found < 0) ERR("ENOENT");
		else reply(XS_READ, h.req_id, h.tx_id, kv[found].val, kv[found].len);
		break;
	case XS_WRITE: {
		int i = found >= 0 ? found : free_slot;
		strcpy(kv[i].key, p);
		kv[i].len = h.len - plen - 1;
		memcpy(kv[i].val, p + plen + 1, kv[i].len);
		kv[i].val[kv[i].len] = 0;
		kv[i].used = 1;
		OK();
		for (int w = 0; w < 4; w++)
			if (watches[w].used && !strncmp(p, watches[w].path, strlen(watches[w].path)))
				event(p, watches[w].token);
		break;
	}
	case XS_RM:
		if (found >= 0) kv[found].used = 0;
		OK();
		break;
	case XS_WATCH:
		for (int w = 0; w < 4; w++)
			if (!watches[w].used) {
				strcpy(watches[w].path, p);
				strcpy(watches[w].token, p + plen + 1);
				watches[w].used = 1;
				event(p, p + plen + 1);	/* before the reply: interleaving */
				break;
			}
		OK();
		break;
	case XS_UNWATCH:
		for (int w = 0; w < 4; w++)
			if (watches[w].used && !strcmp(watches[w].path, p)) watches[w].used = 0;
		OK();
		break;
	case XS_TRANSACTION_START:
		reply(h.type, h.req_id, 0, "42", 3);
		break;
	default:
		OK();
	}
}

static void server_step(void)
{
	/* requests: at most CHUNK bytes */
	XENSTORE_RING_IDX c = ring.req_cons, pr = ring.req_prod;
	uint32_t n = 0;
	while (c != pr && n < CHUNK) {
		in[in_got++] = ring.req[MASK_XENSTORE_IDX(c)];
		c++, n++;
		if (in_got >= HDR && in_got == HDR + ((struct xsd_sockmsg *)in)->len) {
			handle();
			in_got = 0;
		}
	}
	ring.req_cons = c;
	/* responses: at most CHUNK bytes, if there is space */
	c = ring.rsp_cons;
	pr = ring.rsp_prod;
	n = 0;
	while (out_sent < out_len && pr - c < XENSTORE_RING_SIZE && n < CHUNK) {
		ring.rsp[MASK_XENSTORE_IDX(pr)] = out[out_sent++];
		pr++, n++;
	}
	ring.rsp_prod = pr;
}

static int failures;
#define EXPECT(cond, ...) do { if (!(cond)) { failures++; printf("FAIL %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

int main(void)
{
	ring.req_cons = ring.req_prod = ring.rsp_cons = ring.rsp_prod = 0xfffffc05u;
	/* Bypass xs_connect (physical addresses): connect to our ring. */
	intf = &ring;
	xs_port = 7;

	static char big[3001];
	for (int i = 0; i < 3000; i++)
		big[i] = (char)('a' + i % 26);
	for (int round = 0; round < 50; round++) {
		EXPECT(xs_write(0, "data/big", big) == 0, "write big: %s", xs_err);
		uint32_t len = 0;
		const char *v = xs_read(0, "data/big", &len);
		EXPECT(v && len == 3000 && !strcmp(v, big), "read big: len %u", len);
		EXPECT(!xs_read(0, "data/none", NULL) && xs_status == 1 && streq(xs_err, "ENOENT"),
		       "enoent: %d %s", xs_status, xs_err);
	}
	EXPECT(ring.req_prod < 0xfffffc05u && ring.rsp_prod < 0xfffffc05u, "indices wrapped (req_prod %u)", ring.req_prod);

	EXPECT(xs_watch("data/w", "tok") == 0, "watch: %s", xs_err);
	const char *p, *t;
	EXPECT(xs_wait_watch(&p, &t, 100) == 1 && streq(p, "data/w") && streq(t, "tok"), "initial event");
	EXPECT(xs_write(0, "data/w", "x") == 0, "write w");
	EXPECT(xs_read(0, "data/w", NULL) != NULL, "read w");	/* event queued meanwhile */
	EXPECT(xs_wait_watch(&p, &t, 100) == 1 && streq(p, "data/w"), "change event");
	EXPECT(xs_wait_watch(&p, &t, 10) == 0, "no third event");
	EXPECT(xs_write(0, "data/w", "y") == 0, "write w again");
	EXPECT(xs_unwatch("data/w", "tok") == 0, "unwatch");
	EXPECT(xs_wait_watch(&p, &t, 10) == 0, "unwatch dropped the queued event");

	uint32_t tx = 0;
	EXPECT(xs_transaction_start(&tx) == 0 && tx == 42, "tx start %u", tx);
	EXPECT(xs_transaction_end(tx, 1) == 0, "tx end");

	static char lp[2101];
	memset(lp, 'x', 2100);
	EXPECT(!xs_read(0, lp, NULL) && xs_status == 1 && streq(xs_err, "EINVAL"), "einval");

	/* Many small round trips: the bench path. */
	for (int i = 0; i < 20000; i++)
		if (!xs_read(0, "data/w", NULL)) { EXPECT(0, "read %d: %s", i, xs_err); break; }

	/* A reply with the wrong req_id breaks the connection. */
	reply(XS_READ, 999, 0, "1", 2);
	EXPECT(!xs_read(0, "data/w", NULL) && xs_status == -1, "wrong req_id detected");
	EXPECT(!xs_read(0, "data/w", NULL) && xs_status == -1, "stays broken");

	printf("%s: %d failures, %u notifies, req_prod %u rsp_prod %u\n",
	       failures ? "FAIL" : "PASS", failures, notifies, ring.req_prod, ring.rsp_prod);
	return failures != 0;
}
