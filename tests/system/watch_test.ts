// Finding the socket (docs/directory-mode.md), end to end: the real helper
// (deno run --allow-ffi main.ts) against real directories, symlinks, FIFOs and
// sockets that a fake passt binds, listens on and accepts from.

import assert from "node:assert/strict";
import {
  accepted,
  assertFailure,
  blockedInPoll,
  cpuSettled,
  cpuShare,
  finish,
  Helper,
  holdsInotify,
  idle,
  lines,
  ON,
  openDescriptors,
  processState,
  retryingRefused,
  runHelper,
  Scratch,
  startSession,
  waitUntil,
  watching,
  watchingHelper,
} from "../support/helper.ts";
import {
  closeAll,
  closeFd,
  listenNow,
  makeFifo,
  pendingConnection,
  processCwd,
  readReply,
  readSmallFile,
  repairState,
  sendCommand,
  tcpConnections,
  unixListener,
  unixListenerIn,
  writeSmallFile,
} from "../support/peer_native.ts";

const SOCK_SEQPACKET = 5;

/** A directory whose path is longer than sun_path holds, and that path */
function longDirectory(scratch: Scratch): string {
  const dir = scratch.path(`${"d".repeat(60)}/${"e".repeat(60)}`);
  Deno.mkdirSync(dir, { recursive: true });
  return dir;
}

function bytes(s: string): number {
  return new TextEncoder().encode(s).length;
}

Deno.test("directory mode: a *.repair socket created after start is used and served", async () => {
  const scratch = new Scratch();
  const tcp = tcpConnections(4, 2);
  let listener = -1;
  try {
    const helper = await watchingHelper([scratch.dir]);
    listener = unixListener(scratch.path("vm.socket.repair"));
    const conn = await accepted(helper, listener);
    sendCommand(conn, ON, tcp.local);
    assert.equal(readReply(conn, 10000), ON);
    for (const fd of tcp.local) assert.equal(repairState(fd), 1);
    const out = await finish(helper, conn);
    assert.equal(out.stderr, "");
  } finally {
    if (listener >= 0) closeFd(listener);
    tcp.close();
    scratch.cleanup();
  }
});

