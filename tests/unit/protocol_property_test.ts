// Properties of the protocol framing, checked with fast-check on generated
// control buffers: whatever bytes the kernel could hand over, parseRights()
// either accepts exactly one SCM_RIGHTS with 1..253 descriptors or names the
// right problem, collects every descriptor it walked past (so that they can
// all be closed), and never throws.

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CMSG_HDR_SIZE,
  cmsgAlign,
  cmsgLen,
  CONTROL_SIZE,
  MSG_CTRUNC,
  SCM_CREDENTIALS,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SOL_SOCKET,
} from "../../src/abi.ts";
import { EXIT_FAILURE, ProtocolError } from "../../src/errors.ts";
import {
  ancillaryError,
  BAD_ANCILLARY,
  commandOf,
  isCommand,
  parseRights,
  Problem,
  unsupportedCommand,
} from "../../src/protocol.ts";
import { unit } from "./_unit.ts";

const PROBLEMS = new Set<number>(Object.values(Problem));
const RUNS = { numRuns: 3000 };

interface Parsed {
  problem: Problem;
  fds: number[];
}

/** parseRights() with the buffers RepairSession uses (room for SCM_MAX_FD + 1) */
function parse(bytes: Uint8Array, length: number, flags: number): Parsed {
  const fds = new Int32Array(SCM_MAX_FD + 1);
  const found = new Int32Array(1);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const problem = parseRights(view, length, flags, fds, found);
  return { problem, fds: Array.from(fds.subarray(0, found[0]!)) };
}

/** One control message as a sender builds it */
interface Cmsg {
  level: number;
  type: number;
  payload: Uint8Array;
}

/** Lays out control messages the way the kernel does (CMSG_ALIGN between them) */
function encode(messages: readonly Cmsg[], padLast: boolean): Uint8Array {
  let size = 0;
  messages.forEach((m, i) => {
    const len = cmsgLen(m.payload.length);
    size += i === messages.length - 1 && !padLast ? len : cmsgAlign(len);
  });
  const bytes = new Uint8Array(size);
  const view = new DataView(bytes.buffer);
  let off = 0;
  for (const m of messages) {
    view.setBigUint64(off, BigInt(cmsgLen(m.payload.length)), true);
    view.setInt32(off + 8, m.level, true);
    view.setInt32(off + 12, m.type, true);
    bytes.set(m.payload, off + CMSG_HDR_SIZE);
    off += cmsgAlign(cmsgLen(m.payload.length));
  }
  return bytes;
}

function intsPayload(ints: readonly number[]): Uint8Array {
  const payload = new Uint8Array(ints.length * 4);
  const view = new DataView(payload.buffer);
  ints.forEach((v, i) => view.setInt32(i * 4, v, true));
  return payload;
}

const fdList = (min: number, max: number) =>
  fc.array(fc.integer({ min: -1, max: 0x7fffffff }), { minLength: min, maxLength: max });
const rights = (ints: number[]): Cmsg => ({
  level: SOL_SOCKET,
  type: SCM_RIGHTS,
  payload: intsPayload(ints),
});
const flagsWithout = fc.integer({ min: -0x80000000, max: 0x7fffffff }).map((f) => f & ~MSG_CTRUNC);

/** Any control message: rights, credentials, or another level/type, any payload */
const anyCmsg: fc.Arbitrary<Cmsg> = fc.oneof(
  fdList(0, 80).map(rights),
  fc.uint8Array({ minLength: 0, maxLength: 40 }).map((payload) => ({
    level: SOL_SOCKET,
    type: SCM_RIGHTS,
    payload,
  })),
  fc.record({
    level: fc.constant(SOL_SOCKET),
    type: fc.constant(SCM_CREDENTIALS),
    payload: fc.uint8Array({ minLength: 12, maxLength: 12 }),
  }),
  fc.record({
    level: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
    type: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
    payload: fc.uint8Array({ minLength: 0, maxLength: 24 }),
  }),
);

