/*
 * pvh test guest: a tiny IPv4 stack (see netstack.h). Just enough for the
 * netfront scenarios: answer ARP and ping, echo UDP, get an address by
 * DHCP, and move a deterministic byte stream through one TCP connection.
 * Every checksum is computed here (RFC 1071), received ones are verified
 * unless the backend said it had (netif.h NETRXF_data_validated).
 */
#include "testguest.h"
#include "netstack.h"

/* ------------------------------------------------------------------ */
/* Bytes in network order                                              */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const uint8_t bcast_mac[6] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
static const uint8_t zero_mac[6];

static int mac_eq(const uint8_t *a, const uint8_t *b) { return !memcmp(a, b, 6); }

const char *ns_ip_str(uint32_t ip, char *buf)
{
	snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
	return buf;
}

int ns_parse_cidr(const char *s, size_t len, uint32_t *ip, unsigned *prefix)
{
	uint32_t a = 0;
	unsigned part = 0, v = 0, digits = 0;
	size_t i = 0;
	*prefix = 24;
	for (; i <= len; i++) {
		char c = i < len ? s[i] : 0;
		if (c >= '0' && c <= '9') {
			v = v * 10 + (unsigned)(c - '0');
			if (++digits > 3 || v > 255)
				return -1;
			continue;
		}
		if (!digits)
			return -1;
		a = a << 8 | v;
		v = digits = 0;
		part++;
		if (part == 4)
			break;
		if (c != '.')
			return -1;
	}
	if (part != 4)
		return -1;
	if (i < len) {
		if (s[i] != '/' || i + 1 >= len)
			return -1;
		unsigned p = 0;
		for (i++; i < len; i++) {
			if (s[i] < '0' || s[i] > '9')
				return -1;
			p = p * 10 + (unsigned)(s[i] - '0');
			if (p > 32)
				return -1;
		}
		*prefix = p;
	}
	*ip = a;
	return 0;
}

static uint32_t prefix_mask(unsigned prefix)
{
	return prefix ? 0xffffffffu << (32 - prefix) : 0;
}

/* ------------------------------------------------------------------ */
/* Checksums                                                           */

/* RFC 1071: 16-bit big-endian words, an odd last byte padded with zero. */
uint32_t ns_sum(const void *buf, size_t len, uint32_t sum)
{
	const uint8_t *p = buf;
	uint64_t s = sum;
	size_t i;
	for (i = 0; i + 1 < len; i += 2)
		s += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (i < len)
		s += (uint32_t)p[i] << 8;
	while (s >> 32)
		s = (s & 0xffffffffu) + (s >> 32);
	return (uint32_t)s;
}

uint16_t ns_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* TCP/UDP: the sum over the RFC 793/768 pseudo-header (src, dst, 0, proto, length) and the segment. */
uint16_t ns_l4_csum(uint32_t src, uint32_t dst, uint8_t proto, const uint8_t *l4, size_t len)
{
	uint32_t s = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + (uint32_t)len;
	return ns_fold(ns_sum(l4, len, s));
}

/* Bitwise CRC-32 (reflected, polynomial 0xedb88320): slow but no table. */
uint32_t ns_crc32(uint32_t crc, const uint8_t *p, size_t n)
{
	crc = ~crc;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
	}
	return ~crc;
}

/* ------------------------------------------------------------------ */
/* Builders                                                            */

static void eth_hdr(uint8_t *f, const uint8_t *dmac, const uint8_t *smac, uint16_t type)
{
	memcpy(f, dmac, 6);
	memcpy(f + 6, smac, 6);
	put16(f + 12, type);
}

/* RFC 826 for Ethernet/IPv4: 28 bytes after the Ethernet header (frame 42 bytes, padded to 60). */
size_t ns_build_arp(uint8_t *f, uint16_t op, const uint8_t *sha, uint32_t spa, const uint8_t *tha,
		    uint32_t tpa, const uint8_t *dst_mac)
{
	eth_hdr(f, dst_mac, sha, ETH_P_ARP);
	uint8_t *a = f + ETH_HLEN;
	put16(a, 1);			/* htype Ethernet */
	put16(a + 2, ETH_P_IP);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, op);
	memcpy(a + 8, sha, 6);
	put32(a + 14, spa);
	memcpy(a + 18, tha, 6);
	put32(a + 24, tpa);
	memset(a + 28, 0, 18);		/* pad to the 60-byte minimum */
	return 60;
}

