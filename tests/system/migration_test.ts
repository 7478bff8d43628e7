// The real job, end to end: an established loopback TCP connection moves from
// one socket to a brand-new one, passt-style, while the other end keeps its
// socket and notices nothing. The "passt" process runs without CAP_NET_ADMIN;
// our helper (the real program, started with the capability) does every
// TCP_REPAIR switch. See tests/support/migration/ for the three processes and
// the steps, and shared/MIGRATION-NOTES.md for the order they follow.

import assert from "node:assert/strict";
import { helperCommand, SECCOMP_KILL } from "../support/helper.ts";
import { EPERM } from "../support/repair_state.ts";
import { type MigrationResult, runMigration, SIZES } from "../support/migration/scenario.ts";

/**
 * How many runs may miss the "unacknowledged data" precondition. On loopback
 * the only data a sender holds unacknowledged is what the peer's delayed ACK
 * (40 ms, TCP_DELACK_MIN) has not covered yet; if the machine stalls the
 * passt process for longer than that between its last write and reading its
 * socket's state, that run has nothing unacknowledged to carry, so it is run
 * again (it is still checked in full). Every other assertion holds in every run.
 */
const ATTEMPTS = 3;

function checkRun(r: MigrationResult): void {
  // The capability boundary: passt cannot switch repair mode by itself
  assert.equal(
    r.negativeControl.errno,
    EPERM,
    "passt's own setsockopt(TCP_REPAIR) fails with EPERM",
  );
  assert.equal(r.negativeControl.repair, 0, "and its socket is not in repair mode");

  const { before, after } = r.report;
  assert.equal(r.report.local, r.passtLocal, "the new socket has the old one's local address");
  assert.equal(r.report.peer, r.remoteLocal, "and is connected to the same remote");

  // What was in flight: data never sent (the remote stopped reading), and
  // data received but not read by passt
  assert.ok(before.notSent > 0, `unsent data at migration time: ${before.notSent} bytes`);
  assert.equal(before.sendQueue, before.unacknowledged + before.notSent);
  assert.equal(before.recvQueue, SIZES.unread, "passt's unread data was in the receive queue");
  assert.ok(r.carriedIntact, "the old send queue held exactly the last bytes passt wrote");

  // The new socket continues the old one's sequence space exactly
  assert.equal(after.recvSeq, before.recvSeq, "receive sequence (rcv_nxt) carried over");
  assert.equal(before.sendUnacked, (before.sendSeq - before.sendQueue) >>> 0);
  assert.equal(
    after.sendSeq,
    (before.sendUnacked + before.unacknowledged) >>> 0,
    "send sequence: the unacknowledged bytes sit after snd_una, the unsent ones follow normally",
  );
  assert.equal(after.sendQueue, before.unacknowledged, "unacknowledged data restored as sent");
  assert.equal(after.recvQueue, before.recvQueue, "receive queue restored");
  assert.ok(after.sendQueueMatches, "the new send queue holds the same bytes");
  assert.equal(after.mss, before.mss, "MSS clamp restored (TCPOPT_MSS)");
  assert.ok(after.userMss >= Math.min(before.mss, 32767), "segment size set before connect()");
  assert.deepEqual(after.window, before.window, "window restored (TCP_REPAIR_WINDOW)");
  assert.ok(before.timestamps && before.sack && before.sndWscale !== null, "options negotiated");

  // Every byte, both ways, through the move, and a clean close on both sides
  const toRemote = SIZES.warmUp + SIZES.burst + SIZES.after;
  const toPasst = SIZES.warmUp + SIZES.unread + SIZES.after;
  for (
    const [name, end, sent, received] of [
      ["passt", r.passt, toRemote, toPasst],
      ["remote", r.remote, toPasst, toRemote],
    ] as const
  ) {
    assert.ok(end.ok, `${name}: ${end.error ?? ""} mismatch at ${end.mismatchAt}`);
    assert.equal(end.mismatchAt, undefined, `${name} received every byte as sent`);
    assert.equal(end.written, sent, `${name} wrote its whole stream`);
    assert.equal(end.received, received, `${name} received the other's whole stream`);
    assert.ok(end.eof, `${name} read to the other's FIN (no reset)`);
  }

  // The helper did its job silently and left when passt closed the connection
  assert.deepEqual(r.helper, { code: 0, stderr: "" });
}

for (const family of [4, 6] as const) {
  Deno.test(
    `a live IPv${family} TCP connection moves to a new socket through the helper, every byte intact`,
    async () => {
      for (let attempt = 1;; attempt++) {
        const r = await runMigration({ family, helper: helperCommand([SECCOMP_KILL]) });
        checkRun(r);
        if (r.report.before.unacknowledged > 0) break;
        assert.ok(
          attempt < ATTEMPTS,
          `no run out of ${ATTEMPTS} had unacknowledged data at migration time`,
        );
      }
    },
  );
}
