// Reading passt's own -d log: what it says about one migration.
//
// Pure (a string in, values out) so that tests/unit checks it with no
// permission. The lines read, as passt 0.0~git20250503 and 0.0~git20261002
// print them ("SECONDS: message"):
//
//   12.3456: Accepted TCP_REPAIR helper, PID 123
//   12.3456: Source side migration stage: prepare flows   (the helper's ON)
//   12.3460: Source side migration stage: transfer flows
//   12.3460: Sending 3 flows
//   12.3461: Flow 0 (TCP connection): Extended migration data, socket 8 sequences send S receive R
//   12.3461: Flow 0 (TCP connection):   pending queues: send 0 not sent 0 receive Q
//   12.3461: Flow 0 (TCP connection):   window: snd_wl1 W snd_wnd ...
//   4.6708: Receiving 3 flows
//   4.6719: Closing migration channel, fd: 45
//   1.0000: Flow 0 (INI): TAP [10.77.0.2]:43032 -> [10.77.0.1]:10001 => ?
//   ... TCP reset at ...
//   8.1391: Flow 0 (TCP connection): Can't send data: Broken pipe
//   8.1391: ...roll back migration
//   7.3256: Error writing vhost-user queue eventfd: Bad file descriptor

/** One flow's dumped state, from the source's "Extended migration data" lines */
export interface DumpedFlow {
  flow: number;
  /** The guest's port (from the flow's TAP line), when the log names it */
  guestPort: number | null;
  /** "sequences ... receive R": the sequence number of the dumped queue's head */
  receiveSeq: number;
  /** "pending queues: ... receive Q": bytes dumped from the receive queue */
  receiveQueue: number;
  /** "window: snd_wl1 W": sequence number of the last segment that updated the window */
  sndWl1: number;
}

export interface PasstMigrationLog {
  /** "Accepted TCP_REPAIR helper" lines */
  helpersAccepted: number;
  /** "Sending N flows" (source), or null if the log has none */
  sent: number | null;
  /** "Receiving N flows" (target), or null */
  received: number | null;
  /** Every line that tells of a reset flow */
  resets: string[];
  /** Lines telling that passt found no helper (accept4() on the helper socket failed) */
  noHelper: string[];
  /** Source: milliseconds from "prepare flows" to "transfer flows" (the ON stage) */
  onMs: number | null;
  /** Target: milliseconds from "Receiving N flows" to "Closing migration channel" */
  restoreMs: number | null;
  /** Source: each flow's dumped sequence state */
  dumped: DumpedFlow[];
  /** "...roll back migration": the source gave up migrating and turned repair mode off */
  rollbacks: number;
  /** Why a migration stopped: "Can't send ...", "... abort" */
  migrationErrors: string[];
  /**
   * Lines passt prints as it dies restarting its vhost-user rings after a
   * failed migration (it notifies the guest through a closed eventfd)
   */
  fatal: string[];
}

const TIME = /^(\d+\.\d+): (.*)$/;

/** Reads one passt -d log */
export function parsePasstLog(text: string): PasstMigrationLog {
  const result: PasstMigrationLog = {
    helpersAccepted: 0,
    sent: null,
    received: null,
    resets: [],
    noHelper: [],
    onMs: null,
    restoreMs: null,
    dumped: [],
    rollbacks: 0,
    migrationErrors: [],
    fatal: [],
  };
  const ports = new Map<number, number>();
  const open = new Map<number, Partial<DumpedFlow>>();
  let prepareAt: number | null = null;
  let receivingAt: number | null = null;
  // A target prints the same "Extended migration data" lines for what it
  // restores: only those after "Sending N flows" are the source's dump
  let sending = false;

  for (const line of text.split("\n")) {
    const m = TIME.exec(line);
    if (!m) continue;
    // passt prints 4 decimals: tenths of a millisecond, kept exact as integers
    const at = Math.round(Number(m[1]) * 10000) / 10;
    const msg = m[2]!;
    let g: RegExpExecArray | null;

    if (msg.startsWith("Accepted TCP_REPAIR helper")) result.helpersAccepted++;
    else if ((g = /^Sending (\d+) flows?/.exec(msg))) {
      result.sent = Number(g[1]);
      sending = true;
    } else if ((g = /^Receiving (\d+) flows?/.exec(msg))) {
      result.received = Number(g[1]);
      receivingAt = at;
    } else if (msg.startsWith("Source side migration stage: prepare flows")) prepareAt = at;
    else if (msg.startsWith("Source side migration stage: transfer flows")) {
      if (prepareAt !== null) result.onMs = Math.round((at - prepareAt) * 10) / 10;
    } else if (msg.startsWith("Closing migration channel")) {
      if (receivingAt !== null && result.restoreMs === null) {
        result.restoreMs = Math.round((at - receivingAt) * 10) / 10;
      }
    } else if (msg.includes("TCP reset")) result.resets.push(line);
    else if (/accept4\(\) on TCP_REPAIR helper/.test(msg)) result.noHelper.push(line);
    else if (msg.includes("roll back migration")) result.rollbacks++;
    else if (msg.startsWith("Error writing vhost-user queue eventfd")) result.fatal.push(line);
    else if (/Can't (?:send|write)|, abort$/.test(msg)) result.migrationErrors.push(line);

    // The TAP line comes in the flow's early states too: "(INI)", "(TGT)"
    const f = /^Flow (\d+) \([A-Za-z ]+\): (.*)$/.exec(msg);
    if (!f) continue;
    const flow = Number(f[1]);
    const rest = f[2]!;
    if ((g = /^TAP \[[^\]]*\]:(\d+) ->/.exec(rest))) ports.set(flow, Number(g[1]));
    else if (
      sending &&
      (g = /Extended migration data, socket \d+ sequences send \d+ receive (\d+)/.exec(rest))
    ) {
      open.set(flow, { flow, receiveSeq: Number(g[1]) });
    } else if ((g = /^\s*pending queues: .* receive (\d+)/.exec(rest))) {
      const d = open.get(flow);
      if (d) d.receiveQueue = Number(g[1]);
    } else if ((g = /^\s*window: snd_wl1 (\d+)/.exec(rest))) {
      const d = open.get(flow);
      if (d && d.receiveSeq !== undefined && d.receiveQueue !== undefined) {
        result.dumped.push({
          flow,
          guestPort: ports.get(flow) ?? null,
          receiveSeq: d.receiveSeq,
          receiveQueue: d.receiveQueue,
          sndWl1: Number(g[1]),
        });
        open.delete(flow);
      }
    }
  }
  return result;
}

/**
 * How far the dumped receive queue ends past the last segment's start:
 * head + rcvq - snd_wl1, modulo 2^32. With fixed-size segments of S bytes it
 * is S when the queue holds everything passt counted, and 2 S when one
 * segment landed between the queue's dump and passt's read of TCP_QUEUE_SEQ
 * (counted, but missing from the queue): passt's own race, not the helper's.
 */
export function queueOvershoot(d: DumpedFlow): number {
  return (d.receiveSeq + d.receiveQueue - d.sndWl1 + 2 ** 32) % 2 ** 32;
}

/** The dumped flows whose queue shows passt's race, for segments of `segment` bytes */
export function raceFlows(log: PasstMigrationLog, segment: number): DumpedFlow[] {
  return log.dumped.filter((d) => {
    const over = queueOvershoot(d);
    return over >= 2 * segment && over % segment === 0 && over < 2 ** 31;
  });
}
