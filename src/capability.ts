// The startup capability check: may this process set TCP_REPAIR at all?
//
// A throwaway TCP socket is enough to find out. A refusal is only a warning
// when serving passt (its sockets may live in a namespace where we are
// allowed), and the whole answer for --check.

import { AF_INET, SOCK_CLOEXEC, SOCK_STREAM } from "./abi.ts";
import { describeErrno } from "./errors.ts";
import * as libc from "./ffi/libc.ts";
import { type HoldNative, tryHold } from "./hold.ts";

/** The outcome: allowed, or the errno that refused it and where */
export type CapabilityResult =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly step: "socket" | "setsockopt"; readonly errno: number };

/** How to grant the capability, for messages */
const HOW_TO_GRANT = "run as root, or better grant that capability alone: " +
  "setcap cap_net_admin+ep on the compiled binary, or as an ambient capability " +
  "(systemd AmbientCapabilities=CAP_NET_ADMIN, or setpriv --inh-caps=+net_admin " +
  "--ambient-caps=+net_admin)";

/** Tries TCP_REPAIR on a fresh, unconnected TCP socket */
export function checkCapability(): CapabilityResult {
  const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return { allowed: false, step: "socket", errno: -fd };
  const r = libc.setTcpRepair(fd, 1);
  libc.close(fd);
  if (r < 0) return { allowed: false, step: "setsockopt", errno: -r };
  return { allowed: true };
}

/** One line explaining a refusal */
export function describeRefusal(result: CapabilityResult): string {
  if (result.allowed) return "TCP_REPAIR can be set";
  if (result.step === "socket") {
    return `Can't create a TCP socket to test TCP_REPAIR: ${describeErrno(result.errno)}`;
  }
  return `Setting TCP_REPAIR on a test socket failed: ${
    describeErrno(result.errno)
  }; this process lacks CAP_NET_ADMIN; to grant it, ${HOW_TO_GRANT}`;
}

/**
 * Tries the input hold on a fresh, unconnected TCP socket: null if it works,
 * else one phrase saying what failed (no capability is needed for it)
 */
export function checkHold(native: HoldNative): string | null {
  const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return `socket: ${describeErrno(-fd)}`;
  try {
    return tryHold(native, fd);
  } finally {
    libc.close(fd);
  }
}
