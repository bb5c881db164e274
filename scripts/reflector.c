/*
 * reflector: the floor for UDP DNS benchmarks.
 *
 * Answers every datagram by setting the QR bit (the "this is a response" flag
 * of the DNS header) and sending the same bytes back to the sender. Nothing is
 * parsed, nothing is checked: what a benchmark measures against this is what
 * the kernel's UDP path costs with zero work in user space. I/O is batched
 * with recvmmsg(MSG_WAITFORONE)/sendmmsg, 32 datagrams at a time.
 *
 * One SO_REUSEPORT socket and one thread per worker; worker i is pinned to
 * the i-th CPU of the list (round-robin when there are more workers than CPUs).
 *
 * Usage: reflector [-a ADDR] [-p PORT] [-t THREADS] [-c CPULIST]
 *   -a ADDR     IPv4 address to bind (default 127.0.0.1)
 *   -p PORT     UDP port (default 0: any free port; the one taken is printed)
 *   -t THREADS  worker threads, each with its own socket (default 1)
 *   -c CPULIST  CPUs to pin workers to, e.g. 0 or 2-5,8 (default: no pinning)
 *
 * Prints "reflector ready ADDR:PORT threads N" on stdout once every socket is
 * bound, then runs until killed (SIGTERM/SIGINT end it with the default action).
 *
 * Build: cc -O2 -Wall -Wextra -pthread -o target/reflector scripts/reflector.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 32
#define BUF_SIZE 4096
#define MAX_CPUS 1024

struct worker {
	int fd;
	int cpu; /* -1: not pinned */
};

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static void *serve(void *arg)
{
	struct worker *w = arg;
	unsigned char bufs[BATCH][BUF_SIZE]; /* 128 KiB of the thread's stack */
	struct mmsghdr msgs[BATCH];
	struct iovec iovs[BATCH];
	struct sockaddr_storage addrs[BATCH];

	if (w->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(w->cpu, &set);
		int err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
		if (err != 0) {
			fprintf(stderr, "reflector: cannot pin to CPU %d: %s\n", w->cpu,
				strerror(err));
			exit(1);
		}
	}

	for (;;) {
		for (int i = 0; i < BATCH; i++) {
			iovs[i].iov_base = bufs[i];
			iovs[i].iov_len = BUF_SIZE;
			memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
			msgs[i].msg_hdr.msg_iov = &iovs[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &addrs[i];
			msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
			msgs[i].msg_len = 0;
		}
		int n = recvmmsg(w->fd, msgs, BATCH, MSG_WAITFORONE, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("recvmmsg");
		}
		/* Keep the datagrams that can be a DNS message, compacted in place. */
		int out = 0;
		for (int i = 0; i < n; i++) {
			unsigned len = msgs[i].msg_len;
			if (len < 12 || (msgs[i].msg_hdr.msg_flags & MSG_TRUNC))
				continue;
			bufs[i][2] |= 0x80; /* QR: response */
			iovs[i].iov_len = len;
			if (out != i) {
				msgs[out] = msgs[i];
			}
			msgs[out].msg_hdr.msg_iov = &iovs[i];
			out++;
		}
		int sent = 0;
		while (sent < out) {
			int m = sendmmsg(w->fd, msgs + sent, out - sent, 0);
			if (m < 0) {
				if (errno == EINTR)
					continue;
				/* A full socket buffer or an unreachable peer: drop the rest. */
				break;
			}
			sent += m;
		}
	}
	return NULL;
}

/* Parses "0", "2-5,8" into cpus[]; returns the count, or -1 when malformed. */
static int parse_cpus(const char *s, int *cpus, int max)
{
	int n = 0;
	while (*s) {
		char *end;
		long a = strtol(s, &end, 10);
		if (end == s || a < 0 || a >= MAX_CPUS)
			return -1;
		long b = a;
		s = end;
		if (*s == '-') {
			s++;
			b = strtol(s, &end, 10);
			if (end == s || b < a || b >= MAX_CPUS)
				return -1;
			s = end;
		}
		for (long c = a; c <= b; c++) {
			if (n == max)
				return -1;
			cpus[n++] = (int)c;
		}
		if (*s == ',')
			s++;
		else if (*s)
			return -1;
	}
	return n;
}

static int open_socket(const char *addr, int port)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		die("socket");
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0)
		die("setsockopt(SO_REUSEPORT)");
	int bufsize = 4 << 20;
	/* Best effort: the kernel caps these at net.core.[rw]mem_max. */
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof bufsize);
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof sin);
	sin.sin_family = AF_INET;
	sin.sin_port = htons((unsigned short)port);
	if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1) {
		fprintf(stderr, "reflector: not an IPv4 address: %s\n", addr);
		exit(2);
	}
	if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
		die("bind");
	return fd;
}

static void usage(void)
{
	fprintf(stderr, "usage: reflector [-a ADDR] [-p PORT] [-t THREADS] [-c CPULIST]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1";
	int port = 0;
	int threads = 1;
	static int cpus[MAX_CPUS];
	int ncpus = 0;
	int opt;

	while ((opt = getopt(argc, argv, "a:p:t:c:h")) != -1) {
		switch (opt) {
		case 'a':
			addr = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			if (port < 0 || port > 65535)
				usage();
			break;
		case 't':
			threads = atoi(optarg);
			if (threads < 1 || threads > MAX_CPUS)
				usage();
			break;
		case 'c':
			ncpus = parse_cpus(optarg, cpus, MAX_CPUS);
			if (ncpus <= 0) {
				fprintf(stderr, "reflector: bad CPU list: %s\n", optarg);
				exit(2);
			}
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();

	struct worker *workers = calloc((size_t)threads, sizeof *workers);
	if (!workers)
		die("calloc");
	for (int i = 0; i < threads; i++) {
		workers[i].fd = open_socket(addr, port);
		workers[i].cpu = ncpus ? cpus[i % ncpus] : -1;
		if (port == 0) {
			/* The first socket took a free port; the others share it. */
			struct sockaddr_in bound;
			socklen_t len = sizeof bound;
			if (getsockname(workers[i].fd, (struct sockaddr *)&bound, &len) < 0)
				die("getsockname");
			port = ntohs(bound.sin_port);
		}
	}
	printf("reflector ready %s:%d threads %d\n", addr, port, threads);
	fflush(stdout);

	pthread_t *tids = calloc((size_t)threads, sizeof *tids);
	if (!tids)
		die("calloc");
	for (int i = 0; i < threads; i++) {
		int err = pthread_create(&tids[i], NULL, serve, &workers[i]);
		if (err != 0) {
			fprintf(stderr, "reflector: pthread_create: %s\n", strerror(err));
			return 1;
		}
	}
	for (int i = 0; i < threads; i++)
		pthread_join(tids[i], NULL);
	return 0;
}
