// Socket mode connects before it hardens (src/startup.ts, step 1;
// docs/security.md): each test plays the peer that the helper reaches
// before seccomp, against the real helper, and checks that reaching it
// early gives that peer nothing it did not have before: its first message
// is read by a hardened, confined process; a peer refused by the checks, or
// a helper that cannot harden, leaves it a connection that only ends.

import assert from "node:assert/strict";
import {
  ACCEPT_MS,
  accepted,
  finish,
  Helper,
  helperCommand,
  OFF,
  ON,
  REPLY_MS,
  runHelper,
  Scratch,
  supportCommand,
} from "../support/helper.ts";
import {
  acceptWithin,
  closeAll,
  closeFd,
  pendingConnection,
  readReply,
  repairState,
  sendCommand,
  statusFields,
  tcpConnections,
  unixListener,
} from "../support/peer_native.ts";

/** NoNewPrivs, Seccomp and Seccomp_filters of /proc/PID/status */
function confinement(pid: number): string[] {
  const fields = statusFields(`/proc/${pid}/status`);
  return ["NoNewPrivs", "Seccomp", "Seccomp_filters"].map((key) => fields?.get(key) ?? `no ${key}`);
}

Deno.test("a message sent the moment the helper connects is read only once both seccomp stages are on", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("vm.repair"));
  const tcp = tcpConnections(4, 2);
  try {
    const helper = new Helper([scratch.path("vm.repair")]);
    const conn = await accepted(helper, listener);
    // Sent before the helper can have hardened: it connects first
    sendCommand(conn, ON, tcp.local);
    const reply = readReply(conn, REPLY_MS);
    // Read as soon as the reply is here: the process that answered is the
    // one to look at, before anything else happens to it
    const seen = confinement(helper.pid);
    assert.equal(reply, ON);
    assert.deepEqual(seen, ["1", "2", "2"], "NoNewPrivs, Seccomp, Seccomp_filters");
    for (const fd of tcp.local) assert.equal(repairState(fd), ON);
    sendCommand(conn, OFF, tcp.local);
    assert.equal(readReply(conn, REPLY_MS), OFF);
    await finish(helper, conn);
  } finally {
    tcp.close();
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("a peer that hangs up as soon as it is reached ends the helper with exit 0 and no output", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("vm.repair"));
  try {
    const helper = new Helper([scratch.path("vm.repair")]);
    closeFd(await accepted(helper, listener));
    const out = await helper.exit();
    assert.deepEqual([out.code, out.signal, out.stdout, out.stderr], [0, null, "", ""]);
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("a peer the owner check refuses gets connections that only end, and the hardened helper's one line", async () => {
  const scratch = new Scratch();
  // Root listens on a file that says it is nobody's: not the owner's listener
  const foreign = unixListener(scratch.path("foreign.repair"));
  Deno.chownSync(scratch.path("foreign.repair"), 65534, 65534);
  const conns: number[] = [];
  try {
    const out = await runHelper([scratch.path("foreign.repair")]);
    assert.deepEqual(
      [out.code, out.stdout, out.stderr],
      [
        1,
        "",
        `Refusing ${scratch.path("foreign.repair")}: it belongs to uid 65534, but the process ` +
        `accepting on it (pid ${Deno.pid}) runs as uid 0\n`,
      ],
    );
    // Every connection it made (the early try's, then the hardened one's)
    // was hung up without a byte: nothing of the helper is left to the peer
    conns.push(acceptWithin(foreign, ACCEPT_MS));
    while (pendingConnection(foreign)) conns.push(acceptWithin(foreign, ACCEPT_MS));
    for (const conn of conns) assert.equal(readReply(conn, 0), "eof");
  } finally {
    closeAll([foreign, ...conns]);
    scratch.cleanup();
  }
});

Deno.test("a helper that connects and then cannot harden hangs up and says only why, exit 1", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("vm.repair"));
  try {
    // The parent refuses seccomp(2) to everything it starts
    const child = supportCommand(
      "deny_seccomp.ts",
      ["--allow-ffi", "--allow-run"],
      helperCommand([scratch.path("vm.repair")]),
    ).spawn();
    const output = child.output();
    let conn = -1;
    try {
      // Reached before hardening failed: the connection ends without a byte
      conn = acceptWithin(listener, ACCEPT_MS);
      assert.equal(readReply(conn, REPLY_MS), "eof");
    } finally {
      if (conn >= 0) closeFd(conn);
      const out = await output;
      const stderr = new TextDecoder().decode(out.stderr);
      assert.deepEqual(
        [out.code, new TextDecoder().decode(out.stdout), stderr],
        [1, "", "Can't install the seccomp filter: Operation not permitted (EPERM)\n"],
      );
    }
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});
