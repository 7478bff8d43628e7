// Connecting to passt's socket, retrying ECONNREFUSED with a back-off while
// passt has bound but not yet listened. locate.ts decides what to connect to.
//
// Native calls go through ffi/libc.ts; the decisions come from path.ts.

import { AF_UNIX, SOCK_CLOEXEC, SOCK_STREAM } from "./abi.ts";
import type { Deadline } from "./deadline.ts";
import { SyscallError } from "./errors.ts";
import * as libc from "./ffi/libc.ts";
import { sockaddrUn } from "./path.ts";
import type { SockaddrUn } from "./path.ts";

const EINTR = 4;
const ECONNREFUSED = 111;

/** First and largest pause between attempts while passt has not listened yet */
export const BACKOFF_FIRST_MS = 1;
export const BACKOFF_MAX_MS = 100;

/** The next pause: doubles from BACKOFF_FIRST_MS up to BACKOFF_MAX_MS */
export function nextBackoff(previousMs: number): number {
  return Math.min(BACKOFF_MAX_MS, Math.max(BACKOFF_FIRST_MS, previousMs * 2));
}

export interface ConnectOptions {
  /** Retry ECONNREFUSED (bound, not yet listening) instead of failing */
  readonly retryRefused: boolean;
  /** When retrying ends (--timeout) */
  readonly deadline: Deadline;
}

/** Sleeps in the kernel (poll with no descriptors), so waiting costs no CPU */
export function pause(ms: number): void {
  libc.poll(new Uint8Array(0), 0, Math.max(0, Math.ceil(ms)));
}

/**
 * Connects a new AF_UNIX stream socket to `path` and returns it. With
 * `retryRefused`, ECONNREFUSED is retried with a growing pause until the
 * deadline; every other error fails at once. `address` is built from `path`
 * unless given (a name relative to the working directory, for a path too long
 * for sun_path); messages always name `path`.
 */
export function connectUnix(
  path: string,
  options: ConnectOptions,
  address: SockaddrUn = sockaddrUn(path),
): number {
  let backoff = 0;
  for (;;) {
    const fd = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw new SyscallError("socket", -fd, "Failed to create a UNIX socket");
    let r: number;
    do r = libc.connect(fd, address.bytes, address.length); while (r === -EINTR);
    if (r === 0) return fd;
    libc.close(fd);
    if (r !== -ECONNREFUSED || !options.retryRefused) {
      throw new SyscallError("connect", -r, `Failed to connect to ${path}`);
    }
    backoff = nextBackoff(backoff);
    const left = options.deadline.remainingMs(
      `${path} to accept connections (Connection refused (ECONNREFUSED))`,
    );
    pause(left < 0 ? backoff : Math.min(backoff, left));
  }
}
