/*
 * Host-side test of the test guest's network frontend (netfront.c with
 * netstack.c on top): the sources are included as is and talk to an
 * in-process toy netback that follows Linux's xen-netback (xenbus states,
 * BACK_RING macros from the same xen/io/ring.h, TX and RX slots per
 * xen/io/netif.h: multi-slot frames, extra-info slots, split event
 * channels, queues), the shared toy XenStore and grant table (toy_xen.h),
 * and a toy peer on the "host" side: ARP, a DHCP server, a TCP echo
 * server, and scripted pings and UDP datagrams for net_echo. Every
 * net_* scenario runs, with the options the README names.
 *
 *   make -C testguest hosttest
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../xenbus_front.c"
#include "../netstack.c"
#include "../netfront.c"

/* ------------------------------------------------------------------ */
/* The toy netback                                                     */

#define FE HOME "/device/vif/0"
#define BE "/local/domain/0/backend/vif/1/0"
#define MAXQ 4

static const uint8_t guest_mac[6] = { 0x00, 0x16, 0x3e, 0x12, 0x34, 0x56 };
static const uint8_t peer_mac[6] = { 0x9a, 0x55, 0x22, 0x33, 0x44, 0x55 };
#define GUEST_IP 0x0a00020fu
#define PEER_IP  0x0a000202u

static struct toy {
	unsigned state, nq, split, fe_changed;
	struct {
		netif_tx_back_ring_t tx;
		netif_rx_back_ring_t rx;
		uint32_t tx_ref, rx_ref;
		evtchn_port_t port_tx, port_rx;
	} q[MAXQ];
	/* frames for the guest, waiting for RX requests */
	struct { uint8_t b[1600]; size_t n; } rxq[512];
	unsigned rxh, rxt, rx_next_q;
	/* faults and variants */
	unsigned rx_chunk;		/* split RX frames into slots of this many bytes */
	int rx_extra, rx_validated, no_rx_copy, max_queues;
	int tx_hold;			/* never answer TX */
	int rx_bad_id;			/* RX responses name another buffer */
	int rx_keep_mapped;		/* RX buffers left mapped after the response */
	/* what happened */
	unsigned long tx_frames, tx_slots, max_tx_slots, rx_frames, rx_slots;
	/* scripted traffic for net_echo */
	int inject, pings_back, udp_back, udp_sent, pings_sent;
	unsigned long steps_connected;
	/* the toy TCP echo server */
	uint32_t t_rcv_nxt, t_snd_nxt, t_iss;
	uint16_t t_gport;
	int t_fin;
	unsigned long tcp_echoed;
	/* DHCP */
	unsigned discovers, requests;
} toy;

#define SCENARIOS net_scenarios
#define NR_SCENARIOS nr_net_scenarios
#include "toy_xen.h"

static void disconnect(void)
{
	for (unsigned q = 0; q < toy.nq; q++) {
		unmap(toy.q[q].tx_ref);
		unmap(toy.q[q].rx_ref);
	}
	toy.nq = 0;
}

