// The input hold's books and decisions (src/hold.ts), without permissions:
// a fake HoldNative plays the kernel's part, one socket per descriptor.

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CLASSIC_DROP_FILTER,
  CookieSet,
  describeDropFilter,
  describeHoldNote,
  EBPF_DROP_PROGRAM,
  type HoldKind,
  type HoldNative,
  HoldOutcome,
  holdSignature,
  InputHold,
  tryHold,
} from "../../src/hold.ts";
import { decode, runFilter } from "../support/bpf.ts";
import { unit } from "./_unit.ts";

const EACCES = 13;

// ---- CookieSet ----

unit("CookieSet adds, finds and removes cookies", () => {
  const set = new CookieSet(4);
  assert.equal(set.has(1), false);
  set.add(1);
  set.add(2);
  set.add(2);
  assert.equal(set.size, 2);
  assert.ok(set.has(1) && set.has(2));
  assert.equal(set.delete(1), true);
  assert.equal(set.delete(1), false);
  assert.equal(set.has(1), false);
  assert.ok(set.has(2));
  assert.equal(set.size, 1);
  assert.equal(set.has(-1), false, "the empty marker is never a member");
});

unit("CookieSet refuses what is not a cookie", () => {
  const set = new CookieSet();
  for (const bad of [-1, 0.5, 2 ** 53, NaN, Infinity]) {
    assert.throws(() => set.add(bad), RangeError, String(bad));
  }
});

unit("CookieSet grows only when more cookies are held at once than it has room for", () => {
  const set = new CookieSet(512);
  const slots = set.slots;
  // Held and released over and over, as in a long session: no growth
  for (let round = 0; round < 50; round++) {
    for (let i = 0; i < 512; i++) set.add(round * 1000 + i + 1);
    for (let i = 0; i < 512; i++) assert.ok(set.delete(round * 1000 + i + 1));
  }
  assert.equal(set.slots, slots);
  assert.equal(set.size, 0);
  for (let i = 1; i <= 513; i++) set.add(i);
  assert.ok(set.slots > slots, "grown for the 513th");
  for (let i = 1; i <= 513; i++) assert.ok(set.has(i), `kept ${i} through the growth`);
});

unit("CookieSet agrees with a Set over any sequence of adds and removes", () => {
  // Small ranges make long probe runs and wrap-arounds, where deletion is subtle
  const cookie = fc.oneof(
    fc.integer({ min: 0, max: 40 }),
    fc.integer({ min: 2 ** 32 - 20, max: 2 ** 32 + 20 }),
    fc.integer({ min: 2 ** 53 - 20, max: 2 ** 53 - 1 }),
  );
  fc.assert(
    fc.property(fc.array(fc.tuple(fc.boolean(), cookie), { maxLength: 300 }), (ops) => {
      const set = new CookieSet(4);
      const model = new Set<number>();
      for (const [add, c] of ops) {
        if (add) {
          set.add(c);
          model.add(c);
        } else {
          assert.equal(set.delete(c), model.delete(c));
        }
        assert.equal(set.size, model.size);
      }
      for (const [, c] of ops) assert.equal(set.has(c), model.has(c), `cookie ${c}`);
    }),
    { numRuns: 300 },
  );
});

// ---- the drop programs ----

unit("the eBPF program is r0 = 0; exit", () => {
  assert.equal(EBPF_DROP_PROGRAM.length, 16);
  const v = new DataView(EBPF_DROP_PROGRAM.buffer);
  // code, registers, off, imm
  assert.deepEqual([v.getUint8(0), v.getUint8(1), v.getInt16(2, true), v.getInt32(4, true)], [
    0xb7,
    0,
    0,
    0,
  ]);
  assert.deepEqual([v.getUint8(8), v.getUint8(9), v.getInt16(10, true), v.getInt32(12, true)], [
    0x95,
    0,
    0,
    0,
  ]);
});

unit("the classic filter keeps nothing of any packet", () => {
  assert.deepEqual(decode(CLASSIC_DROP_FILTER), [[0x06, 0, 0, 0]]);
  assert.equal(runFilter(CLASSIC_DROP_FILTER, { nr: 0, arch: 0 }), 0);
});

unit("our own filter's signature is what SO_GET_FILTER says about it", () => {
  assert.equal(holdSignature("ebpf"), -EACCES);
  assert.equal(holdSignature("classic"), 1);
});

// ---- InputHold ----

