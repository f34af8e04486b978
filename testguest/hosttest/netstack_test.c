/*
 * Host-side test of the test guest's network stack (netstack.c): the code
 * is included as is. Checks builders against frames built independently
 * (gen_netstack_vectors.py -> netstack_vectors.h), checksums against RFC
 * 1071's example and a known IPv4 header, CRC-32 against its check value,
 * the parsers (a passt-style DHCPOFFER), the ARP and ping answers, and runs
 * ns_dhcp and ns_tcp_echo against toy peers on a virtual clock (the TCP
 * peer drops, duplicates and reorders segments).
 *
 *   make -C testguest hosttest
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../netstack.c"
#include "netstack_vectors.h"
#include "check.h"

static void hexdiff(const char *what, const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
	int same = an == bn && !memcmp(a, b, an);
	CHECK(same, "%s: built %zu bytes, want %zu", what, an, bn);
	if (!same)
		for (size_t i = 0; i < an && i < bn; i++)
			if (a[i] != b[i]) {
				printf("     first difference at byte %zu: 0x%02x, want 0x%02x\n", i, a[i], b[i]);
				break;
			}
}

/* ------------------------------------------------------------------ */
/* A toy device: a queue of frames to receive, a hook for frames sent, */
/* a virtual clock that jumps ahead while the stack waits for nothing. */

static uint64_t vclock;
static void (*peer_tick)(void);
static struct { uint8_t b[2048]; size_t n; } rxq[256];
static unsigned rxh, rxt;
static void (*peer)(const uint8_t *f, size_t n);
static uint8_t last_tx[2048];
static size_t last_tx_n;
static unsigned txcount;

static void queue_rx(const uint8_t *f, size_t n)
{
	if (rxt - rxh >= 256)
		return;		/* "ring full": dropped, as a backend without RX buffers would */
	memcpy(rxq[rxt % 256].b, f, n);
	rxq[rxt % 256].n = n;
	rxt++;
}

static int dev_tx(void *ctx, const uint8_t *f, size_t n)
{
	(void)ctx;
	memcpy(last_tx, f, n);
	last_tx_n = n;
	txcount++;
	if (peer)
		peer(f, n);
	return 0;
}

static int dev_rx(void *ctx, uint8_t *buf, size_t max, uint64_t wait_ms, int *validated)
{
	(void)ctx;
	*validated = 0;
	if (rxh == rxt && peer_tick)
		peer_tick();	/* the peer's retransmission timer runs while the guest waits */
	if (rxh == rxt) {
		vclock += wait_ms;
		return 0;
	}
	size_t n = rxq[rxh % 256].n;
	if (n > max)
		n = max;
	memcpy(buf, rxq[rxh % 256].b, n);
	rxh++;
	vclock++;
	return (int)n;
}

static uint64_t dev_now(void *ctx) { (void)ctx; return vclock; }
static const char *dev_err(void *ctx) { (void)ctx; return "toy device"; }

static const struct net_dev_ops toy_ops = { dev_tx, dev_rx, dev_now, dev_err, NULL };
static const uint8_t guest_mac[6] = { 0x00, 0x16, 0x3e, 0x12, 0x34, 0x56 };
static const uint8_t peer_mac[6] = { 0x9a, 0x55, 0x22, 0x33, 0x44, 0x55 };
#define GUEST_IP 0x0a00020fu
#define PEER_IP  0x0a000202u

static void reset_dev(void (*p)(const uint8_t *, size_t))
{
	peer_tick = NULL;
	rxh = rxt = 0;
	peer = p;
	last_tx_n = 0;
	txcount = 0;
}

/* ------------------------------------------------------------------ */
/* Toy DHCP server: answers DISCOVER with vec_dhcp_offer's options, REQUEST with an ACK. */

static unsigned dhcp_discovers, dhcp_requests, dhcp_drop_first;
static uint32_t dhcp_req_ip, dhcp_req_server;

