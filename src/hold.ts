// Holding a socket's input while it is in repair mode (README, "Holding
// input"; passt-repair(1), our extension of the protocol).
//
// passt dumps a socket's receive queue and only then reads its sequence
// number. A socket in repair mode still accepts segments, so one that lands in
// between is counted in the sequence but missing from the dump: lost for good.
// While a socket is in repair mode because of us, a socket filter that drops
// every packet keeps anything from landing; the peer, never acknowledged,
// retransmits later, to the socket that then owns the connection.
//
// This module decides what to do with each socket and keeps the books; the
// kernel is reached through HoldNative (src/ffi/libc.ts, faked in the unit
// tests). The rules:
//   - ON: a socket without a filter gets ours; one that has a filter of its
//     own keeps it, and its input is not held.
//   - OFF, OFF_NO_WP: only a socket we held loses the filter, and only if the
//     filter there still looks like ours. We never remove a filter we did not
//     put there: the sockets we held are recorded by SO_COOKIE, which is
//     unique per socket and never reused, unlike a descriptor number.
//   - The per-message path allocates nothing: the books are typed arrays,
//     grown (doubled) only when more sockets are held at once than ever.
// The cookies of the sockets held by a message are read after the reply:
// the filter must be in place before passt hears back, the record need not.

import { SCM_MAX_FD } from "./abi.ts";
import { describeErrno } from "./errors.ts";

const EACCES = 13;

/** Which drop filter this process attaches */
export type HoldKind = "ebpf" | "classic";

/**
 * The eBPF program, loaded once at startup where the process may load one
 * (root or CAP_BPF): `r0 = 0; exit`, which keeps no byte of any packet.
 */
export const EBPF_DROP_PROGRAM = ebpf([
  [0xb7, 0, 0, 0], // BPF_ALU64 | BPF_MOV | BPF_K: r0 = 0
  [0x95, 0, 0, 0], // BPF_JMP | BPF_EXIT
]);

/**
 * The classic filter, attached (and so compiled) per socket where no eBPF
 * program could be loaded: `ret #0`
 */
export const CLASSIC_DROP_FILTER = classic([
  [0x06, 0, 0, 0], // BPF_RET | BPF_K, k = 0
]);

/** struct bpf_insn[] from [code, dst_reg | src_reg << 4, off, imm] */
function ebpf(insns: ReadonlyArray<readonly [number, number, number, number]>): Uint8Array {
  const out = new Uint8Array(insns.length * 8);
  const view = new DataView(out.buffer);
  insns.forEach(([code, regs, off, imm], i) => {
    view.setUint8(i * 8, code);
    view.setUint8(i * 8 + 1, regs);
    view.setInt16(i * 8 + 2, off, true);
    view.setInt32(i * 8 + 4, imm, true);
  });
  return out;
}

/** struct sock_filter[] from [code, jt, jf, k] */
function classic(insns: ReadonlyArray<readonly [number, number, number, number]>): Uint8Array {
  const out = new Uint8Array(insns.length * 8);
  const view = new DataView(out.buffer);
  insns.forEach(([code, jt, jf, k], i) => {
    view.setUint16(i * 8, code, true);
    view.setUint8(i * 8 + 2, jt);
    view.setUint8(i * 8 + 3, jf);
    view.setUint32(i * 8 + 4, k >>> 0, true);
  });
  return out;
}

/** Name given to the eBPF program (bpftool shows it) */
export const EBPF_PROGRAM_NAME = "passt_repair";

/**
 * What SO_GET_FILTER answers for our own filter: -EACCES for any eBPF
 * program (it has no classic original to copy out), the number of
 * instructions for a classic one
 */
export function holdSignature(kind: HoldKind): number {
  return kind === "ebpf" ? -EACCES : CLASSIC_DROP_FILTER.length / 8;
}

/** The native operations the hold needs; each returns -errno on failure */
export interface HoldNative {
  /** Which filter attachHold() attaches */
  readonly holdKind: HoldKind;
  /**
   * getsockopt(SO_GET_FILTER) with optlen 0: the instructions of the
   * socket's classic filter, 0 if it has none, -EACCES if it has an eBPF one
   */
  filterLength(fd: number): number;
  /** getsockopt(SO_COOKIE): the socket's cookie (exact below 2^53) */
  socketCookie(fd: number): number;
  /** Attaches our drop filter (SO_ATTACH_BPF or SO_ATTACH_FILTER): 0 */
  attachHold(fd: number): number;
  /** SO_DETACH_FILTER: 0 */
  detachHold(fd: number): number;
}

