// deno task install: puts the bundle, its launcher, a private copy of the
// Deno that runs this script and the manual page under PREFIX, which is
// $PASST_REPAIR_PREFIX or /usr/local, so that `passt-repair` is on PATH and needs nothing else:
//
//   PREFIX/lib/passt-repair/passt-repair.js   the program (deno task bundle)
//   PREFIX/lib/passt-repair/passt-repair.sh   its launcher (contrib/passt-repair.sh)
//   PREFIX/lib/passt-repair/deno              the Deno the launcher runs
//   PREFIX/bin/passt-repair                   a symbolic link to the launcher
//   PREFIX/share/man/man1/passt-repair.1      the manual page
//
// The launcher prefers the `deno` beside it, so the installed program never
// depends on which deno (if any) is on PATH, and stays on the version it was
// tested with. Everything is world-readable (directories 0755, programs 0755,
// data 0644) so that an unprivileged service user can run it. Each file is
// written under a temporary name and renamed into place, so a running
// helper keeps its old files and a new one never sees half a file.
//
// Usage: deno task install   (after deno task bundle, which the task runs)
//        PASST_REPAIR_PREFIX=/opt/passt-repair deno task install
// Needs: --allow-read --allow-write --allow-env=PASST_REPAIR_PREFIX
//
// Not PREFIX: npm reads that variable too, and npx then spends a minute
// looking for its global packages there.

const ROOT = new URL("../", import.meta.url).pathname;

/** What to copy where, relative to ROOT and PREFIX */
export const FILES: readonly { from: string; to: string; mode: number }[] = [
  { from: "dist/passt-repair.js", to: "lib/passt-repair/passt-repair.js", mode: 0o644 },
  { from: "dist/passt-repair.sh", to: "lib/passt-repair/passt-repair.sh", mode: 0o755 },
  { from: "passt-repair.1", to: "share/man/man1/passt-repair.1", mode: 0o644 },
];

function fail(message: string): never {
  console.error(`install: ${message}`);
  Deno.exit(1);
}

function makeDirs(prefix: string, relative: string): void {
  let path = prefix;
  for (const part of relative.split("/")) {
    path = `${path}/${part}`;
    try {
      Deno.mkdirSync(path, { mode: 0o755 });
      Deno.chmodSync(path, 0o755); // whatever the umask
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
  }
}

/** The launcher's line that an installed copy fills in with its directory */
const INSTALLED_LINE = "\ninstalled=\n";

/** `text` as one sh word, whatever it holds */
function shellQuote(text: string): string {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

/** The launcher as installed in `dir`: it need not resolve its own link */
export function installedLauncher(launcher: string, dir: string): string {
  const at = launcher.indexOf(INSTALLED_LINE);
  if (at < 0 || launcher.indexOf(INSTALLED_LINE, at + 1) >= 0) {
    throw new Error("the launcher has no single empty installed= line to fill in");
  }
  // Spliced, not String.replace(): its replacement string gives $' $` $&
  // meanings, which would paste launcher text into the quoted word
  return `${launcher.slice(0, at)}\ninstalled=${shellQuote(dir)}\n${
    launcher.slice(at + INSTALLED_LINE.length)
  }`;
}

/** Copies `from` to `to` through a temporary name in the same directory */
function place(from: string, to: string, mode: number, edit?: (text: string) => string): void {
  const temporary = `${to}.new-${Deno.pid}`;
  if (edit === undefined) Deno.copyFileSync(from, temporary);
  else Deno.writeTextFileSync(temporary, edit(Deno.readTextFileSync(from)));
  Deno.chmodSync(temporary, mode);
  Deno.renameSync(temporary, to);
}

function install(prefix: string): void {
  if (!prefix.startsWith("/")) {
    fail(`PASST_REPAIR_PREFIX must be an absolute path, not "${prefix}"`);
  }
  prefix = prefix.replace(/\/+$/, "") || "/";
  const base = prefix === "/" ? "" : prefix;
  for (const file of FILES) {
    try {
      Deno.statSync(`${ROOT}${file.from}`);
    } catch {
      fail(`${file.from} is missing: run deno task bundle first (deno task install does)`);
    }
  }
  Deno.mkdirSync(prefix, { recursive: true, mode: 0o755 });
  makeDirs(base, "lib/passt-repair");
  makeDirs(base, "bin");
  makeDirs(base, "share/man/man1");
  const lib = `${base}/lib/passt-repair`;
  for (const file of FILES) {
    const edit = file.to.endsWith(".sh")
      ? (text: string) => installedLauncher(text, lib)
      : undefined;
    place(`${ROOT}${file.from}`, `${base}/${file.to}`, file.mode, edit);
    console.log(`${base}/${file.to}`);
  }
  place(Deno.execPath(), `${base}/lib/passt-repair/deno`, 0o755);
  console.log(`${base}/lib/passt-repair/deno (Deno ${Deno.version.deno})`);
  const link = `${base}/bin/passt-repair`;
  const temporary = `${link}.new-${Deno.pid}`;
  Deno.symlinkSync("../lib/passt-repair/passt-repair.sh", temporary);
  Deno.renameSync(temporary, link);
  console.log(`${link} -> ../lib/passt-repair/passt-repair.sh`);
}

if (import.meta.main) {
  try {
    install(Deno.env.get("PASST_REPAIR_PREFIX") || "/usr/local");
  } catch (e) {
    fail(e instanceof Error ? e.message : String(e));
  }
}