static void dhcp_peer(const uint8_t *f, size_t n)
{
	struct ns_pkt p;
	if (ns_parse(f, n, 0, &p) || p.proto != IPPROTO_UDP_ || p.dport != 67) {
		/* ARP etc.: none expected */
		return;
	}
	CHECK(p.csum_ok, "DHCP request checksums");
	CHECK(p.src == 0 && p.dst == 0xffffffffu && !memcmp(p.dst_mac, "\xff\xff\xff\xff\xff\xff", 6),
	      "DHCP request from 0.0.0.0 to the broadcast address");
	const uint8_t *d = p.data;
	CHECK(p.data_len >= 300 && d[0] == 1 && get32(d + 236) == 0x63825363, "BOOTREQUEST with the cookie");
	uint8_t type = 0;
	for (size_t i = 240; i < p.data_len && d[i] != 255;) {
		if (d[i] == 0) { i++; continue; }
		if (d[i] == 53) type = d[i + 2];
		if (d[i] == 50) dhcp_req_ip = get32(d + i + 2);
		if (d[i] == 54) dhcp_req_server = get32(d + i + 2);
		i += 2 + d[i + 1];
	}
	if (type == 1)
		dhcp_discovers++;
	if (type == 3)
		dhcp_requests++;
	if (dhcp_drop_first && dhcp_discovers == 1 && type == 1)
		return;		/* lost: the client must try again */
	/* The canned OFFER, with this xid and (for a REQUEST) type ACK. */
	uint8_t r[sizeof(vec_dhcp_offer)];
	memcpy(r, vec_dhcp_offer, sizeof(r));
	uint8_t *b = r + ETH_HLEN + 28;
	put32(b + 4, get32(d + 4));
	if (type == 3)
		b[242] = 5;	/* option 53's value: DHCPACK */
	/* UDP checksum again (the IP header did not change). */
	put16(r + ETH_HLEN + 26, 0);
	put16(r + ETH_HLEN + 26, ns_l4_csum(PEER_IP, 0xffffffffu, 17, r + ETH_HLEN + 20, get16(r + ETH_HLEN + 24)));
	queue_rx(r, sizeof(r));
}

/* ------------------------------------------------------------------ */
/* Toy TCP echo peer: SYN-ACK (MSS 1400), echoes in-order data back in */
/* segments of its own size, FIN after ours. Faults: drop every Nth    */
/* guest segment, duplicate/reorder its own.                           */

static struct {
	uint32_t iss, rcv_nxt, snd_nxt;
	int established, fin_got, fin_sent;
	unsigned n_in, drop_every, reorder, dup;
	uint64_t echoed;
	uint16_t port, gport;
	int refuse;
	uint32_t una;			/* the guest's highest ACK */
	uint16_t wnd;			/* the window advertised */
	uint64_t zero_at;		/* close the window once this much was echoed (0: never) */
	int zeroed;
	uint8_t buf[400000];		/* the stream echoed, for retransmissions */
} tp;

static void tp_send(uint32_t seq, uint8_t flags, const uint8_t *data, size_t len, uint16_t gport)
{
	static uint8_t f[2048];
	size_t n = ns_build_tcp(f, guest_mac, peer_mac, PEER_IP, GUEST_IP, tp.port, gport, seq, tp.rcv_nxt, flags,
				tp.wnd, (flags & TCP_SYN) ? 1400 : 0, 1, data, len);
	queue_rx(f, n);
}

