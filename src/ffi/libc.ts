// The complete native surface of passt-repair.
//
// This is the only file that calls Deno.dlopen or touches Deno.UnsafePointer*.
// The SYMBOLS table below is every C function the program can call, the way
// upstream's seccomp allow-list is every system call it can make: to review
// what the helper can do outside Deno's sandbox, review this table.
//
// libc is opened by openLibc(), never at import time, so modules that import
// this one can be unit-tested without --allow-ffi. Wrappers return the result,
// or -errno on failure; errno is read in the same expression, right after the
// synchronous call, because any other JS or Deno call in between may clobber it.
// Buffers are passed as "buffer" (a Uint8Array), never as raw pointers, except
// inside structs (msghdr, iovec, sock_fprog), whose addresses are computed once
// before the ffi permission is revoked.

import {
  CONTROL_SIZE,
  IOV_BASE,
  IOV_LEN,
  IOVEC_SIZE,
  MSG_CMSG_CLOEXEC,
  MSG_CONTROL,
  MSG_CONTROLLEN,
  MSG_FLAGS,
  MSG_IOV,
  MSG_IOVLEN,
  MSG_NAME,
  MSG_NAMELEN,
  MSG_NOSIGNAL,
  MSGHDR_SIZE,
  SO_PEERCRED,
  SOCK_FILTER_SIZE,
  SOCK_FPROG_SIZE,
  SOL_SOCKET,
  SOL_TCP,
  STATX_INO,
  STATX_SIZE,
  STATX_TYPE,
  STX_DEV_MAJOR,
  STX_DEV_MINOR,
  STX_INO,
  STX_MODE,
  TCP_REPAIR,
  UCRED_GID,
  UCRED_PID,
  UCRED_SIZE,
  UCRED_UID,
} from "../abi.ts";
import type { RepairNative } from "../repair.ts";

// Types named after C, so that each row reads like its prototype
const int = "i32";
const uint = "u32";
const size_t = "usize";
const buffer = "buffer";
// ssize_t results are declared as int: we never move more than one byte or a
// few KiB at once, and a 64-bit result would come back as a BigInt (an
// allocation per call on the hot path). On x86_64 and aarch64 the low half of
// the return register holds the same value.
const ssize_t_small = "i32";

const SYMBOLS = {
  // int socket(int domain, int type, int protocol)
  socket: { parameters: [int, int, int], result: int },
  // int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen)
  connect: { parameters: [int, buffer, uint], result: int },
  // ssize_t recvmsg(int sockfd, struct msghdr *msg, int flags)
  recvmsg: { parameters: [int, buffer, int], result: ssize_t_small },
  // ssize_t send(int sockfd, const void *buf, size_t len, int flags)
  send: { parameters: [int, buffer, size_t, int], result: ssize_t_small },
  // int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
  setsockopt: { parameters: [int, int, int, buffer, uint], result: int },
  // int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
  getsockopt: { parameters: [int, int, int, buffer, buffer], result: int },
  // int close(int fd)
  close: { parameters: [int], result: int },
  // int fcntl(int fd, int cmd, int arg): only F_DUPFD_CLOEXEC
  fcntl: { parameters: [int, int, int], result: int },
  // int statx(int dirfd, const char *path, int flags, unsigned int mask,
  //           struct statx *buf)
  statx: { parameters: [int, buffer, int, uint, buffer], result: int },
  // int openat(int dirfd, const char *path, int flags, mode_t mode)
  openat: { parameters: [int, buffer, int, uint], result: int },
  // int fchdir(int fd): only to connect to a socket whose full path does not
  // fit sun_path, by its name relative to its directory; the previous working
  // directory is restored right after
  fchdir: { parameters: [int], result: int },
  // ssize_t getdents64(int fd, void *dirp, size_t count)
  getdents64: { parameters: [int, buffer, size_t], result: ssize_t_small },
  // int inotify_init1(int flags)
  inotify_init1: { parameters: [int], result: int },
  // int inotify_add_watch(int fd, const char *path, uint32_t mask)
  inotify_add_watch: { parameters: [int, buffer, uint], result: int },
  // ssize_t read(int fd, void *buf, size_t count)
  read: { parameters: [int, buffer, size_t], result: ssize_t_small },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout)
  poll: { parameters: [buffer, "u64", int], result: int },
  // int prctl(int option, unsigned long arg2, unsigned long arg3,
  //           unsigned long arg4, unsigned long arg5)
  prctl: { parameters: [int, "u64", "u64", "u64", "u64"], result: int },
  // long syscall(long number, ...): only for seccomp(2), which glibc lacks;
  // called as syscall(SYS_seccomp, unsigned op, unsigned flags, void *args)
  syscall: { parameters: ["i64", "u64", "u64", buffer], result: "i64" },
  // int *__errno_location(void): the calling thread's errno
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

