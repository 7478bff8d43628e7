// deno task install, and the non-root recipes that need no compiled binary:
// an unprivileged user holding nothing but an ambient CAP_NET_ADMIN
// (setpriv --ambient-caps by hand, AmbientCapabilities= in the systemd
// unit) runs the INSTALLED launcher, which runs the private deno installed
// beside it: nothing is taken from PATH.

import assert from "node:assert/strict";
import { installTo, ROOT, runBounded } from "../support/artefact.ts";
import { OFF, ON, Scratch, stopChild, switchFresh } from "../support/helper.ts";
import { acceptWithin, closeFd, unixListener } from "../support/peer_native.ts";
import { NOBODY, sharedScratch } from "../support/reachable.ts";
import { VERSION } from "../../src/version.ts";
import { installedLauncher } from "../../contrib/install.ts";

/** What a service for a user without a home gets, and nothing of ours */
const BARE_ENV = { PATH: "/usr/bin:/bin", HOME: "/nonexistent", LANG: "C.UTF-8" };

/** setpriv: user 65534, no groups, CAP_NET_ADMIN the only capability, ambient */
const AMBIENT_NOBODY = [
  "setpriv",
  `--reuid=${NOBODY}`,
  `--regid=${NOBODY}`,
  "--clear-groups",
  "--inh-caps=-all,+net_admin",
  "--ambient-caps=-all,+net_admin",
  "--bounding-set=-all,+net_admin",
];

/** Why these tests cannot run here, or "" */
const cannot = (() => {
  const probe = sharedScratch();
  if (typeof probe === "string") return probe;
  probe.cleanup();
  return "";
})();
const skip = cannot === "" ? "" : ` (skipped: ${cannot})`;

let installed: Promise<{ scratch: Scratch; bin: string }> | undefined;

/** One installation for this file, in a folder user 65534 can reach */
function install(): Promise<{ scratch: Scratch; bin: string }> {
  installed ??= (async () => {
    const scratch = sharedScratch() as Scratch;
    // Removed when this test module ends, whichever of its tests ran
    globalThis.addEventListener("unload", () => scratch.cleanup());
    return { scratch, bin: await installTo(scratch.path("prefix")) };
  })();
  return installed;
}

Deno.test({
  name: `deno task install puts passt-repair on PATH with its own deno, world-readable${skip}`,
  ignore: skip !== "",
  fn: async () => {
    const { scratch, bin } = await install();
    const prefix = scratch.path("prefix");
    assert.equal(Deno.readLinkSync(bin), "../lib/passt-repair/passt-repair.sh");
    for (
      const [file, mode] of [
        ["lib/passt-repair/passt-repair.js", 0o644],
        ["lib/passt-repair/passt-repair.sh", 0o755],
        ["lib/passt-repair/deno", 0o755],
        ["share/man/man1/passt-repair.1", 0o644],
      ] as const
    ) {
      assert.equal((Deno.statSync(`${prefix}/${file}`).mode ?? 0) & 0o777, mode, file);
    }
    // The installed launcher knows its directory: no readlink at each start
    assert.ok(
      Deno.readTextFileSync(`${prefix}/lib/passt-repair/passt-repair.sh`)
        .includes(`\ninstalled='${prefix}/lib/passt-repair'\n`),
    );
    // No deno on PATH: the launcher runs the one installed beside it
    const run = await runBounded([bin, "--version"], {
      seconds: 60,
      clearEnv: true,
      env: BARE_ENV,
      cwd: "/",
    });
    assert.deepEqual([run.code, run.stderr], [0, ""]);
    assert.match(run.stdout, new RegExp(`^passt-repair ${VERSION.replaceAll(".", "\\.")} `));
    // The manual page is where man looks under PREFIX
    const man = await runBounded(
      ["man", "--warnings", "-M", `${prefix}/share/man`, "passt-repair"],
      {
        seconds: 60,
        env: { MANPAGER: "cat", PAGER: "cat", MANWIDTH: "80" },
      },
    );
    assert.equal(man.code, 0, man.stderr);
    assert.match(man.stdout, /^PASST-REPAIR\(1\)/);
  },
});