/** One socket per descriptor; cookie = 100 + fd */
class Kernel implements HoldNative {
  readonly calls: string[] = [];
  readonly filters = new Map<number, number>();
  readonly failures = new Map<string, number>();
  constructor(readonly holdKind: HoldKind) {}
  #call(what: string): number {
    this.calls.push(what);
    return this.failures.get(what) ?? 0;
  }
  filterLength(fd: number): number {
    return this.#call(`filter ${fd}`) || (this.filters.get(fd) ?? 0);
  }
  socketCookie(fd: number): number {
    return this.#call(`cookie ${fd}`) || 100 + fd;
  }
  attachHold(fd: number): number {
    const r = this.#call(`attach ${fd}`);
    if (r === 0) this.filters.set(fd, holdSignature(this.holdKind));
    return r;
  }
  detachHold(fd: number): number {
    const r = this.#call(`detach ${fd}`);
    if (r === 0) this.filters.set(fd, 0);
    return r;
  }
}

function message(hold: InputHold, op: "hold" | "release", fds: number[]): number[] {
  hold.begin();
  const out = fds.map((fd) => hold[op](fd));
  if (op === "hold") assert.equal(hold.commit(), 0);
  return out;
}

unit("InputHold holds, records, and releases only what it holds", () => {
  for (const kind of ["ebpf", "classic"] as const) {
    const k = new Kernel(kind);
    const hold = new InputHold(k);
    assert.deepEqual(message(hold, "hold", [3, 4]), [HoldOutcome.DONE, HoldOutcome.DONE]);
    assert.equal(hold.held, 2);
    assert.deepEqual(message(hold, "release", [4, 5]), [HoldOutcome.DONE, HoldOutcome.NOT_HELD]);
    assert.equal(hold.held, 1);
    assert.deepEqual([k.filters.get(3), k.filters.get(4)], [holdSignature(kind), 0]);
    assert.ok(!k.calls.includes("detach 5"));
    assert.deepEqual(hold.note(0), { position: 1, outcome: HoldOutcome.NOT_HELD, filter: 0 });
  }
});

unit("InputHold never attaches over, nor detaches, a filter of the socket's own", () => {
  for (const own of [1, 7, -EACCES]) {
    for (const kind of ["ebpf", "classic"] as const) {
      const k = new Kernel(kind);
      k.filters.set(3, own);
      const hold = new InputHold(k);
      assert.deepEqual(message(hold, "hold", [3]), [HoldOutcome.OWN_FILTER]);
      assert.deepEqual(hold.note(0), { position: 0, outcome: HoldOutcome.OWN_FILTER, filter: own });
      assert.deepEqual(message(hold, "release", [3]), [HoldOutcome.NOT_HELD]);
      assert.equal(k.filters.get(3), own);
      assert.ok(!k.calls.some((c) => /^(attach|detach) 3$/.test(c)), k.calls.join());
    }
  }
});

unit("InputHold: a second ON of a held socket keeps the one filter", () => {
  const k = new Kernel("ebpf");
  const hold = new InputHold(k);
  message(hold, "hold", [3]);
  assert.deepEqual(message(hold, "hold", [3]), [HoldOutcome.DONE]);
  assert.equal(hold.notes, 0);
  assert.equal(k.calls.filter((c) => c === "attach 3").length, 1);
  assert.deepEqual(message(hold, "release", [3]), [HoldOutcome.DONE]);
});

unit("InputHold: a release finds our filter gone or replaced and removes nothing", () => {
  const k = new Kernel("classic");
  const hold = new InputHold(k);
  message(hold, "hold", [3, 4]);
  k.filters.set(3, 0);
  k.filters.set(4, 5);
  assert.deepEqual(message(hold, "release", [3, 4]), [HoldOutcome.GONE, HoldOutcome.REPLACED]);
  assert.ok(!k.calls.some((c) => c.startsWith("detach")));
  assert.equal(k.filters.get(4), 5);
  assert.equal(hold.held, 0, "forgotten: a later OFF does not look again");
});

unit(
  "InputHold reports the call that failed, and abandon() takes back this message's holds",
  () => {
    const k = new Kernel("ebpf");
    const hold = new InputHold(k);
    k.failures.set("attach 5", -12);
    hold.begin();
    assert.equal(hold.hold(3), HoldOutcome.DONE);
    assert.equal(hold.hold(5), -12);
    assert.equal(hold.failedCall, "setsockopt(SO_ATTACH_BPF)");
    hold.abandon();
    assert.equal(k.filters.get(3), 0);
    assert.equal(hold.held, 0);
    assert.equal(hold.commit(), 0, "nothing left to record");
  },
);

