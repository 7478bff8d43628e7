// From PATH to a connected, checked socket to passt: the one entry point
// main.ts calls between startup and serving (docs/directory-mode.md).
//
// PATH is used exactly as given: never canonicalised, ".." left to the
// kernel, links in its directory part followed by the kernel (KubeVirt points
// a short link at a long directory). It is a socket (connect to it), a
// directory (wait for a *.repair socket in it), or with --wait the name of a
// socket that may not exist yet (wait for exactly that name).
//
// Nobody but passt steers the helper (docs/security.md):
//   - the socket itself is never reached through a symbolic link. The entry
//     is opened with O_PATH | O_NOFOLLOW, checked on that descriptor, and
//     connected through /proc/self/fd/N, so the file checked is the file
//     connected to, whatever happens to its name in between. That path
//     always fits sun_path, so socket paths of any length are reached;
//   - the peer that accepts (SO_PEERCRED) must run as the owner of the
//     socket file;
//   - connect() never blocks: a full backlog is retried like a refusal, and
//     --timeout bounds every wait;
//   - one bad entry never ends or stalls a directory wait (candidates.ts),
//     and warnings about skipped entries are bounded (warnings.ts).

import {
  AF_UNIX,
  archOf,
  AT_FDCWD,
  O_CLOEXEC,
  O_PATH,
  oDirectory,
  oNoFollow,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
} from "./abi.ts";
import { type Candidate, CandidateSet, MAX_REFUSING, nextBackoff } from "./candidates.ts";
import { Deadline } from "./deadline.ts";
import {
  check,
  describeErrno,
  EAGAIN,
  ECONNREFUSED,
  EINTR,
  ENOENT,
  NotASocketError,
  PasstRepairError,
  RuntimeFailure,
  SymlinkRefusedError,
  SyscallError,
} from "./errors.ts";
import * as libc from "./ffi/libc.ts";
import type { FileStatus, PeerCredentials } from "./ffi/libc.ts";
import {
  cName,
  cPath,
  joinPath,
  kindOfMode,
  procFdPath,
  show,
  showBytes,
  sockaddrUn,
  splitPath,
} from "./path.ts";
import { WarningBudget } from "./warnings.ts";
import { DirectoryWatch, isRepairName, REPAIR_SUFFIX, sameName } from "./watch.ts";

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

/** The connection to passt, the socket it was made to (shown), and who accepted */
export interface Located {
  readonly fd: number;
  readonly shown: string;
  readonly peer: PeerCredentials;
}

/** What to do with PATH, decided from what stat() said about it */
export type Plan =
  | { readonly kind: "socket" }
  | { readonly kind: "directory" }
  | { readonly kind: "await-name"; readonly dir: string; readonly name: string }
  | { readonly kind: "not-a-socket" }
  | { readonly kind: "stat-failed"; readonly errno: number };

/**
 * Decides from `stat` (PATH's st_mode, links followed, or -errno) and --wait.
 * A directory is watched with or without --wait; with --wait a missing PATH,
 * or one that is not a socket yet, is waited for by name.
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
 * Whether the peer that accepted may serve the helper: it must run as the
 * owner of the socket file connected to, unless root owns the file. Only
 * root can make a root-owned file, and passt started as root does exactly
 * that: it binds its sockets as root, then drops to nobody before it
 * listens (SO_PEERCRED reports the listener's credentials at listen()).
 * This proves that whoever listens is the user who made the socket file,
 * or someone root handed it to; it cannot prove that the process is passt
 * (docs/security.md says what it does not stop).
 */
export function peerMayServe(peerUid: number, ownerUid: number): boolean {
  return peerUid !== NO_PEER_UID && (peerUid === ownerUid || ownerUid === 0);
}

/**
 * The uid SO_PEERCRED gives for a socket with no peer, (uid_t)-1: never a
 * peer, even on a root-owned socket (a connect() misread as done)
 */
const NO_PEER_UID = 0xffffffff;

