// The input hold on real sockets (README, "Holding input"): while a socket is
// in repair mode because of the helper, nothing the peer sends lands in it;
// after OFF everything does. Both mechanisms: as root the helper loads one
// eBPF program at startup, with CAP_NET_ADMIN alone it attaches a classic
// filter per socket. Each test runs the real helper with --allow-ffi only.

import assert from "node:assert/strict";
import {
  OFF,
  OFF_NO_WP,
  ON,
  ONLY_NET_ADMIN,
  REPLY_MS,
  type Session,
  type SpawnOptions,
  startSession,
  waitUntil,
} from "../support/helper.ts";
import {
  closeAll,
  readReply,
  repairState,
  sendCommand,
  tcpConnections,
  tcpSocket,
} from "../support/peer_native.ts";
import {
  POLLIN,
  pollMany,
  POLLOUT,
  queueSeq,
  receiveNow,
  receiveQueueBytes,
  selectQueue,
  sendNow,
  TCP_RECV_QUEUE,
  tcpInfo,
} from "../support/repair_state.ts";
import {
  ACCEPT_ALL_CLASSIC,
  attachClassic,
  attachEbpf,
  closeProgram,
  EACCES,
  filterLength,
  loadAcceptAllEbpf,
  lockFilter,
} from "../support/socket_filter.ts";

interface Mode {
  name: string;
  options: SpawnOptions;
  /** What SO_GET_FILTER says about a socket the helper holds */
  held: number;
  startup: RegExp;
}

const MODES: Mode[] = [
  {
    name: "as root (one eBPF program)",
    options: {},
    held: -EACCES,
    startup: /^input hold: on; one eBPF socket filter loaded/m,
  },
  {
    name: "with only CAP_NET_ADMIN (a classic filter per socket)",
    options: { prefix: ONLY_NET_ADMIN },
    held: 1,
    startup:
      /^input hold: on; a classic socket filter .* \(loading an eBPF program was refused: Operation not permitted \(EPERM\); as root or with CAP_BPF the hold costs less\)$/m,
  },
];

/** One loopback connection: `sock` is handed to the helper, `peer` sends */
function connection(): { sock: number; peer: number; close(): void } {
  const tcp = tcpConnections(4, 1);
  return { sock: tcp.local[0]!, peer: tcp.remote[0]!, close: tcp.close };
}

function command(s: Session, cmd: number, fds: number[]): void {
  sendCommand(s.conn, cmd, fds);
  assert.equal(readReply(s.conn, REPLY_MS), cmd, `reply to ${cmd}`);
}

/** rcv_nxt of a socket in repair mode (TCP_QUEUE_SEQ of its receive queue) */
function receiveSequence(fd: number): number {
  selectQueue(fd, TCP_RECV_QUEUE);
  return queueSeq(fd);
}

/** Bytes numbered so that a lost or reordered one shows */
function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + seed + (i >> 8)) & 0xff;
  return out;
}

/** Sends all of `data` from `fd`, waiting (bounded) for room */
function sendAll(fd: number, data: Uint8Array): void {
  let off = 0;
  const deadline = performance.now() + 10000;
  while (off < data.length) {
    const n = sendNow(fd, data.subarray(off));
    if (n > 0) {
      off += n;
      continue;
    }
    if (performance.now() > deadline) throw new Error(`sent only ${off} of ${data.length}`);
    pollMany([[fd, POLLOUT]], 100);
  }
}

/** Reads exactly `n` bytes from `fd`, waiting at most `ms` in all */
function receiveAll(fd: number, n: number, ms: number): Uint8Array {
  const out = new Uint8Array(n);
  let got = 0;
  const deadline = performance.now() + ms;
  while (got < n) {
    const left = deadline - performance.now();
    if (left <= 0) throw new Error(`received ${got} of ${n} bytes within ${ms} ms`);
    if (pollMany([[fd, POLLIN]], Math.ceil(left)).length === 0) continue;
    const r = receiveNow(fd, out.subarray(got));
    if (r === 0) throw new Error(`EOF after ${got} of ${n} bytes`);
    if (r > 0) got += r;
  }
  return out;
}

