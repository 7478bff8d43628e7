// Directory mode: wait for passt's repair socket to appear in a directory.
//
// The order that misses nothing: set the inotify watch first, then look at
// what already exists, then read events. Everything created or moved in after
// the watch is set produces an event; everything before it is in the listing.
// If the kernel's event queue overflows (IN_Q_OVERFLOW), events were lost:
// look again.
//
// No descriptor of the watched directory is held while waiting: one would
// keep the kernel from reporting the directory's deletion (IN_DELETE_SELF is
// sent only when the last reference goes). For the same reason, since another
// process may hold it open, the parent is watched too: when a directory is
// deleted or moved out of it, PATH is looked up again, and if it no longer
// names the directory we watch, we fail instead of waiting forever.
//
// The first half of this file is pure (parsing event and directory buffers,
// deciding what an event means), unit-tested with synthetic buffers; the
// second half makes the native calls, blocking in poll().

import {
  archOf,
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  DIRENT_NAME,
  DIRENT_RECLEN,
  DIRENT_TYPE,
  IN_CLOEXEC,
  IN_CREATE,
  IN_DELETE,
  IN_DELETE_SELF,
  IN_IGNORED,
  IN_ISDIR,
  IN_MASK_ADD,
  IN_MOVE_SELF,
  IN_MOVED_FROM,
  IN_MOVED_TO,
  IN_NONBLOCK,
  IN_ONLYDIR,
  IN_Q_OVERFLOW,
  IN_UNMOUNT,
  INOTIFY_EVENT_HDR,
  O_CLOEXEC,
  O_RDONLY,
  oDirectory,
  POLL_TIMEOUT_MAX,
  POLLFD_SIZE,
  POLLIN,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
} from "./abi.ts";
import type { Deadline } from "./deadline.ts";
import { describeErrno, RuntimeFailure, SyscallError } from "./errors.ts";
import * as libc from "./ffi/libc.ts";
import { joinPath } from "./path.ts";

const EINTR = 4;
const EAGAIN = 11;
const ENOENT = 2;

/** passt's repair socket is its vhost-user socket path with this appended */
export const REPAIR_SUFFIX = ".repair";

/** Whether an entry's name makes it a candidate (".repair" alone counts) */
export function isRepairName(name: string): boolean {
  return name.endsWith(REPAIR_SUFFIX);
}

// ---- pure: inotify event buffers ----

/** One struct inotify_event, with its name decoded */
export interface InotifyEvent {
  readonly wd: number;
  readonly mask: number;
  readonly cookie: number;
  /** The entry's name ("" for events about the watched directory itself) */
  readonly name: string;
  /** False when the name is not valid UTF-8 (`name` then holds U+FFFD) */
  readonly utf8: boolean;
}

const strict = new TextDecoder("utf-8", { fatal: true });
const lenient = new TextDecoder("utf-8");

/** A file name from `bytes`, which ends at the first NUL (names are NUL-padded) */
export function decodeName(bytes: Uint8Array): { name: string; utf8: boolean } {
  const end = bytes.indexOf(0);
  const raw = end < 0 ? bytes : bytes.subarray(0, end);
  try {
    return { name: strict.decode(raw), utf8: true };
  } catch {
    return { name: lenient.decode(raw), utf8: false };
  }
}

/**
 * Every event in the first `length` bytes of `buf`, as one read() of an
 * inotify descriptor returns them: a 16-byte header (wd, mask, cookie, len),
 * then `len` bytes of name, NUL-padded. The kernel never splits an event
 * across reads, so a buffer that ends inside one is an error.
 */
export function parseInotifyEvents(buf: Uint8Array, length: number): InotifyEvent[] {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const events: InotifyEvent[] = [];
  let off = 0;
  while (off < length) {
    if (off + INOTIFY_EVENT_HDR > length) {
      throw new RuntimeFailure(`inotify returned a truncated event at byte ${off} of ${length}`);
    }
    const nameLength = view.getUint32(off + 12, true);
    const end = off + INOTIFY_EVENT_HDR + nameLength;
    if (end > length) {
      throw new RuntimeFailure(`inotify returned a truncated event at byte ${off} of ${length}`);
    }
    const { name, utf8 } = decodeName(buf.subarray(off + INOTIFY_EVENT_HDR, end));
    events.push({
      wd: view.getInt32(off, true),
      mask: view.getUint32(off + 4, true),
      cookie: view.getUint32(off + 8, true),
      name,
      utf8,
    });
    off = end;
  }
  return events;
}

