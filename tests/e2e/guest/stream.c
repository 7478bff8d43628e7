/*
 * stream: the end-to-end test's traffic, both ends of it.
 *
 *   stream client ADDR PORT N CHUNK INTERVAL_MS   (in the guest)
 *   stream server ADDR PORT CHUNK INTERVAL_MS     (in the run's network namespace)
 *
 * Every connection carries, in each direction, the byte stream
 * pattern(o) = o % 251 (o = offset from the connection's start; 251 is prime,
 * so no segment size lines up with it). Every INTERVAL_MS each end writes
 * CHUNK bytes of it on every connection (TCP_NODELAY: one write, one segment),
 * and checks every byte it reads. A wrong byte, an end of stream or a reset is
 * reported on one "ERR" line (with the local port); the client then opens a new connection in its
 * place, so that a migration after a loss starts from whole streams again.
 *
 * Twice a second each end prints one line:
 *   STAT t=MS conns=C rx_min=A rx_max=B tx_min=D errs=E
 * (rx_* and tx_min: bytes checked/written per live connection). The test waits
 * for rx_min after a migration to pass rx_max before it: every connection moved
 * data both ways across the migration.
 *
 * Written for the test, built with gcc -static, runs under busybox's init.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define PRIME 251

struct conn {
	int fd;            /* -1: none */
	int connected;     /* client: connect() finished */
	uint64_t rx, tx;   /* stream offsets */
	uint64_t pending;  /* bytes due but not yet written (short write) */
	unsigned id;       /* client: which slot, for messages */
	unsigned gen;      /* client: how many times this slot reconnected */
	unsigned port;     /* local port: the guest's, as passt's log names it */
};

static struct conn conns[MAX_CONNS];
static unsigned nconns;
static unsigned long errs;
static struct sockaddr_in peer;
static int is_client;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	/* One write per line: lines from the two ends never interleave */
	if (write(1, buf, n) < 0)
		return;
}

static unsigned local_port(int fd)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);

	if (getsockname(fd, (struct sockaddr *)&a, &l))
		return 0;
	return ntohs(a.sin_port);
}

static void set_options(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static void open_client(struct conn *c)
{
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c->fd < 0) {
		say("ERR conn=%u socket: %s", c->id, strerror(errno));
		exit(1);
	}
	set_options(c->fd);
	c->rx = c->tx = c->pending = 0;
	c->connected = 0;
	if (connect(c->fd, (struct sockaddr *)&peer, sizeof(peer)) == 0)
		c->connected = 1;
	else if (errno != EINPROGRESS) {
		say("ERR conn=%u connect: %s", c->id, strerror(errno));
		close(c->fd);
		c->fd = -1;
		return;
	}
	c->port = local_port(c->fd);
}

/* A connection went wrong: report it, and on the client start a new one */
static void fail(struct conn *c, const char *what)
{
	errs++;
	say("ERR conn=%u port=%u gen=%u rx=%llu tx=%llu %s", c->id, c->port, c->gen,
	    (unsigned long long)c->rx, (unsigned long long)c->tx, what);
	close(c->fd);
	c->fd = -1;
	if (is_client) {
		c->gen++;
		open_client(c);
	}
}

static void do_read(struct conn *c)
{
	unsigned char buf[65536];
	ssize_t n, i;
	char what[96];

	for (;;) {
		n = recv(c->fd, buf, sizeof(buf), 0);
		if (n == 0) {
			fail(c, "end of stream");
			return;
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			snprintf(what, sizeof(what), "recv: %s", strerror(errno));
			fail(c, what);
			return;
		}
		for (i = 0; i < n; i++) {
			if (buf[i] != (c->rx + i) % PRIME) {
				snprintf(what, sizeof(what),
					 "mismatch at %llu: want %u got %u",
					 (unsigned long long)(c->rx + i),
					 (unsigned)((c->rx + i) % PRIME), buf[i]);
				fail(c, what);
				return;
			}
		}
		c->rx += n;
	}
}

static void do_write(struct conn *c)
{
	unsigned char buf[65536];
	size_t len = c->pending > sizeof(buf) ? sizeof(buf) : c->pending;
	ssize_t n;
	size_t i;
	char what[96];

	if (!len)
		return;
	for (i = 0; i < len; i++)
		buf[i] = (c->tx + i) % PRIME;
	n = send(c->fd, buf, len, MSG_NOSIGNAL);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		snprintf(what, sizeof(what), "send: %s", strerror(errno));
		fail(c, what);
		return;
	}
	c->tx += n;
	c->pending -= n;
}

static void stat_line(uint64_t t0)
{
	uint64_t rx_min = UINT64_MAX, rx_max = 0, tx_min = UINT64_MAX;
	unsigned i, live = 0;

	for (i = 0; i < nconns; i++) {
		struct conn *c = &conns[i];

		if (c->fd < 0 || (is_client && !c->connected))
			continue;
		live++;
		if (c->rx < rx_min)
			rx_min = c->rx;
		if (c->rx > rx_max)
			rx_max = c->rx;
		if (c->tx < tx_min)
			tx_min = c->tx;
	}
	if (!live)
		rx_min = tx_min = 0;
	say("STAT t=%llu conns=%u rx_min=%llu rx_max=%llu tx_min=%llu errs=%lu",
	    (unsigned long long)(now_ms() - t0), live,
	    (unsigned long long)rx_min, (unsigned long long)rx_max,
	    (unsigned long long)tx_min, errs);
}