async function withHelper(
  args: string[],
  options: SpawnOptions,
  fn: (s: Session) => Promise<void> | void,
): Promise<{ code: number; stderr: string }> {
  const s = await startSession(["--verbose", ...args], options);
  try {
    await fn(s);
    s.closeConn();
    const out = await s.helper.exit();
    return { code: out.code, stderr: out.stderr };
  } finally {
    await s.close();
  }
}

for (const mode of MODES) {
  Deno.test(`${mode.name}: a held socket takes nothing in while in repair mode, everything after OFF`, async () => {
    const c = connection();
    try {
      const out = await withHelper([], mode.options, async (s) => {
        command(s, ON, [c.sock]);
        assert.equal(filterLength(c.sock), mode.held, "our filter is on the socket");
        const seq = receiveSequence(c.sock);
        const data = pattern(8000, 3);
        sendAll(c.peer, data);
        // Sent for sure, and never acknowledged: the peer retransmits
        await waitUntil(
          () => tcpInfo(c.peer).totalRetrans >= 1,
          10000,
          "the peer to retransmit what the held socket dropped",
        );
        assert.equal(receiveSequence(c.sock), seq, "rcv_nxt did not move");
        assert.equal(receiveQueueBytes(c.sock), 0, "nothing queued");

        command(s, OFF, [c.sock]);
        assert.equal(filterLength(c.sock), 0, "released: no filter left");
        assert.deepEqual(receiveAll(c.sock, data.length, 20000), data, "every byte, in order");
      });
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stderr, mode.startup);
      assert.doesNotMatch(out.stderr, /left as it is|not held/);
    } finally {
      c.close();
    }
  });

  Deno.test(`${mode.name}: a full batch is held, IPv4, IPv6 and unconnected; OFF_NO_WP releases it`, async () => {
    const v4 = tcpConnections(4, 100);
    const v6 = tcpConnections(6, 26);
    // As passt's target side hands them over: new sockets, not yet connected
    const fresh = [tcpSocket(4), tcpSocket(6)];
    const fds = [...v4.local, ...v4.remote, ...v6.local, ...v6.remote, ...fresh];
    assert.equal(fds.length, 254);
    fds.pop();
    try {
      const out = await withHelper([], mode.options, (s) => {
        command(s, ON, fds);
        for (const fd of fds) assert.equal(filterLength(fd), mode.held);
        command(s, OFF_NO_WP, fds);
        for (const fd of fds) assert.equal(filterLength(fd), 0);
        for (const fd of fds) assert.equal(repairState(fd), 0);
      });
      assert.equal(out.code, 0, out.stderr);
    } finally {
      v4.close();
      v6.close();
      closeAll(fresh);
    }
  });

  Deno.test(`${mode.name}: a socket with a filter of its own keeps it, and --verbose says so`, async () => {
    const own = [
      {
        what: "a classic filter of 2 instructions",
        length: 2,
        set: (fd: number) => attachClassic(fd, ACCEPT_ALL_CLASSIC),
      },
      {
        what: "an eBPF program",
        length: -EACCES,
        set: (fd: number) => {
          const program = loadAcceptAllEbpf();
          attachEbpf(fd, program);
          closeProgram(program);
        },
      },
    ];
    for (const filter of own) {
      const c = connection();
      const other = connection();
      try {
        filter.set(c.sock);
        const out = await withHelper([], mode.options, async (s) => {
          command(s, ON, [other.sock, c.sock]);
          assert.equal(filterLength(c.sock), filter.length, "its own filter, still there");
          assert.equal(filterLength(other.sock), mode.held, "the other socket is held");
          // Its filter keeps every packet, so its input was not held
          const seq = receiveSequence(c.sock);
          sendAll(c.peer, pattern(1000, 1));
          await waitUntil(
            () => receiveSequence(c.sock) !== seq,
            10000,
            "the socket with its own filter to take data in",
          );
          command(s, OFF, [c.sock, other.sock]);
          assert.equal(filterLength(c.sock), filter.length, "its own filter, kept through OFF");
          assert.equal(filterLength(other.sock), 0);
        });
        assert.equal(out.code, 0, out.stderr);
        assert.match(
          out.stderr,
          new RegExp(
            `^ON: socket 2 of 2 \\(fd \\d+\\) has a socket filter of its own \\(${filter.what}\\): left as it is, its input is not held$`,
            "m",
          ),
        );
        assert.match(
          out.stderr,
          /^OFF: socket 1 of 2 \(fd \d+\) was not held by this helper: no filter removed$/m,
        );
        assert.equal(out.stderr.match(/left as it is|not held by/g)?.length, 2, out.stderr);
      } finally {
        c.close();
        other.close();
      }
    }
  });

  Deno.test(`${mode.name}: a hold that fails fails the message: no reply, exit 1`, async () => {
    const [a, locked, b] = [connection(), connection(), connection()];
    try {
      // A locked socket refuses any filter: attaching ours fails with EPERM
      lockFilter(locked.sock);
      const out = await withHelper([], mode.options, (s) => {
        sendCommand(s.conn, ON, [a.sock, locked.sock, b.sock]);
        assert.equal(readReply(s.conn, REPLY_MS), "eof", "no reply");
      });
      assert.equal(out.code, 1);
      const attach = mode.held === -EACCES ? "SO_ATTACH_BPF" : "SO_ATTACH_FILTER";
      assert.match(
        out.stderr,
        new RegExp(
          `^Holding the input of socket 2 of 3 \\(fd \\d+\\) after TCP_REPAIR ON \\(1\\) failed at setsockopt\\(${attach}\\): Operation not permitted \\(EPERM\\)$`,
          "m",
        ),
      );
      // As with a failed setsockopt: the sockets before stay switched (no
      // rollback), those after are untouched; and no filter of ours is left
      assert.deepEqual([repairState(a.sock), repairState(b.sock)], [1, 0]);
      assert.deepEqual([filterLength(a.sock), filterLength(b.sock)], [0, 0]);
    } finally {
      for (const c of [a, locked, b]) c.close();
    }
  });

  Deno.test(`${mode.name}: a release that fails fails the message: no reply, exit 1`, async () => {
    const c = connection();
    try {
      const out = await withHelper([], mode.options, (s) => {
        command(s, ON, [c.sock]);
        lockFilter(c.sock); // our filter can no longer be removed
        sendCommand(s.conn, OFF, [c.sock]);
        assert.equal(readReply(s.conn, REPLY_MS), "eof", "no reply");
      });
      assert.equal(out.code, 1);
      assert.match(
        out.stderr,
        /^Releasing the input of socket 1 of 1 \(fd \d+\) after TCP_REPAIR OFF \(0\) failed at setsockopt\(SO_DETACH_FILTER\): Operation not permitted \(EPERM\)$/m,
      );
    } finally {
      c.close();
    }
  });

  Deno.test(`${mode.name}: --no-hold puts no filter on, and the socket takes data in`, async () => {
    const c = connection();
    try {
      const out = await withHelper(["--no-hold"], mode.options, async (s) => {
        command(s, ON, [c.sock]);
        assert.equal(filterLength(c.sock), 0);
        const seq = receiveSequence(c.sock);
        sendAll(c.peer, pattern(1000, 2));
        // The negative control of the first test: without the hold, a socket
        // in repair mode takes data in, which is what loses it in passt
        await waitUntil(
          () => receiveSequence(c.sock) !== seq,
          10000,
          "the unheld socket to take data in",
        );
        command(s, OFF, [c.sock]);
        assert.equal(filterLength(c.sock), 0);
      });
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stderr, /^input hold: off \(--no-hold\)$/m);
    } finally {
      c.close();
    }
  });
}
