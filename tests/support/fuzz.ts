// An adversarial peer: drives the real helper with random and malformed
// messages over many short connections and checks, for every message, the
// promise the helper makes (issue 4):
//
//   either it replies with the command byte and every socket of the batch is
//   in the commanded state, or it exits 1 without a reply, having touched no
//   socket after the one that failed (and none at all when the message was
//   malformed); it never dies of a signal or an uncaught exception, never
//   leaks a descriptor, never writes to stdout.
//
// Everything is decided by a seeded generator, so a failure names the seed
// and the connection that reproduce it (`deno task fuzz --seed S --only K`).
// The model of what the helper must do is kept per socket: a pool of real
// TCP sockets whose repair state the model predicts and getsockopt() checks
// after every reply and every exit. Sockets are often primed (by this
// process, which has CAP_NET_ADMIN) to the state opposite to the command, so
// that a socket the helper touched, or failed to touch, shows.
//
// What the kernel does to a sender's control data is part of the attack
// surface too: messages it refuses (a closed descriptor number, a header that
// overruns its buffer, more than 253 descriptors, an unknown SOL_SOCKET type)
// are sent, counted, and must change nothing; what it rewrites (credentials
// the helper did not ask for and control messages of other levels are
// dropped, split SCM_RIGHTS are merged, a ragged payload is cut to whole
// descriptors, an empty SCM_RIGHTS or a buffer shorter than a header is no
// control data at all) is predicted and checked like any other message.

import { SCM_CREDENTIALS, SCM_RIGHTS, SOL_SOCKET } from "../../src/abi.ts";
import { commandName } from "../../src/protocol.ts";
import {
  Helper,
  idle,
  OFF,
  OFF_NO_WP,
  ON,
  openDescriptors,
  REPLY_MS,
  Scratch,
  SECCOMP_KILL,
} from "./helper.ts";
import {
  acceptWithin,
  closeAll,
  closeFd,
  controlMessage,
  drainNow,
  isOpen,
  pipe,
  readReply,
  readSmallFile,
  repairState,
  rightsControl,
  sendRaw,
  setRepairDirect,
  shutdownWrite,
  tcpConnections,
  tcpListener,
  tcpSocket,
  udpSocket,
  unixListener,
  unixPair,
  waitFor,
} from "./peer_native.ts";

const EXIT_MS = 15000;
const EBADF = 9, EINVAL = 22, EPIPE = 32, ECONNRESET = 104;

// ---- the generator ----

/** sfc32, seeded through splitmix32: small, fast, and the same everywhere */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number) {
    let s = seed >>> 0;
    const split = () => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = split();
    this.#b = split();
    this.#c = split();
    this.#d = split();
    for (let i = 0; i < 12; i++) this.next();
  }

  /** A uniform 32-bit unsigned integer */
  next(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** An integer in lo..hi, both included */
  int(lo: number, hi: number): number {
    return lo + Math.floor((this.next() / 0x100000000) * (hi - lo + 1));
  }

  chance(p: number): boolean {
    return this.next() / 0x100000000 < p;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)]!;
  }

  /** A key of `weights`, with probability proportional to its weight */
  weighted<K extends string>(weights: Readonly<Record<K, number>>): K {
    const entries = Object.entries(weights) as [K, number][];
    let x = this.next() / 0x100000000 * entries.reduce((n, [, w]) => n + w, 0);
    for (const [k, w] of entries) {
      if ((x -= w) < 0) return k;
    }
    return entries.at(-1)![0];
  }

  bytes(n: number): Uint8Array {
    return Uint8Array.from({ length: n }, () => this.int(0, 255));
  }
}

/** The seed of connection k: independent of how earlier connections went */
function connectionSeed(seed: number, k: number): number {
  return (Math.imul(seed ^ 0x5bd1e995, 0x27d4eb2d) + Math.imul(k + 1, 0x165667b1)) >>> 0;
}

// ---- what a run is made of ----

/** How a connection ends */
export const ENDINGS = {
  // The peer goes away
  "close": 10, // after reading every reply: EOF, exit 0
  "shutdown": 5, // shutdown(SHUT_WR): EOF, exit 0
  "reset": 8, // reply left unread, then close: ECONNRESET, exit 0
  "close-mid-pipeline": 10, // several messages sent, closed before their replies
  "close-after-malformed": 4, // a malformed message, closed at once
  "empty": 3, // closed before sending anything
  // A message that must make the helper exit 1
  "no-control": 6, // a byte without control data
  "short-control": 3, // a control buffer shorter than one header
  "empty-rights": 3, // SCM_RIGHTS with no descriptors (the kernel drops it)
  "credentials-only": 4, // SCM_CREDENTIALS, which the helper never asked for
  "foreign-level-only": 4, // a control message of another level (dropped)
  "unsupported": 12, // a command byte other than 0x00, 0x01, 0xff
  "odd-in-batch": 18, // a pipe, UDP, AF_UNIX or listening TCP socket in the batch
  "extra-bytes": 6, // a valid message with more data bytes than one
  "extra-then-valid": 4, // ...followed by a message that must never be read
} as const;
type Ending = keyof typeof ENDINGS;