Deno.test("directory mode: a socket named exactly .repair counts", async () => {
  const scratch = new Scratch();
  let listener = -1;
  try {
    const helper = await watchingHelper([scratch.dir]);
    listener = unixListener(scratch.path(".repair"));
    await finish(helper, await accepted(helper, listener));
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("directory mode: 50 entries made while the helper is stopped, the socket last", async () => {
  const scratch = new Scratch();
  const listeners: number[] = [];
  const decoys: number[] = [];
  try {
    const helper = await watchingHelper([scratch.dir]);
    helper.kill("SIGSTOP");
    await waitUntil(() => processState(helper.pid) === "T", 10000, "the helper to stop");
    // 49 entries it must ignore, all queued up for one read
    Deno.writeTextFileSync(scratch.path("notes.txt"), "x");
    for (const name of ["repair", "x.repairs", "passt.socket", "repair.x"]) {
      decoys.push(unixListener(scratch.path(name)));
    }
    Deno.mkdirSync(scratch.path("repairs.d"));
    for (let i = 0; i < 43; i++) {
      Deno.writeTextFileSync(scratch.path(`file-${i}.txt`), "");
    }
    listeners.push(unixListener(scratch.path("vm.repair")));
    assert.equal([...Deno.readDirSync(scratch.dir)].length, 50);
    helper.kill("SIGCONT");
    const conn = await accepted(helper, listeners[0]!);
    for (const fd of decoys) assert.equal(pendingConnection(fd), false, "a decoy was connected to");
    const out = await finish(helper, conn);
    assert.equal(out.stderr, "");
  } finally {
    closeAll([...listeners, ...decoys]);
    scratch.cleanup();
  }
});

const MAX_QUEUED = "/proc/sys/fs/inotify/max_queued_events";

Deno.test("directory mode: after an inotify queue overflow it lists again and finds the socket", async () => {
  const saved = readSmallFile(MAX_QUEUED);
  if (saved === null) throw new Error(`cannot read ${MAX_QUEUED}`);
  const scratch = new Scratch();
  // Two sockets there from the start: ambiguous, ignored, and still ignored after the relisting
  const old = [unixListener(scratch.path("a.repair")), unixListener(scratch.path("b.repair"))];
  let listener = -1;
  let helper: Helper;
  try {
    // The limit is taken when the helper calls inotify_init1(); it is put back
    // as soon as the helper watches, so other processes are hardly affected
    writeSmallFile(MAX_QUEUED, "4");
    try {
      helper = await watchingHelper(["--verbose", scratch.dir]);
    } finally {
      writeSmallFile(MAX_QUEUED, saved);
    }
    helper.kill("SIGSTOP");
    await waitUntil(() => processState(helper.pid) === "T", 10000, "the helper to stop");
    for (let i = 0; i < 20; i++) Deno.writeTextFileSync(scratch.path(`noise-${i}`), "");
    // Its IN_CREATE is lost: only a new listing can find it
    listener = unixListener(scratch.path("vm.repair"));
    helper.kill("SIGCONT");
    const conn = await accepted(helper, listener);
    for (const fd of old) assert.equal(pendingConnection(fd), false, "an ignored socket was used");
    const out = await finish(helper, conn);
    assert.match(out.stderr, /inotify queue overflowed: listing .* again/);
    assert.equal(lines(out.stderr).filter((l) => l.startsWith("warning:")).length, 1, out.stderr);
  } finally {
    closeAll(listener >= 0 ? [...old, listener] : old);
    scratch.cleanup();
  }
});

Deno.test("directory mode: exactly one existing *.repair socket is used at once", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("vm.repair"));
  Deno.writeTextFileSync(scratch.path("notes.txt"), "");
  try {
    const helper = new Helper([scratch.dir]);
    const conn = await accepted(helper, listener);
    const out = await finish(helper, conn);
    assert.equal(out.stderr, "");
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("directory mode: several existing sockets are named as ignored, a new one is used", async () => {
  const scratch = new Scratch();
  const old = [unixListener(scratch.path("a.repair")), unixListener(scratch.path("b.repair"))];
  let fresh = -1;
  try {
    const helper = await watchingHelper([scratch.dir]);
    fresh = unixListener(scratch.path("c.repair"));
    const conn = await accepted(helper, fresh);
    for (const fd of old) assert.equal(pendingConnection(fd), false, "an old socket was used");
    const out = await finish(helper, conn);
    const warnings = lines(out.stderr);
    assert.equal(warnings.length, 1, out.stderr);
    assert.match(warnings[0]!, /^warning: 2 sockets named \*\.repair in .* ignoring them/);
    assert.match(warnings[0]!, /a\.repair/);
    assert.match(warnings[0]!, /b\.repair/);
  } finally {
    closeAll(fresh >= 0 ? [...old, fresh] : old);
    scratch.cleanup();
  }
});

Deno.test("directory mode: a socket renamed into the directory is seen", async () => {
  const scratch = new Scratch();
  const watched = scratch.path("watched");
  Deno.mkdirSync(watched);
  // Bound elsewhere under a name it ignores, then moved in
  const listener = unixListener(scratch.path("elsewhere.sock"));
  try {
    const helper = await watchingHelper([watched]);
    Deno.renameSync(scratch.path("elsewhere.sock"), `${watched}/vm.repair`);
    await finish(helper, await accepted(helper, listener));
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

for (const held of [false, true]) {
  const how = held ? " while another process holds it open" : "";
  Deno.test(`directory mode: the directory deleted${how} → exit 1`, async () => {
    const scratch = new Scratch();
    const watched = scratch.path("watched");
    Deno.mkdirSync(watched);
    // An open descriptor delays IN_DELETE_SELF until it is closed
    const holder = held ? Deno.openSync(watched) : null;
    try {
      const helper = await watchingHelper([watched]);
      Deno.removeSync(watched);
      assertFailure(
        await helper.exit(),
        1,
        /^Directory .*\/watched was deleted while waiting for a socket named \*\.repair in /,
      );
    } finally {
      holder?.close();
      scratch.cleanup();
    }
  });
}

Deno.test("directory mode: the directory moved away → exit 1", async () => {
  const scratch = new Scratch();
  const watched = scratch.path("watched");
  Deno.mkdirSync(watched);
  try {
    const helper = await watchingHelper([watched]);
    Deno.renameSync(watched, scratch.path("moved"));
    assertFailure(await helper.exit(), 1, /^Directory .*\/watched was moved away while waiting/);
  } finally {
    scratch.cleanup();
  }
});

Deno.test("directory mode: a directory next to it deleted or moved does not stop the wait", async () => {
  const scratch = new Scratch();
  const watched = scratch.path("watched");
  Deno.mkdirSync(watched);
  Deno.mkdirSync(scratch.path("sibling"));
  Deno.mkdirSync(scratch.path("other"));
  let listener = -1;
  try {
    const helper = await watchingHelper([watched]);
    Deno.removeSync(scratch.path("sibling"));
    Deno.renameSync(scratch.path("other"), scratch.path("renamed"));
    listener = unixListener(`${watched}/vm.repair`);
    const out = await finish(helper, await accepted(helper, listener));
    assert.equal(out.stderr, "");
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("directory mode: *.repair entries that are not sockets are skipped with a warning", async () => {
  const scratch = new Scratch();
  // One already there at start, the rest created while it waits
  Deno.writeTextFileSync(scratch.path("early.repair"), "not a socket");
  let listener = -1;
  try {
    const helper = await watchingHelper([scratch.dir]);
    Deno.writeTextFileSync(scratch.path("file.repair"), "not a socket");
    Deno.mkdirSync(scratch.path("dir.repair"));
    makeFifo(scratch.path("fifo.repair"));
    Deno.symlinkSync(scratch.path("nowhere"), scratch.path("dangling.repair"));
    listener = unixListener(scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    const d = scratch.dir;
    // One warning per reason, then a count of the rest when the wait ends
    assert.deepEqual(lines(out.stderr), [
      `warning: skipping ${d}/early.repair: it is a regular file, not a socket`,
      `warning: skipping ${d}/dir.repair: it is a directory, not a socket`,
      `warning: skipping ${d}/fifo.repair: it is a FIFO, not a socket`,
      `warning: skipping ${d}/dangling.repair: it is a symbolic link (links are refused: ` +
      "the socket itself must be in the directory)",
      "warning: skipped 1 more entry: regular file",
    ]);
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("directory mode: an entry removed before it can be checked is skipped", async () => {
  const scratch = new Scratch();
  let listener = -1;
  try {
    const helper = await watchingHelper([scratch.dir]);
    helper.kill("SIGSTOP");
    await waitUntil(() => processState(helper.pid) === "T", 10000, "the helper to stop");
    Deno.writeTextFileSync(scratch.path("brief.repair"), "");
    Deno.removeSync(scratch.path("brief.repair"));
    helper.kill("SIGCONT");
    // The event is read and the entry found gone before the socket exists
    await watching(helper.pid);
    listener = unixListener(scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    assert.deepEqual(lines(out.stderr), [
      `warning: skipping ${scratch.dir}/brief.repair: it was removed before it could be checked`,
    ]);
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("directory mode: a symlink x.repair is never followed, not even to a socket", async () => {
  const scratch = new Scratch();
  const watched = scratch.path("watched");
  Deno.mkdirSync(watched);
  // What an attacker points at: a socket they could not reach themselves
  const target = unixListener(scratch.path("root-only.sock"));
  let listener = -1;
  try {
    const helper = await watchingHelper([watched]);
    Deno.symlinkSync(scratch.path("root-only.sock"), `${watched}/x.repair`);
    Deno.symlinkSync(scratch.path("root-only.sock"), `${watched}/y.repair`);
    await watching(helper.pid);
    listener = unixListener(`${watched}/vm.repair`);
    const out = await finish(helper, await accepted(helper, listener));
    assert.equal(pendingConnection(target), false, "the link's target was connected to");
    assert.deepEqual(lines(out.stderr), [
      `warning: skipping ${watched}/x.repair: it is a symbolic link (links are refused: ` +
      "the socket itself must be in the directory)",
      "warning: skipped 1 more entry: symbolic link",
    ]);
  } finally {
    closeAll(listener >= 0 ? [target, listener] : [target]);
    scratch.cleanup();
  }
});

Deno.test("socket mode: PATH that is a symlink to a socket is a usage error, never connected", async () => {
  const scratch = new Scratch();
  const target = unixListener(scratch.path("root-only.sock"));
  try {
    Deno.symlinkSync(scratch.path("root-only.sock"), scratch.path("vm.repair"));
    for (const args of [[scratch.path("vm.repair")], ["--wait", scratch.path("vm.repair")]]) {
      assertFailure(
        await runHelper(args),
        2,
        /^.*\/vm\.repair is a symbolic link: name the socket itself/,
      );
    }
    assert.equal(pendingConnection(target), false, "the link's target was connected to");
  } finally {
    closeFd(target);
    scratch.cleanup();
  }
});

Deno.test("ECONNREFUSED: backs off using under 1 % of a CPU, connects once passt listens", async () => {
  const scratch = new Scratch();
  // Bound, not listening: what passt looks like between bind() and listen()
  const listener = unixListener(scratch.path("vm.repair"), false);
  try {
    const helper = new Helper([scratch.dir]);
    await retryingRefused(helper.pid);
    await cpuSettled(helper.pid);
    const share = await cpuShare(helper.pid, 2000);
    console.log(`CPU while retrying ECONNREFUSED: ${(share * 100).toFixed(2)} % over 2 s`);
    const t0 = performance.now();
    listenNow(listener);
    const conn = await accepted(helper, listener);
    console.log(`connected ${(performance.now() - t0).toFixed(1)} ms after listen()`);
    assert.ok(share < 0.01, `CPU share while refused: ${share}`);
    const out = await finish(helper, conn);
    assert.equal(out.stderr, "");
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("waiting on inotify uses under 1 % of a CPU", async () => {
  const scratch = new Scratch();
  try {
    const helper = await watchingHelper([scratch.dir]);
    await cpuSettled(helper.pid);
    const share = await cpuShare(helper.pid, 2000);
    console.log(`CPU while waiting on inotify: ${(share * 100).toFixed(2)} % over 2 s`);
    assert.ok(blockedInPoll(helper.pid), "still waiting in poll()");
    helper.kill("SIGTERM");
    await helper.exit();
    assert.ok(share < 0.01, `CPU share while waiting: ${share}`);
  } finally {
    scratch.cleanup();
  }
});

Deno.test("socket mode: ECONNREFUSED fails at once, as upstream", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("vm.repair"), false);
  try {
    assertFailure(
      await runHelper([scratch.path("vm.repair")]),
      1,
      /^Failed to connect to .*vm\.repair: Connection refused \(ECONNREFUSED\)$/,
    );
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("socket mode with --timeout: ECONNREFUSED is retried until passt listens", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("vm.repair"), false);
  try {
    const helper = new Helper(["--timeout", "60", scratch.path("vm.repair")]);
    await retryingRefused(helper.pid);
    listenNow(listener);
    await finish(helper, await accepted(helper, listener));
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("directory mode: a SEQPACKET listener is skipped, and the wait goes on", async () => {
  const scratch = new Scratch();
  const wrong = unixListener(scratch.path("a.repair"), true, SOCK_SEQPACKET);
  let listener = -1;
  try {
    const helper = await watchingHelper([scratch.dir]);
    listener = unixListener(scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    assert.deepEqual(lines(out.stderr), [
      `warning: skipping ${scratch.dir}/a.repair: Failed to connect to it: ` +
      "Protocol wrong type for socket (EPROTOTYPE)",
    ]);
  } finally {
    closeAll(listener >= 0 ? [wrong, listener] : [wrong]);
    scratch.cleanup();
  }
});

Deno.test("socket mode: a SEQPACKET listener fails at once, exit 1", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("vm.repair"), true, SOCK_SEQPACKET);
  try {
    assertFailure(
      await runHelper([scratch.path("vm.repair")]),
      1,
      /^Failed to connect to .*vm\.repair: Protocol wrong type for socket \(EPROTOTYPE\)$/,
    );
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("--timeout ends each kind of wait with exit 1 and says what was awaited", async () => {
  const scratch = new Scratch();
  const d = scratch.dir;
  const refusedDir = scratch.path("refused");
  const sharedDir = scratch.path("shared");
  Deno.mkdirSync(refusedDir);
  Deno.mkdirSync(sharedDir);
  const fds = [
    unixListener(`${refusedDir}/vm.repair`, false),
    unixListener(scratch.path("plain.sock"), false),
    unixListener(`${sharedDir}/a.repair`),
    unixListener(`${sharedDir}/b.repair`),
  ];
  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  try {
    const cases: [string[], RegExp][] = [
      [
        ["--timeout", "0.3", d],
        new RegExp(
          `^Timed out after 0\\.3 s waiting for a socket named \\*\\.repair in ${escape(d)}$`,
        ),
      ],
      [
        ["--timeout", "0.3", "--wait", `${d}/later.repair`],
        new RegExp(`^Timed out after 0\\.3 s waiting for ${escape(d)}/later\\.repair to appear$`),
      ],
      [
        ["--timeout", "0.3", refusedDir],
        new RegExp(
          `^Timed out after 0\\.3 s waiting for ${escape(refusedDir)}/vm\\.repair to accept ` +
            "connections \\(Connection refused \\(ECONNREFUSED\\)\\)$",
        ),
      ],
      [
        ["--timeout", "0.3", scratch.path("plain.sock")],
        /^Timed out after 0\.3 s waiting for .*plain\.sock to accept connections/,
      ],
    ];
    for (const [args, pattern] of cases) {
      assertFailure(await runHelper(args), 1, pattern);
    }
    // Several sockets: a warning first, then the timeout names the ignored ones
    const out = await runHelper(["--timeout", "0.3", sharedDir]);
    assert.equal(out.code, 1, out.stderr);
    const [warning, failure, ...rest] = lines(out.stderr);
    assert.match(warning ?? "", /^warning: 2 sockets named/);
    assert.match(
      failure ?? "",
      /^Timed out after 0\.3 s waiting for a new socket named \*\.repair in .*shared \(ignoring (a|b)\.repair, (a|b)\.repair\)$/,
    );
    assert.deepEqual(rest, []);
  } finally {
    closeAll(fds);
    scratch.cleanup();
  }
});

Deno.test("--wait: waits for exactly that name, ignoring other *.repair sockets", async () => {
  const scratch = new Scratch();
  const others = [unixListener(scratch.path("other.repair"))];
  let mine = -1;
  try {
    const helper = await watchingHelper(["--wait", scratch.path("vm1.socket.repair")]);
    others.push(unixListener(scratch.path("vm2.socket.repair")));
    mine = unixListener(scratch.path("vm1.socket.repair"));
    const conn = await accepted(helper, mine);
    for (const fd of others) assert.equal(pendingConnection(fd), false, "another VM's socket");
    const out = await finish(helper, conn);
    assert.equal(out.stderr, "");
  } finally {
    closeAll(mine >= 0 ? [...others, mine] : others);
    scratch.cleanup();
  }
});

Deno.test("--wait: a name already there is used at once; one moved in later is seen", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("vm.repair"));
  const later = unixListener(scratch.path("staging.sock"));
  try {
    const helper = new Helper(["--wait", scratch.path("vm.repair")]);
    await finish(helper, await accepted(helper, listener));

    const second = await watchingHelper(["--wait", scratch.path("moved.repair")]);
    Deno.renameSync(scratch.path("staging.sock"), scratch.path("moved.repair"));
    await finish(second, await accepted(second, later));
  } finally {
    closeAll([listener, later]);
    scratch.cleanup();
  }
});

Deno.test("--wait: a name that is not a socket yet is skipped with a warning, then used", async () => {
  const scratch = new Scratch();
  Deno.writeTextFileSync(scratch.path("vm.repair"), "stale");
  const listener = unixListener(scratch.path("staging.sock"));
  try {
    const helper = await watchingHelper(["--wait", scratch.path("vm.repair")]);
    Deno.renameSync(scratch.path("staging.sock"), scratch.path("vm.repair"));
    const out = await finish(helper, await accepted(helper, listener));
    assert.deepEqual(lines(out.stderr), [
      `warning: skipping ${scratch.dir}/vm.repair: it is a regular file, not a socket`,
    ]);
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("PATH as given: a trailing slash and a .. component work", async () => {
  const scratch = new Scratch();
  Deno.mkdirSync(scratch.path("sub"));
  const listener = unixListener(scratch.path("vm.repair"));
  try {
    for (const path of [`${scratch.dir}/`, `${scratch.dir}/sub/..`, `${scratch.dir}/sub/../`]) {
      const helper = new Helper([path]);
      const out = await finish(helper, await accepted(helper, listener));
      assert.equal(out.stderr, "", path);
    }
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("long paths: a short symlink to a long directory works (KubeVirt's way)", async () => {
  const scratch = new Scratch();
  const long = longDirectory(scratch);
  const link = scratch.path("l");
  Deno.symlinkSync(long, link);
  let listener = -1;
  try {
    assert.ok(bytes(`${long}/vm.repair`) >= 108);
    const helper = await watchingHelper([link]);
    listener = unixListenerIn(long, "vm.repair");
    const out = await finish(helper, await accepted(helper, listener));
    assert.equal(out.stderr, "");
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("long paths: a socket path of 108 bytes or more is reached through its directory", async () => {
  const scratch = new Scratch();
  const long = longDirectory(scratch);
  const listener = unixListenerIn(long, "vm.repair");
  const later = unixListenerIn(long, "staging");
  try {
    assert.ok(bytes(`${long}/vm.repair`) >= 108, "the path must not fit sun_path");
    const cwd = processCwd(Deno.pid);
    // Socket mode, directory mode, --wait
    for (const args of [[`${long}/vm.repair`], [long], ["--timeout", "30", `${long}/vm.repair`]]) {
      const helper = new Helper(args);
      const conn = await accepted(helper, listener);
      await idle(helper.pid);
      // The helper went back to where it was: it keeps no directory busy
      assert.equal(processCwd(helper.pid), cwd, `${args}: working directory`);
      await finish(helper, conn);
    }
    Deno.removeSync(`${long}/vm.repair`);
    const helper = await watchingHelper(["--wait", `${long}/vm.repair`]);
    Deno.renameSync(`${long}/staging`, `${long}/vm.repair`);
    await finish(helper, await accepted(helper, later));
  } finally {
    closeAll([listener, later]);
    scratch.cleanup();
  }
});

Deno.test("long paths: non-ASCII names are measured in UTF-8 bytes", async () => {
  const scratch = new Scratch();
  // Fewer than 108 characters, more than 108 bytes: only bytes tell it must
  // go through the directory. As many two-byte "é" as that takes after
  // TMPDIR, whose length varies: 6 characters and 20 bytes for the name,
  // 2 slashes.
  const name = "vm-日本語.repair";
  const wide = Math.max(1, Math.ceil((108 - bytes(scratch.dir) - 2 - bytes(name)) / 2));
  const dir = scratch.path("é".repeat(wide));
  const path = `${dir}/${name}`;
  if (path.length >= 108) {
    scratch.cleanup();
    console.log(
      `skipped: TMPDIR is too long (${scratch.dir.length} characters) to make a path under 108 characters and over 108 bytes`,
    );
    return;
  }
  let listener = -1;
  try {
    Deno.mkdirSync(dir);
    assert.ok(bytes(path) >= 108, `${path.length} chars, ${bytes(path)} bytes`);
    listener = unixListenerIn(dir, name);
    for (const args of [[path], [dir]]) {
      const helper = new Helper(args);
      const out = await finish(helper, await accepted(helper, listener));
      assert.equal(out.stderr, "", `${args}`);
    }
  } finally {
    if (listener >= 0) closeFd(listener);
    scratch.cleanup();
  }
});

Deno.test("long paths: names too long even for sun_path alone are reached too", async () => {
  const scratch = new Scratch();
  const watched = scratch.path("watched");
  Deno.mkdirSync(watched);
  // 58 characters, 109 bytes; and 200 ASCII bytes. bind() cannot make such
  // names, but a socket renamed to them still answers: the helper connects
  // through /proc/self/fd, whose path always fits
  const wide = "é".repeat(51) + ".repair";
  const ascii = "n".repeat(193) + ".repair";
  assert.deepEqual([wide.length, bytes(wide), bytes(ascii)], [58, 109, 200]);
  for (const name of [wide, ascii]) {
    const listener = unixListener(scratch.path("s"));
    try {
      Deno.renameSync(scratch.path("s"), `${watched}/${name}`);
      const path = `${watched}/${name}`;
      // Socket mode, --wait, directory mode
      for (const args of [[path], ["--wait", path], [watched]]) {
        const helper = new Helper(args);
        const out = await finish(helper, await accepted(helper, listener));
        assert.equal(out.stderr, "", `${args}`);
      }
      Deno.removeSync(path);
    } finally {
      closeFd(listener);
    }
  }
  scratch.cleanup();
});

Deno.test("SIGTERM while waiting ends the helper at once", async () => {
  const scratch = new Scratch();
  const listener = unixListener(scratch.path("refused.sock"), false);
  try {
    for (const args of [[scratch.dir], ["--wait", scratch.path("x.repair")]]) {
      const helper = await watchingHelper(args);
      helper.kill("SIGTERM");
      const out = await helper.exit(5000);
      assert.equal(out.signal, "SIGTERM", `${args}: ${out.stderr}`);
    }
    const refused = new Helper(["--timeout", "600", scratch.path("refused.sock")]);
    await retryingRefused(refused.pid);
    refused.kill("SIGTERM");
    assert.equal((await refused.exit(5000)).signal, "SIGTERM");
  } finally {
    closeFd(listener);
    scratch.cleanup();
  }
});

/** The helper's descriptors, as kinds: numbers and inode numbers left out */
function descriptorKinds(pid: number): string[] {
  return [...openDescriptors(pid).values()].map((t) => t.replace(/\[\d+\]$/, "[]")).sort();
}

Deno.test("once connected, only the connection and Deno's own descriptors remain", async () => {
  // The reference: plain socket mode, which never opened inotify or a directory
  const plain = await startSession();
  let reference: string[];
  try {
    await idle(plain.helper.pid);
    reference = descriptorKinds(plain.helper.pid);
  } finally {
    await plain.close();
  }
  assert.ok(!reference.includes("anon_inode:inotify"));

  const scratch = new Scratch();
  const long = longDirectory(scratch);
  const listeners = [unixListener(scratch.path("vm.repair")), unixListenerIn(long, "vm.repair")];
  try {
    const runs: [string[], number][] = [
      [[scratch.dir], listeners[0]!], // directory mode, socket already there
      [["--wait", `${long}/vm.repair`], listeners[1]!], // through the directory
      [[long], listeners[1]!],
    ];
    for (const [args, listener] of runs) {
      const helper = new Helper(args);
      const conn = await accepted(helper, listener);
      await idle(helper.pid);
      const kinds = descriptorKinds(helper.pid);
      assert.ok(!holdsInotify(helper.pid), `${args}: inotify still open`);
      // Nothing left open in the directories it searched (Deno's own cache
      // files may live anywhere, /tmp included, and are in the reference too)
      assert.ok(!kinds.some((k) => k.startsWith(scratch.dir)), `${args}: ${kinds}`);
      assert.deepEqual(kinds, reference, `${args}`);
      await finish(helper, conn);
    }
    // And created after start, so that the watch was really used
    Deno.mkdirSync(scratch.path("fresh"));
    const helper = await watchingHelper([scratch.path("fresh")]);
    const fresh = unixListener(scratch.path("fresh/vm.repair"));
    listeners.push(fresh);
    const conn = await accepted(helper, fresh);
    await idle(helper.pid);
    assert.deepEqual(descriptorKinds(helper.pid), reference);
    await finish(helper, conn);
  } finally {
    closeAll(listeners);
    scratch.cleanup();
  }
});
