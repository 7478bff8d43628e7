// The protocol, end to end: the real helper (deno run --allow-ffi main.ts)
// against a fake passt that sends real TCP sockets with SCM_RIGHTS.

import assert from "node:assert/strict";
import { SCM_CREDENTIALS, SOL_SOCKET } from "../../src/abi.ts";
import {
  closeAll,
  controlMessage,
  directoryNames,
  drainNow,
  type Family,
  pipe,
  readReply,
  readSmallFile,
  repairState,
  sendCommand,
  sendRaw,
  tcpConnections,
  tcpListener,
  udpSocket,
  unixPair,
  waitFor,
} from "../support/peer_native.ts";
import {
  idle,
  OFF,
  OFF_NO_WP,
  ON,
  openDescriptors,
  processState,
  REPLY_MS,
  type Session,
  waitUntil,
  WITHOUT_NET_ADMIN,
  withSession,
} from "../support/helper.ts";

/** Sends one command and expects its echo */
function roundTrip(s: Session, cmd: number, fds: readonly number[]): void {
  sendCommand(s.conn, cmd, fds);
  assert.equal(readReply(s.conn, REPLY_MS), cmd, `reply to command ${cmd}`);
}

/** Expects the helper to fail: exit 1, no reply byte, one stderr line matching */
async function expectFailure(s: Session, pattern: RegExp): Promise<string> {
  const out = await s.helper.exit();
  assert.equal(out.code, 1, `exit status; stderr: ${out.stderr}`);
  assert.equal(out.signal, null);
  assert.equal(out.stdout, "");
  assert.match(out.stderr, pattern);
  assert.equal(out.stderr.trimEnd().split("\n").length, 1, `one line: ${out.stderr}`);
  assert.equal(drainNow(s.conn).length, 0, "no reply after a failure");
  return out.stderr;
}

/** Expects a clean end: exit 0, nothing printed */
async function expectCleanExit(s: Session): Promise<void> {
  const out = await s.helper.exit();
  assert.deepEqual([out.code, out.signal, out.stdout, out.stderr], [0, null, "", ""]);
}

for (const family of [4, 6] as Family[]) {
  for (const count of [1, 253]) {
    Deno.test(`helper switches ON, OFF and OFF_NO_WP for ${count} IPv${family} socket(s)`, () =>
      withSession(async (s) => {
        const tcp = s.adopt(tcpConnections(family, count));
        for (const cmd of [ON, OFF, ON, OFF_NO_WP]) {
          roundTrip(s, cmd, tcp.local);
          const want = cmd === ON ? 1 : 0;
          for (const fd of tcp.local) assert.equal(repairState(fd), want, `fd ${fd} after ${cmd}`);
        }
        s.closeConn();
        await expectCleanExit(s);
      }));
  }
}

Deno.test("helper exits 0 silently when passt closes the connection", () =>
  withSession(async (s) => {
    s.closeConn();
    await expectCleanExit(s);
  }));

Deno.test("helper exits 0 when passt resets the connection", () =>
  withSession(async (s) => {
    const tcp = s.adopt(tcpConnections(4, 1));
    sendCommand(s.conn, ON, tcp.local);
    // Closing with the reply unread in our queue makes the kernel report
    // ECONNRESET to the helper instead of EOF
    assert.ok(waitFor(s.conn, REPLY_MS), "reply arrived");
    s.closeConn();
    await expectCleanExit(s);
  }));

Deno.test("a 1-socket message does not cut the next 253-socket message (upstream switches 2)", () =>
  withSession((s) => {
    const one = s.adopt(tcpConnections(4, 1));
    const many = s.adopt(tcpConnections(4, 253));
    roundTrip(s, ON, one.local);
    roundTrip(s, ON, many.local);
    assert.equal(many.local.filter((fd) => repairState(fd) === 1).length, 253);
    roundTrip(s, OFF, many.local);
    assert.equal(many.local.filter((fd) => repairState(fd) === 1).length, 0);
  }));

Deno.test("pipelined messages get one reply each, in order", () =>
  withSession((s) => {
    const tcp = s.adopt(tcpConnections(4, 40));
    const cmds = Array.from({ length: 40 }, (_, i) => [ON, OFF, OFF_NO_WP][i % 3]!);
    cmds.forEach((cmd, i) => sendCommand(s.conn, cmd, [tcp.local[i]!]));
    assert.deepEqual(cmds.map(() => readReply(s.conn, REPLY_MS)), cmds);
    cmds.forEach((cmd, i) => assert.equal(repairState(tcp.local[i]!), cmd === ON ? 1 : 0));
  }));

