/*
 * The guest environment the host tests of the frontends share (included by
 * blkfront_test.c and netfront_test.c after the frontend's sources): the
 * harness of check.h, command line, a TSC clock, wait_until running the
 * toy backend (backend_step, defined by the test), event channels
 * (`kicked` when the frontend notifies, `hits` counting "upcalls" the
 * backend sends), a toy v1 grant table that tracks what the backend maps,
 * a toy XenStore (absolute paths, watches, no permissions), the toy
 * backend's common side (map and unmap of grants, the frontend's nodes,
 * its own state) and expect, which runs one scenario and judges it.
 *
 * The test defines, before including this: FE and BE (the device's
 * frontend and backend directories in XenStore: string literals, or
 * expressions naming the current toy device's), SCENARIOS and
 * NR_SCENARIOS (the frontend's scenario table), and `toy`, its backend,
 * with members `state` (the backend's xenbus state) and `fe_changed` (set
 * by every write to the frontend's state node). A test with several toy
 * devices defines TOY_ON_WRITE(path) to set the right one's fe_changed.
 */
#include "check.h"

/* ------------------------------------------------------------------ */
/* The guest environment                                               */

const struct hvm_start_info *start_info;
static char cmdline[512];
static char note[200];

const char *cmdline_opt(const char *key, size_t *len)
{
	size_t klen = strlen(key);
	const char *p = cmdline;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *tok = p;
		while (*p && *p != ' ')
			p++;
		if ((size_t)(p - tok) >= klen && strncmp(tok, key, klen) == 0) {
			*len = (size_t)(p - tok) - klen;
			return tok + klen;
		}
	}
	return NULL;
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

void pass_note(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(note, sizeof(note), fmt, ap);
	va_end(ap);
}

uint64_t tsc_khz(void) { return 1000000; }
uint64_t tsc_deadline_ms(uint64_t ms) { return rdtsc() + ms * tsc_khz(); }
const char *xen_setup(void) { return NULL; }
int xen_domid(void) { return 1; }

static void backend_step(void);

int wait_until(int (*cond)(const void *), const void *arg, uint64_t timeout_ms, int use_hlt, uint32_t *wd)
{
	(void)use_hlt;
	if (wd)
		*wd = 0;
	uint64_t end = tsc_deadline_ms(timeout_ms);
	for (;;) {
		if (cond(arg))
			return 1;
		if (rdtsc() >= end)
			return 0;
		backend_step();
	}
}

/* ---- event channels ---- */
#define NPORTS 64
static uint32_t hits[NPORTS];
static int port_used[NPORTS], kicked[NPORTS];
static evtchn_port_t next_port = 5;

uint32_t evtchn_port_hits(uint32_t port) { return port < NPORTS ? hits[port] : 0; }

static int port_hits_reached(const void *arg)
{
	const uint32_t *w = arg;
	return evtchn_port_hits(w[0]) >= w[1];
}

int evtchn_wait_port_hits(uint32_t port, uint32_t want, uint64_t ms)
{
	uint32_t w[2] = { port, want };
	return wait_until(port_hits_reached, w, ms, 1, NULL);
}

long evtchn_send(uint32_t port)
{
	if (port >= NPORTS || !port_used[port])
		return -XEN_EINVAL;
	kicked[port] = 1;
	return 0;
}

long hypercall(unsigned int nr, unsigned long a1, unsigned long a2, unsigned long a3, unsigned long a4,
	       unsigned long a5)
{
	(void)a3; (void)a4; (void)a5;
	if (nr == __HYPERVISOR_event_channel_op && a1 == EVTCHNOP_alloc_unbound) {
		struct evtchn_alloc_unbound *au = (void *)a2;
		if (au->dom != DOMID_SELF || au->remote_dom != 0)
			return -XEN_EINVAL;
		while (port_used[next_port])
			next_port = next_port + 1 < NPORTS ? next_port + 1 : 5;
		au->port = next_port;
		port_used[next_port] = 1;
		return 0;
	}
	if (nr == __HYPERVISOR_event_channel_op && a1 == EVTCHNOP_unmask)
		return 0;
	if (nr == __HYPERVISOR_event_channel_op && a1 == EVTCHNOP_close) {
		struct evtchn_close *c = (void *)a2;
		if (c->port >= NPORTS || !port_used[c->port])
			return -XEN_EINVAL;
		port_used[c->port] = 0;
		return 0;
	}
	if (nr == __HYPERVISOR_vcpu_op && a1 == VCPUOP_is_up)
		return -XEN_ENOENT;
	return -XEN_ENOSYS;
}