// ---- pure: getdents64 buffers ----

/** One struct linux_dirent64: the name and d_type (DT_*) */
export interface DirectoryEntry {
  readonly name: string;
  readonly utf8: boolean;
  readonly type: number;
}

/** Every entry in the first `length` bytes of a getdents64() buffer, but "." and ".." */
export function parseDirents(buf: Uint8Array, length: number): DirectoryEntry[] {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const entries: DirectoryEntry[] = [];
  let off = 0;
  while (off < length) {
    const recordLength = off + DIRENT_NAME <= length
      ? view.getUint16(off + DIRENT_RECLEN, true)
      : 0;
    if (recordLength <= DIRENT_NAME || off + recordLength > length) {
      throw new RuntimeFailure(`getdents64 returned a malformed entry at byte ${off} of ${length}`);
    }
    const { name, utf8 } = decodeName(buf.subarray(off + DIRENT_NAME, off + recordLength));
    if (name !== "." && name !== "..") {
      entries.push({ name, utf8, type: view.getUint8(off + DIRENT_TYPE) });
    }
    off += recordLength;
  }
  return entries;
}

// ---- pure: what events mean ----

/** Why the watched directory is no longer the one PATH names */
export type GoneReason = "deleted" | "moved away" | "unmounted";

/** What the watcher must do about an event */
export type WatchStep =
  /** A wanted name was created or moved in: check whether it is a socket */
  | { readonly kind: "entry"; readonly name: string }
  /** A wanted-looking name that is not valid UTF-8: skip it, with a warning */
  | { readonly kind: "undecodable"; readonly name: string }
  /** Events were lost: list the directory again */
  | { readonly kind: "rescan" }
  /** The watch is gone with the directory: fail */
  | { readonly kind: "gone"; readonly reason: GoneReason }
  /** The directory, or a directory next to it, was deleted or moved: look PATH up again */
  | { readonly kind: "recheck"; readonly reason: GoneReason };

/** The watch descriptors: on the directory, and on its parent if that could be set */
export interface WatchIds {
  readonly dir: number;
  readonly parent: number | null;
}

/**
 * Turns one read's events into steps, in order. `wanted` says which names
 * are candidates (any *.repair, or exactly the name given to --wait).
 */
export function stepsFor(
  events: readonly InotifyEvent[],
  ids: WatchIds,
  wanted: (name: string) => boolean,
): WatchStep[] {
  const steps: WatchStep[] = [];
  for (const e of events) {
    if (e.mask & IN_Q_OVERFLOW) {
      steps.push({ kind: "rescan" });
      continue;
    }
    const onDir = e.wd === ids.dir;
    if (onDir && e.mask & IN_DELETE_SELF) steps.push({ kind: "gone", reason: "deleted" });
    else if (onDir && e.mask & IN_UNMOUNT) steps.push({ kind: "gone", reason: "unmounted" });
    else if (onDir && e.mask & IN_IGNORED) steps.push({ kind: "gone", reason: "deleted" });
    else if (onDir && e.mask & IN_MOVE_SELF) steps.push({ kind: "recheck", reason: "moved away" });
    else if (e.wd === ids.parent && e.mask & IN_UNMOUNT) {
      steps.push({ kind: "recheck", reason: "unmounted" });
    } else if (e.mask & IN_ISDIR && e.mask & IN_DELETE) {
      // Only the parent's watch asks for IN_DELETE (or the directory's own,
      // when PATH is "/" and both are one watch): a directory next to ours,
      // or ours, was deleted
      steps.push({ kind: "recheck", reason: "deleted" });
    } else if (e.mask & IN_ISDIR && e.mask & IN_MOVED_FROM) {
      steps.push({ kind: "recheck", reason: "moved away" });
    } else if (onDir && e.mask & (IN_CREATE | IN_MOVED_TO) && wanted(e.name)) {
      steps.push(e.utf8 ? { kind: "entry", name: e.name } : { kind: "undecodable", name: e.name });
    }
  }
  return steps;
}