/** What hold() or release() did with a socket, when it did not fail */
export const HoldOutcome = {
  /** ON: the filter is in place; OFF: it is removed */
  DONE: 0,
  /** ON: the socket has a filter of its own, left as it is, input not held */
  OWN_FILTER: 1,
  /** OFF: this helper did not hold the socket; nothing removed */
  NOT_HELD: 2,
  /** OFF: a filter that is not ours replaced ours; left as it is */
  REPLACED: 3,
  /** OFF: our filter was already gone; nothing to remove */
  GONE: 4,
} as const;
export type HoldOutcome = typeof HoldOutcome[keyof typeof HoldOutcome];

/**
 * A set of socket cookies: open addressing with linear probing over a
 * Float64Array (a cookie is a u64 below 2^53, exact in a double), at most
 * half full. Adding, finding and removing allocate nothing; only growing
 * past the largest size seen does.
 */
export class CookieSet {
  #slots: Float64Array;
  #bits: number;
  #size = 0;

  /** Room for `capacity` cookies before the first growth */
  constructor(capacity = 512) {
    this.#bits = Math.max(4, Math.ceil(Math.log2(Math.max(1, capacity) * 2)));
    this.#slots = new Float64Array(1 << this.#bits).fill(EMPTY);
  }

  get size(): number {
    return this.#size;
  }

  /** Slots in the table (for tests: growth happens only when needed) */
  get slots(): number {
    return this.#slots.length;
  }

  has(cookie: number): boolean {
    return cookie >= 0 && this.#slots[this.#find(cookie)] === cookie;
  }

  add(cookie: number): void {
    checkCookie(cookie);
    const at = this.#find(cookie);
    if (this.#slots[at] === cookie) return;
    this.#slots[at] = cookie;
    this.#size++;
    if (this.#size * 2 > this.#slots.length) this.#grow();
  }

  /** Removes `cookie`; whether it was there */
  delete(cookie: number): boolean {
    const slots = this.#slots;
    const mask = slots.length - 1;
    let hole = this.#find(cookie);
    if (slots[hole] !== cookie) return false;
    // Backward-shift deletion: move later members of the run into the hole
    // when their home slot does not lie (cyclically) between hole and them
    let next = (hole + 1) & mask;
    while (slots[next] !== EMPTY) {
      const home = this.#home(slots[next]!);
      if (((next - home) & mask) >= ((next - hole) & mask)) {
        slots[hole] = slots[next]!;
        hole = next;
      }
      next = (next + 1) & mask;
    }
    slots[hole] = EMPTY;
    this.#size--;
    return true;
  }

  // The slot that holds `cookie`, or the empty slot where it would go
  #find(cookie: number): number {
    const slots = this.#slots;
    const mask = slots.length - 1;
    let at = this.#home(cookie);
    while (slots[at] !== EMPTY && slots[at] !== cookie) at = (at + 1) & mask;
    return at;
  }

  #home(cookie: number): number {
    // Fibonacci hashing of both halves: cookies come in runs of neighbours
    const lo = cookie >>> 0;
    const hi = (cookie / 4294967296) >>> 0;
    return Math.imul(lo ^ Math.imul(hi, 0x85ebca6b), 0x9e3779b1) >>> (32 - this.#bits);
  }

  #grow(): void {
    const old = this.#slots;
    this.#bits++;
    this.#slots = new Float64Array(1 << this.#bits).fill(EMPTY);
    for (let i = 0; i < old.length; i++) {
      const c = old[i]!;
      if (c !== EMPTY) this.#slots[this.#find(c)] = c;
    }
  }
}

const EMPTY = -1;

function checkCookie(cookie: number): void {
  if (!Number.isSafeInteger(cookie) || cookie < 0) {
    throw new RangeError(`not a socket cookie: ${cookie}`);
  }
}

/**
 * The hold of one connection to passt. Per message: begin(), then hold() or
 * release() for each socket in order (right after its TCP_REPAIR switch),
 * then, once the reply is sent, commit(); on a failed message, abandon().
 */
