// The bench: the real helper, started with its real flags, against a fake
// passt, next to two C reference helpers and the bare system calls.
//
//   deno task bench [--samples N] [--warmup N] [--cold N] [--passes N] [--pool N]
//                   [--hold-samples N]
//
// which is
//
//   DENO_NO_UPDATE_CHECK=1 deno run --allow-ffi --allow-run --allow-read \
//     --allow-write --allow-env=PASST_REPAIR_BIN bench/bench.ts
//
// Needs root (or CAP_NET_ADMIN), gcc and taskset (util-linux); takes well under a minute with the
// defaults. What it compares (docs/performance.md):
//
// - ours: the helper as operators run it, installed by `deno task install`
//   (into a private prefix: the launcher, the bundle and Deno), or
//   `$PASST_REPAIR_BIN PATH` to bench another build. The startup rows also
//   give the checkout's `deno run --allow-ffi main.ts PATH` (the module graph
//   of main.ts and src/ costs a few ms and MB more than the one bundle);
// - C, reply first (bench/c/ref_helper.c): exactly our system calls in our
//   order. This is the floor the targets are stated against;
// - C, close first: the same in the C original's order (each descriptor closed
//   right after its setsockopt, the reply at the end);
// - syscalls alone (bench/c/syscall_floor.c): every system call of a round
//   trip, passt's and the helper's, made by one C process on the same sockets,
//   timed up to the reply: the kernel's work with no wake-up, no context
//   switch, no second process. It is a lower bound, not a target: the gap to
//   it is the price of being a separate process (two wake-ups per message),
//   which the C helpers pay too;
// - bare Deno (bench/bare_connect.ts): a Deno script that only connects to a
//   UNIX socket, the yardstick for start to connected and peak RSS.
//
// A first table states startup against bare Deno (start to connected, peak
// RSS once connected and idle) and the first command after a connected
// helper has idled 2 s against the reply-first C helper after the same idle,
// for 1 and for 253 sockets: a migration's first command comes long after
// the helper connected. That figure is given three times: with the helper
// left where the scheduler puts it, and pinned to the CPU the bench plays
// passt on or to another one (see PLACEMENTS).
//
// Helpers are started through bench/c/launcher.c, which gives each the
// smallest descriptor table (as from a shell) rather than the bench's, sized
// for thousands of sockets: the cold first message then pays for growing the
// table where the helper did not grow it beforehand. All helpers of the
// steady-state part are connected at once and served in turn, message by
// message, so that the machine's noise falls on all of them alike. Every reply
// is checked, and the repair state of three sockets of every batch (all of
// them after every block) is read back; a run with any discrepancy prints why
// and no figures. Commands alternate between ON and OFF_NO_WP, so that every
// message changes the state it is checked for (OFF sends a window probe per
// socket, which passt sends only one socket at a time).
//
// The comparison with the C helpers runs ours with --no-hold: they do not
// hold input, and the targets are about doing the same work as fast. What
// the input hold costs is measured on its own, last: ON (and OFF_NO_WP) of 1
// and 253 sockets by ours with and without the hold, as root (one eBPF
// program) and with only CAP_NET_ADMIN (a classic filter per socket). There
// each helper sends ON and OFF_NO_WP back to back: only the helper that held
// a socket releases it.

import { parseArgs } from "node:util";
import { TCP_REPAIR_OFF_NO_WP, TCP_REPAIR_ON } from "../src/abi.ts";
import { helperCommand, ONLY_NET_ADMIN } from "../tests/support/helper.ts";
import {
  acceptWithin,
  closeFd,
  describeReply,
  PasstEnd,
  processDescriptors,
  readSmallFile,
  repairStateNow,
  setRepairDirect,
  tcpConnections,
  tcpSocket,
  unixListener,
  waitFor,
} from "../tests/support/peer_native.ts";
import { EACCES, filterLength } from "../tests/support/socket_filter.ts";

const USAGE = `usage: deno task bench [--samples N] [--warmup N] [--cold N] [--passes N] [--pool N]
                        [--hold-samples N]

  --samples N  round trips measured per batch size and helper (default 3000)
  --warmup N   round trips before measuring, per batch size and helper (default 500)
  --cold N     fresh starts per helper for startup and the first message (default 9)
  --passes N   passes over the whole pool per helper, in messages of 253 (default 6)
  --pool N     sockets for the throughput figure, both ends of N/2 loopback
               connections (default 10000)
  --hold-samples N  ON and OFF_NO_WP pairs measured per batch size and helper
               for the cost of the input hold (default 400)`;

const SCM_MAX_FD = 253;
const BATCHES = [1, 16, 64, 253] as const;
const HERE = new URL(".", import.meta.url).pathname;

/** A run that went wrong: reported instead of figures */
class BenchError extends Error {}

/** The bench cannot run here at all */
class CannotRun extends BenchError {}

interface Options {
  samples: number;
  warmup: number;
  cold: number;
  passes: number;
  pool: number;
  holdSamples: number;
}

