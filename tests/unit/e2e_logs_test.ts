import assert from "node:assert/strict";
import { parsePasstLog, queueOvershoot, raceFlows } from "../e2e/passt_log.ts";
import { lostHostToGuest, parseStream, stalledHostToGuest } from "../e2e/stream_status.ts";
import { countLine, median, timingTable, variantLine, type VariantResult } from "../e2e/summary.ts";
import { unit } from "./_unit.ts";

// Lines as passt 0.0~git20250503 prints them with -d (trimmed from a real run)
const SOURCE = `0.0346: Accepted TCP_REPAIR helper, PID 28891
1.0001: Flow 0 (INI): TAP [10.77.0.2]:43032 -> [10.77.0.1]:10001 => ?
1.0002: Flow 1 (TCP connection): TAP [10.77.0.2]:43042 -> [10.77.0.1]:10001 => HOST [127.0.0.1]:43080 -> [127.0.0.1]:10001
34.5571: Accepted TCP_REPAIR helper, PID 28938
38.5019: Migration requested, fd: 40 (was -1)
38.5020: Source side migration stage: prepare flows
38.5024: Source side migration stage: transfer flows
38.5024: Sending 2 flows
38.5025: Flow 0 (TCP connection): Extended migration data, socket 8 sequences send 3184306776 receive 2960110264
38.5025: Flow 0 (TCP connection):   pending queues: send 0 not sent 0 receive 2200
38.5025: Flow 0 (TCP connection):   window: snd_wl1 2960112264 snd_wnd 133120 max 133120 rcv_wnd 921600 rcv_wup 2960112464
38.5025: Flow 1 (TCP connection): Extended migration data, socket 9 sequences send 1073518779 receive 4294967196
38.5025: Flow 1 (TCP connection):   pending queues: send 0 not sent 0 receive 500
38.5025: Flow 1 (TCP connection):   window: snd_wl1 100 snd_wnd 133120 max 133120 rcv_wnd 913408 rcv_wup 2825918835
38.5026: Closing migration channel, fd: 40
`;

const TARGET = `0.0346: Accepted TCP_REPAIR helper, PID 28891
4.6708: Receiving 2 flows
4.6713: Flow 0 (TCP connection): Extended migration data, socket 46 sequences send 1 receive 1000
4.6713: Flow 0 (TCP connection):   pending queues: send 0 not sent 0 receive 2200
4.6713: Flow 0 (TCP connection):   window: snd_wl1 2800 snd_wnd 133120 max 133120 rcv_wnd 921600 rcv_wup 1
4.6719: Closing migration channel, fd: 45
4.9000: Flow 0 (TCP connection): TCP reset at tcp_sock_handler:2769
`;

unit("parsePasstLog() reads helpers, flows sent, the ON stage and each dumped queue", () => {
  const log = parsePasstLog(SOURCE);
  assert.equal(log.helpersAccepted, 2);
  assert.equal(log.sent, 2);
  assert.equal(log.received, null);
  assert.equal(log.onMs, 0.4);
  assert.deepEqual(log.resets, []);
  assert.deepEqual(log.dumped.map((d) => [d.flow, d.guestPort, d.receiveQueue]), [
    [0, 43032, 2200],
    [1, 43042, 500],
  ]);
});

unit("parsePasstLog() reads the target's flows received, restore time and resets", () => {
  const log = parsePasstLog(TARGET);
  assert.equal(log.received, 2);
  assert.equal(log.restoreMs, 1.1);
  assert.deepEqual(log.resets, [
    "4.9000: Flow 0 (TCP connection): TCP reset at tcp_sock_handler:2769",
  ]);
  assert.deepEqual(log.dumped, [], "what a target restores is not a source's dump");
});

unit("parsePasstLog() names the missing helper when passt found none", () => {
  const log = parsePasstLog(
    "1.0000: accept4() on TCP_REPAIR helper listening socket: Resource temporarily unavailable\n" +
      "1.0001: Sending 0 flows\n",
  );
  assert.equal(log.noHelper.length, 1);
  assert.equal(log.sent, 0);
});