size_t ns_build_ip(uint8_t *f, const uint8_t *dmac, const uint8_t *smac, uint32_t src, uint32_t dst,
		   uint8_t proto, uint16_t id, int df, size_t l4_len)
{
	eth_hdr(f, dmac, smac, ETH_P_IP);
	uint8_t *ip = f + ETH_HLEN;
	ip[0] = 0x45;			/* version 4, IHL 5: no options */
	ip[1] = 0;
	put16(ip + 2, (uint16_t)(20 + l4_len));
	put16(ip + 4, id);
	put16(ip + 6, df ? 0x4000 : 0);
	ip[8] = 64;
	ip[9] = proto;
	put16(ip + 10, 0);
	put32(ip + 12, src);
	put32(ip + 16, dst);
	put16(ip + 10, ns_fold(ns_sum(ip, 20, 0)));
	/*
	 * Not padded to Ethernet's 60-byte minimum: a virtual link needs none
	 * (Linux's netfront sends 54-byte ACKs), and passt (2023-03) took the
	 * 2 pad bytes after a 58-byte SYN for data and ignored the SYN.
	 */
	return ETH_HLEN + 20 + l4_len;
}

size_t ns_build_udp(uint8_t *f, const uint8_t *dmac, const uint8_t *smac, uint32_t src, uint32_t dst,
		    uint16_t sport, uint16_t dport, uint16_t id, const uint8_t *data, size_t len)
{
	uint8_t *u = f + ETH_HLEN + 20;
	put16(u, sport);
	put16(u + 2, dport);
	put16(u + 4, (uint16_t)(8 + len));
	put16(u + 6, 0);
	if (data != u + 8)
		memmove(u + 8, data, len);
	uint16_t c = ns_l4_csum(src, dst, IPPROTO_UDP_, u, 8 + len);
	put16(u + 6, c ? c : 0xffff);	/* RFC 768: a computed 0 is sent as all ones */
	return ns_build_ip(f, dmac, smac, src, dst, IPPROTO_UDP_, id, 0, 8 + len);
}

size_t ns_build_tcp(uint8_t *f, const uint8_t *dmac, const uint8_t *smac, uint32_t src, uint32_t dst,
		    uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags,
		    uint16_t wnd, uint16_t mss, uint16_t id, const uint8_t *data, size_t len)
{
	uint8_t *t = f + ETH_HLEN + 20;
	size_t hl = mss ? 24 : 20;
	put16(t, sport);
	put16(t + 2, dport);
	put32(t + 4, seq);
	put32(t + 8, ack);
	t[12] = (uint8_t)(hl / 4) << 4;
	t[13] = flags;
	put16(t + 14, wnd);
	put16(t + 16, 0);
	put16(t + 18, 0);		/* urgent pointer */
	if (mss) {			/* RFC 793 option 2, length 4 */
		t[20] = 2;
		t[21] = 4;
		put16(t + 22, mss);
	}
	if (len && data != t + hl)
		memmove(t + hl, data, len);
	put16(t + 16, ns_l4_csum(src, dst, IPPROTO_TCP_, t, hl + len));
	return ns_build_ip(f, dmac, smac, src, dst, IPPROTO_TCP_, id, 1, hl + len);
}

/* RFC 2131 section 4.4.1 / RFC 2132: BOOTREQUEST with the magic cookie and options. */
size_t ns_build_dhcp(uint8_t *p, uint8_t type, uint32_t xid, const uint8_t *mac, uint32_t req_ip,
		     uint32_t server)
{
	memset(p, 0, 300);
	p[0] = 1;			/* BOOTREQUEST */
	p[1] = 1;			/* htype Ethernet */
	p[2] = 6;
	put32(p + 4, xid);
	memcpy(p + 28, mac, 6);		/* chaddr */
	put32(p + 236, 0x63825363);	/* magic cookie 99.130.83.99 */
	uint8_t *o = p + 240;
	*o++ = 53; *o++ = 1; *o++ = type;
	*o++ = 61; *o++ = 7; *o++ = 1;	/* client identifier: htype 1 + MAC */
	memcpy(o, mac, 6);
	o += 6;
	if (type == 3) {
		*o++ = 50; *o++ = 4; put32(o, req_ip); o += 4;
		*o++ = 54; *o++ = 4; put32(o, server); o += 4;
	}
	/* parameter request list: mask, router, DNS, domain, MTU, lease, server id */
	static const uint8_t prl[] = { 1, 3, 6, 15, 26, 51, 54 };
	*o++ = 55;
	*o++ = sizeof(prl);
	memcpy(o, prl, sizeof(prl));
	o += sizeof(prl);
	*o++ = 57; *o++ = 2; put16(o, 1500); o += 2;	/* max message size */
	*o++ = 255;
	size_t n = (size_t)(o - p);
	return n < 300 ? 300 : n;	/* BOOTP's minimum (RFC 1542 section 2.1) */
}

/* ------------------------------------------------------------------ */
/* Parsers                                                             */

