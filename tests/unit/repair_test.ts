import assert from "node:assert/strict";
import { cmsgLen, CONTROL_SIZE, MSG_CTRUNC, SCM_RIGHTS, SOL_SOCKET } from "../../src/abi.ts";
import { PasstRepairError } from "../../src/errors.ts";
import type { HoldKind } from "../../src/hold.ts";
import { describeCommand, epermHint, type RepairNative, RepairSession } from "../../src/repair.ts";
import { unit } from "./_unit.ts";

/** One scripted recvmsg() result */
interface Script {
  /** recvmsg()'s return: 1, 0 (EOF) or -errno */
  result: number;
  byte?: number;
  fds?: number[];
  flags?: number;
}

/**
 * A RepairNative that plays a script and records every call in order. For
 * the hold it keeps, per descriptor (one socket each), what SO_GET_FILTER
 * would say: 0 (none), instructions of a classic filter, or -EACCES (eBPF).
 */
class FakeNative implements RepairNative {
  readonly data = new Uint8Array(1);
  readonly control = new DataView(new ArrayBuffer(CONTROL_SIZE));
  readonly calls: string[] = [];
  #length = 0;
  #flags = 0;
  /** setsockopt results by fd (default 0) */
  readonly failures = new Map<number, number>();
  replyResult = 1;
  holdKind: HoldKind = "ebpf";
  /** SO_GET_FILTER's answer by fd (default 0: no filter) */
  readonly filters = new Map<number, number>();
  /** Results of the hold's calls, by "filter 7", "cookie 7", "attach 7", "detach 7" */
  readonly holdFailures = new Map<string, number>();

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
  /** close_range()'s result: 0, or -errno (nothing closed) */
  rangeResult = 0;
  /** Every close_range() asked for, as "first-last" */
  readonly ranges: string[] = [];
  // Recorded as the closes it stands for, so that the order of effects
  // reads the same whichever way a run was closed
  closeRange(first: number, last: number): number {
    this.ranges.push(`${first}-${last}`);
    if (this.rangeResult !== 0) return this.rangeResult;
    for (let fd = first; fd <= last; fd++) this.calls.push(`close ${fd}`);
    return 0;
  }
  #hold(call: string): number {
    this.calls.push(call);
    return this.holdFailures.get(call) ?? 0;
  }
  filterLength(fd: number): number {
    return this.#hold(`filter ${fd}`) || (this.filters.get(fd) ?? 0);
  }
  socketCookie(fd: number): number {
    return this.#hold(`cookie ${fd}`) || 1000 + fd;
  }
  attachHold(fd: number): number {
    const r = this.#hold(`attach ${fd}`);
    if (r === 0) this.filters.set(fd, this.holdKind === "ebpf" ? -EACCES : 1);
    return r;
  }
  detachHold(fd: number): number {
    const r = this.#hold(`detach ${fd}`);
    if (r === 0) this.filters.set(fd, 0);
    return r;
  }
}

const EACCES = 13;

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

unit("RepairSession closes each run of consecutive descriptors with one close_range()", () => {
  const native = new FakeNative([
    { result: 1, byte: 1, fds: [7, 8, 9] },
    { result: 1, byte: 0, fds: [4, 5, 9, 11, 12, 3] },
    { result: 1, byte: 1, fds: [6] },
  ]);
  assert.equal(new RepairSession(native).serve(), "eof");
  // A lone descriptor is closed by close(); 9 and 3 break their runs
  assert.deepEqual(native.ranges, ["7-9", "4-5", "11-12"]);
  assert.deepEqual(native.calls.filter((c) => c.startsWith("close")), [
    ...["close 7", "close 8", "close 9"],
    ...["close 4", "close 5", "close 9", "close 11", "close 12", "close 3"],
    "close 6",
  ]);
});

unit("RepairSession closes one by one once close_range() has failed, and never asks again", () => {
  const native = new FakeNative([
    { result: 1, byte: 1, fds: [7, 8, 9] },
    { result: 1, byte: 0, fds: [7, 8] },
  ]);
  native.rangeResult = -38; // ENOSYS: a kernel before 5.9
  assert.equal(new RepairSession(native).serve(), "eof");
  assert.deepEqual(native.ranges, ["7-9"]);
  assert.deepEqual(native.calls, [
    ...["recvmsg", "set 7 1", "set 8 1", "set 9 1", "reply 1"],
    ...["close 7", "close 8", "close 9"],
    ...["recvmsg", "set 7 0", "set 8 0", "reply 0", "close 7", "close 8", "recvmsg"],
  ]);
});

