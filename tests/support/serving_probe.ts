// Plays a subverted helper after the second seccomp stage: runs the real
// startup sequence (lockDown() from src/harden.ts), connects to the fake
// passt at PATH, installs the second stage as main.ts does, tries what the
// stage must refuse, then serves passt with the program's own RepairSession
// until EOF. Prints its findings as one JSON line on stderr (stdout is out
// of reach once confined: write() is allowed on stderr only).
//
// Test tooling: started by tests/system/hardening_test.ts as
//   deno run --allow-ffi serving_probe.ts PATH [--control | --kill]
// --control skips the second stage (the first is installed as always), to
// show that each refusal below is the second stage's doing; --kill installs
// both in kill mode and then makes one refused call: the process must die.

import { AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM, SOCKADDR_UN_SIZE } from "../../src/abi.ts";
import { errnoName } from "../../src/errors.ts";
import { close, connect, prctl, socket } from "../../src/ffi/libc.ts";
import { lockDown } from "../../src/harden.ts";
import { RepairSession } from "../../src/repair.ts";
import { sockaddrUnFor } from "./peer_native.ts";
import { LazyLibc } from "./test_libc.ts";

// Calls the program itself cannot make, as an attacker who runs native code
// in the process could: bound before the ffi permission is revoked
const attacker = new LazyLibc({
  open: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  execve: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
});

const O_RDONLY = 0, O_RDWR = 2, O_CLOEXEC = 0o2000000;
const TUNSETIFF = 0x400454can;
const FIONREAD = 0x541bn;
const PR_SET_DUMPABLE = 4, PR_GET_DUMPABLE = 3;

/** "ok" (closing what it got), or the errno's name */
function outcome(r: number, fd = false): string {
  if (r < 0) return errnoName(attacker.errno());
  if (fd) close(r);
  return "ok";
}

/** Same, for the program's own wrappers, which return -errno */
function own(r: number, fd = false): string {
  if (r < 0) return errnoName(-r);
  if (fd) close(r);
  return "ok";
}

function path(p: string): Uint8Array {
  return new TextEncoder().encode(p + "\0");
}

const [socketPath, mode = ""] = Deno.args;
if (socketPath === undefined) throw new Error("usage: serving_probe.ts PATH [--control|--kill]");
const c = attacker.c; // opens libc now, while the permission is held
const { channel, serving } = lockDown(Deno.build.arch, { kill: mode === "--kill" });

// Connect as the helper does, and prepare what the attacks need while the
// first stage still allows it
const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
if (fd < 0) throw new Error(`socket: ${errnoName(-fd)}`);
const address = sockaddrUnFor(socketPath);
if (connect(fd, address, SOCKADDR_UN_SIZE) < 0) throw new Error("connect failed");
const spare = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
const tun = c.open(path("/dev/net/tun"), O_RDWR | O_CLOEXEC, 0);
const ifreq = new Uint8Array(40);
ifreq.set(new TextEncoder().encode("prtun0"));
new DataView(ifreq.buffer).setUint16(16, 0x0001 | 0x1000, true); // IFF_TUN | IFF_NO_PI
const count = new Uint8Array(4);
channel.attach(fd);

if (mode !== "--control") serving.install(fd);
if (mode === "--kill") {
  // Refused: the process must die of SIGSYS here, before printing anything
  socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  console.error("still alive after a refused call");
  Deno.exit(3);
}

const findings = {
  installed: serving.installed,
  // Files: ptrace by another name, and any file at all
  procSelfMem: outcome(c.open(path("/proc/self/mem"), O_RDWR | O_CLOEXEC, 0), true),
  anyFile: outcome(c.open(path("/etc/passwd"), O_RDONLY | O_CLOEXEC, 0), true),
  // Sockets: none made, none connected
  socket: own(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), true),
  connect: own(connect(spare, address, SOCKADDR_UN_SIZE)),
  // ioctl: TUNSETIFF (refused by both stages), and even a harmless one
  tunsetiff: tun < 0 ? "no /dev/net/tun" : outcome(c.ioctl(tun, TUNSETIFF, ifreq)),
  fionread: outcome(c.ioctl(fd, FIONREAD, count)),
  // prctl: making the process dumpable (both stages), and any prctl
  setDumpable: own(prctl(PR_SET_DUMPABLE, 1n)),
  getDumpable: own(prctl(PR_GET_DUMPABLE)),
  // Starting a program: refused by both stages. (Not through Deno.Command:
  // it first locks Deno's code cache database, and under the second stage
  // SQLite retries that lock for seconds before the spawn is even tried.)
  execve: outcome(c.execve(path("/bin/true"), new Uint8Array(8), new Uint8Array(8))),
};

// ...and serving still works: the program's own session, until EOF
const session = new RepairSession(channel, { capable: true });
const end = session.serve();
console.error(JSON.stringify({ ...findings, end, commands: session.commands }));
// As main.ts does: leaving through the event loop would need calls the
// second stage refuses
Deno.exit(0);
