// RepairSession.prime(): it runs the per-message code on a spare socket of
// our own before connecting, and must leave nothing behind that a real
// message could see. Pure: a fake RepairNative, no permissions.

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
import { type RepairNative, RepairSession } from "../../src/repair.ts";

const EPERM = 1;

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

Deno.test("prime() switches only the spare socket, alternating ON and OFF_NO_WP", () => {
  const native = new FakeNative();
  new RepairSession(native).prime(42, 3);
  assert.equal(native.switched.length, 3 * SCM_MAX_FD);
  assert.ok(native.switched.every(([fd]) => fd === 42), "every switch on the spare socket");
  const ops = [0, 1, 2].map((r) => native.switched[r * SCM_MAX_FD]![1]);
  assert.deepEqual(ops, [TCP_REPAIR_ON, TCP_REPAIR_OFF_NO_WP, TCP_REPAIR_ON]);
});

Deno.test("prime() closes nothing real and never talks to passt", () => {
  const native = new FakeNative();
  new RepairSession(native).prime(42, 2);
  assert.equal(native.closed.length, 2 * SCM_MAX_FD);
  assert.ok(native.closed.every((fd) => fd === -1), "closes go to -1 only, never the spare");
  assert.deepEqual(native.calls, [], "no receive, no reply");
});

Deno.test("prime() leaves no control message behind", () => {
  const native = new FakeNative();
  new RepairSession(native).prime(42, 1);
  assert.equal(native.control.getUint32(CMSG_LEN_OFF, true), 0, "cmsg_len cleared");
});

Deno.test("prime() without the capability tries once per round and goes on", () => {
  const native = new FakeNative();
  native.refuse = true;
  new RepairSession(native).prime(42, 4);
  assert.equal(native.switched.length, 4, "stops each round at the first refusal");
  assert.ok(native.closed.every((fd) => fd === -1));
});

Deno.test("a session that was primed serves real messages as one that was not", () => {
  for (const primed of [false, true]) {
    const native = new FakeNative();
    const session = new RepairSession(native);
    if (primed) session.prime(42, 2);
    native.switched.length = 0;
    native.closed.length = 0;
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
