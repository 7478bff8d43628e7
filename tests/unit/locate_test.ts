// What to do with PATH, and how to address the socket found: the pure
// decisions of locate.ts and path.ts. Runs with no permissions.

import assert from "node:assert/strict";
import { S_IFDIR, S_IFIFO, S_IFREG, S_IFSOCK } from "../../src/abi.ts";
import { type Plan, planFor } from "../../src/locate.ts";
import { addressRoute, byteLength, joinPath, splitPath } from "../../src/path.ts";

const ENOENT = 2, EACCES = 13, ENOTDIR = 20;

Deno.test("planFor() decides from PATH's type and --wait", () => {
  const cases: [string, number, boolean, Plan][] = [
    ["/run/p.repair", S_IFSOCK | 0o755, false, { kind: "socket" }],
    ["/run/p.repair", S_IFSOCK | 0o755, true, { kind: "socket" }],
    ["/run/dir", S_IFDIR | 0o755, false, { kind: "directory" }],
    ["/run/dir/", S_IFDIR | 0o755, true, { kind: "directory" }],
    ["/run/p.repair", S_IFREG | 0o644, false, { kind: "not-a-socket" }],
    ["/run/p.repair", S_IFIFO | 0o644, false, { kind: "not-a-socket" }],
    // --wait: the name may exist as something else for now; wait for a socket
    ["/run/p.repair", S_IFREG | 0o644, true, {
      kind: "await-name",
      dir: "/run",
      name: "p.repair",
    }],
    ["/run/p.repair", -ENOENT, false, { kind: "stat-failed", errno: ENOENT }],
    ["/run/p.repair", -ENOENT, true, { kind: "await-name", dir: "/run", name: "p.repair" }],
    ["p.repair", -ENOENT, true, { kind: "await-name", dir: ".", name: "p.repair" }],
    ["/run/gone/", -ENOENT, true, { kind: "stat-failed", errno: ENOENT }],
    ["/run/p.repair", -EACCES, true, { kind: "stat-failed", errno: EACCES }],
    ["/file/p.repair", -ENOTDIR, true, { kind: "stat-failed", errno: ENOTDIR }],
  ];
  for (const [path, stat, wait, plan] of cases) {
    assert.deepEqual(planFor(path, stat, wait), plan, `${path} ${stat} wait=${wait}`);
  }
});

Deno.test("splitPath() cuts at the last slash and normalises nothing", () => {
  const cases: [string, string, string][] = [
    ["/run/passt/vm.repair", "/run/passt", "vm.repair"],
    ["vm.repair", ".", "vm.repair"],
    ["/vm.repair", "/", "vm.repair"],
    ["a//b.repair", "a/", "b.repair"],
    ["../x/./y.repair", "../x/.", "y.repair"],
    ["dir/", "dir", ""],
  ];
  for (const [path, dir, name] of cases) assert.deepEqual(splitPath(path), { dir, name }, path);
});

Deno.test("joinPath() adds one slash, and none after a trailing one", () => {
  assert.equal(joinPath("/run/passt", "vm.repair"), "/run/passt/vm.repair");
  assert.equal(joinPath("/run/passt/", "vm.repair"), "/run/passt/vm.repair");
  assert.equal(joinPath("/", "vm.repair"), "/vm.repair");
  assert.equal(joinPath("link", ".."), "link/..");
});

Deno.test("addressRoute() measures UTF-8 bytes: direct up to 107, then through the directory", () => {
  const dir = "/" + "d".repeat(90);
  const fits = `${dir}/${"n".repeat(107 - dir.length - 1)}`;
  assert.equal(byteLength(fits), 107);
  assert.deepEqual(addressRoute(fits, "n"), { kind: "direct" });
  assert.deepEqual(addressRoute(fits + "n", "n"), { kind: "through-directory" });
  // 54 characters but 108 bytes: JavaScript's length would say it fits
  const wide = "/" + "é".repeat(53) + "x";
  assert.equal(wide.length, 55);
  assert.deepEqual(addressRoute(wide, "x"), { kind: "through-directory" });
  // A name that cannot fit even alone: its byte count is the answer
  const name = "é".repeat(50) + ".repair"; // 57 characters, 107 bytes
  assert.deepEqual(addressRoute(`${dir}/${name}`, name), { kind: "through-directory" });
  const longer = "é" + name; // 109 bytes
  assert.deepEqual(addressRoute(`${dir}/${longer}`, longer), { kind: "too-long", bytes: 109 });
});
