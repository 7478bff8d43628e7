// The build tasks in deno.json: what they grant and where they write.
// The compiled binary cannot be built where Deno's compile runtime cannot
// be downloaded, so its command line is checked here, with no permissions.

import assert from "node:assert/strict";
import config from "../../deno.json" with { type: "json" };

const tasks: Record<string, string> = config.tasks;

/** Flags that grant a Deno permission */
function permissionFlags(words: readonly string[]): string[] {
  return words.filter((w) => /^--allow-|^-A$|^--unstable/.test(w));
}

Deno.test("deno task compile bakes in --allow-ffi and no other permission", () => {
  const words = tasks.compile!.split(/\s+/);
  assert.equal(words[0], "DENO_NO_UPDATE_CHECK=1");
  assert.deepEqual(words.slice(1, 3), ["deno", "compile"]);
  assert.deepEqual(permissionFlags(words), ["--allow-ffi"]);
  // No V8 code cache in the temp directory for a privileged program
  assert.ok(words.includes("--no-code-cache"));
  assert.deepEqual(words.slice(-3), ["--output", "dist/passt-repair", "main.ts"]);
});

Deno.test("deno task bundle writes dist/passt-repair.js and the launcher beside it", () => {
  const [bundle, copy, ...rest] = tasks.bundle!.split(" && ");
  assert.deepEqual(rest, []);
  const words = bundle!.split(/\s+/);
  assert.equal(words[0], "DENO_NO_UPDATE_CHECK=1");
  assert.deepEqual(words.slice(1, 3), ["deno", "bundle"]);
  assert.deepEqual(permissionFlags(words), [], "bundling grants nothing");
  assert.deepEqual(words.slice(-3), ["--output", "dist/passt-repair.js", "main.ts"]);
  assert.equal(copy, "cp contrib/passt-repair.sh dist/passt-repair.sh");
});
