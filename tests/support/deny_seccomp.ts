// Runs a command in a process where seccomp(2) itself is refused with EPERM,
// to show how the helper fails when it cannot harden itself.
//
// Test tooling, started by tests/system/hardening_test.ts as
//   deno run --allow-ffi --allow-run deny_seccomp.ts CMD [ARGS...]
// It installs a two-rule filter on every thread (seccomp -> EPERM, anything
// else allowed), which the command inherits, then runs the command with
// inherited stdio and exits with its status.

import {
  PR_SET_NO_NEW_PRIVS,
  SECCOMP_FILTER_FLAG_TSYNC,
  SECCOMP_SET_MODE_FILTER,
} from "../../src/abi.ts";
import { openLibc, prctl, seccompSetModeFilter } from "../../src/ffi/libc.ts";
import { SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SYS_SECCOMP } from "../../src/seccomp.ts";

const arch = Deno.build.arch === "aarch64" ? "aarch64" : "x86_64";
const program = new Uint8Array(4 * 8);
const v = new DataView(program.buffer);
const insns: [number, number, number, number][] = [
  [0x20, 0, 0, 0], // ld [nr]
  [0x15, 0, 1, SYS_SECCOMP[arch]], // jeq SYS_seccomp, next, skip
  [0x06, 0, 0, SECCOMP_RET_ERRNO | 1], // ret EPERM
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

const [cmd, ...args] = Deno.args;
if (cmd === undefined) throw new Error("usage: deny_seccomp.ts CMD [ARGS...]");
const status = new Deno.Command(cmd, { args, stdin: "null", stdout: "inherit", stderr: "inherit" })
  .spawn().status;
const { code, signal } = await status;
// A signal shows as 255, which the helper never exits with
Deno.exit(signal === null ? code : 255);
