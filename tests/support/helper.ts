// Starting the real helper as a user would, and watching it from outside.
//
// By default the helper is `deno run --allow-ffi main.ts`, with exactly the
// permission a user passes. PASST_REPAIR_BIN runs the same tests against a
// built artefact instead (the compiled binary or the bundle's launcher).

import assert from "node:assert/strict";
import {
  acceptWithin,
  closeFd,
  directoryNames,
  processDescriptors,
  readReply,
  readSmallFile,
  repairState,
  sendCommand,
  tcpConnections,
  unixListener,
} from "./peer_native.ts";

export const MAIN = new URL("../../main.ts", import.meta.url).pathname;
/** tests/support/, for the small programs the system tests run from it */
export const SUPPORT = new URL("./", import.meta.url).pathname;

/**
 * A Deno program of tests/support/ with exactly `permissions`, stdin closed
 * and its output piped; `wrapper` (such as ["unshare", "--net"]) runs it
 */
export function supportCommand(
  script: string,
  permissions: readonly string[],
  args: readonly string[],
  wrapper: readonly string[] = [],
): Deno.Command {
  const [command, ...rest] = [
    ...wrapper,
    Deno.execPath(),
    "run",
    ...permissions,
    `${SUPPORT}${script}`,
    ...args,
  ];
  return new Deno.Command(command!, {
    args: rest,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  });
}

/** The protocol's commands, as passt sends them */
export const ON = 1, OFF = 0, OFF_NO_WP = -1;
/** How long a test waits for a reply: the helper answers in well under 1 ms */
export const REPLY_MS = 10000;

/** The command line that starts the helper with `args` */
export function helperCommand(args: readonly string[]): string[] {
  const bin = Deno.env.get("PASST_REPAIR_BIN");
  if (bin) return [bin, ...args];
  return [Deno.execPath(), "run", "--allow-ffi", MAIN, ...args];
}

/**
 * Refuse by killing instead of EPERM. Every session below runs the helper
 * with it, so that a system call missing from the second seccomp stage's
 * allow-list ends the helper with SIGSYS, which no test mistakes for a pass.
 */
export const SECCOMP_KILL = "--seccomp-kill";

/** Runs a command without CAP_NET_ADMIN, even as root */
export const WITHOUT_NET_ADMIN = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin"];

/**
 * Runs a command with CAP_NET_ADMIN and no other capability, even as root: no
 * CAP_BPF nor CAP_SYS_ADMIN, so it cannot load a BPF program where
 * unprivileged BPF is disabled (as on Debian)
 */
export const ONLY_NET_ADMIN = [
  "setpriv",
  "--inh-caps=-all,+net_admin",
  "--ambient-caps=-all,+net_admin",
  "--bounding-set=-all,+net_admin",
];

export interface Outcome {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

export interface SpawnOptions {
  /** Command words put before the helper's (e.g. WITHOUT_NET_ADMIN) */
  prefix?: readonly string[];
  /**
   * Leave stderr unread until exit(), like a supervisor that never drains
   * the pipe: once it is full, a helper that writes blocks
   */
  stderrUnread?: boolean;
}

/** A running helper process */
export class Helper {
  readonly child: Deno.ChildProcess;
  readonly #stdout: Promise<string>;
  #stderr: Promise<string> | null = null;

  constructor(args: readonly string[], options: SpawnOptions = {}) {
    const argv = [...(options.prefix ?? []), ...helperCommand(args)];
    try {
      this.child = new Deno.Command(argv[0]!, {
        args: argv.slice(1),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
      }).spawn();
    } catch (e) {
      // One line naming the program, for example a PASST_REPAIR_BIN that does not exist
      throw new Error(`cannot start ${argv[0]}: ${e instanceof Error ? e.message : e}`);
    }
    this.#stdout = new Response(this.child.stdout).text();
    if (!options.stderrUnread) this.#readStderr();
  }

  #readStderr(): Promise<string> {
    this.#stderr ??= new Response(this.child.stderr).text();
    return this.#stderr;
  }

  get pid(): number {
    return this.child.pid;
  }