static int usage(void)
{
	fprintf(stderr, "usage: stream client ADDR PORT N CHUNK INTERVAL_MS\n"
			"       stream server ADDR PORT CHUNK INTERVAL_MS\n");
	return 2;
}

int main(int argc, char **argv)
{
	static struct pollfd pfd[MAX_CONNS + 1];
	unsigned chunk, interval, i, want = 0;
	uint64_t t0 = now_ms(), next_tick, next_stat;
	int lfd = -1, one = 1;

	if (argc < 2)
		return usage();
	is_client = !strcmp(argv[1], "client");
	if (is_client ? argc != 7 : (strcmp(argv[1], "server") || argc != 6))
		return usage();

	memset(&peer, 0, sizeof(peer));
	peer.sin_family = AF_INET;
	peer.sin_port = htons(atoi(argv[3]));
	if (inet_pton(AF_INET, argv[2], &peer.sin_addr) != 1)
		return usage();
	if (is_client) {
		want = atoi(argv[4]);
		chunk = atoi(argv[5]);
		interval = atoi(argv[6]);
	} else {
		chunk = atoi(argv[4]);
		interval = atoi(argv[5]);
	}
	if (want > MAX_CONNS || !chunk || chunk > 65536 || !interval)
		return usage();
	setvbuf(stdout, NULL, _IONBF, 0);

	for (i = 0; i < MAX_CONNS; i++)
		conns[i].fd = -1;
	if (is_client) {
		nconns = want;
		for (i = 0; i < nconns; i++) {
			conns[i].id = i;
			open_client(&conns[i]);
		}
	} else {
		lfd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&peer, sizeof(peer)) ||
		    listen(lfd, MAX_CONNS)) {
			say("ERR listen: %s", strerror(errno));
			return 1;
		}
		fcntl(lfd, F_SETFL, O_NONBLOCK);
		say("LISTENING");
	}

	next_tick = now_ms() + interval;
	next_stat = now_ms() + 500;
	for (;;) {
		unsigned n = 0;
		uint64_t t = now_ms();
		int timeout;

		if (t >= next_tick) {
			for (i = 0; i < nconns; i++)
				if (conns[i].fd >= 0 && (!is_client || conns[i].connected))
					conns[i].pending += chunk;
			next_tick += interval;
			if (next_tick < t)
				next_tick = t + interval;
		}
		if (t >= next_stat) {
			stat_line(t0);
			next_stat = t + 500;
		}

		for (i = 0; i < nconns; i++) {
			struct conn *c = &conns[i];

			if (c->fd < 0)
				continue;
			if (is_client && !c->connected) {
				pfd[n++] = (struct pollfd){ c->fd, POLLOUT, 0 };
				continue;
			}
			if (c->pending)
				do_write(c);
			if (c->fd >= 0)
				pfd[n++] = (struct pollfd){ c->fd, POLLIN | (c->pending ? POLLOUT : 0), 0 };
		}
		if (lfd >= 0)
			pfd[n++] = (struct pollfd){ lfd, POLLIN, 0 };

		t = now_ms();
		timeout = next_tick > t ? (int)(next_tick - t) : 0;
		if (next_stat > t && (int)(next_stat - t) < timeout)
			timeout = next_stat - t;
		if (poll(pfd, n, timeout) < 0 && errno != EINTR) {
			say("ERR poll: %s", strerror(errno));
			return 1;
		}

		for (i = 0; i < n; i++) {
			struct conn *c = NULL;
			unsigned j;

			if (!pfd[i].revents)
				continue;
			if (pfd[i].fd == lfd) {
				int fd;

				while ((fd = accept(lfd, NULL, NULL)) >= 0) {
					if (nconns == MAX_CONNS) {
						close(fd);
						continue;
					}
					set_options(fd);
					conns[nconns] = (struct conn){ fd, 1, 0, 0, 0, nconns, 0, 0 };
					conns[nconns].port = local_port(fd);
					nconns++;
				}
				continue;
			}
			for (j = 0; j < nconns; j++)
				if (conns[j].fd == pfd[i].fd) {
					c = &conns[j];
					break;
				}
			if (!c)
				continue;
			if (is_client && !c->connected) {
				int err = 0;
				socklen_t sl = sizeof(err);

				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &sl);
				if (err) {
					char what[96];

					snprintf(what, sizeof(what), "connect: %s", strerror(err));
					fail(c, what);
				} else {
					c->connected = 1;
				}
				continue;
			}
			if (pfd[i].revents & (POLLIN | POLLERR | POLLHUP))
				do_read(c);
			if (c->fd >= 0 && (pfd[i].revents & POLLOUT))
				do_write(c);
		}
	}
}