Deno.test("a byte without control data is rejected: No/bad ancillary data, no reply", () =>
  withSession(async (s) => {
    sendRaw(s.conn, new Uint8Array([ON]), new Uint8Array(0));
    await expectFailure(s, /^No\/bad ancillary data from peer: no control data$/m);
  }));

Deno.test("SCM_RIGHTS with zero descriptors is rejected", () =>
  withSession(async (s) => {
    // The kernel drops an empty SCM_RIGHTS: the helper sees no control data
    sendRaw(s.conn, new Uint8Array([ON]), controlMessage(SOL_SOCKET, 1, new Uint8Array(0)));
    await expectFailure(s, /^No\/bad ancillary data from peer/);
  }));

Deno.test("SCM_CREDENTIALS instead of SCM_RIGHTS is rejected", () =>
  withSession(async (s) => {
    const tcp = s.adopt(tcpConnections(4, 1));
    const cred = new Uint8Array(12);
    new DataView(cred.buffer).setInt32(0, Deno.pid, true);
    sendRaw(s.conn, new Uint8Array([ON]), controlMessage(SOL_SOCKET, SCM_CREDENTIALS, cred));
    await expectFailure(s, /^No\/bad ancillary data from peer/);
    assert.equal(repairState(tcp.local[0]!), 0);
  }));

Deno.test("a second byte without descriptors never reuses the previous message's", () =>
  withSession(async (s) => {
    const tcp = s.adopt(tcpConnections(4, 3));
    roundTrip(s, ON, tcp.local);
    // OFF with no descriptors: a helper that reused stale ones would switch
    // these three off and reply
    sendRaw(s.conn, new Uint8Array([OFF]), new Uint8Array(0));
    await expectFailure(s, /^No\/bad ancillary data from peer: no control data$/m);
    for (const fd of tcp.local) assert.equal(repairState(fd), 1);
  }));

for (const byte of [2, 5, 0x7f, 0x80, 0xfe]) {
  Deno.test(`command byte 0x${byte.toString(16)} is unsupported: no reply, sockets untouched`, () =>
    withSession(async (s) => {
      const tcp = s.adopt(tcpConnections(4, 2));
      sendCommand(s.conn, byte, tcp.local);
      const signed = (byte << 24) >> 24;
      const hex = byte.toString(16).padStart(2, "0");
      await expectFailure(s, new RegExp(`^Unsupported command ${signed} \\(byte 0x${hex}\\)`));
      for (const fd of tcp.local) assert.equal(repairState(fd), 0);
    }));
}

/** Kinds of descriptor that are not TCP sockets TCP_REPAIR can be set on */
const NOT_REPAIRABLE: [string, () => number[], RegExp][] = [
  ["a pipe", () => pipe(), /Socket operation on non-socket \(ENOTSOCK\)/],
  ["a UDP socket", () => [udpSocket()], /\((ENOPROTOOPT|EOPNOTSUPP)\)/],
  ["an AF_UNIX socket", () => unixPair(), /\((EOPNOTSUPP|ENOPROTOOPT)\)/],
  ["a listening TCP socket", () => [tcpListener(4).fd], /\(EPERM\)/],
];

for (const [what, make, errno] of NOT_REPAIRABLE) {
  Deno.test(`batch [tcp, ${what}, tcp]: fails at 2 of 3, third untouched`, () =>
    withSession(async (s) => {
      const tcp = s.adopt(tcpConnections(4, 2));
      const odd = make();
      s.adopt({ close: () => closeAll(odd) });
      sendCommand(s.conn, ON, [tcp.local[0]!, odd[0]!, tcp.local[1]!]);
      const line = await expectFailure(
        s,
        /^Setting TCP_REPAIR to ON \(1\) failed for socket 2 of 3 \(fd \d+\): /,
      );
      assert.match(line, errno);
      assert.equal(repairState(tcp.local[0]!), 1, "first socket was switched");
      assert.equal(repairState(tcp.local[1]!), 0, "third socket never touched");
    }));
}

Deno.test("after every command the helper holds only the descriptors it held before", () =>
  withSession(async (s) => {
    const tcp = s.adopt(tcpConnections(6, 253));
    await idle(s.helper.pid);
    const before = openDescriptors(s.helper.pid);
    for (const cmd of [ON, OFF, ON, OFF_NO_WP]) {
      roundTrip(s, cmd, tcp.local);
      await idle(s.helper.pid);
      assert.deepEqual(openDescriptors(s.helper.pid), before, `after command ${cmd}`);
    }
  }));

