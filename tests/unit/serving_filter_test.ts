// The second seccomp stage, judged by running it (tests/support/bpf.ts): an
// allow-list of what serving passt needs, everything else refused.

import assert from "node:assert/strict";
import type { Arch } from "../../src/abi.ts";
import { RuntimeFailure } from "../../src/errors.ts";
import {
  AUDIT_ARCH_AARCH64,
  AUDIT_ARCH_X86_64,
  bindPeer,
  buildServingFilter,
  HOT_CALLS,
  NO_PEER,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  SECCOMP_RET_KILL_PROCESS,
  SERVING_CALLS,
  SERVING_SOFT_REFUSALS,
  type ServingFilter,
  X32_SYSCALL_BIT,
} from "../../src/seccomp.ts";
import { assertWellFormed, decode, runFilter } from "../support/bpf.ts";
import { unit } from "./_unit.ts";

const EPERM = SECCOMP_RET_ERRNO | 1;
const ALLOW = SECCOMP_RET_ALLOW;
const KILL = SECCOMP_RET_KILL_PROCESS;
const AUDIT: Record<Arch, number> = { x86_64: AUDIT_ARCH_X86_64, aarch64: AUDIT_ARCH_AARCH64 };
const ARCHES: Arch[] = ["x86_64", "aarch64"];
const PEER = 21;

/** What an attacker would try first, by number: none may pass */
const ATTACKS: Record<Arch, Record<string, number>> = {
  x86_64: {
    socket: 41,
    connect: 42,
    ioctl: 16,
    prctl: 157,
    execve: 59,
    execveat: 322,
    clone: 56,
    clone3: 435,
    fork: 57,
    ptrace: 101,
    process_vm_writev: 311,
    sendmsg: 46,
    bind: 49,
    read: 0,
    pwrite64: 18,
    writev: 20,
    dup2: 33,
    fcntl: 72,
    kill: 62,
    tgkill: 234,
    setuid: 105,
    unshare: 272,
    mount: 165,
    bpf: 321,
    io_uring_setup: 425,
    open_tree_attr: 467,
    seccomp: 317,
    epoll_wait: 232,
  },
  aarch64: {
    socket: 198,
    connect: 203,
    ioctl: 29,
    prctl: 167,
    execve: 221,
    execveat: 281,
    clone: 220,
    clone3: 435,
    ptrace: 117,
    process_vm_writev: 271,
    sendmsg: 211,
    bind: 200,
    read: 63,
    pwrite64: 68,
    writev: 66,
    dup3: 24,
    fcntl: 25,
    kill: 129,
    tgkill: 131,
    setuid: 146,
    unshare: 97,
    mount: 40,
    bpf: 280,
    io_uring_setup: 425,
    open_tree_attr: 467,
    seccomp: 277,
    epoll_pwait: 22,
  },
};

function bound(arch: Arch, kill = false): ServingFilter {
  const f = buildServingFilter(arch, { kill });
  bindPeer(f, PEER);
  return f;
}

function run(f: ServingFilter, nr: number, args: readonly bigint[] = [], audit?: number): number {
  return runFilter(f.program, { nr, arch: audit ?? f.auditArch, args });
}

function nr(arch: Arch, name: string): number {
  const c = [...SERVING_CALLS, ...SERVING_SOFT_REFUSALS].find((c) => c.name === name);
  assert.ok(c && c[arch] !== null, `${name} on ${arch}`);
  return c[arch]!;
}

