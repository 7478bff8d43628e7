// deno task test: the whole test suite, then a check that it cleaned up.
//
// The suite runs `deno test` with the permissions the tests need, in a
// session of its own (setsid) and with TMPDIR set to a fresh private folder.
// When it ends, that folder must be empty and no process of its session may
// be left: a test that leaves a file or a process behind fails the run, here,
// whatever the test itself reported. Leftovers are listed, then removed or
// killed, so one bad run does not spoil the next.
//
// Private TMPDIR on purpose: the tests must work where the temporary
// directory is not world-readable (tests/support/helper.ts gives the ones
// that run an unprivileged helper a folder it can reach).
//
// Usage: deno task test [deno test options] [files or folders, default tests/]
// tests/system/suite_test.ts checks that a leaking test does fail the run.

const ROOT = new URL("../", import.meta.url).pathname;
const PERMISSIONS = [
  "--allow-ffi",
  "--allow-run",
  "--allow-read",
  "--allow-write",
  "--allow-env=PASST_REPAIR_BIN,HOME",
];

/** How long processes of the session may take to go once the suite ended */
const SETTLE_MS = 5_000;

/**
 * Processes whose session is `sid`, with their command lines. From ps(1):
 * Deno lets a program read /proc only with every permission.
 */
function sessionMembers(sid: number): { pid: number; command: string }[] {
  const out = new Deno.Command("ps", {
    args: ["-e", "-o", "pid=,sid=,stat=,args="],
    stdout: "piped",
    stderr: "inherit",
  }).outputSync();
  if (!out.success) throw new Error("ps failed: cannot look for processes left behind");
  const members: { pid: number; command: string }[] = [];
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (m === null || Number(m[2]) !== sid || m[3]!.startsWith("Z")) continue;
    members.push({ pid: Number(m[1]), command: m[4]! });
  }
  return members;
}

/** Every path under `dir`, relative to it */
function contents(dir: string): string[] {
  const found: string[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    found.push(entry.name);
    if (entry.isDirectory) {
      try {
        for (const inner of contents(`${dir}/${entry.name}`)) found.push(`${entry.name}/${inner}`);
      } catch {
        // unreadable: the name above is enough
      }
    }
  }
  return found;
}

async function settle(sid: number): Promise<{ pid: number; command: string }[]> {
  const deadline = performance.now() + SETTLE_MS;
  let left = sessionMembers(sid);
  // Killed helpers are reaped by init a moment after the suite ends
  while (left.length > 0 && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    left = sessionMembers(sid);
  }
  return left;
}

/**
 * A new folder of mode 0700 in TMPDIR, with a short name: the tests put
 * socket paths under it, and sun_path holds 107 bytes.
 */
function privateFolder(): string {
  // Where TMPDIR is, without reading the environment: a probe made there
  const probe = Deno.makeTempDirSync();
  const parent = probe.slice(0, probe.lastIndexOf("/"));
  Deno.removeSync(probe);
  for (;;) {
    const name = `${parent}/pr-${crypto.randomUUID().slice(0, 6)}`;
    try {
      Deno.mkdirSync(name, { mode: 0o700 });
      return name;
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
  }
}

async function main(args: string[]): Promise<number> {
  const paths = args.filter((a) => !a.startsWith("-") && /(^|\/)tests\b|\.ts$/.test(a));
  const tmp = privateFolder();
  try {
    const child = new Deno.Command("setsid", {
      args: [Deno.execPath(), "test", ...PERMISSIONS, ...args, ...(paths.length ? [] : ["tests/"])],
      cwd: ROOT,
      env: { TMPDIR: tmp, DENO_NO_UPDATE_CHECK: "1" },
      stdin: "null",
    }).spawn();
    // In a session of its own the suite no longer gets the terminal's ^C:
    // pass it on, then clean up as after any other end
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(signal, () => {
        try {
          child.kill(signal);
        } catch {
          // already gone
        }
      });
    }
    // Our own session id is the child's pid: setsid does not fork when its
    // caller is not a process group leader, and a spawned child is not one
    const sid = child.pid;
    const status = await child.status;

    const problems: string[] = [];
    const processes = await settle(sid);
    for (const p of processes) {
      problems.push(`process ${p.pid} still running: ${p.command}`);
      try {
        Deno.kill(p.pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
    const files = contents(tmp);
    for (const name of files.slice(0, 20)) problems.push(`left in TMPDIR: ${name}`);
    if (files.length > 20) problems.push(`... and ${files.length - 20} more in TMPDIR`);

    if (problems.length > 0) {
      console.error(`FAILED | the test suite left things behind:\n  ${problems.join("\n  ")}`);
      return status.code === 0 ? 1 : status.code;
    }
    console.error("suite cleanup: nothing left in TMPDIR, no process left running");
    return status.code;
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
