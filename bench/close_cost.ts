// What closing our copies of a full message's descriptors costs: 253 close()
// calls against one close_range() over the same numbers, in one process,
// through the helper's own bindings (docs/performance.md). A figure, not a
// test.
//
// Usage: deno run --allow-ffi bench/close_cost.ts

import { AF_INET, SCM_MAX_FD, SOCK_CLOEXEC, SOCK_STREAM } from "../src/abi.ts";
import * as libc from "../src/ffi/libc.ts";

const ROUNDS = 2000;
const RUNS = 7;

libc.openLibc();
const socket = libc.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
const fds = new Int32Array(SCM_MAX_FD);

/**
 * Copies of `socket` at the lowest free numbers from 256 on, as recvmsg()
 * installs a message's: one run (Deno's own descriptors leave holes lower)
 */
function copies(): void {
  for (let i = 0; i < fds.length; i++) fds[i] = libc.dupAtLeast(socket, 256);
}

/** Median over RUNS of µs per SCM_MAX_FD descriptors closed by `close` */
function perMessage(close: () => void): number {
  const runs: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    let total = 0;
    for (let i = 0; i < ROUNDS; i++) {
      copies();
      const t0 = performance.now();
      close();
      total += performance.now() - t0;
    }
    runs.push(total * 1000 / ROUNDS);
  }
  return runs.sort((a, b) => a - b)[RUNS >> 1]!;
}

const oneByOne = () => {
  for (let i = 0; i < fds.length; i++) libc.close(fds[i]!);
};
const asRange = () => {
  if (libc.closeRange(fds[0]!, fds[fds.length - 1]!) !== 0) throw new Error("close_range failed");
};

copies();
if (fds[fds.length - 1]! - fds[0]! !== fds.length - 1) throw new Error("copies not consecutive");
if (libc.closeRange(fds[0]!, fds[fds.length - 1]!) !== 0) {
  console.error("close_range: not available here (Linux 5.9 and glibc 2.34 have it)");
  Deno.exit(2);
}
perMessage(oneByOne); // warm-up
perMessage(asRange);
const single = perMessage(oneByOne);
const range = perMessage(asRange);
console.error(
  `closing ${SCM_MAX_FD} descriptors, µs: ${SCM_MAX_FD} close() ${single.toFixed(1)}, ` +
    `one close_range() ${range.toFixed(1)}`,
);
