// Moving an established TCP connection from one socket to a brand-new one on
// the same host, the way passt moves a VM's connections: the process doing it
// lacks CAP_NET_ADMIN, so every TCP_REPAIR switch goes through the helper, and
// it reads and restores everything else itself with the repair-mode options,
// which need no capability once the socket is in repair mode.
//
// The order follows what we measured (shared/MIGRATION-NOTES.md):
// - a socket in repair mode still transmits, except while its send queue is
//   selected: then the kernel counts what the window lets out as sent,
//   without sending it. So SIOCOUTQNSD is read before the send queue is
//   selected, and the old socket's send queue then stays selected until it is
//   closed: it transmits nothing more, and the unsent data read is exactly
//   the data the peer has not seen;
// - TCP_QUEUE_SEQ is set only before connect() (EPERM after), TCP_MAXSEG too
//   (otherwise the new socket sends 524-byte segments on IPv4);
// - the new socket is prepared fully, then the old one is closed in repair
//   mode (no FIN, no RST) and the new one connected (no SYN) back to back:
//   while neither owns the 4-tuple a segment from the peer gets a RST;
// - TCP_REPAIR_OPTIONS only after connect() (EPERM before), the timestamp
//   (without it the peer drops our segments as too old), the queues, and the
//   window only after the receive queue (EINVAL before);
// - only the sent-but-unacknowledged part of the send queue is restored in
//   repair mode; the unsent part is written normally once repair is off.

import { TCP_REPAIR_OFF, TCP_REPAIR_ON } from "../../../src/abi.ts";
import { readReply, sendCommand } from "../peer_native.ts";
import {
  bindTo,
  closeSocket,
  connectTo,
  type Family,
  fillQueue,
  formatAddress,
  localAddress,
  maxSegment,
  newTcpSocket,
  notSentBytes,
  peekQueue,
  peerAddress,
  pollMany,
  queueSeq,
  receiveQueueBytes,
  repairOptionsFor,
  type RepairWindow,
  repairWindow,
  selectQueue,
  sendQueueBytes,
  setMaxSegment,
  setQueueSeq,
  setRepairOptions,
  setRepairWindow,
  setTimestamp,
  TCP_NO_QUEUE,
  TCP_RECV_QUEUE,
  TCP_SEND_QUEUE,
  tcpInfo,
  timestamp,
} from "../repair_state.ts";
import { describeErrno } from "../../../src/errors.ts";

const HELPER_REPLY_MS = 10000;

/** What a migration read from the old socket and found on the new one */
export interface MigrationReport {
  local: string;
  peer: string;
  before: {
    /** write_seq: the sequence number after the last byte written */
    sendSeq: number;
    /** snd_una: the first byte not acknowledged by the peer */
    sendUnacked: number;
    /** rcv_nxt: the next sequence number expected from the peer */
    recvSeq: number;
    /** Bytes in the send queue: unacknowledged + notSent */
    sendQueue: number;
    unacknowledged: number;
    notSent: number;
    /** Bytes received and not yet read */
    recvQueue: number;
    mss: number;
    sndWscale: number | null;
    rcvWscale: number | null;
    sack: boolean;
    timestamps: boolean;
    timestamp: number;
    window: RepairWindow;
  };
  after: {
    /** write_seq of the new socket before the unsent part is written: old snd_una + unacknowledged */
    sendSeq: number;
    recvSeq: number;
    sendQueue: number;
    recvQueue: number;
    /**
     * Whether the new socket's send queue, read back in repair mode, holds
     * exactly the unacknowledged bytes carried (the receive queue's bytes are
     * checked by passt's reader, against the stream, once repair is off)
     */
    sendQueueMatches: boolean;
    /** TCP_MAXSEG of the new socket in repair mode: the restored clamp */
    mss: number;
    /** TCP_MAXSEG set before connect(): the segment size, capped at MAX_TCP_WINDOW */
    userMss: number;
    window: RepairWindow;
  };
  /** Whether the peer acknowledged the old socket's data before the hand-over (see settle) */
  settled: boolean;
  /** The old socket's send queue right before the hand-over: `notSent` once `settled` */
  oldAtHandOver: { sendQueue: number };
  /** Microseconds from close(old) to the end of connect(new): nobody owned the 4-tuple */
  gapMicros: number;
  /** Microseconds from asking for repair ON to repair OFF on the new socket */
  totalMicros: number;
  /** Each step and its microseconds, in order */
  steps: Array<{ step: string; micros: number }>;
}

