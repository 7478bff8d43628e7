// A longer fuzzing campaign against the real helper (see tests/support/fuzz.ts):
//
//   deno task fuzz [--seed N] [--connections N] [--messages N] [--only K]
//   deno task fuzz --help
//
// Without --seed a random one is drawn and printed; a failure prints the
// command that reproduces it. Exit status: 0 when every promise held, 1 when
// one was broken.

import { parseArgs } from "node:util";
import { describeReport, fuzz } from "./support/fuzz.ts";

const USAGE = `usage: deno task fuzz [--seed N] [--connections N] [--messages N] [--only K]

  --seed N         the campaign's seed (default: a random one, printed)
  --connections N  connections to the helper, each a fresh helper (default 2000)
  --messages N     messages in all, shared out over the connections (default 100000)
  --only K         replay connection K of the campaign alone (from a failure's report)
  -h, --help       show this help

Runs as root (the helper needs CAP_NET_ADMIN). Exit status: 0 when every
promise held, 1 when one was broken, 2 on a bad option.`;

function usageError(message: string): never {
  console.error(`fuzz: ${message} (deno task fuzz --help lists the options)`);
  Deno.exit(2);
}

let values;
try {
  ({ values } = parseArgs({
    args: Deno.args,
    options: {
      seed: { type: "string" },
      connections: { type: "string", default: "2000" },
      messages: { type: "string", default: "100000" },
      only: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  }));
} catch (e) {
  // One line: node:util's own message is a paragraph about its API
  usageError((e as Error).message.split(". ")[0]!.replace(/\.$/, ""));
}
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}

function count(name: string, text: string): number {
  const n = Number(text);
  if (text.trim() === "" || !Number.isSafeInteger(n) || n < 0) {
    usageError(`--${name} needs a whole number, not "${text}"`);
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
