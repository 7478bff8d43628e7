// tests/suite.ts, which `deno task test` runs: a test that leaves a file in
// TMPDIR or a process running fails the whole run, and the runner removes
// and kills what was left. The control for the check that every run of the
// suite ends with (its last line, "suite cleanup: ...").

import assert from "node:assert/strict";
import { ROOT, runBounded } from "../support/artefact.ts";
import { waitUntil } from "../support/helper.ts";

Deno.test("the suite runner fails a run that leaves a file or a process behind, and cleans up", async () => {
  const run = await runBounded([
    Deno.execPath(),
    "run",
    "--allow-run",
    "--allow-read",
    "--allow-write",
    `${ROOT}tests/suite.ts`,
    `${ROOT}tests/support/fixtures/leaky.ts`,
  ], { seconds: 120 });
  const output = run.stdout + run.stderr;
  assert.equal(run.code, 1, output);
  const pid = Number(/leaky fixture: sleep is (\d+)/.exec(output)?.[1]);
  assert.ok(pid > 0, output);
  assert.match(output, new RegExp(`process ${pid} still running: \\S*sleep 300`));
  assert.match(output, /left in TMPDIR: leaky-fixture-\w+\/pid/);
  // The runner killed it (init reaps it a moment later)
  await waitUntil(
    () => {
      try {
        return Deno.readTextFileSync(`/proc/${pid}/stat`).includes(") Z ");
      } catch {
        return true;
      }
    },
    10_000,
    `leaked process ${pid} to end`,
  );
});
