// passt-repair: put TCP sockets into repair mode on behalf of passt.
//
// Exit status: 0 when passt closes the connection (EOF) or resets it,
// 1 on any runtime failure, 2 on usage errors (SPEC section 3).
//
// This file is the only one that prints errors and decides the exit status;
// everything below it throws typed errors that carry their exit code.

import { checkCapability, describeRefusal } from "./src/capability.ts";
import { HELP, parseCommandLine, USAGE } from "./src/cli.ts";
import type { Invocation } from "./src/cli.ts";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, PasstRepairError, UsageError } from "./src/errors.ts";
import { growDescriptorTable, primeSession } from "./src/fd_table.ts";
import { peerCredentials } from "./src/ffi/libc.ts";
import { describeConfinement, describeHardening, lockDown } from "./src/harden.ts";
import { locateAndConnect } from "./src/locate.ts";
import { printError, printOut, warn } from "./src/log.ts";
import { commandName } from "./src/protocol.ts";
import { RepairSession } from "./src/repair.ts";
import { VERSION } from "./src/version.ts";

/** Runs the program; returns the exit status */
export function main(args: readonly string[]): number {
  let invocation: Invocation;
  try {
    invocation = parseCommandLine(args);
  } catch (e) {
    if (e instanceof UsageError) {
      printError(`${e.message}\n${USAGE}`);
      return EXIT_USAGE;
    }
    throw e;
  }
  if (invocation.action === "help") {
    printOut(HELP);
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

function execute(invocation: Exclude<Invocation, { action: "help" | "version" }>): number {
  const verbose = invocation.verbose;
  const log = verbose ? printError : () => {};

  // Ask, never prompt: an interactive permission prompt would hang a helper
  // started by KubeVirt or systemd.
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    printError(
      "passt-repair needs Deno's --allow-ffi permission (and no other): " +
        "deno run --allow-ffi main.ts PATH",
    );
    return EXIT_USAGE;
  }
  // Before any input is read: open libc, take every buffer address the
  // protocol needs while we may, harden the process (non-dumpable,
  // no_new_privs, seccomp on all threads), then revoke the ffi permission:
  // from here on no further native library can be loaded; the symbols
  // already bound keep working.
  const { channel, hardening, serving } = lockDown(Deno.build.arch, {
    kill: invocation.seccompKill,
  });
  log(describeHardening(hardening));

  const capability = checkCapability();
  if (invocation.action === "check") {
    if (capability.allowed) {
      log("TCP_REPAIR can be set: this process has CAP_NET_ADMIN");
      return EXIT_OK;
    }
    printError(describeRefusal(capability));
    return EXIT_FAILURE;
  }
  if (!capability.allowed) warn(describeRefusal(capability));

  growDescriptorTable();

  const session = new RepairSession(channel, {
    capable: capability.allowed,
    ...(verbose
      ? {
        onCommand: (cmd: number, sockets: number, micros: number) =>
          log(
            `${commandName(cmd)} for ${sockets} socket${sockets === 1 ? "" : "s"} in ${micros} µs`,
          ),
      }
      : {}),
  });
  // Warm the per-message code before passt can send anything
  primeSession(session);

  const { fd, path } = locateAndConnect(invocation.path, {
    wait: invocation.wait,
    timeout: invocation.timeout,
    warn,
    log,
  });
  channel.attach(fd);
  if (verbose) {
    const cred = peerCredentials(fd);
    log(
      typeof cred === "number"
        ? `connected to ${path}`
        : `connected to ${path} (peer pid ${cred.pid}, uid ${cred.uid}, gid ${cred.gid})`,
    );
  }
  // Before the first message: from here on, only what serving needs
  // (receive, set TCP_REPAIR, reply, close, stderr, exit, and the runtime's
  // own memory and thread calls); no file, no socket, no ioctl, no prctl.
  serving.install(fd);
  log(describeConfinement(serving));

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