int ns_parse(const uint8_t *f, size_t len, int validated, struct ns_pkt *p)
{
	memset(p, 0, sizeof(*p));
	if (len < ETH_HLEN)
		return -1;
	p->dst_mac = f;
	p->src_mac = f + 6;
	p->ethertype = get16(f + 12);
	const uint8_t *b = f + ETH_HLEN;
	size_t n = len - ETH_HLEN;
	if (p->ethertype == ETH_P_ARP) {
		if (n < 28 || get16(b) != 1 || get16(b + 2) != ETH_P_IP || b[4] != 6 || b[5] != 4)
			return -1;
		p->arp_op = get16(b + 6);
		p->arp_sha = b + 8;
		p->arp_spa = get32(b + 14);
		p->arp_tha = b + 18;
		p->arp_tpa = get32(b + 24);
		return 0;
	}
	if (p->ethertype != ETH_P_IP || n < 20 || (b[0] >> 4) != 4)
		return -1;
	size_t ihl = (size_t)(b[0] & 0xf) * 4, tot = get16(b + 2);
	if (ihl < 20 || tot < ihl || tot > n)
		return -1;
	p->ip_id = get16(b + 4);
	p->ip_frag = (get16(b + 6) & 0x3fff) != 0;	/* MF or offset */
	p->ttl = b[8];
	p->proto = b[9];
	p->src = get32(b + 12);
	p->dst = get32(b + 16);
	p->l4 = b + ihl;
	p->l4_len = tot - ihl;		/* Ethernet padding beyond tot ignored */
	/* The header checksum is never offloaded: always checked. */
	p->csum_ok = ns_fold(ns_sum(b, ihl, 0)) == 0;
	if (p->ip_frag)
		return 0;
	const uint8_t *l = p->l4;
	size_t ll = p->l4_len;
	if (p->proto == IPPROTO_ICMP_ && ll >= 8) {
		p->icmp_type = l[0];
		p->icmp_code = l[1];
		p->data = l + 8;
		p->data_len = ll - 8;
		p->csum_ok &= ns_fold(ns_sum(l, ll, 0)) == 0;
	} else if (p->proto == IPPROTO_UDP_ && ll >= 8) {
		size_t ul = get16(l + 4);
		if (ul < 8 || ul > ll)
			return -1;
		p->sport = get16(l);
		p->dport = get16(l + 2);
		p->data = l + 8;
		p->data_len = ul - 8;
		if (!validated && get16(l + 6) != 0)	/* 0: the sender computed none (RFC 768) */
			p->csum_ok &= ns_l4_csum(p->src, p->dst, IPPROTO_UDP_, l, ul) == 0;
	} else if (p->proto == IPPROTO_TCP_ && ll >= 20) {
		size_t hl = (size_t)(l[12] >> 4) * 4;
		if (hl < 20 || hl > ll)
			return -1;
		p->sport = get16(l);
		p->dport = get16(l + 2);
		p->seq = get32(l + 4);
		p->ack = get32(l + 8);
		p->tcp_flags = l[13];
		p->wnd = get16(l + 14);
		p->data = l + hl;
		p->data_len = ll - hl;
		for (size_t i = 20; i < hl;) {	/* options: only MSS matters to us */
			uint8_t k = l[i];
			if (k == 0)
				break;
			if (k == 1) {
				i++;
				continue;
			}
			if (i + 1 >= hl || l[i + 1] < 2 || i + l[i + 1] > hl)
				break;
			if (k == 2 && l[i + 1] == 4)
				p->mss = get16(l + i + 2);
			i += l[i + 1];
		}
		if (!validated)
			p->csum_ok &= ns_l4_csum(p->src, p->dst, IPPROTO_TCP_, l, ll) == 0;
	} else {
		return -1;
	}
	return 0;
}