/* connect_data_rings + xen_net_read_rx_copy: the frontend's nodes, strictly. */
static void connect(void)
{
	const char *v;
	unsigned nq = 1;
	if ((v = fe_node("multi-queue-num-queues")))
		nq = (unsigned)atoi(v);
	if (nq < 1 || nq > MAXQ || (v && nq == 1)) {
		TOY_ERR("multi-queue-num-queues %u", nq);
		return;
	}
	if (!(v = fe_node("request-rx-copy")) || strcmp(v, "1")) {
		TOY_ERR("request-rx-copy is %s, want 1", v ? v : "absent");
		return;
	}
	for (unsigned q = 0; q < nq; q++) {
		char k[64], dir[16] = "";
		if (nq > 1)
			snprintf(dir, sizeof(dir), "queue-%u/", q);
		const char *tr, *rr, *ec, *etx, *erx;
		snprintf(k, sizeof(k), "%stx-ring-ref", dir); tr = fe_node(k);
		snprintf(k, sizeof(k), "%srx-ring-ref", dir); rr = fe_node(k);
		snprintf(k, sizeof(k), "%sevent-channel", dir); ec = fe_node(k);
		snprintf(k, sizeof(k), "%sevent-channel-tx", dir); etx = fe_node(k);
		snprintf(k, sizeof(k), "%sevent-channel-rx", dir); erx = fe_node(k);
		if (!tr || !rr || (!ec && !(etx && erx))) {
			TOY_ERR("queue %u: ring refs or event channels missing", q);
			return;
		}
		if (ec && etx) {
			TOY_ERR("queue %u: both event-channel and event-channel-tx", q);
			return;
		}
		toy.q[q].tx_ref = (uint32_t)atoi(tr);
		toy.q[q].rx_ref = (uint32_t)atoi(rr);
		toy.q[q].port_tx = (evtchn_port_t)atoi(ec ? ec : etx);
		toy.q[q].port_rx = (evtchn_port_t)atoi(ec ? ec : erx);
		toy.split = !ec;
		void *ts = map(toy.q[q].tx_ref, 1), *rs = map(toy.q[q].rx_ref, 1);
		if (!ts || !rs)
			return;
		BACK_RING_INIT(&toy.q[q].tx, (netif_tx_sring_t *)ts, PAGE_SIZE);
		BACK_RING_INIT(&toy.q[q].rx, (netif_rx_sring_t *)rs, PAGE_SIZE);
	}
	toy.nq = nq;
	be_set_state(XenbusStateConnected);
}

/* Linux xen-netback's frontend_changed (toy_xen.h): it ignores Initialised and connects on Connected. */
static int connects_on(unsigned fe)
{
	return fe == XenbusStateConnected;
}

static void to_guest(const uint8_t *f, size_t n)
{
	if (toy.rxt - toy.rxh >= 512 || n > sizeof(toy.rxq[0].b))
		return;
	memcpy(toy.rxq[toy.rxt % 512].b, f, n);
	toy.rxq[toy.rxt % 512].n = n;
	toy.rxt++;
}

static void peer_input(const uint8_t *f, size_t n);

/* xenvif_tx_action: every frame the guest sent, slot by slot. */
static void serve_tx(unsigned q)
{
	netif_tx_back_ring_t *ring = &toy.q[q].tx;
	static uint8_t frame[65536];
	for (;;) {
		RING_IDX rp = ring->sring->req_prod;
		xen_rmb();
		while (ring->req_cons != rp) {
			netif_tx_request_t req;
			RING_COPY_REQUEST(ring, ring->req_cons, &req);
			ring->req_cons++;
			size_t total = req.size, got = 0;
			unsigned slots = 0;
			int more = 1, first = 1;
			for (;;) {
				size_t n = first ? (req.flags & NETTXF_more_data ? 0 : req.size) : req.size;
				if (first && (req.flags & NETTXF_more_data)) {
					/* the first slot's size is the frame's; its own share is what the rest leaves */
					size_t rest = 0;
					RING_IDX j = ring->req_cons;
					netif_tx_request_t r2 = req;
					while (r2.flags & NETTXF_more_data) {
						if (j == rp) {
							TOY_ERR("TX frame's slots not all pushed");
							return;
						}
						RING_COPY_REQUEST(ring, j, &r2);
						j++;
						rest += r2.size;
					}
					if (rest > total) {
						TOY_ERR("TX: later slots %zu bytes > frame %zu", rest, total);
						return;
					}
					n = total - rest;
				}
				if (req.offset + n > PAGE_SIZE) {
					TOY_ERR("TX slot offset %u + %zu beyond the page", req.offset, n);
					return;
				}
				uint8_t *pg = map(req.gref, 0);
				if (!pg)
					return;
				if (gt[req.gref].flags & GTF_readonly) {
				} /* read-only is what Linux grants: fine */
				memcpy(frame + got, pg + req.offset, n);
				unmap(req.gref);
				got += n;
				slots++;
				netif_tx_response_t *rsp = RING_GET_RESPONSE(ring, ring->rsp_prod_pvt);
				rsp->id = req.id;
				rsp->status = NETIF_RSP_OKAY;
				ring->rsp_prod_pvt++;
				more = req.flags & NETTXF_more_data;
				first = 0;
				if (!more)
					break;
				RING_COPY_REQUEST(ring, ring->req_cons, &req);
				ring->req_cons++;
			}
			if (got != total)
				TOY_ERR("TX frame: slots hold %zu bytes, first size %zu", got, total);
			toy.tx_frames++;
			toy.tx_slots += slots;
			if (slots > toy.max_tx_slots)
				toy.max_tx_slots = slots;
			peer_input(frame, got);
		}
		int notify, more;
		RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(ring, notify);
		if (notify)
			hits[toy.q[q].port_tx]++;
		RING_FINAL_CHECK_FOR_REQUESTS(ring, more);
		if (!more)
			return;
	}
}

