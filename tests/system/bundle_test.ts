// The offline distribution: `deno task bundle` writes dist/passt-repair.js
// and the POSIX sh launcher dist/passt-repair.sh, and the launcher is a
// drop-in for the program (same arguments, statuses, protocol).

import assert from "node:assert/strict";
import {
  buildBundle,
  BUNDLE,
  LAUNCHER,
  runBounded,
  runProtocolSuite,
  splitNul,
} from "../support/artefact.ts";
import { Scratch } from "../support/helper.ts";
import { acceptWithin, closeFd, readSmallFile, unixListener } from "../support/peer_native.ts";
import { VERSION } from "../../src/version.ts";

const DENO = Deno.execPath();
const VERSION_LINE = new RegExp(`^passt-repair ${VERSION.replaceAll(".", "\\.")} \\(Deno `);

/** Flags that grant a Deno permission */
function permissionFlags(args: readonly string[]): string[] {
  return args.filter((a) => /^--allow-|^-A$|^--unstable/.test(a));
}

Deno.test("deno task bundle writes one JavaScript file and an executable sh launcher", async () => {
  await buildBundle();
  const js = Deno.readTextFileSync(BUNDLE);
  // One file: nothing imported but Deno's built-in node: modules
  const imports = [...js.matchAll(/^\s*(?:import|export)\b[^;]*?\bfrom\s+["']([^"']+)["']/gm)]
    .map((m) => m[1]!);
  assert.deepEqual(imports.filter((s) => !s.startsWith("node:")), [], "only node: imports");
  assert.doesNotMatch(js, /\bimport\s*\(/, "no dynamic import");
  const launcher = Deno.statSync(LAUNCHER);
  assert.equal(launcher.mode! & 0o111, 0o111, "launcher is executable");
  assert.match(Deno.readTextFileSync(LAUNCHER), /^#!\/bin\/sh\n/);
  const syntax = await runBounded(["sh", "-n", LAUNCHER], { seconds: 30 });
  assert.equal(syntax.code, 0, syntax.stderr);
});

Deno.test("the launcher runs deno with exactly --allow-ffi and DENO_NO_UPDATE_CHECK=1, in its own place", async () => {
  await buildBundle();
  const scratch = new Scratch();
  const socketPath = scratch.path("passt.socket.repair");
  const listener = unixListener(socketPath);
  // An environment with nothing in it for Deno: the launcher must set it all
  const child = new Deno.Command(LAUNCHER, {
    args: [socketPath],
    clearEnv: true,
    env: { PATH: "/usr/bin:/bin", DENO },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(child.stdout).text();
  const stderr = new Response(child.stderr).text();
  let conn = -1;
  try {
    conn = acceptWithin(listener, 20000);
    // Connected, so the program runs: the launcher's process is now deno
    // itself (exec), which is what receives the signals sent to the helper
    const argv = splitNul(readSmallFile(`/proc/${child.pid}/cmdline`) ?? "");
    assert.equal(argv[0], DENO, `exec'd deno in place of the shell: ${argv.join(" ")}`);
    assert.equal(argv[1], "run");
    assert.deepEqual(permissionFlags(argv), ["--allow-ffi"]);
    assert.deepEqual(argv.slice(-2), [BUNDLE, socketPath]);
    const environ = splitNul(readSmallFile(`/proc/${child.pid}/environ`) ?? "");
    assert.ok(environ.includes("DENO_NO_UPDATE_CHECK=1"), environ.join(" "));
  } finally {
    if (conn >= 0) closeFd(conn);
    closeFd(listener);
  }
  // passt closed the connection: the program's own silent exit 0
  const status = await child.status;
  assert.deepEqual([status.code, await stdout, await stderr], [0, "", ""]);
  scratch.cleanup();
});

Deno.test("the launcher finds deno on PATH, and its bundle through a symbolic link to itself", async () => {
  await buildBundle();
  const scratch = new Scratch();
  try {
    Deno.symlinkSync(DENO, scratch.path("deno"));
    Deno.symlinkSync(LAUNCHER, scratch.path("passt-repair"));
    const run = await runBounded([scratch.path("passt-repair"), "--version"], {
      seconds: 60,
      clearEnv: true,
      env: { PATH: `${scratch.dir}:/usr/bin:/bin` },
    });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, VERSION_LINE);
    assert.equal(run.stderr, "");
  } finally {
    scratch.cleanup();
  }
});

Deno.test("the launcher explains in one line, status 1, what it cannot find", async () => {
  await buildBundle();
  const scratch = new Scratch();
  try {
    const cases: [string, string[], Record<string, string>, RegExp][] = [
      [
        "no deno on PATH",
        [LAUNCHER],
        { PATH: scratch.dir },
        /^passt-repair: deno not found on PATH/,
      ],
      [
        "DENO not executable",
        [LAUNCHER],
        { PATH: "/usr/bin:/bin", DENO: scratch.path("nothing") },
        /is not an executable file$/m,
      ],
      [
        "no bundle next to it",
        [scratch.path("alone.sh")],
        { PATH: "/usr/bin:/bin", DENO },
        /^passt-repair: cannot read .*\/passt-repair\.js/,
      ],
    ];
    Deno.copyFileSync(LAUNCHER, scratch.path("alone.sh"));
    Deno.chmodSync(scratch.path("alone.sh"), 0o755);
    for (const [what, argv, env, pattern] of cases) {
      const run = await runBounded([...argv, "--version"], { seconds: 30, clearEnv: true, env });
      assert.equal(run.code, 1, `${what}: ${run.stderr}`);
      assert.equal(run.stdout, "", what);
      assert.match(run.stderr, pattern, what);
      assert.equal(run.stderr.trimEnd().split("\n").length, 1, `${what}: one line`);
    }
  } finally {
    scratch.cleanup();
  }
});

// What systemd's User= plus AmbientCapabilities=CAP_NET_ADMIN gives a service,
// emulated as root: no capability from being root (securebits noroot), the
// bounding set cut to CAP_NET_ADMIN, no_new_privs, and the capability only
// in the ambient set, which must survive exec of sh and then of deno.
const AMBIENT_ONLY = [
  "setpriv",
  "--securebits=+noroot,+noroot_locked",
  "--bounding-set=-all,+net_admin",
  "--no-new-privs",
];

Deno.test("through the launcher, an ambient CAP_NET_ADMIN alone lets the program set TCP_REPAIR", async () => {
  await buildBundle();
  const env = { DENO };
  const granted = await runBounded(
    [
      ...AMBIENT_ONLY,
      "--inh-caps=-all,+net_admin",
      "--ambient-caps=+net_admin",
      LAUNCHER,
      "--check",
    ],
    { seconds: 60, env },
  );
  assert.deepEqual([granted.code, granted.stdout, granted.stderr], [0, "", ""]);
  // The control: the same process without the ambient capability is refused
  const refused = await runBounded([...AMBIENT_ONLY, "--inh-caps=-all", LAUNCHER, "--check"], {
    seconds: 60,
    env,
  });
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /CAP_NET_ADMIN/);
});

Deno.test("the protocol system tests pass against the bundle's launcher", async () => {
  await buildBundle();
  // DENO names the same deno that runs these tests; every helper the child
  // suite starts is then `dist/passt-repair.sh PATH`
  const suite = await runProtocolSuite(LAUNCHER, { env: { DENO } });
  const output = suite.stdout + suite.stderr;
  assert.equal(suite.code, 0, output);
  assert.equal(suite.failed, 0, output);
  assert.ok(suite.passed > 0, `no protocol test ran:\n${output}`);
});

Deno.test("the protocol suite really starts the program named by PASST_REPAIR_BIN", async () => {
  // The control for the run above: a missing program must fail the suite
  const suite = await runProtocolSuite("/nonexistent/passt-repair", {
    filter: "exits 0 silently",
  });
  assert.notEqual(suite.code, 0, suite.stdout);
  assert.ok(suite.failed >= 1, suite.stdout + suite.stderr);
});
