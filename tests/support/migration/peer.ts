// The event loop shared by the migration's two processes, "remote" and
// "passt": each holds one end of a TCP connection, writes its direction's known
// byte sequence, checks every byte it receives, and obeys one-line commands on
// stdin, answering each with one JSON line on stdout.
//
// The orchestrator (scenario.ts) drives both processes step by step through
// these commands, so "stop reading for a moment" is a command, not a timer,
// and every wait is on an event (poll) with a deadline the command carries.

import {
  closeSocket,
  EAGAIN,
  notSentBytes,
  POLLERR,
  POLLHUP,
  POLLIN,
  pollMany,
  POLLOUT,
  readInto,
  receiveNow,
  receiveQueueBytes,
  sendNow,
  sendQueueBytes,
  shutdownWrite,
  socketError,
  tcpDiagnostics,
} from "../repair_state.ts";
import { describeErrno } from "../../../src/errors.ts";
import { type Direction, StreamSource, StreamVerifier } from "./stream.ts";

/** One answer to one command; `ok: false` carries `error` */
export type Reply = { ok: boolean; [key: string]: unknown };

/** A command that answers later: when `until` returns a reply, or at the deadline */
export interface Wait {
  what: string;
  deadline: number;
  until: () => Reply | null;
}

export type Handler = (args: string[]) => Reply | Wait;

const STDIN = 0;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Writes one JSON line to stdout */
export function say(reply: Reply): void {
  const line = encoder.encode(JSON.stringify(reply) + "\n");
  for (let off = 0; off < line.length;) off += Deno.stdout.writeSync(line.subarray(off));
}

function isWait(x: Reply | Wait): x is Wait {
  return "until" in x;
}

export function wholeNumber(arg: string | undefined, what: string): number {
  const n = Number(arg);
  if (arg === undefined || !Number.isSafeInteger(n) || n < 0) {
    throw new Error(`${what} must be a whole number, got ${arg}`);
  }
  return n;
}

/** A deadline `ms` from now, from a command argument */
export function deadlineFrom(arg: string | undefined): number {
  return performance.now() + wholeNumber(arg, "timeout (ms)");
}

/** One end of the connection and the commands that drive it */
export class StreamEnd {
  /** The TCP socket; -1 until connected. The passt side replaces it when migrating */
  fd = -1;
  reading = true;
  readonly source: StreamSource;
  readonly verifier: StreamVerifier;
  /** Bytes to write before the source goes on: the unsent data carried by a migration */
  carry: Uint8Array = new Uint8Array(0);
  /** Whether the last send() found the socket full, with more to write */
  full = false;
  eof = false;
  finishing = false;
  finSent = false;
  error: string | null = null;
  readonly commands = new Map<string, Handler>();
  #quit = false;
  #input = "";
  #readBuf = new Uint8Array(1 << 18);

  constructor(sending: Direction, receiving: Direction) {
    this.source = new StreamSource(sending);
    this.verifier = new StreamVerifier(receiving);
    this.#commonCommands();
  }

  /** Totals and health, as the last line of most replies */
  status(): Reply {
    return {
      ok: this.error === null && this.verifier.firstMismatch === null,
      written: this.source.produced,
      requested: this.source.requested,
      received: this.verifier.received,
      ...(this.verifier.firstMismatch === null ? {} : { mismatchAt: this.verifier.firstMismatch }),
      eof: this.eof,
      ...(this.error === null ? {} : { error: this.error }),
    };
  }