/* xenvif_rx_action: queued frames into the guest's posted buffers. */
static void serve_rx(void)
{
	while (toy.rxh != toy.rxt && toy.nq) {
		const uint8_t *f = toy.rxq[toy.rxh % 512].b;
		size_t n = toy.rxq[toy.rxh % 512].n;
		/* One flow stays on one queue (netback's skb hash); other frames take turns. */
		unsigned q = toy.rx_next_q % toy.nq;
		if (n > 54 && f[12] == 0x08 && f[13] == 0 && f[23] == IPPROTO_TCP_)
			q = get16(f + 36) % toy.nq;
		netif_rx_back_ring_t *ring = &toy.q[q].rx;
		size_t chunk = toy.rx_chunk ? toy.rx_chunk : PAGE_SIZE;
		unsigned need = (unsigned)((n + chunk - 1) / chunk) + (toy.rx_extra ? 1 : 0);
		RING_IDX avail = ring->sring->req_prod - ring->req_cons;
		xen_rmb();
		if (avail < need) {
			ring->sring->req_event = ring->req_cons + need;	/* wake me when there are */
			return;
		}
		size_t off = 0;
		for (unsigned s = 0; s < need; s++) {
			netif_rx_request_t req;
			RING_COPY_REQUEST(ring, ring->req_cons, &req);
			ring->req_cons++;
			netif_rx_response_t *rsp = RING_GET_RESPONSE(ring, ring->rsp_prod_pvt);
			ring->rsp_prod_pvt++;
			toy.rx_slots++;
			if (toy.rx_extra && s == 1) {
				/* a GSO extra-info slot right after the first (netif.h) */
				netif_extra_info_t *x = (void *)rsp;
				memset(x, 0, sizeof(*x));
				x->type = XEN_NETIF_EXTRA_TYPE_GSO;
				x->u.gso.size = 1400;
				x->u.gso.type = XEN_NETIF_GSO_TYPE_TCPV4;
				continue;
			}
			size_t len = n - off < chunk ? n - off : chunk;
			uint8_t *pg = map(req.gref, 1);
			if (!pg)
				return;
			unsigned o = s == 0 ? 64 : 0;	/* a non-zero offset in the first slot */
			if (o + len > PAGE_SIZE)
				o = 0;
			memcpy(pg + o, f + off, len);
			if (!toy.rx_keep_mapped)
				unmap(req.gref);
			off += len;
			rsp->id = (uint16_t)(toy.rx_bad_id ? req.id + 100 : req.id);
			rsp->offset = (uint16_t)o;
			rsp->status = (int16_t)len;
			rsp->flags = (uint16_t)((off < n ? NETRXF_more_data : 0) |
						(s == 0 && toy.rx_extra ? NETRXF_extra_info : 0) |
						(s == 0 && toy.rx_validated ? NETRXF_data_validated : 0));
		}
		toy.rxh++;
		toy.rx_frames++;
		toy.rx_next_q++;
		int notify;
		RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(ring, notify);
		if (notify)
			hits[toy.q[q].port_rx]++;
	}
}

