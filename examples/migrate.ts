// Moves a live loopback TCP connection to a brand-new socket, the way passt
// moves a VM's connections during a live migration, with passt-repair doing
// every TCP_REPAIR switch, and prints what it did.
//
//   sudo deno run --allow-run examples/migrate.ts [4|6]
//
// Three processes take part (tests/support/migration/, shared with the system
// test tests/system/migration_test.ts):
// - "remote" holds one end and keeps exchanging a known byte sequence;
// - "passt", started WITHOUT CAP_NET_ADMIN (setpriv), holds the other end,
//   listens on a UNIX socket for the helper, and moves its end to a new
//   socket: it reads and restores the connection's state itself, with the
//   repair-mode options that need no capability once a socket is in repair
//   mode;
// - the helper, `deno run --allow-ffi main.ts --verbose SOCKET`, started with
//   CAP_NET_ADMIN, connects to passt and switches TCP_REPAIR on and off.
// This script only starts them and drives them (hence --allow-run, and
// nothing else); it needs root, or CAP_NET_ADMIN and CAP_SETPCAP, to give the
// helper the capability and take it away from passt.

import { type MigrationResult, runMigration } from "../tests/support/migration/scenario.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;

function row(label: string, before: string | number, after: string | number): string {
  return `    ${label.padEnd(37)}${String(before).padStart(12)}   ${String(after).padStart(12)}`;
}

function describe(r: MigrationResult): string[] {
  const { before, after, steps } = r.report;
  const lines = [
    "",
    "  sequence numbers                             old socket     new socket",
    row("snd_una (first unacknowledged)", before.sendUnacked, before.sendUnacked),
    row("write_seq (after last byte written)", before.sendSeq, after.sendSeq),
    row("rcv_nxt (next byte expected)", before.recvSeq, after.recvSeq),
    `    (the new socket's write_seq reaches ${before.sendSeq} once passt writes ` +
    `the ${before.notSent} unsent bytes)`,
    "",
    "  bytes in flight, carried over",
    `    sent, not yet acknowledged  ${String(before.unacknowledged).padStart(9)}` +
    "   restored in repair mode as sent" +
    (after.sendQueueMatches ? ", read back identical" : ", READ BACK DIFFERENT"),
    `    written, not yet sent       ${String(before.notSent).padStart(9)}` +
    "   written normally after repair OFF",
    `    received, not yet read      ${String(before.recvQueue).padStart(9)}` +
    "   restored in repair mode, then read by passt",
    `    old send queue = last bytes passt wrote: ${r.carriedIntact ? "yes" : "NO"}`,
    "",
    "  restored as negotiated: " + [
      `MSS ${before.mss} (segments of ${after.userMss})`,
      `window scale ${before.sndWscale}/${before.rcvWscale}`,
      before.sack ? "SACK" : "no SACK",
      before.timestamps ? `timestamps (clock at ${before.timestamp})` : "no timestamps",
      `window ${before.window.sndWnd}/${before.window.rcvWnd}`,
    ].join(", "),
    "",
    "  steps (µs)",
    ...steps.map((s) => `    ${String(s.micros).padStart(7)}  ${s.step}`),
    `    ${String(r.report.gapMicros).padStart(7)}  of which nobody owned the connection ` +
    "(close to connect)",
    "",
    `  after the move: passt received ${r.passt.received} bytes, remote ${r.remote.received}; ` +
    (r.passt.ok && r.remote.ok ? "every byte as sent, in order" : "DATA DIFFERS"),
    "",
    "  the helper said:",
    ...r.helper.stderr.trimEnd().split("\n").map((l) => `    ${l}`),
  ];
  return lines;
}

async function main(): Promise<number> {
  const families = Deno.args.length === 0 ? [4, 6] as const : Deno.args.map(Number);
  for (const family of families) {
    if (family !== 4 && family !== 6) {
      console.error("usage: deno run --allow-run examples/migrate.ts [4|6]");
      return 2;
    }
  }
  let failed = false;
  for (const family of families as Array<4 | 6>) {
    console.log(`== migrating a live IPv${family} TCP connection ==`);
    const result = await runMigration({
      family,
      helper: [Deno.execPath(), "run", "--allow-ffi", MAIN, "--verbose"],
      log: (line) => console.log(`  - ${line}`),
    });
    for (const line of describe(result)) console.log(line);
    console.log("");
    failed ||= !(result.passt.ok && result.remote.ok && result.carriedIntact);
  }
  return failed ? 1 : 0;
}

if (import.meta.main) {
  Deno.exit(await main());
}
