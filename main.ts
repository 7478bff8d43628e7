// passt-repair: put TCP sockets into repair mode on behalf of passt.
//
// Exit status: 0 when passt closes the connection (EOF) or resets it,
// 1 on any runtime failure, 2 on usage errors (passt-repair(1), EXIT STATUS).
//
// This file is the only one that prints errors and decides the exit status;
// everything below it throws typed errors that carry their exit code.

import { describeRefusal } from "./src/capability.ts";
import { helpText, parseCommandLine, USAGE } from "./src/cli.ts";
import type { Invocation } from "./src/cli.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PasstRepairError, UsageError } from "./src/errors.ts";
import { connectAtOnce, locateAndConnect } from "./src/locate.ts";
import { printError, printErrorText, printOut, warn } from "./src/log.ts";
import { start } from "./src/startup.ts";
import { VERSION } from "./src/version.ts";

/** Runs the program; returns the exit status */
export function main(args: readonly string[]): number {
  let invocation: Invocation;
  try {
    invocation = parseCommandLine(args);
  } catch (e) {
    if (e instanceof UsageError) {
      printError(e.message);
      printErrorText(USAGE);
      return EXIT_USAGE;
    }
    throw e;
  }
  if (invocation.action === "help") {
    printOut(helpText());
    return EXIT_OK;
  }
  if (invocation.action === "version") {
    printOut(`passt-repair ${VERSION} (Deno ${Deno.version.deno})`);
    return EXIT_OK;
  }
  try {
    return execute(invocation);
  } catch (e) {
    if (e instanceof PasstRepairError) {
      printError(e.message);
      return e.exitCode;
    }
    // A bug, not an operator's problem: still one line, still exit 1
    printError(`Internal error: ${e instanceof Error ? e.message : String(e)}`);
    return EXIT_FAILURE;
  }
}

/** parse -> start -> locate -> serve; the order inside start is src/startup.ts's */
function execute(invocation: Exclude<Invocation, { action: "help" | "version" }>): number {
  const log = invocation.verbose ? printError : () => {};
  const started = start({
    log,
    warn,
    verbose: invocation.verbose,
    hold: invocation.action === "run" ? invocation.hold : null,
    seccompKill: invocation.seccompKill,
    ...(invocation.action === "run" ? { connectAtOnce: () => connectAtOnce(invocation.path) } : {}),
  });
  const capability = started.capability;
  if (invocation.action === "check") {
    if (!capability.allowed) {
      printError(describeRefusal(capability));
      return EXIT_FAILURE;
    }
    log("TCP_REPAIR can be set: this process has CAP_NET_ADMIN");
    return EXIT_OK;
  }
  if (!capability.allowed) warn(describeRefusal(capability));

  const located = started.early ?? locateAndConnect(invocation.path, {
    wait: invocation.wait,
    timeout: invocation.timeout,
    warn,
    log,
  });
  const session = started.connected(located);
  const end = session.serve();
  const n = session.commands;
  log(
    `peer ${end === "eof" ? "closed" : "reset"} the connection after ${n} command${
      n === 1 ? "" : "s"
    }`,
  );
  return EXIT_OK;
}

if (import.meta.main) {
  Deno.exit(main(Deno.args));
}
