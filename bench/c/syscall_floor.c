/*
 * The syscall floor for the bench: every system call of one helper round trip,
 * passt's side and the helper's, made by one process on the same sockets, so
 * that no wake-up, context switch or second process is involved.
 *
 * Per batch of n sockets, over a socketpair (a, b) of the same type as passt's
 * repair socket:
 *   sendmsg(a, cmd + n descriptors)          passt sends
 *   recvmsg(b, fresh msghdr, CMSG_CLOEXEC)   helper receives
 *   n x setsockopt(TCP_REPAIR, cmd)          helper switches
 *   send(b, cmd)                             helper replies
 *   recv(a)                                  passt reads the reply
 *   n x close                                helper closes its copies
 * The time is taken up to the reply, as a round trip's is: a helper that
 * replies first closes while passt already has its answer. So this is a lower
 * bound for a round trip, and their sum a lower bound for a run of messages
 * (where the closes could at best overlap passt's next sendmsg).
 *
 * Usage: syscall_floor SOCKET_PATH POOL SPEC...
 *   Connects to SOCKET_PATH like a helper and receives POOL sockets in
 *   messages of up to 253 (answering each with its command byte, without
 *   switching anything), then runs each SPEC:
 *     N:ITER  ITER round trips of the first N sockets (N <= 253)
 *     all:REP REP passes over the whole pool in messages of 253 and the rest
 *   Commands alternate between ON (1) and OFF_NO_WP (-1). Prints one line per
 *   measurement, "N NANOSECONDS", and checks the repair state of the first and
 *   last socket of every batch: exit 1 at the first discrepancy.
 *
 * Our own code, written for the bench.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SCM_MAX_FD 253 /* include/net/scm.h, not in UAPI */
#define POOL_MAX 20000

static union {
	char buf[CMSG_SPACE(sizeof(int) * SCM_MAX_FD)];
	struct cmsghdr align;
} ctl_in, ctl_out;

static int pool[POOL_MAX];

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + t.tv_nsec;
}

/* Receives one message into fds, returns the count (0 if none), cmd in *cmd */
static int receive(int s, char *cmd, int *fds)
{
	struct iovec iov = { .iov_base = cmd, .iov_len = 1 };
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl_in.buf, .msg_controllen = sizeof(ctl_in.buf),
	};
	struct cmsghdr *c;
	ssize_t r;
	int n;

	r = recvmsg(s, &m, MSG_CMSG_CLOEXEC);
	if (r <= 0)
		die("recvmsg");
	if (m.msg_flags & MSG_CTRUNC) {
		fprintf(stderr, "control data truncated\n");
		exit(1);
	}
	c = CMSG_FIRSTHDR(&m);
	if (!c)
		return 0;
	n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
	memcpy(fds, CMSG_DATA(c), n * sizeof(int));
	return n;
}

static void send_fds(int s, char cmd, const int *fds, int n)
{
	struct iovec iov = { .iov_base = &cmd, .iov_len = 1 };
	struct msghdr m = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = ctl_out.buf,
		.msg_controllen = CMSG_SPACE(sizeof(int) * n),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	if (sendmsg(s, &m, MSG_NOSIGNAL) != 1)
		die("sendmsg");
}

static int repair_state(int fd)
{
	int v = -2;
	socklen_t len = sizeof(v);

	if (getsockopt(fd, SOL_TCP, TCP_REPAIR, &v, &len))
		die("getsockopt");
	return v;
}

/* One round trip of fds[0..n) through the socketpair (a, b); returns ns */
static uint64_t round_trip(int a, int b, const int *fds, int n, char cmd)
{
	int got[SCM_MAX_FD], i, k, op = cmd;
	uint64_t t0, t1;
	char r;

	t0 = now_ns();
	send_fds(a, cmd, fds, n);
	k = receive(b, &r, got);
	for (i = 0; i < k; i++) {
		if (setsockopt(got[i], SOL_TCP, TCP_REPAIR, &op, sizeof(op)))
			die("setsockopt");
	}
	if (send(b, &r, 1, MSG_NOSIGNAL) != 1)
		die("send");
	if (recv(a, &r, 1, 0) != 1)
		die("recv");
	t1 = now_ns();
	for (i = 0; i < k; i++)
		close(got[i]);

	if (k != n || r != cmd) {
		fprintf(stderr, "round trip lost descriptors or the command\n");
		exit(1);
	}
	if (repair_state(fds[0]) != (cmd == 1) ||
	    repair_state(fds[n - 1]) != (cmd == 1)) {
		fprintf(stderr, "repair state wrong after a round trip\n");
		exit(1);
	}
	return t1 - t0;
}

int main(int argc, char **argv)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int s, sp[2], have = 0, want, i;
	char cmd = 1;

	if (argc < 4 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "usage: %s SOCKET_PATH POOL SPEC...\n", argv[0]);
		return 1;
	}
	want = atoi(argv[2]);
	if (want < 1 || want > POOL_MAX) {
		fprintf(stderr, "pool size out of range\n");
		return 1;
	}
	strcpy(addr.sun_path, argv[1]);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&addr, sizeof(addr)))
		die("connect");
	while (have < want) {
		char c;
		int n = receive(s, &c, pool + have);

		if (n == 0 || have + n > want) {
			fprintf(stderr, "unexpected load message\n");
			return 1;
		}
		have += n;
		if (send(s, &c, 1, MSG_NOSIGNAL) != 1)
			die("send");
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp))
		die("socketpair");

	for (i = 3; i < argc; i++) {
		char *colon = strchr(argv[i], ':');
		int count, n, rep;

		if (!colon) {
			fprintf(stderr, "bad spec %s\n", argv[i]);
			return 1;
		}
		count = atoi(colon + 1);
		if (!strncmp(argv[i], "all:", 4)) {
			for (rep = 0; rep < count; rep++) {
				uint64_t total = 0;
				int off;

				for (off = 0; off < have; off += SCM_MAX_FD) {
					int k = have - off < SCM_MAX_FD ? have - off : SCM_MAX_FD;

					total += round_trip(sp[0], sp[1], pool + off, k, cmd);
				}
				printf("%d %llu\n", have, (unsigned long long)total);
				cmd = cmd == 1 ? -1 : 1;
			}
			continue;
		}
		n = atoi(argv[i]);
		if (n < 1 || n > SCM_MAX_FD || n > have) {
			fprintf(stderr, "bad batch size in %s\n", argv[i]);
			return 1;
		}
		for (rep = 0; rep < count; rep++) {
			printf("%d %llu\n", n, (unsigned long long)round_trip(sp[0], sp[1], pool, n, cmd));
			cmd = cmd == 1 ? -1 : 1;
		}
	}
	return 0;
}
