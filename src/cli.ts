// Command line parsing. Pure: takes the argument list, returns what to do.
//
// Upstream has no options at all, so none of ours may change what a plain
// `passt-repair PATH` does (README, "Command line").
//
// Hand-written rather than node:util's parseArgs: importing node:util costs
// about 10-20 ms and 3-4 MB at every start (measured with `deno task bench`),
// and passt waits only about 10 ms for its helper at migration time. The
// grammar is the usual one: long options, `--name=value` or `--name value`
// for an option that takes a value, `-h` (a short option, also grouped),
// options and PATH in any order, and `--` to end options.

import { UsageError } from "./errors.ts";

/** One option: its long name, what --help says, and whether it takes a value */
interface OptionSpec {
  readonly long: string;
  readonly short?: string;
  /** The value's name in --help; absent for a boolean */
  readonly value?: string;
  readonly help: string;
}

/**
 * Every option, in --help's order. A new boolean option is one line here
 * (and its use in parseCommandLine()); --help is made from this table.
 */
const OPTIONS = [
  { long: "help", short: "h", help: "show this help and exit" },
  { long: "version", help: "show the version and exit" },
  {
    long: "timeout",
    value: "SECONDS",
    help: "give up waiting for the socket to appear or to accept connections after " +
      "SECONDS (fractions allowed); does not limit the time spent connected",
  },
  {
    long: "wait",
    help: "PATH names a socket that may not exist yet: wait for exactly that name " +
      "to appear in its directory",
  },
  { long: "verbose", help: "log each event on stderr (peer, commands, timings)" },
  {
    long: "no-hold",
    help: "do not hold a socket's input while it is in repair mode (by default every " +
      "packet arriving then is dropped, to be sent again by the peer: see the manual page)",
  },
  {
    long: "seccomp-kill",
    help: "a system call the seccomp filters refuse kills the process instead of failing " +
      "with EPERM (stricter, for testing: nothing is hidden)",
  },
  {
    long: "check",
    help: "only report whether this process may set TCP_REPAIR (exit 0 if it may, 1 if not)",
  },
] as const satisfies readonly OptionSpec[];

type Name = (typeof OPTIONS)[number]["long"];

export const USAGE =
  "Usage: passt-repair [--timeout SECONDS] [--wait] [--verbose] [--no-hold] [--seccomp-kill]\n" +
  "                    [--] PATH\n" +
  "       passt-repair --check | --help | --version";

/** "-h, --help" or "    --timeout SECONDS": the option column of --help */
function optionTag(o: OptionSpec): string {
  const long = `--${o.long}${o.value === undefined ? "" : ` ${o.value}`}`;
  return o.short === undefined ? `    ${long}` : `-${o.short}, ${long}`;
}

