// contrib/passt-repair@.service, the systemd template unit for operators.
//
// There is no systemd running the machines this is tested on, so the unit
// cannot be started here. What can be checked is: its directives (only
// CAP_NET_ADMIN, no_new_privs, none of the options that would break the
// helper), `systemd-analyze verify` and `systemd-analyze security` on it,
// and that its SystemCallFilter= allows every system call the helper
// really makes. The systemd-analyze and strace checks are skipped, saying
// why, where those tools are missing.

import assert from "node:assert/strict";
import { buildBundle, LAUNCHER, ROOT, runBounded } from "../support/artefact.ts";
import { Scratch } from "../support/helper.ts";
import {
  acceptWithin,
  closeFd,
  readReply,
  repairState,
  sendCommand,
  tcpConnections,
  unixListener,
} from "../support/peer_native.ts";

const UNIT = `${ROOT}contrib/passt-repair@.service`;
const TEXT = Deno.readTextFileSync(UNIT);
const INSTALLED_AT = "/usr/local/bin/passt-repair";

/** The unit's directives: section -> key -> every value given, in order */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1]!, current);
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    assert.ok(kv && current, `not a directive in a section: ${line}`);
    current.set(kv[1]!, [...(current.get(kv[1]!) ?? []), kv[2]!]);
  }
  return sections;
}

/** The path of a tool, or null */
async function tool(name: string): Promise<string | null> {
  const run = await runBounded(["sh", "-c", `command -v ${name}`], { seconds: 10 });
  return run.code === 0 ? run.stdout.trim() : null;
}

const analyze = await tool("systemd-analyze");
const strace = await tool("strace");
const offlineSecurity = analyze !== null &&
  (await runBounded([analyze, "security", "--help"], { seconds: 30 })).stdout.includes("--offline");

const NO_ANALYZE = "systemd-analyze is not installed (it comes with the systemd package)";

/** The unit, with the program at `program`, as an instance for /run/passt */
function instance(scratch: Scratch, program: string): string {
  const file = scratch.path("passt-repair@run-passt.service");
  Deno.writeTextFileSync(file, TEXT.replaceAll(INSTALLED_AT, program));
  return file;
}

Deno.test("contrib/passt-repair@.service grants CAP_NET_ADMIN alone, under no_new_privs", () => {
  const unit = parseUnit(TEXT);
  assert.deepEqual([...unit.keys()], ["Unit", "Service"], "no [Install]: started on demand only");
  const service = unit.get("Service")!;
  const get = (key: string) => service.get(key) ?? [];
  assert.deepEqual(get("CapabilityBoundingSet"), ["CAP_NET_ADMIN"]);
  assert.deepEqual(get("AmbientCapabilities"), ["CAP_NET_ADMIN"]);
  assert.deepEqual(get("NoNewPrivileges"), ["yes"]);
  assert.deepEqual(get("Restart"), ["no"], "one helper per migration attempt");
  // One PATH, the instance, after "--" so that it is never taken for an option
  assert.match(get("ExecStart").join("\n"), new RegExp(`^${INSTALLED_AT} .*-- %f$`));
  // Options that would break the helper (see the unit's comments)
  for (const key of ["MemoryDenyWriteExecute", "PrivateUsers", "PrivateTmp", "DynamicUser"]) {
    assert.deepEqual(get(key), [], `${key}= must not be set`);
  }
  // V8 needs pkey_*; the program installs its own seccomp filter
  const filter = get("SystemCallFilter").join(" ").split(/\s+/);
  assert.ok(filter.includes("@pkey") && filter.includes("seccomp"), filter.join(" "));
});

Deno.test({
  name: `systemd-analyze verify accepts the unit with the built launcher and the manual page${
    analyze ? "" : ` (skipped: ${NO_ANALYZE})`
  }`,
  ignore: analyze === null,
  fn: async () => {
    await buildBundle();
    const scratch = new Scratch();
    try {
      // Documentation=man:passt-repair(1) is checked against our page
      Deno.mkdirSync(scratch.path("man/man1"), { recursive: true });
      Deno.copyFileSync(`${ROOT}passt-repair.1`, scratch.path("man/man1/passt-repair.1"));
      const env = { MANPATH: scratch.path("man") };
      const good = await runBounded([analyze!, "verify", instance(scratch, LAUNCHER)], {
        seconds: 60,
        env,
      });
      assert.deepEqual([good.code, good.stderr], [0, ""]);
      // Controls: verify does look at the command and at the manual page
      const noProgram = await runBounded(
        [analyze!, "verify", instance(scratch, scratch.path("missing"))],
        { seconds: 60, env },
      );
      assert.notEqual(noProgram.code, 0);
      assert.match(noProgram.stderr, /is not executable/);
      const noPage = await runBounded([analyze!, "verify", instance(scratch, LAUNCHER)], {
        seconds: 60,
        env: { MANPATH: scratch.path("nowhere") },
      });
      assert.notEqual(noPage.code, 0);
      assert.match(noPage.stderr, /passt-repair\(1\)/);
    } finally {
      scratch.cleanup();
    }
  },
});

