// Everything the helper does before it reads passt's first message, in the
// one order that works. The rules, each for a reason:
//
//  1. Connect first when PATH is a socket already (socket mode): passt
//     waits only about 10 ms for its helper at migration time. This binds
//     only the few libc calls connecting needs, without compiling their
//     call stubs (src/ffi/libc.ts, openLibc), and reads nothing but the
//     file's status and the peer's credentials (src/locate.ts,
//     connectAtOnce): passt's first message is read only after both seccomp
//     stages below. Anything else (a directory, --wait for a name not there
//     yet, a socket that refuses or fails a check) is waited for or
//     reported in step 5, hardened.
//  2. Bind the rest of libc and make every buffer whose address a native
//     call needs (the Channel to passt, the priming peer, the seccomp
//     programs, the input hold's filter) while the ffi permission is held:
//     taking an address needs it. The hold's eBPF program is loaded here
//     too, before seccomp refuses bpf(). And give this thread, the one
//     that serves, a descriptor table of its own (unshare(CLONE_FILES),
//     before seccomp refuses it): the kernel looks a descriptor up without
//     taking a reference only in a table no other thread shares, about
//     60 ns less per setsockopt(), and grows it without waiting for an RCU
//     grace period. Deno's other threads keep the old table, which holds
//     nothing of passt's but (after step 1) the connection to it.
//  3. Harden before reading anything an attacker may write (a directory's
//     names, passt's messages): not dumpable, no_new_privs, seccomp stage 1
//     on all threads (src/harden.ts; README, "Security"). Then revoke the
//     ffi permission: no further native library can be loaded and no
//     address taken; the symbols already bound keep working.
//  4. Check the capability on a throwaway socket: a warning when serving
//     (passt's sockets may live where we are allowed), the answer for --check.
//     Try the input hold once on another: a kernel that lacks a step would
//     fail every ON, so the helper warns and serves without it.
//  5. Unless step 1 connected: find the socket, waiting as PATH and the
//     options say, and connect (src/locate.ts). What follows is needed only
//     by the first message, so it comes after connecting.
//  6. Grow the descriptor table before the first recvmsg(), priming's
//     included: growing a table shared by several threads waits for an RCU
//     grace period (10-23 ms), which would otherwise fall on passt's first
//     message where step 2's unshare was refused.
//  7. Prime: serve real messages from a socket pair of our own, so that the
//     first command after an idle is as fast as a warm one. A message passt
//     sends meanwhile waits in its socket and is read next.
//  8. Attach the Channel to passt's socket and install seccomp stage 2, the
//     allow-list: after priming (it refuses the socket calls priming makes)
//     and before the first recvmsg() from passt.
//
// What each step costs, measured: docs/performance.md.

import { AF_INET, SOCK_CLOEXEC, SOCK_STREAM } from "./abi.ts";
import { type CapabilityResult, checkCapability, checkHold } from "./capability.ts";
import { UsageError } from "./errors.ts";
import * as libc from "./ffi/libc.ts";
import { type Channel, SelfPeer } from "./ffi/libc.ts";
import {
  describeConfinement,
  describeHardening,
  lockDown,
  type ServingConfinement,
} from "./harden.ts";
import { describeDropFilter, describeHoldNote } from "./hold.ts";
import { printLine } from "./log.ts";
import type { Located } from "./locate.ts";
import { commandName } from "./protocol.ts";
import { describeCommand, type HoldNote, RepairSession } from "./repair.ts";

/** The table is grown to hold at least this descriptor number */
export const PREGROW_FD = 1023;

export interface StartOptions {
  /** Prints a --verbose line */
  readonly log: (text: string) => void;
  /** Prints a `warning:` line */
  readonly warn: (text: string) => void;
  /** --verbose: a line per command */
  readonly verbose: boolean;
  /** Hold each socket's input while in repair mode (not --no-hold); null for --check */
  readonly hold: boolean | null;
  /** --seccomp-kill: both seccomp stages kill instead of answering EPERM */
  readonly seccompKill: boolean;
  /** Step 1: connects if PATH is a socket that accepts now, else null; absent for --check */
  readonly connectAtOnce?: () => Located | null;
}

/** Steps 1-4 done; connected() does the rest once passt's socket is open */
export interface Started {
  readonly capability: CapabilityResult;
  /** The connection step 1 made, or null: then step 5 is the caller's */
  readonly early: Located | null;
  /** Steps 6-8 on the connected socket: the session, ready to serve */
  connected(located: Located): RepairSession;
}