/** The line for a peer that does not own the socket it listens on */
export function peerMismatch(shown: string, peer: PeerCredentials, ownerUid: number): string {
  return `${shown}: it belongs to uid ${ownerUid}, but the process accepting on it ` +
    `(pid ${peer.pid}) runs as uid ${peer.uid}`;
}

/**
 * Why a socket file is refused before any connect(), or null: a file with
 * more than one name may be a hard link to another user's socket (where
 * protected_hardlinks is off), which the owner check would not catch
 */
export function linkProblem(nlink: number): string | null {
  return nlink > 1
    ? `it has ${nlink} hard links, and a hard link may lead to another service's socket`
    : null;
}

/**
 * Finds the socket PATH leads to, waiting for it as the options say, connects
 * to it and checks who accepted. Every descriptor opened on the way (inotify,
 * directories, entries) is closed again; only the connection remains.
 */
export function locateAndConnect(path: string, options: LocateOptions): Located {
  const deadline = Deadline.after(options.timeout);
  const shown = show(path);
  const plan = planOf(path, options.wait);
  switch (plan.kind) {
    case "stat-failed":
      throw new SyscallError("statx", plan.errno, `Can't stat() ${shown}`);
    case "not-a-socket":
      throw new NotASocketError(shown);
    case "socket": {
      const { dir, name } = splitPath(path);
      const retryRefused = options.wait || options.timeout !== null;
      return connectSocketMode(dir, name, shown, { retryRefused, deadline }, options);
    }
    case "directory":
      return new DirectoryWait(path, null, deadline, options).run();
    case "await-name":
      return new DirectoryWait(plan.dir, plan.name, deadline, options).run();
  }
}

/** planFor() with PATH's status as it is now (links followed) */
function planOf(path: string, wait: boolean): Plan {
  const status = libc.statx(AT_FDCWD, cPath(path), 0);
  return planFor(path, typeof status === "number" ? status : status.mode, wait);
}

// ---- one entry: open it without following it, connect through it ----

const ARCH = archOf(Deno.build.arch) ?? "x86_64";
const O_DIR_PATH = O_PATH | O_CLOEXEC | oDirectory(ARCH);
const O_ENTRY_PATH = O_PATH | O_CLOEXEC | oNoFollow(ARCH);

/** An entry opened with O_PATH | O_NOFOLLOW: the descriptor and what it is */
interface OpenEntry {
  readonly fd: number;
  readonly status: FileStatus;
  /** Identity of the directory it was opened in */
  readonly dirIdentity: string;
}

/**
 * Opens `name` (NUL-terminated) in `dir` without following it if it is a
 * link (the directory part may be one): the entry, or -errno.
 */
function openEntry(dir: string, name: Uint8Array): OpenEntry | number {
  const dirfd = libc.openAt(AT_FDCWD, cPath(dir), O_DIR_PATH);
  if (dirfd < 0) return dirfd;
  try {
    const dirStatus = libc.statx(dirfd, null, 0);
    if (typeof dirStatus === "number") return dirStatus;
    const fd = libc.openAt(dirfd, name, O_ENTRY_PATH);
    if (fd < 0) return fd;
    const status = libc.statx(fd, null, 0);
    if (typeof status === "number") {
      libc.close(fd);
      return status;
    }
    return { fd, status, dirIdentity: dirStatus.identity };
  } finally {
    libc.close(dirfd);
  }
}

/**
 * A new socket connected to the socket file open as `entry`, through
 * /proc/self/fd: the descriptor (blocking again), or -errno. Never blocks:
 * a full backlog answers EAGAIN at once.
 */
function connectThrough(entry: number): number {
  const fd = check(
    libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0),
    "socket",
    "Failed to create a UNIX socket",
  );
  const address = sockaddrUn(procFdPath(entry));
  let r: number;
  do r = libc.connect(fd, address.bytes, address.length); while (r === -EINTR);
  if (r === 0) r = libc.makeBlocking(fd);
  if (r < 0) {
    libc.close(fd);
    return r;
  }
  return fd;
}

