/*
 * pvh test guest: a tiny IPv4 stack for the netfront scenarios (and the
 * host tests): Ethernet II, ARP (RFC 826), IPv4 (RFC 791, no options sent,
 * no fragments), ICMP echo (RFC 792), UDP (RFC 768), a DHCP client
 * (RFC 2131/2132) and a minimal TCP client (RFC 793/9293). It only builds
 * and parses frames; frames come and go through net_dev_ops, so the same
 * code runs over netfront in the guest and over a socket on the host.
 *
 * Addresses are kept in host byte order (uint32_t 10.0.2.15 = 0x0a00020f).
 */
#ifndef PVH_NETSTACK_H
#define PVH_NETSTACK_H

#include <stdint.h>
#include <stddef.h>

#define ETH_HLEN	14
#define ETH_P_IP	0x0800
#define ETH_P_ARP	0x0806
#define ETH_MAX_FRAME	1514		/* 1500-byte MTU + header, no FCS */
#define NS_MSS		1460		/* our TCP MSS: 1500 - 20 - 20 */

#define IPPROTO_ICMP_	1
#define IPPROTO_TCP_	6
#define IPPROTO_UDP_	17

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10

struct net_dev_ops {
	/* Send one Ethernet frame (no FCS): 0 sent, -1 failed (reason from err()). */
	int (*tx)(void *ctx, const uint8_t *frame, size_t len);
	/* The next frame within wait_ms into buf: its length, 0 none in time,
	 * -1 the device failed. *validated: the backend checked its checksums
	 * (netif.h NETRXF_data_validated / NETRXF_csum_blank). */
	int (*rx)(void *ctx, uint8_t *buf, size_t max, uint64_t wait_ms, int *validated);
	uint64_t (*now_ms)(void *ctx);
	/* Why tx or rx failed. */
	const char *(*err)(void *ctx);
	void *ctx;
};

/* A parsed frame (pointers into the frame). */
struct ns_pkt {
	const uint8_t *dst_mac, *src_mac;
	uint16_t ethertype;
	/* ARP */
	uint16_t arp_op;
	const uint8_t *arp_sha, *arp_tha;
	uint32_t arp_spa, arp_tpa;
	/* IPv4 */
	uint32_t src, dst;
	uint8_t proto, ttl;
	uint16_t ip_id;
	int ip_frag;			/* MF set or a fragment offset: not reassembled */
	int csum_ok;			/* IP header and L4 checksums right (or validated) */
	const uint8_t *l4;		/* the IP payload */
	size_t l4_len;
	/* ICMP */
	uint8_t icmp_type, icmp_code;
	/* UDP / TCP */
	uint16_t sport, dport;
	const uint8_t *data;		/* UDP / TCP / ICMP payload */
	size_t data_len;
	uint32_t seq, ack;
	uint8_t tcp_flags;
	uint16_t wnd, mss;		/* mss 0: no MSS option */
};

struct ns_dhcp_msg {
	uint8_t op, type;		/* BOOTREPLY = 2; option 53 */
	uint32_t xid, yiaddr, server, mask, router, dns, lease, mtu;
	uint8_t chaddr[6];
};

struct netstack {
	struct net_dev_ops ops;
	uint8_t mac[6];
	uint32_t ip, gw, dns, server, lease, mtu;
	unsigned prefix;
	uint16_t udp_echo_port;		/* 0: no UDP echo service */
	uint16_t ip_id;
	unsigned txq;			/* the driver's queue the last frame came in on */
	struct { uint32_t ip; uint8_t mac[6]; } arp[4];
	unsigned arp_next;
	/* counters */
	uint32_t rx_frames, tx_frames, arp_replies, icmp_echoes, udp_echoes, bad_csum, dropped;
	uint32_t validated;		/* frames with NETRXF_data_validated */
	/* DHCP client */
	uint32_t xid;
	struct ns_dhcp_msg dhcp;	/* the last reply matching xid */
	int dhcp_got;
	/* TCP */
	struct ns_tcp *tcp;
	char errbuf[160];
};

/* One TCP connection as net_tcp runs it (exposed for tests). */
struct ns_tcp {
	uint32_t dst;
	uint16_t sport, dport;
	uint8_t dmac[6];
	int state;			/* NS_TCP_* */
	uint32_t iss, irs;
	uint32_t snd_una, snd_nxt, snd_max, snd_wnd;	/* offsets from iss */
	uint32_t rcv_nxt;		/* offset from irs */
	uint16_t peer_mss;
	uint64_t total;			/* bytes to send and to get back */
	uint32_t crc_sent, crc_recv;
	uint64_t rto_ms, rto_at;
	unsigned dupacks;
	uint32_t retransmits, segs_sent, segs_recv, ooo_dropped, dup_acks_total;
	int fin_sent, fin_acked, peer_fin, reset;
	const char *bad;		/* data mismatch etc. */
};
enum { NS_TCP_CLOSED, NS_TCP_SYN_SENT, NS_TCP_ESTABLISHED, NS_TCP_DONE };