let libc: Symbols | null = null;
// The main thread's errno, seen through a typed array made once, so reading it
// needs neither an allocation nor the ffi permission (revoked after startup).
let errnoCell = new Int32Array(1);

/** Names of every native function the program can call, for review and tests */
export const NATIVE_FUNCTIONS: readonly string[] = Object.keys(SYMBOLS);

/** Whether openLibc() has succeeded in this process */
export function libcIsOpen(): boolean {
  return libc !== null;
}

/**
 * Opens libc and binds SYMBOLS. Needs --allow-ffi; idempotent.
 */
export function openLibc(): void {
  if (libc !== null) return;
  const lib = Deno.dlopen("libc.so.6", SYMBOLS);
  const where = lib.symbols.__errno_location();
  if (where === null) throw new Error("__errno_location() returned NULL");
  errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(where, 4));
  libc = lib.symbols;
}

function sym(): Symbols {
  if (libc === null) throw new Error("libc is not open: call openLibc() first");
  return libc;
}

/** -errno for a failed call: only call it right after the failing call */
function fail(): number {
  return -errnoCell[0]!;
}

/** NUL-terminated copy of a path, as C wants it */
export function cString(s: string): Uint8Array {
  return new TextEncoder().encode(s + "\0");
}

/** socket(): descriptor or -errno */
export function socket(domain: number, type: number, protocol = 0): number {
  const r = sym().socket(domain, type, protocol);
  return r < 0 ? fail() : r;
}

/** connect() with a prepared sockaddr of `length` bytes: 0 or -errno */
export function connect(fd: number, address: Uint8Array, length: number): number {
  const r = sym().connect(fd, address, length);
  return r < 0 ? fail() : r;
}

/** close(): 0 or -errno */
export function close(fd: number): number {
  const r = sym().close(fd);
  return r < 0 ? fail() : r;
}

const F_DUPFD_CLOEXEC = 1030;

/** fcntl(F_DUPFD_CLOEXEC): a copy on the lowest free descriptor >= min, or -errno */
export function dupAtLeast(fd: number, min: number): number {
  const r = sym().fcntl(fd, F_DUPFD_CLOEXEC, min);
  return r < 0 ? fail() : r;
}

const intOption = new Int32Array(1);
const intOptionBytes = new Uint8Array(intOption.buffer);
const optionLength = new Uint32Array(1);
const optionLengthBytes = new Uint8Array(optionLength.buffer);

/** setsockopt() of an int option: 0 or -errno */
export function setIntOption(
  fd: number,
  level: number,
  name: number,
  value: number,
): number {
  intOption[0] = value;
  const r = sym().setsockopt(fd, level, name, intOptionBytes, 4);
  return r < 0 ? fail() : r;
}

/** getsockopt() of an int option: the value, or null with errno in `error` */
export function getIntOption(
  fd: number,
  level: number,
  name: number,
  error: Int32Array,
): number | null {
  optionLength[0] = 4;
  const r = sym().getsockopt(fd, level, name, intOptionBytes, optionLengthBytes);
  if (r < 0) {
    error[0] = -fail();
    return null;
  }
  return intOption[0]!;
}

/** setsockopt(fd, SOL_TCP, TCP_REPAIR, &op, 4): 0 or -errno */
export function setTcpRepair(fd: number, op: number): number {
  return setIntOption(fd, SOL_TCP, TCP_REPAIR, op);
}

/** Peer credentials of a connected UNIX socket (SO_PEERCRED) */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** SO_PEERCRED: the credentials, or -errno */
export function peerCredentials(fd: number): PeerCredentials | number {
  const cred = new Uint8Array(UCRED_SIZE);
  const len = new Uint32Array([UCRED_SIZE]);
  const r = sym().getsockopt(
    fd,
    SOL_SOCKET,
    SO_PEERCRED,
    cred,
    new Uint8Array(len.buffer),
  );
  if (r < 0) return fail();
  const view = new DataView(cred.buffer);
  return {
    pid: view.getInt32(UCRED_PID, true),
    uid: view.getUint32(UCRED_UID, true),
    gid: view.getUint32(UCRED_GID, true),
  };
}