/** The one child of `pid` (a process started through a wrapper), waited for */
async function childOf(pid: number): Promise<number> {
  let child = 0;
  await waitUntil(
    () => {
      // Through the FFI: Deno's file API wants every permission for /proc
      for (const tid of directoryNames(`/proc/${pid}/task`)) {
        const text = readSmallFile(`/proc/${pid}/task/${tid}/children`)?.trim() ?? "";
        if (text !== "") child = Number(text.split(" ")[0]);
      }
      return child !== 0;
    },
    10000,
    `a child of ${pid}`,
  );
  return child;
}

Deno.test("with close_range() refused, as before Linux 5.9, every descriptor is still closed", () =>
  withSession(
    async (s) => {
      // s.helper is the wrapper; the helper is its child
      const pid = await childOf(s.helper.pid);
      const tcp = s.adopt(tcpConnections(4, 40));
      await idle(pid);
      const before = openDescriptors(pid);
      for (const cmd of [ON, OFF, ON, OFF_NO_WP]) {
        roundTrip(s, cmd, tcp.local);
        await idle(pid);
        assert.deepEqual(openDescriptors(pid), before, `after command ${cmd}`);
      }
      for (const fd of tcp.local) assert.equal(repairState(fd), 0);
    },
    [],
    {
      prefix: [
        Deno.execPath(),
        "run",
        "--allow-ffi",
        "--allow-run",
        new URL("../support/deny_seccomp.ts", import.meta.url).pathname,
        "--refuse=close_range",
      ],
    },
  ));

Deno.test("a descriptor limit too low for the batch: MSG_CTRUNC detected, nothing switched", () =>
  withSession(async (s) => {
    await idle(s.helper.pid);
    const open = [...openDescriptors(s.helper.pid).keys()];
    // RLIMIT_NOFILE caps the descriptor number: with the limit just above the
    // highest one the helper holds, only the holes below it are free
    const limit = Math.max(...open) + 1;
    const free = limit - open.length;
    const lowered = await new Deno.Command("prlimit", {
      args: ["--pid", String(s.helper.pid), `--nofile=${limit}:${limit}`],
    }).output();
    assert.equal(lowered.code, 0, new TextDecoder().decode(lowered.stderr));
    const tcp = s.adopt(tcpConnections(4, free + 10));
    sendCommand(s.conn, ON, tcp.local);
    await expectFailure(s, /^No\/bad ancillary data from peer: .*MSG_CTRUNC.*RLIMIT_NOFILE/);
    for (const fd of tcp.local) assert.equal(repairState(fd), 0);
  }));

Deno.test("passt gone before the reply: 'Reply to' error, exit 1, no SIGPIPE death", () =>
  withSession(async (s) => {
    const tcp = s.adopt(tcpConnections(4, 1));
    // Stop the helper so that our close certainly comes before its reply
    s.helper.kill("SIGSTOP");
    await waitUntil(() => processState(s.helper.pid) === "T", 10000, "the helper to stop");
    sendCommand(s.conn, ON, tcp.local);
    s.closeConn();
    s.helper.kill("SIGCONT");
    const out = await s.helper.exit();
    assert.equal(out.signal, null, "not killed by a signal");
    assert.equal(out.code, 1);
    assert.equal(out.stderr, "Reply to ON failed: Broken pipe (EPIPE)\n");
  }));

Deno.test("without CAP_NET_ADMIN: a warning at start, then exit 1 naming CAP_NET_ADMIN", () =>
  withSession(
    async (s) => {
      const tcp = s.adopt(tcpConnections(4, 2));
      sendCommand(s.conn, ON, tcp.local);
      const out = await s.helper.exit();
      assert.equal(out.code, 1);
      assert.equal(drainNow(s.conn).length, 0);
      const lines = out.stderr.trimEnd().split("\n");
      assert.equal(lines.length, 2, out.stderr);
      assert.match(lines[0]!, /^warning: .*CAP_NET_ADMIN/);
      assert.match(
        lines[1]!,
        /^Setting TCP_REPAIR to ON \(1\) failed for socket 1 of 2 .*\(EPERM\); .*CAP_NET_ADMIN/,
      );
      for (const fd of tcp.local) assert.equal(repairState(fd), 0);
    },
    [],
    { prefix: WITHOUT_NET_ADMIN },
  ));
