/*
 * Starts the bench's helpers from a small descriptor table.
 *
 * A child inherits its parent's descriptor table at its current size, even
 * when exec() closes every descriptor in it. The bench holds some 10,000
 * sockets, so a helper it started itself would begin with a table big enough
 * for any message, and the first message would never pay for growing it: the
 * very cost (an RCU grace period in a multi-threaded process) that a helper
 * started by libvirt or KubeVirt may pay. The bench therefore has this
 * launcher start them: each child is cloned sharing the launcher's table
 * (CLONE_FILES) and at once unshares it keeping only 0, 1 and 2
 * (close_range() with CLOSE_RANGE_UNSHARE), which leaves it the kernel's
 * smallest table (64 entries), as a program started from a shell has.
 *
 * Commands on stdin, one per line, words separated by tabs; answers on stdout:
 *   spawn OUTFILE PROGRAM ARG...  ->  "pid N"  (stdout and stderr to OUTFILE,
 *                                              stdin from /dev/null)
 *   wait PID                      ->  "exit PID CODE" (128 + signal if killed)
 * EOF on stdin ends it. Our own code, written for the bench.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARGS 64

static char stack[1 << 16];

/* argv: OUTFILE PROGRAM ARG... */
static int child(void *arg)
{
	char **argv = arg;
	int out, in;

	/* Our own table now, holding only 0, 1 and 2: the smallest there is */
	if (close_range(3, ~0U, CLOSE_RANGE_UNSHARE))
		_exit(125);
	out = open(argv[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	in = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (out < 0 || in < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0)
		_exit(126);
	execvp(argv[1], argv + 1);
	_exit(127);
}

int main(void)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((len = getline(&line, &cap, stdin)) > 0) {
		char *argv[MAX_ARGS + 1], *save = NULL, *word;
		int argc = 0;

		if (line[len - 1] == '\n')
			line[len - 1] = '\0';
		for (word = strtok_r(line, "\t", &save); word && argc < MAX_ARGS;
		     word = strtok_r(NULL, "\t", &save))
			argv[argc++] = word;
		argv[argc] = NULL;

		if (argc >= 3 && !strcmp(argv[0], "spawn")) {
			pid_t pid = clone(child, stack + sizeof(stack), CLONE_FILES | SIGCHLD,
					  argv + 1);

			if (pid < 0) {
				perror("clone");
				return 1;
			}
			printf("pid %d\n", (int)pid);
		} else if (argc == 2 && !strcmp(argv[0], "wait")) {
			int status;
			pid_t pid = atoi(argv[1]);

			if (waitpid(pid, &status, 0) != pid) {
				perror("waitpid");
				return 1;
			}
			printf("exit %d %d\n", (int)pid, WIFEXITED(status) ?
			       WEXITSTATUS(status) : 128 + WTERMSIG(status));
		} else {
			fprintf(stderr, "launcher: bad command\n");
			return 1;
		}
	}
	return 0;
}
