// Runs a command in a process where one system call is refused: by default
// seccomp(2) itself, with EPERM, to show how the helper fails when it cannot
// harden itself; with --refuse=close_range, close_range(2), with ENOSYS, as
// on a kernel before 5.9, to show that the helper still closes what it
// receives.
//
// Test tooling, started by tests/system/ as
//   deno run --allow-ffi --allow-run deny_seccomp.ts [--refuse=CALL] CMD [ARGS...]
// It installs a two-rule filter on every thread (that call -> its errno,
// anything else allowed), which the command inherits, then runs the command
// with inherited stdio and exits with its status.

import {
  PR_SET_NO_NEW_PRIVS,
  SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_SET_MODE_FILTER,
} from "../../src/abi.ts";
import { openLibc, prctl, seccompSetModeFilter } from "../../src/ffi/libc.ts";
import { SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SYS_SECCOMP } from "../../src/seccomp.ts";

const arch = Deno.build.arch === "aarch64" ? "aarch64" : "x86_64";
const EPERM = 1;
const ENOSYS = 38;
/** What --refuse may name: the call's number here, and the errno it gets */
const REFUSABLE: Record<string, { nr: number; errno: number }> = {
  seccomp: { nr: SYS_SECCOMP[arch], errno: EPERM },
  close_range: { nr: 436, errno: ENOSYS }, // the same number on both
};
let args = Deno.args;
let refused = REFUSABLE.seccomp!;
if (args[0]?.startsWith("--refuse=")) {
  const name = args[0].slice("--refuse=".length);
  const known = REFUSABLE[name];
  if (known === undefined) throw new Error(`deny_seccomp.ts: cannot refuse ${name}`);
  refused = known;
  args = args.slice(1);
}
const program = new Uint8Array(4 * 8);
const v = new DataView(program.buffer);
const insns: [number, number, number, number][] = [
  [0x20, 0, 0, 0], // ld [nr]
  [0x15, 0, 1, refused.nr], // jeq the call, next, skip
  [0x06, 0, 0, SECCOMP_RET_ERRNO | refused.errno], // ret its errno
  [0x06, 0, 0, SECCOMP_RET_ALLOW], // ret ALLOW
];
insns.forEach(([code, jt, jf, k], i) => {
  v.setUint16(i * 8, code, true);
  v.setUint8(i * 8 + 2, jt);
  v.setUint8(i * 8 + 3, jf);
  v.setUint32(i * 8 + 4, k, true);
});

openLibc();
if (prctl(PR_SET_NO_NEW_PRIVS, 1n) < 0) throw new Error("PR_SET_NO_NEW_PRIVS failed");
const r = seccompSetModeFilter(
  SYS_SECCOMP[arch],
  SECCOMP_SET_MODE_FILTER,
  SECCOMP_FILTER_FLAG_TSYNC,
  program,
);
if (r !== 0) throw new Error(`seccomp() returned ${r}`);

const [cmd, ...rest] = args;
if (cmd === undefined) throw new Error("usage: deny_seccomp.ts [--refuse=CALL] CMD [ARGS...]");
const status =
  new Deno.Command(cmd, { args: rest, stdin: "null", stdout: "inherit", stderr: "inherit" })
    .spawn().status;
const { code, signal } = await status;
// A signal shows as 255, which the helper never exits with
Deno.exit(signal === null ? code : 255);
