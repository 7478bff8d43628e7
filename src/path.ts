// Path handling for socket mode. Pure: decisions are made from values (a stat
// mode, the path's bytes), so they are unit-tested without permissions.
//
// PATH is used exactly as given: never canonicalised, never resolved through
// symlinks by us; the kernel follows them when we stat and connect.

import {
  AF_UNIX,
  S_IFDIR,
  S_IFMT,
  S_IFSOCK,
  SOCKADDR_UN_SIZE,
  SUN_PATH_MAX,
  SUN_PATH_OFF,
} from "./abi.ts";
import { PathTooLongError } from "./errors.ts";

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

/** Length of a string in UTF-8 bytes, which is what sun_path holds */
export function byteLength(s: string): number {
  return encoder.encode(s).length;
}

/** The longest path sun_path holds: 108 bytes including the terminating NUL */
export const SUN_PATH_LIMIT = SUN_PATH_MAX - 1;

/** Whether `path` fits sun_path directly */
export function fitsSunPath(path: string): boolean {
  return byteLength(path) <= SUN_PATH_LIMIT;
}

/** A sockaddr_un ready for connect(), and the length to pass with it */
export interface SockaddrUn {
  readonly bytes: Uint8Array;
  readonly length: number;
}

/**
 * Builds sockaddr_un for `path` (NUL-terminated inside sun_path). Throws
 * PathTooLongError, naming `shownAs` (the path as the user gave it), when it
 * does not fit.
 */
export function sockaddrUn(path: string, shownAs = path): SockaddrUn {
  const name = encoder.encode(path);
  if (name.length > SUN_PATH_LIMIT) {
    throw new PathTooLongError(shownAs, name.length, SUN_PATH_LIMIT);
  }
  const bytes = new Uint8Array(SOCKADDR_UN_SIZE);
  new DataView(bytes.buffer).setUint16(0, AF_UNIX, true);
  bytes.set(name, SUN_PATH_OFF);
  return { bytes, length: SUN_PATH_OFF + name.length + 1 };
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

/**
 * How to reach a socket: by its full path when that fits sun_path, else by
 * its name relative to its directory (made the working directory for the
 * connect), else not at all.
 */
export type AddressRoute =
  | { readonly kind: "direct" }
  | { readonly kind: "through-directory" }
  | { readonly kind: "too-long"; readonly bytes: number };

/** Picks the route for the socket at `fullPath`, whose last component is `name` */
export function addressRoute(fullPath: string, name: string): AddressRoute {
  if (fitsSunPath(fullPath)) return { kind: "direct" };
  if (fitsSunPath(name)) return { kind: "through-directory" };
  return { kind: "too-long", bytes: byteLength(name) };
}
