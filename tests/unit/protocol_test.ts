import assert from "node:assert/strict";
import {
  cmsgLen,
  cmsgSpace,
  CONTROL_SIZE,
  MSG_CTRUNC,
  SCM_CREDENTIALS,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SOL_SOCKET,
} from "../../src/abi.ts";
import {
  ancillaryError,
  commandName,
  commandOf,
  isCommand,
  parseRights,
  Problem,
  unsupportedCommand,
} from "../../src/protocol.ts";
import { unit } from "./_unit.ts";

/** Builds control data as the kernel lays it out: [level, type, payload ints][] */
function control(...messages: [number, number, number[]][]): { view: DataView; length: number } {
  const bytes = new Uint8Array(CONTROL_SIZE * 2);
  const view = new DataView(bytes.buffer);
  let off = 0;
  for (const [level, type, ints] of messages) {
    view.setBigUint64(off, BigInt(cmsgLen(ints.length * 4)), true);
    view.setInt32(off + 8, level, true);
    view.setInt32(off + 12, type, true);
    ints.forEach((v, i) => view.setInt32(off + 16 + 4 * i, v, true));
    off += cmsgSpace(ints.length * 4);
  }
  return { view, length: off };
}

function parse(c: { view: DataView; length: number }, flags = 0) {
  const fds = new Int32Array(SCM_MAX_FD * 2);
  const found = new Int32Array(1);
  const problem = parseRights(c.view, c.length, flags, fds, found);
  return { problem, fds: [...fds.subarray(0, found[0]!)] };
}

for (const n of [1, 2, 3, 64, 252, SCM_MAX_FD]) {
  unit(`parseRights() accepts one SCM_RIGHTS with ${n} descriptors`, () => {
    const fds = Array.from({ length: n }, (_, i) => 100 + i);
    const r = parse(control([SOL_SOCKET, SCM_RIGHTS, fds]));
    assert.equal(r.problem, Problem.OK);
    assert.deepEqual(r.fds, fds);
  });
}

unit("CONTROL_SIZE is CMSG_SPACE(253 * 4) = 1032 on LP64", () => {
  assert.equal(CONTROL_SIZE, 1032);
});

const REJECTED: [string, { view: DataView; length: number }, number, Problem, number[]][] = [
  ["no control data", control(), 0, Problem.NONE, []],
  ["zero descriptors", control([SOL_SOCKET, SCM_RIGHTS, []]), 0, Problem.EMPTY, []],
  ["SCM_CREDENTIALS", control([SOL_SOCKET, SCM_CREDENTIALS, [1, 0, 0]]), 0, Problem.NOT_RIGHTS, []],
  ["another level", control([6, SCM_RIGHTS, [5]]), 0, Problem.NOT_RIGHTS, []],
  [
    "two SCM_RIGHTS",
    control([SOL_SOCKET, SCM_RIGHTS, [5]], [SOL_SOCKET, SCM_RIGHTS, [6, 7]]),
    0,
    Problem.SEVERAL,
    [5, 6, 7],
  ],
  [
    "rights then credentials",
    control([SOL_SOCKET, SCM_RIGHTS, [5]], [SOL_SOCKET, SCM_CREDENTIALS, [1, 2, 3]]),
    0,
    Problem.NOT_RIGHTS,
    [5],
  ],
  [
    "MSG_CTRUNC with some descriptors",
    control([SOL_SOCKET, SCM_RIGHTS, [8, 9]]),
    MSG_CTRUNC,
    Problem.TRUNCATED,
    [8, 9],
  ],
  ["MSG_CTRUNC without control data", control(), MSG_CTRUNC, Problem.TRUNCATED, []],
  [
    "more than 253",
    control([SOL_SOCKET, SCM_RIGHTS, Array.from({ length: 254 }, (_, i) => i)]),
    0,
    Problem.TOO_MANY,
    Array.from({ length: 254 }, (_, i) => i),
  ],
];

for (const [what, c, flags, problem, fds] of REJECTED) {
  unit(`parseRights() rejects ${what} and still reports every descriptor to close`, () => {
    const r = parse(c, flags);
    assert.equal(r.problem, problem);
    assert.deepEqual(r.fds, fds);
  });
}

unit("parseRights() rejects a cmsg_len shorter than the header or past the end", () => {
  const c = control([SOL_SOCKET, SCM_RIGHTS, [5]]);
  c.view.setBigUint64(0, 8n, true);
  assert.equal(parse(c).problem, Problem.MALFORMED);
  c.view.setBigUint64(0, 4096n, true);
  assert.equal(parse(c).problem, Problem.MALFORMED);
  c.view.setBigUint64(0, 1n << 40n, true);
  assert.equal(parse(c).problem, Problem.MALFORMED);
});

unit("parseRights() rejects a payload that is not whole descriptors", () => {
  const c = control([SOL_SOCKET, SCM_RIGHTS, [5, 6]]);
  c.view.setBigUint64(0, BigInt(cmsgLen(6)), true);
  const r = parse(c);
  assert.equal(r.problem, Problem.MALFORMED);
  assert.deepEqual(r.fds, [5]);
});

unit("parseRights() ignores a length shorter than one header", () => {
  const c = control([SOL_SOCKET, SCM_RIGHTS, [5]]);
  assert.equal(parse({ view: c.view, length: 15 }).problem, Problem.NONE);
});

unit("commandOf() reads the byte as a signed char", () => {
  assert.deepEqual([0, 1, 0xff, 0x80, 0x7f].map(commandOf), [0, 1, -1, -128, 127]);
});

unit("isCommand() accepts exactly ON, OFF and OFF_NO_WP", () => {
  const accepted = Array.from({ length: 256 }, (_, b) => commandOf(b)).filter(isCommand);
  assert.deepEqual(accepted.sort(), [-1, 0, 1]);
});

unit("commandName() names the three commands", () => {
  assert.deepEqual([1, 0, -1, 7].map(commandName), ["ON", "OFF", "OFF_NO_WP", "7"]);
});

unit("unsupportedCommand() keeps upstream's wording and shows value and byte", () => {
  assert.equal(unsupportedCommand(0xfe).message, "Unsupported command -2 (byte 0xfe) from peer");
  assert.equal(unsupportedCommand(5).exitCode, 1);
});

unit("ancillaryError() starts with upstream's wording", () => {
  for (const p of Object.values(Problem).filter((p) => p !== Problem.OK)) {
    const e = ancillaryError(p);
    assert.match(e.message, /^No\/bad ancillary data from peer: \S/);
    assert.equal(e.exitCode, 1);
  }
});