/* ---- grants: what the frontend grants, what the toy backend has mapped ---- */
#define NREFS 1024
static struct { uint16_t flags; domid_t dom; uint64_t gfn; } gt[NREFS];
static char toy_err[200];

#define TOY_ERR(...) do { if (!toy_err[0]) snprintf(toy_err, sizeof(toy_err), __VA_ARGS__); } while (0)

const char *gnttab_frontend_ready(void) { return NULL; }

void gnttab_grant_ref(uint32_t ref, domid_t dom, uint64_t gfn, int readonly)
{
	if (ref < 10 || ref >= NREFS) {
		TOY_ERR("grant of ref %u", ref);
		return;
	}
	if (gt[ref].flags & (GTF_reading | GTF_writing))
		TOY_ERR("frontend re-granted ref %u while the backend maps it", ref);
	gt[ref].dom = dom;
	gt[ref].gfn = gfn;
	gt[ref].flags = GTF_permit_access | (readonly ? GTF_readonly : 0);
}

int gnttab_end_ref(uint32_t ref, uint16_t *flags)
{
	*flags = gt[ref].flags;
	if (gt[ref].flags & (GTF_reading | GTF_writing))
		return 0;
	gt[ref].flags = 0;
	return 1;
}

/* ------------------------------------------------------------------ */
/* The toy XenStore: absolute paths, watches, no permissions           */

#define HOME "/local/domain/1"
#define NNODES 256
static struct { char path[128]; char val[128]; } kv[NNODES];
static int nkv;
static char xs_errstr[32];
static struct { char path[128]; char token[32]; } watches[8];
static struct { char path[128]; char token[32]; } events[64];
static int nev;

static void absolute(const char *p, char *out, size_t n)
{
	if (p[0] == '/')
		snprintf(out, n, "%s", p);
	else
		snprintf(out, n, HOME "/%s", p);
}

static int kv_find(const char *path)
{
	for (int i = 0; i < nkv; i++)
		if (!strcmp(kv[i].path, path))
			return i;
	return -1;
}

static void fire(const char *path)
{
	for (unsigned w = 0; w < 8; w++) {
		size_t l = strlen(watches[w].path);
		if (!l || strncmp(path, watches[w].path, l) || (path[l] && path[l] != '/'))
			continue;
		if (nev < 64) {
			snprintf(events[nev].path, sizeof(events[0].path), "%s", path);
			snprintf(events[nev].token, sizeof(events[0].token), "%s", watches[w].token);
			nev++;
		}
	}
}

static void kv_set(const char *path, const char *val)
{
	int i = kv_find(path);
	if (i < 0) {
		if (nkv >= NNODES) {
			fprintf(stderr, "toy xenstore full\n");
			exit(2);
		}
		i = nkv++;
		snprintf(kv[i].path, sizeof(kv[i].path), "%s", path);
	}
	snprintf(kv[i].val, sizeof(kv[i].val), "%s", val);
	fire(path);
}

static const char *kv_get(const char *path)
{
	int i = kv_find(path);
	return i < 0 ? NULL : kv[i].val;
}

static void kv_rm(const char *prefix)
{
	size_t l = strlen(prefix);
	for (int i = 0; i < nkv;) {
		if (!strncmp(kv[i].path, prefix, l) && (!kv[i].path[l] || kv[i].path[l] == '/'))
			kv[i] = kv[--nkv];
		else
			i++;
	}
}

const char *xenstore_connect(void) { return NULL; }
const char *xenstore_error(void) { return xs_errstr; }

const char *xenstore_read(const char *path, uint32_t *len)
{
	static char buf[128];
	char a[160];
	absolute(path, a, sizeof(a));
	const char *v = kv_get(a);
	if (!v) {
		snprintf(xs_errstr, sizeof(xs_errstr), "ENOENT");
		return NULL;
	}
	snprintf(buf, sizeof(buf), "%s", v);
	if (len)
		*len = (uint32_t)strlen(buf);
	return buf;
}

/* FE/<key> and BE/<key> (one static buffer each: use before the next call). */
static const char *fe_path(const char *key)
{
	static char p[160];
	snprintf(p, sizeof(p), "%s/%s", FE, key);
	return p;
}

