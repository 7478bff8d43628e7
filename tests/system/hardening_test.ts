// Hardening, privileges and logging (docs/security.md), observed on the live
// helper process from outside: /proc/PID/status of every thread, the owner of
// /proc/PID, what the startup sequence leaves possible, the capability check
// with and without CAP_NET_ADMIN, and what --verbose says.

import assert from "node:assert/strict";
import {
  acceptWithin,
  closeFd,
  directoryNames,
  fileOwner,
  readReply,
  repairState,
  sendCommand,
  statusFields,
  tcpConnections,
  unixListener,
} from "../support/peer_native.ts";
import {
  bindPeer,
  buildSeccompFilter,
  buildServingFilter,
  NEWEST_CALL,
  SECCOMP_RET_ERRNO,
} from "../../src/seccomp.ts";
import { runFilter } from "../support/bpf.ts";
import { seccompFilters } from "../support/seccomp_dump.ts";
import {
  type Helper,
  helperCommand,
  idle,
  MAIN,
  OFF,
  ON,
  openDescriptors,
  REPLY_MS,
  runHelper,
  Scratch,
  type Session,
  startSession,
  stopChild,
  supportCommand,
  switchFresh,
  waitUntil,
  WITHOUT_NET_ADMIN,
} from "../support/helper.ts";
import { commandForNobody, NOBODY, sharedScratch } from "../support/reachable.ts";

/** "Key:\tvalue" lines of /proc/PID/status (or /proc/PID/task/TID/status) */
function status(path: string): Map<string, string> {
  const fields = statusFields(path);
  assert.ok(fields !== null, `can read ${path}`);
  return fields;
}

/** ON then OFF on three fresh connections: the helper still does its job */
function stillServes(s: Session): void {
  switchFresh(s.conn, [ON, OFF], 4, 3, REPLY_MS);
}

async function endsQuietly(s: Session): Promise<void> {
  closeFd(s.conn);
  const out = await s.helper.exit();
  assert.deepEqual([out.code, out.signal, out.stdout, out.stderr], [0, null, "", ""]);
}

Deno.test("every thread of the serving helper has NoNewPrivs 1, Seccomp 2 and both filters, and it keeps serving", async () => {
  const s = await startSession();
  try {
    await idle(s.helper.pid);
    const main = status(`/proc/${s.helper.pid}/status`);
    const observed = ["NoNewPrivs", "Seccomp", "Seccomp_filters"].map((k) =>
      `${k}:\t${main.get(k)}`
    );
    console.log(`helper ${s.helper.pid} /proc/PID/status: ${observed.join(", ")}`);
    assert.equal(main.get("NoNewPrivs"), "1");
    assert.equal(main.get("Seccomp"), "2");
    // Two filters: the deny-list from startup and the serving allow-list
    assert.equal(main.get("Seccomp_filters"), "2");

    // TSYNC: not only the thread that installed it
    const tids = directoryNames(`/proc/${s.helper.pid}/task`);
    assert.ok(tids.length > 1, `Deno runs several threads (${tids.length})`);
    for (const tid of tids) {
      const t = status(`/proc/${s.helper.pid}/task/${tid}/status`);
      assert.deepEqual(
        [t.get("NoNewPrivs"), t.get("Seccomp"), t.get("Seccomp_filters")],
        ["1", "2", "2"],
        `thread ${tid} (${t.get("Name")})`,
      );
    }
    console.log(`all ${tids.length} threads: NoNewPrivs 1, Seccomp 2, Seccomp_filters 2`);

    // The observable can differ: this test process is not confined
    const self = status(`/proc/${Deno.pid}/status`);
    assert.deepEqual([self.get("NoNewPrivs"), self.get("Seccomp")], ["0", "0"]);

    stillServes(s);
    await endsQuietly(s);
  } finally {
    await s.close();
  }
});

/** Runs as root but with group 65534: /proc/PID then shows who owns it */
const OTHER_GROUP = ["setpriv", "--regid=65534", "--clear-groups"];

