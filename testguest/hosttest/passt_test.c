/*
 * netstack.c against the real peer: passt (user-mode networking, the host
 * side pvh uses for `--net user`) over a socketpair (`passt --fd`, QEMU's
 * stream framing: a 32-bit big-endian length before each frame). DHCP as
 * net_dhcp does it, then net_tcp's exchange with an echo server on the
 * host, reached through the gateway address (passt maps it to the host),
 * then net_echo's UDP service through passt's port forwarding (-u).
 * Run by `make hosttest` only when passt is installed.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <arpa/inet.h>
/* testguest.h's shutdown() is the guest's SCHEDOP_shutdown, not the socket call. */
#define shutdown testguest_shutdown
#include "../netstack.c"
#undef shutdown
#include "check.h"

static int sock = -1;
static char err[128];

static int full_read(int fd, uint8_t *b, size_t n)
{
	while (n) {
		ssize_t r = read(fd, b, n);
		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static int q_tx(void *ctx, const uint8_t *f, size_t n)
{
	(void)ctx;
	/* Length and frame in one write, as QEMU's stream netdev: passt (2023-03) left a
	 * frame whose length word came alone unhandled until more data arrived. */
	static uint8_t b[4 + 65536];
	b[0] = (uint8_t)(n >> 24); b[1] = (uint8_t)(n >> 16); b[2] = (uint8_t)(n >> 8); b[3] = (uint8_t)n;
	memcpy(b + 4, f, n);
	if (write(sock, b, n + 4) != (ssize_t)(n + 4)) {
		snprintf(err, sizeof(err), "write to passt: %s", strerror(errno));
		return -1;
	}
	return 0;
}

static uint64_t q_now_ms(void);
static int q_rx(void *ctx, uint8_t *buf, size_t max, uint64_t wait_ms, int *validated)
{
	(void)ctx;
	*validated = 0;
	struct pollfd p = { .fd = sock, .events = POLLIN };
	int r = poll(&p, 1, (int)(wait_ms > 60000 ? 60000 : wait_ms));
	if (r <= 0)
		return 0;
	uint8_t h[4];
	if (full_read(sock, h, 4)) {
		snprintf(err, sizeof(err), "passt closed the socket");
		return -1;
	}
	size_t n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
	static uint8_t junk[70000];
	if (n > sizeof(junk) || full_read(sock, n <= max ? buf : junk, n)) {
		snprintf(err, sizeof(err), "bad frame from passt (%zu bytes)", n);
		return -1;
	}
	if (verbose)
		printf("     %lu ms: frame from passt: %zu bytes, ethertype %02x%02x\n", (unsigned long)q_now_ms(), n,
		       buf[12], buf[13]);
	return n <= max ? (int)n : 0;
}

static uint64_t q_now(void *ctx)
{
	(void)ctx;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t q_now_ms(void) { return q_now(NULL); }
static const char *q_err(void *ctx) { (void)ctx; return err; }

/* net_echo's UDP service: host port 47007 forwarded by passt to the guest's port 7. */
#define UDP_HOST_PORT 47007
#define UDP_FWD "47007:7"
static int udp_ok;

static void *udp_client(void *arg)
{
	(void)arg;
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(UDP_HOST_PORT),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { .tv_sec = 1 };
	setsockopt(u, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < 3; i++) {
		char m[64], b[64];
		int n = snprintf(m, sizeof(m), "pvh udp echo %d", i);
		for (int tries = 0; tries < 5; tries++) {
			sendto(u, m, (size_t)n, 0, (struct sockaddr *)&to, sizeof(to));
			ssize_t r = recv(u, b, sizeof(b), 0);
			if (r == n && !memcmp(b, m, (size_t)n)) {
				udp_ok++;
				break;
			}
		}
	}
	close(u);
	return NULL;
}

/* The host's echo server: one connection, everything back, close at EOF. */
static int lsock;
static size_t echoed;

static void *echo_server(void *arg)
{
	(void)arg;
	int c = accept(lsock, NULL, NULL);
	if (c < 0)
		return NULL;
	char b[8192];
	ssize_t n;
	while ((n = read(c, b, sizeof(b))) > 0) {
		if (write(c, b, (size_t)n) != n)
			break;
		echoed += (size_t)n;
	}
	close(c);
	return NULL;
}

int main(int argc, char **argv)
{
	verbose = argc > 1 && !strcmp(argv[1], "-v");
	signal(SIGPIPE, SIG_IGN);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) {
		perror("socketpair");
		return 1;
	}
	lsock = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
	socklen_t al = sizeof(a);
	if (bind(lsock, (struct sockaddr *)&a, sizeof(a)) || listen(lsock, 1) ||
	    getsockname(lsock, (struct sockaddr *)&a, &al)) {
		perror("echo server");
		return 1;
	}
	unsigned port = ntohs(a.sin_port);
	pthread_t th;
	pthread_create(&th, NULL, echo_server, NULL);

	pid_t pid = fork();
	if (pid == 0) {
		char fd[16];
		close(sv[0]);
		snprintf(fd, sizeof(fd), "%d", sv[1]);
		const char *pcap = getenv("PASST_PCAP");
		if (pcap)
			execlp("passt", "passt", "-f", "-q", "-1", "-u", UDP_FWD, "-p", pcap, "-F", fd, (char *)NULL);
		execlp("passt", "passt", "-f", "-q", "-1", "-u", UDP_FWD, "-F", fd, (char *)NULL);
		perror("exec passt");
		_exit(127);
	}
	close(sv[1]);
	sock = sv[0];

	static const struct net_dev_ops ops = { q_tx, q_rx, q_now, q_err, NULL };
	static const uint8_t mac[6] = { 0x00, 0x16, 0x3e, 0x65, 0x43, 0x21 };
	struct netstack ns;
	ns_init(&ns, &ops, mac);
	int failed = 0;
	char x[16], y[16], z[16];
	const char *r = ns_dhcp(&ns, 10000);
	if (r) {
		printf("BAD  DHCP with passt: %s\n", r);
		failed = 1;
	} else {
		printf("ok   DHCP with passt: address %s/%u gateway %s dns %s mtu %u\n", ns_ip_str(ns.ip, x), ns.prefix,
		       ns_ip_str(ns.gw, y), ns_ip_str(ns.dns, z), ns.mtu);
		static struct ns_tcp t;
		uint64_t t0 = q_now(NULL);
		r = ns_tcp_echo(&ns, &t, ns.gw, (uint16_t)port, 65536, 30000);
		if (r || t.crc_recv != t.crc_sent) {
			printf("BAD  TCP echo through passt to the gateway, port %u: %s (stack: rx %u, bad checksum %u, dropped %u, "
			       "segments in %u)\n", port, r ? r : "crc", ns.rx_frames, ns.bad_csum, ns.dropped, t.segs_recv);
			failed = 1;
		} else {
			printf("ok   TCP echo through passt (gateway %s:%u -> the host): 65536 bytes back, crc32 0x%08x, "
			       "%u segments out, %u in, %u retransmits, %u dup ACKs, %u out of order, %lu ms; server echoed %zu\n", y, port, t.crc_recv,
			       t.segs_sent, t.segs_recv, t.retransmits, t.dup_acks_total, t.ooo_dropped, (unsigned long)(q_now(NULL) - t0), echoed);
		}
	}
	if (!failed) {
		/* net_echo: announce, then serve until 3 datagrams came back to the client. */
		ns.udp_echo_port = 7;
		ns_announce(&ns);
		pthread_t uc;
		pthread_create(&uc, NULL, udp_client, NULL);
		r = ns_echo_serve(&ns, 8000, 3);
		pthread_join(uc, NULL);
		if (r || udp_ok != 3) {
			printf("BAD  UDP echo through passt (host port %u -> guest port 7): %s, %d of 3 back, %u echoed\n",
			       UDP_HOST_PORT, r ? r : "ok", udp_ok, ns.udp_echoes);
			failed = 1;
		} else {
			printf("ok   UDP echo through passt (host 127.0.0.1:%u -> guest port 7): 3 of 3 datagrams back\n",
			       UDP_HOST_PORT);
		}
	}
	close(sock);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	printf("passt: %s\n", failed ? "FAILED" : "PASS");
	return failed;
}