/** Why connect() failed, for the one line */
function connectFailure(errno: number, shown: string): SyscallError {
  return new SyscallError("connect", errno, `Failed to connect to ${shown}`);
}

/**
 * connect() through /proc/self/fd/N can fail with ENOENT only when that path
 * does not resolve (the socket file is open as N): /proc is not there, which
 * no other entry would change, so it ends the run in every mode
 */
function noProc(shown: string): SyscallError {
  return new SyscallError(
    "connect",
    ENOENT,
    `Failed to connect to ${shown} through /proc/self/fd`,
    "the helper needs /proc mounted to connect to the very file it checked",
  );
}

/** Whether a connect() error means "not yet": bound but not listening, or backlog full */
function notYet(errno: number): boolean {
  return errno === ECONNREFUSED || errno === EAGAIN;
}

/** What the wait for a refusing socket says it waits for */
function acceptance(shown: string, errno: number): string {
  return `${shown} to accept connections (${describeErrno(errno)})`;
}

/** Sleeps in the kernel (poll with no descriptors), so waiting costs no CPU */
function pause(ms: number): void {
  libc.poll(new Uint8Array(0), 0, Math.max(0, Math.ceil(ms)));
}

/** The connection's peer, checked against the owner of the file connected to */
function checkedPeer(fd: number, owner: number, shown: string): PeerCredentials | string {
  const peer = libc.peerCredentials(fd);
  if (typeof peer === "number") {
    return `Can't read the credentials of the process accepting on ${shown}: ${
      describeErrno(-peer)
    }`;
  }
  return peerMayServe(peer.uid, owner) ? peer : peerMismatch(shown, peer, owner);
}

// ---- socket mode ----

interface SocketModeOptions {
  /** Retry ECONNREFUSED (bound, not yet listening) instead of failing */
  readonly retryRefused: boolean;
  readonly deadline: Deadline;
}

/**
 * Connects to the socket `name` in `dir`. A symbolic link there is refused
 * (exit 2), and so is a file with several hard links (exit 1); ECONNREFUSED
 * fails at once unless `retryRefused`; a full backlog is retried. The entry
 * is opened again for each attempt: passt may replace it, and with --wait a
 * name gone meanwhile is waited for again.
 */
function connectSocketMode(
  dir: string,
  name: string,
  shown: string,
  options: SocketModeOptions,
  locate: LocateOptions,
): Located {
  let backoff = 0;
  for (;;) {
    const tried = attemptSocket(dir, name, shown);
    if (tried.kind === "connected") return tried.located;
    if (tried.kind === "refused") throw tried.error;
    if (tried.kind === "open-failed") {
      if (tried.errno === ENOENT && locate.wait) {
        // passt replaced its socket (unlink, then bind): wait for the name again
        locate.log(`${shown} is gone: waiting for it to appear again`);
        return new DirectoryWait(dir, name, options.deadline, locate).run();
      }
      throw new SyscallError("openat", tried.errno, `Can't stat() ${shown}`);
    }
    const errno = tried.errno;
    if (errno === ENOENT) throw noProc(shown);
    if (!notYet(errno) || (errno === ECONNREFUSED && !options.retryRefused)) {
      throw connectFailure(errno, shown);
    }
    if (backoff === 0) locate.log(`${shown}: ${describeErrno(errno)}, retrying`);
    backoff = nextBackoff(backoff);
    const left = options.deadline.remainingMs(acceptance(shown, errno));
    pause(left < 0 ? backoff : Math.min(backoff, left));
  }
}

/** One try at socket mode's connection: what came of it */
type SocketAttempt =
  | { readonly kind: "connected"; readonly located: Located }
  /** The entry could not be opened (-errno negated) */
  | { readonly kind: "open-failed"; readonly errno: number }
  /** connect() failed (errno): perhaps only "not yet" */
  | { readonly kind: "connect-failed"; readonly errno: number }
  /** The entry or its peer is refused for good */
  | { readonly kind: "refused"; readonly error: PasstRepairError };

