// What to do with PATH, and how to address the socket found: the pure
// decisions of locate.ts and path.ts. Runs with no permissions.

import assert from "node:assert/strict";
import { S_IFDIR, S_IFIFO, S_IFREG, S_IFSOCK } from "../../src/abi.ts";
import { linkProblem, peerMayServe, peerMismatch, type Plan, planFor } from "../../src/locate.ts";
import {
  byteLength,
  joinPath,
  oneLine,
  procFdPath,
  show,
  showBytes,
  sockaddrUn,
  splitPath,
} from "../../src/path.ts";

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

Deno.test("procFdPath() always fits sun_path, whatever the real path's length", () => {
  assert.equal(procFdPath(7), "/proc/self/fd/7");
  assert.ok(sockaddrUn(procFdPath(2 ** 31 - 1)).length < 108);
  assert.equal(byteLength("é"), 2);
});

Deno.test("show() escapes control characters, DEL, C1, separators and bidi overrides", () => {
  const cases: [string, string][] = [
    ["/run/passt/vm.repair", "/run/passt/vm.repair"],
    ["vm-é日本😀.repair", "vm-é日本😀.repair"],
    ["a\nb", "a\\x0ab"],
    ["\r\t\0", "\\x0d\\x09\\x00"],
    ["\x1b[2J", "\\x1b[2J"],
    ["\x7f\x85\x9b", "\\x7f\\x85\\x9b"],
    ["\u2028\u2029", "\\u{2028}\\u{2029}"],
    ["\u202egnp.exe", "\\u{202e}gnp.exe"],
    ["\u2066\u200f", "\\u{2066}\\u{200f}"],
    ["back\\slash", "back\\\\slash"],
    ["\ud800lone", "\\u{d800}lone"],
    ["vm\u200b.repair", "vm\\u{200b}.repair"],
    ["\u061c\u2060\ufeff\ufffa", "\\u{61c}\\u{2060}\\u{feff}\\u{fffa}"],
    ["tag\u{e0041}", "tag\\u{e0041}"],
  ];
  for (const [input, shown] of cases) assert.equal(show(input), shown, JSON.stringify(input));
});

Deno.test("show() output is one line of printable characters for every code point", () => {
  for (let c = 0; c < 0x3000; c++) {
    const shown = show(`a${String.fromCodePoint(c)}b`);
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/.test(shown), `U+${c}`);
  }
});

Deno.test("showBytes() shows valid UTF-8 as text and every other byte as \\xNN", () => {
  const b = (...x: number[]) => new Uint8Array(x);
  const cases: [Uint8Array, string][] = [
    [new TextEncoder().encode("vm-é.repair"), "vm-é.repair"],
    [b(0x76, 0xff, 0x6d), "v\\xffm"],
    [b(0xc3), "\\xc3"], // cut short
    [b(0xc0, 0xaf), "\\xc0\\xaf"], // overlong
    [b(0xed, 0xa0, 0x80), "\\xed\\xa0\\x80"], // a surrogate
    [b(0xf4, 0x90, 0x80, 0x80), "\\xf4\\x90\\x80\\x80"], // beyond U+10FFFF
    [b(0xe6, 0x97, 0xa5, 0x1b, 0xff), "日\\x1b\\xff"],
    [b(0x0a), "\\x0a"],
  ];
  for (const [bytes, shown] of cases) assert.equal(showBytes(bytes), shown, `${[...bytes]}`);
});

Deno.test("linkProblem() refuses a socket file with more than one name", () => {
  assert.equal(linkProblem(1), null);
  assert.match(linkProblem(2) ?? "", /^it has 2 hard links/);
});

Deno.test("oneLine() escapes what is left and leaves backslashes alone", () => {
  assert.equal(oneLine("already \\x0a shown"), "already \\x0a shown");
  assert.equal(oneLine("raw\nline\x1b"), "raw\\x0aline\\x1b");
});

Deno.test("peerMayServe() takes the owner of the socket file, or anyone root gave it to", () => {
  assert.equal(peerMayServe(1000, 1000), true);
  assert.equal(peerMayServe(0, 0), true);
  assert.equal(peerMayServe(0, 1000), false);
  assert.equal(peerMayServe(1001, 1000), false);
  // passt started as root: binds as root, listens as nobody
  assert.equal(peerMayServe(65534, 0), true);
  // A socket with no peer: SO_PEERCRED says uid (uid_t)-1
  assert.equal(peerMayServe(0xffffffff, 0), false);
  assert.equal(
    peerMismatch("/run/vm.repair", { pid: 42, uid: 0, gid: 0 }, 65534),
    "/run/vm.repair: it belongs to uid 65534, but the process accepting on it (pid 42) runs as uid 0",
  );
});
