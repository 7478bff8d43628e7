// Hardening the process before it reads any input (docs/security.md).
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
//
// Once connected to passt, before the first message is read, confine()
// adds the second stage: an allow-list of what serving needs, everything
// else refused (src/seccomp.ts, buildServingFilter). Its program and the
// struct sock_fprog that points to it are made here, before the ffi
// permission is revoked, because taking the address needs it.

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
import { AT_FDCWD, O_CLOEXEC, O_PATH } from "./abi.ts";
import { EACCES, EINVAL, EPERM, RuntimeFailure, SyscallError } from "./errors.ts";
import { cPath } from "./path.ts";
import * as libc from "./ffi/libc.ts";
import { Channel, DropFilter } from "./ffi/libc.ts";
import {
  bindPeer,
  buildSeccompFilter,
  buildServingFilter,
  type FilterOptions,
  type ServingFilter,
} from "./seccomp.ts";

/** What harden() put in place, for --verbose */
export interface Hardening {
  readonly arch: string;
  /** Instructions in the seccomp program */
  readonly instructions: number;
  /** System calls it refuses with EPERM */
  readonly refused: readonly string[];
  /** Whether a refusal kills the process (--seccomp-kill) */
  readonly kill: boolean;
}

/**
 * Makes the process non-dumpable, sets no_new_privs and installs the seccomp
 * filter on all threads. Needs libc open and the ffi permission (seccomp's
 * argument holds the filter's address), so it runs before the revoke.
 */
export function harden(arch: string = Deno.build.arch, options: FilterOptions = {}): Hardening {
  // First, so that an unknown architecture fails before anything changes
  const filter = buildSeccompFilter(arch, options);

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
  return {
    arch: filter.arch,
    instructions: filter.length,
    refused: filter.refused,
    kill: filter.kill,
  };
}

/** One line for --verbose */
export function describeHardening(h: Hardening): string {
  return `hardened: not dumpable, no_new_privs, seccomp filter (${h.arch}, ` +
    `${h.instructions} instructions) refusing ${h.refused.length} system calls` +
    `${h.kill ? " by killing the process" : ""}; ffi permission revoked`;
}

/**
 * The second stage, ready to install after the revoke: the program (passt's
 * descriptor still to be written into it) and its struct sock_fprog, whose
 * address field was filled while the ffi permission was held. Keeping this
 * object keeps both buffers alive.
 */
/** "/", for the read-back that opening a file is refused */
const ROOT = cPath("/");

export class ServingConfinement {
  readonly filter: ServingFilter;
  readonly #prog: Uint8Array;
  #installed = false;

  /** Builds and addresses the program: needs the ffi permission */
  constructor(arch: string, options: FilterOptions = {}) {
    this.filter = buildServingFilter(arch, options);
    this.#prog = libc.sockFprog(this.filter.program);
  }

  get installed(): boolean {
    return this.#installed;
  }

  /**
   * Installs the second stage on every thread, allowing recvmsg() and send()
   * on `peer` (passt's socket) only. Needs no permission. Throws if the
   * kernel refuses it, or if it does not refuse what it must (read back:
   * opening a file, which it answers EPERM even in kill mode).
   */
  install(peer: number): void {
    if (this.#installed) throw new Error("the second seccomp stage is already installed");
    bindPeer(this.filter, peer);
    const r = libc.seccompInstall(
      this.filter.seccompNr,
      SECCOMP_SET_MODE_FILTER,
      SECCOMP_FILTER_FLAG_TSYNC,
      this.#prog,
    );
    if (r < 0) throw new SyscallError("seccomp", -r, "Can't install the second seccomp filter");
    if (r > 0) {
      throw new RuntimeFailure(
        `Can't install the second seccomp filter on every thread: thread ${r} could not be synchronised (SECCOMP_FILTER_FLAG_TSYNC)`,
      );
    }
    this.#installed = true;
    const fd = libc.openAt(AT_FDCWD, ROOT, O_PATH | O_CLOEXEC);
    if (fd !== -EPERM) {
      if (fd >= 0) libc.close(fd);
      throw new RuntimeFailure(
        "Hardening failed: the second seccomp filter lets the process open files",
      );
    }
  }
}

/** One line for --verbose, once the second stage is in place */
export function describeConfinement(c: ServingConfinement): string {
  const f = c.filter;
  return `confined: second seccomp filter (${f.length} instructions) allowing ${f.allowed.length} ` +
    `system calls, refusing the rest${f.kill ? " by killing the process" : " with EPERM"}`;
}

/**
 * The startup sequence, in the only order that works: open libc, prepare the
 * input hold's filter (loading its eBPF program needs bpf(2), which the
 * seccomp filter refuses, and the classic one's address), make the channel
 * to passt (it takes its buffers' addresses) and the second stage's program
 * (its address too), harden (seccomp takes the filter's address), then
 * revoke the ffi permission, after which no native library can be loaded and
 * no address taken, while the symbols already bound keep working. Every run
 * goes through this before reading any input; the tests run it too, to show
 * what it leaves possible. `hold: false` (--no-hold) loads nothing.
 */
export function lockDown(
  arch: string = Deno.build.arch,
  options: FilterOptions & { hold?: boolean } = {},
): {
  channel: Channel;
  hardening: Hardening;
  filter: DropFilter | null;
  serving: ServingConfinement;
} {
  libc.openLibc();
  const known = archOf(arch);
  const filter = options.hold === false || known === null ? null : new DropFilter(known);
  const channel = new Channel(filter);
  const serving = new ServingConfinement(arch, options);
  const hardening = harden(arch, options);
  Deno.permissions.revokeSync({ name: "ffi" });
  return { channel, hardening, filter, serving };
}
