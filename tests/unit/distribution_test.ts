// The build tasks in deno.json: what they grant and where they write.
// The compiled binary cannot be built where Deno's compile runtime cannot
// be downloaded, so its command line is checked here, with no permissions.

import assert from "node:assert/strict";
import config from "../../deno.json" with { type: "json" };

const tasks: Record<string, { description: string; command: string }> = config.tasks;

/** Flags that grant a Deno permission */
function permissionFlags(words: readonly string[]): string[] {
  return words.filter((w) => /^--allow-|^-A$|^--unstable/.test(w));
}

Deno.test("deno task compile bakes in --allow-ffi and no other permission", () => {
  const words = tasks.compile!.command.split(/\s+/);
  assert.equal(words[0], "DENO_NO_UPDATE_CHECK=1");
  assert.deepEqual(words.slice(1, 3), ["deno", "compile"]);
  assert.deepEqual(permissionFlags(words), ["--allow-ffi"]);
  // No V8 code cache in the temp directory for a privileged program
  assert.ok(words.includes("--no-code-cache"));
  assert.deepEqual(words.slice(-3), ["--output", "dist/passt-repair", "main.ts"]);
});

Deno.test("deno task bundle writes dist/passt-repair.js and the launcher beside it", () => {
  const [bundle, copy, ...rest] = tasks.bundle!.command.split(" && ");
  assert.deepEqual(rest, []);
  const words = bundle!.split(/\s+/);
  assert.equal(words[0], "DENO_NO_UPDATE_CHECK=1");
  assert.deepEqual(words.slice(1, 3), ["deno", "bundle"]);
  assert.deepEqual(permissionFlags(words), [], "bundling grants nothing");
  assert.deepEqual(words.slice(-3), ["--output", "dist/passt-repair.js", "main.ts"]);
  assert.equal(copy, "cp contrib/passt-repair.sh dist/passt-repair.sh");
});

Deno.test("every task has a description that starts with its group, and groups stay together", () => {
  const groups: string[] = [];
  for (const [name, task] of Object.entries(tasks)) {
    const group = /^(run|test|build|measure): \S/.exec(task.description)?.[1];
    assert.ok(group, `${name}: "${task.description}" starts with run:, test:, build: or measure:`);
    if (groups.at(-1) !== group) groups.push(group);
    assert.ok(task.command.length > 0, name);
  }
  assert.deepEqual(groups, ["run", "test", "build", "measure"], "listed group by group");
});

Deno.test("deno task install bundles first, then installs with no permission beyond files and its prefix", () => {
  const [bundle, install, ...rest] = tasks.install!.command.split(" && ");
  assert.deepEqual(rest, []);
  assert.equal(bundle, "deno task bundle");
  const words = install!.split(/\s+/);
  assert.deepEqual(permissionFlags(words), [
    "--allow-read",
    "--allow-write",
    "--allow-env=PASST_REPAIR_PREFIX",
  ]);
  assert.equal(words.at(-1), "contrib/install.ts");
});
