// Reads the seccomp filters installed in a live process, as the kernel holds
// them (ptrace PTRACE_SECCOMP_GET_FILTER), so that a test can compare them,
// byte for byte, with the programs src/seccomp.ts builds and the unit tests
// run. Needs root (CAP_SYS_ADMIN and CAP_SYS_PTRACE) and a kernel with
// CONFIG_CHECKPOINT_RESTORE.
//
// Test tooling only. The process is seized (no signal, no stop of its own),
// interrupted, read while in the ptrace stop, then detached: it carries on
// where it was, blocked in recvmsg() or wherever.

import { LazyLibc } from "./test_libc.ts";
import { processState, waitUntil } from "./helper.ts";

const libc = new LazyLibc({
  // long ptrace(enum __ptrace_request request, pid_t pid, void *addr, void *data)
  ptrace: { parameters: ["i64", "i32", "u64", "buffer"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
});

const PTRACE_DETACH = 17n;
const PTRACE_SEIZE = 0x4206n;
const PTRACE_INTERRUPT = 0x4207n;
const PTRACE_SECCOMP_GET_FILTER = 0x420cn;
const ENOENT = 2;
const SOCK_FILTER_SIZE = 8;

/**
 * The filters of process `pid`, oldest first (the order they were
 * installed), each as its struct sock_filter[] bytes
 */
export async function seccompFilters(pid: number): Promise<Uint8Array[]> {
  const c = libc.c;
  const none = new Uint8Array(0);
  libc.check("PTRACE_SEIZE", c.ptrace(PTRACE_SEIZE, pid, 0n, none));
  try {
    libc.check("PTRACE_INTERRUPT", c.ptrace(PTRACE_INTERRUPT, pid, 0n, none));
    // The tracing stop shows as "t"; waitpid() is Deno's, not ours
    await waitUntil(() => processState(pid) === "t", 10000, `process ${pid} to stop`);
    const filters: Uint8Array[] = [];
    for (let index = 0n;; index++) {
      // With no buffer: the number of instructions
      const n = c.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, none);
      if (n < 0) {
        if (libc.errno() === ENOENT) break;
        libc.check(`PTRACE_SECCOMP_GET_FILTER ${index}`, n);
      }
      const program = new Uint8Array(Number(n) * SOCK_FILTER_SIZE);
      libc.check(
        `PTRACE_SECCOMP_GET_FILTER ${index}`,
        c.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, index, program),
      );
      filters.push(program);
    }
    // Index 0 is the first installed (kernel/seccomp.c, get_nth_filter)
    return filters;
  } finally {
    c.ptrace(PTRACE_DETACH, pid, 0n, none);
  }
}