export class InputHold {
  readonly #native: HoldNative;
  readonly #signature: number;
  readonly #attachCall: string;
  readonly #held: CookieSet;
  // Sockets given our filter by this message, recorded by commit()
  readonly #pendingFd = new Int32Array(SCM_MAX_FD + 1);
  readonly #pendingAt = new Int32Array(SCM_MAX_FD + 1);
  #pending = 0;
  // Sockets left as they were, for --verbose
  readonly #noteAt = new Int32Array(SCM_MAX_FD + 1);
  readonly #noteOutcome = new Int32Array(SCM_MAX_FD + 1);
  readonly #noteFilter = new Int32Array(SCM_MAX_FD + 1);
  #notes = 0;
  #position = 0;
  #failedCall = "";
  #failedAt = -1;

  constructor(native: HoldNative, capacity?: number) {
    this.#native = native;
    this.#signature = holdSignature(native.holdKind);
    this.#attachCall = native.holdKind === "ebpf"
      ? "setsockopt(SO_ATTACH_BPF)"
      : "setsockopt(SO_ATTACH_FILTER)";
    this.#held = new CookieSet(capacity);
  }

  /** Sockets held now (by their cookie) */
  get held(): number {
    return this.#held.size;
  }

  /** The call that failed last, e.g. "getsockopt(SO_COOKIE)" */
  get failedCall(): string {
    return this.#failedCall;
  }

  /** Position in the message of the socket commit() failed on */
  get failedAt(): number {
    return this.#failedAt;
  }

  /** Starts a message */
  begin(): void {
    this.#pending = 0;
    this.#notes = 0;
    this.#position = 0;
  }

