// Directory mode: watching a directory for passt's repair socket.
//
// The order that misses nothing: set the inotify watch first, then list what
// already exists, then read events. Everything created or moved in after the
// watch is set produces an event; everything before it is in the listing. If
// the kernel's event queue overflows (IN_Q_OVERFLOW), events were lost: list
// again.
//
// No descriptor of the watched directory is held while waiting: one would
// keep the kernel from reporting the directory's deletion (IN_DELETE_SELF is
// sent only when the last reference goes). For the same reason, since another
// process may hold it open, the parent is watched too: when a directory is
// deleted or moved out of it, PATH is looked up again, and if it no longer
// names the directory we watch, waiting ends.
//
// This module only reports names; locate.ts decides what they are and
// whether to connect (docs/directory-mode.md). Names are kept as the bytes the
// kernel gave, so a name that is not UTF-8 is still reached, and shown
// escaped. The first half is pure (parsing event and directory buffers,
// deciding what an event means), unit-tested with synthetic buffers; the
// second half makes the native calls, blocking in poll().

import {
  archOf,
  AT_FDCWD,
  DIRENT_NAME,
  DIRENT_RECLEN,
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
} from "./abi.ts";
import { check, describeErrno, EAGAIN, EINTR, RuntimeFailure, SyscallError } from "./errors.ts";
import * as libc from "./ffi/libc.ts";
import { cPath, joinPath, show } from "./path.ts";

/** passt's repair socket is its vhost-user socket path with this appended */
export const REPAIR_SUFFIX = ".repair";
const SUFFIX_BYTES = new TextEncoder().encode(REPAIR_SUFFIX);

/** Whether an entry's name makes it a candidate (".repair" alone counts) */
export function isRepairName(name: Uint8Array): boolean {
  if (name.length < SUFFIX_BYTES.length) return false;
  const tail = name.length - SUFFIX_BYTES.length;
  for (let i = 0; i < SUFFIX_BYTES.length; i++) {
    if (name[tail + i] !== SUFFIX_BYTES[i]) return false;
  }
  return true;
}

/** Whether two names are the same bytes */
export function sameName(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---- pure: inotify event buffers ----

/** One struct inotify_event */
export interface InotifyEvent {
  readonly wd: number;
  readonly mask: number;
  readonly cookie: number;
  /** The entry's name, without NUL padding (empty for the directory itself) */
  readonly name: Uint8Array;
}

/** A copy of `bytes` up to the first NUL (names are NUL-padded) */
export function nameBytes(bytes: Uint8Array): Uint8Array {
  const end = bytes.indexOf(0);
  return (end < 0 ? bytes : bytes.subarray(0, end)).slice();
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
    events.push({
      wd: view.getInt32(off, true),
      mask: view.getUint32(off + 4, true),
      cookie: view.getUint32(off + 8, true),
      name: nameBytes(buf.subarray(off + INOTIFY_EVENT_HDR, end)),
    });
    off = end;
  }
  return events;
}

// ---- pure: getdents64 buffers ----

const DOT = new Uint8Array([0x2e]);
const DOTDOT = new Uint8Array([0x2e, 0x2e]);

/** The names in the first `length` bytes of a getdents64() buffer, but "." and ".." */
export function parseDirents(buf: Uint8Array, length: number): Uint8Array[] {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const names: Uint8Array[] = [];
  let off = 0;
  while (off < length) {
    const recordLength = off + DIRENT_NAME <= length
      ? view.getUint16(off + DIRENT_RECLEN, true)
      : 0;
    if (recordLength <= DIRENT_NAME || off + recordLength > length) {
      throw new RuntimeFailure(`getdents64 returned a malformed entry at byte ${off} of ${length}`);
    }
    const name = nameBytes(buf.subarray(off + DIRENT_NAME, off + recordLength));
    if (!sameName(name, DOT) && !sameName(name, DOTDOT)) names.push(name);
    off += recordLength;
  }
  return names;
}

// ---- pure: what events mean ----

/** Why the watched directory is no longer the one PATH names */
export type GoneReason = "deleted" | "moved away" | "unmounted";

/** What the watcher must do about an event */
export type WatchStep =
  /** A wanted name was created or moved in: look at it */
  | { readonly kind: "entry"; readonly name: Uint8Array }
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
  wanted: (name: Uint8Array) => boolean,
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
      steps.push({ kind: "entry", name: e.name });
    }
  }
  return steps;
}

// ---- native: the watch itself ----

