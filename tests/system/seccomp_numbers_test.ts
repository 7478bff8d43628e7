// The seccomp filter's system call numbers against the kernel headers
// installed on this machine (linux-libc-dev), where they exist: the table in
// src/seccomp.ts is written by hand, and a wrong number would leave a call
// allowed without any other test noticing.

import assert from "node:assert/strict";
import {
  CLONE,
  CLONE3,
  HOT_CALLS,
  IOCTL,
  PRCTL,
  REFUSED_CALLS,
  SERVING_CALLS,
  SERVING_SOFT_REFUSALS,
  SOCKET,
  SYS_SECCOMP,
} from "../../src/seccomp.ts";

const HEADERS = {
  x86_64: ["/usr/include/x86_64-linux-gnu/asm/unistd_64.h", "/usr/include/asm/unistd_64.h"],
  aarch64: ["/usr/include/asm-generic/unistd.h"],
} as const;

/** __NR_name -> number from a header, or null if none of the paths exists */
function readNumbers(paths: readonly string[]): Map<string, number> | null {
  for (const path of paths) {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue;
      throw e;
    }
    const numbers = new Map<string, number>();
    for (const m of text.matchAll(/^#define __NR(?:3264)?_(\w+)\s+(\d+)\s*$/gm)) {
      numbers.set(m[1]!, Number(m[2]));
    }
    return numbers;
  }
  return null;
}

function newestIn(numbers: Map<string, number>): number {
  return Math.max(...[...numbers.values()].filter((n) => n < 1024));
}

for (const arch of ["x86_64", "aarch64"] as const) {
  const numbers = readNumbers(HEADERS[arch]);
  Deno.test({
    name: `seccomp numbers for ${arch} match ${HEADERS[arch][0]}`,
    ignore: numbers === null,
    fn() {
      const table = [
        ...REFUSED_CALLS.map((c) => [c.name, c[arch]] as const),
        ...[...SERVING_CALLS, ...SERVING_SOFT_REFUSALS].map((c) => [c.name, c[arch]] as const),
        ...Object.entries(HOT_CALLS[arch]),
        ["clone", CLONE[arch]] as const,
        ["clone3", CLONE3[arch]] as const,
        ["socket", SOCKET[arch]] as const,
        ["ioctl", IOCTL[arch]] as const,
        ["prctl", PRCTL[arch]] as const,
        ["seccomp", SYS_SECCOMP[arch]] as const,
      ];
      for (const [name, nr] of table) {
        // Calls newer than the installed headers cannot be checked here
        if (!numbers!.has(name) && nr !== null && nr > newestIn(numbers!)) continue;
        assert.equal(nr, numbers!.get(name) ?? null, name);
      }
    },
  });
  if (numbers === null) console.log(`no ${arch} kernel headers here: numbers not cross-checked`);
}
