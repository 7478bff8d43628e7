// Running the helper as another user (65534, "nobody"), as an operator's
// non-root recipe does. That user must be able to reach what it runs: the
// socket's folder, the deno executable and the program's files. A private
// TMPDIR (mode 0700) or a checkout inside a private folder (for example
// cloned into `mktemp -d`) hides them, so these helpers give such a test a
// folder everyone can reach and world-readable copies of what it runs.

import { helperCommand, MAIN, Scratch } from "./helper.ts";

export const NOBODY = 65534;

/** Whether every folder above `path` is searchable by others, and `path` has `bits` for them */
export function othersCanReach(path: string, bits = 0o001): boolean {
  const parts = path.split("/").filter((p) => p !== "");
  for (let i = 1; i <= parts.length; i++) {
    let mode: number;
    try {
      mode = Deno.statSync("/" + parts.slice(0, i).join("/")).mode ?? 0;
    } catch {
      return false;
    }
    const wanted = i === parts.length ? bits : 0o001;
    if ((mode & wanted) !== wanted) return false;
  }
  return true;
}

/**
 * A scratch folder (mode 0755) that user 65534 can reach: in TMPDIR when
 * TMPDIR is reachable, else in /tmp or /var/tmp. Returns the reason instead
 * when none is.
 */
export function sharedScratch(): Scratch | string {
  const candidates = [Deno.makeTempDirSync({ prefix: "probe-" })];
  // The probe tells where TMPDIR is without reading the environment
  const tmpdir = candidates[0]!.slice(0, candidates[0]!.lastIndexOf("/")) || "/";
  Deno.removeSync(candidates[0]!);
  for (const parent of [tmpdir, "/tmp", "/var/tmp"]) {
    if (!othersCanReach(parent, 0o001)) continue;
    const scratch = new Scratch(parent);
    Deno.chmodSync(scratch.dir, 0o755);
    return scratch;
  }
  return `no temporary folder that user ${NOBODY} can enter: TMPDIR (${tmpdir}), /tmp and /var/tmp are all closed to other users`;
}

/** Copies the program's sources (main.ts and src/) into `dir`, world-readable */
function copySources(dir: string): string {
  const root = MAIN.slice(0, MAIN.lastIndexOf("/"));
  const copy = (from: string, to: string) => {
    const info = Deno.statSync(from);
    if (info.isDirectory) {
      Deno.mkdirSync(to, { mode: 0o755 });
      Deno.chmodSync(to, 0o755);
      for (const entry of Deno.readDirSync(from)) {
        copy(`${from}/${entry.name}`, `${to}/${entry.name}`);
      }
    } else if (from.endsWith(".ts")) {
      Deno.copyFileSync(from, to);
      Deno.chmodSync(to, 0o644);
    }
  };
  Deno.mkdirSync(`${dir}/app`, { mode: 0o755 });
  Deno.chmodSync(`${dir}/app`, 0o755);
  copy(MAIN, `${dir}/app/main.ts`);
  copy(`${root}/src`, `${dir}/app/src`);
  return `${dir}/app/main.ts`;
}

/**
 * The helper's command line (see helperCommand) made runnable by user 65534
 * from `scratch`, a folder it can reach: the program is used in place when
 * others may execute it, else hard-linked (or copied) into `scratch`; main.ts
 * and src/ are copied there when others cannot read them where they are.
 */
export function commandForNobody(args: readonly string[], scratch: Scratch): string[] {
  const argv = helperCommand(args);
  let program = Deno.realPathSync(argv[0]!);
  if (!othersCanReach(program, 0o005)) {
    const link = scratch.path("program");
    try {
      Deno.linkSync(program, link); // same inode and mode: no copy of 100 MB
    } catch {
      Deno.copyFileSync(program, link); // another file system
      Deno.chmodSync(link, 0o755);
    }
    program = link;
  }
  const rest = argv.slice(1).map((a) =>
    a === MAIN && !othersCanReach(MAIN, 0o004) ? copySources(scratch.dir) : a
  );
  return [program, ...rest];
}
