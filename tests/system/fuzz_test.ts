// The adversarial peer (tests/support/fuzz.ts) against the real helper:
// 10,000 random and malformed messages over 200 short connections, each
// checked against the helper's promise. The seed is new on every run and
// printed; a failure prints the `deno task fuzz` command that replays it.
// `deno task fuzz` runs longer campaigns.

import assert from "node:assert/strict";
import { describeReport, ENDINGS, fuzz, planRun, Rng, STEPS } from "../support/fuzz.ts";

const CONNECTIONS = 200;
const MESSAGES = 10000;

Deno.test(`fuzz: ${MESSAGES} random and malformed messages over ${CONNECTIONS} connections keep every promise`, async () => {
  const seed = crypto.getRandomValues(new Uint32Array(1))[0]!;
  console.log(
    `fuzz seed ${seed} (replay: deno task fuzz --seed ${seed} --connections ${CONNECTIONS} --messages ${MESSAGES})`,
  );
  const report = await fuzz({ seed, connections: CONNECTIONS, messages: MESSAGES });
  console.log(describeReport(report));
  assert.equal(report.connections, CONNECTIONS);
  assert.ok(report.messages >= MESSAGES, `${report.messages} messages`);
  // Every kind of message and every way of ending was exercised
  for (const step of Object.keys(STEPS)) {
    assert.ok((report.steps[step] ?? 0) > 0, `no ${step} message`);
  }
  for (const ending of [...Object.keys(ENDINGS), "truncated"]) {
    assert.ok((report.endings[ending] ?? 0) > 0, `no connection ended by ${ending}`);
  }
  assert.ok(report.refusedBySender > 0 && report.replies > 0 && report.leakChecks >= CONNECTIONS);
  assert.deepEqual(Object.keys(report.exits).filter((k) => k !== "exit 0" && k !== "exit 1"), []);
});

Deno.test("the fuzzer's plan depends on the seed alone and shares out every message", () => {
  const a = planRun(1234, 50, 3000);
  assert.deepEqual(planRun(1234, 50, 3000), a);
  assert.notDeepEqual(planRun(1235, 50, 3000), a);
  assert.equal(a.reduce((n, p) => n + p.budget, 0), 3000);
  const endings = new Set(a.map((p) => p.ending));
  for (const e of [...Object.keys(ENDINGS), "truncated"]) assert.ok(endings.has(e as never), e);
  for (const p of a) assert.equal(p.limit > 0, p.ending === "truncated");
});

Deno.test("the fuzzer's generator is seeded and roughly uniform", () => {
  const draw = (seed: number) => {
    const r = new Rng(seed);
    return Array.from({ length: 8 }, () => r.next());
  };
  assert.deepEqual(draw(7), draw(7));
  assert.notDeepEqual(draw(7), draw(8));
  const r = new Rng(99);
  const counts = new Array(10).fill(0);
  for (let i = 0; i < 100000; i++) counts[r.int(0, 9)]++;
  for (const c of counts) assert.ok(c > 9000 && c < 11000, `${counts}`);
});