/**
 * statx() of `path` relative to `dirfd` (AT_FDCWD for the working directory):
 * st_mode, or -errno. `flags` may hold AT_SYMLINK_NOFOLLOW.
 */
export function statMode(dirfd: number, path: string, flags: number, mask: number): number {
  const buf = new Uint8Array(STATX_SIZE);
  const r = sym().statx(dirfd, cString(path), flags, mask, buf);
  if (r < 0) return fail();
  return new DataView(buf.buffer).getUint16(STX_MODE, true);
}

/** What statx() says about a file: its type and mode, and its identity */
export interface FileStatus {
  readonly mode: number;
  /** "major:minor:inode", equal for two names of the same file */
  readonly identity: string;
}

/**
 * statx() of `path` relative to `dirfd` for its mode and identity (device
 * and inode number): the status, or -errno. `flags` may hold
 * AT_SYMLINK_NOFOLLOW.
 */
export function statStatus(dirfd: number, path: string, flags: number): FileStatus | number {
  const buf = new Uint8Array(STATX_SIZE);
  const r = sym().statx(dirfd, cString(path), flags, STATX_TYPE | STATX_INO, buf);
  if (r < 0) return fail();
  const view = new DataView(buf.buffer);
  return {
    mode: view.getUint16(STX_MODE, true),
    identity: `${view.getUint32(STX_DEV_MAJOR, true)}:${view.getUint32(STX_DEV_MINOR, true)}:${
      view.getBigUint64(STX_INO, true)
    }`,
  };
}

/** fchdir(): 0 or -errno */
export function fchdir(fd: number): number {
  const r = sym().fchdir(fd);
  return r < 0 ? fail() : r;
}

/** openat(): descriptor or -errno */
export function openAt(dirfd: number, path: string, flags: number): number {
  const r = sym().openat(dirfd, cString(path), flags, 0);
  return r < 0 ? fail() : r;
}

/** getdents64() into `buf`: bytes filled, 0 at the end, or -errno */
export function getdents64(fd: number, buf: Uint8Array): number {
  const r = sym().getdents64(fd, buf, BigInt(buf.byteLength));
  return r < 0 ? fail() : r;
}

/** inotify_init1(): descriptor or -errno */
export function inotifyInit(flags: number): number {
  const r = sym().inotify_init1(flags);
  return r < 0 ? fail() : r;
}

/** inotify_add_watch(): watch descriptor or -errno */
export function inotifyAddWatch(fd: number, path: string, mask: number): number {
  const r = sym().inotify_add_watch(fd, cString(path), mask);
  return r < 0 ? fail() : r;
}

/** read() into `buf`: bytes read, 0 at EOF, or -errno */
export function read(fd: number, buf: Uint8Array): number {
  const r = sym().read(fd, buf, BigInt(buf.byteLength));
  return r < 0 ? fail() : r;
}

/**
 * poll() on the pollfd array in `fds` (8 bytes each): the number of ready
 * descriptors, 0 on timeout, or -errno. A negative timeout waits forever.
 */
export function poll(fds: Uint8Array, count: number, timeoutMs: number): number {
  const r = sym().poll(fds, BigInt(count), timeoutMs);
  return r < 0 ? fail() : r;
}

/** prctl(): result or -errno */
export function prctl(option: number, arg2 = 0n, arg3 = 0n, arg4 = 0n, arg5 = 0n): number {
  const r = sym().prctl(option, arg2, arg3, arg4, arg5);
  return r < 0 ? fail() : r;
}

/**
 * struct sock_fprog for a BPF program given as its sock_filter array: the
 * instruction count and the program's address. Taking the address needs the
 * ffi permission, so a filter installed after the revoke is prepared before
 * it; both buffers must then be kept alive (and the program may still be
 * changed in place: the address stays).
 */
export function sockFprog(filter: Uint8Array): Uint8Array {
  const prog = new Uint8Array(SOCK_FPROG_SIZE);
  const view = new DataView(prog.buffer);
  view.setUint16(0, filter.byteLength / SOCK_FILTER_SIZE, true);
  view.setBigUint64(8, addressOf(filter), true);
  return prog;
}

