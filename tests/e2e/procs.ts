// Processes of one run: started with their output in a log file of the run
// folder, stopped by pid (passt changes to nobody and loses parent-death
// signals, so nothing may rely on them), and waited for with a bound.

export interface Started {
  name: string;
  child: Deno.ChildProcess;
  log: string;
  /** A pidfile the program writes itself (passt -P, QEMU -pidfile), if any */
  pidfile?: string;
  exited: Promise<Deno.CommandStatus>;
  status: Deno.CommandStatus | null;
}

const running = new Set<Started>();

/**
 * Starts `argv` with stdout and stderr appended to `log` (the pid stays the
 * program's: exec); with `piped`, stdin and stdout are pipes to us instead
 */
export function start(
  name: string,
  argv: readonly string[],
  log: string,
  options: { pidfile?: string; env?: Record<string, string>; piped?: boolean } = {},
): Started {
  const child = new Deno.Command("bash", {
    args: ["-c", options.piped ? 'exec "$@" 2>>"$0"' : 'exec "$@" >>"$0" 2>&1', log, ...argv],
    stdin: options.piped ? "piped" : "null",
    stdout: options.piped ? "piped" : "null",
    stderr: "null",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...(options.env ?? {}) },
  }).spawn();
  const p: Started = {
    name,
    child,
    log,
    exited: child.status,
    status: null,
    ...(options.pidfile ? { pidfile: options.pidfile } : {}),
  };
  running.add(p);
  p.exited.then((s) => {
    p.status = s;
    running.delete(p);
  });
  return p;
}

/** Runs `argv` to its end; its output is returned, not logged */
export async function run(
  argv: readonly string[],
  options: { allowFailure?: boolean; env?: Record<string, string> } = {},
): Promise<{ code: number; out: string }> {
  const out = await new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    stdin: "null",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...(options.env ?? {}) },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (out.code !== 0 && !options.allowFailure) {
    throw new Error(`${argv.join(" ")}: exit ${out.code}: ${text.trim()}`);
  }
  return { code: out.code, out: text };
}

/** Waits at most `ms` for the process to end; null if it did not */
export async function waitExit(p: Started, ms: number): Promise<Deno.CommandStatus | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  const s = await Promise.race([p.exited, timeout]);
  clearTimeout(timer);
  return s;
}

/**
 * Sends `signal` to `pid` with the shell's kill: Deno.kill would need
 * --allow-run for every program; false if there is no such process
 */
async function signal(pid: number, sig: "TERM" | "KILL" | "STOP" | "CONT" | "0"): Promise<boolean> {
  const { code } = await run(["bash", "-c", `kill -${sig} ${pid} 2>/dev/null`], {
    allowFailure: true,
  });
  return code === 0;
}

async function pidFromFile(path: string): Promise<number | null> {
  try {
    const n = Number((await Deno.readTextFile(path)).trim());
    return Number.isInteger(n) && n > 1 ? n : null;
  } catch {
    return null;
  }
}

/** Stops one process: SIGTERM to its pid (from its pidfile if it wrote one), SIGKILL after 3 s */
export async function stop(p: Started): Promise<void> {
  if (p.status) return;
  const pids = new Set<number>([p.child.pid]);
  if (p.pidfile) {
    const fromFile = await pidFromFile(p.pidfile);
    if (fromFile !== null) pids.add(fromFile);
  }
  for (const pid of pids) await signal(pid, "TERM");
  if (await waitExit(p, 3000)) return;
  for (const pid of pids) await signal(pid, "KILL");
  await waitExit(p, 3000);
}

/** Suspends one process (SIGSTOP), or lets it go on (SIGCONT) */
export async function suspend(p: Started, on: boolean): Promise<void> {
  if (!p.status) await signal(p.child.pid, on ? "STOP" : "CONT");
}

/** Stops everything still running, in reverse order of start */
export async function stopAll(): Promise<void> {
  for (const p of [...running].reverse()) await stop(p);
}

/** Text appended to a file since the last call: for logs that grow while we wait */
export class Tail {
  #offset = 0;
  text = "";
  constructor(readonly path: string) {}

  async read(): Promise<string> {
    let f: Deno.FsFile;
    try {
      f = await Deno.open(this.path);
    } catch {
      return this.text;
    }
    try {
      await f.seek(this.#offset, Deno.SeekMode.Start);
      const buf = new Uint8Array(1 << 20);
      for (;;) {
        const n = await f.read(buf);
        if (n === null || n === 0) break;
        this.#offset += n;
        this.text += new TextDecoder().decode(buf.subarray(0, n));
      }
    } finally {
      f.close();
    }
    return this.text;
  }
}

/** Polls `check` every 50 ms until it returns a value, at most `ms`; throws naming `what` */
export async function until<T>(
  what: string,
  ms: number,
  check: () => Promise<T | null | undefined | false>,
): Promise<T> {
  const end = performance.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (performance.now() > end) {
      throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}