Deno.test({
  name: `systemd-analyze security rates the unit's exposure 2.0 or lower${
    offlineSecurity
      ? ""
      : ` (skipped: ${analyze ? "this systemd-analyze has no --offline" : NO_ANALYZE})`
  }`,
  ignore: !offlineSecurity,
  fn: async () => {
    await buildBundle();
    const scratch = new Scratch();
    try {
      const run = await runBounded(
        [analyze!, "security", "--offline=yes", "--no-pager", instance(scratch, LAUNCHER)],
        { seconds: 60 },
      );
      const level = /Overall exposure level for \S+: ([\d.]+)/.exec(run.stdout);
      assert.ok(level, run.stdout + run.stderr);
      console.log(`exposure level: ${level[1]} (0 best, 10 worst)`);
      assert.ok(Number(level[1]) <= 2.0, run.stdout);
    } finally {
      scratch.cleanup();
    }
  },
});

/** Every system call in each @group systemd knows, groups expanded */
async function syscallGroups(): Promise<Map<string, Set<string>>> {
  const run = await runBounded([analyze!, "syscall-filter", "--no-pager"], { seconds: 30 });
  assert.equal(run.code, 0, run.stderr);
  const raw = new Map<string, string[]>();
  let group: string[] | undefined;
  for (const line of run.stdout.split("\n")) {
    if (line.startsWith("@")) raw.set(line.trim(), group = []);
    else if (/^\s+[^#\s]/.test(line) && group) group.push(line.trim());
    else if (!line.startsWith(" ")) group = undefined;
  }
  const expand = (name: string, seen = new Set<string>()): Set<string> => {
    if (!name.startsWith("@")) return new Set([name]);
    if (seen.has(name)) return new Set();
    seen.add(name);
    const members = raw.get(name);
    assert.ok(members, `unknown group ${name}`);
    return new Set(members.flatMap((m) => [...expand(m, seen)]));
  };
  return new Map([...raw.keys()].map((g) => [g, expand(g)]));
}

/** The system calls SystemCallFilter= lets through, as systemd applies it */
async function allowedByUnit(): Promise<Set<string>> {
  const groups = await syscallGroups();
  const names = (words: string[]) => words.flatMap((w) => [...(groups.get(w) ?? [w])]);
  // An allow list always includes @default
  const allowed = new Set(groups.get("@default"));
  for (const value of parseUnit(TEXT).get("Service")!.get("SystemCallFilter") ?? []) {
    const deny = value.startsWith("~");
    const words = value.replace(/^~/, "").trim().split(/\s+/);
    assert.ok(!deny || allowed.size > 0, "the first SystemCallFilter= is an allow list");
    for (const call of names(words)) deny ? allowed.delete(call) : allowed.add(call);
  }
  return allowed;
}

/** The names of the system calls in an strace -f log */
function syscallsIn(log: string): Set<string> {
  return new Set(
    [...log.matchAll(/^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)/gm)].map((m) => m[1]!),
  );
}

Deno.test({
  name: `the unit's SystemCallFilter= allows every system call the helper makes${
    analyze && strace ? "" : ` (skipped: ${analyze ? "strace is not installed" : NO_ANALYZE})`
  }`,
  ignore: analyze === null || strace === null,
  fn: async () => {
    await buildBundle();
    const scratch = new Scratch();
    const env = {
      DENO: Deno.execPath(),
      // Under the unit the file system is read-only: deno cannot keep caches
      DENO_DIR: "/proc/nonexistent/deno",
    };
    const traced = (name: string, args: string[]) => [
      strace!,
      "-f",
      "-qq",
      "-o",
      scratch.path(name),
      LAUNCHER,
      ...args,
    ];
    try {
      // The start-up path and --check
      const check = await runBounded(traced("check.log", ["--check"]), { seconds: 120, env });
      assert.equal(check.code, 0, check.stderr);
      // A session: connect, switch 253 sockets on and off, peer closes
      const socketPath = scratch.path("passt.socket.repair");
      const listener = unixListener(socketPath);
      const session = runBounded(traced("session.log", [socketPath]), { seconds: 120, env });
      const tcp = tcpConnections(4, 253);
      try {
        const conn = acceptWithin(listener, 60000);
        for (const cmd of [1, 0]) {
          sendCommand(conn, cmd, tcp.local);
          assert.equal(readReply(conn, 30000), cmd);
          assert.equal(repairState(tcp.local[0]!), cmd);
        }
        closeFd(conn);
      } finally {
        closeFd(listener);
        tcp.close();
      }
      const end = await session;
      assert.equal(end.code, 0, end.stderr);

      const used = new Set([
        ...syscallsIn(Deno.readTextFileSync(scratch.path("check.log"))),
        ...syscallsIn(Deno.readTextFileSync(scratch.path("session.log"))),
      ]);
      assert.ok(used.has("recvmsg") && used.has("setsockopt"), [...used].join(" "));
      const allowed = await allowedByUnit();
      const refused = [...used].filter((call) => !allowed.has(call)).sort();
      assert.deepEqual(refused, [], `system calls the unit would refuse with EPERM`);
    } finally {
      scratch.cleanup();
    }
  },
});