unit("InputHold: a cookie unread after the reply takes that filter and the rest off", () => {
  const k = new Kernel("ebpf");
  const hold = new InputHold(k);
  k.failures.set("cookie 4", -9);
  hold.begin();
  for (const fd of [3, 4, 5]) assert.equal(hold.hold(fd), HoldOutcome.DONE);
  assert.equal(hold.commit(), -9);
  assert.deepEqual([hold.failedCall, hold.failedAt], ["getsockopt(SO_COOKIE)", 1]);
  assert.deepEqual([3, 4, 5].map((fd) => k.filters.get(fd)), [-EACCES, 0, 0]);
  assert.equal(hold.held, 1);
});

unit("InputHold's notes start afresh with each message", () => {
  const k = new Kernel("ebpf");
  k.filters.set(3, 2);
  const hold = new InputHold(k);
  message(hold, "hold", [3]);
  assert.equal(hold.notes, 1);
  message(hold, "hold", [4]);
  assert.equal(hold.notes, 0);
});

// ---- what --verbose says ----

unit("describeHoldNote() says what was left alone and why", () => {
  const at = { position: 1, count: 3, fd: 9 };
  assert.equal(
    describeHoldNote("ON", { ...at, outcome: HoldOutcome.OWN_FILTER, filter: 4 }),
    "ON: socket 2 of 3 (fd 9) has a socket filter of its own (a classic filter of 4 instructions): left as it is, its input is not held",
  );
  assert.equal(
    describeHoldNote("ON", { ...at, outcome: HoldOutcome.OWN_FILTER, filter: -EACCES }),
    "ON: socket 2 of 3 (fd 9) has a socket filter of its own (an eBPF program): left as it is, its input is not held",
  );
  assert.equal(
    describeHoldNote("OFF", { ...at, outcome: HoldOutcome.NOT_HELD, filter: 0 }),
    "OFF: socket 2 of 3 (fd 9) was not held by this helper: no filter removed",
  );
  assert.equal(
    describeHoldNote("OFF_NO_WP", { ...at, outcome: HoldOutcome.REPLACED, filter: 1 }),
    "OFF_NO_WP: socket 2 of 3 (fd 9) carries a classic filter of 1 instruction in place of ours: left as it is",
  );
  assert.equal(
    describeHoldNote("OFF", { ...at, outcome: HoldOutcome.GONE, filter: 0 }),
    "OFF: socket 2 of 3 (fd 9) no longer had our filter: nothing to remove",
  );
});

unit("describeDropFilter() names the mechanism, and why not eBPF", () => {
  assert.equal(describeDropFilter(null), "input hold: off (--no-hold)");
  assert.match(describeDropFilter({ kind: "ebpf", refusal: 0 }), /^input hold: on; one eBPF/);
  assert.match(
    describeDropFilter({ kind: "classic", refusal: 1 }),
    /classic .*refused: Operation not permitted \(EPERM\); as root or with CAP_BPF/,
  );
});

// ---- the start-up trial ----

unit("tryHold() passes where every step works, and leaves no filter", () => {
  for (const kind of ["ebpf", "classic"] as const) {
    const k = new Kernel(kind);
    assert.equal(tryHold(k, 3), null);
    assert.deepEqual(k.calls, [
      "filter 3",
      "attach 3",
      "filter 3",
      "cookie 3",
      "detach 3",
      "filter 3",
    ]);
    assert.equal(k.filters.get(3), 0);
  }
});

unit("tryHold() names the step a kernel lacks", () => {
  const cases: Array<[HoldKind, string, number, string]> = [
    ["ebpf", "cookie 3", -92, "getsockopt(SO_COOKIE): Protocol not available (ENOPROTOOPT)"],
    ["classic", "attach 3", -12, "setsockopt(SO_ATTACH_FILTER): Cannot allocate memory (ENOMEM)"],
    ["ebpf", "detach 3", -1, "setsockopt(SO_DETACH_FILTER): Operation not permitted (EPERM)"],
    ["ebpf", "filter 3", -92, "getsockopt(SO_GET_FILTER): Protocol not available (ENOPROTOOPT)"],
  ];
  for (const [kind, call, errno, text] of cases) {
    const k = new Kernel(kind);
    k.failures.set(call, errno);
    assert.equal(tryHold(k, 3), text);
  }
  // A filter that does not read back as ours
  const k = new Kernel("ebpf");
  k.attachHold = () => (k.filters.set(3, 1), 0);
  assert.match(tryHold(k, 3)!, /reads back a classic filter of 1 instruction \(1\) for ours/);
});