Deno.test({
  name:
    `as user 65534 with only an ambient CAP_NET_ADMIN (setpriv), the installed passt-repair serves${skip}`,
  ignore: skip !== "",
  fn: async () => {
    const { scratch, bin } = await install();
    const socketPath = scratch.path("passt.socket.repair");
    const listener = unixListener(socketPath);
    Deno.chmodSync(socketPath, 0o777);
    const child = new Deno.Command(AMBIENT_NOBODY[0]!, {
      args: [...AMBIENT_NOBODY.slice(1), bin, socketPath],
      clearEnv: true,
      env: BARE_ENV,
      cwd: "/",
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = child.output();
    let conn = -1;
    try {
      conn = acceptWithin(listener, 30000);
      switchFresh(conn, [ON, OFF], 4, 3, 10000);
      closeFd(conn);
      conn = -1;
      const out = await output;
      assert.deepEqual(
        [out.code, out.stdout.length, new TextDecoder().decode(out.stderr)],
        [0, 0, ""],
      );
    } finally {
      if (conn >= 0) closeFd(conn);
      closeFd(listener);
      await stopChild(child, output);
    }
    // The control: the same user without the ambient capability is refused,
    // and told how to grant it without a compiled binary
    const refused = await runBounded(
      ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", bin, "--check"],
      { seconds: 60, clearEnv: true, env: BARE_ENV, cwd: "/" },
    );
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /CAP_NET_ADMIN.*AmbientCapabilities=.*setpriv .*--ambient-caps/);
  },
});

/** The [Service] directives of the systemd unit that decide credentials */
function unitCredentials(): Map<string, string> {
  const text = Deno.readTextFileSync(`${ROOT}contrib/passt-repair@.service`);
  const keys = ["User", "AmbientCapabilities", "CapabilityBoundingSet", "NoNewPrivileges"];
  const found = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m && keys.includes(m[1]!)) found.set(m[1]!, m[2]!);
  }
  return found;
}

/** A capability set as setpriv spells it: "CAP_NET_ADMIN" -> "-all,+net_admin" */
function capList(value: string): string {
  return ["-all", ...value.split(/\s+/).map((c) => `+${c.replace(/^CAP_/, "").toLowerCase()}`)]
    .join(",");
}

Deno.test({
  name:
    `the systemd unit's credentials (User=, AmbientCapabilities=, ...) let the installed launcher set TCP_REPAIR${skip}`,
  ignore: skip !== "",
  fn: async () => {
    const { bin } = await install();
    const unit = unitCredentials();
    assert.deepEqual(
      [unit.get("AmbientCapabilities"), unit.get("CapabilityBoundingSet")],
      ["CAP_NET_ADMIN", "CAP_NET_ADMIN"],
    );
    assert.equal(unit.get("User"), "passt-repair");
    // What systemd does for the unit, with user 65534 standing in for
    // passt-repair (no such user here): no capability from being root,
    // the bounding and ambient sets from the unit, no_new_privs
    const emulated = [
      "setpriv",
      `--reuid=${NOBODY}`,
      `--regid=${NOBODY}`,
      "--clear-groups",
      "--securebits=+noroot,+noroot_locked",
      `--bounding-set=${capList(unit.get("CapabilityBoundingSet")!)}`,
      `--inh-caps=${capList(unit.get("AmbientCapabilities")!)}`,
      `--ambient-caps=${capList(unit.get("AmbientCapabilities")!)}`,
      ...(unit.get("NoNewPrivileges") === "yes" ? ["--no-new-privs"] : []),
    ];
    const run = await runBounded([...emulated, bin, "--check"], {
      seconds: 60,
      clearEnv: true,
      env: BARE_ENV,
      cwd: "/",
    });
    assert.deepEqual([run.code, run.stdout, run.stderr], [0, "", ""]);
  },
});