  #outputPending(): boolean {
    return this.carry.length > 0 || this.source.pending > 0;
  }

  #failure(): Reply | null {
    if (this.error !== null) return { ...this.status(), ok: false };
    if (this.verifier.firstMismatch !== null) {
      return {
        ...this.status(),
        ok: false,
        error: `received byte ${this.verifier.firstMismatch} differs from the expected stream`,
      };
    }
    return null;
  }

  #commonCommands(): void {
    const c = this.commands;
    c.set("send", ([n]) => {
      this.source.requested += wholeNumber(n, "byte count");
      return { ok: true, requested: this.source.requested };
    });
    c.set("read", ([mode]) => {
      if (mode !== "on" && mode !== "off") throw new Error(`read on|off, got ${mode}`);
      this.reading = mode === "on";
      return { ok: true };
    });
    c.set("status", () => this.status());
    c.set("diagnose", () => {
      if (this.fd < 0) return { ...this.status(), socket: null };
      return {
        ...this.status(),
        ok: true,
        reading: this.reading,
        carry: this.carry.length,
        full: this.full,
        socket: {
          inq: receiveQueueBytes(this.fd),
          outq: sendQueueBytes(this.fd),
          notSent: notSentBytes(this.fd),
          ...tcpDiagnostics(this.fd),
        },
      };
    });
    c.set("wait-received", ([n, ms]) => {
      const want = wholeNumber(n, "byte count");
      return {
        what: `${want} bytes received`,
        deadline: deadlineFrom(ms),
        until: () => this.#failure() ?? (this.verifier.received >= want ? this.status() : null),
      };
    });
    c.set("wait-flushed", ([ms]) => ({
      what: "everything to be written",
      deadline: deadlineFrom(ms),
      until: () => this.#failure() ?? (this.#outputPending() ? null : this.status()),
    }));
    c.set("finish", ([ms]) => {
      this.finishing = true;
      this.reading = true;
      return {
        what: "everything written, our FIN sent and the peer's FIN received",
        deadline: deadlineFrom(ms),
        until: () => this.#failure() ?? (this.finSent && this.eof ? this.status() : null),
      };
    });
    c.set("quit", () => {
      this.#quit = true;
      return { ok: true };
    });
  }

  /** Writes as much as the socket takes now; true if it is full with more to write */
  fillUp(): boolean {
    if (this.fd >= 0 && this.error === null) this.#pumpOut();
    return this.full && this.#outputPending();
  }

  /** Writes as much as the socket takes now */
  #pumpOut(): void {
    while (this.#outputPending()) {
      const data = this.carry.length > 0 ? this.carry : this.source.next();
      const n = sendNow(this.fd, data);
      if (n === -EAGAIN) {
        this.full = true;
        return;
      }
      this.full = false;
      if (n < 0) {
        this.error = `send: ${describeErrno(-n)}`;
        return;
      }
      if (this.carry.length > 0) this.carry = this.carry.subarray(n);
      else this.source.advance(n);
    }
    if (this.finishing && !this.finSent) {
      shutdownWrite(this.fd);
      this.finSent = true;
    }
  }

  /** Reads and checks what is there now */
  #pumpIn(): void {
    for (let i = 0; i < 64; i++) {
      const n = receiveNow(this.fd, this.#readBuf);
      if (n === -EAGAIN) return;
      if (n < 0) {
        this.error = `recv: ${describeErrno(-n)}`;
        return;
      }
      if (n === 0) {
        this.eof = true;
        return;
      }
      this.verifier.accept(this.#readBuf.subarray(0, n));
    }
  }

  /** Handles every complete command line received so far, unless one is waiting */
  #handleLines(): Wait | null {
    for (;;) {
      const nl = this.#input.indexOf("\n");
      if (nl < 0) return null;
      const line = this.#input.slice(0, nl).trim();
      this.#input = this.#input.slice(nl + 1);
      if (line === "") continue;
      const [verb, ...args] = line.split(/\s+/);
      const handler = this.commands.get(verb!);
      let result: Reply | Wait;
      try {
        if (handler === undefined) throw new Error(`unknown command: ${verb}`);
        result = handler(args);
      } catch (e) {
        result = { ok: false, error: `${verb}: ${e instanceof Error ? e.message : String(e)}` };
      }
      if (isWait(result)) return result;
      say(result);
      if (this.#quit) return null;
    }
  }

  /** Runs until the "quit" command or the end of stdin */
  run(): void {
    let wait: Wait | null = null;
    let stdinOpen = true;
    const chunk = new Uint8Array(4096);
    while (!this.#quit) {
      if (wait !== null) {
        const done = wait.until();
        if (done !== null) {
          say(done);
          wait = null;
        } else if (performance.now() >= wait.deadline) {
          say({ ...this.status(), ok: false, error: `timed out waiting for ${wait.what}` });
          wait = null;
        }
      }
      if (wait === null) {
        wait = this.#handleLines();
        if (this.#quit) break;
        if (wait !== null) continue; // it may be satisfied already
        if (!stdinOpen) break;
      }
      const watched: Array<[number, number]> = [[wait === null ? STDIN : -1, POLLIN]];
      // after both FINs the socket only reports POLLHUP: stop watching it
      const tcp = this.fd >= 0 && this.error === null && !(this.eof && this.finSent);
      if (tcp) {
        const events = (this.reading && !this.eof ? POLLIN : 0) |
          (this.#outputPending() || (this.finishing && !this.finSent) ? POLLOUT : 0);
        watched.push([this.fd, events]);
      }
      const timeout = wait === null
        ? -1
        : Math.max(0, Math.ceil(wait.deadline - performance.now()));
      const revents = pollMany(watched, timeout);
      const tcpEvents = tcp ? revents[1] ?? 0 : 0;
      if (tcpEvents & POLLOUT) this.#pumpOut();
      if (tcpEvents & POLLIN) this.#pumpIn();
      if (tcpEvents & POLLERR) {
        const err = socketError(this.fd);
        this.error = `socket error: ${err === 0 ? "unknown" : describeErrno(err)}`;
      } else if ((tcpEvents & POLLHUP) && !(tcpEvents & POLLIN) && !this.eof) {
        this.error = "the connection hung up";
      }
      if ((revents[0] ?? 0) !== 0) {
        const n = readInto(STDIN, chunk);
        if (n <= 0) stdinOpen = false;
        else this.#input += decoder.decode(chunk.subarray(0, n), { stream: true });
      }
    }
    if (this.fd >= 0) closeSocket(this.fd);
  }
}

/** Runs `main`, reporting a failure to start as one JSON line and exit status 1 */
export function runRole(main: () => void): void {
  try {
    main();
  } catch (e) {
    say({ ok: false, error: e instanceof Error ? e.message : String(e) });
    Deno.exit(1);
  }
}