/* ------------------------------------------------------------------ */
/* The toy peer: ARP, DHCP server, TCP echo, scripted ping/UDP          */

static void dhcp_reply(const struct ns_pkt *p, uint8_t type)
{
	static uint8_t f[700];
	uint8_t *b = f + ETH_HLEN + 28;
	memset(b, 0, 300);
	b[0] = 2; b[1] = 1; b[2] = 6;
	memcpy(b + 4, p->data + 4, 4);		/* xid */
	put32(b + 16, GUEST_IP);
	put32(b + 20, PEER_IP);
	memcpy(b + 28, p->data + 28, 6);
	put32(b + 236, 0x63825363);
	uint8_t *o = b + 240;
	*o++ = 53; *o++ = 1; *o++ = type;
	*o++ = 54; *o++ = 4; put32(o, PEER_IP); o += 4;
	*o++ = 1; *o++ = 4; put32(o, 0xffffff00); o += 4;
	*o++ = 3; *o++ = 4; put32(o, PEER_IP); o += 4;
	*o++ = 6; *o++ = 4; put32(o, 0x0a000203); o += 4;
	*o++ = 51; *o++ = 4; put32(o, 3600); o += 4;
	*o++ = 255;
	size_t n = ns_build_udp(f, guest_mac, peer_mac, PEER_IP, 0xffffffffu, 67, 68, 1, b, 300);
	to_guest(f, n);
}

static void peer_input(const uint8_t *f, size_t n)
{
	struct ns_pkt p;
	static uint8_t r[1600];
	if (ns_parse(f, n, 0, &p))
		return;
	if (!p.csum_ok && p.ethertype == ETH_P_IP) {
		TOY_ERR("guest sent a frame with a bad checksum (proto %u)", p.proto);
		return;
	}
	if (p.ethertype == ETH_P_ARP) {
		if (p.arp_op == 1 && p.arp_tpa != GUEST_IP && p.arp_tpa)	/* passt answers for everyone else */
			to_guest(r, ns_build_arp(r, 2, peer_mac, p.arp_tpa, guest_mac, p.arp_spa, guest_mac));
		return;
	}
	if (p.proto == IPPROTO_UDP_ && p.dport == 67) {
		uint8_t type = 0;
		for (size_t i = 240; i + 2 < p.data_len && p.data[i] != 255; i += 2u + p.data[i + 1])
			if (p.data[i] == 53)
				type = p.data[i + 2];
		if (type == 1) {
			toy.discovers++;
			dhcp_reply(&p, 2);
		} else if (type == 3) {
			toy.requests++;
			dhcp_reply(&p, 5);
		}
		return;
	}
	if (p.proto == IPPROTO_ICMP_ && p.icmp_type == 0 && p.data_len == 56)
		toy.pings_back++;
	if (p.proto == IPPROTO_UDP_ && p.sport == 7 && p.data_len == 1200 && p.data[0] == 0xab)
		toy.udp_back++;
	if (p.proto == IPPROTO_TCP_ && p.dport == 5001) {
		if (p.tcp_flags & TCP_SYN) {
			toy.t_rcv_nxt = p.seq + 1;
			toy.t_iss = 0xfffff000u;
			toy.t_snd_nxt = toy.t_iss + 1;
			toy.t_gport = p.sport;
			toy.t_fin = 0;
			to_guest(r, ns_build_tcp(r, guest_mac, peer_mac, PEER_IP, GUEST_IP, 5001, p.sport, toy.t_iss,
						 toy.t_rcv_nxt, TCP_SYN | TCP_ACK, 65535, 1460, 1, NULL, 0));
			return;
		}
		if (p.data_len && p.seq == toy.t_rcv_nxt) {
			toy.t_rcv_nxt += (uint32_t)p.data_len;
			to_guest(r, ns_build_tcp(r, guest_mac, peer_mac, PEER_IP, GUEST_IP, 5001, p.sport, toy.t_snd_nxt,
						 toy.t_rcv_nxt, TCP_ACK | TCP_PSH, 65535, 0, 1, p.data, p.data_len));
			toy.t_snd_nxt += (uint32_t)p.data_len;
			toy.tcp_echoed += p.data_len;
		} else if ((p.tcp_flags & TCP_FIN) && p.seq == toy.t_rcv_nxt && !toy.t_fin) {
			toy.t_rcv_nxt++;
			toy.t_fin = 1;
			to_guest(r, ns_build_tcp(r, guest_mac, peer_mac, PEER_IP, GUEST_IP, 5001, p.sport, toy.t_snd_nxt,
						 toy.t_rcv_nxt, TCP_ACK | TCP_FIN, 65535, 0, 1, NULL, 0));
			toy.t_snd_nxt++;
		}
	}
}