static void tcp_peer(const uint8_t *f, size_t n)
{
	struct ns_pkt p;
	if (ns_parse(f, n, 0, &p))
		return;
	if (p.ethertype == ETH_P_ARP) {
		if (p.arp_op == 1 && p.arp_tpa == PEER_IP) {
			uint8_t r[64];
			queue_rx(r, ns_build_arp(r, 2, peer_mac, PEER_IP, guest_mac, GUEST_IP, guest_mac));
		}
		return;
	}
	if (p.proto != IPPROTO_TCP_ || p.dport != tp.port)
		return;
	CHECK(p.csum_ok, "guest TCP segment checksum");
	tp.n_in++;
	if (tp.drop_every && tp.n_in % tp.drop_every == 0)
		return;
	if (p.tcp_flags & TCP_SYN) {
		CHECK(p.mss == NS_MSS, "SYN carries MSS %u", p.mss);
		if (tp.refuse) {
			uint8_t r[64];
			size_t k = ns_build_tcp(r, guest_mac, peer_mac, PEER_IP, GUEST_IP, tp.port, p.sport, 0, p.seq + 1,
						TCP_RST | TCP_ACK, 0, 0, 1, NULL, 0);
			queue_rx(r, k);
			return;
		}
		tp.rcv_nxt = p.seq + 1;
		tp.iss = 0x80000000u - 5;	/* wraps during the exchange */
		tp.snd_nxt = tp.iss + 1;
		tp.una = tp.iss;
		tp.gport = p.sport;
		tp_send(tp.iss, TCP_SYN | TCP_ACK, NULL, 0, p.sport);
		return;
	}
	if ((p.tcp_flags & TCP_ACK) && (int32_t)(p.ack - tp.una) > 0)
		tp.una = p.ack;
	if (p.data_len && !tp.wnd) {
		/* A probe of the closed window: open it and say so (the probe's byte
		 * dropped). Until probed, the window stays shut: its update is "lost". */
		tp.wnd = 65535;
		tp_send(tp.snd_nxt, TCP_ACK, NULL, 0, p.sport);
		return;
	}
	if (p.data_len && p.seq == tp.rcv_nxt) {
		if (tp.snd_nxt - tp.iss - 1 + p.data_len <= sizeof(tp.buf))
			memcpy(tp.buf + (tp.snd_nxt - tp.iss - 1), p.data, p.data_len);
		tp.rcv_nxt += (uint32_t)p.data_len;
		/* Echo it back, cut at 1000 bytes, the pieces possibly swapped or doubled. */
		size_t a = p.data_len > 1000 ? 1000 : p.data_len;
		uint32_t s1 = tp.snd_nxt, s2 = tp.snd_nxt + (uint32_t)a;
		tp.snd_nxt += (uint32_t)p.data_len;
		tp.echoed += p.data_len;
		if (tp.zero_at && !tp.zeroed && tp.echoed >= tp.zero_at) {
			tp.zeroed = 1;
			tp.wnd = 0;
		}
		if (tp.reorder && (tp.n_in % 5) == 0 && a < p.data_len) {
			tp_send(s2, TCP_ACK, p.data + a, p.data_len - a, p.sport);
			tp_send(s1, TCP_ACK, p.data, a, p.sport);
		} else {
			tp_send(s1, TCP_ACK, p.data, a, p.sport);
			if (a < p.data_len)
				tp_send(s2, TCP_ACK, p.data + a, p.data_len - a, p.sport);
		}
		if (tp.dup && (tp.n_in % 4) == 0)
			tp_send(s1, TCP_ACK, p.data, a, p.sport);
		return;
	}
	if (p.data_len) {	/* out of order or a retransmission: ack what we have */
		tp_send(tp.snd_nxt, TCP_ACK, NULL, 0, p.sport);
		return;
	}
	if ((p.tcp_flags & TCP_FIN) && p.seq == tp.rcv_nxt) {
		tp.rcv_nxt++;
		tp.fin_got = 1;
		tp_send(tp.snd_nxt, TCP_ACK | TCP_FIN, NULL, 0, p.sport);
		if (!tp.fin_sent)
			tp.snd_nxt++;
		tp.fin_sent = 1;
	}
}

/* Go back to the guest's ACK: up to 4 segments of what it has not acknowledged. */
static void tcp_tick(void)
{
	uint32_t end = tp.snd_nxt - (tp.fin_sent ? 1 : 0);
	uint32_t s = tp.una;
	if (!tp.gport || (int32_t)(end - s) <= 0 || s == tp.iss)
		return;
	for (int k = 0; k < 4 && (int32_t)(end - s) > 0; k++) {
		uint32_t len = end - s > 1000 ? 1000 : end - s;
		tp_send(s, TCP_ACK, tp.buf + (s - tp.iss - 1), len, tp.gport);
		s += len;
	}
}