// ---- pure: what an entry is, and what to say about it ----

/** What a candidate entry turned out to be */
export type Inspection =
  | { readonly kind: "socket"; readonly identity: string }
  | { readonly kind: "not-socket"; readonly mode: number }
  | { readonly kind: "dangling-symlink" }
  | { readonly kind: "vanished" }
  | { readonly kind: "failed"; readonly errno: number };

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

/** Why the entry at `path` is skipped, for a `warning:` line (never for sockets) */
export function skipReason(path: string, inspection: Inspection): string {
  switch (inspection.kind) {
    case "socket":
      return `skipping ${path}: it is a socket`;
    case "not-socket":
      return `skipping ${path}: it is a ${fileTypeName(inspection.mode)}, not a socket`;
    case "dangling-symlink":
      return `skipping ${path}: it is a symbolic link to nothing`;
    case "vanished":
      return `skipping ${path}: it was removed before it could be checked`;
    case "failed":
      return `skipping ${path}: Can't stat() it: ${describeErrno(inspection.errno)}`;
  }
}

/** A socket found by listing the directory */
export interface FoundSocket {
  readonly name: string;
  readonly identity: string;
}

/** What a listing decides */
export type ScanChoice =
  | { readonly kind: "use"; readonly name: string }
  | { readonly kind: "ambiguous"; readonly sockets: readonly FoundSocket[] }
  | { readonly kind: "none" };

/**
 * Decides from the sockets a listing found, leaving out those already
 * ignored (same name, same file): exactly one new socket is used; several
 * mean a shared, ambiguous directory, so none of them is.
 */
export function chooseSocket(
  found: readonly FoundSocket[],
  ignored: ReadonlyMap<string, string>,
): ScanChoice {
  const fresh = found.filter((s) => ignored.get(s.name) !== s.identity);
  if (fresh.length === 0) return { kind: "none" };
  if (fresh.length === 1) return { kind: "use", name: fresh[0]!.name };
  return { kind: "ambiguous", sockets: fresh };
}

// ---- native: the watch itself ----

/** What to wait for, and how to report */
export interface WatchOptions {
  /** The directory, exactly as given */
  readonly dir: string;
  /** The one name to wait for (--wait), or null for any *.repair */
  readonly name: string | null;
  /** When waiting ends (--timeout) */
  readonly deadline: Deadline;
  /** Prints a `warning:` line */
  readonly warn: (text: string) => void;
  /** Prints a --verbose line */
  readonly log: (text: string) => void;
}

const WATCH_MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
// IN_MASK_ADD: when the parent is the directory itself ("/"), add to its mask
// instead of replacing it
const PARENT_MASK = IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR | IN_MASK_ADD;
// Room for many events per read; one event takes at most 16 + NAME_MAX (255) + 1
const EVENT_BUFFER_SIZE = 64 * 1024;
const DIRENT_BUFFER_SIZE = 32 * 1024;

/** What the socket name must look like, in words */
function describeTarget(options: WatchOptions): string {
  return options.name === null
    ? `a socket named *${REPAIR_SUFFIX} in ${options.dir}`
    : `${joinPath(options.dir, options.name)} to appear`;
}

/**
 * Waits until a usable socket appears in `options.dir` and returns its name.
 * Blocks in poll(); every descriptor it opens is closed before it returns or
 * throws. Throws TimeoutError at the deadline, RuntimeFailure when the
 * directory goes away, SyscallError when it cannot be watched.
 */
export function awaitSocket(options: WatchOptions): string {
  const inotify = libc.inotifyInit(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify < 0) {
    throw new SyscallError("inotify_init1", -inotify, `Can't watch directory ${options.dir}`);
  }
  try {
    return new Watch(inotify, options).run();
  } finally {
    libc.close(inotify);
  }
}

