// What the seccomp filters cost the hot call: setsockopt(TCP_REPAIR) timed
// in one process with no filter, with the first stage, then with both
// (docs/performance.md). A figure, not a test.
//
// Usage: deno run --allow-ffi bench/seccomp_cost.ts   (as root)
//
// It ends with Deno.exit(), as the helper does: under the second stage a
// return to Deno's event loop is refused (epoll_wait), which the helper never
// makes.

import { AF_INET, SOCK_CLOEXEC, SOCK_STREAM, SOL_TCP, TCP_REPAIR } from "../src/abi.ts";
import * as libc from "../src/ffi/libc.ts";
import { lockDown } from "../src/harden.ts";

const CALLS = 200_000;
const RUNS = 7;

/** Median over RUNS of the time per call, in µs, switching repair mode on and off */
function perCall(fd: number): number {
  const runs: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    for (let i = 0; i < CALLS; i++) libc.setIntOption(fd, SOL_TCP, TCP_REPAIR, i & 1);
    runs.push((performance.now() - t0) * 1000 / CALLS);
  }
  return runs.sort((a, b) => a - b)[RUNS >> 1]!;
}

libc.openLibc();
const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
if (libc.setIntOption(fd, SOL_TCP, TCP_REPAIR, 1) < 0) {
  Deno.stderr.writeSync(new TextEncoder().encode("seccomp_cost: needs CAP_NET_ADMIN\n"));
  Deno.exit(2);
}
perCall(fd); // warm-up
const none = perCall(fd);
const { serving } = lockDown(Deno.build.arch, { hold: false });
const first = perCall(fd);
serving.install(fd);
const both = perCall(fd);
const per253 = (us: number) => `${((us - none) * 253).toFixed(1)} µs`;
Deno.stderr.writeSync(
  new TextEncoder().encode(
    `setsockopt(TCP_REPAIR), µs per call: no filter ${none.toFixed(3)}, first stage ${
      first.toFixed(3)
    }, both stages ${both.toFixed(3)}; for 253 sockets: +${per253(first)}, +${per253(both)}\n`,
  ),
);
Deno.exit(0);