export interface Migrated {
  /** The new socket, connected, repair mode off */
  fd: number;
  /** The old socket's send queue as read: unacknowledged bytes, then unsent ones */
  sendQueue: Uint8Array;
  /** Its unsent tail: to be written normally on the new socket */
  unsent: Uint8Array;
  report: MigrationReport;
}

export interface MigrateOptions {
  /**
   * Before handing over, wait up to this long for the peer to acknowledge what
   * the old socket sent (0: do not wait). See the note at settle().
   */
  settleMs?: number;
}

/** Records how long each step took */
class Steps {
  readonly list: Array<{ step: string; micros: number }> = [];
  readonly #start = performance.now();
  #last = this.#start;

  mark(step: string): void {
    const now = performance.now();
    this.list.push({ step, micros: Math.round((now - this.#last) * 1000) });
    this.#last = now;
  }

  get totalMicros(): number {
    return Math.round((performance.now() - this.#start) * 1000);
  }
}

/** Asks the helper to switch `fd` and waits for its echo */
function helperSwitch(helper: number, command: number, fd: number): void {
  sendCommand(helper, command, [fd]);
  const reply = readReply(helper, HELPER_REPLY_MS);
  if (reply !== command) {
    throw new Error(`helper answered ${JSON.stringify(reply)} to TCP_REPAIR ${command}`);
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Waits, at most `ms`, until the peer has acknowledged everything the old
 * socket sent. A socket in repair mode still processes incoming segments, so
 * the acknowledgement lands on the old socket, after we read its state: the
 * new socket then carries those bytes as unacknowledged and the peer simply
 * acknowledges them again after repair mode ends.
 *
 * Why wait: on loopback the only "unacknowledged" data there can be is data
 * whose ACK the peer is delaying (by 40 ms, TCP_DELACK_MIN). That ACK is the
 * one segment the peer will send on its own, and if it arrived while nobody
 * owns the 4-tuple (between close and connect) it would be answered with a
 * RST. Letting it land first makes the hand-over quiet by construction instead
 * of a race against a 40 ms timer.
 */
function settle(old: number, notSent: number, ms: number): boolean {
  const deadline = performance.now() + ms;
  for (;;) {
    if (sendQueueBytes(old) <= notSent) return true;
    const left = deadline - performance.now();
    if (left <= 0) return false;
    // No descriptor signals "acknowledged": look again in a millisecond
    pollMany([], Math.min(1, Math.ceil(left)));
  }
}

/**
 * Moves the connection on `old` to a new socket, using the helper connected
 * on `helper` for every TCP_REPAIR switch. `old` is closed when this returns,
 * and also when it throws: a failed migration loses the connection.
 */
export function migrateConnection(
  old: number,
  helper: number,
  family: Family,
  options: MigrateOptions = {},
): Migrated {
  const held = { old: true };
  try {
    return migrate(old, helper, family, held, options.settleMs ?? 0);
  } finally {
    if (held.old) closeSocket(old);
  }
}

function migrate(
  old: number,
  helper: number,
  family: Family,
  held: { old: boolean },
  settleMs: number,
): Migrated {
  const steps = new Steps();

  // 1. Old socket into repair mode, by the helper
  helperSwitch(helper, TCP_REPAIR_ON, old);
  steps.mark("helper: repair ON for the old socket");

  // 2. Its state: what the handshake negotiated, the receive queue, then the
  // unsent byte count and, right after it, the send queue, which stays
  // selected from then on (see the top of this file)
  const mss = maxSegment(old);
  const info = tcpInfo(old);
  const local = localAddress(old);
  const peer = peerAddress(old);

  const recvQueueBytes = receiveQueueBytes(old);
  selectQueue(old, TCP_RECV_QUEUE);
  const recvSeq = queueSeq(old);
  const recvData = peekQueue(old, recvQueueBytes);
  if (recvData.length !== recvQueueBytes) {
    throw new Error(
      `receive queue: SIOCINQ said ${recvQueueBytes} bytes, peeked ${recvData.length}`,
    );
  }

  const notSent = notSentBytes(old);
  selectQueue(old, TCP_SEND_QUEUE);
  const sendSeq = queueSeq(old);
  // The queue only shrinks from here (an ACK may still arrive), so SIOCOUTQ is room enough
  const sendData = peekQueue(old, sendQueueBytes(old));
  steps.mark("read the old socket's state and queues");

  const unsentLength = Math.min(notSent, sendData.length);
  const unacked = sendData.subarray(0, sendData.length - unsentLength);
  const unsent = sendData.subarray(sendData.length - unsentLength);
  const sendUnacked = (sendSeq - sendData.length) >>> 0;
  const recvStart = (recvSeq - recvData.length) >>> 0;

  // 3. The new socket, prepared completely while the old one still owns the 4-tuple
  const fresh = newTcpSocket(family);
  try {
    // The helper's reply to this command also means it has closed its copy of
    // the old socket (it closes them before reading the next message): a copy
    // left open would make connect() below fail with EADDRNOTAVAIL.
    helperSwitch(helper, TCP_REPAIR_ON, fresh);
    steps.mark("helper: repair ON for the new socket");
    selectQueue(fresh, TCP_SEND_QUEUE);
    setQueueSeq(fresh, sendUnacked);
    selectQueue(fresh, TCP_RECV_QUEUE);
    setQueueSeq(fresh, recvStart);
    selectQueue(fresh, TCP_NO_QUEUE);
    // Without it the new socket would send 524-byte segments (the default MSS
    // until a handshake says otherwise); TCPOPT_MSS after connect() does not
    // change the segment size, only the clamp.
    const userMss = setMaxSegment(fresh, mss);
    const bound = bindTo(fresh, local); // repair mode forces address reuse
    if (bound < 0) throw new Error(`bind to ${formatAddress(local)}: ${describeErrno(-bound)}`);
    steps.mark("prepare the new socket: sequence numbers, MSS, bind");

    const settled = settleMs > 0 ? settle(old, notSent, settleMs) : false;
    if (settleMs > 0) steps.mark("let the peer's delayed ACK land on the old socket");
    const oldAtHandOver = { sendQueue: sendQueueBytes(old) };
    // The window and the timestamp clock last, right before the hand-over:
    // the window as the peer last advertised it, and a clock that never runs
    // behind a value the old socket has already sent (the peer would drop such
    // segments as too old: PAWS)
    const window = repairWindow(old);
    const ts = timestamp(old);

    // 4. Hand over the 4-tuple: close in repair mode sends nothing; connect in
    // repair mode sends nothing and is established at once.
    const gapStart = performance.now();
    closeSocket(old);
    held.old = false;
    const connected = connectTo(fresh, peer);
    const gapMicros = Math.round((performance.now() - gapStart) * 1000);
    if (connected < 0) {
      throw new Error(
        `repair-mode connect to ${formatAddress(peer)}: ${describeErrno(-connected)}`,
      );
    }
    steps.mark("hand over: close the old socket, connect the new one");

    // 5. Restore what the handshake and the queues held. The queues are
    // measured right after they are filled: nothing has been transmitted yet,
    // so nothing can have been acknowledged.
    setRepairOptions(fresh, repairOptionsFor(info, mss));
    setTimestamp(fresh, ts);
    selectQueue(fresh, TCP_SEND_QUEUE);
    fillQueue(fresh, unacked, "send");
    const newSendSeq = queueSeq(fresh);
    const newSendQueue = sendQueueBytes(fresh);
    // Reading the send queue back transmits nothing (reading the receive
    // queue, even with MSG_PEEK, may send a window update)
    const sendBack = peekQueue(fresh, unacked.length + 1);
    selectQueue(fresh, TCP_RECV_QUEUE);
    fillQueue(fresh, recvData, "receive");
    const newRecvSeq = queueSeq(fresh);
    const newRecvQueue = receiveQueueBytes(fresh);
    selectQueue(fresh, TCP_NO_QUEUE);
    setRepairWindow(fresh, window);
    const after = {
      sendSeq: newSendSeq,
      recvSeq: newRecvSeq,
      sendQueue: newSendQueue,
      recvQueue: newRecvQueue,
      sendQueueMatches: sameBytes(sendBack, unacked),
      mss: maxSegment(fresh),
      userMss,
      window: repairWindow(fresh),
    };
    steps.mark("restore options, timestamp, queues, window");
    helperSwitch(helper, TCP_REPAIR_OFF, fresh);
    steps.mark("helper: repair OFF for the new socket");

    return {
      fd: fresh,
      sendQueue: sendData,
      unsent,
      report: {
        local: formatAddress(local),
        peer: formatAddress(peer),
        before: {
          sendSeq,
          sendUnacked,
          recvSeq,
          sendQueue: sendData.length,
          unacknowledged: unacked.length,
          notSent: unsentLength,
          recvQueue: recvData.length,
          mss,
          sndWscale: info.windowScaling ? info.sndWscale : null,
          rcvWscale: info.windowScaling ? info.rcvWscale : null,
          sack: info.sack,
          timestamps: info.timestamps,
          timestamp: ts,
          window,
        },
        after,
        settled,
        oldAtHandOver,
        gapMicros,
        totalMicros: steps.totalMicros,
        steps: steps.list,
      },
    };
  } catch (e) {
    closeSocket(fresh);
    throw e;
  }
}
