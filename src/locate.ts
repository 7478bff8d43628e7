// Finding passt's repair socket and connecting to it (SPEC section 4): the one
// entry point main.ts calls between startup and serving.
//
// PATH is used exactly as given: never canonicalised, never resolved through
// symlinks by us, ".." left to the kernel. It is a socket (connect to it), a
// directory (wait for a *.repair socket in it: watch.ts), or with --wait the
// name of a socket that may not exist yet (wait for exactly that name).
//
// A socket whose full path does not fit sun_path (108 bytes with the NUL) is
// reached through its directory: that directory becomes the working directory
// for the connect, the socket is addressed by its name alone, and the previous
// working directory is restored at once.

import { archOf, AT_FDCWD, O_CLOEXEC, O_PATH, oDirectory, STATX_TYPE } from "./abi.ts";
import { connectUnix } from "./connect.ts";
import { Deadline } from "./deadline.ts";
import type { ConnectOptions } from "./connect.ts";
import { NotASocketError, SocketNameTooLongError, SyscallError } from "./errors.ts";
import * as libc from "./ffi/libc.ts";
import {
  addressRoute,
  joinPath,
  kindOfMode,
  sockaddrUn,
  splitPath,
  SUN_PATH_LIMIT,
} from "./path.ts";
import { awaitSocket } from "./watch.ts";

const ENOENT = 2;

export interface LocateOptions {
  /** --wait: PATH names a socket that may not exist yet */
  readonly wait: boolean;
  /** --timeout in seconds, or null for no limit */
  readonly timeout: number | null;
  /** Prints a `warning:` line */
  readonly warn: (text: string) => void;
  /** Prints a --verbose line */
  readonly log: (text: string) => void;
}

/** The connection to passt, and the socket path it was made to */
export interface Located {
  readonly fd: number;
  readonly path: string;
}

/** What to do with PATH, decided from what stat() said about it */
export type Plan =
  | { readonly kind: "socket" }
  | { readonly kind: "directory" }
  | { readonly kind: "await-name"; readonly dir: string; readonly name: string }
  | { readonly kind: "not-a-socket" }
  | { readonly kind: "stat-failed"; readonly errno: number };

/**
 * Decides from `stat` (PATH's st_mode, or -errno) and --wait. A directory is
 * watched with or without --wait; with --wait a missing PATH, or one that is
 * not a socket yet, is waited for by name.
 */
export function planFor(path: string, stat: number, wait: boolean): Plan {
  if (stat >= 0) {
    const kind = kindOfMode(stat);
    if (kind === "socket") return { kind: "socket" };
    if (kind === "directory") return { kind: "directory" };
  }
  if (!wait || (stat < 0 && stat !== -ENOENT)) {
    return stat < 0 ? { kind: "stat-failed", errno: -stat } : { kind: "not-a-socket" };
  }
  const { dir, name } = splitPath(path);
  // "dir/" names a directory: there is no socket name to wait for
  if (name === "") return { kind: "stat-failed", errno: ENOENT };
  return { kind: "await-name", dir, name };
}

/**
 * Finds the socket PATH leads to, waiting for it as the options say, and
 * connects to it. Every descriptor opened on the way (inotify, directories)
 * is closed again; only the connection remains.
 */
export function locateAndConnect(path: string, options: LocateOptions): Located {
  const waiting = {
    deadline: Deadline.after(options.timeout),
    warn: options.warn,
    log: options.log,
  };
  const stat = libc.statMode(AT_FDCWD, path, 0, STATX_TYPE);
  const plan = planFor(path, stat, options.wait);
  switch (plan.kind) {
    case "stat-failed":
      throw new SyscallError("statx", plan.errno, `Can't stat() ${path}`);
    case "not-a-socket":
      throw new NotASocketError(path);
    case "socket": {
      const { dir, name } = splitPath(path);
      const retryRefused = options.wait || options.timeout !== null;
      return connectTo(path, dir, name, { retryRefused, ...waiting }, options.log);
    }
    case "directory": {
      const name = awaitSocket({ dir: path, name: null, ...waiting });
      const found = joinPath(path, name);
      options.log(`found ${found}`);
      return connectTo(found, path, name, { retryRefused: true, ...waiting }, options.log);
    }
    case "await-name": {
      // Say now, not after the wait, that the name can never be reached
      addressable(path, plan.name);
      awaitSocket({ dir: plan.dir, name: plan.name, ...waiting });
      return connectTo(path, plan.dir, plan.name, { retryRefused: true, ...waiting }, options.log);
    }
  }
}

/** How to address `name` (the last part of `path`); throws if no way fits */
function addressable(path: string, name: string): "direct" | "through-directory" {
  const route = addressRoute(path, name);
  if (route.kind === "too-long") {
    throw new SocketNameTooLongError(path, route.bytes, SUN_PATH_LIMIT);
  }
  return route.kind;
}

/** Connects to the socket `path`, which is `name` in `dir`, by the shortest route that fits */
function connectTo(
  path: string,
  dir: string,
  name: string,
  options: ConnectOptions,
  log: (text: string) => void,
): Located {
  if (addressable(path, name) === "direct") return { fd: connectUnix(path, options), path };
  log(`${path} does not fit sun_path: connecting to ${name} from within ${dir}`);
  const fd = inDirectory(dir, () => connectUnix(path, options, sockaddrUn(name, path)));
  return { fd, path };
}

/**
 * Runs `action` with `dir` as the working directory, then returns to the
 * previous one (so the helper never keeps the socket's directory busy).
 */
function inDirectory<T>(dir: string, action: () => T): T {
  const flags = O_PATH | O_CLOEXEC | oDirectory(archOf(Deno.build.arch) ?? "x86_64");
  const here = libc.openAt(AT_FDCWD, ".", flags);
  if (here < 0) {
    throw new SyscallError("openat", -here, "Can't open the working directory to return to it");
  }
  try {
    const there = libc.openAt(AT_FDCWD, dir, flags);
    if (there < 0) {
      throw new SyscallError("openat", -there, `Can't open directory ${dir} to connect from it`);
    }
    try {
      const r = libc.fchdir(there);
      if (r < 0) throw new SyscallError("fchdir", -r, `Can't change into directory ${dir}`);
      try {
        return action();
      } finally {
        libc.fchdir(here);
      }
    } finally {
      libc.close(there);
    }
  } finally {
    libc.close(here);
  }
}