unit(
  "parsePasstLog() reads a source's rollback: why it stopped, and that it turned repair off",
  () => {
    const log = parsePasstLog(
      "7.6233: Source side migration stage: transfer flows\n" +
        "7.6234: Sending 1 flows\n" +
        "7.6245: Can't write migration data, socket 8: Broken pipe\n" +
        "7.6246: Flow 0 (TCP connection): Can't send data: Broken pipe\n" +
        "7.6246: ...roll back migration\n" +
        "7.6249: Source migration stage: transfer flows: Broken pipe, abort\n",
    );
    assert.equal(log.rollbacks, 1);
    assert.equal(log.migrationErrors.length, 3);
    assert.deepEqual(log.fatal, []);
    assert.deepEqual(
      parsePasstLog(
        "7.3256: Got kick_fd: 40 for vq: 0\n" +
          "7.3256: Error writing vhost-user queue eventfd: Bad file descriptor\n",
      ).fatal,
      ["7.3256: Error writing vhost-user queue eventfd: Bad file descriptor"],
    );
    assert.deepEqual(log.resets, []);
    assert.equal(parsePasstLog(SOURCE).rollbacks, 0);
    assert.deepEqual(parsePasstLog(SOURCE).migrationErrors, []);
  },
);

unit("queueOvershoot() is one segment when all is well, and wraps at 2^32", () => {
  const [a, b] = parsePasstLog(SOURCE).dumped;
  assert.equal(queueOvershoot(a!), 200);
  assert.equal(queueOvershoot(b!), 300); // 4294967196 + 500 - 100, modulo 2^32
});

unit("raceFlows() finds a queue two segments past snd_wl1 (passt's race) and nothing else", () => {
  const log = parsePasstLog(SOURCE);
  assert.deepEqual(raceFlows(log, 200), []);
  const raced = parsePasstLog(SOURCE.replace("receive 2200", "receive 2400"));
  assert.deepEqual(raced.dumped.length, 2);
  assert.deepEqual(raceFlows(raced, 200).map((d) => d.guestPort), [43032]);
  // 300 bytes past with 100-byte segments is a race; with 200-byte ones it is not
  assert.deepEqual(raceFlows(log, 100).map((d) => d.flow), [0, 1]);
  assert.deepEqual(raceFlows(log, 150).map((d) => d.flow), [1]);
});

unit("parseStream() keeps the last STAT line and every ERR line with its port", () => {
  const r = parseStream(
    "E2E-INIT-OK 2: eth0\r\n" +
      "STAT t=500 conns=2 rx_min=10 rx_max=20 tx_min=30 errs=0\r\n" +
      "ERR conn=1 port=43032 gen=0 rx=400 tx=600 mismatch at 400: want 149 got 100\r\n" +
      "ERR conn=0 port=10001 gen=0 rx=0 tx=0 recv: Connection reset by peer\n" +
      "STAT t=1000 conns=2 rx_min=40 rx_max=50 tx_min=60 errs=2\n" +
      "STAT t=1500 conns=2 rx_min=4", // a line still being written
  );
  assert.deepEqual(r.last, { conns: 2, rxMin: 40, rxMax: 50, txMin: 60, errs: 2 });
  assert.deepEqual(r.errors.map((e) => [e.port, e.mismatch]), [[43032, true], [10001, false]]);
});

unit("lostHostToGuest(): wrong bytes in the guest, and the server seeing it close, only", () => {
  const guest = parseStream(
    "ERR conn=5 port=52076 gen=0 rx=600 tx=600 mismatch at 600: want 98 got 47\n" +
      "ERR conn=52 port=52512 gen=0 rx=600 tx=600 mismatch at 800: want 47 got 247\n",
  ).errors;
  const closed = parseStream(
    "ERR conn=5 port=10001 gen=0 rx=600 tx=1800 end of stream\n" +
      "ERR conn=52 port=10001 gen=0 rx=600 tx=1800 recv: Connection reset by peer\n",
  ).errors;
  assert.equal(lostHostToGuest(guest, closed), true);
  assert.equal(lostHostToGuest(guest, []), true, "the server may not have read the close yet");
  assert.equal(lostHostToGuest([], []), false, "nothing lost");
  const reset =
    parseStream("ERR conn=5 port=52076 gen=0 rx=600 tx=600 recv: Connection reset by peer\n")
      .errors;
  assert.equal(lostHostToGuest(reset, []), false, "a reset is not a loss");
  const serverMismatch = parseStream(
    "ERR conn=1 port=10001 gen=0 rx=600 tx=600 mismatch at 400: want 149 got 100\n",
  ).errors;
  assert.equal(
    lostHostToGuest(guest, serverMismatch),
    false,
    "guest-to-host loss is not passt's race",
  );
  assert.equal(lostHostToGuest(guest.slice(0, 1), closed), false, "more closes than losses");
});