static const char *be_path(const char *key)
{
	static char p[160];
	snprintf(p, sizeof(p), "%s/%s", BE, key);
	return p;
}

/* Every write the frontend makes; the backend acts on its state node in backend_step. */
static void on_write(const char *path)
{
#ifdef TOY_ON_WRITE
	TOY_ON_WRITE(path);
#else
	if (!strcmp(path, fe_path("state")))
		toy.fe_changed = 1;
#endif
}

static int xs_write_common(const char *path, const char *value)
{
	char a[160];
	absolute(path, a, sizeof(a));
	if (strncmp(a, HOME "/", strlen(HOME "/"))) {
		snprintf(xs_errstr, sizeof(xs_errstr), "EACCES");
		return 1;
	}
	kv_set(a, value);
	on_write(a);
	return 0;
}

int xenstore_write(const char *path, const char *value) { return xs_write_common(path, value); }
int xenstore_write_tx(uint32_t tx, const char *path, const char *value)
{
	(void)tx;
	return xs_write_common(path, value);
}
int xenstore_transaction_start(uint32_t *tx) { *tx = 7; return 0; }
int xenstore_transaction_end(uint32_t tx, int commit) { (void)tx; (void)commit; return 0; }

int xenstore_rm(const char *path)
{
	char a[160];
	absolute(path, a, sizeof(a));
	kv_rm(a);
	return 0;
}

const char *xenstore_directory(const char *path, uint32_t *len)
{
	static char buf[512];
	char a[160];
	size_t n = 0, l;
	absolute(path, a, sizeof(a));
	l = strlen(a);
	for (int i = 0; i < nkv; i++) {
		if (strncmp(kv[i].path, a, l) || kv[i].path[l] != '/')
			continue;
		const char *c = kv[i].path + l + 1;
		size_t cl = strcspn(c, "/");
		int dup = 0;
		for (size_t j = 0; j < n; j += strlen(buf + j) + 1)
			if (strlen(buf + j) == cl && !strncmp(buf + j, c, cl))
				dup = 1;
		if (!dup && n + cl + 1 < sizeof(buf)) {
			memcpy(buf + n, c, cl);
			buf[n + cl] = 0;
			n += cl + 1;
		}
	}
	if (!n && kv_find(a) < 0) {
		snprintf(xs_errstr, sizeof(xs_errstr), "ENOENT");
		return NULL;
	}
	*len = (uint32_t)n;
	return buf;
}

int xenstore_watch(const char *path, const char *token)
{
	char a[160];
	absolute(path, a, sizeof(a));
	for (unsigned w = 0; w < 8; w++)
		if (!watches[w].path[0]) {
			snprintf(watches[w].path, sizeof(watches[w].path), "%s", a);
			snprintf(watches[w].token, sizeof(watches[w].token), "%s", token);
			if (nev < 64) {	/* the initial event */
				snprintf(events[nev].path, sizeof(events[0].path), "%s", a);
				snprintf(events[nev].token, sizeof(events[0].token), "%s", token);
				nev++;
			}
			return 0;
		}
	snprintf(xs_errstr, sizeof(xs_errstr), "ENOSPC");
	return 1;
}

int xenstore_unwatch(const char *path, const char *token)
{
	char a[160];
	absolute(path, a, sizeof(a));
	for (unsigned w = 0; w < 8; w++)
		if (!strcmp(watches[w].path, a) && !strcmp(watches[w].token, token)) {
			watches[w].path[0] = 0;
			int k = 0;
			for (int i = 0; i < nev; i++)
				if (strcmp(events[i].token, token))
					events[k++] = events[i];
			nev = k;
			return 0;
		}
	snprintf(xs_errstr, sizeof(xs_errstr), "ENOENT");
	return 1;
}

int xenstore_wait_watch(const char **path, const char **token, uint64_t ms)
{
	static char p[128], t[32];
	uint64_t end = tsc_deadline_ms(ms);
	for (;;) {
		if (nev) {
			snprintf(p, sizeof(p), "%s", events[0].path);
			snprintf(t, sizeof(t), "%s", events[0].token);
			memmove(events, events + 1, sizeof(events[0]) * (size_t)--nev);
			*path = p;
			*token = t;
			return 1;
		}
		if (rdtsc() >= end)
			return 0;
		backend_step();
	}
}

