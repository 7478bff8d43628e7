// Runs the helper's real startup sequence (lockDown() from src/harden.ts),
// then tries what it should have made impossible and what must still work,
// and prints the findings as one JSON line on stdout.
//
// Test tooling: started by tests/system/hardening_test.ts as
//   deno run --allow-ffi --allow-run=/bin/true startup_probe.ts [--control]
// --control skips the lockdown (it only opens libc), to show that each
// refusal below is the lockdown's doing and not the probe's.

import { PR_GET_NO_NEW_PRIVS } from "../../src/abi.ts";
import { checkCapability } from "../../src/capability.ts";
import { errnoName } from "../../src/errors.ts";
import { close, openLibc, prctl, socket } from "../../src/ffi/libc.ts";
import { lockDown } from "../../src/harden.ts";

/** socket() through the bound symbol: "ok", or the errno's name */
function trySocket(domain: number, type: number): string {
  const fd = socket(domain, type, 0);
  if (fd < 0) return errnoName(-fd);
  close(fd);
  return "ok";
}

function attempt(f: () => unknown): string {
  try {
    f();
    return "ok";
  } catch (e) {
    return e instanceof Error ? `${e.name}: ${e.message.split("\n")[0]}` : String(e);
  }
}

const control = Deno.args.includes("--control");
if (control) openLibc();
else lockDown();

const findings = {
  ffiState: Deno.permissions.querySync({ name: "ffi" }).state,
  // A further library: refused once the permission is revoked
  dlopen: attempt(() =>
    Deno.dlopen("libc.so.6", { getpid: { parameters: [], result: "i32" } }).close()
  ),
  // Taking an address: refused too
  pointerOf: attempt(() => Deno.UnsafePointer.of(new Uint8Array(8))),
  // Asking for the permission back: no prompt is possible without a terminal
  request: attempt(() => {
    const state = Deno.permissions.requestSync({ name: "ffi" }).state;
    if (state !== "granted") throw new Error(state);
  }),
  // Starting a program: refused by seccomp (execve), although --allow-run allows it
  spawn: attempt(() =>
    new Deno.Command("/bin/true", { stdout: "null", stderr: "null" }).outputSync()
  ),
  // Sockets the helper never needs, refused by seccomp with EPERM
  netlink: trySocket(16, /* AF_NETLINK */ 3 /* SOCK_RAW */),
  udp: trySocket(2, /* AF_INET */ 2 /* SOCK_DGRAM */),
  // The symbols bound before the revoke keep working
  capability: checkCapability(),
  noNewPrivs: prctl(PR_GET_NO_NEW_PRIVS),
};
console.log(JSON.stringify(findings));