unit(
  "parseRights() never throws and always answers a known problem, for any bytes, length and flags",
  () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: CONTROL_SIZE + 64 }),
        fc.integer({ min: 0, max: CONTROL_SIZE + 128 }),
        fc.integer({ min: -0x80000000, max: 0x7fffffff }),
        (bytes, length, flags) => {
          const { problem, fds } = parse(bytes, length, flags);
          assert.ok(PROBLEMS.has(problem), `problem ${problem}`);
          assert.ok(fds.length <= SCM_MAX_FD + 1);
          if (problem === Problem.OK) {
            assert.ok(fds.length >= 1 && fds.length <= SCM_MAX_FD, `${fds.length} descriptors`);
          } else {
            // The right kind of error: upstream's wording, exit 1, one line
            const e = ancillaryError(problem);
            assert.ok(e instanceof ProtocolError);
            assert.equal(e.exitCode, EXIT_FAILURE);
            assert.ok(e.message.startsWith(`${BAD_ANCILLARY}: `), e.message);
            assert.ok(!e.message.includes("\n"));
          }
        },
      ),
      RUNS,
    );
  },
);

unit(
  "parseRights() accepts only one well-formed SCM_RIGHTS at the start, and returns its descriptors",
  () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: CONTROL_SIZE }),
        fc.integer({ min: 0, max: CONTROL_SIZE }),
        fc.integer({ min: -0x80000000, max: 0x7fffffff }),
        (bytes, length, flags) => {
          const { problem, fds } = parse(bytes, length, flags);
          if (problem !== Problem.OK) return;
          const view = new DataView(bytes.buffer);
          const end = Math.min(length, bytes.length);
          const len = Number(view.getBigUint64(0, true));
          assert.equal(flags & MSG_CTRUNC, 0);
          assert.equal(view.getInt32(8, true), SOL_SOCKET);
          assert.equal(view.getInt32(12, true), SCM_RIGHTS);
          assert.equal(len, CMSG_HDR_SIZE + 4 * fds.length);
          assert.ok(len <= end);
          assert.ok(end - cmsgAlign(len) < CMSG_HDR_SIZE, "no second header fits");
          fds.forEach((fd, i) => assert.equal(fd, view.getInt32(CMSG_HDR_SIZE + 4 * i, true)));
        },
      ),
      RUNS,
    );
  },
);

unit("parseRights() accepts any 1..253 descriptors as the kernel lays them out", () => {
  fc.assert(
    fc.property(
      fdList(1, SCM_MAX_FD),
      fc.boolean(),
      flagsWithout,
      fc.uint8Array({ minLength: 0, maxLength: 32 }),
      (ints, pad, flags, garbage) => {
        const control = encode([rights(ints)], pad);
        // Bytes past msg_controllen are never looked at
        const bytes = new Uint8Array(control.length + garbage.length);
        bytes.set(control);
        bytes.set(garbage, control.length);
        const { problem, fds } = parse(bytes, control.length, flags);
        assert.equal(problem, Problem.OK);
        assert.deepEqual(fds, ints);
      },
    ),
    RUNS,
  );
});

unit("parseRights() ignores every byte past the length it is given", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ minLength: 0, maxLength: 600 }),
      fc.nat(600),
      fc.integer({ min: -0x80000000, max: 0x7fffffff }),
      fc.uint8Array({ minLength: 1, maxLength: 600 }),
      (bytes, length, flags, other) => {
        const mutated = bytes.slice();
        for (let i = length; i < mutated.length; i++) mutated[i] = other[i % other.length]!;
        assert.deepEqual(parse(mutated, length, flags), parse(bytes, length, flags));
      },
    ),
    RUNS,
  );
});

unit(
  "parseRights() reports MSG_CTRUNC as truncation whatever else, and still collects every descriptor",
  () => {
    fc.assert(
      fc.property(
        fc.array(anyCmsg, { minLength: 0, maxLength: 4 }),
        fc.boolean(),
        fc.integer({ min: -0x80000000, max: 0x7fffffff }),
        (messages, pad, flags) => {
          const control = encode(messages, pad);
          const { problem, fds } = parse(control, control.length, flags | MSG_CTRUNC);
          assert.equal(problem, Problem.TRUNCATED);
          assert.deepEqual(fds, collected(messages));
          assert.match(ancillaryError(problem).message, /MSG_CTRUNC/);
        },
      ),
      RUNS,
    );
  },
);

