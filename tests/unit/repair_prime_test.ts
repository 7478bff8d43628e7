// RepairSession.prime(): it serves real messages from a socket pair of our
// own, carrying copies of a spare socket, and must leave nothing behind that
// passt's messages could see. Pure: a fake RepairNative and a fake peer, no
// permissions.

import assert from "node:assert/strict";
import {
  CMSG_HDR_SIZE,
  CMSG_LEN_OFF,
  CMSG_LEVEL_OFF,
  CMSG_TYPE_OFF,
  cmsgLen,
  CONTROL_SIZE,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SOL_SOCKET,
  TCP_REPAIR_OFF_NO_WP,
  TCP_REPAIR_ON,
} from "../../src/abi.ts";
import { EPERM } from "../../src/errors.ts";

const EPIPE = 32;
import { type PrimingPeer, type RepairNative, RepairSession } from "../../src/repair.ts";

/** Records every native call; serves the messages queued in `inbox` */
class FakeNative implements RepairNative {
  readonly data = new Uint8Array(1);
  readonly control = new DataView(new ArrayBuffer(CONTROL_SIZE));
  readonly calls: string[] = [];
  readonly switched: Array<[number, number]> = [];
  readonly closed: number[] = [];
  inbox: Array<{ cmd: number; fds: number[] }> = [];
  refuse = false;
  #length = 0;

  receive(): number {
    this.calls.push("receive");
    const m = this.inbox.shift();
    if (!m) {
      this.#length = 0; // EOF: the kernel reports no control data
      return 0;
    }
    this.data[0] = m.cmd & 0xff;
    // What the kernel does: overwrite the control data it delivers
    this.control.setUint32(CMSG_LEN_OFF, cmsgLen(4 * m.fds.length), true);
    this.control.setUint32(CMSG_LEN_OFF + 4, 0, true);
    this.control.setInt32(CMSG_LEVEL_OFF, SOL_SOCKET, true);
    this.control.setInt32(CMSG_TYPE_OFF, SCM_RIGHTS, true);
    m.fds.forEach((fd, i) => this.control.setInt32(CMSG_HDR_SIZE + 4 * i, fd, true));
    this.#length = cmsgLen(4 * m.fds.length);
    return 1;
  }
  controlLength(): number {
    return this.#length;
  }
  messageFlags(): number {
    return 0;
  }
  setTcpRepair(fd: number, op: number): number {
    this.switched.push([fd, op]);
    return this.refuse ? -EPERM : 0;
  }
  reply(byte: number): number {
    this.calls.push(`reply ${byte}`);
    return 1;
  }
  close(fd: number): void {
    this.closed.push(fd);
  }
  closeRange(first: number, last: number): number {
    for (let fd = first; fd <= last; fd++) this.closed.push(fd);
    return 0;
  }
  // The input hold: these sessions do not turn it on
  readonly holdKind = "ebpf";
  filterLength(): number {
    throw new Error("no hold in these tests");
  }
  socketCookie(): number {
    throw new Error("no hold in these tests");
  }
  attachHold(): number {
    throw new Error("no hold in these tests");
  }
  detachHold(): number {
    throw new Error("no hold in these tests");
  }
}

/** passt's end of the priming pair: what it sends lands in `native.inbox` */
class FakePeer implements PrimingPeer {
  readonly sent: Array<[number, number]> = [];
  constructor(readonly native: FakeNative, readonly spare: number) {}
  send(byte: number, count: number): number {
    this.sent.push([byte, count]);
    this.native.inbox.push({ cmd: byte, fds: Array(count).fill(this.spare) });
    return 1;
  }
  receiveReply(): number {
    const last = this.native.calls.at(-1) ?? "";
    return last.startsWith("reply") ? 1 : 0;
  }
}

Deno.test("prime() serves real messages: ON and OFF_NO_WP in turn, full batches among single ones", () => {
  const native = new FakeNative();
  const peer = new FakePeer(native, 42);
  assert.equal(new RepairSession(native).prime(peer, 6, 3), 6);
  assert.deepEqual(peer.sent, [
    [TCP_REPAIR_ON, SCM_MAX_FD],
    [TCP_REPAIR_OFF_NO_WP & 0xff, 1],
    [TCP_REPAIR_ON, 1],
    [TCP_REPAIR_OFF_NO_WP & 0xff, SCM_MAX_FD],
    [TCP_REPAIR_ON, 1],
    [TCP_REPAIR_OFF_NO_WP & 0xff, 1],
  ]);
  assert.equal(native.switched.length, 2 * SCM_MAX_FD + 4);
  assert.ok(native.switched.every(([fd]) => fd === 42), "every switch on the spare socket");
  assert.equal(native.switched[SCM_MAX_FD]![1], TCP_REPAIR_OFF_NO_WP);
  assert.deepEqual(native.calls.filter((c) => c.startsWith("reply")), [
    "reply 1",
    "reply 255",
    "reply 1",
    "reply 255",
    "reply 1",
    "reply 255",
  ]);
});

