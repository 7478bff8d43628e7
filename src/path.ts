// Paths and names: cutting, joining, and showing them safely. Pure: decisions
// are made from values, so they are unit-tested without permissions.
//
// PATH is used exactly as given: never canonicalised, never resolved through
// symlinks by us; the kernel follows the links in its directory part.
//
// Every path and name the helper prints goes through show() or showBytes()
// first. Names come from a directory that anyone running the VM may write
// to, so a name must never be able to break a message into two lines, forge
// a log line, or move a terminal's cursor (docs/security.md).

import { AF_UNIX, S_IFDIR, S_IFMT, S_IFSOCK, SOCKADDR_UN_SIZE, SUN_PATH_OFF } from "./abi.ts";

const encoder = new TextEncoder();

/** What a PATH is, from its st_mode */
export type PathKind = "socket" | "directory" | "other";

/** Classifies st_mode as socket, directory, or anything else */
export function kindOfMode(mode: number): PathKind {
  const type = mode & S_IFMT;
  if (type === S_IFSOCK) return "socket";
  if (type === S_IFDIR) return "directory";
  return "other";
}

/** Length of a string in UTF-8 bytes, which is what the kernel sees */
export function byteLength(s: string): number {
  return encoder.encode(s).length;
}

/** NUL-terminated UTF-8 bytes of `s`, as C wants a path */
export function cPath(s: string): Uint8Array {
  return encoder.encode(s + "\0");
}

/** `bytes` (a name, without NUL) made NUL-terminated */
export function cName(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** A sockaddr_un ready for connect(), and the length to pass with it */
export interface SockaddrUn {
  readonly bytes: Uint8Array;
  readonly length: number;
}

/**
 * sockaddr_un for a short, known path (the helper only ever builds one for
 * /proc/self/fd/N): NUL-terminated inside sun_path. Throws RangeError if it
 * does not fit, which would be a bug.
 */
export function sockaddrUn(path: string): SockaddrUn {
  const name = encoder.encode(path);
  if (name.length >= SOCKADDR_UN_SIZE - SUN_PATH_OFF) {
    throw new RangeError(`sun_path cannot hold ${name.length} bytes`);
  }
  const bytes = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(bytes.buffer).setUint16(0, AF_UNIX, true);
  bytes.set(name, SUN_PATH_OFF);
  return { bytes, length: SUN_PATH_OFF + name.length + 1 };
}

/**
 * The path connect() is given for the file open as descriptor `fd`: the
 * kernel resolves it to that very file, whatever its name is now, and it
 * always fits sun_path, however long the file's real path is.
 */
export function procFdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

/** A path cut into the directory that holds the entry and the entry's name */
export interface SplitPath {
  /** The directory part as given ("." when there is none, "/" for the root) */
  readonly dir: string;
  /** The last component; empty when the path ends in "/" */
  readonly name: string;
}

/**
 * Cuts `path` at its last "/", without normalising anything: "a//b" gives
 * "a/" and "b", "x" gives "." and "x", "/x" gives "/" and "x".
 */
export function splitPath(path: string): SplitPath {
  const cut = path.lastIndexOf("/");
  if (cut < 0) return { dir: ".", name: path };
  if (cut === 0) return { dir: "/", name: path.slice(1) };
  return { dir: path.slice(0, cut), name: path.slice(cut + 1) };
}

/** `dir` and `name` joined by one "/" (none added when `dir` ends in one) */
export function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

// ---- showing paths and names ----

/**
 * Whether code point `c` must be escaped: C0 controls, DEL, C1 controls
 * (U+0080-U+009F, which some terminals obey as ESC sequences), line and
 * paragraph separators, the bidirectional marks, overrides and isolates
 * that can make a line read differently from what it holds, the invisible
 * characters that can make two names look alike (zero-width spaces and
 * joiners, word joiner and invisible operators, deprecated format
 * characters, BOM, interlinear annotations, tags), and lone surrogates.
 */
function unsafe(c: number): boolean {
  return c < 0x20 || (c >= 0x7f && c <= 0x9f) || c === 0x061c ||
    (c >= 0x200b && c <= 0x200f) || c === 0x2028 || c === 0x2029 ||
    (c >= 0x202a && c <= 0x202e) || (c >= 0x2060 && c <= 0x206f) || c === 0xfeff ||
    (c >= 0xfff9 && c <= 0xfffb) || (c >= 0xd800 && c <= 0xdfff) ||
    (c >= 0xe0000 && c <= 0xe007f);
}

function escapeCodePoint(c: number): string {
  return c < 0x100 ? `\\x${c.toString(16).padStart(2, "0")}` : `\\u{${c.toString(16)}}`;
}

/**
 * `text` with every unsafe character escaped (`\x1b`, `\x0a`, `\u{202e}`)
 * and backslashes doubled, so that the result is one line of visible
 * characters from which the original can be read back unambiguously.
 */
export function show(text: string): string {
  let out = "";
  for (let i = 0; i < text.length;) {
    const c = text.codePointAt(i)!;
    const width = c > 0xffff ? 2 : 1;
    if (c === 0x5c) out += "\\\\";
    else if (unsafe(c)) out += escapeCodePoint(c);
    else out += text.slice(i, i + width);
    i += width;
  }
  return out;
}

const strict = new TextDecoder("utf-8", { fatal: true });

/**
 * A name as the kernel gave it (raw bytes, which need not be UTF-8), shown as
 * show() shows text; every byte that is not part of valid UTF-8 appears as
 * `\xNN`.
 */
export function showBytes(bytes: Uint8Array): string {
  try {
    return show(strict.decode(bytes));
  } catch {
    // Not valid UTF-8: decode the longest valid runs, escape the rest
  }
  let out = "";
  let i = 0;
  while (i < bytes.length) {
    const len = utf8SequenceLength(bytes, i);
    if (len === 0) {
      out += `\\x${bytes[i]!.toString(16).padStart(2, "0")}`;
      i++;
    } else {
      out += show(strict.decode(bytes.subarray(i, i + len)));
      i += len;
    }
  }
  return out;
}

/** Length of the valid UTF-8 sequence starting at `bytes[i]`, or 0 if none */
function utf8SequenceLength(bytes: Uint8Array, i: number): number {
  const b = bytes[i]!;
  let len: number, min: number;
  if (b < 0x80) return 1;
  else if (b >= 0xc2 && b <= 0xdf) [len, min] = [2, 0x80];
  else if (b >= 0xe0 && b <= 0xef) [len, min] = [3, 0x800];
  else if (b >= 0xf0 && b <= 0xf4) [len, min] = [4, 0x10000];
  else return 0;
  if (i + len > bytes.length) return 0;
  let c = b & (0xff >> (len + 1));
  for (let k = 1; k < len; k++) {
    const next = bytes[i + k]!;
    if ((next & 0xc0) !== 0x80) return 0;
    c = (c << 6) | (next & 0x3f);
  }
  if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return 0;
  return len;
}

/**
 * A last guard for a whole message line: escapes any unsafe character that
 * is still there (a path shown without show() by mistake), leaving
 * backslashes alone so that text already escaped is not escaped twice.
 */
export function oneLine(text: string): string {
  let out = "";
  for (let i = 0; i < text.length;) {
    const c = text.codePointAt(i)!;
    const width = c > 0xffff ? 2 : 1;
    out += unsafe(c) ? escapeCodePoint(c) : text.slice(i, i + width);
    i += width;
  }
  return out;
}
