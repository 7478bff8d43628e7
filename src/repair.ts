// The repair executor: receive a command, apply it to every descriptor of the
// batch, reply, then close our copies.
//
// It talks to the kernel only through the RepairNative interface, which the FFI
// module implements and unit tests fake, so the order of operations is tested
// without permissions. That a message allocates nothing is measured on the real
// thing, by tests/support/allocation_probe.ts.
//
// With the input hold (src/hold.ts), each socket's hold joins its switch: ON
// then hold, OFF then release, socket by socket, all before the reply.

import { SCM_MAX_FD, TCP_REPAIR_OFF_NO_WP, TCP_REPAIR_ON } from "./abi.ts";
import { check, ECONNRESET, EINTR, EPERM, PasstRepairError, SyscallError } from "./errors.ts";
import { type HoldNative, type HoldOutcome, InputHold } from "./hold.ts";
import {
  ancillaryError,
  commandName,
  commandOf,
  isCommand,
  parseRights,
  Problem,
  unsupportedCommand,
} from "./protocol.ts";

/** The native operations one connection needs (the hold's among them) */
export interface RepairNative extends HoldNative {
  /**
   * recvmsg() of one message into `data` and `control`, with a fully reset
   * msghdr: 1 (a byte arrived), 0 (EOF) or -errno
   */
  receive(): number;
  /** The received data byte is data[0] */
  readonly data: Uint8Array;
  /** The control buffer the kernel filled */
  readonly control: DataView;
  /** msg_controllen after the last receive() */
  controlLength(): number;
  /** msg_flags after the last receive() */
  messageFlags(): number;
  /** setsockopt(fd, SOL_TCP, TCP_REPAIR, &op, 4): 0 or -errno */
  setTcpRepair(fd: number, op: number): number;
  /** send() of one byte with MSG_NOSIGNAL: 1 or -errno */
  reply(byte: number): number;
  /** close(), result ignored: there is nothing useful to do about it */
  close(fd: number): void;
  /**
   * close_range(first, last, 0): 0, or -errno when it closed nothing
   * (-ENOSYS where the kernel or libc lacks it)
   */
  closeRange(first: number, last: number): number;
}

/**
 * passt's end of a socket pair of the helper's own, for prime(): it sends
 * real command messages carrying copies of a throwaway TCP socket
 */
export interface PrimingPeer {
  /** sendmsg() of `byte` with `count` descriptors: 1, or -errno */
  send(byte: number, count: number): number;
  /** Reads the reply byte: 1, 0 at EOF, or -errno */
  receiveReply(): number;
}

/**
 * How prime() exercises the message path: PRIME_ROUNDS messages, every
 * PRIME_FULL_EVERY-th of them carrying SCM_MAX_FD descriptors and the rest
 * one. Many small rounds let the JIT compile receive, switch, reply and
 * close; the full ones run the loops at the size passt sends.
 *
 * V8 compiles a function with Maglev once it has run enough (about 400 calls
 * for a small one, Deno 2.9.6). The per-descriptor functions get there
 * early; the per-message ones (step, receive, reply) only after about 600
 * rounds (--v8-flags=--trace-opt). With 400 rounds they stayed in V8's
 * baseline code, and the first command after an idle took 55-60 µs from
 * recvmsg() to the first setsockopt(), against 35-45 µs with 800 (ftrace,
 * helper and peer on one CPU; docs/performance.md). The last 200 rounds
 * give the background compiler time to finish, so that its code is in
 * place before passt's first message rather than installed during it.
 */
const PRIME_ROUNDS = 800;
const PRIME_FULL_EVERY = 100;

/** Observes each carried-out command (for --verbose) */
export type CommandObserver = (cmd: number, sockets: number, micros: number) => void;

/** "ON for 253 sockets in 412 µs": the --verbose line for a command */
export function describeCommand(cmd: number, sockets: number, micros: number): string {
  return `${commandName(cmd)} for ${sockets} socket${sockets === 1 ? "" : "s"} in ${micros} µs`;
}