/* net_echo's traffic: once the guest is connected, 3 pings and 5 UDP datagrams of 1200 bytes. */
static void inject(void)
{
	static uint8_t f[1600], d[1200];
	if (toy.pings_sent < 3) {
		uint8_t *ic = f + ETH_HLEN + 20;
		memset(ic, 0, 64);
		ic[0] = 8;
		put16(ic + 4, 0x77);
		put16(ic + 6, (uint16_t)toy.pings_sent);
		for (int i = 0; i < 56; i++)
			ic[8 + i] = (uint8_t)i;
		put16(ic + 2, ns_fold(ns_sum(ic, 64, 0)));
		to_guest(f, ns_build_ip(f, guest_mac, peer_mac, PEER_IP, GUEST_IP, IPPROTO_ICMP_, 9, 0, 64));
		toy.pings_sent++;
		return;
	}
	if (toy.udp_sent < 5) {
		memset(d, 0xab, sizeof(d));
		to_guest(f, ns_build_udp(f, guest_mac, peer_mac, PEER_IP, GUEST_IP, 40000, 7, 10, d, sizeof(d)));
		toy.udp_sent++;
	}
}

static void backend_step(void)
{
	if (toy.fe_changed) {
		toy.fe_changed = 0;
		frontend_changed();
	}
	if (toy.state != XenbusStateConnected)
		return;
	if (toy.inject && ++toy.steps_connected % 50 == 0)
		inject();
	for (unsigned q = 0; q < toy.nq; q++) {
		if (kicked[toy.q[q].port_tx] && !toy.tx_hold) {
			kicked[toy.q[q].port_tx] = 0;
			serve_tx(q);
		}
		kicked[toy.q[q].port_rx] = 0;
	}
	serve_rx();
}

static void toy_create(void)
{
	memset(&toy, 0, sizeof(toy));
	toy_xenstore_fresh();
	kv_set(FE "/mac", "00:16:3e:12:34:56");
	kv_set(FE "/handle", "0");
	kv_set(FE "/state", "1");
	kv_set(BE "/frontend", FE);
	kv_set(BE "/mac", "fe:ff:ff:ff:ff:ff");
	kv_set(BE "/feature-rx-copy", "1");
	kv_set(BE "/feature-sg", "1");
	kv_set(BE "/feature-gso-tcpv4", "1");
	kv_set(BE "/feature-gso-tcpv6", "1");
	kv_set(BE "/feature-split-event-channels", "1");
	kv_set(BE "/multi-queue-max-queues", "4");
	be_set_state(XenbusStateInitWait);
	dev.known = 0;
	dev.rings = 0;
	dev.connected = 0;
}

/* ------------------------------------------------------------------ */

static void check(int cond, const char *what)
{
	checks++;
	printf("%s %s\n", cond ? "ok  " : "BAD ", what);
	if (!cond)
		failures++;
}

