// The pure half of the directory watcher, driven with synthetic buffers laid
// out as the kernel lays them out. Runs with no permissions.

import assert from "node:assert/strict";
import {
  DT_DIR,
  DT_REG,
  DT_SOCK,
  IN_CREATE,
  IN_DELETE,
  IN_DELETE_SELF,
  IN_IGNORED,
  IN_ISDIR,
  IN_MOVE_SELF,
  IN_MOVED_FROM,
  IN_MOVED_TO,
  IN_Q_OVERFLOW,
  IN_UNMOUNT,
  S_IFSOCK,
} from "../../src/abi.ts";
import { PasstRepairError } from "../../src/errors.ts";
import { fileTypeName } from "../../src/locate.ts";
import {
  isRepairName,
  nameBytes,
  parseDirents,
  parseInotifyEvents,
  sameName,
  stepsFor,
  type WatchIds,
  type WatchStep,
} from "../../src/watch.ts";

const encoder = new TextEncoder();
const lenient = new TextDecoder();

/** An event or step with its name as text, for comparing */
function text<T extends { name: Uint8Array }>(x: T): Omit<T, "name"> & { name: string } {
  return { ...x, name: lenient.decode(x.name) };
}

interface Spec {
  wd: number;
  mask: number;
  cookie?: number;
  /** The name's bytes, or a string to encode */
  name?: string | Uint8Array;
  /** len field; by default the kernel's: name + NUL rounded up to 16 */
  len?: number;
}