/**
 * Opens `name` in `dir` without following it, checks the file (a socket,
 * one link), connects through it and checks the peer. Every descriptor but
 * a checked connection is closed again.
 */
function attemptSocket(dir: string, name: string, shown: string): SocketAttempt {
  const entry = openEntry(dir, cPath(name));
  if (typeof entry === "number") return { kind: "open-failed", errno: -entry };
  let fd: number;
  try {
    const type = entry.status.mode & S_IFMT;
    if (type === S_IFLNK) return { kind: "refused", error: new SymlinkRefusedError(shown) };
    if (kindOfMode(entry.status.mode) !== "socket") {
      return { kind: "refused", error: new NotASocketError(shown) };
    }
    const links = linkProblem(entry.status.nlink);
    if (links !== null) {
      return { kind: "refused", error: new RuntimeFailure(`Refusing ${shown}: ${links}`) };
    }
    fd = connectThrough(entry.fd);
  } finally {
    libc.close(entry.fd);
  }
  if (fd < 0) return { kind: "connect-failed", errno: -fd };
  const peer = checkedPeer(fd, entry.status.uid, shown);
  if (typeof peer === "string") {
    libc.close(fd);
    return { kind: "refused", error: new RuntimeFailure(`Refusing ${peer}`) };
  }
  return { kind: "connected", located: { fd, shown, peer } };
}

/**
 * Socket mode's first try, made before hardening (src/startup.ts): when
 * PATH is a socket now that accepts and passes every check, the checked
 * connection; otherwise null, and locateAndConnect() starts over, hardened,
 * and reports what it finds. It reads nothing but the file's status and the
 * peer's credentials, and needs only libc's connect symbols.
 */
export function connectAtOnce(path: string): Located | null {
  if (planOf(path, false).kind !== "socket") return null;
  const { dir, name } = splitPath(path);
  try {
    const tried = attemptSocket(dir, name, show(path));
    return tried.kind === "connected" ? tried.located : null;
  } catch (e) {
    // socket() failed: the hardened attempt will say so
    if (e instanceof PasstRepairError) return null;
    throw e;
  }
}

// ---- directory mode and --wait ----

/** Names shown in one line about several sockets: at most this many */
const NAMES_SHOWN = 8;

function listNames(names: readonly Uint8Array[]): string {
  const shown = names.slice(0, NAMES_SHOWN).map(showBytes).join(", ");
  return names.length > NAMES_SHOWN ? `${shown} and ${names.length - NAMES_SHOWN} more` : shown;
}

/** The kind of file st_mode describes, in words */
export function fileTypeName(mode: number): string {
  switch (mode & S_IFMT) {
    case S_IFSOCK:
      return "socket";
    case S_IFREG:
      return "regular file";
    case S_IFDIR:
      return "directory";
    case S_IFIFO:
      return "FIFO";
    case S_IFLNK:
      return "symbolic link";
    case S_IFCHR:
      return "character device";
    case S_IFBLK:
      return "block device";
    default:
      return `file of unknown type ${(mode & S_IFMT).toString(8)}`;
  }
}

/**
 * Waits in `dir` for any *.repair socket (`name` null) or for exactly `name`,
 * and connects to the first candidate that accepts and passes the checks.
 */
class DirectoryWait {
  readonly #dir: string;
  readonly #exact: Uint8Array | null;
  readonly #deadline: Deadline;
  readonly #log: (text: string) => void;
  readonly #warnings: WarningBudget;
  /** --verbose lines about candidates: as many as there may be warnings */
  readonly #notes: WarningBudget;
  readonly #candidates = new CandidateSet();
  /** Sockets set aside as ambiguous at start, for the timeout's message */
  #ambiguous: Uint8Array[] = [];
  /** The last refusal seen, for the timeout's message */
  #refused: { shown: string; errno: number } | null = null;
  #watch: DirectoryWatch | null = null;

