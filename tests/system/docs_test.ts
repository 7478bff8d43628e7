// Every `sh runnable` block of README.md and docs/, run in order as one
// script, as root, in a scratch prefix (PASST_REPAIR_PREFIX) that user 65534 can reach, with no
// deno on PATH: PATH is that prefix's bin/ and the system folders, not /usr/local/bin.
// The install block there (npx --yes deno@2.9.6 task install) is what puts
// passt-repair on that PATH. Network: only npx's registry, and only when its
// cache is empty.

import assert from "node:assert/strict";
import { ROOT, runBounded } from "../support/artefact.ts";
import { sharedScratch } from "../support/reachable.ts";
import { type Block, documents, runnableBlocks, script } from "../support/runnable.ts";

const blocks: Block[] = documents().flatMap((file) =>
  runnableBlocks(Deno.readTextFileSync(`${ROOT}${file}`), file)
);

/** Runs `text` with bash as the documents' reader would, PASST_REPAIR_PREFIX set */
async function runScript(text: string, prefix: string) {
  return await runBounded(["bash", "-c", text], {
    seconds: 900,
    clearEnv: true,
    env: {
      PASST_REPAIR_PREFIX: prefix,
      PATH: `${prefix}/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      HOME: Deno.env.get("HOME") ?? "/root",
      LANG: "C.UTF-8",
    },
  });
}

Deno.test("runnable blocks are found in the README and docs/, install first", () => {
  const where = blocks.map((b) => b.where);
  assert.ok(blocks.length >= 4, where.join(", "));
  assert.match(blocks[0]!.code, /task install/, "the first runnable block installs");
  assert.ok(blocks.some((b) => b.where.startsWith("docs/")), where.join(", "));
  // The extractor sees the block text exactly
  assert.deepEqual(
    runnableBlocks("x\n```sh runnable\necho a\n\necho b\n```\n```sh\nnot this\n```\n", "t.md"),
    [{ where: "t.md:3", code: "echo a\n\necho b" }],
  );
});

Deno.test("a failing command in a runnable block fails the run and names the block", async () => {
  const run = await runScript(
    script([{ where: "x.md:1", code: "true" }, {
      where: "x.md:9",
      code: "false\necho not reached",
    }]),
    "/nonexistent",
  );
  assert.notEqual(run.code, 0);
  assert.match(run.stderr, /### x\.md:9\n$/);
  assert.doesNotMatch(run.stdout, /not reached/);
});

Deno.test("every runnable block of README.md and docs/ works as written, in order", async () => {
  const scratch = sharedScratch();
  if (typeof scratch === "string") {
    throw new Error(`cannot run the documents' non-root recipe: ${scratch}`);
  }
  try {
    const run = await runScript(script(blocks), scratch.path("prefix"));
    const failedAt = [...run.stderr.matchAll(/^### (.*)$/gm)].at(-1)?.[1];
    assert.equal(
      run.code,
      0,
      `failed in the block at ${failedAt}:\n${run.stdout}\n${run.stderr}`,
    );
    assert.equal(failedAt, "all runnable blocks passed");
  } finally {
    scratch.cleanup();
  }
});