Deno.test("the installed launcher's directory survives quotes, spaces and $ in its name", async () => {
  const launcher = Deno.readTextFileSync(`${ROOT}contrib/passt-repair.sh`);
  const dir = `/opt/it's "a" $dir \\ with\ttabs`;
  const line = installedLauncher(launcher, dir).split("\n").find((l) => l.startsWith("installed="));
  assert.ok(line !== undefined && line !== "installed=");
  const run = await runBounded(["sh", "-c", `${line}\nprintf %s "$installed"`], { seconds: 10 });
  assert.deepEqual([run.code, run.stdout], [0, dir]);
  // And the launcher as shipped has exactly one line to fill in
  assert.throws(() => installedLauncher(launcher.replace("\ninstalled=\n", "\n"), dir));
});

Deno.test("an installed launcher runs no part of its directory's name, whatever the name holds", async () => {
  const launcher = Deno.readTextFileSync(`${ROOT}contrib/passt-repair.sh`);
  const scratch = new Scratch();
  try {
    const marker = scratch.path("ran");
    // $` $' $& mean something to String.prototype.replace; the newlines let
    // pasted launcher text (with its quotes) end the quoted word early
    for (const special of ["$`", "$'", "$&", "$$", "'", "$(touch x)"]) {
      // A real directory of that name, the launcher installed in it
      const dir = `${scratch.dir}/x${special}\ntouch '${marker}'\n#`;
      Deno.mkdirSync(dir, { recursive: true });
      const copy = `${dir}/passt-repair.sh`;
      Deno.writeTextFileSync(copy, installedLauncher(launcher, dir));
      const run = await runBounded(["/bin/sh", copy, "PATH"], {
        seconds: 10,
        clearEnv: true,
        env: { PATH: "/usr/bin:/bin", DENO: "/bin/false" },
        cwd: scratch.dir,
      });
      assert.deepEqual(
        [special, run.code, run.stderr],
        [
          special,
          1,
          `passt-repair: cannot read ${dir}/passt-repair.js: keep passt-repair.js next to this launcher\n`,
        ],
      );
      assert.throws(
        () => Deno.statSync(marker),
        Deno.errors.NotFound,
        `${special}: it ran a command`,
      );
    }
  } finally {
    scratch.cleanup();
  }
});

Deno.test("an installed tree copied elsewhere runs its own deno and bundle, never those of the place it was installed", async () => {
  const launcher = Deno.readTextFileSync(`${ROOT}contrib/passt-repair.sh`);
  const scratch = new Scratch();
  try {
    // Installed in `old` (say a staging folder, since deleted and made
    // again by someone else), then copied to `moved`
    const old = scratch.path("old"), moved = scratch.path("moved");
    for (const [dir, who] of [[old, "old"], [moved, "moved"]] as const) {
      Deno.mkdirSync(dir);
      Deno.writeTextFileSync(`${dir}/passt-repair.sh`, installedLauncher(launcher, old));
      Deno.writeTextFileSync(`${dir}/passt-repair.js`, "");
      Deno.writeTextFileSync(`${dir}/deno`, `#!/bin/sh\necho ${who}\n`);
      Deno.chmodSync(`${dir}/deno`, 0o755);
    }
    const env = { PATH: "/usr/bin:/bin" };
    const ran = async (launcherPath: string) => {
      const run = await runBounded(["/bin/sh", launcherPath], { seconds: 10, clearEnv: true, env });
      return [run.code, run.stdout, run.stderr];
    };
    assert.deepEqual(await ran(`${moved}/passt-repair.sh`), [0, "moved\n", ""]);
    // Where it was installed, and through a link to it, it knows its place
    assert.deepEqual(await ran(`${old}/passt-repair.sh`), [0, "old\n", ""]);
    Deno.symlinkSync(`${old}/passt-repair.sh`, scratch.path("bin-passt-repair"));
    assert.deepEqual(await ran(scratch.path("bin-passt-repair")), [0, "old\n", ""]);
  } finally {
    scratch.cleanup();
  }
});
