/*
 * pvh test guest: the xenbus frontend helpers blkfront.c and netfront.c
 * share (Linux's drivers/xen/xenbus/xenbus_client.c and xenbus_probe.c:
 * xenbus_read_otherend_details, xenbus_switch_state, xenbus_gather,
 * xenbus_printf, xenbus_read_unsigned, xenbus_dev_error's node), on top of
 * xenstore.c's client. Paths are relative to the domain's home unless
 * absolute. Every wait is bounded by the frontend's timeout_ms.
 */
#ifndef PVH_XENBUS_FRONT_H
#define PVH_XENBUS_FRONT_H

#include "testguest.h"
#include <xen/io/xenbus.h>

struct xenbus_front {
	char fe[48];			/* "device/<class>/<id>" (relative to our home) */
	char be[128];			/* the frontend's `backend` node */
	domid_t beid;			/* its `backend-id` */
	unsigned fe_state;		/* what we last wrote to <fe>/state */
	/* states the backend went through during the last wait, e.g. "6>2>4" */
	char trail[48];
	const char *tag;		/* "blk", "net": in PVHINFO lines and the watch token */
	unsigned dbg;			/* >= 1: PVHINFO for every write and state seen */
	uint64_t timeout_ms;		/* each wait_be */
};

/* The value xb_get() read (NUL-terminated, truncated to 255 bytes). */
extern char xb_val[256];

int xb_streq(const char *a, const char *b);
/* Decimal, whole string: 0 ok, -1 not a number. */
int xb_parse_u64(const char *s, uint64_t *out);
const char *xb_state_name(unsigned s);

/* <dir>/<key> into xb_val: 1 found, 0 absent (ENOENT), -1 another error. */
int xb_get(const char *dir, const char *key);
/* A decimal node, `def` if absent (xenbus_read_unsigned). */
const char *xb_num(const char *dir, const char *key, uint64_t def, uint64_t *out);
/* A decimal node that must exist (xenbus_gather). */
const char *xb_need(const char *dir, const char *key, uint64_t *out);
/* <fe>/<key> = value inside transaction tx, 0 for none (xenbus_printf). */
const char *xb_put(struct xenbus_front *f, uint32_t tx, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* xenbus_switch_state: <fe>/state = s. */
const char *xb_switch_state(struct xenbus_front *f, unsigned s);
/* The backend's state now (0 Unknown if the node is absent). */
const char *xb_be_state(struct xenbus_front *f, unsigned *st);
/* "; backend error: <its error node>" if there is one, else "". */
const char *xb_be_error(struct xenbus_front *f);
/*
 * Waits (bounded, f->timeout_ms) until the backend's state is in `want`
 * (a mask of 1 << XenbusState). `stop`: states that end the wait at once
 * with a failure. A watch on <be>/state wakes us; the node is re-read at
 * least every 250 ms as well. f->trail records the states seen.
 */
const char *xb_wait_be(struct xenbus_front *f, unsigned want, unsigned stop, const char *what,
		       unsigned *got);
/* xenbus_read_otherend_details: <fe>/backend-id and <fe>/backend into f. */
const char *xb_read_otherend(struct xenbus_front *f);
/*
 * One transaction, retried on EAGAIN (up to 10 times): fill() writes its
 * nodes with xb_put(f, tx, ...) and returns NULL or a failure (then the
 * transaction is aborted).
 */
const char *xb_transaction(struct xenbus_front *f,
			   const char *(*fill)(struct xenbus_front *f, uint32_t tx, void *arg), void *arg);

#endif
