// The distributable forms of the program (deno task compile, deno task
// bundle): building them as an operator would, and running the protocol
// system tests against what was built.
//
// Every command here runs under coreutils `timeout`, which kills the whole
// process group when time runs out, so a stuck build or a stuck child test
// run (and the helpers it started) cannot hang the suite.

export const ROOT = new URL("../../", import.meta.url).pathname;
/** deno task compile: the single executable */
export const BINARY = `${ROOT}dist/passt-repair`;
/** deno task bundle: the whole program in one JavaScript file... */
export const BUNDLE = `${ROOT}dist/passt-repair.js`;
/** ...and the POSIX sh launcher that runs it */
export const LAUNCHER = `${ROOT}dist/passt-repair.sh`;
export const PROTOCOL_TESTS = `${ROOT}tests/system/protocol_test.ts`;

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
  /** `timeout` ended it */
  timedOut: boolean;
}

export interface RunOptions {
  /** Upper bound on the run, in seconds */
  seconds: number;
  env?: Record<string, string>;
  /** Start from an empty environment (plus `env`) instead of ours */
  clearEnv?: boolean;
  cwd?: string;
}

// Absolute, so that it is found whatever PATH the child gets
const TIMEOUT = ["/usr/bin/timeout", "/bin/timeout"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}) ?? "timeout";

/** Runs argv to completion, for at most `seconds` */
export async function runBounded(argv: readonly string[], options: RunOptions): Promise<Run> {
  const out = await new Deno.Command(TIMEOUT, {
    // TERM at the limit, KILL 10 s later if that was not enough
    args: ["--kill-after=10", String(options.seconds), ...argv],
    cwd: options.cwd ?? ROOT,
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...options.env },
    clearEnv: options.clearEnv ?? false,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: out.code,
    stdout: decoder.decode(out.stdout),
    stderr: decoder.decode(out.stderr),
    timedOut: out.code === 124 || out.code === 137,
  };
}

/** `deno task NAME` in the project's root, as an operator runs it */
export function runTask(name: string, seconds: number): Promise<Run> {
  return runBounded([Deno.execPath(), "task", name], { seconds });
}

/** Throws unless `path` was written at or after `since` (ms since the epoch) */
export function assertWrittenSince(path: string, since: number): void {
  const mtime = Deno.statSync(path).mtime?.getTime() ?? 0;
  // File times come from a coarse kernel clock: allow it to lag a little
  if (mtime < since - 1000) {
    throw new Error(`${path} is older than the build that should have written it`);
  }
}

let bundled: Promise<void> | undefined;

/** Runs `deno task bundle` once per test process; throws if it failed */
export function buildBundle(): Promise<void> {
  bundled ??= (async () => {
    const since = Date.now();
    const run = await runTask("bundle", 300);
    if (run.code !== 0) {
      throw new Error(`deno task bundle failed (status ${run.code}):\n${run.stderr}`);
    }
    assertWrittenSince(BUNDLE, since);
    assertWrittenSince(LAUNCHER, since);
  })();
  return bundled;
}

export interface SuiteResult extends Run {
  passed: number;
  failed: number;
}

/**
 * Runs the protocol system tests in a child `deno test` (with the same
 * explicit permissions as `deno task test`), starting the helper as `bin`
 * through PASST_REPAIR_BIN instead of `deno run --allow-ffi main.ts`.
 */
export async function runProtocolSuite(
  bin: string,
  options: { env?: Record<string, string>; filter?: string } = {},
): Promise<SuiteResult> {
  const run = await runBounded([
    Deno.execPath(),
    "test",
    "--allow-ffi",
    "--allow-run",
    "--allow-read",
    "--allow-write",
    "--allow-env=PASST_REPAIR_BIN",
    ...(options.filter === undefined ? [] : ["--filter", options.filter]),
    PROTOCOL_TESTS,
  ], { seconds: 600, env: { PASST_REPAIR_BIN: bin, ...options.env } });
  const output = run.stdout + run.stderr;
  // "ok | 22 passed | 0 failed (1s)", or "FAILED | 21 passed | 1 failed (1s)"
  const summary = /^(?:ok|FAILED) \| (\d+) passed.*?\| (\d+) failed/m.exec(output);
  return {
    ...run,
    passed: Number(summary?.[1] ?? 0),
    failed: Number(summary?.[2] ?? 0),
  };
}

/** The argument list of a running process (/proc/PID/cmdline) */
export function splitNul(text: string): string[] {
  const parts = text.split("\0");
  if (parts.at(-1) === "") parts.pop();
  return parts;
}

/**
 * `deno task install` with PASST_REPAIR_PREFIX=`prefix`, as an operator runs it; throws
 * if it failed. Returns the installed command, PREFIX/bin/passt-repair.
 */
export async function installTo(prefix: string): Promise<string> {
  const run = await runBounded([Deno.execPath(), "task", "install"], {
    seconds: 300,
    env: { PASST_REPAIR_PREFIX: prefix },
  });
  if (run.code !== 0) {
    throw new Error(`deno task install failed (status ${run.code}):\n${run.stdout}${run.stderr}`);
  }
  return `${prefix}/bin/passt-repair`;
}