/** struct inotify_event as the kernel writes it, NUL padding included */
function inotifyEvent(spec: Spec): Uint8Array {
  const name = typeof spec.name === "string" ? encoder.encode(spec.name) : spec.name ?? null;
  const len = spec.len ?? (name === null ? 0 : Math.ceil((name.length + 1) / 16) * 16);
  const out = new Uint8Array(16 + len); // zero-filled: the padding is NULs
  const v = new DataView(out.buffer);
  v.setInt32(0, spec.wd, true);
  v.setUint32(4, spec.mask, true);
  v.setUint32(8, spec.cookie ?? 0, true);
  v.setUint32(12, len, true);
  if (name !== null) out.set(name, 16);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Parses a whole buffer of events, names as text */
function parse(parts: readonly Uint8Array[]) {
  const buf = concat(parts);
  return parseInotifyEvents(buf, buf.length).map(text);
}

Deno.test("parseInotifyEvents() reads every event of one buffer, in order", () => {
  const events = parse([
    inotifyEvent({ wd: 1, mask: IN_CREATE, name: "notes.txt" }),
    inotifyEvent({ wd: 1, mask: IN_MOVED_TO, cookie: 77, name: "vm.socket.repair" }),
    inotifyEvent({ wd: 1, mask: IN_DELETE_SELF }),
    inotifyEvent({ wd: 1, mask: IN_IGNORED }),
    inotifyEvent({ wd: -1, mask: IN_Q_OVERFLOW }),
  ]);
  assert.deepEqual(events, [
    { wd: 1, mask: IN_CREATE, cookie: 0, name: "notes.txt" },
    { wd: 1, mask: IN_MOVED_TO, cookie: 77, name: "vm.socket.repair" },
    { wd: 1, mask: IN_DELETE_SELF, cookie: 0, name: "" },
    { wd: 1, mask: IN_IGNORED, cookie: 0, name: "" },
    { wd: -1, mask: IN_Q_OVERFLOW, cookie: 0, name: "" },
  ]);
});

Deno.test("parseInotifyEvents() handles names of every length from 1 to 255 bytes", () => {
  const names = Array.from({ length: 255 }, (_, i) => "n".repeat(i) + "x");
  // One event per read, and all of them in one buffer
  for (const name of names) {
    assert.deepEqual(parse([inotifyEvent({ wd: 3, mask: IN_CREATE, name })]).map((e) => e.name), [
      name,
    ]);
  }
  const all = parse(names.map((name) => inotifyEvent({ wd: 3, mask: IN_CREATE, name })));
  assert.deepEqual(all.map((e) => e.name), names);
});

Deno.test("parseInotifyEvents() stops a name at the first NUL of any amount of padding", () => {
  for (const len of [5, 8, 16, 32, 64, 272]) {
    const events = parse([
      inotifyEvent({ wd: 2, mask: IN_CREATE, name: "abcd", len }),
      inotifyEvent({ wd: 2, mask: IN_CREATE, name: "e.repair" }),
    ]);
    assert.deepEqual(events.map((e) => e.name), ["abcd", "e.repair"], `len ${len}`);
  }
});

Deno.test("parseInotifyEvents() reads only `length` bytes, at the buffer's own offset", () => {
  const body = concat([
    inotifyEvent({ wd: 4, mask: IN_CREATE, name: "a.repair" }),
    inotifyEvent({ wd: 4, mask: IN_MOVED_TO, name: "b.repair" }),
  ]);
  const backing = new Uint8Array(body.length + 100).fill(0xee);
  backing.set(body, 40);
  const view = backing.subarray(40); // byteOffset 40, trailing garbage after the events
  const events = parseInotifyEvents(view, body.length).map(text);
  assert.deepEqual(events.map((e) => [e.wd, e.mask, e.name]), [
    [4, IN_CREATE, "a.repair"],
    [4, IN_MOVED_TO, "b.repair"],
  ]);
});

Deno.test("parseInotifyEvents() rejects an event cut short", () => {
  const whole = inotifyEvent({ wd: 1, mask: IN_CREATE, name: "x.repair" });
  for (const cut of [1, 15, 16, 20, whole.length - 1]) {
    assert.throws(
      () => parseInotifyEvents(whole, cut),
      (e) => e instanceof PasstRepairError && /truncated event/.test(e.message),
      `cut at ${cut}`,
    );
  }
  assert.deepEqual(parseInotifyEvents(whole, 0), []);
});

Deno.test("parseInotifyEvents() keeps names as the kernel's bytes, UTF-8 or not", () => {
  const raw = new Uint8Array([0xff, 0xfe, ...encoder.encode(".repair")]);
  const buf = concat([
    inotifyEvent({ wd: 1, mask: IN_CREATE, name: "vm-é日本.repair" }),
    inotifyEvent({ wd: 1, mask: IN_CREATE, name: raw }),
  ]);
  const events = parseInotifyEvents(buf, buf.length);
  assert.deepEqual(events.map((e) => e.name), [encoder.encode("vm-é日本.repair"), raw]);
});

Deno.test("nameBytes() ends at the first NUL, or at the end without one, and copies", () => {
  assert.deepEqual(nameBytes(encoder.encode("ab\0cd")), encoder.encode("ab"));
  assert.deepEqual(nameBytes(encoder.encode("abcd")), encoder.encode("abcd"));
  assert.deepEqual(nameBytes(new Uint8Array(8)), new Uint8Array(0));
  const source = encoder.encode("x.repair\0");
  const copy = nameBytes(source);
  source[0] = 0x79;
  assert.equal(lenient.decode(copy), "x.repair");
});

Deno.test("sameName() compares bytes", () => {
  assert.ok(sameName(encoder.encode("a.repair"), encoder.encode("a.repair")));
  assert.ok(!sameName(encoder.encode("a.repair"), encoder.encode("a.repai")));
  assert.ok(!sameName(encoder.encode("a.repair"), encoder.encode("b.repair")));
});

// ---- what events mean ----

const IDS: WatchIds = { dir: 1, parent: 2 };

function steps(
  specs: readonly Spec[],
  wanted: (name: Uint8Array) => boolean = isRepairName,
  ids = IDS,
) {
  const buf = concat(specs.map(inotifyEvent));
  return stepsFor(parseInotifyEvents(buf, buf.length), ids, wanted).map((s: WatchStep) =>
    "name" in s ? text(s) : s
  );
}

Deno.test("isRepairName() accepts *.repair, including a name of exactly .repair", () => {
  for (const name of ["vm.socket.repair", ".repair", "x.repair", "é.repair"]) {
    assert.equal(isRepairName(encoder.encode(name)), true, name);
  }
  for (const name of ["notes.txt", "repair", "x.repairs", "x.repair~", "x.REPAIR", "", "repair."]) {
    assert.equal(isRepairName(encoder.encode(name)), false, name);
  }
});

Deno.test("stepsFor() keeps *.repair entries created or moved in, and nothing else", () => {
  const specs: Spec[] = [];
  for (let i = 0; i < 48; i++) specs.push({ wd: 1, mask: IN_CREATE, name: `noise-${i}` });
  specs.push(
    { wd: 1, mask: IN_CREATE, name: "notes.txt" },
    { wd: 1, mask: IN_CREATE, name: "repair" },
    { wd: 1, mask: IN_CREATE, name: "x.repairs" },
    { wd: 1, mask: IN_CREATE | IN_ISDIR, name: "d.repair" },
    { wd: 1, mask: IN_MOVED_TO, cookie: 9, name: "moved.repair" },
    { wd: 1, mask: IN_CREATE, name: ".repair" },
    { wd: 1, mask: IN_CREATE, name: "vm.repair" },
  );
  assert.deepEqual(steps(specs), [
    { kind: "entry", name: "d.repair" },
    { kind: "entry", name: "moved.repair" },
    { kind: "entry", name: ".repair" },
    { kind: "entry", name: "vm.repair" },
  ]);
});

Deno.test("stepsFor() with --wait keeps only the exact name", () => {
  const wanted = (n: Uint8Array) => sameName(n, encoder.encode("vm1.repair"));
  assert.deepEqual(
    steps([
      { wd: 1, mask: IN_CREATE, name: "vm2.repair" },
      { wd: 1, mask: IN_CREATE, name: "vm1.repair.old" },
      { wd: 1, mask: IN_MOVED_TO, name: "vm1.repair" },
    ], wanted),
    [{ kind: "entry", name: "vm1.repair" }],
  );
});

Deno.test("stepsFor() turns IN_Q_OVERFLOW into a rescan, keeping the events around it", () => {
  assert.deepEqual(
    steps([
      { wd: 1, mask: IN_CREATE, name: "a.repair" },
      { wd: -1, mask: IN_Q_OVERFLOW },
      { wd: 1, mask: IN_CREATE, name: "b.repair" },
    ]),
    [
      { kind: "entry", name: "a.repair" },
      { kind: "rescan" },
      { kind: "entry", name: "b.repair" },
    ],
  );
});

Deno.test("stepsFor() fails when the watched directory is deleted or unmounted", () => {
  assert.deepEqual(steps([{ wd: 1, mask: IN_DELETE_SELF }, { wd: 1, mask: IN_IGNORED }]), [
    { kind: "gone", reason: "deleted" },
    { kind: "gone", reason: "deleted" },
  ]);
  assert.deepEqual(steps([{ wd: 1, mask: IN_UNMOUNT }]), [{ kind: "gone", reason: "unmounted" }]);
});

Deno.test("stepsFor() looks again when the directory or one next to it moves or goes", () => {
  assert.deepEqual(
    steps([
      { wd: 1, mask: IN_MOVE_SELF },
      { wd: 2, mask: IN_DELETE | IN_ISDIR, name: "watched" },
      { wd: 2, mask: IN_MOVED_FROM | IN_ISDIR, cookie: 5, name: "watched" },
      { wd: 2, mask: IN_UNMOUNT },
    ]),
    [
      { kind: "recheck", reason: "moved away" },
      { kind: "recheck", reason: "deleted" },
      { kind: "recheck", reason: "moved away" },
      { kind: "recheck", reason: "unmounted" },
    ],
  );
});

Deno.test("stepsFor() ignores files deleted next to the directory, and the parent's own end", () => {
  assert.deepEqual(
    steps([
      { wd: 2, mask: IN_DELETE, name: "file.repair" },
      { wd: 2, mask: IN_MOVED_FROM, name: "other" },
      { wd: 2, mask: IN_IGNORED },
      { wd: 2, mask: IN_CREATE, name: "sibling.repair" },
    ]),
    [],
  );
});

Deno.test("stepsFor() handles one watch serving as directory and parent (PATH is /)", () => {
  const ids = { dir: 1, parent: 1 };
  assert.deepEqual(
    steps(
      [
        { wd: 1, mask: IN_CREATE, name: "a.repair" },
        { wd: 1, mask: IN_DELETE | IN_ISDIR, name: "tmp" },
      ],
      isRepairName,
      ids,
    ),
    [{ kind: "entry", name: "a.repair" }, { kind: "recheck", reason: "deleted" }],
  );
});

Deno.test("stepsFor() keeps a *.repair name that is not UTF-8, as its bytes", () => {
  const name = new Uint8Array([0x80, ...encoder.encode(".repair")]);
  const buf = inotifyEvent({ wd: 1, mask: IN_CREATE, name });
  assert.deepEqual(stepsFor(parseInotifyEvents(buf, buf.length), IDS, isRepairName), [
    { kind: "entry", name },
  ]);
});

// ---- getdents64 buffers ----

/** struct linux_dirent64 records, 8-byte aligned as the kernel writes them */
function dirents(entries: readonly [string | Uint8Array, number][]): Uint8Array {
  return concat(entries.map(([name, type], i) => {
    const bytes = typeof name === "string" ? encoder.encode(name) : name;
    const reclen = Math.ceil((19 + bytes.length + 1) / 8) * 8;
    const out = new Uint8Array(reclen);
    const v = new DataView(out.buffer);
    v.setBigUint64(0, BigInt(1000 + i), true);
    v.setBigInt64(8, BigInt(i + 1), true);
    v.setUint16(16, reclen, true);
    v.setUint8(18, type);
    out.set(bytes, 19);
    return out;
  }));
}

Deno.test("parseDirents() reads every entry but . and .., with names of every length", () => {
  const names = Array.from({ length: 255 }, (_, i) => "d".repeat(i + 1));
  const buf = dirents([
    [".", DT_DIR],
    ["..", DT_DIR],
    ["vm.repair", DT_SOCK],
    ["notes.txt", DT_REG],
    ...names.map((n): [string, number] => [n, DT_REG]),
  ]);
  const entries = parseDirents(buf, buf.length).map((n) => lenient.decode(n));
  assert.deepEqual(entries.slice(0, 2), ["vm.repair", "notes.txt"]);
  assert.deepEqual(entries.slice(2), names);
});

Deno.test("parseDirents() rejects a malformed record", () => {
  const good = dirents([["a.repair", DT_SOCK]]);
  assert.throws(() => parseDirents(good, good.length - 1), /malformed entry/);
  const zero = good.slice();
  new DataView(zero.buffer).setUint16(16, 0, true);
  assert.throws(() => parseDirents(zero, zero.length), /malformed entry/);
});

Deno.test("fileTypeName() names every file type", () => {
  assert.equal(fileTypeName(S_IFSOCK), "socket");
  assert.equal(fileTypeName(0o020000), "character device");
  assert.equal(fileTypeName(0o060000), "block device");
  assert.equal(fileTypeName(0o120000), "symbolic link");
  assert.equal(fileTypeName(0o070000), "file of unknown type 70000");
});
