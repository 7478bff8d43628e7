import assert from "node:assert/strict";
import { cmsgLen, CONTROL_SIZE, MSG_CTRUNC, SCM_RIGHTS, SOL_SOCKET } from "../../src/abi.ts";
import { PasstRepairError } from "../../src/errors.ts";
import { epermHint, type RepairNative, RepairSession } from "../../src/repair.ts";
import { unit } from "./_unit.ts";

/** One scripted recvmsg() result */
interface Script {
  /** recvmsg()'s return: 1, 0 (EOF) or -errno */
  result: number;
  byte?: number;
  fds?: number[];
  flags?: number;
}

/** A RepairNative that plays a script and records every call in order */
class FakeNative implements RepairNative {
  readonly data = new Uint8Array(1);
  readonly control = new DataView(new ArrayBuffer(CONTROL_SIZE));
  readonly calls: string[] = [];
  #length = 0;
  #flags = 0;
  /** setsockopt results by fd (default 0) */
  readonly failures = new Map<number, number>();
  replyResult = 1;

  constructor(readonly script: Script[]) {}

  receive(): number {
    const next = this.script.shift() ?? { result: 0 };
    this.calls.push("recvmsg");
    this.data[0] = next.byte ?? 0;
    const fds = next.fds ?? [];
    this.#flags = next.flags ?? 0;
    if (fds.length === 0) {
      this.#length = 0;
    } else {
      this.control.setBigUint64(0, BigInt(cmsgLen(fds.length * 4)), true);
      this.control.setInt32(8, SOL_SOCKET, true);
      this.control.setInt32(12, SCM_RIGHTS, true);
      fds.forEach((fd, i) => this.control.setInt32(16 + 4 * i, fd, true));
      this.#length = cmsgLen(fds.length * 4);
    }
    return next.result;
  }
  controlLength(): number {
    return this.#length;
  }
  messageFlags(): number {
    return this.#flags;
  }
  setTcpRepair(fd: number, op: number): number {
    this.calls.push(`set ${fd} ${op}`);
    return this.failures.get(fd) ?? 0;
  }
  reply(byte: number): number {
    this.calls.push(`reply ${(byte << 24) >> 24}`);
    return this.replyResult;
  }
  close(fd: number): void {
    this.calls.push(`close ${fd}`);
  }
}

function failure(fn: () => unknown): PasstRepairError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof PasstRepairError, String(e));
    return e;
  }
  assert.fail("expected a failure");
}

unit("RepairSession switches every socket, replies, then closes", () => {
  const native = new FakeNative([{ result: 1, byte: 1, fds: [7, 8, 9] }]);
  assert.equal(new RepairSession(native).serve(), "eof");
  assert.deepEqual(native.calls, [
    "recvmsg",
    "set 7 1",
    "set 8 1",
    "set 9 1",
    "reply 1",
    "close 7",
    "close 8",
    "close 9",
    "recvmsg",
  ]);
});

unit("RepairSession passes OFF_NO_WP as -1 and echoes the byte 0xff", () => {
  const native = new FakeNative([{ result: 1, byte: 0xff, fds: [4] }]);
  new RepairSession(native).serve();
  assert.deepEqual(native.calls.slice(1, 3), ["set 4 -1", "reply -1"]);
});

unit("RepairSession stops at the failing socket, closes all, does not reply", () => {
  const native = new FakeNative([{ result: 1, byte: 1, fds: [7, 8, 9] }]);
  native.failures.set(8, -95);
  const e = failure(() => new RepairSession(native).serve());
  assert.equal(
    e.message,
    "Setting TCP_REPAIR to ON (1) failed for socket 2 of 3 (fd 8): Operation not supported (EOPNOTSUPP)",
  );
  assert.equal(e.exitCode, 1);
  assert.deepEqual(native.calls, [
    "recvmsg",
    "set 7 1",
    "set 8 1",
    "close 7",
    "close 8",
    "close 9",
  ]);
});

unit("RepairSession names CAP_NET_ADMIN on EPERM", () => {
  for (const capable of [false, undefined]) {
    const native = new FakeNative([{ result: 1, byte: 1, fds: [7] }]);
    native.failures.set(7, -1);
    const e = failure(() =>
      new RepairSession(native, capable === undefined ? {} : { capable }).serve()
    );
    assert.match(e.message, /\(EPERM\); .*CAP_NET_ADMIN/);
  }
  assert.match(epermHint(true), /listening/);
});

unit("RepairSession rejects an unsupported command before touching any socket", () => {
  const native = new FakeNative([{ result: 1, byte: 2, fds: [7, 8] }]);
  const e = failure(() => new RepairSession(native).serve());
  assert.match(e.message, /^Unsupported command 2 /);
  assert.deepEqual(native.calls, ["recvmsg", "close 7", "close 8"]);
});

unit("RepairSession treats MSG_CTRUNC as an error and closes what did arrive", () => {
  const native = new FakeNative([{ result: 1, byte: 1, fds: [7, 8], flags: MSG_CTRUNC }]);
  const e = failure(() => new RepairSession(native).serve());
  assert.match(e.message, /^No\/bad ancillary data from peer: .*MSG_CTRUNC/);
  assert.deepEqual(native.calls, ["recvmsg", "close 7", "close 8"]);
});

unit("RepairSession rejects a message without descriptors after a good one", () => {
  const native = new FakeNative([{ result: 1, byte: 1, fds: [7] }, { result: 1, byte: 0 }]);
  const e = failure(() => new RepairSession(native).serve());
  assert.match(e.message, /no control data/);
  assert.deepEqual(native.calls, ["recvmsg", "set 7 1", "reply 1", "close 7", "recvmsg"]);
});

unit("RepairSession reports a failed reply and still closes", () => {
  const native = new FakeNative([{ result: 1, byte: 0, fds: [7] }]);
  native.replyResult = -32;
  const e = failure(() => new RepairSession(native).serve());
  assert.equal(e.message, "Reply to OFF failed: Broken pipe (EPIPE)");
  assert.deepEqual(native.calls.slice(-2), ["reply 0", "close 7"]);
});

unit("RepairSession ends quietly on ECONNRESET and retries EINTR", () => {
  const native = new FakeNative([{ result: -4 }, { result: 1, byte: 1, fds: [3] }, {
    result: -104,
  }]);
  const session = new RepairSession(native);
  assert.equal(session.serve(), "reset");
  assert.equal(session.commands, 1);
});

unit("RepairSession fails on any other recvmsg error", () => {
  const native = new FakeNative([{ result: -9 }]);
  const e = failure(() => new RepairSession(native).serve());
  assert.match(e.message, /Bad file descriptor \(EBADF\)/);
});

unit("RepairSession reports each command to the observer", () => {
  const seen: [number, number][] = [];
  const native = new FakeNative([{ result: 1, byte: 1, fds: [3, 4] }, {
    result: 1,
    byte: 0,
    fds: [3],
  }]);
  new RepairSession(native, {
    onCommand: (cmd, n, us) => seen.push([cmd, n]) && assert.ok(us >= 0),
  }).serve();
  assert.deepEqual(seen, [[1, 2], [0, 1]]);
});
