/*
 * Reference helpers for the bench: the passt-repair protocol in plain C,
 * with nothing else (no directory mode, no hardening, minimal messages).
 *
 * Built twice by bench/bench.ts:
 *   -DCLOSE_FIRST=0  reply first, close after: exactly the system calls of the
 *                    Deno helper, in its order (recvmsg, n x setsockopt, send,
 *                    n x close). This is the practical floor for a helper.
 *   -DCLOSE_FIRST=1  the C original's order: each descriptor is closed right
 *                    after its setsockopt, and the reply goes out at the end.
 *
 * Usage: ref_helper SOCKET_PATH. Exit status: 0 on EOF, 1 on any error.
 * Our own code, written for the bench; not taken from passt.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef CLOSE_FIRST
#error "build with -DCLOSE_FIRST=0 or -DCLOSE_FIRST=1"
#endif

#define SCM_MAX_FD 253 /* include/net/scm.h, not in UAPI */

int main(int argc, char **argv)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * SCM_MAX_FD)];
		struct cmsghdr align;
	} u;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int s, fds[SCM_MAX_FD];

	if (argc != 2 || strlen(argv[1]) >= sizeof(a.sun_path)) {
		fprintf(stderr, "usage: %s SOCKET_PATH\n", argv[0]);
		return 1;
	}
	strcpy(a.sun_path, argv[1]);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a))) {
		perror("connect");
		return 1;
	}

	for (;;) {
		char cmd;
		struct iovec iov = { .iov_base = &cmd, .iov_len = 1 };
		struct msghdr m = {
			.msg_iov = &iov, .msg_iovlen = 1,
			.msg_control = u.buf, .msg_controllen = sizeof(u.buf),
		};
		struct cmsghdr *c;
		ssize_t r;
		int i, n, op;

		r = recvmsg(s, &m, MSG_CMSG_CLOEXEC);
		if (r == 0)
			return 0;
		if (r < 0) {
			perror("recvmsg");
			return 1;
		}
		c = CMSG_FIRSTHDR(&m);
		if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
		    (m.msg_flags & MSG_CTRUNC)) {
			fprintf(stderr, "bad ancillary data\n");
			return 1;
		}
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		memcpy(fds, CMSG_DATA(c), n * sizeof(int));
		op = cmd;

		for (i = 0; i < n; i++) {
			if (setsockopt(fds[i], SOL_TCP, TCP_REPAIR, &op, sizeof(op))) {
				perror("setsockopt");
				return 1;
			}
#if CLOSE_FIRST
			close(fds[i]);
#endif
		}
		if (send(s, &cmd, 1, MSG_NOSIGNAL) != 1) {
			perror("send");
			return 1;
		}
#if !CLOSE_FIRST
		for (i = 0; i < n; i++)
			close(fds[i]);
#endif
	}
}
