// Socket mode's one try before hardening (src/locate.ts, connectAtOnce; the
// order is src/startup.ts's): it connects only to a socket that accepts now
// and passes every check, and otherwise leaves nothing behind, neither a
// descriptor of ours nor a connection in a listener's queue, so that the
// hardened locate starts from scratch and reports what it finds.

import assert from "node:assert/strict";
import { AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM } from "../../src/abi.ts";
import { connectAtOnce, peerMayServe } from "../../src/locate.ts";
import { openLibc, peerCredentials, socket } from "../../src/ffi/libc.ts";
import { Scratch } from "../support/helper.ts";
import {
  acceptWithin,
  closeAll,
  closeFd,
  fullListener,
  pendingConnection,
  processDescriptors,
  unixListener,
} from "../support/peer_native.ts";

openLibc("connect");

function openCount(): number {
  return processDescriptors(Deno.pid).size;
}

/** connectAtOnce(path) must give null and keep no descriptor */
function assertNothing(path: string): void {
  const before = openCount();
  assert.equal(connectAtOnce(path), null, path);
  assert.equal(openCount(), before, "a descriptor was left open");
}

Deno.test("connectAtOnce connects to a listening socket and checks its peer", () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("passt.socket.repair"));
  try {
    const located = connectAtOnce(scratch.path("passt.socket.repair"));
    assert.ok(located !== null);
    try {
      assert.equal(located.peer.pid, Deno.pid);
      assert.equal(located.shown, scratch.path("passt.socket.repair"));
      const server = acceptWithin(listener, 1000);
      closeFd(server);
    } finally {
      closeFd(located.fd);
    }
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("connectAtOnce leaves a directory, a missing name and a refusing socket to the hardened locate", () => {
  const scratch = new Scratch();
  const bound = unixListener(scratch.path("bound.repair"), false);
  const [full, queued] = fullListener(scratch.path("full.repair"));
  try {
    assertNothing(scratch.dir);
    assertNothing(scratch.path("missing.repair"));
    assertNothing(scratch.path("bound.repair"));
    assertNothing(scratch.path("full.repair"));
  } finally {
    closeAll([bound, full, queued]);
    scratch.cleanup();
  }
});

Deno.test("connectAtOnce never connects through a symbolic link nor to a socket with two links", () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("real.repair"));
  try {
    Deno.symlinkSync(scratch.path("real.repair"), scratch.path("link.repair"));
    Deno.linkSync(scratch.path("real.repair"), scratch.path("second.repair"));
    assertNothing(scratch.path("link.repair"));
    assertNothing(scratch.path("second.repair"));
    // The control: the same listener, with its second name gone, is connected to
    Deno.removeSync(scratch.path("second.repair"));
    assert.equal(pendingConnection(listener), false, "nothing reached the listener");
    const located = connectAtOnce(scratch.path("real.repair"));
    assert.ok(located !== null);
    closeFd(located.fd);
    assert.equal(pendingConnection(listener), true);
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("a socket that is not connected never passes the peer check, even on a root-owned file", () => {
  // What a connect() misread as done would leave: the kernel still answers
  // SO_PEERCRED, with pid 0 and uid (uid_t)-1
  const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert.ok(fd >= 0);
  try {
    const peer = peerCredentials(fd);
    assert.ok(typeof peer !== "number", "SO_PEERCRED failed");
    assert.equal(peer.pid, 0);
    assert.equal(peerMayServe(peer.uid, 0), false, `uid ${peer.uid} may serve`);
  } finally {
    closeFd(fd);
  }
});