  /** Waits at most `ms` for the helper to end; kills it and throws if it does not */
  async exit(ms = 15000): Promise<Outcome> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), ms);
    });
    const stderr = this.#readStderr();
    const status = await Promise.race([this.child.status, timeout]);
    clearTimeout(timer);
    if (status === "timeout") {
      this.kill();
      await this.child.status;
      const stderr = await this.#readStderr();
      throw new Error(`helper did not exit within ${ms} ms; stderr: ${stderr}`);
    }
    return {
      code: status.code,
      signal: status.signal,
      stdout: await this.#stdout,
      stderr: await stderr,
    };
  }

  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.child.kill(signal);
    } catch {
      // already gone
    }
  }
}

/** Runs the helper to completion (no peer) and returns what it did */
export function runHelper(args: readonly string[], options: SpawnOptions = {}): Promise<Outcome> {
  return new Helper(args, options).exit();
}

/** A temporary directory for one test's sockets, removed by cleanup() */
export class Scratch {
  readonly dir: string;
  /** In TMPDIR, or in `parent` (see sharedScratch() for one other users can reach) */
  constructor(parent?: string) {
    this.dir = Deno.makeTempDirSync({
      prefix: "passt-repair-test-",
      ...(parent === undefined ? {} : { dir: parent }),
    });
  }
  path(name: string): string {
    return `${this.dir}/${name}`;
  }
  cleanup(): void {
    Deno.removeSync(this.dir, { recursive: true });
  }
}

/** A fake passt: listens on a repair socket, starts the helper, accepts it */
export interface Session {
  readonly helper: Helper;
  /** Our end of the connection to the helper */
  readonly conn: number;
  readonly scratch: Scratch;
  readonly socketPath: string;
  /** Closes our end of the connection (once: the number may be reused after) */
  closeConn(): void;
  /** Releases `resource` (test sockets) when the session closes */
  adopt<T extends { close(): void }>(resource: T): T;
  /** Ends the helper (if still running) and releases everything */
  close(): Promise<void>;
}

export async function startSession(
  args: readonly string[] = [],
  options: SpawnOptions = {},
): Promise<Session> {
  // Everything made here is undone here if the session cannot start
  const scratch = new Scratch();
  const socketPath = scratch.path("passt.socket.repair");
  let listener = -1;
  let helper: Helper | undefined;
  let conn: number;
  try {
    listener = unixListener(socketPath);
    helper = new Helper([SECCOMP_KILL, ...args, socketPath], options);
    conn = acceptWithin(listener, 20000);
  } catch (e) {
    let said = "";
    if (helper !== undefined) {
      helper.kill();
      said = `; helper said: ${(await helper.exit().catch(() => null))?.stderr ?? "(nothing)"}`;
    }
    scratch.cleanup();
    throw new Error(`${(e as Error).message}${said}`);
  } finally {
    if (listener >= 0) closeFd(listener);
  }
  const started = helper;
  const adopted: { close(): void }[] = [];
  let connOpen = true;
  const closeConn = () => {
    if (connOpen) closeFd(conn);
    connOpen = false;
  };
  return {
    helper: started,
    conn,
    scratch,
    socketPath,
    closeConn,
    adopt(resource) {
      adopted.push(resource);
      return resource;
    },
    async close() {
      for (const r of adopted.splice(0)) r.close();
      closeConn();
      started.kill();
      await started.child.status;
      await started.exit().catch(() => {});
      scratch.cleanup();
    },
  };
}

/** Runs `fn` against a fresh helper session and always cleans up after it */
export async function withSession(
  fn: (s: Session) => Promise<void> | void,
  args: readonly string[] = [],
  options: SpawnOptions = {},
): Promise<void> {
  const s = await startSession(args, options);
  try {
    await fn(s);
  } finally {
    await s.close();
  }
}

/** The helper's open descriptors, fd -> target */
export function openDescriptors(pid: number): Map<number, string> {
  return processDescriptors(pid);
}

const RECVMSG = Deno.build.arch === "aarch64" ? 212 : 47;

/** Whether the helper's main thread is blocked in recvmsg() right now */
export function blockedInRecvmsg(pid: number): boolean {
  const text = readSmallFile(`/proc/${pid}/syscall`);
  return text !== null && Number(text.split(" ")[0]) === RECVMSG;
}