/** What a message in the middle of a connection is */
export const STEPS = {
  "valid": 60,
  "valid+credentials": 5,
  "valid+foreign-level": 5,
  "split-rights": 4,
  "ragged-rights": 3,
  "pipeline": 8,
  "closed-number": 3, // refused by our kernel: EBADF
  "overrun-header": 2, // EINVAL
  "short-header": 2, // EINVAL
  "too-many": 2, // more than 253 descriptors: EINVAL
  "unknown-type": 2, // SOL_SOCKET with an unknown type: EINVAL
  "bad-credentials": 1, // SCM_CREDENTIALS of the wrong size: EINVAL
  "zero-data": 3, // descriptors on 0 data bytes: nothing is sent
} as const;
type StepKind = keyof typeof STEPS;

/** Share of connections whose helper runs with a low RLIMIT_NOFILE (MSG_CTRUNC) */
const LOW_LIMIT_SHARE = 0.06;

interface ConnectionPlan {
  readonly index: number;
  readonly seed: number;
  readonly ending: Ending | "truncated";
  /** Messages to send, the ending's included */
  readonly budget: number;
  /** RLIMIT_NOFILE for the helper, or 0 for the default */
  readonly limit: number;
}

/** Plans every connection of a run from the seed alone */
export function planRun(seed: number, connections: number, messages: number): ConnectionPlan[] {
  const rng = new Rng(seed);
  // Every ending at least once when there are enough connections, at places
  // the seed picks; the rest drawn by weight
  const all: (Ending | "truncated")[] = [...Object.keys(ENDINGS) as Ending[], "truncated"];
  const forced = new Map<number, Ending | "truncated">();
  if (connections >= all.length) {
    for (const ending of all) {
      let at: number;
      do at = rng.int(0, connections - 1); while (forced.has(at));
      forced.set(at, ending);
    }
  }
  const drafts = Array.from({ length: connections }, (_, index) => {
    const ending = forced.get(index) ??
      (rng.chance(LOW_LIMIT_SHARE) ? "truncated" : rng.weighted(ENDINGS));
    const limit = ending === "truncated" ? rng.int(40, 100) : 0;
    return { index, ending, limit, weight: 0.5 + rng.next() / 0x100000000 };
  });
  const sharing = drafts.filter((d) => d.ending !== "empty");
  const total = sharing.reduce((n, d) => n + d.weight, 0);
  const budgets = new Map<number, number>();
  let given = 0;
  for (const d of sharing) {
    const b = Math.floor((messages * d.weight) / total);
    budgets.set(d.index, b);
    given += b;
  }
  for (let i = 0; given < messages && sharing.length > 0; i = (i + 1) % sharing.length) {
    const d = sharing[i]!;
    budgets.set(d.index, budgets.get(d.index)! + 1);
    given++;
  }
  return drafts.map((d) => ({
    index: d.index,
    seed: connectionSeed(seed, d.index),
    ending: d.ending,
    budget: budgets.get(d.index) ?? 0,
    limit: d.limit,
  }));
}

// ---- the sockets handed over, and the model of their state ----

interface Odd {
  readonly fd: number;
  readonly kind: string;
  /** What setsockopt(TCP_REPAIR) fails with on it */
  readonly errno: RegExp;
}

class Pool {
  /** Descriptors the helper may put in repair mode: TCP, connected or not */
  readonly fds: number[] = [];
  /** Predicted TCP_REPAIR state of each, by index in fds */
  readonly model: number[] = [];
  readonly odd: Odd[] = [];
  readonly #release: (() => void)[] = [];

  constructor() {
    for (const [family, n] of [[4, 110], [6, 90]] as const) {
      const c = tcpConnections(family, n);
      this.#release.push(() => c.close());
      this.fds.push(...c.local);
    }
    for (let i = 0; i < 60; i++) {
      const fd = tcpSocket(i % 2 === 0 ? 4 : 6);
      this.#release.push(() => closeFd(fd));
      this.fds.push(fd);
    }
    for (const fd of this.fds) this.model.push(repairState(fd));
    const oddOnes: [number[], string, RegExp][] = [
      [[udpSocket(4)], "UDP socket", /\((ENOPROTOOPT|EOPNOTSUPP)\)/],
      [[udpSocket(6)], "UDPv6 socket", /\((ENOPROTOOPT|EOPNOTSUPP)\)/],
      [pipe(), "pipe", /\(ENOTSOCK\)/],
      [unixPair(), "AF_UNIX stream socket", /\((EOPNOTSUPP|ENOPROTOOPT)\)/],
      [unixPair(2 /* SOCK_DGRAM */), "AF_UNIX datagram socket", /\((EOPNOTSUPP|ENOPROTOOPT)\)/],
      [[tcpListener(4).fd], "listening TCP socket", /\(EPERM\)/],
      [[tcpListener(6).fd], "listening TCPv6 socket", /\(EPERM\)/],
    ];
    for (const [fds, kind, errno] of oddOnes) {
      this.#release.push(() => closeAll(fds));
      for (const fd of fds) this.odd.push({ fd, kind, errno });
    }
  }