/**
 * Steps 1-4. Throws UsageError without the ffi permission: asking, never
 * prompting, because a prompt would hang a helper started by KubeVirt or
 * systemd.
 */
export function start(options: StartOptions): Started {
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    throw new UsageError(
      "passt-repair needs Deno's --allow-ffi permission (and no other): " +
        "deno run --allow-ffi main.ts PATH",
    );
  }
  let early: Located | null = null;
  if (options.connectAtOnce !== undefined) {
    libc.openLibc("connect");
    early = options.connectAtOnce();
  }
  try {
    return prepare(options, early);
  } catch (e) {
    if (early !== null) libc.close(early.fd);
    throw e;
  }
}

/** Steps 2-4 */
function prepare(options: StartOptions, early: Located | null): Started {
  libc.openLibc();
  // Refused (by a container's seccomp profile, say) it only forgoes the speed-up
  libc.unshareFiles();
  const peer = new SelfPeer();
  const { channel, hardening, filter, serving } = lockDown(Deno.build.arch, {
    hold: options.hold === true,
    kill: options.seccompKill,
  });
  options.log(describeHardening(hardening));
  const capability = checkCapability();
  let hold = false;
  if (options.hold) {
    const problem = filter === null ? "no filter for this architecture" : checkHold(channel);
    if (problem === null) {
      hold = true;
      options.log(describeDropFilter(filter));
    } else {
      options.warn(`input hold unavailable, serving without it: ${problem}`);
    }
  } else if (options.hold === false) {
    options.log(describeDropFilter(null));
  }
  return {
    capability,
    early,
    connected: (located) =>
      connected(channel, peer, serving, located, { capability, hold }, options),
  };
}

function connected(
  channel: Channel,
  peer: SelfPeer,
  serving: ServingConfinement,
  located: Located,
  found: { capability: CapabilityResult; hold: boolean },
  options: StartOptions,
): RepairSession {
  const log = options.log;
  const { fd, shown, peer: cred } = located;
  log(`connected to ${shown} (peer pid ${cred.pid}, uid ${cred.uid}, gid ${cred.gid})`);
  growDescriptorTable();
  // Whether the --verbose line is quiet (priming): an array element, not a
  // variable, because V8 takes a variable it has seen hold one value for a
  // constant, and throws away the code built on it (step() with this
  // observer inlined) when it changes (--log-deopt: "dependent context cell
  // state changed")
  const quiet = new Uint8Array([1]);
  const session = new RepairSession(channel, {
    capable: found.capability.allowed,
    hold: found.hold,
    ...(options.verbose
      ? {
        // Quiet while priming: the line is made and written, as no bytes
        onCommand: (cmd: number, sockets: number, micros: number) =>
          printLine(describeCommand(cmd, sockets, micros), quiet[0] === 1),
        onHoldNote: (note: HoldNote) => log(describeHoldNote(commandName(note.cmd), note)),
      }
      : {}),
  });
  primeSession(session, channel, peer);
  quiet[0] = 0;
  channel.attach(fd);
  // Before passt's first message: from here on, only what serving needs
  // (receive and reply on passt's socket, TCP_REPAIR and the hold's filters,
  // close, stderr, exit, and the runtime's own memory and thread calls); no
  // file, no socket, no ioctl, no prctl (docs/security.md)
  serving.install(fd);
  log(describeConfinement(serving));
  return session;
}

/**
 * Makes the kernel grow this process's descriptor table now (step 6).
 * F_DUPFD_CLOEXEC takes the lowest free number >= PREGROW_FD, so unlike
 * dup2() it never closes a descriptor we inherited there. Failure (a
 * descriptor limit of 1024 or less) only forgoes the speed-up. Returns the
 * number used, or -errno.
 */
function growDescriptorTable(): number {
  const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fd;
  const high = libc.dupAtLeast(fd, PREGROW_FD);
  if (high >= 0) libc.close(high);
  libc.close(fd);
  return high;
}

/**
 * Step 7: RepairSession.prime() through the Channel, attached for the while
 * to a socket pair of our own whose other end (`peer`) plays passt, with a
 * throwaway TCP socket as every descriptor. Everything it opens is closed
 * again, whatever happens; a failure only forgoes the speed-up. Returns the
 * rounds served.
 */
function primeSession(session: RepairSession, channel: Channel, peer: SelfPeer): number {
  const spare = libc.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (spare < 0) return 0;
  const ours = peer.open(spare);
  try {
    if (ours < 0) return 0;
    channel.attach(ours);
    return session.prime(peer);
  } finally {
    channel.attach(-1);
    if (ours >= 0) libc.close(ours);
    peer.close();
    libc.close(spare);
  }
}