/**
 * Waits until `predicate` holds, checking every few milliseconds, for at most
 * `ms`; throws naming `what` otherwise. For states no descriptor can signal
 * (a process's syscall, its CPU time), not as a stand-in for a sleep.
 */
export async function waitUntil(predicate: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Waits until the helper is back in recvmsg(), i.e. done with the last message */
export function idle(pid: number, ms = 10000): Promise<void> {
  return waitUntil(() => blockedInRecvmsg(pid), ms, `helper ${pid} to block in recvmsg()`);
}

// ---- directory mode: what a waiting helper is doing ----

// poll() on x86_64 (glibc may use ppoll); aarch64 has only ppoll
const POLL_SYSCALLS = Deno.build.arch === "aarch64" ? [73] : [7, 271];

/** Whether the helper's main thread is blocked in poll() right now */
export function blockedInPoll(pid: number): boolean {
  const text = readSmallFile(`/proc/${pid}/syscall`);
  return text !== null && POLL_SYSCALLS.includes(Number(text.split(" ")[0]));
}

/** Whether the helper holds an inotify descriptor */
export function holdsInotify(pid: number): boolean {
  return [...openDescriptors(pid).values()].includes("anon_inode:inotify");
}

/**
 * Waits until the helper watches its directory: blocked in poll() with an
 * inotify descriptor open, so its watch is set and its first listing done.
 */
export function watching(pid: number, ms = 20000): Promise<void> {
  return waitUntil(
    () => blockedInPoll(pid) && holdsInotify(pid),
    ms,
    `helper ${pid} to wait on inotify`,
  );
}

/**
 * Whether the helper is between two attempts at a refused connection: blocked
 * in poll() with a short timeout (the back-off pauses last at most a few
 * hundred milliseconds; waiting on inotify alone has none, or --timeout's)
 */
export function pausedBetweenAttempts(pid: number): boolean {
  const text = readSmallFile(`/proc/${pid}/syscall`);
  if (text === null) return false;
  const fields = text.split(" ");
  if (!POLL_SYSCALLS.includes(Number(fields[0]))) return false;
  // ppoll() passes a pointer to its timeout, which cannot be read from here
  if (Number(fields[0]) !== 7) return true;
  // poll(fds, nfds, timeout): the timeout is an int in the third argument
  const timeout = Number(BigInt.asIntN(32, BigInt(fields[3] ?? "-1")));
  return timeout >= 0 && timeout <= 1000;
}

/** Waits until the helper is retrying a refused connection */
export function retryingRefused(pid: number, ms = 20000): Promise<void> {
  return waitUntil(
    () => pausedBetweenAttempts(pid),
    ms,
    `helper ${pid} to back off after ECONNREFUSED`,
  );
}

/** One character of /proc/PID/stat: R, S, T (stopped), ... */
export function processState(pid: number): string | null {
  const text = readSmallFile(`/proc/${pid}/stat`);
  if (text === null) return null;
  return text.slice(text.lastIndexOf(")") + 2).split(" ")[0] ?? null;
}

let clockTicks: number | null = null;

/** CPU time (user + system, every thread) the process has used, in seconds */
export function cpuSeconds(pid: number): number {
  if (clockTicks === null) {
    const out = new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).outputSync();
    clockTicks = Number(new TextDecoder().decode(out.stdout).trim()) || 100;
  }
  const text = readSmallFile(`/proc/${pid}/stat`);
  if (text === null) throw new Error(`process ${pid} is gone`);
  // Fields after "(comm) ": state is field 3, utime 14, stime 15
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/**
 * Waits until the process's CPU time has not moved for `quietMs` (startup,
 * JIT compilation and the like are over), for at most `ms`. A process that
 * keeps using CPU may still find a quiet moment: what counts is the
 * measurement (cpuShare) that follows.
 */
export async function cpuSettled(pid: number, quietMs = 300, ms = 20000): Promise<void> {
  let last = cpuSeconds(pid);
  let since = performance.now();
  const quiet = () => {
    const now = cpuSeconds(pid);
    if (now !== last) {
      last = now;
      since = performance.now();
    }
    return performance.now() - since >= quietMs;
  };
  await waitUntil(quiet, ms, `the CPU time of ${pid} to settle`);
}

/**
 * CPU time of every thread of a process, in seconds, to the nanosecond
 * (/proc/PID/task/TID/schedstat), where clock ticks would round a small
 * share to 0 or to a whole 10 ms.
 */
export function cpuPrecise(pid: number): number {
  let ns = 0;
  for (const tid of directoryNames(`/proc/${pid}/task`)) {
    const text = readSmallFile(`/proc/${pid}/task/${tid}/schedstat`);
    if (text !== null) ns += Number(text.split(" ")[0]);
  }
  return ns / 1e9;
}

/**
 * The share of one CPU the process uses over a window of `ms` of wall time.
 * This is a measurement over a duration, not a wait for an event.
 */
export async function cpuShare(pid: number, ms: number): Promise<number> {
  const cpu0 = cpuPrecise(pid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const cpu1 = cpuPrecise(pid);
  const wall = (performance.now() - t0) / 1000;
  return (cpu1 - cpu0) / wall;
}

// ---- what most system tests do with a helper that finds a socket ----

/** How long a test waits for the helper to connect */
export const ACCEPT_MS = 20000;

/** Accepts the helper's connection on `listener`, or kills it and says what it printed */
export async function accepted(helper: Helper, listener: number): Promise<number> {
  try {
    return acceptWithin(listener, ACCEPT_MS);
  } catch (e) {
    helper.kill();
    const out = await helper.exit();
    throw new Error(`${(e as Error).message}; helper said: ${out.stderr}`);
  }
}

/** Closes passt's end: the helper must exit 0 with nothing on stdout */
export async function finish(helper: Helper, conn: number): Promise<Outcome> {
  closeFd(conn);
  const out = await helper.exit();
  assert.deepEqual([out.code, out.signal, out.stdout], [0, null, ""], `stderr: ${out.stderr}`);
  return out;
}

/** Expects a failure: `code`, one line on stderr matching `pattern` */
export function assertFailure(out: Outcome, code: number, pattern: RegExp): void {
  assert.equal(out.code, code, `exit status; stderr: ${out.stderr}`);
  assert.equal(out.stdout, "");
  assert.match(out.stderr.trimEnd(), pattern);
  assert.equal(out.stderr.trimEnd().split("\n").length, 1, `one line: ${out.stderr}`);
}

/** The non-empty lines of `text` */
export function lines(text: string): string[] {
  return text.trimEnd().split("\n").filter((l) => l !== "");
}

/** A helper started on `args`, once it watches its directory */
export async function watchingHelper(
  args: readonly string[],
  options: SpawnOptions = {},
): Promise<Helper> {
  const helper = new Helper(args, options);
  try {
    await watching(helper.pid);
  } catch (e) {
    helper.kill();
    const out = await helper.exit();
    throw new Error(`${(e as Error).message}; helper said: ${out.stderr}`);
  }
  return helper;
}

// ---- a peer's view of a helper that serves ----

/**
 * Plays passt on `conn`: each of `cmds` (1 ON, 0 OFF) with `count` fresh
 * loopback connections of `family`; each must be echoed within `ms` and
 * leave every socket in that repair state
 */
export function switchFresh(
  conn: number,
  cmds: readonly number[],
  family: 4 | 6,
  count: number,
  ms = 10000,
): void {
  const tcp = tcpConnections(family, count);
  try {
    for (const cmd of cmds) {
      sendCommand(conn, cmd, tcp.local);
      assert.equal(readReply(conn, ms), cmd, `reply to ${cmd}`);
      for (const fd of tcp.local) assert.equal(repairState(fd), cmd, `repair state after ${cmd}`);
    }
  } finally {
    tcp.close();
  }
}

/** Ends a child process started for a test, whatever state it is in, and waits for it */
export async function stopChild(
  child: Deno.ChildProcess,
  output: Promise<Deno.CommandOutput>,
): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch {
    // already gone
  }
  await output.catch(() => {});
}