Deno.test("the helper is not dumpable: its /proc/PID belongs to root, not to its own group", async () => {
  // Control: a dumpable process under the same prefix owns its /proc/PID
  const control = new Deno.Command(OTHER_GROUP[0]!, {
    args: [...OTHER_GROUP.slice(1), "sleep", "60"],
    stdin: "null",
  }).spawn();
  try {
    await waitUntil(
      () => status(`/proc/${control.pid}/status`).get("Name") === "sleep",
      10000,
      "sleep to start",
    );
    assert.deepEqual(fileOwner(`/proc/${control.pid}/status`), { uid: 0, gid: 65534 });
  } finally {
    control.kill("SIGKILL");
    await control.status;
  }

  const s = await startSession([], { prefix: OTHER_GROUP });
  try {
    await idle(s.helper.pid);
    const st = status(`/proc/${s.helper.pid}/status`);
    assert.match(st.get("Gid") ?? "", /^65534\s/, "the helper runs with group 65534");
    const owner = fileOwner(`/proc/${s.helper.pid}/status`);
    console.log(
      `helper ${s.helper.pid} runs as gid 65534; /proc/PID/status owned by ${owner?.uid}:${owner?.gid}`,
    );
    assert.deepEqual(owner, { uid: 0, gid: 0 }, "non-dumpable: /proc/PID is root's");
    stillServes(s);
    await endsQuietly(s);
  } finally {
    await s.close();
  }
});

interface ProbeFindings {
  ffiState: string;
  dlopen: string;
  pointerOf: string;
  request: string;
  spawn: string;
  netlink: string;
  udp: string;
  tunsetiff: string;
  tunsetpersist: string;
  setDumpable: string;
  openTreeAttr: string;
  mptcp: string;
  newer: string;
  farBeyond: string;
  capability: { allowed: boolean };
  noNewPrivs: number;
}

async function probe(control: boolean): Promise<ProbeFindings> {
  // In a network namespace of its own: the control creates a TUN interface
  const out = await supportCommand(
    "startup_probe.ts",
    ["--allow-ffi", "--allow-run=/bin/true"],
    control ? ["--control"] : [],
    ["unshare", "--net"],
  ).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

Deno.test("after the startup sequence no library can be loaded, nothing executed, no netlink socket made, and bound calls still work", async () => {
  const locked = await probe(false);
  assert.equal(locked.ffiState, "prompt", "ffi is revoked");
  assert.match(locked.dlopen, /^NotCapable: Requires ffi access/);
  assert.match(locked.pointerOf, /^NotCapable: Requires ffi access/);
  assert.equal(locked.request, "Error: denied", "asking again is denied");
  // --allow-run would allow it: execve is refused by the seccomp filter
  assert.match(locked.spawn, /Failed to spawn '\/bin\/true': Operation not permitted/);
  // With CAP_NET_ADMIN a netlink socket could reconfigure the host: refused
  assert.deepEqual([locked.netlink, locked.udp], ["EPERM", "EPERM"]);
  // socket(), setsockopt() and close() through the symbols bound before the revoke
  assert.deepEqual(locked.capability, { allowed: true });
  assert.equal(locked.noNewPrivs, 1);
  // As root, before connecting: no TUN interface, persistent or not; never
  // dumpable again; no mount handle; no MPTCP socket
  console.log(`first stage, as root: ${JSON.stringify(locked)}`);
  assert.deepEqual(
    [locked.tunsetiff, locked.tunsetpersist, locked.setDumpable, locked.openTreeAttr, locked.mptcp],
    ["EPERM", "EPERM", "EPERM", "EPERM", "EPERM"],
  );
  // Newer than the filter knows: ENOSYS, whatever the kernel has there
  assert.deepEqual([locked.newer, locked.farBeyond], ["ENOSYS", "ENOSYS"]);

  // Control: without the lockdown each of those works, so the test can fail
  const open = await probe(true);
  assert.deepEqual(
    [
      open.ffiState,
      open.dlopen,
      open.pointerOf,
      open.request,
      open.spawn,
      open.netlink,
      open.udp,
      open.noNewPrivs,
      open.tunsetiff,
      open.tunsetpersist,
      open.setDumpable,
      open.openTreeAttr,
      open.mptcp,
    ],
    ["granted", "ok", "ok", "ok", "ok", "ok", "ok", 0, "ok", "ok", "ok", "ok", "ok"],
  );
  // On this kernel, is there a call above the filter's newest? The control
  // says; on kernels up to 6.18 it is ENOSYS too, and only the unit tests
  // (which run the program) show the filter's own answer
  console.log(`control, call ${469 + 1}: ${open.newer}; call 1000: ${open.farBeyond}`);
  assert.equal(open.farBeyond, "ENOSYS");
});

Deno.test("a helper that cannot install its seccomp filter stops with one clear line and exit 1", async () => {
  // The parent refuses seccomp(2) to everything it starts
  const out = await supportCommand(
    "deny_seccomp.ts",
    ["--allow-ffi", "--allow-run"],
    helperCommand(["--check"]),
  ).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1, stderr);
  assert.equal(new TextDecoder().decode(out.stdout), "");
  assert.equal(stderr, "Can't install the seccomp filter: Operation not permitted (EPERM)\n");
});