Deno.test("prime() closes every descriptor it received, and only those", () => {
  const native = new FakeNative();
  new RepairSession(native).prime(new FakePeer(native, 42), 4, 2);
  assert.equal(native.closed.length, 2 * SCM_MAX_FD + 2);
  assert.ok(native.closed.every((fd) => fd === 42));
  assert.deepEqual(native.inbox, [], "every message sent was received");
});

Deno.test("prime() counts nothing, and tells the observer as serving will", () => {
  // The observer hears priming's messages too, so that step() takes the
  // branch passt's commands take; the caller keeps it quiet meanwhile
  const native = new FakeNative();
  const seen: number[] = [];
  const session = new RepairSession(native, { onCommand: (cmd) => seen.push(cmd) });
  session.prime(new FakePeer(native, 42), 4);
  assert.equal(session.commands, 0);
  assert.deepEqual(seen, [
    TCP_REPAIR_ON,
    TCP_REPAIR_OFF_NO_WP,
    TCP_REPAIR_ON,
    TCP_REPAIR_OFF_NO_WP,
  ]);
  // And passt's commands are counted and told after it
  native.inbox = [{ cmd: TCP_REPAIR_ON, fds: [5] }];
  assert.equal(session.serve(), "eof");
  assert.deepEqual([seen.length, seen.at(-1), session.commands], [5, TCP_REPAIR_ON, 1]);
});

Deno.test("prime() reads the clock as serving does: with an observer, and only then", () => {
  // The branch passt's commands take must be taken while priming too (V8
  // compiles what it has seen), so performance.now() is read around each
  // primed message when there is an observer, and never without one
  const realNow = performance.now;
  let reads = 0;
  performance.now = () => {
    reads++;
    return realNow.call(performance);
  };
  try {
    const native = new FakeNative();
    new RepairSession(native).prime(new FakePeer(native, 42), 5);
    assert.equal(reads, 0, "no observer, no clock");
    const observed = new FakeNative();
    new RepairSession(observed, { onCommand: () => {} }).prime(new FakePeer(observed, 42), 5);
    assert.equal(reads, 2 * 5, "twice per primed message");
  } finally {
    performance.now = realNow;
  }
});

Deno.test("prime() without the capability stops at the first refusal, leaking nothing", () => {
  const native = new FakeNative();
  native.refuse = true;
  const served = new RepairSession(native).prime(new FakePeer(native, 42), 4, 2);
  assert.equal(served, 0);
  assert.equal(native.switched.length, 1, "one refused switch");
  assert.equal(native.closed.length, SCM_MAX_FD, "the whole batch closed");
  assert.ok(!native.calls.some((c) => c.startsWith("reply")), "no reply to a refused command");
});

Deno.test("prime() stops when the peer cannot send", () => {
  const native = new FakeNative();
  const peer = new FakePeer(native, 42);
  peer.send = () => -EPIPE;
  assert.equal(new RepairSession(native).prime(peer, 4), 0);
  assert.deepEqual(native.calls, []);
});

Deno.test("a session that was primed serves real messages as one that was not", () => {
  for (const primed of [false, true]) {
    const native = new FakeNative();
    const session = new RepairSession(native);
    if (primed) session.prime(new FakePeer(native, 42), 2);
    native.switched.length = 0;
    native.closed.length = 0;
    native.calls.length = 0;
    native.inbox = [{ cmd: TCP_REPAIR_ON, fds: [5, 6, 7] }, {
      cmd: TCP_REPAIR_OFF_NO_WP,
      fds: [8],
    }];
    assert.equal(session.serve(), "eof");
    assert.deepEqual(native.switched, [[5, 1], [6, 1], [7, 1], [8, -1]], `primed: ${primed}`);
    assert.deepEqual(native.closed, [5, 6, 7, 8], `primed: ${primed}`);
    assert.deepEqual(native.calls, ["receive", "reply 1", "receive", "reply 255", "receive"]);
    assert.equal(session.commands, 2);
  }
});
