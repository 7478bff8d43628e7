/*
 * fail_write: makes one write(2) of a running process to a pipe fail, as if
 * the pipe's reader had gone, and lets the process go on.
 *
 *   fail_write PID N
 *
 * Traces PID (ptrace(2), as root) and counts its writes to pipes; the N-th
 * one is made to fail with EPIPE, then PID is left alone and this exits 0.
 * Prints "attached" once tracing, and one line saying which write failed.
 *
 * Why not strace -e inject=write:error=EPIPE: strace skips the call by
 * turning it into system call -1, which passt's seccomp filter (checked after
 * the tracer, see seccomp(2)) answers by killing passt. Here the call stays a
 * write(2), given descriptor -1: the kernel fails it (EBADF) without doing
 * anything, and the result the process sees is then set to -EPIPE.
 *
 * The end-to-end test uses it on the source passt: passt 0.0~git20250503
 * writes to the migration channel (a pipe from QEMU) a header, the observed
 * addresses, the flow count, then each flow; when the first flow's write
 * fails it turns repair mode off again (rolls back) and the VM stays.
 *
 * x86_64 only, like the rest of the test.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "fail_write: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Is descriptor fd of process pid a pipe? */
static int is_pipe(pid_t pid, long fd, char *name, size_t size)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/fd/%ld", (int)pid, fd);
	n = readlink(path, name, size - 1);
	if (n < 0)
		return 0;
	name[n] = '\0';
	return !strncmp(name, "pipe:", 5);
}

int main(int argc, char **argv)
{
	struct __ptrace_syscall_info info;
	unsigned long count = 0, want;
	struct user_regs_struct regs;
	char name[128] = "";
	int failing = 0, status;
	pid_t pid;
	long fd = -1;

	if (argc != 3) {
		fprintf(stderr, "usage: fail_write PID N\n");
		return 2;
	}
	pid = (pid_t)atoi(argv[1]);
	want = strtoul(argv[2], NULL, 10);
	if (pid <= 0 || want == 0) {
		fprintf(stderr, "usage: fail_write PID N\n");
		return 2;
	}

	if (ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACESYSGOOD))
		die("PTRACE_SEIZE");
	if (ptrace(PTRACE_INTERRUPT, pid, 0, 0))
		die("PTRACE_INTERRUPT");
	if (waitpid(pid, &status, __WALL) < 0)
		die("waitpid");
	printf("attached to %d\n", (int)pid);
	fflush(stdout);

	for (int sig = 0;;) {
		if (ptrace(PTRACE_SYSCALL, pid, 0, sig))
			die("PTRACE_SYSCALL");
		sig = 0;
		if (waitpid(pid, &status, __WALL) < 0)
			die("waitpid");
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			fprintf(stderr, "fail_write: %d ended before write %lu\n", (int)pid, want);
			return 1;
		}
		if (!WIFSTOPPED(status))
			continue;
		if (WSTOPSIG(status) != (SIGTRAP | 0x80)) {
			/* A signal for the process (pass it on), or a ptrace event stop */
			if (status >> 16 == 0)
				sig = WSTOPSIG(status);
			continue;
		}
		if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof(info), &info) < 0)
			die("PTRACE_GET_SYSCALL_INFO");

		if (info.op == PTRACE_SYSCALL_INFO_ENTRY && info.entry.nr == SYS_write &&
		    is_pipe(pid, (long)info.entry.args[0], name, sizeof(name)) && ++count == want) {
			if (ptrace(PTRACE_GETREGS, pid, 0, &regs))
				die("PTRACE_GETREGS");
			fd = (long)regs.rdi;
			regs.rdi = (unsigned long)-1;
			if (ptrace(PTRACE_SETREGS, pid, 0, &regs))
				die("PTRACE_SETREGS");
			failing = 1;
		} else if (info.op == PTRACE_SYSCALL_INFO_EXIT && failing) {
			if (ptrace(PTRACE_GETREGS, pid, 0, &regs))
				die("PTRACE_GETREGS");
			regs.rax = (unsigned long)-EPIPE;
			if (ptrace(PTRACE_SETREGS, pid, 0, &regs))
				die("PTRACE_SETREGS");
			if (ptrace(PTRACE_DETACH, pid, 0, 0))
				die("PTRACE_DETACH");
			printf("write %lu to a pipe (fd %ld, %s) failed with EPIPE\n", want, fd, name);
			return 0;
		}
	}
}