/* ------------------------------------------------------------------ */
/* The toy backend's common side                                       */

static void be_set_state(unsigned s)
{
	char v[8];
	toy.state = s;
	snprintf(v, sizeof(v), "%u", s);
	kv_set(be_path("state"), v);
}

/* gnttab map: the frontend's grant must permit domain 0 (and writing, if asked). */
static void *map(uint32_t ref, int write)
{
	if (ref >= NREFS || !(gt[ref].flags & GTF_permit_access) || gt[ref].dom != 0) {
		TOY_ERR("map of ref %u: not granted to domain 0 (flags 0x%x)", ref, ref < NREFS ? gt[ref].flags : 0);
		return NULL;
	}
	if (write && (gt[ref].flags & GTF_readonly)) {
		TOY_ERR("map of ref %u for writing: granted read-only", ref);
		return NULL;
	}
	gt[ref].flags |= GTF_reading | (write ? GTF_writing : 0);
	return (void *)(uintptr_t)(gt[ref].gfn << 12);
}

static void unmap(uint32_t ref)
{
	if (ref < NREFS)
		gt[ref].flags &= (uint16_t)~(GTF_reading | GTF_writing);
}

/* A node the frontend wrote in its directory, or NULL. */
static const char *fe_node(const char *key)
{
	return kv_get(fe_path(key));
}

static void disconnect(void);
static void connect(void);
static int connects_on(unsigned fe);

/*
 * Linux's backends' frontend_changed, as far as the states go: InitWait
 * for an Initialising frontend; from InitWait or Closed, connect (once)
 * when the frontend reaches a state the test's connects_on accepts;
 * follow it to Closing and Closed.
 */
static void frontend_changed(void)
{
	const char *v = kv_get(fe_path("state"));
	unsigned fe = v ? (unsigned)atoi(v) : 0;
	switch (fe) {
	case XenbusStateInitialising:
		if (toy.state == XenbusStateClosed)
			be_set_state(XenbusStateInitWait);
		break;
	case XenbusStateInitialised:
	case XenbusStateConnected:
		if (toy.state == XenbusStateConnected)
			break;
		if (toy.state == XenbusStateInitialising)
			break;	/* not ready: connects once at InitWait */
		if (!connects_on(fe))
			break;
		disconnect();
		connect();
		break;
	case XenbusStateClosing:
		disconnect();
		be_set_state(XenbusStateClosing);
		break;
	case XenbusStateClosed:
		disconnect();
		be_set_state(XenbusStateClosed);
		break;
	default:
		break;
	}
}

/* A new device's XenStore, as the toolstack starts it: no nodes, watches or events but the frontend's link to its backend. */
static void toy_xenstore_fresh(void)
{
	nkv = 0;
	nev = 0;
	memset(watches, 0, sizeof(watches));
	kv_set(fe_path("backend"), BE);
	kv_set(fe_path("backend-id"), "0");
}

/* ------------------------------------------------------------------ */
/* Running scenarios                                                   */

static const char *run_scenario(const char *name, const char *opts)
{
	snprintf(cmdline, sizeof(cmdline), "%s", opts);
	note[0] = 0;
	for (size_t i = 0; i < NR_SCENARIOS; i++)
		if (!strcmp(SCENARIOS[i].name, name))
			return SCENARIOS[i].run();
	return "unknown scenario";
}

/* want NULL: must PASS; else must FAIL with `want` in the reason. */
static void expect(const char *name, const char *opts, const char *want)
{
	toy_err[0] = 0;
	const char *r = run_scenario(name, opts);
	int ok = want ? r && strstr(r, want) : !r && !toy_err[0];
	checks++;
	printf("%s %s [%s]: %s %s%s%s\n", ok ? "ok  " : "BAD ", name, opts, r ? "FAIL" : "PASS", r ? r : note,
	       toy_err[0] ? "  toy backend: " : "", toy_err);
	if (!ok) {
		failures++;
		if (want)
			printf("     wanted a FAIL containing \"%s\"\n", want);
	}
	/* Whatever happened, every grant must be back and nothing mapped. */
	for (unsigned ref = 0; ref < NREFS && !want; ref++)
		if (gt[ref].flags) {
			printf("BAD  %s: grant ref %u left with flags 0x%x\n", name, ref, gt[ref].flags);
			failures++;
			break;
		}
}