// ---- the capability check ----

Deno.test("--check exits 0 silently with CAP_NET_ADMIN", async () => {
  const out = await runHelper(["--check"]);
  assert.deepEqual([out.code, out.signal, out.stdout, out.stderr], [0, null, "", ""]);
});

Deno.test("--check --verbose says it is hardened and may set TCP_REPAIR", async () => {
  const out = await runHelper(["--check", "--verbose"]);
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout, "");
  const lines = out.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 2, out.stderr);
  assert.match(
    lines[0]!,
    /^hardened: not dumpable, no_new_privs, seccomp filter \((x86_64|aarch64), \d+ instructions\) refusing \d+ system calls; ffi permission revoked$/,
  );
  assert.equal(lines[1], "TCP_REPAIR can be set: this process has CAP_NET_ADMIN");
});

Deno.test("--check exits 1 without CAP_NET_ADMIN, in one line that names it and how to grant it", async () => {
  const out = await runHelper(["--check"], { prefix: WITHOUT_NET_ADMIN });
  assert.equal(out.code, 1, out.stderr);
  assert.equal(out.stdout, "");
  assert.equal(out.stderr.trimEnd().split("\n").length, 1, out.stderr);
  assert.match(
    out.stderr,
    /^Setting TCP_REPAIR on a test socket failed: Operation not permitted \(EPERM\); this process lacks CAP_NET_ADMIN/,
  );
  assert.match(out.stderr, /setcap cap_net_admin\+ep/);
  assert.match(out.stderr, /AmbientCapabilities=CAP_NET_ADMIN/);
  assert.match(out.stderr, /root/);
});

async function warnedSession(): Promise<Session> {
  return await startSession([], { prefix: WITHOUT_NET_ADMIN });
}

const WARNING =
  /^warning: Setting TCP_REPAIR on a test socket failed: Operation not permitted \(EPERM\); this process lacks CAP_NET_ADMIN; to grant it, run as root, /;

Deno.test("without CAP_NET_ADMIN the helper warns once, connects anyway and exits 0 on EOF", async () => {
  const s = await warnedSession();
  try {
    closeFd(s.conn);
    const out = await s.helper.exit();
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout, "");
    const lines = out.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 1, out.stderr);
    assert.match(lines[0]!, WARNING);
  } finally {
    await s.close();
  }
});

Deno.test("without CAP_NET_ADMIN a command fails with EPERM and says the capability is missing", async () => {
  const s = await warnedSession();
  const tcp = tcpConnections(4, 2);
  try {
    sendCommand(s.conn, ON, tcp.local);
    const out = await s.helper.exit();
    assert.equal(out.code, 1, out.stderr);
    assert.equal(out.stdout, "");
    const lines = out.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 2, out.stderr);
    assert.match(lines[0]!, WARNING);
    assert.match(
      lines[1]!,
      /^Setting TCP_REPAIR to ON \(1\) failed for socket 1 of 2 \(fd \d+\): Operation not permitted \(EPERM\); setting TCP_REPAIR needs CAP_NET_ADMIN, which this process lacks$/,
    );
    assert.equal(readReply(s.conn, 0), "eof", "no reply");
    for (const fd of tcp.local) assert.equal(repairState(fd), 0);
  } finally {
    tcp.close();
    await s.close();
  }
});

// ---- --verbose ----

function verboseLines(helper: Helper): Promise<string[]> {
  return helper.exit().then((out) => {
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout, "");
    return out.stderr.trimEnd().split("\n");
  });
}

Deno.test("--verbose logs the peer's pid and uid, one line per command with its count and time, and why it stopped", async () => {
  const s = await startSession(["--verbose"]);
  const tcp = tcpConnections(4, 3);
  try {
    sendCommand(s.conn, ON, tcp.local);
    assert.equal(readReply(s.conn, REPLY_MS), ON);
    sendCommand(s.conn, OFF, [tcp.local[0]!]);
    assert.equal(readReply(s.conn, REPLY_MS), OFF);
    sendCommand(s.conn, 0xff, tcp.local.slice(1));
    assert.equal(readReply(s.conn, REPLY_MS), -1);
    closeFd(s.conn);
    const lines = await verboseLines(s.helper);
    assert.equal(lines.length, 8, lines.join("\n"));
    // The sessions run with --seccomp-kill
    assert.match(lines[0]!, /^hardened: .* refusing \d+ system calls by killing the process; /);
    assert.match(lines[1]!, /^input hold: on; /);
    // We are the peer: we created the listening socket
    assert.equal(lines[2], `connected to ${s.socketPath} (peer pid ${Deno.pid}, uid 0, gid 0)`);
    assert.match(
      lines[3]!,
      /^confined: second seccomp filter \(\d+ instructions\) allowing \d+ system calls, refusing the rest by killing the process$/,
    );
    assert.match(lines[4]!, /^ON for 3 sockets in \d+ µs$/);
    assert.match(lines[5]!, /^OFF for 1 socket in \d+ µs$/);
    assert.match(lines[6]!, /^OFF_NO_WP for 2 sockets in \d+ µs$/);
    assert.equal(lines[7], "peer closed the connection after 3 commands");
  } finally {
    tcp.close();
    await s.close();
  }
});

