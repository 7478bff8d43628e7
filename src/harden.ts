// Hardening the process before it reads any input (SPEC section 6).
//
// The helper holds CAP_NET_ADMIN and accepts descriptors from another
// process, so it confines itself first:
//   - not dumpable: no core dumps, and /proc/PID and ptrace are closed to
//     other processes of the same user;
//   - no_new_privs: nothing it could execute gains privileges (and seccomp
//     needs it when the process lacks CAP_SYS_ADMIN);
//   - a seccomp filter on every thread (src/seccomp.ts), which refuses with
//     EPERM the calls a compromised helper would want first.
// Each step is read back, so a kernel that silently ignored one is caught.
// A failure is an error (exit 1): the helper never runs unconfined.

import {
  archOf,
  PR_GET_DUMPABLE,
  PR_GET_NO_NEW_PRIVS,
  PR_GET_SECCOMP,
  PR_SET_DUMPABLE,
  PR_SET_NO_NEW_PRIVS,
  SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_MODE_FILTER,
  SECCOMP_SET_MODE_FILTER,
} from "./abi.ts";
import { RuntimeFailure, SyscallError } from "./errors.ts";
import * as libc from "./ffi/libc.ts";
import { Channel, DropFilter } from "./ffi/libc.ts";
import { buildSeccompFilter } from "./seccomp.ts";

/** What harden() put in place, for --verbose */
export interface Hardening {
  readonly arch: string;
  /** Instructions in the seccomp program */
  readonly instructions: number;
  /** System calls it refuses with EPERM */
  readonly refused: readonly string[];
}

const EINVAL = 22;
const EACCES = 13;

/**
 * Makes the process non-dumpable, sets no_new_privs and installs the seccomp
 * filter on all threads. Needs libc open and the ffi permission (seccomp's
 * argument holds the filter's address), so it runs before the revoke.
 */
export function harden(arch: string = Deno.build.arch): Hardening {
  // First, so that an unknown architecture fails before anything changes
  const filter = buildSeccompFilter(arch);

  let r = libc.prctl(PR_SET_DUMPABLE, 0n);
  if (r < 0) {
    throw new SyscallError("prctl", -r, "Can't make the process non-dumpable (PR_SET_DUMPABLE)");
  }
  r = libc.prctl(PR_SET_NO_NEW_PRIVS, 1n);
  if (r < 0) throw new SyscallError("prctl", -r, "Can't set no_new_privs (PR_SET_NO_NEW_PRIVS)");

  r = libc.seccompSetModeFilter(
    filter.seccompNr,
    SECCOMP_SET_MODE_FILTER,
    SECCOMP_FILTER_FLAG_TSYNC,
    filter.program,
  );
  if (r < 0) {
    const hint = r === -EINVAL
      ? "the kernel may lack seccomp filters (CONFIG_SECCOMP_FILTER) or TSYNC"
      : r === -EACCES
      ? "no_new_privs is not set and the process lacks CAP_SYS_ADMIN"
      : "";
    throw new SyscallError("seccomp", -r, "Can't install the seccomp filter", hint);
  }
  if (r > 0) {
    // TSYNC reports the thread it could not synchronise
    throw new RuntimeFailure(
      `Can't install the seccomp filter on every thread: thread ${r} could not be synchronised (SECCOMP_FILTER_FLAG_TSYNC)`,
    );
  }

  // Read back: a step the kernel did not take is a failure, not a belief
  if (libc.prctl(PR_GET_DUMPABLE) !== 0) {
    throw new RuntimeFailure(
      "Hardening failed: the process is still dumpable after PR_SET_DUMPABLE 0",
    );
  }
  if (libc.prctl(PR_GET_NO_NEW_PRIVS) !== 1) {
    throw new RuntimeFailure("Hardening failed: no_new_privs is not set after PR_SET_NO_NEW_PRIVS");
  }
  if (libc.prctl(PR_GET_SECCOMP) !== SECCOMP_MODE_FILTER) {
    throw new RuntimeFailure("Hardening failed: the process is not in seccomp filter mode");
  }
  return { arch: filter.arch, instructions: filter.length, refused: filter.refused };
}

/** One line for --verbose */
export function describeHardening(h: Hardening): string {
  return `hardened: not dumpable, no_new_privs, seccomp filter (${h.arch}, ` +
    `${h.instructions} instructions) refusing ${h.refused.length} system calls; ffi permission revoked`;
}

/**
 * The startup sequence, in the only order that works: open libc, prepare the
 * input hold's filter (loading its eBPF program needs bpf(2), which the
 * seccomp filter refuses, and the classic one's address), make the channel
 * to passt (it takes its buffers' addresses), harden (seccomp takes the
 * filter's address), then revoke the ffi permission, after which no native
 * library can be loaded and no address taken, while the symbols already
 * bound keep working. Every run goes through this before reading any input;
 * the tests run it too, to show what it leaves possible. `hold: false`
 * (--no-hold) loads nothing.
 */
export function lockDown(
  arch: string = Deno.build.arch,
  options: { hold?: boolean } = {},
): { channel: Channel; hardening: Hardening; filter: DropFilter | null } {
  libc.openLibc();
  const known = archOf(arch);
  const filter = options.hold === false || known === null ? null : new DropFilter(known);
  const channel = new Channel(filter);
  const hardening = harden(arch);
  Deno.permissions.revokeSync({ name: "ffi" });
  return { channel, hardening, filter };
}