int main(int argc, char **argv)
{
	verbose = argc > 1 && !strcmp(argv[1], "-v");

	toy_create();
	expect("net_info", "pvh.netdebug=1", NULL);
	check(toy.tx_frames == 1, "net_info: one frame (the ARP probe) sent");
	expect("net_dhcp", "", NULL);
	check(toy.discovers == 1 && toy.requests == 1, "net_dhcp: one DISCOVER, one REQUEST");
	check(!strcmp(note, "address=10.0.2.15/24 gateway=10.0.2.2 dns=10.0.2.3"), "net_dhcp PASS note");
	expect("net_tcp", "pvh.netkib=64", NULL);
	check(toy.tcp_echoed == 65536, "net_tcp: the toy server echoed 64 KiB");
	toy.inject = 1;
	expect("net_echo", "pvh.netechocount=5 pvh.netechoms=20000", NULL);
	check(toy.pings_back == 3 && toy.udp_back == 5, "net_echo: 3 pings and 5 UDP datagrams answered");

	/* Two and four queues, split event channels. */
	toy_create();
	expect("net_dhcp", "pvh.netqueues=2", NULL);
	expect("net_tcp", "pvh.netqueues=4 pvh.netsplit=1 pvh.netkib=32", NULL);
	check(toy.split && toy.nq == 0, "split event channels were used");
	toy.inject = 1;
	expect("net_echo", "pvh.netqueues=3 pvh.netsplit=1 pvh.netechocount=5 pvh.netechoms=20000", NULL);

	/* Multi-slot frames both ways, extra-info slots, validated checksums. */
	toy_create();
	toy.rx_chunk = 500;
	toy.rx_extra = 1;
	toy.rx_validated = 1;
	expect("net_tcp", "pvh.nettxsplit=700 pvh.netkib=16", NULL);
	check(toy.max_tx_slots == 3, "TX frames of up to 1514 bytes in 700-byte slots: 3 slots");
	toy.inject = 1;
	expect("net_echo", "pvh.nettxsplit=1000 pvh.netechocount=5 pvh.netechoms=20000", NULL);

	/* A static address and no traffic: PASS with zero counts when only the time is given. */
	toy_create();
	expect("net_echo", "pvh.netip=192.168.7.9/16 pvh.netechoms=200", NULL);
	expect("net_echo", "pvh.netechoms=200 pvh.netechocount=1", "echoed 0 of 1 UDP datagrams");
	expect("net_echo", "pvh.netip=10.0.2.300", "pvh.netip=10.0.2.300");

	/* What a backend may lack. */
	toy_create();
	kv_set(BE "/multi-queue-max-queues", "1");
	kv_set(BE "/feature-split-event-channels", "0");
	expect("net_info", "pvh.netqueues=2", "multi-queue-max-queues 1, pvh.netqueues=2");
	expect("net_info", "pvh.netsplit=1", "feature-split-event-channels");
	kv_set(BE "/feature-rx-copy", "0");
	expect("net_info", "", "feature-rx-copy");
	toy_create();
	kv_rm(HOME "/device/vif");
	expect("net_info", "", "no device/vif in XenStore");
	/* A backend that never reaches InitWait, and a DHCP server that never answers. */
	toy_create();
	be_set_state(XenbusStateInitialising);
	expect("net_info", "pvh.nettimeout=300", "waiting for InitWait");

	/* Backend bugs the frontend must name. */
	toy_create();
	toy.tx_hold = 1;
	expect("net_info", "pvh.nettimeout=300", "no TX response in 300 ms");
	toy_create();
	toy.rx_bad_id = 1;
	expect("net_dhcp", "pvh.nettimeout=300", "RX response id 100 at 0 matches no posted buffer");
	toy_create();
	toy.rx_keep_mapped = 1;
	expect("net_dhcp", "pvh.nettimeout=300", "backend still maps RX buffer ref");
	for (unsigned ref = 0; ref < NREFS; ref++)	/* the toy's leak, not the frontend's */
		gt[ref].flags = 0;

	return check_summary();
}