const WATCH_MASK = IN_CREATE | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
// IN_MASK_ADD: when the parent is the directory itself ("/"), add to its mask
// instead of replacing it
const PARENT_MASK = IN_DELETE | IN_MOVED_FROM | IN_ONLYDIR | IN_MASK_ADD;
// Room for many events per read; one event takes at most 16 + NAME_MAX (255) + 1
const EVENT_BUFFER_SIZE = 64 * 1024;
const DIRENT_BUFFER_SIZE = 32 * 1024;

/**
 * An inotify watch on one directory (and its parent). Open it, list(), then
 * next() until done; close() always. It holds the inotify descriptor only.
 */
export class DirectoryWatch {
  readonly dir: string;
  /** "major:minor:inode" of the directory watched */
  readonly identity: string;
  readonly #fd: number;
  readonly #ids: WatchIds;
  readonly #wanted: (name: Uint8Array) => boolean;
  readonly #pollfd = new Uint8Array(POLLFD_SIZE);
  readonly #buf = new Uint8Array(EVENT_BUFFER_SIZE);

  /**
   * Watches `dir` for names `wanted` accepts. `log` gets --verbose lines.
   * Throws SyscallError when the directory cannot be watched.
   */
  constructor(dir: string, wanted: (name: Uint8Array) => boolean, log: (text: string) => void) {
    this.dir = dir;
    this.#wanted = wanted;
    const fd = check(
      libc.inotifyInit(IN_NONBLOCK | IN_CLOEXEC),
      "inotify_init1",
      `Can't watch directory ${show(dir)}`,
    );
    this.#fd = fd;
    try {
      // The watch first, then the look at what exists: nothing falls between
      const wd = check(
        libc.inotifyAddWatch(fd, cPath(dir), WATCH_MASK),
        "inotify_add_watch",
        `Can't watch directory ${show(dir)}`,
      );
      const status = libc.statx(AT_FDCWD, cPath(dir), 0);
      if (typeof status === "number") {
        throw new SyscallError("statx", -status, `Can't stat() ${show(dir)}`);
      }
      this.identity = status.identity;
      // "dir/..": the kernel resolves PATH (symlinks included), then its parent
      const parent = libc.inotifyAddWatch(fd, cPath(joinPath(dir, "..")), PARENT_MASK);
      if (parent < 0) {
        log(
          `cannot watch the parent of ${show(dir)} (${describeErrno(-parent)}): ` +
            "its deletion is noticed only once nothing holds it open",
        );
      }
      this.#ids = { dir: wd, parent: parent < 0 ? null : parent };
    } catch (e) {
      libc.close(fd);
      throw e;
    }
    const view = new DataView(this.#pollfd.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
  }

  /** Every wanted name the directory holds now, read with getdents64() */
  list(): Uint8Array[] {
    const flags = O_RDONLY | O_CLOEXEC | oDirectory(archOf(Deno.build.arch) ?? "x86_64");
    const listing = `Can't list directory ${show(this.dir)}`;
    const fd = check(libc.openAt(AT_FDCWD, cPath(this.dir), flags), "openat", listing);
    try {
      const buf = new Uint8Array(DIRENT_BUFFER_SIZE);
      const names: Uint8Array[] = [];
      for (;;) {
        const n = check(libc.getdents64(fd, buf), "getdents64", listing);
        if (n === 0) return names;
        for (const name of parseDirents(buf, n)) if (this.#wanted(name)) names.push(name);
      }
    } finally {
      libc.close(fd);
    }
  }

  /**
   * Waits up to `timeoutMs` (-1: no limit) for events and returns what they
   * mean; an empty list when the time ran out or nothing wanted happened.
   */
  next(timeoutMs: number): WatchStep[] {
    const timeout = timeoutMs < 0 ? -1 : Math.min(POLL_TIMEOUT_MAX, timeoutMs);
    const ready = libc.poll(this.#pollfd, 1, timeout);
    if (ready === 0 || ready === -EINTR) return [];
    check(ready, "poll", `Can't wait on ${show(this.dir)}`);
    const n = libc.read(this.#fd, this.#buf);
    if (n === -EAGAIN || n === -EINTR) return [];
    check(n, "read", "Can't read inotify events");
    if (n === 0) throw new RuntimeFailure("Can't read inotify events: end of file");
    return stepsFor(parseInotifyEvents(this.#buf, n), this.#ids, this.#wanted);
  }

  /** Whether PATH still names the directory being watched */
  stillThere(): boolean {
    const now = libc.statx(AT_FDCWD, cPath(this.dir), 0);
    return typeof now !== "number" && now.identity === this.identity;
  }

  close(): void {
    libc.close(this.#fd);
  }
}