int ns_parse_dhcp(const uint8_t *p, size_t len, struct ns_dhcp_msg *m)
{
	memset(m, 0, sizeof(*m));
	if (len < 240 || p[0] != 2 || get32(p + 236) != 0x63825363)
		return -1;
	m->op = p[0];
	m->xid = get32(p + 4);
	m->yiaddr = get32(p + 16);
	memcpy(m->chaddr, p + 28, 6);
	for (size_t i = 240; i < len;) {
		uint8_t k = p[i];
		if (k == 255)
			break;
		if (k == 0) {
			i++;
			continue;
		}
		if (i + 1 >= len || i + 2 + p[i + 1] > len)
			return -1;
		uint8_t l = p[i + 1];
		const uint8_t *v = p + i + 2;
		switch (k) {
		case 53: if (l >= 1) m->type = v[0]; break;
		case 1: if (l >= 4) m->mask = get32(v); break;
		case 3: if (l >= 4) m->router = get32(v); break;
		case 6: if (l >= 4) m->dns = get32(v); break;	/* the first server */
		case 51: if (l >= 4) m->lease = get32(v); break;
		case 54: if (l >= 4) m->server = get32(v); break;
		case 26: if (l >= 2) m->mtu = get16(v); break;
		}
		i += 2 + (size_t)l;
	}
	return m->type ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* The stack                                                           */

static uint8_t txbuf[ETH_MAX_FRAME + 64];
static uint8_t rxbuf[65536 + 64];

void ns_init(struct netstack *ns, const struct net_dev_ops *ops, const uint8_t mac[6])
{
	memset(ns, 0, sizeof(*ns));
	ns->ops = *ops;
	memcpy(ns->mac, mac, 6);
	ns->ip_id = 1;
	ns->mtu = 1500;
}

static uint64_t now_ms(struct netstack *ns) { return ns->ops.now_ms(ns->ops.ctx); }

static int ns_send(struct netstack *ns, size_t len)
{
	if (ns->ops.tx(ns->ops.ctx, txbuf, len) < 0) {
		snprintf(ns->errbuf, sizeof(ns->errbuf), "tx: %s", ns->ops.err(ns->ops.ctx));
		return -1;
	}
	ns->tx_frames++;
	return 0;
}

static void arp_learn(struct netstack *ns, uint32_t ip, const uint8_t *mac)
{
	if (!ip || mac_eq(mac, zero_mac) || mac_eq(mac, bcast_mac))
		return;
	for (unsigned i = 0; i < ARRAY_SIZE(ns->arp); i++)
		if (ns->arp[i].ip == ip) {
			memcpy(ns->arp[i].mac, mac, 6);
			return;
		}
	unsigned i = ns->arp_next++ % ARRAY_SIZE(ns->arp);
	ns->arp[i].ip = ip;
	memcpy(ns->arp[i].mac, mac, 6);
}

static int arp_lookup(struct netstack *ns, uint32_t ip, uint8_t *mac)
{
	for (unsigned i = 0; i < ARRAY_SIZE(ns->arp); i++)
		if (ns->arp[i].ip == ip && ip) {
			memcpy(mac, ns->arp[i].mac, 6);
			return 1;
		}
	return 0;
}

static void tcp_input(struct netstack *ns, const struct ns_pkt *p);

void ns_input(struct netstack *ns, const uint8_t *f, size_t len, int validated)
{
	struct ns_pkt p;
	ns->rx_frames++;
	if (validated)
		ns->validated++;
	if (ns_parse(f, len, validated, &p)) {
		ns->dropped++;
		return;
	}
	if (!mac_eq(p.dst_mac, ns->mac) && !mac_eq(p.dst_mac, bcast_mac)) {
		ns->dropped++;
		return;
	}
	if (p.ethertype == ETH_P_ARP) {
		/* RFC 826: merge the sender, and answer a request for our address. */
		arp_learn(ns, p.arp_spa, p.arp_sha);
		if (p.arp_op == 1 && ns->ip && p.arp_tpa == ns->ip) {
			uint8_t sha[6];
			memcpy(sha, p.arp_sha, 6);
			uint32_t spa = p.arp_spa;
			if (ns_send(ns, ns_build_arp(txbuf, 2, ns->mac, ns->ip, sha, spa, sha)) == 0)
				ns->arp_replies++;
		}
		return;
	}
	if (!p.csum_ok) {
		ns->bad_csum++;
		return;
	}
	if (p.ip_frag) {
		ns->dropped++;
		return;
	}
	/* DHCP replies come before we have an address (to us or broadcast). */
	if (p.proto == IPPROTO_UDP_ && p.dport == 68 && p.sport == 67) {
		struct ns_dhcp_msg m;
		if (!ns_parse_dhcp(p.data, p.data_len, &m) && m.xid == ns->xid && mac_eq(m.chaddr, ns->mac)) {
			ns->dhcp = m;
			ns->dhcp_got = 1;
		}
		return;
	}
	if (!ns->ip || p.dst != ns->ip) {
		ns->dropped++;
		return;
	}
	uint8_t smac[6];
	memcpy(smac, p.src_mac, 6);
	if (p.proto == IPPROTO_ICMP_ && p.icmp_type == 8 && p.icmp_code == 0) {
		/* RFC 792 echo reply: same identifier, sequence and data. */
		size_t n = p.l4_len;
		if (ETH_HLEN + 20 + n > sizeof(txbuf)) {
			ns->dropped++;
			return;
		}
		uint8_t *ic = txbuf + ETH_HLEN + 20;
		memmove(ic, p.l4, n);
		ic[0] = 0;
		put16(ic + 2, 0);
		put16(ic + 2, ns_fold(ns_sum(ic, n, 0)));
		if (ns_send(ns, ns_build_ip(txbuf, smac, ns->mac, ns->ip, p.src, IPPROTO_ICMP_, ns->ip_id++, 0, n)) == 0)
			ns->icmp_echoes++;
		return;
	}
	if (p.proto == IPPROTO_UDP_ && ns->udp_echo_port && p.dport == ns->udp_echo_port) {
		if (ETH_HLEN + 28 + p.data_len > sizeof(txbuf)) {
			ns->dropped++;
			return;
		}
		/* RFC 862: the datagram goes back to where it came from. */
		if (ns_send(ns, ns_build_udp(txbuf, smac, ns->mac, ns->ip, p.src, p.dport, p.sport, ns->ip_id++,
					  p.data, p.data_len)) == 0)
			ns->udp_echoes++;
		return;
	}
	if (p.proto == IPPROTO_TCP_ && ns->tcp) {
		tcp_input(ns, &p);
		return;
	}
	ns->dropped++;
}

int ns_poll(struct netstack *ns, uint64_t wait_ms)
{
	int validated = 0;
	int n = ns->ops.rx(ns->ops.ctx, rxbuf, sizeof(rxbuf), wait_ms, &validated);
	if (n < 0) {
		snprintf(ns->errbuf, sizeof(ns->errbuf), "rx: %s", ns->ops.err(ns->ops.ctx));
		return -1;
	}
	if (n == 0)
		return 0;
	ns_input(ns, rxbuf, (size_t)n, validated);
	return 1;
}

int ns_announce(struct netstack *ns)
{
	/* RFC 5227 2.3: an ARP request with sender and target = our address, broadcast. */
	return ns_send(ns, ns_build_arp(txbuf, 1, ns->mac, ns->ip, zero_mac, ns->ip, bcast_mac));
}

const char *ns_arp_resolve(struct netstack *ns, uint32_t ip, uint8_t mac[6], uint64_t timeout_ms)
{
	uint64_t end = now_ms(ns) + timeout_ms, next = 0;
	unsigned sent = 0;
	char b[16];
	while (!arp_lookup(ns, ip, mac)) {
		uint64_t now = now_ms(ns);
		if (now >= end)
			return fail("no ARP reply for %s in %lu ms (%u requests)", ns_ip_str(ip, b),
				    (unsigned long)timeout_ms, sent);
		if (now >= next) {
			if (ns_send(ns, ns_build_arp(txbuf, 1, ns->mac, ns->ip, zero_mac, ip, bcast_mac)))
				return ns->errbuf;
			sent++;
			next = now + 500;
		}
		uint64_t w = (next < end ? next : end) - now;
		if (ns_poll(ns, w ? w : 1) < 0)
			return ns->errbuf;
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* DHCP (RFC 2131 section 3.1: DISCOVER, OFFER, REQUEST, ACK)          */

/* Broadcast a DHCP message and wait (up to 1 s, then again) for the reply of type `want`. */
static const char *dhcp_step(struct netstack *ns, uint8_t type, uint8_t want, uint32_t req_ip,
			     uint32_t server, uint64_t end, const char *what)
{
	unsigned tries = 0;
	for (;;) {
		uint64_t now = now_ms(ns);
		if (now >= end)
			return fail("no DHCP %s in time (%u %s sent)", what, tries,
				    type == 1 ? "DISCOVERs" : "REQUESTs");
		size_t n = ns_build_dhcp(txbuf + ETH_HLEN + 28, type, ns->xid, ns->mac, req_ip, server);
		if (ns_send(ns, ns_build_udp(txbuf, bcast_mac, ns->mac, 0, 0xffffffffu, 68, 67, ns->ip_id++,
					  txbuf + ETH_HLEN + 28, n)))
			return ns->errbuf;
		tries++;
		/* RFC 2131 4.1 wants randomized back-off from 4 s; 1 s is plenty on one link. */
		uint64_t retry = now + 1000 < end ? now + 1000 : end;
		ns->dhcp_got = 0;
		while (!ns->dhcp_got && (now = now_ms(ns)) < retry)
			if (ns_poll(ns, retry - now) < 0)
				return ns->errbuf;
		if (!ns->dhcp_got)
			continue;
		if (ns->dhcp.type == 6)
			return fail("DHCPNAK to our REQUEST for %u.%u.%u.%u", req_ip >> 24, (req_ip >> 16) & 0xff,
				    (req_ip >> 8) & 0xff, req_ip & 0xff);
		if (ns->dhcp.type == want)
			return NULL;
	}
}

const char *ns_dhcp(struct netstack *ns, uint64_t timeout_ms)
{
	const char *r;
	uint64_t end = now_ms(ns) + timeout_ms;
	/* xid: anything this client will recognise; the MAC and the clock make it vary. */
	ns->xid = get32(ns->mac + 2) ^ (uint32_t)now_ms(ns) ^ 0x5a5a0000;
	ns->ip = 0;
	if ((r = dhcp_step(ns, 1, 2, 0, 0, end, "OFFER")))
		return r;
	uint32_t offer = ns->dhcp.yiaddr, server = ns->dhcp.server;
	if (!offer)
		return "DHCPOFFER without an address (yiaddr 0)";
	if ((r = dhcp_step(ns, 3, 5, offer, server, end, "ACK")))
		return r;
	struct ns_dhcp_msg *m = &ns->dhcp;
	if (m->yiaddr != offer)
		return fail("DHCPACK for 0x%x, offered 0x%x", m->yiaddr, offer);
	ns->ip = m->yiaddr;
	unsigned prefix = 0;
	while (prefix < 32 && (m->mask << prefix) & 0x80000000u)
		prefix++;
	ns->prefix = m->mask ? prefix : 24;
	ns->gw = m->router;
	ns->dns = m->dns;
	ns->server = m->server;
	ns->lease = m->lease;
	if (m->mtu)
		ns->mtu = m->mtu;
	return NULL;
}

const char *ns_echo_serve(struct netstack *ns, uint64_t ms, uint32_t count)
{
	uint64_t end = now_ms(ns) + ms;
	for (;;) {
		uint64_t now = now_ms(ns);
		if ((count && ns->udp_echoes >= count) || now >= end)
			return NULL;
		if (ns_poll(ns, end - now) < 0)
			return ns->errbuf;
	}
}

/* ------------------------------------------------------------------ */
/* TCP: one active connection, go-back-N (RFC 9293, RFC 6298's backoff)*/

uint8_t ns_pattern(uint64_t i)
{
	/* Not periodic in any short window: a misplaced segment shows. */
	uint32_t x = (uint32_t)i * 2654435761u;
	return (uint8_t)((x >> 24) ^ (uint32_t)(i >> 8) ^ 0x5a);
}

#define TCP_WND		8760		/* 6 full segments: netfront posts 32 RX buffers */
#define TCP_RTO_MIN	200
#define TCP_RTO_MAX	3200

static const char *tcp_send(struct netstack *ns, struct ns_tcp *t, uint32_t off, uint8_t flags, size_t len)
{
	uint8_t *data = txbuf + ETH_HLEN + 20 + 20;
	for (size_t i = 0; i < len; i++)
		data[i] = ns_pattern((uint64_t)off - 1 + i);	/* offset 0 is the SYN */
	uint32_t ack = (flags & TCP_ACK) ? t->irs + t->rcv_nxt : 0;
	size_t n = ns_build_tcp(txbuf, t->dmac, ns->mac, ns->ip, t->dst, t->sport, t->dport, t->iss + off, ack,
				flags, TCP_WND, (flags & TCP_SYN) ? NS_MSS : 0, ns->ip_id++, data, len);
	if (ns_send(ns, n))
		return ns->errbuf;
	t->segs_sent++;
	return NULL;
}

static void tcp_input(struct netstack *ns, const struct ns_pkt *p)
{
	struct ns_tcp *t = ns->tcp;
	if (p->src != t->dst || p->sport != t->dport || p->dport != t->sport) {
		ns->dropped++;
		return;
	}
	t->segs_recv++;
	if (p->tcp_flags & TCP_RST) {
		/* RFC 9293 3.10.7: in SYN-SENT a RST is acceptable if it acks our SYN. */
		if (t->state == NS_TCP_SYN_SENT && !((p->tcp_flags & TCP_ACK) && p->ack == t->iss + 1))
			return;
		t->reset = 1;
		return;
	}
	if (t->state == NS_TCP_SYN_SENT) {
		if ((p->tcp_flags & (TCP_SYN | TCP_ACK)) != (TCP_SYN | TCP_ACK) || p->ack != t->iss + 1)
			return;
		t->irs = p->seq;
		t->rcv_nxt = 1;
		t->snd_una = t->snd_nxt = t->snd_max = 1;
		t->snd_wnd = p->wnd;
		t->peer_mss = p->mss ? p->mss : 536;	/* RFC 9293 3.7.1: 536 without the option */
		if (t->peer_mss > NS_MSS)
			t->peer_mss = NS_MSS;
		t->state = NS_TCP_ESTABLISHED;
		t->rto_ms = TCP_RTO_MIN;
		t->rto_at = 0;
		tcp_send(ns, t, t->snd_nxt, TCP_ACK, 0);
		return;
	}
	if (t->state != NS_TCP_ESTABLISHED)
		return;
	/* ACK processing: offsets relative to iss. */
	if (p->tcp_flags & TCP_ACK) {
		uint32_t a = p->ack - t->iss;
		if (a > t->snd_una && a <= t->snd_max) {
			t->snd_una = a;
			if (t->snd_nxt < a)
				t->snd_nxt = a;
			t->dupacks = 0;
			t->rto_ms = TCP_RTO_MIN;
			t->rto_at = t->snd_una < t->snd_max ? now_ms(ns) + t->rto_ms : 0;
			if (t->fin_sent && a == t->total + 2)
				t->fin_acked = 1;
		} else if (a == t->snd_una && t->snd_una < t->snd_max && !p->data_len &&
			   !(p->tcp_flags & TCP_FIN) && p->wnd == t->snd_wnd) {
			/* RFC 5681 3.2: the third duplicate ACK: resend from snd_una. */
			t->dup_acks_total++;
			if (++t->dupacks == 3) {
				t->snd_nxt = t->snd_una;
				t->retransmits++;
			}
		}
		t->snd_wnd = p->wnd;
	}
	/* Data: in order only; anything else is dropped and re-acked. A repeated
	 * SYN-ACK (our ACK of it lost) is answered with an ACK too. */
	uint32_t off = p->seq - t->irs;
	int need_ack = (p->tcp_flags & TCP_SYN) != 0;
	if (p->data_len) {
		need_ack = 1;
		if (off != t->rcv_nxt) {
			t->ooo_dropped++;
		} else if ((uint64_t)t->rcv_nxt - 1 + p->data_len > t->total) {
			t->bad = "the echo sent more bytes than we did";
		} else {
			uint64_t base = t->rcv_nxt - 1;
			for (size_t i = 0; i < p->data_len && !t->bad; i++)
				if (p->data[i] != ns_pattern(base + i)) {
					static char b[96];
					snprintf(b, sizeof(b), "byte %lu came back as 0x%02x, sent 0x%02x",
						 (unsigned long)(base + i), p->data[i], ns_pattern(base + i));
					t->bad = b;
				}
			t->crc_recv = ns_crc32(t->crc_recv, p->data, p->data_len);
			t->rcv_nxt += (uint32_t)p->data_len;
		}
	}
	/* 32-bit sequence arithmetic: the FIN's sequence number follows its data. */
	uint32_t fin_off = p->seq + (uint32_t)p->data_len - t->irs;
	if ((p->tcp_flags & TCP_FIN) && fin_off == t->rcv_nxt && !t->peer_fin) {
		t->peer_fin = 1;
		t->rcv_nxt++;
		need_ack = 1;
	} else if (p->tcp_flags & TCP_FIN) {
		need_ack = 1;
	}
	if (need_ack) {
		uint32_t seq = t->snd_nxt;
		tcp_send(ns, t, seq, TCP_ACK, 0);
	}
}

const char *ns_tcp_echo(struct netstack *ns, struct ns_tcp *t, uint32_t dst, uint16_t port,
			uint64_t total, uint64_t timeout_ms)
{
	const char *r;
	char b[16];
	memset(t, 0, sizeof(*t));
	t->dst = dst;
	t->dport = port;
	t->total = total;
	uint64_t start = now_ms(ns), end = start + timeout_ms;
	t->sport = (uint16_t)(49152 + ((start ^ ns->mac[5]) & 0x3fff));
	t->iss = (uint32_t)(start * 2654435761u) ^ 0x1234567u;
	uint32_t hop = dst;
	if ((dst ^ ns->ip) & prefix_mask(ns->prefix))
		hop = ns->gw;
	if ((r = ns_arp_resolve(ns, hop, t->dmac, timeout_ms)))
		return r;
	/* The sent stream's CRC: the pattern does not depend on segmentation. */
	for (uint64_t i = 0; i < total; i++) {
		uint8_t c = ns_pattern(i);
		t->crc_sent = ns_crc32(t->crc_sent, &c, 1);
	}
	ns->tcp = t;
	t->state = NS_TCP_SYN_SENT;
	t->rto_ms = 1000;		/* RFC 6298 2.1: 1 s until a measurement (we take none) */
	uint64_t syn_at = 0;
	r = NULL;
	for (;;) {
		uint64_t now = now_ms(ns);
		if (t->reset) {
			r = t->state == NS_TCP_SYN_SENT ? fail("connection to %s:%u refused (RST)", ns_ip_str(dst, b), port)
						       : fail("connection reset after %u of %lu bytes back",
							      t->rcv_nxt ? t->rcv_nxt - 1 : 0, (unsigned long)total);
			break;
		}
		if (t->bad) {
			r = t->bad;
			break;
		}
		if (now >= end) {
			r = fail("%s after %lu ms: sent %u acked %u of %lu, received %u, %u retransmits%s%s",
				 t->state == NS_TCP_SYN_SENT ? "no SYN-ACK" : "stuck", (unsigned long)timeout_ms,
				 t->snd_max ? t->snd_max - 1 : 0, t->snd_una ? t->snd_una - 1 : 0,
				 (unsigned long)total, t->rcv_nxt ? t->rcv_nxt - 1 : 0, t->retransmits,
				 t->fin_sent ? ", FIN sent" : "", t->peer_fin ? ", FIN received" : "");
			break;
		}
		if (t->state == NS_TCP_SYN_SENT) {
			if (now >= syn_at) {
				if (syn_at)
					t->retransmits++;
				if ((r = tcp_send(ns, t, 0, TCP_SYN, 0)))
					break;
				syn_at = now + t->rto_ms;
				if (t->rto_ms < TCP_RTO_MAX)
					t->rto_ms *= 2;
			}
		} else if (t->state == NS_TCP_ESTABLISHED) {
			/* rcv_nxt counts the SYN and the peer's FIN. */
			uint32_t back = t->rcv_nxt - 1 - (uint32_t)t->peer_fin;
			int all_back = back == total;
			if (t->peer_fin && !all_back) {
				r = fail("the peer closed after %u of %lu bytes back", back, (unsigned long)total);
				break;
			}
			/* Retransmission timeout: go back to snd_una (RFC 6298 5.4-5.6). */
			int probe = 0;
			if (t->rto_at && now >= t->rto_at) {
				probe = !t->snd_wnd;
				t->snd_nxt = t->snd_una;
				t->retransmits++;
				if (t->rto_ms < TCP_RTO_MAX)
					t->rto_ms *= 2;
				t->rto_at = 0;
				if (t->fin_sent && !t->fin_acked)
					t->fin_sent = 0;	/* resent below */
			}
			/* Data within the peer's window and a few segments of ours. */
			uint32_t wnd = t->snd_wnd < 4u * t->peer_mss ? t->snd_wnd : 4u * t->peer_mss;
			/*
			 * RFC 9293 3.8.6.1: a zero window is probed, one byte past it, each
			 * time the timer fires; the peer's answer carries its window. Without
			 * the probe a lost window update (a frame dropped on a loaded host)
			 * would leave both ends waiting for ever.
			 */
			if (probe && !wnd)
				wnd = 1;
			uint32_t data_end = (uint32_t)total + 1;
			while (t->snd_nxt < data_end && t->snd_nxt < t->snd_una + wnd) {
				uint32_t len = data_end - t->snd_nxt;
				if (len > t->peer_mss)
					len = t->peer_mss;
				if (t->snd_nxt + len > t->snd_una + wnd)
					len = t->snd_una + wnd - t->snd_nxt;
				if ((r = tcp_send(ns, t, t->snd_nxt, TCP_ACK | TCP_PSH, len)))
					break;
				t->snd_nxt += len;
				if (t->snd_nxt > t->snd_max)
					t->snd_max = t->snd_nxt;
				if (!t->rto_at)
					t->rto_at = now + t->rto_ms;
			}
			if (r)
				break;
			/* A zero window: the retransmission timer probes it (one byte from snd_una). */
			if (!t->snd_wnd && t->snd_una < data_end && !t->rto_at)
				t->rto_at = now + t->rto_ms;
			/* Everything sent, acked and back: our FIN (and again after a timeout). */
			if (all_back && t->snd_una == data_end && !t->fin_sent) {
				if ((r = tcp_send(ns, t, data_end, TCP_ACK | TCP_FIN, 0)))
					break;
				t->fin_sent = 1;
				t->snd_nxt = t->snd_max = data_end + 1;
				if (!t->rto_at)
					t->rto_at = now + t->rto_ms;
			}
			if (t->fin_acked && t->peer_fin) {
				t->state = NS_TCP_DONE;
				break;
			}
		}
		uint64_t wake = end;
		if (t->state == NS_TCP_SYN_SENT && syn_at < wake)
			wake = syn_at;
		if (t->rto_at && t->rto_at < wake)
			wake = t->rto_at;
		if (ns_poll(ns, wake > now ? wake - now : 1) < 0) {
			r = ns->errbuf;
			break;
		}
	}
	ns->tcp = NULL;
	if (!r && t->crc_recv != t->crc_sent)
		r = fail("crc32 of the bytes back 0x%08x, sent 0x%08x", t->crc_recv, t->crc_sent);
	return r;
}