unit("stalledHostToGuest(): host to guest stopped, guest to host went on, no error", () => {
  const stat = (rx: number) => `STAT t=1 conns=1 rx_min=${rx} rx_max=${rx} tx_min=0 errs=0\n`;
  // From a real negative control: the guest's reading stopped, the server's went on
  const guest = parseStream(stat(144360));
  const server = parseStream(stat(3717200));
  assert.equal(stalledHostToGuest(146000, 200000, guest, server), true);
  assert.equal(
    stalledHostToGuest(146000, 4000000, guest, server),
    false,
    "both directions stalled: not this loss",
  );
  assert.equal(
    stalledHostToGuest(100000, 200000, guest, server),
    false,
    "the guest got past its mark: nothing stalled",
  );
  assert.equal(
    stalledHostToGuest(
      146000,
      200000,
      guest,
      parseStream(stat(3717200) + "ERR conn=0 port=10001 gen=0 rx=1 tx=1 end of stream\n"),
    ),
    false,
    "an error is judged as an error, not as a stall",
  );
  assert.equal(
    stalledHostToGuest(146000, 200000, parseStream(""), server),
    false,
    "no report from the guest yet",
  );
});

const result = (over: Partial<VariantResult>): VariantResult => ({
  name: "root-2025-dir",
  helper: "ours",
  passt: "2025",
  conns: 300,
  wanted: 3,
  migrations: [],
  passed: true,
  reason: "",
  ...over,
});

unit("variantLine() counts kept, attempted and raced migrations", () => {
  const m = (outcome: "kept" | "race") => ({ hop: 1, outcome, detail: "", onMs: 1, restoreMs: 2 });
  assert.equal(
    variantLine(result({ migrations: [m("kept"), m("race"), m("kept"), m("kept")] })),
    "PASS root-2025-dir (300 conns): 3/3 migrations kept every byte, 4 attempted, 1 passt race",
  );
  assert.equal(
    variantLine(result({ conns: 1, passed: false, reason: "migration 0 -> 1 failed" })),
    "FAIL root-2025-dir (1 conn): 0/3 migrations kept every byte, 0 attempted, 0 passt races — migration 0 -> 1 failed",
  );
});

unit("variantLine() tells a rolled-back migration and a control that failed after tries", () => {
  const m = (outcome: "kept" | "rolled-back" | "expected-failure") => ({
    hop: 1,
    outcome,
    detail: "",
    onMs: 1,
    restoreMs: null,
  });
  assert.equal(
    variantLine(
      result({
        name: "rollback-2025",
        conns: 1,
        wanted: 2,
        migrations: [m("rolled-back"), m("kept")],
      }),
    ),
    "PASS rollback-2025 (1 conn): 2/2 migrations kept every byte (1 rolled back), 2 attempted, 0 passt races",
  );
  assert.equal(
    variantLine(
      result({
        name: "race-nohold-2025",
        conns: 1,
        migrations: [m("kept"), m("expected-failure")],
      }),
    ),
    "PASS race-nohold-2025 (1 conn): failed as it must (1 migration, 2 attempted)",
  );
  const died = { ...m("rolled-back"), outcome: "passt-died" as const };
  assert.equal(
    variantLine(
      result({
        name: "rollback-2025",
        conns: 1,
        wanted: 2,
        migrations: [died, m("rolled-back"), m("kept")],
      }),
    ),
    "PASS rollback-2025 (1 conn): 2/2 migrations kept every byte (1 rolled back), 3 attempted, " +
      "0 passt races, passt died after 1 rollback (repeated)",
  );
  assert.equal(
    variantLine(result({ name: "none-2025", conns: 1, migrations: [m("expected-failure")] })),
    "PASS none-2025 (1 conn): failed as it must (1 migration)",
  );
});

unit("timingTable() puts each helper's medians side by side, from kept migrations only", () => {
  const m = (outcome: "kept" | "race", onMs: number) => ({
    hop: 1,
    outcome,
    detail: "",
    onMs,
    restoreMs: 10,
  });
  const lines = timingTable([
    result({ migrations: [m("kept", 1), m("kept", 3), m("race", 100)] }),
    result({ name: "c-2025", helper: "c", migrations: [m("kept", 0.5)] }),
    result({ name: "none-2025", helper: "none" }),
    // strace on the source passt slows it: not passt's own timing
    result({ name: "race-hold-2025", forced: true, migrations: [m("kept", 50)] }),
  ]);
  assert.equal(lines.length, 3);
  assert.match(lines[1]!, /^c +2025 +300 +1 +0\.5 +10\.0$/);
  assert.match(lines[2]!, /^ours +2025 +300 +2 +2\.0 +10\.0$/);
});

unit("median() and countLine()", () => {
  assert.equal(median([]), null);
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(countLine([result({}), result({ passed: false })]), "e2e: 1 passed, 1 failed");
});