/** Descriptors of every SCM_RIGHTS message, in order: what must be closed */
function collected(messages: readonly Cmsg[]): number[] {
  const out: number[] = [];
  for (const m of messages) {
    if (m.level !== SOL_SOCKET || m.type !== SCM_RIGHTS) continue;
    const view = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
    for (let i = 0; i + 4 <= m.payload.length; i += 4) out.push(view.getInt32(i, true));
  }
  return out;
}

/** The verdict for a sequence of well-formed control messages, as the manual page's PROTOCOL section states it */
function expectedProblem(messages: readonly Cmsg[]): Problem {
  if (messages.length === 0) return Problem.NONE;
  for (const m of messages) {
    if (m.level !== SOL_SOCKET || m.type !== SCM_RIGHTS) return Problem.NOT_RIGHTS;
    if (m.payload.length % 4 !== 0) return Problem.MALFORMED;
    if (m.payload.length === 0) return Problem.EMPTY;
    if (m.payload.length / 4 > SCM_MAX_FD) return Problem.TOO_MANY;
  }
  return messages.length > 1 ? Problem.SEVERAL : Problem.OK;
}

const TEXT: Record<Problem, RegExp> = {
  [Problem.OK]: /^$/,
  [Problem.NONE]: /: no control data$/,
  [Problem.TRUNCATED]: /MSG_CTRUNC/,
  [Problem.NOT_RIGHTS]: /: control message is not SCM_RIGHTS$/,
  [Problem.SEVERAL]: /: more than one control message$/,
  [Problem.EMPTY]: /: SCM_RIGHTS without descriptors$/,
  [Problem.TOO_MANY]: /: more than 253 descriptors$/,
  [Problem.MALFORMED]: /: malformed control message$/,
};

unit(
  "parseRights() names the right problem for any sequence of well-formed control messages",
  () => {
    fc.assert(
      fc.property(
        fc.array(anyCmsg, { minLength: 0, maxLength: 4 }),
        fc.boolean(),
        flagsWithout,
        (messages, pad, flags) => {
          const control = encode(messages, pad);
          const { problem, fds } = parse(control, control.length, flags);
          const want = expectedProblem(messages);
          assert.equal(problem, want);
          assert.deepEqual(fds, collected(messages), "every descriptor is collected, to be closed");
          if (problem !== Problem.OK) assert.match(ancillaryError(problem).message, TEXT[problem]);
        },
      ),
      RUNS,
    );
  },
);

unit(
  "parseRights() on a header cut short or overrunning the length answers MALFORMED or NONE, never OK",
  () => {
    fc.assert(
      fc.property(
        fdList(1, 20),
        fc.integer({ min: 1, max: 200 }),
        flagsWithout,
        (ints, cut, flags) => {
          const control = encode([rights(ints)], false);
          const length = Math.max(0, control.length - cut);
          const { problem } = parse(control, length, flags);
          assert.equal(problem, length < CMSG_HDR_SIZE ? Problem.NONE : Problem.MALFORMED);
        },
      ),
      RUNS,
    );
  },
);

unit(
  "within the kernel's control buffer no more than 253 descriptors can ever be collected",
  () => {
    // So the executor's SCM_MAX_FD + 1 slots always hold every descriptor to close
    fc.assert(
      fc.property(
        fc.array(fdList(1, SCM_MAX_FD), { minLength: 1, maxLength: 3 }),
        (lists) => {
          const control = encode(lists.map(rights), true).subarray(0, CONTROL_SIZE);
          const { fds } = parse(control, control.length, 0);
          assert.ok(fds.length <= SCM_MAX_FD);
        },
      ),
      RUNS,
    );
  },
);

unit("commandOf() and isCommand() accept exactly the bytes 0x00, 0x01 and 0xff", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 255 }), (byte) => {
      const cmd = commandOf(byte);
      assert.ok(cmd >= -128 && cmd <= 127);
      assert.equal(isCommand(cmd), byte === 0 || byte === 1 || byte === 0xff);
      if (!isCommand(cmd)) {
        const e = unsupportedCommand(byte);
        assert.equal(e.exitCode, EXIT_FAILURE);
        assert.equal(
          e.message,
          `Unsupported command ${cmd} (byte 0x${byte.toString(16).padStart(2, "0")}) from peer`,
        );
      }
    }),
  );
});