/* ---- checksums ---- */
/* The 16-bit one's-complement sum of buf added to sum (RFC 1071), not folded. */
uint32_t ns_sum(const void *buf, size_t len, uint32_t sum);
uint16_t ns_fold(uint32_t sum);		/* folded and complemented: the checksum field */
/* The TCP/UDP checksum of segment l4 (its checksum field included as is). */
uint16_t ns_l4_csum(uint32_t src, uint32_t dst, uint8_t proto, const uint8_t *l4, size_t len);
uint32_t ns_crc32(uint32_t crc, const uint8_t *p, size_t n);	/* IEEE 802.3, as zlib's crc32 */

/* ---- builders: each returns the frame length ---- */
size_t ns_build_arp(uint8_t *f, uint16_t op, const uint8_t *sha, uint32_t spa, const uint8_t *tha,
		    uint32_t tpa, const uint8_t *dst_mac);
/* Ethernet + IPv4 header in front of a payload already at f + 34; checksum done. */
size_t ns_build_ip(uint8_t *f, const uint8_t *dmac, const uint8_t *smac, uint32_t src, uint32_t dst,
		   uint8_t proto, uint16_t id, int df, size_t l4_len);
size_t ns_build_udp(uint8_t *f, const uint8_t *dmac, const uint8_t *smac, uint32_t src, uint32_t dst,
		    uint16_t sport, uint16_t dport, uint16_t id, const uint8_t *data, size_t len);
size_t ns_build_tcp(uint8_t *f, const uint8_t *dmac, const uint8_t *smac, uint32_t src, uint32_t dst,
		    uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags,
		    uint16_t wnd, uint16_t mss, uint16_t id, const uint8_t *data, size_t len);
/* DHCPDISCOVER (type 1) or DHCPREQUEST (3, with requested address and server id): the UDP payload. */
size_t ns_build_dhcp(uint8_t *p, uint8_t type, uint32_t xid, const uint8_t *mac, uint32_t req_ip,
		     uint32_t server);

/* ---- parsers ---- */
/* 0 parsed (p filled), -1 not for us to look at (too short, not Ethernet II/IPv4/ARP). */
int ns_parse(const uint8_t *f, size_t len, int validated, struct ns_pkt *p);
/* 0 a BOOTREPLY with the DHCP magic cookie, -1 not. */
int ns_parse_dhcp(const uint8_t *p, size_t len, struct ns_dhcp_msg *m);

/* ---- the stack ---- */
void ns_init(struct netstack *ns, const struct net_dev_ops *ops, const uint8_t mac[6]);
/* "a.b.c.d/nn" -> ip and prefix: 0 ok, -1 not an address. */
int ns_parse_cidr(const char *s, size_t len, uint32_t *ip, unsigned *prefix);
/* Handle one received frame: ARP, ICMP echo, UDP echo, DHCP, TCP. */
void ns_input(struct netstack *ns, const uint8_t *f, size_t len, int validated);
/* Receive and handle frames for up to wait_ms (returns after the first one):
 * 1 one handled, 0 none, -1 device failure (ns->errbuf). */
int ns_poll(struct netstack *ns, uint64_t wait_ms);
/* Gratuitous ARP (announcement) for ns->ip: 0 sent, -1 failed (ns->errbuf). */
int ns_announce(struct netstack *ns);
/* ARP for ip (retried every 500 ms) within timeout_ms: NULL or a failure. */
const char *ns_arp_resolve(struct netstack *ns, uint32_t ip, uint8_t mac[6], uint64_t timeout_ms);
/* DISCOVER/OFFER/REQUEST/ACK within timeout_ms: ns->ip, prefix, gw, dns, server, lease. */
const char *ns_dhcp(struct netstack *ns, uint64_t timeout_ms);
/* Answers ARP/ICMP/UDP echo until ms passed or count datagrams echoed (0: no limit). */
const char *ns_echo_serve(struct netstack *ns, uint64_t ms, uint32_t count);
/* net_tcp's exchange: connect to dst:port, send `total` pattern bytes, get
 * them back, close. *t holds the counters afterwards. */
const char *ns_tcp_echo(struct netstack *ns, struct ns_tcp *t, uint32_t dst, uint16_t port,
			uint64_t total, uint64_t timeout_ms);
/* Byte i of the TCP test stream. */
uint8_t ns_pattern(uint64_t i);

const char *ns_ip_str(uint32_t ip, char *buf);	/* buf >= 16 */

#endif
