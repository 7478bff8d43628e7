// Typed errors. Each carries the exit status the program ends with, so only
// main.ts decides how to print and exit, and every failure is exactly one line.

import { ERRNO } from "./errno_table.ts";

/** Exit statuses (passt-repair(1), EXIT STATUS): 0 on EOF, 1 on failure, 2 on usage error */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** "No such file or directory (ENOENT)": errno as text and symbol, never bare */
export function describeErrno(errno: number): string {
  const known = ERRNO.get(errno);
  if (known === undefined) return `Unknown error ${errno} (errno ${errno})`;
  return `${known[1]} (${known[0]})`;
}

// The errno values the program tests for by name (asm-generic/errno-base.h
// and asm-generic/errno.h, the same on x86_64 and aarch64)
export const EPERM = 1;
export const ENOENT = 2;
export const EINTR = 4;
export const EIO = 5;
export const EAGAIN = 11;
export const EACCES = 13;
export const EINVAL = 22;
export const ENOSYS = 38;
export const ECONNRESET = 104;
export const ECONNREFUSED = 111;

/** Symbolic name of an errno, e.g. "ECONNREFUSED" */
export function errnoName(errno: number): string {
  return ERRNO.get(errno)?.[0] ?? `errno ${errno}`;
}

/** Base class: a one-line message and the exit status that goes with it */
export class PasstRepairError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** Bad command line: exit 2, and main.ts adds the usage line */
export class UsageError extends PasstRepairError {
  constructor(message: string) {
    super(message, EXIT_USAGE);
  }
}

/** PATH, or the entry found in a directory, exists but is not a socket */
export class NotASocketError extends PasstRepairError {
  constructor(readonly path: string) {
    super(`${path} is not a socket`, EXIT_USAGE);
  }
}

/**
 * PATH's last component is a symbolic link: the socket itself must be named,
 * so that whoever can write next to it cannot point the helper elsewhere
 */
export class SymlinkRefusedError extends PasstRepairError {
  constructor(readonly shown: string) {
    super(
      `${shown} is a symbolic link: name the socket itself (links are refused, ` +
        "see SECURITY in passt-repair(1))",
      EXIT_USAGE,
    );
  }
}

/**
 * A system call failed. `context` is the upstream-style lead-in, for example
 * "Failed to connect to /run/passt.repair"; the errno text follows it.
 */
export class SyscallError extends PasstRepairError {
  readonly errnoName: string;
  constructor(
    readonly syscall: string,
    readonly errno: number,
    context: string,
    hint = "",
  ) {
    super(
      `${context}: ${describeErrno(errno)}${hint === "" ? "" : `; ${hint}`}`,
      EXIT_FAILURE,
    );
    this.errnoName = errnoName(errno);
  }
}

/**
 * A native wrapper's result (a value, or -errno) as a value: returns `r` when
 * it is not negative, else throws a SyscallError for `syscall` with errno -r,
 * led by `context` (and followed by `hint`, if any)
 */
export function check(r: number, syscall: string, context: string, hint = ""): number {
  if (r < 0) throw new SyscallError(syscall, -r, context, hint);
  return r;
}

/** The peer sent something that is not a valid command message */
export class ProtocolError extends PasstRepairError {
  constructor(message: string) {
    super(message, EXIT_FAILURE);
  }
}

/** Waiting for the socket (to appear, or to accept) took longer than --timeout */
export class TimeoutError extends PasstRepairError {
  constructor(readonly seconds: number, readonly awaited: string) {
    super(`Timed out after ${seconds} s waiting for ${awaited}`, EXIT_FAILURE);
  }
}

/** Any other runtime failure worth one line and exit 1 */
export class RuntimeFailure extends PasstRepairError {
  constructor(message: string) {
    super(message, EXIT_FAILURE);
  }
}
