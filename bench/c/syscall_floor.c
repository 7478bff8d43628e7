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
 * With --hold, each switch is followed by the input hold as the helper makes
 * it as root (src/hold.ts): ON checks for a filter (SO_GET_FILTER) and
 * attaches one eBPF program (SO_ATTACH_BPF), and after the reply reads each
 * socket's SO_COOKIE; OFF_NO_WP reads the cookie, checks the filter and
 * detaches it. Needs root or CAP_BPF to load the program.
 *
 * Usage: syscall_floor [--hold] SOCKET_PATH POOL SPEC...
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
#include <linux/bpf.h>
#include <sys/socket.h>
#include <sys/syscall.h>
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

/* The input hold's eBPF program (r0 = 0; exit), or -1 without --hold */
static int hold_prog = -1;

static int load_hold_program(void)
{
	struct bpf_insn insns[2] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
	attr.insn_cnt = 2;
	attr.insns = (uint64_t)(uintptr_t)insns;
	attr.license = (uint64_t)(uintptr_t)"GPL";
	return syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
}

/* The hold's system calls for one socket after its switch to cmd */
static void hold_switch(int fd, char cmd)
{
	socklen_t len = 0;
	uint64_t cookie;
	int zero = 0;

	if (cmd == 1) {
		if (getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, &zero, &len))
			die("getsockopt(SO_GET_FILTER)");
		if (len == 0 &&
		    setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &hold_prog, sizeof(hold_prog)))
			die("setsockopt(SO_ATTACH_BPF)");
		return;
	}
	len = sizeof(cookie);
	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len))
		die("getsockopt(SO_COOKIE)");
	len = 0;
	if (getsockopt(fd, SOL_SOCKET, SO_GET_FILTER, &zero, &len) == 0)
		die("getsockopt(SO_GET_FILTER) finds no eBPF filter to release");
	if (setsockopt(fd, SOL_SOCKET, SO_DETACH_FILTER, &zero, sizeof(zero)))
		die("setsockopt(SO_DETACH_FILTER)");
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
		if (hold_prog >= 0)
			hold_switch(got[i], cmd);
	}
	if (send(b, &r, 1, MSG_NOSIGNAL) != 1)
		die("send");
	if (recv(a, &r, 1, 0) != 1)
		die("recv");
	t1 = now_ns();
	if (hold_prog >= 0 && cmd == 1) {
		/* The record of what was held: after the reply, as the helper */
		for (i = 0; i < k; i++) {
			uint64_t cookie;
			socklen_t len = sizeof(cookie);

			if (getsockopt(got[i], SOL_SOCKET, SO_COOKIE, &cookie, &len))
				die("getsockopt(SO_COOKIE)");
		}
	}
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

	if (argc > 1 && !strcmp(argv[1], "--hold")) {
		hold_prog = load_hold_program();
		if (hold_prog < 0)
			die("bpf(BPF_PROG_LOAD)");
		argv++;
		argc--;
	}
	if (argc < 4 || strlen(argv[1]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "usage: %s [--hold] SOCKET_PATH POOL SPEC...\n", argv[0]);
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