unit("RepairSession never closes a number between two descriptors that do not run on", () => {
  // 5 and 7 are both ours, 6 is not: no close_range(5, 7)
  const native = new FakeNative([{ result: 1, byte: 1, fds: [5, 7] }]);
  native.failures.set(7, -95);
  failure(() => new RepairSession(native).serve());
  assert.deepEqual(native.ranges, []);
  assert.deepEqual(native.calls.filter((c) => c.startsWith("close")), ["close 5", "close 7"]);
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

// ---- the input hold (src/hold.ts) as the executor drives it ----

unit("with the hold, ON holds each socket after its switch, records it after the reply", () => {
  const native = new FakeNative([{ result: 1, byte: 1, fds: [7, 8] }]);
  const session = new RepairSession(native, { hold: true });
  assert.equal(session.serve(), "eof");
  assert.deepEqual(native.calls, [
    "recvmsg",
    "set 7 1",
    "filter 7",
    "attach 7",
    "set 8 1",
    "filter 8",
    "attach 8",
    "reply 1",
    "cookie 7",
    "cookie 8",
    "close 7",
    "close 8",
    "recvmsg",
  ]);
  assert.equal(session.held, 2);
});

unit("with the hold, OFF and OFF_NO_WP release what ON held, before the reply", () => {
  for (const off of [0, 0xff]) {
    const native = new FakeNative([
      { result: 1, byte: 1, fds: [7] },
      { result: 1, byte: off, fds: [7] },
    ]);
    const session = new RepairSession(native, { hold: true });
    session.serve();
    const second = native.calls.slice(native.calls.lastIndexOf("recvmsg", -2));
    assert.deepEqual(second.slice(0, 6), [
      "recvmsg",
      `set 7 ${(off << 24) >> 24}`,
      "cookie 7",
      "filter 7",
      "detach 7",
      `reply ${(off << 24) >> 24}`,
    ]);
    assert.equal(native.filters.get(7), 0);
    assert.equal(session.held, 0);
  }
});

unit("without the hold option, no hold call is made", () => {
  const native = new FakeNative([{ result: 1, byte: 1, fds: [7] }, {
    result: 1,
    byte: 0,
    fds: [7],
  }]);
  new RepairSession(native).serve();
  assert.ok(
    native.calls.every((c) => !/^(filter|cookie|attach|detach) /.test(c)),
    native.calls.join(", "),
  );
});

unit("a socket with a filter of its own keeps it through ON and OFF, and is reported", () => {
  for (const own of [4, -EACCES]) {
    const native = new FakeNative([
      { result: 1, byte: 1, fds: [7, 8] },
      { result: 1, byte: 0, fds: [8] },
    ]);
    native.filters.set(8, own);
    const notes: string[] = [];
    const session = new RepairSession(native, {
      hold: true,
      onHoldNote: (n) =>
        notes.push(`${n.cmd} ${n.position}/${n.count} fd ${n.fd} ${n.outcome} ${n.filter}`),
    });
    session.serve();
    assert.ok(!native.calls.includes("attach 8"), "never attached over its own");
    assert.ok(!native.calls.includes("detach 8"), "never detached");
    assert.equal(native.filters.get(8), own);
    assert.equal(native.filters.get(7), -EACCES, "the other socket is held");
    // ON: its own filter (1); OFF: not held by us (2)
    assert.deepEqual(notes, [`1 1/2 fd 8 1 ${own}`, "0 0/1 fd 8 2 0"]);
  }
});

unit("ON of a socket already held by us neither attaches again nor reports it", () => {
  const native = new FakeNative([
    { result: 1, byte: 1, fds: [7] },
    { result: 1, byte: 1, fds: [7] },
  ]);
  const notes: unknown[] = [];
  const session = new RepairSession(native, { hold: true, onHoldNote: (n) => notes.push(n) });
  session.serve();
  assert.equal(native.calls.filter((c) => c === "attach 7").length, 1);
  assert.deepEqual(notes, []);
  assert.equal(session.held, 1);
});

unit("OFF leaves a filter that replaced ours, and forgets the socket", () => {
  const native = new FakeNative([
    { result: 1, byte: 1, fds: [7] },
    { result: 1, byte: 0, fds: [7] },
  ]);
  const session = new RepairSession(native, {
    hold: true,
    onHoldNote: (n) => assert.deepEqual([n.outcome, n.filter], [3, 6]),
  });
  // passt (say) puts a filter of its own on the socket while it is held
  const receive = native.receive.bind(native);
  native.receive = () => {
    if (native.calls.includes("reply 1")) native.filters.set(7, 6);
    return receive();
  };
  session.serve();
  assert.ok(!native.calls.includes("detach 7"));
  assert.equal(native.filters.get(7), 6);
  assert.equal(session.held, 0);
});

unit(
  "a failed hold fails the message like a failed setsockopt, and takes back what it held",
  () => {
    const native = new FakeNative([{ result: 1, byte: 1, fds: [7, 8, 9] }]);
    native.holdFailures.set("attach 8", -12);
    const e = failure(() => new RepairSession(native, { hold: true }).serve());
    assert.equal(
      e.message,
      "Holding the input of socket 2 of 3 (fd 8) after TCP_REPAIR ON (1) failed at " +
        "setsockopt(SO_ATTACH_BPF): Cannot allocate memory (ENOMEM)",
    );
    assert.equal(e.exitCode, 1);
    assert.deepEqual(native.calls, [
      "recvmsg",
      "set 7 1",
      "filter 7",
      "attach 7",
      "set 8 1",
      "filter 8",
      "attach 8",
      "detach 7",
      "close 7",
      "close 8",
      "close 9",
    ]);
  },
);

unit("a failed hold names the call: SO_GET_FILTER, SO_ATTACH_FILTER, SO_COOKIE", () => {
  const cases: Array<[string, HoldKind, number | undefined, string]> = [
    ["filter 7", "ebpf", undefined, "getsockopt(SO_GET_FILTER): Bad file descriptor (EBADF)"],
    ["attach 7", "classic", undefined, "setsockopt(SO_ATTACH_FILTER): Bad file descriptor (EBADF)"],
    ["cookie 7", "ebpf", 4, "getsockopt(SO_COOKIE): Bad file descriptor (EBADF)"],
  ];
  for (const [call, kind, own, text] of cases) {
    const native = new FakeNative([{ result: 1, byte: 1, fds: [7] }]);
    native.holdKind = kind;
    if (own !== undefined) native.filters.set(7, own);
    native.holdFailures.set(call, -9);
    const e = failure(() => new RepairSession(native, { hold: true }).serve());
    assert.ok(e.message.endsWith(`failed at ${text}`), e.message);
    assert.ok(!native.calls.some((c) => c.startsWith("reply")), "no reply");
  }
});

unit("a failed release fails the message, names the position, does not reply", () => {
  const native = new FakeNative([
    { result: 1, byte: 1, fds: [7] },
    { result: 1, byte: 0xff, fds: [5, 7] },
  ]);
  native.holdFailures.set("detach 7", -1);
  const e = failure(() => new RepairSession(native, { hold: true }).serve());
  assert.equal(
    e.message,
    "Releasing the input of socket 2 of 2 (fd 7) after TCP_REPAIR OFF_NO_WP (-1) failed at " +
      "setsockopt(SO_DETACH_FILTER): Operation not permitted (EPERM)",
  );
  assert.deepEqual(native.calls.slice(-3), ["detach 7", "close 5", "close 7"]);
});

unit("a cookie that cannot be read after the reply takes the filter off again and fails", () => {
  const native = new FakeNative([{ result: 1, byte: 1, fds: [7, 8, 9] }]);
  native.holdFailures.set("cookie 8", -9);
  const session = new RepairSession(native, { hold: true });
  const e = failure(() => session.serve());
  assert.match(
    e.message,
    /^Recording the hold of the input of socket 2 of 3 \(fd 8\) after TCP_REPAIR ON \(1\) failed at getsockopt\(SO_COOKIE\): Bad file descriptor \(EBADF\); the reply was sent/,
  );
  assert.deepEqual(native.calls.slice(native.calls.indexOf("reply 1")), [
    "reply 1",
    "cookie 7",
    "cookie 8",
    "detach 8",
    "detach 9",
    "close 7",
    "close 8",
    "close 9",
  ]);
  assert.equal(session.held, 1, "socket 7 was recorded and stays held");
});

unit("describeCommand() makes the --verbose line, one socket or several", () => {
  assert.equal(describeCommand(1, 1, 5), "ON for 1 socket in 5 µs");
  assert.equal(describeCommand(-1, 253, 412), "OFF_NO_WP for 253 sockets in 412 µs");
  assert.equal(describeCommand(0, 2, 0), "OFF for 2 sockets in 0 µs");
});
