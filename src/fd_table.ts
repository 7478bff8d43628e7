// Growing the descriptor table before the first message.

import { AF_INET, SOCK_CLOEXEC, SOCK_STREAM } from "./abi.ts";
import * as libc from "./ffi/libc.ts";
import type { RepairSession } from "./repair.ts";

/** The table is grown to hold at least this descriptor number */
export const PREGROW_FD = 1023;

/**
 * Makes the kernel grow this process's descriptor table now, before any
 * message arrives. Receiving many descriptors grows it otherwise, and in a
 * multi-threaded process (Deno is one) growing waits for an RCU grace period:
 * 10-23 ms on the first 253-socket message instead of under 1 ms.
 *
 * F_DUPFD_CLOEXEC takes the lowest free number >= PREGROW_FD, so unlike dup2()
 * it never closes a descriptor we inherited there. Failure (a descriptor limit
 * of 1024 or less) only forgoes the speed-up. Returns the number used, or -errno.
 */
export function growDescriptorTable(): number {
  const fd = libc.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fd;
  const high = libc.dupAtLeast(fd, PREGROW_FD);
  if (high >= 0) libc.close(high);
  libc.close(fd);
  return high;
}

/** RepairSession.prime() on a throwaway TCP socket, closed after */
export function primeSession(session: RepairSession): void {
  const spare = libc.socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (spare < 0) return;
  try {
    session.prime(spare);
  } finally {
    libc.close(spare);
  }
}
