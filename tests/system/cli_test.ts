// The command line and socket mode's errors, as an operator meets them.

import assert from "node:assert/strict";
import {
  acceptWithin,
  closeFd,
  readReply,
  sendCommand,
  tcpConnections,
  unixListener,
} from "../support/peer_native.ts";
import { MAIN, runHelper, Scratch, startSession } from "../support/helper.ts";

const USAGE_LINE = /^Usage: passt-repair /m;

for (const args of [[], ["a", "b"], ["--bogus", "x"], ["--timeout"], ["--timeout", "soon", "x"]]) {
  Deno.test(`passt-repair ${args.join(" ") || "(no argument)"}: usage on stderr, exit 2`, async () => {
    const out = await runHelper(args);
    assert.equal(out.code, 2, out.stderr);
    assert.equal(out.stdout, "");
    assert.match(out.stderr, USAGE_LINE);
  });
}

Deno.test("--help and --version print to stdout and exit 0", async () => {
  const help = await runHelper(["--help"]);
  assert.deepEqual([help.code, help.stderr], [0, ""]);
  assert.match(help.stdout, USAGE_LINE);
  assert.match(help.stdout, /--timeout SECONDS/);
  const version = await runHelper(["--version"]);
  assert.deepEqual([version.code, version.stderr], [0, ""]);
  assert.match(version.stdout, /^passt-repair \d+\.\d+\.\d+ \(Deno 2\.9\.6\)\n$/);
});

Deno.test("a PATH that does not exist: Can't stat(), exit 1", async () => {
  const scratch = new Scratch();
  try {
    const path = scratch.path("missing.repair");
    const out = await runHelper([path]);
    assert.equal(out.code, 1);
    assert.equal(out.stderr, `Can't stat() ${path}: No such file or directory (ENOENT)\n`);
  } finally {
    scratch.cleanup();
  }
});

Deno.test("a regular file or a FIFO: <path> is not a socket, exit 2", async () => {
  const scratch = new Scratch();
  try {
    const file = scratch.path("file.repair");
    Deno.writeTextFileSync(file, "x");
    const fifo = scratch.path("fifo.repair");
    const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.equal(mk.code, 0);
    for (const path of [file, fifo]) {
      const out = await runHelper([path]);
      assert.equal(out.code, 2);
      assert.equal(out.stderr, `${path} is not a socket\n`);
    }
  } finally {
    scratch.cleanup();
  }
});

Deno.test("a socket nobody listens on: Failed to connect, ECONNREFUSED, exit 1", async () => {
  const scratch = new Scratch();
  const path = scratch.path("stale.repair");
  const bound = unixListener(path, false);
  try {
    const out = await runHelper([path]);
    assert.equal(out.code, 1);
    assert.equal(out.stderr, `Failed to connect to ${path}: Connection refused (ECONNREFUSED)\n`);
  } finally {
    closeFd(bound);
    scratch.cleanup();
  }
});

Deno.test("-- lets a PATH start with -", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("-dash.repair"));
  try {
    // Relative to the scratch directory, so the argument itself starts with "-"
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-ffi", MAIN, "--", "-dash.repair"],
      cwd: scratch.dir,
      env: { DENO_NO_UPDATE_CHECK: "1" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const conn = acceptWithin(listener, 20000);
    closeFd(conn);
    const out = await child.output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("without --allow-ffi the helper says so instead of prompting, exit 2", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", MAIN, "/nonexistent.repair"],
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
  }).output();
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /needs Deno's --allow-ffi permission/);
});

Deno.test("a plain run prints nothing at all", async () => {
  const s = await startSession();
  const tcp = tcpConnections(4, 2);
  try {
    sendCommand(s.conn, 1, tcp.local);
    assert.equal(readReply(s.conn, 10000), 1);
    s.closeConn();
    const out = await s.helper.exit();
    assert.deepEqual([out.code, out.stdout, out.stderr], [0, "", ""]);
  } finally {
    tcp.close();
    await s.close();
  }
});