Deno.test("without --verbose a successful run with commands prints nothing at all", async () => {
  const s = await startSession();
  const tcp = tcpConnections(6, 5);
  try {
    for (const cmd of [ON, OFF, ON, 0xff]) {
      sendCommand(s.conn, cmd, tcp.local);
      assert.equal(readReply(s.conn, REPLY_MS), (cmd << 24) >> 24);
    }
    await endsQuietly(s);
  } finally {
    tcp.close();
    await s.close();
  }
});

Deno.test("the helper command line spells out exactly one permission", () => {
  // What every test above ran, unless PASST_REPAIR_BIN names a built artefact
  const argv = helperCommand(["PATH"]);
  if (argv[0] === Deno.execPath()) {
    assert.deepEqual(argv.slice(1), ["run", "--allow-ffi", MAIN, "PATH"]);
  }
});

// ---- an unprivileged user with nothing but ambient CAP_NET_ADMIN ----

Deno.test("as an unprivileged user with only ambient CAP_NET_ADMIN the helper serves, confined", async (t) => {
  const scratch = sharedScratch();
  if (typeof scratch === "string") {
    console.log(`skipped: ${scratch}`);
    return;
  }
  try {
    const home = scratch.path("home");
    Deno.mkdirSync(home);
    Deno.chownSync(home, NOBODY, NOBODY);
    const socketPath = scratch.path("passt.socket.repair");
    const argv = commandForNobody([socketPath], scratch);
    const listener = unixListener(socketPath);
    Deno.chmodSync(socketPath, 0o777);
    const ambient = [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "--inh-caps=-all,+net_admin",
      "--ambient-caps=-all,+net_admin",
      "--bounding-set=-all,+net_admin",
    ];
    const child = new Deno.Command("setpriv", {
      args: [...ambient, ...argv],
      clearEnv: true,
      env: {
        PATH: "/usr/bin:/bin",
        HOME: home,
        DENO_DIR: `${home}/deno`,
        DENO_NO_UPDATE_CHECK: "1",
        NO_COLOR: "1",
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    let conn = -1;
    try {
      conn = acceptWithin(listener, 20000);
      await idle(child.pid);
      const st = status(`/proc/${child.pid}/status`);
      const observed = ["Uid", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"].map((k) =>
        `${k}: ${st.get(k)}`
      );
      console.log(`helper as user 65534: ${observed.join(", ")}`);
      assert.match(st.get("Uid") ?? "", /^65534\s/);
      assert.equal(st.get("CapEff"), "0000000000001000", "CAP_NET_ADMIN and nothing else");
      assert.deepEqual([st.get("NoNewPrivs"), st.get("Seccomp")], ["1", "2"]);
      // Non-dumpable: /proc/PID belongs to root, not to user 65534
      assert.deepEqual(fileOwner(`/proc/${child.pid}/status`), { uid: 0, gid: 0 });

      await t.step("it switches sockets handed over by a root-owned peer", () => {
        switchFresh(conn, [ON, OFF], 6, 4, REPLY_MS);
      });
      closeFd(conn);
      conn = -1;
      const out = await output;
      assert.deepEqual([
        out.code,
        out.signal,
        out.stdout.length,
        new TextDecoder().decode(out.stderr),
      ], [0, null, 0, ""]);
    } finally {
      if (conn >= 0) closeFd(conn);
      closeFd(listener);
      await stopChild(child, output);
    }
  } finally {
    scratch.cleanup();
  }
});

// ---- the second seccomp stage, tried from inside ----

interface ServingFindings {
  installed: boolean;
  procSelfMem: string;
  anyFile: string;
  socket: string;
  connect: string;
  tunsetiff: string;
  fionread: string;
  setDumpable: string;
  getDumpable: string;
  execve: string;
  end: string;
  commands: number;
}

/**
 * Runs tests/support/serving_probe.ts against a fake passt: accepts it,
 * checks that it still switches sockets after its attempts, closes, and
 * returns what it found (or, with --kill, how it ended)
 */
async function servingProbe(
  mode: "" | "--control" | "--kill",
): Promise<{ findings: ServingFindings | null; code: number; signal: Deno.Signal | null }> {
  const scratch = new Scratch();
  const socketPath = scratch.path("passt.socket.repair");
  const listener = unixListener(socketPath);
  const child = supportCommand("serving_probe.ts", ["--allow-ffi"], [
    socketPath,
    ...(mode ? [mode] : []),
  ]).spawn();
  const output = child.output();
  let conn = -1;
  try {
    conn = acceptWithin(listener, 20000);
    if (mode !== "--kill") {
      switchFresh(conn, [ON, OFF, ON], 4, 5, REPLY_MS);
    }
    closeFd(conn);
    conn = -1;
    const out = await output;
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(new TextDecoder().decode(out.stdout), "");
    if (mode === "--kill") return { findings: null, code: out.code, signal: out.signal };
    assert.equal(out.code, 0, stderr);
    return { findings: JSON.parse(stderr), code: out.code, signal: out.signal };
  } finally {
    if (conn >= 0) closeFd(conn);
    closeFd(listener);
    await stopChild(child, output);
    scratch.cleanup();
  }
}

Deno.test("after the second stage no file opens (not /proc/self/mem), no socket is made or connected, no ioctl, prctl or execve passes, and serving still works", async () => {
  const { findings: f } = await servingProbe("");
  assert.ok(f !== null);
  console.log(`second stage: ${JSON.stringify(f)}`);
  assert.equal(f.installed, true);
  assert.deepEqual(
    [f.procSelfMem, f.anyFile, f.socket, f.connect, f.tunsetiff, f.fionread],
    ["EPERM", "EPERM", "EPERM", "EPERM", "EPERM", "EPERM"],
  );
  assert.deepEqual([f.setDumpable, f.getDumpable, f.execve], ["EPERM", "EPERM", "EPERM"]);
  // ...while it served three commands and saw passt close
  assert.deepEqual([f.end, f.commands], ["eof", 3]);

  // Control: with the first stage only, the calls the second stage alone
  // refuses go through, so the refusals above are its doing. (TUNSETIFF,
  // PR_SET_DUMPABLE 1 and execve are refused by the first stage as well.)
  const { findings: open } = await servingProbe("--control");
  assert.ok(open !== null);
  assert.equal(open.installed, false);
  assert.deepEqual(
    [open.procSelfMem, open.anyFile, open.socket, open.connect, open.fionread, open.getDumpable],
    ["ok", "ok", "ok", "ok", "ok", "ok"],
  );
  assert.deepEqual([open.tunsetiff, open.setDumpable, open.execve], ["EPERM", "EPERM", "EPERM"]);
  assert.deepEqual([open.end, open.commands], ["eof", 3]);
});

Deno.test("with --seccomp-kill a call the second stage refuses kills the process (SIGSYS)", async () => {
  const { code, signal } = await servingProbe("--kill");
  assert.equal(signal, "SIGSYS", `exit code ${code}`);
});

Deno.test("the live helper runs exactly the two programs the unit tests run: the deny-list, then the allow-list bound to passt's socket", async () => {
  const s = await startSession();
  try {
    await idle(s.helper.pid);
    const filters = await seccompFilters(s.helper.pid);
    assert.equal(filters.length, 2, "two filters");
    const arch = Deno.build.arch;
    // The sessions run with --seccomp-kill
    assert.deepEqual(filters[0], buildSeccompFilter(arch, { kill: true }).program, "first stage");
    // The helper's descriptor for passt, as it reported it nowhere: read it
    // from the program, then check the rest of it is what is built for it
    const serving = buildServingFilter(arch, { kill: true });
    const slot = serving.peerSlots[0]!;
    const peer = new DataView(filters[1]!.buffer).getUint32(slot * 8 + 4, true);
    assert.ok(openDescriptors(s.helper.pid).get(peer)?.startsWith("socket:"), `fd ${peer}`);
    bindPeer(serving, peer);
    assert.deepEqual(filters[1], serving.program, "second stage");
    // ...so what the unit tests prove of them holds in the helper: here,
    // that a call numbered above NEWEST_CALL gets ENOSYS, which this kernel
    // could not show (it has nothing there either)
    const newer = runFilter(filters[0]!, {
      nr: NEWEST_CALL[arch === "aarch64" ? "aarch64" : "x86_64"] + 1,
      arch: buildSeccompFilter(arch).auditArch,
    });
    assert.equal(newer, SECCOMP_RET_ERRNO | 38);
    stillServes(s);
    await endsQuietly(s);
  } finally {
    await s.close();
  }
});