function options(args: string[]): Options | null {
  const { values } = parseArgs({
    args,
    options: {
      samples: { type: "string", default: "3000" },
      warmup: { type: "string", default: "500" },
      cold: { type: "string", default: "9" },
      passes: { type: "string", default: "6" },
      pool: { type: "string", default: "10000" },
      "hold-samples": { type: "string", default: "400" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) return null;
  const int = (name: string, text: string, min: number, max: number) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new BenchError(`--${name} must be an integer from ${min} to ${max}`);
    }
    return n;
  };
  return {
    samples: int("samples", values.samples, 10, 1_000_000),
    warmup: int("warmup", values.warmup, 0, 1_000_000),
    cold: int("cold", values.cold, 1, 1000),
    passes: int("passes", values.passes, 1, 1000),
    pool: int("pool", values.pool, 2 * SCM_MAX_FD, 18000),
    holdSamples: int("hold-samples", values["hold-samples"], 10, 1_000_000),
  };
}

// ---- the reference programs ----

interface Programs {
  replyFirst: string;
  closeFirst: string;
  floor: string;
  launcher: string;
}

function compile(dir: string): Programs {
  const build = (source: string, out: string, defines: string[]) => {
    const path = `${dir}/${out}`;
    let result: Deno.CommandOutput;
    try {
      result = new Deno.Command("gcc", {
        args: ["-O2", "-Wall", "-Wextra", "-Werror", ...defines, "-o", path, `${HERE}c/${source}`],
        stdin: "null",
      }).outputSync();
    } catch (e) {
      throw new CannotRun(`cannot run gcc (${(e as Error).message}): the bench needs it`);
    }
    if (!result.success) {
      throw new BenchError(`gcc failed on ${source}: ${new TextDecoder().decode(result.stderr)}`);
    }
    return path;
  };
  return {
    replyFirst: build("ref_helper.c", "c-reply-first", ["-DCLOSE_FIRST=0"]),
    closeFirst: build("ref_helper.c", "c-close-first", ["-DCLOSE_FIRST=1"]),
    floor: build("syscall_floor.c", "syscall-floor", []),
    launcher: build("launcher.c", "launcher", []),
  };
}

// ---- helpers as passt sees them ----

interface Kind {
  key: "ours" | "replyFirst" | "closeFirst" | "bare" | "checkout";
  label: string;
  argv(path: string): string[];
}

const encoder = new TextEncoder();

/**
 * bench/c/launcher.c, started while the bench holds few descriptors: helpers
 * started through it begin with a small descriptor table, as they do when
 * libvirt or KubeVirt starts them, instead of inheriting the bench's table
 * sized for thousands of sockets (which would hide the cost of growing it).
 */
class Launcher {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buffered = "";

  constructor(program: string) {
    this.#child = new Deno.Command(program, {
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
      env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reader = this.#child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  get pid(): number {
    return this.#child.pid;
  }

  async #line(): Promise<string> {
    for (;;) {
      const nl = this.#buffered.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buffered.slice(0, nl);
        this.#buffered = this.#buffered.slice(nl + 1);
        return line;
      }
      const { value, done } = await this.#reader.read();
      if (done) throw new BenchError("the launcher ended");
      this.#buffered += value;
    }
  }

  /** Asks for `argv` to be started; the answer (its pid) is read by started() */
  async spawn(argv: readonly string[], output: string): Promise<void> {
    if (argv.some((a) => a.includes("\t") || a.includes("\n"))) {
      throw new BenchError(`cannot pass ${JSON.stringify(argv)} to the launcher`);
    }
    await this.#writer.write(encoder.encode(["spawn", output, ...argv].join("\t") + "\n"));
  }

  async started(): Promise<number> {
    const m = (await this.#line()).match(/^pid (\d+)$/);
    if (!m) throw new BenchError("the launcher could not start a program");
    return Number(m[1]);
  }

  /** Exit code of a started program (128 + signal if killed) */
  async wait(pid: number): Promise<number> {
    await this.#writer.write(encoder.encode(`wait\t${pid}\n`));
    const m = (await this.#line()).match(/^exit (\d+) (\d+)$/);
    if (!m || Number(m[1]) !== pid) throw new BenchError(`the launcher lost process ${pid}`);
    return Number(m[2]);
  }

  async close(): Promise<void> {
    await this.#writer.close();
    await this.#reader.cancel();
    await this.#child.status;
  }
}

/** A program started through the launcher, its output going to a file */
class Process {
  constructor(
    readonly launcher: Launcher,
    readonly pid: number,
    readonly output: string,
  ) {}

  kill(): void {
    try {
      Deno.kill(this.pid, "SIGKILL");
    } catch {
      // already gone
    }
  }

  /** Waits at most `ms` for the end; kills and throws otherwise */
  async end(ms: number, what: string): Promise<{ code: number; output: string }> {
    const timer = setTimeout(() => this.kill(), ms);
    const code = await this.launcher.wait(this.pid);
    clearTimeout(timer);
    const output = Deno.readTextFileSync(this.output);
    if (code === 128 + 9) throw new BenchError(`${what} did not exit within ${ms} ms: ${output}`);
    return { code, output };
  }
}

/** A helper connected to our fake passt */
interface Connected {
  kind: Kind;
  process: Process;
  conn: number;
  passt: PasstEnd;
  /** From spawn to accept(), ms */
  startupMs: number;
}

let socketCounter = 0;

async function connectHelper(launcher: Launcher, kind: Kind, dir: string): Promise<Connected> {
  const id = socketCounter++;
  const path = `${dir}/passt-${id}.socket.repair`;
  const listener = unixListener(path);
  try {
    const t0 = performance.now();
    await launcher.spawn(kind.argv(path), `${dir}/output-${id}`);
    let pid = 0;
    const started = launcher.started().then((p) => pid = p);
    // Accept in short slices, so that a helper that dies is noticed at once;
    // the slice returns as soon as the helper connects, so the time is exact
    let conn: number | null = null;
    const deadline = t0 + 30000;
    while (conn === null && performance.now() < deadline && !(pid > 0 && exited(pid))) {
      if (waitFor(listener, 100)) conn = acceptWithin(listener, 0);
      else await new Promise((r) => setTimeout(r, 0)); // let the pid arrive
    }
    const startupMs = performance.now() - t0;
    await started;
    const process = new Process(launcher, pid, `${dir}/output-${id}`);
    if (conn === null) {
      process.kill();
      const out = await process.end(10000, kind.label);
      throw new BenchError(
        `${kind.label} did not connect (exit status ${out.code}): ${out.output.trim()}`,
      );
    }
    return { kind, process, conn, passt: new PasstEnd(conn), startupMs };
  } finally {
    closeFd(listener);
    Deno.removeSync(path);
  }
}

/** Whether a child of the launcher has ended (a zombie until it is waited for) */
function exited(pid: number): boolean {
  const stat = readSmallFile(`/proc/${pid}/stat`);
  return stat === null || stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
}

const RECVMSG = Deno.build.arch === "aarch64" ? 212 : 47;
// Where the bare Deno script waits: its event loop's epoll_wait(),
// epoll_pwait() or epoll_pwait2()
const EPOLL_WAITS = Deno.build.arch === "aarch64" ? [22, 441] : [232, 281, 441];

/** Waits (a bounded while) until the helper sits in recvmsg() (or epoll), idle */
function untilIdle(h: Connected): void {
  const deadline = performance.now() + 20000;
  const idle = h.kind.key === "bare" ? EPOLL_WAITS : [RECVMSG];
  for (;;) {
    const text = readSmallFile(`/proc/${h.process.pid}/syscall`);
    if (text !== null && idle.includes(Number(text.split(" ")[0]))) return;
    if (performance.now() > deadline) {
      throw new BenchError(`${h.kind.label} never blocked in recvmsg()`);
    }
    waitFor(-1, 1); // a 1 ms pause in poll(), no descriptor
  }
}

/** Closes passt's end and expects the helper's silent exit 0 */
async function finish(h: Connected): Promise<void> {
  closeFd(h.conn);
  const out = await h.process.end(15000, h.kind.label);
  if (out.code !== 0 || out.output !== "") {
    throw new BenchError(
      `${h.kind.label} ended with status ${out.code}, output ${JSON.stringify(out.output)}`,
    );
  }
}

function procStatus(pid: number, field: string): number {
  const text = readSmallFile(`/proc/${pid}/status`);
  const m = text?.match(new RegExp(`^${field}:\\s+(\\d+)`, "m"));
  if (!m) throw new BenchError(`no ${field} in /proc/${pid}/status`);
  return Number(m[1]);
}

/** utime + stime of a process, in clock ticks */
function cpuTicks(pid: number): number {
  const text = readSmallFile(`/proc/${pid}/stat`) ?? "";
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

// ---- the sockets, and what state they must be in ----

class Pool {
  readonly fds: Int32Array;
  readonly #state: Int8Array;
  readonly #connections: ReturnType<typeof tcpConnections>;

  constructor(size: number) {
    this.#connections = tcpConnections(4, Math.ceil(size / 2));
    // Interleave both ends, so that each batch holds both kinds
    const fds = new Int32Array(size);
    for (let i = 0; i < size; i++) {
      fds[i] = i % 2 === 0 ? this.#connections.local[i >> 1]! : this.#connections.remote[i >> 1]!;
    }
    this.fds = fds;
    this.#state = new Int8Array(size);
  }

  /** The command that flips the batch at `offset` */
  commandFor(offset: number): number {
    return this.#state[offset] === 1 ? TCP_REPAIR_OFF_NO_WP : TCP_REPAIR_ON;
  }

  /** Records that `cmd` was confirmed for count sockets from offset */
  confirmed(offset: number, count: number, cmd: number): void {
    this.#state.fill(cmd === TCP_REPAIR_ON ? 1 : 0, offset, offset + count);
  }

  /** Checks the socket at `index` against what was confirmed */
  check(index: number, who: string): void {
    const got = repairStateNow(this.fds[index]!);
    const want = this.#state[index]!;
    if (got !== want) {
      throw new BenchError(
        `${who}: socket ${index} (fd ${
          this.fds[index]
        }) has TCP_REPAIR ${got} after a reply, not ${want}`,
      );
    }
  }

  checkAll(offset: number, count: number, who: string): void {
    for (let i = offset; i < offset + count; i++) this.check(i, who);
  }

  close(): void {
    // Left in repair mode, a socket closes without FIN and without TIME_WAIT
    for (const fd of this.fds) setRepairDirect(fd, TCP_REPAIR_ON);
    this.#connections.close();
  }
}

/**
 * One message of `count` sockets from `offset`, timed from sendmsg() to the
 * reply; the reply and the state of three of the sockets are checked after.
 * The batch must have been loaded into h.passt.
 */
function roundTrip(h: Connected, pool: Pool, offset: number, count: number, spot: number): number {
  const cmd = pool.commandFor(offset);
  const t0 = performance.now();
  const sent = h.passt.send(cmd);
  const reply = sent === 1 ? h.passt.awaitReply() : 0;
  const t1 = performance.now();
  if (sent !== 1) throw new BenchError(`${h.kind.label}: sendmsg failed (${sent})`);
  if (reply !== cmd) {
    throw new BenchError(`${h.kind.label}: command ${cmd} answered by ${describeReply(reply)}`);
  }
  pool.confirmed(offset, count, cmd);
  pool.check(offset, h.kind.label);
  pool.check(offset + count - 1, h.kind.label);
  pool.check(offset + (((spot % count) + count) % count), h.kind.label);
  return t1 - t0;
}

// ---- statistics ----

function sorted(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values).sort();
}

function quantile(values: ArrayLike<number>, q: number): number {
  const s = sorted(values);
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

const median = (v: ArrayLike<number>) => quantile(v, 0.5);

// ---- the run ----

type Figures = Record<Exclude<Kind["key"], "bare" | "checkout"> | "floor", number | null>;

interface Row {
  label: string;
  unit: "ms" | "µs" | "MB" | "ticks";
  figures: Figures;
}

/** Startup and the first command after idle: ours, the bare Deno script, C */
interface StartRow {
  label: string;
  unit: "ms" | "µs" | "MB";
  figures: Record<"ours" | "bare" | "replyFirst", number | null>;
}

function figuresOf(
  samples: Record<Kind["key"], number[]>,
  f: (v: number[]) => number,
): StartRow["figures"] {
  return { ours: f(samples.ours), bare: f(samples.bare), replyFirst: f(samples.replyFirst) };
}

/** How long a connected helper idles before the command timed after it */
const IDLE_MS = 2000;
const SIZES_AFTER_IDLE = [1, SCM_MAX_FD] as const;

/**
 * Where a helper wakes for the first command after an idle: left to the
 * scheduler, or pinned (taskset) to the CPU of the bench playing passt, or
 * to another one. Placement decides most of that figure: waking a halted
 * virtual CPU costs about 90 µs, and a single-threaded C helper tends to stay
 * on the CPU that started it, the bench's, while Deno's threads move.
 */
const PLACEMENTS = ["free", "same CPU", "other CPU"] as const;
type Placement = (typeof PLACEMENTS)[number];

/** The CPU the bench plays passt on while placements are measured */
const PASST_CPU = 0;

/** taskset -a -p: every thread of `pid` onto `cpus` ("0", "1", "0-1") */
function pin(pid: number, cpus: string): void {
  const out = new Deno.Command("taskset", {
    args: ["-a", "-p", "-c", cpus, String(pid)],
    stdout: "null",
    stderr: "piped",
  }).outputSync();
  if (!out.success) {
    throw new BenchError(
      `taskset -a -p -c ${cpus} ${pid} failed: ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
}

/** The placements this machine allows: "other CPU" needs a second one */
function placements(): readonly Placement[] {
  return navigator.hardwareConcurrency > 1 ? PLACEMENTS : ["free", "same CPU"];
}

/**
 * The first command a connected helper gets after idling IDLE_MS, as in a
 * migration (the helper connects long before passt needs it): each helper
 * fresh, one command each, for 1 and for 253 sockets, in each placement.
 * All helpers of a round are connected at once and idle together; the idle
 * is the thing measured, not a wait for an event. The bench sits on
 * PASST_CPU meanwhile. Times in ms, by "key:size:placement".
 */
async function firstAfterIdle(
  launcher: Launcher,
  kinds: readonly Kind[],
  pool: Pool,
  o: Options,
  dir: string,
): Promise<Map<string, number[]>> {
  const times = new Map<string, number[]>();
  const plan = kinds.flatMap((kind) =>
    SIZES_AFTER_IDLE.flatMap((n) => placements().map((where) => ({ kind, n, where })))
  );
  const all = `0-${navigator.hardwareConcurrency - 1}`;
  pin(Deno.pid, String(PASST_CPU));
  try {
    for (let rep = 0; rep < o.cold; rep++) {
      const round: Array<{ h: Connected; n: number; where: Placement }> = [];
      try {
        for (let j = 0; j < plan.length; j++) {
          const { kind, n, where } = plan[(rep + j) % plan.length]!;
          round.push({ h: await connectHelper(launcher, kind, dir), n, where });
        }
        for (const { h } of round) untilIdle(h);
        for (const { h, where } of round) {
          if (where !== "free") {
            pin(h.process.pid, String(where === "same CPU" ? PASST_CPU : PASST_CPU + 1));
          }
        }
        await new Promise((r) => setTimeout(r, IDLE_MS));
        for (const { h, n, where } of round) {
          h.passt.load(pool.fds, 0, n);
          const t = roundTrip(h, pool, 0, n, rep);
          pool.checkAll(0, n, h.kind.label);
          const key = `${h.kind.key}:${n}:${where}`;
          if (!times.has(key)) times.set(key, []);
          times.get(key)!.push(t);
        }
        for (const { h } of round) await finish(h);
      } catch (e) {
        for (const { h } of round) h.process.kill();
        throw e;
      }
    }
  } finally {
    pin(Deno.pid, all);
  }
  return times;
}

/**
 * How to start ours: $PASST_REPAIR_BIN if set, else the helper as
 * `deno task install` lays it out, installed into `dir`/prefix (the
 * launcher, the bundle and Deno: what operators run). `note` says what it
 * is; `deno` is the Deno binary it runs, which the bare script and the
 * checkout run too: a fresh copy of the binary maps about 3 MB more of
 * itself (the kernel caches a newly written file in larger pages), so RSS
 * is compared on the same file.
 */
function oursCommand(dir: string): { argv: string[]; note: string; deno: string } {
  const bin = Deno.env.get("PASST_REPAIR_BIN");
  if (bin) return { argv: [bin], note: " ($PASST_REPAIR_BIN)", deno: Deno.execPath() };
  const prefix = `${dir}/prefix`;
  const out = new Deno.Command(Deno.execPath(), {
    args: ["task", "install"],
    cwd: `${HERE}..`,
    env: { PASST_REPAIR_PREFIX: prefix, DENO_NO_UPDATE_CHECK: "1" },
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim().split("\n").at(-1) ?? "";
    throw new CannotRun(`deno task install into ${prefix} failed: ${why}`);
  }
  return {
    argv: [`${prefix}/bin/passt-repair`],
    note: " (installed by deno task install)",
    deno: `${prefix}/lib/passt-repair/deno`,
  };
}

async function bench(
  o: Options,
  dir: string,
): Promise<{ rows: Row[]; startRows: StartRow[]; notes: string[]; hold: HoldRow[] }> {
  // Permission to switch repair mode at all, or every figure would be an error
  const probe = tcpSocket(4);
  const allowed = setRepairDirect(probe, TCP_REPAIR_ON);
  closeFd(probe);
  if (allowed < 0) {
    throw new CannotRun(
      "setting TCP_REPAIR is refused here: run the bench as root or with CAP_NET_ADMIN",
    );
  }

  const programs = compile(dir);
  const ours = oursCommand(dir);
  const kinds: Kind[] = [
    { key: "ours", label: "ours", argv: (p) => [...ours.argv, "--no-hold", p] },
    { key: "replyFirst", label: "C, reply first", argv: (p) => [programs.replyFirst, p] },
    { key: "closeFirst", label: "C, close first", argv: (p) => [programs.closeFirst, p] },
  ];
  const bare: Kind = {
    key: "bare",
    label: "bare Deno",
    argv: (p) => [
      ours.deno,
      "run",
      "--allow-net",
      `--allow-read=${p}`,
      `--allow-write=${p}`,
      `${HERE}bare_connect.ts`,
      p,
    ],
  };
  const checkout: Kind = {
    key: "checkout",
    label: "ours, checkout",
    argv: (p) => [ours.deno, "run", "--allow-ffi", `${HERE}../main.ts`, "--no-hold", p],
  };
  const launcher = new Launcher(programs.launcher);
  const notes: string[] = [
    `ours: ${[...ours.argv, "--no-hold", "PATH"].join(" ")}${ours.note}`,
    `ours, checkout: ${checkout.argv("PATH").join(" ")}`,
    `bare Deno: ${bare.argv("PATH").join(" ")}`,
  ];
  let pool: Pool;
  try {
    pool = new Pool(o.pool);
  } catch (e) {
    await launcher.close();
    throw e;
  }
  const rows: Row[] = [];
  let hold: HoldRow[] = [];
  const startRows: StartRow[] = [];
  const none = (): Figures => ({ ours: null, replyFirst: null, closeFirst: null, floor: null });

  try {
    // Start each once untimed: Deno transpiles and caches main.ts on a first run
    for (const kind of [...kinds, bare, checkout]) {
      await finish(await connectHelper(launcher, kind, dir));
    }

    // Startup and the cold first message, each helper fresh every time; the
    // bare script only starts and connects
    const startKinds = [...kinds, bare, checkout];
    const startup = { ours: [], replyFirst: [], closeFirst: [], bare: [], checkout: [] } as Record<
      Kind["key"],
      number[]
    >;
    const connectedRss = {
      ours: [],
      replyFirst: [],
      closeFirst: [],
      bare: [],
      checkout: [],
    } as Record<Kind["key"], number[]>;
    // Anonymous memory alone: what each helper costs the machine on its
    // own. The rest of RSS is file pages, mostly Deno's own code, which
    // every Deno process on the machine shares (docs/performance.md)
    const privateRss = structuredClone(connectedRss);
    const cold = { ours: [] as number[], replyFirst: [] as number[], closeFirst: [] as number[] };
    for (let rep = 0; rep < o.cold; rep++) {
      for (let j = 0; j < startKinds.length; j++) {
        const kind = startKinds[(rep + j) % startKinds.length]!;
        const h = await connectHelper(launcher, kind, dir);
        try {
          startup[kind.key].push(h.startupMs);
          untilIdle(h);
          connectedRss[kind.key].push(procStatus(h.process.pid, "VmHWM") / 1024);
          privateRss[kind.key].push(procStatus(h.process.pid, "RssAnon") / 1024);
          if (rep === 0) {
            const size = procStatus(h.process.pid, "FDSize");
            notes.push(`${kind.label}: descriptor table of ${size} when connected and idle`);
          }
          if (kind.key !== "bare" && kind.key !== "checkout") {
            h.passt.load(pool.fds, 0, SCM_MAX_FD);
            cold[kind.key].push(roundTrip(h, pool, 0, SCM_MAX_FD, rep));
            pool.checkAll(0, SCM_MAX_FD, kind.label);
          }
          await finish(h);
        } catch (e) {
          h.process.kill();
          throw e;
        }
      }
    }
    const idle = await firstAfterIdle(launcher, [kinds[0]!, kinds[1]!], pool, o, dir);
    startRows.push(
      { label: "start to connected", unit: "ms", figures: figuresOf(startup, median) },
      {
        label: "peak RSS when connected (VmHWM)",
        unit: "MB",
        figures: figuresOf(connectedRss, median),
      },
      {
        label: "private memory when connected (RssAnon)",
        unit: "MB",
        figures: figuresOf(privateRss, median),
      },
      ...SIZES_AFTER_IDLE.flatMap((n) =>
        placements().map((where) => ({
          label: `first command after ${IDLE_MS / 1000} s idle, ${n} socket${n === 1 ? "" : "s"}${
            where === "free" ? "" : `, ${where}`
          }`,
          unit: "µs" as const,
          figures: {
            ours: median(idle.get(`ours:${n}:${where}`)!) * 1000,
            bare: null,
            replyFirst: median(idle.get(`replyFirst:${n}:${where}`)!) * 1000,
          },
        }))
      ),
      {
        label: "start to connected, checkout",
        unit: "ms",
        figures: { ...figuresOf(startup, median), ours: median(startup.checkout) },
      },
      {
        label: "peak RSS when connected, checkout",
        unit: "MB",
        figures: { ...figuresOf(connectedRss, median), ours: median(connectedRss.checkout) },
      },
    );
    const row = (label: string, unit: Row["unit"], f: (k: Kind["key"]) => number | null) => {
      const figures = none();
      for (const k of kinds) figures[k.key as keyof Figures] = f(k.key);
      const r = { label, unit, figures };
      rows.push(r);
      return r;
    };
    row(
      "first 253-socket message (cold)",
      "ms",
      (k) => k === "bare" || k === "checkout" ? null : median(cold[k]),
    );

    // Steady state: all three connected, served in turn
    const helpers: Connected[] = [];
    for (const k of kinds) helpers.push(await connectHelper(launcher, k, dir));
    try {
      for (const h of helpers) untilIdle(h);
      const fdsBefore = helpers.map((h) => processDescriptors(h.process.pid).size);
      const ticksBefore = helpers.map((h) => cpuTicks(h.process.pid));
      await new Promise((r) => setTimeout(r, 1000));
      const idleTicks = helpers.map((h, i) => cpuTicks(h.process.pid) - ticksBefore[i]!);

      const samples = new Map<string, Float64Array>();
      for (const n of BATCHES) {
        for (const h of helpers) h.passt.load(pool.fds, 0, n);
        const got = helpers.map(() => new Float64Array(o.samples));
        for (let i = -o.warmup; i < o.samples; i++) {
          for (let j = 0; j < helpers.length; j++) {
            const which = (i + o.warmup + j) % helpers.length;
            const t = roundTrip(helpers[which]!, pool, 0, n, i + j);
            if (i >= 0) got[which]![i] = t;
          }
        }
        pool.checkAll(0, n, "steady state");
        helpers.forEach((h, i) => samples.set(`${h.kind.key}:${n}`, got[i]!));
      }

      // Throughput: the whole pool as passt sends it, 253 per message then the rest
      const passes = helpers.map(() => [] as number[]);
      for (let p = 0; p < o.passes; p++) {
        for (let j = 0; j < helpers.length; j++) {
          const which = (p + j) % helpers.length;
          const h = helpers[which]!;
          let total = 0;
          for (let off = 0; off < pool.fds.length; off += SCM_MAX_FD) {
            const k = Math.min(SCM_MAX_FD, pool.fds.length - off);
            h.passt.load(pool.fds, off, k);
            total += roundTrip(h, pool, off, k, p + off);
          }
          pool.checkAll(0, pool.fds.length, h.kind.label);
          passes[which]!.push(total);
        }
      }

      // Nothing leaked, then peak memory, then a clean exit
      helpers.forEach((h, i) => {
        const now = processDescriptors(h.process.pid).size;
        if (now !== fdsBefore[i]) {
          throw new BenchError(
            `${h.kind.label} holds ${now} descriptors, ${fdsBefore[i]} before the run`,
          );
        }
      });
      const rss = helpers.map((h) => procStatus(h.process.pid, "VmHWM") / 1024);
      for (const h of helpers) await finish(h);

      const at = (k: Kind["key"]) => kinds.findIndex((x) => x.key === k);
      for (const n of BATCHES) {
        const label = `${n} socket${n === 1 ? "" : "s"} per message`;
        row(`${label}: median`, "µs", (k) => median(samples.get(`${k}:${n}`)!) * 1000);
        row(`${label}: p90`, "µs", (k) => quantile(samples.get(`${k}:${n}`)!, 0.9) * 1000);
      }
      const all = row(
        `${o.pool} sockets in ${Math.ceil(o.pool / SCM_MAX_FD)} messages`,
        "ms",
        (k) => median(passes[at(k)]!),
      );
      const rate = (ms: number | null) => `${Math.round(o.pool / ms! * 1000)} sockets/s`;
      notes.push(
        `throughput: ours ${rate(all.figures.ours)}, C reply first ${
          rate(all.figures.replyFirst)
        }, C close first ${rate(all.figures.closeFirst)}`,
      );
      row("peak RSS (VmHWM)", "MB", (k) => rss[at(k)]!);
      row("CPU ticks while connected, idle 1 s", "ticks", (k) => idleTicks[at(k)]!);
    } catch (e) {
      for (const h of helpers) h.process.kill();
      throw e;
    }

    // The syscall floor, on the same sockets, once the helpers are gone
    const floor = await syscallFloor(launcher, programs.floor, pool, o, dir);
    for (const r of rows) {
      if (r.label.endsWith("median") || r.label.endsWith("p90")) {
        const n = Number(r.label.split(" ")[0]);
        const v = floor.get(n)!;
        r.figures.floor = (r.label.endsWith("median") ? median(v) : quantile(v, 0.9)) / 1000;
      } else if (r.label.includes("sockets in")) {
        r.figures.floor = median(floor.get(o.pool)!) / 1e6;
      }
    }

    hold = await holdCost(launcher, programs.floor, pool, o, dir);
  } finally {
    pool.close();
    await launcher.close();
  }
  return { rows, startRows, notes, hold };
}

// ---- what the input hold costs ----

interface HoldVariant {
  label: string;
  /** What SO_GET_FILTER says about a socket this helper holds; 0 without the hold */
  held: number;
  argv(path: string): string[];
}

const HOLD_VARIANTS: readonly HoldVariant[] = [
  { label: "root, --no-hold", held: 0, argv: (p) => helperCommand(["--no-hold", p]) },
  { label: "root, hold (eBPF)", held: -EACCES, argv: (p) => helperCommand([p]) },
  {
    label: "CAP_NET_ADMIN only, --no-hold",
    held: 0,
    argv: (p) => [...ONLY_NET_ADMIN, ...helperCommand(["--no-hold", p])],
  },
  {
    label: "CAP_NET_ADMIN only, hold (classic)",
    held: 1,
    argv: (p) => [...ONLY_NET_ADMIN, ...helperCommand([p])],
  },
];

const HOLD_BATCHES = [1, SCM_MAX_FD] as const;

interface HoldRow {
  label: string;
  /** Round-trip times in ms, by "ON:n" and "OFF_NO_WP:n", and "cold" */
  samples: Map<string, Float64Array>;
}

/**
 * ON then OFF_NO_WP of the same `count` sockets by one helper, each timed
 * from sendmsg() to the reply; checks the replies, the repair state and the
 * filter of three sockets after each
 */
function holdPair(
  h: Connected,
  v: HoldVariant,
  pool: Pool,
  count: number,
  spot: number,
): [number, number] {
  const on = roundTrip(h, pool, 0, count, spot);
  const check = (want: number) => {
    for (const i of [0, count - 1, ((spot % count) + count) % count]) {
      const got = filterLength(pool.fds[i]!);
      if (got !== want) {
        throw new BenchError(`${v.label}: socket ${i} has filter ${got}, not ${want}`);
      }
    }
  };
  check(v.held);
  const off = roundTrip(h, pool, 0, count, spot);
  check(0);
  return [on, off];
}

async function holdCost(
  launcher: Launcher,
  floorProgram: string,
  pool: Pool,
  o: Options,
  dir: string,
): Promise<HoldRow[]> {
  // Every socket out of repair mode (the syscall floor left them as it
  // pleased), so that each pair starts with ON
  for (let i = 0; i < SCM_MAX_FD; i++) {
    if (setRepairDirect(pool.fds[i]!, 0) < 0) throw new BenchError(`cannot reset socket ${i}`);
  }
  pool.confirmed(0, SCM_MAX_FD, TCP_REPAIR_OFF_NO_WP);
  const rows: HoldRow[] = HOLD_VARIANTS.map((v) => ({ label: v.label, samples: new Map() }));
  // The first ON of 253 sockets by a fresh helper: what a source migration waits for
  const cold = HOLD_VARIANTS.map(() => new Float64Array(o.cold));
  for (let rep = 0; rep < o.cold; rep++) {
    for (let j = 0; j < HOLD_VARIANTS.length; j++) {
      const which = (rep + j) % HOLD_VARIANTS.length;
      const v = HOLD_VARIANTS[which]!;
      const h = await connectHelper(launcher, { key: "ours", label: v.label, argv: v.argv }, dir);
      try {
        untilIdle(h);
        h.passt.load(pool.fds, 0, SCM_MAX_FD);
        cold[which]![rep] = holdPair(h, v, pool, SCM_MAX_FD, rep)[0];
        await finish(h);
      } catch (e) {
        h.process.kill();
        throw e;
      }
    }
  }
  rows.forEach((r, k) => r.samples.set("cold", cold[k]!));

  const warmup = Math.ceil(o.holdSamples / 5);
  const helpers: Connected[] = [];
  try {
    for (const v of HOLD_VARIANTS) {
      helpers.push(
        await connectHelper(launcher, { key: "ours", label: v.label, argv: v.argv }, dir),
      );
    }
    for (const h of helpers) untilIdle(h);
    for (const n of HOLD_BATCHES) {
      for (const h of helpers) h.passt.load(pool.fds, 0, n);
      const on = helpers.map(() => new Float64Array(o.holdSamples));
      const off = helpers.map(() => new Float64Array(o.holdSamples));
      for (let i = -warmup; i < o.holdSamples; i++) {
        for (let j = 0; j < helpers.length; j++) {
          const which = (i + warmup + j) % helpers.length;
          const [a, b] = holdPair(helpers[which]!, HOLD_VARIANTS[which]!, pool, n, i + j);
          if (i >= 0) {
            on[which]![i] = a;
            off[which]![i] = b;
          }
        }
      }
      rows.forEach((r, k) => {
        r.samples.set(`ON:${n}`, on[k]!);
        r.samples.set(`OFF_NO_WP:${n}`, off[k]!);
      });
    }
    for (const h of helpers) await finish(h);
  } catch (e) {
    for (const h of helpers) h.process.kill();
    throw e;
  }
  // The same system calls made by one C process: what the hold costs the kernel
  for (const hold of [false, true]) {
    const samples = await holdFloor(launcher, floorProgram, pool, hold, warmup, o, dir);
    rows.push({
      label: `syscalls alone (C, root), ${hold ? "hold (eBPF)" : "no hold"}`,
      samples,
    });
  }
  return rows;
}

/**
 * bench/c/syscall_floor.c on the first 253 sockets of the pool, with or
 * without --hold: ON and OFF_NO_WP round trips, in ms, after `warmup` pairs
 */
async function holdFloor(
  launcher: Launcher,
  program: string,
  pool: Pool,
  hold: boolean,
  warmup: number,
  o: Options,
  dir: string,
): Promise<Map<string, Float64Array>> {
  const pairs = warmup + o.holdSamples;
  const kind: Kind = {
    key: "replyFirst",
    label: `syscall floor${hold ? " --hold" : ""}`,
    argv: (p) => [
      program,
      ...(hold ? ["--hold"] : []),
      p,
      String(SCM_MAX_FD),
      `${SCM_MAX_FD}:${2 * pairs}`,
    ],
  };
  const h = await connectHelper(launcher, kind, dir);
  let out: { code: number; output: string };
  try {
    h.passt.load(pool.fds, 0, SCM_MAX_FD);
    if (h.passt.send(1) !== 1 || h.passt.awaitReply() !== 1) {
      throw new BenchError(`${kind.label} did not take the sockets`);
    }
    out = await h.process.end(300000, kind.label);
  } catch (e) {
    h.process.kill();
    throw e;
  } finally {
    closeFd(h.conn);
  }
  if (out.code !== 0) throw new BenchError(`${kind.label} failed: ${out.output}`);
  const ns = out.output.trim().split("\n").map((line) => Number(line.split(" ")[1]));
  if (ns.length !== 2 * pairs || ns.some((v) => !(v > 0))) {
    throw new BenchError(`${kind.label} reported ${ns.length} figures, not ${2 * pairs}`);
  }
  // It alternates ON (first) and OFF_NO_WP, and leaves every socket out of repair mode
  const on = ns.filter((_, i) => i % 2 === 0).slice(warmup).map((v) => v / 1e6);
  const off = ns.filter((_, i) => i % 2 === 1).slice(warmup).map((v) => v / 1e6);
  return new Map([
    [`ON:${SCM_MAX_FD}`, Float64Array.from(on)],
    [`OFF_NO_WP:${SCM_MAX_FD}`, Float64Array.from(off)],
  ]);
}

function holdTable(rows: HoldRow[]): string {
  const columns = [
    ["first ON, 253 (cold)", "cold"],
    ["ON, 1 socket", "ON:1"],
    ["ON, 253: median", `ON:${SCM_MAX_FD}`],
    ["ON, 253: p90", `ON:${SCM_MAX_FD}`],
    ["OFF_NO_WP, 253: median", `OFF_NO_WP:${SCM_MAX_FD}`],
  ] as const;
  const head = ["input hold (ours)", ...columns.map((c) => c[0]), "ON 253 ÷ --no-hold"];
  const on253 = (r: HoldRow) => median(r.samples.get(`ON:${SCM_MAX_FD}`)!);
  const body = rows.map((r, i) => {
    const base = rows[i - (i % 2)]!; // the --no-hold row of the same privileges
    return [
      r.label,
      ...columns.map(([label, key]) => {
        const v = r.samples.get(key);
        if (v === undefined) return "—";
        return format((label.endsWith("p90") ? quantile(v, 0.9) : median(v)) * 1000, "µs");
      }),
      ratio(on253(r), on253(base)),
    ];
  });
  return markdownTable(head, body);
}

function holdVerdicts(rows: HoldRow[]): string[] {
  const on253 = (k: number) => median(rows[k]!.samples.get(`ON:${SCM_MAX_FD}`)!);
  const perSocket = (k: number) => ((on253(k) - on253(k - 1)) * 1000) / SCM_MAX_FD;
  return [
    `ON for 253 sockets with the hold within 1.5× of without, as root: ${
      ratio(on253(1), on253(0))
    } (${on253(1) <= 1.5 * on253(0) ? "met" : "MISSED"})`,
    `the hold's price per socket: ${perSocket(1).toFixed(2)} µs as root (eBPF), ${
      perSocket(3).toFixed(2)
    } µs with only CAP_NET_ADMIN (classic; ON for 253 ${ratio(on253(3), on253(2))} of without)`,
    `the same system calls in C, one process, as root: ON for 253 sockets ${
      ratio(on253(5), on253(4))
    } with the hold, ${perSocket(5).toFixed(2)} µs per socket`,
  ];
}

/** Runs bench/c/syscall_floor.c on the pool: round-trip times in ns, by batch size */
async function syscallFloor(
  launcher: Launcher,
  program: string,
  pool: Pool,
  o: Options,
  dir: string,
): Promise<Map<number, number[]>> {
  const specs = [
    ...BATCHES.map((n) => `${n}:${o.warmup + o.samples}`),
    `all:${o.passes}`,
  ];
  const kind: Kind = {
    key: "replyFirst",
    label: "syscall floor",
    argv: (p) => [program, p, String(pool.fds.length), ...specs],
  };
  const h = await connectHelper(launcher, kind, dir);
  let out: { code: number; output: string };
  try {
    // Hand it the pool as passt would, 253 per message; it switches nothing yet
    for (let off = 0; off < pool.fds.length; off += SCM_MAX_FD) {
      const k = Math.min(SCM_MAX_FD, pool.fds.length - off);
      h.passt.load(pool.fds, off, k);
      if (h.passt.send(1) !== 1 || h.passt.awaitReply() !== 1) {
        throw new BenchError("the syscall floor program did not take the pool");
      }
    }
    out = await h.process.end(300000, "the syscall floor program");
  } catch (e) {
    h.process.kill();
    throw e;
  } finally {
    closeFd(h.conn);
  }
  if (out.code !== 0) throw new BenchError(`the syscall floor program failed: ${out.output}`);
  const byBatch = new Map<number, number[]>();
  for (const line of out.output.trim().split("\n")) {
    const [n, ns] = line.split(" ").map(Number);
    if (!byBatch.has(n!)) byBatch.set(n!, []);
    byBatch.get(n!)!.push(ns!);
  }
  for (const n of BATCHES) {
    const all = byBatch.get(n);
    if (!all || all.length !== o.warmup + o.samples) {
      throw new BenchError(
        `the syscall floor program reported ${all?.length ?? 0} figures for ${n}`,
      );
    }
    byBatch.set(n, all.slice(o.warmup));
  }
  return byBatch;
}

// ---- output ----

function format(v: number | null, unit: Row["unit"]): string {
  if (v === null || Number.isNaN(v)) return "—";
  if (unit === "ticks") return `${v}`;
  if (unit === "µs") return v >= 100 ? `${v.toFixed(0)} µs` : `${v.toFixed(1)} µs`;
  if (unit === "ms") return v >= 10 ? `${v.toFixed(1)} ms` : `${v.toFixed(2)} ms`;
  return `${v.toFixed(1)} MB`;
}

function ratio(a: number | null, b: number | null): string {
  if (a === null || b === null || !(b > 0)) return "—";
  return `${(a / b).toFixed(2)}×`;
}

function table(rows: Row[]): string {
  const head = [
    "measure",
    "ours",
    "C, reply first",
    "C, close first",
    "syscalls alone",
    "ours ÷ C reply first",
    "ours ÷ C close first",
    "ours ÷ syscalls",
  ];
  const body = rows.map((r) => {
    const f = r.figures;
    const ratios = r.unit === "ticks" ? ["—", "—", "—"] : [
      ratio(f.ours, f.replyFirst),
      ratio(f.ours, f.closeFirst),
      ratio(f.ours, f.floor),
    ];
    return [
      r.label,
      format(f.ours, r.unit),
      format(f.replyFirst, r.unit),
      format(f.closeFirst, r.unit),
      format(f.floor, r.unit),
      ...ratios,
    ];
  });
  return markdownTable(head, body);
}

function startTable(rows: StartRow[]): string {
  const head = [
    "startup and idle",
    "ours",
    "bare Deno",
    "C, reply first",
    "ours ÷ bare",
    "ours ÷ C",
  ];
  const body = rows.map((r) => [
    r.label,
    format(r.figures.ours, r.unit),
    format(r.figures.bare, r.unit),
    format(r.figures.replyFirst, r.unit),
    ratio(r.figures.ours, r.figures.bare),
    ratio(r.figures.ours, r.figures.replyFirst),
  ]);
  return markdownTable(head, body);
}

function startVerdicts(rows: StartRow[]): string[] {
  const own = rows.filter((r) => !r.label.endsWith("checkout"));
  const get = (label: string) => own.find((r) => r.label === label)!.figures;
  const start = get("start to connected");
  const rss = get("peak RSS when connected (VmHWM)");
  const idle = own.filter((r) => r.label.startsWith("first command after")).map((r) => r.figures);
  const mark = (ok: boolean) => ok ? "met" : "MISSED";
  return [
    `start to connected within 1.5× of bare Deno: ${ratio(start.ours, start.bare)} (${
      mark(start.ours! <= 1.5 * start.bare!)
    })`,
    `peak RSS within 6 MB of bare Deno: +${(rss.ours! - rss.bare!).toFixed(1)} MB (${
      mark(rss.ours! - rss.bare! <= 6)
    })`,
    ...idle.map((f, i) => {
      const n = SIZES_AFTER_IDLE[Math.floor(i / placements().length)]!;
      const where = placements()[i % placements().length]!;
      return `first command after idle, ${n} socket${n === 1 ? "" : "s"}${
        where === "free" ? "" : ` (${where})`
      }, within 1.5× of C reply first: ${ratio(f.ours, f.replyFirst)} (${
        mark(f.ours! <= 1.5 * f.replyFirst!)
      })`;
    }),
  ];
}

function verdicts(rows: Row[]): string[] {
  const get = (label: string) => rows.find((r) => r.label === label)!.figures;
  const cold = get("first 253-socket message (cold)");
  const big = get("253 sockets per message: median");
  const one = get("1 socket per message: median");
  const mark = (ok: boolean) => ok ? "met" : "MISSED";
  return [
    `first 253-socket message under 2 ms: ${format(cold.ours, "ms")} (${mark(cold.ours! < 2)})`,
    `253 sockets within 1.15× of C reply first: ${ratio(big.ours, big.replyFirst)} (${
      mark(big.ours! <= 1.15 * big.replyFirst!)
    })`,
    `253 sockets faster than C close first: ${ratio(big.ours, big.closeFirst)} (${
      mark(big.ours! < big.closeFirst!)
    })`,
    `1 socket within 1.5× of C reply first: ${ratio(one.ours, one.replyFirst)} (${
      mark(one.ours! <= 1.5 * one.replyFirst!)
    })`,
  ];
}

function machine(): string {
  const kernel = (readSmallFile("/proc/sys/kernel/osrelease") ?? "?").trim();
  const cpus = (readSmallFile("/proc/cpuinfo") ?? "").match(/^processor\s*:/gm)?.length ?? 0;
  const model = (readSmallFile("/proc/cpuinfo") ?? "").match(/^model name\s*:\s*(.*)$/m)?.[1] ??
    "?";
  return `Linux ${kernel}, ${cpus} CPUs (${model}), Deno ${Deno.version.deno}`;
}

function loadAverage(): string {
  return (readSmallFile("/proc/loadavg") ?? "?").split(" ").slice(0, 3).join(" ");
}

async function main(args: string[]): Promise<number> {
  let o: Options | null;
  try {
    o = options(args);
  } catch (e) {
    // One line: node:util's own message is a paragraph about its API
    const message = (e as Error).message.split(". ")[0]!.replace(/\.$/, "");
    console.error(`bench: ${message} (deno task bench --help lists the options)`);
    return 2;
  }
  if (o === null) {
    console.log(USAGE);
    return 0;
  }
  const dir = Deno.makeTempDirSync({ prefix: "passt-repair-bench-" });
  const started = performance.now();
  const loadBefore = loadAverage();
  try {
    const { rows, startRows, notes, hold } = await bench(o, dir);
    const seconds = (performance.now() - started) / 1000;
    console.log(startTable(startRows));
    console.log();
    console.log(table(rows));
    console.log();
    for (const v of [...startVerdicts(startRows), ...verdicts(rows)]) console.log(`target: ${v}`);
    console.log();
    console.log(holdTable(hold));
    console.log();
    for (const v of holdVerdicts(hold)) console.log(`target: ${v}`);
    console.log();
    console.log(`${machine()}`);
    console.log(
      `load average ${loadBefore} before, ${loadAverage()} after; ${seconds.toFixed(0)} s`,
    );
    console.log(
      `${o.samples} round trips per figure after ${o.warmup} of warm-up, ` +
        `${o.cold} fresh starts per helper, ${o.passes} passes over ${o.pool} sockets; ` +
        `input hold: ${o.holdSamples} ON and OFF_NO_WP pairs per figure`,
    );
    for (const n of notes) console.log(n);
    return 0;
  } catch (e) {
    if (e instanceof CannotRun) {
      console.error(`bench: cannot run: ${e.message}`);
      return 1;
    }
    if (e instanceof BenchError) {
      console.error(`bench: the run went wrong, no figures reported: ${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}

/** A Markdown table: the first column left-aligned, the figures right-aligned */
function markdownTable(head: readonly string[], body: readonly string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: readonly string[]) =>
    `| ${
      cells.map((c, i) => i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)).join(" | ")
    } |`;
  const rule = `|${
    widths.map((w, i) => i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":").join("|")
  }|`;
  return [line(head), rule, ...body.map(line)].join("\n");
}