static const char *run_tcp_zero(uint64_t bytes, unsigned drop_every, int reorder, int dup, uint64_t zero_at,
				struct ns_tcp *t)
{
	struct netstack ns;
	memset(&tp, 0, sizeof(tp));
	tp.wnd = 65535;
	tp.zero_at = zero_at;
	tp.port = 5001;
	tp.drop_every = drop_every;
	tp.reorder = reorder;
	tp.dup = dup;
	reset_dev(tcp_peer);
	peer_tick = tcp_tick;
	ns_init(&ns, &toy_ops, guest_mac);
	ns.ip = GUEST_IP;
	ns.prefix = 24;
	ns.gw = PEER_IP;
	return ns_tcp_echo(&ns, t, PEER_IP, 5001, bytes, 60000);
}

static const char *run_tcp(uint64_t bytes, unsigned drop_every, int reorder, int dup, struct ns_tcp *t)
{
	return run_tcp_zero(bytes, drop_every, reorder, dup, 0, t);
}

int main(int argc, char **argv)
{
	verbose = argc > 1 && !strcmp(argv[1], "-v");
	uint8_t f[2048];
	size_t n;

	/* RFC 1071 section 3's example: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2. */
	static const uint8_t rfc1071[] = { 0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7 };
	CHECK(ns_fold(ns_sum(rfc1071, 8, 0)) == (uint16_t)~0xddf2, "RFC 1071 example sum ddf2");
	/* A textbook IPv4 header (192.168.0.1 -> 192.168.0.199, UDP, 115 bytes): checksum b861. */
	static const uint8_t iph[] = { 0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
				       0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7 };
	CHECK(ns_fold(ns_sum(iph, 20, 0)) == 0xb861, "IPv4 header checksum b861 (got %04x)", ns_fold(ns_sum(iph, 20, 0)));
	CHECK(ns_crc32(0, (const uint8_t *)"123456789", 9) == 0xcbf43926, "CRC-32 check value cbf43926");
	/* Split sums (as a stream arrives) equal the whole. */
	CHECK(ns_crc32(ns_crc32(0, (const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5) == 0xcbf43926,
	      "CRC-32 in pieces");

	/* Builders against the independent frames. */
	n = ns_build_udp(f, peer_mac, guest_mac, GUEST_IP, PEER_IP, 7, 40000, 7, (const uint8_t *)"hello, pvh\n", 11);
	hexdiff("UDP datagram", f, n, vec_udp, sizeof(vec_udp));
	n = ns_build_udp(f, peer_mac, guest_mac, GUEST_IP, PEER_IP, 7, 40000, 8, (const uint8_t *)"odd", 3);
	hexdiff("UDP datagram, odd length", f, n, vec_udp_odd, sizeof(vec_udp_odd));
	n = ns_build_tcp(f, peer_mac, guest_mac, GUEST_IP, PEER_IP, 49200, 5001, 0x01020304, 0, TCP_SYN, 8760, 1460, 9,
			 NULL, 0);
	hexdiff("TCP SYN with MSS", f, n, vec_tcp_syn, sizeof(vec_tcp_syn));
	uint8_t d[100];
	for (int i = 0; i < 100; i++)
		d[i] = (uint8_t)(i * 7 + 3);
	n = ns_build_tcp(f, peer_mac, guest_mac, GUEST_IP, PEER_IP, 49200, 5001, 0xfffffff0, 0x11223344,
			 TCP_ACK | TCP_PSH, 8760, 0, 10, d, 100);
	hexdiff("TCP data segment", f, n, vec_tcp_data, sizeof(vec_tcp_data));
	n = ns_build_arp(f, 2, guest_mac, GUEST_IP, peer_mac, PEER_IP, peer_mac);
	hexdiff("ARP reply", f, n, vec_arp_rep, sizeof(vec_arp_rep));

	/* Parsers. */
	struct ns_pkt p;
	CHECK(!ns_parse(vec_tcp_data, sizeof(vec_tcp_data), 0, &p) && p.csum_ok && p.seq == 0xfffffff0 &&
	      p.ack == 0x11223344 && p.tcp_flags == (TCP_ACK | TCP_PSH) && p.data_len == 100 && p.sport == 49200 &&
	      p.dport == 5001 && p.wnd == 8760 && p.src == GUEST_IP && p.dst == PEER_IP, "TCP segment parsed");
	CHECK(!ns_parse(vec_tcp_syn, sizeof(vec_tcp_syn), 0, &p) && p.csum_ok && p.mss == 1460 && p.data_len == 0,
	      "SYN parsed: MSS 1460");
	memset(f, 0, 60);
	memcpy(f, vec_tcp_syn, sizeof(vec_tcp_syn));
	CHECK(sizeof(vec_tcp_syn) == 58 && !ns_parse(f, 60, 0, &p) && p.csum_ok && p.data_len == 0,
	      "a SYN padded to 60 bytes: the padding is not data (IP total length)");
	memcpy(f, vec_tcp_data, sizeof(vec_tcp_data));
	f[sizeof(vec_tcp_data) - 1] ^= 0x40;
	CHECK(!ns_parse(f, sizeof(vec_tcp_data), 0, &p) && !p.csum_ok, "a flipped payload bit fails the TCP checksum");
	CHECK(!ns_parse(f, sizeof(vec_tcp_data), 1, &p) && p.csum_ok, "... unless the backend validated it");
	memcpy(f, vec_udp, sizeof(vec_udp));
	f[ETH_HLEN + 8] ^= 1;	/* TTL */
	CHECK(!ns_parse(f, sizeof(vec_udp), 1, &p) && !p.csum_ok, "a bad IP header checksum fails even when validated");
	CHECK(!ns_parse(vec_udp_odd, sizeof(vec_udp_odd), 0, &p) && p.csum_ok && p.data_len == 3 &&
	      !memcmp(p.data, "odd", 3), "odd UDP datagram parsed");

	struct ns_dhcp_msg m;
	CHECK(!ns_parse(vec_dhcp_offer, sizeof(vec_dhcp_offer), 0, &p) && p.csum_ok && p.sport == 67 && p.dport == 68,
	      "DHCPOFFER frame parsed");
	CHECK(!ns_parse_dhcp(p.data, p.data_len, &m) && m.type == 2 && m.xid == VEC_DHCP_XID &&
	      m.yiaddr == GUEST_IP && m.mask == 0xffffff00u && m.router == PEER_IP && m.dns == 0x0a000203u &&
	      m.server == PEER_IP && m.lease == 0xffffffffu && m.mtu == 65520 && !memcmp(m.chaddr, guest_mac, 6),
	      "DHCPOFFER: type 2, yiaddr 10.0.2.15, mask /24, router and server 10.0.2.2, first DNS 10.0.2.3, "
	      "lease infinite, MTU 65520");
	uint32_t ipa;
	unsigned pfx;
	CHECK(!ns_parse_cidr("10.0.2.15/24", 12, &ipa, &pfx) && ipa == GUEST_IP && pfx == 24, "cidr 10.0.2.15/24");
	CHECK(!ns_parse_cidr("192.168.1.7", 11, &ipa, &pfx) && ipa == 0xc0a80107 && pfx == 24, "cidr default /24");
	CHECK(ns_parse_cidr("10.0.2/24", 9, &ipa, &pfx) && ns_parse_cidr("10.0.2.300", 10, &ipa, &pfx) &&
	      ns_parse_cidr("10.0.2.1/33", 11, &ipa, &pfx), "bad addresses refused");

	/* The stack answers ARP and ping exactly like the reference frames. */
	struct netstack ns;
	reset_dev(NULL);
	ns_init(&ns, &toy_ops, guest_mac);
	ns.ip = GUEST_IP;
	ns.prefix = 24;
	ns_input(&ns, vec_arp_req, sizeof(vec_arp_req), 0);
	hexdiff("ARP reply sent for a request", last_tx, last_tx_n, vec_arp_rep, sizeof(vec_arp_rep));
	ns_input(&ns, vec_ping, sizeof(vec_ping), 0);
	hexdiff("ICMP echo reply", last_tx, last_tx_n, vec_pong, sizeof(vec_pong));
	CHECK(ns.arp_replies == 1 && ns.icmp_echoes == 1, "counted");
	/* UDP echo on port 7: vec_udp turned around is a request to the guest. */
	ns.udp_echo_port = 7;
	n = ns_build_udp(f, guest_mac, peer_mac, PEER_IP, GUEST_IP, 40000, 7, 3, (const uint8_t *)"hello, pvh\n", 11);
	ns.ip_id = 7;
	ns_input(&ns, f, n, 0);
	hexdiff("UDP echo", last_tx, last_tx_n, vec_udp, sizeof(vec_udp));
	unsigned before = txcount;
	f[n - 20] ^= 0xff;	/* the echo's payload: now a bad checksum, dropped */
	ns_input(&ns, vec_arp_rep, sizeof(vec_arp_rep), 0);	/* learned, not answered */
	CHECK(txcount == before && ns.bad_csum == 0, "ARP reply not answered");

	/* DHCP against the toy server, the first DISCOVER lost. */
	reset_dev(dhcp_peer);
	dhcp_drop_first = 1;
	ns_init(&ns, &toy_ops, guest_mac);
	const char *r = ns_dhcp(&ns, 10000);
	CHECK(!r, "DHCP: %s", r ? r : "ok");
	CHECK(ns.ip == GUEST_IP && ns.prefix == 24 && ns.gw == PEER_IP && ns.dns == 0x0a000203u && ns.mtu == 65520,
	      "DHCP result 10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3");
	CHECK(dhcp_discovers == 2 && dhcp_requests == 1 && dhcp_req_ip == GUEST_IP && dhcp_req_server == PEER_IP,
	      "2 DISCOVERs (one lost), REQUEST for the offer naming the server");
	/* No server: a bounded failure. */
	reset_dev(NULL);
	ns_init(&ns, &toy_ops, guest_mac);
	r = ns_dhcp(&ns, 3000);
	CHECK(r && strstr(r, "no DHCP OFFER in time"), "no server: %s", r ? r : "PASS?");

	/* TCP. */
	struct ns_tcp t;
	r = run_tcp(65536, 0, 0, 0, &t);
	CHECK(!r && t.crc_recv == t.crc_sent, "TCP 64 KiB clean: %s (crc %08x, %u segs, %u retransmits)",
	      r ? r : "ok", t.crc_recv, t.segs_sent, t.retransmits);
	r = run_tcp(65536, 7, 1, 1, &t);
	CHECK(!r && t.crc_recv == t.crc_sent && t.retransmits > 0, "TCP 64 KiB, every 7th segment lost, reordered, "
	      "duplicated: %s (%u retransmits, %u out of order dropped)", r ? r : "ok", t.retransmits, t.ooo_dropped);
	r = run_tcp(1, 3, 0, 0, &t);
	CHECK(!r, "TCP 1 byte, every 3rd segment lost (SYN/FIN retransmissions): %s", r ? r : "ok");
	r = run_tcp(200000, 0, 1, 0, &t);
	CHECK(!r, "TCP 200000 bytes: %s", r ? r : "ok");
	r = run_tcp_zero(65536, 0, 0, 0, 30000, &t);
	CHECK(!r && t.crc_recv == t.crc_sent && tp.zeroed && tp.wnd, "TCP 64 KiB, the window closed after 30000 bytes "
	      "and its update lost: probed open: %s (%u retransmits)", r ? r : "ok", t.retransmits);
	memset(&tp, 0, sizeof(tp));
	tp.port = 5001;
	tp.refuse = 1;
	reset_dev(tcp_peer);
	ns_init(&ns, &toy_ops, guest_mac);
	ns.ip = GUEST_IP;
	ns.prefix = 24;
	r = ns_tcp_echo(&ns, &t, PEER_IP, 5001, 100, 5000);
	CHECK(r && strstr(r, "refused"), "RST to the SYN: %s", r ? r : "PASS?");

	return check_summary();
}
