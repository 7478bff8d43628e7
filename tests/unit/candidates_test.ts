// Which entries to try, and when: the pure schedule of candidates.ts, and
// the bounded warnings of warnings.ts. Runs with no permissions.

import assert from "node:assert/strict";
import {
  BACKOFF_MAX_MS,
  CandidateSet,
  MAX_REFUSING,
  MAX_SET_ASIDE,
  nextBackoff,
} from "../../src/candidates.ts";
import { MAX_REASONS, WarningBudget } from "../../src/warnings.ts";
import { unit } from "./_unit.ts";

const name = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

unit("nextBackoff() doubles from 1 ms up to the cap", () => {
  const seen: number[] = [];
  let b = 0;
  for (let i = 0; i < 10; i++) seen.push(b = nextBackoff(b));
  assert.deepEqual(seen, [1, 2, 4, 8, 16, 32, 64, 100, 100, 100]);
  assert.equal(nextBackoff(300, 1000), 600);
});

unit("CandidateSet: new names are tried at once, in the order they came", () => {
  const set = new CandidateSet();
  set.add(name("a.repair"), 0);
  set.add(name("b.repair"), 0);
  assert.deepEqual(set.due(0).map((c) => text(c.name)), ["a.repair", "b.repair"]);
});

unit("CandidateSet: a refusing candidate waits its turn and never blocks a newer one", () => {
  const set = new CandidateSet();
  set.add(name("stale.repair"), 0);
  const [stale] = set.due(0);
  for (let i = 0; i < 10; i++) set.retryLater(stale!, 0);
  assert.equal(stale!.backoffMs, BACKOFF_MAX_MS);
  assert.deepEqual(set.due(1), []);
  assert.equal(set.nextDueIn(1), BACKOFF_MAX_MS - 1);
  set.add(name("vm.repair"), 1);
  assert.deepEqual(set.due(1).map((c) => text(c.name)), ["vm.repair"]);
  // Both due: the one never tried comes first
  set.add(name("new.repair"), 200);
  assert.deepEqual(set.due(200).map((c) => text(c.name)), [
    "vm.repair",
    "new.repair",
    "stale.repair",
  ]);
});

unit("CandidateSet: the same name again is due at once (passt may have replaced it)", () => {
  const set = new CandidateSet();
  set.add(name("vm.repair"), 0);
  const [c] = set.due(0);
  set.retryLater(c!, 0);
  assert.deepEqual(set.due(0), []);
  set.add(name("vm.repair"), 0);
  assert.equal(set.due(0).length, 1);
  assert.equal(set.size, 1);
});

unit("CandidateSet: set aside by identity, so a rename does not bring a socket back", () => {
  const set = new CandidateSet();
  set.setAside("0:5:100");
  assert.ok(set.isSetAside("0:5:100"));
  assert.ok(!set.isSetAside("0:5:101"));
});

unit("CandidateSet: a flood of refusing sockets never keeps a new name out", () => {
  const set = new CandidateSet();
  let forgotten = 0;
  for (let i = 0; i < MAX_REFUSING + 10; i++) {
    set.add(name(`stale${i}.repair`), i);
    const [c] = set.due(i).filter((c) => c.backoffMs === 0);
    if (set.retryLater(c!, i) !== null) forgotten++;
  }
  // The longest refusing are forgotten, the rest still wait their turn
  assert.equal(forgotten, 10);
  assert.equal(set.size, MAX_REFUSING);
  assert.ok(!set.names().some((n) => text(n) === "stale0.repair"));
  // And passt's socket, new, is tried at once
  set.add(name("vm.repair"), 5000);
  assert.equal(text(set.due(5000)[0]!.name), "vm.repair");
  // With 1024 refusing, each waits up to 16 × 100 ms between attempts
  const [c] = set.due(1e9).filter((c) => text(c.name) === "stale500.repair");
  for (let i = 0; i < 20; i++) set.retryLater(c!, 0);
  assert.equal(c!.backoffMs, 1600);
});

unit("CandidateSet: what is set aside is bounded, the oldest forgotten first", () => {
  const set = new CandidateSet();
  for (let i = 0; i <= MAX_SET_ASIDE; i++) set.setAside(`0:1:${i}`);
  assert.ok(!set.isSetAside("0:1:0"));
  assert.ok(set.isSetAside("0:1:1"));
  assert.ok(set.isSetAside(`0:1:${MAX_SET_ASIDE}`));
});

unit("WarningBudget tells each reason once, then counts", () => {
  const told: string[] = [];
  const budget = new WarningBudget((t) => told.push(t));
  for (let i = 0; i < 1500; i++) budget.warn(`skipping f${i}: regular file`, "regular file");
  budget.warn("skipping d: directory", "directory");
  budget.warn("skipping e: directory", "directory");
  budget.flush();
  assert.deepEqual(told, [
    "skipping f0: regular file",
    "skipping d: directory",
    "skipped 1499 more entries: regular file",
    "skipped 1 more entry: directory",
  ]);
  budget.flush();
  assert.equal(told.length, 4);
});

unit("WarningBudget bounds the number of distinct reasons too", () => {
  const told: string[] = [];
  const budget = new WarningBudget((t) => told.push(t));
  for (let i = 0; i < 1000; i++) budget.warn(`line ${i}`, `reason ${i}`);
  budget.flush();
  assert.ok(told.length <= MAX_REASONS + 2, `${told.length} lines`);
  assert.equal(told.at(-1), `skipped ${1000 - MAX_REASONS - 1} more entries: other`);
});