/** A socket of an answered command that the input hold left as it was */
export interface HoldNote {
  readonly cmd: number;
  /** Its position in the message, from 0 */
  readonly position: number;
  readonly count: number;
  /** Our copy's number (closed by now) */
  readonly fd: number;
  readonly outcome: HoldOutcome;
  /** What SO_GET_FILTER said: instructions, or -EACCES for an eBPF program */
  readonly filter: number;
}

export interface SessionOptions {
  /**
   * Called after each reply, priming's included (keep it quiet while
   * prime() runs); when absent, no clock is read at all
   */
  onCommand?: CommandObserver;
  /**
   * What the startup check found: true if this process may set TCP_REPAIR,
   * false if not, undefined if unknown. Sharpens the hint on EPERM.
   */
  capable?: boolean;
  /**
   * Hold each socket's input while it is in repair mode (src/hold.ts);
   * RepairNative's hold operations are called only when this is true
   */
  hold?: boolean;
  /** Called after the reply for each socket the hold left as it was */
  onHoldNote?: (note: HoldNote) => void;
}

/** Why serve() returned normally */
export type EndReason = "eof" | "reset";

/** Explains EPERM from setsockopt(TCP_REPAIR), which has two causes */
export function epermHint(capable: boolean | undefined): string {
  if (capable === true) {
    return "the socket is probably listening or not TCP (this process has CAP_NET_ADMIN)";
  }
  if (capable === false) {
    return "setting TCP_REPAIR needs CAP_NET_ADMIN, which this process lacks";
  }
  return "setting TCP_REPAIR needs CAP_NET_ADMIN in the socket's network namespace and a socket that is not listening";
}

/** One connection to passt, served message by message */
export class RepairSession {
  readonly #native: RepairNative;
  readonly #capable: boolean | undefined;
  // Told about priming's messages too (prime())
  readonly #onCommand: CommandObserver | undefined;
  #onHoldNote: ((note: HoldNote) => void) | undefined;
  readonly #hold: InputHold | null;
  // Whether #switchAll() stopped at the hold rather than at TCP_REPAIR
  #holdFailed = false;
  // Set up once and reused for every message: nothing is allocated per
  // message or per descriptor on the success path.
  readonly #fds = new Int32Array(SCM_MAX_FD + 1);
  readonly #found = new Int32Array(1);
  #commands = 0;
  // errno of the setsockopt() that #switchAll() stopped at
  #errno = 0;
  // Whether close_range() may close a run of descriptors: until it fails once
  #closeRanges = true;

  constructor(native: RepairNative, options: SessionOptions = {}) {
    this.#native = native;
    this.#capable = options.capable;
    this.#onCommand = options.onCommand;
    this.#onHoldNote = options.onHoldNote;
    this.#hold = options.hold === true ? new InputHold(native) : null;
  }

  /** Sockets whose input this session holds now */
  get held(): number {
    return this.#hold?.held ?? 0;
  }

  /** How many commands were carried out and answered */
  get commands(): number {
    return this.#commands;
  }

  /** Serves until passt closes (EOF) or resets the connection; throws on failure */
  serve(): EndReason {
    for (;;) {
      const end = this.step();
      if (end !== null) return end;
    }
  }

