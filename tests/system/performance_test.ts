// What docs/performance.md promises that is not a timing (timings are the
// bench's): the descriptor table is the serving thread's own and grown
// before passt's first message,
// priming leaves nothing open, and the steady-state loop
// allocates nothing per message.

import assert from "node:assert/strict";
import { PREGROW_FD } from "../../src/startup.ts";
import { Helper, idle, openDescriptors, Scratch, waitUntil } from "../support/helper.ts";
import {
  acceptWithin,
  closeFd,
  directoryNames,
  listenNow,
  processDescriptors,
  readReply,
  readSmallFile,
  sendCommand,
  tcpConnections,
  unixListener,
} from "../support/peer_native.ts";

const POLL_SYSCALLS = Deno.build.arch === "aarch64" ? [73] : [7, 271]; // poll, ppoll

function fdTableSize(pid: number): number {
  const m = readSmallFile(`/proc/${pid}/status`)?.match(/^FDSize:\s+(\d+)/m);
  assert.ok(m, `FDSize of ${pid}`);
  return Number(m[1]);
}

function currentSyscall(pid: number): number {
  return Number(readSmallFile(`/proc/${pid}/syscall`)?.split(" ")[0]);
}

Deno.test("helper grows its descriptor table before passt's first message, and primes leaving nothing open", async () => {
  // A child starts with a table sized for its parent's highest open
  // descriptor; unless ours is low, the helper would not need to grow its own
  // and the test would prove nothing.
  const ours = Math.max(...processDescriptors(Deno.pid).keys());
  assert.ok(ours < 512, `this test needs the test process's descriptors below 512, not ${ours}`);

  const scratch = new Scratch();
  // Bound, not listening: the helper retries ECONNREFUSED, waiting in poll()
  const path = scratch.path("passt.socket.repair");
  const listener = unixListener(path, false);
  const helper = new Helper(["--timeout", "60", path]);
  const tcp = tcpConnections(4, 127);
  let conn = -1;
  try {
    await waitUntil(
      () => POLL_SYSCALLS.includes(currentSyscall(helper.pid)),
      20000,
      "the helper to wait for passt to listen",
    );
    const before = openDescriptors(helper.pid);
    listenNow(listener);
    conn = acceptWithin(listener, 20000);
    // A first message of one socket: answered once growing and priming are done
    sendCommand(conn, 1, [tcp.local[0]!]);
    assert.equal(readReply(conn, 10000), 1);
    await idle(helper.pid);
    // 253 descriptors alone would have grown it to 512 at most
    const size = fdTableSize(helper.pid);
    assert.ok(size > PREGROW_FD, `descriptor table of ${size} after one 1-socket message`);
    const fds = openDescriptors(helper.pid);
    const high = [...fds.keys()].filter((fd) => fd >= PREGROW_FD);
    assert.deepEqual(high, [], "no descriptor left at the top of the table");
    // Priming's socket pair and throwaway TCP socket are closed again: since
    // it waited to connect, the helper holds one more descriptor, passt's
    const added = [...fds].filter(([fd, target]) => before.get(fd) !== target);
    assert.equal(added.length, 1, `opened since: ${added.join(", ")}`);
    assert.match(added[0]![1], /^socket:/);
    // The serving thread has a table of its own (docs/performance.md):
    // passt's connection, made after it, is in no other thread's
    const threads = directoryNames(`/proc/${helper.pid}/task`).map(Number);
    const others = threads.filter((tid) => tid !== helper.pid);
    assert.ok(threads.includes(helper.pid) && others.length > 0, `threads ${threads}`);
    for (const tid of others) {
      const theirs = [...processDescriptors(`${helper.pid}/task/${tid}`).values()];
      assert.ok(!theirs.includes(added[0]![1]), `thread ${tid} shares the table`);
    }

    // And the grown table serves a full batch
    sendCommand(conn, 1, [...tcp.local, ...tcp.remote].slice(0, 253));
    assert.equal(readReply(conn, 10000), 1);
    await idle(helper.pid);
    assert.equal(fdTableSize(helper.pid), size, "no further growth for a full batch");
    closeFd(conn);
    conn = -1;
    const out = await helper.exit();
    assert.deepEqual([out.code, out.stderr], [0, ""]);
  } finally {
    tcp.close();
    if (conn >= 0) closeFd(conn);
    helper.kill();
    await helper.exit().catch(() => {});
    closeFd(listener);
    scratch.cleanup();
  }
});

const PROBE = new URL("../support/allocation_probe.ts", import.meta.url).pathname;

interface ProbeResult {
  leak: boolean;
  commands: number;
  failures: number;
  windows: Record<string, number>;
  bytesPerMessage: number;
}

async function runProbe(extra: string[]): Promise<ProbeResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-ffi",
      "--v8-flags=--expose-gc,--min-semi-space-size=16",
      PROBE,
      ...extra,
    ],
    stdin: "null",
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `allocation probe failed: ${stderr}`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("helper's steady-state loop allocates nothing per message", async () => {
  const r = await runProbe([]);
  assert.equal(r.failures, 0, "every message answered, every socket switched");
  assert.equal(r.commands, 54000);
  // One BigInt per message would be 16 bytes or more; what is left is noise
  // of a few bytes in total, spread over 18,000 messages
  assert.ok(
    Math.abs(r.bytesPerMessage) < 1,
    `${r.bytesPerMessage} bytes per message (windows ${JSON.stringify(r.windows)})`,
  );
});

Deno.test("allocation probe sees a single BigInt per message", async () => {
  // The probe's own calibration: without it, the test above could pass by
  // measuring nothing
  const r = await runProbe(["--leak"]);
  assert.equal(r.failures, 0);
  assert.ok(r.bytesPerMessage >= 8, `${r.bytesPerMessage} bytes per message with a leak`);
});