  close(): void {
    for (const release of this.#release.splice(0)) release();
  }

  /** Sets socket i to `state` from this process, so that a change shows */
  prime(i: number, state: number): void {
    if (this.model[i] === state) return;
    const r = setRepairDirect(this.fds[i]!, state === 1 ? ON : OFF_NO_WP);
    if (r < 0) throw new Error(`priming fd ${this.fds[i]} failed: ${-r}`);
    this.model[i] = state;
  }

  /** Throws if any socket is not in the state the model predicts */
  verify(where: string): void {
    for (let i = 0; i < this.fds.length; i++) {
      const actual = repairState(this.fds[i]!);
      if (actual !== this.model[i]) {
        throw new Violation(
          `${where}: socket ${i} (fd ${this.fds[i]}) has TCP_REPAIR ${actual}, expected ${
            this.model[i]
          }`,
        );
      }
    }
  }
}

/** A broken promise of the helper (or of the model: the message says which) */
export class Violation extends Error {}

/** The repair state a command leaves */
function stateOf(cmd: number): number {
  return cmd === ON ? 1 : 0;
}

// ---- building messages ----

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** SCM_RIGHTS, padded to CMSG_SPACE or cut to CMSG_LEN */
function rights(fds: readonly number[], padded: boolean): Uint8Array {
  const c = rightsControl(fds);
  return padded ? c : c.subarray(0, 16 + 4 * fds.length);
}

function ints(values: readonly number[]): Uint8Array {
  const b = new Uint8Array(values.length * 4);
  const v = new DataView(b.buffer);
  values.forEach((x, i) => v.setInt32(i * 4, x, true));
  return b;
}

/** This process's real credentials, as SCM_CREDENTIALS must carry them */
function ourCredentials(): Uint8Array {
  const status = readSmallFile("/proc/self/status") ?? "";
  const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  const gid = Number(/^Gid:\s+(\d+)/m.exec(status)?.[1] ?? 0);
  return ints([Deno.pid, uid, gid]);
}

// ---- one connection ----

/** What a run did, for the report */
export interface FuzzReport {
  seed: number;
  connections: number;
  /** sendmsg() calls made: every message, delivered or not */
  messages: number;
  /** ...that reached the helper */
  delivered: number;
  /** ...that the sending kernel refused (EBADF, EINVAL) */
  refusedBySender: number;
  /** ...that carried no data byte, so nothing was sent */
  emptySends: number;
  replies: number;
  /** Descriptors handed over in delivered messages */
  descriptors: number;
  /** Times the helper's descriptor table was compared with its first one */
  leakChecks: number;
  /** Helper exit statuses */
  exits: Record<string, number>;
  endings: Record<string, number>;
  steps: Record<string, number>;
  seconds: number;
}

function bump(counts: Record<string, number>, key: string, by = 1): void {
  counts[key] = (counts[key] ?? 0) + by;
}

class Connection {
  readonly #rng: Rng;
  readonly #pool: Pool;
  readonly #report: FuzzReport;
  readonly #plan: ConnectionPlan;
  readonly #creds: Uint8Array;
  readonly scratch = new Scratch();
  helper!: Helper;
  conn = -1;
  #baseline = new Map<number, string>();
  /** Descriptors the helper can still receive (RLIMIT_NOFILE sessions) */
  #free = Infinity;
  #sent = 0;
  #where = "";

  constructor(plan: ConnectionPlan, pool: Pool, report: FuzzReport, creds: Uint8Array) {
    this.#plan = plan;
    this.#rng = new Rng(plan.seed);
    this.#pool = pool;
    this.#report = report;
    this.#creds = creds;
  }

  async start(): Promise<void> {
    const path = this.scratch.path("passt.socket.repair");
    const listener = unixListener(path);
    const limit = this.#plan.limit;
    try {
      this.helper = new Helper([SECCOMP_KILL, path], {
        prefix: limit > 0 ? ["prlimit", `--nofile=${limit}:${limit}`] : [],
      });
      this.conn = acceptWithin(listener, 20000);
    } finally {
      closeFd(listener);
    }
    await idle(this.helper.pid);
    this.#baseline = openDescriptors(this.helper.pid);
    if (limit > 0) {
      let free = 0;
      for (let fd = 0; fd < limit; fd++) if (!this.#baseline.has(fd)) free++;
      this.#free = free;
    }
  }

  async close(): Promise<void> {
    if (this.conn >= 0) closeFd(this.conn);
    this.conn = -1;
    if (this.helper) {
      this.helper.kill();
      await this.helper.exit().catch(() => {});
    }
    this.scratch.cleanup();
  }

  #closeConn(): void {
    closeFd(this.conn);
    this.conn = -1;
  }

