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

import {
  CMSG_HDR_SIZE,
  CMSG_LEN_OFF,
  CMSG_LEVEL_OFF,
  CMSG_TYPE_OFF,
  cmsgLen,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SOL_SOCKET,
  TCP_REPAIR_OFF_NO_WP,
  TCP_REPAIR_ON,
} from "./abi.ts";
import { type PasstRepairError, SyscallError } from "./errors.ts";
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

const EINTR = 4;
const EPERM = 1;
const ECONNRESET = 104;

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
}

/**
 * How often prime() runs the per-message code by default. Measured with the
 * bench (first 253-socket message, median of 15 fresh helpers): 1.4-1.6 ms
 * without priming, about 0.87 ms after 10 or 20 rounds, 0.70 ms after 200;
 * each round costs about 0.3 ms of startup (253 setsockopt and close calls),
 * and startup is not on the migration's critical path, but it is not free
 * either.
 */
export const PRIME_ROUNDS = 20;

/** Observes each carried-out command (for --verbose) */
export type CommandObserver = (cmd: number, sockets: number, micros: number) => void;

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
  /** Called after each reply; when absent, no clock is read at all */
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
  readonly #options: SessionOptions;
  // Set up once and reused for every message: nothing is allocated per
  // message or per descriptor on the success path.
  readonly #fds = new Int32Array(SCM_MAX_FD + 1);
  readonly #found = new Int32Array(1);
  readonly #hold: InputHold | null;
  #commands = 0;
  // errno of the setsockopt() that #switchAll() stopped at
  #errno = 0;
  // Whether #switchAll() stopped at the hold rather than at TCP_REPAIR
  #holdFailed = false;

  constructor(native: RepairNative, options: SessionOptions = {}) {
    this.#native = native;
    this.#options = options;
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
    const t0 = this.#options.onCommand ? performance.now() : 0;
    if (r === 0) {
      this.#closeReceived(native);
      return "eof";
    }
    if (r === -ECONNRESET) return "reset";
    if (r < 0) throw new SyscallError("recvmsg", -r, "Failed to receive from peer");

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
        : repairFailure(cmd, done, n, fd, this.#errno, this.#options.capable);
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
    const micros = this.#options.onCommand ? Math.round((performance.now() - t0) * 1000) : 0;
    // Off the critical path too: which sockets the message held, by cookie
    const recorded = hold === null ? 0 : hold.commit();
    this.#closeAll(n);
    if (recorded < 0) {
      const at = hold!.failedAt;
      throw holdFailure(cmd, at, n, fds[at]!, -recorded, hold!.failedCall, true);
    }
    this.#commands++;
    this.#options.onCommand?.(cmd, n, micros);
    if (hold !== null && hold.notes > 0) this.#reportNotes(hold, cmd, n);
    return null;
  }

  #reportNotes(hold: InputHold, cmd: number, count: number): void {
    const observer = this.#options.onHoldNote;
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
   * Runs the per-message code that does not need passt (parsing a full
   * control message, switching and closing a full batch) `rounds` times, so
   * that the JIT has compiled it before the first real message, the one a
   * migration waits for. `spare` is a throwaway TCP socket of our own that
   * takes the switches; the closes go to descriptor -1 (EBADF, no effect).
   * Call it before connecting: it writes into the control buffer.
   */
  prime(spare: number, rounds = PRIME_ROUNDS): void {
    const native = this.#native;
    const control = native.control;
    const n = SCM_MAX_FD;
    control.setUint32(CMSG_LEN_OFF, cmsgLen(4 * n), true);
    control.setUint32(CMSG_LEN_OFF + 4, 0, true);
    control.setInt32(CMSG_LEVEL_OFF, SOL_SOCKET, true);
    control.setInt32(CMSG_TYPE_OFF, SCM_RIGHTS, true);
    for (let i = 0; i < n; i++) control.setInt32(CMSG_HDR_SIZE + 4 * i, spare, true);
    for (let r = 0; r < rounds; r++) {
      parseRights(control, cmsgLen(4 * n), 0, this.#fds, this.#found);
      const cmd = commandOf((r & 1) === 0 ? TCP_REPAIR_ON : TCP_REPAIR_OFF_NO_WP);
      if (isCommand(cmd)) this.#switchAll(cmd, this.#found[0]!);
      this.#fds.fill(-1);
      this.#closeAll(n);
    }
    control.setUint32(CMSG_LEN_OFF, 0, true);
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

  #closeAll(n: number): void {
    const native = this.#native;
    const fds = this.#fds;
    for (let i = 0; i < n; i++) native.close(fds[i]!);
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
