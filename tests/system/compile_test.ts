// The single-binary distribution: `deno task compile` writes
// dist/passt-repair, with --allow-ffi (and no other permission) built in.
//
// `deno compile` needs Deno's compile runtime (denort), which it downloads
// on first use. Where that download cannot happen (a machine without
// internet, like the ones this project is tested on), these tests are
// skipped and say so. Whether that is the case is found out honestly: the
// build is attempted once, with a time limit, and its error is read. Any
// other failure of the build fails the tests.

import assert from "node:assert/strict";
import { BINARY, runBounded, runProtocolSuite, runTask } from "../support/artefact.ts";
import type { Run } from "../support/artefact.ts";
import { Scratch } from "../support/helper.ts";
import { sharedScratch } from "../support/reachable.ts";
import { VERSION } from "../../src/version.ts";

/** Time for the build, the runtime download included (about 100 MB) */
const COMPILE_SECONDS = 300;

type Attempt =
  | { kind: "built" }
  | { kind: "skipped"; reason: string }
  | { kind: "failed"; run: Run };

/** Whether a failed build failed for want of the runtime download, and how */
function runtimeUnavailable(run: Run): string | null {
  const text = run.stderr + run.stdout;
  const downloading = /\bdenort-[\w.-]+\.zip\b/.test(text);
  if (!downloading) return null;
  if (run.timedOut) {
    return `the download of Deno's compile runtime (denort) did not finish within ${COMPILE_SECONDS} s`;
  }
  // deno prints "error: ..." then the chain of causes as numbered lines
  // under "Caused by:" ("0: Setting up base binary.", "1: error sending
  // request for url (...)", ...): it must be a network failure, and its
  // deepest cause says which
  const error = /^error: (.+)$/m.exec(text)?.[1] ?? "";
  const causedBy = text.split(/^Caused by:\s*$/m)[1]?.split(/^Stack backtrace:\s*$/m)[0] ?? "";
  const chain = [error, ...[...causedBy.matchAll(/^\s*\d+: (.+)$/gm)].map((m) => m[1]!.trim())];
  const network =
    /dns error|error sending request|connect|timed out|status|certificate|refused|unreachable/i;
  if (!chain.some((line) => network.test(line))) return null;
  return `deno compile could not download Deno's compile runtime (denort): ${chain.at(-1)}`;
}

async function attemptCompile(): Promise<Attempt> {
  const since = Date.now();
  const run = await runTask("compile", COMPILE_SECONDS);
  if (run.code === 0) {
    const mtime = Deno.statSync(BINARY).mtime?.getTime() ?? 0;
    if (mtime < since - 1000) return { kind: "failed", run: { ...run, stderr: `stale ${BINARY}` } };
    return { kind: "built" };
  }
  const reason = runtimeUnavailable(run);
  return reason === null ? { kind: "failed", run } : { kind: "skipped", reason };
}

const attempt = await attemptCompile();
const skip = attempt.kind === "skipped" ? attempt.reason : null;
if (skip !== null) console.warn(`compile tests skipped: ${skip}`);

/** Registers a test of the compiled binary: skipped, with the reason in its name, if it could not be built */
function binaryTest(name: string, fn: () => Promise<void>): void {
  Deno.test({
    name: skip === null ? name : `${name} (skipped: ${skip})`,
    ignore: skip !== null,
    fn: async () => {
      if (attempt.kind === "failed") {
        throw new Error(
          `deno task compile failed (status ${attempt.run.code}):\n${attempt.run.stderr}`,
        );
      }
      await fn();
    },
  });
}

binaryTest("deno task compile builds dist/passt-repair, the program itself", async () => {
  // A binary built on a base that is not Deno's compile runtime (DENORT_BIN
  // pointing at deno, say) would be a plain deno: it must be our program
  const version = await runBounded([BINARY, "--version"], { seconds: 60 });
  assert.equal(version.code, 0, version.stderr);
  assert.match(version.stdout, new RegExp(`^passt-repair ${VERSION.replaceAll(".", "\\.")} `));
  const usage = await runBounded([BINARY], { seconds: 60 });
  assert.equal(usage.code, 2, "no PATH is a usage error");
  assert.match(usage.stderr, /^Missing PATH$/m);
});

binaryTest("the protocol system tests pass against the compiled binary", async () => {
  const suite = await runProtocolSuite(BINARY);
  const output = suite.stdout + suite.stderr;
  assert.equal(suite.code, 0, output);
  assert.equal(suite.failed, 0, output);
  assert.ok(suite.passed > 0, `no protocol test ran:\n${output}`);
});

binaryTest(
  "a file capability on the binary alone lets an unprivileged user set TCP_REPAIR",
  async () => {
    // A copy that the user nobody can reach and run, in a folder it can enter
    const scratch = sharedScratch();
    if (typeof scratch === "string") throw new Error(`cannot run this test here: ${scratch}`);
    try {
      const copy = scratch.path("passt-repair");
      Deno.copyFileSync(BINARY, copy);
      Deno.chmodSync(copy, 0o755);
      const asNobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        copy,
        "--check",
      ];
      const without = await runBounded(asNobody, { seconds: 60 });
      assert.equal(without.code, 1, `without the file capability: ${without.stderr}`);
      assert.match(without.stderr, /CAP_NET_ADMIN/);
      const setcap = await runBounded(["setcap", "cap_net_admin+ep", copy], { seconds: 30 });
      assert.equal(setcap.code, 0, `setcap: ${setcap.stderr}`);
      const granted = await runBounded(asNobody, { seconds: 60 });
      assert.deepEqual([granted.code, granted.stdout, granted.stderr], [0, "", ""]);
    } finally {
      scratch.cleanup();
    }
  },
);

Deno.test("a build that fails for another reason is not taken for a missing runtime", async () => {
  // The skip above rests on reading deno compile's error: make sure a build
  // that fails before any download (here, a type error) is not read as one
  const scratch = new Scratch();
  try {
    Deno.writeTextFileSync(scratch.path("bad.ts"), "const n: number = 'text';\nconsole.log(n);\n");
    const run = await runBounded([
      Deno.execPath(),
      "compile",
      "--allow-ffi",
      "--no-config",
      "--output",
      scratch.path("bad"),
      scratch.path("bad.ts"),
    ], { seconds: COMPILE_SECONDS, cwd: scratch.dir });
    assert.notEqual(run.code, 0, "a type error fails the build");
    assert.match(run.stderr, /TS2322/);
    assert.equal(runtimeUnavailable(run), null);
  } finally {
    scratch.cleanup();
  }
});