  async run(): Promise<void> {
    const plan = this.#plan;
    bump(this.#report.endings, plan.ending);
    // Messages the ending sends; the rest of the budget goes before it
    const pipelined = this.#rng.int(1, 6);
    const reserve = plan.ending === "close-mid-pipeline" ? pipelined : endingCost(plan.ending);
    while (this.#sent < plan.budget - reserve) {
      await this.#step(plan.budget - reserve - this.#sent);
    }
    await this.#checkLeaks();
    await this.#end(plan.ending, pipelined);
  }

  // -- sending, and what must follow --

  /** sendmsg(): counts it; returns the result */
  #send(data: Uint8Array, control: Uint8Array): number {
    this.#sent++;
    this.#report.messages++;
    return sendRaw(this.conn, data, control);
  }

  /** A message that must reach the helper */
  #deliver(data: Uint8Array, control: Uint8Array, descriptors: number): void {
    const r = this.#send(data, control);
    if (r !== data.length) {
      throw new Violation(
        `${this.#where}: sendmsg() returned ${r}, expected ${data.length} (model)`,
      );
    }
    this.#report.delivered++;
    this.#report.descriptors += descriptors;
  }

  /** A message our kernel must refuse with `errno`; nothing reaches the helper */
  #refused(data: Uint8Array, control: Uint8Array, errno: number): void {
    const r = this.#send(data, control);
    if (r !== -errno) {
      throw new Violation(`${this.#where}: sendmsg() returned ${r}, expected -${errno} (model)`);
    }
    this.#report.refusedBySender++;
  }

  /**
   * Waits for the reply to `cmd`, applies it to the model and, unless more
   * replies are in flight, checks the whole pool against the model
   */
  #expectReply(cmd: number, batch: readonly number[], verify = true): void {
    const got = readReply(this.conn, REPLY_MS);
    if (got !== cmd) {
      throw new Violation(`${this.#where}: expected the reply ${cmd}, got ${got}`);
    }
    this.#report.replies++;
    for (const i of batch) this.#pool.model[i] = stateOf(cmd);
    if (verify) this.#pool.verify(`${this.#where}, after the reply`);
  }

  /**
   * Expects the helper to end without a reply: exit status in `codes`,
   * nothing on stdout, stderr exactly one line matching `line` (or empty
   * when `line` is null), and the pool as the model says.
   */
  async #expectExit(
    codes: readonly number[],
    line: RegExp | null,
    readFirst = true,
  ): Promise<void> {
    if (readFirst) {
      const got = readReply(this.conn, REPLY_MS);
      if (got !== "eof" && got !== "reset") {
        throw new Violation(
          `${this.#where}: expected the helper to exit without a reply, got ${got}`,
        );
      }
    }
    const out = await this.helper.exit(EXIT_MS);
    bump(this.#report.exits, out.signal ? `signal ${out.signal}` : `exit ${out.code}`);
    const what = `${this.#where}: helper ended with ${out.signal ?? out.code}, stderr ${
      JSON.stringify(out.stderr)
    }`;
    if (out.signal !== null) throw new Violation(`${what}: killed by a signal`);
    if (out.stdout !== "") {
      throw new Violation(`${what}: wrote to stdout ${JSON.stringify(out.stdout)}`);
    }
    if (!codes.includes(out.code)) {
      throw new Violation(`${what}: expected exit ${codes.join(" or ")}`);
    }
    if (line === null || out.code === 0) {
      if (out.stderr !== "") throw new Violation(`${what}: expected a silent exit`);
    } else {
      const lines = out.stderr.split("\n");
      if (lines.length !== 2 || lines[1] !== "" || !line.test(lines[0]!)) {
        throw new Violation(`${what}: expected one line matching ${line}`);
      }
    }
    this.#pool.verify(`${this.#where}, after the exit`);
  }

  /** The helper holds exactly the descriptors it held when it connected */
  async #checkLeaks(): Promise<void> {
    await idle(this.helper.pid);
    const now = openDescriptors(this.helper.pid);
    const same = now.size === this.#baseline.size &&
      [...now].every(([fd, target]) => this.#baseline.get(fd) === target);
    if (!same) {
      throw new Violation(
        `${this.#where}: the helper's descriptors changed: ${
          JSON.stringify([...this.#baseline])
        } -> ${JSON.stringify([...now])}`,
      );
    }
    const stray = drainNow(this.conn);
    if (stray.length > 0) throw new Violation(`${this.#where}: stray bytes ${stray}`);
    this.#report.leakChecks++;
  }

  // -- choosing --

  #command(): number {
    return this.#rng.pick([ON, OFF, OFF_NO_WP]);
  }

  #batchSize(max = 253): number {
    const rng = this.#rng;
    const cap = Math.min(max, this.#free === Infinity ? 253 : this.#free);
    const size = rng.weighted({ one: 40, few: 25, some: 20, many: 10, full: 5 });
    const n = size === "one"
      ? 1
      : size === "few"
      ? rng.int(2, 8)
      : size === "some"
      ? rng.int(9, 64)
      : size === "many"
      ? rng.int(65, 252)
      : 253;
    return Math.max(1, Math.min(n, cap));
  }

  /** n pool indices (with repeats); often primed opposite to `cmd` so that changes show */
  #batch(n: number, cmd: number, prime = this.#rng.chance(0.7)): number[] {
    const batch = Array.from({ length: n }, () => this.#rng.int(0, this.#pool.fds.length - 1));
    if (prime) { for (const i of batch) this.#pool.prime(i, 1 - stateOf(cmd)); }
    return batch;
  }

  #fds(batch: readonly number[]): number[] {
    return batch.map((i) => this.#pool.fds[i]!);
  }

  #foreignLevel(): Uint8Array {
    const rng = this.#rng;
    const level = rng.pick([0, 6, 17, 41, 0x1234, -1]);
    return controlMessage(level, rng.int(-5, 300), rng.bytes(rng.int(0, 24)));
  }

  // -- the middle of a connection --

  async #step(room: number): Promise<void> {
    const rng = this.#rng;
    let kind: StepKind = rng.weighted(STEPS);
    if (kind === "pipeline" && room < 2) kind = "valid";
    bump(this.#report.steps, kind);
    this.#where = `message ${this.#sent + 1} (${kind})`;
    const cmd = this.#command();
    const byte = new Uint8Array([cmd & 0xff]);
    switch (kind) {
      case "valid": {
        const batch = this.#batch(this.#batchSize(), cmd);
        this.#deliver(byte, rights(this.#fds(batch), rng.chance(0.5)), batch.length);
        this.#expectReply(cmd, batch);
        break;
      }
      case "valid+credentials":
      case "valid+foreign-level": {
        const batch = this.#batch(this.#batchSize(), cmd);
        const extra = kind === "valid+credentials"
          ? controlMessage(SOL_SOCKET, SCM_CREDENTIALS, this.#creds)
          : this.#foreignLevel();
        const r = rights(this.#fds(batch), true);
        this.#deliver(byte, rng.chance(0.5) ? concat(extra, r) : concat(r, extra), batch.length);
        // The kernel drops both: the helper sees one SCM_RIGHTS
        this.#expectReply(cmd, batch);
        break;
      }
      case "split-rights": {
        // Several SCM_RIGHTS in one message arrive merged into one
        const total = Math.max(2, this.#batchSize());
        const batch = this.#batch(total, cmd);
        const cut = rng.int(1, batch.length - 1);
        const parts = [batch.slice(0, cut), batch.slice(cut)];
        this.#deliver(byte, concat(...parts.map((p) => rights(this.#fds(p), true))), batch.length);
        this.#expectReply(cmd, batch);
        break;
      }
      case "ragged-rights": {
        // A payload that is not whole descriptors: the kernel takes the whole ones
        const batch = this.#batch(this.#batchSize(252), cmd);
        const payload = concat(ints(this.#fds(batch)), rng.bytes(rng.int(1, 3)));
        this.#deliver(byte, controlMessage(SOL_SOCKET, SCM_RIGHTS, payload), batch.length);
        this.#expectReply(cmd, batch);
        break;
      }
      case "pipeline": {
        const k = rng.int(2, Math.min(8, room));
        const sent: [number, number[]][] = [];
        for (let j = 0; j < k; j++) {
          const c = this.#command();
          const batch = this.#batch(this.#batchSize(32), c, false);
          this.#deliver(new Uint8Array([c & 0xff]), rights(this.#fds(batch), true), batch.length);
          sent.push([c, batch]);
        }
        // The helper may be several messages ahead of the replies we read:
        // the pool is checked once every reply is in, against all of them in order
        sent.forEach(([c, batch], j) => this.#expectReply(c, batch, j === sent.length - 1));
        break;
      }
      case "closed-number": {
        const closed = tcpSocket(4);
        closeFd(closed);
        if (isOpen(closed)) throw new Error("a closed number was reused at once");
        const batch = this.#fds(this.#batch(this.#batchSize(252), cmd, false));
        batch.splice(rng.int(0, batch.length), 0, closed);
        this.#refused(byte, rights(batch, true), EBADF);
        break;
      }
      case "overrun-header":
      case "short-header": {
        const c = rights(this.#fds(this.#batch(this.#batchSize(), cmd, false)), true);
        const len = kind === "overrun-header"
          ? rng.int(c.length + 1, c.length + 4096)
          : rng.int(0, 15);
        new DataView(c.buffer, c.byteOffset).setBigUint64(0, BigInt(len), true);
        this.#refused(byte, c, EINVAL);
        break;
      }
      case "too-many": {
        const batch = this.#fds(this.#batch(rng.int(254, 300), cmd, false));
        // One SCM_RIGHTS above the limit, or two that add up above it
        const cut = rng.int(100, 153);
        const c = rng.chance(0.5)
          ? rights(batch, true)
          : concat(rights(batch.slice(0, cut), true), rights(batch.slice(cut), true));
        this.#refused(byte, c, EINVAL);
        break;
      }
      case "unknown-type": {
        const type = rng.pick([0, 3, 4, 5, 0x55, 0x7fffffff, -1]);
        this.#refused(byte, controlMessage(SOL_SOCKET, type, rng.bytes(rng.int(0, 16))), EINVAL);
        break;
      }
      case "bad-credentials": {
        const size = rng.pick([0, 4, 8, 11, 13, 16]);
        this.#refused(byte, controlMessage(SOL_SOCKET, SCM_CREDENTIALS, rng.bytes(size)), EINVAL);
        break;
      }
      case "zero-data": {
        const batch = this.#fds(this.#batch(this.#batchSize(), cmd, false));
        const r = this.#send(new Uint8Array(0), rights(batch, true));
        if (r !== 0) throw new Violation(`${this.#where}: sendmsg() of 0 bytes returned ${r}`);
        this.#report.emptySends++;
        break;
      }
    }
    if (rng.chance(0.08)) await this.#checkLeaks();
  }

  // -- the end of a connection --

  async #end(ending: Ending | "truncated", pipelined: number): Promise<void> {
    const rng = this.#rng;
    this.#where = `ending ${ending} (message ${this.#sent + 1})`;
    const cmd = this.#command();
    const byte = new Uint8Array([cmd & 0xff]);
    const noControl = /^No\/bad ancillary data from peer: no control data$/;
    switch (ending) {
      case "empty":
      case "close":
        this.#closeConn();
        return await this.#expectExit([0], null, false);
      case "shutdown":
        shutdownWrite(this.conn);
        return await this.#expectExit([0], null);
      case "reset": {
        const batch = this.#batch(this.#batchSize(), cmd);
        this.#deliver(byte, rights(this.#fds(batch), true), batch.length);
        if (!waitFor(this.conn, REPLY_MS)) throw new Violation(`${this.#where}: no reply`);
        // Closing with the reply unread: the helper sees ECONNRESET
        this.#closeConn();
        for (const i of batch) this.#pool.model[i] = stateOf(cmd);
        return await this.#expectExit([0], null, false);
      }
      case "close-mid-pipeline":
        return await this.#closeMidPipeline(pipelined);
      case "close-after-malformed": {
        const { data, control, line, descriptors } = this.#malformed();
        this.#deliver(data, control, descriptors);
        this.#closeConn();
        return await this.#expectExit([1], line, false);
      }
      case "no-control":
        this.#deliver(new Uint8Array([rng.int(0, 255)]), new Uint8Array(0), 0);
        return await this.#expectExit([1], noControl);
      case "short-control":
        this.#deliver(byte, rng.bytes(rng.int(1, 15)), 0);
        return await this.#expectExit([1], noControl);
      case "empty-rights":
        this.#deliver(byte, controlMessage(SOL_SOCKET, SCM_RIGHTS, new Uint8Array(0)), 0);
        return await this.#expectExit([1], noControl);
      case "credentials-only":
        this.#deliver(byte, controlMessage(SOL_SOCKET, SCM_CREDENTIALS, this.#creds), 0);
        return await this.#expectExit([1], noControl);
      case "foreign-level-only":
        this.#deliver(byte, this.#foreignLevel(), 0);
        return await this.#expectExit([1], noControl);
      case "unsupported":
      case "odd-in-batch": {
        const m = ending === "unsupported" ? this.#unsupported() : this.#oddInBatch();
        this.#deliver(m.data, m.control, m.descriptors);
        return await this.#expectExit([1], m.line);
      }
      case "extra-bytes":
      case "extra-then-valid": {
        const batch = this.#batch(this.#batchSize(), cmd);
        const data = concat(byte, rng.bytes(rng.int(1, 16)));
        // The second message's sockets: none of the first's, primed before
        // anything is sent (priming a socket the helper is switching would race)
        const c = this.#command();
        const inFirst = new Set(batch);
        const after = this.#batch(this.#batchSize(), c, false).filter((i) => !inFirst.has(i));
        if (after.length === 0) after.push(this.#pool.fds.findIndex((_, i) => !inFirst.has(i)));
        for (const i of after) this.#pool.prime(i, 1 - stateOf(c));
        this.#deliver(data, rights(this.#fds(batch), rng.chance(0.5)), batch.length);
        if (ending === "extra-then-valid") {
          // The helper may already be gone: then our kernel says so
          const r = this.#send(new Uint8Array([c & 0xff]), rights(this.#fds(after), true));
          if (r !== 1 && r !== -EPIPE && r !== -ECONNRESET) {
            throw new Violation(`${this.#where}: second sendmsg() returned ${r}`);
          }
          if (r === 1) this.#report.delivered++;
        }
        // The first byte is a command like any other; the next one has no control data
        this.#expectReply(cmd, batch);
        return await this.#expectExit([1], noControl);
      }
      case "truncated": {
        // More descriptors than the helper may hold: MSG_CTRUNC, nothing switched
        const n = Math.min(253, this.#free + rng.int(1, 60));
        if (n <= this.#free) {
          throw new Error(`RLIMIT_NOFILE ${this.#plan.limit} leaves ${this.#free} free`);
        }
        const batch = this.#batch(n, cmd, true);
        this.#deliver(byte, rights(this.#fds(batch), true), batch.length);
        return await this.#expectExit(
          [1],
          /^No\/bad ancillary data from peer: control data truncated by the kernel \(MSG_CTRUNC\)/,
        );
      }
    }
  }

  /** An unsupported command byte with a batch of good sockets: nothing may change */
  #unsupported(): { data: Uint8Array; control: Uint8Array; line: RegExp; descriptors: number } {
    const rng = this.#rng;
    let b = rng.int(2, 254);
    if (rng.chance(0.2)) b = rng.pick([2, 0x7f, 0x80, 0xfe]);
    const signed = (b << 24) >> 24;
    // Primed both ways: a helper that read the byte as ON or as OFF would show
    const batch = this.#batch(this.#batchSize(), rng.chance(0.5) ? ON : OFF, true);
    const hex = b.toString(16).padStart(2, "0");
    return {
      data: new Uint8Array([b]),
      control: rights(this.#fds(batch), rng.chance(0.5)),
      line: new RegExp(`^Unsupported command ${signed} \\(byte 0x${hex}\\) from peer$`),
      descriptors: batch.length,
    };
  }

  /**
   * A valid command whose batch holds descriptors that cannot be repaired:
   * the ones before the first of them are switched, none after.
   */
  #oddInBatch(): { data: Uint8Array; control: Uint8Array; line: RegExp; descriptors: number } {
    const rng = this.#rng;
    const cmd = this.#command();
    const n = Math.max(1, this.#batchSize(253));
    const batch = this.#batch(n, cmd, true);
    const fds = this.#fds(batch);
    const slots = Array.from({ length: rng.int(1, Math.min(3, n)) }, () => rng.int(0, n - 1));
    const odds = [...this.#pool.odd, {
      fd: this.conn,
      kind: "its own connection",
      errno: /\((EOPNOTSUPP|ENOPROTOOPT)\)/,
    }];
    let first = n;
    let firstOdd: Odd | null = null;
    for (const slot of new Set(slots)) {
      const odd = rng.pick(odds);
      fds[slot] = odd.fd;
      if (slot < first) {
        first = slot;
        firstOdd = odd;
      }
    }
    // Model: positions before the first odd one are switched, in order
    for (let p = 0; p < first; p++) {
      if (fds[p] === this.#pool.fds[batch[p]!]) this.#pool.model[batch[p]!] = stateOf(cmd);
    }
    const name = commandName(cmd);
    const errno = firstOdd!.errno.source;
    return {
      data: new Uint8Array([cmd & 0xff]),
      control: rights(fds, rng.chance(0.5)),
      line: new RegExp(
        `^Setting TCP_REPAIR to ${name} \\(${cmd}\\) failed for socket ${
          first + 1
        } of ${n} \\(fd \\d+\\): .*${errno}(; .*)?$`,
      ),
      descriptors: n,
    };
  }

  /** Any of the malformed messages, for closing right after it */
  #malformed(): { data: Uint8Array; control: Uint8Array; line: RegExp; descriptors: number } {
    const pick = this.#rng.int(0, 2);
    if (pick === 0) return this.#unsupported();
    if (pick === 1) return this.#oddInBatch();
    return {
      data: new Uint8Array([this.#rng.int(0, 255)]),
      control: new Uint8Array(0),
      line: /^No\/bad ancillary data from peer: no control data$/,
      descriptors: 0,
    };
  }

  /**
   * k messages on disjoint sockets, each primed opposite to its command, then
   * the connection closed before reading any reply. The helper must switch a
   * prefix of them (at least the first: it was queued before the close) and
   * nothing else: exit 0 if every reply went out, else exit 1 naming the
   * reply that failed. Which prefix depends on timing; the states tell it.
   */
  async #closeMidPipeline(k: number): Promise<void> {
    const rng = this.#rng;
    const used = new Set<number>();
    const sent: [number, number[]][] = [];
    for (let j = 0; j < k; j++) {
      const cmd = this.#command();
      const batch: number[] = [];
      const want = this.#batchSize(40);
      for (let tries = 0; batch.length < want && tries < 400; tries++) {
        const i = rng.int(0, this.#pool.fds.length - 1);
        if (used.has(i)) continue;
        used.add(i);
        batch.push(i);
        this.#pool.prime(i, 1 - stateOf(cmd));
      }
      if (batch.length === 0) break;
      this.#deliver(new Uint8Array([cmd & 0xff]), rights(this.#fds(batch), true), batch.length);
      sent.push([cmd, batch]);
    }
    this.#closeConn();
    const out = await this.helper.exit(EXIT_MS);
    bump(this.#report.exits, out.signal ? `signal ${out.signal}` : `exit ${out.code}`);
    const what = `${this.#where}: helper ended with ${out.signal ?? out.code}, stderr ${
      JSON.stringify(out.stderr)
    }`;
    if (out.signal !== null || out.stdout !== "") throw new Violation(`${what}: signal or stdout`);
    // Which messages were carried out: all of a message's sockets, or none
    const done = sent.map(([cmd, batch]) => {
      const switched = batch.filter((i) => repairState(this.#pool.fds[i]!) === stateOf(cmd)).length;
      if (switched !== 0 && switched !== batch.length) {
        throw new Violation(
          `${what}: ${switched} of ${batch.length} sockets of one message switched`,
        );
      }
      return switched === batch.length;
    });
    const prefix = done.indexOf(false) === -1 ? done.length : done.indexOf(false);
    if (prefix === 0) {
      throw new Violation(
        `${what}: the first message, queued before the close, was not carried out`,
      );
    }
    if (done.slice(prefix).some((d) => d)) {
      throw new Violation(`${what}: messages carried out after one that was not`);
    }
    if (out.code === 1) {
      if (!/^Reply to (ON|OFF|OFF_NO_WP) failed: .*\((EPIPE|ECONNRESET)\)\n$/.test(out.stderr)) {
        throw new Violation(`${what}: expected one line about the failed reply`);
      }
    } else if (out.code !== 0 || out.stderr !== "" || prefix !== sent.length) {
      throw new Violation(`${what}: exit 0 must be silent and come after every message`);
    }
    for (const [cmd, batch] of sent.slice(0, prefix)) {
      for (const i of batch) this.#pool.model[i] = stateOf(cmd);
    }
    this.#pool.verify(`${this.#where}, after the exit`);
  }
}

/** Messages an ending sends */
function endingCost(ending: Ending | "truncated"): number {
  switch (ending) {
    case "close":
    case "shutdown":
    case "empty":
      return 0;
    case "extra-then-valid":
      return 2;
    default:
      return 1;
  }
}

export interface FuzzOptions {
  seed: number;
  connections: number;
  messages: number;
  /** Run only this connection of the plan */
  only?: number;
  /** Progress lines */
  log?: (line: string) => void;
}

/** Runs a campaign; throws a Violation naming the seed and connection on the first broken promise */
export async function fuzz(options: FuzzOptions): Promise<FuzzReport> {
  const { seed, connections, messages } = options;
  const started = performance.now();
  const plans = planRun(seed, connections, messages);
  const report: FuzzReport = {
    seed,
    connections: 0,
    messages: 0,
    delivered: 0,
    refusedBySender: 0,
    emptySends: 0,
    replies: 0,
    descriptors: 0,
    leakChecks: 0,
    exits: {},
    endings: {},
    steps: {},
    seconds: 0,
  };
  const pool = new Pool();
  const creds = ourCredentials();
  try {
    pool.verify("the pool before the run");
    for (const plan of plans) {
      if (options.only !== undefined && plan.index !== options.only) continue;
      const c = new Connection(plan, pool, report, creds);
      try {
        await c.start();
        await c.run();
      } catch (e) {
        const reproduce =
          `deno task fuzz --seed ${seed} --connections ${connections} --messages ${messages} --only ${plan.index}`;
        const message = e instanceof Error ? e.message : String(e);
        throw new Violation(
          `seed ${seed}, connection ${plan.index} (ending ${plan.ending}${
            plan.limit ? `, RLIMIT_NOFILE ${plan.limit}` : ""
          }): ${message}\nreproduce: ${reproduce}`,
        );
      } finally {
        await c.close();
      }
      report.connections++;
      if (options.log && report.connections % 50 === 0) {
        options.log(`${report.connections} connections, ${report.messages} messages`);
      }
    }
  } finally {
    pool.close();
  }
  report.seconds = Math.round((performance.now() - started) / 100) / 10;
  return report;
}

/** A few lines for humans */
export function describeReport(r: FuzzReport): string {
  const list = (o: Record<string, number>) =>
    Object.entries(o).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k} ${v}`).join(
      ", ",
    );
  return [
    `fuzz seed ${r.seed}: ${r.messages} messages over ${r.connections} connections in ${r.seconds} s`,
    `  delivered ${r.delivered} (${r.descriptors} descriptors), refused by the sender's kernel ${r.refusedBySender}, ` +
    `empty sends ${r.emptySends}, replies ${r.replies}, descriptor-table checks ${r.leakChecks}`,
    `  helper exits: ${list(r.exits)}`,
    `  endings: ${list(r.endings)}`,
    `  messages: ${list(r.steps)}`,
  ].join("\n");
}