  /** After TCP_REPAIR ON: DONE, OWN_FILTER, or -errno (see failedCall) */
  hold(fd: number): number {
    const at = this.#position++;
    const native = this.#native;
    const filter = native.filterLength(fd);
    if (filter === 0) {
      const r = native.attachHold(fd);
      if (r < 0) return this.#fail(this.#attachCall, r);
      if (this.#pending < this.#pendingFd.length) {
        this.#pendingFd[this.#pending] = fd;
        this.#pendingAt[this.#pending++] = at;
      }
      return HoldOutcome.DONE;
    }
    if (filter < 0 && filter !== -EACCES) return this.#fail("getsockopt(SO_GET_FILTER)", filter);
    // A filter is there already: ours, from an earlier ON, or its own
    const cookie = native.socketCookie(fd);
    if (cookie < 0) return this.#fail("getsockopt(SO_COOKIE)", cookie);
    if (filter === this.#signature && this.#held.has(cookie)) return HoldOutcome.DONE;
    return this.#note(at, HoldOutcome.OWN_FILTER, filter);
  }

  /** After TCP_REPAIR OFF or OFF_NO_WP: DONE, NOT_HELD, REPLACED, GONE or -errno */
  release(fd: number): number {
    const at = this.#position++;
    const native = this.#native;
    const cookie = native.socketCookie(fd);
    if (cookie < 0) return this.#fail("getsockopt(SO_COOKIE)", cookie);
    if (!this.#held.has(cookie)) return this.#note(at, HoldOutcome.NOT_HELD, 0);
    const filter = native.filterLength(fd);
    if (filter < 0 && filter !== -EACCES) return this.#fail("getsockopt(SO_GET_FILTER)", filter);
    if (filter !== this.#signature) {
      this.#held.delete(cookie);
      return this.#note(at, filter === 0 ? HoldOutcome.GONE : HoldOutcome.REPLACED, filter);
    }
    const r = native.detachHold(fd);
    if (r < 0) return this.#fail("setsockopt(SO_DETACH_FILTER)", r);
    this.#held.delete(cookie);
    return HoldOutcome.DONE;
  }

  /**
   * After the reply: records the sockets this message held. 0, or -errno
   * (failedCall, failedAt): then the filter of every socket not recorded is
   * taken off again, so that none of ours stays where no OFF can find it.
   */
  commit(): number {
    const native = this.#native;
    for (let k = 0; k < this.#pending; k++) {
      const cookie = native.socketCookie(this.#pendingFd[k]!);
      if (cookie < 0) {
        this.#failedAt = this.#pendingAt[k]!;
        this.#fail("getsockopt(SO_COOKIE)", cookie);
        for (let j = k; j < this.#pending; j++) native.detachHold(this.#pendingFd[j]!);
        this.#pending = 0;
        return cookie;
      }
      this.#held.add(cookie);
    }
    this.#pending = 0;
    return 0;
  }

  /** A failed message: takes our filter off the sockets it had just held */
  abandon(): void {
    for (let k = 0; k < this.#pending; k++) this.#native.detachHold(this.#pendingFd[k]!);
    this.#pending = 0;
  }

  /** Sockets of this message that were left as they were */
  get notes(): number {
    return this.#notes;
  }

  /** The k-th of them: its position, outcome and what SO_GET_FILTER said */
  note(k: number): { position: number; outcome: HoldOutcome; filter: number } {
    return {
      position: this.#noteAt[k]!,
      outcome: this.#noteOutcome[k]! as HoldOutcome,
      filter: this.#noteFilter[k]!,
    };
  }

  #note(at: number, outcome: HoldOutcome, filter: number): number {
    if (this.#notes < this.#noteAt.length) {
      this.#noteAt[this.#notes] = at;
      this.#noteOutcome[this.#notes] = outcome;
      this.#noteFilter[this.#notes++] = filter;
    }
    return outcome;
  }

  #fail(call: string, r: number): number {
    this.#failedCall = call;
    return r;
  }
}

/** "a classic filter of 4 instructions", "an eBPF program", for messages */
export function describeFilter(filter: number): string {
  if (filter === -EACCES) return "an eBPF program";
  if (filter > 0) return `a classic filter of ${filter} instruction${filter === 1 ? "" : "s"}`;
  return "no filter";
}

/** The --verbose line for a socket the hold left as it was */
export function describeHoldNote(
  command: string,
  note: { position: number; count: number; fd: number; outcome: HoldOutcome; filter: number },
): string {
  const which = `${command}: socket ${note.position + 1} of ${note.count} (fd ${note.fd})`;
  switch (note.outcome) {
    case HoldOutcome.OWN_FILTER:
      return `${which} has a socket filter of its own (${
        describeFilter(note.filter)
      }): left as it is, its input is not held`;
    case HoldOutcome.NOT_HELD:
      return `${which} was not held by this helper: no filter removed`;
    case HoldOutcome.REPLACED:
      return `${which} carries ${describeFilter(note.filter)} in place of ours: left as it is`;
    case HoldOutcome.GONE:
      return `${which} no longer had our filter: nothing to remove`;
    default:
      return `${which}: input held`;
  }
}

/** The --verbose line saying how (and whether) input is held */
export function describeDropFilter(
  filter: { readonly kind: HoldKind; readonly refusal: number } | null,
): string {
  if (filter === null) return "input hold: off (--no-hold)";
  if (filter.kind === "ebpf") {
    return "input hold: on; one eBPF socket filter loaded, attached to each socket " +
      "while it is in repair mode";
  }
  return "input hold: on; a classic socket filter attached to each socket while it is " +
    `in repair mode (loading an eBPF program was refused: ${
      describeErrno(filter.refusal)
    }; as root or with CAP_BPF the hold costs less)`;
}

/**
 * The hold tried once on a fresh socket of our own at start-up (attach, read
 * back, cookie, detach): null if every step works, else which failed and why.
 * A kernel without one of them (SO_COOKIE came in Linux 4.12) would fail
 * every ON message; better to serve without the hold and say so.
 */
export function tryHold(native: HoldNative, fd: number): string | null {
  const failed = (call: string, r: number) => `${call}: ${describeErrno(-r)}`;
  let r = native.filterLength(fd);
  if (r < 0) return failed("getsockopt(SO_GET_FILTER)", r);
  r = native.attachHold(fd);
  if (r < 0) {
    return failed(
      native.holdKind === "ebpf" ? "setsockopt(SO_ATTACH_BPF)" : "setsockopt(SO_ATTACH_FILTER)",
      r,
    );
  }
  r = native.filterLength(fd);
  if (r !== holdSignature(native.holdKind)) {
    return `getsockopt(SO_GET_FILTER) reads back ${describeFilter(r)} (${r}) for ours`;
  }
  r = native.socketCookie(fd);
  if (r < 0) return failed("getsockopt(SO_COOKIE)", r);
  r = native.detachHold(fd);
  if (r < 0) return failed("setsockopt(SO_DETACH_FILTER)", r);
  r = native.filterLength(fd);
  if (r !== 0) {
    return `getsockopt(SO_GET_FILTER) reads back ${describeFilter(r)} after SO_DETACH_FILTER`;
  }
  return null;
}
