/*
 * pvh test guest: xenbus frontend helpers shared by blkfront.c and
 * netfront.c (see xenbus_front.h). Linux's names are in the comments.
 */
#include "xenbus_front.h"

#define XB_DBG(f, ...) do { if ((f)->dbg >= 1) printk(__VA_ARGS__); } while (0)

char xb_val[256];

int xb_streq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

int xb_parse_u64(const char *s, uint64_t *out)
{
	uint64_t n = 0;
	const char *p = s;
	for (; *p >= '0' && *p <= '9'; p++)
		n = n * 10 + (uint64_t)(*p - '0');
	if (p == s || *p)
		return -1;
	*out = n;
	return 0;
}

const char *xb_state_name(unsigned s)
{
	static const char *const names[] = {
		"Unknown", "Initialising", "InitWait", "Initialised", "Connected",
		"Closing", "Closed", "Reconfiguring", "Reconfigured",
	};
	return s < ARRAY_SIZE(names) ? names[s] : "?";
}

int xb_get(const char *dir, const char *key)
{
	char path[192];
	uint32_t len = 0;
	snprintf(path, sizeof(path), "%s/%s", dir, key);
	const char *v = xenstore_read(path, &len);
	xb_val[0] = 0;
	if (!v)
		return xb_streq(xenstore_error(), "ENOENT") ? 0 : -1;
	if (len > sizeof(xb_val) - 1)
		len = sizeof(xb_val) - 1;
	memcpy(xb_val, v, len);
	xb_val[len] = 0;
	return 1;
}

const char *xb_num(const char *dir, const char *key, uint64_t def, uint64_t *out)
{
	int r = xb_get(dir, key);
	if (r < 0)
		return fail("read %s/%s: %s", dir, key, xenstore_error());
	if (r == 0) {
		*out = def;
		return NULL;
	}
	if (xb_parse_u64(xb_val, out))
		return fail("%s/%s = \"%.32s\" is not a number", dir, key, xb_val);
	return NULL;
}

const char *xb_need(const char *dir, const char *key, uint64_t *out)
{
	int r = xb_get(dir, key);
	if (r < 0)
		return fail("read %s/%s: %s", dir, key, xenstore_error());
	if (r == 0)
		return fail("no %s/%s", dir, key);
	if (xb_parse_u64(xb_val, out))
		return fail("%s/%s = \"%.32s\" is not a number", dir, key, xb_val);
	return NULL;
}

const char *xb_put(struct xenbus_front *f, uint32_t tx, const char *key, const char *fmt, ...)
{
	char path[96], value[64];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(value, sizeof(value), fmt, ap);
	va_end(ap);
	snprintf(path, sizeof(path), "%s/%s", f->fe, key);
	if (!xb_streq(key, "state"))
		XB_DBG(f, "PVHINFO %s: write %s = %s\n", f->tag, path, value);
	if (xenstore_write_tx(tx, path, value))
		return fail("write %s: %s", path, xenstore_error());
	return NULL;
}

const char *xb_switch_state(struct xenbus_front *f, unsigned s)
{
	const char *r = xb_put(f, 0, "state", "%u", s);
	if (!r)
		f->fe_state = s;
	XB_DBG(f, "PVHINFO %s: write %s/state = %u (%s)\n", f->tag, f->fe, s, xb_state_name(s));
	return r;
}

const char *xb_be_state(struct xenbus_front *f, unsigned *st)
{
	uint64_t v;
	const char *r = xb_num(f->be, "state", XenbusStateUnknown, &v);
	*st = (unsigned)v;
	return r;
}

/* The backend's `error` node (pvh's connect failure, Linux's xenbus_dev_error), if readable. */
const char *xb_be_error(struct xenbus_front *f)
{
	static char e[80];
	e[0] = 0;
	if (xb_get(f->be, "error") == 1)
		snprintf(e, sizeof(e), "; backend error: %.60s", xb_val);
	return e;
}

const char *xb_wait_be(struct xenbus_front *f, unsigned want, unsigned stop, const char *what,
		       unsigned *got)
{
	char path[160], token[16];
	const char *r = NULL;
	unsigned st = ~0u, last = ~0u;
	size_t tn = 0;
	snprintf(path, sizeof(path), "%s/state", f->be);
	snprintf(token, sizeof(token), "pvh-%s", f->tag);
	f->trail[0] = 0;
	if (xenstore_watch(path, token))
		return fail("watch %s: %s", path, xenstore_error());
	uint64_t end = tsc_deadline_ms(f->timeout_ms);
	for (;;) {
		if ((r = xb_be_state(f, &st)))
			break;
		if (st != last) {
			XB_DBG(f, "PVHINFO %s: backend state %u (%s)%s\n", f->tag, st, xb_state_name(st),
			    st < 32 && ((want >> st) & 1) ? "" : ", waiting");
			if (tn + 4 < sizeof(f->trail))
				tn += (size_t)snprintf(f->trail + tn, sizeof(f->trail) - tn, "%s%u",
						       tn ? ">" : "", st);
			last = st;
		}
		if (st < 32 && ((want >> st) & 1))
			break;
		if (st < 32 && ((stop >> st) & 1)) {
			r = fail("backend went to %u (%s) waiting for %s%s", st, xb_state_name(st), what,
				 xb_be_error(f));
			break;
		}
		uint64_t now = rdtsc();
		if (now >= end) {
			r = fail("backend state %u (%s) after %lu ms waiting for %s (seen %s)%s", st,
				 xb_state_name(st), (unsigned long)f->timeout_ms, what, f->trail, xb_be_error(f));
			break;
		}
		uint64_t left = (end - now) / tsc_khz() + 1;
		const char *p, *t;
		if (xenstore_wait_watch(&p, &t, left < 250 ? left : 250) < 0) {
			r = fail("xenstore: %s", xenstore_error());
			break;
		}
	}
	xenstore_unwatch(path, token);
	if (got)
		*got = st;
	return r;
}

const char *xb_read_otherend(struct xenbus_front *f)
{
	const char *r;
	uint64_t beid;
	if ((r = xb_need(f->fe, "backend-id", &beid)))
		return r;
	if (beid >= DOMID_FIRST_RESERVED)
		return fail("%s/backend-id = %lu", f->fe, (unsigned long)beid);
	f->beid = (domid_t)beid;
	int got = xb_get(f->fe, "backend");
	if (got != 1 || !xb_val[0])
		return fail("no %s/backend: %s", f->fe, got < 0 ? xenstore_error() : "absent");
	snprintf(f->be, sizeof(f->be), "%s", xb_val);
	return NULL;
}

const char *xb_transaction(struct xenbus_front *f,
			   const char *(*fill)(struct xenbus_front *f, uint32_t tx, void *arg), void *arg)
{
	const char *r;
	for (int attempt = 0; attempt < 10; attempt++) {
		uint32_t tx;
		if (xenstore_transaction_start(&tx))
			return fail("transaction_start: %s", xenstore_error());
		if ((r = fill(f, tx, arg))) {
			xenstore_transaction_end(tx, 0);
			return r;
		}
		int e = xenstore_transaction_end(tx, 1);
		if (e == 1 && xb_streq(xenstore_error(), "EAGAIN"))
			continue;
		if (e)
			return fail("transaction_end: %s", xenstore_error());
		return NULL;
	}
	return "transaction_end EAGAIN 10 times";
}