class Watch {
  readonly #fd: number;
  readonly #options: WatchOptions;
  readonly #wanted: (name: string) => boolean;
  #ids: WatchIds = { dir: -1, parent: null };
  #identity = "";
  /** Sockets a listing found ambiguous: name -> identity */
  readonly #ignored = new Map<string, string>();
  /** Names already warned about by a listing, so a rescan does not repeat them */
  readonly #warned = new Set<string>();
  #awaited: string;

  constructor(fd: number, options: WatchOptions) {
    this.#fd = fd;
    this.#options = options;
    const exact = options.name;
    this.#wanted = exact === null ? isRepairName : (name) => name === exact;
    this.#awaited = describeTarget(options);
  }

  run(): string {
    const { dir } = this.#options;
    // The watch first, then the look at what exists: nothing falls between
    const wd = libc.inotifyAddWatch(this.#fd, dir, WATCH_MASK);
    if (wd < 0) throw new SyscallError("inotify_add_watch", -wd, `Can't watch directory ${dir}`);
    const status = libc.statStatus(AT_FDCWD, dir, 0);
    if (typeof status === "number") {
      throw new SyscallError("statx", -status, `Can't stat() ${dir}`);
    }
    this.#identity = status.identity;
    // "dir/..": the kernel resolves PATH (symlinks included), then its parent
    const parent = libc.inotifyAddWatch(this.#fd, joinPath(dir, ".."), PARENT_MASK);
    if (parent < 0) {
      this.#options.log(
        `cannot watch the parent of ${dir} (${describeErrno(-parent)}): ` +
          "its deletion is noticed only once nothing holds it open",
      );
    }
    this.#ids = { dir: wd, parent: parent < 0 ? null : parent };

    const existing = this.#scan();
    if (existing !== null) return existing;
    this.#options.log(`waiting for ${this.#awaited}`);
    return this.#wait();
  }

  /** Looks at what the directory holds now: the name to use, or null */
  #scan(): string | null {
    const exact = this.#options.name;
    if (exact !== null) {
      const inspection = this.#inspect(exact);
      if (inspection.kind === "socket") return exact;
      // Not there (yet) is what we are waiting for; anything else is worth a word
      if (inspection.kind !== "vanished" && !this.#warned.has(exact)) {
        this.#warned.add(exact);
        this.#options.warn(skipReason(this.#path(exact), inspection));
      }
      return null;
    }
    const found: FoundSocket[] = [];
    for (const entry of this.#list()) {
      if (!isRepairName(entry.name)) continue;
      if (!entry.utf8) {
        this.#warnOnce(entry.name, this.#undecodable(entry.name));
        continue;
      }
      const inspection = this.#inspect(entry.name);
      if (inspection.kind === "socket") {
        found.push({ name: entry.name, identity: inspection.identity });
      } else {
        this.#warnOnce(entry.name, skipReason(this.#path(entry.name), inspection));
      }
    }
    const choice = chooseSocket(found, this.#ignored);
    if (choice.kind === "use") return choice.name;
    if (choice.kind === "ambiguous") {
      for (const s of choice.sockets) this.#ignored.set(s.name, s.identity);
      const names = choice.sockets.map((s) => s.name).join(", ");
      this.#options.warn(
        `${choice.sockets.length} sockets named *${REPAIR_SUFFIX} in ${this.#options.dir}, ` +
          `ignoring them all as ambiguous (${names}); waiting for a new one`,
      );
      this.#awaited = `a new socket named *${REPAIR_SUFFIX} in ${this.#options.dir} ` +
        `(ignoring ${[...this.#ignored.keys()].join(", ")})`;
    }
    return null;
  }

  #warnOnce(name: string, text: string): void {
    if (this.#warned.has(name)) return;
    this.#warned.add(name);
    this.#options.warn(text);
  }

