// Command line parsing. Pure: takes the argument list, returns what to do.
//
// Upstream has no options at all, so none of ours may change what a plain
// `passt-repair PATH` does.

import { parseArgs } from "node:util";
import { UsageError } from "./errors.ts";

export const USAGE =
  "Usage: passt-repair [--timeout SECONDS] [--wait] [--verbose] [--seccomp-kill] [--] PATH\n" +
  "       passt-repair --check | --help | --version";

export const HELP = `${USAGE}

Put TCP sockets into repair mode (TCP_REPAIR) on behalf of passt, for the
live migration of a VM's TCP connections.

PATH is passt's repair socket (its --repair-path), or a directory in which a
socket whose name ends in ".repair" will appear.

Options:
  -h, --help           show this help and exit
      --version        show the version and exit
      --timeout SECONDS  give up waiting for the socket to appear or to accept
                       connections after SECONDS (fractions allowed); does not
                       limit the time spent connected
      --wait           PATH names a socket that may not exist yet: wait for
                       exactly that name to appear in its directory
      --verbose        log each event on stderr (peer, commands, timings)
      --seccomp-kill   a system call the seccomp filters refuse kills the
                       process instead of failing with EPERM
      --check          only report whether this process may set TCP_REPAIR
                       (exit 0 if it may, 1 if not)
      --               end of options, for a PATH that starts with "-"

Exit status: 0 when passt closed the connection, 1 on failure, 2 on usage
errors (including a PATH that is not a socket).`;

/** What the command line asks for */
export type Invocation =
  | { readonly action: "help" }
  | { readonly action: "version" }
  | { readonly action: "check"; readonly verbose: boolean; readonly seccompKill: boolean }
  | {
    readonly action: "run";
    readonly path: string;
    /** Seconds, or null for no limit (as upstream) */
    readonly timeout: number | null;
    readonly wait: boolean;
    readonly verbose: boolean;
    /** Refuse by SECCOMP_RET_KILL_PROCESS instead of EPERM */
    readonly seccompKill: boolean;
  };

/** Parses SECONDS for --timeout: a finite, positive decimal number */
export function parseSeconds(text: string): number {
  if (!/^\s*(\d+(\.\d*)?|\.\d+)\s*$/.test(text)) {
    throw new UsageError(`--timeout needs a number of seconds, not "${text}"`);
  }
  const seconds = Number(text);
  if (!(seconds > 0) || !Number.isFinite(seconds)) {
    throw new UsageError(`--timeout needs a positive number of seconds, not "${text}"`);
  }
  return seconds;
}

/** Turns argv (without the program name) into an Invocation, or throws UsageError */
export function parseCommandLine(args: readonly string[]): Invocation {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      allowPositionals: true,
      strict: true,
      options: {
        help: { type: "boolean", short: "h" },
        version: { type: "boolean" },
        timeout: { type: "string" },
        wait: { type: "boolean" },
        verbose: { type: "boolean" },
        check: { type: "boolean" },
        "seccomp-kill": { type: "boolean" },
      },
    });
  } catch (e) {
    // node:util's messages are long and talk about its own API; say it our way
    throw usageFromParseArgs(e);
  }
  const { values, positionals } = parsed;
  if (values.help) return { action: "help" };
  if (values.version) return { action: "version" };
  const verbose = values.verbose === true;
  const seccompKill = values["seccomp-kill"] === true;
  if (values.check) {
    if (positionals.length > 0) throw new UsageError("--check takes no PATH");
    if (values.timeout !== undefined || values.wait) {
      throw new UsageError("--check cannot be combined with --timeout or --wait");
    }
    return { action: "check", verbose, seccompKill };
  }
  if (positionals.length === 0) throw new UsageError("Missing PATH");
  if (positionals.length > 1) {
    throw new UsageError(`Exactly one PATH expected, got ${positionals.length}`);
  }
  const path = positionals[0]!;
  if (path === "") throw new UsageError("PATH is empty");
  return {
    action: "run",
    path,
    timeout: values.timeout === undefined ? null : parseSeconds(values.timeout),
    wait: values.wait === true,
    verbose,
    seccompKill,
  };
}

function usageFromParseArgs(e: unknown): UsageError {
  const message = e instanceof Error ? e.message : String(e);
  const code = (e as { code?: unknown }).code;
  // "'-h, --help'" or "'--timeout <value>'": keep the long spelling only
  const quoted = /'([^']+)'/.exec(message)?.[1] ?? "";
  const option = quoted.replace(/ <value>$/, "").split(", ").pop() ?? quoted;
  if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
    return new UsageError(`Unknown option ${option}`);
  }
  if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
    return new UsageError(
      /missing/.test(message)
        ? `Option ${option} needs a value`
        : `Option ${option} takes no value`,
    );
  }
  return new UsageError(message.split("\n")[0] ?? message);
}