  constructor(dir: string, name: string | null, deadline: Deadline, options: LocateOptions) {
    this.#dir = dir;
    this.#exact = name === null ? null : new TextEncoder().encode(name);
    this.#deadline = deadline;
    this.#log = options.log;
    this.#warnings = new WarningBudget(options.warn);
    this.#notes = new WarningBudget(options.log);
  }

  run(): Located {
    const exact = this.#exact;
    const wanted = exact === null ? isRepairName : (n: Uint8Array) => sameName(n, exact);
    const watch = new DirectoryWatch(this.#dir, wanted, this.#log);
    this.#watch = watch;
    try {
      this.#start(watch.list());
      this.#log(`waiting for ${this.#awaited()}`);
      return this.#loop(watch);
    } finally {
      watch.close();
      this.#warnings.flush();
      this.#notes.flush();
    }
  }

  #shown(name: Uint8Array): string {
    return joinPath(show(this.#dir), showBytes(name));
  }

  /** What is there before any event: one socket is used, several are ambiguous */
  #start(names: readonly Uint8Array[]): void {
    const now = performance.now();
    if (this.#exact !== null || names.length <= 1) {
      for (const name of names) this.#add(name, now);
      return;
    }
    // Several *.repair entries: those that are sockets make the directory
    // ambiguous; the others are skipped as usual
    const sockets: { name: Uint8Array; identity: string }[] = [];
    for (const name of names) {
      const entry = openEntry(this.#dir, cName(name));
      if (typeof entry === "number") {
        this.#skipFailed(name, -entry);
        continue;
      }
      libc.close(entry.fd);
      if (kindOfMode(entry.status.mode) === "socket") {
        sockets.push({ name, identity: entry.status.identity });
      } else {
        this.#skipKind(name, entry.status.mode);
      }
    }
    if (sockets.length <= 1) {
      for (const s of sockets) this.#add(s.name, now);
      return;
    }
    for (const s of sockets) this.#candidates.setAside(s.identity);
    this.#ambiguous = sockets.map((s) => s.name);
    this.#warnings.warn(
      `${sockets.length} sockets named *${REPAIR_SUFFIX} in ${show(this.#dir)}, ignoring them ` +
        `all as ambiguous (${listNames(this.#ambiguous)}); waiting for a new one`,
      "ambiguous",
    );
  }

  #add(name: Uint8Array, now: number): void {
    this.#candidates.add(name, now);
  }