  #undecodable(name: string): string {
    return `skipping an entry of ${this.#options.dir} whose name is not valid UTF-8 (${name})`;
  }

  #path(name: string): string {
    return joinPath(this.#options.dir, name);
  }

  /** What the entry `name` is: stat()ed through symlinks, as connect() will see it */
  #inspect(name: string): Inspection {
    const path = this.#path(name);
    const status = libc.statStatus(AT_FDCWD, path, 0);
    if (typeof status !== "number") {
      return (status.mode & S_IFMT) === S_IFSOCK
        ? { kind: "socket", identity: status.identity }
        : { kind: "not-socket", mode: status.mode };
    }
    if (status !== -ENOENT) return { kind: "failed", errno: -status };
    const link = libc.statStatus(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW);
    if (typeof link !== "number" && (link.mode & S_IFMT) === S_IFLNK) {
      return { kind: "dangling-symlink" };
    }
    return { kind: "vanished" };
  }

  /** Every entry of the directory, read with getdents64() */
  #list(): DirectoryEntry[] {
    const { dir } = this.#options;
    const flags = O_RDONLY | O_CLOEXEC | oDirectory(archOf(Deno.build.arch) ?? "x86_64");
    const fd = libc.openAt(AT_FDCWD, dir, flags);
    if (fd < 0) throw new SyscallError("openat", -fd, `Can't list directory ${dir}`);
    try {
      const buf = new Uint8Array(DIRENT_BUFFER_SIZE);
      const entries: DirectoryEntry[] = [];
      for (;;) {
        const n = libc.getdents64(fd, buf);
        if (n === 0) return entries;
        if (n < 0) throw new SyscallError("getdents64", -n, `Can't list directory ${dir}`);
        entries.push(...parseDirents(buf, n));
      }
    } finally {
      libc.close(fd);
    }
  }

  /** Blocks in poll() until a usable socket appears; returns its name */
  #wait(): string {
    const pollfd = new Uint8Array(POLLFD_SIZE);
    const pollView = new DataView(pollfd.buffer);
    pollView.setInt32(0, this.#fd, true);
    pollView.setInt16(4, POLLIN, true);
    const buf = new Uint8Array(EVENT_BUFFER_SIZE);
    for (;;) {
      const left = this.#options.deadline.remainingMs(this.#awaited);
      const timeout = left < 0 ? -1 : Math.min(POLL_TIMEOUT_MAX, left);
      const ready = libc.poll(pollfd, 1, timeout);
      if (ready === 0 || ready === -EINTR) continue;
      if (ready < 0) throw new SyscallError("poll", -ready, `Can't wait for ${this.#awaited}`);
      const n = libc.read(this.#fd, buf);
      if (n === -EAGAIN || n === -EINTR) continue;
      if (n < 0) throw new SyscallError("read", -n, `Can't read inotify events`);
      if (n === 0) throw new RuntimeFailure("Can't read inotify events: end of file");
      const found = this.#handle(stepsFor(parseInotifyEvents(buf, n), this.#ids, this.#wanted));
      if (found !== null) return found;
    }
  }

  /** Acts on one read's steps: the name to use, or null to keep waiting */
  #handle(steps: readonly WatchStep[]): string | null {
    for (const step of steps) {
      switch (step.kind) {
        case "entry": {
          const inspection = this.#inspect(step.name);
          if (inspection.kind === "socket") return step.name;
          this.#options.warn(skipReason(this.#path(step.name), inspection));
          break;
        }
        case "undecodable":
          this.#options.warn(this.#undecodable(step.name));
          break;
        case "rescan": {
          this.#options.log(`inotify queue overflowed: listing ${this.#options.dir} again`);
          const found = this.#scan();
          if (found !== null) return found;
          break;
        }
        case "gone":
          throw this.#gone(step.reason);
        case "recheck": {
          const now = libc.statStatus(AT_FDCWD, this.#options.dir, 0);
          if (typeof now === "number" || now.identity !== this.#identity) {
            throw this.#gone(step.reason);
          }
          break;
        }
      }
    }
    return null;
  }

  #gone(reason: GoneReason): RuntimeFailure {
    return new RuntimeFailure(
      `Directory ${this.#options.dir} was ${reason} while waiting for ${this.#awaited}`,
    );
  }
}