  /** Handles one message: null when it was answered, else why the peer ended */
  step(): EndReason | null {
    const native = this.#native;
    let r: number;
    do r = native.receive(); while (r === -EINTR);
    const t0 = this.#onCommand ? performance.now() : 0;
    if (r === 0) {
      this.#closeReceived(native);
      return "eof";
    }
    if (r === -ECONNRESET) return "reset";
    check(r, "recvmsg", "Failed to receive from peer");

    const fds = this.#fds;
    const problem = parseRights(
      native.control,
      native.controlLength(),
      native.messageFlags(),
      fds,
      this.#found,
    );
    const n = this.#found[0]!;
    if (problem !== Problem.OK) {
      this.#closeAll(n);
      throw ancillaryError(problem);
    }

    const byte = native.data[0]!;
    const cmd = commandOf(byte);
    if (!isCommand(cmd)) {
      this.#closeAll(n);
      throw unsupportedCommand(byte);
    }

    const hold = this.#hold;
    const done = this.#switchAll(cmd, n);
    if (done < n) {
      const fd = fds[done]!;
      hold?.abandon();
      this.#closeAll(n);
      throw this.#holdFailed && hold !== null
        ? holdFailure(cmd, done, n, fd, this.#errno, hold.failedCall)
        : repairFailure(cmd, done, n, fd, this.#errno, this.#capable);
    }

    // Reply first, close after: passt's own descriptors keep the sockets alive,
    // so our copies do not matter to it, and the closes leave the critical path.
    const sent = native.reply(byte);
    if (sent !== 1) {
      hold?.abandon();
      this.#closeAll(n);
      const errno = sent < 0 ? -sent : 0;
      throw new SyscallError(
        "send",
        errno,
        `Reply to ${commandName(cmd)} failed`,
        errno === 0 ? "nothing was sent" : "",
      );
    }
    // The time passt waited: from the message to the reply, not the closes
    const micros = this.#onCommand ? Math.round((performance.now() - t0) * 1000) : 0;
    // Off the critical path too: which sockets the message held, by cookie
    const recorded = hold === null ? 0 : hold.commit();
    this.#closeAll(n);
    if (recorded < 0) {
      const at = hold!.failedAt;
      throw holdFailure(cmd, at, n, fds[at]!, -recorded, hold!.failedCall, true);
    }
    this.#commands++;
    this.#onCommand?.(cmd, n, micros);
    if (hold !== null && hold.notes > 0) this.#reportNotes(hold, cmd, n);
    return null;
  }

  #reportNotes(hold: InputHold, cmd: number, count: number): void {
    const observer = this.#onHoldNote;
    if (observer === undefined) return;
    for (let k = 0; k < hold.notes; k++) {
      const { position, outcome, filter } = hold.note(k);
      observer({ cmd, position, count, fd: this.#fds[position]!, outcome, filter });
    }
  }

  // A message without data (EOF) can still carry descriptors only in theory;
  // close whatever the kernel reports so that nothing leaks on any path.
  #closeReceived(native: RepairNative): void {
    const len = native.controlLength();
    if (len === 0) return;
    parseRights(native.control, len, 0, this.#fds, this.#found);
    this.#closeAll(this.#found[0]!);
  }

  /**
   * Serves `rounds` real messages from `peer`, a socket pair of our own that
   * the native side is attached to for the while, so that every call on the
   * message path (recvmsg, parsing, setsockopt, send, close) has been made
   * and compiled before passt's first message, the one a migration waits
   * for. The descriptors are copies of a throwaway TCP socket of ours; each
   * is switched and closed like passt's. Returns the rounds served: fewer
   * when a switch is refused (no CAP_NET_ADMIN here), which only forgoes
   * the speed-up. Counts nothing; tells the command observer, which the
   * caller keeps quiet meanwhile.
   */
  prime(peer: PrimingPeer, rounds = PRIME_ROUNDS, fullEvery = PRIME_FULL_EVERY): number {
    // The command observer is told about priming's messages too, so that
    // step() takes the branch it takes for passt's (--verbose: clock reads,
    // the call, the line): the caller keeps it quiet meanwhile. Priming with
    // no observer left passt's first command to deoptimize step() and to
    // make the process's first call of performance.now() (compiled on
    // first use): 800-1100 µs instead of 130-160 µs; with an observer of its
    // own, the first report deoptimized step() (another call target), and
    // the next command ran in baseline code (ftrace, --log-deopt;
    // docs/performance.md). Hold notes are rare: none while priming.
    const noteObserver = this.#onHoldNote;
    this.#onHoldNote = undefined;
    let served = 0;
    try {
      for (; served < rounds; served++) {
        const cmd = (served & 1) === 0 ? TCP_REPAIR_ON : TCP_REPAIR_OFF_NO_WP;
        const count = served % fullEvery === 0 ? SCM_MAX_FD : 1;
        if (peer.send(cmd & 0xff, count) !== 1) break;
        if (this.step() !== null || peer.receiveReply() !== 1) break;
      }
    } catch (e) {
      // A refused switch: step() has closed what it received
      if (!(e instanceof PasstRepairError)) throw e;
    } finally {
      this.#onHoldNote = noteObserver;
      this.#commands = 0;
    }
    return served;
  }

  /**
   * setsockopt(TCP_REPAIR) on fds[0..n) in order, each followed by its hold
   * (ON) or release (OFF, OFF_NO_WP), stopping at the first failure: n when
   * all succeeded, else the failed position (errno in #errno)
   */
  #switchAll(cmd: number, n: number): number {
    const native = this.#native;
    const fds = this.#fds;
    const hold = this.#hold;
    hold?.begin();
    for (let i = 0; i < n; i++) {
      const fd = fds[i]!;
      const rc = native.setTcpRepair(fd, cmd);
      if (rc < 0) {
        this.#errno = -rc;
        this.#holdFailed = false;
        return i;
      }
      if (hold !== null) {
        const h = cmd === TCP_REPAIR_ON ? hold.hold(fd) : hold.release(fd);
        if (h < 0) {
          this.#errno = -h;
          this.#holdFailed = true;
          return i;
        }
      }
    }
    return n;
  }

  /**
   * Closes fds[0..n). The kernel gives a message's descriptors the lowest
   * free numbers, in order, so they usually run on (7, 8, 9, ...): each such
   * run is closed by one close_range(), which for 253 descriptors takes
   * about a third of the time of 253 close() calls (docs/performance.md).
   * A run holds exactly the numbers between its ends, so nothing else is
   * closed. Where close_range() fails (an older kernel or libc), it closed
   * nothing, and from then on each descriptor is closed on its own.
   */
  #closeAll(n: number): void {
    const native = this.#native;
    const fds = this.#fds;
    let i = 0;
    while (i < n) {
      let end = i + 1;
      while (end < n && fds[end] === fds[end - 1]! + 1) end++;
      if (end - i > 1 && this.#closeRanges) {
        if (native.closeRange(fds[i]!, fds[end - 1]!) === 0) {
          i = end;
          continue;
        }
        this.#closeRanges = false;
      }
      for (; i < end; i++) native.close(fds[i]!);
    }
  }
}

/** "Setting TCP_REPAIR to ON failed for socket 2 of 3 (fd 7): ..." */
export function repairFailure(
  cmd: number,
  index: number,
  count: number,
  fd: number,
  errno: number,
  capable?: boolean,
): PasstRepairError {
  const hint = errno === EPERM ? epermHint(capable) : "";
  return new SyscallError(
    "setsockopt",
    errno,
    `Setting TCP_REPAIR to ${commandName(cmd)} (${cmd}) failed for socket ${
      index + 1
    } of ${count} (fd ${fd})`,
    hint,
  );
}

/**
 * "Holding the input of socket 2 of 3 (fd 8) in repair mode failed at
 * setsockopt(SO_ATTACH_BPF): ...", or "Releasing ..." for OFF and OFF_NO_WP
 */
export function holdFailure(
  cmd: number,
  index: number,
  count: number,
  fd: number,
  errno: number,
  call: string,
  afterReply = false,
): PasstRepairError {
  const what = cmd === TCP_REPAIR_ON
    ? afterReply ? "Recording the hold of the input" : "Holding the input"
    : "Releasing the input";
  const syscall = call.startsWith("getsockopt") ? "getsockopt" : "setsockopt";
  return new SyscallError(
    syscall,
    errno,
    `${what} of socket ${index + 1} of ${count} (fd ${fd}) after TCP_REPAIR ${
      commandName(cmd)
    } (${cmd}) failed at ${call}`,
    afterReply ? "the reply was sent; the filters not recorded were taken off again" : "",
  );
}
