// A longer fuzzing campaign against the real helper (see tests/support/fuzz.ts):
//
//   deno task fuzz [--seed N] [--connections N] [--messages N] [--only K]
//
// Without --seed a random one is drawn and printed; a failure prints the
// command that reproduces it. Exit status: 0 when every promise held, 1 when
// one was broken.

import { parseArgs } from "node:util";
import { describeReport, fuzz } from "./support/fuzz.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seed: { type: "string" },
    connections: { type: "string", default: "2000" },
    messages: { type: "string", default: "100000" },
    only: { type: "string" },
  },
});

function count(name: string, text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`--${name} needs a whole number, not "${text}"`);
    Deno.exit(2);
  }
  return n;
}

const seed = values.seed === undefined
  ? crypto.getRandomValues(new Uint32Array(1))[0]!
  : count("seed", values.seed) >>> 0;
const connections = count("connections", values.connections);
const messages = count("messages", values.messages);
console.log(`fuzz seed ${seed}: ${messages} messages over ${connections} connections`);
try {
  const report = await fuzz({
    seed,
    connections,
    messages,
    ...(values.only === undefined ? {} : { only: count("only", values.only) }),
    log: (line) => console.log(line),
  });
  console.log(describeReport(report));
} catch (e) {
  console.error(e instanceof Error ? e.message : String(e));
  Deno.exit(1);
}