  /** A --verbose line about one candidate, bounded like the warnings */
  #note(text: string, reason: string): void {
    this.#notes.warn(text, reason);
  }

  #loop(watch: DirectoryWatch): Located {
    for (;;) {
      const now = performance.now();
      for (const candidate of this.#candidates.due(now)) {
        const found = this.#attempt(candidate, now);
        if (found !== null) return found;
      }
      const left = this.#deadline.remainingMs(this.#awaited());
      const next = this.#candidates.nextDueIn(performance.now());
      const wait = next === null
        ? left
        : left < 0
        ? Math.ceil(next)
        : Math.min(left, Math.ceil(next));
      for (const step of watch.next(wait)) {
        switch (step.kind) {
          case "entry":
            this.#add(step.name, performance.now());
            break;
          case "rescan":
            this.#log(`inotify queue overflowed: listing ${show(this.#dir)} again`);
            for (const name of watch.list()) this.#add(name, performance.now());
            break;
          case "gone":
            throw this.#gone(step.reason);
          case "recheck":
            if (!watch.stillThere()) throw this.#gone(step.reason);
            break;
        }
      }
    }
  }

  /** One attempt at `candidate`: the connection, or null (retry later, or dropped) */
  #attempt(candidate: Candidate, now: number): Located | null {
    const { name } = candidate;
    const entry = openEntry(this.#dir, cName(name));
    if (typeof entry === "number") {
      this.#candidates.drop(candidate);
      // A socket that refused before and is gone now is simply gone
      if (candidate.backoffMs === 0 || entry !== -ENOENT) this.#skipFailed(name, -entry);
      return null;
    }
    let fd: number;
    try {
      if (entry.dirIdentity !== this.#watch!.identity) {
        // PATH names another directory now: the watch will say so
        this.#candidates.drop(candidate);
        return null;
      }
      const { mode, identity } = entry.status;
      if (kindOfMode(mode) !== "socket") {
        this.#candidates.drop(candidate);
        this.#skipKind(name, mode);
        return null;
      }
      if (this.#candidates.isSetAside(identity)) {
        this.#candidates.drop(candidate);
        this.#note(`${this.#shown(name)} was set aside before: skipping it`, "set aside");
        return null;
      }
      const links = linkProblem(entry.status.nlink);
      if (links !== null) {
        this.#candidates.drop(candidate);
        this.#candidates.setAside(identity);
        this.#warnings.warn(`skipping ${this.#shown(name)}: ${links}`, "hard links");
        return null;
      }
      fd = connectThrough(entry.fd);
      if (fd === -ENOENT) throw noProc(this.#shown(name));
      if (fd < 0 && notYet(-fd)) {
        if (candidate.backoffMs === 0) {
          this.#note(
            `${this.#shown(name)}: ${describeErrno(-fd)}, retrying`,
            `refused: ${describeErrno(-fd)}`,
          );
        }
        this.#refused = { shown: this.#shown(name), errno: -fd };
        const forgotten = this.#candidates.retryLater(candidate, now);
        if (forgotten !== null) {
          this.#warnings.warn(
            `forgetting ${this.#shown(forgotten.name)}: more than ${MAX_REFUSING} sockets ` +
              "refuse connections, and it has refused longest",
            "too many refusing",
          );
        }
        return null;
      }
      this.#candidates.drop(candidate);
      if (fd < 0) {
        this.#candidates.setAside(identity);
        this.#warnings.warn(
          `skipping ${this.#shown(name)}: ${connectFailure(-fd, "it").message}`,
          `connect() failed: ${describeErrno(-fd)}`,
        );
        return null;
      }
      const shown = this.#shown(name);
      const peer = checkedPeer(fd, entry.status.uid, shown);
      if (typeof peer === "string") {
        libc.close(fd);
        this.#candidates.setAside(identity);
        this.#warnings.warn(`skipping ${peer}`, "not served by its owner");
        return null;
      }
      this.#log(`found ${shown}`);
      return { fd, shown, peer };
    } finally {
      libc.close(entry.fd);
    }
  }

  #skipKind(name: Uint8Array, mode: number): void {
    const type = fileTypeName(mode);
    this.#warnings.warn(
      (mode & S_IFMT) === S_IFLNK
        ? `skipping ${this.#shown(name)}: it is a symbolic link (links are refused: ` +
          "the socket itself must be in the directory)"
        : `skipping ${this.#shown(name)}: it is a ${type}, not a socket`,
      type,
    );
  }

  #skipFailed(name: Uint8Array, errno: number): void {
    if (errno === ENOENT) {
      this.#warnings.warn(
        `skipping ${this.#shown(name)}: it was removed before it could be checked`,
        "removed before it could be checked",
      );
    } else {
      this.#warnings.warn(
        `skipping ${this.#shown(name)}: Can't open it: ${describeErrno(errno)}`,
        `Can't open: ${describeErrno(errno)}`,
      );
    }
  }

  /** What the wait is for, in words, for --verbose and the timeout */
  #awaited(): string {
    const refused = this.#refused;
    if (refused !== null && this.#candidates.size > 0) {
      return acceptance(refused.shown, refused.errno);
    }
    if (this.#exact !== null) return `${this.#shown(this.#exact)} to appear`;
    if (this.#ambiguous.length > 0) {
      return `a new socket named *${REPAIR_SUFFIX} in ${show(this.#dir)} (ignoring ${
        listNames(this.#ambiguous)
      })`;
    }
    return `a socket named *${REPAIR_SUFFIX} in ${show(this.#dir)}`;
  }

  #gone(reason: string): RuntimeFailure {
    return new RuntimeFailure(
      `Directory ${show(this.#dir)} was ${reason} while waiting for ${this.#awaited()}`,
    );
  }
}
