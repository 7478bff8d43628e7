// Nobody but passt steers the helper (docs/security.md): each test plays the
// attacker who can write to the directory the helper watches, or who owns a
// socket the helper is pointed at, against the real helper.

import assert from "node:assert/strict";
import {
  ACCEPT_MS,
  accepted,
  finish,
  Helper,
  lines,
  retryingRefused,
  runHelper,
  Scratch,
  watching,
  watchingHelper,
} from "../support/helper.ts";
import {
  acceptWithin,
  closeAll,
  closeFd,
  fullListener,
  makeFifoRaw,
  pendingConnection,
  unixListener,
} from "../support/peer_native.ts";

Deno.test("a name that forges log lines and moves the cursor is printed escaped, in one line", async () => {
  const scratch = new Scratch();
  const forged = "x\nFailed to connect to vm1.socket.repair: Connection refused (ECONNREFUSED)\n" +
    "\x1b[2J\x1b[H\u202egnp.\rwarning: ok\x7f.repair";
  const invalid = new Uint8Array([0x76, 0x6d, 0xff, 0x1b, 0x5b, 0x33, 0x31, 0x6d, 0xc3]);
  const invalidName = new Uint8Array([...invalid, ...new TextEncoder().encode(".repair")]);
  let listener = -1;
  try {
    const helper = await watchingHelper([scratch.dir]);
    Deno.writeTextFileSync(`${scratch.dir}/${forged}`, "not a socket");
    makeFifoRaw(scratch.dir, invalidName);
    await watching(helper.pid);
    listener = unixListener(scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    const d = scratch.dir;
    // In either order: entries that arrive together are tried newest first
    assert.deepEqual(
      lines(out.stderr).sort(),
      [
        `warning: skipping ${d}/x\\x0aFailed to connect to vm1.socket.repair: Connection refused ` +
        "(ECONNREFUSED)\\x0a\\x1b[2J\\x1b[H\\u{202e}gnp.\\x0dwarning: ok\\x7f.repair: it is a " +
        "regular file, not a socket",
        `warning: skipping ${d}/vm\\xff\\x1b[31m\\xc3.repair: it is a FIFO, not a socket`,
      ].sort(),
    );
    // deno-lint-ignore no-control-regex
    assert.ok(!/[\x00-\x09\x0b-\x1f\x7f]/.test(out.stderr), "a control character got through");
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("--timeout bounds a connect() to a listener whose backlog is full", async () => {
  const scratch = new Scratch();
  const [listener, queued] = fullListener(scratch.path("vm.repair"));
  try {
    const t0 = performance.now();
    const out = await runHelper(["--timeout", "1", scratch.path("vm.repair")]);
    const took = performance.now() - t0;
    assert.equal(out.code, 1, out.stderr);
    assert.match(
      out.stderr.trimEnd(),
      /^Timed out after 1 s waiting for .*vm\.repair to accept connections \(Resource temporarily unavailable \(EAGAIN\)\)$/,
    );
    // Bounded: the old helper was still blocked in connect() 8 s later
    assert.ok(took < 10000, `took ${took} ms`);
  } finally {
    closeAll([queued, listener]);
    scratch.cleanup();
  }
});

Deno.test("a full backlog is waited out: the helper connects once passt accepts", async () => {
  const scratch = new Scratch();
  const [listener, queued] = fullListener(scratch.path("vm.repair"));
  try {
    const helper = new Helper([scratch.path("vm.repair")]);
    // Until the queued client is taken, the helper cannot get in
    const first = acceptWithin(listener, ACCEPT_MS);
    closeFd(first);
    await finish(helper, await accepted(helper, listener));
  } finally {
    closeAll([queued, listener]);
    scratch.cleanup();
  }
});

Deno.test("1,500 junk entries and a stderr pipe nobody reads do not keep the helper from passt", async () => {
  const scratch = new Scratch();
  for (let i = 0; i < 1500; i++) {
    Deno.writeTextFileSync(scratch.path(`junk-${"j".repeat(120)}-${i}.repair`), "");
  }
  let listener = -1;
  try {
    // Entries made while it runs, too: they come as events
    const helper = await watchingHelper([scratch.dir], { stderrUnread: true });
    for (let i = 0; i < 500; i++) Deno.mkdirSync(scratch.path(`dir-${i}.repair`));
    listener = unixListener(scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    // One line per reason, then the counts; how many directories it looked
    // at before passt's socket came up depends on the timing
    const told = lines(out.stderr);
    assert.equal(told.length, 4, out.stderr);
    assert.match(told[0]!, /^warning: skipping .*\/junk-j+-\d+\.repair: it is a regular file/);
    assert.match(told[1]!, /^warning: skipping .*\/dir-\d+\.repair: it is a directory, not/);
    assert.equal(told[2], "warning: skipped 1499 more entries: regular file");
    assert.match(told[3]!, /^warning: skipped \d+ more entries: directory$/);
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("a stale socket that never listens does not hold the helper from passt's real one", async () => {
  const scratch = new Scratch();
  const stale = unixListener(scratch.path("stale.repair"), false);
  let listener = -1;
  try {
    const helper = new Helper([scratch.dir]);
    // The stale one is being retried; passt's socket appears beside it
    await retryingRefused(helper.pid);
    listener = unixListener(scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    assert.equal(out.stderr, "");
  } finally {
    closeAll(listener >= 0 ? [stale, listener] : [stale]);
    scratch.cleanup();
  }
});

Deno.test("sockets set aside as ambiguous stay aside when renamed", async () => {
  const scratch = new Scratch();
  const a = unixListener(scratch.path("a.repair"));
  const b = unixListener(scratch.path("b.repair"));
  let listener = -1;
  try {
    const helper = await watchingHelper([scratch.dir]);
    Deno.renameSync(scratch.path("a.repair"), scratch.path("renamed-a.repair"));
    Deno.renameSync(scratch.path("b.repair"), scratch.path("c.repair"));
    await watching(helper.pid);
    listener = unixListener(scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    assert.equal(pendingConnection(a), false, "a renamed ambiguous socket was used");
    assert.equal(pendingConnection(b), false, "a renamed ambiguous socket was used");
    assert.deepEqual(lines(out.stderr), [
      `warning: 2 sockets named *.repair in ${scratch.dir}, ignoring them all as ambiguous ` +
      `(${out.stderr.includes("(a.repair") ? "a.repair, b.repair" : "b.repair, a.repair"}); ` +
      "waiting for a new one",
    ]);
  } finally {
    closeAll(listener >= 0 ? [a, b, listener] : [a, b]);
    scratch.cleanup();
  }
});

Deno.test("a socket served by someone other than its owner is refused: skipped in a directory, exit 1 given directly", async () => {
  const scratch = new Scratch();
  // Root listens, but the file says it is nobody's: not the owner's listener
  const foreign = unixListener(scratch.path("foreign.repair"));
  Deno.chownSync(scratch.path("foreign.repair"), 65534, 65534);
  let listener = -1;
  try {
    const direct = await runHelper([scratch.path("foreign.repair")]);
    assert.equal(direct.code, 1, direct.stderr);
    assert.match(
      direct.stderr.trimEnd(),
      new RegExp(
        `^Refusing .*/foreign\\.repair: it belongs to uid 65534, but the process accepting on it ` +
          `\\(pid ${Deno.pid}\\) runs as uid 0$`,
      ),
    );
    // The refused run's connection, still queued
    closeFd(acceptWithin(foreign, ACCEPT_MS));
    // In directory mode it connects to the foreign socket, finds it served
    // by another user, hangs up, and keeps waiting
    const helper = new Helper([scratch.dir]);
    closeFd(await accepted(helper, foreign));
    await watching(helper.pid);
    listener = unixListener(scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    assert.match(
      lines(out.stderr)[0] ?? "",
      /^warning: skipping .*foreign\.repair: it belongs to uid 65534/,
    );
    assert.equal(lines(out.stderr).length, 1, out.stderr);
  } finally {
    closeAll(listener >= 0 ? [foreign, listener] : [foreign]);
    scratch.cleanup();
  }
});

Deno.test("1,100 sockets that never listen do not keep passt's socket from being tried", async () => {
  const scratch = new Scratch();
  let listener = -1;
  try {
    // Made after the helper looked (made before, they would be set aside as
    // ambiguous): bound and closed, each refuses every connection, forever
    const helper = await watchingHelper(["--timeout", "60", scratch.dir]);
    for (let i = 0; i < 1100; i++) closeFd(unixListener(scratch.path(`stale-${i}.repair`), false));
    await retryingRefused(helper.pid);
    listener = unixListener(scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    // Every stale one is retried with its own back-off; none is warned about
    // more than once, and the flood's refusals stay out of the log
    assert.ok(lines(out.stderr).length <= 2, out.stderr);
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("a hard link to a socket is refused: skipped in a directory, exit 1 given directly", async () => {
  const scratch = new Scratch();
  const service = unixListener(scratch.path("service.sock"));
  Deno.mkdirSync(scratch.path("watched"));
  Deno.linkSync(scratch.path("service.sock"), scratch.path("watched/linked.repair"));
  let listener = -1;
  try {
    const direct = await runHelper([scratch.path("watched/linked.repair")]);
    assert.equal(direct.code, 1, direct.stderr);
    assert.match(direct.stderr.trimEnd(), /^Refusing .*linked\.repair: it has 2 hard links/);
    const helper = await watchingHelper([scratch.path("watched")]);
    listener = unixListener(scratch.path("watched/vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    assert.equal(pendingConnection(service), false, "the linked service was connected to");
    assert.deepEqual(lines(out.stderr), [
      `warning: skipping ${scratch.dir}/watched/linked.repair: it has 2 hard links, and a hard ` +
      "link may lead to another service's socket",
    ]);
  } finally {
    closeAll(listener >= 0 ? [service, listener] : [service]);
    scratch.cleanup();
  }
});

Deno.test("--wait on a socket passt replaces (unlink, then bind) waits for the new one", async () => {
  const scratch = new Scratch();
  const path = scratch.path("vm.repair");
  closeFd(unixListener(path, false)); // passt's old socket, gone stale
  let listener = -1;
  try {
    const helper = new Helper(["--wait", "--timeout", "60", path]);
    await retryingRefused(helper.pid);
    Deno.removeSync(path);
    await watching(helper.pid);
    listener = unixListener(path);
    const out = await finish(helper, await accepted(helper, listener));
    assert.equal(out.stderr, "");
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("without /proc the helper says it needs it, exit 1, in every mode", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("vm.repair"));
  // A private mount namespace whose /proc is an empty tmpfs
  const prefix = [
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount -t tmpfs none /proc && exec "$@"',
    "sh",
  ];
  try {
    for (const args of [[scratch.path("vm.repair")], ["--timeout", "30", scratch.dir]]) {
      const out = await runHelper(args, { prefix });
      assert.equal(out.code, 1, `${args}: ${out.stderr}`);
      assert.match(
        out.stderr.trimEnd(),
        /^Failed to connect to .*vm\.repair through \/proc\/self\/fd: No such file or directory \(ENOENT\); the helper needs \/proc mounted/,
      );
      assert.equal(lines(out.stderr).length, 1, out.stderr);
    }
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("a PATH that is not valid UTF-8 is refused rather than changed", async () => {
  // Deno hands such an argument over with U+FFFD in place of the bad bytes
  const out = await runHelper(["/run/vm\ufffd.repair"]);
  assert.equal(out.code, 2, out.stderr);
  assert.match(out.stderr, /^PATH is not valid UTF-8/);
});
