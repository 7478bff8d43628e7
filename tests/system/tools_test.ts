// The developer tools behind `deno task fuzz` and `deno task bench` explain
// themselves: --help prints the options and exits 0; a bad option is one
// line on stderr and exit 2, never a stack trace.

import assert from "node:assert/strict";
import { ROOT, runBounded } from "../support/artefact.ts";

const TOOLS = [
  ["fuzz", `${ROOT}tests/fuzz.ts`],
  ["bench", `${ROOT}bench/bench.ts`],
] as const;

function run(script: string, args: string[]) {
  // The permissions of the tasks, so nothing fails for want of one
  return runBounded([
    Deno.execPath(),
    "run",
    "--allow-ffi",
    "--allow-run",
    "--allow-read",
    "--allow-write",
    "--allow-env=PASST_REPAIR_BIN",
    script,
    ...args,
  ], { seconds: 60 });
}

for (const [name, script] of TOOLS) {
  Deno.test(`deno task ${name} --help lists its options, exit 0`, async () => {
    const out = await run(script, ["--help"]);
    assert.deepEqual([out.code, out.stderr], [0, ""]);
    assert.match(out.stdout, new RegExp(`^usage: deno task ${name} `));
    assert.match(out.stdout, /--\w+ N/);
  });

  Deno.test(`deno task ${name} with a bad option says so in one line, exit 2`, async () => {
    for (const args of [["--bogus"], ["extra"], [name === "fuzz" ? "--seed=x" : "--samples=x"]]) {
      const out = await run(script, args);
      assert.equal(out.code, 2, `${args}: ${out.stderr}`);
      assert.equal(out.stdout, "", `${args}`);
      assert.match(out.stderr, new RegExp(`^${name}: .*--help`), `${args}`);
      assert.equal(out.stderr.trimEnd().split("\n").length, 1, `${args}: one line: ${out.stderr}`);
    }
  });
}