/** Words of `text` in lines of at most `width` characters */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(" ")) {
    if (line !== "" && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  return [...lines, line];
}

/** The Options section: every tag in one column, every description in the next */
function optionLines(): string {
  const rows: Array<[string, string]> = OPTIONS.map((o) => [optionTag(o), o.help]);
  rows.push(["    --", 'end of options, for a PATH that starts with "-"']);
  const column = 2 + Math.max(...rows.map(([tag]) => tag.length)) + 2;
  return rows.flatMap(([tag, help]) =>
    wrap(help, 78 - column).map((text, i) =>
      (i === 0 ? `  ${tag}`.padEnd(column) : " ".repeat(column)) + text
    )
  ).join("\n");
}

/**
 * --help's text. Made when asked for, not at import: laying out the option
 * table costs about 0.5 ms of every start.
 */
export function helpText(): string {
  return `${USAGE}

Put TCP sockets into repair mode (TCP_REPAIR) on behalf of passt, for the
live migration of a VM's TCP connections.

PATH is passt's repair socket (its --repair-path), or a directory in which a
socket whose name ends in ".repair" will appear.

Options:
${optionLines()}

Exit status: 0 when passt closed the connection, 1 on failure, 2 on usage
errors (including a PATH that is not a socket).`;
}

/** What the command line asks for */
export type Invocation =
  | { readonly action: "help" }
  | { readonly action: "version" }
  | {
    readonly action: "check";
    readonly verbose: boolean;
    /** --seccomp-kill: a refused system call kills instead of EPERM */
    readonly seccompKill: boolean;
  }
  | {
    readonly action: "run";
    readonly path: string;
    /** Seconds, or null for no limit (as upstream) */
    readonly timeout: number | null;
    readonly wait: boolean;
    readonly verbose: boolean;
    /** --seccomp-kill: a refused system call kills instead of EPERM */
    readonly seccompKill: boolean;
    /** Hold each socket's input while it is in repair mode (not --no-hold) */
    readonly hold: boolean;
  };

/** Parses SECONDS for --timeout: a finite, positive decimal number */
export function parseSeconds(text: string): number {
  if (!/^\s*-?(\d+(\.\d*)?|\.\d+)\s*$/.test(text)) {
    throw new UsageError(`--timeout needs a number of seconds, not "${text}"`);
  }
  const seconds = Number(text);
  if (!(seconds > 0) || !Number.isFinite(seconds)) {
    throw new UsageError(`--timeout needs a positive number of seconds, not "${text}"`);
  }
  return seconds;
}

/** The options given (booleans true, values as text) and the positionals */
interface Parsed {
  readonly values: Map<Name, string | true>;
  readonly positionals: string[];
}

function findLong(name: string): OptionSpec | undefined {
  return OPTIONS.find((o) => o.long === name);
}

function findShort(letter: string): OptionSpec | undefined {
  return OPTIONS.find((o) => "short" in o && o.short === letter);
}

/** Splits argv into options and positionals; the last of a repeated option wins */
function scan(args: readonly string[]): Parsed {
  const values = new Map<Name, string | true>();
  const positionals: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      const spec = findLong(name);
      if (spec === undefined) throw new UsageError(`Unknown option --${name}`);
      if (spec.value === undefined) {
        if (eq >= 0) throw new UsageError(`Option --${name} takes no value`);
        values.set(spec.long as Name, true);
      } else if (eq >= 0) {
        values.set(spec.long as Name, arg.slice(eq + 1));
      } else {
        // As getopt does: the next argument is the value, even if it starts
        // with "-", so that `--timeout -1` is told what is wrong with -1
        if (i + 1 >= args.length) throw new UsageError(`Option --${name} needs a value`);
        values.set(spec.long as Name, args[++i]!);
      }
      continue;
    }
    if (arg.startsWith("-") && arg !== "-") {
      // A group of short boolean options, e.g. -h
      for (const letter of arg.slice(1)) {
        const spec = findShort(letter);
        if (spec === undefined) throw new UsageError(`Unknown option -${letter}`);
        values.set(spec.long as Name, true);
      }
      continue;
    }
    positionals.push(arg);
  }
  return { values, positionals };
}

/** Turns argv (without the program name) into an Invocation, or throws UsageError */
export function parseCommandLine(args: readonly string[]): Invocation {
  const { values, positionals } = scan(args);
  const flag = (name: Name) => values.get(name) === true;
  if (flag("help")) return { action: "help" };
  if (flag("version")) return { action: "version" };
  const verbose = flag("verbose");
  const timeout = values.get("timeout");
  if (flag("check")) {
    if (positionals.length > 0) throw new UsageError("--check takes no PATH");
    if (timeout !== undefined || flag("wait")) {
      throw new UsageError("--check cannot be combined with --timeout or --wait");
    }
    return { action: "check", verbose, seccompKill: flag("seccomp-kill") };
  }
  if (positionals.length === 0) throw new UsageError("Missing PATH");
  if (positionals.length > 1) {
    throw new UsageError(`Exactly one PATH expected, got ${positionals.length}`);
  }
  const path = positionals[0]!;
  if (path === "") throw new UsageError("PATH is empty");
  // Deno turns bytes that are not UTF-8 into U+FFFD: such a PATH would name
  // another file than the one given
  if (path.includes("\ufffd")) {
    throw new UsageError("PATH is not valid UTF-8 (Deno cannot pass such a path on)");
  }
  return {
    action: "run",
    path,
    timeout: typeof timeout === "string" ? parseSeconds(timeout) : null,
    wait: flag("wait"),
    verbose,
    seccompKill: flag("seccomp-kill"),
    hold: !flag("no-hold"),
  };
}
