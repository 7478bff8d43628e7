// Runs the helper's real startup sequence (lockDown() from src/harden.ts),
// then tries what it should have made impossible and what must still work,
// and prints the findings as one JSON line on stdout.
//
// Test tooling: started by tests/system/hardening_test.ts as
//   unshare --net deno run --allow-ffi --allow-run=/bin/true startup_probe.ts [--control]
// --control skips the lockdown (it only opens libc), to show that each
// refusal below is the lockdown's doing and not the probe's. The network
// namespace of its own keeps the control's TUN interface off the host.

import { PR_GET_NO_NEW_PRIVS } from "../../src/abi.ts";
import { checkCapability } from "../../src/capability.ts";
import { errnoName } from "../../src/errors.ts";
import { close, openLibc, prctl, socket } from "../../src/ffi/libc.ts";
import { lockDown } from "../../src/harden.ts";
import { NEWEST_CALL } from "../../src/seccomp.ts";
import { LazyLibc } from "./test_libc.ts";

// Calls the program itself cannot make, as an attacker who runs native code
// in the process could: bound before the ffi permission is revoked
const attacker = new LazyLibc({
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  // long syscall(long nr, int dfd, const char *path, unsigned flags, ulong, ulong)
  syscall: { parameters: ["i64", "i32", "buffer", "u32", "u64", "u64"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
});

/** "ok" (closing a descriptor it got, if asked), or the errno's name */
function outcome(r: number | bigint, fd = false): string {
  if (r < 0) return errnoName(attacker.errno());
  if (fd) close(Number(r));
  return "ok";
}

const cPath = (p: string) => new TextEncoder().encode(p + "\0");
const O_RDWR = 2, O_CLOEXEC = 0o2000000;
const TUNSETIFF = 0x400454can, TUNSETPERSIST = 0x400454cbn;
const PR_SET_DUMPABLE = 4;
const OPEN_TREE_ATTR = 467;
const IPPROTO_MPTCP = 262;

/** socket() through the bound symbol: "ok", or the errno's name */
function trySocket(domain: number, type: number): string {
  const fd = socket(domain, type, 0);
  if (fd < 0) return errnoName(-fd);
  close(fd);
  return "ok";
}

/** socket() with a protocol: "ok", or the errno's name */
function trySocketProtocol(domain: number, type: number, protocol: number): string {
  const fd = socket(domain, type, protocol);
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
const c = attacker.c; // opens libc now, while the permission is held
if (control) openLibc();
else lockDown();

/** TUNSETIFF, then TUNSETPERSIST, on /dev/net/tun: [outcome, outcome] */
function tun(): [string, string] {
  const fd = c.open(cPath("/dev/net/tun"), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return [`open: ${errnoName(attacker.errno())}`, "-"];
  const ifreq = new Uint8Array(40);
  ifreq.set(new TextEncoder().encode("prtun0"));
  new DataView(ifreq.buffer).setUint16(16, 0x0001 | 0x1000, true); // IFF_TUN | IFF_NO_PI
  const set = outcome(c.ioctl(fd, TUNSETIFF, ifreq));
  const persist = outcome(c.ioctl(fd, TUNSETPERSIST, new Uint8Array(8)));
  close(fd);
  return [set, persist];
}
const [tunsetiff, tunsetpersist] = tun();

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
  // A TUN interface, and one that outlives the process
  tunsetiff,
  tunsetpersist,
  // Making the process dumpable again (0 stays allowed)
  setDumpable: (() => {
    const r = prctl(PR_SET_DUMPABLE, 1n);
    return r < 0 ? errnoName(-r) : "ok";
  })(),
  // The newest mount call: a handle on a mount tree
  openTreeAttr: outcome(c.syscall(BigInt(OPEN_TREE_ATTR), -100, cPath("/"), 0, 0n, 0n), true),
  // An MPTCP stream socket
  mptcp: trySocketProtocol(2, /* AF_INET */ 1, /* SOCK_STREAM */ IPPROTO_MPTCP),
  // Calls newer than the filter knows: ENOSYS, locked or not, on kernels up
  // to 6.18, which have nothing there
  newer: outcome(c.syscall(BigInt(NEWEST_CALL.x86_64 + 1), 0, new Uint8Array(1), 0, 0n, 0n)),
  farBeyond: outcome(c.syscall(1000n, 0, new Uint8Array(1), 0, 0n, 0n)),
  // The symbols bound before the revoke keep working
  capability: checkCapability(),
  noNewPrivs: prctl(PR_GET_NO_NEW_PRIVS),
};
console.log(JSON.stringify(findings));