/**
 * seccomp(operation, flags, prog) with a struct sock_fprog made by
 * sockFprog(): 0, a thread id (TSYNC's failure) or -errno. Needs no
 * permission. `nr` is the architecture's SYS_seccomp.
 */
export function seccompInstall(
  nr: number,
  operation: number,
  flags: number,
  prog: Uint8Array,
): number {
  const r = sym().syscall(BigInt(nr), BigInt(operation), BigInt(flags), prog);
  return r < 0n ? fail() : Number(r);
}

/**
 * seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog) for a BPF program given as
 * its sock_filter array: 0 or -errno. `nr` is the architecture's SYS_seccomp.
 */
export function seccompSetModeFilter(
  nr: number,
  operation: number,
  flags: number,
  filter: Uint8Array,
): number {
  return seccompInstall(nr, operation, flags, sockFprog(filter));
}

const MSGHDR_IOVLEN = 1n;
const MSGHDR_CONTROLLEN = BigInt(CONTROL_SIZE);

/**
 * One connection to passt, with every buffer recvmsg() and send() use made
 * once: the msghdr, its iovec, the 1-byte data buffer, the control buffer and
 * the reply byte. Construct it before the ffi permission is revoked (it takes
 * buffer addresses); attach() the connected descriptor later.
 */
export class Channel implements RepairNative {
  readonly data = new Uint8Array(1);
  readonly control: DataView;
  #fd = -1;
  readonly #controlBytes = new Uint8Array(CONTROL_SIZE);
  readonly #msg = new Uint8Array(MSGHDR_SIZE);
  readonly #msgView = new DataView(this.#msg.buffer);
  readonly #iov = new Uint8Array(IOVEC_SIZE);
  readonly #iovView = new DataView(this.#iov.buffer);
  readonly #reply = new Uint8Array(1);
  readonly #dataAddress: bigint;
  readonly #iovAddress: bigint;
  readonly #controlAddress: bigint;

  constructor() {
    this.control = new DataView(this.#controlBytes.buffer);
    this.#dataAddress = addressOf(this.data);
    this.#iovAddress = addressOf(this.#iov);
    this.#controlAddress = addressOf(this.#controlBytes);
  }

  /** The connected socket to passt */
  attach(fd: number): void {
    this.#fd = fd;
  }

  get fd(): number {
    return this.#fd;
  }

  receive(): number {
    // The kernel overwrites msg_controllen and msg_flags (and may touch the
    // rest): rebuild the whole msghdr before every call, or the next message's
    // descriptors are silently cut to the previous message's count.
    const m = this.#msgView;
    m.setBigUint64(MSG_NAME, 0n, true);
    m.setUint32(MSG_NAMELEN, 0, true);
    m.setBigUint64(MSG_IOV, this.#iovAddress, true);
    m.setBigUint64(MSG_IOVLEN, MSGHDR_IOVLEN, true);
    m.setBigUint64(MSG_CONTROL, this.#controlAddress, true);
    m.setBigUint64(MSG_CONTROLLEN, MSGHDR_CONTROLLEN, true);
    m.setInt32(MSG_FLAGS, 0, true);
    this.#iovView.setBigUint64(IOV_BASE, this.#dataAddress, true);
    this.#iovView.setBigUint64(IOV_LEN, 1n, true);
    const r = sym().recvmsg(this.#fd, this.#msg, MSG_CMSG_CLOEXEC);
    return r < 0 ? fail() : r;
  }

  controlLength(): number {
    // Low half of the size_t: the kernel never reports more than CONTROL_SIZE,
    // and reading it as a BigInt would allocate on every message
    return this.#msgView.getUint32(MSG_CONTROLLEN, true);
  }

  messageFlags(): number {
    return this.#msgView.getInt32(MSG_FLAGS, true);
  }

  setTcpRepair(fd: number, op: number): number {
    return setTcpRepair(fd, op);
  }

  reply(byte: number): number {
    this.#reply[0] = byte;
    // MSG_NOSIGNAL: if passt is gone, report it instead of dying of SIGPIPE
    const r = sym().send(this.#fd, this.#reply, 1n, MSG_NOSIGNAL);
    return r < 0 ? fail() : r;
  }

  close(fd: number): void {
    sym().close(fd);
  }
}

function addressOf(buf: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}