for (const arch of ARCHES) {
  unit(`buildServingFilter() on ${arch} allows every listed call, each with its reason`, () => {
    const f = bound(arch);
    const listed = SERVING_CALLS.filter((c) => c[arch] !== null);
    assert.deepEqual(f.allowed, listed.map((c) => c.name));
    // The arguments each call is narrowed to, where it is
    const args: Record<string, bigint[]> = {
      setsockopt: [22n, 6n, 19n],
      recvmsg: [BigInt(PEER)],
      sendto: [BigInt(PEER)],
      getsockopt: [PEER, 1n, 57n].map(BigInt),
      write: [2n],
      close_range: [10n, 262n, 0n],
    };
    for (const c of listed) {
      assert.ok(c.why.length > 10, `${c.name} has a reason`);
      assert.equal(run(f, c[arch]!, args[c.name] ?? []), ALLOW, c.name);
    }
  });

  unit(`buildServingFilter() on ${arch} tests the hot calls first`, () => {
    const f = bound(arch);
    const insns = decode(f.program);
    // ld arch, jeq, ld nr, then one jeq per call in SERVING_CALLS' order
    const first = insns.slice(3, 7).map(([, , , k]) => k);
    const hot = HOT_CALLS[arch];
    assert.deepEqual(first, [hot.setsockopt, hot.close, hot.recvmsg, hot.sendto]);
  });

  unit(`buildServingFilter() on ${arch} limits recvmsg() and send() to passt's socket`, () => {
    const unbound = buildServingFilter(arch);
    for (const name of ["recvmsg", "sendto"]) {
      // Before bindPeer(): refused on every descriptor
      for (const fd of [0n, 3n, 21n, BigInt(NO_PEER) - 1n]) {
        assert.equal(run(unbound, nr(arch, name), [fd]), EPERM, `${name} unbound fd ${fd}`);
      }
      const f = bound(arch);
      assert.equal(run(f, nr(arch, name), [BigInt(PEER)]), ALLOW, name);
      // The high half of an int is ignored by the kernel, and so by the filter
      assert.equal(run(f, nr(arch, name), [BigInt(PEER) | (5n << 32n)]), ALLOW, `${name} high`);
      for (const fd of [0n, 1n, 2n, 22n, 275n]) {
        assert.equal(run(f, nr(arch, name), [fd]), EPERM, `${name} on fd ${fd}`);
      }
    }
    // Rebinding writes the slot in place
    const f = bound(arch);
    bindPeer(f, 7);
    assert.equal(run(f, nr(arch, "recvmsg"), [7n]), ALLOW);
    assert.equal(run(f, nr(arch, "recvmsg"), [BigInt(PEER)]), EPERM);
  });

  unit(
    `buildServingFilter() on ${arch} lets setsockopt() set TCP_REPAIR and socket filters only`,
    () => {
      const f = bound(arch);
      const set = nr(arch, "setsockopt");
      const allowed: [bigint, bigint][] = [[6n, 19n], [1n, 26n], [1n, 27n], [1n, 50n]];
      for (const [level, name] of allowed) {
        assert.equal(run(f, set, [22n, level, name]), ALLOW, `${level}/${name}`);
      }
      const refused: [bigint, bigint, string][] = [
        [6n, 20n, "TCP_REPAIR_QUEUE"],
        [6n, 21n, "TCP_QUEUE_SEQ"],
        [6n, 22n, "TCP_REPAIR_OPTIONS"],
        [6n, 29n, "TCP_REPAIR_WINDOW"],
        [6n, 1n, "TCP_NODELAY"],
        [1n, 25n, "SO_BINDTODEVICE"],
        [1n, 36n, "SO_MARK"],
        [1n, 44n, "SO_LOCK_FILTER"],
        [0n, 19n, "SOL_IP, 19"],
        [41n, 19n, "SOL_IPV6, 19"],
        [6n | (1n << 32n), 20n, "high half of the level is ignored"],
      ];
      for (const [level, name, what] of refused) {
        assert.equal(run(f, set, [22n, level, name]), EPERM, what);
      }
    },
  );

  unit(`buildServingFilter() on ${arch} lets close_range() close, with flags 0 only`, () => {
    const f = bound(arch);
    const closeRange = nr(arch, "close_range");
    assert.equal(run(f, closeRange, [10n, 262n, 0n]), ALLOW);
    // The high half of the unsigned int flags is ignored by the kernel
    assert.equal(run(f, closeRange, [10n, 262n, 1n << 32n]), ALLOW, "high half");
    for (
      const [flags, what] of [[2n, "CLOSE_RANGE_UNSHARE"], [4n, "CLOSE_RANGE_CLOEXEC"], [
        6n,
        "both",
      ]] as const
    ) {
      assert.equal(run(f, closeRange, [10n, 262n, flags]), EPERM, what);
    }
  });

  unit(`buildServingFilter() on ${arch} lets getsockopt() read socket-level options only`, () => {
    const f = bound(arch);
    const get = nr(arch, "getsockopt");
    for (const name of [26n, 57n, 17n, 3n]) {
      assert.equal(run(f, get, [PEER, 1n, name].map(BigInt)), ALLOW);
    }
    for (const level of [6n, 0n, 41n]) assert.equal(run(f, get, [22n, level, 11n]), EPERM);
  });

  unit(`buildServingFilter() on ${arch} lets write() reach stderr only`, () => {
    const f = bound(arch);
    assert.equal(run(f, nr(arch, "write"), [2n]), ALLOW);
    for (const fd of [0n, 1n, 3n, BigInt(PEER), 22n]) {
      assert.equal(run(f, nr(arch, "write"), [fd]), EPERM, `fd ${fd}`);
    }
  });

  unit(`buildServingFilter() on ${arch} refuses what an attacker wants, EPERM or kill`, () => {
    for (const kill of [false, true]) {
      const f = bound(arch, kill);
      const soft = new Set(SERVING_SOFT_REFUSALS.map((c) => c[arch]));
      for (const [name, n] of Object.entries(ATTACKS[arch])) {
        const want = kill && !soft.has(n) ? KILL : EPERM;
        assert.equal(run(f, n, [3n, 0x400454can, 0n]), want, name);
      }
      // Opening files, prctl(): EPERM even in kill mode (the runtime tries
      // them, and copes)
      for (const c of SERVING_SOFT_REFUSALS.filter((c) => c[arch] !== null)) {
        assert.equal(run(f, c[arch]!, [0xffffff9cn]), EPERM, c.name);
      }
    }
  });

  unit(`buildServingFilter() on ${arch} allows nothing it does not list`, () => {
    for (const kill of [false, true]) {
      const f = bound(arch, kill);
      const listed = new Set(SERVING_CALLS.map((c) => c[arch]));
      const soft = new Set(SERVING_SOFT_REFUSALS.map((c) => c[arch]));
      for (let n = 0; n < 1024; n++) {
        if (listed.has(n)) continue; // judged above, with their arguments
        const v = run(f, n, [BigInt(PEER), 6n, 19n]);
        assert.equal(v, soft.has(n) ? EPERM : kill ? KILL : EPERM, `nr ${n}`);
      }
    }
  });

  unit(`buildServingFilter() on ${arch} refuses other ABIs and x32 numbers`, () => {
    for (const kill of [false, true]) {
      const f = bound(arch, kill);
      const want = kill ? KILL : EPERM;
      for (
        const audit of [0x40000003, 0x40000028, AUDIT[arch === "x86_64" ? "aarch64" : "x86_64"]]
      ) {
        for (const n of [0, 1, 3, 47, 54, 60, 202, 231]) {
          assert.equal(run(f, n, [BigInt(PEER), 6n, 19n], audit), want, `arch ${audit} nr ${n}`);
        }
      }
      for (const n of [1, 3, 47, 54, 60, 231]) {
        assert.equal(run(f, X32_SYSCALL_BIT | n, [BigInt(PEER), 6n, 19n]), want, `x32 ${n}`);
      }
    }
  });

  unit(`buildServingFilter() on ${arch} is a valid program that always returns`, () => {
    const f = bound(arch);
    assertWellFormed(f.program, f.length);
  });

  unit(`SERVING_CALLS has distinct ${arch} numbers, none of them refused`, () => {
    const numbers = [...SERVING_CALLS, ...SERVING_SOFT_REFUSALS].map((c) => c[arch]).filter((
      n,
    ) => n !== null);
    assert.equal(new Set(numbers).size, numbers.length);
    const allowedNumbers = SERVING_CALLS.map((c) => c[arch]);
    for (const n of Object.values(ATTACKS[arch])) assert.ok(!allowedNumbers.includes(n));
  });
}

unit("buildServingFilter() fails closed on an unknown architecture", () => {
  assert.throws(() => buildServingFilter("riscv64"), RuntimeFailure);
});
